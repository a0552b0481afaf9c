/**
 * A test-only stand-in for the device-side mux on the USB function's two calls: it records every
 * device read and writes each back as one device write. It tests the USB layer's plumbing, not the
 * mux protocol (src/sim/device-mux.ts has its own tests).
 */
import type { UsbMuxFunction } from '../../src/sim/usb-device.js';

export class EchoMux implements UsbMuxFunction {
  onTransmit: (packet: Buffer) => void = () => undefined;
  /** Copies of every device read, in order. */
  readonly reads: Buffer[] = [];
  detaches = 0;
  echo = true;

  receive(chunk: Buffer): void {
    this.reads.push(Buffer.from(chunk));
    if (this.echo) this.onTransmit(chunk);
  }

  detach(): void {
    this.detaches++;
  }
}
