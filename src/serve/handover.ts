/**
 * The old primary's side of a takeover: its listeners handed out over
 * `_getsocks` (getsocks-server.ts) to whoever this uid runs (a new fdpass
 * primary, `haproxy -x`), and `fdpass upgrade` (upgrade.ts), which starts
 * that new primary itself.
 *
 * - Handed out, the listeners are shared (listeners.ts): from then on this
 *   primary's stop only closes its copies. They stay shared for good, but
 *   for one case this side can prove over: the taker was the new primary of
 *   an upgrade and it exited without taking over (its copies died with it).
 * - A taker that asks this primary to finish (fdpass's finish request) gets
 *   what it will bind released first: the expose socket's path, then the
 *   host's own (the control socket; systemd's MAINPID). Then the host
 *   stops: it drains its workers and exits.
 * - `fdpass upgrade`: with no --expose-listeners, a private socket (an
 *   abstract name only this uid may connect to) serves the new primary for
 *   the time of the upgrade. Upgrades do not overlap: asked for while one
 *   runs, it is that one's outcome. A primary that stops before its new
 *   primary took over stops that one too (abandonUpgrade()).
 *
 * Ownership: the Handover owns its expose servers; the listeners are the
 * host's, lent for each send (close() before the host closes them).
 */
import * as crypto from 'node:crypto';
import type { Credentials } from '../socket/frame';
import { displayAddress } from '../socket/address';
import { UpgradeError } from '../errors';
import { ExposeServer, type ExposeTarget } from './getsocks-server';
import { UpgradeRun } from './upgrade';
import type { Listener } from './listeners';
import type { Log } from './log';

/** What the handover needs of the primary. */
export interface HandoverHost {
  readonly listeners: readonly Listener[];
  readonly log: Log;
  /** The primary is stopping: nothing more is handed out or started. */
  stopping(): boolean;
  /** ms a new primary gets to take over, from its spawn. */
  readonly upgradeTimeout: number;
  /** ms a new primary told to stop (this one stops before it took over)
   * gets for its graceful shutdown before SIGKILL. */
  readonly upgradeStopGrace: number;
  /** The new primary's command line, given where it takes over from
   * (argv[0] the executable); without it there is no upgrade. */
  readonly upgradeCommand?: (takeoverPath: string) => string[];
  /** The new primary's environment. */
  upgradeEnv(): NodeJS.ProcessEnv;
  /** `successor` is about to serve alone: release what it will bind (the
   * control socket) and tell the service manager who the main pid is. */
  release(successor: Credentials): Promise<void>;
  /** Released and answered: stop (drain the workers, exit). */
  finish(successor: Credentials): void;
}

export class Handover implements ExposeTarget {
  readonly #host: HandoverHost;
  /** --expose-listeners. */
  #exposed: ExposeServer | null = null;
  /** The private socket of the upgrade under way. */
  #private: ExposeServer | null = null;
  #run: UpgradeRun | null = null;
  /** The upgrade under way (from its first step: one at a time). */
  #upgrading: Promise<number> | null = null;
  /** pids that were handed the listeners and may hold them still. */
  readonly #holders = new Set<number>();
  #finishing = false;

  constructor(host: HandoverHost) {
    this.#host = host;
  }

  get log(): Log {
    return this.#host.log;
  }

  /** Listens on `path` for `_getsocks` (--expose-listeners). After a
   * takeover (`afterTakeover`) a failure is logged, not thrown: the old
   * process is gone, and serving on beats stopping over a socket nobody
   * may need. */
  async expose(path: string, afterTakeover = false): Promise<void> {
    try {
      this.#exposed = await ExposeServer.listen(path, this, this.#serverOptions());
    } catch (err) {
      if (!afterTakeover) throw err;
      this.#host.log('expose-failed', { path: displayAddress(path), error: (err as Error).message });
    }
  }

  /** Where --expose-listeners listens (null without it). */
  get exposedAt(): string | null {
    return this.#exposed ? displayAddress(this.#exposed.address) : null;
  }

