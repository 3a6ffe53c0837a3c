/**
 * UnixServer's accept side and its socket file:
 *
 * - out of fds (EMFILE), accepting backs off (10 ms doubling to 1 s) but
 *   resumes the moment this process closes a connection, not when the
 *   back-off runs out;
 * - accept({ timeout }) rejects with FDPASS_ERR_TIMEOUT and takes nothing
 *   with it;
 * - a listen or bind that fails half-way leaves no socket file and no fd.
 *
 * The EMFILE case runs in a child (this file, forked with a role argument)
 * with a low RLIMIT_NOFILE whose fd table it fills itself.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { UnixSocket, UnixServer } from '../../src';
import { K } from '../../src/native';
import { listenUnix } from '../../src/socket/bind';
import { trackFds } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { spawnNode } from '../helpers/process';

/** Accept errors after which the back-off is 1 s: 10, 20, ... 640, 1000 ms. */
const ERRORS_TO_FULL_BACKOFF = 8;

interface ResumeReport {
  errors: number;
  /** ms between the last two accept errors: how long the back-off had grown. */
  lastGapMs: number;
  /** ms from closing a connection to accepting the waiting one. */
  resumedAfterMs: number;
  codes: string[];
}

/**
 * The child: a server whose process has room for exactly one connection.
 * The parent connects twice; the second accept fails with EMFILE until the
 * back-off is at its longest, then the child closes the first connection
 * and reports how long the second took to come in.
 */
