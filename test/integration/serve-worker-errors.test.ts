/**
 * The worker side of `fdpass serve` reports its failures as library errors
 * with stable codes: ServeConfigError for a configuration that cannot work,
 * ProtocolError ('bad-worker-message') for what the primary sent that does
 * not decode, whose fds are closed and reported LOST.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { UnixSocket, ProtocolError } from '../../src';
import { Worker, WORKER_ENV, type WorkerConfig } from '../../src/serve/worker';
import { decodeWorkerMessage, encodeConns, Op } from '../../src/serve/protocol';
import { openFds } from '../helpers/fds';
import { trackFds } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { nextEvent } from '../helpers/wait';

function workerOver(tls: boolean) {
  const [mine, primary] = UnixSocket.pair({ type: 'seqpacket' });
  const config: WorkerConfig = {
    primaryPid: process.pid, slot: 0, generation: 1,
    listeners: [{ index: 0, name: 'main', tls, kind: 'tcp', address: '127.0.0.1:1' }],
  };
  // The worker's end is closed first: EOF from the primary would drain it,
  // and a drained worker exits.
  const close = () => {
    mine.close();
    primary.close();
  };
  return { worker: new Worker(mine, config), primary, close };
}

test('Worker.fromPrimary() outside a worker, ready() without a server: ServeConfigError', async (t) => {
  const scope = await trackFds(t);
  const saved = process.env[WORKER_ENV];
  delete process.env[WORKER_ENV];
  scope.defer(() => {
    if (saved !== undefined) process.env[WORKER_ENV] = saved;
  });
  assert.throws(() => Worker.fromPrimary(), { name: 'ServeConfigError', code: 'FDPASS_ERR_NOT_A_WORKER', message: /not started by fdpass serve/ });
  const { worker, close } = workerOver(false);
  scope.defer(close);
  assert.throws(() => worker.ready(), { name: 'ServeConfigError', code: 'FDPASS_ERR_NO_SERVER', message: /no server for listener 'main'/ });
});

test('a malformed message from the primary: ProtocolError, its fds closed, the batch reported LOST', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const file = path.join(dir, 'conn');
  const fd = fs.openSync(file, 'w');
  scope.defer(() => fs.closeSync(fd));
  const { worker, primary, close } = workerOver(false);
  scope.defer(close);
  const error = nextEvent<[Error]>(worker, 'error');
  // CONNS claiming 2 connections in 4 bytes, with one fd.
  await primary.send({ data: Buffer.from([Op.Conns, 0, 2, 0]), fds: [fd] });
  const [e] = await error;
  assert.ok(e instanceof ProtocolError);
  assert.deepEqual([e.reason, e.code], ['bad-worker-message', 'FDPASS_ERR_PROTOCOL']);
  assert.match(e.message, /bad message from the primary: CONNS of 2 in 4 bytes/);
  const lost = await primary.receive({ timeout: 5000 });
  assert.deepEqual(decodeWorkerMessage(lost.data), { op: Op.Lost, batch: 1 });
  lost.close();
  assert.equal([...openFds().values()].filter((target) => target === file).length, 1, 'only our own copy is left');
});

test('a tls listener and no certificate: the connection is closed with ServeConfigError FDPASS_ERR_NO_CERT', async (t) => {
  const scope = await trackFds(t);
  const { worker, primary, close } = workerOver(true);
  scope.defer(close);
  worker.serve({ main: () => assert.fail('a connection without TLS reached the app') });
  const [conn, client] = UnixSocket.pair({ type: 'stream', raw: true });
  scope.defer(() => client.close());
  const error = nextEvent<[Error & { code?: string }]>(worker, 'error');
  client.on('message', (m) => m.close());
  const clientEnd = nextEvent(client, 'end');
  await primary.send({ data: encodeConns([5], [0], 1), fds: [conn.fd] });
  conn.close(); // the worker has its own copy
  const [e] = await error;
  assert.equal(e.name, 'ServeConfigError');
  assert.equal(e.code, 'FDPASS_ERR_NO_CERT');
  assert.match(e.message, /listener 127\.0\.0\.1:1 is tls but no --cert\/--key was given/);
  const ack = await primary.receive({ timeout: 5000 });
  assert.deepEqual(decodeWorkerMessage(ack.data), { op: Op.Ack, live: 1, closed: 0, ids: Uint32Array.from([5]) });
  ack.close();
  await clientEnd; // the worker closed the connection
});
