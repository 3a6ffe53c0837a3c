/**
 * The fdpass command line: socat for file descriptors. Parses arguments and
 * calls the library; every failure is one line on stderr,
 * `fdpass: <what failed>: <code>`, and a non-zero exit status
 * (1 for a failed operation, 2 for a usage error).
 */
import { UsageError } from './args';
import { errorLine } from './error-line';


const USAGE = `usage:
  fdpass send (--connect PATH | --listen PATH) [--type stream|seqpacket|dgram] [--raw]
              [--data TEXT] [--credentials] FILE...
  fdpass recv (--connect PATH | --listen PATH) [--type stream|seqpacket|dgram] [--raw]
              [--count N] [--write TEXT] [--read]
  fdpass serve [--listen ADDR[:PORT][,tls] ...] [--workers N]
               [--strategy round-robin|least-connections|hash] [--cert FILE --key FILE]
               [--control PATH] [--shutdown-timeout MS] [--ready-timeout MS]
               [--handshake-timeout MS] [--user USER[:GROUP]] [--expose-listeners PATH]
               [--takeover PATH [--takeover-signal SIG] [--takeover-timeout MS]] [APP]
  fdpass status [--control PATH] [--json]
  fdpass upgrade [--control PATH] [--timeout MS]
  fdpass demo                 a live run of the seed fd-passing scenarios
  fdpass --help | --version

PATH is a filesystem path, or @name for a Linux abstract socket.
send opens each FILE read-write (created if missing) and sends all their fds in one message.
recv prints one JSON line per message: {"data", "fds":[{"fd","kind","target"}], "credentials"?}.
  --write adds "wrote" to each fd, --read adds "read" (files only, else null); an fd that fails
  gets "writeError"/"readError" (its errno code) instead and recv goes on; a write that cannot
  finish within 1 s (a full pipe) stops there: "writeError":"ETIMEDOUT". With --listen, a peer
  that breaks the protocol is reported on stderr (fdpass: peer pid P uid U: ...) and the next
  peer is accepted.
Without --raw both sides speak fdpass framing; --raw is plain sendmsg/recvmsg.
The default control socket is $XDG_RUNTIME_DIR/fdpass/control.sock, else
<tmpdir>/fdpass-<uid>/control.sock; serve and status refuse that directory if it is a symbolic
link, another uid's, or writable by group or others; status refuses a socket served by another uid.
upgrade (or SIGUSR2 to the primary) starts a new primary from the same command line that takes
the listeners over (_getsocks, as haproxy -x does) and waits until it serves; the old one drains
and exits. --expose-listeners PATH answers _getsocks (haproxy -x PATH, fdpass serve --takeover
PATH); --takeover PATH takes them from such a socket (HAProxy: stats socket ... expose-fd
listeners, with --takeover-signal SIGUSR1).`;

export async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  try {
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
      case undefined:
      case '--help':
      case '-h':
      case 'help':
        process.stdout.write(USAGE + '\n');
        if (cmd === undefined) process.exitCode = 2;
        break;
      default:
        throw new UsageError(`unknown command '${cmd}'`);
    }
  } catch (err) {
    fail(err);
  }
}

/** Prints `fdpass: <what failed>: <code>` and sets the exit status. */
export function fail(err: unknown): void {
  if (err instanceof UsageError || (err as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' ||
      (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
    process.stderr.write(`fdpass: ${(err as Error).message.split('. ')[0]}: EUSAGE\n${USAGE.split('\n').slice(0, 5).join('\n')}\n`);
    process.exitCode = 2;
    return;
  }
  process.stderr.write(`fdpass: ${errorLine(err)}\n`);
  process.exitCode = 1;
}

