/**
 * Whether this JavaScript runtime can run fdpass, decided before the addon
 * is loaded (native.ts): a runtime that cannot is refused with an
 * UnsupportedRuntimeError (FDPASS_ERR_UNSUPPORTED_RUNTIME) that says why,
 * never left to crash inside the addon.
 *
 * fdpass needs Linux and Node.js >= 20. Bun and Deno report a Node.js
 * version (26 at the time of writing) and load Node-API addons, but the
 * addon watches its sockets with a libuv poll watcher (native/poll.c) that
 * calls back into JavaScript: Bun has no uv_poll_init and aborts the
 * process (SIGABRT), Deno aborts in V8 ("Cannot create a handle without a
 * HandleScope") as soon as a watcher fires. They are recognised by what they
 * announce of themselves (process.versions.bun, process.versions.deno, the
 * Bun and Deno globals), whatever Node.js version they claim.
 */
import { UnsupportedRuntimeError } from './errors';

/** The oldest Node.js major fdpass runs on. */
export const MIN_NODE_MAJOR = 20;

/** Why a runtime that is not Node.js cannot run the addon. */
const OTHER_RUNTIMES = [
  { name: 'Bun', version: 'bun', global: 'Bun', why: 'its Node-API has no libuv poll watcher (uv_poll_init), which fdpass watches its sockets with' },
  { name: 'Deno', version: 'deno', global: 'Deno', why: 'its Node-API cannot run the callbacks of the libuv poll watcher that fdpass watches its sockets with' },
] as const;

/** Throws an UnsupportedRuntimeError unless this is Node.js >= 20 on Linux. */
export function checkRuntime(): void {
  const versions = process.versions as Partial<Record<string, string>>;
  for (const r of OTHER_RUNTIMES) {
    const version = versions[r.version];
    if (version !== undefined || r.global in globalThis) {
      throw new UnsupportedRuntimeError(`${r.name}${version ? ' ' + version : ''} is not supported, only Node.js: ${r.why}`, r.version);
    }
  }
  if (process.platform !== 'linux') {
    throw new UnsupportedRuntimeError(`Linux only: this is ${process.platform}`, process.platform);
  }
  const major = Number(process.versions.node.split('.')[0]);
  if (!(major >= MIN_NODE_MAJOR)) {
    throw new UnsupportedRuntimeError(`needs Node.js >= ${MIN_NODE_MAJOR} (this is ${process.version})`, 'node');
  }
}
