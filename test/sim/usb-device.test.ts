import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SimUsbDevice } from '../../src/sim/usb-device.js';
import { VusbMessageType } from '../../src/protocol/vusb-wire.js';
import { parseConfigurationDescriptor } from '../../src/transport/usb-descriptor-parser.js';
import { RawVusbHost } from '../transport/vusb-raw-host.js';
import { EchoMux } from '../transport/echo-mux.js';

const UDID_8_16 = '00008120-000A2D910EDB401E';
const UDID_40 = 'f1c15f36c3461bf9b24d568084d17cfb2d4243c4';
const STALL = -9;

/** Configuration 3 of an iOS 17 iPhone at high speed, from the USBView dump in fritzlb/iOS17-JIT-WIN#8. */
const REAL_CONFIG_3 = Buffer.from(
  '09023E00020307C0FA09040000030601011B0705020200020007058102000200070583034000' +
  '0A09040100' + '02FFFE020F07050402000200070585020002' + '00', 'hex');
/** Configuration 4 of the same dump, as far as the issue shows it (the last byte is cut off). */
const REAL_CONFIG_4_PREFIX = Buffer.from(
  '09027500030408C0FA09040000030601011B07050202000200070581020002000705830340000A' +
  '09040100' + '02FFFE020F0705040200020007058502000200' + '0904020000FFFD0111' + '0904020102FFFD0111' +
  '07058602000200' + '07050502000200' + '0904020202FFFD0111' + '07058602000200' + '070505020002', 'hex');

