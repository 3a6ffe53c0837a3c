/**
 * `fdpass upgrade [--control PATH] [--timeout MS]`: asks a running `fdpass
 * serve` to start a new primary from its own command line that takes its
 * listeners over (as SIGUSR2 does), and waits until it did. Prints the new
 * primary's pid; on failure one line, and the old primary serves on.
 */
import { parseArgs } from 'node:util';
import { controlRequest, defaultControlPath } from '../serve/control';
import { cliAddress, UsageError } from './args';
import { RemoteError, UpgradeError } from '../errors';

export async function upgrade(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args, strict: true, options: { control: { type: 'string' }, timeout: { type: 'string', default: '60000' } },
  });
  const timeout = Number(values.timeout);
  if (!Number.isInteger(timeout) || timeout < 1) throw new UsageError(`--timeout must be milliseconds, not '${values.timeout}'`);
  let pid: number;
  try {
    ({ pid } = await controlRequest<{ pid: number }>(cliAddress(values.control ?? defaultControlPath()), 'upgrade', timeout));
  } catch (err) {
    // The primary's own reason, with its own code.
    if (err instanceof RemoteError && err.remoteCode === 'FDPASS_ERR_UPGRADE') throw new UpgradeError(err.message, { cause: err });
    throw err;
  }
  process.stdout.write(`upgraded: new primary pid ${pid}\n`);
}
