// roundtrip-core's fd round trip in TypeScript (strict, ES module), compiled
// with the TypeScript that fdpass pins against the installed package's
// declarations (skipLibCheck off, `types: []`: Node's types come in through
// fdpass's own reference): the message comes through a typed 'message'
// listener.
import { fileURLToPath } from 'node:url';
import * as fdpass from 'fdpass';
import type { Message, UnixSocket } from 'fdpass';
import core from './roundtrip-core.cjs';

function nextMessage(conn: UnixSocket): Promise<Message> {
  return new Promise<Message>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no message within 20 s')), 20_000);
    conn.once('message', (m: Message) => {
      clearTimeout(timer);
      resolve(m);
    });
  });
}

await core.roundTrip(fdpass, 'typescript', fileURLToPath(import.meta.url), nextMessage);
