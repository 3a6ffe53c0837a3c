/**
 * The sd_notify(3) protocol, as a service manager (systemd) offers it in the
 * environment: NOTIFY_SOCKET names a datagram socket, a path or an abstract
 * name ('@name'), that takes "KEY=VALUE" lines, one datagram per message,
 * with fds for the fd store. The manager learns the sender from the
 * kernel's SCM_CREDENTIALS (its socket has SO_PASSCRED), so nothing is
 * attached here. The datagrams go out of one unbound socket of fdpass's
 * own (UnixSocket.datagram), in the order they were asked for.
 *
 * A notify socket that is missing or refuses (ENOENT, ECONNREFUSED, EACCES,
 * ...) costs one log line (notify-failed), the first time; the server keeps
 * serving, and later messages fail quietly. What the messages say and when
 * is systemd-service.ts's business; what is pushed into the fd store,
 * fd-store.ts's.
 *
 * The variables are taken once (takeNotifyEnv) and removed from the
 * environment, as sd_notify's unset_environment does: workers and what the
 * APP spawns must not talk to the manager in the primary's name.
 */
import { UnixSocket } from '../socket/socket';
import { displayAddress } from '../socket/address';
import { errorCode, type Log } from './log';

/** What the environment says about the service manager. */
export interface NotifyEnv {
  /** NOTIFY_SOCKET as a socket address ('\0name' for '@name'). */
  socket: string;
  /** WATCHDOG_USEC, when the watchdog is on for this process (WATCHDOG_PID
   * unset or ours). */
  watchdogUsec: number | null;
  /** FDSTORE: how many fds the manager keeps for us (0: no fd store). */
  fdStore: number;
}

export type NotifyFields = Record<string, string | number>;

/**
 * Takes NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID and FDSTORE out of `env`;
 * null when there is no notify socket that this code can reach (none, or a
 * kind other than a path or '@name', which is logged).
 */
export function takeNotifyEnv(log: Log, env: NodeJS.ProcessEnv = process.env): NotifyEnv | null {
  const { NOTIFY_SOCKET: raw, WATCHDOG_USEC: usec, WATCHDOG_PID: wpid, FDSTORE: store } = env;
  delete env.NOTIFY_SOCKET;
  delete env.WATCHDOG_USEC;
  delete env.WATCHDOG_PID;
  delete env.FDSTORE;
  if (!raw) return null;
  let socket: string;
  if (raw.startsWith('@') && raw.length > 1) socket = '\0' + raw.slice(1);
  else if (raw.startsWith('/')) socket = raw;
  else {
    log('notify-failed', { socket: raw, error: 'unsupported NOTIFY_SOCKET (a path or @name)' });
    return null;
  }
  const watchdogUsec = Number(usec);
  const watchdogOn = Number.isSafeInteger(watchdogUsec) && watchdogUsec > 0 && (wpid === undefined || Number(wpid) === process.pid);
  const fdStore = Number(store);
  return {
    socket,
    watchdogUsec: watchdogOn ? watchdogUsec : null,
    fdStore: Number.isSafeInteger(fdStore) && fdStore > 0 ? fdStore : 0,
  };
}

/** "KEY=VALUE" lines; a value never spans lines (a newline would start a new key). */
export function formatNotify(fields: NotifyFields): string {
  return Object.entries(fields).map(([k, v]) => `${k}=${String(v).replace(/[\r\n]+/g, ' ')}`).join('\n');
}

export class SdNotify {
  readonly #to: string;
  readonly #log: Log;
  #sock: Promise<UnixSocket> | null = null;
  /** The chain of sends: each goes out after the one before it settled. */
  #chain: Promise<unknown> = Promise.resolve();
  #pending = 0;
  #failed = false;
  #closed = false;

  constructor(socket: string, log: Log) {
    this.#to = socket;
    this.#log = log;
  }

  /** The notify socket, as shown in log lines ('@name' for an abstract one). */
  get address(): string {
    return displayAddress(this.#to);
  }

  /** Messages asked for and not settled yet. */
  get pending(): number {
    return this.#pending;
  }

  /**
   * Sends one message; resolves true once the manager's socket took it,
   * false if it could not (logged the first time). `fds` are borrowed: they
   * must stay open until this settles.
   */
  send(fields: NotifyFields, fds: readonly number[] = []): Promise<boolean> {
    if (this.#closed) return Promise.resolve(false);
    this.#pending++;
    const data = formatNotify(fields);
    const sent = this.#chain.then(async () => {
      await (await this.#socket()).send({ data, fds: [...fds], to: this.#to });
      return true;
    }).then((ok) => ok, (err: unknown) => {
      if (!this.#failed && !this.#closed) {
        this.#failed = true;
        this.#log('notify-failed', { socket: this.address, error: errorCode(err) });
      }
      return false;
    }).finally(() => this.#pending--);
    this.#chain = sent;
    return sent;
  }

  #socket(): Promise<UnixSocket> {
    return this.#sock ??= UnixSocket.datagram({ maxFdsPerMessage: 0 }).then((s) => {
      s.unref();
      return s;
    });
  }

  /** Closes the socket (what is still queued is given up). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const sock = this.#sock;
    if (!sock) return;
    try {
      (await sock).close();
    } catch {
      // never opened
    }
  }
}
