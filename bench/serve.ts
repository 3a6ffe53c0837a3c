/**
 * `npm run bench:serve`: fdpass serve (round-robin and least-connections)
 * against what Node users run otherwise: cluster (round-robin SCHED_RR and
 * SCHED_NONE) and `reusePort` (Node >= 22.12: independent processes on one
 * port, the kernel spreading connections). The same handler
 * (bench/hello-app.js), the same number of workers, the Node this runs on,
 * measured in the same run with wrk on loopback:
 *
 *   new connection per request   wrk -H 'Connection: close' --latency (its p99
 *                                is the tail without slow requests)
 *   keep-alive                   wrk (the primary is off the data path)
 *   idle p50                     wrk -c1 -t1 --latency, new connection each
 *   mixed load p99, saturated    wrk -s bench/mixed.lua --latency, new
 *                                connection each: 0.5% of requests spin
 *                                10 ms of CPU in the worker; at saturation
 *                                on a small machine this measures CPU
 *                                queueing (wrk shares the CPUs)
 *   mixed load p99, paced        the same mix from an open-loop client
 *                                (bench/paced.ts) at one fixed offered rate
 *                                below every contender's capacity: 15% of the
 *                                slowest contender's new-connection req/s in
 *                                the same round, the same rate and seed for
 *                                all; latency from each request's intended
 *                                send time. Issue 10's tail target is judged
 *                                on this run: below saturation the tail is
 *                                where the slow requests' neighbours went,
 *                                not how long the CPU queue is
 *   primary CPU per connection   /proc/<primary>/stat during the first run
 *   server CPU per request       the same, summed over the primary (or
 *                                parent) and its worker processes: what a
 *                                request costs the machine in all
 *   cross-CPU wake-up            half the round trip of a C ping-pong
 *                                (bench/c/fdbench.c) between two CPUs: the
 *                                physical cost of the primary's extra hop
 *
 * Contenders run in turn, ROUNDS times, and the median of each figure is
 * reported: ratios within one run are what to compare, absolute figures
 * move with the machine's load.
 *
 * wrk comes from Debian (apt-get install wrk); installed here if missing.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ROOT } from '../test/helpers/paths';
import { spawnNode, type Child } from '../test/helpers/process';
import { childrenOf, cpuTicks, sysTicks, USER_HZ } from '../test/helpers/proc';
import { startServe } from '../test/helpers/serve';
import { freePort } from '../test/helpers/sockets';
import { median } from '../scripts/report';
import { ensureWrk, wrk as runWrk, wrkFailures, type WrkResult } from '../scripts/wrk';
import { compileFdbench, runJson } from './fdbench';
import type { PacedResult } from './paced';

const WORKERS = Number(process.env.BENCH_WORKERS ?? 2);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const MIXED_SECONDS = Number(process.env.BENCH_MIXED_SECONDS ?? 2 * SECONDS);
const CONNS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
/** Only these contenders (comma-separated keys, e.g. `lc,none`), for quick comparisons. */
const ONLY = process.env.BENCH_ONLY?.split(',');
/** `mixed`: only the mixed-load runs (saturated and paced), with a short
 * new-connection run for each contender's capacity (the paced rate). */
const MIXED_ONLY = process.env.FDPASS_BENCH_ONLY === 'mixed' || process.env.FDPASS_BENCH_ONLY === 'paced';
const PACED_SECONDS = Number(process.env.BENCH_PACED_SECONDS ?? 2 * SECONDS);
/** The paced run's offered rate (req/s); default PACED_SHARE of the slowest
 * contender's new-connection req/s in the same round. */
const PACED_RPS = process.env.BENCH_PACED_RPS ? Number(process.env.BENCH_PACED_RPS) : NaN;
/**
 * 0.15: while a slow request takes one of the machine's 2 CPUs for 10 ms,
 * the other one carries the client, the primary and the other worker; at
 * 15% of the slowest contender's capacity (cluster SCHED_RR's: 600-1,000
 * req/s here) that is a small part of it, so what the tail shows is where
 * connections went meanwhile. At 50% (about 2,200 req/s) the Node client
 * alone lagged 3.4 ms behind its schedule at p99 and every server's p99 was
 * the slow requests' own 11-16 ms.
 */
