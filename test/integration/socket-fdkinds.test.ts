/**
 * Every kind of fd the issue names goes in (number, net.Socket, net.Server,
 * dgram.Socket, fs.promises.FileHandle, a received Fd) and comes out
 * adoptable in one call (net.Socket, fs streams, a raw number), each proven
 * by identity or by data going through it.
 */
import * as assert from 'node:assert/strict';
import * as dgram from 'node:dgram';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { test } from 'node:test';
import { UnixSocket, Fd } from '../../src';
import { trackFds } from '../helpers/scope';
import { tmpDir, fileId } from '../helpers/files';
import { nextEvent } from '../helpers/wait';

async function roundTrip(scope: { defer(fn: () => unknown): void }, fds: Parameters<UnixSocket['send']>[0] extends infer M ? M extends { fds?: infer F } ? F : never : never) {
  const [a, b] = UnixSocket.pair({ type: 'seqpacket' });
  scope.defer(() => a.close());
  scope.defer(() => b.close());
  await a.send({ data: 'x', fds });
  const m = await b.receive({ timeout: 10_000 });
  scope.defer(() => m.close());
  return m;
}

test('a net.Socket goes over and comes out as a net.Socket on the same TCP connection', async (t) => {
  const scope = await trackFds(t);
  const server = net.createServer();
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  scope.defer(() => new Promise((res) => server.close(res)));
  const accepted = nextEvent(server, 'connection');
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  await nextEvent(client, 'connect');
  const [peer] = (await accepted) as [net.Socket];
  scope.defer(() => peer.destroy());

  const m = await roundTrip(scope, [client]);
  assert.equal(fileId(m.fds[0]!.fd), fileId(fdOf(client)));
  client.destroy(); // ours goes; the received copy still holds the connection
  const adopted = m.fds[0]!.toSocket();
  assert.equal(m.fds[0]!.closed, true, 'ownership moved to the net.Socket');
  const got = nextEvent(peer, 'data');
  adopted.write('through the passed socket');
  assert.equal(String((await got)[0]), 'through the passed socket');
  adopted.destroy();
  await nextEvent(adopted, 'close');
});

test('a listening net.Server and a dgram.Socket go over as the same sockets', async (t) => {
  const scope = await trackFds(t);
  const server = net.createServer();
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  scope.defer(() => new Promise((res) => server.close(res)));
  const udp = dgram.createSocket('udp4');
  await new Promise<void>((res) => udp.bind(0, '127.0.0.1', res));
  scope.defer(() => new Promise<void>((res) => udp.close(() => res())));

  const m = await roundTrip(scope, [server, udp]);
  assert.equal(fileId(m.fds[0]!.fd), fileId(fdOf(server)));
  assert.equal(fileId(m.fds[1]!.fd), fileId(fdOf(udp)));
  assert.deepEqual(m.fds.map((f) => f.kind()), ['socket', 'socket']);
  // The received listener accepts: a second server on the same listening socket.
  const again = net.createServer((c) => c.end('from the passed listener'));
  await new Promise<void>((res) => again.listen({ fd: m.fds[0]!.release() }, res));
  server.close(); // only `again` accepts now
  const c = net.connect((again.address() as net.AddressInfo).port, '127.0.0.1');
  const [data] = await nextEvent(c, 'data');
  assert.equal(String(data), 'from the passed listener');
  c.destroy();
  await new Promise((res) => again.close(res));
});

test('a FileHandle goes over; the receiver reads it as a stream and writes through another', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const src = path.join(dir, 'src.txt');
  const dst = path.join(dir, 'dst.txt');
  fs.writeFileSync(src, 'file handle contents');
  const fh = await fs.promises.open(src, 'r');
  const out = await fs.promises.open(dst, 'w');
  const m = await roundTrip(scope, [fh, out]);
  await fh.close();
  await out.close();
  const [rfd, wfd] = m.fds;
  const chunks: Buffer[] = [];
  const rs = rfd!.toReadStream();
  for await (const c of rs) chunks.push(c as Buffer);
  assert.equal(Buffer.concat(chunks).toString(), 'file handle contents');
  const ws = wfd!.toWriteStream();
  ws.end('written through the passed fd');
  await nextEvent(ws, 'close');
  assert.equal(fs.readFileSync(dst, 'utf8'), 'written through the passed fd');
});

test('a received Fd can be sent on, released as a raw number, duplicated; closing twice is safe', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const file = path.join(dir, 'f');
  fs.writeFileSync(file, 'x');
  const fd = fs.openSync(file, 'r');
  const m1 = await roundTrip(scope, [fd]);
  fs.closeSync(fd);
  const m2 = await roundTrip(scope, [m1.fds[0]!]); // an Fd passes on as it is
  assert.equal(fileId(m2.fds[0]!.fd), fileId(file));
  const copy: Fd = m2.fds[0]!.dup();
  assert.equal(fileId(copy.fd), fileId(file));
  assert.notEqual(copy.fd, m2.fds[0]!.fd);
  copy.close();
  copy.close();
  assert.throws(() => copy.fd, { code: 'FDPASS_ERR_INVALID_FD' });
  const raw = m2.fds[0]!.release();
  assert.equal(fileId(raw), fileId(file));
  m2.close(); // does not touch the released number
  assert.equal(fileId(raw), fileId(file));
  fs.closeSync(raw);
});

function fdOf(x: object): number {
  const s = Object.getOwnPropertySymbols(x).find((k) => k.description === 'state symbol');
  const h = (s ? (x as Record<symbol, { handle?: { fd: number } }>)[s]?.handle : undefined) ?? (x as { _handle: { fd: number } })._handle;
  return h.fd;
}
