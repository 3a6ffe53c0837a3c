/**
 * A site moves between HAProxy and fdpass without refusing a connection,
 * over HAProxy's own `_getsocks` protocol, with a real HAProxy (Debian's
 * 2.6; scripts/debian-deps.sh installs it in pretest):
 * - HAProxy -> fdpass: HAProxy serves a port with `stats socket PATH
 *   expose-fd listeners`; `fdpass serve --takeover PATH --takeover-signal
 *   SIGUSR1` takes the port over under load and HAProxy soft-stops.
 * - fdpass -> HAProxy: `fdpass serve --expose-listeners PATH`; `haproxy -x
 *   PATH` with a config binding the same address takes the listener over
 *   under load; then fdpass is stopped, and its stop leaves the shared
 *   listener alone.
 * Both: 0 failed requests (no refused, no reset), ports found free at run time.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { trackFds, type Scope } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { Child } from '../helpers/process';
import { startServe } from '../helpers/serve';
import { request, type Endpoint } from '../helpers/http';
import { ConnectionLoad } from '../helpers/load';
import { freePort, socketOwnersSs } from '../helpers/sockets';
import { waitFor } from '../helpers/wait';

const HAPROXY = ['/usr/sbin/haproxy', '/usr/bin/haproxy'].find((f) => fs.existsSync(f));
const SKIP = HAPROXY ? false : 'haproxy is not installed (Debian: apt-get install haproxy; `npm test` runs scripts/debian-deps.sh, which installs it as root)';

/** A HAProxy configuration answering every request itself on 127.0.0.1:`port`. */
function haproxyConfig(dir: string, port: number, statsSocket?: string): string {
  const file = path.join(dir, 'haproxy.cfg');
  fs.writeFileSync(file, [
    'global',
    statsSocket ? `  stats socket ${statsSocket} mode 600 level admin expose-fd listeners` : '',
    'defaults',
    '  mode http',
    '  timeout connect 2s',
    '  timeout client 10s',
    '  timeout server 10s',
    'frontend site',
    `  bind 127.0.0.1:${port}`,
    `  http-request return status 200 content-type application/json string '{"haproxy":true}'`,
    '',
  ].join('\n'));
  return file;
}

function startHaproxy(args: string[], owner: Scope): Child {
  return new Child([HAPROXY!, ...args], { owner, label: 'haproxy' });
}

/** Requests answered by fdpass's workers (HAProxy's answers name no worker). */
function answeredByWorkers(load: ConnectionLoad): number {
  let n = 0;
  for (const v of load.byWorker.values()) n += v;
  return n;
}

/** Waits until a request to `e` is answered by HAProxy. */
async function haproxyAnswers(e: Endpoint): Promise<void> {
  await waitFor(async () => {
    try {
      return (await request(e)).text.includes('"haproxy":true');
    } catch {
      return false;
    }
  }, { timeout: 10_000, interval: 20, what: `HAProxy answering on ${e.address}` });
}

const LOOPS = 4;

test('HAProxy -> fdpass: fdpass serve --takeover PATH --takeover-signal SIGUSR1 takes HAProxy\'s port under load: 0 refused, 0 failed', { skip: SKIP }, async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const port = await freePort();
  const stats = path.join(dir, 'haproxy.sock');
  const h = startHaproxy(['-f', haproxyConfig(dir, port, stats), '-db'], scope);
  const site: Endpoint = { address: `127.0.0.1:${port}`, host: '127.0.0.1', port, tls: false };
  await haproxyAnswers(site);
  const load = new ConnectionLoad(site, { loops: LOOPS });
  scope.defer(() => load.stop());
  await load.waitOk(50);

  const s = await startServe(['--listen', `127.0.0.1:${port}`, '--workers', '1', '--control', path.join(dir, 'control.sock'),
    '--takeover', stats, '--takeover-signal', 'SIGUSR1'], { owner: scope });
  // HAProxy soft-stops (SIGUSR1) and exits; fdpass serves the same socket.
  const hr = await h.waitExit(15_000);
  assert.equal(hr.code, 0, hr.stderr);
  const byFdpass = answeredByWorkers(load);
  const ok = load.ok;
  await load.waitOk(ok + 100);
  await load.stop();
  assert.deepEqual(load.failures, [], `${load.failures.length} of ${load.attempts} failed: ${[...load.failureKinds()].join(', ')}`);
  // Once HAProxy is gone, fdpass's workers answer everything: only the
  // requests in flight when it exited (one per client loop at most) may
  // still be counted with HAProxy's answer.
  const byHaproxyAfter = (load.ok - ok) - (answeredByWorkers(load) - byFdpass);
  assert.ok(byHaproxyAfter >= 0 && byHaproxyAfter <= LOOPS,
    `${byHaproxyAfter} answers from HAProxy counted after it exited (at most ${LOOPS}: one in flight per client loop)`);

  const st = await s.status();
  assert.equal(st.primary.takeover?.from.pid, h.pid);
  assert.equal(st.primary.takeover?.told, 'SIGUSR1');
  assert.equal(st.primary.takeover?.adopted, 1);
  // HAProxy also exposed its stats socket: received, not used, closed.
  assert.equal(st.primary.takeover?.received, 2);
  const tree = await s.idleFds();
  await request(s.listener('http'));
  await s.expectNoFdLeak(tree);
  t.diagnostic(`${load.ok} requests, 0 failed; HAProxy ${h.pid} -> fdpass ${s.pid} (${load.byWorker.size} worker(s))`);
  const end = await s.stop();
  assert.equal(end.code, 0, end.stderr);
});

test('fdpass -> HAProxy: haproxy -x PATH takes fdpass\'s listener under load, then fdpass stops: 0 refused, 0 failed', { skip: SKIP }, async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const port = await freePort();
  const expose = path.join(dir, 'expose.sock');
  const s = await startServe(['--listen', `127.0.0.1:${port}`, '--workers', '1', '--control', path.join(dir, 'control.sock'),
    '--expose-listeners', expose], { owner: scope });
  const l = s.listener('http');
  await request(l);
  const load = new ConnectionLoad(l, { loops: 4 });
  scope.defer(() => load.stop());
  await load.waitOk(50);

  const h = startHaproxy(['-f', haproxyConfig(dir, port), '-db', '-x', expose], scope);
  await s.waitEvent((e) => e.event === 'listeners-taken', 15_000);
  await waitFor(() => socketOwnersSs({ localPort: port }).includes(h.pid), { timeout: 10_000, what: 'HAProxy holding the listener' });
  await haproxyAnswers(l);
  // Both accept on the one socket now; fdpass stops: it only closes its copy.
  const end = await s.stop();
  assert.equal(end.code, 0, end.stderr);
  assert.deepEqual(s.events('shutdown')[0]!.shared, [l.address]);
  assert.deepEqual(socketOwnersSs({ localPort: port }), [h.pid], 'HAProxy alone holds the listener');
  const ok = load.ok;
  const byFdpass = answeredByWorkers(load);
  await load.waitOk(ok + 100);
  await load.stop();
  assert.deepEqual(load.failures, [], `${load.failures.length} of ${load.attempts} failed: ${[...load.failureKinds()].join(', ')}`);
  assert.equal(answeredByWorkers(load), byFdpass, 'once fdpass has stopped, HAProxy answers everything');
  t.diagnostic(`${load.ok} requests, 0 failed; fdpass ${s.pid} -> HAProxy ${h.pid}`);
  await h.stop();
});
