/**
 * The certificate and key of `fdpass serve`'s tls listeners: read by the
 * primary (which may be the only process allowed to: a key file of mode
 * 0600 owned by root), checked once, and handed to each worker as bytes
 * over its channel (the TLS message of protocol.ts) right after it is
 * spawned, before any connection. Workers never open the files, so they
 * can run as a user that cannot read them.
 *
 * Bytes rather than fds: every worker of a generation gets the same
 * validated snapshot (a file being rewritten in place cannot give one
 * worker half of it), and nothing stays open. The environment is no place
 * for a key (/proc/PID/environ, and the APP's children inherit it).
 *
 * Each generation has its own snapshot: start() reads the files for the
 * first, reload() re-reads them for the next (a reload whose files are
 * unreadable or invalid fails, and the serving generation keeps its own);
 * respawns get their generation's.
 */
import * as fs from 'node:fs';
import * as tls from 'node:tls';
import { asSystemError, ServeConfigError } from '../errors';
import { encodeTls } from './protocol';

export interface TlsCredentials {
  cert: Buffer;
  key: Buffer;
}

/** More than any real chain and key; well within one SEQPACKET message. */
const MAX_BYTES = 128 * 1024;

/**
 * Reads and checks a certificate and key: "read PATH: ENOENT" (a
 * Node-style system error), or FDPASS_ERR_BAD_CERT with TLS's reason.
 */
export function readTlsCredentials(certFile: string, keyFile: string): TlsCredentials {
  let cert: Buffer;
  let key: Buffer;
  try {
    cert = fs.readFileSync(certFile);
    key = fs.readFileSync(keyFile);
  } catch (err) {
    throw asSystemError(err, 'read', (err as NodeJS.ErrnoException).path ?? certFile);
  }
  if (cert.length + key.length > MAX_BYTES) {
    throw new ServeConfigError('FDPASS_ERR_BAD_CERT', `--cert ${certFile} --key ${keyFile}: more than ${MAX_BYTES} bytes together`);
  }
  try {
    tls.createSecureContext({ cert, key });
  } catch (err) {
    throw new ServeConfigError('FDPASS_ERR_BAD_CERT', `--cert ${certFile} --key ${keyFile}: invalid (${(err as Error).message})`, { cause: err });
  }
  return { cert, key };
}

/** The TLS message each generation's workers get, by generation. */
export class GenerationCredentials {
  readonly #files: { cert: string; key: string } | undefined;
  readonly #messages = new Map<number, Buffer>();

  /** No files: no tls listener, nothing to hand over. */
  constructor(certFile?: string, keyFile?: string) {
    this.#files = certFile && keyFile ? { cert: certFile, key: keyFile } : undefined;
  }

  /** Reads the files for `generation` (throws as readTlsCredentials). */
  load(generation: number): void {
    if (!this.#files) return;
    const { cert, key } = readTlsCredentials(this.#files.cert, this.#files.key);
    this.#messages.set(generation, encodeTls(cert, key));
  }

  /** What a worker of `generation` is sent after its spawn (none without files). */
  message(generation: number): Buffer | undefined {
    return this.#messages.get(generation);
  }

  /** Only `generation` spawns workers from now on: the others' bytes go. */
  keepOnly(generation: number): void {
    for (const g of this.#messages.keys()) if (g !== generation) this.#messages.delete(g);
  }
}
