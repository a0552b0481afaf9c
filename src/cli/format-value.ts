/**
 * Human output of plist values, as ideviceinfo prints them: `Key: value` lines, nested containers
 * indented, data as base64, booleans as true/false.
 */
import type { PlistValue } from '../protocol/plist.js';
import { PlistReal, PlistUID } from '../protocol/plist.js';

export function formatPlistValue(value: PlistValue | undefined, key?: string): string {
  if (value === undefined) return '';
  if (isDict(value)) return lines(value, 0).join('\n') + '\n';
  return (key ? scalar(value) : scalar(value)) + '\n';
}

function isDict(v: PlistValue): v is { [k: string]: PlistValue } {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !Buffer.isBuffer(v) && !(v instanceof Date) && !(v instanceof PlistUID) && !(v instanceof PlistReal);
}

function lines(dict: { [k: string]: PlistValue | undefined }, depth: number): string[] {
  const pad = ' '.repeat(depth * 2);
  const out: string[] = [];
  for (const [k, v] of Object.entries(dict)) {
    if (v === undefined) continue;
    if (isDict(v)) out.push(`${pad}${k}:`, ...lines(v, depth + 1));
    else if (Array.isArray(v)) {
      out.push(`${pad}${k}[${v.length}]:`);
      for (const item of v) {
        if (isDict(item)) out.push(...lines(item, depth + 1));
        else out.push(`${pad}  ${scalar(item)}`);
      }
    } else out.push(`${pad}${k}: ${scalar(v)}`);
  }
  return out;
}

function scalar(v: PlistValue): string {
  if (Buffer.isBuffer(v)) return v.toString('base64');
  if (v instanceof Date) return v.toISOString();
  if (v instanceof PlistUID) return `UID(${v.value})`;
  if (v instanceof PlistReal) return String(v.value);
  if (Array.isArray(v)) return v.map(scalar).join(', ');
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}
