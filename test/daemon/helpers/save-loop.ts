/**
 * A child process that saves pair records without end, for kill -9 tests and the soak: argv[2] is
 * the pair directory. It prints `saving` once its first save has started, then rewrites three
 * records (each about 4 KiB, with a HostPrivateKey) until it is killed.
 */
import { randomBytes } from 'node:crypto';
import { PairStore } from '../../../src/daemon/pair-store.js';

const store = new PairStore(process.argv[2]);
const ids = ['00008030-000000000000C001', '00008030-000000000000C002', '00008030-000000000000C003'];
let n = 0;
for (;;) {
  const save = store.savePairRecord(ids[n % ids.length]!, {
    DeviceCertificate: randomBytes(900),
    HostCertificate: randomBytes(900),
    HostPrivateKey: randomBytes(1700),
    HostID: `HOST-${n}`,
    SystemBUID: 'C0FFEE00-0000-0000-0000-000000000000',
  });
  if (n === 0) process.stdout.write('saving\n');
  await save;
  n++;
}
