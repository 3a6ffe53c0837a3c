/**
 * The one-line form of an error on the command line,
 * `fdpass: <what failed>: <code>`: for the failure that ends a command
 * (main.ts), and for a peer's error that a command reports and survives
 * (recv --listen).
 */

/** `<what failed>: <code>`, one line, without the `fdpass: ` prefix (the
 * caller's), even if the message had one of its own. */
export function errorLine(err: unknown): string {
  const e = err as { message?: string; code?: string; syscall?: string; path?: string };
  let what = e.message ?? String(err);
  const code = e.code ?? 'EFAIL';
  // Node-style system errors read "connect ENOENT /path": say it as "connect /path".
  if (e.syscall) what = `${e.syscall}${e.path ? ' ' + e.path : ''}`;
  return `${oneLine(what).replace(/^fdpass: /, '')}: ${code}`;
}

/** `s` with its line breaks made spaces. */
export function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, ' ');
}
