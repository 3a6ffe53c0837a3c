/**
 * What the command line says about itself: `fdpass --help` (every command's
 * synopsis), `fdpass COMMAND --help` (one command, with its details), and
 * the synopsis shown after a usage error of that command.
 */

export const COMMANDS = ['send', 'recv', 'serve', 'status', 'upgrade', 'demo'] as const;
export type Command = (typeof COMMANDS)[number];

export function isCommand(s: string | undefined): s is Command {
  return (COMMANDS as readonly (string | undefined)[]).includes(s);
}

const SYNOPSIS: Record<Command, string> = {
  send: `fdpass send (--connect PATH | --listen PATH) [--type stream|seqpacket|dgram] [--raw]
            [--data TEXT] [--credentials] [--write] [--create] FILE...`,
  recv: `fdpass recv (--connect PATH | --listen PATH) [--type stream|seqpacket|dgram] [--raw]
            [--count N] [--write TEXT] [--read]`,
  serve: `fdpass serve [--listen ADDR[:PORT][,tls][,proxy][,name=NAME] ...] [--workers N]
             [--strategy round-robin|least-connections|hash] [--cert FILE --key FILE]
             [--control PATH] [--shutdown-timeout MS] [--ready-timeout MS]
             [--handshake-timeout MS] [--user USER[:GROUP]] [--expose-listeners PATH]
             [--takeover PATH [--takeover-signal SIG] [--takeover-timeout MS]] [APP]`,
  status: 'fdpass status [--control PATH] [--json]',
  upgrade: 'fdpass upgrade [--control PATH] [--timeout MS]',
  demo: 'fdpass demo',
};

const ADDRESSES = `PATH is a filesystem path, or @name for a Linux abstract socket.
Without --raw both sides speak fdpass framing; --raw is plain sendmsg/recvmsg.`;

const CONTROL = `The default control socket is $XDG_RUNTIME_DIR/fdpass/control.sock, else
<tmpdir>/fdpass-<uid>/control.sock; serve and status refuse that directory if it is a symbolic
link, another uid's, or writable by group or others; status refuses a socket served by another uid.`;

const DETAILS: Record<Command, string> = {
  send: `Opens each FILE and sends all their fds in one message (at most 253), then prints
{"sent":{"data","files","fds"}}.
FILEs are opened read-only: the receiver can read through them, not write.
  --data TEXT     the message's bytes (none by default; a raw stream sends 'X': it needs a
                  byte to carry the fds)
  --credentials   attaches this process's pid, uid and gid (SCM_CREDENTIALS)
  --write         opens them read-write (for recv --write, say)
  --create        also creates a FILE that does not exist (mode 0666 less the umask);
                  implies --write. It is created only once there is a peer: after
                  --connect has connected, or a peer has connected to --listen, never
                  before; a failed connect leaves nothing behind.
${ADDRESSES}`,
  recv: `Prints one JSON line per message: {"data", "fds":[{"fd","kind","target"}], "credentials"?},
  and exits after --count N messages (default 1).
  --write adds "wrote" to each fd, --read adds "read" (files only, else null); an fd that fails
  gets "writeError"/"readError" (its errno code) instead and recv goes on; a write that cannot
  finish within 1 s (a full pipe) stops there: "writeError":"ETIMEDOUT". With --listen, a peer
  that breaks the protocol is reported on stderr (fdpass: peer pid P uid U: ...) and the next
  peer is accepted.
${ADDRESSES}`,
  serve: `The dispatch server: a primary accepts TCP/TLS connections and hands each one's fd to a
worker process. Without --listen it serves http on 127.0.0.1:8080 and https on 127.0.0.1:8443
(the shipped development certificate), with as many workers as CPUs. SIGTERM, SIGINT and
SIGUSR1 (HAProxy's soft stop) shut down gracefully (exit 0), SIGHUP reloads the workers, SIGUSR2
upgrades the primary (as fdpass upgrade does).
  --listen ...,proxy     connections start with a PROXY protocol header (v1/v2) from a balancer
  --handshake-timeout MS a TLS handshake (and PROXY header) must complete within MS (10000)
  --user USER[:GROUP]    who the workers run as (a root primary's default: nobody)
  --expose-listeners PATH  answer _getsocks there (haproxy -x PATH, fdpass serve --takeover PATH)
  --takeover PATH        take the listeners from a process exposing them at PATH, then tell it
                         to finish (another fdpass: over PATH; else --takeover-signal SIG)
A second serve whose control socket is in use is refused before it binds or starts anything:
give each instance its own --control PATH.
${CONTROL}`,
  status: `What a running serve is doing: the primary's counters and one row per worker; --json
prints the whole status document.
${CONTROL}`,
  upgrade: `Replaces the running primary without refusing a connection: it starts a new primary
from its own command line (a new fdpass on disk is the one that runs) that takes the listeners
over (_getsocks, as haproxy -x does); once the new one serves, the old one drains and exits.
If the new one fails, the old one keeps serving and this says why (exit 1).
${CONTROL}`,
  demo: 'A live run of the seed fd-passing scenarios, narrated on stdout.',
};

const indent = (s: string) => s.replace(/^/gm, '  ');

/** `fdpass --help`: every command's synopsis. */
export function overview(): string {
  return `usage:
${indent(COMMANDS.map((c) => SYNOPSIS[c]).join('\n'))}
  fdpass --help | --version
  fdpass COMMAND --help        more about one command

${ADDRESSES}
`;
}

/** `fdpass COMMAND --help`. */
export function help(cmd: Command): string {
  return `usage:\n${indent(SYNOPSIS[cmd])}\n\n${DETAILS[cmd]}\n`;
}

/** What follows a usage error: the synopsis of the command used (all of
 * them when there is none). */
export function usage(cmd: Command | undefined): string {
  if (cmd === undefined) return overview();
  return `usage:\n${indent(SYNOPSIS[cmd])}\n  (fdpass ${cmd} --help for more)\n`;
}

/** Whether `args` ask for help: --help or -h before any `--`. */
export function wantsHelp(args: readonly string[]): boolean {
  for (const a of args) {
    if (a === '--') return false;
    if (a === '--help' || a === '-h') return true;
  }
  return false;
}
