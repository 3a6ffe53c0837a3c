/**
 * Privilege separation of `fdpass serve`: the primary keeps the privileges
 * it needs to bind, spawn and respawn (often root: ports below 1024); its
 * workers, which parse TLS and run the APP, run as another user (nginx's
 * `user`, HAProxy's `user`/`group`).
 *
 * Two halves of one mechanism:
 * - in the primary, resolveWorkerIdentity() turns `--user USER[:GROUP]`
 *   (names or numbers) into ids, through NSS, before anything is started:
 *   an unknown user or group, or a switch that a non-root primary cannot
 *   make, is a ServeConfigError and nothing runs. A root primary given no
 *   user runs its workers as `nobody`; `root` keeps root, explicitly;
 * - in the worker, dropPrivileges() is the first thing that runs (the
 *   preload drop-privileges.ts, before the worker script, the APP or any
 *   file the primary did not hand over): initgroups, setgid, setuid (as
 *   root, setuid sets the real, effective and saved uid: there is no way
 *   back, which it checks), then no_new_privs, so that nothing the worker
 *   executes (a setuid binary, file capabilities) grants privileges again.
 *
 * What the workers still reach is the primary's business: they hold no
 * listener (every listener is close-on-exec), get certificates as bytes
 * over their channel, cannot signal the primary (another uid) and are
 * refused by the control socket (uid allow-list, control.ts).
 */
import { native } from '../native';
import { check, ServeConfigError } from '../errors';

/** Who a worker runs as; what the primary tells it (WorkerConfig.identity). */
export interface WorkerIdentity {
  /** The user's name, for initgroups(); none for a uid without a passwd
   * entry (its only group is then `gid`). */
  user?: string;
  uid: number;
  gid: number;
  /** Whether the worker switches ids (the primary is root); otherwise it
   * keeps the primary's, and only no_new_privs is set. */
  switch: boolean;
}

/** What resolveWorkerIdentity() decided, and why (for the log). */
export interface ResolvedIdentity {
  identity: WorkerIdentity;
  /** No user was given: a root primary's workers run as `nobody`. */
  defaulted: boolean;
}

/** The user a root primary's workers run as when none is given (nginx's default). */
export const DEFAULT_WORKER_USER = 'nobody';

const IDS = new Int32Array(2);
const NAME = Buffer.alloc(256);
const NUMERIC = /^\d{1,10}$/;
/** What NSS could ever know: no NUL, no ':' (the USER:GROUP separator), not too long. */
const PLAUSIBLE = /^[^\0:]{1,255}$/;

/**
 * The identity the workers take, from a user and group (names or numeric
 * ids; `undefined` for none). Throws ServeConfigError (NO_SUCH_USER,
 * NO_SUCH_GROUP, CANNOT_SWITCH_USER) or a RangeError for a group without a
 * user.
 */
export function resolveWorkerIdentity(user: string | undefined, group: string | undefined): ResolvedIdentity {
  const euid = process.geteuid!();
  const egid = process.getegid!();
  if (user === undefined) {
    if (group !== undefined) throw new RangeError(`a group (${group}) needs a user: USER:GROUP`);
    if (euid !== 0) return { identity: { uid: euid, gid: egid, switch: false }, defaulted: false };
    try {
      return { identity: { ...lookUpUser(DEFAULT_WORKER_USER, undefined), switch: true }, defaulted: true };
    } catch (err) {
      throw new ServeConfigError('FDPASS_ERR_NO_SUCH_USER',
        `the workers of a root primary run as ${DEFAULT_WORKER_USER} unless told otherwise, and there is no such user: give --user`, { cause: err });
    }
  }
  const wanted = lookUpUser(user, group);
  if (euid === 0) return { identity: { ...wanted, switch: true }, defaulted: false };
  // Not root: only the ids this process already has can be "taken".
  if (wanted.uid === euid && wanted.gid === egid) return { identity: { ...wanted, switch: false }, defaulted: false };
  throw new ServeConfigError('FDPASS_ERR_CANNOT_SWITCH_USER',
    `user ${describe(user, group)}: only root can run workers as another user (this is uid ${euid})`);
}

function lookUpUser(user: string, group: string | undefined): Omit<WorkerIdentity, 'switch'> {
  let found: { user?: string; uid: number; gid: number } | null = null;
  if (NUMERIC.test(user)) {
    const uid = Number(user);
    const n = uid <= 0x7fffffff ? native.getpwuid(uid, IDS, NAME) : -1;
    if (n >= 0) found = { user: NAME.toString('utf8', 0, n), uid, gid: IDS[1]! };
    // A uid that no passwd entry names will do with an explicit group.
    else if (group !== undefined && uid <= 0x7fffffff) found = { uid, gid: -1 };
  } else if (PLAUSIBLE.test(user) && native.getpwnam(user, IDS) === 0) {
    found = { user, uid: IDS[0]!, gid: IDS[1]! };
  }
  if (!found) throw new ServeConfigError('FDPASS_ERR_NO_SUCH_USER', `user ${describe(user, group)}: no such user`);
  if (group !== undefined) found.gid = lookUpGroup(user, group);
  return found;
}

function lookUpGroup(user: string, group: string): number {
  if (NUMERIC.test(group) && Number(group) <= 0x7fffffff) return Number(group);
  if (PLAUSIBLE.test(group) && native.getgrnam(group, IDS) === 0) return IDS[0]!;
  throw new ServeConfigError('FDPASS_ERR_NO_SUCH_GROUP', `user ${describe(user, group)}: no such group '${group}'`);
}

function describe(user: string, group: string | undefined): string {
  return group === undefined ? user : `${user}:${group}`;
}

/**
 * In a worker, before anything else: switches to `id` (supplementary
 * groups, gid, uid, in that order: each later step needs the privilege the
 * earlier ones still had), then sets no_new_privs. Throws if any step fails
 * or root could be regained; the caller then exits without serving.
 *
 * no_new_privs is per thread: set here, on the main thread, it covers
 * everything the worker spawns (spawn forks from the main thread).
 */
export function dropPrivileges(id: WorkerIdentity): void {
  if (id.switch) {
    if (id.user !== undefined) (process as WithInitgroups).initgroups(id.user, id.gid);
    else process.setgroups!([id.gid]);
    process.setgid!(id.gid);
    process.setuid!(id.uid);
    if (id.uid !== 0) mustNotRegainRoot();
  }
  check(native.noNewPrivs(), 'prctl');
  const now = [process.getuid!(), process.geteuid!(), process.getgid!(), process.getegid!()];
  const want = id.switch ? [id.uid, id.uid, id.gid, id.gid] : now;
  if (now.some((v, i) => v !== want[i])) throw new Error(`ids are ${now.join('/')} after the switch, not ${want.join('/')}`);
}

/** Node has process.initgroups() (POSIX, main thread); @types/node lacks it. */
type WithInitgroups = NodeJS.Process & { initgroups(user: string | number, extraGroup: string | number): void };

/** OpenSSH's check after a drop: setuid(0) must fail now. */
function mustNotRegainRoot(): void {
  let regained = false;
  try {
    process.setuid!(0);
    regained = true;
  } catch {
    // EPERM: as it should be
  }
  if (regained) throw new Error('setuid(0) still works after the switch');
}

/** "nobody (uid 65534, gid 65534)": how log lines name an identity. */
export function identityLabel(id: WorkerIdentity): string {
  return `${id.user ?? `uid ${id.uid}`} (uid ${id.uid}, gid ${id.gid})`;
}
