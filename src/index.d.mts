/// <reference types="node" />
// Types of fdpass's ES module entry (index.mjs): the same declarations as
// the CommonJS entry's, whose exports it re-exports by name.
export * from './index.js';
import * as fdpass from './index.js';
export default fdpass;
