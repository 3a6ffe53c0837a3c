/**
 * The negative errno values the addon returns, named. Taken from Node's own
 * table (os.constants.errno), never typed in by hand: the numbers are the
 * platform's (the one Node lacks comes from the addon's headers), and a name
 * reads better than -109 anyway.
 */
import { constants } from 'node:os';
import { K } from './native';

const e = constants.errno;

export const EAGAIN = -e.EAGAIN;
export const EINTR = -e.EINTR;
export const EBADF = -e.EBADF;
export const EINVAL = -e.EINVAL;
export const EPIPE = -e.EPIPE;
export const EMFILE = -e.EMFILE;
export const ENFILE = -e.ENFILE;
export const ENOMEM = -e.ENOMEM;
export const ENOBUFS = -e.ENOBUFS;
/** Not in Node's table: the addon reports the platform's value. */
export const ETOOMANYREFS = -K.ETOOMANYREFS;
export const ECONNRESET = -e.ECONNRESET;
export const ECONNREFUSED = -e.ECONNREFUSED;
export const ECONNABORTED = -e.ECONNABORTED;
export const ENOTCONN = -e.ENOTCONN;
export const EADDRINUSE = -e.EADDRINUSE;
export const ENOENT = -e.ENOENT;
export const EPERM = -e.EPERM;
export const EACCES = -e.EACCES;
export const ELOOP = -e.ELOOP;
export const ENOTSOCK = -e.ENOTSOCK;

/** accept(2) failures that mean "out of a resource", not "this connection
 * failed": the listener stays readable, so polling on would spin. */
export function isResourceExhaustion(r: number): boolean {
  return r === EMFILE || r === ENFILE || r === ENOBUFS || r === ENOMEM;
}
