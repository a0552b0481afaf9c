/**
 * A fast path for the plist (v1) requests clients send most: a flat dictionary of strings and
 * small integers, written the way libplist writes it (libusbmuxd's Connect, Listen, ListDevices…).
 * It reads exactly this shape and nothing else:
 *
 * ```
 * <?xml version="1.0" encoding="UTF-8"?>⏎                ← these three lines byte for byte
 * <!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">⏎
 * <plist version="1.0">⏎
 * <dict>                                                  ← whitespace (bytes ≤ 0x20) between elements
 * ⇥<key>K</key>            K, S: no '&', no '<'
 * ⇥<string>S</string>      or <integer>D</integer>, D: 1 to 15 decimal digits, no sign
 * </dict>⏎
 * </plist>⏎                                                ← then only whitespace
 * ```
 *
 * Anything else, including every form the general reader accepts and this one does not (entities,
 * CDATA, comments, attributes, nesting, other types, a `CF$UID` key), gives undefined, and the
 * caller falls back to `decodePlist` (plist-xml.ts). Whenever this returns a dictionary, it is the
 * one the general reader returns for the same bytes (test/daemon/request-decoding.test.ts
 * checks that on random and mutated input): text is decoded as UTF-8 per element, which equals
 * decoding the whole body because every boundary is an ASCII byte; members are set in order, so a
 * repeated key keeps its last value as there. A `__proto__` key is left to the general reader
 * (setDictMember), which makes it an own property.
 */
import type { PlistDict } from './plist-types.js';

const HEADER = Buffer.from(
  '<?xml version="1.0" encoding="UTF-8"?>\n' +
    '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n' +
    '<plist version="1.0">\n',
  'latin1',
);
const DICT_OPEN = Buffer.from('<dict>', 'latin1');
const DICT_CLOSE = Buffer.from('</dict>', 'latin1');
const PLIST_CLOSE = Buffer.from('</plist>', 'latin1');
const KEY_OPEN = Buffer.from('<key>', 'latin1');
const KEY_CLOSE = Buffer.from('</key>', 'latin1');
const STRING_OPEN = Buffer.from('<string>', 'latin1');
const STRING_CLOSE = Buffer.from('</string>', 'latin1');
const INTEGER_OPEN = Buffer.from('<integer>', 'latin1');
const INTEGER_CLOSE = Buffer.from('</integer>', 'latin1');

const LT = 0x3c;
const AMP = 0x26;
/** Longest integer read here: 15 digits are always a safe integer. */
const MAX_DIGITS = 15;

/**
 * The dictionary of a flat XML plist request (see the file comment), or undefined when `body` is
 * anything else and the general decoder must read it.
 */
export function decodeFlatXmlDict(body: Buffer): PlistDict | undefined {
  if (!startsWith(body, HEADER, 0)) return undefined;
  let i = skipSpace(body, HEADER.length);
  if (!startsWith(body, DICT_OPEN, i)) return undefined;
  i += DICT_OPEN.length;
  const dict: PlistDict = {};
  for (;;) {
    i = skipSpace(body, i);
    if (startsWith(body, DICT_CLOSE, i)) {
      i = skipSpace(body, i + DICT_CLOSE.length);
      if (!startsWith(body, PLIST_CLOSE, i)) return undefined;
      return skipSpace(body, i + PLIST_CLOSE.length) === body.length ? dict : undefined;
    }
    if (!startsWith(body, KEY_OPEN, i)) return undefined;
    const keyStart = i + KEY_OPEN.length;
    const keyEnd = textEnd(body, keyStart);
    if (keyEnd < 0 || !startsWith(body, KEY_CLOSE, keyEnd)) return undefined;
    const key = body.toString('utf8', keyStart, keyEnd);
    // {CF$UID: n} is a UID to the general reader, not a dictionary; `__proto__` needs its care.
    if (key === 'CF$UID' || key === '__proto__') return undefined;
    i = skipSpace(body, keyEnd + KEY_CLOSE.length);
    if (startsWith(body, STRING_OPEN, i)) {
      const start = i + STRING_OPEN.length;
      const end = textEnd(body, start);
      if (end < 0 || !startsWith(body, STRING_CLOSE, end)) return undefined;
      dict[key] = body.toString('utf8', start, end);
      i = end + STRING_CLOSE.length;
    } else if (startsWith(body, INTEGER_OPEN, i)) {
      const start = i + INTEGER_OPEN.length;
      let end = start;
      let n = 0;
      while (end < body.length && body[end]! >= 0x30 && body[end]! <= 0x39 && end - start < MAX_DIGITS) {
        n = n * 10 + (body[end]! - 0x30);
        end++;
      }
      if (end === start || !startsWith(body, INTEGER_CLOSE, end)) return undefined;
      dict[key] = n;
      i = end + INTEGER_CLOSE.length;
    } else {
      return undefined;
    }
  }
}

function startsWith(body: Buffer, what: Buffer, at: number): boolean {
  if (at + what.length > body.length) return false;
  for (let k = 0; k < what.length; k++) if (body[at + k] !== what[k]) return false;
  return true;
}

/** Whitespace between elements: every byte up to 0x20, as the general reader counts it. */
function skipSpace(body: Buffer, i: number): number {
  while (i < body.length && body[i]! <= 0x20) i++;
  return i;
}

/** Where plain text from `start` ends (its '<'), or -1 when it holds an entity or never ends. */
function textEnd(body: Buffer, start: number): number {
  for (let i = start; i < body.length; i++) {
    const c = body[i]!;
    if (c === LT) return i;
    if (c === AMP) return -1;
  }
  return -1;
}
