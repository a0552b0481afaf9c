/**
 * The device's notification proxy (`com.apple.mobile.notification_proxy`, and the
 * `insecure_notification_proxy` a host may start without a session): hosts observe Darwin
 * notification names and the device relays them when they are posted. usbmuxd's preflight uses it
 * to learn that the user tapped "Trust" (`com.apple.mobile.lockdown.request_pair`) and pairs again
 * at once (usbmux.md §4.11 steps 4.3–4.5).
 *
 * Messages (libimobiledevice notification_proxy.c), XML plists in the usual 4-byte length framing:
 *
 * | direction    | message                                               |
 * |--------------|-------------------------------------------------------|
 * | host→device  | `{Command: "ObserveNotification", Name}`              |
 * | host→device  | `{Command: "PostNotification", Name}`                 |
 * | host→device  | `{Command: "Shutdown"}` → device answers ProxyDeath   |
 * | device→host  | `{Command: "RelayNotification", Name}`                |
 * | device→host  | `{Command: "ProxyDeath"}`                             |
 */
import type { Duplex } from 'node:stream';
import { isPlistDict } from '../protocol/plist.js';
import { PlistChannel } from '../lockdown/plist-channel.js';
import { log as rootLog, type Logger } from '../log.js';

/** Names lockdownd posts about pairing. */
export const NOTIFY_REQUEST_PAIR = 'com.apple.mobile.lockdown.request_pair';
export const NOTIFY_REQUEST_HOST_BUID = 'com.apple.mobile.lockdown.request_host_buid';

/** Most names one connection may observe (a bound on what a peer can make us hold). */
const MAX_OBSERVED = 256;

/** The device's notification centre: observers per name. */
export class NotificationCenter {
  readonly #observers = new Map<string, Set<(name: string) => void>>();

  /** Calls `fn` whenever `name` is posted; returns the function that stops it. */
  observe(name: string, fn: (name: string) => void): () => void {
    let set = this.#observers.get(name);
    if (!set) this.#observers.set(name, (set = new Set()));
    set.add(fn);
    return () => {
      set.delete(fn);
      if (set.size === 0) this.#observers.delete(name);
    };
  }

  /** Posts `name` to its observers. */
  post(name: string): void {
    for (const fn of [...(this.#observers.get(name) ?? [])]) fn(name);
  }
}

/** Serves one notification-proxy connection until the host closes it or sends Shutdown. */
export function serveNotificationProxy(stream: Duplex, center: NotificationCenter, log: Logger = rootLog.child({ svc: 'notification_proxy' })): void {
  const stops = new Map<string, () => void>();
  const channel: PlistChannel = new PlistChannel(stream, {
    maxFrame: 64 * 1024,
    onMessage: ({ value }) => {
      if (!isPlistDict(value) || typeof value.Command !== 'string') {
        log.debug('ignoring a message without Command');
        return;
      }
      const name = typeof value.Name === 'string' ? value.Name : undefined;
      switch (value.Command) {
        case 'ObserveNotification':
          if (name === undefined || stops.has(name)) return;
          if (stops.size >= MAX_OBSERVED) {
            log.warn(`more than ${MAX_OBSERVED} observed names; closing`);
            channel.close();
            return;
          }
          stops.set(name, center.observe(name, (n) => channel.send({ Command: 'RelayNotification', Name: n })));
          return;
        case 'PostNotification':
          if (name !== undefined) center.post(name);
          return;
        case 'Shutdown':
          channel.send({ Command: 'ProxyDeath' });
          channel.close(true);
          return;
        default:
          log.debug(`ignoring notification proxy command ${value.Command}`);
      }
    },
    onClose: () => {
      for (const stop of stops.values()) stop();
      stops.clear();
    },
  });
}
