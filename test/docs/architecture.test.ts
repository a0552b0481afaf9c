/**
 * docs/ARCHITECTURE.md stays true to the tree: every folder under src/ and native/, and every
 * top-level folder, has its "where does X live" line (the folders are read from the repository at
 * run time, so a folder added tomorrow fails here until it has one); every file and test it or the
 * README names exists; the README links it; and no tracked file points outside the repository.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const doc = readFileSync(join(root, 'docs', 'ARCHITECTURE.md'), 'utf8');
const readme = readFileSync(join(root, 'README.md'), 'utf8');
const self = 'test/docs/architecture.test.ts';

/** The repository's files: git's list when this is a checkout, else a walk that skips build output. */
function trackedFiles(): string[] {
  const git = spawnSync('git', ['ls-files', '-z'], { cwd: root, encoding: 'utf8' });
  if (git.status === 0 && git.stdout.length > 0) return git.stdout.split('\0').filter((f) => f !== '' && existsSync(join(root, f)));
  const out: string[] = [];
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      if (['node_modules', 'dist', 'build', '.git'].includes(name) || name.startsWith('dist-')) continue;
      const p = join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else out.push(relative(root, p));
    }
  };
  walk(root);
  return out;
}

const files = trackedFiles();

/** Every folder holding a file, as `a/b/`, with all its parents. */
function folders(): Set<string> {
  const out = new Set<string>();
  for (const f of files) {
    for (let d = dirname(f); d !== '.'; d = dirname(d)) out.add(d + '/');
  }
  return out;
}

test('docs/ARCHITECTURE.md names every folder under src/ and native/ and every top-level folder', () => {
  const all = [...folders()];
  const required = all.filter((d) => d.startsWith('src/') || d.startsWith('native/') || d.split('/').length === 2);
  assert.ok(required.includes('src/daemon/') && required.includes('native/vusb/'), 'the folder list was read');
  const missing = required.filter((d) => !doc.includes('`' + d + '`'));
  assert.deepEqual(missing, [], 'folders without a "where does X live" line');
});

test('every file and folder path docs/ARCHITECTURE.md names exists', () => {
  // What is, not what is planned: the last section names the homes of future work.
  const present = doc.split('## Where the next capabilities go')[0]!;
  // A pattern such as `src/transport/vusb-*.ts` stands for several files and is not a path.
  const named = new Set([...present.matchAll(/\b((?:src|native|test|scripts|bench|docs|\.ci)\/[\w./-]*[\w/])(?![\w*-])/g)].map((m) => m[1]!));
  assert.ok(named.size > 30);
  const missing = [...named].filter((p) => !existsSync(join(root, p)));
  assert.deepEqual(missing, []);
});

test('every test file the README or docs/ARCHITECTURE.md cites exists', () => {
  const cited = new Set([...`${readme}\n${doc}`.matchAll(/\btest\/[\w/.-]+\.test\.ts\b/g)].map((m) => m[0]));
  assert.ok(cited.size >= 10, 'the interop table names its tests');
  assert.deepEqual([...cited].filter((p) => !existsSync(join(root, p))), []);
});

test('every reference document a comment cites is in docs/reference/', () => {
  const cited = new Set<string>();
  for (const f of files) {
    if (!/\.(ts|mjs|cc|h|c|md|sh)$/.test(f) || f.startsWith('docs/reference/')) continue;
    for (const m of readFileSync(join(root, f), 'utf8').matchAll(/\b([a-z-]+\.md) §/g)) cited.add(m[1]!);
  }
  assert.ok(cited.size > 0, 'no citations found');
  for (const name of cited) assert.ok(existsSync(join(root, 'docs', 'reference', name)), `${name} is cited but not in docs/reference/`);
});

test('the README links docs/ARCHITECTURE.md', () => {
  assert.match(readme, /\]\(docs\/ARCHITECTURE\.md\)/);
});

test('no tracked file points to a path outside the repository', () => {
  // Built from pieces so that this file does not match itself.
  const outside = [new RegExp(['\\bshared', ''].join('/')), new RegExp('\\b' + ['DESIGN', 'md'].join('\\.') + '\\b'), new RegExp('\\b' + ['STYLE', 'md'].join('\\.') + '\\b'), new RegExp('(?<!docs/)\\b' + ['reference', ''].join('/')), new RegExp(['', 'work', ''].join('/'))];
  const hits: string[] = [];
  for (const f of files) {
    if (f === self) continue;
    const p = join(root, f);
    if (statSync(p).size > 4 * 1024 * 1024) continue;
    const buf = readFileSync(p);
    if (buf.includes(0)) continue; // binary
    const lines = buf.toString('utf8').split('\n');
    lines.forEach((line, i) => {
      if (outside.some((re) => re.test(line))) hits.push(`${f}:${i + 1}: ${line.trim().slice(0, 120)}`);
    });
  }
  assert.deepEqual(hits, []);
});
