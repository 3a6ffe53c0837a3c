/**
 * Inbox: the consumer side of a stream of items, the one used by UnixSocket
 * (messages) and UnixServer (connections).
 *
 * The owner pushes items (and, on a socket, errors that belong in the stream
 * at their place: a truncated message, the fatal error that ends it); the
 * inbox hands them out in order to whoever asks, one way at a time:
 * waiting next() calls (receive()/accept(), with a timeout and an
 * AbortSignal), then async iterators, then listeners of the owner's event
 * ('message', 'connection'; errors go to 'error'). Items stay buffered while
 * nobody asks.
 *
 * Ownership: a buffered item is the inbox's until it is handed out; close()
 * disposes of the ones never handed out. The inbox does no I/O: it tells its
 * owner when the demand changes (hooks.changed(): consumers came or went, or
 * items were taken), and the owner decides whether to read or accept.
 *
 * End: after end() no more items come; once the last one is handed out the
 * inbox is finished: waiting calls reject with FDPASS_ERR_SOCKET_CLOSED,
 * iterators end, and hooks.finished() runs once. close() finishes at once,
 * without hooks.finished().
 */
import type { EventEmitter } from 'node:events';
import { abortError, SocketClosedError, TimeoutError } from '../errors';
import { Fifo } from './fifo';

export interface WaitOptions {
  signal?: AbortSignal;
  /** Milliseconds; rejects with FDPASS_ERR_TIMEOUT. */
  timeout?: number;
}

export interface InboxHooks<T> {
  /** An item was handed out (it left the buffer). */
  taken(item: T | Error): void;
  /** Consumers came or went, or the buffer shrank: re-decide whether to read. */
  changed(): void;
  /** The inbox ended and every item was handed out (once; not after close()). */
  finished(): void;
}

export interface InboxText {
  /** What an item is called, for timeout messages: 'message'. */
  noun: string;
  /** The message of the FDPASS_ERR_SOCKET_CLOSED error once finished. */
  closed: string;
}

interface Waiter<T> {
  resolve(item: T | null): void;
  reject(err: Error): void;
}

/** setTimeout()'s largest delay: a larger one would fire at once. */
const MAX_TIMEOUT = 0x7fffffff;
const DONE: IteratorResult<never> = { value: undefined, done: true };

export class Inbox<T extends object> {
  readonly #emitter: EventEmitter;
  readonly #event: string;
  readonly #hooks: InboxHooks<T>;
  readonly #text: InboxText;
  /** Buffered items, handed out from the front. */
  readonly #items = new Fifo<T | Error>();
  /** Waiting next() calls and iterators, served in order. */
  readonly #waiters = new Fifo<Waiter<T>>();
  #iterators = 0;
  #ended = false;
  #finished = false;

  /** Listens for listeners of `event` on `emitter`: delivery starts when the
   * first is added. */
  constructor(emitter: EventEmitter, event: string, hooks: InboxHooks<T>, text: InboxText) {
    this.#emitter = emitter;
    this.#event = event;
    this.#hooks = hooks;
    this.#text = text;
    emitter.on('newListener', (e) => {
      if (e === event) queueMicrotask(() => this.pump());
    });
    emitter.on('removeListener', (e) => {
      if (e === event) queueMicrotask(() => hooks.changed());
    });
  }

  /** Items buffered, not yet handed out. */
  get length(): number {
    return this.#items.length;
  }

  /** Waiting calls, iterators and event listeners: nonzero when somebody wants items. */
  get consumers(): number {
    return this.#waiters.length + this.#iterators + this.#emitter.listenerCount(this.#event);
  }

  /** Every item was handed out after end(), or close() was called. */
  get finished(): boolean {
    return this.#finished;
  }

  push(item: T | Error): void {
    this.#items.push(item);
  }

  /** Takes every buffered item back (a flooding peer's backlog, say): the
   * caller disposes of them. */
  removeAll(): (T | Error)[] {
    return this.#items.clear();
  }

  /** No more items will be pushed. */
  end(): void {
    this.#ended = true;
  }

