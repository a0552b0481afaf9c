/**
 * The fuzz runner's counts are honest (test/helpers/fuzz.ts): a run that does fewer inputs than
 * its title says, or stops on its time budget, fails instead of passing quietly.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { claimedInputs, runFuzz } from '../helpers/fuzz.js';

/** A context with another title, for runs whose failure is the point. */
function titled(name: string, lines: string[]): TestContext {
  return { name, diagnostic: (line: string) => lines.push(line) } as unknown as TestContext;
}

const seeds = [Buffer.from('seed')];

test('reads the count a title claims', () => {
  assert.equal(claimedInputs('the AFC packet decoder survives 100,000 mutated streams'), 100_000);
  assert.equal(claimedInputs('survives 500 random blobs'), 500);
  assert.equal(claimedInputs('survives everything'), undefined);
});

test('a run of 2,000 mutated inputs states its count and passes', (t) => {
  const stats = runFuzz(t, { name: 'honest', seeds, iterations: 2000, run: () => undefined });
  assert.equal(stats.iterations, 2000);
});

test('fails when fewer inputs run than the title claims, when the title claims none, and on the time budget', () => {
  const lines: string[] = [];
  assert.throws(() => runFuzz(titled('survives 1,000 mutated inputs', lines), { name: 'short', seeds, iterations: 999, run: () => undefined }), /fewer than the 1000 the title claims/);
  assert.throws(() => runFuzz(titled('survives plenty', lines), { name: 'vague', seeds, iterations: 10, run: () => undefined }), /does not say how many inputs/);
  assert.throws(
    () =>
      runFuzz(titled('survives 5,000 mutated inputs', lines), {
        name: 'slow',
        seeds,
        iterations: 5000,
        timeBudgetMs: 1,
        run: () => {
          const until = Date.now() + 1;
          while (Date.now() < until);
        },
      }),
    /time budget of 1 ms reached after \d+ of 5000 inputs/,
  );
});
