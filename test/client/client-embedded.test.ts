import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EmbeddedMuxer } from '../../src/client/embedded.js';
import { clientSuite } from '../helpers/client-suite.js';

clientSuite('embedded, with no daemon', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'muxwire-ce-'));
  const busDir = join(dir, 'bus');
  await mkdir(busDir);
  const muxer = await EmbeddedMuxer.open({ pairDir: join(dir, 'lockdown'), vusbDir: busDir });
  return {
    busDir,
    muxer,
    stop: async () => {
      await muxer.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
});
