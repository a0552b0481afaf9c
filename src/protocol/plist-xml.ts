/**
 * XML property lists, written the way libplist and Apple write them and read leniently enough for
 * what devices send.
 *
 * ```
 * <?xml version="1.0" encoding="UTF-8"?>⏎                     ← first bytes: LIMD only parses a
 * <!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">⏎
 * <plist version="1.0">⏎                                         reply that begins with `<?xml`
 * <dict>⏎
 * ⇥<key>Request</key>⏎                                         ← one tab per level, as libplist
 * ⇥<string>QueryType</string>⏎
 * ⇥<key>Blob</key>⏎
 * ⇥<data>⏎                                                     ← base64 on its own lines, at most
 * ⇥AAECAw==⏎                                                     76 − 8·depth columns (libplist,
 * ⇥</data>⏎                                                      CoreFoundation)
 * ⇥<key>Empty</key>⏎
 * ⇥<dict/>⏎                                                    ← empty containers self-close
 * </dict>⏎
 * </plist>⏎
 * ```
 *
 * Encoding: UTF-8. `&`, `<`, `>` and CR are escaped; other control characters are written raw, as
 * Apple does (clients cope: LIMD turns them into spaces, pymobiledevice3 strips them and retries).
 * Decoding accepts raw control characters anywhere (lockdown-afc.md §1.2, the iOS 4.3 quirk), numeric
 * character references, CDATA and comments, and rejects everything else that is not a plist with
 * MUXWIRE_ERR_BAD_PLIST. No DTD is ever interpreted, so no entity expansion is possible.
 */
import {
  PlistReal,
  PlistUID,
  PLIST_INT_MAX,
  PLIST_INT_MIN,
  PLIST_MAX_DEPTH,
  badPlist,
  integerValue,
  isPlistDict,
  setDictMember,
  uidValue,
} from './plist-types.js';
import type { PlistDecodeOptions, PlistDict, PlistValue } from './plist-types.js';

const XML_HEADER =
  '<?xml version="1.0" encoding="UTF-8"?>\n' +
  '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n' +
  '<plist version="1.0">\n';
const XML_FOOTER = '</plist>\n';

// ─── Encoder ──────────────────────────────────────────────────────────────────────────────────

const NEEDS_ESCAPE = /[&<>\r]/;
const ESCAPES = /[&<>\r]/g;
function escapeChar(c: string): string {
  switch (c) {
    case '&': return '&amp;';
    case '<': return '&lt;';
    case '>': return '&gt;';
    default: return '&#13;';
  }
}
function escapeText(s: string): string {
  return NEEDS_ESCAPE.test(s) ? s.replace(ESCAPES, escapeChar) : s;
}

const TABS: string[] = [''];
function tabs(depth: number): string {
  while (TABS.length <= depth) TABS.push(TABS[TABS.length - 1] + '\t');
  return TABS[depth];
}

function pad(n: number, width: number): string {
  return String(n).padStart(width, '0');
}

/** `YYYY-MM-DDTHH:MM:SSZ`, whole seconds, as Apple and libplist write `<date>`. */
function formatDate(d: Date): string {
  const ms = d.getTime();
  if (!Number.isFinite(ms)) badPlist('cannot encode an invalid Date');
  const t = new Date(Math.floor(ms / 1000) * 1000);
  const y = t.getUTCFullYear();
  const year = y >= 0 && y <= 9999 ? pad(y, 4) : (y < 0 ? '-' : '+') + pad(Math.abs(y), 6);
  return `${year}-${pad(t.getUTCMonth() + 1, 2)}-${pad(t.getUTCDate(), 2)}T${pad(t.getUTCHours(), 2)}:${pad(t.getUTCMinutes(), 2)}:${pad(t.getUTCSeconds(), 2)}Z`;
}

function formatReal(n: number): string {
  if (Number.isNaN(n)) return 'nan';
  if (n === Infinity) return '+infinity';
  if (n === -Infinity) return '-infinity';
  return Object.is(n, -0) ? '-0' : String(n);
}

function checkInteger(n: bigint): void {
  if (n < PLIST_INT_MIN || n > PLIST_INT_MAX) badPlist(`integer ${n} does not fit in 64 bits`);
}

