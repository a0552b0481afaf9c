/**
 * A client process for access-policy tests, run as another user: argv[2] is the daemon's socket,
 * argv[3] a UDID with a stored record, argv[4] a device id. It prints one JSON object: the Result
 * number (or reply keys) of each request, and whether the echo port answered through Connect.
 */
import { RawClient } from './raw-client.js';
import { encodeXmlPlist } from '../../../src/protocol/plist.js';
import { encodePortNumber } from '../../../src/protocol/client-plist.js';
import type { PlistDict } from '../../../src/protocol/plist.js';

const [socketPath, udid, deviceIdText] = process.argv.slice(2) as [string, string, string];
const answer = (reply: PlistDict): number | string => (typeof reply.Number === 'number' ? reply.Number : Object.keys(reply).sort().join(','));
const out: Record<string, unknown> = { uid: process.getuid?.() };
const c = await RawClient.open(socketPath);
out.read = answer(await c.request('ReadPairRecord', { PairRecordID: udid }));
out.save = answer(await c.request('SavePairRecord', { PairRecordID: udid, PairRecordData: encodeXmlPlist({ HostID: 'EVIL' }) }));
out.delete = answer(await c.request('DeletePairRecord', { PairRecordID: udid }));
out.list = ((await c.request('ListDevices')).DeviceList as unknown[]).length;
out.buid = answer(await c.request('ReadBUID'));
out.connect = answer(await c.request('Connect', { DeviceID: Number(deviceIdText), PortNumber: encodePortNumber(7) }));
c.startTunnel();
c.write(Buffer.from('ping'));
out.echo = (await c.readTunnel(4)).toString();
c.close();
process.stdout.write(JSON.stringify(out) + '\n');