const PACED_SHARE = Number(process.env.BENCH_PACED_SHARE ?? 0.15);
const PACED_SEED = Number(process.env.BENCH_PACED_SEED ?? 1);
/** Slow requests per 1000 in the paced run (default 5, as bench/mixed.lua; 0: the same run without them). */
const PACED_SPINS = Number(process.env.BENCH_PACED_SPINS ?? 5);
/** FDPASS_BENCH_ONLY=paced (with BENCH_PACED_RPS): the paced run alone, for A/B comparisons of a policy. */
const PACED_ONLY = process.env.FDPASS_BENCH_ONLY === 'paced' && Number.isFinite(PACED_RPS);
/** Only these measurements (comma-separated: close,keep,idle,mixed,paced; default all, or with
 * FDPASS_BENCH_ONLY=mixed: close (short, each contender's capacity), mixed and paced), e.g. `idle`;
 * the others print as '-' (their targets as n/a). */
const SCENARIOS = process.env.BENCH_SCENARIOS?.split(',') ?? (MIXED_ONLY ? ['close', 'mixed', 'paced'] : undefined);
const ALL_SCENARIOS = ['close', 'keep', 'idle', 'mixed', 'paced'];
const wanted = (s: string) => !SCENARIOS || SCENARIOS.includes(s);
const SKIPPED: Figures = { rps: NaN, p50us: NaN, p99us: NaN, requests: NaN, errors: 0 };
const MIXED_LUA = path.join(ROOT, 'bench', 'mixed.lua');

interface Server { child: Child; port: number; primary: boolean }

/** `reusePort` arrived in Node 22.12 (and 23.1). */
function hasReusePort(): boolean {
  const [major, minor] = process.versions.node.split('.').map(Number) as [number, number];
  return major > 22 || (major === 22 && minor >= 12);
}

/** Another built tree of fdpass (a clone at another commit, `npm ci` and
 * `npm run build` done in it) whose serve runs too, as contenders `rr-base`
 * and `lc-base`: a before/after in the same run. */
const BASELINE_TREE = process.env.BENCH_BASELINE_TREE;

async function startFdpass(strategy: string, tree = ROOT): Promise<Server> {
  const child = await startServe(['--listen', '127.0.0.1:0', '--workers', String(WORKERS), '--strategy', strategy,
    '--control', path.join(os.tmpdir(), `fdpass-bench-${process.pid}.sock`), path.join(tree, 'bench', 'hello-app.js')],
  { cli: path.join(tree, 'bin', 'fdpass.js') });
  return { child, port: child.listener('http').port!, primary: true };
}

/** A baseline server script of bench/ that prints {"ready":true} when it listens. */
async function startScript(script: string, args: (port: number) => string[], primary: boolean): Promise<Server> {
  const port = await freePort();
  const child = spawnNode(path.join(ROOT, 'bench', script), args(port), { timeout: Infinity });
  try {
    await child.next(); // {"ready":true}
  } catch (err) {
    await child.kill();
    throw err;
  }
  return { child, port, primary };
}

interface Contender {
  key: string;
  name: string;
  start: (() => Promise<Server>) | null;
}

const CONTENDERS: Contender[] = [
  { key: 'rr', name: 'fdpass serve, round-robin', start: () => startFdpass('round-robin') },
  { key: 'lc', name: 'fdpass serve, least-connections', start: () => startFdpass('least-connections') },
  { key: 'cluster-rr', name: 'cluster SCHED_RR', start: () => startScript('cluster-server.js', (p) => ['rr', String(p), String(WORKERS)], true) },
  { key: 'none', name: 'cluster SCHED_NONE', start: () => startScript('cluster-server.js', (p) => ['none', String(p), String(WORKERS)], true) },
  { key: 'reuseport', name: `reusePort (${WORKERS} processes)`,
    start: hasReusePort() ? () => startScript('reuseport-server.js', (p) => [String(p), String(WORKERS)], false) : null },
  ...(BASELINE_TREE ? [
    { key: 'rr-base', name: `fdpass serve, round-robin, ${BASELINE_TREE}`, start: () => startFdpass('round-robin', BASELINE_TREE) },
    { key: 'lc-base', name: `fdpass serve, least-connections, ${BASELINE_TREE}`, start: () => startFdpass('least-connections', BASELINE_TREE) },
  ] : []),
];

