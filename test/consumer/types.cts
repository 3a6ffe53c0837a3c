// The installed package's types through require() (index.d.ts): typed
// events and error codes, checked by tsc. Compiles only; nothing runs it.
import fdpass = require('fdpass');
import type { Message, ChannelMessage, FdpassError, UnixSocket, UnixServer, Channel } from 'fdpass';

export function typed(sock: UnixSocket, server: UnixServer, channel: Channel): void {
  sock.on('message', (m: Message) => m.close());
  sock.on('end', () => {});
  server.on('connection', (s: UnixSocket) => s.close());
  server.on('refused', (peer, err) => console.log(peer.uid, err.code));
  channel.on('message', (m: ChannelMessage) => m.message.close());
  // @ts-expect-error: no such event
  sock.on('mesage', () => {});
  // @ts-expect-error: a connection listener gets a UnixSocket, not a string
  server.on('connection', (s: string) => s);
  const code: FdpassError['code'] = 'FDPASS_ERR_TIMEOUT';
  // @ts-expect-error: not a code of fdpass
  const bad: FdpassError['code'] = 'FDPASS_ERR_NO_SUCH_CODE';
  console.log(code, bad, fdpass.MAX_FDS);
}
