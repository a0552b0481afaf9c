/**
 * The services a simulated lockdownd can start: a map from a lockdown service name
 * (`com.apple.afc`, …) to the function that serves one connection to it. StartService opens an
 * ephemeral device port whose first connection is handed to the handler (after a TLS handshake when
 * EnableServiceSSL is on), so the service speaks its protocol on a plain Duplex either way.
 */
import type { Duplex } from 'node:stream';

/** Serves one connection of a service. The handler owns the stream and must close it. */
export type ServiceHandler = (stream: Duplex) => void;

/** Service name → handler. */
export type ServiceRegistry = Map<string, ServiceHandler>;

/**
 * Services a real device starts without a session (usbmuxd's preflight starts the insecure
 * notification proxy before any pairing, usbmux.md §4.11). Every other service needs a session
 * (lockdown-afc.md §3, `SessionInactive` otherwise).
 */
export const INSECURE_SERVICES: ReadonlySet<string> = new Set([
  'com.apple.mobile.insecure_notification_proxy',
  'com.apple.mobile.insecure_notification_proxy.shim.remote',
]);

/** Builds a registry from `[name, handler]` pairs (a convenience for callers assembling a device). */
export function createServiceRegistry(entries: Iterable<[string, ServiceHandler]> = []): ServiceRegistry {
  return new Map(entries);
}
