#!/usr/bin/env node
/**
 * What one relay hop costs a Node process against a C one, on this machine (bench/README.md,
 * "Connect latency: the floor of a Node daemon").
 *
 *   node scripts/wakeup-floor.mjs [--rounds N] [--batches N]
 *
 * A connect through a daemon is four process wake-ups in a row (client → daemon → device →
 * daemon → client): the daemon is woken twice and does a little work each time. This measures
 * the same shape with no mux at all: a client sends one byte, a relay forwards it to an echo end,
 * the echo end sends it back, the relay forwards it to the client. The client and the echo end are
 * the same Node programs every time; only the relay changes:
 *
 *   - none:  the client talks to the echo end directly (two wake-ups per round trip);
 *   - C:     a relay in C (poll(2), read, write: what usbmuxd's loop does per hop, and nothing else);
 *   - Node:  a relay in Node (`net`, 'data' → write: the least a Node daemon can do per hop).
 *
 * The Node relay minus the C relay is what two wake-ups cost a Node process over a C process
 * before either does any work of its own: the floor under which a Node daemon's connect cannot
 * come closer to usbmuxd's. Batches alternate between the relays; each batch reports the median
 * round trip in µs. Needs a C compiler (cc).
 */
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '5000' }, batches: { type: 'string', default: '6' } } });
const rounds = Number(values.rounds);
const batches = Number(values.batches);
if (!Number.isInteger(rounds) || rounds < 100 || !Number.isInteger(batches) || batches < 1) {
  process.stderr.write('wakeup-floor: --rounds takes a count ≥ 100 and --batches a count ≥ 1\n');
  process.exit(2);
}

const RELAY_C = `
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
static int dial(const char *path) {
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a = { .sun_family = AF_UNIX };
  strncpy(a.sun_path, path, sizeof a.sun_path - 1);
  return connect(fd, (struct sockaddr *)&a, sizeof a) == 0 ? fd : -1;
}
int main(int argc, char **argv) {
  if (argc != 3) return 2;
  int ls = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a = { .sun_family = AF_UNIX };
  strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1);
  if (bind(ls, (struct sockaddr *)&a, sizeof a) != 0 || listen(ls, 4) != 0) return 1;
  printf("ready\\n");
  fflush(stdout);
  int c = accept(ls, 0, 0);
  int d = dial(argv[2]);
  if (c < 0 || d < 0) return 1;
  struct pollfd p[2] = { { c, POLLIN, 0 }, { d, POLLIN, 0 } };
  char buf[65536];
  for (;;) {
    if (poll(p, 2, -1) < 0) return 1;
    for (int i = 0; i < 2; i++) {
      if (!(p[i].revents & (POLLIN | POLLHUP))) continue;
      ssize_t n = read(p[i].fd, buf, sizeof buf);
      if (n <= 0) return 0;
      if (write(p[1 - i].fd, buf, n) != n) return 1;
    }
  }
}
`;

const RELAY_NODE = `
const net = require('node:net');
const [listenPath, farPath] = process.argv.slice(2);
const server = net.createServer((client) => {
  const far = net.createConnection(farPath);
  client.setNoDelay?.(true);
  client.on('data', (b) => far.write(b));
  far.on('data', (b) => client.write(b));
  client.on('close', () => { far.destroy(); server.close(); });
});
server.listen(listenPath, () => process.stdout.write('ready\\n'));
`;

const work = mkdtempSync(join(tmpdir(), 'muxwire-wakeup-'));
try {
  writeFileSync(join(work, 'relay.c'), RELAY_C);
  const cc = spawnSync('cc', ['-O2', '-o', join(work, 'relay'), join(work, 'relay.c')], { encoding: 'utf8' });
  if (cc.status !== 0) throw new Error(`cc failed (a C compiler is needed): ${cc.error?.message ?? cc.stderr}`);
  writeFileSync(join(work, 'relay.cjs'), RELAY_NODE);

  // The echo end: a Node process, as the simulated device is.
  const echoPath = join(work, 'echo.sock');
  const echo = spawn(process.execPath, ['-e', `require('node:net').createServer((s) => s.on('data', (b) => s.write(b))).listen(${JSON.stringify(echoPath)}, () => process.stdout.write('ready\\n'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
  await once(echo.stdout, 'data');

  const results = { none: [], C: [], Node: [] };
  for (let b = 0; b < batches; b++) {
    for (const relay of ['none', 'C', 'Node']) {
      let target = echoPath;
      let child;
      if (relay !== 'none') {
        target = join(work, `relay-${relay}-${b}.sock`);
        child = relay === 'C' ? spawn(join(work, 'relay'), [target, echoPath], { stdio: ['ignore', 'pipe', 'inherit'] }) : spawn(process.execPath, [join(work, 'relay.cjs'), target, echoPath], { stdio: ['ignore', 'pipe', 'inherit'] });
        await once(child.stdout, 'data');
      }
      results[relay].push(await pingPong(target, rounds));
      child?.kill();
      if (child) await once(child, 'exit');
    }
  }
  echo.kill();

  const median = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
  console.log(`round trip of one byte, median of ${rounds} per batch, µs (batch medians; ${batches} batches, alternating)`);
  for (const [relay, list] of Object.entries(results)) {
    console.log(`  relay ${relay.padEnd(5)} ${median(list).toFixed(1).padStart(7)}   (${list.map((x) => x.toFixed(0)).join(' ')})`);
  }
  const dC = median(results.C) - median(results.none);
  const dNode = median(results.Node) - median(results.none);
  console.log(`  a relay adds: C ${dC.toFixed(1)} µs, Node ${dNode.toFixed(1)} µs; Node − C = ${(dNode - dC).toFixed(1)} µs per two wake-ups`);
} finally {
  rmSync(work, { recursive: true, force: true });
}

/** `n` one-byte round trips on one connection to `path`; the median in µs. */
async function pingPong(path, n) {
  const sock = createConnection(path);
  await once(sock, 'connect');
  const times = new Float64Array(n);
  const one = Buffer.from([0x2a]);
  let i = 0;
  let t0 = 0;
  await new Promise((resolve, reject) => {
    sock.on('error', reject);
    sock.on('data', () => {
      times[i++] = performance.now() - t0;
      if (i === n) return resolve();
      t0 = performance.now();
      sock.write(one);
    });
    t0 = performance.now();
    sock.write(one);
  });
  sock.destroy();
  const sorted = Array.from(times).sort((a, b) => a - b);
  return sorted[n >> 1] * 1000;
}
