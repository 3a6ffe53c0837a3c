/**
 * The options of Primary.start() (and so of `fdpass serve`), and their
 * checks: what is wrong with them is a RangeError or a ServeConfigError
 * before anything is opened.
 */
import * as os from 'node:os';
import * as path from 'node:path';
import { ServeConfigError } from '../errors';
import { resolveWorkerIdentity, type ResolvedIdentity } from './privileges';
import { GenerationCredentials } from './tls-credentials';
import type { ListenerSpec } from './listeners';
import type { TakeoverOptions } from './takeover';
import { STRATEGIES, type Strategy } from './strategies';
import type { LogEvent } from './log';

export interface PrimaryOptions {
  listeners: ListenerSpec[];
  /** Default: the number of CPUs. */
  workers?: number;
  strategy?: Strategy;
  /** The APP module; default the built-in demo. */
  app?: string;
  cert?: string;
  key?: string;
  /** The workers' user (a name or uid) and group (default: the user's
   * primary group). A root primary without one runs them as `nobody`;
   * `'root'` keeps root. */
  user?: string;
  group?: string;
  /** How long workers may take to finish in-flight work on shutdown/reload (ms, default 10 s). */
  shutdownTimeout?: number;
  /** How long a worker may take to become ready (ms, default 10 s). */
  readyTimeout?: number;
  /** How long a connection may take to complete its TLS handshake in a worker (ms, default 10 s). */
  handshakeTimeout?: number;
  /** Structured log sink; default one JSON line per event on stderr. */
  log?: (event: LogEvent) => void;
  /** Worker entry point; default the built-in worker-main. */
  workerScript?: string;
  /** Extra arguments for the worker's node (execArgv). */
  workerExecArgv?: string[];
  backlog?: number;
  /** Take the listeners over from the process exposing them at this path
   * (fdpass's --expose-listeners, HAProxy's `expose-fd listeners`) instead
   * of binding them; it is told to finish once the workers are ready. */
  takeover?: TakeoverOptions;
  /** Answer `_getsocks` here (0600, this uid): `haproxy -x`, `--takeover`. */
  exposeListeners?: string;
  /** upgrade(): the new primary's argv, given the path it takes over from. */
  upgradeCommand?: (takeoverPath: string) => string[];
  /** Aborted while start() runs (SIGTERM during a slow start, or while
   * taking over): the primary shuts down gracefully, as shutdown() does, and
   * start() rejects with an AbortError, or resolves if it was already
   * serving (then call shutdown(), which joins the one under way). */
  signal?: AbortSignal;
}

/** Checks what can be checked without opening anything; the worker count
 * and strategy with their defaults. */
export function checkPrimaryOptions(options: PrimaryOptions): { workers: number; strategy: Strategy } {
  const workers = options.workers ?? os.availableParallelism();
  if (!Number.isInteger(workers) || workers < 1 || workers > 1024) throw new RangeError(`workers must be 1..1024, got ${workers}`);
  const strategy = options.strategy ?? 'round-robin';
  if (!STRATEGIES.includes(strategy)) throw new RangeError(`strategy must be one of ${STRATEGIES.join(', ')}, got ${strategy}`);
  if (options.listeners.length === 0) throw new RangeError('at least one listener is needed');
  const hs = options.handshakeTimeout;
  if (hs !== undefined && (!Number.isInteger(hs) || hs < 1 || hs > 0x7fffffff)) {
    throw new RangeError(`handshakeTimeout must be milliseconds from 1 to ${0x7fffffff}, got ${hs}`);
  }
  if (options.listeners.some((l) => l.tls) && (!options.cert || !options.key)) {
    throw new ServeConfigError('FDPASS_ERR_NO_CERT', 'a tls listener needs --cert and --key');
  }
  return { workers, strategy };
}

/** The options with their defaults, the workers' identity and the first
 * generation's certificate and key: what the primary runs with. */
export type ResolvedOptions = Required<Pick<PrimaryOptions, 'workers' | 'strategy' | 'shutdownTimeout' | 'readyTimeout'>> & PrimaryOptions & {
  identity: ResolvedIdentity;
  credentials: GenerationCredentials;
};

/** Checks `options` and resolves the workers' user and the certificate
 * (read now): throws before anything is opened. */
export function resolvePrimaryOptions(options: PrimaryOptions): ResolvedOptions {
  const { workers, strategy } = checkPrimaryOptions(options);
  const identity = resolveWorkerIdentity(options.user, options.group);
  const credentials = new GenerationCredentials(options.cert && path.resolve(options.cert), options.key && path.resolve(options.key));
  credentials.load(1);
  return {
    ...options, workers, strategy, identity, credentials,
    shutdownTimeout: options.shutdownTimeout ?? 10_000,
    readyTimeout: options.readyTimeout ?? 10_000,
  };
}
