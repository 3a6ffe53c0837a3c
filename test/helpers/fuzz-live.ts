/**
 * Live fuzz cases, shared by test/integration/fuzz.test.ts and
 * scripts/fuzz.ts: a raw peer writes the hostile streams of fuzz.ts (bytes
 * and real fds, one sendmsg() per write) into a framed UnixSocket, or
 * hostile channel messages into a Channel, over a real socketpair.
 *
 * Oracle, every case: the receiver neither throws nor hangs; every error it
 * reports names what was wrong (errorKind()); after a fatal one the
 * connection is closed; and once both ends are closed this process has
 * exactly the fds it had before. A well-formed case must arrive whole: every
 * message, its payload, and its fds by identity (dev:ino).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { UnixSocket, Channel, withFds, FrameDecoder, encodeFrame, decodeChannel, type Message, type SocketOptions } from '../../src';
import { native, K } from '../../src/native';
import { Kind, encodeChannel } from '../../src/channel/codec';
import { MAX_FDS } from '../../src/socket/frame';
import { openFds, settledFdLeaks } from './fds';
import { Rng, streamCase, errorKind, isExplained, channelPayload, fdCount, type StreamLimits, type Write } from './fuzz';

export interface FdPool {
  readonly fds: number[];
  /** dev:ino of each. */
  readonly ids: string[];
  close(): void;
}

/** `n` distinct open files in `dir`, to be sent (borrowed) by the cases. */
export function openPool(dir: string, n = 4): FdPool {
  const fds: number[] = [];
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const fd = fs.openSync(path.join(dir, `pool${i}`), 'w+');
    fds.push(fd);
    ids.push(fileId(fd));
  }
  return { fds, ids, close: () => fds.forEach((fd) => fs.closeSync(fd)) };
}

function fileId(fd: number): string {
  const st = fs.fstatSync(fd, { bigint: true });
  return `${st.dev}:${st.ino}`;
}

export interface LiveResult {
  /** Error kinds the receiver reported, in order. */
  kinds: string[];
  messages: number;
  /** fds the peer attached to its writes. */
  fdsSent: number;
  mutations: string[];
  hung: boolean;
  /** fds open after the case that were not before. */
  leaked: string[];
  failure?: string;
}

function socketPair(type: 'stream' | 'seqpacket'): [number, number] {
  const out = new Int32Array(2);
  const r = native.socketpair(type === 'stream' ? K.SOCK_STREAM : K.SOCK_SEQPACKET, out);
  if (r < 0) throw new Error(`socketpair: ${r}`);
  return [out[0]!, out[1]!];
}

/** Resolves true when `p` settles in time, false when `ms` ran out. */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<boolean>((r) => (timer = setTimeout(() => r(false), ms)));
  try {
    return await Promise.race([p.then(() => true, () => true), t]);
  } finally {
    clearTimeout(timer);
  }
}

async function leakedSince(before: Map<number, string>): Promise<string[]> {
  return (await settledFdLeaks(before)).map((l) => `${l.fd} -> ${l.target}`);
}

/** Sends the writes in order (each one sendmsg()), pipelined; send errors
 * (the receiver hung up) end it. */
function sendAll(tx: UnixSocket, writes: Write[], pool: FdPool): Promise<unknown> {
  const sends: Promise<unknown>[] = [];
  for (const w of writes) {
    if (w.bytes.length === 0 && w.fds.length === 0) continue;
    try {
      sends.push(tx.send({ data: w.bytes, fds: w.fds.map((t) => pool.fds[t]!), credentials: w.creds || undefined }).catch(() => {}));
    } catch (err) {
      // An argument error is the generator's fault: fail the case, after cleanup.
      sends.push(Promise.reject(err));
    }
  }
  return Promise.all(sends);
}

// ---- a framed stream ----------------------------------------------------------------

/**
 * One case against a framed UnixSocket: random receiver limits, a random
 * kind of consumer, a hostile (or, a quarter of the time, well-formed)
 * stream from a raw peer, which then closes.
 */
