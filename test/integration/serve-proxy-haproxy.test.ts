/**
 * fdpass serve behind a real HAProxy (TCP mode), the way it runs behind a
 * load balancer: `send-proxy` (v1) and `send-proxy-v2` to a plain and a TLS
 * listener with the `proxy` option (TLS end to end: HAProxy relays the
 * bytes). Clients connect to HAProxy from 127.0.0.2 to 127.0.0.9 (and from
 * ::1 where it exists) with a source port chosen here; the app's answer
 * has exactly that address and port, the header as the worker read it,
 * and, under the hash strategy, the same worker for the same client
 * address whichever route it took (the primary keys on the header's
 * client, not on HAProxy's address, which is the same for all). A
 * keep-alive connection keeps its client; the fd tables of the primary and
 * the workers return to their baseline.
 * Skipped, saying so, where haproxy is not installed.
 */
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { trackFds } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { APPS, DEV_CERT, DEV_KEY } from '../helpers/paths';
import { startServe, type ServeListener } from '../helpers/serve';
import { request, HttpConnection, type Endpoint } from '../helpers/http';
import { freePort, hasIPv6Loopback } from '../helpers/sockets';
import { HAProxy, haproxyCommand, NO_HAPROXY, type Route } from '../helpers/proxy';

const HAPROXY = haproxyCommand();
const skip = HAPROXY ? false : NO_HAPROXY;
const CLIENTS = ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5', '127.0.0.6', '127.0.0.7', '127.0.0.8', '127.0.0.9'];

/** Where a client connects to take `r`, with the TLS-ness of the listener behind it. */
function entry(r: Route, l: ServeListener): Endpoint {
  const address = r.host.includes(':') ? `[${r.host}]:${r.port}` : `${r.host}:${r.port}`;
  return { address, tls: l.tls, host: r.host, port: r.port };
}

function listenerOf(r: Route, ls: ServeListener[]): ServeListener {
  return ls.find((l) => l.port === r.to.port)!;
}

test('HAProxy send-proxy and send-proxy-v2 to tcp and tls listeners: the app sees the client\'s own address and port', { skip }, async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const s = await startServe(['--listen', '127.0.0.1:0,proxy', '--listen', '127.0.0.1:0,tls,proxy', '--cert', DEV_CERT, '--key', DEV_KEY,
    '--workers', '3', '--strategy', 'hash', '--control', path.join(dir, 'control.sock')], { owner: scope });
  const listeners = [s.listener('http'), s.listener('https')];
  assert.ok(listeners.every((l) => l.proxy), 'both listeners report the proxy option');
  const v6 = await hasIPv6Loopback();
  const routes: Omit<Route, 'port'>[] = [];
  for (const send of ['send-proxy', 'send-proxy-v2'] as const) {
    for (const l of listeners) {
      routes.push({ host: '127.0.0.1', to: { host: l.host!, port: l.port! }, send });
      if (v6) routes.push({ host: '::1', to: { host: l.host!, port: l.port! }, send });
    }
  }
  if (!v6) t.diagnostic('no ::1 here: IPv6 clients (TCP6, v2 AF_INET6) not tried');
  const haproxy = await HAProxy.start(HAPROXY!, dir, routes, scope);
  for (const r of haproxy.routes) await request(entry(r, listenerOf(r, listeners)));
  const tree = await s.idleFds();

  const workerOf = new Map<string, number>();
  for (const r of haproxy.routes) {
    const l = listenerOf(r, listeners);
    const version = r.send === 'send-proxy' ? 1 : 2;
    const sources = r.host === '::1' ? ['::1'] : CLIENTS;
    for (const client of sources) {
      const localPort = await freePort(client);
      const reply = await request(entry(r, l), { localAddress: client, localPort, path: `/${r.send}` });
      const what = `${r.send} to ${l.address} from ${client}:${localPort}`;
      assert.equal(reply.status, 200, what);
      assert.equal(reply.body.client, `${client}:${localPort}`, `${what}: the app sees the client, not HAProxy`);
      assert.equal(reply.body.tls, l.tls, what);
      const family = client.includes(':') ? 'IPv6' : 'IPv4';
      const front = r.host.includes(':') ? `[${r.host}]:${r.port}` : `${r.host}:${r.port}`;
      const from = client.includes(':') ? `[${client}]:${localPort}` : `${client}:${localPort}`;
      assert.equal(reply.body.proxy, `PROXY v${version} stream over ${family} for ${from} to ${front}`, what);
      const seen = workerOf.get(client);
      if (seen === undefined) workerOf.set(client, reply.body.worker);
      else assert.equal(reply.body.worker, seen, `${what}: hash strategy, same client address, same worker`);
    }
  }
  const used = new Set([...workerOf.entries()].filter(([c]) => c !== '::1').map(([, w]) => w));
  assert.ok(used.size >= 2, `clients spread over workers by their own address (${JSON.stringify([...workerOf])})`);

  // One connection, several requests: the header was read once, the client stays.
  const r0 = haproxy.routes.find((r) => r.send === 'send-proxy-v2' && listenerOf(r, listeners).tls && r.host === '127.0.0.1')!;
  const localPort = await freePort('127.0.0.2');
  const conn = await HttpConnection.open(entry(r0, listenerOf(r0, listeners)), { localAddress: '127.0.0.2', localPort });
  try {
    for (const p of ['/a', '/b', '/c']) assert.equal((await conn.get(p)).body.client, `127.0.0.2:${localPort}`, `keep-alive ${p}`);
  } finally {
    await conn.close();
  }
  await s.expectNoFdLeak(tree);
  const result = await s.stop();
  assert.equal(result.code, 0, result.stderr);
  t.diagnostic(`stopped: ${JSON.stringify(s.events('stopped')[0])}; header errors: ${JSON.stringify(s.events('proxy-header-error'))}`);
  assert.deepEqual(s.events('proxy-header-error').filter((e) => !/after 0 bytes/.test(String(e.reason))), [], 'HAProxy\'s headers are all valid');
});

test('HAProxy send-proxy-v2 to a tls proxy listener whose app does its own TLS (https.Server): the app sees the client', { skip }, async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const s = await startServe(['--listen', '127.0.0.1:0,tls,proxy', '--cert', DEV_CERT, '--key', DEV_KEY, '--workers', '1',
    '--control', path.join(dir, 'control.sock'), path.join(APPS, 'https-server.js')], { owner: scope });
  const l = s.listener(0);
  const haproxy = await HAProxy.start(HAPROXY!, dir, [{ host: '127.0.0.1', to: { host: l.host!, port: l.port! }, send: 'send-proxy-v2' }], scope);
  const r = haproxy.routes[0]!;
  await request(entry(r, l));
  const tree = await s.idleFds();
  const localPort = await freePort('127.0.0.3');
  const reply = await request(entry(r, l), { localAddress: '127.0.0.3', localPort });
  assert.equal(reply.body.tls, true);
  assert.equal(reply.body.client, `127.0.0.3:${localPort}`);
  await s.expectNoFdLeak(tree);
  const result = await s.stop();
  assert.equal(result.code, 0, result.stderr);
});
