/**
 * The primary's fast hand-off (native/handoff.c): one listener readiness
 * event accepted and handed to the workers in one native call, following a
 * plan the dispatcher made with the strategy (strategies.ts, pickMany()).
 * This file is only the typed view of that call's io array; when the fast
 * path applies, and what the ledgers make of the results, is the
 * dispatcher's (dispatcher.ts, acceptFast()).
 *
 * One io array per thread, reused by every call: the results are read
 * before the next call.
 */
import { native, K } from '../native';
import { MAX_FDS } from '../socket/frame';

/** The most candidate workers the fast path takes; with more, the normal path. */
export const FAST_MAX_WORKERS = K.HANDOFF_MAX_WORKERS;

const IO = new Int32Array(K.HANDOFF_SIZE);
const WORKERS = K.HANDOFF_WORKERS;
const COUNT = K.HANDOFF_COUNT;
const FIRST_ID = K.HANDOFF_FIRST_ID;
const LISTENER = K.HANDOFF_LISTENER;

/** In: candidate k's channel fd. */
export const CHANS = IO.subarray(K.HANDOFF_CHAN, K.HANDOFF_CHAN + FAST_MAX_WORKERS);
/** Out: how many connections went to candidate k (0: none planned), or the
 * -errno of its sendmsg(): those connections were not handed. */
export const SENT = IO.subarray(K.HANDOFF_SENT, K.HANDOFF_SENT + FAST_MAX_WORKERS);
/** In: the candidate of the i-th connection. */
export const PLAN = IO.subarray(K.HANDOFF_PLAN, K.HANDOFF_PLAN + MAX_FDS);
/** Out: the i-th connection's fd, the caller's from now on, sent or not. */
export const FDS = IO.subarray(K.HANDOFF_FDS, K.HANDOFF_FDS + MAX_FDS);

/**
 * Accepts up to `count` connections on `fd` and sends candidate k its
 * connections in one CONNS message (ids firstId + i, all of `listener`,
 * encoded as protocol.ts's encodeConns() does), over CHANS[0..workers).
 * Returns how many were accepted (FDS[0..n), results in SENT), or -errno
 * when none was (EAGAIN: none waiting). `firstId + count` must not pass
 * 2^32 - 1.
 */
export function handOff(fd: number, listener: number, firstId: number, workers: number, count: number): number {
  IO[WORKERS] = workers;
  IO[COUNT] = count;
  IO[FIRST_ID] = firstId | 0;
  IO[LISTENER] = listener;
  return native.handoff(fd, IO);
}
