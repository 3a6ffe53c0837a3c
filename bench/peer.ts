/**
 * Benchmark roles, each run in its own process by bench/run.ts. Both sides
 * use the public async API over a socketpair inherited as fd 3, as the C
 * baseline (bench/c/fdbench.c) does with fork().
 *
 *   node peer.js throughput TYPE K M   receiver; spawns the sender
 *   node peer.js pingpong TYPE M       round trips of one fd
 * Each prints one JSON line, in the C baseline's format.
 */
import * as fs from 'node:fs';
import { spawn } from 'node:child_process';
import { UnixSocket, type Message, type SocketType } from '../src';
import { native, K, type PollHandle } from '../src/native';

const ONE = Buffer.from('x');
const WARMUP = 1000;

/** Starts a role in a child; resolves with its exit (listened to at once,
 * so that an early exit is not missed). */
function child(role: string, args: string[], sock: UnixSocket): Promise<number | null> {
  const c = spawn(process.execPath, [__filename, role, ...args], { stdio: ['ignore', 'inherit', 'inherit', sock.fd] });
  sock.close();
  return new Promise((res) => c.on('exit', (code) => res(code)));
}

async function throughputRecv(type: SocketType, k: number, m: number): Promise<void> {
  const [mine, theirs] = UnixSocket.pair({ type });
  const exited = child('throughput-send', [type, String(k), String(m)], theirs);
  const total = WARMUP + m;
  let n = 0;
  let fds = 0;
  let t0 = 0n;
  for await (const msg of mine) {
    fds += msg.fdCount;
    msg.close();
    if (++n === WARMUP) t0 = process.hrtime.bigint();
    if (n === total) break;
  }
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (fds !== total * k) throw new Error(`received ${fds} fds, expected ${total * k}`);
  mine.close();
  if ((await exited) !== 0) throw new Error('the sender failed');
  console.log(JSON.stringify({ mode: 'throughput', type, fds: k, count: m, seconds: s, msgs_per_s: m / s, fds_per_s: (m * k) / s }));
}

async function throughputSend(type: SocketType, k: number, m: number): Promise<void> {
  const sock = UnixSocket.fromFd(3, {});
  const fds = Array.from({ length: k }, () => fs.openSync('/dev/null', 'r'));
  const total = WARMUP + m;
  let last: Promise<void> = Promise.resolve();
  for (let i = 0; i < total; i++) {
    last = sock.send({ data: ONE, fds });
    // Keep a bounded window in flight: wait on every 256th send.
    if ((i & 255) === 255) await last;
  }
  await last;
  await sock.end();
  for (const fd of fds) fs.closeSync(fd);
}

async function pingpong(type: SocketType, m: number): Promise<void> {
  const [mine, theirs] = UnixSocket.pair({ type });
  const exited = child('pong', [type], theirs);
  const fd = fs.openSync('/dev/null', 'r');
  const rtt = new Float64Array(m);
  const replies = mine[Symbol.asyncIterator]();
  for (let i = 0; i < WARMUP + m; i++) {
    const t0 = process.hrtime.bigint();
    await mine.send({ data: ONE, fds: [fd] });
    const back = (await replies.next()).value as Message;
    back.close();
    if (i >= WARMUP) rtt[i - WARMUP] = Number(process.hrtime.bigint() - t0) / 1e3;
  }
  mine.close();
  fs.closeSync(fd);
  if ((await exited) !== 0) throw new Error('the pong side failed');
  rtt.sort();
  const q = (p: number) => rtt[Math.min(m - 1, Math.floor(p * m))]!;
  console.log(JSON.stringify({ mode: 'pingpong', type, count: m, p50_us: q(0.5), p90_us: q(0.9), p99_us: q(0.99) }));
}

/**
 * The floor under any Node library: the same round trip with the addon's
 * syscalls called directly from a bare uv_poll callback, no socket object,
 * no promise. What remains between this and C is the event loop's wake-up
 * path (epoll_wait, callback entry, a trailing EAGAIN read).
 */
function rawPingpong(m: number, pong: boolean): Promise<void> {
  const rfds = new Int32Array(32 * 254);
  const st = new Int32Array(2);
  const recv = native.recvScratch(Buffer.alloc(65536), new Int32Array(64 * K.RECV_META), rfds, Buffer.alloc(64 * K.RECV_ADDR), st,
    Buffer.alloc(K.RECV_CTL));
  const sbuf = Buffer.from(ONE);
  const sfds = new Int32Array(1);
  const send = native.sendScratch(sbuf, new Int32Array([1, 1, 0, 0, 0, 0]), sfds, new Int32Array(2));
  const sendFd = (s: number, fd: number) => {
    sfds[0] = fd;
    return native.sendmsgs(send, s, 1, null, null);
  };
  return new Promise((resolve) => {
    if (pong) {
      const h = native.pollOpen(3, () => {
        const n = native.recvmsgs(recv, 3, 64, 65536, rfds.length, false);
        if (n <= 0 || st[0] === K.STOP_EOF) {
          if (n === -11) return;
          native.pollClose(h as PollHandle);
          native.close(3);
          return resolve();
        }
        sendFd(3, rfds[0]!);
        native.close(rfds[0]!);
      }) as PollHandle;
      native.pollSet(h, 1);
      return;
    }
    const out = new Int32Array(2);
    native.socketpair(K.SOCK_SEQPACKET, out);
    const c = spawn(process.execPath, [__filename, 'raw-pong'], { stdio: ['ignore', 'inherit', 'inherit', out[1]!] });
    native.close(out[1]!);
    const s = out[0]!;
    const fd = fs.openSync('/dev/null', 'r');
    const rtt = new Float64Array(m);
    let i = 0;
    let t0 = process.hrtime.bigint();
    const h = native.pollOpen(s, () => {
      const n = native.recvmsgs(recv, s, 64, 65536, rfds.length, false);
      if (n <= 0) return;
      native.close(rfds[0]!);
      if (i >= WARMUP) rtt[i - WARMUP] = Number(process.hrtime.bigint() - t0) / 1e3;
      if (++i === WARMUP + m) {
        native.pollClose(h);
        native.close(s);
        fs.closeSync(fd);
        c.on('exit', () => {
          rtt.sort();
          console.log(JSON.stringify({ mode: 'pingpong-raw', type: 'seqpacket', count: m, p50_us: rtt[m >> 1], p90_us: rtt[Math.floor(m * 0.9)] }));
          resolve();
        });
        return;
      }
      t0 = process.hrtime.bigint();
      sendFd(s, fd);
    }) as PollHandle;
    native.pollSet(h, 1);
    sendFd(s, fd);
  });
}

async function pong(): Promise<void> {
  const sock = UnixSocket.fromFd(3);
  for await (const msg of sock) {
    await sock.send({ data: ONE, fds: msg.fds });
    msg.close();
  }
}

const [role, ...a] = process.argv.slice(2);
const run: Record<string, () => Promise<void>> = {
  throughput: () => throughputRecv(a[0] as SocketType, Number(a[1]), Number(a[2])),
  'throughput-send': () => throughputSend(a[0] as SocketType, Number(a[1]), Number(a[2])),
  pingpong: () => pingpong(a[0] as SocketType, Number(a[1])),
  pong: () => pong(),
  'pingpong-raw': () => rawPingpong(Number(a[0]), false),
  'raw-pong': () => rawPingpong(0, true),
};
run[role!]!().catch((err) => {
  console.error(err);
  process.exit(1);
});
