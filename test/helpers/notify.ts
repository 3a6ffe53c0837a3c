/**
 * A service manager's notify socket, owned by a test: a datagram socket
 * (fdpass's own UnixSocket.datagram) bound to a path or an abstract name,
 * that collects what `fdpass serve` sends over NOTIFY_SOCKET (sd_notify):
 * each datagram's KEY=VALUE fields, the fds that came with it (FDSTORE),
 * the sender's pid (SCM_CREDENTIALS: passCredentials is on, as systemd's
 * SO_PASSCRED) and when it arrived (CLOCK_MONOTONIC, the clock of
 * MONOTONIC_USEC). Everything it holds is closed when its owner cleans up.
 */
import { UnixSocket } from '../../src/socket/socket';
import type { Fd } from '../../src/socket/fd';
import type { Message } from '../../src/socket/message';
import { onCleanup, type Deferrer } from './scope';
import { waitFor } from './wait';

export interface Notification {
  fields: Record<string, string>;
  fds: readonly Fd[];
  /** The sender's pid, as the kernel attached it. */
  pid: number | undefined;
  /** CLOCK_MONOTONIC at arrival, in microseconds. */
  usec: bigint;
}

export class NotifyReceiver {
  /** What to put in NOTIFY_SOCKET: the path, or '@name'. */
  readonly env: string;
  readonly messages: Notification[] = [];
  readonly #sock: UnixSocket;
  readonly #held: Message[] = [];

  private constructor(sock: UnixSocket, env: string) {
    this.#sock = sock;
    this.env = env;
    sock.on('message', (m: Message) => {
      this.#held.push(m);
      const fields: Record<string, string> = {};
      for (const line of m.text().split('\n')) {
        const i = line.indexOf('=');
        if (i > 0) fields[line.slice(0, i)] = line.slice(i + 1);
      }
      this.messages.push({ fields, fds: m.fds, pid: m.credentials?.pid, usec: process.hrtime.bigint() / 1000n });
    });
  }

  /** Binds `address` (a path, or '\0name'); closed, with every fd received, when `owner` cleans up. */
  static async bind(address: string, owner: Deferrer): Promise<NotifyReceiver> {
    const sock = await UnixSocket.datagram({ bind: address, passCredentials: true });
    const r = new NotifyReceiver(sock, address.startsWith('\0') ? '@' + address.slice(1) : address);
    onCleanup(owner, () => r.close());
    return r;
  }

  /** The messages that have `key` (with `value`, if given). */
  with(key: string, value?: string): Notification[] {
    return this.messages.filter((n) => key in n.fields && (value === undefined || n.fields[key] === value));
  }

  /** The first message (past or future) for which `pred` holds. */
  waitFor(pred: (n: Notification) => boolean, what: string, timeout = 10_000): Promise<Notification> {
    return waitFor(() => this.messages.find(pred), { timeout, what, detail: () => this.describe() });
  }

  /** Waits until `n` messages have `key` (= `value`). */
  waitCount(n: number, key: string, value?: string, timeout = 10_000): Promise<Notification[]> {
    return waitFor(() => {
      const got = this.with(key, value);
      return got.length >= n && got;
    }, { timeout, what: `${n} notifications with ${key}${value === undefined ? '' : '=' + value}`, detail: () => this.describe() });
  }

  describe(): string {
    return `received:\n${this.messages.map((n) => JSON.stringify(n.fields) + (n.fds.length ? ` + ${n.fds.length} fds` : '')).join('\n')}`;
  }

  close(): void {
    for (const m of this.#held.splice(0)) m.close();
    this.#sock.close();
  }
}
