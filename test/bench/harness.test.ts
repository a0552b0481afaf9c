/**
 * The bench harness itself, on tiny sizes: that it checks answers before timing them, measures the
 * end-to-end figures through a real daemon and simulated device, prints what it could not measure,
 * and that the gate passes, fails and skips as bench/gate.json says. No timing is asserted.
 */
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { loadAddon } from '../../src/accel/addon-loader.js';
import { makeWorkDir } from '../../bench/contenders.js';
import { runE2e, sizeFor, type E2eConfig } from '../../bench/e2e.js';
import { checkGate, type GateFile } from '../../bench/gate.js';
import { runCodecBench, runDemuxBench } from '../../bench/micro.js';
import { PatternChecker, patternSlice } from '../../bench/pattern.js';
import { formatReport, machineInfo, type BenchReport } from '../../bench/report.js';
import { quantile, summarize } from '../../bench/stats.js';
import { main as benchMain } from '../../bench/run.js';

const TINY: E2eConfig = {
  repeats: 2,
  targetSeconds: 0.05,
  warmupBytes: 256 * 1024,
  warmupSeconds: 0,
  minBytes: 1024 * 1024,
  maxBytes: 2 * 1024 * 1024,
  connections: 4,
  latencySamples: 5,
  afcBytes: 1024 * 1024,
  afcBudgetSeconds: 0.05,
  afcWarmupBytes: 1024 * 1024,
  afcRepeats: 1,
};

