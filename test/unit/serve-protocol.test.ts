/**
 * The messages between the primary and the workers of `fdpass serve`
 * (src/serve/protocol.ts): every one survives a round trip, and malformed
 * ones are refused with a ProtocolError (reason 'bad-worker-message')
 * whose message says what is wrong.
 */
import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  decodePrimaryMessage, decodeWorkerMessage, encodeAck, encodeConns, encodeJson, encodeLoad, encodeLost, encodeShutdown,
  encodeStatusQuery, encodeTls, Op,
} from '../../src/serve/protocol';
import { ProtocolError } from '../../src/errors';

/** A ProtocolError for a worker-protocol message whose message matches `what`. */
const refused = (what: RegExp) => (e: unknown) =>
  e instanceof ProtocolError && e.reason === 'bad-worker-message' && e.code === 'FDPASS_ERR_PROTOCOL' && what.test(e.message);

test('primary -> worker: CONNS, SHUTDOWN and STATUS? round-trip', () => {
  const conns = decodePrimaryMessage(encodeConns([7, 0xffffffff], [0, 3], 2), 2);
  assert.deepEqual(conns, { op: Op.Conns, ids: Uint32Array.from([7, 0xffffffff]), listeners: Uint16Array.from([0, 3]) });
  assert.deepEqual(decodePrimaryMessage(encodeShutdown(1500), 0), { op: Op.Shutdown, timeout: 1500, hold: false });
  assert.deepEqual(decodePrimaryMessage(encodeShutdown(1500, true), 0), { op: Op.Shutdown, timeout: 1500, hold: true });
  // The release is the SHUTDOWN of before HOLD, byte for byte.
  assert.deepEqual([...encodeShutdown(1500)], [2, 0, 0, 0, 0xdc, 0x05, 0, 0]);
  assert.deepEqual(decodePrimaryMessage(encodeStatusQuery(), 0), { op: Op.StatusQuery });
  assert.throws(() => decodePrimaryMessage(encodeConns([1, 2], [0, 0], 2), 1), refused(/CONNS of 2 came with 1 fds/));
  assert.throws(() => decodePrimaryMessage(Buffer.from([Op.Conns, 0, 1, 0]), 1), refused(/CONNS of 1 in 4 bytes/));
});

test('primary -> worker: TLS carries the certificate and key bytes; a truncated one is refused', () => {
  const cert = Buffer.from('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
  const key = Buffer.from('-----BEGIN PRIVATE KEY-----\nBBBB\n-----END PRIVATE KEY-----\n');
  const msg = encodeTls(cert, key);
  assert.deepEqual(decodePrimaryMessage(msg, 0), { op: Op.Tls, cert, key });
  assert.deepEqual(decodePrimaryMessage(encodeTls(Buffer.alloc(0), key), 0), { op: Op.Tls, cert: Buffer.alloc(0), key });
  assert.throws(() => decodePrimaryMessage(msg.subarray(0, 8 + cert.length - 1), 0), refused(/TLS with a \d+-byte certificate in \d+ bytes/));
  assert.throws(() => decodePrimaryMessage(msg.subarray(0, 5), 0), refused(/TLS of 5 bytes/));
});

test('worker -> primary: READY, ACK, LOAD, FAILED and LOST round-trip; malformed ones are refused', () => {
  assert.deepEqual(decodeWorkerMessage(encodeJson(Op.Ready, { pid: 42 })), { op: Op.Ready, pid: 42 });
  assert.deepEqual(decodeWorkerMessage(encodeAck([1, 2, 3], 3, 9, 0xffffffff)), { op: Op.Ack, live: 9, closed: 0xffffffff, ids: Uint32Array.from([1, 2, 3]) });
  assert.deepEqual(decodeWorkerMessage(encodeLoad(5, 77, 4)), { op: Op.Load, live: 5, requests: 77, closed: 4 });
  // The worker's closed count wraps at 2^32 as the primary's arithmetic expects.
  assert.deepEqual(decodeWorkerMessage(encodeLoad(0, 0, 2 ** 32 + 3)), { op: Op.Load, live: 0, requests: 0, closed: 3 });
  assert.throws(() => decodeWorkerMessage(encodeAck([1], 1, 0, 0).subarray(0, 12)), refused(/ACK of 1 ids in 12 bytes/));
  assert.throws(() => decodeWorkerMessage(encodeLoad(0, 0, 0).subarray(0, 12)), refused(/LOAD of 12 bytes/));
  assert.deepEqual(decodeWorkerMessage(encodeJson(Op.Failed, { message: 'no' })), { op: Op.Failed, message: 'no' });
  assert.deepEqual(decodeWorkerMessage(encodeLost(0xffffffff)), { op: Op.Lost, batch: 0xffffffff });
  assert.throws(() => decodeWorkerMessage(encodeLost(1).subarray(0, 6)), refused(/LOST of 6 bytes/));
  assert.throws(() => decodeWorkerMessage(Buffer.from([99])), refused(/unknown worker message op 99/));
  assert.throws(() => decodeWorkerMessage(Buffer.alloc(0)), refused(/^protocol error: bad message from a worker: empty message$/));
  assert.throws(() => decodeWorkerMessage(Buffer.from([Op.Ready, 0x7b])), refused(/bad JSON body/));
  assert.throws(() => decodeWorkerMessage(encodeJson(Op.Ready, 5)), refused(/bad JSON body: not an object/));
  assert.throws(() => decodeWorkerMessage(encodeJson(Op.Ready, {})), refused(/READY without a pid/));
});
