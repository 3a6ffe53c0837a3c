/**
 * Where the control socket of `fdpass serve` lives by default, and whether
 * that directory can be trusted.
 *
 * The default is $XDG_RUNTIME_DIR/fdpass/control.sock, else
 * <tmpdir>/fdpass-<uid>/control.sock: a name in a shared directory that
 * anyone can take first. A user who pre-creates it (mode 0777, say) could
 * put a socket of their own in place of ours, answer `fdpass status` with a
 * forged document and take the reload requests. So, as ssh and systemd do,
 * the default directory is used only if lstat(2) shows a real directory
 * (a symbolic link is refused, whatever it points to) owned by this uid
 * and writable by nobody else; both sides check it (serve before it binds,
 * status before it connects). A directory given with --control PATH is
 * the operator's choice and is not judged; the client's check of who
 * listens (control-client.ts) covers every path.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { UntrustedDirectoryError } from '../errors';

const SOCKET_NAME = 'control.sock';

/** The directory of the default control socket. */
export function defaultControlDir(): string {
  const xdg = process.env.XDG_RUNTIME_DIR;
  return xdg ? path.join(xdg, 'fdpass') : path.join(os.tmpdir(), `fdpass-${process.getuid!()}`);
}

/** $XDG_RUNTIME_DIR/fdpass/control.sock, else <tmpdir>/fdpass-<uid>/control.sock. */
export function defaultControlPath(): string {
  return path.join(defaultControlDir(), SOCKET_NAME);
}

/** Whether `file` is in the default control directory (the one judged). */
function inDefaultDir(file: string): boolean {
  return !file.startsWith('\0') && path.resolve(path.dirname(file)) === path.resolve(defaultControlDir());
}

/**
 * Throws an UntrustedDirectoryError unless `dir` is a directory (not a
 * symbolic link to one) owned by this uid and not writable by group or
 * others. A directory that does not exist passes: there is nothing in it
 * to trust (connecting then fails with ENOENT).
 */
export function checkControlDir(dir: string): void {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  const uid = process.getuid!();
  const problems: string[] = [];
  if (st.isSymbolicLink()) problems.push('a symbolic link');
  else if (!st.isDirectory()) problems.push('not a directory');
  if (st.uid !== uid) problems.push(`owned by uid ${st.uid} (not ${uid})`);
  if (!st.isSymbolicLink() && (st.mode & 0o022) !== 0) problems.push(`writable by group or others (mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')})`);
  if (problems.length) throw new UntrustedDirectoryError(dir, problems);
}

/** The server's side: creates the directory of `file` (mode 0700) if
 * missing; the default one must then pass checkControlDir(). */
export function prepareControlDir(file: string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  if (inDefaultDir(file)) checkControlDir(path.dirname(file));
}

/** The client's side: the default directory must pass checkControlDir()
 * before anything in it is connected to. */
export function checkControlPath(file: string): void {
  if (inDefaultDir(file)) checkControlDir(path.dirname(file));
}
