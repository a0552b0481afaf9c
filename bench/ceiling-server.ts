/**
 * The far end of the ceiling runs: the simulated device's source, sink and echo services
 * (src/sim/bench-services.ts, the very functions the device runs on its mux ports) served on plain
 * UNIX sockets, in a process of its own. The "direct" ceiling connects to these sockets; the
 * "socat" ceiling reaches them through socat, i.e. two UNIX hops, the shape of client → daemon →
 * device without any mux protocol.
 *
 *   node dist/bench/ceiling-server.js DIR     (listens on DIR/source.sock, DIR/sink.sock,
 *                                              DIR/echo.sock; prints "ceiling-server: ready")
 */
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { serveEcho, serveSink, serveSource } from '../src/sim/bench-services.js';

/** The services a ceiling offers, by the device port name the bench uses. */
export const CEILING_SERVICES = ['source', 'sink', 'echo'] as const;
export type CeilingService = (typeof CEILING_SERVICES)[number];

/** Path of a service's socket in `dir`. */
export function ceilingSocket(dir: string, service: CeilingService): string {
  return join(dir, `${service}.sock`);
}

async function main(dir: string): Promise<void> {
  const serve = { source: serveSource, sink: serveSink, echo: serveEcho } as const;
  const servers: Server[] = [];
  for (const service of CEILING_SERVICES) {
    const server = createServer((socket) => serve[service](socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(ceilingSocket(dir, service), resolve);
    });
    servers.push(server);
  }
  process.stdout.write('ceiling-server: ready\n');
  const stop = (): void => {
    for (const s of servers) s.close();
    process.exit(0);
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

const isMain = process.argv[1] !== undefined && import.meta.url.endsWith('/ceiling-server.js') && process.argv[1].endsWith('ceiling-server.js');
if (isMain) {
  const dir = process.argv[2];
  if (!dir) {
    process.stderr.write('usage: ceiling-server DIR\n');
    process.exit(2);
  }
  await main(dir);
}