export async function runSocketCase(rng: Rng, pool: FdPool, timeoutMs = 5000): Promise<LiveResult> {
  const before = openFds();
  const opts: SocketOptions = {};
  let maxPayload = 64 * 1024 * 1024;
  if (rng.chance(0.3)) opts.maxMessageSize = maxPayload = rng.pick([64, 1024, 65536]);
  if (rng.chance(0.1)) opts.maxHeldFds = rng.pick([1, 8, 64]);
  if (rng.chance(0.15)) opts.maxFdsPerMessage = rng.pick([0, 1, 3, 16]);
  if (rng.chance(0.15)) opts.maxUnreadFds = rng.pick([253, 300, 600]);
  if (rng.chance(0.1)) opts.passCredentials = true;
  if (rng.chance(0.1)) opts.highWaterMark = rng.pick([1, 4]);
  const consumer = rng.pick(['iterator', 'receive', 'events', 'slow'] as const);
  const limits: StreamLimits = {
    maxPayload, maxFds: Math.min(opts.maxFdsPerMessage ?? MAX_FDS, opts.maxHeldFds ?? MAX_FDS),
    emptyWrites: false, bigPayload: 20_000, pool: pool.fds.length,
  };
  const c = streamCase(rng, limits);
  const wellFormed = c.mutations.length === 0;

  const [a, b] = socketPair('stream');
  let rx: UnixSocket;
  let tx: UnixSocket;
  try {
    rx = UnixSocket.fromFd(a, opts);
  } catch (err) {
    native.close(a);
    native.close(b);
    throw err;
  }
  tx = UnixSocket.fromFd(b, { raw: true });
  const kinds: string[] = [];
  tx.on('error', (e: Error) => kinds.push(`sender:${errorKind(e)}`));
  let count = 0;
  let failure: string | undefined;
  const record = (m: Message) => {
    try {
      if (wellFormed && failure === undefined) {
        const want = c.expected[count];
        if (!want) failure = `message ${count} was never sent`;
        else if (!m.data.equals(want.payload)) failure = `message ${count}: payload differs`;
        else if (m.fdCount !== want.fds.length) failure = `message ${count}: ${m.fdCount} fds, sent ${want.fds.length}`;
        else {
          for (let k = 0; k < Math.min(8, want.fds.length); k++) {
            if (fileId(m.fds[k]!.fd) !== pool.ids[want.fds[k]!]) failure = `message ${count}: fd ${k} is not the file sent`;
          }
        }
      }
    } finally {
      m.close();
      count++;
    }
  };
  const onError = (e: unknown) => kinds.push(errorKind(e));
  const consumed = (async () => {
    if (consumer === 'events') {
      await new Promise<void>((resolve) => {
        rx.on('message', record);
        rx.on('error', onError);
        rx.on('close', () => resolve());
      });
    } else if (consumer === 'receive') {
      for (;;) {
        try {
          record(await rx.receive());
        } catch (e) {
          if ((e as { code?: string }).code === 'FDPASS_ERR_SOCKET_CLOSED') break;
          onError(e);
        }
      }
    } else {
      for (let again = true; again;) {
        again = false;
        try {
          for await (const m of rx) {
            record(m);
            if (consumer === 'slow' && count % 3 === 0) await new Promise((r) => setImmediate(r));
          }
        } catch (e) {
          onError(e);
          again = !rx.closed;
        }
      }
    }
  })();
  let sendFailure: string | undefined;
  const sent = sendAll(tx, c.writes, pool).catch((e: Error) => (sendFailure = `could not send: ${e.message}`)).then(() => tx.close());
  const finished = await within(Promise.all([consumed, sent]), timeoutMs);
  rx.close();
  tx.close();
  await new Promise((r) => setImmediate(r));
  const leaked = await leakedSince(before);

  const fdsSent = c.writes.reduce((a, w) => a + w.fds.length, 0);
  const result: LiveResult = { kinds, messages: count, fdsSent, mutations: c.mutations, hung: !finished, leaked };
  const bad = kinds.find((k) => !isExplained(k));
  if (!finished) result.failure = `hung (consumer ${consumer})`;
  else if (sendFailure) result.failure = sendFailure;
  else if (leaked.length) result.failure = `leaked ${leaked.length} fd(s): ${leaked.slice(0, 4).join(', ')}`;
  else if (bad) result.failure = `error that says nothing: ${bad}`;
  else if (wellFormed) {
    // A consumer that falls behind may be cut off by a flood cap; nothing else may go wrong.
    const allowed = consumer === 'slow' && opts.maxUnreadFds !== undefined ? ['fd-flood'] : [];
    const wrong = kinds.filter((k) => !allowed.includes(k));
    if (failure) result.failure = failure;
    else if (wrong.length) result.failure = `well-formed stream: ${wrong.join(', ')}`;
    else if (kinds.length === 0 && count !== c.expected.length) result.failure = `${count} of ${c.expected.length} messages`;
  }
  if (result.failure) result.failure += ` [consumer ${consumer}, options ${JSON.stringify(opts)}]`;
  return result;
}

