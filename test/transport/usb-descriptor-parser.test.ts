import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  configurationTotalLength,
  findMuxInterface,
  parseConfigurationDescriptor,
  parseDeviceDescriptor,
} from '../../src/transport/usb-descriptor-parser.js';
import { iphoneDescriptors } from '../../src/sim/usb-descriptors.js';
import { isMuxwireError } from '../../src/errors.js';

const bad = (e: unknown): boolean => isMuxwireError(e, 'MUXWIRE_ERR_BAD_DESCRIPTOR');

function config(...parts: number[][]): Buffer {
  const body = Buffer.from(parts.flat());
  const head = Buffer.from([9, 2, 0, 0, 1, 1, 0, 0xc0, 0xfa]);
  head.writeUInt16LE(9 + body.length, 2);
  return Buffer.concat([head, body]);
}

test('parses the simulated iPhone device descriptor', () => {
  const d = parseDeviceDescriptor(iphoneDescriptors({ productId: 0x12a8, serialNumber: 'x', speed: 'high' }).device);
  assert.deepEqual(d, {
    bcdUSB: 0x0200, bMaxPacketSize0: 64, idVendor: 0x05ac, idProduct: 0x12a8, bcdDevice: 0x1205,
    iManufacturer: 1, iProduct: 2, iSerialNumber: 3, bNumConfigurations: 4,
  });
});

test('rejects short or mistyped device descriptors', () => {
  assert.throws(() => parseDeviceDescriptor(Buffer.alloc(17)), bad);
  const d = Buffer.alloc(18);
  d[0] = 18;
  d[1] = 2;
  assert.throws(() => parseDeviceDescriptor(d), bad);
});

test('finds the mux interface in configuration 4 with its endpoints and packet size', () => {
  const set = iphoneDescriptors({ productId: 0x12a8, serialNumber: 'x', speed: 'high' });
  const found = set.configurations.map((c) => findMuxInterface(parseConfigurationDescriptor(c.descriptor)));
  assert.deepEqual(found.map((f) => f?.interfaceNumber), [undefined, undefined, 1, 1]);
  assert.deepEqual(found[3], { interfaceNumber: 1, outEndpoint: 0x04, inEndpoint: 0x85, maxPacketSize: 512 });
});

test('requires the exact FF/FE/02 triple, two endpoints, and both of them bulk', () => {
  const ep = (addr: number, type = 2): number[] => [7, 5, addr, type, 0, 2, 0];
  const intf = (cls: number, sub: number, proto: number, n = 2, alt = 0): number[] => [9, 4, 0, alt, n, cls, sub, proto, 0];
  assert.ok(findMuxInterface(parseConfigurationDescriptor(config(intf(0xff, 0xfe, 2), ep(0x04), ep(0x85)))));
  assert.equal(findMuxInterface(parseConfigurationDescriptor(config(intf(0xff, 0x2a, 0xff), ep(0x04), ep(0x85)))), undefined, 'Valeria');
  assert.equal(findMuxInterface(parseConfigurationDescriptor(config(intf(0x06, 0xfe, 2), ep(0x04), ep(0x85)))), undefined, 'class differs');
  assert.equal(findMuxInterface(parseConfigurationDescriptor(config(intf(0xff, 0xfe, 2), ep(0x04), ep(0x85, 3)))), undefined, 'interrupt IN');
  assert.equal(findMuxInterface(parseConfigurationDescriptor(config(intf(0xff, 0xfe, 2), ep(0x04), ep(0x05)))), undefined, 'two OUT');
  assert.equal(findMuxInterface(parseConfigurationDescriptor(config(intf(0xff, 0xfe, 2, 3), ep(0x04), ep(0x85), ep(0x86)))), undefined, 'three endpoints');
  assert.equal(findMuxInterface(parseConfigurationDescriptor(config(intf(0xff, 0xfe, 2, 2, 1), ep(0x04), ep(0x85)))), undefined, 'altsetting 1 only');
  // Class-specific descriptors between interface and endpoints are skipped.
  assert.ok(findMuxInterface(parseConfigurationDescriptor(config(intf(0xff, 0xfe, 2), [5, 0x24, 0, 1, 1], ep(0x85), ep(0x04)))));
});

test('a zero wMaxPacketSize falls back to 64 as usbmuxd does', () => {
  const found = findMuxInterface(parseConfigurationDescriptor(config([9, 4, 0, 0, 2, 0xff, 0xfe, 2, 0], [7, 5, 0x04, 2, 0, 0, 0], [7, 5, 0x85, 2, 0, 0, 0])));
  assert.equal(found?.maxPacketSize, 64);
});

test('rejects configuration descriptors whose lengths do not add up', () => {
  assert.throws(() => configurationTotalLength(Buffer.from([9, 2, 8, 0, 1, 1, 0, 0xc0, 0xfa])), bad, 'wTotalLength < 9');
  assert.throws(() => configurationTotalLength(Buffer.from([9, 4, 9, 0, 1, 1, 0, 0xc0, 0xfa])), bad, 'not a configuration');
  const truncated = config([9, 4, 0, 0, 2, 0xff, 0xfe, 2, 0]);
  assert.throws(() => parseConfigurationDescriptor(truncated.subarray(0, truncated.length - 1)), bad, 'shorter than wTotalLength');
  assert.throws(() => parseConfigurationDescriptor(config([0, 4])), bad, 'bLength 0 would loop forever');
  assert.throws(() => parseConfigurationDescriptor(config([20, 4, 0, 0])), bad, 'descriptor running past the end');
  assert.throws(() => parseConfigurationDescriptor(config([7, 5, 0x81, 2, 0, 2, 0])), bad, 'endpoint before interface');
  assert.throws(() => parseConfigurationDescriptor(config([5, 4, 0, 0, 0])), bad, 'short interface');
});

test('random descriptor bytes give a parse or a coded error, never a crash', () => {
  let x = 99;
  const rand = (): number => ((x = (x * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  for (let round = 0; round < 500; round++) {
    const body = Buffer.alloc(Math.floor(rand() * 40));
    for (let i = 0; i < body.length; i++) body[i] = rand() < 0.3 ? [2, 4, 5, 7, 9][Math.floor(rand() * 5)]! : Math.floor(rand() * 256);
    try {
      findMuxInterface(parseConfigurationDescriptor(config([...body])));
    } catch (e) {
      assert.ok(bad(e), String(e));
    }
  }
});
