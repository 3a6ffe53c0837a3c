/**
 * Output that goes away under a running server: the terminal `fdpass serve`
 * was started in hangs up (its window closed, an ssh session dropped: every
 * write then fails with EIO), or the pipe its log goes to closes (EPIPE).
 * Node emits such a failure as an 'error' event on process.stdout/stderr,
 * and with nobody listening that is an uncaught exception: the primary died
 * (SIGABRT) in the middle of the reload the hang-up's SIGHUP had started,
 * leaving its control socket behind. A server does not stop serving because
 * nobody reads its log: from the first failure on, that stream's writes are
 * dropped (the stream is destroyed), and everything else goes on.
 */

/** Makes a failure of process.stdout or process.stderr drop their output
 * instead of ending the process. Once per process. */
export function surviveLostOutput(): void {
  for (const stream of [process.stdout, process.stderr]) {
    if (stream.listeners('error').includes(drop)) continue;
    stream.on('error', drop);
  }
}

function drop(this: NodeJS.WriteStream): void {
  // Destroyed, it takes no more writes: nothing is queued for a dead end.
  this.destroy();
}
