/**
 * A received message: its bytes, its fds (owned by the message until taken),
 * the sender's credentials when they came, and the sender's address on
 * datagram sockets.
 *
 * Messages of one receive batch share one copy of the batch's bytes and fd
 * numbers; each is a view, so a batch costs two allocations, not two per
 * message (one when its only fd is kept as a number: a round trip's
 * message). `data` is still the caller's to keep: fdpass never writes to it.
 */
import { Fd, closeFd, closeFds } from './fd';
import type { Credentials } from './frame';

export type { Credentials };

const EMPTY = Buffer.alloc(0);

export class Message {
  /** SCM_CREDENTIALS of the sender, when the receiving socket has
   * passCredentials on (the kernel then attaches them to every message). */
  readonly credentials: Credentials | undefined;
  /** Datagram sockets: the sender's address ('' when it is not bound). */
  readonly address: string | undefined;
  #buf: Buffer;
  #off: number;
  #len: number;
  #data: Buffer | undefined;
  /** fd numbers still owned here: #raw[#fdOff, #fdOff + #nfds) until `fds`
   * is read; with #raw null, the lone fd #fdOff (when #nfds is 1). */
  #raw: Int32Array | null;
  #fdOff: number;
  #nfds: number;
  #fds: Fd[] | undefined;

  /** @internal The fds in raw[fdOff, fdOff + nfds) become owned by the
   * message; with raw null and nfds 1, fdOff is the lone fd itself (a
   * round trip's message then costs no array). */
  constructor(buf: Buffer, off: number, len: number, raw: Int32Array | null, fdOff: number, nfds: number,
    credentials?: Credentials, address?: string) {
    this.#buf = buf;
    this.#off = off;
    this.#len = len;
    this.#raw = raw;
    this.#fdOff = fdOff;
    this.#nfds = raw || nfds === 1 ? nfds : 0;
    this.credentials = credentials;
    this.address = address;
  }

  /** The payload. */
  get data(): Buffer {
    if (this.#data === undefined) {
      this.#data = this.#len === 0 ? EMPTY : this.#off === 0 && this.#len === this.#buf.length ? this.#buf : this.#buf.subarray(this.#off, this.#off + this.#len);
    }
    return this.#data;
  }

  /**
   * The fds that came with the message, each an owned Fd. Take what you need
   * (fd.release(), fd.toSocket(), ...); message.close() closes the rest.
   * Created on first access, so a message whose fds are only closed costs no
   * object per fd.
   */
  get fds(): readonly Fd[] {
    if (this.#fds === undefined) {
      const out = new Array<Fd>(this.#nfds);
      const raw = this.#raw;
      if (raw) for (let i = 0; i < this.#nfds; i++) out[i] = new Fd(raw[this.#fdOff + i]!);
      else if (this.#nfds === 1) out[0] = new Fd(this.#fdOff);
      this.#fds = out;
      this.#nfds = 0;
    }
    return this.#fds;
  }

  /** Number of fds that came with the message. */
  get fdCount(): number {
    return this.#fds === undefined ? this.#nfds : this.#fds.length;
  }

  /** The payload as UTF-8 text. */
  text(): string {
    return this.#buf.toString('utf8', this.#off, this.#off + this.#len);
  }

  /** Closes every fd of the message not yet taken. Safe to call twice. */
  close(): void {
    if (this.#fds !== undefined) {
      for (const fd of this.#fds) fd.close();
    } else if (this.#nfds > 0) {
      if (this.#raw) closeFds(this.#raw, this.#fdOff, this.#nfds);
      else closeFd(this.#fdOff);
      this.#nfds = 0;
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
