/**
 * Watching a vusb bus directory (docs/ARCHITECTURE.md "The vusb wire"): a `*.vusb` socket appearing
 * is a plug-in, the file going away (or being replaced) an unplug. Shared by the two TypeScript
 * host stacks (VusbSource for the daemon, VusbWebUsb for the TypeScript USB path) so both see the
 * bus alike.
 *
 * fs.watch drives scans, a slow poll backs it up (inotify can miss events on some file systems),
 * and scans never overlap: a change during a scan runs one more scan after it. A socket file is
 * identified by inode AND birth time: a device unplugged and plugged again at the same path can get
 * the same inode back, and comparing inodes alone would miss the replug.
 */
import { watch, type FSWatcher } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { makeDirectory } from '../make-directory.js';
import { join } from 'node:path';
import { MuxwireError } from '../errors.js';
import type { Logger } from '../log.js';

/** The name every device socket ends with. */
export const VUSB_SUFFIX = '.vusb';

/** One device socket seen in the directory. */
export interface BusSocket {
  name: string;
  path: string;
  ino: number;
  birthtimeMs: number;
}

/** True when two sightings are the same socket file (not one replaced at the same path). */
export function sameSocket(a: Pick<BusSocket, 'ino' | 'birthtimeMs'>, b: Pick<BusSocket, 'ino' | 'birthtimeMs'>): boolean {
  return a.ino === b.ino && a.birthtimeMs === b.birthtimeMs;
}

export interface VusbBusWatcherOptions {
  dir: string;
  /** Milliseconds between backup scans; 0 for none. */
  pollIntervalMs: number;
  log: Logger;
  /** Called after each scan, while running, with the sockets present now (by file name). */
  onScan(present: Map<string, BusSocket>): void | Promise<void>;
}

export class VusbBusWatcher {
  readonly #opts: VusbBusWatcherOptions;
  #watcher: FSWatcher | undefined;
  #poll: NodeJS.Timeout | undefined;
  #running = false;
  #scanning: Promise<void> | undefined;
  #rescan = false;

  constructor(opts: VusbBusWatcherOptions) {
    this.#opts = opts;
  }

  get running(): boolean {
    return this.#running;
  }

  /** Creates the directory if needed, starts watching, and resolves after the first scan. */
  async start(): Promise<void> {
    if (this.#running) return;
    const { dir, log, pollIntervalMs } = this.#opts;
    await makeDirectory(dir);
    this.#running = true;
    try {
      this.#watcher = watch(dir, { persistent: false }, () => this.rescan());
      this.#watcher.on('error', (err) => log.warn(`watching ${dir} failed: ${err.message}`));
    } catch (err) {
      this.#running = false;
      throw new MuxwireError('MUXWIRE_ERR_IO', `cannot watch ${dir}: ${(err as Error).message}`, { cause: err });
    }
    if (pollIntervalMs > 0) {
      this.#poll = setInterval(() => this.rescan(), pollIntervalMs);
      this.#poll.unref();
    }
    await this.#scan();
  }

  /** Stops watching; resolves once a scan in progress has finished. */
  async stop(): Promise<void> {
    if (!this.#running) return;
    this.#running = false;
    this.#watcher?.close();
    this.#watcher = undefined;
    if (this.#poll) clearInterval(this.#poll);
    this.#poll = undefined;
    await this.#scanning;
  }

  /** Scans again soon (coalesced with a scan in progress). */
  rescan(): void {
    if (!this.#running) return;
    if (this.#scanning) {
      this.#rescan = true;
      return;
    }
    void this.#scan();
  }

  #scan(): Promise<void> {
    const run = async (): Promise<void> => {
      do {
        this.#rescan = false;
        await this.#scanOnce();
      } while (this.#rescan && this.#running);
    };
    const p = run()
      .catch((err: Error) => this.#opts.log.warn(`scanning ${this.#opts.dir} failed: ${err.message}`))
      .finally(() => {
        if (this.#scanning === p) this.#scanning = undefined;
      });
    this.#scanning = p;
    return p;
  }

  async #scanOnce(): Promise<void> {
    const dir = this.#opts.dir;
    const names = (await readdir(dir)).filter((n) => n.endsWith(VUSB_SUFFIX));
    const present = new Map<string, BusSocket>();
    await Promise.all(
      names.map(async (name) => {
        const path = join(dir, name);
        try {
          const st = await lstat(path);
          if (st.isSocket()) present.set(name, { name, path, ino: st.ino, birthtimeMs: st.birthtimeMs });
        } catch {
          // Gone between readdir and lstat: an unplug racing the scan.
        }
      }),
    );
    if (this.#running) await this.#opts.onScan(present);
  }
}
