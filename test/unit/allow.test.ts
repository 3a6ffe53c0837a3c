// Allow-lists compiled once for servers and datagram sockets (src/socket/allow.ts).
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { compileAllow } from '../../src/socket/allow';

const peer = (uid: number, gid = uid) => ({ pid: 1, uid, gid });

test('no allow-list: nobody filtered, or (abstract names) only this uid and root', () => {
  assert.equal(compileAllow(undefined, false), null);
  const same = compileAllow(undefined, true)!;
  const me = process.getuid!();
  assert.equal(same(peer(me)), true);
  assert.equal(same(peer(0)), true);
  assert.equal(same(peer(me === 12345 ? 12346 : 12345)), false);
});

test('uids, gids and check: in a list (either), and the check', () => {
  const byUid = compileAllow({ uids: [5] }, true)!;
  assert.deepEqual([byUid(peer(5)), byUid(peer(0)), byUid(peer(6, 5))], [true, false, false]);
  const either = compileAllow({ uids: [5], gids: [7] }, false)!;
  assert.deepEqual([either(peer(5, 1)), either(peer(1, 7)), either(peer(1, 1))], [true, true, false]);
  const checked = compileAllow({ uids: [5], check: (c) => c.pid === 1 }, false)!;
  assert.deepEqual([checked(peer(5)), checked({ pid: 2, uid: 5, gid: 5 })], [true, false]);
  const fn = compileAllow((c) => c.gid === 9, true)!;
  assert.deepEqual([fn(peer(1, 9)), fn(peer(0, 0))], [true, false]);
});

test('a malformed allow-list is a TypeError before any syscall', () => {
  assert.throws(() => compileAllow(42 as never, false), { name: 'TypeError', code: 'FDPASS_ERR_INVALID_ARG' });
  assert.throws(() => compileAllow(null as never, false), { name: 'TypeError' });
});
