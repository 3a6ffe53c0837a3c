/** `fdpass recv`: receive messages and print one JSON line for each. */
import { UnixSocket } from '../socket/socket';
import { UnixServer } from '../socket/server';
import { displayAddress } from '../socket/address';
import type { Message } from '../socket/message';
import { SocketClosedError } from '../errors';
import type { Fd, FdKind } from '../socket/fd';
import { parseArgs } from 'node:util';
import { commonOptions, endpoint, socketType, UsageError } from './args';
import { errorLine } from './error-line';
import { readHead, writeText, WRITE_DEADLINE_MS } from './fd-io';

export async function recv(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, strict: true, options: {
    ...commonOptions,
    count: { type: 'string', default: '1' },
    write: { type: 'string' },
    read: { type: 'boolean', default: false },
  } });
  if (positionals.length) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  const type = socketType(values.type);
  const { mode, address } = endpoint(values);
  const count = Number(values.count);
  if (!Number.isInteger(count) || count < 1) throw new UsageError(`--count must be a positive integer, not '${values.count}'`);
  if (type === 'dgram' && mode === 'connect') throw new UsageError('recv over dgram needs --listen PATH to bind (send --connect PATH sends to it)');

  const write = values.write === undefined ? undefined : Buffer.from(values.write);
  const print = async (msg: Message) => {
    try {
      process.stdout.write(JSON.stringify(await describe(msg, write, values.read)) + '\n');
    } finally {
      msg.close();
    }
  };
  let got = 0;
  /** Reads messages from one connection. `onePeer`: the peer of a --listen
   * server, one of many: its end, or an error of its own (a protocol error,
   * say), is reported and ends only this connection; the next peer is
   * accepted. Otherwise EOF before COUNT messages, or any error, ends recv. */
  const drain = async (sock: UnixSocket, onePeer: boolean) => {
    const who = onePeer ? peerName(sock) : '';
    try {
      while (got < count) {
        let msg: Message;
        try {
          msg = await sock.receive();
        } catch (err) {
          if (onePeer && err instanceof SocketClosedError) return;
          if (err instanceof SocketClosedError) throw new SocketClosedError(`recv: peer closed after ${got} of ${count} messages`);
          if (!onePeer) throw err;
          process.stderr.write(`fdpass: ${who}: ${errorLine(err)}\n`);
          continue; // the next receive says whether the connection goes on
        }
        got++;
        await print(msg);
      }
    } finally {
      sock.close();
    }
  };

  if (type === 'dgram') {
    const sock = await UnixSocket.datagram({ bind: address, passCredentials: true });
    process.stderr.write(`fdpass: listening on ${displayAddress(address)}\n`);
    await drain(sock, false);
  } else if (mode === 'connect') {
    await drain(await UnixSocket.connect(address, { type, raw: values.raw, passCredentials: true }), false);
  } else {
    // One peer after another until COUNT messages have come.
    const server = await UnixServer.listen(address, { type, raw: values.raw, passCredentials: true });
    try {
      process.stderr.write(`fdpass: listening on ${displayAddress(address)}\n`);
      while (got < count) await drain(await server.accept(), true);
    } finally {
      await server.close();
    }
  }
}

async function describe(msg: Message, write: Buffer | undefined, read: boolean) {
  const deadline = Date.now() + WRITE_DEADLINE_MS;
  const fds = [];
  for (const fd of msg.fds) fds.push(await describeFd(fd, write, read, deadline));
  const out: Record<string, unknown> = { data: msg.data.toString('utf8'), fds };
  if (msg.credentials) out.credentials = msg.credentials;
  if (msg.address !== undefined && msg.address !== '') out.from = displayAddress(msg.address);
  return out;
}

/** One fd's entry: what it is, and what --write and --read did through it
 * (fd-io.ts); a failure is this fd's alone. */
async function describeFd(fd: Fd, write: Buffer | undefined, read: boolean, deadline: number) {
  const d: Record<string, unknown> = { fd: fd.fd };
  let kind: FdKind;
  try {
    kind = fd.kind();
    d.kind = kind;
    d.target = fd.target();
  } catch (err) {
    d.error = (err as { code?: string }).code ?? 'EIO';
    return d;
  }
  if (write !== undefined) {
    const w = await writeText(fd.fd, kind, write, deadline);
    if (w.writeError === undefined || w.wrote > 0) d.wrote = w.wrote;
    if (w.writeError !== undefined) d.writeError = w.writeError;
  }
  if (read) Object.assign(d, readHead(fd.fd, kind));
  return d;
}

/** The peer of a connection as recv reports it: "peer pid P uid U". */
function peerName(sock: UnixSocket): string {
  try {
    const c = sock.peerCredentials();
    return `peer pid ${c.pid} uid ${c.uid}`;
  } catch {
    return 'peer';
  }
}
