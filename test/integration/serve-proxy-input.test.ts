/**
 * fdpass serve's `proxy` listeners without a balancer: clients here play
 * one, writing PROXY headers by hand.
 *
 * - The hash strategy keys on the header's client: v1 and v2 headers that
 *   arrive with the connection (a TCP listener, TCP_DEFER_ACCEPT) and ones
 *   that come 30 ms after it (a Unix listener: the primary parks the
 *   connection until its header is in) send the same client address to the
 *   same worker, and different clients to different workers.
 * - Bad input: a malformed or oversized header, HTTP without a header, a
 *   header that stops halfway, a client that sends nothing, a TLS client
 *   that sends its header and then no ClientHello: each is closed by the
 *   worker (at once, or at the deadline: one deadline for header and TLS
 *   handshake together), with a proxy-header-error log line saying why
 *   (one a second at most, the others counted); the server keeps serving;
 *   no fd stays open in the primary or the workers.
 * - A PROXY header on listeners without the option is just bytes: HTTP
 *   answers 400, TLS fails; the app sees the real peer; a client-error line
 *   hints at the misconfiguration.
 */
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { trackFds } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { DEV_CERT, DEV_KEY } from '../helpers/paths';
import { startServe, runServe, type ServeListener, type ServeProcess } from '../helpers/serve';
import { request, HttpConnection, type Reply } from '../helpers/http';
import { sleep } from '../helpers/wait';
import { proxyV1, proxyV2 } from '../helpers/proxy';
import { runCli } from '../helpers/process';

const TIMEOUT = 300;
/** Log lines of one event come at most once a second (log.ts). */
const THROTTLE = 1000;

/** A request as a client behind a balancer: `header` first; `lateMs` after connecting, if given. */
async function viaHeader(l: ServeListener, header: Buffer, lateMs = 0): Promise<Reply> {
  if (!lateMs) return request(l, { preamble: header });
  const c = await HttpConnection.open({ ...l, tls: false });
  try {
    await sleep(lateMs);
    c.socket.write(header);
    return await c.get('/late');
  } finally {
    await c.close();
  }
}

test('hash strategy on proxy listeners: the header\'s client picks the worker, whether the header came with the connection or 30 ms after it', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const s = await startServe(['--listen', '127.0.0.1:0,proxy', '--listen', `unix:${path.join(dir, 'lb.sock')},proxy,name=lb`,
    '--workers', '3', '--strategy', 'hash', '--control', path.join(dir, 'control.sock')], { owner: scope });
  const tcp = s.listener('http');
  const unix = s.listener('lb');
  assert.ok(tcp.proxy && unix.proxy, 'the start-up lines say (proxy)');
  const st = await runCli(['status', '--control', s.control]);
  assert.equal(st.stdout.split('\n')[2], `listeners: http ${tcp.address} (proxy), lb ${unix.address} (proxy)`);
  await viaHeader(tcp, proxyV1('192.0.2.250', '192.0.2.1', 1, 80));
  await viaHeader(unix, proxyV1('192.0.2.250', '192.0.2.1', 1, 80), 30);
  const tree = await s.idleFds();
  const clients = Array.from({ length: 9 }, (_, i) => (i % 3 === 2 ? `2001:db8::${i + 1}` : `198.51.100.${i + 1}`));
  const workerOf = new Map<string, number>();
  for (const [i, client] of clients.entries()) {
    const header = (port: number) => (i % 2 ? proxyV2({ src: client, dst: client.includes(':') ? '2001:db8::ffff' : '192.0.2.1', sport: port, dport: 443 }) : proxyV1(client, client.includes(':') ? '2001:db8::ffff' : '192.0.2.1', port, 443));
    const now = await viaHeader(tcp, header(40000 + i));
    const late = await viaHeader(unix, header(50000 + i), 30);
    assert.equal(now.body.client, `${client}:${40000 + i}`, 'the app sees the header\'s client (TCP)');
    assert.equal(late.body.client, `${client}:${50000 + i}`, 'the app sees the header\'s client (Unix, header late)');
    assert.equal(late.body.worker, now.body.worker, `${client}: the same worker with the header on time and late`);
    workerOf.set(client, now.body.worker);
  }
  assert.ok(new Set(workerOf.values()).size >= 2, `clients spread over the workers: ${JSON.stringify([...workerOf])}`);
  // Without a client address (LOCAL, UNKNOWN) the balancer's own address is the key: still served.
  assert.equal((await viaHeader(tcp, proxyV2({ command: 0 }))).status, 200);
  assert.equal((await viaHeader(unix, Buffer.from('PROXY UNKNOWN\r\n'), 30)).body.client, 'unix socket peer');
  await s.expectNoFdLeak(tree);
  const result = await s.stop();
  assert.equal(result.code, 0, result.stderr);
  const stopped = s.events('stopped')[0]!;
  t.diagnostic(`stopped: ${JSON.stringify(stopped)}`);
  // Each late header is usually parked for; on a loaded machine the primary may get to a
  // connection only after its header came (then nothing needs parking). The test must still
  // have exercised the parking path, and the same-worker checks above hold either way.
  assert.ok(Number(stopped.proxyParked) >= 1, 'the late headers were waited for in the primary');
});

