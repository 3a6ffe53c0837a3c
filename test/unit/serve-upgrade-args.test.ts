import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { upgradeArgs } from '../../src/serve/upgrade';

const OPTIONS = {
  listen: { type: 'string', multiple: true },
  workers: { type: 'string' },
  takeover: { type: 'string' },
  'takeover-signal': { type: 'string' },
} as const;

test('the new primary\'s arguments: the old ones without their --takeover and --takeover-signal, then --takeover PATH', () => {
  assert.deepEqual(upgradeArgs(['--listen', '127.0.0.1:80', 'app.js'], OPTIONS, '@t'),
    ['--listen', '127.0.0.1:80', 'app.js', '--takeover', '@t']);
  assert.deepEqual(upgradeArgs(['--takeover', '/old.sock', '--listen', ':80', '--takeover-signal', 'SIGUSR1', '--workers', '2', 'app.js'], OPTIONS, '@t'),
    ['--listen', ':80', '--workers', '2', 'app.js', '--takeover', '@t']);
  assert.deepEqual(upgradeArgs(['--takeover=/old.sock', '--takeover-signal=SIGUSR1', 'app.js'], OPTIONS, '@t'),
    ['app.js', '--takeover', '@t']);
  // A value that looks like the option is a value (of --workers here), and
  // options go before a `--` that ends them.
  assert.deepEqual(upgradeArgs(['--workers', '--takeover', '--', '--takeover'], OPTIONS, '@t'),
    ['--workers', '--takeover', '--takeover', '@t', '--', '--takeover']);
});
