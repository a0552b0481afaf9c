/**
 * A network namespace for a test (`ip netns add`), with only its loopback up and multicast on it:
 * what runs inside reaches addresses in it and nothing outside, so mDNS and the device's TCP
 * ports stay in the test. Processes started in it are ended, and the namespace deleted, by
 * destroy(). Needs root (CI runs as root) and iproute2.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';

/** What a command printed and how it ended. */
export interface NsRunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A long-running process in the namespace, with its stdout lines. */
export interface NsProcess {
  child: ChildProcess;
  /** The next line (after those already matched) that matches `pattern`; fails after 60 s or on exit. */
  line(pattern: RegExp): Promise<RegExpMatchArray>;
}

function exec(cmd: string, args: string[], env?: NodeJS.ProcessEnv, timeoutMs = 30_000): Promise<NsRunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')} did not finish in ${timeoutMs} ms; stdout: ${stdout} stderr: ${stderr}`));
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

export class NetworkNamespace {
  readonly name: string;
  /** Environment of every command run in the namespace. */
  env: NodeJS.ProcessEnv = process.env;
  readonly #children: ChildProcess[] = [];

  private constructor(name: string) {
    this.name = name;
  }

  /** Makes `<prefix>-<pid>-<random>` with loopback up and multicast on. */
  static async create(prefix: string): Promise<NetworkNamespace> {
    const ns = new NetworkNamespace(`${prefix}-${process.pid}-${randomBytes(3).toString('hex')}`);
    const add = await exec('ip', ['netns', 'add', ns.name]);
    if (add.code !== 0) throw new Error(`ip netns add failed: ${add.stderr.trim()}`);
    const up = await exec('ip', ['netns', 'exec', ns.name, 'ip', 'link', 'set', 'lo', 'up', 'multicast', 'on']);
    if (up.code !== 0) {
      await exec('ip', ['netns', 'delete', ns.name]);
      throw new Error(`cannot bring up loopback in ${ns.name}: ${up.stderr.trim()}`);
    }
    return ns;
  }

  /** Runs a command to completion in the namespace. */
  run(cmd: string, args: string[], timeoutMs?: number): Promise<NsRunResult> {
    return exec('ip', ['netns', 'exec', this.name, cmd, ...args], this.env, timeoutMs);
  }

  /** Starts a long-running command in the namespace. */
  start(cmd: string, args: string[]): NsProcess {
    const child = spawn('ip', ['netns', 'exec', this.name, cmd, ...args], { env: this.env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.#children.push(child);
    const lines: string[] = [];
    let partial = '';
    let stderr = '';
    let cursor = 0;
    const waiters = new Set<() => void>();
    child.stdout!.on('data', (c: Buffer) => {
      partial += c.toString();
      const parts = partial.split('\n');
      partial = parts.pop()!;
      lines.push(...parts);
      for (const w of [...waiters]) w();
    });
    child.stderr!.on('data', (c: Buffer) => {
      stderr = (stderr + c.toString()).slice(-4000);
    });
    child.once('exit', () => {
      for (const w of [...waiters]) w();
    });
    const line = (pattern: RegExp): Promise<RegExpMatchArray> =>
      new Promise((resolve, reject) => {
        const check = (): void => {
          for (let i = cursor; i < lines.length; i++) {
            const m = pattern.exec(lines[i]!);
            if (m !== null) {
              cursor = i + 1;
              finish();
              resolve(m);
              return;
            }
          }
          if (child.exitCode !== null || child.signalCode !== null) {
            finish();
            reject(new Error(`${cmd} exited (${child.exitCode ?? child.signalCode}) before printing ${pattern}; stderr: ${stderr}`));
          }
        };
        const timer = setTimeout(() => {
          finish();
          reject(new Error(`${cmd} did not print ${pattern} within 60 s; stdout: ${lines.join('\n')} stderr: ${stderr}`));
        }, 60_000);
        const finish = (): void => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    return { child, line };
  }

  /** Ends every process started here (SIGTERM, then SIGKILL after 5 s) and deletes the namespace. */
  async destroy(): Promise<void> {
    await Promise.all(
      this.#children.map(async (child) => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }),
    );
    await exec('ip', ['netns', 'delete', this.name]);
  }
}
