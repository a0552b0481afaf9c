/**
 * The command line of network devices: the options are in --help, and bad combinations or
 * addresses end with one coded line and exit 1, before anything is served.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

function run(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('--help of daemon, sim and the device commands tells the network options', () => {
  const daemon = run(['daemon', '--help']);
  assert.equal(daemon.status, 0);
  assert.match(daemon.stdout, /--network\s/);
  assert.match(daemon.stdout, /--network-device HOST/);
  const sim = run(['sim', '--help']);
  assert.equal(sim.status, 0);
  for (const opt of ['--network ADDR', '--no-mdns', '--no-usb', 'SIGUSR1', 'SIGUSR2']) assert.ok(sim.stdout.includes(opt), opt);
  for (const command of ['info', 'pair', 'validate', 'unpair', 'forward', 'afc', 'list']) {
    const r = run([command, '--help']);
    assert.equal(r.status, 0, command);
    assert.match(r.stdout, /-n, --network/, command);
  }
});

test('sim: --no-mdns or --no-usb without --network, and --network with several devices, are usage errors', () => {
  for (const args of [['sim', '--no-mdns'], ['sim', '--no-usb'], ['sim', '--network', '127.0.0.1', '--count', '2']]) {
    const r = run(args);
    assert.equal(r.status, 2, args.join(' '));
    assert.match(r.stderr, /^muxwire sim: .*\(MUXWIRE_ERR_BAD_ARGUMENT\)\n$/, args.join(' '));
  }
});

test('sim: --network with something that is not an IP address is MUXWIRE_ERR_BAD_ADDRESS', () => {
  const r = run(['sim', '--network', 'phone.local', '--no-usb']);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^muxwire sim: .*\(MUXWIRE_ERR_BAD_ADDRESS\)\n$/);
});

test('daemon: --network-device with something that is not an IP address is a usage error', () => {
  const r = run(['daemon', '--network-device', 'phone.local', '--no-socket', '--listen', '127.0.0.1:0']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /^muxwire daemon: .*\(MUXWIRE_ERR_BAD_ARGUMENT\)\n$/);
});
