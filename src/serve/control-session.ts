/**
 * One connection to the control socket, served with backpressure: requests
 * (channel protocol, docs/protocol.md: a request of a type, answered by a
 * reply or an error reply with its id) are read only while fewer than
 * MAX_PENDING of this peer's are unanswered, an answer counting until the
 * kernel has taken it. A peer that sends requests and never reads the
 * answers thus gets a few, then nothing more is read from it: its requests
 * wait in the kernel's queue, then its own sends block. It costs this
 * process a bounded amount of memory and no CPU, where reading on (as a
 * Channel does for its 'message' listener) would queue answers without end.
 *
 * A peer is closed when it has been idle for `idleMs`: no request read and
 * no answer taken (a peer that stopped reading is idle too), when it breaks
 * the protocol (a message that is not a request), or on EOF.
 *
 * Ownership: the session owns the socket from serveSession() on and closes
 * it; the returned promise settles once it is closed and no answer is being
 * computed any more.
 */
import type { UnixSocket } from '../socket/socket';
import type { Message } from '../socket/message';
import { decodeChannel, encodeChannel, errorBody, Kind, type ChannelFrame } from '../channel/codec';
import { NoHandlerError } from '../errors';

/** Requests of one peer read and not yet answered (to the kernel) at most. */
export const MAX_PENDING = 4;

/** What a request of each type is answered with. */
export type ControlHandlers = Readonly<Record<string, () => Promise<unknown>>>;

export async function serveSession(sock: UnixSocket, handlers: ControlHandlers, idleMs: number): Promise<void> {
  let pending = 0;
  let answered: (() => void) | null = null;
  const settled = () => new Promise<void>((resolve) => (answered = resolve));
  const idle = setTimeout(() => sock.close(), idleMs).unref();
  const done = () => {
    pending--;
    idle.refresh();
    answered?.();
    answered = null;
  };
  // A fatal socket error with nobody receiving (between two receives) is
  // emitted: it only ends this session.
  sock.on('error', () => sock.close());
  try {
    for (;;) {
      if (pending >= MAX_PENDING) {
        await settled();
        continue;
      }
      const req = await nextRequest(sock);
      if (req === 'eof') break;
      if (req === 'bad') {
        sock.close();
        break;
      }
      idle.refresh();
      pending++;
      void answer(sock, handlers, req).finally(done);
    }
    // The answers still owed go out first (a peer that stops reading now is
    // closed when idle, which ends them).
    while (pending > 0) await settled();
  } finally {
    clearTimeout(idle);
    sock.close();
  }
}

/** The next request; 'eof' at EOF, once closed or on a socket error; 'bad'
 * for a message that is not a request. */
async function nextRequest(sock: UnixSocket): Promise<ChannelFrame | 'eof' | 'bad'> {
  let m: Message;
  try {
    m = await sock.receive();
  } catch {
    return 'eof';
  }
  try {
    const f = decodeChannel(m.data);
    return f.kind === Kind.Request ? f : 'bad';
  } catch {
    return 'bad';
  } finally {
    m.close();
  }
}

/** Runs the handler and sends its answer; settles once the kernel took the
 * answer, or the socket closed. */
async function answer(sock: UnixSocket, handlers: ControlHandlers, req: ChannelFrame): Promise<void> {
  let kind = Kind.Reply;
  let body: unknown;
  try {
    const handler = Object.hasOwn(handlers, req.type) ? handlers[req.type] : undefined;
    if (!handler) throw new NoHandlerError(req.type);
    body = await handler();
  } catch (err) {
    kind = Kind.ErrorReply;
    body = errorBody(err);
  }
  try {
    await sock.send(encodeChannel(kind, req.id, req.type, body));
  } catch {
    // closed meanwhile: nobody to answer
  }
}
