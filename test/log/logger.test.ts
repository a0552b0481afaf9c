/**
 * The logger's lines: level, context of nested children, the level gate, and a child that costs
 * nothing until it writes (the connect path makes one per connection).
 */
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { Logger, log, setLogLevel, setLogSink } from '../../src/log.js';
import type { LogLevel } from '../../src/log.js';

const lines: Array<[string, LogLevel]> = [];
setLogSink((line, level) => lines.push([line, level]));
afterEach(() => {
  lines.length = 0;
  setLogLevel('warn');
});

test('a line carries its level, then the context of every logger above it, then the message', () => {
  setLogLevel('debug');
  log.child({ dev: 3 }).child({ conn: '1→62078', n: 7 }).debug('connected');
  assert.deepEqual(lines, [['muxwire debug dev=3 conn=1→62078 n=7 connected', 'debug']]);
});

test('the root logger writes no context, and an empty child adds none', () => {
  new Logger().warn('plain');
  new Logger('svc=afc').child({}).error('with parent context only');
  assert.deepEqual(lines.map(([l]) => l), ['muxwire warn plain', 'muxwire error svc=afc with parent context only']);
});

test('lines under the level are dropped and enabled() says so', () => {
  setLogLevel('info');
  const child = log.child({ dev: 1 });
  child.debug('hidden');
  child.info('shown');
  assert.equal(child.enabled('debug'), false);
  assert.equal(child.enabled('info'), true);
  assert.deepEqual(lines.map(([l]) => l), ['muxwire info dev=1 shown']);
});

test('a child reads its fields when it first writes: context is the same before and after', () => {
  const child = log.child({ dev: 9 });
  assert.equal(child.context, 'dev=9');
  child.warn('one');
  child.warn('two');
  assert.equal(child.context, 'dev=9');
  assert.deepEqual(lines.map(([l]) => l), ['muxwire warn dev=9 one', 'muxwire warn dev=9 two']);
});

test('a message with line breaks or escape sequences stays one line of printable text', () => {
  // A client's ProgName or a device's name ends up in messages: raw, "\n" would forge a line.
  log.child({ name: 'a\nb' }).warn('from idevice_id\nmuxwire warn forged line\x1b[31m red\ttab é');
  assert.deepEqual(lines.map(([l]) => l), ['muxwire warn name=a\\x0ab from idevice_id\\x0amuxwire warn forged line\\x1b[31m red\ttab é']);
});
