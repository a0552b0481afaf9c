/**
 * Pair-record certificates, as the host generates them (libimobiledevice
 * `pair_record_generate_keys_and_certs`, lockdown-afc.md §4.2), and the checks a device makes on
 * them (§4.4). Shared by the host side (pairing) and the simulated lockdownd (verifying a Pair).
 *
 * Keys come from node:crypto (native, fast); node-forge only lays out the X.509 structure, and the
 * TBSCertificate is signed with node:crypto, because forge's pure-JS RSA would cost tens of
 * milliseconds per signature.
 *
 * |                  | Root               | Host                          | Device                        |
 * |------------------|--------------------|-------------------------------|-------------------------------|
 * | public key       | root               | host                          | device (`DevicePublicKey`)    |
 * | basicConstraints | critical, CA:TRUE  | critical, CA:FALSE            | critical, CA:FALSE            |
 * | keyUsage         | none               | critical, digSig + keyEncip.  | critical, digSig + keyEncip.  |
 * | subjectKeyId     | no                 | no                            | SHA-1 of the key (RFC 5280)   |
 *
 * All three: X.509 v3, empty subject and issuer, serial 1 (PMD3, mbedTLS; "0 doesn't work" there),
 * valid from one minute ago (PMD3) to ten years of 365 days later, signed by the root key.
 */
import { generateKeyPair, createPrivateKey, createPublicKey, sign, X509Certificate, randomBytes } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import forge from 'node-forge';
import { MuxwireError } from '../errors.js';

/** Code for a certificate, key or pair record that cannot be read or does not check out. */
export const ERR_BAD_CERTIFICATE = 'MUXWIRE_ERR_BAD_CERTIFICATE';

/** An RSA key pair as PEM text. */
export interface RsaKeyPairPem {
  /** PKCS#8 `-----BEGIN PRIVATE KEY-----` (what libimobiledevice+OpenSSL and PMD3 write). */
  privateKeyPem: string;
  /** PKCS#1 `-----BEGIN RSA PUBLIC KEY-----` (the form lockdownd hands out as DevicePublicKey). */
  publicKeyPem: string;
}

/** The five PEM texts of a pair record. */
export interface PairCertificates {
  rootCertificatePem: string;
  rootPrivateKeyPem: string;
  hostCertificatePem: string;
  hostPrivateKeyPem: string;
  deviceCertificatePem: string;
}

/** Options for {@link generatePairCertificates}. */
export interface GenerateOptions {
  /** Signature digest: sha256 (default), or sha1 as libimobiledevice 1.3 and go-ios sign. */
  digest?: 'sha256' | 'sha1';
  /** Validity start (default: now minus one minute). */
  now?: Date;
  /** Reuse existing root/host keys instead of generating two (tests; re-pairing a host). */
  rootKey?: RsaKeyPairPem;
  hostKey?: RsaKeyPairPem;
}

const TEN_YEARS_MS = 10 * 365 * 24 * 60 * 60 * 1000;

/** Generates an RSA-2048 key pair with e = 65537 (asynchronous: keygen runs off the main thread). */
export async function generateRsaKeyPair(): Promise<RsaKeyPairPem> {
  return new Promise((resolve, reject) => {
    generateKeyPair(
      'rsa',
      {
        modulusLength: 2048,
        publicExponent: 65537,
        publicKeyEncoding: { type: 'pkcs1', format: 'pem' },
        privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
      },
      (err, publicKeyPem, privateKeyPem) => {
        if (err) reject(new MuxwireError(ERR_BAD_CERTIFICATE, `RSA key generation failed: ${err.message}`, { cause: err }));
        else resolve({ publicKeyPem, privateKeyPem });
      },
    );
  });
}

/**
 * Reads a private key in any PEM form a pair record may hold: PKCS#8 `PRIVATE KEY`
 * (libimobiledevice+OpenSSL, PMD3) or PKCS#1 `RSA PRIVATE KEY` (GnuTLS, mbedTLS, go-ios).
 */
