/**
 * The pair record: the plist dict a host keeps per device after pairing (lockdown-afc.md §4.3), in
 * the shape libimobiledevice, usbmuxd, pymobiledevice3 and go-ios read. PEM texts are plist
 * `<data>` (Buffers), never strings; HostID and SystemBUID are upper-case UUID-shaped strings.
 *
 * | Key               | Type   | Content                                 |
 * |-------------------|--------|-----------------------------------------|
 * | DeviceCertificate | data   | PEM                                     |
 * | HostCertificate   | data   | PEM                                     |
 * | HostPrivateKey    | data   | PEM                                     |
 * | RootCertificate   | data   | PEM                                     |
 * | RootPrivateKey    | data   | PEM                                     |
 * | HostID            | string | upper-case UUID                         |
 * | SystemBUID        | string | usbmuxd's SystemBUID                    |
 * | WiFiMACAddress    | string | the device's WiFiAddress                |
 * | EscrowBag         | data   | only when Pair returned one             |
 */
import { randomUUID } from 'node:crypto';
import type { PlistDict, PlistValue } from '../protocol/plist.js';
import { MuxwireError } from '../errors.js';
import { ERR_BAD_CERTIFICATE, type PairCertificates } from './certificates.js';

/** A pair record with its fields read and type-checked. */
export interface PairRecord {
  hostId: string;
  systemBUID?: string;
  rootCertificate: Buffer;
  rootPrivateKey?: Buffer;
  hostCertificate: Buffer;
  hostPrivateKey?: Buffer;
  deviceCertificate: Buffer;
  wifiMacAddress?: string;
  escrowBag?: Buffer;
}

/** A fresh HostID: an upper-case random UUID (libimobiledevice `generate_uuid`, go-ios). */
export function newHostId(): string {
  return randomUUID().toUpperCase();
}

/** Builds the full host-side record dict from freshly generated certificates. */
export function buildPairRecord(fields: {
  certificates: PairCertificates;
  hostId: string;
  systemBUID: string;
  wifiMacAddress?: string;
  escrowBag?: Buffer;
}): PlistDict {
  const c = fields.certificates;
  return {
    DeviceCertificate: Buffer.from(c.deviceCertificatePem, 'utf8'),
    HostCertificate: Buffer.from(c.hostCertificatePem, 'utf8'),
    HostPrivateKey: Buffer.from(c.hostPrivateKeyPem, 'utf8'),
    RootCertificate: Buffer.from(c.rootCertificatePem, 'utf8'),
    RootPrivateKey: Buffer.from(c.rootPrivateKeyPem, 'utf8'),
    HostID: fields.hostId,
    SystemBUID: fields.systemBUID,
    WiFiMACAddress: fields.wifiMacAddress,
    EscrowBag: fields.escrowBag,
  };
}

/**
 * The record as it travels in Pair, ValidatePair and Unpair: the stored record without the two
 * private keys (libimobiledevice `lockdownd_do_pair` strips RootPrivateKey and HostPrivateKey), and
 * without the host-only EscrowBag and WiFiMACAddress.
 */
export function pairRecordForRequest(record: PlistDict): PlistDict {
  const out: PlistDict = {};
  for (const key of ['DeviceCertificate', 'HostCertificate', 'HostID', 'RootCertificate', 'SystemBUID']) {
    if (record[key] !== undefined) out[key] = record[key];
  }
  return out;
}

/** PEM stored as data; a string is tolerated because some hand-written records use one. */
function pemField(dict: PlistDict, key: string, required: true): Buffer;
function pemField(dict: PlistDict, key: string, required: false): Buffer | undefined;
function pemField(dict: PlistDict, key: string, required: boolean): Buffer | undefined {
  const v: PlistValue | undefined = dict[key];
  if (v === undefined) {
    if (required) throw new MuxwireError(ERR_BAD_CERTIFICATE, `pair record has no ${key}`);
    return undefined;
  }
  if (Buffer.isBuffer(v)) return v;
  if (typeof v === 'string') return Buffer.from(v, 'utf8');
  throw new MuxwireError(ERR_BAD_CERTIFICATE, `pair record ${key} is not data`);
}

function stringField(dict: PlistDict, key: string): string | undefined {
  const v = dict[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new MuxwireError(ERR_BAD_CERTIFICATE, `pair record ${key} is not a string`);
  return v;
}

/**
 * Reads a stored record dict into typed fields. Throws MUXWIRE_ERR_BAD_CERTIFICATE when HostID or
 * one of the three certificates is missing or of the wrong type.
 */
export function parsePairRecord(dict: PlistDict): PairRecord {
  const hostId = stringField(dict, 'HostID');
  if (hostId === undefined || hostId === '') throw new MuxwireError(ERR_BAD_CERTIFICATE, 'pair record has no HostID');
  return {
    hostId,
    systemBUID: stringField(dict, 'SystemBUID'),
    rootCertificate: pemField(dict, 'RootCertificate', true),
    rootPrivateKey: pemField(dict, 'RootPrivateKey', false),
    hostCertificate: pemField(dict, 'HostCertificate', true),
    hostPrivateKey: pemField(dict, 'HostPrivateKey', false),
    deviceCertificate: pemField(dict, 'DeviceCertificate', true),
    wifiMacAddress: stringField(dict, 'WiFiMACAddress'),
    escrowBag: Buffer.isBuffer(dict.EscrowBag) ? dict.EscrowBag : undefined,
  };
}

/**
 * Where a host keeps pair records and its SystemBUID: usbmuxd (ReadBUID, ReadPairRecord,
 * SavePairRecord), our daemon's pair directory, or a plain directory in embedded mode.
 */
export interface PairRecordStore {
  /** The host's SystemBUID (usbmuxd ReadBUID). */
  readBUID(): Promise<string>;
  /** The stored record for a device, or undefined when there is none. */
  readPairRecord(udid: string): Promise<PlistDict | undefined>;
  /** Stores a record; `deviceId` lets a daemon announce the device as Paired. */
  savePairRecord(udid: string, record: PlistDict, deviceId?: number): Promise<void>;
}
