/**
 * `npm run emfile`: the primary of `fdpass serve` at its RLIMIT_NOFILE
 * (prlimit --nofile=--limit), the long run of
 * test/integration/serve-emfile.test.ts.
 *
 *   A. held at the limit, --cycles times: both workers stopped (SIGSTOP)
 *      so that nothing is acknowledged and the primary keeps every fd it
 *      accepts; --burst connections, each with a request. The primary
 *      accepts until EMFILE, then must hold still for --hold seconds (its
 *      CPU from /proc/<pid>/stat: no busy loop) while the kernel's backlog
 *      holds the rest. Then SIGCONT: accepting must resume as soon as
 *      acknowledgements free fds, and every connection must be answered.
 *   B. at the limit under load: wrk with --concurrency connections (more
 *      than the primary has fds for) for --seconds: the primary hits EMFILE
 *      again and again and no request may fail.
 * Then: once idle, no fd beyond the start in the primary or any worker;
 * SIGTERM, exit status 0. The workers inherit the limit; a hand-off that
 * reaches one at its own limit (MSG_CTRUNC) is reported LOST and handed to
 * another worker: counted.
 *
 *   node dist/scripts/emfile.js [--limit N] [--cycles N] [--burst N] [--hold S]
 *        [--concurrency N] [--seconds S]
 *
 * Prints the figures as markdown on stdout; exit status 1 if a check failed.
 */
import * as path from 'node:path';
import { openFds } from '../test/helpers/fds';
import { ROOT } from '../test/helpers/paths';
import { ServeProcess } from '../test/helpers/serve';
import { attempt, type Attempt } from '../test/helpers/http';
import { ConnectionLoad } from '../test/helpers/load';
import { cpuTicks, USER_HZ } from '../test/helpers/proc';
import { sleep } from '../test/helpers/wait';
import { options } from './args';
import { LongRun, machine, num, progress, table } from './report';
import { ensureWrk, wrk, wrkFailures } from './wrk';

const o = options({ limit: 64, cycles: 10, burst: 300, hold: 3, concurrency: 128, seconds: 30 });
const APP = path.join(ROOT, 'bench', 'hello-app.js');
const run = new LongRun('emfile');
const { dir, out, failures } = run;

