/**
 * Listening sockets inherited from systemd (sd_listen_fds(3)): LISTEN_FDS
 * fds from 3 on, named by LISTEN_FDNAMES (colon-separated), honoured only
 * when LISTEN_PID is this process. They come from the service's socket
 * units and from its fd store (what a previous run pushed: fd-store.ts).
 *
 * They are taken once: the variables are removed (workers must never read
 * them: their own fd 3 is their channel), every fd is made close-on-exec
 * and described for listener-match.ts. From then on the caller owns them:
 * it adopts those a listener takes and closes the rest.
 */
import * as fs from 'node:fs';
import { native, K } from '../native';
import { socketInfo } from '../socket/adopt';
import type { ListeningFdInfo } from './listener-match';

/** An inherited fd; `used` once a listener owns it (the rest get closed). */
export interface InheritedFd extends ListeningFdInfo {
  used: boolean;
}

const FD_START = 3;
const NAME_BUF = Buffer.alloc(128);

export function takeListenFds(env: NodeJS.ProcessEnv = process.env): InheritedFd[] {
  const pid = Number(env.LISTEN_PID);
  const n = Number(env.LISTEN_FDS);
  const names = env.LISTEN_FDNAMES === undefined ? [] : env.LISTEN_FDNAMES.split(':');
  delete env.LISTEN_PID;
  delete env.LISTEN_FDS;
  delete env.LISTEN_FDNAMES;
  if (pid !== process.pid || !Number.isInteger(n) || n <= 0) return [];
  const out: InheritedFd[] = [];
  for (let i = 0; i < n; i++) {
    const fd = FD_START + i;
    native.setCloexec(fd, true);
    out.push({ ...describe(fd), name: names[i] ?? '', used: false });
  }
  return out;
}

/** What matching needs to know of `fd`; a non-socket is described as one
 * no spec can match (a systemd spec that asks for it by name still gets it,
 * and its adoption says what is wrong). */
export function describe(fd: number): Omit<ListeningFdInfo, 'name'> {
  let id: string;
  try {
    const st = fs.fstatSync(fd, { bigint: true });
    id = `${st.dev}:${st.ino}`;
  } catch {
    id = `fd ${fd}`;
  }
  const none = { fd, id, family: null, stream: false, listening: false };
  let info;
  try {
    info = socketInfo(fd);
  } catch {
    return none;
  }
  const base = { fd, id, stream: info.type === K.SOCK_STREAM, listening: info.listening };
  if (info.family === K.AF_INET || info.family === K.AF_INET6) {
    const port = native.inetName(fd, false, NAME_BUF);
    if (port < 0) return none;
    const host = NAME_BUF.toString('latin1', 0, NAME_BUF.indexOf(0));
    return { ...base, family: info.family === K.AF_INET ? 'inet' : 'inet6', host, port };
  }
  if (info.family === K.AF_UNIX) {
    const len = native.sockName(fd, NAME_BUF, false);
    if (len < 0) return none;
    return { ...base, family: 'unix', unixAddress: Buffer.from(NAME_BUF.subarray(0, len)) };
  }
  return { ...base, family: null };
}
