/**
 * The fdpass command line: socat for file descriptors. Parses arguments and
 * calls the library; every failure is one line on stderr,
 * `fdpass: <what failed>: <code>`, and a non-zero exit status
 * (1 for a failed operation; 2 for a usage error, which the usage of the
 * command used follows). Usage and help texts: usage.ts.
 */
import { UsageError } from './args';
import { errorLine, oneLine } from './error-line';
import { help, isCommand, overview, usage, wantsHelp, type Command } from './usage';

export async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  const command = isCommand(cmd) ? cmd : undefined;
  try {
    if (command !== undefined && wantsHelp(rest)) {
      process.stdout.write(help(command));
      return;
    }
    switch (cmd) {
      // Loaded on use, so that a runtime the addon refuses gets a one-line error.
      case 'send':
        await (await import('./send')).send(rest);
        break;
      case 'recv':
        await (await import('./recv')).recv(rest);
        break;
      case 'demo':
        await (await import('./demo')).demo(rest);
        break;
      case 'serve':
        await (await import('./serve')).serve(rest);
        break;
      case 'status':
        await (await import('./status')).status(rest);
        break;
      case 'upgrade':
        await (await import('./upgrade')).upgrade(rest);
        break;
      case '--version':
      case '-v':
        // eslint-disable-next-line @typescript-eslint/no-require-imports
        process.stdout.write(`${require('../../../package.json').version}\n`);
        break;
      case '--help':
      case '-h':
      case 'help':
        process.stdout.write(overview());
        break;
      case undefined:
        // Not asked for: it goes where errors go.
        process.stderr.write(overview());
        process.exitCode = 2;
        break;
      default:
        throw new UsageError(`unknown command '${cmd}'`);
    }
  } catch (err) {
    fail(err, command);
  }
}

/** Prints `fdpass: <what failed>: <code>` (one line) and sets the exit
 * status; after a usage error, the usage of `cmd` (the command used). */
export function fail(err: unknown, cmd?: Command): void {
  const code = (err as { code?: unknown }).code;
  if (err instanceof UsageError || (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS'))) {
    process.stderr.write(`fdpass: ${oneLine((err as Error).message.split('. ')[0]!)}: EUSAGE\n${usage(cmd)}`);
    process.exitCode = 2;
    return;
  }
  process.stderr.write(`fdpass: ${errorLine(err)}\n`);
  process.exitCode = 1;
}
