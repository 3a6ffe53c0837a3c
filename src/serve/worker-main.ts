/**
 * Entry point of a worker process started by the primary (`fdpass serve`).
 * Loads APP, builds its servers, and reports ready, or reports why it could
 * not start and exits 1.
 *
 * APP is a module exporting (as module.exports or default):
 *   - a request handler `(req, res) => ...`: served over http, and over
 *     https on tls listeners;
 *   - or a factory `createServer()` (a function of no arguments, or an export
 *     named createServer) returning a net/http server, or an object mapping
 *     listener names to servers ({ http, https, '*' }).
 */
import * as http from 'node:http';
import * as net from 'node:net';
import { Worker } from './worker';
import { demoHandler } from './demo-app';
import { ServeConfigError } from '../errors';
import { surviveLostOutput } from './lost-output';

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

async function loadTargets(app: string | undefined): Promise<Record<string, net.Server>> {
  if (!app) return { '*': http.createServer(demoHandler) };
  let mod: unknown;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    mod = require(app);
  } catch (err) {
    if ((err as { code?: string }).code !== 'ERR_REQUIRE_ESM') throw err;
    mod = await import(app);
  }
  const m = mod as { default?: unknown; createServer?: unknown };
  const main = typeof m === 'function' ? m : m.default ?? m;
  const factory = typeof m.createServer === 'function' ? m.createServer
    : typeof (main as { createServer?: unknown }).createServer === 'function' ? (main as { createServer: unknown }).createServer
    : typeof main === 'function' && main.length === 0 ? main : undefined;
  if (factory) {
    const made = await (factory as () => unknown)();
    if (made instanceof net.Server) return { '*': made };
    if (made && typeof made === 'object' && Object.values(made).every((v) => v instanceof net.Server)) {
      return made as Record<string, net.Server>;
    }
    throw new ServeConfigError('FDPASS_ERR_BAD_APP', `${app}: createServer() must return a net/http server or { name: server }`);
  }
  if (typeof main === 'function') return { '*': http.createServer(main as Handler) };
  throw new ServeConfigError('FDPASS_ERR_BAD_APP', `${app} exports neither a request handler (req, res) nor createServer()`);
}

async function main(): Promise<void> {
  // The primary's stdout and stderr are the worker's too.
  surviveLostOutput();
  const worker = Worker.fromPrimary();
  worker.on('error', (err) => process.stderr.write(`fdpass worker ${process.pid}: ${err.message}\n`));
  try {
    worker.serve(await loadTargets(worker.config.app));
    await worker.ready();
  } catch (err) {
    const message = (err as Error)?.stack?.split('\n').slice(0, 2).join(' ') ?? String(err);
    await worker.failed(message).catch(() => {});
    process.exitCode = 1;
    setImmediate(() => process.exit(1));
  }
}

void main();
