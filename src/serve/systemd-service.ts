/**
 * `fdpass serve` as a systemd service (Type=notify, or Type=notify-reload):
 * what the primary tells the manager over NOTIFY_SOCKET (sd-notify.ts), and
 * when.
 *
 *   READY=1, MAINPID=<primary>   every worker of the first generation is ready
 *   RELOADING=1, MONOTONIC_USEC= a reload starts (SIGHUP, or the control socket)
 *   READY=1                      the reload is over (the new generation serves;
 *                                or it failed and the old one still does)
 *   STOPPING=1                   shutdown starts (SIGTERM, SIGINT)
 *   STATUS=<one line>            with each of those, and every STATUS_MS when
 *                                it changed: workers ready, live connections,
 *                                hand-off rate
 *   WATCHDOG=1                   every WATCHDOG_USEC/2 while the event loop runs
 *   FDSTORE=1, FDNAME=<name>     every listener, once opened (fd-store.ts)
 *   MAINPID=<successor>          a new primary took over (`fdpass upgrade`,
 *                                handover.ts): the manager follows it, and
 *                                this one exits without STOPPING=1
 *
 * MONOTONIC_USEC is CLOCK_MONOTONIC, which is what process.hrtime() reads
 * on Linux (libuv's uv_hrtime). The timers are unref()'d: they never keep
 * the primary alive.
 */
import { SdNotify, takeNotifyEnv } from './sd-notify';
import { storeListeners } from './fd-store';
import type { Listener } from './listeners';
import type { InheritedFd } from './inherited-fds';
import type { Status } from './status';
import type { Log } from './log';

/** How often STATUS= is refreshed (when it changed). */
const STATUS_MS = 5000;

/** What the service needs of the primary (Primary has all of it). */
export interface ServiceTarget {
  status(): Status;
  /** The status after asking the workers for their live counts. */
  freshStatus(): Promise<Status>;
}

export class SystemdService {
  readonly #notify: SdNotify;
  readonly #target: ServiceTarget;
  readonly #workers: number;
  readonly #log: Log;
  readonly #watchdogUsec: number | null;
  readonly #fdStore: number;
  #watchdog: NodeJS.Timeout | null = null;
  #statusTimer: NodeJS.Timeout | null = null;
  #lastStatus = '';

  private constructor(notify: SdNotify, target: ServiceTarget, workers: number, log: Log, watchdogUsec: number | null, fdStore: number) {
    this.#notify = notify;
    this.#target = target;
    this.#workers = workers;
    this.#log = log;
    this.#watchdogUsec = watchdogUsec;
    this.#fdStore = fdStore;
  }

  /** Under a service manager (NOTIFY_SOCKET set), the service; else null.
   * Takes the notify variables out of the environment either way. */
  static fromEnv(target: ServiceTarget, workers: number, log: Log): SystemdService | null {
    const env = takeNotifyEnv(log);
    if (!env) return null;
    return new SystemdService(new SdNotify(env.socket, log), target, workers, log, env.watchdogUsec, env.fdStore);
  }

  /** With the fd store on (FDSTORE), pushes every listener, after taking
   * out the entries of the inherited fds no listener took. */
  storeListeners(listeners: Listener[], inherited: readonly InheritedFd[]): void {
    if (this.#fdStore === 0) return;
    storeListeners(this.#notify, this.#fdStore, listeners, inherited.filter((f) => !f.used).map((f) => f.name), this.#log);
  }

  /** The first generation is ready: READY=1; the watchdog and the status
   * refresh start. */
  ready(): void {
    void this.#notify.send({ READY: 1, MAINPID: process.pid, STATUS: this.#statusLine(this.#target.status(), true) });
    if (this.#watchdogUsec !== null && !this.#watchdog) {
      const every = Math.max(1, Math.floor(this.#watchdogUsec / 2000));
      this.#watchdog = setInterval(() => {
        // A ping still queued says as much as a second one would.
        if (this.#notify.pending === 0) void this.#notify.send({ WATCHDOG: 1 });
      }, every).unref();
    }
    this.#statusTimer ??= setInterval(() => void this.#refreshStatus().catch(() => {}), STATUS_MS).unref();
  }

  reloading(): void {
    const usec = process.hrtime.bigint() / 1000n;
    void this.#notify.send({ RELOADING: 1, MONOTONIC_USEC: usec.toString(), STATUS: 'reloading: starting a new generation of workers' });
  }

  /** The reload is over, whether it worked (`err` undefined) or not: the
   * service serves either way. */
  reloaded(err?: unknown): void {
    const line = this.#statusLine(this.#target.status(), true);
    const status = err === undefined ? line : `reload failed (${(err as Error).message ?? err}); ${line}`;
    void this.#notify.send({ READY: 1, STATUS: status });
  }

  /** A successor (a new primary that took over) is the main process from
   * now on: said before this one exits, so that the manager follows it
   * rather than stop the service; it says READY=1 itself once it is the
   * main pid. Resolves once the manager's socket took it. */
  async mainPid(pid: number): Promise<void> {
    this.#stopTimers();
    await this.#notify.send({ MAINPID: pid, STATUS: `taken over by pid ${pid}` });
  }

  /** The variables a successor needs to talk to the manager in its turn
   * (they were taken out of this process's environment). */
  successorEnv(): Record<string, string> {
    const env: Record<string, string> = { NOTIFY_SOCKET: this.#notify.address };
    if (this.#watchdogUsec !== null) env.WATCHDOG_USEC = String(this.#watchdogUsec);
    if (this.#fdStore > 0) env.FDSTORE = String(this.#fdStore);
    return env;
  }

  stopping(): void {
    this.#stopTimers();
    void this.#notify.send({ STOPPING: 1, STATUS: 'stopping: draining the workers' });
  }

  async close(): Promise<void> {
    this.#stopTimers();
    if (this.#watchdog) clearInterval(this.#watchdog);
    this.#watchdog = null;
    await this.#notify.close();
  }

  #stopTimers(): void {
    if (this.#statusTimer) clearInterval(this.#statusTimer);
    this.#statusTimer = null;
    // The watchdog keeps going while the workers drain: a shutdown is still
    // a live process, and TimeoutStopSec bounds it.
  }

  async #refreshStatus(): Promise<void> {
    const line = this.#statusLine(await this.#target.freshStatus(), false);
    if (line === this.#lastStatus || this.#statusTimer === null || this.#notify.pending > 0) return;
    this.#lastStatus = line;
    void this.#notify.send({ STATUS: line });
  }

  /** "4/4 workers ready, 12 connections, 35 connections/s" (remembered as
   * the last one sent when `sent`). */
  #statusLine(st: Status, sent: boolean): string {
    const ready = st.workers.filter((w) => w.generation === st.primary.generation && w.state === 'ready').length;
    let live = 0;
    for (const w of st.workers) live += w.live;
    const line = `${ready}/${this.#workers} workers ready, ${live} connections, ${st.primary.handoffRatePerSecond} connections/s`;
    if (sent) this.#lastStatus = line;
    return line;
  }
}