class XmlWriter {
  readonly parts: string[] = [];
  readonly #path = new Set<object>();

  value(v: PlistValue, depth: number): void {
    const ind = tabs(depth);
    const p = this.parts;
    switch (typeof v) {
      case 'string':
        p.push(ind, '<string>', escapeText(v), '</string>\n');
        return;
      case 'number':
        // Only safe integers are <integer>: a larger integral number is a float in JS (use a
        // bigint for a 64-bit integer), and -0 must stay a real to keep its sign.
        if (Number.isSafeInteger(v) && !Object.is(v, -0)) p.push(ind, '<integer>', String(v), '</integer>\n');
        else p.push(ind, '<real>', formatReal(v), '</real>\n');
        return;
      case 'bigint':
        checkInteger(v);
        p.push(ind, '<integer>', v.toString(), '</integer>\n');
        return;
      case 'boolean':
        p.push(ind, v ? '<true/>\n' : '<false/>\n');
        return;
      case 'object':
        break;
      default:
        badPlist(`cannot encode a ${typeof v} in a plist`);
    }
    if (v === null) badPlist('cannot encode null in a plist');
    if (v instanceof PlistReal) {
      p.push(ind, '<real>', formatReal(v.value), '</real>\n');
    } else if (v instanceof PlistUID) {
      // libplist and CoreFoundation write a UID as a one-key dictionary in XML.
      p.push(ind, '<dict>\n', tabs(depth + 1), '<key>CF$UID</key>\n', tabs(depth + 1), '<integer>', String(uidValue(v)), '</integer>\n', ind, '</dict>\n');
    } else if (v instanceof Date) {
      p.push(ind, '<date>', formatDate(v), '</date>\n');
    } else if (ArrayBuffer.isView(v)) {
      this.#data(Buffer.from(v.buffer, v.byteOffset, v.byteLength), depth);
    } else if (Array.isArray(v)) {
      if (v.length === 0) {
        p.push(ind, '<array/>\n');
        return;
      }
      this.#enter(v, depth);
      p.push(ind, '<array>\n');
      for (const item of v) {
        if (item === undefined) badPlist('cannot encode undefined in a plist array');
        this.value(item, depth + 1);
      }
      p.push(ind, '</array>\n');
      this.#path.delete(v);
    } else if (isPlistDict(v)) {
      this.#enter(v, depth);
      const start = p.length;
      p.push(ind, '<dict>\n');
      let members = 0;
      for (const key of Object.keys(v)) {
        const item = v[key];
        if (item === undefined) continue;
        members++;
        p.push(tabs(depth + 1), '<key>', escapeText(key), '</key>\n');
        this.value(item, depth + 1);
      }
      if (members === 0) {
        p.length = start;
        p.push(ind, '<dict/>\n');
      } else {
        p.push(ind, '</dict>\n');
      }
      this.#path.delete(v);
    } else {
      badPlist('cannot encode this object in a plist');
    }
  }

  #enter(container: object, depth: number): void {
    if (depth >= PLIST_MAX_DEPTH) badPlist(`plist nesting deeper than ${PLIST_MAX_DEPTH}`);
    if (this.#path.has(container)) badPlist('cannot encode a plist that contains itself');
    this.#path.add(container);
  }

  #data(buf: Buffer, depth: number): void {
    const ind = tabs(depth);
    // libplist's MAX_DATA_BYTES_PER_LINE: 76 columns minus 8 per tab, in whole base64 quanta.
    const perLine = Math.max(((76 - depth * 8) >> 2) * 3, 12);
    this.parts.push(ind, '<data>\n');
    for (let off = 0; off < buf.length; off += perLine) {
      this.parts.push(ind, buf.toString('base64', off, Math.min(buf.length, off + perLine)), '\n');
    }
    this.parts.push(ind, '</data>\n');
  }
}

/**
 * Encodes a value as an XML plist: the XML declaration first (LIMD checks for `<?xml`), the Apple
 * DOCTYPE, tab indentation. Throws MUXWIRE_ERR_BAD_PLIST for values a plist cannot hold (null,
 * undefined in an array, functions, cycles, integers beyond 64 bits).
 */
