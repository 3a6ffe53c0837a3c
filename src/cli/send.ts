/** `fdpass send`: open FILEs and send all their fds in one message. */
import * as fs from 'node:fs';
import { UnixSocket } from '../socket/socket';
import { UnixServer } from '../socket/server';
import { displayAddress } from '../socket/address';
import { MAX_FDS } from '../socket/frame';
import { parseArgs } from 'node:util';
import { commonOptions, endpoint, socketType, UsageError } from './args';

export async function send(args: string[]): Promise<void> {
  const { values, positionals: files } = parseArgs({ args, allowPositionals: true, strict: true, options: {
    ...commonOptions,
    data: { type: 'string' },
    credentials: { type: 'boolean', default: false },
  } });
  const type = socketType(values.type);
  const { mode, address } = endpoint(values);
  if (files.length === 0) throw new UsageError('name at least one FILE to send');
  if (files.length > MAX_FDS) throw new UsageError(`at most ${MAX_FDS} FILEs fit in one message`);
  if (type === 'dgram' && mode === 'listen') throw new UsageError('send over dgram needs --connect PATH (the receiver binds it with recv --listen)');
  const raw = values.raw;
  // A stream message with fds needs a byte to carry them.
  const data = values.data ?? (type === 'stream' && raw ? 'X' : '');

  const fds: number[] = [];
  try {
    // fs's error says "open FILE" (syscall and path) and its code.
    for (const f of files) fds.push(fs.openSync(f, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o666));
    const sock = await open(mode, address, type, raw);
    try {
      await sock.send({ data, fds, credentials: values.credentials, to: type === 'dgram' ? address : undefined });
      process.stdout.write(JSON.stringify({ sent: { data, files, fds } }) + '\n');
    } finally {
      sock.close();
    }
  } finally {
    for (const fd of fds) fs.closeSync(fd);
  }
}

async function open(mode: 'connect' | 'listen', address: string, type: 'stream' | 'seqpacket' | 'dgram', raw: boolean): Promise<UnixSocket> {
  if (type === 'dgram') return UnixSocket.datagram();
  if (mode === 'connect') return UnixSocket.connect(address, { type, raw });
  const server = await UnixServer.listen(address, { type, raw });
  try {
    process.stderr.write(`fdpass: listening on ${displayAddress(address)}\n`);
    return await server.accept();
  } finally {
    await server.close();
  }
}
