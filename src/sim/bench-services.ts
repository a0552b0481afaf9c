/**
 * The simulated device's bulk services (docs/ARCHITECTURE.md "Services of the simulated device"),
 * listening on fixed device ports as an app on a phone would, for port forwarding tests and
 * benchmarks:
 *
 * ```
 *  7  echo    host ─ bytes ─────────────────────────> device ─ the same bytes ──> host
 *  9  sink    host ─ N u64 BE ─ N bytes ────────────> device ─ count u64 BE ────> host
 * 19  source  host ─ N u64 BE ──────────────────────> device ─ N pattern bytes ─> host
 * 13  reset   host ─ N u64 BE ──────────────────────> device ─ N pattern bytes, then RST ─> host
 * ```
 *
 * The mux has no half-close (usbmux.md §3.7), so no exchange relies on one: every request says how
 * long it is, and a service answers and then waits for the next request or for the host's RST.
 * Requests may follow one another on one connection (the sink answers each count, the source sends
 * each count in order). The pattern of the source is `byte[k] = k mod 251` from the start of each
 * answer: 251 is prime, so a lost or repeated packet of any usual size shows. The reset service
 * is the one exception to "wait for the host's RST": it ends the connection itself, as a device
 * whose service closes or fails does, to test that a host delivers exactly the bytes sent before
 * the reset and then the end.
 */
import type { Duplex } from 'node:stream';
import { MuxwireError } from '../errors.js';
import { log } from '../log.js';
import type { DeviceMux } from './device-mux.js';

/** Device ports of the bench services; `false` leaves a service out. */
export interface BenchPorts {
  echo?: number | false;
  sink?: number | false;
  source?: number | false;
  reset?: number | false;
}

/**
 * Default ports: 7 echo, 9 discard-like sink, 19 chargen-like source (as the inetd services), and
 * 13 for the reset service.
 */
export const DEFAULT_BENCH_PORTS = { echo: 7, sink: 9, source: 19, reset: 13 } as const;

/** Period of the source pattern: `byte[k] = k % SOURCE_PATTERN_PERIOD`. */
export const SOURCE_PATTERN_PERIOD = 251;

/** Size of a u64 count on the wire. */
const COUNT_SIZE = 8;

// One block of the pattern, a whole number of periods, written again and again (the mux copies it
// into each packet, so sharing it between connections is safe).
const PATTERN_BLOCK = sourcePattern(0, SOURCE_PATTERN_PERIOD * 1024);

const benchLog = log.child({ sim: 'bench' });

/** `length` bytes of the source pattern starting at pattern offset `offset`. */
export function sourcePattern(offset: number, length: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  let value = offset % SOURCE_PATTERN_PERIOD;
  for (let i = 0; i < length; i++) {
    out[i] = value;
    value = value === SOURCE_PATTERN_PERIOD - 1 ? 0 : value + 1;
  }
  return out;
}

/**
 * Index in `chunk` of the first byte that breaks the source pattern, taking `chunk[0]` to be at
 * pattern offset `offset`; -1 when the whole chunk matches.
 */
export function findPatternMismatch(chunk: Buffer, offset: number): number {
  let value = offset % SOURCE_PATTERN_PERIOD;
  for (let i = 0; i < chunk.length; i++) {
    if (chunk[i] !== value) return i;
    value = value === SOURCE_PATTERN_PERIOD - 1 ? 0 : value + 1;
  }
  return -1;
}

/** A u64 big-endian count, as the sink and source services read and write it. */
export function encodeCount(n: number | bigint): Buffer {
  const out = Buffer.alloc(COUNT_SIZE);
  out.writeBigUInt64BE(BigInt(n));
  return out;
}

/**
 * Reads the u64 BE counts that start sink and source requests, from chunks that may split them.
 * Counts above 2^53 − 1 are refused (no benchmark moves 8 PiB, and every length stays exact).
 */
