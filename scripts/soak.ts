/**
 * `npm run soak`: the long run of load, soak and restart safety for
 * `fdpass serve` (test/integration/serve-soak.test.ts and
 * serve-lifecycle.test.ts are the short ones):
 *
 *   1. connections  --connections requests (default 1,000,000), each on a
 *                   new connection, at full speed: wrk -H 'Connection: close'
 *                   in --segment second runs until the primary has accepted
 *                   that many, with a SIGHUP reload in the middle of
 *                   --reloads of the runs. No request may fail (wrk's
 *                   connect, read, write and timeout errors, non-2xx). RSS
 *                   and fd counts of the primary and the workers at the
 *                   start, the middle and the end; once idle, no fd beyond
 *                   the start (test/helpers' expectNoFdLeak: primary and
 *                   every worker).
 *   2. idle         --idle connections (default 10,000) held open by the
 *                   workers (status live counts them; the primary holds
 *                   none), then released: fds back to the start. Both sides'
 *                   RLIMIT_NOFILE is raised for it (prlimit).
 *   3. shutdown     SIGTERM in the middle of a wrk run, on this server and
 *                   on --terms fresh ones: no read or write error, no
 *                   timeout, no non-2xx: every connection that was
 *                   established is answered. Refused connects once the
 *                   listener is closed end the run (wrk counts them as
 *                   connect errors) and are not failures. Exit status 0.
 *
 *   node dist/scripts/soak.js [--connections N] [--idle N] [--workers N]
 *        [--concurrency N] [--segment S] [--reloads N] [--terms N]
 *
 * Prints the figures as markdown (for docs/reliability.md) on stdout,
 * progress on stderr; exit status 1 if any check failed.
 */
import * as path from 'node:path';
import { openFds, fdCount, type TreeFds } from '../test/helpers/fds';
import { ROOT } from '../test/helpers/paths';
import { startServe, type ServeProcess } from '../test/helpers/serve';
import { ConnectionLoad } from '../test/helpers/load';
import { rssKiB, cpuTicks, USER_HZ, raiseNofile, reachableNofile, nofile } from '../test/helpers/proc';
import { connectIdle } from '../test/helpers/sockets';
import { sleep } from '../test/helpers/wait';
import { options } from './args';
import { LongRun, machine, mib, num, progress, table } from './report';
import { ensureWrk, wrk, wrkFailures, type WrkResult } from './wrk';

const o = options({ connections: 1_000_000, idle: 10_000, workers: 2, concurrency: 32, segment: 10, reloads: 4, terms: 5 });
const APP = path.join(ROOT, 'bench', 'hello-app.js');
/** The server's RLIMIT_NOFILE (workers inherit it): room for the idle
 * connections, or as much as the hard limit allows without CAP_SYS_RESOURCE. */
const NOFILE = reachableNofile(Math.max(65_536, o.idle + 4096));
const run = new LongRun('soak');
const { dir, out, failures } = run;

interface Sample {
  label: string;
  accepted: number;
  primaryRss: number;
  primaryFds: number;
  workers: { pid: number; generation: number; rss: number; fds: number }[];
}

async function sample(s: ServeProcess, label: string): Promise<Sample> {
  // Counted before the status query, whose connection the primary holds for a moment.
  const primaryFds = fdCount(s.pid);
  const st = await s.status();
  const workers = st.workers.filter((w) => w.state !== 'dead' && w.pid).map((w) => {
    try {
      return { pid: w.pid!, generation: w.generation, rss: rssKiB(w.pid!), fds: fdCount(w.pid!) };
    } catch {
      return { pid: w.pid!, generation: w.generation, rss: 0, fds: 0 };
    }
  });
  return { label, accepted: st.primary.accepted, primaryRss: rssKiB(s.pid), primaryFds, workers };
}

function sampleRow(x: Sample): (string | number)[] {
  return [x.label, num(x.accepted), mib(x.primaryRss), x.primaryFds,
    x.workers.map((w) => `${mib(w.rss)} (gen ${w.generation})`).join(', '), x.workers.map((w) => w.fds).join(', ')];
}

