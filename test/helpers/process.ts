/**
 * Child processes of a test, a benchmark or a long run: started (optionally
 * through prlimit, setpriv or another exec-ing prefix), their stdout and
 * stderr collected and split into lines, waited for with a deadline,
 * signalled, and killed when their owner (a test's scope) cleans up.
 *
 * Child is the mechanism; NodeChild (spawnNode) adds the JSON-lines report
 * protocol of the fixture scripts, runCli() runs the fdpass command to
 * completion, and ServeProcess (serve.ts) adds the log of `fdpass serve`.
 */
import * as assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import * as path from 'node:path';
import { CLI, FIXTURES } from './paths';
import { inReadableCopy, readableNode } from './readable-copy';
import { onCleanup, type Deferrer } from './scope';
import { waitFor } from './wait';

export interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** ms from spawn to exit. */
  ms: number;
}

export interface ChildOptions {
  /** Run through this command first (e.g. systemd-socket-activate ...); it must exec. */
  prefix?: readonly string[];
  /** Run as this uid/gid (via setpriv, supplementary groups cleared). As
   * another uid than ours, Node.js and the repository's files come from the
   * world-readable copy (readable-copy.ts): see asOtherUid(). */
  uid?: number;
  gid?: number;
  /** RLIMIT_NOFILE (soft and hard), via prlimit. */
  nofile?: number;
  /** Default: childEnv(). */
  env?: NodeJS.ProcessEnv;
  /** 'pipe' to write to it (default 'ignore'). */
  stdin?: 'pipe' | 'ignore';
  /** Extra fds, which the child sees as 3, 4, ... (the parent keeps its own). */
  fds?: readonly number[];
  /** SIGKILL after this many ms (default, or Infinity: never). */
  timeout?: number;
  /** Kills the child (if still running) and waits for it when this owner cleans up. */
  owner?: Deferrer;
  /** How errors name it (default: the command line). */
  label?: string;
  /** Working directory (default: this process's). */
  cwd?: string;
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

/** Whether the child runs as a uid other than ours. */
function asOtherUid(o: { uid?: number }): boolean {
  return o.uid !== undefined && o.uid !== process.getuid!();
}

/** `argv` run through prlimit, then setpriv, then `prefix`; each execs the
 * next. A Node child of another uid runs the Node.js binary it can reach. */
function wrapArgv(argv: readonly string[], o: ChildOptions): string[] {
  let out = [...argv];
  if (asOtherUid(o) && out[0] === process.execPath) out[0] = readableNode();
  if (o.nofile !== undefined) out = ['prlimit', `--nofile=${o.nofile}:${o.nofile}`, '--', ...out];
  if (o.uid !== undefined || o.gid !== undefined) {
    const uid = o.uid ?? process.getuid!();
    out = ['setpriv', `--reuid=${uid}`, `--regid=${o.gid ?? uid}`, '--clear-groups', '--', ...out];
  }
  return [...(o.prefix ?? []), ...out];
}

/** A running child, its output collected; killed when its owner cleans up. */
export class Child {
  readonly process: ChildProcess;
  /**
   * Emits 'line' (line, 'stdout' | 'stderr') for each whole line, 'output'
   * after each chunk, and 'exit' (ChildResult) once the child has exited and
   * its stdio pipes are closed (its own children's copies too), so that the
   * caller holds no fd of it any more.
   */
  readonly emitter = new EventEmitter();
  readonly pid: number;
  readonly label: string;
  readonly exited: Promise<ChildResult>;
  #out = { stdout: '', stderr: '' };
  #partial = { stdout: '', stderr: '' };
  #result: ChildResult | null = null;
  readonly #started = Date.now();

