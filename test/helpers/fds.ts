/**
 * Shared test helpers: fd accounting, temp dirs and child processes.
 *
 * Fd accounting compares /proc/<pid>/fd before and after a test. A test
 * "leaks" when an fd number appears that was not there before, or an fd
 * number now names a different file. Two kinds of fds are not the test's:
 *
 * - the directory fd that readdir(/proc/<pid>/fd) itself holds, which is gone
 *   by the time its link is read (or points at /proc/<pid>/fd);
 * - fds the Node runtime opens lazily and keeps for the life of the process:
 *   the first child_process.spawn() leaves a /dev/null fd open for good
 *   (measured on Node 20: one fd, whatever the stdio options); libuv's
 *   io_uring, where enabled, appears on first fs use. warmUp() triggers these
 *   once before the first snapshot and records them, so that a later first
 *   use cannot be mistaken for a leak either. Nothing else is ignored.
 *
 * This module does not import node:test, so that fixture scripts (plain
 * child processes) can use openFds() too.
 */
import * as assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** Where the (uncompiled) fixture scripts live, seen from dist/test/helpers. */
export const FIXTURES = path.resolve(__dirname, '..', '..', '..', 'test', 'fixtures');

// ---- fds ------------------------------------------------------------------

/** Open fds of a process: fd number -> readlink target ('socket:[123]', a path...). */
export function openFds(pid: number | 'self' = 'self'): Map<number, string> {
  const dir = `/proc/${pid}/fd`;
  const out = new Map<number, string>();
  for (const name of fs.readdirSync(dir)) {
    let target: string;
    try {
      target = fs.readlinkSync(`${dir}/${name}`);
    } catch {
      continue; // closed in between: readdir's own fd
    }
    if (/^\/proc\/(\d+|self)\/fd$/.test(target)) continue;
    out.set(Number(name), target);
  }
  return out;
}

/** fd -> target opened by the runtime during warmUp(). */
const runtimeFds = new Map<number, string>();
let warmedUp: Promise<void> | null = null;

/**
 * Makes the runtime open what it opens lazily (a spawned child with ignored
 * and piped stdio, sync spawn, fs promises, timers), once per process.
 */
