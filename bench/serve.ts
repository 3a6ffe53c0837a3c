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
import * as net from 'node:net';
import * as path from 'node:path';
import { spawn, spawnSync, execFileSync, type ChildProcess } from 'node:child_process';

const ROOT = path.join(__dirname, '..', '..');
const WORKERS = Number(process.env.BENCH_WORKERS ?? 2);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const CONNS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const TICK = 100; // USER_HZ for /proc/<pid>/stat

function ensureWrk(): void {
  if (spawnSync('wrk', ['--version']).error === undefined) return;
  process.stderr.write('wrk not found: installing the Debian package\n');
  execFileSync('sh', ['-c', 'apt-get update -qq && apt-get install -y -qq wrk'], { stdio: 'inherit' });
}

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => res(p));
    });
    s.on('error', rej);
  });
}

function cpuTicks(pid: number): number {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return Number(rest[11]) + Number(rest[12]); // utime + stime
}

interface Server { child: ChildProcess; pid: number; port: number; stop(): Promise<void> }

async function startFdpass(): Promise<Server> {
  const port = await freePort();
  const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'fdpass.js'), 'serve', '--listen', `127.0.0.1:${port}`,
    '--workers', String(WORKERS), '--control', path.join(os.tmpdir(), `fdpass-bench-${process.pid}.sock`), path.join(ROOT, 'bench', 'hello-app.js')],
  { stdio: ['ignore', 'ignore', 'pipe'] });
  await waitFor(child, child.stderr!, 'control socket');
  return { child, pid: child.pid!, port, stop: () => stop(child) };
}

async function startCluster(policy: 'rr' | 'none'): Promise<Server> {
  const port = await freePort();
  const child = spawn(process.execPath, [path.join(ROOT, 'bench', 'cluster-server.js'), policy, String(port), String(WORKERS)],
    { stdio: ['ignore', 'pipe', 'inherit'] });
  await waitFor(child, child.stdout!, '"ready"');
  return { child, pid: child.pid!, port, stop: () => stop(child) };
}

/** Resolves once `stream` has printed `text`. */
function waitFor(child: ChildProcess, stream: NodeJS.ReadableStream, text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const onData = (d: Buffer) => {
      seen += d;
      if (seen.includes(text)) {
        stream.removeListener('data', onData);
        stream.resume();
        resolve();
      }
    };
    stream.on('data', onData);
    child.once('exit', (code) => reject(new Error(`server exited (${code}) before ready: ${seen}`)));
  });
}

function stop(child: ChildProcess): Promise<void> {
  return new Promise((res) => {
    if (child.exitCode !== null) return res();
    child.once('exit', () => res());
    child.kill('SIGTERM');
    setTimeout(() => child.kill('SIGKILL'), 15_000).unref();
  });
}

interface WrkResult { rps: number; p50us: number; requests: number; errors: number }

function wrk(port: number, args: string[]): WrkResult {
  const out = execFileSync('wrk', [...args, `http://127.0.0.1:${port}/`], { encoding: 'utf8' });
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
  const requests = Number(/(\d+) requests in/.exec(out)?.[1]);
  const m = /\s50%\s+([\d.]+)(us|ms|s)/.exec(out);
  const p50us = m ? Number(m[1]) * (m[2] === 'ms' ? 1000 : m[2] === 's' ? 1e6 : 1) : NaN;
  const errs = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
  const errors = (errs ? errs.slice(1).reduce((a, b) => a + Number(b), 0) : 0) + non2xx;
  return { rps, p50us, requests, errors };
}

async function measure(start: () => Promise<Server>): Promise<{ close: WrkResult; keep: WrkResult; idle: WrkResult; cpuUsPerConn: number }> {
  const s = await start();
  try {
    wrk(s.port, ['-t1', '-c4', '-d1s', '-H', 'Connection: close']); // warm-up
    const c0 = cpuTicks(s.pid);
    const close = wrk(s.port, ['-t2', `-c${CONNS}`, `-d${SECONDS}s`, '-H', 'Connection: close']);
    const c1 = cpuTicks(s.pid);
    const keep = wrk(s.port, ['-t2', `-c${CONNS}`, `-d${SECONDS}s`]);
    const idle = wrk(s.port, ['-t1', '-c1', `-d${Math.max(2, Math.round(SECONDS / 2))}s`, '--latency', '-H', 'Connection: close']);
    const cpuUsPerConn = ((c1 - c0) / TICK) * 1e6 / close.requests;
    return { close, keep, idle, cpuUsPerConn };
  } finally {
    await s.stop();
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  ensureWrk();
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
