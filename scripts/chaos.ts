/**
 * `npm run chaos`: worker crashes under load, the long run of
 * test/integration/serve-chaos.test.ts. kill -9 of a random ready worker
 * every second for --seconds (default 60) while --loops client loops make
 * requests, each on a new connection, answered after 0..--maxms ms (the
 * fixture app test/fixtures/apps/journal.js), so that some are always inside
 * a worker when it dies.
 *
 * Every failed request is explained with the app's journal (one line per
 * connection a worker took, written before it acknowledged it to the
 * primary, with a synchronous write that survives kill -9):
 *   - inside a killed worker: that worker had taken the connection (the
 *     journal has it, the client's port, and a time within the request):
 *     the request died with the process, as it would in any server;
 *   - lost: anything else. Must be 0: a connection a killed worker had not
 *     acknowledged is still held by the primary and handed to another.
 * Once the load stops and the server is idle, the primary and every worker
 * must hold no fd beyond what they held at the start.
 *
 *   node dist/scripts/chaos.js [--seconds N] [--workers N] [--loops N] [--maxms N]
 *
 * Prints the figures as markdown on stdout; exit status 1 if a request was
 * lost or an fd leaked.
 */
import * as path from 'node:path';
import { APPS } from '../test/helpers/paths';
import { ServeProcess } from '../test/helpers/serve';
import { ConnectionLoad, tally } from '../test/helpers/load';
import { rssKiB } from '../test/helpers/proc';
import { killWorkers, explainFailures, readJournal } from '../test/helpers/crashes';
import { sleep } from '../test/helpers/wait';
import { options } from './args';
import { LongRun, machine, mib, num, percentile as pct, progress, table } from './report';

const o = options({ seconds: 60, workers: 2, loops: 16, maxms: 20 });
const run = new LongRun('chaos');
const { dir, out, failures } = run;

async function main(): Promise<void> {
  const journal = path.join(dir, 'journal');
  const s = new ServeProcess(['--listen', '127.0.0.1:0', '--workers', String(o.workers), '--control', path.join(dir, 'control.sock'),
    path.join(APPS, 'journal.js')], { env: { ...process.env, FDPASS_JOURNAL: journal } });
  try {
    await s.waitUp();
    const l = s.listener('http');
    const warm = new ConnectionLoad(l, { loops: 4, total: 200 });
    await warm.done;
    const tree = await s.idleFds();
    const rssStart = { primary: rssKiB(s.pid), workers: [...tree.workers.keys()].map(rssKiB) };
    progress(`fdpass serve pid ${s.pid}, workers ${[...tree.workers.keys()].join(' ')}; ${o.loops} loops; kill -9 every second for ${o.seconds} s`);

    const load = new ConnectionLoad(l, { loops: o.loops, path: () => `/?ms=${Math.floor(Math.random() * (o.maxms + 1))}`, keepAll: true });
    await load.waitOk(100);
    const t0 = Date.now();
    const kills = await killWorkers(s, o.seconds, 1000);
    await sleep(2000); // the last replacement is up and serving
    await load.stop();
    const seconds = (Date.now() - t0) / 1000;

    const killed = new Set(kills.map((k) => k.pid));
    const { inside, lost } = explainFailures(load.failures, readJournal(journal), killed);
    if (lost.length) failures.push(`${lost.length} requests lost: ${lost.slice(0, 10).map((a) => `${a.code} port ${a.localPort}`).join(', ')}`);
    const exits = s.events('worker-exit').filter((e) => killed.has(e.pid as number));
    const redispatched = exits.reduce((a, e) => a + Number(e.redispatched), 0);
    const respawns = s.events('worker-respawn').filter((e) => killed.has(e.pid as number));
    const notAtOnce = respawns.filter((e) => e.cause !== 'killed' || e.inMs !== 0);
    if (notAtOnce.length) failures.push(`${notAtOnce.length} killed workers not replaced at once: ${JSON.stringify(notAtOnce.slice(0, 3))}`);
    // Kill to the replacement's worker-ready, per kill.
    const readies = s.events('worker-ready').map((e) => ({ slot: e.slot as number, t: Date.parse(e.time) }));
    const upMs = kills.map((k) => {
      const r = readies.find((x) => x.slot === k.slot && x.t >= k.time);
      return r ? r.t - k.time : NaN;
    }).filter(Number.isFinite).sort((a, b) => a - b);
    const latency = load.successes.map((a) => a.end - a.start).sort((a, b) => a - b);
    const codes = tally(load.failures.map((a) => `${a.code}${a.bytes ? ' (mid-response)' : ''}`));

    const idleFrom = Date.now();
    const leaks = await s.fdLeaks(tree, 15_000).catch((err: Error) => [err.message]);
    if (leaks.length) failures.push(`fds: ${leaks.join('; ')}`);
    const st = await s.status();
    const rssEnd = { primary: rssKiB(s.pid), workers: st.workers.map((w) => rssKiB(w.pid!)) };

    out.push('## fdpass serve under worker crashes (scripts/chaos.ts)', '', `Machine: ${machine()}.`, '',
      `Command: \`${['node', 'dist/scripts/chaos.js', ...process.argv.slice(2)].join(' ')}\` (${o.workers} workers, app \`test/fixtures/apps/journal.js\`, ` +
      `${o.loops} client loops, each request on a new connection and answered after 0..${o.maxms} ms; options ${JSON.stringify(o)}).`, '',
      table(['figure', 'value'], [
        ['duration', `${seconds.toFixed(1)} s`],
        ['kill -9 of a random ready worker', `${kills.length} (one a second)`],
        ['requests answered', num(load.ok)],
        ['requests failed', num(load.failures.length)],
        ['... inside a killed worker (it had taken the connection)', num(inside.length)],
        ['... **lost** (no killed worker had taken it)', `**${lost.length}**`],
        ['failure kinds', [...codes].map(([c, n]) => `${c}: ${n}`).join(', ') || 'none'],
        ['connections the killed workers had not acknowledged, handed to another worker', num(redispatched)],
        ['replacement: respawn delay', `${respawns.filter((e) => e.inMs === 0).length} of ${respawns.length} at once (cause "killed")`],
        ['replacement: kill to worker-ready', `p50 ${pct(upMs, 50)} ms, max ${upMs[upMs.length - 1]} ms`],
        ['latency of answered requests', `p50 ${pct(latency, 50)} ms, p99 ${pct(latency, 99)} ms, max ${latency[latency.length - 1]} ms`],
        ['restarts (status)', st.workers.map((w) => w.restarts).join(', ')],
        ['fds once idle', leaks.length ? `**leaked**: ${leaks.join('; ')}` : `back to the start, primary and every worker (idle ${((Date.now() - idleFrom) / 1000).toFixed(1)} s after the load)`],
        ['RSS primary start / end', `${mib(rssStart.primary)} / ${mib(rssEnd.primary)}`],
        ['RSS workers start / end', `${rssStart.workers.map(mib).join(', ')} / ${rssEnd.workers.map(mib).join(', ')}`],
      ]), '');
    const r = await s.stop();
    if (r.code !== 0) failures.push(`exit status ${r.code}`);
  } finally {
    if (s.running) await s.kill();
  }
}

run.main(main, 'Result: every check passed (SIGTERM afterwards: exit status 0).');
