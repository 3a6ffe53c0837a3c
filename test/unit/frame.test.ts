// The stream frame decoder, alone: no sockets, fds are plain numbers.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { FrameDecoder, encodeFrame, HEADER_SIZE, FLAG_CREDENTIALS } from '../../src/socket/frame';

const frame = (s: string, nfds = 0, flags = 0) => encodeFrame(Buffer.from(s), nfds, flags);

test('one read, one frame, its fds', () => {
  const d = new FrameDecoder();
  const [f, ...rest] = d.push(frame('hello', 2), [7, 8]);
  assert.equal(rest.length, 0);
  assert.equal(f!.payload.toString(), 'hello');
  assert.deepEqual([...f!.fds], [7, 8]);
  assert.equal(d.error, undefined);
});

test('several frames in one read: the fd batch goes to the last frame that starts in it', () => {
  const d = new FrameDecoder();
  const bytes = Buffer.concat([frame('a'), frame('b'), frame('c', 1)]);
  const fs = d.push(bytes, [42]);
  assert.deepEqual(fs.map((f) => [f.payload.toString(), [...f.fds]]), [['a', []], ['b', []], ['c', [42]]]);
});

test('a frame split across reads at every byte boundary', () => {
  const whole = Buffer.concat([frame('first', 1), frame('second-frame-payload', 0), frame('x', 3)]);
  const secondStart = HEADER_SIZE + 5 + HEADER_SIZE + 20;
  for (let cut = 1; cut < whole.length; cut++) {
    const d = new FrameDecoder();
    // fds of frame 1 come with byte 0, of frame 3 with its first byte.
    const parts: [Buffer, number[]][] = [];
    const points = [...new Set([0, cut, secondStart, whole.length])].sort((a, b) => a - b);
    for (let i = 0; i + 1 < points.length; i++) {
      const a = points[i]!;
      const b = points[i + 1]!;
      const fds: number[] = [];
      if (a === 0) fds.push(10);
      if (a === secondStart) fds.push(20, 21, 22);
      parts.push([whole.subarray(a, b), fds]);
    }
    const out = parts.flatMap(([bytes, fds]) => d.push(bytes, fds));
    assert.equal(d.error, undefined, `cut ${cut}: ${d.error}`);
    assert.deepEqual(out.map((f) => [...f.fds]), [[10], [], [20, 21, 22]], `cut ${cut}`);
    assert.equal(out[1]!.payload.toString(), 'second-frame-payload');
  }
});

test('credentials flag and the credentials of the read holding the first byte', () => {
  const d = new FrameDecoder();
  const creds = { pid: 1, uid: 2, gid: 3 };
  const [f] = d.push(frame('c', 0, FLAG_CREDENTIALS), [], false, creds);
  assert.equal(f!.flags & FLAG_CREDENTIALS, FLAG_CREDENTIALS);
  assert.deepEqual(f!.credentials, creds);
});

test('protocol violations are reported, and every fd is handed back', async (t) => {
  const cases: [string, () => FrameDecoder, RegExp][] = [
    ['bad magic', () => { const d = new FrameDecoder(); d.push(Buffer.from('GET / HTTP/1.1\r\n'), [5]); return d; }, /bad magic/],
    ['unknown flags', () => { const d = new FrameDecoder(); d.push(frame('x', 0, 0x80)); return d; }, /unknown flags/],
    ['too many fds claimed', () => { const d = new FrameDecoder(); const f = frame('x'); f.writeUInt16LE(254, 2); d.push(f); return d; }, /claims 254 fds/],
    ['oversized payload', () => { const d = new FrameDecoder({ maxPayload: 4 }); d.push(frame('hello')); return d; }, /5-byte payload/],
    ['claims fds that did not come', () => { const d = new FrameDecoder(); d.push(frame('x', 2)); return d; }, /none came with its first byte/],
    ['count mismatch', () => { const d = new FrameDecoder(); d.push(frame('x', 2), [5]); return d; }, /claims 2 fds but 1 came/],
    ['fds attached to a payload byte', () => {
      const d = new FrameDecoder();
      const f = frame('0123456789');
      d.push(f.subarray(0, 12));
      d.push(f.subarray(12), [9, 10]);
      return d;
    }, /arrived with bytes inside the frame/],
    ['too many held fds', () => {
      const d = new FrameDecoder({ maxHeldFds: 3 });
      const f = frame('0123456789', 2);
      d.push(f.subarray(0, 9), [1, 2]);
      d.push(f.subarray(9, 10), [3, 4]);
      return d;
    }, /not yet claimed/],
  ];
  for (const [name, make, re] of cases) {
    await t.test(name, () => {
      const d = make();
      assert.match(d.error ?? '', re);
      // A dead decoder takes nothing more on: the fds it is given are the caller's.
      assert.deepEqual(d.push(frame('y', 1), [99]), []);
      assert.ok(d.takeHeldFds().includes(99));
    });
  }
});

test('fixed-seed fuzz sample: random reads of random frames, plus corruptions', () => {
  let seed = 0x5eed;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  let nextFd = 1000;
  for (let round = 0; round < 2000; round++) {
    const frames: { payload: Buffer; fds: number[] }[] = [];
    const n = 1 + rnd(6);
    for (let i = 0; i < n; i++) {
      const payload = Buffer.alloc(rnd(40), rnd(256));
      frames.push({ payload, fds: Array.from({ length: rnd(4) }, () => nextFd++) });
    }
    // Serialise; each frame's first byte starts a new "read" when it has fds
    // (as Linux does), other reads are cut at random.
    const stream = Buffer.concat(frames.map((f) => encodeFrame(f.payload, f.fds.length)));
    const starts: number[] = [];
    let off = 0;
    for (const f of frames) {
      starts.push(off);
      off += HEADER_SIZE + f.payload.length;
    }
    const corrupt = rnd(4) === 0 ? rnd(stream.length) : -1;
    if (corrupt >= 0) stream[corrupt] = stream[corrupt]! ^ (1 + rnd(255));
    const cuts = new Set<number>([0, stream.length]);
    frames.forEach((f, i) => { if (f.fds.length) cuts.add(starts[i]!); });
    for (let k = rnd(5); k > 0; k--) cuts.add(rnd(stream.length));
    const points = [...cuts].sort((a, b) => a - b);
    const d = new FrameDecoder({ maxPayload: 1 << 16 });
    const got: number[] = [];
    const given: number[] = [];
    for (let i = 0; i + 1 < points.length; i++) {
      const a = points[i]!;
      const idx = starts.indexOf(a);
      const fds = idx >= 0 ? frames[idx]!.fds : [];
      given.push(...fds);
      for (const f of d.push(stream.subarray(a, points[i + 1]!), fds)) got.push(...f.fds);
    }
    const held = d.takeHeldFds();
    // Every fd given ends up either in a delivered frame or handed back: none lost.
    assert.deepEqual([...got, ...held].sort((a, b) => a - b), given.sort((a, b) => a - b), `round ${round}`);
    if (corrupt < 0) {
      assert.equal(d.error, undefined, `round ${round}: ${d.error}`);
      assert.deepEqual(got, frames.flatMap((f) => f.fds));
    }
  }
});
