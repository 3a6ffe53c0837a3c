/**
 * The serve benchmark's paced mixed load: an open-loop HTTP client that
 * sends requests at a fixed offered rate, a new connection each, whatever
 * the server does meanwhile, and times each response from the moment the
 * request was due (its intended send time), not from when it went out. A
 * closed-loop client at saturation (wrk) measures CPU queueing, and one
 * that waits for a stalled connection before sending the next request
 * leaves the stall out of its figures (coordinated omission); this one
 * keeps sending on schedule, so a worker stuck in a slow request shows in
 * the latency of every request that was routed to it meanwhile.
 *
 * Which requests are slow (/spin: 10 ms of CPU in the worker,
 * bench/hello-app.js) is drawn from a seeded generator: the same rate and
 * seed give every server the same sequence.
 *
 * Timing: the schedule is exact (request i is due at i / rate); the client
 * wakes on Node timers (about 1 ms granularity: no busy polling that would
 * take a CPU from the servers on a small machine), so every latency includes
 * the client's own lag behind the schedule. That lag is the same for every
 * server and is reported alongside (`lagP99us`).
 *
 * Run as a child of bench/serve.ts:
 *   node dist/bench/paced.js PORT RATE SECONDS [SEED [SPIN_PER_MILLE]]   (prints one JSON line)
 */
import * as net from 'node:net';
import { performance } from 'node:perf_hooks';

/** Of every 1000 requests, how many spin by default (bench/mixed.lua's 0.5%). */
const SPIN_PER_MILLE = 5;
const REQ = Buffer.from('GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n');
const SPIN = Buffer.from('GET /spin HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n');
/** What the handler answers: a response is complete when this ends the bytes read. */
const BODY_END = 'hello\n';
/** A request not answered this long after it was due counts as an error. */
const TIMEOUT_MS = 5000;

export interface PacedResult {
  rate: number;
  seconds: number;
  requests: number;
  spins: number;
  errors: number;
  p50us: number;
  p99us: number;
  p999us: number;
  maxUs: number;
  /** The client's lag behind the schedule (send - due), 99th percentile. */
  lagP99us: number;
  /** Requests answered 5 ms or more after they were due: the slow ones
   * themselves and those that waited behind one (any other cause aside). */
  over5ms: number;
}

/** A small seeded generator (mulberry32): the same seed, the same sequence. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function pct(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

export function paced(port: number, rate: number, seconds: number, seed = 1, spinPerMille = SPIN_PER_MILLE): Promise<PacedResult> {
  const total = Math.max(1, Math.round(rate * seconds));
  const interval = 1000 / rate;
  const random = prng(seed);
  const latencies = new Float64Array(total);
  const lags = new Float64Array(total);
  let done = 0;
  let ok = 0;
  let errors = 0;
  let spins = 0;
  let next = 0;
  return new Promise((resolve) => {
    const start = performance.now();
    const finish = () => {
      if (++done < total) return;
      const lat = latencies.slice(0, ok).sort();
      const lag = lags.slice().sort();
      const slow = lat.findIndex((v) => v >= 5);
      resolve({
        rate, seconds, requests: ok, spins, errors,
        p50us: pct(lat, 50) * 1000, p99us: pct(lat, 99) * 1000, p999us: pct(lat, 99.9) * 1000,
        maxUs: (lat[lat.length - 1] ?? NaN) * 1000, lagP99us: pct(lag, 99) * 1000,
        over5ms: slow < 0 ? 0 : lat.length - slow,
      });
    };
    const fire = (i: number, due: number, now: number) => {
      const spin = random() * 1000 < spinPerMille;
      if (spin) spins++;
      lags[i] = now - due;
      let got = '';
      let settled = false;
      const settle = (good: boolean) => {
        if (settled) return;
        settled = true;
        if (good) latencies[ok++] = performance.now() - start - due;
        else errors++;
        finish();
      };
      const s = net.connect({ port, host: '127.0.0.1' }, () => s.write(spin ? SPIN : REQ));
      s.setNoDelay(true);
      s.setTimeout(TIMEOUT_MS, () => s.destroy());
      s.setEncoding('latin1');
      s.on('data', (d: string) => {
        got += d;
        if (got.endsWith(BODY_END)) {
          settle(got.startsWith('HTTP/1.1 200'));
          s.destroy();
        }
      });
      s.on('error', () => settle(false));
      s.on('close', () => settle(false));
    };
    const tick = () => {
      const now = performance.now() - start;
      while (next < total && next * interval <= now) {
        fire(next, next * interval, now);
        next++;
      }
      if (next < total) setTimeout(tick, Math.max(1, next * interval - now));
    };
    tick();
  });
}

if (require.main === module) {
  const [port, rate, seconds, seed, spins] = process.argv.slice(2).map(Number) as [number, number, number, number | undefined, number | undefined];
  paced(port, rate, seconds, seed ?? 1, spins ?? SPIN_PER_MILLE).then((r) => console.log(JSON.stringify(r)), (err) => {
    console.error(err);
    process.exit(1);
  });
}
