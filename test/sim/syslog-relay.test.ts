/**
 * The simulated device's system log (src/sim/syslog-relay.ts): entries in the layout idevicesyslog
 * parses, ending in "\n\0"; control characters a host sent cannot forge or split an entry; a host
 * that does not read gets its entries dropped (counted, then reported) instead of growing memory.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Duplex } from 'node:stream';
import { DeviceSyslog, RELAY_BUFFER_MAX, syslogHostName, syslogTime } from '../../src/sim/syslog-relay.js';

const AT = new Date(2026, 11, 7, 5, 4, 3);

/**
 * The device's end of a relay connection: what the device writes is kept in `written`; with
 * `reading` false the host takes nothing (each write waits), and `drainAll` lets it take it all.
 */
function relayStream(reading = true): { stream: Duplex; text: () => string; drainAll: () => void } {
  const written: Buffer[] = [];
  let waiting: Array<() => void> = [];
  const stream = new Duplex({
    read() {},
    write(chunk: Buffer, _enc, cb) {
      written.push(chunk);
      if (reading) cb();
      else waiting.push(cb);
    },
  });
  const drainAll = (): void => {
    reading = true;
    while (waiting.length > 0) {
      const cbs = waiting;
      waiting = [];
      for (const cb of cbs) cb();
    }
  };
  return { stream, text: () => Buffer.concat(written).toString(), drainAll };
}

test('an entry is "Mon dd HH:MM:SS host process[pid] <Level>: message\\n\\0", the day padded to two columns', () => {
  assert.equal(syslogTime(AT), 'Dec  7 05:04:03');
  assert.equal(syslogHostName('Muxwire\u2019s iPhone'), 'Muxwire-s-iPhone');
  assert.equal(syslogHostName('   '), 'iPhone');
  const log = new DeviceSyslog(() => 'Demo iPhone');
  const { stream, text } = relayStream();
  log.serve(stream);
  log.log('lockdownd', 63, 'Notice', 'GetValue Key=DeviceName\nforged line\0', AT);
  assert.equal(text(), 'Dec  7 05:04:03 Demo-iPhone lockdownd[63] <Notice>: GetValue Key=DeviceName\\x0aforged line\\x00\n\0');
});

test('a relay that does not read holds at most RELAY_BUFFER_MAX; what was dropped is counted and reported once it reads', () => {
  const log = new DeviceSyslog(() => 'iPhone');
  const { stream, text, drainAll } = relayStream(false);
  log.serve(stream);
  const message = 'x'.repeat(1000);
  for (let i = 0; i < 3000; i++) log.log('proc', 1, 'Notice', message, AT);
  assert.ok(stream.writableLength <= RELAY_BUFFER_MAX, `${stream.writableLength} bytes queued`);
  const held = Math.floor(stream.writableLength / 1040);
  // The host reads everything queued; the next entry brings the note of what was dropped.
  drainAll();
  const before = text().length;
  log.log('proc', 1, 'Notice', 'after', AT);
  const rest = text().slice(before);
  assert.match(rest, new RegExp(`syslogd\\[27\\] <Notice>: (\\d+) messages dropped \\(the host did not read\\)\\n\\0.*<Notice>: after\\n\\0$`, 's'));
  const dropped = Number(/(\d+) messages dropped/.exec(rest)![1]);
  assert.ok(dropped >= 3000 - held - 2 && dropped < 3000, `${dropped} dropped, about ${held} held`);
});

test('a relay that ends is forgotten; nothing is written to it after', () => {
  const log = new DeviceSyslog(() => 'iPhone');
  const { stream } = relayStream();
  log.serve(stream);
  assert.equal(log.relays, 1);
  stream.destroy();
  stream.emit('close');
  assert.equal(log.relays, 0);
  log.log('proc', 1, 'Notice', 'nobody hears this', AT);
});
