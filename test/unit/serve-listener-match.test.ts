/**
 * Which inherited listening fd serves which --listen spec
 * (src/serve/listener-match.ts), pure: by name AND address for tcp and unix
 * specs (port 0 takes any port of the host; IPv6 spellings compare by
 * value), by name for systemd specs, duplicates of one socket and what no
 * spec takes are unused, specs served in order.
 */
import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { matchListeners, type ListeningFdInfo, type MatchSpec } from '../../src/serve/listener-match';

function tcp(fd: number, name: string, host: string, port: number, more: Partial<ListeningFdInfo> = {}): ListeningFdInfo {
  return { fd, name, family: host.includes(':') ? 'inet6' : 'inet', stream: true, listening: true, host, port, id: `0:${fd}`, ...more };
}
function unix(fd: number, name: string, path: string): ListeningFdInfo {
  return { fd, name, family: 'unix', stream: true, listening: true, unixAddress: Buffer.from(path), id: `0:${fd}` };
}
const spec = (s: Partial<MatchSpec> & Pick<MatchSpec, 'kind' | 'name'>): MatchSpec => s;
const fdsOf = (m: { bySpec: ListeningFdInfo[][] }) => m.bySpec.map((l) => l.map((f) => f.fd));

test('tcp and unix specs take the fd with their name and their address; the rest is unused', () => {
  const fds = [tcp(3, 'https', '127.0.0.1', 8443), tcp(4, 'http', '127.0.0.1', 8080), unix(5, 'local', '/run/app.sock'), tcp(6, 'http', '127.0.0.1', 9090)];
  const m = matchListeners([
    spec({ kind: 'tcp', name: 'http', host: '127.0.0.1', port: 8080 }),
    spec({ kind: 'tcp', name: 'https', host: '127.0.0.1', port: 8443 }),
    spec({ kind: 'unix', name: 'local', unixAddress: Buffer.from('/run/app.sock') }),
  ], fds);
  assert.deepEqual(fdsOf(m), [[4], [3], [5]]);
  assert.deepEqual(m.unused.map((f) => f.fd), [6]);
});

test('a name alone or an address alone is not enough; nor is a socket that does not listen, or is no stream', () => {
  const specs = [spec({ kind: 'tcp', name: 'http', host: '127.0.0.1', port: 8080 })];
  for (const f of [
    tcp(3, 'admin', '127.0.0.1', 8080),
    tcp(3, 'http', '127.0.0.1', 8081),
    tcp(3, 'http', '127.0.0.2', 8080),
    tcp(3, 'http', '::1', 8080),
    tcp(3, 'http', '127.0.0.1', 8080, { listening: false }),
    tcp(3, 'http', '127.0.0.1', 8080, { stream: false }),
    { fd: 3, name: 'http', family: null, stream: false, listening: false, id: 'x' } as ListeningFdInfo,
    unix(3, 'http', '127.0.0.1:8080'),
  ]) {
    const m = matchListeners(specs, [f]);
    assert.deepEqual(fdsOf(m), [[]], JSON.stringify(f));
    assert.deepEqual(m.unused, [f]);
  }
  assert.deepEqual(fdsOf(matchListeners([spec({ kind: 'unix', name: 'l', unixAddress: Buffer.from('/a') })], [unix(3, 'l', '/b')])), [[]]);
});

test('port 0 takes any port of its host; IPv6 hosts compare by value', () => {
  assert.deepEqual(fdsOf(matchListeners([spec({ kind: 'tcp', name: 'http', host: '127.0.0.1', port: 0 })], [tcp(3, 'http', '127.0.0.1', 41234)])), [[3]]);
  assert.deepEqual(fdsOf(matchListeners([spec({ kind: 'tcp', name: 'http', host: '0:0:0:0:0:0:0:1', port: 80 })], [tcp(3, 'http', '::1', 80)])), [[3]]);
  assert.deepEqual(fdsOf(matchListeners([spec({ kind: 'tcp', name: 'http', host: '::', port: 80 })], [tcp(3, 'http', '0.0.0.0', 80)])), [[]]);
});

test('two identical specs get one fd each, in order; a second fd of the same socket is unused', () => {
  const s = spec({ kind: 'tcp', name: 'http', host: '0.0.0.0', port: 80 });
  const m = matchListeners([s, s], [tcp(3, 'http', '0.0.0.0', 80), tcp(4, 'http', '0.0.0.0', 80, { id: '0:3' }), tcp(5, 'http', '0.0.0.0', 80)]);
  assert.deepEqual(fdsOf(m), [[3], [5]]);
  assert.deepEqual(m.unused.map((f) => f.fd), [4], 'fd 4 is the same socket as fd 3 (a socket unit and the fd store both passed it)');
});

test('systemd specs take by fd name (all that are left without one), after the address specs', () => {
  const fds = [tcp(3, 'web', '0.0.0.0', 80), tcp(4, 'http', '127.0.0.1', 8080), tcp(5, 'web', '0.0.0.0', 81), unix(6, 'other', '/x')];
  const m = matchListeners([spec({ kind: 'systemd', name: 'web', fdName: 'web' }), spec({ kind: 'tcp', name: 'http', host: '127.0.0.1', port: 8080 })], fds);
  assert.deepEqual(fdsOf(m), [[3, 5], [4]]);
  assert.deepEqual(m.unused.map((f) => f.fd), [6]);
  const all = matchListeners([spec({ kind: 'tcp', name: 'http', host: '127.0.0.1', port: 8080 }), spec({ kind: 'systemd', name: 'x', fdName: '' })], fds);
  assert.deepEqual(fdsOf(all), [[4], [3, 5, 6]]);
  assert.deepEqual(all.unused, []);
});