class CountReader {
  readonly #bytes = Buffer.alloc(COUNT_SIZE);
  #have = 0;

  /** Bytes of a count received so far (0 when between counts). */
  get partial(): number {
    return this.#have;
  }

  /**
   * Consumes count bytes from `chunk` at `offset`. Returns `[count | undefined, newOffset]`: a count
   * once all 8 bytes are in.
   */
  read(chunk: Buffer, offset: number): [number | undefined, number] {
    const take = Math.min(COUNT_SIZE - this.#have, chunk.length - offset);
    chunk.copy(this.#bytes, this.#have, offset, offset + take);
    this.#have += take;
    offset += take;
    if (this.#have < COUNT_SIZE) return [undefined, offset];
    this.#have = 0;
    const n = this.#bytes.readBigUInt64BE(0);
    if (n > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_REQUEST', `count ${n} exceeds ${Number.MAX_SAFE_INTEGER}`);
    }
    return [Number(n), offset];
  }
}

function onServiceError(this: Duplex, err: Error): void {
  // The host closing mid-answer fails the pending write; that is how every connection may end.
  benchLog.debug(`connection ended: ${err.message}`);
}

/** Port 7: every byte comes back, with backpressure both ways (`pipe`). */
export function serveEcho(stream: Duplex): void {
  stream.on('error', onServiceError);
  stream.pipe(stream);
}

/**
 * Port 9: a u64 BE count N, then N bytes, answered with the u64 BE count received. Reads as fast as
 * the host sends, so the window never closes. Bytes after the N of a request start the next count.
 */
export function serveSink(stream: Duplex): void {
  stream.on('error', onServiceError);
  const counter = new CountReader();
  let remaining: number | undefined;
  let received = 0;
  stream.on('data', (chunk: Buffer) => {
    let offset = 0;
    try {
      while (offset < chunk.length || remaining === 0) {
        if (remaining === undefined) {
          const [count, next] = counter.read(chunk, offset);
          offset = next;
          if (count === undefined) break;
          remaining = count;
          received = 0;
          continue;
        }
        if (remaining === 0) {
          stream.write(encodeCount(received));
          remaining = undefined;
          continue;
        }
        const take = Math.min(remaining, chunk.length - offset);
        remaining -= take;
        received += take;
        offset += take;
      }
    } catch (err) {
      // A count that cannot be honoured ends the connection; the RST carries the reason.
      stream.destroy(err as Error);
    }
  });
  stream.on('end', () => {
    if (remaining !== undefined || counter.partial > 0) {
      benchLog.debug(`sink: the host closed in the middle of a request (${received} bytes in)`);
    }
    stream.end();
  });
}

/**
 * Port 19: a u64 BE count N; the device sends N bytes of the pattern as fast as the host's window
 * allows (each write completes when it went out), then waits for the next count or the host's RST.
 * While it sends it stops reading, so counts sent ahead wait in the window, not in memory.
 */
export function serveSource(stream: Duplex): void {
  stream.on('error', onServiceError);
  const counter = new CountReader();
  const queued: number[] = [];
  let sending = false;

  const sendNext = (): void => {
    const n = queued.shift();
    if (n === undefined) {
      sending = false;
      stream.resume();
      return;
    }
    sending = true;
    stream.pause();
    let left = n;
    let offset = 0;
    const pump = (): void => {
      while (left > 0) {
        if (stream.destroyed || stream.writableEnded) return;
        // Each write starts where the last one ended in the pattern; the block is whole periods.
        const start = offset % PATTERN_BLOCK.length;
        const take = Math.min(left, PATTERN_BLOCK.length - start);
        left -= take;
        offset += take;
        const more = stream.write(take === PATTERN_BLOCK.length ? PATTERN_BLOCK : PATTERN_BLOCK.subarray(start, start + take));
        if (!more) {
          stream.once('drain', pump);
          return;
        }
      }
      sendNext();
    };
    pump();
  };

  stream.on('data', (chunk: Buffer) => {
    let offset = 0;
    try {
      while (offset < chunk.length) {
        const [count, next] = counter.read(chunk, offset);
        offset = next;
        if (count !== undefined) queued.push(count);
      }
    } catch (err) {
      stream.destroy(err as Error);
      return;
    }
    if (!sending && queued.length > 0) sendNext();
  });
  stream.on('end', () => {
    if (counter.partial > 0) benchLog.debug(`source: the host closed after ${counter.partial} of 8 count bytes`);
    stream.end();
  });
}

/** The reason text the reset service's RST carries (usbmux.md §3.7: a device's RST payload). */
export function resetReason(sent: number): string {
  return `reset by the device after ${sent} bytes`;
}

/**
 * Port 13: a u64 BE count N; the device sends N bytes of the source pattern as fast as the host's
 * window allows, then resets the connection: an RST whose payload is {@link resetReason}, as a
 * device does when its service closes the socket or fails (usbmux.md §3.7). Writes complete only
 * when their bytes went out, so the RST follows the last byte. Bytes after the count are ignored.
 */
export function serveReset(stream: Duplex): void {
  stream.on('error', onServiceError);
  const counter = new CountReader();
  let started = false;
  const reset = (sent: number): void => {
    if (!stream.destroyed) stream.destroy(new Error(resetReason(sent)));
  };
  const send = (n: number): void => {
    stream.pause();
    let left = n;
    let offset = 0;
    const pump = (): void => {
      while (left > 0) {
        if (stream.destroyed) return;
        const start = offset % PATTERN_BLOCK.length;
        const take = Math.min(left, PATTERN_BLOCK.length - start);
        left -= take;
        offset += take;
        const chunk = take === PATTERN_BLOCK.length ? PATTERN_BLOCK : PATTERN_BLOCK.subarray(start, start + take);
        // The last write's callback runs once its bytes went out: the RST comes right behind them.
        const more = stream.write(chunk, left === 0 ? () => reset(n) : undefined);
        if (!more && left > 0) {
          stream.once('drain', pump);
          return;
        }
      }
      if (n === 0) reset(0);
    };
    pump();
  };
  stream.on('data', (chunk: Buffer) => {
    if (started) return;
    try {
      const [count] = counter.read(chunk, 0);
      if (count === undefined) return;
      started = true;
      send(count);
    } catch (err) {
      stream.destroy(err as Error);
    }
  });
  stream.on('end', () => stream.end());
}

/** What {@link serveBenchServices} started. */
export interface BenchServices {
  /** The ports in use (a service left out is absent). */
  readonly ports: BenchServicePorts;
  /** Stops listening (open connections stay until their host closes them). */
  close(): void;
}

/** The ports the bench services listen on (a service left out is absent). */
export interface BenchServicePorts {
  echo?: number;
  sink?: number;
  source?: number;
  reset?: number;
}

/** Listens with the echo, sink, source and reset services on `mux` (defaults 7, 9, 19, 13). */
export function serveBenchServices(mux: DeviceMux, ports: BenchPorts = {}): BenchServices {
  const chosen: BenchServicePorts = {};
  const services = [
    ['echo', ports.echo ?? DEFAULT_BENCH_PORTS.echo, serveEcho],
    ['sink', ports.sink ?? DEFAULT_BENCH_PORTS.sink, serveSink],
    ['source', ports.source ?? DEFAULT_BENCH_PORTS.source, serveSource],
    ['reset', ports.reset ?? DEFAULT_BENCH_PORTS.reset, serveReset],
  ] as const;
  const started: number[] = [];
  try {
    for (const [name, port, serve] of services) {
      if (port === false) continue;
      mux.listen(port, serve);
      started.push(port);
      chosen[name] = port;
    }
  } catch (err) {
    for (const port of started) mux.unlisten(port);
    throw err;
  }
  return {
    ports: chosen,
    close(): void {
      for (const port of started) mux.unlisten(port);
    },
  };
}
