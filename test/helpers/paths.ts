/**
 * Where things are, seen from the compiled helpers (dist/test/helpers): the
 * repository, the fixtures (used uncompiled), the CLI and the development
 * certificate.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export const ROOT = path.resolve(__dirname, '..', '..', '..');
/** The fixture scripts and apps, as they are in the source tree. */
export const FIXTURES = path.join(ROOT, 'test', 'fixtures');
/** Fixture apps for `fdpass serve`. */
export const APPS = path.join(FIXTURES, 'apps');
/** The fdpass command (bin/fdpass.js). */
export const CLI = path.join(ROOT, 'bin', 'fdpass.js');
export const DEV_CERT = path.join(ROOT, 'certs', 'dev-localhost.crt');
export const DEV_KEY = path.join(ROOT, 'certs', 'dev-localhost.key');
/** The dev certificate, as the CA that clients trust (its SANs: localhost, 127.0.0.1, ::1). */
export const DEV_CA = fs.readFileSync(DEV_CERT);
