/** Argument helpers shared by the CLI commands. */
import type { ParseArgsConfig } from 'node:util';

export class UsageError extends Error {}

export const commonOptions = {
  connect: { type: 'string' },
  listen: { type: 'string' },
  type: { type: 'string', default: 'stream' },
  raw: { type: 'boolean', default: false },
} as const satisfies ParseArgsConfig['options'];

/** CLI address: '@name' is the abstract name '\0name'. */
export function cliAddress(s: string): string {
  return s.startsWith('@') ? '\0' + s.slice(1) : s;
}

export function endpoint(values: { connect?: string; listen?: string }): { mode: 'connect' | 'listen'; address: string } {
  if (values.connect !== undefined && values.listen !== undefined) throw new UsageError('give either --connect or --listen, not both');
  if (values.connect !== undefined) return { mode: 'connect', address: cliAddress(values.connect) };
  if (values.listen !== undefined) return { mode: 'listen', address: cliAddress(values.listen) };
  throw new UsageError('--connect PATH or --listen PATH is required');
}

export function socketType(t: string | undefined): 'stream' | 'seqpacket' | 'dgram' {
  if (t === 'stream' || t === 'seqpacket' || t === 'dgram') return t;
  throw new UsageError(`--type must be stream, seqpacket or dgram, not '${t}'`);
}
