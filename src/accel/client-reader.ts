/**
 * Reading a tunnelling client into memory the daemon reuses, instead of the fresh 64 KiB buffer
 * Node allocates for every read of a socket it accepted. Those buffers are external memory: in an
 * upload a fifth of the daemon's CPU went to the collections and page faults they cause
 * (bench/README.md, "Upload, measured"). Node offers reads into a caller's buffer (`onread`) only
 * to sockets it creates, so the reader is a second net.Socket over a duplicate of the client's
 * descriptor (the addon's `dupDescriptor`); the original socket stops reading and keeps writing.
 *
 * ```
 *   client socket ─ dup ─> reader (net.Socket, onread) ──reads into──> ring (256 KiB per reader)
 *                                                                      │ views handed to the sink
 *   MuxConnection takes bytes into packets ── release(n) ──────────────┘ frees them, oldest first
 * ```
 *
 * A reader gets its ring at its first bulk read (32 KiB or more in one read); until then it reads
 * into one buffer all readers share and copies each read out, so a tunnel that only carries
 * requests and replies (lockdown, AFC commands) costs no memory while it waits. A ring that has
 * held nothing for RING_IDLE_MS is given back (`sweepIdleRings`, on one timer for all readers), so
 * a tunnel that carried bulk data once and then went quiet costs no memory either; its next bulk
 * read makes a new one.
 * Each read lands in a slice of the ring; the view goes to the sink (the device connection's
 * write) and stays valid until `release` says that many bytes, in order, have been taken. Bytes
 * the sink got from elsewhere first (`foreign`) are counted in the same order. When the ring has
 * no slice of at least 16 KiB free, a read goes into a fresh buffer as before: never a stall, never
 * an overwrite. Without the addon (or with MUXWIRE_NO_NATIVE=1, or MUXWIRE_RING_READER=0) there
 * is no reader and the client is read as before: same bytes, same order, same ends.
 */
import { closeSync } from 'node:fs';
import { Socket, type SocketConstructorOpts } from 'node:net';
import { loadAddon } from './addon-loader.js';
import { socketFd } from './peer-credentials.js';

/** Bytes of ring per reader. */
export const RING_READER_CAPACITY = 256 * 1024;
/** Largest read (Node's own read size). */
const SLICE = 64 * 1024;
/** A free stretch shorter than this is not worth a read: the next one goes to a fresh buffer. */
const MIN_SLICE = 16 * 1024;
/** A read at least this long means bulk data: the reader gets its ring for the reads after it. */
export const BULK_READ = 32 * 1024;

/**
 * Where every reader without a ring reads: reads run one at a time on the event loop and each is
 * copied out in its callback, so one buffer serves them all and an idle tunnel holds no memory.
 */
const SHARED = Buffer.allocUnsafeSlow(SLICE);

/** A ring that has held nothing for this long is given back (the tunnel has gone quiet). */
export const RING_IDLE_MS = 2000;

/** Readers that hold a ring, for the idle sweep; its timer runs only while there are some. */
const withRing = new Set<RingReader>();
let sweepTimer: NodeJS.Timeout | undefined;

/**
 * Gives back the ring of every reader whose ring has held nothing since `now - RING_IDLE_MS`
 * (milliseconds of `performance.now()`). The timer calls it every second; tests call it with a
 * later `now`. Returns how many rings were given back.
 */
export function sweepIdleRings(now = performance.now()): number {
  let dropped = 0;
  for (const reader of withRing) if (reader.dropRingIfIdle(now)) dropped++;
  if (withRing.size === 0 && sweepTimer !== undefined) {
    clearInterval(sweepTimer);
    sweepTimer = undefined;
  }
  return dropped;
}

function trackRing(reader: RingReader): void {
  withRing.add(reader);
  if (sweepTimer === undefined) {
    sweepTimer = setInterval(sweepIdleRings, 1000);
    sweepTimer.unref();
  }
}

/** Where the reader hands what it reads. */
export interface RingReaderSink {
  /** Bytes read; the view stays valid until released. */
  data(chunk: Buffer): void;
  /** The client sent EOF. */
  end(): void;
  error(err: Error): void;
}

/** What a reader has done, for tests and diagnostics. */
export interface RingReaderStats {
  /** Reads that landed in the ring. */
  ringReads: number;
  /** Reads that went to a fresh buffer because the ring had no slice free. */
  freshReads: number;
  /** Reads before the ring: into the shared buffer, then copied out (interactive traffic). */
  copiedReads: number;
  /** Bytes of ring this reader holds: 0 until its first bulk read, then RING_READER_CAPACITY. */
  ringBytes: number;
  /** Bytes handed out (ring and fresh) and not yet released, foreign ones included. */
  held: number;
}

type RawDup = (fd: number) => number;