export function encodeXmlPlist(v: PlistValue): Buffer {
  const w = new XmlWriter();
  w.parts.push(XML_HEADER);
  w.value(v, 0);
  w.parts.push(XML_FOOTER);
  return Buffer.from(w.parts.join(''), 'utf8');
}

// ─── Decoder ──────────────────────────────────────────────────────────────────────────────────

interface Tag {
  name: string;
  closing: boolean;
  selfClosing: boolean;
}

const NAME_CHAR = /[A-Za-z0-9_:.-]/;
const INTEGER_TEXT = /^([+-]?)(?:0[xX]([0-9a-fA-F]{1,16})|(\d{1,25}))$/;
const REAL_TEXT = /^[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)$/;
const DATE_TEXT = /^([+-]?\d{4,6})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?Z?$/;
const BASE64_TEXT = /^[A-Za-z0-9+/]*={0,2}$/;

function isSpace(code: number): boolean {
  // Every control character counts as whitespace between elements: LIMD replaces them with
  // spaces before parsing (lockdown-afc.md §1.2), so a device may put them anywhere.
  return code <= 0x20;
}

class XmlReader {
  readonly #s: string;
  readonly #keepReals: boolean;
  #i = 0;

  constructor(s: string, opts: PlistDecodeOptions = {}) {
    this.#s = s;
    this.#keepReals = opts.keepReals === true;
  }