async function startServer(dir: string, tag: string): Promise<ServeProcess> {
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', String(o.workers), '--control', path.join(dir, `${tag}.sock`),
    '--shutdown-timeout', '10000', APP], { prefix: ['prlimit', `--nofile=${NOFILE}:${NOFILE}`, '--'] });
  // Warm-up: every worker serves, whatever is opened lazily is open.
  const warm = new ConnectionLoad(s.listener('http'), { loops: 4, total: 200 });
  await warm.done;
  if (warm.failures.length) {
    await s.kill();
    throw new Error(`warm-up failed: ${warm.failures.map((a) => a.code).join(', ')}`);
  }
  return s;
}

function wrkErrors(r: WrkResult): string {
  return `connect ${r.connectErrors}, read ${r.readErrors}, write ${r.writeErrors}, timeout ${r.timeouts}, non-2xx ${r.non2xx}`;
}

function wrkErrorCells(r: WrkResult): string {
  return [r.connectErrors, r.readErrors, r.writeErrors, r.timeouts, r.non2xx].join(' / ');
}

async function phaseConnections(s: ServeProcess, tree: TreeFds): Promise<void> {
  const url = `http://127.0.0.1:${s.listener('http').port}/`;
  const args = ['-t2', `-c${o.concurrency}`, `-d${o.segment}s`, '-H', 'Connection: close'];
  const start = await sample(s, 'start');
  const samples: Sample[] = [];
  const base = start.accepted;
  const cpu0 = cpuTicks(s.pid);
  const t0 = Date.now();
  const runs: { r: WrkResult; reload: boolean; reloadMs?: number }[] = [];
  let reloads = 0;
  while ((await s.status()).primary.accepted - base < o.connections) {
    const reload = reloads < o.reloads && runs.length % 2 === 1;
    const running = wrk(args, url);
    await sleep((o.segment * 1000) / 2);
    samples.push(await sample(s, `run ${runs.length + 1}, ${o.segment / 2} s in`));
    let reloadMs: number | undefined;
    if (reload) {
      reloads++;
      const gen = (await s.status()).primary.generation + 1;
      const t = Date.now();
      s.signal('SIGHUP');
      await s.waitEvent((e) => e.event === 'reload-done' && e.generation === gen, 20_000, `reload-done ${gen}`);
      reloadMs = Date.now() - t;
    }
    const r = await running;
    runs.push({ r, reload, reloadMs });
    const accepted = (await s.status()).primary.accepted - base;
    progress(`run ${runs.length}: ${num(r.requests)} requests, ${num(r.rps)}/s, errors: ${wrkErrors(r)}${reload ? `, SIGHUP reload (${reloadMs} ms to reload-done)` : ''}; ${num(accepted)} accepted so far`);
    if (wrkFailures(r)) failures.push(`connections run ${runs.length}: ${wrkErrors(r)}`);
  }
  const seconds = (Date.now() - t0) / 1000;
  const cpu = (cpuTicks(s.pid) - cpu0) / USER_HZ;
  const accepted = (await s.status()).primary.accepted - base;
  const requests = runs.reduce((a, x) => a + x.r.requests, 0);
  const failed = runs.reduce((a, x) => a + wrkFailures(x.r), 0);
  const mid = samples.reduce((best, x) => (Math.abs(x.accepted - base - o.connections / 2) < Math.abs(best.accepted - base - o.connections / 2) ? x : best));
  const middle = { ...mid, label: `middle (${mid.label})` };
  const idleStart = Date.now();
  const end = await s.idleFds(60_000).then(() => sample(s, 'end (idle)'));
  const leaks = await s.fdLeaks(tree, 10_000).catch((err: Error) => [err.message]);
  if (leaks.length) failures.push(`fds after the connections phase: ${leaks.join('; ')}`);
  const st = await s.status();
  out.push('### 1. A million connections through the primary',
    '',
    `${num(accepted)} connections accepted and handed off (wrk counted ${num(requests)} requests) in ${seconds.toFixed(0)} s ` +
    `(${num(accepted / seconds)}/s) over ${runs.length} wrk runs of ${o.segment} s, with ${reloads} SIGHUP reloads in the middle of runs; ` +
    `**${failed} failed requests**. Primary CPU: ${cpu.toFixed(1)} s (${((cpu / seconds) * 100).toFixed(0)}% of a core, ` +
    `${((cpu * 1e6) / accepted).toFixed(1)} us per connection). Accept errors: ${st.primary.acceptErrors}. ` +
    `Idle again ${((Date.now() - idleStart) / 1000).toFixed(1)} s after the last run.`,
    '',
    table(['when', 'accepted', 'primary RSS', 'primary fds', 'worker RSS', 'worker fds'], [start, middle, end].map(sampleRow)),
    '',
    'Every sample (taken in the middle of each run, under load):',
    '',
    table(['when', 'accepted', 'primary RSS', 'primary fds', 'worker RSS', 'worker fds'], samples.map(sampleRow)),
    '',
    `fds once idle: ${leaks.length ? `**leaked**: ${leaks.join('; ')}` : 'primary and every worker back to the start (no fd beyond it, by kind)'}.`,
    '',
    table(['wrk run', 'requests', 'req/s', 'errors (connect, read, write, timeout, non-2xx)', 'reload'],
      runs.map((x, i) => [i + 1, num(x.r.requests), num(x.r.rps), wrkErrorCells(x.r),
        x.reload ? `SIGHUP at ${o.segment / 2} s, reload-done after ${x.reloadMs} ms` : ''])),
    '',
    `Each run: \`${runs[0]!.r.command}\`.`,
    '');
}

