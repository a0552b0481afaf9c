/**
 * Every integer field of a request is range-checked as it is decoded (REQUEST_INTEGER_FIELDS in
 * client-plist.ts): usbmuxd casts DeviceID to u32 and PortNumber to u16, so DeviceID 2^40+1 would
 * reach device 1 and PortNumber 70000 port 4464. The daemon answers Result 1 (BADCOMMAND), the
 * result usbmuxd gives a request it cannot read, in XML and binary plist bodies under header
 * version 0 and 1 alike; good values next to them still work.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MuxDaemon } from '../../src/daemon/mux-daemon.js';
import { DeviceMux } from '../../src/sim/device-mux.js';
import { InProcessLink } from '../../src/sim/in-process-link.js';
import { serveBenchServices } from '../../src/sim/bench-services.js';
import { encodeClientMessage, ClientMessageType } from '../../src/protocol/client-message.js';
import { encodePortNumber, plistRequest } from '../../src/protocol/client-plist.js';
import { PlistReal, encodeBinaryPlist, encodeXmlPlist } from '../../src/protocol/plist.js';
import type { PlistDict, PlistValue } from '../../src/protocol/plist.js';
import { RawClient } from './helpers/raw-client.js';

let dir: string;
let daemon: MuxDaemon;
let socketPath: string;
let link: InProcessLink;
let deviceId: number;
const UDID = '00008030-0000000000000AAA';

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'muxwire-strict-int-'));
  socketPath = join(dir, 'usbmuxd');
  daemon = new MuxDaemon({ socketPath, pairDir: join(dir, 'lockdown'), preflight: false });
  await daemon.start();
  const mux = new DeviceMux();
  serveBenchServices(mux);
  link = new InProcessLink(mux, { serialNumber: UDID, productId: 0x12a8, locationId: 1, speed: 480_000_000 }, () => undefined);
  const entry = daemon.addLink(link)!;
  await entry.session.ready;
  deviceId = entry.id;
});

after(async () => {
  link.unplug();
  await daemon.close();
  await rm(dir, { recursive: true, force: true });
});

/** One request: the dictionary as XML or binary plist, under header version 0 or 1. */
function request(dict: PlistDict, body: 'xml' | 'binary', version: 0 | 1, tag: number): Buffer {
  const payload = body === 'xml' ? encodeXmlPlist(dict) : encodeBinaryPlist(dict);
  return encodeClientMessage({ kind: 'unknown', tag, version, message: ClientMessageType.PLIST, payload });
}

/** Sends `dict` on a fresh client and returns the reply's Number (a Result is expected). */
async function resultOf(dict: PlistDict, body: 'xml' | 'binary', version: 0 | 1): Promise<number | undefined> {
  const client = await RawClient.open(socketPath);
  try {
    client.write(request(dict, body, version, 7));
    const reply = await client.next();
    assert.equal(reply.kind, 'plist');
    assert.equal(reply.tag, 7);
    const plist = (reply as { plist: PlistDict }).plist;
    return typeof plist.Number === 'number' ? plist.Number : undefined;
  } finally {
    client.close();
  }
}

const BAD_DEVICE_IDS: Array<[string, PlistValue]> = [
  ['2^32', 2 ** 32],
  ['2^40+1', 2 ** 40 + 1],
  ['2^64-1', 2n ** 64n - 1n],
  ['-1', -1],
  ['-2^63', -(2n ** 63n)],
  ['1.5', 1.5],
  ['the real 1.0', new PlistReal(1)],
  ['a string "1"', '1'],
  ['true', true],
  ['data', Buffer.from([1])],
];
const BAD_PORTS: Array<[string, PlistValue]> = [
  ['65536', 65536],
  ['70000', 70000],
  ['-1', -1],
  ['0.5', 0.5],
  ['the real 1792.0', new PlistReal(encodePortNumber(7))],
  ['a string', String(encodePortNumber(7))],
];

for (const body of ['xml', 'binary'] as const) {
  for (const version of [1, 0] as const) {
    const where = `${body} plist, header version ${version}`;
    test(`Connect with an out-of-range or non-integer DeviceID gets Result 1 (${where})`, async () => {
      for (const [what, value] of BAD_DEVICE_IDS) {
        const n = await resultOf(plistRequest('Connect', { DeviceID: value, PortNumber: encodePortNumber(7) }), body, version);
        assert.equal(n, 1, `DeviceID ${what}`);
      }
    });

    test(`Connect with an out-of-range or non-integer PortNumber gets Result 1 (${where})`, async () => {
      for (const [what, value] of BAD_PORTS) {
        const n = await resultOf(plistRequest('Connect', { DeviceID: deviceId, PortNumber: value }), body, version);
        assert.equal(n, 1, `PortNumber ${what}`);
      }
    });

    test(`a bad kLibUSBMuxVersion, or DeviceID of SavePairRecord, gets Result 1 (${where})`, async () => {
      const list = { ...plistRequest('ListDevices'), kLibUSBMuxVersion: 2 ** 32 };
      assert.equal(await resultOf(list, body, version), 1, 'kLibUSBMuxVersion 2^32');
      const real = { ...plistRequest('ReadBUID'), kLibUSBMuxVersion: new PlistReal(3) };
      assert.equal(await resultOf(real, body, version), 1, 'kLibUSBMuxVersion 3.0');
      const save = plistRequest('SavePairRecord', { PairRecordID: UDID, PairRecordData: encodeXmlPlist({ HostID: 'X' }), DeviceID: 2 ** 40 + deviceId });
      assert.equal(await resultOf(save, body, version), 1, 'SavePairRecord DeviceID 2^40+id');
      // Nothing was saved by the refused request.
      const read = await RawClient.open(socketPath);
      try {
        assert.equal((await read.request('ReadPairRecord', { PairRecordID: UDID })).Number, 2);
      } finally {
        read.close();
      }
    });
  }
}

test('the edges of each range are accepted: DeviceID 2^32-1 is an unknown device, port 7 connects', async () => {
  assert.equal(await resultOf(plistRequest('Connect', { DeviceID: 0xffffffff, PortNumber: encodePortNumber(7) }), 'xml', 1), 2);
  assert.equal(await resultOf(plistRequest('Connect', { DeviceID: deviceId, PortNumber: 0xffff }), 'binary', 1), 3);
  const client = await RawClient.open(socketPath);
  try {
    client.write(request({ ...plistRequest('Connect', { DeviceID: deviceId, PortNumber: encodePortNumber(7) }), kLibUSBMuxVersion: 0xffffffff }, 'binary', 1, 9));
    assert.equal((await client.nextPlist()).Number, 0);
    client.startTunnel();
    client.write(Buffer.from('echo'));
    assert.equal((await client.readTunnel(4)).toString(), 'echo');
  } finally {
    client.close();
  }
});

test('a refused request leaves the client usable, and a missing DeviceID stays BADDEV as in usbmuxd', async () => {
  const client = await RawClient.open(socketPath);
  try {
    assert.equal((await client.request('Connect', { DeviceID: 2 ** 40 + deviceId, PortNumber: encodePortNumber(7) })).Number, 1);
    assert.equal((await client.request('Connect', { PortNumber: encodePortNumber(7) })).Number, 2);
    const list = await client.request('ListDevices');
    assert.equal((list.DeviceList as PlistDict[]).length, 1);
  } finally {
    client.close();
  }
});
