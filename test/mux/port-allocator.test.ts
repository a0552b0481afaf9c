import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PortAllocator } from '../../src/mux/port-allocator.js';

test('starts at 1 and moves past each port it hands out', () => {
  const used = new Set<number>();
  const ports = new PortAllocator();
  const a = ports.allocate((p) => used.has(p));
  used.add(a);
  const b = ports.allocate((p) => used.has(p));
  assert.deepEqual([a, b], [1, 2]);
});

test('wraps from 65535 to 1 and never hands out 0', () => {
  const ports = new PortAllocator(65535);
  assert.equal(ports.allocate(() => false), 65535);
  assert.equal(ports.allocate(() => false), 1);
});

test('skips ports in use across the wrap', () => {
  const used = new Set([65535, 1, 2]);
  const ports = new PortAllocator(65534);
  assert.equal(ports.allocate((p) => used.has(p)), 65534);
  assert.equal(ports.allocate((p) => used.has(p)), 3);
});

test('finds the last free port and fails only when all 65535 are in use', () => {
  const ports = new PortAllocator(100);
  assert.equal(ports.allocate((p) => p !== 42), 42);
  assert.equal(ports.allocate(() => true), 0);
});
