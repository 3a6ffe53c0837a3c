/**
 * Channel: typed request/response with fds, between a parent and its child
 * (Channel.spawn / fromParent) and between unrelated processes (a server path).
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { Channel, UnixServer, UnixSocket, encodeChannel, decodeChannel, type ChannelMessage } from '../../src';
import { Kind } from '../../src/channel/codec';
import { trackFds } from '../helpers/scope';
import { tmpDir, fileId } from '../helpers/files';
import { FIXTURES } from '../helpers/paths';
import { Child, childEnv } from '../helpers/process';
import { nextEvent, within } from '../helpers/wait';

const PEER = path.join(FIXTURES, 'channel-peer.js');

function spawnPeer() {
  const { child, channel } = Channel.spawn(process.execPath, [PEER, 'child'], { stdio: ['ignore', 'inherit', 'inherit'], env: childEnv() });
  const exited = nextEvent(child, 'exit', { timeout: 20_000 });
  return { child, channel, exited };
}

test('parent and child: request with an fd, reply with an fd, both by identity', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const { child, channel, exited } = spawnPeer();
  scope.defer(async () => {
    channel.close();
    await exited;
  });

  // The child writes through an fd we send it.
  const file = path.join(dir, 'w.txt');
  const fd = fs.openSync(file, 'w');
  const r1 = await channel.request<{ wrote: number; pid: number }>('write', { text: 'via channel\n' }, { fds: [fd] });
  fs.closeSync(fd);
  r1.message.close();
  assert.equal(r1.payload.pid, child.pid);
  assert.equal(fs.readFileSync(file, 'utf8'), 'via channel\n');

  // The child opens a file and answers with its fd: same file here.
  const src = path.join(dir, 'r.txt');
  fs.writeFileSync(src, 'from the child');
  const r2: ChannelMessage<{ pid: number }> = await channel.request('open', { file: src });
  assert.equal(r2.fds.length, 1);
  assert.equal(fileId(r2.fds[0]!.fd), fileId(src));
  r2.message.close();

  // The child holds no fd it was given or opened ('transfer' closed its copy).
  const before = (await channel.request<number>('fds')).payload;
  for (let i = 0; i < 20; i++) (await channel.request('open', { file: src })).message.close();
  const after = (await channel.request<number>('fds')).payload;
  assert.equal(after, before);
});

test('errors: remote exception, no handler, timeout, abort, peer death', async (t) => {
  const scope = await trackFds(t);
  const { child, channel, exited } = spawnPeer();
  scope.defer(async () => {
    channel.close();
    await exited;
  });
  await assert.rejects(channel.request('fail'), { code: 'FDPASS_ERR_REMOTE', remoteCode: 'ENOTHING', message: /no such thing/ });
  await assert.rejects(channel.request('nope'), { code: 'FDPASS_ERR_REMOTE', remoteCode: 'FDPASS_ERR_NO_HANDLER' });
  await assert.rejects(channel.request('slow', undefined, { timeout: 50 }), { code: 'FDPASS_ERR_TIMEOUT' });
  const ac = new AbortController();
  const p = channel.request('slow', undefined, { signal: ac.signal });
  ac.abort();
  await assert.rejects(p, { name: 'AbortError', code: 'ABORT_ERR' });
  // Still usable after all that.
  assert.equal(typeof (await channel.request<number>('fds')).payload, 'number');
  // A pending request fails when the peer dies.
  const pending = channel.request('slow');
  child.kill('SIGKILL');
  await assert.rejects(pending, { code: 'FDPASS_ERR_SOCKET_CLOSED' });
});

test('unrelated processes: a channel over a named stream socket', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const sock = path.join(dir, 'ch.sock');
  const server = await UnixServer.listen(sock);
  scope.defer(() => server.close());
  const child = new Child([process.execPath, PEER, 'connect', sock], { env: process.env });
  const exited = child.exited;
  const conn = await server.accept({ timeout: 10_000 });
  const channel = new Channel(conn);
  scope.defer(async () => {
    channel.close();
    await exited;
  });
  assert.equal(conn.peerCredentials().pid, child.pid);
  const src = path.join(dir, 'x.txt');
  fs.writeFileSync(src, 'x');
  const r = await channel.request('open', { file: src });
  assert.equal(fileId(r.fds[0]!.fd), fileId(src));
  r.message.close();
  await channel.request('exit');
  await exited;
});

test('a peer sending garbage on a channel: protocol error, channel closed', async (t) => {
  const scope = await trackFds(t);
  const [a, b] = Channel.pair();
  scope.defer(() => a.close());
  const err = nextEvent(b, 'error');
  let closed = false;
  b.on('close', () => (closed = true));
  await a.socket.send({ data: 'not a channel message', fds: [0] });
  const [e] = await err;
  assert.equal((e as { code: string }).code, 'FDPASS_ERR_PROTOCOL');
  assert.match((e as Error).message, /channel version|shorter/);
  assert.equal(closed, true);
  assert.equal(b.socket.closed, true);
});

test('a hostile peer cannot crash a channel: odd error-reply bodies, throwing post handlers, non-UTF-8 types', async (t) => {
  const scope = await trackFds(t);
  const [mine, peer] = UnixSocket.pair({ type: 'seqpacket' });
  const ch = new Channel(mine);
  scope.defer(() => ch.close());
  scope.defer(() => peer.close());
  const errors: Error[] = [];
  ch.on('error', (e: Error) => errors.push(e));
  ch.handle('boom', () => {
    throw Object.assign(new Error('handler failed'), { code: 'EBOOM' });
  });

  // Error replies whose message and code are not strings (a template string
  // of { toString: 1 } throws): the request fails with a plain RemoteError.
  const bodies = [{ message: { toString: 1 }, code: { x: 1 } }, 42, null, ['x'], 'text'];
  for (const body of bodies) {
    const pending = ch.request('q');
    const req = decodeChannel((await peer.receive({ timeout: 5000 })).data);
    await peer.send(encodeChannel(Kind.ErrorReply, req.id, 'q', body));
    await assert.rejects(pending, (e: Error & { code: string; remoteCode?: string }) =>
      e.code === 'FDPASS_ERR_REMOTE' && e.remoteCode === undefined && /failed in the peer: unknown error$/.test(e.message));
  }

  // A post whose handler throws: reported on the channel, which carries on.
  await peer.send(encodeChannel(Kind.Post, 0, 'boom', {}));
  const r = ch.request('still-there');
  const req = decodeChannel((await peer.receive({ timeout: 5000 })).data);
  await peer.send(encodeChannel(Kind.Reply, req.id, 'still-there', 'yes'));
  assert.equal((await r).payload, 'yes');
  assert.deepEqual(errors.map((e) => (e as Error & { code: string }).code), ['EBOOM']);

  // A handler that throws something String() cannot print: still an error reply.
  ch.handle('weird', () => {
    throw Object.create(null);
  });
  await peer.send(encodeChannel(Kind.Request, 7, 'weird', {}));
  const reply = decodeChannel((await peer.receive({ timeout: 5000 })).data);
  assert.deepEqual([reply.kind, reply.id, reply.body], [Kind.ErrorReply, 7, { message: '[object Object]' }]);

  // A type that is not UTF-8 is a protocol error (its reply could not echo it).
  const bad = encodeChannel(Kind.Request, 9, 'ab', {});
  bad[8] = 0xff;
  const closed = within(new Promise<void>((res) => ch.once('close', () => res())), 10_000, "the channel's 'close'");
  await peer.send(bad);
  await closed;
  assert.match(errors.at(-1)!.message, /bad channel message: type is not valid UTF-8/);
  assert.equal((errors.at(-1) as Error & { code: string }).code, 'FDPASS_ERR_PROTOCOL');
});
