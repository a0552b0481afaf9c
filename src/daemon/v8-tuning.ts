/**
 * V8 settings for the daemon's own process (`muxwire daemon`), never for a program that embeds
 * the library: those are process-wide and belong to whoever owns the process.
 *
 * The interrupt budget is how much bytecode a function runs before V8 considers optimising it
 * (132 KiB by default in Node 20). A daemon's per-connect code runs a few dozen functions once
 * per Connect, so with the default the connect path stays in the interpreter and baseline code for
 * the first ~3000 connects, about twice as slow as once optimised (bench/README.md, "connect
 * latency"). An eighth of it optimises after ~500 connects; bulk relaying, whose functions run
 * thousands of times a second, is optimised within milliseconds either way.
 *
 * `MUXWIRE_V8_TUNING=0` leaves V8's defaults (for comparison and diagnosis).
 */
import { setFlagsFromString } from 'node:v8';

/** Bytecode budget between optimisation checks (V8's default: 132 KiB). */
export const DAEMON_INTERRUPT_BUDGET = 16 * 1024;

/** The flags `tuneV8ForDaemon` sets, or none when `MUXWIRE_V8_TUNING=0`. */
export function daemonV8Flags(env: NodeJS.ProcessEnv = process.env): string[] {
  return env.MUXWIRE_V8_TUNING === '0' ? [] : [`--interrupt-budget=${DAEMON_INTERRUPT_BUDGET}`];
}

/** Sets the daemon's V8 flags; call before the daemon serves anything. Returns what it set. */
export function tuneV8ForDaemon(env: NodeJS.ProcessEnv = process.env): string[] {
  const flags = daemonV8Flags(env);
  for (const flag of flags) setFlagsFromString(flag);
  return flags;
}
