/**
 * Long run of the fd-exhaustion property: a Channel whose process sits at
 * its RLIMIT_NOFILE (set low with prlimit) keeps being sent more fds than it
 * has room for (MSG_CTRUNC). Every such message must fail cleanly, with
 * FDPASS_ERR_CONTROL_TRUNCATED, its surviving fds closed; every message that
 * fits must arrive whole; the channel must carry on; and the limited
 * process's fd table must be exactly what it was after every operation.
 *
 *   node dist/scripts/exhaust.js [--seconds 60] [--nofile 64] [--seed 1]
 *
 * Both channel transports (SEQPACKET, framed stream) run for the given time
 * each. The limited process (the child) does, at random:
 *   get   request n fds from the parent (the reply carries them)
 *   give  ask the parent to send it a request carrying n fds
 *   post  ask the parent to post it n fds
 * with n from 0 to 253, so that about a fifth fit.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { UnixSocket, Channel, withFds, decodeChannel, type SocketType } from '../src';
import { Kind } from '../src/channel/codec';
import { Rng } from '../test/helpers/fuzz';
import { fdCount } from '../test/helpers/fds';
import { spawnNode } from '../test/helpers/process';
import { nofile } from '../test/helpers/proc';
import { argOf } from './args';

const MAX = 253;

// ---- the child: at its limit --------------------------------------------------------

async function child(): Promise<void> {
  const seconds = argOf('seconds', 60);
  const rng = new Rng(argOf('seed', 1));
  const ch = new Channel(UnixSocket.fromFd(3), { timeout: 30_000 });
  const tally: Record<string, number> = {};
  const add = (k: string) => (tally[k] = (tally[k] ?? 0) + 1);
  const errors: string[] = [];
  ch.on('error', (e: Error & { code?: string; data?: Buffer }) => {
    if (e.code !== 'FDPASS_ERR_CONTROL_TRUNCATED' || !e.data) errors.push(`${e.code}: ${e.message}`);
    else if (decodeChannel(e.data).kind === Kind.Post) add('post truncated (reported)');
    else add('request truncated (answered with the error, reported)');
  });
  let posted: (() => void) | null = null;
  ch.on('message', (m) => {
    if (m.type === 'post') add(m.fds.length === (m.payload as { n: number }).n ? 'post whole' : 'post short!');
    posted?.();
  });
  ch.handle('take', (p: { n: number }, msg) => {
    const got = msg.fds.length;
    for (const f of msg.fds) f.close();
    return got === p.n ? 'whole' : `short ${got}/${p.n}`;
  });
  // Warm up (first request, timers), then take the baseline.
  (await ch.request('get', { n: 0 })).message.close();
  const base = fdCount();
  let maxWhole = 0;
  let drift = 0;
  let ops = 0;
  let fdsSent = 0;
  const limit = nofile();
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end) {
    const n = rng.chance(0.2) ? rng.int(limit - base) : rng.int(MAX + 1);
    const op = rng.pick(['get', 'give', 'post'] as const);
    fdsSent += n;
    if (op === 'get') {
      try {
        const r = await ch.request('get', { n });
        if (r.fds.length === n) maxWhole = Math.max(maxWhole, n);
        add(r.fds.length === n ? 'get whole' : 'get short!');
        r.message.close();
      } catch (e) {
        const err = e as { code?: string; received?: number };
        add(err.code === 'FDPASS_ERR_CONTROL_TRUNCATED' && err.received! < n ? 'get truncated (request failed)' : `get ${err.code}`);
      }
    } else if (op === 'give') {
      const r = await ch.request('give', { n });
      add(`give: ${String(r.payload)}`);
    } else {
      const arrived = new Promise<void>((res) => (posted = res));
      const before = tally['post truncated (reported)'] ?? 0;
      await ch.request('post', { n });
      // The post went before the reply: it has been handled (or reported) by now.
      if ((tally['post truncated (reported)'] ?? 0) === before) await arrived;
      posted = null;
    }
    ops++;
    const now = fdCount();
    if (now !== base) drift++;
  }
  const rss = process.memoryUsage().rss;
  console.log(JSON.stringify({ ops, fdsSent, tally, errors: errors.slice(0, 5), errorCount: errors.length, limit, baseFds: base, largestWholeGet: maxWhole, fdsAfterOpNotBase: drift, endFds: fdCount(), rssMiB: Math.round(rss / 2 ** 20) }));
  ch.close();
}

// ---- the parent: sends what does not fit ------------------------------------------------

async function parent(): Promise<void> {
  const seconds = argOf('seconds', 60);
  const limit = argOf('nofile', 64);
  const seed = argOf('seed', 1);
  const dir = fs.mkdtempSync(`${os.tmpdir()}/fdpass-exhaust-`);
  const file = fs.openSync(`${dir}/f`, 'w+');
  const fds = (n: number) => new Array<number>(n).fill(file);
  const results: Record<string, unknown> = {};
  let failed = false;
  const parentBase = fdCount();
  for (const type of ['seqpacket', 'stream'] as SocketType[]) {
    const [mine, theirs] = UnixSocket.pair({ type });
    const ch = new Channel(mine, { timeout: 30_000 });
    const parentErrors: string[] = [];
    ch.on('error', (e: Error) => parentErrors.push(e.message));
    ch.handle('get', ({ n }: { n: number }) => withFds({ n }, fds(n)));
    ch.handle('give', async ({ n }: { n: number }) => {
      try {
        return await ch.request('take', { n }, { fds: fds(n) }).then((r) => r.payload);
      } catch (e) {
        return `refused ${(e as { remoteCode?: string }).remoteCode ?? (e as Error).message}`;
      }
    });
    ch.handle('post', async ({ n }: { n: number }) => {
      await ch.post('post', { n }, fds(n));
      return 'posted';
    });
    const t0 = Date.now();
    const c = spawnNode(__filename, ['--child', '--seconds', String(seconds), '--seed', String(seed)],
      { fds: [theirs.fd], nofile: limit, timeout: (seconds + 120) * 1000 });
    theirs.close();
    const r: Record<string, unknown> = await c.next().catch((err: Error) => ({ output: err.message }));
    const { code } = await c.exited;
    ch.close();
    const tally = (r.tally ?? {}) as Record<string, number>;
    const bad = Object.keys(tally).filter((k) => k.includes('!') || /^get FDPASS|^give: (?!whole|refused FDPASS_ERR_CONTROL_TRUNCATED)/.test(k));
    const ok = code === 0 && r.fdsAfterOpNotBase === 0 && r.errorCount === 0 && bad.length === 0 && parentErrors.length === 0;
    if (!ok) failed = true;
    results[type] = { seconds: Number(((Date.now() - t0) / 1000).toFixed(1)), exit: code, ...r, parentErrors: parentErrors.slice(0, 5), ok };
  }
  fs.closeSync(file);
  fs.rmSync(dir, { recursive: true, force: true });
  const parentLeak = fdCount() - parentBase;
  console.log(JSON.stringify({
    date: new Date().toISOString(), node: process.version, kernel: os.release(),
    command: `node dist/scripts/exhaust.js ${process.argv.slice(2).join(' ')}`.trim(),
    nofile: limit, seed, results, parentFdsLeaked: parentLeak,
  }, null, 1));
  const ok = !failed && parentLeak === 0;
  console.log(ok ? 'OK: every over-limit message failed cleanly, every other arrived whole, no fd left behind' : 'FAILED');
  process.exitCode = ok ? 0 : 1;
}

(process.argv.includes('--child') ? child() : parent()).catch((err) => {
  console.error(err);
  process.exit(2);
});
