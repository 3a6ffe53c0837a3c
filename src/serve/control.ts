/**
 * The control socket of `fdpass serve`: a SOCK_SEQPACKET Unix socket, mode
 * 0600, that refuses any peer whose uid is not the primary's (SO_PEERCRED),
 * speaking the channel protocol: 'status' -> Status, 'reload' -> {}.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { UnixServer } from '../socket/server';
import { UnixSocket } from '../socket/socket';
import { Channel } from '../channel/channel';
import type { Primary } from './primary';
import type { Status } from './status';

/** $XDG_RUNTIME_DIR/fdpass/control.sock, else <tmpdir>/fdpass-<uid>/control.sock. */
export function defaultControlPath(): string {
  const base = process.env.XDG_RUNTIME_DIR ? path.join(process.env.XDG_RUNTIME_DIR, 'fdpass') : path.join(os.tmpdir(), `fdpass-${process.getuid!()}`);
  return path.join(base, 'control.sock');
}

export async function startControl(primary: Primary, file: string): Promise<UnixServer> {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const uid = process.getuid!();
  const server = await UnixServer.listen(file, { type: 'seqpacket', mode: 0o600, allow: { uids: [uid] } });
  server.unref();
  server.on('error', () => {});
  server.on('connection', (sock: UnixSocket) => {
    sock.unref();
    const ch = new Channel(sock);
    ch.on('error', () => ch.close());
    ch.handle('status', () => primary.freshStatus());
    ch.handle('reload', async () => {
      await primary.reload();
      return {};
    });
  });
  return server;
}

export async function queryStatus(file: string, timeout = 5000): Promise<Status> {
  const ch = await Channel.connect(file, { type: 'seqpacket', timeout });
  try {
    const reply = await ch.request<Status>('status');
    reply.message.close();
    return reply.payload;
  } finally {
    ch.close();
  }
}