export function readPrivateKey(pem: string | Buffer): KeyObject {
  try {
    const key = createPrivateKey({ key: pem, format: 'pem' });
    if (key.asymmetricKeyType !== 'rsa') throw new Error(`a ${key.asymmetricKeyType} key, not RSA`);
    return key;
  } catch (err) {
    throw new MuxwireError(ERR_BAD_CERTIFICATE, `unreadable private key: ${(err as Error).message}`, { cause: err });
  }
}

/** Reads a public key in PKCS#1 (`RSA PUBLIC KEY`) or SubjectPublicKeyInfo (`PUBLIC KEY`) PEM. */
export function readPublicKey(pem: string | Buffer): KeyObject {
  try {
    const key = createPublicKey({ key: pem, format: 'pem' });
    if (key.asymmetricKeyType !== 'rsa') throw new Error(`a ${key.asymmetricKeyType} key, not RSA`);
    return key;
  } catch (err) {
    throw new MuxwireError(ERR_BAD_CERTIFICATE, `unreadable public key: ${(err as Error).message}`, { cause: err });
  }
}

/** Parses a PEM certificate. */
export function readCertificate(pem: string | Buffer): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (err) {
    throw new MuxwireError(ERR_BAD_CERTIFICATE, `unreadable certificate: ${(err as Error).message}`, { cause: err });
  }
}

/** The PKCS#1 PEM of a key, the form lockdownd uses for `DevicePublicKey`. */
export function publicKeyToPkcs1Pem(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  return pub.export({ type: 'pkcs1', format: 'pem' }) as string;
}

/** True when two keys are the same public key (compared as SubjectPublicKeyInfo DER). */
export function samePublicKey(a: KeyObject, b: KeyObject): boolean {
  const pa = a.type === 'private' ? createPublicKey(a) : a;
  const pb = b.type === 'private' ? createPublicKey(b) : b;
  const da = pa.export({ type: 'spki', format: 'der' });
  const db = pb.export({ type: 'spki', format: 'der' });
  return da.equals(db);
}

/**
 * Generates the root, host and device certificates for pairing with a device whose
 * `DevicePublicKey` is `devicePublicKeyPem` (PKCS#1 PEM, as the device sends it).
 */
export async function generatePairCertificates(
  devicePublicKeyPem: string | Buffer,
  options: GenerateOptions = {},
): Promise<PairCertificates> {
  const devicePublic = readPublicKey(devicePublicKeyPem);
  const [rootPair, hostPair] = await Promise.all([
    options.rootKey ?? generateRsaKeyPair(),
    options.hostKey ?? generateRsaKeyPair(),
  ]);
  const digest = options.digest ?? 'sha256';
  const notBefore = new Date((options.now ?? new Date()).getTime() - 60_000);
  const notAfter = new Date(notBefore.getTime() + 60_000 + TEN_YEARS_MS);
  const rootKey = readPrivateKey(rootPair.privateKeyPem);

  const rootCertificatePem = buildCertificate({
    subjectKey: readPublicKey(rootPair.publicKeyPem),
    signer: rootKey,
    digest,
    notBefore,
    notAfter,
    extensions: [{ name: 'basicConstraints', cA: true, critical: true }],
  });
  const hostCertificatePem = buildCertificate({
    subjectKey: readPublicKey(hostPair.publicKeyPem),
    signer: rootKey,
    digest,
    notBefore,
    notAfter,
    extensions: [
      { name: 'basicConstraints', cA: false, critical: true },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    ],
  });
  const deviceCertificatePem = buildCertificate({
    subjectKey: devicePublic,
    signer: rootKey,
    digest,
    notBefore,
    notAfter,
    extensions: [
      { name: 'basicConstraints', cA: false, critical: true },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
      { name: 'subjectKeyIdentifier' },
    ],
  });
  return {
    rootCertificatePem,
    rootPrivateKeyPem: rootPair.privateKeyPem,
    hostCertificatePem,
    hostPrivateKeyPem: hostPair.privateKeyPem,
    deviceCertificatePem,
  };
}

