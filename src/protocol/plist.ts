/**
 * Property lists, XML and binary, read and written by our own codecs (no plist library at run
 * time). The value model is in `plist-types.ts`, the formats in `plist-xml.ts` and
 * `plist-binary.ts`; this module is the one callers import.
 *
 * ```
 * first bytes   format
 * "bplist00"    binary (plist-binary.ts)
 * anything else XML (plist-xml.ts): "<?xml", a UTF-8 BOM, whitespace, or a bare "<plist"/"<dict"
 * ```
 */
import { decodeBinaryPlist, BPLIST_MAGIC } from './plist-binary.js';
import { decodeXmlPlist } from './plist-xml.js';
import type { PlistDecodeOptions, PlistValue } from './plist-types.js';

export { PlistReal, PlistUID, isPlistDict, PLIST_MAX_DEPTH } from './plist-types.js';
export type { PlistDecodeOptions, PlistDict, PlistValue } from './plist-types.js';
export { encodeXmlPlist, decodeXmlPlist } from './plist-xml.js';
export { encodeBinaryPlist, decodeBinaryPlist, BPLIST_MAGIC } from './plist-binary.js';

/** True when the bytes start with the binary plist magic `bplist00`. */
export function isBinaryPlist(buf: Buffer | Uint8Array): boolean {
  if (buf.length < 8) return false;
  for (let i = 0; i < 8; i++) if (buf[i] !== BPLIST_MAGIC[i]) return false;
  return true;
}

/** Decodes a plist in either format, chosen by its first bytes. Throws MUXWIRE_ERR_BAD_PLIST. */
export function decodePlist(buf: Buffer | Uint8Array, opts?: PlistDecodeOptions): PlistValue {
  return isBinaryPlist(buf) ? decodeBinaryPlist(buf, opts) : decodeXmlPlist(buf, opts);
}
