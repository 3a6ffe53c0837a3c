/**
 * Files and names for tests: temp dirs, sets of open files (their fds owned
 * by the test's scope), file identity (dev:ino), abstract socket names.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { onCleanup, type Deferrer } from './scope';

/**
 * A fresh directory under os.tmpdir() (mode 0700), removed with everything
 * in it when `owner` cleans up, or when the process exits if there is no
 * owner. `mode` loosens it for tests whose children run as another user.
 */
export function tmpDir(owner?: Deferrer, mode?: number): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fdpass-test-'));
  if (mode !== undefined) fs.chmodSync(dir, mode);
  const remove = () => fs.rmSync(dir, { recursive: true, force: true });
  if (owner) onCleanup(owner, remove);
  else process.once('exit', remove);
  return dir;
}

/** A unique abstract socket name ('\0...'). */
export function abstractName(tag = 'test'): string {
  return `\0fdpass-${tag}-${process.pid}-${Math.random().toString(36).slice(2)}`;
}

/** "dev:ino" of an open fd or a path: what identifies an open file's inode. */
export function fileId(fdOrPath: number | string): string {
  const st = typeof fdOrPath === 'number' ? fs.fstatSync(fdOrPath, { bigint: true }) : fs.statSync(fdOrPath, { bigint: true });
  return `${st.dev}:${st.ino}`;
}

export interface FileSet {
  readonly paths: string[];
  readonly fds: number[];
  /** fileId() of each, in order. */
  readonly ids: string[];
  /** Closes every fd of the set (once). */
  close(): void;
}

/**
 * Creates and opens `count` distinct files in `dir` (read-write). Their fds
 * are closed by close() or when `owner` cleans up, whichever comes first;
 * never close one of them by hand (its number could be reused by then).
 */
export function openFiles(dir: string, count: number, owner?: Deferrer, tag = 'f'): FileSet {
  const paths: string[] = [];
  const fds: number[] = [];
  for (let i = 0; i < count; i++) {
    const p = path.join(dir, `${tag}${i}`);
    paths.push(p);
    fds.push(fs.openSync(p, 'w+'));
  }
  let open = true;
  const close = () => {
    if (!open) return;
    open = false;
    for (const fd of fds) fs.closeSync(fd);
  };
  onCleanup(owner, close);
  return { paths, fds, ids: fds.map((fd) => fileId(fd)), close };
}