/** The addon's dup, or undefined when reading this way is off or not possible. */
function dupEntry(env: Readonly<Record<string, string | undefined>>): RawDup | undefined {
  if (env.MUXWIRE_NO_NATIVE === '1' || env.MUXWIRE_RING_READER === '0') return undefined;
  const load = loadAddon();
  if (!load.ok) return undefined;
  const raw = (load.binding as unknown as { dupDescriptor?: unknown }).dupDescriptor;
  return typeof raw === 'function' ? (raw as RawDup) : undefined;
}

/** One stretch handed out: in the ring at `start`, or (start -1) a fresh or foreign buffer. */
interface Held {
  start: number;
  length: number;
}

export class RingReader {
  /** Whether `create` can make readers here at all (the addon, its dup, the switches). */
  static available(env: Readonly<Record<string, string | undefined>> = process.env): boolean {
    return dupEntry(env) !== undefined;
  }

  /**
   * A reader of `socket`, not reading yet (`start`), or undefined when there is none to be had:
   * the addon or its dup is missing, the socket has no descriptor, or the dup failed. The caller
   * then reads the socket as before.
   */
  static create(socket: Socket, sink: RingReaderSink, env: Readonly<Record<string, string | undefined>> = process.env): RingReader | undefined {
    const dup = dupEntry(env);
    const fd = socketFd(socket);
    if (dup === undefined || fd === undefined) return undefined;
    const copy = dup(fd);
    if (copy < 0) return undefined;
    try {
      return new RingReader(copy, sink);
    } catch {
      // Node would not take the descriptor (not a pipe or TCP socket): read the original.
      closeSync(copy);
      return undefined;
    }
  }

  /** Allocated at the first bulk read: interactive tunnels never get one. */
  #ring: Buffer | undefined;
  readonly #sink: RingReaderSink;
  readonly #socket: Socket;
  #started = false;
  /** Stretches handed out, oldest first, from #first on. */
  #held: Held[] = [];
  #first = 0;
  /** Bytes of the oldest stretch already released. */
  #firstReleased = 0;
  #heldBytes = 0;
  /** Where the next ring slice starts. */
  #head = 0;
  /** Ring bytes handed out and not released. */
  #ringHeld = 0;
  /** When (performance.now()) the ring was made or last came to hold nothing. */
  #ringBusyAt = 0;
  #stats = { ringReads: 0, freshReads: 0, copiedReads: 0 };
  #paused = false;
  #closed = false;

