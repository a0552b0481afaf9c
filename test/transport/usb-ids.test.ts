import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  isAppleMuxDevice,
  serialFromStringDescriptor,
  speedToBitsPerSecond,
  udidFromUsbSerial,
  usbSerialFromUdid,
} from '../../src/transport/usb-ids.js';

test('accepts the PIDs usbmuxd accepts, and only with Apple\'s VID', () => {
  for (const pid of [0x1290, 0x12a8, 0x12ab, 0x12af, 0x8600, 0x1901, 0x1905]) assert.equal(isAppleMuxDevice(0x05ac, pid), true, pid.toString(16));
  for (const pid of [0x128f, 0x12b0, 0x1900, 0x1906, 0x8601, 0x0000]) assert.equal(isAppleMuxDevice(0x05ac, pid), false, pid.toString(16));
  assert.equal(isAppleMuxDevice(0x05ad, 0x12a8), false);
});

test('reports ConnectionSpeed in bit/s as usbmuxd does, 480 Mbit/s when unknown', () => {
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6].map(speedToBitsPerSecond),
    [480_000_000, 1_500_000, 12_000_000, 480_000_000, 5_000_000_000, 10_000_000_000, 480_000_000]);
});

test('a 24-character serial gets a dash after 8 characters; 40 characters stay as they are', () => {
  assert.equal(udidFromUsbSerial('00008120000A2D910EDB401E'), '00008120-000A2D910EDB401E');
  const legacy = 'f1c15f36c3461bf9b24d568084d17cfb2d4243c4';
  assert.equal(udidFromUsbSerial(legacy), legacy);
  assert.equal(usbSerialFromUdid('00008120-000A2D910EDB401E'), '00008120000A2D910EDB401E');
  assert.equal(usbSerialFromUdid(legacy), legacy);
  assert.equal(usbSerialFromUdid('00008120000A2D910EDB401E'), '00008120000A2D910EDB401E');
});

test('the serial string descriptor is read as usbmuxd reads it: NUL stops, non-ASCII becomes ?', () => {
  const desc = (units: number[]): Buffer => {
    const b = Buffer.alloc(2 + units.length * 2);
    b[0] = b.length;
    b[1] = 3;
    units.forEach((u, i) => b.writeUInt16LE(u, 2 + i * 2));
    return b;
  };
  assert.equal(serialFromStringDescriptor(desc([...'ABC'].map((c) => c.charCodeAt(0)))), 'ABC');
  assert.equal(serialFromStringDescriptor(desc([0x41, 0xe9, 0x4242, 0x42])), 'A??B');
  assert.equal(serialFromStringDescriptor(desc([0x41, 0, 0x42])), 'A');
  // bLength shorter than the buffer wins; an odd trailing byte is ignored.
  const b = desc([0x41, 0x42, 0x43]);
  b[0] = 5;
  assert.equal(serialFromStringDescriptor(b), 'A');
  assert.equal(serialFromStringDescriptor(Buffer.alloc(0)), '');
  assert.equal(serialFromStringDescriptor(desc(new Array(126).fill(0x41))).length, 126,
    'bLength is a byte: 126 code units at most');
});