/** A raw client on `l` that writes `bytes` (maybe nothing): when and by whom it was closed, and what came back. */
async function refused(l: ServeListener, bytes?: Buffer, thenClose = false): Promise<{ byPeer: boolean; ms: number; got: number }> {
  const c = await HttpConnection.open({ ...l, tls: false });
  const start = Date.now();
  if (bytes) c.socket.write(bytes);
  if (thenClose) c.socket.end();
  try {
    const byPeer = await Promise.race([c.closedByPeer, sleep(TIMEOUT + 2000).then(() => 'open' as const)]);
    assert.notEqual(byPeer, 'open', `connection to ${l.address} still open ${TIMEOUT + 2000} ms after ${bytes ? JSON.stringify(bytes.toString('latin1').slice(0, 40)) : 'nothing'}`);
    return { byPeer: byPeer as boolean, ms: Date.now() - start, got: c.bytes };
  } finally {
    await c.close();
  }
}

/** The status of a GET after `preamble`, or the code of the failure ('EOF', a TLS code). */
async function answer(l: ServeListener, preamble: Buffer): Promise<number | string> {
  const c = new HttpConnection(l, { preamble });
  try {
    return (await c.exchange('/', { close: true, timeout: 5000 })).status;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? 'ERROR';
  } finally {
    await c.close();
  }
}

function headerErrors(s: ServeProcess): { reason: string; suppressed?: number; peer?: string; listener?: string }[] {
  return s.events('proxy-header-error') as never;
}

test('bad input on proxy listeners: closed at once or at the deadline, a log line saying why, the server keeps serving, no fd leak', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const s = await startServe(['--listen', '127.0.0.1:0,proxy', '--listen', '127.0.0.1:0,tls,proxy', '--cert', DEV_CERT, '--key', DEV_KEY,
    '--workers', '1', '--handshake-timeout', String(TIMEOUT), '--control', path.join(dir, 'control.sock')], { owner: scope });
  const http = s.listener('http');
  const https = s.listener('https');
  const good = () => proxyV2({ src: '203.0.113.7', dst: '192.0.2.1', sport: 4242, dport: 443 });
  for (const l of [http, https]) assert.equal((await request(l, { preamble: good() })).body.client, '203.0.113.7:4242');
  const tree = await s.idleFds();

  // 1. Malformed: closed at once, nothing answered; the line names the reason and the balancer.
  const bad = await refused(http, Buffer.from('PROXY TCP4 203.0.113.7 192.0.2.1 99999 80\r\nGET / HTTP/1.1\r\n\r\n'));
  assert.deepEqual([bad.byPeer, bad.got], [true, 0], 'closed by the server, no answer');
  assert.ok(bad.ms < TIMEOUT, `closed at once (${bad.ms} ms), not at the deadline`);
  const first = await s.waitEvent((e) => e.event === 'proxy-header-error', 5000, 'proxy-header-error line');
  assert.equal(first.reason, 'v1: bad source port \'99999\'');
  assert.equal(first.listener, `http ${http.address}`);
  assert.match(String(first.peer), /^127\.0\.0\.1:\d+$/);
  const firstAt = Date.parse(first.time);

  // 2. Past the throttle: a client that sends nothing is closed at the deadline.
  await sleep(Math.max(0, firstAt + THROTTLE + 50 - Date.now()));
  const silent = await refused(http);
  assert.equal(silent.byPeer, true);
  assert.ok(silent.ms >= TIMEOUT - 20, `the silent client was closed at the deadline (${silent.ms} ms)`);
  const second = await s.waitEvent((e) => e.event === 'proxy-header-error' && e !== first, 5000, 'second proxy-header-error line');
  assert.equal(second.reason, `no complete header within ${TIMEOUT} ms`);

  // 3. Within a second of that line: the rest, at once; each closed, their lines counted, not written.
  const v2 = good();
  // (The TLS client with a good header fails its handshake, not its header: no proxy-header-error.)
  const cases: [string, Promise<{ byPeer: boolean; ms: number; got: number }>, 'now' | 'deadline', 'header' | 'tls'][] = [
    ['HTTP without a header', refused(http, Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')), 'now', 'header'],
    ['v1 line without CRLF in 107 bytes', refused(http, Buffer.from('PROXY UNKNOWN ' + 'x'.repeat(120))), 'now', 'header'],
    ['v2 version 1', refused(http, proxyV2({ version: 1, src: '203.0.113.7', dst: '192.0.2.1' })), 'now', 'header'],
    ['v2 header cut short, then silence', refused(http, v2.subarray(0, 20)), 'deadline', 'header'],
    ['v1 header cut short, then silence', refused(http, Buffer.from('PROXY TCP4 203.0.')), 'deadline', 'header'],
    ['v2 header cut short, then closed', refused(http, v2.subarray(0, 20), true), 'now', 'header'],
    ['tls: a header, then no ClientHello', refused(https, good()), 'deadline', 'tls'],
    ['tls: no header, a ClientHello', refused(https, Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05])), 'now', 'header'],
  ];
  for (const [what, p, when] of cases) {
    const r = await p;
    assert.equal(r.byPeer, true, `${what}: closed by the server`);
    assert.equal(r.got, 0, `${what}: nothing answered`);
    if (when === 'now') assert.ok(r.ms < TIMEOUT - 50, `${what}: closed at once (${r.ms} ms)`);
    // One deadline for the header and the TLS handshake together, not one each.
    else assert.ok(r.ms >= TIMEOUT - 20 && r.ms < 2 * TIMEOUT, `${what}: closed at the deadline (${r.ms} ms)`);
  }
  // Every connection is gone from the worker, and the server serves.
  for (const l of [http, https]) assert.equal((await request(l, { preamble: proxyV1('198.51.100.1', '192.0.2.1', 5, 443) })).body.client, '198.51.100.1:5');
  await s.expectNoFdLeak(tree);

  // The next line, a second after the last, counts those left out.
  const secondAt = Date.parse(second.time);
  await sleep(Math.max(0, secondAt + THROTTLE + 50 - Date.now()));
  await refused(http, Buffer.from('PROXY TCP6 ::1 ::1 1\r\n'));
  const third = await s.waitEvent((e) => e.event === 'proxy-header-error' && e !== first && e !== second, 5000, 'third proxy-header-error line');
  assert.equal(third.reason, 'v1: 5 fields, not 6 separated by single spaces');
  assert.equal(third.suppressed, cases.filter((c) => c[3] === 'header').length, JSON.stringify(headerErrors(s)));

  const result = await s.stop();
  assert.equal(result.code, 0, result.stderr);
});

