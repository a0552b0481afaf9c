import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  LIBUSBMUX_VERSION,
  attachedEvent,
  buidReply,
  clientInfo,
  connectRequest,
  decodePortNumber,
  deletePairRecordRequest,
  detachedEvent,
  deviceListReply,
  deviceProperties,
  encodePortNumber,
  listDevicesRequest,
  listListenersRequest,
  listenRequest,
  listenersReply,
  pairRecordReply,
  pairedEvent,
  parseDeviceProperties,
  plistRequest,
  readBuidRequest,
  readPairRecordRequest,
  resultMessage,
  savePairRecordRequest,
} from '../../src/protocol/client-plist.js';
import type { DeviceProperties } from '../../src/protocol/client-plist.js';
import { ClientMessageDecoder, encodeClientMessage } from '../../src/protocol/client-message.js';
import type { PlistDict } from '../../src/protocol/plist.js';

const dev: DeviceProperties = {
  deviceId: 3,
  productId: 0x12a8,
  serialNumber: '00008030-001229C01146402E',
  locationId: 0x10009,
  connectionSpeed: 480_000_000,
  connectionType: 'USB',
};

/** Sends a dictionary through a PLIST message and back, as it would cross a socket. */
function overTheWire(plist: PlistDict): PlistDict {
  const d = new ClientMessageDecoder({ maxLength: 1 << 20 });
  d.push(encodeClientMessage({ kind: 'plist', tag: 1, version: 1, plist }));
  const msg = d.next();
  assert.ok(msg?.kind === 'plist');
  return msg.plist;
}

describe('PortNumber', () => {
  test('swaps the two bytes: 62078 is 32498, 22 is 5632', () => {
    assert.equal(encodePortNumber(62078), 32498);
    assert.equal(decodePortNumber(32498), 62078);
    assert.equal(encodePortNumber(22), 0x1600);
    assert.equal(decodePortNumber(0x1600), 22);
  });

  test('decodes only the low 16 bits, as usbmuxd truncates to u16', () => {
    assert.equal(decodePortNumber(0x10000 + 32498), 62078);
  });

  test('round-trips every port', () => {
    for (let p = 0; p < 65536; p++) assert.equal(decodePortNumber(encodePortNumber(p)), p);
  });
});

describe('events and replies', () => {
  test('Attached carries the full Properties in usbmuxd key order', () => {
    const ev = attachedEvent(dev);
    assert.deepEqual(Object.keys(ev), ['MessageType', 'DeviceID', 'Properties']);
    assert.deepEqual(ev.Properties, {
      ConnectionSpeed: 480_000_000,
      ConnectionType: 'USB',
      DeviceID: 3,
      LocationID: 0x10009,
      ProductID: 0x12a8,
      SerialNumber: '00008030-001229C01146402E',
    });
    assert.deepEqual(overTheWire(ev), ev);
  });

  test("Apple's extra keys appear only when given", () => {
    const props = deviceProperties({ ...dev, udid: '00008030001229C01146402E', usbSerialNumber: '00008030001229C01146402E' });
    assert.equal(props.UDID, '00008030001229C01146402E');
    assert.equal(props.USBSerialNumber, '00008030001229C01146402E');
    assert.equal('UDID' in deviceProperties(dev), false);
  });

  test('Properties parse back, from any daemon', () => {
    assert.deepEqual(parseDeviceProperties(overTheWire(attachedEvent(dev)).Properties), dev);
    const net = parseDeviceProperties({ DeviceID: 9, SerialNumber: 'x', ConnectionType: 'Network' });
    assert.equal(net?.connectionType, 'Network');
    assert.equal(parseDeviceProperties({ SerialNumber: 'x' }), undefined);
    assert.equal(parseDeviceProperties('nope'), undefined);
  });

  test('Detached, Paired and Result are the usbmuxd dictionaries', () => {
    assert.deepEqual(overTheWire(detachedEvent(3)), { MessageType: 'Detached', DeviceID: 3 });
    assert.deepEqual(overTheWire(pairedEvent(3)), { MessageType: 'Paired', DeviceID: 3 });
    assert.deepEqual(overTheWire(resultMessage(3)), { MessageType: 'Result', Number: 3 });
  });

  test('replies have no MessageType', () => {
    assert.deepEqual(overTheWire(deviceListReply([dev])), { DeviceList: [attachedEvent(dev)] });
    assert.deepEqual(overTheWire(buidReply('ABC')), { BUID: 'ABC' });
    assert.deepEqual(overTheWire(pairRecordReply(Buffer.from('rec'))), { PairRecordData: Buffer.from('rec') });
    assert.deepEqual(overTheWire(listenersReply([{ idString: '4-idevicesyslog', progName: 'idevicesyslog' }])), {
      ListenerList: [{ Blacklisted: false, ConnType: 0, 'ID String': '4-idevicesyslog', ProgName: 'idevicesyslog', kLibUSBMuxVersion: 3 }],
    });
  });
});

describe('requests', () => {
  test('carry the client information libusbmuxd sends, MessageType, then their fields', () => {
    const r = plistRequest('Connect', { DeviceID: 1, PortNumber: 32498 }, 'ideviceinfo');
    assert.deepEqual(Object.keys(r), ['ClientVersionString', 'MessageType', 'ProgName', 'kLibUSBMuxVersion', 'DeviceID', 'PortNumber']);
    assert.equal(r.kLibUSBMuxVersion, LIBUSBMUX_VERSION);
    assert.deepEqual(clientInfo('x'), { ClientVersionString: r.ClientVersionString, ProgName: 'x', kLibUSBMuxVersion: 3 });
  });

  test('Connect swaps the port into PortNumber', () => {
    const r = overTheWire(connectRequest(5, 62078, 'p'));
    assert.equal(r.MessageType, 'Connect');
    assert.equal(r.DeviceID, 5);
    assert.equal(r.PortNumber, 32498);
  });

  test('every request type survives the wire', () => {
    const cases: Array<[PlistDict, string, PlistDict]> = [
      [listDevicesRequest('p'), 'ListDevices', {}],
      [listenRequest('p'), 'Listen', {}],
      [listListenersRequest('p'), 'ListListeners', {}],
      [readBuidRequest('p'), 'ReadBUID', {}],
      [readPairRecordRequest('U', 'p'), 'ReadPairRecord', { PairRecordID: 'U' }],
      [savePairRecordRequest('U', Buffer.from('r'), 7, 'p'), 'SavePairRecord', { PairRecordID: 'U', PairRecordData: Buffer.from('r'), DeviceID: 7 }],
      [deletePairRecordRequest('U', 'p'), 'DeletePairRecord', { PairRecordID: 'U' }],
    ];
    for (const [req, type, fields] of cases) {
      const back = overTheWire(req);
      assert.equal(back.MessageType, type);
      assert.equal(back.ProgName, 'p');
      for (const [k, v] of Object.entries(fields)) assert.deepEqual(back[k], v, `${type}.${k}`);
    }
  });

  test('SavePairRecord without a DeviceID leaves the key out', () => {
    assert.equal('DeviceID' in overTheWire(savePairRecordRequest('U', Buffer.from('r'))), false);
  });
});
