import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { MuxwireError } from '../../errors.js';
import { runCommand } from '../common.js';

const HELP = `usage: muxwire bench [--gate] [bench options]

Runs the benchmark suite (bench/ in the source tree: micro-benchmarks of the codecs and demuxers,
and end-to-end runs against the simulated device), printing one table. --gate checks the ratio
thresholds in bench/ and exits non-zero when one falls short. Needs a source checkout (npm run bench).`;

export function run(argv: string[]): Promise<number> {
  return runCommand('bench', HELP, argv, async () => {
    const runner = fileURLToPath(new URL('../../../bench/run.js', import.meta.url));
    if (!existsSync(runner)) {
      throw new MuxwireError('MUXWIRE_ERR_NOT_AVAILABLE', 'the benchmarks ship with the source tree, not the package: run npm run bench in a checkout');
    }
    const r = spawnSync(process.execPath, [runner, ...argv], { stdio: 'inherit' });
    return r.status ?? 1;
  });
}
