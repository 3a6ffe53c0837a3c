/**
 * A connection handed to a worker is set up as the APP's server would set
 * up a connection it accepted itself (src/serve/accepted-socket.ts):
 * TCP_NODELAY and SO_KEEPALIVE from noDelay / keepAlive, allowHalfOpen and
 * pauseOnConnect. Each server of the fixture runs twice: listen()ed by Node
 * in this process (what Node does), and behind fdpass serve; the answers
 * must be the same. Before, every handed-over connection had Nagle's
 * algorithm on (a two-part response waited ~40 ms for the client's delayed
 * ACK), no keep-alive, and no half-open or paused start.
 */
import * as assert from 'node:assert/strict';
import * as net from 'node:net';
import * as path from 'node:path';
import { test } from 'node:test';
import { trackFds } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { APPS } from '../helpers/paths';
import { startServe } from '../helpers/serve';
import { request } from '../helpers/http';

interface Where { host: string; port: number }

/** Writes `data`, half-closes (FIN) at once or after `finAfterMs`, and returns everything read until the server closes. */
function exchange(w: Where, data: string, finAfterMs: number | null): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect(w.port, w.host, () => {
      c.write(data);
      if (finAfterMs !== null) setTimeout(() => c.end(), finAfterMs);
    });
    let got = '';
    c.setEncoding('utf8');
    c.on('data', (d) => (got += d));
    c.on('close', () => resolve(got));
    c.on('error', reject);
    setTimeout(() => { c.destroy(); reject(new Error(`no close within 5 s (read: ${JSON.stringify(got)})`)); }, 5000).unref();
  });
}

/** What each fixture server answers at `where(name)`. */
async function answers(where: (name: string) => Where): Promise<Record<string, unknown>> {
  const ep = (name: string) => ({ ...where(name), address: name, tls: false });
  return {
    plain: JSON.parse((await request(ep('plain'))).text),
    ka: JSON.parse((await request(ep('ka'))).text),
    half: await exchange(where('half'), 'hello', 0),
    paused: await exchange(where('paused'), 'ping', null),
  };
}

test('a handed-over connection gets its server\'s noDelay, keepAlive, allowHalfOpen and pauseOnConnect, as Node\'s own accept gives them', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);

  // What Node gives connections it accepts itself.
  const servers = (require(path.join(APPS, 'accept-options.js')) as { createServer: () => Record<string, net.Server> }).createServer();
  const ports: Record<string, number> = {};
  for (const [name, s] of Object.entries(servers)) {
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    ports[name] = (s.address() as net.AddressInfo).port;
  }
  let node: Record<string, unknown>;
  try {
    node = await answers((name) => ({ host: '127.0.0.1', port: ports[name]! }));
  } finally {
    for (const s of Object.values(servers)) {
      (s as net.Server & { closeAllConnections?: () => void }).closeAllConnections?.();
      await new Promise((r) => s.close(r));
    }
  }
  // The fixture's servers do set what this test is about.
  assert.deepEqual(node, {
    plain: { nodelay: true, keepalive: false, keepidle: null },
    ka: { nodelay: false, keepalive: true, keepidle: 7 },
    half: 'after FIN: hello',
    paused: 'read before resume: 0',
  });

  const names = ['plain', 'ka', 'half', 'paused'];
  const s = await startServe([...names.flatMap((n) => ['--listen', `127.0.0.1:0,name=${n}`]), '--workers', '1',
    '--control', path.join(dir, 'c.sock'), path.join(APPS, 'accept-options.js')], { owner: scope });
  const tree = await s.idleFds();
  const served = await answers((name) => ({ host: '127.0.0.1', port: s.listener(name).port! }));
  assert.deepEqual(served, node);
  await s.expectNoFdLeak(tree);
  const r = await s.stop();
  assert.equal(r.code, 0, r.stderr);
});
