/**
 * The control socket under a same-uid client that does not play fair.
 * - It sends 'status' requests as fast as it can and never reads the
 *   answers: the primary stops reading from it once a few answers wait
 *   (backpressure), so its RSS and CPU stay flat (measured from /proc
 *   before and after), it keeps serving HTTP and other status clients, and
 *   once the client closes, its fds are back to the baseline.
 * - It opens more connections than the cap (16): the ones over it are
 *   closed at once, with a (rate-limited) control-refused line; once some
 *   close, status works again.
 */
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { UnixSocket } from '../../src';
import { encodeChannel, Kind } from '../../src/channel/codec';
import { trackFds } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { startServe } from '../helpers/serve';
import { request } from '../helpers/http';
import { hammer } from '../helpers/load';
import { cpuTicks, rssKiB, USER_HZ } from '../helpers/proc';
import { sleep, waitFor } from '../helpers/wait';

const FLOOD_MS = 4000;

test('a control client that sends status requests in a tight loop and never reads: the primary\'s RSS and CPU stay bounded, it keeps serving, and its fds come back', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', '2', '--control', path.join(dir, 'control.sock')], { owner: scope });
  const l = s.listener('http');
  await hammer(l, 20, 4);
  const tree = await s.idleFds();
  const rss0 = rssKiB(s.pid);

  const sock = await UnixSocket.connect(s.control, { type: 'seqpacket' });
  scope.defer(() => sock.close());
  let sent = 0;
  let stop = false;
  const flood = (async () => {
    for (let id = 1; !stop; id++) {
      try {
        await sock.send(encodeChannel(Kind.Request, id, 'status', undefined));
      } catch {
        return; // closed
      }
      sent++;
      if (id % 64 === 0) await new Promise(setImmediate); // let the test's own timers run
    }
  })();

  await sleep(1000);
  const c0 = cpuTicks(s.pid);
  const t0 = Date.now();
  // Meanwhile the primary serves connections and other status clients.
  const reply = await request(l);
  assert.equal(reply.status, 200);
  const st = await s.status();
  assert.equal(st.primary.pid, s.pid);
  await sleep(FLOOD_MS - 1000);
  const cpuPercent = ((cpuTicks(s.pid) - c0) * 100 * 1000) / USER_HZ / (Date.now() - t0);
  const rss1 = rssKiB(s.pid);
  const growthMiB = (rss1 - rss0) / 1024;
  const sentDuring = sent;

  assert.ok(growthMiB < 50, `the primary grew by ${growthMiB.toFixed(1)} MiB (${rss0} -> ${rss1} KiB) in ${FLOOD_MS} ms of unread requests`);
  assert.ok(cpuPercent < 25, `the primary used ${cpuPercent.toFixed(1)}% CPU while the client did not read`);
  assert.ok(sentDuring < 10_000, `the kernel took ${sentDuring} requests: the primary read on instead of pushing back`);

  stop = true;
  sock.close();
  await flood;
  await s.expectNoFdLeak(tree);
  t.diagnostic(`flood of ${FLOOD_MS} ms: ${sentDuring} requests went before the client's sends blocked; primary RSS ${rss0} -> ${rss1} KiB ` +
    `(${growthMiB >= 0 ? '+' : ''}${growthMiB.toFixed(1)} MiB), CPU ${cpuPercent.toFixed(1)}% after the first second`);
  const r = await s.stop();
  assert.equal(r.code, 0, r.stderr);
});

test('control connections over the cap (16) are closed at once with a control-refused line; status works again once some close', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', '1', '--control', path.join(dir, 'control.sock')], { owner: scope });
  const tree = await s.idleFds();
  const held: UnixSocket[] = [];
  scope.defer(() => held.forEach((x) => x.close()));
  for (let i = 0; i < 16; i++) held.push(await UnixSocket.connect(s.control, { type: 'seqpacket' }));
  // The 16 are in: each answers a status request.
  await Promise.all(held.map(async (x, i) => {
    await x.send(encodeChannel(Kind.Request, i + 1, 'status', undefined));
    (await x.receive({ timeout: 5000 })).close();
  }));

  const over = await UnixSocket.connect(s.control, { type: 'seqpacket' });
  scope.defer(() => over.close());
  await assert.rejects(over.receive({ timeout: 5000 }), { code: 'FDPASS_ERR_SOCKET_CLOSED' }, 'the 17th is closed by the primary');
  await assert.rejects(s.status(), 'no room for an 18th either');
  const refused = await s.waitEvent((e) => e.event === 'control-refused', 5000, 'control-refused');
  assert.match(String(refused.reason), /16 connections/);

  for (const x of held.splice(0, 4)) x.close();
  await waitFor(async () => (await s.status().catch(() => null))?.primary.pid === s.pid, { timeout: 5000, what: 'status once connections closed' });
  for (const x of held.splice(0)) x.close();
  await s.expectNoFdLeak(tree);
  t.diagnostic(`refused: ${JSON.stringify(refused)}; ${s.events('control-refused').length} control-refused line(s)`);
  const r = await s.stop();
  assert.equal(r.code, 0, r.stderr);
});