interface Figures { rps: number; p50us: number; p99us: number; requests: number; errors: number }

async function wrk(port: number, args: string[]): Promise<Figures> {
  const r: WrkResult = await runWrk(args, `http://127.0.0.1:${port}/`);
  return { rps: r.rps, p50us: r.p50us, p99us: r.p99us, requests: r.requests, errors: wrkFailures(r) };
}

/** cpuUsPerConn: the primary's CPU per connection, sysUsPerConn the kernel's share of it (stime). */
interface Run { close: Figures; keep: Figures; idle: Figures; mixed: Figures; cpuUsPerConn: number; sysUsPerConn: number; treeUsPerReq: number; paced?: PacedResult }

/** The paced mixed load against `port` (bench/paced.ts, in a process of its own). */
function runPaced(port: number, rate: number): Promise<PacedResult> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [path.join(__dirname, 'paced.js'), String(port), String(rate), String(PACED_SECONDS), String(PACED_SEED), String(PACED_SPINS)],
      { timeout: (PACED_SECONDS + 30) * 1000 }, (err, stdout) => (err ? reject(err) : resolve(JSON.parse(stdout) as PacedResult)));
  });
}

async function measurePaced(start: () => Promise<Server>, rate: number): Promise<PacedResult> {
  const s = await start();
  try {
    await wrk(s.port, ['-t1', '-c4', '-d1s', '-H', 'Connection: close']); // warm-up
    return await runPaced(s.port, rate);
  } finally {
    await s.child.stop();
  }
}

/** CPU ticks of `pid` and its children (the workers). */
function treeTicks(pid: number): number {
  return childrenOf(pid).reduce((a, c) => a + cpuTicks(c), cpuTicks(pid));
}

async function measure(start: () => Promise<Server>): Promise<Run> {
  const s = await start();
  try {
    const close = ['-H', 'Connection: close'];
    await wrk(s.port, ['-t1', '-c4', '-d1s', ...close]); // warm-up
    const c0 = cpuTicks(s.child.pid);
    const k0 = sysTicks(s.child.pid);
    const t0 = treeTicks(s.child.pid);
    const closeRun = wanted('close') ? await wrk(s.port, ['-t2', `-c${CONNS}`, `-d${MIXED_ONLY ? Math.max(2, Math.round(SECONDS / 2)) : SECONDS}s`, '--latency', ...close]) : SKIPPED;
    const c1 = cpuTicks(s.child.pid);
    const k1 = sysTicks(s.child.pid);
    const t1 = treeTicks(s.child.pid);
    const keep = wanted('keep') ? await wrk(s.port, ['-t2', `-c${CONNS}`, `-d${SECONDS}s`]) : SKIPPED;
    const idle = wanted('idle') ? await wrk(s.port, ['-t1', '-c1', `-d${Math.max(2, Math.round(SECONDS / 2))}s`, '--latency', ...close]) : SKIPPED;
    const mixed = wanted('mixed') ? await wrk(s.port, ['-t2', `-c${CONNS}`, `-d${MIXED_SECONDS}s`, '--latency', '-s', MIXED_LUA, ...close]) : SKIPPED;
    const perConn = (ticks: number) => (s.primary ? (ticks / USER_HZ) * 1e6 / closeRun.requests : NaN);
    const treeUsPerReq = ((t1 - t0) / USER_HZ) * 1e6 / closeRun.requests;
    return { close: closeRun, keep, idle, mixed, cpuUsPerConn: perConn(c1 - c0), sysUsPerConn: perConn(k1 - k0), treeUsPerReq };
  } finally {
    await s.child.stop();
  }
}

