/**
 * Source ports for the host side of the device mux TCP emulation (usbmux.md §3.8).
 *
 * Like usbmuxd, one counter per device starts at 1 and moves past every port it hands out, so a
 * port freed by a connection that just closed is not reused at once (a late device packet for the
 * old connection cannot land on a new one). Unlike usbmuxd, the counter never hands out 0 when it
 * wraps — usbmuxd fails one Connect in every 65536 with BADDEV that way (§6.6) — and allocation
 * only fails when all 65535 ports are really in use.
 */

/** Lowest and highest source port handed out; 0 is never used. */
export const FIRST_PORT = 1;
export const LAST_PORT = 0xffff;

export class PortAllocator {
  #next: number;

  /** `start` lets tests begin right before the wrap. */
  constructor(start = FIRST_PORT) {
    this.#next = start >= FIRST_PORT && start <= LAST_PORT ? start : FIRST_PORT;
  }

  /** The port the next search starts from. */
  get next(): number {
    return this.#next;
  }

  /**
   * Returns the next port for which `inUse(port)` is false, or 0 when every port 1..65535 is in
   * use. The counter moves past the returned port.
   */
  allocate(inUse: (port: number) => boolean): number {
    let port = this.#next;
    for (let tries = 0; tries < LAST_PORT; tries++) {
      const candidate = port;
      port = port === LAST_PORT ? FIRST_PORT : port + 1;
      if (!inUse(candidate)) {
        this.#next = port;
        return candidate;
      }
    }
    return 0;
  }
}
