/**
 * Lone reads (src/socket/receiver.ts): a socket that answers between its
 * receives reads one message per wake-up instead of draining to EAGAIN, so a
 * round trip costs one recvmsg() per receive, not two; a burst that comes
 * while it does still arrives whole and in order, and a socket that only
 * receives keeps draining in batches.
 *
 * The syscalls are counted by strace (`-c -e trace=recvmsg`) around a child
 * that is this file again with a role argument: it runs the round trips over
 * a socketpair inside one process and prints what it received.
 */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { UnixSocket, type Message, type SocketType } from '../../src';
import { childEnv } from '../helpers/process';

const ROLE = '--lone-reads-child';
const TRIPS = 400;
const BURST = 50;

/** TRIPS round trips of 1 byte + 1 fd, then a burst of BURST messages. */
async function child(type: SocketType, mode: 'answer' | 'drain'): Promise<void> {
  const [a, b] = UnixSocket.pair({ type });
  const fd = fs.openSync('/dev/null', 'r');
  const received: number[] = [];
  if (mode === 'answer') {
    const pong = (async () => {
      for await (const msg of b) {
        const n = msg.data.readUInt32LE(0);
        msg.close();
        if (n === 0xffffffff) break;
        await b.send({ data: msg.data, fds: [fd] });
      }
    })();
    const replies = a[Symbol.asyncIterator]();
    for (let i = 0; i < TRIPS; i++) {
      await a.send({ data: u32(i), fds: [fd] });
      const back = (await replies.next()).value as Message;
      received.push(back.data.readUInt32LE(0));
      back.close();
    }
    await a.send(u32(0xffffffff));
    await pong;
  } else {
    // b only receives, one message at a time as a slow peer sends them.
    const got = (async () => {
      for await (const msg of b) {
        received.push(msg.data.readUInt32LE(0));
        msg.close();
        if (received.length === TRIPS) break;
      }
    })();
    for (let i = 0; i < TRIPS; i++) {
      await a.send({ data: u32(i), fds: [fd] });
      await new Promise((res) => setImmediate(res));
    }
    await got;
  }
  // A burst into the side that answered: every message, in order.
  const burst: number[] = [];
  await Promise.all(Array.from({ length: BURST }, (_, i) => b.send({ data: u32(i), fds: [fd] })));
  for await (const msg of a) {
    burst.push(msg.data.readUInt32LE(0));
    msg.close();
    if (burst.length === BURST) break;
  }
  a.close();
  b.close();
  fs.closeSync(fd);
  console.log(JSON.stringify({ received, burst }));
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
}

if (process.argv[2] === ROLE) {
  child(process.argv[3] as SocketType, process.argv[4] as 'answer' | 'drain').catch((err) => {
    console.error(err);
    process.exit(1);
  });
} else {
  const probe = spawnSync('strace', ['-qq', '-o', '/dev/null', 'true'], { encoding: 'utf8' });
  const skip = probe.error ? 'strace is not installed (Debian: apt-get install strace)'
    : probe.status !== 0 ? `strace cannot trace here (${probe.stderr.trim().split('\n')[0]})` : false;

  /** Runs the child under strace: what it printed, and its recvmsg() calls. */
  const run = (type: SocketType, mode: string): { received: number[]; burst: number[]; recvmsg: number } => {
    const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'fdpass-lone-')), 'strace.txt');
    try {
      const r = spawnSync('strace', ['-f', '-c', '-e', 'trace=recvmsg', '-o', out, process.execPath, __filename, ROLE, type, mode],
        { encoding: 'utf8', env: childEnv(), timeout: 60_000 });
      assert.equal(r.status, 0, `child: ${r.stderr}`);
      const row = fs.readFileSync(out, 'utf8').split('\n').find((l) => /\srecvmsg$/.test(l));
      assert.ok(row, 'strace counted recvmsg calls');
      // % time, seconds, usecs/call, calls, [errors,] syscall
      const calls = Number(row.trim().split(/\s+/)[3]);
      return { ...(JSON.parse(r.stdout) as { received: number[]; burst: number[] }), recvmsg: calls };
    } finally {
      fs.rmSync(path.dirname(out), { recursive: true, force: true });
    }
  };
  const inOrder = (n: number) => Array.from({ length: n }, (_, i) => i);

  for (const type of ['seqpacket', 'stream'] as const) {
    test(`${type}: round trips read one message per recvmsg(), and a burst after them arrives whole and in order`, { skip }, () => {
      const r = run(type, 'answer');
      assert.deepEqual(r.received, inOrder(TRIPS));
      assert.deepEqual(r.burst, inOrder(BURST));
      // 2 * TRIPS receives (both ends answer). Draining to EAGAIN would make
      // it about twice that; lone reads drain once in every 9.
      assert.ok(r.recvmsg < 2 * TRIPS * 1.3, `${r.recvmsg} recvmsg() calls for ${2 * TRIPS} receives`);
    });
  }

  test('seqpacket: a socket that only receives keeps draining to EAGAIN', { skip }, () => {
    const r = run('seqpacket', 'drain');
    assert.deepEqual(r.received, inOrder(TRIPS));
    assert.deepEqual(r.burst, inOrder(BURST));
    // One message per wake-up here, each read followed by the empty one.
    assert.ok(r.recvmsg >= TRIPS * 1.8, `${r.recvmsg} recvmsg() calls for ${TRIPS} receives`);
  });
}
