/**
 * Preloaded into every worker of `fdpass serve` (`node --require` this file,
 * ahead of the worker script: the primary adds it, see workerPreloadArgs()),
 * so that the worker switches to its user (privileges.ts) before its script,
 * its APP or anything else of the user's is read: those are then read as
 * the worker user, and must be readable by it. That is checked here, right
 * after the switch, so that an unreadable package or APP (a clone in root's
 * 0700 home, say) is one clear line rather than a module-not-found trace.
 *
 * A worker that cannot switch or read them tells the primary why (FAILED on
 * its channel, fd 3; stderr if that cannot be done) and exits 1, before
 * serving anything.
 * In a process that is not a worker (no worker environment), it does nothing.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { WORKER_ENV, type WorkerConfig } from './worker';
import { dropPrivileges, identityLabel } from './privileges';
import { encodeJson, Op } from './protocol';
import { UnixSocket } from '../socket/socket';

/** The node arguments that preload this file. */
export function workerPreloadArgs(): string[] {
  return ['--require', path.join(__dirname, 'drop-privileges.js')];
}

function run(): void {
  const raw = process.env[WORKER_ENV];
  if (!raw) return;
  const { identity, app } = JSON.parse(raw) as WorkerConfig;
  if (!identity) return;
  try {
    dropPrivileges(identity);
  } catch (err) {
    fail(`cannot switch to user ${identityLabel(identity)}: ${(err as Error).message}`);
    return;
  }
  for (const file of [process.argv[1], app]) {
    if (!file) continue;
    try {
      fs.accessSync(file, fs.constants.R_OK);
    } catch (err) {
      fail(`user ${identityLabel(identity)} cannot read ${file} (${(err as NodeJS.ErrnoException).code}): ` +
        'the package and the APP must be readable by the workers\' user (or choose a user who can read them: --user)');
      return;
    }
  }
}

/** Tells the primary, which reports it (on a fresh channel the message goes
 * out at once, within send()), or else stderr; and exits before the worker
 * script runs. */
function fail(message: string): void {
  let told = false;
  try {
    const channel = UnixSocket.fromFd(3);
    channel.send(encodeJson(Op.Failed, { message })).catch(() => {});
    told = channel.pendingSends === 0;
  } catch {
    // no channel
  }
  if (!told) process.stderr.write(`fdpass worker ${process.pid}: ${message}\n`);
  process.exit(1);
}

run();
