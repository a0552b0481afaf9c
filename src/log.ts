/**
 * One logger with levels and a context (docs/ARCHITECTURE.md, conventions §11):
 * `log.child({ dev: 3 }).info('attached')` prints `muxwire info dev=3 attached`. Debug lines cost
 * a level check when off; callers on hot paths guard with `log.enabled('debug')` before building
 * a message.
 */
import { channel } from 'node:diagnostics_channel';

export type LogLevel = 'error' | 'warn' | 'info' | 'debug' | 'trace';
const ORDER: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3, trace: 4 };

export type LogSink = (line: string, level: LogLevel) => void;

let threshold: number = ORDER[(process.env.MUXWIRE_LOG as LogLevel | undefined) ?? 'warn'] ?? ORDER.warn;
let sink: LogSink = (line) => process.stderr.write(line + '\n');

/** Sets the global level (`-v` sets debug). */
export function setLogLevel(level: LogLevel): void {
  threshold = ORDER[level];
}

/** Sends log lines somewhere else than stderr (tests capture them this way). */
export function setLogSink(next: LogSink): void {
  sink = next;
}

export class Logger {
  // The context text is built on the first line written: a connection's logger costs one object
  // until it logs, and most never do (the connect path makes one per connection).
  #context: string | undefined;
  readonly #parent: Logger | undefined;
  readonly #fields: Record<string, string | number> | undefined;
  constructor(context = '', parent?: Logger, fields?: Record<string, string | number>) {
    this.#context = parent === undefined ? context : undefined;
    this.#parent = parent;
    this.#fields = fields;
  }
  /** A logger whose lines carry more context, e.g. `{ dev: 3, conn: '1→62078' }`. */
  child(fields: Record<string, string | number>): Logger {
    return new Logger('', this, fields);
  }
  /** The context part of this logger's lines (`dev=3 conn=1→62078`). */
  get context(): string {
    if (this.#context === undefined) {
      const more = Object.entries(this.#fields!)
        .map(([k, v]) => `${k}=${v}`)
        .join(' ');
      const above = this.#parent!.context;
      this.#context = above && more ? `${above} ${more}` : above || more;
    }
    return this.#context;
  }
  enabled(level: LogLevel): boolean {
    return ORDER[level] <= threshold;
  }
  #write(level: LogLevel, message: string): void {
    if (ORDER[level] > threshold) return;
    const context = this.context;
    sink(oneLine(`muxwire ${level}${context ? ' ' + context : ''} ${message}`), level);
  }
  error(message: string): void { this.#write('error', message); }
  warn(message: string): void { this.#write('warn', message); }
  info(message: string): void { this.#write('info', message); }
  debug(message: string): void { this.#write('debug', message); }
  trace(message: string): void { this.#write('trace', message); }
}

/** Line breaks, escape sequences and other control characters (tab stays). */
const CONTROL = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f]/g;

/**
 * A message as one line of printable text: a control character becomes `\xNN`. Messages carry
 * what clients and devices send (a ProgName, a device name, a file name): raw, a newline in one
 * would forge a log line of its own, and an escape sequence would drive the reader's terminal.
 */
export function oneLine(message: string): string {
  CONTROL.lastIndex = 0;
  if (!CONTROL.test(message)) return message;
  return message.replace(CONTROL, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/** The root logger. */
export const log = new Logger();

/** diagnostics_channel events for attach, detach and connect (docs/ARCHITECTURE.md, conventions §11). */
export const diagnostics = {
  attach: channel('muxwire:device:attach'),
  detach: channel('muxwire:device:detach'),
  connect: channel('muxwire:connection:open'),
  close: channel('muxwire:connection:close'),
};