  constructor(argv: readonly string[], o: ChildOptions = {}) {
    const full = wrapArgv(argv, o);
    this.label = o.label ?? argv.join(' ');
    this.process = spawn(full[0]!, full.slice(1), { stdio: [o.stdin ?? 'ignore', 'pipe', 'pipe', ...(o.fds ?? [])], env: o.env ?? childEnv(), cwd: o.cwd });
    this.pid = this.process.pid!;
    this.process.on('error', (err) => this.#append('stderr', `\n[${full[0]}: ${err.message}]\n`));
    this.process.stdin?.on('error', () => {}); // the child may exit without reading
    for (const stream of ['stdout', 'stderr'] as const) {
      this.process[stream]!.setEncoding('utf8').on('data', (s: string) => this.#append(stream, s));
    }
    this.emitter.setMaxListeners(100); // concurrent waits (waitFor's wakeOn), not a leak
    const timer = o.timeout === undefined || o.timeout === Infinity ? undefined : setTimeout(() => {
      this.#append('stderr', `\n[killed after ${o.timeout} ms]`);
      this.process.kill('SIGKILL');
    }, o.timeout);
    this.exited = new Promise((resolve) => {
      this.process.on('close', (code, signal) => {
        clearTimeout(timer);
        this.#result = { code, signal, stdout: this.#out.stdout, stderr: this.#out.stderr, ms: Date.now() - this.#started };
        this.emitter.emit('exit', this.#result);
        resolve(this.#result);
      });
    });
    onCleanup(o.owner, () => this.kill());
  }

  #append(stream: 'stdout' | 'stderr', s: string): void {
    this.#out[stream] += s;
    let buf = this.#partial[stream] + s;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      this.emitter.emit('line', line, stream);
    }
    this.#partial[stream] = buf;
    this.emitter.emit('output');
  }

  get stdout(): string {
    return this.#out.stdout;
  }

  get stderr(): string {
    return this.#out.stderr;
  }

  get running(): boolean {
    return this.#result === null;
  }

  /** The result once exited, else null. */
  get result(): ChildResult | null {
    return this.#result;
  }

  signal(sig: NodeJS.Signals): void {
    this.process.kill(sig);
  }

  /** Sends `sig` (default SIGKILL) unless already exited, and waits until gone. */
  async kill(sig: NodeJS.Signals = 'SIGKILL'): Promise<ChildResult> {
    if (!this.#result) this.process.kill(sig);
    return this.exited;
  }

  /** Resolves with the result once exited; fails after `timeout` (the child keeps running). */
  waitExit(timeout = 15_000, what = `exit of ${this.label}`): Promise<ChildResult> {
    return waitFor(() => this.#result, { timeout, what, wakeOn: [this.emitter, 'exit'], detail: () => `stderr:\n${this.stderr}` });
  }

  /** SIGTERM, then waitExit(timeout). */
  async stop(timeout = 15_000): Promise<ChildResult> {
    if (this.#result) return this.#result;
    this.signal('SIGTERM');
    return this.waitExit(timeout, `exit of ${this.label} after SIGTERM`);
  }

  /** Resolves once the child's `stream` output (all of it so far) matches `re`; fails if it exits first. */
  async waitOutput(re: RegExp, o: { stream?: 'stdout' | 'stderr'; timeout?: number } = {}): Promise<void> {
    const stream = o.stream ?? 'stderr';
    await waitFor(() => {
      if (re.test(this.#out[stream])) return true;
      if (this.#result) throw new Error(`${this.label} exited (code ${this.#result.code}, signal ${this.#result.signal}) before its ${stream} matched ${re}\n${stream}:\n${this.#out[stream]}`);
      return false;
    }, { timeout: o.timeout ?? 10_000, what: `${stream} of ${this.label} matching ${re}`, wakeOn: [this.emitter, 'output'], detail: () => `${stream}:\n${this.#out[stream]}` });
  }
}

// ---- Node children speaking JSON lines -------------------------------------------------

export type SpawnNodeOptions = Omit<ChildOptions, 'stdin' | 'label' | 'prefix'>;

/**
 * A Node child speaking JSON lines: each JSON line it writes to stdout is
 * one report, taken in order with next(); send() writes a JSON line to its
 * stdin.
 */
export class NodeChild extends Child {
  #reports: unknown[] = [];
  #wanted: { resolve: (v: unknown) => void; reject: (e: Error) => void }[] = [];

  constructor(file: string, args: readonly string[], o: SpawnNodeOptions) {
    super([process.execPath, file, ...args], { ...o, stdin: 'pipe', label: `child ${path.basename(file)} ${args.join(' ')}` });
    this.emitter.on('line', (raw: string, stream: string) => {
      const line = raw.trim();
      if (stream !== 'stdout' || (!line.startsWith('{') && !line.startsWith('['))) return;
      let v: unknown;
      try {
        v = JSON.parse(line);
      } catch {
        return;
      }
      const w = this.#wanted.shift();
      if (w) w.resolve(v);
      else this.#reports.push(v);
    });
    this.emitter.on('exit', () => {
      for (const w of this.#wanted.splice(0)) w.reject(this.#died());
    });
  }

  #died(): Error {
    const r = this.result!;
    return new Error(`${this.label} exited (code ${r.code}, signal ${r.signal}) before reporting\n` +
      `stderr:\n${r.stderr}\nstdout:\n${r.stdout}`);
  }

  /** The next JSON line from the child's stdout; fails after `timeout` ms
   * without one (the child keeps running). */
  next<T = Record<string, unknown>>(timeout = 15_000): Promise<T> {
    if (this.#reports.length > 0) return Promise.resolve(this.#reports.shift() as T);
    if (this.result) return Promise.reject(this.#died());
    return new Promise<unknown>((resolve, reject) => {
      const w = {
        resolve: (v: unknown) => { clearTimeout(timer); resolve(v); },
        reject: (e: Error) => { clearTimeout(timer); reject(e); },
      };
      const timer = setTimeout(() => {
        this.#wanted.splice(this.#wanted.indexOf(w), 1);
        reject(new Error(`no report from ${this.label} within ${timeout} ms\nstderr:\n${this.stderr}\nstdout:\n${this.stdout}`));
      }, timeout);
      this.#wanted.push(w);
    }) as Promise<T>;
  }

  /** Writes one JSON line to the child's stdin. */
  send(value: unknown): void {
    this.process.stdin!.write(JSON.stringify(value) + '\n');
  }

  /** Waits for the child to exit and asserts it exited with code 0. */
  async done(): Promise<ChildResult> {
    const r = await this.exited;
    assert.equal(r.code, 0, `${this.label} failed (code ${r.code}, signal ${r.signal})\nstderr:\n${r.stderr}`);
    return r;
  }
}

/**
 * Runs `script` (a path, or a name in test/fixtures) with Node, with stdin,
 * stdout and stderr piped and `options.fds` as fds 3, 4, ... Optionally as
 * another user (setpriv) and with a low RLIMIT_NOFILE (prlimit); both exec,
 * so the child's pid is the Node process's pid. Killed after
 * `options.timeout` (default 20 s).
 */
export function spawnNode(script: string, args: readonly string[] = [], options: SpawnNodeOptions = {}): NodeChild {
  let file = path.isAbsolute(script) ? script : path.join(FIXTURES, script);
  if (asOtherUid(options)) file = inReadableCopy(file);
  return new NodeChild(file, args, { ...options, timeout: options.timeout ?? 20_000 });
}

/** Runs the fdpass CLI (any command) to completion, in this process's environment; SIGKILL after `timeout` (default 10 s). */
export function runCli(args: readonly string[], options: { uid?: number; gid?: number; timeout?: number } = {}): Promise<ChildResult> {
  const cli = asOtherUid(options) ? inReadableCopy(CLI) : CLI;
  return new Child([process.execPath, cli, ...args], { ...options, timeout: options.timeout ?? 10_000, env: process.env, label: `fdpass ${args.join(' ')}` }).exited;
}
