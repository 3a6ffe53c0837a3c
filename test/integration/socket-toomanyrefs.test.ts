/**
 * ETOOMANYREFS: a sender that is not root may have at most RLIMIT_NOFILE fds
 * in flight. Root is exempt, so the sender runs as nobody (setpriv) with a
 * low limit (prlimit). The kernel's refusal must be waited out by send(), not
 * thrown at the user.
 */
import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { UnixSocket } from '../../src';
import { trackFds } from '../helpers/scope';
import { spawnNode } from '../helpers/process';

test('ETOOMANYREFS is hit by an unprivileged sender and waited out by send()', { skip: process.getuid!() !== 0 && 'needs root to switch to nobody' }, async (t) => {
  const scope = await trackFds(t);
  const [mine, theirs] = UnixSocket.pair({ type: 'seqpacket' });
  scope.defer(() => mine.close());
  const child = spawnNode('toomanyrefs-sender.js', ['20'], { fds: [theirs.fd], uid: 65534, gid: 65534, nofile: 64, owner: scope });
  theirs.close();
  const first = await child.next<{ hit: boolean; raw: number }>();
  assert.equal(first.hit, true, `the kernel never refused: ${JSON.stringify(first)}`);
  // Only now read: the queued messages drain and the waiting sends go through.
  let fds = 0;
  let msgs = 0;
  const expected = first.raw + 20;
  for await (const m of mine) {
    fds += m.fdCount;
    m.close();
    if (++msgs === expected) break;
  }
  assert.equal(fds, expected * 10);
  assert.deepEqual(await child.next(), { sent: 20 });
  await child.done();
});