async function phaseIdle(s: ServeProcess, tree: TreeFds): Promise<void> {
  const l = s.listener('http');
  const before = await sample(s, 'before');
  const t0 = Date.now();
  const { sockets: socks, errors: connectErrors } = await connectIdle(l.host!, l.port!, o.idle, 500);
  const st = await s.waitStatus((x) => x.workers.reduce((a, w) => a + w.live, 0) === o.idle && x.primary.inflight === 0, 60_000, `${o.idle} live`);
  const openMs = Date.now() - t0;
  await sleep(1000);
  const held = await sample(s, `holding ${num(o.idle)}`);
  const primaryHeld = openFds(s.pid).size - tree.primary.size;
  const t1 = Date.now();
  for (const c of socks) c.destroy();
  await s.waitStatus((x) => x.workers.every((w) => w.live === 0), 60_000, 'no live connection');
  const releaseMs = Date.now() - t1;
  const leaks = await s.fdLeaks(tree, 10_000).catch((err: Error) => [err.message]);
  if (leaks.length) failures.push(`fds after the idle phase: ${leaks.join('; ')}`);
  const after = await sample(s, 'released, idle');
  if (connectErrors) failures.push(`idle phase: ${connectErrors} connects failed`);
  out.push('### 2. Idle connections held by the workers',
    '',
    `${num(o.idle)} connections opened (${connectErrors} failed) and counted live by the workers in ${(openMs / 1000).toFixed(1)} s ` +
    `(live per worker: ${st.workers.map((w) => num(w.live)).join(' + ')}); the primary held ${primaryHeld <= 0 ? 'none of them' : `${primaryHeld} fds more`}. ` +
    `Released: live 0 after ${(releaseMs / 1000).toFixed(1)} s; fds ${leaks.length ? `**leaked**: ${leaks.join('; ')}` : 'back to the start in the primary and every worker'}. ` +
    `RLIMIT_NOFILE ${num(NOFILE)} for the server (prlimit) and ${num(nofile())} for the client.`,
    '',
    table(['when', 'accepted', 'primary RSS', 'primary fds', 'worker RSS', 'worker fds'], [before, held, after].map(sampleRow)),
    '');
}

interface Term {
  answered: number;
  /** Connected (the kernel had queued the connection) but not answered: must be 0. */
  unanswered: string[];
  /** Failed before the client saw its connect complete, other than refused
   * (an ECONNRESET here is a handshake the kernel completed, then reset by
   * the listener's close): must be 0. */
  other: string[];
  refused: number;
  handedAfter: number;
  stopMs: number;
  code: number | null;
}

