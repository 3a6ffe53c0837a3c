/**
 * Read-ahead is bounded in fds, not only in messages: a receiver must not
 * fill its own fd table with messages its consumer has not taken yet, or
 * every message after that arrives truncated (MSG_CTRUNC).
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { test } from 'node:test';
import { UnixSocket } from '../../src';
import { trackFds } from '../helpers/scope';
import { spawnNode } from '../helpers/process';

const CASES = [
  // [socket type, receiver RLIMIT_NOFILE, maxBufferedFds ('0': the default)]
  ['seqpacket', 300, '100'],
  ['stream', 300, '100'],
  // The default follows a low limit: a quarter of 1200 here, not 2048.
  ['seqpacket', 1200, '0'],
  ['stream', 1200, '0'],
] as const;

for (const [type, nofile, cap] of CASES) {
  test(`${type}: a burst of 40 messages of 50 fds into a receiver limited to ${nofile} fds (maxBufferedFds ${cap === '0' ? 'default' : cap}) arrives whole`, async (t) => {
    const scope = await trackFds(t);
    const [mine, theirs] = UnixSocket.pair({ type });
    scope.defer(() => mine.close());
    const child = spawnNode('readahead-receiver.js', ['40', cap], { fds: [theirs.fd], nofile, owner: scope });
    theirs.close();
    const fd = fs.openSync('/dev/null', 'r');
    scope.defer(() => fs.closeSync(fd));
    const fds = Array(50).fill(fd);
    await Promise.all(Array.from({ length: 40 }, () => mine.send({ data: 'x', fds })));
    const r = await child.next<{ fds: number; truncated: number }>();
    await child.done();
    assert.deepEqual({ fds: r.fds, truncated: r.truncated }, { fds: 2000, truncated: 0 });
  });
}
