/**
 * The control server in this process, in front of a fake primary, for what
 * takes too long or is too hard to see against a real `fdpass serve`:
 * - a connection idle for idleTimeout is closed: one that sends nothing,
 *   and one that sent requests but never reads the answers;
 * - concurrent status requests share one worker query;
 * - an unknown request type gets an error reply (FDPASS_ERR_NO_HANDLER),
 *   the connection stays; a message that is not a request ends it.
 */
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { Channel, RemoteError, UnixSocket } from '../../src';
import { encodeChannel, Kind } from '../../src/channel/codec';
import { startControl, type ControlTarget } from '../../src/serve/control';
import type { Status } from '../../src/serve/status';
import { trackFds, type Scope } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { sleep } from '../helpers/wait';

/** A primary that answers status after `delayMs`, counting the queries. */
function fakePrimary(delayMs = 0): ControlTarget & { queries: number; events: string[] } {
  const target = {
    queries: 0,
    events: [] as string[],
    async freshStatus(): Promise<Status> {
      target.queries++;
      await sleep(delayMs);
      return { primary: { pid: process.pid }, workers: [] } as unknown as Status;
    },
    async reload(): Promise<void> {},
    async upgrade(): Promise<number> {
      return 0;
    },
    log: (event: string) => {
      target.events.push(event);
    },
    withSpareFds: <T>(fn: () => T): T => fn(),
    fdsClosed: () => {},
  };
  return target;
}

async function listen(scope: Scope, target: ControlTarget, options: { idleTimeout?: number } = {}): Promise<string> {
  const file = path.join(tmpDir(scope), 'control.sock');
  const control = await startControl(target, file, options);
  scope.defer(() => control.close());
  return file;
}

test('control: a connection idle for idleTimeout is closed, whether it sends nothing or sent requests and never reads the answers', async (t) => {
  const scope = await trackFds(t);
  const IDLE = 300;
  const file = await listen(scope, fakePrimary(), { idleTimeout: IDLE });

  const silent = await UnixSocket.connect(file, { type: 'seqpacket' });
  scope.defer(() => silent.close());
  const t0 = Date.now();
  await assert.rejects(silent.receive({ timeout: 5000 }), { code: 'FDPASS_ERR_SOCKET_CLOSED' });
  const silentMs = Date.now() - t0;
  assert.ok(silentMs >= IDLE - 50 && silentMs < IDLE + 2000, `closed after ${silentMs} ms`);

  const deaf = await UnixSocket.connect(file, { type: 'seqpacket' });
  scope.defer(() => deaf.close());
  const sends: Promise<void>[] = [];
  for (let id = 1; id <= 2000; id++) sends.push(deaf.send(encodeChannel(Kind.Request, id, 'status', undefined)).catch(() => {}));
  await sleep(100);
  assert.ok(deaf.pendingSends > 0, 'the server stopped reading requests whose answers are not read');
  const t1 = Date.now();
  // Wait for the close without reading: the next send fails once the peer is gone.
  for (;;) {
    const r = await deaf.send(encodeChannel(Kind.Request, 9999, 'status', undefined)).then(() => null, (err: Error) => err);
    if (r) break;
    if (Date.now() - t1 > 5000) assert.fail('the deaf connection was not closed');
    await sleep(20);
  }
  const deafMs = Date.now() - t1;
  await Promise.all(sends);
  t.diagnostic(`silent connection closed after ${silentMs} ms; the deaf one (paused, its sends blocked) ${deafMs} ms after the test saw it paused (idleTimeout ${IDLE})`);
});

test('control: concurrent status requests share one worker query; an unknown type is an error reply; a non-request ends the connection', async (t) => {
  const scope = await trackFds(t);
  const target = fakePrimary(100);
  const file = await listen(scope, target);
  const channels = await Promise.all(Array.from({ length: 8 }, () => Channel.connect(file, { type: 'seqpacket' })));
  scope.defer(() => channels.forEach((c) => c.close()));
  const replies = await Promise.all(channels.map((c) => c.request<Status>('status')));
  for (const r of replies) {
    assert.equal(r.payload.primary.pid, process.pid);
    r.message.close();
  }
  assert.equal(target.queries, 1, `${target.queries} worker queries for 8 concurrent status requests`);
  // The next one, after the first settled, asks again.
  (await channels[0]!.request('status')).message.close();
  assert.equal(target.queries, 2);

  const err = await channels[1]!.request('frobnicate').then(() => null, (e: unknown) => e);
  assert.ok(err instanceof RemoteError);
  assert.equal(err.remoteCode, 'FDPASS_ERR_NO_HANDLER');
  (await channels[1]!.request('status')).message.close(); // still served

  const raw = await UnixSocket.connect(file, { type: 'seqpacket' });
  scope.defer(() => raw.close());
  await raw.send(encodeChannel(Kind.Post, 0, 'status', undefined));
  await assert.rejects(raw.receive({ timeout: 5000 }), { code: 'FDPASS_ERR_SOCKET_CLOSED' }, 'a post is not the control protocol: closed');
});