  #fail(what: string): never {
    badPlist(`bad XML plist at offset ${this.#i}: ${what}`);
  }

  document(): PlistValue {
    this.#prolog();
    const root = this.#tag();
    let value: PlistValue;
    if (root.name === 'plist' && !root.closing) {
      if (root.selfClosing) this.#fail('empty <plist/>');
      this.#skipSpace();
      value = this.#value(this.#tag(), 0);
      this.#skipSpace();
      const end = this.#tag();
      if (!end.closing || end.name !== 'plist') this.#fail('expected </plist>');
    } else {
      // A bare value without the <plist> wrapper, which CoreFoundation also accepts.
      value = this.#value(root, 0);
    }
    this.#skipSpace();
    if (this.#i < this.#s.length) this.#fail('content after the plist');
    return value;
  }

  #prolog(): void {
    const s = this.#s;
    if (s.charCodeAt(0) === 0xfeff) this.#i = 1;
    for (;;) {
      this.#skipSpace();
      if (s.startsWith('<?', this.#i)) {
        const end = s.indexOf('?>', this.#i + 2);
        if (end < 0) this.#fail('unterminated processing instruction');
        this.#i = end + 2;
      } else if (s.startsWith('<!DOCTYPE', this.#i)) {
        // Skip the declaration, including an internal subset in brackets; nothing in it is used.
        let i = this.#i + 9;
        let bracket = 0;
        let quote = 0;
        for (; i < s.length; i++) {
          const c = s.charCodeAt(i);
          if (quote !== 0) {
            if (c === quote) quote = 0;
          } else if (c === 0x22 || c === 0x27) quote = c;
          else if (c === 0x5b) bracket++;
          else if (c === 0x5d) bracket--;
          else if (c === 0x3e && bracket <= 0) break;
        }
        if (i >= s.length) this.#fail('unterminated DOCTYPE');
        this.#i = i + 1;
      } else {
        return;
      }
    }
  }

  /** Skips whitespace (any control character) and comments between elements. */
  #skipSpace(): void {
    const s = this.#s;
    for (;;) {
      while (this.#i < s.length && isSpace(s.charCodeAt(this.#i))) this.#i++;
      if (s.startsWith('<!--', this.#i)) {
        const end = s.indexOf('-->', this.#i + 4);
        if (end < 0) this.#fail('unterminated comment');
        this.#i = end + 3;
      } else {
        return;
      }
    }
  }

  #tag(): Tag {
    const s = this.#s;
    if (s.charCodeAt(this.#i) !== 0x3c) this.#fail(this.#i >= s.length ? 'unexpected end' : 'expected an element');
    let i = this.#i + 1;
    const closing = s.charCodeAt(i) === 0x2f;
    if (closing) i++;
    const nameStart = i;
    while (i < s.length && NAME_CHAR.test(s[i])) i++;
    if (i === nameStart) this.#fail('expected an element name');
    const name = s.slice(nameStart, i);
    // Attributes (only <plist version="1.0"> has any) are skipped, respecting quotes.
    let quote = 0;
    for (; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (quote !== 0) {
        if (c === quote) quote = 0;
      } else if (c === 0x22 || c === 0x27) quote = c;
      else if (c === 0x3e) break;
    }
    if (i >= s.length) this.#fail(`unterminated <${name}>`);
    const selfClosing = !closing && s.charCodeAt(i - 1) === 0x2f;
    this.#i = i + 1;
    return { name, closing, selfClosing };
  }

  /** Reads character data up to `</name>` and consumes that end tag. */
  #text(name: string): string {
    const s = this.#s;
    let out = '';
    for (;;) {
      const lt = s.indexOf('<', this.#i);
      if (lt < 0) this.#fail(`unterminated <${name}>`);
      out += lt > this.#i ? this.#unescape(s.slice(this.#i, lt)) : '';
      this.#i = lt;
      if (s.startsWith('</', lt)) {
        const end = this.#tag();
        if (end.name !== name) this.#fail(`expected </${name}>, found </${end.name}>`);
        return out;
      }
      if (s.startsWith('<![CDATA[', lt)) {
        const end = s.indexOf(']]>', lt + 9);
        if (end < 0) this.#fail('unterminated CDATA');
        out += s.slice(lt + 9, end);
        this.#i = end + 3;
      } else if (s.startsWith('<!--', lt)) {
        const end = s.indexOf('-->', lt + 4);
        if (end < 0) this.#fail('unterminated comment');
        this.#i = end + 3;
      } else {
        this.#fail(`element inside <${name}>`);
      }
    }
  }

  #unescape(text: string): string {
    if (text.indexOf('&') < 0) return text;
    return text.replace(/&([^;&]{0,10});?/g, (whole, ent: string) => {
      if (!whole.endsWith(';')) this.#fail('unterminated entity');
      switch (ent) {
        case 'amp': return '&';
        case 'lt': return '<';
        case 'gt': return '>';
        case 'quot': return '"';
        case 'apos': return "'";
      }
      let cp = NaN;
      if (/^#[0-9]{1,7}$/.test(ent)) cp = Number(ent.slice(1));
      else if (/^#[xX][0-9a-fA-F]{1,6}$/.test(ent)) cp = parseInt(ent.slice(2), 16);
      // XML's Char production: no NUL and no surrogate halves.
      if (!(cp > 0 && cp <= 0x10ffff) || (cp >= 0xd800 && cp <= 0xdfff)) this.#fail(`bad entity &${ent};`);
      return String.fromCodePoint(cp);
    });
  }

  #value(tag: Tag, depth: number): PlistValue {
    if (tag.closing) this.#fail(`unexpected </${tag.name}>`);
    switch (tag.name) {
      case 'dict':
        return tag.selfClosing ? {} : this.#dict(depth);
      case 'array':
        return tag.selfClosing ? [] : this.#array(depth);
      case 'string':
        return tag.selfClosing ? '' : this.#text('string');
      case 'integer':
        return this.#integer(tag.selfClosing ? '' : this.#text('integer'));
      case 'real': {
        const real = this.#real(tag.selfClosing ? '' : this.#text('real'));
        return this.#keepReals ? new PlistReal(real) : real;
      }
      case 'true':
      case 'false':
        if (!tag.selfClosing && this.#text(tag.name).trim() !== '') this.#fail(`text inside <${tag.name}>`);
        return tag.name === 'true';
      case 'data':
        return this.#data(tag.selfClosing ? '' : this.#text('data'));
      case 'date':
        return this.#date(tag.selfClosing ? '' : this.#text('date'));
      default:
        this.#fail(`unknown element <${tag.name}>`);
    }
  }

  #dict(depth: number): PlistValue {
    if (depth + 1 > PLIST_MAX_DEPTH) this.#fail(`nesting deeper than ${PLIST_MAX_DEPTH}`);
    const dict: PlistDict = {};
    let count = 0;
    let only: PlistValue | undefined;
    for (;;) {
      this.#skipSpace();
      const tag = this.#tag();
      if (tag.closing) {
        if (tag.name !== 'dict') this.#fail(`expected </dict>, found </${tag.name}>`);
        break;
      }
      if (tag.name !== 'key') this.#fail(`expected <key>, found <${tag.name}>`);
      const key = tag.selfClosing ? '' : this.#text('key');
      this.#skipSpace();
      const value = this.#value(this.#tag(), depth + 1);
      setDictMember(dict, key, value);
      count++;
      only = key === 'CF$UID' ? value : undefined;
    }
    // {CF$UID: n} is how XML spells a UID (libplist, CoreFoundation).
    if (count === 1 && typeof only === 'number' && Number.isInteger(only) && only >= 0 && only <= 0xffffffff) {
      return new PlistUID(only);
    }
    return dict;
  }

  #array(depth: number): PlistValue[] {
    if (depth + 1 > PLIST_MAX_DEPTH) this.#fail(`nesting deeper than ${PLIST_MAX_DEPTH}`);
    const out: PlistValue[] = [];
    for (;;) {
      this.#skipSpace();
      const tag = this.#tag();
      if (tag.closing) {
        if (tag.name !== 'array') this.#fail(`expected </array>, found </${tag.name}>`);
        return out;
      }
      out.push(this.#value(tag, depth + 1));
    }
  }

  #integer(text: string): number | bigint {
    const m = INTEGER_TEXT.exec(text.trim());
    if (!m) this.#fail(`bad integer "${text.slice(0, 40)}"`);
    let n = m[2] !== undefined ? BigInt('0x' + m[2]) : BigInt(m[3]);
    if (m[1] === '-') n = -n;
    if (n < PLIST_INT_MIN || n > PLIST_INT_MAX) this.#fail(`integer ${text.trim()} does not fit in 64 bits`);
    return integerValue(n);
  }

  #real(text: string): number {
    const t = text.trim();
    if (REAL_TEXT.test(t)) return Number(t);
    switch (t.toLowerCase()) {
      case 'nan':
        return NaN;
      case 'inf':
      case 'infinity':
      case '+inf':
      case '+infinity':
        return Infinity;
      case '-inf':
      case '-infinity':
        return -Infinity;
    }
    this.#fail(`bad real "${t.slice(0, 40)}"`);
  }

  #data(text: string): Buffer {
    let t = '';
    for (let i = 0; i < text.length; i++) if (!isSpace(text.charCodeAt(i))) t += text[i];
    if (!BASE64_TEXT.test(t) || t.length % 4 === 1) this.#fail('bad base64 in <data>');
    return Buffer.from(t, 'base64');
  }

  #date(text: string): Date {
    const m = DATE_TEXT.exec(text.trim());
    if (!m) this.#fail(`bad date "${text.slice(0, 40)}"`);
    const [mo, d, h, mi, se] = [m[2], m[3], m[4], m[5], m[6]].map(Number);
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60) this.#fail(`bad date "${text.trim()}"`);
    const ms = Date.UTC(Number(m[1]), mo - 1, d, h, mi, se) + (m[7] ? Math.round(Number(m[7]) * 1000) : 0);
    // Date.UTC maps years 0–99 to 1900–1999; set the full year explicitly.
    const date = new Date(ms);
    date.setUTCFullYear(Number(m[1]));
    if (!Number.isFinite(date.getTime())) this.#fail(`date out of range "${text.trim()}"`);
    return date;
  }
}

/**
 * Decodes an XML plist (bytes in UTF-8, or a string). Throws MUXWIRE_ERR_BAD_PLIST for anything
 * that is not a well-formed plist.
 */
export function decodeXmlPlist(input: Buffer | Uint8Array | string, opts?: PlistDecodeOptions): PlistValue {
  const text = typeof input === 'string' ? input : Buffer.from(input.buffer, input.byteOffset, input.byteLength).toString('utf8');
  return new XmlReader(text, opts).document();
}
