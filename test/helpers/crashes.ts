/**
 * Worker crashes under load: kill -9 of random workers of `fdpass serve`,
 * and the failed requests explained with the journal of
 * test/fixtures/apps/journal.js (one line per connection a worker took,
 * written before it acknowledged the connection to the primary).
 */
import * as fs from 'node:fs';
import type { Attempt } from './http';
import type { ServeProcess } from './serve';
import { sleep } from './wait';

export interface Kill {
  pid: number;
  slot: number;
  time: number;
}

/**
 * kill -9 of a random ready worker every `everyMs`, `kills` times. When no
 * worker is ready (all replacements still starting, on a slow machine) the
 * kill waits for one, up to 10 s. Returns what it killed.
 */
export async function killWorkers(s: ServeProcess, kills: number, everyMs: number, random: () => number = Math.random): Promise<Kill[]> {
  const out: Kill[] = [];
  while (out.length < kills) {
    const next = Date.now() + everyMs;
    const st = await s.waitStatus((x) => x.workers.some((w) => w.state === 'ready'), 10_000, 'a ready worker to kill');
    const ready = st.workers.filter((w) => w.state === 'ready' && w.pid !== undefined);
    const w = ready[Math.floor(random() * ready.length)]!;
    try {
      process.kill(w.pid!, 'SIGKILL');
      out.push({ pid: w.pid!, slot: w.slot, time: Date.now() });
    } catch {
      continue; // exited meanwhile
    }
    await sleep(Math.max(0, next - Date.now()));
  }
  return out;
}

/** A line of the journal of test/fixtures/apps/journal.js. */
export interface JournalEntry {
  pid: number;
  port: number;
  time: number;
}

export function readJournal(file: string): JournalEntry[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  const out: JournalEntry[] = [];
  for (const line of text.split('\n')) {
    const [pid, port, time] = line.split(' ').map(Number);
    if (pid && port && time) out.push({ pid, port, time });
  }
  return out;
}

/**
 * Splits failed attempts: `inside` ones had been taken by a worker that was
 * then killed (the journal has that worker, the client's port, and a time
 * within the attempt): the request died with the process, as in any server.
 * Everything else is `lost`: a connection that failed although no killed
 * worker had taken it.
 */
export function explainFailures(failures: Attempt[], journal: JournalEntry[], killed: ReadonlySet<number>): { inside: Attempt[]; lost: Attempt[] } {
  const byPort = new Map<number, JournalEntry[]>();
  for (const e of journal) {
    let list = byPort.get(e.port);
    if (!list) byPort.set(e.port, (list = []));
    list.push(e);
  }
  const inside: Attempt[] = [];
  const lost: Attempt[] = [];
  for (const f of failures) {
    const hit = f.connected && f.localPort !== undefined &&
      (byPort.get(f.localPort) ?? []).some((e) => killed.has(e.pid) && e.time >= f.start - 1 && e.time <= f.end + 1);
    (hit ? inside : lost).push(f);
  }
  return { inside, lost };
}
