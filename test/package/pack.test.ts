/**
 * The npm package as users get it. What `npm pack` puts in the tarball: the compiled library and
 * command, the native and vusb sources with their build scripts, the docs; no tests, no benchmarks,
 * no build output, nothing stale; every module the package imports inside itself is in it, and
 * everything it imports from outside is a run-time dependency. Then the tarball installed into an
 * empty project, and `npx muxwire demo` run there, once with a compiler on PATH (the addon is
 * built by the install, the native path serves) and once without one (the install still succeeds
 * and the TypeScript path serves).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { findPeer, requireCondition, runProgram } from '../helpers/peers.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
  version: string;
  bin: Record<string, string>;
  main: string;
  types: string;
  dependencies: Record<string, string>;
  optionalDependencies?: Record<string, string>;
};
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'muxwire-package-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The environment for a nested npm: no npm_* of an outer `npm test`, no MUXWIRE_* switches. */
function cleanEnv(path = process.env.PATH ?? ''): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^(npm_|MUXWIRE_|INIT_CWD$)/i.test(k)) env[k] = v;
  env.PATH = path;
  return env;
}

/** The files `npm pack` would pack, from dist/ as `npm test` built it (scripts not run again). */
function packedFiles(): string[] {
  const r = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8', env: cleanEnv(), timeout: 120_000 });
  assert.equal(r.status, 0, r.stderr);
  return (JSON.parse(r.stdout) as Array<{ files: Array<{ path: string }> }>)[0]!.files.map((f) => f.path).sort();
}

function walk(dirPath: string): string[] {
  return readdirSync(dirPath, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dirPath, e.name)) : [join(dirPath, e.name)]));
}

test('npm pack carries the library, the command, native and vusb sources and the docs, and no tests, benchmarks or build output', () => {
  const files = packedFiles();
  const packed = new Set(files);
  for (const f of ['package.json', 'README.md', 'CHANGELOG.md', 'LICENSE', 'docs/ARCHITECTURE.md', 'binding.gyp', 'scripts/build-native.mjs', 'scripts/build-vusb.mjs']) {
    assert.ok(packed.has(f), `${f} is packed`);
  }
  // Entry points of package.json.
  for (const f of [pkg.main, pkg.types, ...Object.values(pkg.bin)]) assert.ok(packed.has(normalize(f)), `${f} (package.json) is packed`);
  // Everything the builds compile: the addon's sources as binding.gyp lists them, and vusb's.
  const gyp = readFileSync(join(root, 'binding.gyp'), 'utf8');
  const gypSources = [...gyp.matchAll(/['"](native\/[^'"]+\.(?:cc|c|h))['"]/g)].map((m) => m[1]!);
  assert.ok(gypSources.length > 3, 'binding.gyp names its sources');
  for (const f of gypSources) assert.ok(packed.has(f), `${f} (binding.gyp) is packed`);
  for (const f of walk(join(root, 'native'))) {
    const rel = f.slice(root.length);
    if (/\.(cc|c|h)$/.test(rel)) assert.ok(packed.has(rel), `${rel} is packed`);
  }
  // Nothing else: no tests, benchmarks, CI, TypeScript sources, build output or tarballs.
  const stray = files.filter((f) => /^(test|bench|src|build|node_modules|\.ci|dist\/(?!src\/))/.test(f) || /\.(tgz|o|node|so(\.\d+)*|tsbuildinfo|log)$/.test(f) || /(^|\/)tap-[^/]*\.txt$/.test(f));
  assert.deepEqual(stray, []);
  // No stale output: every compiled module has its source in src/ (a deleted .ts leaves a .js behind).
  const stale = files.filter((f) => f.startsWith('dist/src/')).map((f) => f.slice('dist/'.length).replace(/(\.d\.ts|\.js\.map|\.js)$/, '.ts')).filter((f) => !existsSync(join(root, f)));
  assert.deepEqual(stale, []);
});

test('every module the package imports is in the package or a run-time dependency', () => {
  const files = packedFiles();
  const packed = new Set(files);
  const builtins = new Set(builtinModules);
  const missing: string[] = [];
  const outside = new Set<string>();
  for (const f of files.filter((p) => /\.(js|mjs)$/.test(p))) {
    // Code only: the examples in doc comments import 'muxwire' as a user would.
    const text = readFileSync(join(root, f), 'utf8')
      .split('\n')
      .filter((l) => !/^\s*(\*|\/\/|\/\*)/.test(l))
      .join('\n');
    for (const m of text.matchAll(/(?:^|[\s;])(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)|createRequire\([^)]*\)\(\s*['"]([^'"]+)['"]/gm)) {
      const spec = m[1] ?? m[2] ?? m[3]!;
      if (spec.startsWith('.')) {
        const target = normalize(join(dirname(f), spec));
        if (!packed.has(target)) missing.push(`${f} → ${spec}`);
      } else if (!spec.startsWith('node:') && !builtins.has(spec)) {
        outside.add(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!);
      }
    }
  }
  assert.deepEqual(missing, []);
  // An optional dependency (better-sqlite3: it may need a compiler) is loaded where it is used, in a try.
  const undeclared = [...outside].filter((name) => pkg.dependencies[name] === undefined && pkg.optionalDependencies?.[name] === undefined);
  assert.deepEqual(undeclared, [], 'imported at run time but not in dependencies');
});