/**
 * SIGTERM while TERM_LOOPS client loops make requests on new connections.
 * wrk cannot tell a refused connect from a reset (both are write errors to
 * it), so the client here is ConnectionLoad, which knows whether the
 * handshake had completed: a connection that completed it must be answered;
 * a refused connect (the listener closed) ends its loop.
 */
const TERM_LOOPS = 64;
async function terminate(s: ServeProcess): Promise<Term> {
  const load = new ConnectionLoad(s.listener('http'), { loops: TERM_LOOPS, refusedEnds: true, timeout: 15_000 });
  await sleep(3000);
  const handed = (await s.status()).primary.handed;
  const t = Date.now();
  s.signal('SIGTERM');
  const res = await s.exited;
  const stopMs = Date.now() - t;
  await load.done;
  const stopped = s.events('stopped')[0];
  return {
    answered: load.ok,
    unanswered: load.failures.filter((a) => a.connected).map((a) => `${a.code} after ${a.bytes} bytes`),
    other: load.failures.filter((a) => !a.connected).map((a) => String(a.code)),
    refused: load.refused,
    handedAfter: Number(stopped?.handed ?? 0) - handed,
    stopMs,
    code: res.code,
  };
}

async function main(): Promise<void> {
  ensureWrk();
  if (!raiseNofile(o.idle + 4096)) progress(`could not raise this process's RLIMIT_NOFILE to ${o.idle + 4096} (now ${nofile()}): the idle phase may fail`);
  out.push(`## fdpass serve soak (scripts/soak.ts)`, '', `Machine: ${machine()}.`, '',
    `Command: \`${['node', 'dist/scripts/soak.js', ...process.argv.slice(2)].join(' ')}\` (${o.workers} workers, \`bench/hello-app.js\`, ` +
    `server under \`prlimit --nofile=${NOFILE}:${NOFILE}\`; options: ${JSON.stringify(o)}).`, '');
  let s: ServeProcess | undefined;
  try {
    s = await startServer(dir, 'soak');
    const tree = await s.idleFds();
    progress(`fdpass serve pid ${s.pid} on ${s.listener('http').address}; workers ${[...tree.workers.keys()].join(' ')}`);
    await phaseConnections(s, tree);
    progress('idle phase');
    // After reloads the workers are new: the fd baseline is taken again (workers compare with any baseline worker).
    await phaseIdle(s, await s.idleFds());
    progress('SIGTERM under load');
    const terms = [await terminate(s)];
    for (let i = 1; i < o.terms; i++) {
      const f = await startServer(dir, `term${i}`);
      try {
        terms.push(await terminate(f));
      } finally {
        if (f.running) await f.kill();
      }
    }
    const rows = terms.map((x, i) => {
      if (x.unanswered.length || x.other.length || x.code !== 0) {
        failures.push(`SIGTERM ${i + 1}: exit ${x.code}, unanswered: ${x.unanswered.join(', ') || 'none'}, other: ${x.other.join(', ') || 'none'}`);
      }
      return [i === 0 ? 'the soak server' : `fresh server ${i}`, num(x.answered), x.unanswered.length, x.other.length, x.refused,
        x.handedAfter, `${x.stopMs} ms`, x.code ?? 'signal'];
    });
    out.push('### 3. SIGTERM under load', '',
      `${TERM_LOOPS} client loops (test/helpers ConnectionLoad: one request per new connection, as fast as answered), SIGTERM 3 s in. ` +
      'A connection whose handshake had completed and that was not answered would be a failure ("established, unanswered"), ' +
      'and so would a reset before the client saw its connect complete (the kernel had completed the handshake, then the ' +
      'listener\'s close reset it); a refused connect once the listener is closed ends its loop and is not. (wrk is not used ' +
      'here: it counts a refused connect and a reset alike, as write errors.)', '',
      table(['server', 'requests answered', 'established, unanswered', 'reset (or other error) before connect', 'loops ended by a refusal', 'handed after SIGTERM', 'SIGTERM to exit', 'exit status'], rows),
      '');
  } finally {
    if (s?.running) await s.kill();
  }
}

run.main(main);
