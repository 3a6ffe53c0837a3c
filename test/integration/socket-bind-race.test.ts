/**
 * Binding a path socket in a directory another user can write to: that user
 * can swap any name in it at any moment. listen() and datagram({ bind })
 * must never change or probe anything but the socket file they created
 * (bind.ts). The attacker runs as nobody (uid 65534) in its own process.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { UnixServer, UnixSocket } from '../../src';
import { trackFds } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { Child } from '../helpers/process';

const NOBODY = 65534;
const needsRoot = process.getuid!() === 0 ? {} : { skip: 'needs root to chown a directory to another user and run a child as that user' };

/**
 * The attacker: watches `dir/name` and, whenever a socket is there, renames
 * a ready-made symlink to `target` over it (one syscall: the swap is as fast
 * as it gets). Prints "ready", and its swap count when its stdin closes.
 */
const ATTACKER = `
const fs = require('node:fs');
const [dir, name, target] = process.argv.slice(1);
const sock = dir + '/' + name, link = dir + '/swap';
let swaps = 0, stop = false;
process.stdin.on('end', () => { stop = true; }).resume();
const prepare = () => { try { fs.symlinkSync(target, link); } catch {} };
prepare();
console.log('ready');
function spin() {
  for (let i = 0; i < 200000 && !stop; i++) {
    const st = fs.lstatSync(sock, { throwIfNoEntry: false });
    if (st && st.isSocket()) {
      try { fs.renameSync(link, sock); swaps++; prepare(); } catch {}
    }
  }
  if (stop) console.log(JSON.stringify({ swaps }));
  else setImmediate(spin);
}
spin();
`;

/** A directory owned by nobody (its files are theirs to swap), beside a
 * root-owned 0644 file that a followed symlink would reach. */
function setUp(scope: Parameters<typeof tmpDir>[0]): { dir: string; target: string } {
  const base = tmpDir(scope, 0o755);
  const dir = path.join(base, 'theirs');
  fs.mkdirSync(dir, 0o755);
  fs.chownSync(dir, NOBODY, NOBODY);
  const target = path.join(base, 'target.txt');
  fs.writeFileSync(target, 'root only\n');
  fs.chmodSync(target, 0o644);
  return { dir, target };
}

/** At least this many tries; more (up to MAX_TRIES, or MAX_MS) until the
 * swap has landed between bind() and the mode change WINDOW_HITS times, so
 * that a loaded machine (an attacker that seldom runs) still tests the race. */
const TRIES = 2000;
const MAX_TRIES = 20_000;
const MAX_MS = 20_000;
const WINDOW_HITS = 20;

for (const mode of [0o600, 0o666]) {
  test(`listen(path, { mode: 0o${mode.toString(8)} }) raced by a symlink swap ${TRIES}+ times: no chmod ever lands outside the socket`, needsRoot, async (t) => {
    const scope = await trackFds(t);
    const { dir, target } = setUp(scope);
    const sock = path.join(dir, 's.sock');
    const attacker = new Child([process.execPath, '-e', ATTACKER, dir, 's.sock', target],
      { uid: NOBODY, gid: NOBODY, stdin: 'pipe', owner: scope, timeout: 60_000, label: 'attacker' });
    await attacker.waitOutput(/ready/, { stream: 'stdout' });

    // hits: the target's mode changed (a chmod followed the symlink: the
    // bug). replaced: the swap landed after bind() and was refused.
    let hits = 0;
    let served = 0;
    let tries = 0;
    const refusals = new Map<string, number>();
    const windowHits = () => hits + (refusals.get('FDPASS_ERR_SOCKET_FILE_REPLACED') ?? 0);
    const t0 = Date.now();
    while (tries < TRIES || (windowHits() < WINDOW_HITS && tries < MAX_TRIES && Date.now() - t0 < MAX_MS)) {
      tries++;
      try {
        const server = await UnixServer.listen(sock, { mode });
        served++;
        await server.close();
      } catch (err) {
        const code = (err as { code?: string }).code ?? String(err);
        // A symlink or another file at the path before bind() is EADDRINUSE;
        // one swapped in after bind() is refused.
        assert.ok(code === 'EADDRINUSE' || code === 'FDPASS_ERR_SOCKET_FILE_REPLACED', String(err));
        refusals.set(code, (refusals.get(code) ?? 0) + 1);
      }
      const m = fs.statSync(target).mode & 0o777;
      if (m !== 0o644) {
        hits++;
        fs.chmodSync(target, 0o644);
      }
      // What the attacker left (its symlink): root may clean its directory.
      fs.rmSync(sock, { force: true });
    }
    attacker.process.stdin!.end();
    await attacker.waitOutput(/swaps/, { stream: 'stdout' });
    const { swaps } = JSON.parse(attacker.stdout.split('\n').find((l) => l.includes('swaps'))!) as { swaps: number };
    await attacker.waitExit();
    const summary = `${tries} tries in ${Date.now() - t0} ms: ${hits} chmods of the target, ${swaps} swaps, ${served} served, ` +
      `refused: ${JSON.stringify(Object.fromEntries(refusals))}`;
    t.diagnostic(summary);
    assert.equal(hits, 0, summary);
    // The race was run: swaps landed inside the window after bind().
    assert.ok(windowHits() > 0, `no swap landed between bind() and the check: ${summary}`);
    assert.equal(fs.readFileSync(target, 'utf8'), 'root only\n');
    assert.equal(fs.statSync(target).uid, 0);
  });
}

test('a socket file of another uid is EADDRINUSE: never connected to, never removed, live or stale', needsRoot, async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope, 0o755);
  const p = path.join(dir, 'theirs.sock');
  const live = await UnixServer.listen(p);
  scope.defer(() => live.close());
  let connections = 0;
  live.on('connection', (s: UnixSocket) => {
    connections++;
    s.close();
  });
  fs.chownSync(p, NOBODY, NOBODY);
  const ino = fs.lstatSync(p).ino;
  await assert.rejects(UnixServer.listen(p), { code: 'EADDRINUSE', syscall: 'bind', path: p });
  await assert.rejects(UnixSocket.datagram({ bind: p }), { code: 'EADDRINUSE' });
  // A connect() lands in the backlog at once, and is accepted on the next
  // turn: give it a few.
  await assert.rejects(live.accept({ timeout: 300 }), { code: 'FDPASS_ERR_TIMEOUT' });
  assert.equal(connections, 0);
  assert.equal(fs.lstatSync(p).ino, ino);

  // Stale (nobody listens any more): still not ours to remove.
  await live.close();
  const stale = path.join(dir, 'stale.sock');
  const s = await UnixServer.listen(path.join(dir, 'was.sock'));
  // Moved away, the file outlives the server's close().
  fs.renameSync(path.join(dir, 'was.sock'), stale);
  await s.close();
  fs.chownSync(stale, NOBODY, NOBODY);
  const staleIno = fs.lstatSync(stale).ino;
  await assert.rejects(UnixServer.listen(stale), { code: 'EADDRINUSE' });
  assert.equal(fs.lstatSync(stale).ino, staleIno);
});
