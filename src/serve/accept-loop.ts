/**
 * The primary's accepting, over all its listeners: one Acceptor each
 * (src/socket/acceptor.ts: the batching, the back-off when accept() fails
 * and the resume when fds are freed are all there). What this adds:
 * - one switch for all listeners (setWanted: off while the primary stops,
 *   or while too many connections wait for a worker);
 * - the counts the status reports (accepted, acceptErrors) and the log:
 *   every failure counts, but an accept-error line goes out once a second
 *   at most (with how many it left out: log.ts's Throttled), and so does
 *   accept-resumed when accepting works again;
 * - the drain on shutdown (drain()).
 * Accepted fds go straight to `onConns`, which owns them from then on.
 */
import { native } from '../native';
import { errnoError } from '../errors';
import { EAGAIN } from '../errno';
import { Acceptor } from '../socket/acceptor';
import { outlivesUs, type Listener } from './listeners';
import { Throttled, type Log } from './log';

/** On shutdown, how long TCP handshakes already under way (an RTT) get to
 * complete once new ones are refused, before the listeners close. */
const HANDSHAKE_GRACE_MS = 50;
/** On shutdown, out of fds: how often to try again while workers acknowledge. */
const DRAIN_RETRY_MS = 5;

export class AcceptLoop {
  readonly #listeners: Listener[];
  readonly #acceptors: Acceptor[];
  /** Connections accepted, over all listeners. */
  accepted = 0;
  /** Failed accepts (and listener errors), over all listeners. */
  errors = 0;

  /**
   * @param onConns  takes fds[0..n) accepted on `listener` (the array is
   *                 reused after it returns)
   * @param options.fast  tried first on each readiness event: accepts and
   *                 hands out itself (dispatcher.ts acceptFast()): the
   *                 count, a -errno, or undefined for the onConns path
   */
  constructor(listeners: Listener[], onConns: (fds: Int32Array, n: number, listener: Listener) => void, log: Log,
    options: { fast?: (fd: number, listener: Listener) => number | undefined } = {}) {
    const fast = options.fast;
    this.#listeners = listeners;
    const failed = new Throttled('accept-error', log);
    const resumed = new Throttled('accept-resumed', log);
    this.#acceptors = listeners.map((l) => new Acceptor(l.fd, {
      onAccept: (fds, n) => {
        this.accepted += n;
        onConns(fds, n, l);
      },
      onError: (errno) => {
        this.errors++;
        failed.emit({ listener: l.address, error: errnoError(errno, 'accept', l.address).code });
      },
      onResume: (afterMs, errors) => resumed.emit({ listener: l.address, afterMs, errors }),
      acceptFast: fast && (() => {
        const r = fast(l.fd, l);
        if (r !== undefined && r > 0) this.accepted += r;
        return r;
      }),
    }));
  }

  /** Accept on every listener (true), or let the backlogs hold what comes. */
  setWanted(on: boolean): void {
    for (const a of this.#acceptors) a.setWanted(on);
  }

  /**
   * Shutdown: nothing the kernel queued is refused. Accepts it all before
   * the listeners close: close() resets whatever completed its handshake
   * after the last accept(), so a TCP listener first stops completing new
   * ones (a socket filter drops bare SYNs: those clients retry in a second
   * and find the port closed); handshakes already under way get
   * HANDSHAKE_GRACE_MS, then the backlog is drained once more. (Inherited
   * listeners, and those in systemd's fd store, get no filter: systemd keeps
   * them after we exit, with their backlog, for the next run.) A listener
   * shared with another process (handed out, or taken over: listeners.ts)
   * is left alone: no filter, no accept; its backlog is the other's. Out of
   * fds, it waits for the workers to acknowledge what they were handed
   * (`pending()` of those left), up to `deadline`.
   */
  async drain(deadline: number, pending: () => number): Promise<void> {
    this.setWanted(false);
    let filtered = false;
    for (const l of this.#listeners) {
      if (l.fd >= 0 && l.kind === 'tcp' && !outlivesUs(l) && native.dropSyns(l.fd) === 0) filtered = true;
    }
    await this.#drainOnce(deadline, pending);
    if (!filtered) return;
    await sleep(HANDSHAKE_GRACE_MS);
    await this.#drainOnce(deadline, pending);
  }

  async #drainOnce(deadline: number, pending: () => number): Promise<void> {
    for (const [i, a] of this.#acceptors.entries()) {
      // A shared listener's backlog is the other process's to serve.
      if (this.#listeners[i]!.shared) continue;
      for (;;) {
        const r = a.acceptOnce();
        if (r > 0) continue;
        if (r === EAGAIN) break;
        if (pending() === 0 || Date.now() >= deadline) break;
        await sleep(DRAIN_RETRY_MS);
      }
    }
  }

  /** Stops accepting for good; the listeners stay open (their owner closes them). */
  close(): void {
    for (const a of this.#acceptors) a.close();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((res) => setTimeout(res, ms));
}
