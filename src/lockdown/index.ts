/** The host side of lockdownd: client, pairing, certificates, TLS policy. */
export { LockdownClient } from './lockdown-client.js';
export type { LockdownClientOptions, PairOptions, SessionInfo, ServiceInfo } from './lockdown-client.js';
export { buildPairRecord, newHostId, pairRecordForRequest, parsePairRecord } from './pair-record.js';
export type { PairRecord, PairRecordStore } from './pair-record.js';
export {
  ERR_BAD_CERTIFICATE,
  generatePairCertificates,
  generateRsaKeyPair,
  checkPairCertificates,
  readPrivateKey,
  readPublicKey,
  readCertificate,
  publicKeyToPkcs1Pem,
} from './certificates.js';
export type { PairCertificates, RsaKeyPairPem } from './certificates.js';
export { hostTlsOptions, deviceTlsOptions, HOST_CIPHERS, DEVICE_CIPHERS } from './tls-policy.js';
export type { ClientCertificateChoice } from './tls-policy.js';
export { LOCKDOWN_ERRORS, ERR_LOCKDOWN, INVALID_REQUEST } from './lockdown-errors.js';
export type { LockdownErrorString } from './lockdown-errors.js';
export { PlistChannel } from './plist-channel.js';
export { ERR_TLS } from './tls-carrier.js';
