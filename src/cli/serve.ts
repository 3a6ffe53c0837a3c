/**
 * `fdpass serve`: the primary of the dispatch server. Without --listen it
 * serves the demo defaults: http on 127.0.0.1:8080 and https on
 * 127.0.0.1:8443 (with the shipped development certificate), as many
 * workers as CPUs. SIGTERM/SIGINT shut down gracefully, SIGHUP reloads,
 * whether they are sent to the primary alone or to its whole process group
 * (systemd, Ctrl-C, `timeout`): the workers leave them to the primary.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { parseArgs } from 'node:util';
import { Primary, STRATEGIES, type Strategy } from '../serve/primary';
import { parseListen } from '../serve/listeners';
import { validHandshakeTimeout, HANDSHAKE_TIMEOUT_MS, MAX_HANDSHAKE_TIMEOUT_MS } from '../serve/handshake-deadline';
import { startControl, defaultControlPath } from '../serve/control';
import { UsageError } from './args';
import { errnoError, ServeConfigError } from '../errors';
import { prepareControlDir } from '../serve/control-path';
import { checkControlFree } from './control-free';

const DEV_CERT = path.join(__dirname, '..', '..', '..', 'certs', 'dev-localhost.crt');
const DEV_KEY = path.join(__dirname, '..', '..', '..', 'certs', 'dev-localhost.key');

export async function serve(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args, allowPositionals: true, strict: true, options: {
      listen: { type: 'string', multiple: true },
      workers: { type: 'string' },
      strategy: { type: 'string', default: 'round-robin' },
      cert: { type: 'string' },
      key: { type: 'string' },
      control: { type: 'string' },
      'shutdown-timeout': { type: 'string', default: '10000' },
      'ready-timeout': { type: 'string', default: '10000' },
      'handshake-timeout': { type: 'string', default: String(HANDSHAKE_TIMEOUT_MS) },
    },
  });
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
  if (cert && key) checkCertificate(cert, key);
  const app = positionals[0] && path.resolve(positionals[0]);
  if (app) mustExist(app);
  // An untrusted default control directory, or a control socket in use, is
  // refused before anything starts.
  prepareControlDir(values.control ?? defaultControlPath());
  await checkControlFree(values.control ?? defaultControlPath());

  const primary = await Primary.start({ listeners: specs, workers, strategy, app, cert, key, shutdownTimeout, readyTimeout, handshakeTimeout });
  const controlPath = values.control ?? defaultControlPath();
  let control;
  try {
    control = await startControl(primary, controlPath);
  } catch (err) {
    await primary.shutdown();
    throw err;
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`fdpass: ${signal}: shutting down\n`);
    void primary.shutdown().then(async () => {
      await control.close();
      process.exit(0);
    });
  };
  // Before saying we are up: a supervisor may signal as soon as it reads that.
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => {
    primary.reload().catch(() => {}); // logged by the primary
  });
  for (const l of primary.sockets) process.stderr.write(`fdpass: ${l.name} on ${l.address}${l.tls ? ' (tls)' : ''}\n`);
  process.stderr.write(`fdpass: ${workers} workers, ${strategy}; control socket ${controlPath}; pid ${process.pid}\n`);
}

/** A missing APP is named before anything starts ("fdpass: APP PATH: ENOENT"),
 * not by every worker failing to load it. */
function mustExist(app: string): void {
  try {
    fs.statSync(app);
  } catch (err) {
    throw systemError(err, 'APP', app);
  }
}

/** An unreadable or invalid certificate is a start-up error, not a worker's:
 * "fdpass: read PATH: ENOENT", or FDPASS_ERR_BAD_CERT with TLS's reason. */
function checkCertificate(cert: string, key: string): void {
  let c: Buffer;
  let k: Buffer;
  try {
    c = fs.readFileSync(cert);
    k = fs.readFileSync(key);
  } catch (err) {
    throw systemError(err, 'read', (err as NodeJS.ErrnoException).path ?? cert);
  }
  try {
    tls.createSecureContext({ cert: c, key: k });
  } catch (err) {
    throw new ServeConfigError('FDPASS_ERR_BAD_CERT', `--cert ${cert} --key ${key}: invalid (${(err as Error).message})`, { cause: err });
  }
}

/** fs's error as a Node-style system error saying what `what` failed on; an
 * error without an errno is passed on as it is. */
function systemError(err: unknown, what: string, file: string): unknown {
  const errno = (err as NodeJS.ErrnoException).errno;
  return typeof errno === 'number' && errno < 0 ? errnoError(errno, what, file) : err;
}