test('a PROXY header on listeners without the option is not an address: HTTP answers 400, TLS fails, a client-error line hints; the server keeps serving', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const s = await startServe(['--listen', '127.0.0.1:0', '--listen', '127.0.0.1:0,tls', '--cert', DEV_CERT, '--key', DEV_KEY,
    '--workers', '1', '--control', path.join(dir, 'control.sock')], { owner: scope });
  const http = s.listener('http');
  const https = s.listener('https');
  for (const l of [http, https]) assert.equal((await request(l)).status, 200);
  const tree = await s.idleFds();

  assert.equal(await answer(http, proxyV1('203.0.113.7', '192.0.2.1', 4242, 80)), 400, 'v1 header on plain http');
  const line = await s.waitEvent((e) => e.event === 'client-error', 5000, 'client-error line');
  assert.equal(line.error, 'HPE_INVALID_METHOD');
  assert.equal(line.listener, `http ${http.address}`);
  assert.match(String(line.hint), /PROXY protocol header, and this listener has no proxy option/);

  assert.equal(await answer(http, proxyV2({ src: '203.0.113.7', dst: '192.0.2.1', sport: 4242, dport: 80 })), 400, 'v2 header on plain http');
  const tlsFail = await answer(https, proxyV1('203.0.113.7', '192.0.2.1', 4242, 443));
  assert.equal(typeof tlsFail, 'string', `header before TLS on a tls listener: the handshake fails (${tlsFail})`);

  // Served as ever, and as the connection's own peer.
  for (const l of [http, https]) assert.match(String((await request(l)).body.client), /^127\.0\.0\.1:\d+$/);
  await s.expectNoFdLeak(tree);
  // A second later, the TLS refusal (or the v2 one) has its own line, or is counted.
  await sleep(Math.max(0, Date.parse(line.time) + THROTTLE + 50 - Date.now()));
  await answer(https, proxyV1('203.0.113.7', '192.0.2.1', 4242, 443));
  const next = await s.waitEvent((e) => e.event === 'client-error' && e !== line, 5000, 'second client-error line');
  assert.match(String(next.error), /^ERR_SSL_/);
  assert.ok(Number(next.suppressed) >= 1, JSON.stringify(s.events('client-error')));
  assert.equal(s.events('proxy-header-error').length, 0, 'no header is read on these listeners');
  const result = await s.stop();
  assert.equal(result.code, 0, result.stderr);
});

test('--listen ...,proxy is an option like tls; a misspelt one is a usage error naming it', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const r = await runServe(['--listen', '127.0.0.1:0,proxi', '--control', path.join(dir, 'control.sock')]);
  assert.equal(r.code, 2, r.stderr);
  assert.equal(r.stderr.split('\n')[0], 'fdpass: --listen 127.0.0.1:0,proxi: unknown option \'proxi\' (tls, proxy, name=NAME): EUSAGE');
  assert.deepEqual(r.events, [], 'nothing started');
});
