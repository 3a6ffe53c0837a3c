/**
 * ETOOMANYREFS: a sender that is not root may have at most RLIMIT_NOFILE fds
 * in flight. Root is exempt, so the sender runs as nobody (setpriv) with a
 * low limit (prlimit). The kernel's refusal must be waited out by send(), not
 * thrown at the user.
 */
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { UnixSocket } from '../../src';
import { trackFds, FIXTURES } from '../helpers/fds';

test('ETOOMANYREFS is hit by an unprivileged sender and waited out by send()', { skip: process.getuid!() !== 0 && 'needs root to switch to nobody' }, async (t) => {
  const scope = await trackFds(t);
  const [mine, theirs] = UnixSocket.pair({ type: 'seqpacket' });
  scope.defer(() => mine.close());
  const child = spawn('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '--',
    'prlimit', '--nofile=64:64', '--', process.execPath, path.join(FIXTURES, 'toomanyrefs-sender.js'), '20'],
  { stdio: ['ignore', 'pipe', 'inherit', theirs.fd] });
  theirs.close();
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const first = JSON.parse((await lines.next()).value as string);
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
  assert.deepEqual(JSON.parse((await lines.next()).value as string), { sent: 20 });
  const code = await new Promise((res) => child.on('exit', res));
  assert.equal(code, 0);
});