  /** Finishes if the inbox ended and is empty (see the file comment). */
  finishIfDone(): void {
    if (!this.#ended || this.#finished || this.#items.length > 0) return;
    this.#finished = true;
    for (const w of this.#waiters.clear()) w.resolve(null);
    this.#hooks.finished();
  }

  /** Finishes now: buffered items go to `dispose`, waiting calls reject
   * (FDPASS_ERR_SOCKET_CLOSED). Safe twice. */
  close(dispose: (item: T) => void): void {
    this.#ended = true;
    this.#finished = true;
    for (const item of this.#items.clear()) if (!(item instanceof Error)) dispose(item);
    for (const w of this.#waiters.clear()) w.resolve(null);
  }

  /**
   * The next item (receive(), accept()). Rejects with a buffered error in
   * its turn, FDPASS_ERR_TIMEOUT after `timeout` ms, an AbortError when
   * `signal` aborts, FDPASS_ERR_SOCKET_CLOSED once finished. A bad timeout
   * throws a RangeError.
   */
  next(options: WaitOptions = {}): Promise<T> {
    const { signal, timeout } = options;
    if (timeout !== undefined && !(typeof timeout === 'number' && timeout >= 0 && timeout <= MAX_TIMEOUT)) {
      throw new RangeError(`timeout must be a number of milliseconds from 0 to ${MAX_TIMEOUT}, got ${String(timeout)}`);
    }
    if (signal?.aborted) return Promise.reject(abortError(signal));
    if (this.#items.length > 0) return settle(this.#take());
    // The end may have come with the items just taken.
    this.finishIfDone();
    if (this.#finished) return Promise.reject(new SocketClosedError(this.#text.closed));
    return new Promise<T>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const cleanup = () => {
        if (timer) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      const waiter: Waiter<T> = {
        resolve: (item) => {
          cleanup();
          if (item) resolve(item);
          else reject(new SocketClosedError(this.#text.closed));
        },
        reject: (e) => {
          cleanup();
          reject(e);
        },
      };
      const drop = (err: Error) => {
        this.#waiters.remove(waiter);
        cleanup();
        this.#hooks.changed();
        reject(err);
      };
      const onAbort = () => drop(abortError(signal));
      signal?.addEventListener('abort', onAbort, { once: true });
      if (timeout !== undefined) {
        timer = setTimeout(() => drop(new TimeoutError(`no ${this.#text.noun} within ${timeout} ms`)), timeout);
      }
      this.#waiters.push(waiter);
      this.#hooks.changed();
    });
  }

  /**
   * Iterates until the inbox is finished. Breaking out stops the demand
   * (the owner stays open). A buffered error is thrown by the loop, which
   * ends it; a new loop can carry on.
   */
  iterate(): AsyncIterableIterator<T> {
    let done = false;
    this.#iterators++;
    const finish = () => {
      if (!done) {
        done = true;
        this.#iterators--;
        this.#hooks.changed();
      }
    };
    // A for await loop waits on one next() at a time: that wait reuses one
    // waiter and one promise executor, made here, so that a round trip
    // allocates only its promise and result. A next() called while another
    // still waits gets a waiter of its own.
    let waiting = false;
    let settle: ((r: IteratorResult<T>) => void) | null = null;
    let fail: ((e: Error) => void) | null = null;
    const capture = (res: (r: IteratorResult<T>) => void, rej: (e: Error) => void) => {
      settle = res;
      fail = rej;
    };
    const handOut = (item: T | null, res: (r: IteratorResult<T>) => void) => {
      if (item) res({ value: item, done: false });
      else {
        finish();
        res(DONE);
      }
    };
    const waiter: Waiter<T> = {
      resolve: (item) => {
        const res = settle!;
        waiting = false;
        settle = fail = null;
        handOut(item, res);
      },
      reject: (e) => {
        const rej = fail!;
        waiting = false;
        settle = fail = null;
        finish();
        rej(e);
      },
    };
    const next = (): Promise<IteratorResult<T>> => {
      if (done) return Promise.resolve(DONE);
      if (this.#items.length > 0) {
        const item = this.#take();
        if (item instanceof Error) {
          finish();
          return Promise.reject(item);
        }
        return Promise.resolve({ value: item, done: false });
      }
      this.finishIfDone();
      if (this.#finished) {
        finish();
        return Promise.resolve(DONE);
      }
      let p: Promise<IteratorResult<T>>;
      if (!waiting) {
        waiting = true;
        p = new Promise(capture);
        this.#waiters.push(waiter);
      } else {
        p = new Promise((resolve, reject) => {
          this.#waiters.push({
            resolve: (item) => handOut(item, resolve),
            reject: (e) => {
              finish();
              reject(e);
            },
          });
        });
      }
      this.#hooks.changed();
      return p;
    };
    return {
      next,
      return: () => {
        finish();
        return Promise.resolve(DONE);
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }

  /** Hands buffered items to waiting calls, then (unless an iterator is
   * open) to event listeners, in order; then tells the owner. */
  pump(): void {
    const items = this.#items;
    while (items.length > 0) {
      const head = items.at(0)!;
      const w = this.#waiters.shift();
      if (w) {
        this.#take();
        if (head instanceof Error) w.reject(head);
        else w.resolve(head);
        continue;
      }
      if (this.#iterators > 0 || this.#emitter.listenerCount(this.#event) === 0) break;
      this.#take();
      if (head instanceof Error) this.#emitter.emit('error', head);
      else this.#emitter.emit(this.#event, head);
    }
    this.finishIfDone();
    this.#hooks.changed();
  }

  #take(): T | Error {
    const item = this.#items.shift()!;
    this.#hooks.taken(item);
    return item;
  }
}

function settle<T>(item: T | Error): Promise<T> {
  return item instanceof Error ? Promise.reject(item) : Promise.resolve(item);
}
