/**
 * Errors of the AFC client. A status the device answers with becomes
 * `MuxwireError('MUXWIRE_ERR_AFC', 'AFC FILE_OPEN /a.txt: OBJECT_NOT_FOUND (8)', {detail: 8})`; the
 * status name is in the message for people, the number in `detail` for programs.
 */
import { MuxwireError } from '../../errors.js';
import { AfcOp, AfcStatus } from '../../protocol/afc.js';

/** Code of every AFC failure: a device status, or a reply that does not fit the request. */
export const AFC_ERROR = 'MUXWIRE_ERR_AFC';

/** The name of an AFC status code, e.g. `OBJECT_NOT_FOUND` for 8. */
export function afcStatusName(status: number): string {
  return (AfcStatus as unknown as Record<number, string | undefined>)[status] ?? `STATUS_${status}`;
}

/** The name of an AFC opcode, e.g. `FILE_READ` for 0x0F. */
export function afcOpName(op: number): string {
  return (AfcOp as unknown as Record<number, string | undefined>)[op] ?? `OP_0x${op.toString(16)}`;
}

/** The error for a non-zero STATUS reply to `op` on `subject` (a path or a handle). */
export function afcStatusError(op: number, subject: string, status: number): MuxwireError {
  const where = subject === '' ? '' : ` ${subject}`;
  return new MuxwireError(AFC_ERROR, `AFC ${afcOpName(op)}${where}: ${afcStatusName(status)} (${status})`, {
    detail: status,
  });
}

/** True when `err` is an AFC status error with the given status. */
export function isAfcStatus(err: unknown, status: AfcStatus): boolean {
  return err instanceof MuxwireError && err.code === AFC_ERROR && err.detail === status;
}
