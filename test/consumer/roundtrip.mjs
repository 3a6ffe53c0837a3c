// roundtrip-core's fd round trip with fdpass loaded by import (the
// package's ES module entry).
import { fileURLToPath } from 'node:url';
import * as fdpass from 'fdpass';
import core from './roundtrip-core.cjs';

await core.roundTrip(fdpass, 'esm', fileURLToPath(import.meta.url));
