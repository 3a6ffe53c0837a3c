/**
 * A framed stream peer that trickles a frame one byte per write: the
 * receiver's memory for the incomplete frame stays within a small factor of
 * its bytes (frame.ts), however many reads bring them.
 */
import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { UnixSocket } from '../../src';
import { native, K } from '../../src/native';
import { trackFds } from '../helpers/scope';
import { liveBytes } from '../helpers/memory';

const turn = () => new Promise((r) => setImmediate(r));

test('a 128 KiB frame trickled 1 byte per write, credentials on: the receiver holds about the frame\'s bytes, not an object per read', async (t) => {
  const scope = await trackFds(t);
  const pair = new Int32Array(2);
  assert.equal(native.socketpair(K.SOCK_STREAM, pair), 0);
  const rx = UnixSocket.fromFd(pair[0]!, { passCredentials: true, maxMessageSize: 256 * 1024 });
  scope.defer(() => rx.close());
  const tx = UnixSocket.fromFd(pair[1]!, { raw: true });
  scope.defer(() => tx.close());

  const size = 128 * 1024;
  const frame = Buffer.alloc(8 + size, 5);
  frame.writeUInt8(0xfd, 0);
  frame.writeUInt8(1, 1); // the sender's credentials go with the message
  frame.writeUInt16LE(0, 2);
  frame.writeUInt32LE(size, 4);
  const got = rx.receive({ timeout: 60_000 });
  const before = liveBytes();
  // One write per loop turn: the receiver reads each byte on its own (its
  // poll phase comes between two of them).
  for (let i = 0; i < frame.length - 1; i++) {
    await tx.send(frame.subarray(i, i + 1));
    await turn();
  }
  await turn();
  const grown = liveBytes() - before;
  t.diagnostic(`${grown} bytes live`);
  // Measured: ~29 MB before the fix (a Buffer and a credentials entry per read).
  assert.ok(grown < 2 * size + 1024 * 1024, `${grown} bytes live for a ${frame.length - 1}-byte incomplete frame`);
  await tx.send(frame.subarray(frame.length - 1));
  const m = await got;
  assert.equal(m.data.length, size);
  assert.ok(m.data.every((b) => b === 5));
  assert.deepEqual(m.credentials, { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
});
