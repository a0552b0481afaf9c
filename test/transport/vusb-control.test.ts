import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VusbControlChannel } from '../../src/transport/vusb-control.js';
import { UsbTransferStatus, VUSB_WIRE_VERSION, VusbDecoder, VusbMessageType } from '../../src/protocol/vusb-wire.js';
import { isMuxwireError } from '../../src/errors.js';

const GET_DEVICE = { bmRequestType: 0x80, bRequest: 6, wValue: 0x0100, wIndex: 0, wLength: 18 };

function channel(timeoutMs = 1000) {
  const sent: number[] = [];
  const timeouts: Error[] = [];
  const decoder = new VusbDecoder();
  const ch = new VusbControlChannel({
    write: (frame) => {
      decoder.push(frame);
      const msg = decoder.next();
      if (msg?.type === VusbMessageType.CONTROL) sent.push(msg.id);
    },
    timeoutMs,
    onTimeout: (err) => timeouts.push(err),
  });
  return { ch, sent, timeouts };
}

const done = (id: number, status: number, data = Buffer.alloc(0)) => ({ type: VusbMessageType.CONTROL_DONE, id, status, data }) as const;

test('resolves a control request with its IN data stage, copied', async () => {
  const { ch, sent } = channel();
  const p = ch.control(GET_DEVICE);
  const data = Buffer.alloc(18, 1);
  ch.onControlDone(done(sent[0]!, UsbTransferStatus.OK, data));
  const got = await p;
  assert.deepEqual(got, data);
  assert.notEqual(got.buffer, data.buffer);
});

test('maps a stall, another libusb status and an over-long reply to coded errors with the status', async () => {
  const { ch, sent } = channel();
  const a = ch.control(GET_DEVICE);
  const b = ch.control(GET_DEVICE);
  const c = ch.control(GET_DEVICE);
  ch.onControlDone(done(sent[0]!, UsbTransferStatus.PIPE));
  ch.onControlDone(done(sent[1]!, -1));
  ch.onControlDone(done(sent[2]!, UsbTransferStatus.OK, Buffer.alloc(19)));
  await assert.rejects(a, (e) => isMuxwireError(e, 'MUXWIRE_ERR_USB_STALL') && e.detail === UsbTransferStatus.PIPE);
  await assert.rejects(b, (e) => isMuxwireError(e, 'MUXWIRE_ERR_USB_TRANSFER') && e.detail === -1);
  await assert.rejects(c, (e) => isMuxwireError(e, 'MUXWIRE_ERR_USB_TRANSFER') && e.detail === UsbTransferStatus.OVERFLOW);
});

test('a late reply to a timed-out request is ignored; a reply to a request never made is an error', async () => {
  const { ch, sent, timeouts } = channel(20);
  await assert.rejects(ch.control(GET_DEVICE), (e) => isMuxwireError(e, 'MUXWIRE_ERR_TIMEOUT'));
  assert.equal(timeouts.length, 1);
  ch.onControlDone(done(sent[0]!, UsbTransferStatus.OK));
  assert.throws(() => ch.onControlDone(done(sent[0]!, UsbTransferStatus.OK)), (e) => isMuxwireError(e, 'MUXWIRE_ERR_VUSB_BAD_MESSAGE'));
  assert.throws(() => ch.onControlDone(done(999, UsbTransferStatus.OK)), (e) => isMuxwireError(e, 'MUXWIRE_ERR_VUSB_BAD_MESSAGE'));
});

test('HELLO gives the speed once; a second HELLO or another wire version is refused', async () => {
  const { ch } = channel();
  const speed = ch.hello(1000);
  ch.onHello({ type: VusbMessageType.HELLO, wireVersion: VUSB_WIRE_VERSION, speed: 3 });
  assert.equal(await speed, 3);
  assert.equal(await ch.hello(1000), 3);
  assert.throws(() => ch.onHello({ type: VusbMessageType.HELLO, wireVersion: VUSB_WIRE_VERSION, speed: 3 }), (e) => isMuxwireError(e, 'MUXWIRE_ERR_VUSB_BAD_MESSAGE'));
  const other = channel().ch;
  assert.throws(() => other.onHello({ type: VusbMessageType.HELLO, wireVersion: 9, speed: 3 }), (e) => isMuxwireError(e, 'MUXWIRE_ERR_VUSB_VERSION'));
});

test('fail rejects the HELLO wait and every request, and every later call', async () => {
  const { ch } = channel();
  const hello = ch.hello(1000);
  const req = ch.control(GET_DEVICE);
  const gone = new Error('gone');
  ch.fail(gone);
  await assert.rejects(hello, /gone/);
  await assert.rejects(req, /gone/);
  await assert.rejects(ch.control(GET_DEVICE), /gone/);
});
