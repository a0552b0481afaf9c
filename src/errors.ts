/**
 * One error class for the whole project (docs/ARCHITECTURE.md, conventions §5). Every error that
 * crosses a public API is a MuxwireError with a stable `code`; the README lists every code. Codes
 * are plain strings so each layer can add its own without a central registry; `codes.ts`-style
 * constants live next to the code that throws them.
 */
export class MuxwireError extends Error {
  /** Stable machine-readable code, e.g. `MUXWIRE_ERR_CONN_REFUSED`. */
  readonly code: string;
  /** Extra structured detail (a lockdown error string, an AFC status, a result number…). */
  readonly detail?: unknown;

  constructor(code: string, message: string, options?: { cause?: unknown; detail?: unknown }) {
    super(message, options?.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = 'MuxwireError';
    this.code = code;
    if (options?.detail !== undefined) this.detail = options.detail;
  }
}

/** True when `err` is a MuxwireError, optionally with the given code. */
export function isMuxwireError(err: unknown, code?: string): err is MuxwireError {
  return err instanceof MuxwireError && (code === undefined || err.code === code);
}

/** Wraps anything thrown into a MuxwireError, keeping MuxwireErrors as they are. */
export function toMuxwireError(err: unknown, code: string, message?: string): MuxwireError {
  if (err instanceof MuxwireError) return err;
  const text = message ?? (err instanceof Error ? err.message : String(err));
  return new MuxwireError(code, text, { cause: err });
}
