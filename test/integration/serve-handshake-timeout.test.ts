/**
 * fdpass serve, TLS clients that never finish their handshake: one that
 * connects to a tls listener and sends nothing, and one that stops halfway
 * through a real ClientHello, are closed by the worker once
 * `--handshake-timeout` has passed (absolute from adoption: trickled bytes
 * do not extend it), both when the worker does the handshake for a plain
 * server and when the app's own tls.Server (https.Server, whose 120 s
 * default would apply otherwise) does it. The worker's fds and live count
 * return to their baseline; a TLS connection past its handshake and a
 * plain HTTP connection are not affected (Node's header timeouts are their
 * own), and a normal https request still works.
 * A bad `--handshake-timeout` is a one-line usage error.
 */
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { Duplex } from 'node:stream';
import { test, type TestContext } from 'node:test';
import { UnixSocket } from '../../src';
import { Worker, type WorkerConfig } from '../../src/serve/worker';
import { trackFds } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { APPS, DEV_CERT, DEV_KEY } from '../helpers/paths';
import { startServe, runServe, type ServeListener } from '../helpers/serve';
import { request, HttpConnection } from '../helpers/http';
import { waitFor } from '../helpers/wait';

const TIMEOUT = 300;
/** How long a test waits for the close: without a deadline, it never comes. */
const BOUND = 2000;

/** A real ClientHello: what Node's TLS client writes first, captured from a
 * stream that goes nowhere. */
function clientHello(): Promise<Buffer> {
  return new Promise((resolve) => {
    let client: tls.TLSSocket | undefined;
    const sink = new Duplex({
      read() {},
      write(chunk: Buffer, _enc, cb) {
        resolve(chunk);
        cb();
        setImmediate(() => client?.destroy());
      },
    });
    client = tls.connect({ socket: sink, servername: 'localhost' });
    client.on('error', () => {});
  });
}

/** A TCP connection to a tls listener, closed when the test is done with it. */
async function rawClient(l: ServeListener, firstBytes?: Buffer): Promise<{ conn: HttpConnection; connectedAt: number; closed: Promise<{ byPeer: boolean; ms: number }> }> {
  const conn = new HttpConnection({ ...l, tls: false });
  await conn.ready;
  const connectedAt = Date.now();
  if (firstBytes) conn.socket.write(firstBytes);
  const closed = conn.closedByPeer.then((byPeer) => ({ byPeer, ms: Date.now() - connectedAt }));
  return { conn, connectedAt, closed };
}

/** The silent and the half-ClientHello client are both closed by the server
 * after TIMEOUT ms and within BOUND; fds back to `tree`; https still works. */
async function expectHandshakesTimedOut(l: ServeListener, plain?: ServeListener): Promise<void> {
  const hello = await clientHello();
  assert.equal(hello[0], 0x16, 'a TLS handshake record');
  // A client that completed its handshake is not bound by the deadline.
  const kept = await HttpConnection.open(l);
  await kept.get('/before');
  const silent = await rawClient(l);
  const partial = await rawClient(l, hello.subarray(0, Math.floor(hello.length / 2)));
  // A plain HTTP connection that sends nothing either: Node's header timeout
  // is its business, not the handshake deadline's.
  const idleHttp = plain && await HttpConnection.open(plain);
  try {
    const outcome: Record<string, { byPeer: boolean; ms: number }> = {};
    void silent.closed.then((r) => (outcome.silent = r));
    void partial.closed.then((r) => (outcome.partial = r));
    await waitFor(() => outcome.silent && outcome.partial, {
      timeout: BOUND, what: `the silent and the half-handshake TLS clients closed by the server (--handshake-timeout ${TIMEOUT})`,
      detail: () => `closed so far: ${JSON.stringify(outcome)}`,
    });
    for (const [name, r] of Object.entries(outcome)) {
      assert.equal(r.byPeer, true, `${name}: closed by the server`);
      assert.ok(r.ms >= TIMEOUT - 20, `${name}: closed after ${r.ms} ms, not before the ${TIMEOUT} ms deadline`);
    }
    if (idleHttp) assert.equal(idleHttp.socket.destroyed, false, 'the idle plain HTTP connection is still open');
    const again = await kept.get('/after');
    assert.equal(again.body.tls, true, 'a TLS connection past its handshake outlives the deadline');
  } finally {
    await kept.close();
    await silent.conn.close();
    await partial.conn.close();
    await idleHttp?.close();
  }
  const r = await request(l);
  assert.equal(r.status, 200);
  assert.equal(r.body.tls, true);
}

/** `fdpass serve` with a tls listener (and, for the demo app, a plain one),
 * one worker and a TIMEOUT ms handshake deadline: the stuck clients are
 * closed and the fd tables are back to their baseline; it stops with 0. */
async function expectDeadline(t: TestContext, app?: string): Promise<void> {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const listeners = ['--listen', '127.0.0.1:0,tls', ...(app ? [] : ['--listen', '127.0.0.1:0'])];
  const s = await startServe([...listeners, '--cert', DEV_CERT, '--key', DEV_KEY, '--workers', '1',
    '--handshake-timeout', String(TIMEOUT), '--control', path.join(dir, 'control.sock'), ...(app ? [app] : [])], { owner: scope });
  for (const l of s.listeners) await request(l);
  const tree = await s.idleFds();
  await expectHandshakesTimedOut(s.listener('https'), app ? undefined : s.listener('http'));
  await s.expectNoFdLeak(tree);
  const result = await s.stop();
  assert.equal(result.code, 0, result.stderr);
}

test('--handshake-timeout: silent and half-handshake TLS clients are closed when the worker does the handshake', (t) => expectDeadline(t));

test('--handshake-timeout: the same when the app\'s own https.Server does the handshake', (t) => expectDeadline(t, path.join(APPS, 'https-server.js')));

test('--handshake-timeout must be a whole number of ms: a one-line usage error', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  for (const bad of ['0', 'soon', '1.5']) {
    const r = await runServe(['--listen', '127.0.0.1:0', '--handshake-timeout', bad, '--control', path.join(dir, 'control.sock')]);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr.split('\n')[0], `fdpass: --handshake-timeout must be milliseconds (1 to 2147483647), not '${bad}': EUSAGE`);
    assert.deepEqual(r.events, [], 'nothing started');
  }
  // In the library, a worker refuses to become ready with one.
  const [mine, primary] = UnixSocket.pair({ type: 'seqpacket' });
  scope.defer(() => {
    mine.close();
    primary.close();
  });
  const config: WorkerConfig = {
    primaryPid: process.pid, slot: 0, generation: 1, handshakeTimeout: 0,
    listeners: [{ index: 0, name: 'main', tls: true, kind: 'tcp', address: '127.0.0.1:1' }],
  };
  const worker = new Worker(mine, config).serve({ '*': () => {} });
  assert.throws(() => worker.ready(), { name: 'RangeError', message: /handshakeTimeout must be a whole number of ms from 1 to 2147483647, got 0/ });
});