// ---- a channel ------------------------------------------------------------------------

const BARRIER = 0xfffffff0;

/** Handlers of the fuzzed channel; `maxFds` as declared (253 when not). */
const HANDLER_FDS: Record<string, number> = { echo: MAX_FDS, take: MAX_FDS, nofds: 0, two: 2, throw: MAX_FDS, open: MAX_FDS, sink: MAX_FDS };

/**
 * One case against a Channel (over SEQPACKET or a framed stream): the
 * channel has requests of its own outstanding; a raw peer sends hostile
 * channel messages with fds (and, on a stream, now and then hostile
 * framing), then a well-formed request as a barrier, and closes once that is
 * answered or the channel hung up.
 */
export async function runChannelCase(rng: Rng, pool: FdPool, timeoutMs = 5000): Promise<LiveResult> {
  const before = openFds();
  const type = rng.pick(['seqpacket', 'stream'] as const);
  const opts: SocketOptions = {};
  if (rng.chance(0.05)) opts.maxFdsPerMessage = rng.pick([0, 3]);
  const [a, b] = socketPair(type);
  const rxSock = UnixSocket.fromFd(a, opts);
  const peer = UnixSocket.fromFd(b, { raw: type === 'stream' });
  const ch = new Channel(rxSock, { timeout: 30_000 });
  const kinds: string[] = [];
  ch.on('error', (e: Error) => kinds.push(errorKind(e)));
  ch.handle('echo', (p: unknown) => p);
  ch.handle('take', (_p, msg) => {
    const n = msg.fds.length;
    for (const f of msg.fds) f.close();
    return n;
  });
  ch.handle('nofds', () => 'ok', { maxFds: 0 });
  ch.handle('two', (_p, msg) => msg.fds.length, { maxFds: 2 });
  ch.handle('throw', () => {
    throw Object.assign(new Error('thrown on purpose'), { code: 'EFUZZ' });
  });
  ch.handle('open', () => withFds({ ok: true }, [pool.fds[0]!]));
  ch.handle('sink', () => undefined);
  const listens = rng.chance(0.5);
  if (listens) ch.on('message', () => {});
  const closed = new Promise<void>((r) => ch.once('close', () => r()));

  // Requests of ours that hostile replies may answer.
  const ids: number[] = [];
  const asked: Promise<unknown>[] = [];
  for (let i = rng.int(4); i > 0; i--) {
    ids.push(ids.length + 1);
    asked.push(ch.request('ask', { i }).then((r) => {
      r.message.close();
    }, (e: Error) => {
      const k = errorKind(e);
      if (k !== 'closed' && k !== 'remote') kinds.push(`request:${k}`);
    }));
  }

  // The peer: hostile messages, then the barrier.
  const maxFds = opts.maxFdsPerMessage ?? MAX_FDS;
  const msgs = Array.from({ length: rng.range(1, 12) }, () => {
    const p = channelPayload(rng, ids, 0.12); // most cases get a few messages in before one is damaged
    return { ...p, nfds: fdCount(rng, rng.chance(0.9) ? 4 : MAX_FDS) };
  });
  const echoes = new Map<number, string>();
  let alive = true; // everything well-formed and within limits: the channel must stay up
  for (const m of msgs) {
    if (m.mutation !== '' || m.nfds > maxFds) alive = false;
    else if ((m.kind === Kind.Request || m.kind === Kind.Post) && m.nfds > (HANDLER_FDS[m.type] ?? MAX_FDS)) alive = false;
    if (m.mutation === '' && m.kind === Kind.Request && m.type === 'echo' && m.nfds === 0) {
      echoes.set(m.id, echoes.has(m.id) ? '<dup>' : decodeChannel(m.bytes).body === undefined ? '' : JSON.stringify(decodeChannel(m.bytes).body));
    }
  }
  let mutations = msgs.map((m) => m.mutation).filter((x) => x !== '');
  let writes: Write[] = msgs.map((m) => ({ bytes: m.bytes, fds: Array.from({ length: m.nfds }, () => rng.int(pool.fds.length)) }));
  if (type === 'stream') {
    // Frame them; now and then damage the framing too.
    writes = writes.map((w) => ({ bytes: encodeFrame(w.bytes, w.fds.length), fds: w.fds }));
    if (rng.chance(0.1)) {
      const k = rng.int(writes.length);
      const w = writes[k]!;
      const damage = rng.pick(['fds-mid-frame', 'bad-magic', 'fd-count']);
      mutations = [...mutations, `frame:${damage}`];
      alive = false;
      if (damage === 'bad-magic') writes[k] = { bytes: Buffer.concat([Buffer.from([0x00]), w.bytes.subarray(1)]), fds: w.fds };
      else if (damage === 'fd-count') writes[k] = { bytes: w.bytes, fds: w.fds.length < MAX_FDS ? [...w.fds, rng.int(pool.fds.length)] : w.fds.slice(1) };
      else writes.splice(k, 1, { bytes: w.bytes.subarray(0, 4), fds: [] }, { bytes: w.bytes.subarray(4), fds: w.fds.length ? w.fds : [0] });
    }
  }
  const barrierMsg = encodeChannel(Kind.Request, BARRIER, 'echo', { barrier: true });
  writes.push({ bytes: type === 'stream' ? encodeFrame(barrierMsg, 0) : barrierMsg, fds: [] });

  // The peer reads what the channel sends (replies, our requests) and closes their fds.
  const replies = new Map<number, string>();
  let sawBarrier!: () => void;
  const barrierDone = new Promise<void>((r) => (sawBarrier = r));
  const dec = type === 'stream' ? new FrameDecoder() : null;
  const closeAll = (fds: ArrayLike<number>) => {
    for (let i = 0; i < fds.length; i++) native.close(fds[i]!);
  };
  const onPayload = (payload: Buffer) => {
    try {
      const f = decodeChannel(payload);
      if (f.kind === Kind.Reply) replies.set(f.id, f.body === undefined ? '' : JSON.stringify(f.body));
      if (f.kind === Kind.Reply && f.id === BARRIER) sawBarrier();
    } catch {
      // not ours to judge
    }
  };
  peer.on('message', (m: Message) => {
    const fds = m.fds.map((f) => f.release());
    if (!dec) {
      closeAll(fds);
      onPayload(m.data);
      return;
    }
    for (const f of dec.push(m.data, fds)) {
      closeAll(f.fds);
      onPayload(f.payload);
    }
    if (dec.error) closeAll(dec.takeHeldFds());
  });
  peer.on('error', () => {});
  peer.on('close', () => sawBarrier());
  if (rng.chance(0.5)) peer.setPassCredentials(true);

  let sendFailure: string | undefined;
  const run = (async () => {
    if (type === 'seqpacket') {
      // Packets may be empty: the kernel keeps each as one message.
      for (const w of writes) {
        try {
          await peer.send({ data: w.bytes, fds: w.fds.map((t) => pool.fds[t]!) }).catch(() => {});
        } catch (e) {
          sendFailure = `could not send: ${(e as Error).message}`;
        }
      }
    } else {
      await sendAll(peer, writes, pool).catch((e: Error) => (sendFailure = `could not send: ${e.message}`));
    }
    await barrierDone;
    peer.close();
    await closed;
    await Promise.all(asked);
  })();
  const finished = await within(run, timeoutMs);
  ch.close();
  peer.close();
  if (dec) closeAll(dec.takeHeldFds());
  await new Promise((r) => setImmediate(r));
  const leaked = await leakedSince(before);

  const fdsSent = writes.reduce((a, w) => a + w.fds.length, 0);
  const result: LiveResult = { kinds, messages: msgs.length, fdsSent, mutations, hung: !finished, leaked };
  const bad = kinds.find((k) => !isExplained(k));
  if (!finished) result.failure = 'hung';
  else if (sendFailure) result.failure = sendFailure;
  else if (leaked.length) result.failure = `leaked ${leaked.length} fd(s): ${leaked.slice(0, 4).join(', ')}`;
  else if (bad) result.failure = `error that says nothing: ${bad}`;
  else if (alive) {
    const fatal = kinds.filter((k) => k !== 'no-handler' && k !== 'handler-threw');
    if (fatal.length) result.failure = `well-formed messages, yet: ${fatal.join(', ')}`;
    else if (!replies.has(BARRIER)) result.failure = 'the channel hung up on well-formed messages';
    else {
      for (const [id, body] of echoes) {
        if (body !== '<dup>' && replies.get(id) !== body) result.failure = `echo ${id}: sent ${body}, got ${replies.get(id)}`;
      }
    }
  }
  if (result.failure) result.failure += ` [${type}, listener ${listens}, options ${JSON.stringify(opts)}]`;
  return result;
}
