/**
 * Confinement of the simulated device's AFC root against its own clients racing each other: AFC
 * connections over one root, some swapping a directory and a symlink that points out of the root
 * in and out of one name while another uses a path through that name. This is the audit's race (a
 * hard link planted outside the root, a file pulled in from outside): a check by one session must
 * still hold when that session's file operation runs. Also: sessions of one directory share one
 * AfcRoot, which is what makes its lock common to them.
 */
import { test, describe, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { AfcOp, AfcStatus } from '../../src/protocol/afc.js';
import { AfcRoot } from '../../src/sim/afc-fs.js';
import { serveAfc } from '../../src/sim/afc-server.js';
import { RawAfcPeer, afcSandbox, pathArg, socketPair, statusOf, u64 } from '../services/afc-harness.js';
import type { AfcSandbox } from '../services/afc-harness.js';

/**
 * Racing attempts per test. Without one lock for the root's sessions the race is won in about 1 of
 * 60 attempts here (at most a few hundred in 90 trials on a loaded 2-core machine), so 1000 leave
 * no chance of a false pass, and with the lock they take about 2 s.
 */
const ATTEMPTS = 1000;
/**
 * Levels of the slow path the racer resolves second (`d/d/…`): realpath takes longer the deeper
 * it is, which widens the gap between the first path's check and the operation.
 */
const DEPTH = 150;
const DEEP = Array.from({ length: DEPTH }, () => 'd').join('/');
/**
 * Sessions swapping at once (shared out between the swap sites), each with SWAP_CYCLES swaps in
 * flight: together they keep the name changing during the racer's slow lookup, where one session
 * with one swap in flight leaves it still for a round trip between batches.
 */
const SWAPPERS = 4;
const SWAP_CYCLES = 8;

type Request = readonly [operation: number, headerPayload: Buffer];

const rename = (from: string, to: string): Request => [AfcOp.RENAME_PATH, Buffer.concat([pathArg(from), pathArg(to)])];
const hardLink = (target: string, name: string): Request => [AfcOp.MAKE_LINK, Buffer.concat([u64(1), pathArg(target), pathArg(name)])];

/** One AFC connection to a root; its requests are pipelined and answered in order. */
class Connection {
  readonly #peer: RawAfcPeer;
  readonly #close: () => Promise<void>;
  #num = 0;

  private constructor(peer: RawAfcPeer, close: () => Promise<void>) {
    this.#peer = peer;
    this.#close = close;
  }

  static async open(root: string): Promise<Connection> {
    const pair = await socketPair();
    const session = serveAfc(pair.server, { root });
    return new Connection(new RawAfcPeer(pair.client), async () => {
      await pair.close();
      await session.finished;
    });
  }

  /** Sends every request before reading any reply (so the server always has the next one queued). */
  async statuses(...requests: Request[]): Promise<number[]> {
    for (const [operation, headerPayload] of requests) this.#peer.send({ packetNum: ++this.#num, operation, headerPayload });
    const out: number[] = [];
    for (let i = 0; i < requests.length; i++) out.push(statusOf(await this.#peer.next()));
    return out;
  }

  close(): Promise<void> {
    return this.#close();
  }
}

/**
 * Swaps `name` (a directory) and `name_sym` (a symlink out of the root) over and over, as the
 * audit's session A did, until `stop()` says to end. Every rename may fail when another swapper got
 * there first; the names always hold the directory and the symlink between them.
 */
async function swap(conn: Connection, name: string, stop: () => boolean): Promise<void> {
  const cycle = [rename(name, `${name}_real`), rename(`${name}_sym`, name), rename(name, `${name}_sym`), rename(`${name}_real`, name)];
  const batch = Array.from({ length: SWAP_CYCLES }, () => cycle).flat();
  while (!stop()) await conn.statuses(...batch);
}

/** Where swappers work: a root their sessions serve, and the name they swap, relative to it. */
interface SwapSite {
  readonly root: string;
  readonly name: string;
}

/**
 * Races SWAPPERS sessions, spread over `sites`, each swapping its site's name, against `attempt`,
 * run up to ATTEMPTS times or until `escaped()` says the race was won. Returns how often each status answered an
 * attempt, and whether the race was won.
 */
async function race(
  sites: readonly SwapSite[],
  attempt: (i: number) => Promise<number>,
  escaped: () => Promise<boolean>,
): Promise<{ seen: Map<number, number>; won: boolean }> {
  const perSite = Math.ceil(SWAPPERS / sites.length);
  const swappers = await Promise.all(
    sites.flatMap((site) => Array.from({ length: perSite }, async () => ({ conn: await connect(site.root), name: site.name }))),
  );
  let stop = false;
  const swapping = Promise.all(swappers.map(({ conn, name }) => swap(conn, name, () => stop)));
  const seen = new Map<number, number>();
  let won = false;
  try {
    for (let i = 0; i < ATTEMPTS && !won; i++) {
      const status = await attempt(i);
      seen.set(status, (seen.get(status) ?? 0) + 1);
      won = await escaped();
    }
  } finally {
    stop = true;
    await swapping;
  }
  return { seen, won };
}

/** `seen` as `NAME×count`, for assertion messages. */
function describeSeen(seen: Map<number, number>): string {
  return [...seen].map(([s, n]) => `${AfcStatus[s] ?? s}×${n}`).join(' ');
}

let sandbox: AfcSandbox;
/** A directory beside the root, standing for the rest of the host. */
let outside: string;
const connections: Connection[] = [];

async function connect(root: string): Promise<Connection> {
  const conn = await Connection.open(root);
  connections.push(conn);
  return conn;
}

/** Under `dir`: `name/` (a directory) and `name_sym` (a symlink to `outside`), the pair to swap. */
async function swappable(dir: string, name: string): Promise<void> {
  await mkdir(join(dir, name));
  await symlink(outside, join(dir, `${name}_sym`));
}

beforeEach(async () => {
  sandbox = await afcSandbox();
  outside = join(sandbox.base, 'outside');
  await mkdir(outside);
  await mkdir(join(sandbox.root, DEEP), { recursive: true });
  await writeFile(join(sandbox.root, DEEP, 'payload'), 'written through an AFC race');
});

afterEach(async () => {
  await Promise.all(connections.splice(0).map((c) => c.close()));
  await sandbox.close();
});

/**
 * A link race held: nothing landed outside, the racer never won, and the race really ran (some
 * links went into the directory, some met the symlink and were refused).
 */
async function assertLinksHeld(seen: Map<AfcStatus, number>, won: boolean): Promise<void> {
  assert.deepEqual(await readdir(outside), [], `a link landed outside the root (${describeSeen(seen)})`);
  assert.equal(won, false);
  assert.ok((seen.get(AfcStatus.SUCCESS) ?? 0) > 0, describeSeen(seen));
  assert.ok((seen.get(AfcStatus.PERM_DENIED) ?? 0) > 0, describeSeen(seen));
}

describe('AFC sessions of one root racing a directory/symlink swap', () => {
  test('MAKE_LINK through the swapped name never plants a file outside the root', { timeout: 60_000 }, async () => {
    await swappable(sandbox.root, 'r4');
    const linker = await connect(sandbox.root);
    const { seen, won } = await race(
      [{ root: sandbox.root, name: 'r4' }],
      async (i) => (await linker.statuses(hardLink(`${DEEP}/payload`, `r4/pwned-${i}`)))[0]!,
      async () => (await readdir(outside)).length > 0,
    );
    await assertLinksHeld(seen, won);
  });

  test('RENAME_PATH through the swapped name never pulls a file in from outside', { timeout: 60_000 }, async () => {
    await swappable(sandbox.root, 'race');
    await writeFile(join(outside, 'victim'), 'a file outside the AFC root');
    const mover = await connect(sandbox.root);
    const { seen, won } = await race(
      [{ root: sandbox.root, name: 'race' }],
      async (i) => (await mover.statuses(rename('race/victim', `${DEEP}/stolen-${i}`)))[0]!,
      async () => (await readdir(outside)).length !== 1,
    );
    assert.deepEqual(await readdir(outside), ['victim'], `the file left its place outside (${describeSeen(seen)})`);
    assert.equal(won, false);
    // In the directory there is no victim, and through the symlink the path is refused.
    assert.deepEqual([...seen.keys()].sort(), [AfcStatus.OBJECT_NOT_FOUND, AfcStatus.PERM_DENIED].sort(), describeSeen(seen));
  });

  test('holds when the swapping sessions serve roots that hold the racer\'s root', { timeout: 60_000 }, async () => {
    // Simulated devices whose roots nest (root ⊃ mid ⊃ inner): the clients of the two outer
    // devices swap a name inside the innermost root while that device's client links through it.
    const mid = join(sandbox.root, 'mid');
    const inner = join(mid, 'inner');
    await mkdir(join(inner, DEEP), { recursive: true });
    await writeFile(join(inner, DEEP, 'payload'), 'written through an AFC race');
    await swappable(inner, 'r4');
    const linker = await connect(inner);
    const { seen, won } = await race(
      [
        { root: sandbox.root, name: 'mid/inner/r4' },
        { root: mid, name: 'inner/r4' },
      ],
      async (i) => (await linker.statuses(hardLink(`${DEEP}/payload`, `r4/pwned-${i}`)))[0]!,
      async () => (await readdir(outside)).length > 0,
    );
    await assertLinksHeld(seen, won);
  });
});

describe('AfcRoot sharing', () => {
  test('gives every session of one directory the same root, however the directory is named', async () => {
    await symlink(sandbox.root, join(sandbox.base, 'alias'));
    const first = await AfcRoot.open(sandbox.root);
    assert.equal(await AfcRoot.open(`${sandbox.root}/.`), first);
    assert.equal(await AfcRoot.open(join(sandbox.base, 'alias')), first);
    assert.notEqual(await AfcRoot.open(outside), first);
    assert.ok((await stat(first.path)).isDirectory());
  });
});