/** Runs a command to completion (asynchronously: npm install takes a while), with its output as one text. */
async function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv): Promise<{ code: number | null; out: string }> {
  const r = await runProgram(cmd, args, { cwd, env, timeoutMs: 600_000 });
  return { code: r.code, out: r.stdout + r.stderr };
}

let tarball: string | undefined;
async function packOnce(): Promise<string> {
  if (tarball !== undefined) return tarball;
  const out = join(dir, 'pack');
  await mkdir(out);
  const r = await run('npm', ['pack', '--ignore-scripts', '--pack-destination', out], root, cleanEnv());
  assert.equal(r.code, 0, r.out);
  const name = (await readdir(out)).find((n) => n.endsWith('.tgz'));
  assert.ok(name, r.out);
  tarball = join(out, name);
  return tarball;
}

/** Installs the packed tarball into a new empty project with PATH `path`; returns the project. */
async function installInto(name: string, path: string): Promise<{ project: string; out: string }> {
  const project = join(dir, name);
  await mkdir(project);
  await writeFile(join(project, 'package.json'), JSON.stringify({ name: `muxwire-install-${name}`, private: true }));
  const r = await run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--foreground-scripts', await packOnce()], project, cleanEnv(path));
  assert.equal(r.code, 0, r.out);
  return { project, out: r.out };
}

/** `npx muxwire demo` and `npx muxwire --version` in the project, and which accelerator it selects. */
async function demoIn(project: string, path: string): Promise<{ accel: { selected: string; reason: string } }> {
  const env = cleanEnv(path);
  const demo = await run('npx', ['--no', '--', 'muxwire', 'demo', '--size', '4'], project, env);
  assert.equal(demo.code, 0, demo.out);
  assert.match(demo.out, /^verified +sha256 [0-9a-f]+… identical both ways$/m);
  assert.match(demo.out, /^done /m);
  const version = await run('npx', ['--no', '--', 'muxwire', '--version'], project, env);
  assert.equal(version.out.trim(), `muxwire ${pkg.version}`);
  const info = await run(process.execPath, ['--input-type=module', '-e', "import { accelInfo } from 'muxwire'; console.log(JSON.stringify(accelInfo()))"], project, env);
  assert.equal(info.code, 0, info.out);
  return { accel: JSON.parse(info.out.trim()) as { selected: string; reason: string } };
}

test('the packed tarball installs into an empty project with a compiler, builds the addon, and npx muxwire demo runs on the native path', { timeout: 900_000 }, async (t) => {
  const compilers = ['c++', 'cc', 'make'].filter((c) => findPeer(c) === undefined);
  if (!requireCondition(t, compilers.length === 0, `no ${compilers.join(', ')} on PATH`)) return;
  const path = process.env.PATH ?? '';
  const { project } = await installInto('with-compiler', path);
  assert.ok(existsSync(join(project, 'node_modules', 'muxwire', 'build', 'Release', 'muxwire.node')), 'the install built the addon');
  const { accel } = await demoIn(project, path);
  assert.equal(accel.selected, 'native', accel.reason);
});

/** A PATH of symlinks to every program on PATH except C and C++ compilers. */
async function pathWithoutCompilers(): Promise<string> {
  const bin = join(dir, 'bin-without-compilers');
  await mkdir(bin);
  const compiler = /^(cc|c\+\+|gcc|g\+\+|cpp|tcc|clang.*|(gcc|g\+\+|cpp)-\d+|.*-linux-gnu-(gcc|g\+\+|c\+\+|cpp).*)$/;
  const seen = new Set<string>();
  for (const d of (process.env.PATH ?? '').split(delimiter)) {
    let names: string[];
    try {
      names = readdirSync(d);
    } catch {
      continue;
    }
    for (const n of names) {
      if (compiler.test(n) || seen.has(n)) continue;
      seen.add(n);
      await symlink(join(d, n), join(bin, n));
    }
  }
  return bin;
}

test('without a compiler on PATH the tarball still installs, says why the addon is missing, and npx muxwire demo runs on the TypeScript path', { timeout: 900_000 }, async () => {
  const path = await pathWithoutCompilers();
  assert.equal(spawnSync('c++', ['--version'], { env: { PATH: path } }).error?.message.includes('ENOENT'), true, 'no c++ on the stripped PATH');
  const { project, out } = await installInto('without-compiler', path);
  assert.match(out, /muxwire: native addon not built, the TypeScript path will serve/);
  assert.equal(existsSync(join(project, 'node_modules', 'muxwire', 'build', 'Release', 'muxwire.node')), false);
  const { accel } = await demoIn(project, path);
  assert.equal(accel.selected, 'js', accel.reason);
});
