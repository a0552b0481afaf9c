/**
 * How an iPhone names itself on the network (DNS-SD, RFC 6763): the service type
 * `_apple-mobdev2._tcp.local`, and an instance `<Wi-Fi MAC>@<IPv6 link-local address>`, e.g.
 * `a4:83:e7:12:34:56@fe80::a683:e7ff:fe12:3456._apple-mobdev2._tcp.local`. usbmuxd2 and netmuxd
 * (before iOS 26.4) take the MAC from the part before `@` and find the device's UDID through the
 * pair record whose `WiFiMACAddress` is that MAC; the daemon does the same. The simulator and the
 * daemon both use these names, so they live here, with the multicast options for both.
 */
import type { MulticastDNS } from 'multicast-dns';
import { MuxwireError } from '../errors.js';
import { formatIpv6 } from '../protocol/network-address.js';

/** The DNS-SD service type of lockdownd over Wi-Fi. */
export const MOBDEV2_SERVICE = '_apple-mobdev2._tcp.local';

/** mDNS's group and port (RFC 6762). */
export const MDNS_GROUP_V4 = '224.0.0.251';
export const MDNS_PORT = 5353;

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** The EUI-64 link-local address of a MAC (fe80::, universal/local bit flipped, ff:fe inserted). */
export function linkLocalFromMac(mac: string): string {
  const b = macBytes(mac);
  return formatIpv6(Buffer.from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, b[0]! ^ 0x02, b[1]!, b[2]!, 0xff, 0xfe, b[3]!, b[4]!, b[5]!]));
}

/** `<mac>@<link-local>`: the instance label an iPhone advertises. */
export function mobdev2Instance(mac: string): string {
  return `${normalizeMac(mac)}@${linkLocalFromMac(mac)}`;
}

/** The full service name of an instance label (`EscapedFullServiceName`). */
export function mobdev2FullName(instance: string): string {
  return `${instance}.${MOBDEV2_SERVICE}`;
}

/** The Wi-Fi MAC in a full service name or instance label, or undefined when it has none. */
export function macFromInstance(name: string): string | undefined {
  const at = name.indexOf('@');
  if (at <= 0) return undefined;
  const mac = name.slice(0, at).toLowerCase();
  return MAC.test(mac) ? mac : undefined;
}

/** A MAC in lower case with colons; MUXWIRE_ERR_BAD_ARGUMENT for anything else. */
export function normalizeMac(mac: string): string {
  const m = mac.toLowerCase();
  if (!MAC.test(m)) throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `'${mac}' is not a MAC address`);
  return m;
}

/**
 * Resolves once a multicast-dns instance has bound its socket; rejects with MUXWIRE_ERR_LISTEN
 * (and destroys it) when the bind fails, e.g. port 5353 held without address reuse.
 */
export function mdnsReady(mdns: MulticastDNS): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => {
      mdns.destroy();
      reject(new MuxwireError('MUXWIRE_ERR_LISTEN', `cannot use mDNS (UDP ${MDNS_PORT}): ${err.message}`, { cause: err }));
    };
    mdns.once('error', onError);
    mdns.once('ready', () => {
      mdns.off('error', onError);
      resolve();
    });
  });
}

function macBytes(mac: string): number[] {
  return normalizeMac(mac)
    .split(':')
    .map((h) => parseInt(h, 16));
}
