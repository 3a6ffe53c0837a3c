/**
 * `fdpass send`: open FILEs and send all their fds in one message.
 *
 * FILEs are opened read-only unless --write (read-write) or --create (also
 * create a missing one) says otherwise. Existing FILEs are opened before the
 * peer is reached, so that a typo or a permission fails at once; a missing
 * one is created only after the connection is made (or accepted, with
 * --listen; a datagram socket is connected to the receiver's address): a
 * failed connect leaves no empty file behind.
 */
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
    write: { type: 'boolean', default: false },
    create: { type: 'boolean', default: false },
  } });
  const type = socketType(values.type);
  const { mode, address } = endpoint(values);
  if (files.length === 0) throw new UsageError('name at least one FILE to send');
  if (files.length > MAX_FDS) throw new UsageError(`at most ${MAX_FDS} FILEs fit in one message`);
  if (type === 'dgram' && mode === 'listen') throw new UsageError('send over dgram needs --connect PATH (the receiver binds it with recv --listen)');
  const raw = values.raw;
  // A stream message with fds needs a byte to carry them.
  const data = values.data ?? (type === 'stream' && raw ? 'X' : '');

  const access = values.write || values.create ? fs.constants.O_RDWR : fs.constants.O_RDONLY;
  const fds: number[] = [];
  try {
    // fs's error says "open FILE" (syscall and path) and its code. A FILE
    // that --create is to create is left for when there is a peer (-1).
    for (const f of files) fds.push(openExisting(f, access, values.create));
    const sock = await open(mode, address, type, raw);
    try {
      files.forEach((f, i) => {
        if (fds[i] === -1) fds[i] = fs.openSync(f, access | fs.constants.O_CREAT, 0o666);
      });
      await sock.send({ data, fds, credentials: values.credentials });
      process.stdout.write(JSON.stringify({ sent: { data, files, fds } }) + '\n');
    } finally {
      sock.close();
    }
  } finally {
    for (const fd of fds) if (fd !== -1) fs.closeSync(fd);
  }
}

/** FILE opened with `access`; -1 if it does not exist and `create` says to
 * create it later. */
function openExisting(file: string, access: number, create: boolean): number {
  try {
    return fs.openSync(file, access);
  } catch (err) {
    if (create && (err as NodeJS.ErrnoException).code === 'ENOENT') return -1;
    throw err;
  }
}

async function open(mode: 'connect' | 'listen', address: string, type: 'stream' | 'seqpacket' | 'dgram', raw: boolean): Promise<UnixSocket> {
  // Connected, so that a missing receiver fails here, before any FILE is created.
  if (type === 'dgram') return UnixSocket.datagram({ connect: address });
  if (mode === 'connect') return UnixSocket.connect(address, { type, raw });
  const server = await UnixServer.listen(address, { type, raw });
  try {
    process.stderr.write(`fdpass: listening on ${displayAddress(address)}\n`);
    return await server.accept();
  } finally {
    await server.close();
  }
}
