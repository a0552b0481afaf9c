/**
 * The dictionaries AFC answers GET_FILE_INFO and GET_DEVINFO with (lockdown-afc.md §9.7), turned into
 * typed objects. Both arrive as `key\0value\0…` text; times are nanoseconds since the epoch.
 */
import { MuxwireError } from '../../errors.js';
import { AFC_ERROR } from './afc-error.js';

/** File types as `st_ifmt` names them. */
export type AfcFileType = 'file' | 'directory' | 'symlink' | 'block-device' | 'char-device' | 'fifo' | 'socket' | 'unknown';

const TYPES: Record<string, AfcFileType> = {
  S_IFREG: 'file',
  S_IFDIR: 'directory',
  S_IFLNK: 'symlink',
  S_IFBLK: 'block-device',
  S_IFCHR: 'char-device',
  S_IFIFO: 'fifo',
  S_IFSOCK: 'socket',
};

/** GET_FILE_INFO, parsed. */
export interface AfcFileInfo {
  /** Bytes (for a symlink: the length of its target). */
  readonly size: number;
  /** 512-byte blocks allocated. */
  readonly blocks: number;
  readonly nlink: number;
  readonly type: AfcFileType;
  /** `st_ifmt` as sent, e.g. `S_IFREG`. */
  readonly ifmt: string;
  readonly mtimeNs: bigint;
  readonly birthtimeNs: bigint;
  readonly mtime: Date;
  readonly birthtime: Date;
  /** Where a symlink points (`LinkTarget`). */
  readonly linkTarget?: string;
  /** Every key as the device sent it. */
  readonly raw: Readonly<Record<string, string>>;
}

/** GET_DEVINFO, parsed. */
export interface AfcDeviceInfo {
  /** ProductType, e.g. `iPhone12,8`. */
  readonly model: string;
  readonly totalBytes: number;
  readonly freeBytes: number;
  readonly blockSize: number;
  readonly raw: Readonly<Record<string, string>>;
}

function integer(raw: Record<string, string>, key: string, what: string): number {
  const text = raw[key];
  if (text === undefined || !/^\d+$/.test(text)) {
    throw new MuxwireError(AFC_ERROR, `${what}: ${key} is ${text === undefined ? 'missing' : `not an integer (${text})`}`);
  }
  return Number(text);
}

function nanoseconds(raw: Record<string, string>, key: string): bigint {
  const text = raw[key];
  return text !== undefined && /^\d+$/.test(text) ? BigInt(text) : 0n;
}

/** Parses a GET_FILE_INFO dictionary. `st_size` and `st_ifmt` must be present. */
export function parseFileInfo(raw: Record<string, string>): AfcFileInfo {
  const ifmt = raw.st_ifmt;
  if (ifmt === undefined) throw new MuxwireError(AFC_ERROR, 'GET_FILE_INFO: st_ifmt is missing');
  const mtimeNs = nanoseconds(raw, 'st_mtime');
  const birthtimeNs = nanoseconds(raw, 'st_birthtime');
  const info: AfcFileInfo = {
    size: integer(raw, 'st_size', 'GET_FILE_INFO'),
    blocks: raw.st_blocks !== undefined ? integer(raw, 'st_blocks', 'GET_FILE_INFO') : 0,
    nlink: raw.st_nlink !== undefined ? integer(raw, 'st_nlink', 'GET_FILE_INFO') : 1,
    type: TYPES[ifmt] ?? 'unknown',
    ifmt,
    mtimeNs,
    birthtimeNs,
    mtime: new Date(Number(mtimeNs / 1_000_000n)),
    birthtime: new Date(Number(birthtimeNs / 1_000_000n)),
    raw,
  };
  return raw.LinkTarget !== undefined ? { ...info, linkTarget: raw.LinkTarget } : info;
}

/** Parses a GET_DEVINFO dictionary; the three FS values must be integers (GOIOS insists too). */
export function parseDeviceInfo(raw: Record<string, string>): AfcDeviceInfo {
  return {
    model: raw.Model ?? '',
    totalBytes: integer(raw, 'FSTotalBytes', 'GET_DEVINFO'),
    freeBytes: integer(raw, 'FSFreeBytes', 'GET_DEVINFO'),
    blockSize: integer(raw, 'FSBlockSize', 'GET_DEVINFO'),
    raw,
  };
}
