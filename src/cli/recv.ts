/** `fdpass recv`: receive messages and print one JSON line for each. */
import * as fs from 'node:fs';
import { UnixSocket } from '../socket/socket';
import { UnixServer } from '../socket/server';
import { displayAddress } from '../socket/address';
import type { Message } from '../socket/message';
import { SocketClosedError } from '../errors';
import type { Fd } from '../socket/fd';
import { parseArgs } from 'node:util';
import { commonOptions, endpoint, socketType, UsageError } from './args';

const READ_MAX = 256;

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

  const print = (msg: Message) => {
    try {
      process.stdout.write(JSON.stringify(describe(msg, values.write, values.read)) + '\n');
    } finally {
      msg.close();
    }
  };
  let got = 0;
  const drain = async (sock: UnixSocket, eofIsError: boolean) => {
    try {
      for (; got < count; got++) {
        let msg: Message;
        try {
          msg = await sock.receive();
        } catch (err) {
          if (!eofIsError && err instanceof SocketClosedError) return;
          if (err instanceof SocketClosedError) throw new SocketClosedError(`recv: peer closed after ${got} of ${count} messages`);
          throw err;
        }
        print(msg);
      }
    } finally {
      sock.close();
    }
  };

  if (type === 'dgram') {
    const sock = await UnixSocket.datagram({ bind: address, passCredentials: true });
    process.stderr.write(`fdpass: listening on ${displayAddress(address)}\n`);
    await drain(sock, true);
  } else if (mode === 'connect') {
    await drain(await UnixSocket.connect(address, { type, raw: values.raw, passCredentials: true }), true);
  } else {
    // One peer after another until COUNT messages have come.
    const server = await UnixServer.listen(address, { type, raw: values.raw, passCredentials: true });
    try {
      process.stderr.write(`fdpass: listening on ${displayAddress(address)}\n`);
      while (got < count) await drain(await server.accept(), false);
    } finally {
      await server.close();
    }
  }
}

function describe(msg: Message, write: string | undefined, read: boolean) {
  const out: Record<string, unknown> = {
    data: msg.data.toString('utf8'),
    fds: msg.fds.map((fd) => describeFd(fd, write, read)),
  };
  if (msg.credentials) out.credentials = msg.credentials;
  if (msg.address !== undefined && msg.address !== '') out.from = displayAddress(msg.address);
  return out;
}

function describeFd(fd: Fd, write: string | undefined, read: boolean) {
  const kind = fd.kind();
  const d: Record<string, unknown> = { fd: fd.fd, kind, target: fd.target() };
  if (write !== undefined) {
    try {
      fs.writeSync(fd.fd, write);
      d.wrote = Buffer.byteLength(write);
    } catch (err) {
      d.writeError = (err as NodeJS.ErrnoException).code;
    }
  }
  if (read) {
    // Only files and block devices: pread never blocks on them and leaves the
    // shared file offset alone. Pipes and sockets could block: not read.
    if (kind === 'file' || kind === 'block') {
      const buf = Buffer.alloc(READ_MAX);
      const n = fs.readSync(fd.fd, buf, 0, READ_MAX, 0);
      d.read = buf.subarray(0, n).toString('utf8');
    } else {
      d.read = null;
    }
  }
  return d;
}
