/**
 * `fdpass serve`: the primary of the dispatch server. Without --listen it
 * serves the demo defaults: http on 127.0.0.1:8080 and https on
 * 127.0.0.1:8443 (with the shipped development certificate), as many
 * workers as CPUs. SIGTERM/SIGINT shut down gracefully, SIGHUP reloads,
 * whether they are sent to the primary alone or to its whole process group
 * (systemd, Ctrl-C, `timeout`): the workers leave them to the primary.
 * `--user USER[:GROUP]` is who the workers run as (privileges.ts); under
 * systemd the primary speaks sd_notify (systemd-service.ts).
 * SIGUSR2 (or `fdpass upgrade`) starts a new primary from this command line
 * that takes the listeners over (--takeover); --expose-listeners hands them
 * to whoever asks with `_getsocks` (`haproxy -x`, another fdpass).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { surviveLostOutput } from '../serve/lost-output';
import { Primary, STRATEGIES, type Strategy } from '../serve/primary';
import { parseListen, optionsShown } from '../serve/listeners';
import { validHandshakeTimeout, HANDSHAKE_TIMEOUT_MS, MAX_HANDSHAKE_TIMEOUT_MS } from '../serve/handshake-deadline';
import { startControl, defaultControlPath } from '../serve/control';
import { UsageError, cliAddress } from './args';
import { upgradeArgs } from '../serve/upgrade';
import { asSystemError } from '../errors';
import { prepareControlDir } from '../serve/control-path';
import { checkControlFree } from './control-free';

const DEV_CERT = path.join(__dirname, '..', '..', '..', 'certs', 'dev-localhost.crt');
const DEV_KEY = path.join(__dirname, '..', '..', '..', 'certs', 'dev-localhost.key');

const OPTIONS = {
  listen: { type: 'string', multiple: true },
  workers: { type: 'string' },
  strategy: { type: 'string', default: 'round-robin' },
  cert: { type: 'string' },
  key: { type: 'string' },
  control: { type: 'string' },
  'shutdown-timeout': { type: 'string', default: '10000' },
  'ready-timeout': { type: 'string', default: '10000' },
  'handshake-timeout': { type: 'string', default: String(HANDSHAKE_TIMEOUT_MS) },
  user: { type: 'string' },
  takeover: { type: 'string' },
  'takeover-signal': { type: 'string' },
  'takeover-timeout': { type: 'string', default: '5000' },
  'expose-listeners': { type: 'string' },
} as const satisfies ParseArgsConfig['options'];

export async function serve(args: string[]): Promise<void> {
  // Every signal serve handles is ours from the first moment, so that none
  // takes its default action (ending the process) while the primary starts:
  // SIGUSR1 would make Node open its inspector (a debugger port any local
  // user could reach); SIGTERM, SIGINT and SIGUSR1 (HAProxy's soft stop,
  // `haproxy -sf`) abort the start, a graceful stop that loses nothing
  // accepted already (a new primary told to stop must not take over and
  // finish the old one: nobody would serve); SIGHUP (a reload, or a terminal
  // that hung up) and SIGUSR2 (an upgrade) are done once started.
  let early: string | undefined;
  const starting = new AbortController();
  const pending = new Set<'SIGHUP' | 'SIGUSR2'>();
  const startingHandlers = {
    SIGTERM: () => stopEarly('SIGTERM'),
    SIGINT: () => stopEarly('SIGINT'),
    SIGUSR1: () => stopEarly('SIGUSR1'),
    SIGHUP: () => pending.add('SIGHUP'),
    SIGUSR2: () => pending.add('SIGUSR2'),
  };
  const stopEarly = (sig: string) => {
    early ??= sig;
    starting.abort();
  };
  // A hung-up terminal or a closed log pipe does not end the server.
  surviveLostOutput();
  for (const [sig, fn] of Object.entries(startingHandlers)) process.on(sig, fn);
  const { values, positionals } = parseArgs({ args, allowPositionals: true, strict: true, options: OPTIONS });
  if (positionals.length > 1) throw new UsageError(`one APP at most, got ${positionals.join(' ')}`);
  const defaults = !values.listen?.length;
  const specs = (defaults ? ['127.0.0.1:8080', '127.0.0.1:8443,tls'] : values.listen!).map((s) => {
    try {
      return parseListen(s);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  });
  const workers = values.workers === undefined ? os.availableParallelism() : Number(values.workers);
  if (!Number.isInteger(workers) || workers < 1) throw new UsageError(`--workers must be a positive integer, not '${values.workers}'`);
  const strategy = values.strategy as Strategy;
  if (!STRATEGIES.includes(strategy)) throw new UsageError(`--strategy must be one of ${STRATEGIES.join(', ')}, not '${values.strategy}'`);
  const shutdownTimeout = Number(values['shutdown-timeout']);
  if (!Number.isInteger(shutdownTimeout) || shutdownTimeout < 0) throw new UsageError(`--shutdown-timeout must be milliseconds, not '${values['shutdown-timeout']}'`);
  const readyTimeout = Number(values['ready-timeout']);
  if (!Number.isInteger(readyTimeout) || readyTimeout < 1) throw new UsageError(`--ready-timeout must be milliseconds, not '${values['ready-timeout']}'`);
  const handshakeTimeout = Number(values['handshake-timeout']);
  if (!validHandshakeTimeout(handshakeTimeout)) {
    throw new UsageError(`--handshake-timeout must be milliseconds (1 to ${MAX_HANDSHAKE_TIMEOUT_MS}), not '${values['handshake-timeout']}'`);
  }
  if (Boolean(values.cert) !== Boolean(values.key)) throw new UsageError('--cert and --key go together');
  let cert = values.cert;
  let key = values.key;
  if (!cert && specs.some((s) => s.tls)) {
    if (!defaults) throw new UsageError('a tls listener needs --cert FILE --key FILE');
    cert = DEV_CERT;
    key = DEV_KEY;
    process.stderr.write('fdpass: using the shipped DEVELOPMENT certificate (certs/dev-localhost.crt): not for production\n');
  }
  const [user, group] = splitUser(values.user);
  const signal = values['takeover-signal'];
  if (signal !== undefined && !(signal in os.constants.signals)) throw new UsageError(`--takeover-signal must be a signal name (SIGUSR1, SIGTERM, ...), not '${signal}'`);
  if (signal !== undefined && values.takeover === undefined) throw new UsageError('--takeover-signal goes with --takeover PATH');
  const takeoverTimeout = Number(values['takeover-timeout']);
  if (!Number.isInteger(takeoverTimeout) || takeoverTimeout < 1) throw new UsageError(`--takeover-timeout must be milliseconds, not '${values['takeover-timeout']}'`);
  const takeover = values.takeover === undefined ? undefined
    : { path: cliAddress(values.takeover), signal: signal as NodeJS.Signals | undefined, timeout: takeoverTimeout };
  const app = positionals[0] && path.resolve(positionals[0]);
  if (app) mustExist(app);
  // An untrusted default control directory, or a control socket in use, is
  // refused before anything starts. (Not in use: a primary taking over
  // expects its predecessor's control socket to be live until it finishes.)
  prepareControlDir(values.control ?? defaultControlPath());
  if (!takeover) await checkControlFree(values.control ?? defaultControlPath());

  // The certificate and key are read (and checked) by Primary.start, as are
  // the user and group: an error there starts nothing.
  // The new primary of `fdpass upgrade`: this very command line, run by
  // the fdpass on disk now, taking over from this one.
  const self = [process.execPath, ...process.execArgv, process.argv[1]!, 'serve'];
  let primary: Primary;
  try {
    primary = await Primary.start({
      listeners: specs, workers, strategy, app, cert, key, user, group, shutdownTimeout, readyTimeout, handshakeTimeout,
      takeover, exposeListeners: values['expose-listeners'] && cliAddress(values['expose-listeners']),
      upgradeCommand: (from) => [...self, ...upgradeArgs(args, OPTIONS, from)],
      signal: starting.signal,
    });
  } catch (err) {
    if (early === undefined) throw err;
    process.stderr.write(`fdpass: ${early} while starting: stopped\n`);
    process.exit(0);
  }
  const controlPath = values.control ?? defaultControlPath();
  let control: Awaited<ReturnType<typeof startControl>> | null = null;
  let controlStarted: Promise<void> = Promise.resolve();
  let stopping = false;
  const stop = (why: string) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`fdpass: ${why}: shutting down\n`);
    void primary.shutdown().then(async () => {
      await controlStarted.catch(() => {}); // a failure is serve()'s to report
      await control?.close();
      process.exit(0);
    });
  };
  // The serving handlers, all at once and before anything else is awaited:
  // no moment without one.
  for (const [sig, fn] of Object.entries(startingHandlers)) process.removeListener(sig, fn);
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGUSR1', () => stop('SIGUSR1'));
  const reload = () => void primary.reload().catch(() => {}); // logged by the primary
  const upgrade = () => void primary.upgrade().catch(() => {}); // logged by the primary
  process.on('SIGHUP', reload);
  process.on('SIGUSR2', upgrade);
  primary.on('taken-over', (successor: { pid: number }) => stop(`taken over by pid ${successor.pid}`));
  // A successor binds the control socket: it is released before it serves alone.
  primary.releaseForSuccessor(async () => {
    await controlStarted.catch(() => {});
    await control?.close();
  });
  if (early !== undefined) stop(early);
  else {
    if (pending.has('SIGHUP')) reload();
    if (pending.has('SIGUSR2')) upgrade();
  }
  controlStarted = startControl(primary, controlPath).then((c) => {
    control = c;
  }, async (err: unknown) => {
    // After a takeover the old process has finished: stopping now would
    // leave nobody serving.
    if (!takeover && !stopping) {
      await primary.shutdown();
      throw err;
    }
    if (!stopping) process.stderr.write(`fdpass: control socket ${controlPath}: ${(err as Error).message}; serving without it\n`);
  });
  await controlStarted;
  if (stopping) return;
  for (const l of primary.sockets) process.stderr.write(`fdpass: ${l.name} on ${l.address}${optionsShown(l)}\n`);
  const st = primary.status().primary;
  if (st.takeover) process.stderr.write(`fdpass: took over ${st.takeover.adopted} of ${st.takeover.received} listeners from pid ${st.takeover.from.pid} (${values.takeover})\n`);
  if (st.exposeListeners) process.stderr.write(`fdpass: listeners exposed to _getsocks at ${st.exposeListeners}\n`);
  process.stderr.write(`fdpass: ${workers} workers, ${strategy}; control socket ${controlPath}; pid ${process.pid}\n`);
}

/** A missing APP is named before anything starts ("fdpass: APP PATH: ENOENT"),
 * not by every worker failing to load it. */
function mustExist(app: string): void {
  try {
    fs.statSync(app);
  } catch (err) {
    throw asSystemError(err, 'APP', app);
  }
}

/** `--user USER[:GROUP]` as [user, group]. */
function splitUser(spec: string | undefined): [string | undefined, string | undefined] {
  if (spec === undefined) return [undefined, undefined];
  const i = spec.indexOf(':');
  const [user, group] = i < 0 ? [spec, undefined] : [spec.slice(0, i), spec.slice(i + 1)];
  if (!user || group === '') throw new UsageError(`--user must be USER or USER:GROUP, not '${spec}'`);
  return [user, group];
}