/** One cross-CPU wake-up (µs): half a C ping-pong's round trip between CPUs 0 and 1. */
function wakeUpUs(fdbench: string): number {
  if (os.cpus().length < 2) return NaN;
  const r = runJson(fdbench, ['pingpong', '--type', 'seqpacket', '--count', '20000', '--cpu', '0', '--child-cpu', '1']);
  return Number(r.p50_us) / 2;
}

interface Agg {
  close: number; closeP99: number; keep: number; idle: number; mixedP99: number; mixedP50: number; cpu: number; sys: number; tree: number; errors: number; na: boolean;
  pacedP50: number; pacedP99: number; pacedP999: number; pacedErrors: number; pacedSlow: number;
}

/** Figures of a scenario that was not run (BENCH_SCENARIOS) print as '-'. */
const num = (v: number) => (Number.isFinite(v) ? Math.round(v).toLocaleString('en-US') : '-');
const ms = (us: number) => (Number.isFinite(us) ? (us / 1000).toFixed(1) : '-');
const x = (v: number) => (Number.isFinite(v) ? `${v.toFixed(2)}x` : 'n/a');
/** A target's verdict, or undefined (n/a) when a scenario it needs was not run. */
const judge = (v: number, pass: (v: number) => boolean) => (Number.isFinite(v) ? pass(v) : undefined);
const verdict = (ok: boolean | undefined) => (ok === undefined ? 'n/a' : ok ? 'met' : 'MISSED');

