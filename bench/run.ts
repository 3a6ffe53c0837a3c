/**
 * `npm run bench`: fdpass against its baselines, measured in the same run on
 * the same machine. Each scenario runs ROUNDS times, alternating baseline and
 * fdpass so that noise from other tenants hits both; the median is reported.
 * Ratios from one run are what to compare, not absolute figures.
 *
 * Baselines: bench/c/fdbench.c (the same syscalls in C, compiled here with
 * cc), and Node's own subprocess.send(message, handle).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { median } from '../scripts/report';
import { compileFdbench, runJson as run, type Row } from './fdbench';

const ROOT = path.join(__dirname, '..', '..');
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const QUICK = process.env.BENCH_QUICK === '1';
const M1 = QUICK ? 100_000 : 1_000_000;
const M253 = QUICK ? 2_000 : 20_000;
const MRTT = QUICK ? 10_000 : 100_000;

function main(): void {
  const fdbench = compileFdbench();
  const peer = path.join(__dirname, 'peer.js');
  const childSend = path.join(__dirname, 'child-send.js');
  const node = process.execPath;
  const pinned = (args: string[]) => ['-c', '0', ...args];

  const scenarios: { name: string; unit: string; key: string; c: string[]; n: string[]; target: string; better: 'higher' | 'lower'; min?: number; max?: number; cmd?: string }[] = [
    { name: '1 fd per message, SEQPACKET', unit: 'msgs/s', key: 'msgs_per_s', target: '>= 0.9x C', better: 'higher', min: 0.9,
      c: [fdbench, 'throughput', '--type', 'seqpacket', '--fds', '1', '--count', String(M1)],
      n: [node, peer, 'throughput', 'seqpacket', '1', String(M1)] },
    { name: '253 fds per message, SEQPACKET', unit: 'fds/s', key: 'fds_per_s', target: '>= 0.95x C', better: 'higher', min: 0.95,
      c: [fdbench, 'throughput', '--type', 'seqpacket', '--fds', '253', '--count', String(M253)],
      n: [node, peer, 'throughput', 'seqpacket', '253', String(M253)] },
    { name: '1 fd per message, STREAM (fdpass framed)', unit: 'msgs/s', key: 'msgs_per_s', target: '>= 0.8x C', better: 'higher', min: 0.8,
      c: [fdbench, 'throughput', '--type', 'stream', '--fds', '1', '--count', String(M1)],
      n: [node, peer, 'throughput', 'stream', '1', String(M1)] },
    { name: '253 fds per message, STREAM (fdpass framed)', unit: 'fds/s', key: 'fds_per_s', target: '(info)', better: 'higher',
      c: [fdbench, 'throughput', '--type', 'stream', '--fds', '253', '--count', String(M253)],
      n: [node, peer, 'throughput', 'stream', '253', String(M253)] },
    { name: 'round trip of 1 fd, one CPU, p50', unit: 'us', key: 'p50_us', target: '(info)', better: 'lower',
      c: ['taskset', ...pinned([fdbench, 'pingpong', '--type', 'seqpacket', '--count', String(MRTT)])],
      n: ['taskset', ...pinned([node, peer, 'pingpong', 'seqpacket', String(MRTT)])] },
  ];

  // The floor: the same round trip from a bare uv_poll callback, no library.
  scenarios.push({ name: '   (floor: bare N-API + uv_poll round trip, no library)', unit: 'us', key: 'p50_us', target: '(info)', better: 'lower',
    c: ['taskset', ...pinned([fdbench, 'pingpong', '--type', 'seqpacket', '--count', String(MRTT)])],
    n: ['taskset', ...pinned([node, peer, 'pingpong-raw', String(MRTT)])] });
  const results: Row[] = [];
  const table: string[][] = [];
  const medians: number[] = [];
  for (const s of scenarios) {
    const cv: number[] = [];
    const nv: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      cv.push(Number(run(s.c[0]!, s.c.slice(1))[s.key]));
      nv.push(Number(run(s.n[0]!, s.n.slice(1))[s.key]));
    }
    const c = median(cv);
    const n = median(nv);
    medians.push(n);
    const ratio = n / c;
    const ok = s.min !== undefined ? ratio >= s.min : s.max !== undefined ? ratio <= s.max : undefined;
    results.push({ scenario: s.name, unit: s.unit, c, fdpass: n, ratio, target: s.target, rounds_c: cv.join(' '), rounds_fdpass: nv.join(' ') });
    table.push([s.name, s.unit, fmt(c), fmt(n), `${ratio.toFixed(2)}x`, s.target, ok === undefined ? '' : ok ? 'met' : 'MISSED']);
    process.stderr.write(`  done: ${s.name}\n`);
  }

  // The round trip against the floor under any event-loop receiver, both
  // measured above: what the library adds to the bare syscalls.
  const rtt = medians[scenarios.length - 2]!;
  const floor = medians[scenarios.length - 1]!;
  table.push(['round trip of 1 fd vs the bare uv_poll floor', 'us', fmt(floor), fmt(rtt), `${(rtt / floor).toFixed(2)}x`, '<= 1.15x floor', rtt / floor <= 1.15 ? 'met' : 'MISSED']);
  results.push({ scenario: 'round trip vs floor', unit: 'us', floor, fdpass: rtt, ratio: rtt / floor });

  // Node's own fd passing, against fdpass's 1-fd message rate.
  const cs: number[] = [];
  for (let r = 0; r < ROUNDS; r++) cs.push(Number(run(node, [childSend, 'server', String(QUICK ? 3000 : 20000)]).handles_per_s));
  const csSock = Number(run(node, [childSend, 'socket', String(QUICK ? 2000 : 10000)]).handles_per_s);
  const child = median(cs);
  const ours = Number(results[0]!.fdpass);
  const x = ours / child;
  table.push(['vs child.send(msg, net.Server)', 'handles/s', fmt(child), fmt(ours), `${x.toFixed(1)}x`, '>= 30x', x >= 30 ? 'met' : 'MISSED']);
  table.push(['   (child.send(msg, net.Socket))', 'handles/s', fmt(csSock), fmt(ours), `${(ours / csSock).toFixed(1)}x`, '', '']);
  results.push({ scenario: 'child.send', unit: 'handles/s', server: child, socket: csSock, fdpass: ours, ratio: x });

  const cpu = os.cpus()[0]?.model ?? 'unknown';
  const header = `fdpass benchmark ${new Date().toISOString()}  |  ${cpu} x${os.cpus().length}  |  Linux ${os.release()}  |  Node ${process.version}  |  median of ${ROUNDS}${QUICK ? ' (quick)' : ''}`;
  const cols = ['scenario', 'unit', 'C / baseline', 'fdpass', 'ratio', 'target', ''];
  const lines = [header, '', `| ${cols.join(' | ')} |`, `|${cols.map(() => '---').join('|')}|`, ...table.map((r) => `| ${r.join(' | ')} |`)];
  console.log(lines.join('\n'));
  const outDir = path.join(ROOT, 'build', 'bench');
  fs.writeFileSync(path.join(outDir, 'latest.json'), JSON.stringify({ header, results }, null, 2));
  fs.writeFileSync(path.join(outDir, 'latest.md'), lines.join('\n') + '\n');
}

function fmt(v: number): string {
  if (v >= 1000) return Math.round(v).toLocaleString('en-US');
  return v.toFixed(1);
}

main();
