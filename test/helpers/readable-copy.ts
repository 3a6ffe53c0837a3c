/**
 * A world-readable copy of the package, for children that run as another
 * user (the workers of `fdpass serve --user nobody`, a CLI run as uid 65534):
 * the repository may be cloned in a directory only its owner can enter
 * (root's 0700 home), where such a child could not read a line of it.
 *
 * What is copied: package.json and everything its "files" ships (bin/,
 * dist/src/, certs/, ...), the built addon (build/Release/fdpass.node) and
 * the test fixtures (test/fixtures: the fixture apps), into a fresh
 * directory under a world-searchable temporary directory; directories
 * become 0755, files readable by all (executable ones stay so). One copy
 * per test process, made on first use and removed when the process exits.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ROOT } from './paths';

let copy: string | undefined;

/** The root of the copy (its CLI: `<root>/bin/fdpass.js`). */
export function readableCopy(): string {
  if (copy) return copy;
  const parent = [os.tmpdir(), '/tmp', '/var/tmp'].find(worldSearchable);
  if (!parent) throw new Error(`no world-searchable temporary directory (tried ${os.tmpdir()}, /tmp, /var/tmp)`);
  const dir = fs.mkdtempSync(path.join(parent, 'fdpass-pkg-'));
  process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { files?: string[] };
  for (const entry of ['package.json', ...(pkg.files ?? []), 'build/Release/fdpass.node', 'test/fixtures']) {
    const from = path.join(ROOT, entry);
    if (fs.existsSync(from)) fs.cpSync(from, path.join(dir, entry), { recursive: true });
  }
  makeReadable(dir);
  copy = dir;
  return dir;
}

/** Every directory from `dir` up to / can be entered by others. */
function worldSearchable(dir: string): boolean {
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    try {
      if ((fs.statSync(d).mode & 0o001) === 0) return false;
    } catch {
      return false;
    }
    if (d === path.dirname(d)) return true;
  }
}

function makeReadable(p: string): void {
  const st = fs.lstatSync(p);
  if (st.isSymbolicLink()) return;
  if (st.isDirectory()) {
    fs.chmodSync(p, 0o755);
    for (const name of fs.readdirSync(p)) makeReadable(path.join(p, name));
  } else {
    fs.chmodSync(p, (st.mode & 0o111) !== 0 ? 0o755 : 0o644);
  }
}
