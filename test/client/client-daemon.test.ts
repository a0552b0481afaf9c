import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MuxDaemon } from '../../src/daemon/mux-daemon.js';
import { VusbSource } from '../../src/transport/vusb-source.js';
import { UsbmuxClient } from '../../src/client/usbmux-client.js';
import { clientSuite } from '../helpers/client-suite.js';

clientSuite('through muxwire daemon', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'muxwire-cd-'));
  const busDir = join(dir, 'bus');
  await mkdir(busDir);
  const daemon = new MuxDaemon({ socketPath: join(dir, 'usbmuxd'), pairDir: join(dir, 'lockdown') });
  await daemon.start();
  await daemon.addSource(new VusbSource({ dir: busDir }));
  const muxer = new UsbmuxClient({ address: `UNIX:${join(dir, 'usbmuxd')}` });
  return {
    busDir,
    muxer,
    stop: async () => {
      await daemon.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
});
