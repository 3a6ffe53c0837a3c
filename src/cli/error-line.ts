/**
 * The one-line form of an error on the command line,
 * `fdpass: <what failed>: <code>`: for the failure that ends a command
 * (main.ts), and for a peer's error that a command reports and survives
 * (recv --listen).
 */

/** `<what failed>: <code>`, without the `fdpass: ` prefix. */
export function errorLine(err: unknown): string {
  const e = err as { message?: string; code?: string; syscall?: string; path?: string };
  let what = e.message ?? String(err);
  const code = e.code ?? 'EFAIL';
  // Node-style system errors read "connect ENOENT /path": say it as "connect /path".
  if (e.syscall) what = `${e.syscall}${e.path ? ' ' + e.path : ''}`;
  return `${what}: ${code}`;
}
