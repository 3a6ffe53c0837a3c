/**
 * The tests' own leak check (test/helpers/fds.ts settledFdLeaks): an fd
 * still open after the settle time is a leak and is named; an fd that some
 * other code opens and closes within that time (glibc's malloc reading
 * /proc/sys/vm/overcommit_memory on a runtime thread, seen once in CI) is not.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { test } from 'node:test';
import { openFds, settledFdLeaks } from '../helpers/fds';

test('settledFdLeaks: names an fd left open, not one closed before the settle time', async () => {
  const before = openFds();
  const kept = fs.openSync('/proc/self/stat', 'r');
  const brief = fs.openSync('/proc/self/status', 'r');
  let briefOpen = true;
  const closing = setTimeout(() => {
    fs.closeSync(brief);
    briefOpen = false;
  }, 2);
  try {
    const leaks = await settledFdLeaks(before, 100);
    assert.deepEqual(leaks.map((l) => l.fd), [kept]);
    assert.match(leaks[0]!.target, /\/stat$/);
  } finally {
    clearTimeout(closing);
    fs.closeSync(kept);
    if (briefOpen) fs.closeSync(brief);
  }
  assert.deepEqual(await settledFdLeaks(before), []);
});
