/**
 * The `NetworkAddress` of a network device record (usbmux.md §4.5): a raw `struct sockaddr` in
 * Apple's (BSD) layout, padded to 128 bytes as Apple's daemon, usbmuxd2 and netmuxd send it.
 * libimobiledevice reads byte 1 as the family (0x02 or 0x1E) and byte 0 as the length to copy,
 * on Linux too, so the BSD layout is the one its `-n` tools can use; netmuxd's Linux layout
 * (a u16 family at offset 0) is rejected by idevice_connect and iproxy.
 *
 * ```
 * IPv4 (sockaddr_in, 16 bytes)            IPv6 (sockaddr_in6, 28 bytes)
 * off size field                          off size field
 *  0   1   sa_len    = 0x10                0   1   sa_len    = 0x1C
 *  1   1   sa_family = 0x02 (AF_INET)      1   1   sa_family = 0x1E (AF_INET6, BSD's 30)
 *  2   2   port BE   = 0 (tools add it)    2   2   port BE   = 0
 *  4   4   address                         4   4   flow info = 0
 *  8   8   zero                            8  16   address
 *                                          24  4   scope id, host order (LE): the interface index
 * 16..127 zero                             28..127 zero
 * ```
 */
import { isIP } from 'node:net';
import { MuxwireError } from '../errors.js';

/** Size of the NetworkAddress data, as Apple's daemon sends it. */
export const NETWORK_ADDRESS_SIZE = 128;

/** BSD's AF_INET6 (Linux's is 10). */
const BSD_AF_INET6 = 0x1e;
const AF_INET = 0x02;

/** An IP address with the interface it is reached on (for a link-local IPv6 address). */
export interface NetworkAddress {
  address: string;
  family: 4 | 6;
  /** sin6_scope_id: the interface index of a link-local address, else 0. */
  scopeId: number;
}

/** Encodes `addr` as a 128-byte BSD sockaddr. Throws MUXWIRE_ERR_BAD_ADDRESS for a non-IP text. */
export function encodeNetworkAddress(addr: NetworkAddress): Buffer {
  const out = Buffer.alloc(NETWORK_ADDRESS_SIZE);
  const family = isIP(addr.address);
  if (family === 4) {
    out[0] = 0x10;
    out[1] = AF_INET;
    const parts = addr.address.split('.').map(Number);
    for (let i = 0; i < 4; i++) out[4 + i] = parts[i]!;
    return out;
  }
  if (family === 6) {
    out[0] = 0x1c;
    out[1] = BSD_AF_INET6;
    ipv6Bytes(addr.address).copy(out, 8);
    out.writeUInt32LE(addr.scopeId >>> 0, 24);
    return out;
  }
  throw new MuxwireError('MUXWIRE_ERR_BAD_ADDRESS', `'${addr.address}' is not an IP address`);
}

/**
 * Reads a NetworkAddress back, in the BSD layout or in netmuxd's Linux one (family u16 LE at 0:
 * 2 or 10). Returns undefined for anything else (too short, unknown family).
 */
export function decodeNetworkAddress(data: Buffer): NetworkAddress | undefined {
  if (data.length < 16) return undefined;
  let family: 4 | 6 | undefined;
  if (data[1] === AF_INET || (data[0] === AF_INET && data[1] === 0)) family = 4;
  else if (data[1] === BSD_AF_INET6 || (data[0] === 10 && data[1] === 0)) family = 6;
  if (family === 4) return { address: `${data[4]}.${data[5]}.${data[6]}.${data[7]}`, family, scopeId: 0 };
  if (family === 6 && data.length >= 28) return { address: formatIpv6(data.subarray(8, 24)), family, scopeId: data.readUInt32LE(24) };
  return undefined;
}

/** The 16 bytes of an IPv6 address text (`::` and an embedded IPv4 tail allowed). */
export function ipv6Bytes(text: string): Buffer {
  const pct = text.indexOf('%');
  const addr = pct >= 0 ? text.slice(0, pct) : text;
  if (isIP(addr) !== 6) throw new MuxwireError('MUXWIRE_ERR_BAD_ADDRESS', `'${text}' is not an IPv6 address`);
  let head = addr;
  const tail: number[] = [];
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(addr);
  if (v4 !== null) {
    head = addr.slice(0, v4.index) + '0:0';
    tail.push(Number(v4[1]), Number(v4[2]), Number(v4[3]), Number(v4[4]));
  }
  const [left, right] = head.includes('::') ? head.split('::') : [head, undefined];
  const l = left === '' ? [] : left!.split(':');
  const r = right === undefined || right === '' ? [] : right.split(':');
  const zeros = right === undefined ? 0 : 8 - l.length - r.length;
  const groups = [...l, ...new Array<string>(zeros).fill('0'), ...r];
  const out = Buffer.alloc(16);
  for (let i = 0; i < 8; i++) out.writeUInt16BE(parseInt(groups[i]!, 16), 2 * i);
  if (tail.length === 4) for (let i = 0; i < 4; i++) out[12 + i] = tail[i]!;
  return out;
}

/** The RFC 5952 text of 16 address bytes: the longest run of two or more zero groups becomes `::`. */
export function formatIpv6(bytes: Buffer): string {
  const groups: string[] = [];
  for (let i = 0; i < 8; i++) groups.push(bytes.readUInt16BE(2 * i).toString(16));
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}
