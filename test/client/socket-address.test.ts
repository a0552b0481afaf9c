import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseSocketAddress, resolveSocketAddress, formatSocketAddress } from '../../src/client/socket-address.js';
import { isMuxwireError } from '../../src/errors.js';

test('reads every USBMUXD_SOCKET_ADDRESS spelling', () => {
  assert.deepEqual(parseSocketAddress('UNIX:/tmp/mux.sock'), { kind: 'unix', path: '/tmp/mux.sock' });
  assert.deepEqual(parseSocketAddress('unix:/tmp/mux.sock'), { kind: 'unix', path: '/tmp/mux.sock' });
  assert.deepEqual(parseSocketAddress('unix:///tmp/mux.sock'), { kind: 'unix', path: '/tmp/mux.sock' });
  assert.deepEqual(parseSocketAddress('/var/run/usbmuxd'), { kind: 'unix', path: '/var/run/usbmuxd' });
  assert.deepEqual(parseSocketAddress('127.0.0.1:27015'), { kind: 'tcp', host: '127.0.0.1', port: 27015 });
  assert.deepEqual(parseSocketAddress('tcp://localhost:5000'), { kind: 'tcp', host: 'localhost', port: 5000 });
  assert.deepEqual(parseSocketAddress('[::1]:27015'), { kind: 'tcp', host: '::1', port: 27015 });
});

test('rejects what it cannot read with a coded error instead of falling back silently', () => {
  for (const bad of ['', 'localhost', 'host:0', 'host:70000', 'host:abc', ':27015', 'UNIX:', '[]:5']) {
    assert.throws(() => parseSocketAddress(bad), (err) => isMuxwireError(err, 'MUXWIRE_ERR_BAD_ADDRESS'), bad);
  }
});

test('prefers an explicit address, then the environment, then /var/run/usbmuxd', () => {
  assert.deepEqual(resolveSocketAddress('/a', { USBMUXD_SOCKET_ADDRESS: '/b' }), { kind: 'unix', path: '/a' });
  assert.deepEqual(resolveSocketAddress(undefined, { USBMUXD_SOCKET_ADDRESS: 'UNIX:/b' }), { kind: 'unix', path: '/b' });
  assert.deepEqual(resolveSocketAddress(undefined, {}), { kind: 'unix', path: '/var/run/usbmuxd' });
});

test('formats addresses the way libusbmuxd reads them', () => {
  assert.equal(formatSocketAddress({ kind: 'unix', path: '/x' }), 'UNIX:/x');
  assert.equal(formatSocketAddress({ kind: 'tcp', host: '::1', port: 5 }), '[::1]:5');
  assert.equal(formatSocketAddress({ kind: 'tcp', host: '127.0.0.1', port: 5 }), '127.0.0.1:5');
});
