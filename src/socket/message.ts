/**
 * A received message: its bytes, its fds (owned by the message until taken),
 * the sender's credentials when they came, and the sender's address on
 * datagram sockets.
 */
import { native } from '../native';
import { Fd } from './fd';
import type { Credentials } from './frame';

export type { Credentials };

const NO_FDS = new Int32Array(0);

export class Message {
  /** The payload. Owned by the caller; not reused by fdpass. */
  readonly data: Buffer;
  /** SCM_CREDENTIALS of the sender, when the receiving socket has
   * passCredentials on (the kernel then attaches them to every message). */
  readonly credentials: Credentials | undefined;
  /** Datagram sockets: the sender's address ('' when it is not bound). */
  readonly address: string | undefined;
  #raw: Int32Array;
  #fds: Fd[] | undefined;

  /** @internal fds become owned by the message. */
  constructor(data: Buffer, fds: Int32Array | null, credentials?: Credentials, address?: string) {
    this.data = data;
    this.#raw = fds ?? NO_FDS;
    this.credentials = credentials;
    this.address = address;
  }

  /**
   * The fds that came with the message, each an owned Fd. Take what you need
   * (fd.release(), fd.toSocket(), ...); message.close() closes the rest.
   * Created on first access, so a message whose fds are only closed costs no
   * object per fd.
   */
  get fds(): readonly Fd[] {
    if (this.#fds === undefined) {
      this.#fds = Array.from(this.#raw, (n) => new Fd(n));
      this.#raw = NO_FDS;
    }
    return this.#fds;
  }

  /** Number of fds that came with the message. */
  get fdCount(): number {
    return this.#fds === undefined ? this.#raw.length : this.#fds.length;
  }

  /** The payload as UTF-8 text. */
  text(): string {
    return this.data.toString('utf8');
  }

  /** Closes every fd of the message not yet taken. Safe to call twice. */
  close(): void {
    if (this.#fds !== undefined) {
      for (const fd of this.#fds) fd.close();
    } else if (this.#raw.length > 0) {
      native.closeMany(this.#raw, 0, this.#raw.length);
      this.#raw = NO_FDS;
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
