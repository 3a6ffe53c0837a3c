/**
 * The public surface as a TypeScript user and an ES module user see it.
 *
 * Types: `npm run build` compiles this file (strict), so each
 * `@ts-expect-error` below must meet an error, or the build fails: an
 * unknown event name, a listener with the wrong arguments, a code that is
 * not fdpass's. The listeners' arguments are typed, not `any`.
 *
 * Runtime: the ES module entry (dist/src/index.mjs) exports exactly the
 * CommonJS entry's names, the same objects.
 */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import type {
  UnixSocket, UnixServer, Channel, Message, ChannelMessage, Credentials, FdpassError, FdpassErrorCode,
  PeerRefusedError, TimeoutError, UnexpectedFdsError, ProtocolError,
} from '../../src';
import { ROOT } from '../helpers/paths';
import { childEnv } from '../helpers/process';

/** Never called: it is here to be type-checked. */
export function typedEvents(sock: UnixSocket, server: UnixServer, channel: Channel): void {
  sock.on('message', (m: Message) => m.close());
  sock.once('refused', (peer: Credentials | undefined, err: PeerRefusedError) => void [peer?.uid, err.code]);
  sock.on('end', () => {});
  sock.on('error', (err: Error) => void err.message);
  server.on('connection', (s: UnixSocket) => s.close());
  server.on('refused', (peer, err) => void [peer.pid, err.code]);
  channel.on('message', (m: ChannelMessage) => void m.payload);
  channel.on('close', () => {});

  // @ts-expect-error: no such event
  sock.on('mesage', () => {});
  // @ts-expect-error: no such event on a server
  server.on('message', () => {});
  // @ts-expect-error: a 'message' listener gets a Message
  sock.on('message', (m: string) => m);
  // @ts-expect-error: a 'connection' listener gets a UnixSocket
  server.on('connection', (s: number) => s);
  // @ts-expect-error: a channel's 'message' is a ChannelMessage, which has no fd number
  channel.on('message', (m) => m.fd);
  sock.on('message', (m) => {
    // @ts-expect-error: m is a Message, not any
    m.noSuchProperty();
  });
}

/** Never called: error codes are string literal unions. */
export function errorCodes(err: FdpassError, timeout: TimeoutError, fds: UnexpectedFdsError, protocol: ProtocolError): FdpassErrorCode[] {
  const t: 'FDPASS_ERR_TIMEOUT' = timeout.code;
  const u: 'FDPASS_ERR_UNEXPECTED_FDS' = fds.code;
  const p: 'FDPASS_ERR_PROTOCOL' | 'FDPASS_ERR_UNEXPECTED_FDS' | 'FDPASS_ERR_FD_FLOOD' = protocol.code;
  // @ts-expect-error: not a code of fdpass
  const bad: FdpassError['code'] = 'FDPASS_ERR_NO_SUCH_CODE';
  // @ts-expect-error: a TimeoutError's code is only FDPASS_ERR_TIMEOUT
  const wrong: TimeoutError['code'] = 'FDPASS_ERR_PROTOCOL';
  return [err.code, t, u, p, bad, wrong];
}

test('the ES module entry exports the CommonJS entry\'s names, the same objects, and it as default', async () => {
  // In a child: this file is CommonJS, where tsc turns import() into require().
  const code = `
    import { createRequire } from 'node:module';
    import * as esm from ${JSON.stringify(pathToFileURL(path.join(ROOT, 'dist', 'src', 'index.mjs')).href)};
    const cjs = createRequire(import.meta.url)(${JSON.stringify(path.join(ROOT, 'dist', 'src', 'index.js'))});
    console.log(JSON.stringify({
      esm: Object.keys(esm).filter((k) => k !== 'default').sort(), cjs: Object.keys(cjs).sort(),
      different: Object.keys(cjs).filter((k) => esm[k] !== cjs[k]), defaultIsCjs: esm.default === cjs,
    }));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8', env: childEnv(), timeout: 20_000 });
  assert.equal(r.status, 0, r.stderr);
  const { esm, cjs, different, defaultIsCjs } = JSON.parse(r.stdout) as { esm: string[]; cjs: string[]; different: string[]; defaultIsCjs: boolean };
  assert.deepEqual(esm, cjs, 'every value export of src/index.ts must be listed in src/index.mjs too');
  assert.deepEqual(different, []);
  assert.equal(defaultIsCjs, true);
});
