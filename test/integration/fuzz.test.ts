/**
 * Malformed input on live sockets: a fixed-seed sample of scripts/fuzz.ts
 * (`npm run fuzz` runs over a million cases). A raw peer writes hostile
 * bytes and real fds into a framed UnixSocket, and hostile channel messages
 * with fds into a Channel, over socketpairs. No case may throw, hang, leak an
 * fd, or report an error that does not say what was wrong; well-formed cases
 * must arrive whole, fds checked by identity.
 */
import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { Rng, caseSeed } from '../helpers/fuzz';
import { runSocketCase, runChannelCase, openPool } from '../helpers/fuzz-live';
import { trackFds } from '../helpers/scope';
import { tmpDir } from '../helpers/files';

const CASES = 800;

for (const layer of ['socket', 'channel'] as const) {
  test(`${layer === 'socket' ? 'framed UnixSocket' : 'Channel'}: ${CASES} hostile peers (fixed seed), nothing leaked, every error says what was wrong`, async (t) => {
    const scope = await trackFds(t);
    const pool = openPool(tmpDir(scope));
    scope.defer(() => pool.close());
    const kinds = new Map<string, number>();
    let wellFormed = 0;
    for (let i = 0; i < CASES; i++) {
      const rng = new Rng(caseSeed(layer === 'socket' ? 0xf00d : 0xc4a7, i));
      const r = layer === 'socket' ? await runSocketCase(rng, pool) : await runChannelCase(rng, pool);
      assert.equal(r.failure, undefined, `case ${i} (${r.mutations.join(', ') || 'well-formed'}): ${r.failure}`);
      if (r.mutations.length === 0) wellFormed++;
      for (const k of r.kinds.length ? new Set(r.kinds) : ['ok']) kinds.set(k, (kinds.get(k) ?? 0) + 1);
    }
    assert.ok(wellFormed > CASES / 5, `only ${wellFormed} well-formed cases`);
    const want = layer === 'socket'
      ? ['ok', 'bad-magic', 'bad-flags', 'too-large', 'fds-missing', 'fd-count-mismatch', 'stray-fds', 'eof-mid-frame', 'unexpected-fds']
      : ['ok', 'unexpected-fds', 'no-handler', ...['short', 'version', 'kind', 'type-length', 'json'].map((p) => `bad-channel-message:${p}`)];
    for (const k of want) assert.ok(kinds.has(k), `no case ended in ${k}: ${JSON.stringify(Object.fromEntries(kinds))}`);
  });
}