/**
 * Builds a self-contained certificate for `subjectKey` signed by `signer`. Exported for tests that
 * need a certificate the device must refuse (for example one over another device's key).
 */
export function buildCertificate(spec: {
  subjectKey: KeyObject;
  signer: KeyObject;
  digest?: 'sha256' | 'sha1';
  notBefore?: Date;
  notAfter?: Date;
  extensions?: object[];
}): string {
  const digest = spec.digest ?? 'sha256';
  const cert = forge.pki.createCertificate();
  const spki = spec.subjectKey.export({ type: 'spki', format: 'pem' }) as string;
  cert.publicKey = forge.pki.publicKeyFromPem(spki);
  cert.serialNumber = '01';
  const notBefore = spec.notBefore ?? new Date(Date.now() - 60_000);
  cert.validity.notBefore = notBefore;
  cert.validity.notAfter = spec.notAfter ?? new Date(notBefore.getTime() + TEN_YEARS_MS);
  // Empty subject and issuer, as every host implementation writes them (§4.2).
  cert.setSubject([]);
  cert.setIssuer([]);
  cert.setExtensions(spec.extensions ?? []);
  // What forge's cert.sign() does, with the RSA operation done by node:crypto.
  const oid = forge.pki.oids[`${digest}WithRSAEncryption`];
  if (oid === undefined) throw new MuxwireError(ERR_BAD_CERTIFICATE, `no signature OID for ${digest}`);
  cert.signatureOid = oid;
  cert.siginfo.algorithmOid = oid;
  cert.md = digest === 'sha1' ? forge.md.sha1.create() : forge.md.sha256.create();
  // getTBSCertificate exists at run time but is missing from @types/node-forge.
  const tbs = (forge.pki as unknown as { getTBSCertificate(c: forge.pki.Certificate): forge.asn1.Asn1 }).getTBSCertificate(cert);
  (cert as unknown as { tbsCertificate: forge.asn1.Asn1 }).tbsCertificate = tbs;
  const tbsDer = Buffer.from(forge.asn1.toDer(tbs).getBytes(), 'binary');
  const signature = sign(digest, tbsDer, spec.signer);
  cert.signature = signature.toString('binary');
  return forge.pki.certificateToPem(cert).replace(/\r\n/g, '\n');
}

/** The reason a pair record was refused, or undefined when it checks out. */
export type PairRecordProblem = string | undefined;

/**
 * What a faithful device checks in a Pair request (lockdown-afc.md §4.4): DeviceCertificate holds
 * the device's own public key, and the Host and Device certificates are signed by the key in
 * RootCertificate. Returns a human-readable reason for the first failure, or undefined.
 */
export function checkPairCertificates(
  certs: { rootCertificate: Buffer | string; hostCertificate: Buffer | string; deviceCertificate: Buffer | string },
  devicePublicKey: KeyObject,
): PairRecordProblem {
  let root: X509Certificate;
  let host: X509Certificate;
  let device: X509Certificate;
  try {
    root = readCertificate(certs.rootCertificate);
    host = readCertificate(certs.hostCertificate);
    device = readCertificate(certs.deviceCertificate);
  } catch (err) {
    return (err as Error).message;
  }
  if (!samePublicKey(device.publicKey, devicePublicKey)) return 'DeviceCertificate does not hold this device’s public key';
  if (!device.verify(root.publicKey)) return 'DeviceCertificate is not signed by RootCertificate';
  if (!host.verify(root.publicKey)) return 'HostCertificate is not signed by RootCertificate';
  return undefined;
}

/** True when `cert` (any form) is signed by the key of `issuer`. */
export function isSignedBy(cert: X509Certificate, issuer: X509Certificate): boolean {
  try {
    return cert.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

/** Opaque escrow-bag bytes a device returns from Pair (clients store and echo them verbatim). */
export function newEscrowBag(): Buffer {
  return randomBytes(64);
}
