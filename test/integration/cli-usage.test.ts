/**
 * What the command line says about itself: `--help` for every command (on
 * stdout, exit 0), usage errors that show the usage of the command that
 * was used (on stderr, exit 2), usage on stderr when nothing was asked for,
 * and every error on one line with the `fdpass: ` prefix once.
 */
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { runCli } from '../helpers/process';
import { tmpDir } from '../helpers/files';
import { trackFds } from '../helpers/scope';

const COMMANDS = ['send', 'recv', 'serve', 'status', 'upgrade', 'demo'];
const synopsis = (cmd: string) => new RegExp(`^  fdpass ${cmd}\\b`, 'm');

test('--help and -h for every command: its own usage and details on stdout, exit 0, even with other arguments', async (t) => {
  await trackFds(t);
  for (const cmd of COMMANDS) {
    for (const args of [[cmd, '--help'], [cmd, '--bogus', '-h']]) {
      const r = await runCli(args);
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(r.stderr, '', args.join(' '));
      assert.match(r.stdout, new RegExp(`^usage:\\n  fdpass ${cmd}\\b`), args.join(' '));
      for (const other of COMMANDS.filter((c) => c !== cmd)) assert.doesNotMatch(r.stdout, synopsis(other), `${cmd} --help shows ${other}`);
    }
  }
  const top = await runCli(['--help']);
  assert.equal(top.code, 0);
  assert.equal(top.stderr, '');
  for (const cmd of COMMANDS) assert.match(top.stdout, synopsis(cmd));
  // After `--`, --help is an argument like any other (a FILE named --help).
  const dashed = await runCli(['send', '--connect', '/nonexistent/s.sock', '--', '--help']);
  assert.equal(dashed.code, 1, dashed.stderr);
  assert.equal(dashed.stderr, 'fdpass: open --help: ENOENT\n');
});

test('no arguments: usage on stderr, nothing on stdout, exit 2', async (t) => {
  await trackFds(t);
  const r = await runCli([]);
  assert.equal(r.code, 2);
  assert.equal(r.stdout, '');
  for (const cmd of COMMANDS) assert.match(r.stderr, synopsis(cmd));
});

test('a usage error shows the usage of the command that was used, on stderr, after one error line', async (t) => {
  await trackFds(t);
  const cases: [string[], string, string][] = [
    [['send', '--bogus'], 'send', "Unknown option '--bogus'"],
    [['recv', '--connect', '/tmp/x', '--count', '0'], 'recv', "--count must be a positive integer, not '0'"],
    [['serve', '--workers', 'many'], 'serve', "--workers must be a positive integer, not 'many'"],
    [['serve', '--bogus'], 'serve', "Unknown option '--bogus'"],
    [['status', '--bogus'], 'status', "Unknown option '--bogus'"],
    [['status', 'extra'], 'status', "Unexpected argument 'extra'"],
  ];
  for (const [args, cmd, message] of cases) {
    const r = await runCli(args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.equal(r.stdout, '');
    const [first, ...rest] = r.stderr.split('\n');
    assert.equal(first, `fdpass: ${message}: EUSAGE`, args.join(' '));
    const usage = rest.join('\n');
    assert.match(usage, new RegExp(`^usage:\\n  fdpass ${cmd}\\b`), args.join(' '));
    assert.match(usage, new RegExp(`\\(fdpass ${cmd} --help for more\\)\\n$`));
    for (const other of COMMANDS.filter((c) => c !== cmd)) assert.doesNotMatch(usage, synopsis(other), `${args.join(' ')} shows ${other}`);
  }
  // An unknown command: the overview.
  const r = await runCli(['frobnicate']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^fdpass: unknown command 'frobnicate': EUSAGE\nusage:\n/);
  for (const cmd of COMMANDS) assert.match(r.stderr, synopsis(cmd));
});

test('a failure is one line with the prefix once: fdpass: <what failed>: <code>', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const runs = [
    await runCli(['status', '--control', path.join(dir, 'none.sock')]),
    await runCli(['send', '--connect', path.join(dir, 'none.sock'), '/etc/hostname']),
    await runCli(['recv', '--connect', path.join(dir, 'none.sock')]),
  ];
  for (const r of runs) {
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^fdpass: [^\n]+: [A-Z_]+\n$/);
    assert.doesNotMatch(r.stderr, /fdpass: fdpass/);
  }
});
