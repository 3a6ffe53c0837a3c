/**
 * Command-line flags of the long runs and benchmark roles: `--name value`
 * pairs, numeric unless asked for as a string.
 */

/** `--name value` pairs over numeric defaults; anything else is an error. */
export function options<T extends Record<string, number>>(defaults: T, argv = process.argv.slice(2)): T {
  const out: Record<string, number> = { ...defaults };
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i]!.replace(/^--/, '');
    const v = Number(argv[i + 1]);
    if (!(k in defaults) || !Number.isFinite(v) || v < 0) {
      throw new Error(`unknown option or bad value: ${argv[i]} ${argv[i + 1] ?? ''} (options: ${Object.keys(defaults).map((x) => `--${x}`).join(' ')})`);
    }
    out[k] = v;
  }
  return out as T;
}

/** One `--name N` flag among other arguments (roles, strings): its value,
 * or `dflt` when absent. For scripts whose argv is not flags only. */
export function argOf(name: string, dflt: number): number {
  const v = argStr(name);
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`--${name} needs a non-negative integer`);
  return n;
}

/** One `--name value` flag among other arguments: its value as given, or undefined. */
export function argStr(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? undefined : process.argv[i + 1];
}
