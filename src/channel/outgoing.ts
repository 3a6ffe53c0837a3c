/**
 * What a Channel sends: a payload and the fds that go with it, taken from
 * the shapes the API documents and checked before anything is sent. The
 * documented shapes:
 *
 *   post(type, payload, [fd])                 request(type, payload, [fd])
 *   post(type, withFds(payload, [fd]))        request(type, payload, { fds: [fd], timeout, signal })
 *   a handler's `return withFds(payload, [fd])`   request(type, withFds(payload, [fd]), { timeout, signal })
 *
 * A call whose fds cannot go with it throws a TypeError
 * (FDPASS_ERR_INVALID_ARG) instead of sending the message without them: fds
 * given twice (a withFds payload and an fds argument), a withFds inside a
 * payload (JSON would carry the wrapper's fields, not the fds), fds that are
 * not an array, an fd where the options go. An array element that names no
 * open fd is UnixSocket.send()'s to refuse (FDPASS_ERR_INVALID_FD).
 */
import { Fd, fdNumber, type FdLike } from '../socket/fd';
import { native } from '../native';
import { invalidArg } from '../errors';

/**
 * A payload with fds: `withFds(payload, [fd])`, as a request's or a post's
 * payload or as a handler's answer. The fds are borrowed until the message
 * is sent; with `{ transfer: true }` they are the channel's, closed once the
 * message went (or failed, or could not be sent at all), so that a handler
 * can open a file, answer with it and forget it.
 */
export class ReplyWithFds {
  constructor(readonly payload: unknown, readonly fds: readonly FdLike[], readonly transfer = false) {}

  /** Inside another payload JSON would carry this object, not its fds. */
  toJSON(): never {
    throw invalidArg('withFds() inside a payload cannot carry fds (JSON has no fds): make it the whole payload, or return it from the handler');
  }
}

export const withFds = (payload: unknown, fds: readonly FdLike[], options: { transfer?: boolean } = {}): ReplyWithFds => {
  if (!Array.isArray(fds)) throw invalidArg(`withFds() takes fds as an array, got ${describe(fds)}`);
  return new ReplyWithFds(payload, fds, Boolean(options.transfer));
};

/** One message's payload and fds, whatever shape they were given in. */
export interface Outgoing {
  readonly body: unknown;
  readonly fds: readonly FdLike[] | undefined;
  /** The fds are the channel's to close once the message went. */
  readonly transfer: boolean;
}

/**
 * Takes `payload` (maybe a withFds wrapper) and a separate `fds` argument
 * (undefined when the call had none). Throws for a shape that cannot carry
 * fds; a withFds nested deeper throws when the body is encoded (toJSON).
 */
export function outgoing(payload: unknown, fds: unknown, call: string): Outgoing {
  if (payload instanceof ReplyWithFds) {
    if (fds !== undefined) {
      releaseFds(payload);
      throw invalidArg(`${call}: fds given both with withFds() and as an argument; give them once`);
    }
    return { body: payload.payload, fds: payload.fds, transfer: payload.transfer };
  }
  if (fds !== undefined && !Array.isArray(fds)) throw invalidArg(`${call}: fds must be an array, got ${describe(fds)}`);
  return { body: payload, fds: fds as readonly FdLike[] | undefined, transfer: false };
}

/** What a request's third argument says: an array is its fds. An fd there
 * (a number, an Fd, a socket) is refused rather than read as no options. */
export function requestOptions<O extends { fds?: readonly FdLike[] }>(options: O | readonly FdLike[] | undefined): O {
  if (options === undefined) return {} as O;
  if (Array.isArray(options)) return { fds: options } as unknown as O;
  if (options === null || typeof options !== 'object' || 'fd' in options || '_handle' in options) {
    throw invalidArg(`request(): the third argument is an options object or an array of fds, got ${describe(options)}; ` +
      'for one fd write [fd]');
  }
  return options as O;
}

/** Closes the fds of a message that took them over (transfer), once it went or
 * failed; borrowed fds are left alone. Safe for fds that are not valid. */
export function releaseFds(out: Pick<Outgoing, 'fds' | 'transfer'>): void {
  if (!out.transfer || !out.fds) return;
  for (const fd of out.fds) {
    try {
      closeFdLike(fd);
    } catch {
      // not an fd: nothing to close
    }
  }
}

function closeFdLike(x: FdLike): void {
  if (x instanceof Fd) x.close();
  else if (typeof x === 'number') native.close(x);
  else if (typeof (x as { close?: unknown }).close === 'function') {
    void Promise.resolve((x as { close: () => unknown }).close()).catch(() => {});
  } else native.close(fdNumber(x));
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (typeof v !== 'object') return typeof v;
  return (v as object).constructor?.name ?? 'object';
}
