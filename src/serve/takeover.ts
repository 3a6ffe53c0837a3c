/**
 * The new primary's side of a takeover (`fdpass serve --takeover PATH`):
 * receive the running process's listeners (getsocks-client.ts), say which
 * of them serve which `--listen` spec, and, once this primary serves, tell
 * the old process to finish.
 *
 *   fetch()      every listener PATH exposes, each described (getsockname,
 *                SO_TYPE, SO_ACCEPTCONN) and matched to the address specs
 *                by listener-match.ts (the one matcher, shared with
 *                systemd's fds); `_getsocks` carries no listener names, so
 *                the match is by address alone, and each fd that matches
 *                is named after its spec. openListeners() then takes them
 *                as it takes inherited fds: the matching ones instead of
 *                binding, the rest closed.
 *   adopted()    the listeners made of received fds are shared until the
 *                old process was told to finish: a failed start only
 *                closes their copies (the old one serves on, untouched).
 *   finishOld()  an fdpass primary is asked over the takeover connection
 *                (FINISH_REQUEST): it releases its control socket and
 *                expose path, answers, drains its workers and exits 0;
 *                another program gets `signal` (HAProxy's soft stop is
 *                SIGUSR1), sent to the pid that listens on PATH.
 *   abandon()    the start failed: the connection closes without a finish
 *                request, which an fdpass primary takes as "serve on".
 *
 * Ownership: fetch() gives the received fds to the caller as InheritedFds
 * (openListeners() adopts or closes each); the Takeover owns the
 * connection until finishOld() or abandon().
 */
import { native } from '../native';
import { displayAddress } from '../socket/address';
import { describe, type InheritedFd } from './inherited-fds';
import { matchListeners } from './listener-match';
import { matchSpec, openListeners, type Listener, type ListenerSpec } from './listeners';
import { fetchListeners, type TakeoverLink, type FinishOutcome } from './getsocks-client';
import type { Log } from './log';

export interface TakeoverOptions {
  /** The stream socket where the running process exposes its listeners. */
  path: string;
  /** Tells the old process to finish (HAProxy: 'SIGUSR1'); default: the
   * finish request only an fdpass primary answers. */
  signal?: NodeJS.Signals;
  /** ms to receive the listeners (default 5 s). */
  timeout?: number;
}

/** What `fdpass status` shows of the takeover this primary started with. */
export interface TakeoverInfo {
  /** When this primary took over (ISO time). */
  at: string;
  /** Who exposed the listeners (SO_PEERCRED of PATH) and where. */
  from: { pid: number; uid: number; path: string };
  /** Listeners received, and how many of them this primary uses. */
  received: number;
  adopted: number;
  /** How the old process was told to finish: 'finish request', 'SIGUSR1',
   * ...; null until then, or if it could not be told. */
  told: string | null;
}

/** How long an fdpass primary gets to answer the finish request. */
const FINISH_TIMEOUT_MS = 5000;

export class Takeover {
  readonly info: TakeoverInfo;
  /** The received fds that match an address spec, each named after it
   * (the others were closed); the caller's from fetch() on. */
  readonly fds: InheritedFd[];
  readonly #link: TakeoverLink;
  readonly #signal: NodeJS.Signals | undefined;
  /** The received fds no spec matched (closed at once), for the log. */
  readonly #closed: string[];
  #mine: Listener[] = [];

  private constructor(fds: InheritedFd[], closed: string[], link: TakeoverLink, options: TakeoverOptions, received: number) {
    this.fds = fds;
    this.#closed = closed;
    this.#link = link;
    this.#signal = options.signal;
    this.info = {
      at: new Date().toISOString(),
      from: { pid: link.peer.pid, uid: link.peer.uid, path: displayAddress(options.path) },
      received, adopted: 0, told: null,
    };
  }

