/**
 * The tests' own leak check (test/helpers/fds.ts settledFdLeaks): an fd
 * still open after the settle time is a leak and is named; an fd that some
 * other code opens and closes within that time (glibc's malloc reading
 * /proc/sys/vm/overcommit_memory on a runtime thread, seen once in CI) is not.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { openFds, settledFdLeaks } from '../helpers/fds';

test('settledFdLeaks: names an fd left open, not one closed before the settle time', async () => {
  // Files of our own (not /proc ones: under qemu-user those are emulated).
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fdpass-leak-check-'));
  const before = openFds();
  const kept = fs.openSync(path.join(dir, 'kept'), 'w');
  const brief = fs.openSync(path.join(dir, 'brief'), 'w');
  let briefOpen = true;
  const closing = setTimeout(() => {
    fs.closeSync(brief);
    briefOpen = false;
  }, 2);
  try {
    const leaks = await settledFdLeaks(before, 100);
    assert.deepEqual(leaks.map((l) => l.fd), [kept]);
    assert.equal(leaks[0]!.target, fs.realpathSync(path.join(dir, 'kept')));
  } finally {
    clearTimeout(closing);
    fs.closeSync(kept);
    if (briefOpen) fs.closeSync(brief);
    fs.rmSync(dir, { recursive: true });
  }
  assert.deepEqual(await settledFdLeaks(before), []);
});