async function main(): Promise<void> {
  ensureWrk();
  const s = new ServeProcess(['--listen', '127.0.0.1:0', '--workers', '2', '--control', path.join(dir, 'control.sock'), APP],
    { prefix: ['prlimit', `--nofile=${o.limit}:${o.limit}`, '--'] });
  try {
    await s.waitUp();
    const l = s.listener('http');
    const warm = new ConnectionLoad(l, { loops: 2, total: 50 });
    await warm.done;
    const tree = await s.idleFds();
    const restFds = tree.primary.size;
    progress(`fdpass serve pid ${s.pid} at RLIMIT_NOFILE ${o.limit}, ${restFds} fds at rest; workers ${[...tree.workers.keys()].join(' ')}`);

    // ---- A: held at the limit --------------------------------------------------
    const cycles: (string | number)[][] = [];
    let totalA = 0;
    let cpuWorst = 0;
    for (let c = 1; c <= o.cycles; c++) {
      const workers = (await s.status()).workers.map((w) => w.pid!);
      const errorsBefore = (await s.status()).primary.acceptErrors;
      const eventsBefore = s.events('accept-error').length;
      for (const pid of workers) process.kill(pid, 'SIGSTOP');
      const replies: Promise<Attempt>[] = [];
      for (let i = 0; i < o.burst; i++) replies.push(attempt(l, `/c${c}-${i}`, 60_000));
      const since = Date.now();
      await s.waitEvent((e) => e.event === 'accept-error' && Date.parse(e.time) >= since - 5, 10_000, 'accept-error');
      // fds below the limit (an fd inherited above it, as some harnesses leave, does not count).
      const held = [...openFds(s.pid).keys()].filter((fd) => fd < o.limit).length;
      const c0 = cpuTicks(s.pid);
      const t0 = Date.now();
      await sleep(o.hold * 1000);
      const ticks = cpuTicks(s.pid) - c0;
      const cpu = (ticks * 1000) / (Date.now() - t0);
      cpuWorst = Math.max(cpuWorst, cpu);
      const resumedAt = Date.now();
      for (const pid of workers) process.kill(pid, 'SIGCONT');
      const results = await Promise.all(replies);
      const allMs = Date.now() - resumedAt;
      const resumed = s.events('accept-resumed').find((e) => Date.parse(e.time) >= resumedAt - 5);
      const firstMs = resumed ? Date.parse(resumed.time) - resumedAt : NaN;
      const bad = results.filter((a) => !a.ok);
      totalA += results.length;
      const st = await s.status();
      const logged = s.events('accept-error').length - eventsBefore;
      if (bad.length) failures.push(`cycle ${c}: ${bad.length} failed (${bad.slice(0, 5).map((a) => a.code).join(', ')})`);
      if (cpu >= 10) failures.push(`cycle ${c}: the primary used ${cpu.toFixed(1)}% CPU at EMFILE`);
      cycles.push([c, held, `${ticks} ticks = ${cpu.toFixed(1)}%`, num(st.primary.acceptErrors - errorsBefore), logged,
        Number.isFinite(firstMs) ? `${firstMs} ms` : 'not logged', `${allMs} ms`, `${o.burst - bad.length} / ${o.burst}`]);
      progress(`cycle ${c}: held ${held} fds, CPU ${cpu.toFixed(1)}% over ${o.hold} s, resumed ${firstMs} ms after SIGCONT, all answered in ${allMs} ms, ${bad.length} failed`);
      await s.idleFds(30_000);
    }
    out.push('## fdpass serve at its fd limit (scripts/emfile.ts)', '', `Machine: ${machine()}.`, '',
      `Command: \`${['node', 'dist/scripts/emfile.js', ...process.argv.slice(2)].join(' ')}\` (options ${JSON.stringify(o)}): the server runs under ` +
      `\`prlimit --nofile=${o.limit}:${o.limit}\` (workers inherit it), 2 workers, \`bench/hello-app.js\`; the primary holds ${restFds} fds at rest.`, '',
      `### A. Held at EMFILE (workers stopped), ${o.cycles} cycles of ${o.burst} connections`, '',
      table(['cycle', `primary fds (of ${o.limit})`, `primary CPU over ${o.hold} s at EMFILE`, 'accept errors (status)', 'accept-error lines logged',
        'SIGCONT to accept-resumed', 'SIGCONT to all answered', 'answered'], cycles), '',
      `${num(totalA)} connections in all; worst CPU at EMFILE ${cpuWorst.toFixed(1)}% of a core (a busy loop on the readable listener would be ~100%).`, '');

    // ---- B: at the limit under load ----------------------------------------------
    const st0 = await s.status();
    const lost0 = s.events('handoff-lost').length;
    const c0 = cpuTicks(s.pid);
    const r = await wrk(['-t2', `-c${o.concurrency}`, `-d${o.seconds}s`, '-H', 'Connection: close'], `http://127.0.0.1:${l.port}/`);
    const cpuB = (cpuTicks(s.pid) - c0) / USER_HZ;
    const st1 = await s.status();
    const lostB = s.events('handoff-lost').slice(lost0);
    const failedB = wrkFailures(r);
    if (failedB) failures.push(`load at the limit: ${failedB} failed requests`);
    progress(`load at the limit: ${num(r.requests)} requests, ${num(r.rps)}/s, ${failedB} failed, ${st1.primary.acceptErrors - st0.primary.acceptErrors} accept errors`);
    out.push(`### B. Under load at the limit`, '',
      table(['figure', 'value'], [
        ['load', `\`${r.command}\``],
        ['requests (each a new connection)', `${num(r.requests)} in ${r.seconds.toFixed(1)} s (${num(r.rps)}/s)`],
        ['failed (connect, read, write, timeout, non-2xx)', `**${failedB}** (${[r.connectErrors, r.readErrors, r.writeErrors, r.timeouts, r.non2xx].join(' / ')})`],
        ['accept errors (EMFILE) meanwhile', num(st1.primary.acceptErrors - st0.primary.acceptErrors)],
        ['hand-offs LOST by a worker at its own limit, handed on', `${lostB.length} messages, ${lostB.reduce((a, e) => a + Number(e.redispatched), 0)} connections`],
        ['primary CPU', `${cpuB.toFixed(1)} s (${((cpuB / r.seconds) * 100).toFixed(0)}% of a core)`],
      ]), '');

    const leaks = await s.fdLeaks(tree, 15_000).catch((err: Error) => [err.message]);
    if (leaks.length) failures.push(`fds: ${leaks.join('; ')}`);
    const fin = await s.status();
    const res = await s.stop();
    if (res.code !== 0) failures.push(`exit status ${res.code}`);
    out.push(`Afterwards: fds ${leaks.length ? `**leaked**: ${leaks.join('; ')}` : 'back to the start in the primary and every worker'}; ` +
      `status: ${num(fin.primary.accepted)} accepted, ${num(fin.primary.acceptErrors)} accept errors in all, restarts ${fin.workers.map((w) => w.restarts).join(', ')}; ` +
      `SIGTERM: exit status ${res.code}.`, '');
  } finally {
    if (s.running) await s.kill();
  }
}

run.main(main);