  /** Receives the listeners at `options.path` and matches them to `specs`.
   * Throws a TakeoverError (nothing left open) if they cannot be had. */
  static async fetch(options: TakeoverOptions, specs: readonly ListenerSpec[]): Promise<Takeover> {
    const { listeners, link } = await fetchListeners(options.path, { timeout: options.timeout });
    const fds: InheritedFd[] = listeners.map((l) => ({ ...describe(l.fd.release()), name: '', used: false }));
    try {
      const bySpec = matchListeners(specs.map((s) => ({ ...matchSpec(s), name: '' })), fds).bySpec;
      // systemd specs take fds by name, and these have none: only the
      // address specs' matches are named, and kept.
      const kept: InheritedFd[] = [];
      specs.forEach((s, i) => {
        if (s.kind === 'systemd') return;
        for (const f of bySpec[i]!) kept.push({ ...f, name: matchSpec(s).name });
      });
      const unused = fds.filter((f) => !kept.some((k) => k.fd === f.fd));
      for (const f of unused) native.close(f.fd);
      return new Takeover(kept, unused.map(shownAddress), link, options, fds.length);
    } catch (err) {
      for (const f of fds) native.close(f.fd);
      link.close();
      throw err;
    }
  }

  /** openListeners() has run: the listeners made of received fds are
   * shared until finishOld(). Logs what was taken and what was closed. */
  adopted(listeners: Listener[], log: Log): void {
    const used = new Set(this.fds.filter((f) => f.used).map((f) => f.fd));
    this.#mine = listeners.filter((l) => used.has(l.fd));
    for (const l of this.#mine) {
      l.shared = true;
      // Taken from a process, not from systemd: ours alone once it finished.
      l.inherited = false;
    }
    this.info.adopted = this.#mine.length;
    log('takeover', {
      from: this.info.from, received: this.info.received,
      adopted: this.#mine.map((l) => l.address),
      closed: [...this.#closed, ...this.fds.filter((f) => !f.used).map(shownAddress)],
    });
  }

  /**
   * This primary serves: the old process is told to finish, and the
   * listeners are this primary's alone from now on. Never throws: a
   * process that cannot be told (gone, or not fdpass and no signal given)
   * is logged, and this primary serves on either way.
   */
  async finishOld(log: Log): Promise<void> {
    const pid = this.info.from.pid;
    let outcome: FinishOutcome | 'signalled' | 'gone';
    if (this.#signal) {
      this.#link.close();
      try {
        // Never init, nor this process (a PATH of its own).
        if (pid <= 1 || pid === process.pid) throw new Error(`pid ${pid}`);
        process.kill(pid, this.#signal);
        outcome = 'signalled';
      } catch {
        outcome = 'gone';
      }
    } else {
      outcome = await this.#link.finish(FINISH_TIMEOUT_MS);
    }
    for (const l of this.#mine) l.shared = false;
    if (outcome === 'finished' || outcome === 'signalled') {
      this.info.told = outcome === 'finished' ? 'finish request' : this.#signal!;
      log('takeover-done', { from: pid, told: this.info.told });
    } else {
      log('takeover-finish-failed', {
        from: pid, outcome,
        error: outcome === 'gone' ? `could not send ${this.#signal} to pid ${pid} (gone, or init, or this process)` :
          `pid ${pid} did not answer the finish request (${outcome}): it is not an fdpass primary, or it is gone; ` +
          'tell it to stop yourself, or use --takeover-signal',
      });
    }
  }

  /** The start failed: closes the connection (an fdpass primary serves on). */
  abandon(): void {
    this.#link.close();
  }
}

function shownAddress(f: InheritedFd): string {
  if (f.family === 'inet') return `${f.host}:${f.port}`;
  if (f.family === 'inet6') return `[${f.host}]:${f.port}`;
  if (f.family === 'unix') return Buffer.from(f.unixAddress ?? []).toString('latin1').replace(/\0/g, '@');
  return `fd ${f.fd}`;
}

/**
 * Opens every listener of `specs`: those the process at `options.path`
 * exposes and a spec matches are taken over (when `options` is given), the
 * `inherited` ones that match are adopted, the rest bound. On failure
 * nothing is left open and the takeover connection is closed (the old
 * process serves on).
 */
export async function openTakingOver(specs: ListenerSpec[], backlog: number | undefined, inherited: InheritedFd[],
  options: TakeoverOptions | undefined): Promise<{ listeners: Listener[]; takeover: Takeover | null }> {
  const takeover = options ? await Takeover.fetch(options, specs) : null;
  try {
    return { listeners: await openListeners(specs, backlog, [...inherited, ...(takeover?.fds ?? [])]), takeover };
  } catch (err) {
    takeover?.abandon();
    throw err;
  }
}
