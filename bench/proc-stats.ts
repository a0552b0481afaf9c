/**
 * CPU time and resident memory of a process, read from /proc (Linux), for the daemon figures:
 * CPU seconds per GB moved and RSS growth under load.
 *
 * ```
 * /proc/<pid>/stat    "pid (comm) state ... utime(14) stime(15) ..."  clock ticks, fields 1-based
 * /proc/<pid>/task/<tid>/schedstat  "ns-on-cpu ns-waiting timeslices"   one per live thread
 * /proc/<pid>/status  "VmRSS:\t  12345 kB"
 * ```
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';

let ticksPerSecond: number | undefined;

/** sysconf(_SC_CLK_TCK); 100 on every Linux this runs on, asked once to be sure. */
function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    try {
      ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      ticksPerSecond = 100;
    }
  }
  return ticksPerSecond;
}

/** User + system CPU seconds `pid` has used so far; undefined when it is gone. */
export function cpuSeconds(pid: number): number | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // comm may hold spaces and parentheses: the fields after it start past the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state); utime is field 14, stime field 15.
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return (utime + stime) / clockTicks();
}

/**
 * CPU seconds `pid`'s live threads have run, to the nanosecond (the scheduler's own count, where
 * cpuSeconds has 10 ms ticks): for figures made of short runs, such as the CPU per connect.
 * Undefined when the process is gone.
 */
export function cpuSecondsPrecise(pid: number): number | undefined {
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return undefined;
  }
  let ns = 0;
  for (const tid of tids) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // The thread ended between the listing and the read: its time is gone with it.
    }
  }
  return ns / 1e9;
}

/**
 * User + system CPU seconds of this process's children that have ended and been waited for
 * (cutime and cstime, fields 16 and 17 of /proc/self/stat): the delta around one child's run is
 * that child's CPU, to its last tick, when no other child ends meanwhile.
 */
export function reapedChildrenCpuSeconds(): number {
  const text = readFileSync('/proc/self/stat', 'utf8');
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[13]) + Number(fields[14])) / clockTicks();
}

/** Resident set size of `pid` in bytes; undefined when it is gone. */
export function rssBytes(pid: number): number | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const m = /^VmRSS:\s+(\d+) kB/m.exec(text);
  return m ? Number(m[1]) * 1024 : undefined;
}

/** The program name the kernel has for `pid` (/proc/<pid>/comm). */
export function processName(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** True when `pid` has `needle` (a path) mapped, e.g. to prove which libusb a daemon loaded. */
export function mapsFile(pid: number, needle: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/maps`, 'utf8').includes(needle);
  } catch {
    return false;
  }
}

/** Samples the RSS of `pid` every `everyMs` until stopped; reports the first and the peak sample. */
export class RssSampler {
  readonly #pid: number;
  readonly #timer: NodeJS.Timeout;
  readonly baseline: number;
  #peak: number;

  constructor(pid: number, everyMs = 20) {
    this.#pid = pid;
    this.baseline = rssBytes(pid) ?? 0;
    this.#peak = this.baseline;
    this.#timer = setInterval(() => this.#sample(), everyMs);
  }

  #sample(): void {
    const rss = rssBytes(this.#pid);
    if (rss !== undefined && rss > this.#peak) this.#peak = rss;
  }

  /** Stops sampling (one last sample first); returns the peak and the growth over the baseline. */
  stop(): { baseline: number; peak: number; growth: number } {
    this.#sample();
    clearInterval(this.#timer);
    return { baseline: this.baseline, peak: this.#peak, growth: this.#peak - this.baseline };
  }
}