async function main(): Promise<void> {
  ensureWrk({ install: true });
  const fdbench = compileFdbench();
  // A knob with a typo would measure nothing and still write a table.
  const unknown = (list: string[] | undefined, known: string[]) => list?.filter((v) => !known.includes(v)) ?? [];
  const badOnly = unknown(ONLY, CONTENDERS.map((c) => c.key));
  const badScenarios = unknown(SCENARIOS, ALL_SCENARIOS);
  if (badOnly.length || badScenarios.length) {
    throw new Error([
      badOnly.length ? `BENCH_ONLY: no contender ${badOnly.join(', ')} (known: ${CONTENDERS.map((c) => c.key).join(', ')})` : '',
      badScenarios.length ? `BENCH_SCENARIOS: no scenario ${badScenarios.join(', ')} (known: ${ALL_SCENARIOS.join(', ')})` : '',
    ].filter(Boolean).join('; '));
  }
  const contenders = CONTENDERS.filter((c) => !ONLY || ONLY.includes(c.key));
  const runs = new Map<string, Run[]>(contenders.map((c) => [c.key, []]));
  const wakes: number[] = [];
  const rates: number[] = [];
  const lags: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    wakes.push(wakeUpUs(fdbench));
    for (const c of contenders) {
      if (!c.start) continue;
      if (PACED_ONLY) {
        runs.get(c.key)!.push({ close: SKIPPED, keep: SKIPPED, idle: SKIPPED, mixed: SKIPPED, cpuUsPerConn: NaN, sysUsPerConn: NaN, treeUsPerReq: NaN });
        continue;
      }
      runs.get(c.key)!.push(await measure(c.start));
      process.stderr.write(`  round ${r + 1}: ${c.name} done\n`);
    }
    // The paced run: one rate for all, below every contender's capacity.
    if (!wanted('paced')) continue;
    const live = contenders.filter((c) => c.start);
    const rate = Number.isFinite(PACED_RPS) ? PACED_RPS
      : Math.round(PACED_SHARE * Math.min(...live.map((c) => runs.get(c.key)!.at(-1)!.close.rps)));
    if (!Number.isFinite(rate) || rate <= 0) continue; // no capacity measured (BENCH_SCENARIOS without close)
    rates.push(rate);
    for (const c of live) {
      const p = await measurePaced(c.start!, rate);
      runs.get(c.key)!.at(-1)!.paced = p;
      lags.push(p.lagP99us);
      process.stderr.write(`  round ${r + 1}: ${c.name} paced at ${rate} req/s: p50 ${ms(p.p50us)} ms, p99 ${ms(p.p99us)} ms, ` +
        `p99.9 ${ms(p.p999us)} ms, ${p.spins} spins, ${p.over5ms} over 5 ms, client lag p99 ${ms(p.lagP99us)} ms, ${p.errors} errors\n`);
    }
  }
  const agg = new Map<string, Agg>();
  for (const c of contenders) {
    const rs = runs.get(c.key)!;
    agg.set(c.key, {
      close: median(rs.map((v) => v.close.rps)),
      closeP99: median(rs.map((v) => v.close.p99us)),
      keep: median(rs.map((v) => v.keep.rps)),
      idle: median(rs.map((v) => v.idle.p50us)),
      mixedP99: median(rs.map((v) => v.mixed.p99us)),
      mixedP50: median(rs.map((v) => v.mixed.p50us)),
      cpu: median(rs.map((v) => v.cpuUsPerConn)),
      sys: median(rs.map((v) => v.sysUsPerConn)),
      tree: median(rs.map((v) => v.treeUsPerReq)),
      errors: rs.reduce((a, v) => a + v.close.errors + v.keep.errors + v.idle.errors + v.mixed.errors, 0),
      na: !c.start,
      pacedP50: median(rs.map((v) => v.paced?.p50us ?? NaN)),
      pacedP99: median(rs.map((v) => v.paced?.p99us ?? NaN)),
      pacedP999: median(rs.map((v) => v.paced?.p999us ?? NaN)),
      pacedErrors: rs.reduce((a, v) => a + (v.paced?.errors ?? 0), 0),
      pacedSlow: median(rs.map((v) => (v.paced ? v.paced.over5ms / Math.max(1, v.paced.spins) : NaN))),
    });
  }
  const wake = median(wakes);
  const header = `fdpass serve benchmark ${new Date().toISOString()}  |  ${os.cpus()[0]?.model} x${os.cpus().length}  |  Linux ${os.release()}  |  ` +
    `Node ${process.version}  |  ${WORKERS} workers, wrk -t2 -c${CONNS} -d${SECONDS}s${wanted('mixed') ? ` (mixed -d${MIXED_SECONDS}s)` : ''}, median of ${ROUNDS}  |  ` +
    `load average ${os.loadavg().map((v) => v.toFixed(2)).join(' ')}`;
  const row = (c: Contender) => {
    const a = agg.get(c.key)!;
    if (a.na) return `| ${c.name} | n/a (Node ${process.version} has no reusePort) | | | | | | | | | | | | |`;
    return `| ${c.name} | ${num(a.close)} | ${ms(a.closeP99)} | ${MIXED_ONLY ? '-' : num(a.keep)} | ${MIXED_ONLY || !Number.isFinite(a.idle) ? '-' : a.idle.toFixed(0)} | ` +
      `${ms(a.mixedP50)} | ${ms(a.mixedP99)} | ${ms(a.pacedP50)} | ${ms(a.pacedP99)} | ${ms(a.pacedP999)} | ${Number.isFinite(a.pacedSlow) ? a.pacedSlow.toFixed(1) : '-'} | ` +
      `${Number.isFinite(a.cpu) ? `${a.cpu.toFixed(1)} (${a.sys.toFixed(1)})` : 'n/a'} | ${a.tree.toFixed(0)} | ${a.errors + a.pacedErrors} |`;
  };
  const lines = [
    header, '',
    '| server | req/s, new connection each | its p99, no slow requests (ms) | req/s, keep-alive | idle p50 (us) | mixed load, saturated: p50 (ms) | saturated: p99 (ms) | ' +
      'mixed load, paced: p50 (ms) | paced: p99 (ms) | paced: p99.9 (ms) | paced: requests >= 5 ms per slow request | primary CPU per connection (us; in the kernel) | server CPU per request, all processes (us) | errors |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
    ...contenders.map(row), '',
    `cross-CPU wake-up (half a C SEQPACKET ping-pong between CPUs 0 and 1, p50): ${wake.toFixed(1)} us`, '',
  ];
  const f = agg.get('rr');
  const lc = agg.get('lc');
  const rr = agg.get('cluster-rr');
  const none = agg.get('none');
  const rp = agg.get('reuseport');
  if (f && lc && rr && none) {
    const live = (a: Agg | undefined) => (a && !a.na ? a : undefined);
    const bestKernel = Math.max(none.close, live(rp)?.close ?? 0);
    const bestKernelName = live(rp) && rp!.close > none.close ? 'reusePort' : 'SCHED_NONE';
    const bestP99 = Math.min(none.mixedP99, rr.mixedP99, live(rp)?.mixedP99 ?? Infinity);
    const bestPaced = Math.min(none.pacedP99, rr.pacedP99, live(rp)?.pacedP99 ?? Infinity);
    const fBest = Math.max(f.close, lc.close);
    const fKeep = Math.max(f.keep, lc.keep);
    const fCpu = Math.min(f.cpu, lc.cpu);
    const t = (target: string, measured: string, ok: boolean | undefined) => `| ${target} | ${measured} | ${verdict(ok)} |`;
    const rows = [
      t('mixed load, paced (the target\'s run): least-conn p99 <= 0.5x the best of SCHED_NONE, reusePort, SCHED_RR',
        `${x(lc.pacedP99 / bestPaced)} (${ms(lc.pacedP99)} ms of ${ms(bestPaced)} ms; RR ${x(f.pacedP99 / bestPaced)})`, judge(lc.pacedP99 / bestPaced, (v) => v <= 0.5)),
      t('mixed load, saturated (for reference: CPU queueing): least-conn p99 <= 0.5x the best', `${x(lc.mixedP99 / bestP99)} (${ms(lc.mixedP99)} ms of ${ms(bestP99)} ms)`, judge(lc.mixedP99 / bestP99, (v) => v <= 0.5)),
    ];
    if (!MIXED_ONLY) {
      rows.unshift(
        t('new-connection req/s >= 0.95x the better of SCHED_NONE and reusePort', `RR ${x(f.close / bestKernel)}, least-conn ${x(lc.close / bestKernel)} (of ${bestKernelName})`, judge(fBest / bestKernel, (v) => v >= 0.95)),
        t('new-connection req/s >= 2x SCHED_RR', `RR ${x(f.close / rr.close)}, least-conn ${x(lc.close / rr.close)}`, judge(fBest / rr.close, (v) => v >= 2)),
        t('keep-alive req/s >= 1.0x SCHED_NONE', `RR ${x(f.keep / none.keep)}, least-conn ${x(lc.keep / none.keep)}`, judge(fKeep / none.keep, (v) => v >= 1)),
        t('primary CPU per connection <= 0.15x SCHED_RR\'s', wanted('close') ? `RR ${x(f.cpu / rr.cpu)}, least-conn ${x(lc.cpu / rr.cpu)} (${fCpu.toFixed(1)} us of SCHED_RR's ${rr.cpu.toFixed(1)} us; ` +
          `fdpass's kernel time alone ${Math.min(f.sys, lc.sys).toFixed(1)} us, ${x(Math.min(f.sys, lc.sys) / rr.cpu)} of SCHED_RR's total)` : 'n/a (close not run)', judge(fCpu / rr.cpu, (v) => v <= 0.15)),
      );
      rows.push(
        t('idle p50 <= SCHED_NONE + one cross-CPU wake-up', wanted('idle') ? `RR +${(f.idle - none.idle).toFixed(0)} us, least-conn +${(lc.idle - none.idle).toFixed(0)} us (wake-up ${wake.toFixed(0)} us)` : 'n/a (idle not run)',
          judge(Math.min(f.idle, lc.idle) - none.idle - wake, (v) => v <= 0)),
      );
    }
    lines.push('| target (issue 10) | measured | |', '|---|---|---|', ...rows);
  }
  console.log(lines.join('\n'));
  fs.mkdirSync(path.join(ROOT, 'build', 'bench'), { recursive: true });
  fs.writeFileSync(path.join(ROOT, 'build', 'bench', 'serve-latest.md'), lines.join('\n') + '\n');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
