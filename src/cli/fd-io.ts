/**
 * What `fdpass recv` does through the fds a peer sent (--read, --write),
 * such that no fd can end or hang the receiver: each failure belongs to
 * its fd (its errno code goes in that fd's entry of the JSON line), and a
 * write gives up at a deadline.
 *
 * - Reading takes the first bytes of files and block devices only, with
 *   pread (it never blocks and leaves the shared file offset alone); pipes
 *   and sockets could block and are not read. An fd that cannot be read
 *   (O_PATH, write-only) reports `readError`.
 * - Writing puts TEXT at the fd's offset. A pipe, socket or terminal may
 *   never take it (a full pipe that nobody reads): those writes do not
 *   block and are retried until the deadline; what did not go by then is
 *   `writeError: "ETIMEDOUT"` (with `wrote`, the bytes that went). The fd's
 *   open file description, and so its O_NONBLOCK flag, is shared with the
 *   sender: the flag is set only around each write(2) and put back as it
 *   was.
 */
import * as fs from 'node:fs';
import { native } from '../native';
import { errnoError } from '../errors';
import type { FdKind } from '../socket/fd';

/** Bytes --read shows of each file. */
export const READ_MAX = 256;
/** How long --write may keep trying the fds of one message, in ms. */
export const WRITE_DEADLINE_MS = 1000;

const RETRY_MIN_MS = 1;
const RETRY_MAX_MS = 50;

/** --read of one fd: the first READ_MAX bytes of a file or block device as
 * UTF-8, null for other kinds, or the error. */
export function readHead(fd: number, kind: FdKind): { read: string | null } | { readError: string } {
  if (kind !== 'file' && kind !== 'block') return { read: null };
  try {
    const buf = Buffer.alloc(READ_MAX);
    const n = fs.readSync(fd, buf, 0, READ_MAX, 0);
    return { read: buf.subarray(0, n).toString('utf8') };
  } catch (err) {
    return { readError: codeOf(err) };
  }
}

/** --write of one fd: `text` written whole, or as much as went by
 * `deadline` (ms since the epoch) and the error. */
export async function writeText(fd: number, kind: FdKind, text: Buffer, deadline: number): Promise<{ wrote: number; writeError?: string }> {
  // Files and block devices take a write at once; the rest may not.
  const mayBlock = kind !== 'file' && kind !== 'block' && kind !== 'directory';
  let off = 0;
  for (let delay = RETRY_MIN_MS; ; delay = Math.min(delay * 2, RETRY_MAX_MS)) {
    try {
      while (off < text.length) off += mayBlock ? writeNonBlocking(fd, text, off) : fs.writeSync(fd, text, off);
      return { wrote: off };
    } catch (err) {
      const code = codeOf(err);
      if (code !== 'EAGAIN') return { wrote: off, writeError: code };
    }
    if (Date.now() >= deadline) return { wrote: off, writeError: 'ETIMEDOUT' };
    await new Promise((resolve) => setTimeout(resolve, Math.min(delay, Math.max(0, deadline - Date.now()))));
  }
}

/** One write(2) with O_NONBLOCK set for its duration only. */
function writeNonBlocking(fd: number, buf: Buffer, off: number): number {
  const wasBlocking = !nonBlocking(fd);
  if (wasBlocking) setBlocking(fd, false);
  try {
    return fs.writeSync(fd, buf, off);
  } finally {
    if (wasBlocking) setBlocking(fd, true);
  }
}

function setBlocking(fd: number, on: boolean): void {
  const r = native.setBlocking(fd, on);
  if (r < 0) throw errnoError(r, 'fcntl');
}

/** O_NONBLOCK of the fd's open file description (the `flags` line of
 * /proc/self/fdinfo, in octal). */
function nonBlocking(fd: number): boolean {
  const m = /^flags:\s+([0-7]+)$/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  return m !== null && (parseInt(m[1]!, 8) & fs.constants.O_NONBLOCK) !== 0;
}

function codeOf(err: unknown): string {
  return (err as { code?: string }).code ?? 'EIO';
}
