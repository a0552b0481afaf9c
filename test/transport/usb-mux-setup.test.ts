/**
 * usbmuxd's device setup (usb-mux-setup.ts): the mode guess of usbmux.md §1.2, and the whole setup
 * run against a simulated iPhone through the WebUSB device of the vusb bus.
 */
import { after, afterEach, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { log, setLogLevel, setLogSink } from '../../src/log.js';
import { DeviceMux } from '../../src/sim/device-mux.js';
import { SimUsbDevice } from '../../src/sim/usb-device.js';
import type { UsbConfigurationDescriptor, UsbInterfaceDescriptor } from '../../src/transport/usb-descriptor-parser.js';
import { guessMode, setUpMuxDevice } from '../../src/transport/usb-mux-setup.js';
import { webUsbSetupHandle, type WebUsbDevice } from '../../src/transport/usb-webusb-link.js';
import { VusbWebUsb } from '../../src/transport/webusb-vusb.js';

let root: string;
const cleanups: Array<() => Promise<void> | void> = [];

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'mw-usb-setup-'));
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

function intf(number: number, cls: number, sub: number, proto: number, endpoints = 0): UsbInterfaceDescriptor {
  const eps = endpoints === 2
    ? [{ bEndpointAddress: 0x04, bmAttributes: 2, maxPacketSize: 512 }, { bEndpointAddress: 0x85, bmAttributes: 2, maxPacketSize: 512 }]
    : [];
  return { bInterfaceNumber: number, bAlternateSetting: 0, bInterfaceClass: cls, bInterfaceSubClass: sub, bInterfaceProtocol: proto, endpoints: eps };
}

function config(value: number, ...interfaces: UsbInterfaceDescriptor[]): UsbConfigurationDescriptor {
  return { wTotalLength: 0, bNumInterfaces: interfaces.length, bConfigurationValue: value, bmAttributes: 0xc0, interfaces };
}

const PTP = intf(0, 6, 1, 1);
const MUX = intf(1, 0xff, 0xfe, 0x02, 2);

test('guesses the mode from the configuration count and the fifth configuration, as usbmuxd', () => {
  assert.equal(guessMode([config(1, PTP)]), 5, 'one configuration: CDC-NCM direct');
  assert.equal(guessMode([config(1, PTP), config(2, PTP), config(3, PTP, MUX), config(4, PTP, MUX)]), 1, 'four: initial');
  assert.equal(guessMode([config(1), config(2), config(3), config(4), config(5), config(6)]), 4, 'six: Ethernet + CDC-NCM');
  const four = [config(1), config(2), config(3), config(4)];
  assert.equal(guessMode([...four, config(5, MUX, intf(2, 0xff, 0x2a, 0xff))]), 2, 'five with Valeria: screen capture');
  assert.equal(guessMode([...four, config(5, MUX, intf(2, 0x02, 0x0d, 0x00))]), 3, 'five with CDC-NCM');
  assert.equal(guessMode([...four, config(5, PTP)]), 0, 'five without a mux interface: unknown');
});

/** A simulated iPhone on a fresh bus, opened through the bus's WebUSB. */
async function openedDevice(): Promise<{ device: WebUsbDevice; sim: SimUsbDevice }> {
  const bus = await mkdtemp(join(root, 'bus-'));
  const sim = new SimUsbDevice({ busDir: bus, udid: '00008101000A1B2C3D4E5F60', mux: new DeviceMux() });
  await sim.plug();
  cleanups.push(() => sim.unplug());
  const usb = new VusbWebUsb({ dir: bus });
  await usb.start();
  cleanups.push(() => usb.close());
  const [device] = await usb.getDevices();
  assert.ok(device, 'the bus lists the device');
  await device.open();
  return { device, sim };
}

/** Log lines at info and above written while `fn` runs. */
async function capture<T>(fn: () => Promise<T>): Promise<{ value: T; lines: string[] }> {
  const lines: string[] = [];
  setLogSink((line) => lines.push(line));
  setLogLevel('debug');
  try {
    return { value: await fn(), lines };
  } finally {
    setLogLevel('warn');
    setLogSink((line) => process.stderr.write(line + '\n'));
  }
}

test('sets a simulated iPhone up as usbmuxd does: highest configuration, its mux interface, the UDID', async () => {
  const { device } = await openedDevice();
  const initial = device.configuration;
  assert.equal(initial, null, 'the device starts unconfigured, as udev leaves it');
  const result = await setUpMuxDevice(webUsbSetupHandle(device), { log });
  assert.equal(result.kind, 'ready');
  if (result.kind !== 'ready') return;
  assert.equal(result.configurationValue, 4);
  assert.equal(device.configuration?.configurationValue, 4, 'the configuration was made current');
  assert.deepEqual(result.mux, { interfaceNumber: 1, outEndpoint: 0x04, inEndpoint: 0x85, maxPacketSize: 512 });
  assert.ok(device.configuration?.interfaces.find((i) => i.interfaceNumber === 1)?.claimed, 'the mux interface is claimed');
  assert.equal(result.usbSerial, '00008101000A1B2C3D4E5F60');
  assert.equal(result.udid, '00008101-000A1B2C3D4E5F60');
  assert.equal(result.mode, 1, 'four configurations: the initial mode');
});

test('leaves the mode alone by default, and asks for another only when told to', async () => {
  const first = await openedDevice();
  const quiet = await capture(() => setUpMuxDevice(webUsbSetupHandle(first.device), { log: log.child({ t: 'quiet' }) }));
  assert.equal(quiet.value.kind, 'ready');
  assert.ok(quiet.lines.some((l) => /GET_MODE 3:3:3:0, guessed mode 1/.test(l)), quiet.lines.join('\n'));
  assert.ok(!quiet.lines.some((l) => /SET_MODE|refused mode/.test(l)), 'no SET_MODE without a desired mode');

  // The simulator refuses every mode change (reply byte 1): usbmuxd then carries on as it is.
  const second = await openedDevice();
  const asked = await capture(() => setUpMuxDevice(webUsbSetupHandle(second.device), { log: log.child({ t: 'asked' }), desiredMode: 3 }));
  assert.equal(asked.value.kind, 'ready');
  assert.ok(asked.lines.some((l) => /refused mode 3 \(reply 1\); carrying on in mode 1/.test(l)), asked.lines.join('\n'));
  assert.ok(asked.lines.some((l) => /refused SET_MODE 3/.test(l)), 'the device saw SET_MODE with wIndex 3');
});