  /** Starts a new primary that takes over from this one; resolves with its
   * pid once it did (this primary is then finishing), rejects with an
   * UpgradeError if it could not (this one serves on). */
  upgrade(): Promise<number> {
    return this.#upgrading ??= this.#upgrade().finally(() => {
      this.#upgrading = null;
    });
  }

  async #upgrade(): Promise<number> {
    const host = this.#host;
    if (host.stopping() || this.#finishing) throw new UpgradeError('the primary is stopping');
    if (!host.upgradeCommand) throw new UpgradeError('no command line to start a new primary with (Primary.start: upgradeCommand)');
    let run: UpgradeRun | null = null;
    try {
      let server = this.#exposed;
      if (!server) {
        const name = `\0fdpass-takeover-${process.pid}-${crypto.randomBytes(6).toString('hex')}`;
        server = this.#private = await ExposeServer.listen(name, this, this.#serverOptions());
      }
      const argv = host.upgradeCommand(displayAddress(server.address));
      const started = run = this.#run = new UpgradeRun(argv, host.upgradeEnv(), host.upgradeTimeout);
      host.log('upgrade', { pid: started.pid ?? null, command: argv });
      void started.exited.then(() => {
        if (started.state === 'taken' || started.pid === undefined) return;
        // It died with its copies of the listeners: if nobody else took
        // them, they are this primary's alone again.
        this.#holders.delete(started.pid);
        if (this.#holders.size === 0 && !this.#finishing) for (const l of host.listeners) l.shared = false;
      });
      const pid = await started.done;
      host.log('upgrade-done', { pid });
      return pid;
    } catch (err) {
      host.log('upgrade-failed', { pid: run?.pid ?? null, error: (err as Error).message });
      await this.#private?.close();
      this.#private = null;
      throw err;
    }
  }

  /**
   * The host is stopping (call it first thing): an upgrade whose new primary
   * has not taken over fails ("the primary is stopping"), and that primary is
   * stopped with this one (upgrade.ts abandon()). Resolves once the new
   * primary of any upgrade that did not succeed has exited: the host waits
   * for it before it exits itself, so that nothing it started outlives it.
   */
  async abandonUpgrade(): Promise<void> {
    const run = this.#run;
    // Never spawned (its 'error' said why): nothing to wait for.
    if (!run || run.state === 'taken' || run.pid === undefined) return;
    if (run.state === 'running') {
      this.#host.log('upgrade-abandoned', { pid: run.pid, why: 'this primary is stopping before the new one took over' });
      run.abandon(`the primary is stopping: the new primary (pid ${run.pid}) is stopped with it`, this.#host.upgradeStopGrace);
    }
    await run.exited;
  }

  /** Stops listening and ends every session (before the host closes its listeners). */
  async close(): Promise<void> {
    await this.#exposed?.close();
    await this.#private?.close();
  }

  // ---- ExposeTarget ------------------------------------------------------------

  exposed(): readonly number[] {
    if (this.#finishing || this.#host.stopping()) return [];
    return this.#host.listeners.filter((l) => l.fd >= 0).map((l) => l.fd);
  }

  handedOut(peer: Credentials): void {
    this.#holders.add(peer.pid);
    for (const l of this.#host.listeners) l.shared = true;
  }

  async release(peer: Credentials): Promise<boolean> {
    const run = this.#run;
    // The new primary of an upgrade that failed (it overran its time) is
    // being stopped: it does not take over.
    if (run && run.pid === peer.pid && run.state === 'failed') return false;
    if (this.#finishing) return true;
    this.#finishing = true;
    this.#host.log('taken-over', { by: peer.pid, uid: peer.uid });
    if (run && run.pid === peer.pid) {
      run.taken();
      // The answer to `fdpass upgrade` goes out before the control socket
      // closes: its session sends it in the turn the upgrade settles.
      await new Promise((resolve) => setImmediate(resolve));
    }
    try {
      await this.#exposed?.stopListening();
      await this.#private?.stopListening();
      await this.#host.release(peer);
    } catch (err) {
      this.#host.log('takeover-release-failed', { by: peer.pid, error: (err as Error).message });
    }
    return true;
  }

  finish(peer: Credentials): void {
    this.#host.finish(peer);
  }

  left(peer: Credentials): void {
    this.#host.log('listeners-taken', { by: peer.pid, uid: peer.uid, finish: false });
  }

  #serverOptions() {
    return { finishTimeout: this.#host.upgradeTimeout + 10_000 };
  }
}
