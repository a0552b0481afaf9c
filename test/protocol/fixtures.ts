/**
 * Byte dumps the codecs must decode and re-encode byte for byte. The hex is written as in issue 2
 * and the reference (usbmux.md §2.3, §3.1, §4.3; lockdown-afc.md §1.2, §9.7.1), spaces and all;
 * `hex()` strips the spacing.
 */

/** Bytes from hex written in groups ("10000000 00000000", "43 46 41 36"). */
export function hex(text: string): Buffer {
  const clean = text.replace(/\s+/g, '');
  if (!/^([0-9a-fA-F]{2})*$/.test(clean)) throw new Error(`bad hex fixture: ${text}`);
  return Buffer.from(clean, 'hex');
}

// ─── Client protocol, binary v0 (issue 2; usbmux.md §4.3) ──────────────────────────────────────

/** LISTEN, tag 2. */
export const LISTEN = '10000000 00000000 03000000 02000000';
/** Its RESULT: OK, tag 2. */
export const LISTEN_RESULT = '14000000 00000000 01000000 02000000 00000000';
/** CONNECT to device 0x19, port 22 big-endian, tag 3. */
export const CONNECT_22 = '18000000 00000000 02000000 03000000 19000000 00160000';
/** The refused result (CONNREFUSED), tag 3. */
export const CONNECT_REFUSED = '14000000 00000000 01000000 03000000 03000000';
/** The accepted result (OK), tag 3. */
export const CONNECT_ACCEPTED = '14000000 00000000 01000000 03000000 00000000';

// ─── Lockdown over a plist service frame (lockdown-afc.md §1.2) ────────────────────────────────

/** ideviceinfo's QueryType, as libplist's plist_to_xml writes it (tabs, DOCTYPE, final newline). */
export const QUERY_TYPE_XML =
  '<?xml version="1.0" encoding="UTF-8"?>\n' +
  '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n' +
  '<plist version="1.0">\n' +
  '<dict>\n' +
  '\t<key>Label</key>\n' +
  '\t<string>ideviceinfo</string>\n' +
  '\t<key>Request</key>\n' +
  '\t<string>QueryType</string>\n' +
  '</dict>\n' +
  '</plist>\n';

/** The same request written compactly, as quoted in the issue. */
export const QUERY_TYPE_XML_COMPACT =
  '<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict><key>Label</key><string>ideviceinfo</string>' +
  '<key>Request</key><string>QueryType</string></dict></plist>';

/** lockdownd's reply. */
export const QUERY_TYPE_REPLY_XML =
  '<?xml version="1.0" encoding="UTF-8"?>\n' +
  '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n' +
  '<plist version="1.0">\n' +
  '<dict>\n' +
  '\t<key>Request</key>\n' +
  '\t<string>QueryType</string>\n' +
  '\t<key>Type</key>\n' +
  '\t<string>com.apple.mobile.lockdown</string>\n' +
  '</dict>\n' +
  '</plist>\n';

/** A frame: 4-byte big-endian length, then the body. */
export function frame(body: string | Buffer): Buffer {
  const b = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  const len = Buffer.alloc(4);
  len.writeUInt32BE(b.length);
  return Buffer.concat([len, b]);
}

/** The length prefix of a 300-byte lockdown frame (lockdown-afc.md §9.7.1). */
export const LOCKDOWN_FRAME_300_PREFIX = '00 00 01 2C';

// ─── Device mux protocol (usbmux.md §2.3, §3.1) ───────────────────────────────────────────────

/** Host → device VERSION, v1 header, offering 2.0. */
export const MUX_VERSION_OFFER = '00000000 00000014 00000002 00000000 00000000';
/** Host → device SETUP, v2 header, tx_seq 0, rx_seq 0xFFFF. */
export const MUX_SETUP = '00000002 00000011 FEEDFACE 0000 FFFF 07';
/** First SYN after SETUP, from port 1 to lockdownd 62078 (<rx> = FFFF, the value SETUP left). */
export const MUX_SYN_62078 = '00000006 00000024 FEEDFACE 0001 FFFF 0001 F27E 00000000 00000000 50 02 0200 0000 0000';

// ─── AFC (lockdown-afc.md §9.7.1) ─────────────────────────────────────────────────────────────

/** GET_DEVINFO request, packet 1. */
export const AFC_GET_DEVINFO =
  '43 46 41 36 4C 50 41 41 28 00 00 00 00 00 00 00 28 00 00 00 00 00 00 00 ' +
  '01 00 00 00 00 00 00 00 0B 00 00 00 00 00 00 00';
/** STATUS reply "object not found" (8) to packet 5. */
export const AFC_STATUS_NOT_FOUND =
  '43 46 41 36 4C 50 41 41 30 00 00 00 00 00 00 00 30 00 00 00 00 00 00 00 ' +
  '05 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 08 00 00 00 00 00 00 00';
/** DATA reply carrying the 3 bytes "abc" to packet 7. */
export const AFC_DATA_3 =
  '43 46 41 36 4C 50 41 41 2B 00 00 00 00 00 00 00 28 00 00 00 00 00 00 00 ' +
  '07 00 00 00 00 00 00 00 02 00 00 00 00 00 00 00 61 62 63';
