/**
 * Pair-record certificates as lockdown-afc.md §4.2 lays them out, and the checks a device makes on
 * them (§4.4). The certificates are inspected with node:crypto's X509Certificate and OpenSSL-style
 * field reads, not with the code that built them.
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey, generateKeyPairSync, X509Certificate } from 'node:crypto';
import forge from 'node-forge';
import {
  buildCertificate,
  checkPairCertificates,
  generatePairCertificates,
  generateRsaKeyPair,
  readPrivateKey,
  readPublicKey,
  samePublicKey,
  type PairCertificates,
  type RsaKeyPairPem,
} from '../../src/lockdown/certificates.js';
import { buildPairRecord, newHostId, pairRecordForRequest, parsePairRecord } from '../../src/lockdown/pair-record.js';
import { encodeXmlPlist, decodeXmlPlist, isPlistDict } from '../../src/protocol/plist.js';

let device: RsaKeyPairPem;
let certs: PairCertificates;

before(async () => {
  device = await generateRsaKeyPair();
  certs = await generatePairCertificates(device.publicKeyPem);
});

function forgeCert(pem: string): forge.pki.Certificate {
  return forge.pki.certificateFromPem(pem);
}

test('makes RSA-2048 keys with e = 65537, the public half as PKCS#1 PEM', () => {
  assert.match(device.publicKeyPem, /^-----BEGIN RSA PUBLIC KEY-----\n/);
  assert.match(device.privateKeyPem, /^-----BEGIN PRIVATE KEY-----\n/);
  const key = readPublicKey(device.publicKeyPem);
  assert.equal(key.asymmetricKeyDetails?.modulusLength, 2048);
  assert.equal(key.asymmetricKeyDetails?.publicExponent, 65537n);
});

test('issues X.509 v3 certificates with empty subject and issuer, valid ten years, SHA-256 signed by the root', () => {
  for (const pem of [certs.rootCertificatePem, certs.hostCertificatePem, certs.deviceCertificatePem]) {
    const c = forgeCert(pem);
    assert.equal(c.version, 2, 'v3 is encoded as 2');
    assert.equal(c.subject.attributes.length, 0);
    assert.equal(c.issuer.attributes.length, 0);
    assert.equal(c.signatureOid, forge.pki.oids.sha256WithRSAEncryption);
    const years = (c.validity.notAfter.getTime() - c.validity.notBefore.getTime()) / (365 * 24 * 3600 * 1000);
    assert.ok(years >= 10 && years < 10.01, `validity ${years} years`);
    assert.ok(new X509Certificate(pem).verify(new X509Certificate(certs.rootCertificatePem).publicKey));
  }
});

test('puts the extensions of the §4.2 table on each certificate', () => {
  const ext = (pem: string, name: string) => forgeCert(pem).getExtension(name) as Record<string, unknown> | null;
  const root = certs.rootCertificatePem;
  const host = certs.hostCertificatePem;
  const dev = certs.deviceCertificatePem;
  assert.equal(ext(root, 'basicConstraints')?.cA, true);
  assert.equal(ext(root, 'basicConstraints')?.critical, true);
  assert.equal(ext(root, 'keyUsage'), null);
  for (const pem of [host, dev]) {
    assert.equal(ext(pem, 'basicConstraints')?.cA, false);
    assert.equal(ext(pem, 'basicConstraints')?.critical, true);
    assert.equal(ext(pem, 'keyUsage')?.critical, true);
    assert.equal(ext(pem, 'keyUsage')?.digitalSignature, true);
    assert.equal(ext(pem, 'keyUsage')?.keyEncipherment, true);
  }
  assert.notEqual(ext(dev, 'subjectKeyIdentifier'), null, 'device certificate has an SKI');
  assert.equal(ext(host, 'subjectKeyIdentifier'), null);
});

test('wraps the device’s own public key in the device certificate', () => {
  assert.ok(samePublicKey(new X509Certificate(certs.deviceCertificatePem).publicKey, readPublicKey(device.publicKeyPem)));
  assert.equal(checkPairCertificates(
    { rootCertificate: certs.rootCertificatePem, hostCertificate: certs.hostCertificatePem, deviceCertificate: certs.deviceCertificatePem },
    readPrivateKey(device.privateKeyPem),
  ), undefined);
});

test('signs with SHA-1 when asked, as libimobiledevice 1.3 and go-ios do, and such records still check out', async () => {
  const sha1 = await generatePairCertificates(device.publicKeyPem, { digest: 'sha1' });
  assert.equal(forgeCert(sha1.hostCertificatePem).signatureOid, forge.pki.oids.sha1WithRSAEncryption);
  assert.equal(checkPairCertificates(
    { rootCertificate: sha1.rootCertificatePem, hostCertificate: sha1.hostCertificatePem, deviceCertificate: sha1.deviceCertificatePem },
    readPublicKey(device.publicKeyPem),
  ), undefined);
});

test('finds a device certificate over another key and a host certificate from another root', async () => {
  const other = await generateRsaKeyPair();
  const forged = buildCertificate({ subjectKey: readPublicKey(other.publicKeyPem), signer: readPrivateKey(certs.rootPrivateKeyPem) });
  assert.match(
    checkPairCertificates({ rootCertificate: certs.rootCertificatePem, hostCertificate: certs.hostCertificatePem, deviceCertificate: forged }, readPublicKey(device.publicKeyPem)) ?? '',
    /public key/,
  );
  const strangerHost = buildCertificate({ subjectKey: readPublicKey(other.publicKeyPem), signer: readPrivateKey(other.privateKeyPem) });
  assert.match(
    checkPairCertificates({ rootCertificate: certs.rootCertificatePem, hostCertificate: strangerHost, deviceCertificate: certs.deviceCertificatePem }, readPublicKey(device.publicKeyPem)) ?? '',
    /HostCertificate/,
  );
  assert.match(
    checkPairCertificates({ rootCertificate: 'garbage', hostCertificate: certs.hostCertificatePem, deviceCertificate: certs.deviceCertificatePem }, readPublicKey(device.publicKeyPem)) ?? '',
    /unreadable/,
  );
});

test('reads PKCS#8 and PKCS#1 private keys, as records from OpenSSL and GnuTLS/go-ios builds hold', () => {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 1024 });
  const pkcs1 = privateKey.export({ type: 'pkcs1', format: 'pem' }) as string;
  const pkcs8 = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  assert.match(pkcs1, /BEGIN RSA PRIVATE KEY/);
  assert.ok(samePublicKey(readPrivateKey(pkcs1), readPrivateKey(pkcs8)));
  assert.throws(() => readPrivateKey('not a key'), { code: 'MUXWIRE_ERR_BAD_CERTIFICATE' });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' });
  assert.throws(() => readPrivateKey(ec), { code: 'MUXWIRE_ERR_BAD_CERTIFICATE' });
  assert.ok(createPrivateKey(pkcs1));
});

test('builds a record whose PEM texts are plist data and survive an XML round trip', () => {
  const hostId = newHostId();
  assert.match(hostId, /^[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$/);
  const record = buildPairRecord({ certificates: certs, hostId, systemBUID: 'BUID', wifiMacAddress: 'a4:83:e7:00:00:01' });
  const xml = encodeXmlPlist(record).toString();
  assert.match(xml, /<key>HostCertificate<\/key>\s*<data>/);
  assert.doesNotMatch(xml, /<string>-----BEGIN/);
  const back = decodeXmlPlist(xml);
  assert.ok(isPlistDict(back));
  const parsed = parsePairRecord(back);
  assert.equal(parsed.hostId, hostId);
  assert.equal(parsed.wifiMacAddress, 'a4:83:e7:00:00:01');
  assert.equal(parsed.hostPrivateKey?.toString(), certs.hostPrivateKeyPem);
});

test('strips the private keys (and host-only fields) from the record sent in Pair', () => {
  const record = buildPairRecord({ certificates: certs, hostId: newHostId(), systemBUID: 'BUID', wifiMacAddress: 'x', escrowBag: Buffer.from('e') });
  assert.deepEqual(Object.keys(pairRecordForRequest(record)).sort(), ['DeviceCertificate', 'HostCertificate', 'HostID', 'RootCertificate', 'SystemBUID']);
});

test('refuses a record without HostID or with a certificate of the wrong type', () => {
  const record = buildPairRecord({ certificates: certs, hostId: newHostId(), systemBUID: 'BUID' });
  assert.throws(() => parsePairRecord({ ...record, HostID: undefined }), { code: 'MUXWIRE_ERR_BAD_CERTIFICATE' });
  assert.throws(() => parsePairRecord({ ...record, RootCertificate: 5 }), { code: 'MUXWIRE_ERR_BAD_CERTIFICATE' });
});