describe('bench harness', () => {
  const dirs: string[] = [];
  after(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  test('the pattern checker accepts the source pattern and names the first wrong byte', () => {
    const ok = new PatternChecker('t');
    ok.push(patternSlice(0, 1000));
    ok.push(patternSlice(1000, 5000));
    assert.equal(ok.bytes, 6000);
    const bad = Buffer.from(patternSlice(0, 600));
    bad[300] = bad[300]! ^ 1;
    assert.throws(() => new PatternChecker('t').push(bad), /byte 300 is/);
  });

  test('summaries take medians and nearest-rank quantiles', () => {
    assert.deepEqual(summarize([3, 1, 2]), { median: 2, min: 1, max: 3, runs: [3, 1, 2] });
    assert.equal(summarize([1, 2, 3, 10]).median, 2.5);
    assert.equal(quantile([...Array(100).keys()], 0.99), 98);
  });

  test('run sizes follow the warm-up rate within the limits', () => {
    const cfg = { targetSeconds: 1, minBytes: 2 * 1024 * 1024, maxBytes: 64 * 1024 * 1024 };
    assert.equal(sizeFor(10, cfg), 9 * 1024 * 1024);
    assert.equal(sizeFor(0.1, cfg), cfg.minBytes);
    assert.equal(sizeFor(1e6, cfg), cfg.maxBytes);
  });

  test('times every codec after checking its answer', async () => {
    const rows = await runCodecBench({ timeMs: 5, demuxStreamBytes: 0 });
    assert.ok(rows.length >= 14, `${rows.length} codecs`);
    for (const r of rows) assert.ok(Number.isFinite(r.ns.codec) && r.ns.codec! > 0, r.name);
  });

  test('times the native and TypeScript demuxers against memcpy on checked streams', async (t) => {
    if (!loadAddon().ok) {
      t.skip('native addon not built: the demux comparison needs it');
      return;
    }
    const rows = await runDemuxBench({ timeMs: 5, demuxStreamBytes: 32 * 1024, quick: true });
    assert.equal(rows.length, 12);
    for (const r of rows) {
      for (const task of ['native', 'ts', 'memcpy']) assert.ok(r.ns[task]! > 0, `${r.name} ${task}`);
    }
  });

  test('measures every figure of the TypeScript daemon and the direct ceiling, and prints them', { timeout: 180_000 }, async () => {
    const workDir = await makeWorkDir();
    dirs.push(workDir);
    const lines: string[] = [];
    const results = await runE2e({ ...TINY, only: ['muxwire-js', 'direct'] }, workDir, (l) => lines.push(l));
    const [ours, direct] = results;
    assert.equal(ours?.id, 'muxwire-js');
    assert.equal(ours.unavailable, undefined, lines.join('\n'));
    for (const id of ['download', 'upload', 'duplex', 'duplex8', 'concurrent', 'connectMedian', 'connectOpenMedian', 'connectDaemonCpu', 'lockdownMedian', 'afcPullMuxwire', 'afcPushMuxwire', 'afcPullAppium', 'afcPushAppium', 'rssGrowth', 'cpuPerGB', 'farCpuPerGB', 'concurrentDaemonCpuPerGB', 'concurrentCpuPerGB'] as const) {
      const s = ours.figures[id]?.summary;
      assert.ok(s && Number.isFinite(s.median), `${id}: ${ours.figures[id]?.missing ?? 'no summary'}`);
    }
    // The 32-connection CPU of all three processes includes the daemon's.
    assert.ok(ours.figures.concurrentCpuPerGB!.summary!.median > ours.figures.concurrentDaemonCpuPerGB!.summary!.median);
    assert.equal(ours.figures.download!.summary!.runs.length, TINY.repeats);
    assert.ok(ours.figures.download!.bytesPerRun! >= TINY.minBytes);
    assert.equal(direct?.id, 'direct');
    assert.ok(direct.figures.download?.summary, direct.figures.download?.missing);
    assert.match(direct.figures.lockdownMedian?.missing ?? '', /not measured/);
    assert.match(direct.figures.cpuPerGB?.missing ?? '', /no daemon/);
    assert.equal(direct.figures.concurrentDaemonCpuPerGB, undefined, 'a ceiling has no daemon');
    assert.equal(direct.figures.connectDaemonCpu, undefined, 'a ceiling has no daemon');

    const report: BenchReport = { version: 1, startedAt: '', seconds: 0, mode: 'quick', machine: machineInfo(), e2e: results };
    const text = formatReport(report);
    assert.match(text, /download, 1 connection/);
    assert.match(text, /\(a\) muxwire, TS vusb/);
  });

  test('--figures measures only the groups it names, and refuses one it does not know', { timeout: 60_000 }, async () => {
    const workDir = await makeWorkDir();
    dirs.push(workDir);
    const [direct] = await runE2e({ ...TINY, only: ['direct'], figures: ['connect'] }, workDir, () => undefined);
    assert.ok(direct?.figures.connectMedian?.summary, direct?.figures.connectMedian?.missing);
    assert.ok(direct.figures.connectOpenMedian?.summary);
    assert.equal(direct.figures.download, undefined, 'download was not asked for');
    assert.equal(direct.figures.concurrent, undefined);
    await assert.rejects(benchMain(['--figures', 'connect,nonsense', '--no-micro']), /--figures: unknown figure group 'nonsense'/);
  });

  test('the gate passes, fails and skips by its thresholds', () => {
    const figure = (median: number) => ({ summary: summarize([median]) });
    const report: BenchReport = {
      version: 1,
      startedAt: '',
      seconds: 0,
      mode: 'quick',
      machine: machineInfo(),
      e2e: [
        { id: 'muxwire-js', label: 'a', about: '', notes: [], seconds: 0, figures: { download: figure(300), rssGrowth: figure(80) } },
        { id: 'muxwire-native', label: 'b', about: '', notes: [], seconds: 0, unavailable: 'not available: no backend', figures: {} },
        { id: 'usbmuxd', label: 'c', about: '', notes: [], seconds: 0, figures: { download: figure(100) } },
      ],
    };
    const gate: GateFile = {
      thresholds: [
        { id: 'a', kind: 'e2e', figure: 'download', contender: 'muxwire-js', against: 'usbmuxd', min: 1.5, why: '' },
        { id: 'b', kind: 'e2e', figure: 'download', contender: 'muxwire-native', against: 'usbmuxd', min: 1.5, optional: true, why: '' },
        { id: 'rss', kind: 'e2e', figure: 'rssGrowth', contender: 'muxwire-js', max: 64, why: '' },
        { id: 'up', kind: 'e2e', figure: 'upload', contender: 'muxwire-js', against: 'usbmuxd', min: 1, why: '' },
      ],
    };
    const out = checkGate(gate, report);
    assert.deepEqual(out.map((o) => [o.id, o.status]), [['a', 'pass'], ['b', 'skip'], ['rss', 'fail'], ['up', 'fail']]);
    assert.equal(out[0]!.value, 3);
    assert.match(out[1]!.detail ?? '', /not available: no backend/);
    assert.match(formatReport({ ...report, gate: out }), /not available: no backend/);
  });

  test('an advisory target is reported, not failed; one advisory only in quick runs fails a full run', () => {
    const figure = (median: number) => ({ summary: summarize([median]) });
    const report = (mode: 'quick' | 'full'): BenchReport => ({
      version: 1,
      startedAt: '',
      seconds: 0,
      mode,
      machine: machineInfo(),
      e2e: [
        { id: 'muxwire-js', label: 'a', about: '', notes: [], seconds: 0, figures: { download: figure(40) } },
        { id: 'socat', label: 's', about: '', notes: [], seconds: 0, figures: { download: figure(100) } },
      ],
    });
    const gate: GateFile = {
      thresholds: [
        { id: 'always', kind: 'e2e', figure: 'download', contender: 'muxwire-js', against: 'socat', min: 0.5, advisory: 'not yet', why: '' },
        { id: 'quick', kind: 'e2e', figure: 'download', contender: 'muxwire-js', against: 'socat', min: 0.5, advisoryQuick: 'spreads in quick runs', why: '' },
      ],
    };
    const quick = checkGate(gate, report('quick'));
    assert.deepEqual(quick.map((o) => o.status), ['miss', 'miss']);
    assert.match(quick[1]!.detail ?? '', /not enforced in quick runs: spreads in quick runs/);
    const full = checkGate(gate, report('full'));
    assert.deepEqual(full.map((o) => o.status), ['miss', 'fail']);
  });

  test('a ratio is taken round by round: the gate reports its median, and its spread over the rounds', () => {
    const runs = (...values: number[]) => ({ summary: summarize(values) });
    const demuxCase = { transfer: 16384, payload: 49116, connections: 1 };
    const report: BenchReport = {
      version: 1,
      startedAt: '',
      seconds: 0,
      mode: 'quick',
      machine: machineInfo(),
      e2e: [
        { id: 'muxwire-js', label: 'a', about: '', notes: [], seconds: 0, figures: { download: runs(300, 600, 450) } },
        { id: 'usbmuxd', label: 'c', about: '', notes: [], seconds: 0, figures: { download: runs(100, 100, 300) } },
      ],
      demux: [
        // Round 3 was hit by load on the memcpy side only: the per-round median ignores it.
        { name: 'one', bytes: 1, demuxCase, ns: { native: 10, memcpy: 6 }, rounds: { native: [10, 10, 10], memcpy: [6, 7, 30] } },
        { name: 'two', bytes: 1, demuxCase: { ...demuxCase, connections: 64 }, ns: { native: 10, memcpy: 9 }, rounds: { native: [10, 10, 10], memcpy: [9, 9, 9] } },
      ],
    };
    const gate: GateFile = {
      thresholds: [
        { id: 'dl', kind: 'e2e', figure: 'download', contender: 'muxwire-js', against: 'usbmuxd', min: 1.5, why: '' },
        { id: 'memcpy', kind: 'demux', select: { payload: 49116 }, ratio: 'native÷memcpy', min: 0.5, why: '' },
      ],
    };
    const [dl, memcpy] = checkGate(gate, report);
    assert.equal(dl!.value, 4.5, 'the ratio of the medians');
    assert.match(dl!.detail ?? '', /rounds 1\.50\.\.6\.00 over 3/);
    assert.equal(memcpy!.status, 'pass');
    assert.equal(memcpy!.value, 0.7, 'the worst case, as the median of its rounds');
    assert.match(memcpy!.detail ?? '', /worst of 2 cases \(0\.70 0\.90\): one, rounds 0\.60\.\.3\.00 over 3 rounds/);
  });
});