  private constructor(fd: number, sink: RingReaderSink) {
    this.#sink = sink;
    // Made here, not reading (pauseOnCreate), so that a descriptor Node refuses is found before
    // the original socket stops. allowHalfOpen: an EOF must never make Node shut the shared
    // socket's write side down. `onread` is a Socket constructor option (Node's docs); @types/node
    // lists it for connect() only.
    const options = {
      fd,
      readable: true,
      writable: false,
      allowHalfOpen: true,
      pauseOnCreate: true,
      onread: { buffer: () => this.#nextSlice(), callback: (n: number, buf: Uint8Array) => this.#onRead(n, buf) },
    };
    const socket = new Socket(options as SocketConstructorOpts);
    this.#socket = socket;
    // Reading is switched on and off at the handle only (#setReading): Readable's own resume
    // would start the handle again a tick later, whatever pause said in between.
    (socket as unknown as { _read: () => void })._read = () => undefined;
    socket.on('end', () => {
      if (!this.#closed) this.#sink.end();
    });
    socket.on('error', (err) => {
      if (!this.#closed) this.#sink.error(err);
    });
  }

  /** Counts `n` bytes the sink got from elsewhere before the next read (released in order). */
  foreign(n: number): void {
    if (n > 0) this.#push(-1, n);
  }

  /** Starts reading (once). */
  start(): void {
    if (this.#started || this.#closed) return;
    this.#started = true;
    if (!this.#paused) this.#setReading(true);
  }

  #setReading(on: boolean): void {
    const handle = handleOf(this.#socket);
    if (handle === undefined || this.#closed || handle.reading === on) return;
    handle.reading = on;
    if (on) handle.readStart();
    else handle.readStop();
  }

  /** True while paused (the sink's backpressure). */
  get paused(): boolean {
    return this.#paused;
  }

  pause(): void {
    this.#paused = true;
    if (this.#started) this.#setReading(false);
  }

  resume(): void {
    this.#paused = false;
    if (this.#started) this.#setReading(true);
  }

  /** The sink has taken the next `n` bytes it was handed (in order): their memory is free again. */
  release(n: number): void {
    let left = n;
    while (left > 0 && this.#first < this.#held.length) {
      const h = this.#held[this.#first]!;
      const take = Math.min(left, h.length - this.#firstReleased);
      left -= take;
      this.#heldBytes -= take;
      this.#firstReleased += take;
      if (this.#firstReleased === h.length) {
        if (h.start >= 0) this.#ringHeld -= h.length;
        this.#first++;
        this.#firstReleased = 0;
      }
    }
    if (this.#first === this.#held.length) {
      this.#held = [];
      this.#first = 0;
    } else if (this.#first > 64) {
      this.#held = this.#held.slice(this.#first);
      this.#first = 0;
    }
    // Nothing of the ring is held: the next slice may start at its beginning again.
    if (this.#ringHeld === 0 && this.#ring !== undefined) {
      this.#head = 0;
      this.#ringBusyAt = performance.now();
    }
  }

  /**
   * @internal Gives the ring back if it has held nothing since `now - RING_IDLE_MS`; true when it
   * did. Safe between reads: a read's buffer is asked for and filled within one libuv callback.
   */
  dropRingIfIdle(now: number): boolean {
    if (this.#ring === undefined || this.#closed) {
      withRing.delete(this);
      return false;
    }
    if (this.#ringHeld !== 0 || now - this.#ringBusyAt < RING_IDLE_MS) return false;
    this.#ring = undefined;
    this.#head = 0;
    withRing.delete(this);
    return true;
  }

  get stats(): RingReaderStats {
    return { ...this.#stats, held: this.#heldBytes, ringBytes: this.#ring === undefined ? 0 : RING_READER_CAPACITY };
  }

  /** Stops reading and closes the duplicate descriptor (the client's own stays as it is). */
  destroy(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#ring = undefined;
    withRing.delete(this);
    this.#socket.destroy();
  }

  #push(start: number, length: number): void {
    this.#held.push({ start, length });
    this.#heldBytes += length;
  }

  #onRead(n: number, buf: Uint8Array): void {
    if (this.#closed) return;
    if (buf.buffer === SHARED.buffer) {
      // The next read, of any reader, overwrites the shared buffer: copy these bytes out now.
      const copy = Buffer.allocUnsafe(n);
      SHARED.copy(copy, 0, 0, n);
      this.#push(-1, n);
      this.#stats.copiedReads++;
      if (n >= BULK_READ && this.#ring === undefined) {
        this.#ring = Buffer.allocUnsafeSlow(RING_READER_CAPACITY);
        this.#ringBusyAt = performance.now();
        trackRing(this);
      }
      this.#sink.data(copy);
      return;
    }
    const view = Buffer.from(buf.buffer, buf.byteOffset, n);
    if (this.#ring !== undefined && buf.buffer === this.#ring.buffer) {
      const start = buf.byteOffset - this.#ring.byteOffset;
      this.#push(start, n);
      this.#ringHeld += n;
      this.#head = start + n;
      this.#stats.ringReads++;
    } else {
      this.#push(-1, n);
      this.#stats.freshReads++;
    }
    this.#sink.data(view);
  }

  /** The buffer of the next read: the shared one, the free slice after #head (wrapping), or a fresh one. */
  #nextSlice(): Uint8Array {
    const ring = this.#ring;
    if (ring === undefined) return SHARED;
    if (this.#ringHeld === 0) return ring.subarray(0, SLICE);
    // #head is where the newest ring stretch ends; it equals the oldest one's start only when the
    // stretches fill the ring up to it (a full ring).
    // The oldest ring stretch still held bounds the free space.
    let tail = -1;
    for (let i = this.#first; i < this.#held.length; i++) {
      const h = this.#held[i]!;
      if (h.start >= 0) {
        tail = h.start + (i === this.#first ? this.#firstReleased : 0);
        break;
      }
    }
    let start = this.#head;
    let room: number;
    if (start === tail) {
      room = 0;
    } else if (start > tail) {
      room = RING_READER_CAPACITY - start;
      if (room < MIN_SLICE) {
        start = 0;
        room = tail;
      }
    } else {
      room = tail - start;
    }
    if (room < MIN_SLICE) return Buffer.allocUnsafe(SLICE);
    return ring.subarray(start, start + Math.min(room, SLICE));
  }
}

/**
 * Makes `socket` stop reading for good, so that a RingReader over its duplicate is the only reader:
 * its handle stops, and its stream never asks for more (the bytes it already holds can still be
 * taken with `read()`). False when the socket has no handle to stop (then nothing changed).
 */
export function stopReading(socket: Socket): boolean {
  const handle = handleOf(socket);
  if (handle === undefined) return false;
  socket.pause();
  // Readable.read() calls _read to refill, which would start the handle again.
  (socket as unknown as { _read: () => void })._read = () => undefined;
  handle.reading = false;
  handle.readStop();
  return true;
}

/** A socket's libuv stream handle (Node's `_handle`), when it has one that reads. */
interface StreamHandle {
  reading: boolean;
  readStart(): number;
  readStop(): number;
}

function handleOf(socket: Socket): StreamHandle | undefined {
  const handle = (socket as unknown as { _handle?: Partial<StreamHandle> | null })._handle;
  return handle !== undefined && handle !== null && typeof handle.readStart === 'function' && typeof handle.readStop === 'function' ? (handle as StreamHandle) : undefined;
}
