/**
 * `npm run bench:serve`: fdpass serve against Node's cluster (round-robin
 * SCHED_RR and SCHED_NONE), the same handler (bench/hello-app.js), the same
 * number of workers, measured in the same run with wrk on loopback.
 *
 *   new connection per request   wrk -H 'Connection: close'
 *   keep-alive                   wrk (the primary is off the data path)
 *   idle p50                     wrk -c1 -t1 --latency, new connection each
 *   primary CPU per connection   /proc/<primary>/stat during the first run
 *
 * wrk comes from Debian (apt-get install wrk); installed here if missing.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ROOT } from '../test/helpers/paths';
import { spawnNode, type Child } from '../test/helpers/process';
import { cpuTicks, USER_HZ } from '../test/helpers/proc';
import { startServe } from '../test/helpers/serve';
import { freePort } from '../test/helpers/sockets';
import { median } from '../scripts/report';
import { ensureWrk, wrk as runWrk, wrkFailures, type WrkResult } from '../scripts/wrk';

const WORKERS = Number(process.env.BENCH_WORKERS ?? 2);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const CONNS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);

interface Server { child: Child; port: number }

async function startFdpass(): Promise<Server> {
  const child = await startServe(['--listen', '127.0.0.1:0', '--workers', String(WORKERS),
    '--control', path.join(os.tmpdir(), `fdpass-bench-${process.pid}.sock`), path.join(ROOT, 'bench', 'hello-app.js')]);
  return { child, port: child.listener('http').port! };
}

async function startCluster(policy: 'rr' | 'none'): Promise<Server> {
  const port = await freePort();
  const child = spawnNode(path.join(ROOT, 'bench', 'cluster-server.js'), [policy, String(port), String(WORKERS)], { timeout: Infinity });
  try {
    await child.next(); // {"ready":true}
  } catch (err) {
    await child.kill();
    throw err;
  }
  return { child, port };
}

async function wrk(port: number, args: string[]): Promise<{ rps: number; p50us: number; requests: number; errors: number }> {
  const r: WrkResult = await runWrk(args, `http://127.0.0.1:${port}/`);
  return { rps: r.rps, p50us: r.p50us, requests: r.requests, errors: wrkFailures(r) };
}

type Figures = Awaited<ReturnType<typeof wrk>>;

async function measure(start: () => Promise<Server>): Promise<{ close: Figures; keep: Figures; idle: Figures; cpuUsPerConn: number }> {
  const s = await start();
  try {
    await wrk(s.port, ['-t1', '-c4', '-d1s', '-H', 'Connection: close']); // warm-up
    const c0 = cpuTicks(s.child.pid);
    const close = await wrk(s.port, ['-t2', `-c${CONNS}`, `-d${SECONDS}s`, '-H', 'Connection: close']);
    const c1 = cpuTicks(s.child.pid);
    const keep = await wrk(s.port, ['-t2', `-c${CONNS}`, `-d${SECONDS}s`]);
    const idle = await wrk(s.port, ['-t1', '-c1', `-d${Math.max(2, Math.round(SECONDS / 2))}s`, '--latency', '-H', 'Connection: close']);
    const cpuUsPerConn = ((c1 - c0) / USER_HZ) * 1e6 / close.requests;
    return { close, keep, idle, cpuUsPerConn };
  } finally {
    await s.child.stop();
  }
}

async function main(): Promise<void> {
  ensureWrk({ install: true });
  const names = ['fdpass serve', 'cluster SCHED_RR', 'cluster SCHED_NONE'] as const;
  const starts = [startFdpass, () => startCluster('rr'), () => startCluster('none')];
  const runs: Awaited<ReturnType<typeof measure>>[][] = [[], [], []];
  for (let r = 0; r < ROUNDS; r++) {
    for (let i = 0; i < 3; i++) {
      runs[i]!.push(await measure(starts[i]!));
      process.stderr.write(`  round ${r + 1}: ${names[i]} done\n`);
    }
  }
  const agg = runs.map((rs) => ({
    close: median(rs.map((x) => x.close.rps)),
    keep: median(rs.map((x) => x.keep.rps)),
    idle: median(rs.map((x) => x.idle.p50us)),
    cpu: median(rs.map((x) => x.cpuUsPerConn)),
    errors: rs.reduce((a, x) => a + x.close.errors + x.keep.errors + x.idle.errors, 0),
  }));
  const [f, rr, none] = agg as [typeof agg[0], typeof agg[0], typeof agg[0]];
  const header = `fdpass serve benchmark ${new Date().toISOString()}  |  ${os.cpus()[0]?.model} x${os.cpus().length}  |  Linux ${os.release()}  |  Node ${process.version}  |  ${WORKERS} workers, wrk -c${CONNS} -d${SECONDS}s, median of ${ROUNDS}`;
  const row = (n: string, a: typeof f) => `| ${n} | ${Math.round(a.close).toLocaleString('en-US')} | ${Math.round(a.keep).toLocaleString('en-US')} | ${a.idle.toFixed(0)} | ${a.cpu.toFixed(1)} | ${a.errors} |`;
  const lines = [
    header, '',
    '| server | req/s, new connection each | req/s, keep-alive | idle p50 latency (us) | primary CPU per connection (us) | errors |',
    '|---|---|---|---|---|---|',
    row('fdpass serve', f), row('cluster SCHED_RR', rr), row('cluster SCHED_NONE', none), '',
    '| target | measured | |', '|---|---|---|',
    `| new-connection req/s >= 1.6x SCHED_RR | ${(f.close / rr.close).toFixed(2)}x | ${f.close / rr.close >= 1.6 ? 'met' : 'MISSED'} |`,
    `| new-connection req/s >= 1.05x SCHED_NONE | ${(f.close / none.close).toFixed(2)}x | ${f.close / none.close >= 1.05 ? 'met' : 'MISSED'} |`,
    `| primary CPU per handed-off connection <= 5 us | ${f.cpu.toFixed(1)} us (cluster RR: ${rr.cpu.toFixed(1)} us) | ${f.cpu <= 5 ? 'met' : 'MISSED'} |`,
    `| idle p50 <= SCHED_NONE + 20 us | +${(f.idle - none.idle).toFixed(0)} us | ${f.idle - none.idle <= 20 ? 'met' : 'MISSED'} |`,
    `| keep-alive req/s within 5% of SCHED_NONE | ${((f.keep / none.keep - 1) * 100).toFixed(1)}% | ${f.keep >= 0.95 * none.keep ? 'met' : 'MISSED'} |`,
  ];
  console.log(lines.join('\n'));
  fs.mkdirSync(path.join(ROOT, 'build', 'bench'), { recursive: true });
  fs.writeFileSync(path.join(ROOT, 'build', 'bench', 'serve-latest.md'), lines.join('\n') + '\n');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
