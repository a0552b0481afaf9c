/**
 * The network device record's pieces: NetworkAddress in Apple's (BSD) sockaddr layout, which
 * libimobiledevice's idevice_connect and iproxy read on Linux too (usbmux.md §4.5), and the
 * `_apple-mobdev2._tcp` instance names an iPhone advertises.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NETWORK_ADDRESS_SIZE, decodeNetworkAddress, encodeNetworkAddress, ipv6Bytes } from '../../src/protocol/network-address.js';
import { MOBDEV2_SERVICE, linkLocalFromMac, macFromInstance, mobdev2FullName, mobdev2Instance, normalizeMac } from '../../src/transport/mobdev2.js';
import { isMuxwireError } from '../../src/errors.js';

test('encodes an IPv4 address as a BSD sockaddr_in padded to 128 bytes', () => {
  const out = encodeNetworkAddress({ address: '192.168.1.23', family: 4, scopeId: 0 });
  assert.equal(out.length, NETWORK_ADDRESS_SIZE);
  // sa_len 16, AF_INET 2, port 0 (the tools fill it in), the address, then zeros.
  assert.deepEqual([...out.subarray(0, 8)], [0x10, 0x02, 0x00, 0x00, 192, 168, 1, 23]);
  assert.ok(out.subarray(8).every((b) => b === 0));
});

test('encodes a link-local IPv6 address as a BSD sockaddr_in6 with the scope id in host order', () => {
  const out = encodeNetworkAddress({ address: 'fe80::a683:e7ff:fe12:3456', family: 6, scopeId: 3 });
  assert.equal(out.length, NETWORK_ADDRESS_SIZE);
  assert.deepEqual([out[0], out[1]], [0x1c, 0x1e]);
  assert.equal(out.readUInt16BE(2), 0, 'port');
  assert.equal(out.readUInt32BE(4), 0, 'flow info');
  assert.equal(out.subarray(8, 24).toString('hex'), 'fe80000000000000a683e7fffe123456');
  assert.deepEqual([...out.subarray(24, 28)], [3, 0, 0, 0]);
  assert.ok(out.subarray(28).every((b) => b === 0));
});

test('decodes both layouts back, netmuxd\'s Linux one included', () => {
  for (const addr of [
    { address: '10.0.0.7', family: 4 as const, scopeId: 0 },
    { address: '::1', family: 6 as const, scopeId: 0 },
    { address: 'fe80::1', family: 6 as const, scopeId: 2 },
    { address: '2001:db8::8:800:200c:417a', family: 6 as const, scopeId: 0 },
  ]) {
    assert.deepEqual(decodeNetworkAddress(encodeNetworkAddress(addr)), addr);
  }
  const linux4 = Buffer.alloc(128);
  linux4.writeUInt16LE(2, 0);
  linux4.set([172, 16, 0, 9], 4);
  assert.deepEqual(decodeNetworkAddress(linux4), { address: '172.16.0.9', family: 4, scopeId: 0 });
  const linux6 = Buffer.alloc(128);
  linux6.writeUInt16LE(10, 0);
  ipv6Bytes('fe80::2').copy(linux6, 8);
  assert.deepEqual(decodeNetworkAddress(linux6), { address: 'fe80::2', family: 6, scopeId: 0 });
});

test('reads nothing from data too short or of an unknown family', () => {
  assert.equal(decodeNetworkAddress(Buffer.alloc(8)), undefined);
  const unknown = Buffer.alloc(128);
  unknown[0] = 0x10;
  unknown[1] = 0x07;
  assert.equal(decodeNetworkAddress(unknown), undefined);
  const shortV6 = Buffer.alloc(20);
  shortV6[1] = 0x1e;
  assert.equal(decodeNetworkAddress(shortV6), undefined);
});

test('refuses text that is not an IP address with MUXWIRE_ERR_BAD_ADDRESS', () => {
  for (const bad of ['localhost', '1.2.3', '::g', '']) {
    assert.throws(() => encodeNetworkAddress({ address: bad, family: 4, scopeId: 0 }), (err: unknown) => isMuxwireError(err, 'MUXWIRE_ERR_BAD_ADDRESS'));
  }
});

test('reads IPv6 text with ::, an IPv4 tail and a zone', () => {
  assert.equal(ipv6Bytes('::').toString('hex'), '0'.repeat(32));
  assert.equal(ipv6Bytes('::ffff:192.0.2.1').toString('hex'), '00000000000000000000ffffc0000201');
  assert.equal(ipv6Bytes('fe80::1%lo').toString('hex'), 'fe800000000000000000000000000001');
  assert.equal(ipv6Bytes('1:2:3:4:5:6:7:8').toString('hex'), '00010002000300040005000600070008');
});

test('names a device as an iPhone does: <Wi-Fi MAC>@<EUI-64 link-local>._apple-mobdev2._tcp.local', () => {
  assert.equal(linkLocalFromMac('a4:83:e7:12:34:56'), 'fe80::a683:e7ff:fe12:3456');
  assert.equal(mobdev2Instance('A4:83:E7:12:34:56'), 'a4:83:e7:12:34:56@fe80::a683:e7ff:fe12:3456');
  assert.equal(mobdev2FullName(mobdev2Instance('a4:83:e7:12:34:56')), `a4:83:e7:12:34:56@fe80::a683:e7ff:fe12:3456.${MOBDEV2_SERVICE}`);
  // The universal/local bit flips both ways.
  assert.equal(linkLocalFromMac('02:00:00:00:00:01'), 'fe80::ff:fe00:1');
});

test('takes the Wi-Fi MAC back out of an instance name, and nothing from other names', () => {
  assert.equal(macFromInstance(`A4:83:E7:12:34:56@fe80::1.${MOBDEV2_SERVICE}`), 'a4:83:e7:12:34:56');
  assert.equal(macFromInstance(`iPhone.${MOBDEV2_SERVICE}`), undefined);
  assert.equal(macFromInstance(`@fe80::1.${MOBDEV2_SERVICE}`), undefined);
  assert.equal(macFromInstance(`a4:83:e7:12:34@fe80::1.${MOBDEV2_SERVICE}`), undefined);
  assert.throws(() => normalizeMac('a4-83-e7-12-34-56'), (err: unknown) => isMuxwireError(err, 'MUXWIRE_ERR_BAD_ARGUMENT'));
});
