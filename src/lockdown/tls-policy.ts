/**
 * TLS settings for lockdown sessions and services, one place for both sides (lockdown-afc.md §5.2,
 * §5.3).
 *
 * Host (client): offers TLS 1.0 up to 1.3 like libimobiledevice with OpenSSL ≥ 1.1 (real lockdownd
 * answers 1.2), security level 0 so SHA-1 pair certificates and TLS 1.0 devices still work under
 * OpenSSL 3, OpenSSL's legacy-server-connect option (without it OpenSSL 3 refuses iOS 5's "unsafe
 * legacy renegotiation"), no verification of the device (no client verifies it), and the
 * HostCertificate + HostPrivateKey as client certificate (PMD3, go-ios, appium; libimobiledevice
 * with OpenSSL presents the root, which {@link hostTlsOptions} offers as an option).
 *
 * Device (server): TLS 1.0 to 1.2, capped at 1.2 as a real device negotiates (and so no TLS 1.3
 * post-handshake tickets that would corrupt handshake-only streams), ECDHE-RSA-AES-GCM for Go, Node
 * and Python clients plus RSA/ECDHE AES-CBC-SHA for GnuTLS builds of libimobiledevice (TLS 1.0
 * only), a CertificateRequest whose answer is optional.
 */
import { constants, type KeyObject } from 'node:crypto';
import type { ConnectionOptions, SecureContextOptions } from 'node:tls';
import { MuxwireError } from '../errors.js';
import { ERR_BAD_CERTIFICATE } from './certificates.js';
import type { PairRecord } from './pair-record.js';

/** Cipher list for the host side: everything authenticated, at security level 0 (as PMD3). */
export const HOST_CIPHERS = 'ALL:!aNULL:!eNULL:@SECLEVEL=0';

/** Cipher list for the simulated device (see the file comment). */
export const DEVICE_CIPHERS = [
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES256-SHA',
  'ECDHE-RSA-AES128-SHA',
  'AES256-SHA',
  'AES128-SHA',
  '@SECLEVEL=0',
].join(':');

/** Which pair-record certificate the host presents. */
export type ClientCertificateChoice = 'host' | 'root';

/** Options for the host's TLS client on a lockdown or service stream. */
export function hostTlsOptions(
  record: PairRecord,
  opts: { certificate?: ClientCertificateChoice; maxVersion?: 'TLSv1.2' | 'TLSv1.3' } = {},
): ConnectionOptions {
  const useRoot = opts.certificate === 'root';
  const cert = useRoot ? record.rootCertificate : record.hostCertificate;
  const key = useRoot ? record.rootPrivateKey : record.hostPrivateKey;
  if (key === undefined) {
    throw new MuxwireError(ERR_BAD_CERTIFICATE, `pair record has no ${useRoot ? 'RootPrivateKey' : 'HostPrivateKey'}`);
  }
  return {
    cert,
    key,
    minVersion: 'TLSv1',
    maxVersion: opts.maxVersion ?? 'TLSv1.3',
    ciphers: HOST_CIPHERS,
    secureOptions: constants.SSL_OP_LEGACY_SERVER_CONNECT,
    rejectUnauthorized: false,
    // Devices have no host name; a servername would only add an SNI extension nobody reads.
    servername: '',
    checkServerIdentity: () => undefined,
  };
}

/** Secure-context options for the simulated device's TLS server. */
export function deviceTlsOptions(certificatePem: Buffer | string, privateKey: KeyObject | string | Buffer): SecureContextOptions {
  const key = typeof privateKey === 'object' && !Buffer.isBuffer(privateKey)
    ? (privateKey.export({ type: 'pkcs8', format: 'pem' }) as string)
    : privateKey;
  return {
    cert: certificatePem,
    key,
    minVersion: 'TLSv1',
    maxVersion: 'TLSv1.2',
    ciphers: DEVICE_CIPHERS,
  };
}
