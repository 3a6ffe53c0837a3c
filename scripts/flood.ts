/**
 * Long run of the fd-flood property: K flooder processes connect to one
 * receiver and send 253 fds per message as fast as the kernel takes them,
 * reconnecting whenever they are cut off, for N seconds per scenario. The
 * receiver (its own process) samples its fd table and RSS every 100 ms.
 *
 *   node dist/scripts/flood.js [--seconds 20] [--flooders 4] [--cap 512] [--slow-ms 20]
 *
 * Scenarios:
 *   backpressure   default options; a slow consumer (one message per
 *                  slow-ms per connection). Reading pauses at maxBufferedFds
 *                  (2048), the flooders wait: bounded, nothing cut off.
 *   cap-slow       maxUnreadFds = cap, same slow consumer: flooders are cut
 *                  off with FDPASS_ERR_FD_FLOOD and reconnect; each
 *                  connection holds at most about cap + 253 unread.
 *   cap-fast       maxUnreadFds = cap, a consumer that keeps up (closes each
 *                  message as it comes): never cut off.
 *
 * Pass: in every scenario the receiver's fd count stays under its bound, no
 * message arrives truncated (MSG_CTRUNC: the receiver never reaches its
 * RLIMIT_NOFILE), and once the flooders are gone the receiver is back to the
 * fds it started with.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { UnixServer, UnixSocket, type SocketOptions } from '../src';
import { fdCount } from '../test/helpers/fds';
import { spawnNode } from '../test/helpers/process';
import { sleep } from '../test/helpers/wait';
import { argOf, argStr } from './args';

const MAX = 253;

// ---- receiver ---------------------------------------------------------------------------

async function receiver(): Promise<void> {
  const address = argStr('address')!;
  const consumer = argStr('consumer')!;
  const slowMs = argOf('slow-ms', 20);
  const cap = argOf('cap', 0);
  const opts: SocketOptions = cap ? { maxUnreadFds: cap } : {};
  const server = await UnixServer.listen(address, opts);
  // Counted with the listener open and the stdout stream created (libuv opens
  // a reserve fd with the first stream), and compared at the end before the
  // listener closes: what is left then is left by the flood.
  process.stdout.write('');
  const base = fdCount();
  const stats = { connections: 0, messages: 0, fds: 0, errors: {} as Record<string, number>, maxFds: base, maxRss: 0, maxOpen: 0 };
  let open = 0;
  const conns = new Set<UnixSocket>();
  server.on('connection', (s: UnixSocket) => {
    stats.connections++;
    open++;
    stats.maxOpen = Math.max(stats.maxOpen, open);
    conns.add(s);
    s.on('close', () => {
      open--;
      conns.delete(s);
    });
    const fail = (e: Error & { code?: string }) => {
      stats.errors[e.code ?? e.message] = (stats.errors[e.code ?? e.message] ?? 0) + 1;
    };
    if (consumer === 'fast') {
      s.on('message', (m) => {
        stats.messages++;
        stats.fds += m.fdCount;
        m.close();
      });
      s.on('error', fail);
    } else {
      void (async () => {
        for (;;) {
          try {
            for await (const m of s) {
              stats.messages++;
              stats.fds += m.fdCount;
              m.close();
              await sleep(slowMs);
            }
            return;
          } catch (e) {
            fail(e as Error);
            if (s.closed) return;
          }
        }
      })();
    }
  });
  const sample = setInterval(() => {
    stats.maxFds = Math.max(stats.maxFds, fdCount());
    stats.maxRss = Math.max(stats.maxRss, process.memoryUsage().rss);
  }, 100);
  process.stdout.write(JSON.stringify({ ready: true, base }) + '\n');
  // "stop" (a JSON line) on stdin: close what is left and report.
  for await (const line of createInterface({ input: process.stdin })) {
    if (line.trim() !== '"stop"') continue;
    clearInterval(sample);
    for (const s of conns) s.close();
    await sleep(50);
    const end = fdCount();
    await server.close();
    process.stdout.write(JSON.stringify({ ...stats, base, end, maxRssMiB: Math.round(stats.maxRss / 2 ** 20), maxRss: undefined }) + '\n');
    process.exit(0);
  }
}

// ---- flooder ------------------------------------------------------------------------------

async function flooder(): Promise<void> {
  const address = argStr('address')!;
  const until = Date.now() + argOf('ms', 10_000);
  const devnull = fs.openSync('/dev/null', 'r');
  const fds = new Array<number>(MAX).fill(devnull);
  let sent = 0;
  let connects = 0;
  let cutOff = 0;
  while (Date.now() < until) {
    let sock: UnixSocket;
    try {
      sock = await UnixSocket.connect(address, { timeout: 1000 });
    } catch {
      await sleep(5);
      continue;
    }
    connects++;
    sock.on('error', () => {});
    // Keep the kernel's queue full; each send settles once the kernel took it.
    let broken = false;
    const window: Promise<void>[] = [];
    while (Date.now() < until && !broken) {
      window.push(sock.send({ data: 'flood', fds }).then(() => {
        sent++;
      }, () => {
        broken = true;
      }));
      if (window.length >= 16) await window.shift();
    }
    await Promise.all(window);
    if (broken) cutOff++;
    sock.close();
  }
  fs.closeSync(devnull);
  process.stdout.write(JSON.stringify({ sent, fdsSent: sent * MAX, connects, cutOff }) + '\n');
}

// ---- parent ---------------------------------------------------------------------------------

async function scenario(name: string, consumer: string, cap: number, seconds: number, flooders: number, slowMs: number, nofile: number) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fdpass-flood-'));
  const address = path.join(dir, 'r.sock');
  const timeout = (seconds + 120) * 1000;
  const rx = spawnNode(__filename, ['--receiver', '--address', address, '--consumer', consumer, '--cap', String(cap), '--slow-ms', String(slowMs)],
    { nofile, timeout });
  const ready = await rx.next<{ base: number }>();
  const t0 = Date.now();
  const fl = Array.from({ length: flooders }, () => spawnNode(__filename, ['--flooder', '--address', address, '--ms', String(seconds * 1000)], { timeout }));
  const floods = await Promise.all(fl.map((c) => c.next<Record<string, number>>()));
  const secondsRun = (Date.now() - t0) / 1000;
  rx.send('stop');
  const r = await rx.next<Record<string, unknown> & { maxFds: number; base: number; end: number; errors: Record<string, number> }>();
  await Promise.all([rx.exited, ...fl.map((c) => c.exited)]);
  fs.rmSync(dir, { recursive: true, force: true });
  const sum = (k: string) => floods.reduce((a, f) => a + (f[k] ?? 0), 0);
  // Per connection: read-ahead (maxBufferedFds 2048, or the cap) plus one
  // message past it, one incomplete frame, and the message the consumer holds.
  const perConn = (cap || 2048) + 3 * MAX;
  const bound = ready.base + flooders * perConn;
  const truncated = r.errors.FDPASS_ERR_CONTROL_TRUNCATED ?? 0;
  const flood = r.errors.FDPASS_ERR_FD_FLOOD ?? 0;
  const okCut = name === 'cap-slow' ? flood > 0 : flood === 0;
  const ok = r.maxFds <= bound && truncated === 0 && r.end === ready.base && okCut;
  return {
    scenario: name, consumer, maxUnreadFds: cap || null, seconds: Number(secondsRun.toFixed(1)), flooders,
    flooded: { messages: sum('sent'), fds: sum('fdsSent'), connects: sum('connects'), cutOff: sum('cutOff') },
    receiver: {
      fdsAtStart: ready.base, maxFds: r.maxFds, boundFds: bound, fdsAtEnd: r.end, maxRssMiB: r.maxRssMiB,
      messages: r.messages, fds: r.fds, connections: r.connections, errors: r.errors, rlimitNofile: nofile,
    },
    ok,
  };
}

async function parent(): Promise<void> {
  const seconds = argOf('seconds', 20);
  const flooders = argOf('flooders', 4);
  const cap = argOf('cap', 512);
  const slowMs = argOf('slow-ms', 20);
  const nofile = argOf('nofile', 16384);
  const runs = [];
  for (const [name, consumer, c] of [['backpressure', 'slow', 0], ['cap-slow', 'slow', cap], ['cap-fast', 'fast', cap]] as const) {
    process.stderr.write(`${name}: ${flooders} flooders for ${seconds} s\n`);
    runs.push(await scenario(name, consumer, c, seconds, flooders, slowMs, nofile));
  }
  console.log(JSON.stringify({
    date: new Date().toISOString(), node: process.version, kernel: os.release(), cpu: `${os.cpus()[0]?.model ?? '?'} x${os.cpus().length}`,
    command: `node dist/scripts/flood.js ${process.argv.slice(2).join(' ')}`.trim(), runs,
  }, null, 1));
  const ok = runs.every((r) => r.ok);
  console.log(ok ? 'OK: the receiver stayed bounded, nothing truncated, no fd left behind' : 'FAILED');
  process.exitCode = ok ? 0 : 1;
}

const main = process.argv.includes('--receiver') ? receiver : process.argv.includes('--flooder') ? flooder : parent;
main().catch((err) => {
  console.error(err);
  process.exit(2);
});
