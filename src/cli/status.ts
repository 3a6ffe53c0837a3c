/** `fdpass status [--control PATH] [--json]`: what a running serve is doing. */
import { parseArgs } from 'node:util';
import { queryStatus, defaultControlPath } from '../serve/control';
import { cliAddress } from './args';
import { displayAddress } from '../socket/address';

export async function status(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args, strict: true, options: { control: { type: 'string' }, json: { type: 'boolean', default: false } },
  });
  const s = await queryStatus(cliAddress(values.control ?? defaultControlPath()));
  if (values.json) {
    process.stdout.write(JSON.stringify(s) + '\n');
    return;
  }
  const p = s.primary;
  const out = [
    `primary ${p.pid}  up ${p.uptimeSeconds}s  strategy ${p.strategy}  generation ${p.generation}`,
    `accepted ${p.accepted}  handed ${p.handed}  in-flight ${p.inflight}  waiting ${p.waiting}  hand-off rate ${p.handoffRatePerSecond}/s  accept errors ${p.acceptErrors}`,
    `listeners: ${p.listeners.map((l) => `${l.name} ${l.address}${l.tls ? ' (tls)' : ''}`).join(', ')}`,
  ];
  const t = p.takeover;
  if (t) {
    out.push(`took over at ${t.at} from pid ${t.from.pid} (uid ${t.from.uid}, ${displayAddress(t.from.path)}): ` +
      `${t.adopted} of ${t.received} listeners; ${t.told ? `told it to finish by ${t.told}` : 'could not tell it to finish'}`);
  }
  if (p.exposeListeners) out.push(`listeners exposed to _getsocks at ${p.exposeListeners}`);
  out.push('');
  const rows = [['SLOT', 'PID', 'GEN', 'STATE', 'HANDED', 'UNACKED', 'LIVE', 'REQUESTS', 'RESTARTS']];
  for (const w of s.workers) {
    rows.push([w.slot, w.pid ?? '-', w.generation, w.state, w.handed, w.unacked, w.live, w.requests, w.restarts].map(String));
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows) out.push(r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd());
  process.stdout.write(out.join('\n') + '\n');
}
