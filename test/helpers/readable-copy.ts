/**
 * What a child running as another uid (nobody, 65534) needs, where that
 * uid can read it. The repository may be cloned anywhere: in a 0700
 * directory (mktemp -d, root's home) nobody can load a file of it, nor run
 * a Node.js binary kept inside it (.cache/node-N of .ci/run). So such
 * children run from a world-readable copy, made once per test process in
 * the temporary directory and removed when the process exits:
 *
 *   <root>/package.json, bin/, dist/, test/fixtures/, certs/,
 *   build/Release/*.node and prebuilds/ (the addon),
 *   node_modules/node-gyp-build (the addon's loader),
 *   node/bin/node (only if process.execPath is out of others' reach).
 *
 * Paths inside the copy mirror the repository's, so a fixture's
 * `require(path.join(__dirname, '../../dist/src'))` finds the copy's.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ROOT } from './paths';

/** What is copied, relative to the repository (a missing one is skipped). */
const PARTS = ['package.json', 'bin', 'dist', 'test/fixtures', 'certs', 'prebuilds', 'node_modules/node-gyp-build'];

let root: string | undefined;
let node: string | undefined;

/** The root of the world-readable copy (made on first use). */
export function readableCopy(): string {
  if (root !== undefined) return root;
  const parent = [os.tmpdir(), '/tmp', '/var/tmp'].find((d) => fs.existsSync(d) && othersCanSearch(d));
  if (!parent) throw new Error(`no world-searchable temporary directory (tried ${os.tmpdir()}, /tmp, /var/tmp)`);
  const dir = fs.mkdtempSync(path.join(parent, 'fdpass-readable-'));
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  for (const part of PARTS) {
    const from = path.join(ROOT, part);
    if (fs.existsSync(from)) fs.cpSync(from, path.join(dir, part), { recursive: true });
  }
  const release = path.join(ROOT, 'build', 'Release');
  for (const f of fs.existsSync(release) ? fs.readdirSync(release) : []) {
    if (!f.endsWith('.node')) continue;
    fs.mkdirSync(path.join(dir, 'build', 'Release'), { recursive: true });
    fs.copyFileSync(path.join(release, f), path.join(dir, 'build', 'Release', f));
  }
  openUp(dir);
  root = dir;
  return dir;
}

/** `file`, a path in the repository, as it is in the copy; other paths as they are. */
export function inReadableCopy(file: string): string {
  const rel = path.relative(ROOT, file);
  return rel.startsWith('..') || path.isAbsolute(rel) ? file : path.join(readableCopy(), rel);
}

/** A Node.js binary that any uid can run: process.execPath if every
 * directory above it lets others search it, else a copy in readableCopy(). */
export function readableNode(): string {
  if (node !== undefined) return node;
  if (othersCanReach(process.execPath)) {
    node = process.execPath;
  } else {
    const copy = path.join(readableCopy(), 'node', 'bin', 'node');
    fs.mkdirSync(path.dirname(copy), { recursive: true, mode: 0o755 });
    try {
      fs.linkSync(process.execPath, copy);
    } catch {
      fs.copyFileSync(process.execPath, copy);
    }
    fs.chmodSync(copy, 0o755);
    node = copy;
  }
  return node;
}

/** Whether a uid other than the owner can run `file`: o+x on the file and
 * on every directory above it. */
function othersCanReach(file: string): boolean {
  return (fs.statSync(file).mode & 0o001) !== 0 && othersCanSearch(path.dirname(file));
}

/** Whether others can enter `dir` and every directory above it. */
function othersCanSearch(dir: string): boolean {
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    if ((fs.statSync(d).mode & 0o001) === 0) return false;
    if (d === path.dirname(d)) return true;
  }
}

/** Directories 0755, files readable by all (executables stay executable). */
function openUp(p: string): void {
  const st = fs.lstatSync(p);
  if (st.isSymbolicLink()) return;
  if (st.isDirectory()) {
    fs.chmodSync(p, 0o755);
    for (const e of fs.readdirSync(p)) openUp(path.join(p, e));
  } else {
    fs.chmodSync(p, (st.mode & 0o111) !== 0 ? 0o755 : 0o644);
  }
}