async function emfileChild(address: string): Promise<void> {
  const out = (v: unknown) => process.stdout.write(JSON.stringify(v) + '\n');
  out({ started: true }); // stdout is set up before the fd table is full
  const server = await UnixServer.listen(address);
  const conns: UnixSocket[] = [];
  const errorTimes: number[] = [];
  const codes = new Set<string>();
  let closedAt = 0;
  server.on('error', (err: NodeJS.ErrnoException) => {
    codes.add(String(err.code));
    errorTimes.push(performance.now());
    if (errorTimes.length === ERRORS_TO_FULL_BACKOFF) {
      // The back-off that just started is 1 s: free an fd right away.
      setImmediate(() => {
        closedAt = performance.now();
        conns.shift()!.close();
      });
    }
  });
  server.on('connection', (s: UnixSocket) => {
    conns.push(s);
    if (closedAt === 0) {
      out({ accepted: conns.length });
      return;
    }
    const n = errorTimes.length;
    out({
      errors: n, lastGapMs: errorTimes[n - 1]! - errorTimes[n - 2]!,
      resumedAfterMs: performance.now() - closedAt, codes: [...codes],
    } satisfies ResumeReport);
    for (const c of conns) c.close();
    void server.close();
  });
  // Fill the fd table, then free one slot: room for one connection.
  const filler: number[] = [];
  for (;;) {
    try {
      filler.push(fs.openSync('/dev/null', 'r'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EMFILE') throw err;
      break;
    }
  }
  fs.closeSync(filler.pop()!);
  out({ ready: true, filler: filler.length });
}

if (process.argv[2] === 'emfile-child') {
  emfileChild(process.argv[3]!).catch((err) => {
    console.error(err);
    process.exit(1);
  });
} else {
  test('UnixServer at EMFILE resumes accepting as soon as a connection is closed, not when its 1 s back-off ends', async (t) => {
    const scope = await trackFds(t);
    const dir = tmpDir(scope);
    const address = path.join(dir, 's.sock');
    const child = spawnNode(__filename, ['emfile-child', address], { nofile: 64, owner: scope });
    assert.deepEqual(await child.next(), { started: true });
    const ready = await child.next<{ ready: boolean; filler: number }>();
    assert.equal(ready.ready, true);
    assert.ok(ready.filler > 0);

    const first = await UnixSocket.connect(address);
    scope.defer(() => first.close());
    assert.deepEqual(await child.next(), { accepted: 1 });
    // The child is full now: this one waits in the backlog while accept()
    // fails with EMFILE and backs off, until the child closes `first`.
    const second = await UnixSocket.connect(address);
    scope.defer(() => second.close());

    const r = await child.next<ResumeReport>();
    t.diagnostic(JSON.stringify(r));
    assert.deepEqual(r.codes, ['EMFILE']);
    assert.ok(r.errors >= ERRORS_TO_FULL_BACKOFF, `only ${r.errors} accept errors`);
    assert.ok(r.lastGapMs >= 400, `the back-off had not grown (last gap ${r.lastGapMs} ms)`);
    // Before the fix this was the rest of the 1 s back-off.
    assert.ok(r.resumedAfterMs < 300, `accepted ${r.resumedAfterMs.toFixed(0)} ms after an fd was freed`);
    await child.done();
    // The child closed its end of `first`: the client sees EOF.
    await assert.rejects(first.receive({ timeout: 5000 }), { code: 'FDPASS_ERR_SOCKET_CLOSED' });
  });

  test('accept({ timeout }) rejects with FDPASS_ERR_TIMEOUT, takes no connection with it and leaks nothing', async (t) => {
    const scope = await trackFds(t);
    const dir = tmpDir(scope);
    const address = path.join(dir, 's.sock');
    const server = await UnixServer.listen(address, { type: 'seqpacket' });
    scope.defer(() => server.close());

    const started = Date.now();
    let guard: NodeJS.Timeout | undefined;
    const tooLate = new Promise<never>((_, reject) => {
      guard = setTimeout(() => reject(new Error('accept() ignored its timeout')), 3000);
    });
    try {
      await assert.rejects(Promise.race([server.accept({ timeout: 50 }), tooLate]),
        { name: 'TimeoutError', code: 'FDPASS_ERR_TIMEOUT', message: 'no connection within 50 ms' });
    } finally {
      clearTimeout(guard);
    }
    assert.ok(Date.now() - started >= 45);
    assert.throws(() => server.accept({ timeout: -1 }), RangeError);

    // The timed-out call is gone: the next connection goes to the next accept.
    const client = await UnixSocket.connect(address, { type: 'seqpacket' });
    scope.defer(() => client.close());
    const conn = await server.accept({ timeout: 5000 });
    scope.defer(() => conn.close());
    await client.send('hello');
    assert.equal((await conn.receive({ timeout: 5000 })).text(), 'hello');

    // A timeout that does not fire leaves no timer behind either.
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const before = timers();
    const pending = server.accept({ timeout: 60_000 });
    assert.equal(timers(), before + 1);
    const late = await UnixSocket.connect(address, { type: 'seqpacket' });
    (await pending).close();
    late.close();
    assert.equal(timers(), before);
  });

  test('listen with options that cannot work throws before binding: no socket file, no fd', async (t) => {
    const scope = await trackFds(t);
    const dir = tmpDir(scope);
    const address = path.join(dir, 's.sock');
    const bad = [
      { allow: 42 as unknown as () => boolean },
      { maxMessageSize: 0 },
      { type: 'seqpacket' as const, maxMessageSize: 64 * 1024 * 1024 },
    ];
    for (const options of bad) {
      let err: unknown;
      try {
        await UnixServer.listen(address, options);
      } catch (e) {
        err = e;
      }
      assert.ok(err instanceof TypeError || err instanceof RangeError, `listen(${JSON.stringify(options)}) did not fail: ${String(err)}`);
      assert.deepEqual(fs.readdirSync(dir), [], `listen(${JSON.stringify(options)}) left a file behind`);
    }
  });

  test('a listen() that fails after bind() (SOCK_DGRAM: EOPNOTSUPP) removes the socket file and closes the fd', async (t) => {
    const scope = await trackFds(t);
    const dir = tmpDir(scope);
    const address = path.join(dir, 's.sock');
    await assert.rejects(listenUnix(K.SOCK_DGRAM, address), { errno: -os.constants.errno.EOPNOTSUPP, syscall: 'listen' });
    assert.deepEqual(fs.readdirSync(dir), []);
  });

  test('UnixSocket.datagram: a connect that fails after bind removes the socket file it bound', async (t) => {
    const scope = await trackFds(t);
    const dir = tmpDir(scope);
    const bound = path.join(dir, 'me.sock');
    await assert.rejects(UnixSocket.datagram({ bind: bound, connect: path.join(dir, 'nobody.sock') }),
      { code: 'ENOENT', syscall: 'connect' });
    assert.deepEqual(fs.readdirSync(dir), []);
  });
}