export function warmUp(): Promise<void> {
  warmedUp ??= (async () => {
    const before = openFds();
    spawnSync(process.execPath, ['-e', '0'], { stdio: 'ignore' });
    await new Promise<void>((resolve) => {
      const c = spawn(process.execPath, ['-e', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
      c.on('close', () => resolve());
    });
    await fs.promises.readFile(__filename);
    await new Promise((r) => setTimeout(r, 1));
    for (const [fd, target] of openFds()) {
      if (before.get(fd) !== target) runtimeFds.set(fd, target);
    }
  })();
  return warmedUp;
}

export interface FdLeak {
  fd: number;
  target: string;
  was?: string;
}

/** fds in `after` that were not in `before` (or now name something else). */
export function findFdLeaks(before: Map<number, string>, after: Map<number, string>): FdLeak[] {
  const leaks: FdLeak[] = [];
  for (const [fd, target] of after) {
    const was = before.get(fd);
    if (was === target) continue;
    if (runtimeFds.get(fd) === target) continue;
    leaks.push(was === undefined ? { fd, target } : { fd, target, was });
  }
  return leaks;
}

/** Throws an AssertionError naming every leaked fd. */
export function assertNoFdLeak(before: Map<number, string>, after: Map<number, string>, what = 'this process'): void {
  const leaks = findFdLeaks(before, after);
  if (leaks.length === 0) return;
  const list = leaks.slice(0, 20).map((l) => `  fd ${l.fd} -> ${l.target}${l.was ? ` (was ${l.was})` : ''}`).join('\n');
  assert.fail(`${what} leaked ${leaks.length} fd(s):\n${list}${leaks.length > 20 ? '\n  ...' : ''}`);
}

/**
 * Like assertNoFdLeak on a fresh snapshot, but gives fds that are closed
 * asynchronously (a child's stdio pipes, a stream's handle) up to `graceMs`.
 */
export async function expectNoFdLeak(before: Map<number, string>, graceMs = 1000): Promise<void> {
  const deadline = Date.now() + graceMs;
  for (;;) {
    await new Promise((r) => setImmediate(r));
    const after = openFds();
    if (findFdLeaks(before, after).length === 0 || Date.now() >= deadline) {
      assertNoFdLeak(before, after);
      return;
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

// ---- per-test scope ---------------------------------------------------------

/** Something that runs cleanups: a Scope, or a node:test TestContext. */
export interface Deferrer {
  defer?(fn: () => unknown): void;
  after?(fn: () => unknown): void;
}

type Cleanup = () => unknown;

/**
 * Per-test fd tracking with its own cleanup stack. Created at the start of a
 * test: snapshots /proc/self/fd; when the test ends (t.after), runs the
 * deferred cleanups last-in first-out, then asserts that no fd was added.
 * (node:test runs t.after hooks first-in first-out, so a test that deferred
 * cleanups with t.after itself would be checked before them: use
 * scope.defer().)
 */
export class Scope {
  #cleanups: Cleanup[] = [];
  #before: Map<number, string>;

  constructor(before: Map<number, string>) {
    this.#before = before;
  }

  /** Runs `fn` at the end of the test, before the leak check (LIFO). */
  defer(fn: Cleanup): void {
    this.#cleanups.push(fn);
  }

  /** Runs the cleanups now (LIFO); errors are collected and rethrown. */
  async cleanup(): Promise<void> {
    const errors: unknown[] = [];
    while (this.#cleanups.length > 0) {
      const fn = this.#cleanups.pop()!;
      try {
        await fn();
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, 'several cleanups failed');
  }

  /** Runs the cleanups, then asserts that the test left no fd open. */
  async finish(): Promise<void> {
    await this.cleanup();
    await expectNoFdLeak(this.#before);
  }

  /** The snapshot taken when the scope was created. */
  get before(): Map<number, string> {
    return this.#before;
  }
}

/**
 * `const scope = await trackFds(t)` at the start of a test: warms the runtime
 * up (first call only), snapshots /proc/self/fd, and registers a t.after
 * that runs the scope's cleanups and then fails the test if an fd leaked.
 */
export async function trackFds(t: { after(fn: () => unknown): void }): Promise<Scope> {
  await warmUp();
  const scope = new Scope(openFds());
  t.after(() => scope.finish());
  return scope;
}

function register(owner: Deferrer | undefined, fn: Cleanup): void {
  if (!owner) return;
  if (owner.defer) owner.defer(fn);
  else if (owner.after) owner.after(fn);
}

// ---- temp dirs ----------------------------------------------------------------

/**
 * A fresh directory under os.tmpdir() (mode 0700), removed with everything
 * in it when `owner` cleans up, or when the process exits if there is no
 * owner. `mode` loosens it for tests whose children run as another user.
 */
export function tmpDir(owner?: Deferrer, mode?: number): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fdpass-test-'));
  if (mode !== undefined) fs.chmodSync(dir, mode);
  const remove = () => fs.rmSync(dir, { recursive: true, force: true });
  if (owner) register(owner, remove);
  else process.once('exit', remove);
  return dir;
}

/** A unique abstract socket name ('\0...'). */
export function abstractName(tag = 'test'): string {
  return `\0fdpass-${tag}-${process.pid}-${Math.random().toString(36).slice(2)}`;
}

// ---- child processes --------------------------------------------------------------

export interface SpawnNodeOptions {
  /** Extra fds, which the child sees as 3, 4, ... (the parent keeps its own). */
  fds?: readonly number[];
  /** Run the child as this uid/gid (via setpriv, supplementary groups cleared). */
  uid?: number;
  gid?: number;
  /** RLIMIT_NOFILE (soft and hard) of the child (via prlimit). */
  nofile?: number;
  env?: NodeJS.ProcessEnv;
  /** Kill the child after this many ms (default 20 s). */
  timeout?: number;
  /** Kill the child (if still running) and wait for it when this owner cleans up. */
  owner?: Deferrer;
}

export interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * A child process speaking JSON lines: each line the child writes to stdout
 * is one report, taken in order with next(); send() writes a JSON line to
 * its stdin.
 */
export class NodeChild {
  readonly process: ChildProcess;
  readonly pid: number;
  readonly exited: Promise<ChildResult>;
  #reports: unknown[] = [];
  #wanted: { resolve: (v: unknown) => void; reject: (e: Error) => void }[] = [];
  #stdout = '';
  #stderr = '';
  #buf = '';
  #result: ChildResult | null = null;
  #label: string;

  constructor(proc: ChildProcess, label: string, timeout: number) {
    this.process = proc;
    this.pid = proc.pid!;
    this.#label = label;
    const timer = setTimeout(() => {
      this.#stderr += `\n[killed by spawnNode after ${timeout} ms]`;
      proc.kill('SIGKILL');
    }, timeout);
    proc.stdout!.setEncoding('utf8');
    proc.stderr!.setEncoding('utf8');
    proc.stdout!.on('data', (s: string) => {
      this.#stdout += s;
      this.#buf += s;
      let nl: number;
      while ((nl = this.#buf.indexOf('\n')) >= 0) {
        const line = this.#buf.slice(0, nl).trim();
        this.#buf = this.#buf.slice(nl + 1);
        if (!line.startsWith('{') && !line.startsWith('[')) continue;
        let v: unknown;
        try {
          v = JSON.parse(line);
        } catch {
          continue;
        }
        const w = this.#wanted.shift();
        if (w) w.resolve(v);
        else this.#reports.push(v);
      }
    });
    proc.stderr!.on('data', (s: string) => {
      this.#stderr += s;
    });
    proc.stdin?.on('error', () => {}); // the child may exit without reading
    this.exited = new Promise((resolve) => {
      proc.on('close', (code, signal) => {
        clearTimeout(timer);
        this.#result = { code, signal, stdout: this.#stdout, stderr: this.#stderr };
        for (const w of this.#wanted.splice(0)) w.reject(this.#died());
        resolve(this.#result);
      });
    });
  }

  #died(): Error {
    const r = this.#result!;
    return new Error(`${this.#label} exited (code ${r.code}, signal ${r.signal}) before reporting\n` +
      `stderr:\n${r.stderr}\nstdout:\n${r.stdout}`);
  }

  /** The next JSON line from the child's stdout. */
  next<T = Record<string, unknown>>(): Promise<T> {
    if (this.#reports.length > 0) return Promise.resolve(this.#reports.shift() as T);
    if (this.#result) return Promise.reject(this.#died());
    return new Promise<unknown>((resolve, reject) => this.#wanted.push({ resolve, reject })) as Promise<T>;
  }

  /** Writes one JSON line to the child's stdin. */
  send(value: unknown): void {
    this.process.stdin!.write(JSON.stringify(value) + '\n');
  }

  /** Waits for the child to exit and asserts it exited with code 0. */
  async done(): Promise<ChildResult> {
    const r = await this.exited;
    assert.equal(r.code, 0, `${this.#label} failed (code ${r.code}, signal ${r.signal})\nstderr:\n${r.stderr}`);
    return r;
  }

  /** Kills the child if it is still running and waits until it is gone. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<ChildResult> {
    if (!this.#result) this.process.kill(signal);
    return this.exited;
  }
}

/**
 * Runs `script` (a path, or a name in test/fixtures) with Node, with stdin,
 * stdout and stderr piped and `options.fds` as fds 3, 4, ... Optionally as
 * another user (setpriv) and with a low RLIMIT_NOFILE (prlimit); both exec,
 * so the child's pid is the Node process's pid.
 */
export function spawnNode(script: string, args: readonly string[] = [], options: SpawnNodeOptions = {}): NodeChild {
  const file = path.isAbsolute(script) ? script : path.join(FIXTURES, script);
  let argv = [process.execPath, file, ...args];
  if (options.nofile !== undefined) argv = ['prlimit', `--nofile=${options.nofile}:${options.nofile}`, '--', ...argv];
  if (options.uid !== undefined || options.gid !== undefined) {
    const uid = options.uid ?? process.getuid!();
    const gid = options.gid ?? uid;
    argv = ['setpriv', `--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', '--', ...argv];
  }
  const proc = spawn(argv[0]!, argv.slice(1), {
    stdio: ['pipe', 'pipe', 'pipe', ...(options.fds ?? [])],
    env: options.env ?? childEnv(),
  });
  const child = new NodeChild(proc, `child ${path.basename(file)} ${args.join(' ')}`, options.timeout ?? 20_000);
  register(options.owner, () => child.kill());
  return child;
}

// ---- files ----------------------------------------------------------------------

/** "dev:ino" of an open fd or a path: what identifies an open file's inode. */
export function fileId(fdOrPath: number | string): string {
  const st = typeof fdOrPath === 'number' ? fs.fstatSync(fdOrPath, { bigint: true }) : fs.statSync(fdOrPath, { bigint: true });
  return `${st.dev}:${st.ino}`;
}

export interface FileSet {
  readonly paths: string[];
  readonly fds: number[];
  /** fileId() of each, in order. */
  readonly ids: string[];
  /** Closes every fd of the set (once). */
  close(): void;
}

/**
 * Creates and opens `count` distinct files in `dir` (read-write). Their fds
 * are closed by close() or when `owner` cleans up, whichever comes first;
 * never close one of them by hand (its number could be reused by then).
 */
export function openFiles(dir: string, count: number, owner?: Deferrer, tag = 'f'): FileSet {
  const paths: string[] = [];
  const fds: number[] = [];
  for (let i = 0; i < count; i++) {
    const p = path.join(dir, `${tag}${i}`);
    paths.push(p);
    fds.push(fs.openSync(p, 'w+'));
  }
  let open = true;
  const close = () => {
    if (!open) return;
    open = false;
    for (const fd of fds) fs.closeSync(fd);
  };
  register(owner, close);
  return { paths, fds, ids: fds.map((fd) => fileId(fd)), close };
}

/**
 * The environment for Node children whose fds a test counts. Node (22 and
 * later) reads NODE_EXTRA_CA_CERTS in the background at start-up, so the CA
 * file shows up in the child's fd table for a moment: a race in any count,
 * and no test here needs extra CAs.
 */
export function childEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra };
  delete env.NODE_EXTRA_CA_CERTS;
  return env;
}