const hosts: RawVusbHost[] = [];
const devices: SimUsbDevice[] = [];
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mw-usbdev-'));
});
afterEach(async () => {
  await Promise.all(hosts.splice(0).map((h) => h.close()));
  await Promise.all(devices.splice(0).map((d) => d.unplug()));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function plugged(opts: { udid?: string; speed?: 'high' | 'super'; mux?: EchoMux } = {}): Promise<{ device: SimUsbDevice; mux: EchoMux; host: RawVusbHost }> {
  const mux = opts.mux ?? new EchoMux();
  const device = new SimUsbDevice({ busDir: dir, udid: opts.udid ?? UDID_8_16, speed: opts.speed ?? 'high', mux });
  devices.push(device);
  const path = await device.plug();
  const host = await RawVusbHost.connect(path);
  hosts.push(host);
  return { device, mux, host };
}

function utf16(text: string): Buffer {
  return Buffer.concat([Buffer.from([2 + text.length * 2, 3]), Buffer.from(text, 'utf16le')]);
}

async function configure(host: RawVusbHost, value: number): Promise<void> {
  const r = await host.control({ bmRequestType: 0x00, bRequest: 0x09, wValue: value, wIndex: 0, wLength: 0 });
  assert.equal(r.status, 0);
}

describe('SimUsbDevice', () => {
  test('plugging in creates <busDir>/<udid>.vusb and the device says HELLO at high speed', async () => {
    const { device, host } = await plugged();
    assert.equal(device.socketPath, join(dir, `${UDID_8_16}.vusb`));
    assert.ok(existsSync(device.socketPath));
    const hello = await host.nextMessage();
    assert.deepEqual(hello, { type: VusbMessageType.HELLO, wireVersion: 1, speed: 3 });
  });

  test('a SuperSpeed device says speed 4 in HELLO', async () => {
    const { host } = await plugged({ speed: 'super' });
    const hello = await host.nextMessage();
    assert.equal(hello.type === VusbMessageType.HELLO && hello.speed, 4);
  });

  test('the device descriptor reads field by field like an iPhone', async () => {
    const { host } = await plugged();
    await host.nextMessage();
    const { status, data } = await host.getDescriptor(1, 0, 18);
    assert.equal(status, 0);
    assert.equal(data.length, 18);
    assert.equal(data[0], 18, 'bLength');
    assert.equal(data[1], 1, 'bDescriptorType');
    assert.equal(data.readUInt16LE(2), 0x0200, 'bcdUSB');
    assert.deepEqual([data[4], data[5], data[6]], [0, 0, 0], 'class defined per interface');
    assert.equal(data[7], 64, 'bMaxPacketSize0');
    assert.equal(data.readUInt16LE(8), 0x05ac, 'idVendor');
    assert.equal(data.readUInt16LE(10), 0x12a8, 'idProduct');
    assert.equal(data.readUInt16LE(12), 0x1205, 'bcdDevice');
    assert.deepEqual([data[14], data[15], data[16]], [1, 2, 3], 'iManufacturer, iProduct, iSerialNumber');
    assert.equal(data[17], 4, 'bNumConfigurations: mode 1 has four');
  });

  test('a short wLength gets the first bytes only, as a real device answers the 8-byte probe', async () => {
    const { host } = await plugged();
    await host.nextMessage();
    const { status, data } = await host.getDescriptor(1, 0, 8);
    assert.equal(status, 0);
    assert.deepEqual([...data], [18, 1, 0x00, 0x02, 0, 0, 0, 64]);
  });

  test('configurations 3 and 4 are byte for byte those of a real iPhone', async () => {
    const { host } = await plugged();
    await host.nextMessage();
    const c3 = await host.getDescriptor(2, 2, 0xffff);
    assert.deepEqual(c3.data, REAL_CONFIG_3);
    const c4 = await host.getDescriptor(2, 3, 0xffff);
    assert.equal(c4.data.length, 117);
    assert.deepEqual(c4.data.subarray(0, REAL_CONFIG_4_PREFIX.length), REAL_CONFIG_4_PREFIX);
  });

  test('all four configurations parse, and only 3 and 4 hold the mux interface FF/FE/02', async () => {
    const { host } = await plugged();
    await host.nextMessage();
    const expected = [
      { value: 1, total: 39, interfaces: 1, mux: false },
      { value: 2, total: 149, interfaces: 3, mux: false },
      { value: 3, total: 62, interfaces: 2, mux: true },
      { value: 4, total: 117, interfaces: 3, mux: true },
    ];
    for (const [index, want] of expected.entries()) {
      const head = await host.getDescriptor(2, index, 9);
      assert.equal(head.data.length, 9);
      assert.equal(head.data.readUInt16LE(2), want.total, `wTotalLength of config ${want.value}`);
      const full = await host.getDescriptor(2, index, want.total);
      const config = parseConfigurationDescriptor(full.data);
      assert.equal(config.bConfigurationValue, want.value);
      assert.equal(config.bNumInterfaces, want.interfaces);
      assert.equal(config.bmAttributes, 0xc0, 'self-powered');
      const mux = config.interfaces.find((i) => i.bInterfaceClass === 0xff && i.bInterfaceSubClass === 0xfe && i.bInterfaceProtocol === 2);
      assert.equal(mux !== undefined, want.mux, `mux in config ${want.value}`);
      if (mux) {
        assert.equal(mux.bInterfaceNumber, 1);
        assert.deepEqual(mux.endpoints, [
          { bEndpointAddress: 0x04, bmAttributes: 2, maxPacketSize: 512 },
          { bEndpointAddress: 0x85, bmAttributes: 2, maxPacketSize: 512 },
        ]);
      }
    }
    const none = await host.getDescriptor(2, 4, 9);
    assert.equal(none.status, STALL, 'there is no fifth configuration in mode 1');
  });

  test('at SuperSpeed bulk endpoints have 1024-byte packets and companions, and there is a BOS', async () => {
    const { host } = await plugged({ speed: 'super' });
    await host.nextMessage();
    const dev = await host.getDescriptor(1, 0, 18);
    assert.equal(dev.data.readUInt16LE(2), 0x0320, 'bcdUSB 3.20');
    assert.equal(dev.data[7], 9, 'bMaxPacketSize0 is an exponent at SuperSpeed');
    const head = await host.getDescriptor(2, 3, 9);
    const full = await host.getDescriptor(2, 3, head.data.readUInt16LE(2));
    const config = parseConfigurationDescriptor(full.data);
    const mux = config.interfaces.find((i) => i.bInterfaceClass === 0xff && i.bInterfaceSubClass === 0xfe)!;
    assert.deepEqual(mux.endpoints.map((e) => e.maxPacketSize), [1024, 1024]);
    const companionCount = [...full.data].filter((_, i) => i > 0 && full.data[i] === 0x30 && full.data[i - 1] === 6).length;
    assert.ok(companionCount >= 7, `every endpoint has a companion (found ${companionCount})`);
    const bos = await host.getDescriptor(0x0f, 0, 5);
    assert.equal(bos.status, 0);
    assert.equal(bos.data[1], 0x0f);
    const qualifier = await host.getDescriptor(6, 0, 10);
    assert.equal(qualifier.status, STALL, 'a device at SuperSpeed has no qualifier');
  });

  test('at high speed it has a device qualifier and other-speed configurations, and no BOS', async () => {
    const { host } = await plugged();
    await host.nextMessage();
    const q = await host.getDescriptor(6, 0, 10);
    assert.deepEqual([...q.data], [10, 6, 0x00, 0x02, 0, 0, 0, 64, 4, 0]);
    const other = await host.getDescriptor(7, 3, 0xffff);
    assert.equal(other.data[1], 7);
    const parsed = parseConfigurationDescriptor(Buffer.concat([Buffer.from([9, 2]), other.data.subarray(2)]));
    const mux = parsed.interfaces.find((i) => i.bInterfaceClass === 0xff && i.bInterfaceSubClass === 0xfe)!;
    assert.deepEqual(mux.endpoints.map((e) => e.maxPacketSize), [64, 64], 'full-speed bulk packets');
    assert.equal((await host.getDescriptor(0x0f, 0, 5)).status, STALL);
  });

  test('string 0 lists LANGID 0x0409, and strings 1-3 are Apple Inc., iPhone and the dashless serial', async () => {
    const { host } = await plugged();
    await host.nextMessage();
    const langs = await host.getDescriptor(3, 0, 1032);
    assert.deepEqual([...langs.data], [4, 3, 0x09, 0x04]);
    assert.deepEqual((await host.getDescriptor(3, 1, 1032, 0x0409)).data, utf16('Apple Inc.'));
    assert.deepEqual((await host.getDescriptor(3, 2, 1032, 0x0409)).data, utf16('iPhone'));
    assert.deepEqual((await host.getDescriptor(3, 3, 1032, 0x0409)).data, utf16('00008120000A2D910EDB401E'));
    assert.deepEqual((await host.getDescriptor(3, 0x0f, 1032, 0x0409)).data, utf16('Apple USB Multiplexor'));
    assert.equal((await host.getDescriptor(3, 4, 1032, 0x0409)).status, STALL, 'no string 4');
  });

  test('a 40-character UDID is reported as it is', async () => {
    const { host, device } = await plugged({ udid: UDID_40 });
    await host.nextMessage();
    assert.equal(device.usbSerial, UDID_40);
    assert.deepEqual((await host.getDescriptor(3, 3, 1032, 0x0409)).data, utf16(UDID_40));
  });

  test('it starts unconfigured and GET/SET_CONFIGURATION follow each other', async () => {
    const { host, device } = await plugged();
    await host.nextMessage();
    const get = (): Promise<number | undefined> =>
      host.control({ bmRequestType: 0x80, bRequest: 0x08, wValue: 0, wIndex: 0, wLength: 1 }).then((r) => r.data[0]);
    assert.equal(await get(), 0);
    await configure(host, 4);
    assert.equal(await get(), 4);
    assert.equal(device.configuration, 4);
    const bad = await host.control({ bmRequestType: 0x00, bRequest: 0x09, wValue: 5, wIndex: 0, wLength: 0 });
    assert.equal(bad.status, STALL, 'configuration 5 does not exist');
    assert.equal(await get(), 4, 'a refused SET_CONFIGURATION changes nothing');
    await configure(host, 0);
    assert.equal(await get(), 0);
  });

  test('SET_INTERFACE and GET_INTERFACE work on interfaces of the current configuration only', async () => {
    const { host } = await plugged();
    await host.nextMessage();
    const setIf = (intf: number, alt: number): Promise<number> =>
      host.control({ bmRequestType: 0x01, bRequest: 0x0b, wValue: alt, wIndex: intf, wLength: 0 }).then((r) => r.status);
    const getIf = (intf: number): Promise<{ status: number; data: Buffer }> =>
      host.control({ bmRequestType: 0x81, bRequest: 0x0a, wValue: 0, wIndex: intf, wLength: 1 });
    assert.equal(await setIf(1, 0), STALL, 'unconfigured: no interfaces');
    await configure(host, 4);
    assert.equal(await setIf(1, 0), 0);
    assert.equal(await setIf(1, 1), STALL, 'the mux interface has one altsetting');
    assert.equal(await setIf(2, 2), 0, 'Apple USB Ethernet has three');
    assert.deepEqual([...(await getIf(2)).data], [2]);
    assert.equal(await setIf(3, 0), STALL, 'no interface 3');
  });

  test('GET_STATUS reports self-powered, and endpoints exist only once configured', async () => {
    const { host } = await plugged();
    await host.nextMessage();
    const status = (recipient: number, index: number) =>
      host.control({ bmRequestType: 0x80 | recipient, bRequest: 0x00, wValue: 0, wIndex: index, wLength: 2 });
    assert.deepEqual([...(await status(0, 0)).data], [1, 0]);
    assert.equal((await status(2, 0x85)).status, STALL);
    await configure(host, 4);
    assert.deepEqual([...(await status(2, 0x85)).data], [0, 0]);
    assert.deepEqual([...(await status(1, 1)).data], [0, 0]);
    const clearHalt = await host.control({ bmRequestType: 0x02, bRequest: 0x01, wValue: 0, wIndex: 0x04, wLength: 0 });
    assert.equal(clearHalt.status, 0, 'libusb_clear_halt on the mux OUT endpoint');
  });

  test("Apple's GET_MODE answers 3:3:3:0 and SET_MODE is refused with a non-zero byte", async () => {
    const { host, device } = await plugged();
    await host.nextMessage();
    const mode = await host.control({ bmRequestType: 0xc0, bRequest: 0x45, wValue: 0, wIndex: 0, wLength: 4 });
    assert.deepEqual({ status: mode.status, data: [...mode.data] }, { status: 0, data: [3, 3, 3, 0] });
    const set = await host.control({ bmRequestType: 0xc0, bRequest: 0x52, wValue: 0, wIndex: 3, wLength: 1 });
    assert.equal(set.status, 0);
    assert.equal(set.data.length, 1);
    assert.notEqual(set.data[0], 0, 'non-zero: the host carries on in the current mode');
    assert.equal(device.hostConnected, true, 'no re-enumeration');
  });

  test('unknown requests stall with LIBUSB_ERROR_PIPE', async () => {
    const { host, device } = await plugged();
    await host.nextMessage();
    const requests = [
      { bmRequestType: 0xc0, bRequest: 0x99, wValue: 0, wIndex: 0, wLength: 4 }, // unknown vendor request
      { bmRequestType: 0xa1, bRequest: 0x01, wValue: 0, wIndex: 0, wLength: 4 }, // class request
      { bmRequestType: 0x81, bRequest: 0x06, wValue: 0x2200, wIndex: 2, wLength: 208 }, // HID report descriptor
      { bmRequestType: 0x80, bRequest: 0x06, wValue: 0x0900, wIndex: 0, wLength: 9 }, // unknown descriptor type
      { bmRequestType: 0x00, bRequest: 0x05, wValue: 7, wIndex: 0, wLength: 0 }, // SET_ADDRESS is the HCD's job
      { bmRequestType: 0x00, bRequest: 0x03, wValue: 1, wIndex: 0, wLength: 0 }, // SET_FEATURE remote wakeup
      { bmRequestType: 0x00, bRequest: 0x06, wValue: 0x0100, wIndex: 0, wLength: 0 }, // GET_DESCRIPTOR as OUT
    ];
    for (const setup of requests) {
      const r = await host.control(setup);
      assert.equal(r.status, STALL, JSON.stringify(setup));
      assert.equal(r.data.length, 0);
    }
    assert.equal(device.stats.stalls, requests.length);
  });

  test('an OUT data stage that does not match wLength stalls', async () => {
    const { host } = await plugged();
    await host.nextMessage();
    const r = await host.control({ bmRequestType: 0x00, bRequest: 0x09, wValue: 4, wIndex: 0, wLength: 2 }, Buffer.from([1]));
    assert.equal(r.status, STALL);
    const r2 = await host.control({ bmRequestType: 0x80, bRequest: 0x06, wValue: 0x0100, wIndex: 0, wLength: 18 }, Buffer.alloc(0));
    assert.equal(r2.status, 0);
  });

  test('bulk traffic before SET_CONFIGURATION of the mux configuration is ignored', async () => {
    const { host, mux, device } = await plugged();
    await host.nextMessage();
    host.bulkOut(0x04, Buffer.from('early'));
    await configure(host, 3);
    host.bulkOut(0x04, Buffer.from('wrong config'));
    // A GET_CONFIGURATION round trip orders us after the bulk messages.
    await host.control({ bmRequestType: 0x80, bRequest: 0x08, wValue: 0, wIndex: 0, wLength: 1 });
    assert.deepEqual(mux.reads, []);
    assert.equal(device.stats.refusedBulk, 2);
    await configure(host, 4);
    host.bulkOut(0x02, Buffer.from('PTP endpoint'));
    host.bulkOut(0x04, Buffer.from('hello mux'));
    await host.until(() => host.bulkIn.length === 1, 'the echo');
    assert.deepEqual(mux.reads.map(String), ['hello mux']);
    assert.deepEqual(host.bulkIn[0], { endpoint: 0x85, data: Buffer.from('hello mux') });
    assert.equal(device.stats.refusedBulk, 3);
  });

  test('a device read ends at a short packet: a 512-byte transfer needs its ZLP', async () => {
    const { host, mux, device } = await plugged();
    await host.nextMessage();
    mux.echo = false;
    await configure(host, 4);
    host.bulkOut(0x04, Buffer.alloc(512, 1));
    host.bulkOut(0x04, Buffer.alloc(0));
    host.bulkOut(0x04, Buffer.alloc(100, 2));
    // Without a ZLP the next transfer's bytes join the same read.
    host.bulkOut(0x04, Buffer.alloc(1024, 3));
    host.bulkOut(0x04, Buffer.alloc(10, 4));
    await host.until(() => mux.reads.length === 3, 'three reads');
    assert.deepEqual(mux.reads.map((r) => r.length), [512, 100, 1034]);
    assert.deepEqual(mux.reads[2]!.subarray(1020, 1030), Buffer.from([3, 3, 3, 3, 4, 4, 4, 4, 4, 4]));
    assert.equal(device.stats.zeroLengthPackets, 1);
    assert.equal(device.stats.bulkOutTransfers, 5);
  });

  test('each mux transmit is one BULK_IN message on endpoint 0x85, empty ones included', async () => {
    const { host, mux } = await plugged();
    await host.nextMessage();
    mux.echo = false;
    await configure(host, 4);
    mux.onTransmit(Buffer.alloc(40000, 7));
    mux.onTransmit(Buffer.alloc(0));
    mux.onTransmit(Buffer.from('x'));
    await host.until(() => host.bulkIn.length === 3, 'three writes');
    assert.deepEqual(host.bulkIn.map((m) => [m.endpoint, m.data.length]), [[0x85, 40000], [0x85, 0], [0x85, 1]]);
  });

  test('one host at a time: a second connection is dropped before HELLO', async () => {
    const { host, device } = await plugged();
    await host.nextMessage();
    const second = await RawVusbHost.connect(device.socketPath);
    hosts.push(second);
    await second.until(() => second.closed, 'the second host to be dropped');
    await assert.rejects(second.nextMessage(), /closed/);
    // The first host is unaffected.
    assert.equal((await host.getDescriptor(1, 0, 18)).status, 0);
  });

  test('a host leaving unconfigures the device and resets the mux; the next host is welcome', async () => {
    const { host, device, mux } = await plugged();
    await host.nextMessage();
    await configure(host, 4);
    await host.close();
    while (device.hostConnected) await new Promise((r) => setTimeout(r, 5));
    assert.equal(device.configuration, 0);
    assert.equal(mux.detaches, 1);
    const next = await RawVusbHost.connect(device.socketPath);
    hosts.push(next);
    assert.equal((await next.nextMessage()).type, VusbMessageType.HELLO);
  });

  test('unplug closes the host connection and removes the socket file', async () => {
    const { host, device, mux } = await plugged();
    await host.nextMessage();
    await configure(host, 4);
    await device.unplug();
    await host.until(() => host.closed, 'the host connection to close');
    assert.equal(existsSync(device.socketPath), false);
    assert.equal(mux.detaches, 1);
    assert.equal(device.plugged, false);
    // Plugging in again works.
    await device.plug();
    assert.ok(existsSync(device.socketPath));
  });

  test('malformed wire input from the host drops the connection', async () => {
    const { host } = await plugged();
    await host.nextMessage();
    host.socket.write(Buffer.from([1, 0, 0, 0, 42]));
    await host.until(() => host.closed, 'the device to drop the host');
  });

  test('random wire input never crashes the device, and it takes the next host afterwards', async () => {
    const { device, host: first } = await plugged();
    await first.close();
    while (device.hostConnected) await new Promise((r) => setTimeout(r, 2));
    let x = 4242;
    const rand = (): number => ((x = (x * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    for (let round = 0; round < 20; round++) {
      const host = await RawVusbHost.connect(device.socketPath);
      hosts.push(host);
      // Plausible framing with random types and bodies, so the parser gets past the length check.
      const parts: Buffer[] = [];
      for (let i = 0; i < 8; i++) {
        const body = Buffer.alloc(Math.floor(rand() * 40));
        for (let j = 0; j < body.length; j++) body[j] = Math.floor(rand() * 256);
        const head = Buffer.alloc(5);
        head.writeUInt32LE(body.length + 1, 0);
        head[4] = 1 + Math.floor(rand() * 6);
        parts.push(head, body);
      }
      host.socket.write(Buffer.concat(parts));
      // A well-formed request after the garbage: answered, or the host was dropped before it.
      host.socket.write(Buffer.from([13, 0, 0, 0, 2, 99, 0, 0, 0, 0x80, 8, 0, 0, 0, 0, 1, 0]));
      await host.until(() => host.closed || host.socket.bytesRead > 9, 'an answer or a drop');
      await host.close();
      while (device.hostConnected) await new Promise((r) => setTimeout(r, 2));
    }
    const last = await RawVusbHost.connect(device.socketPath);
    hosts.push(last);
    assert.equal((await last.nextMessage()).type, VusbMessageType.HELLO);
    assert.equal((await last.getDescriptor(1, 0, 18)).status, 0);
  });

  test('a socket file left behind by a dead device is replaced on plug', async () => {
    const path = join(dir, `${UDID_40}.vusb`);
    // A process that dies while listening leaves its socket file behind with nothing behind it.
    const child = spawn(process.execPath, ['-e',
      `require('net').createServer().listen(${JSON.stringify(path)}, () => process.stdout.write('ok'))`]);
    await new Promise<void>((r) => child.stdout.once('data', () => r()));
    child.kill('SIGKILL');
    await new Promise<void>((r) => child.once('exit', () => r()));
    assert.ok(existsSync(path), 'the stale socket file is there');
    const device = new SimUsbDevice({ busDir: dir, udid: UDID_40, mux: new EchoMux() });
    devices.push(device);
    await device.plug();
    const host = await RawVusbHost.connect(path);
    hosts.push(host);
    assert.equal((await host.nextMessage()).type, VusbMessageType.HELLO);
  });

  test('a live device cannot be plugged twice at one path', async () => {
    await plugged();
    const twin = new SimUsbDevice({ busDir: dir, udid: UDID_8_16, mux: new EchoMux() });
    await assert.rejects(twin.plug(), { code: 'MUXWIRE_ERR_ADDR_IN_USE' });
  });

  test('32 devices plug, answer and unplug in one process', async () => {
    const many = Array.from({ length: 32 }, (_, i) => new SimUsbDevice({
      busDir: dir, udid: `00008120-${i.toString(16).toUpperCase().padStart(16, '0')}`, mux: new EchoMux(),
    }));
    devices.push(...many);
    await Promise.all(many.map((d) => d.plug()));
    const raw = await Promise.all(many.map((d) => RawVusbHost.connect(d.socketPath)));
    hosts.push(...raw);
    const serials = await Promise.all(raw.map(async (h) => {
      await h.nextMessage();
      const s = await h.getDescriptor(3, 3, 1032, 0x0409);
      return s.data.subarray(2).toString('utf16le');
    }));
    assert.deepEqual(serials, many.map((d) => d.usbSerial));
    assert.equal(new Set(serials).size, 32);
  });
});
