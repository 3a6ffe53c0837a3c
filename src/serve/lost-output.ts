/**
 * Output that goes away under a running server: the terminal `fdpass serve`
 * was started in hangs up (its window closed, an ssh session dropped: every
 * write then fails with EIO), or the pipe its log goes to closes (EPIPE).
 * Node emits such a failure as an 'error' event on process.stdout/stderr,
 * and with nobody listening that is an uncaught exception: the primary died
 * (SIGABRT) in the middle of the reload the hang-up's SIGHUP had started,
 * leaving its control socket behind. A server does not stop serving because
 * nobody reads its log: a write that fails is dropped, and everything else
 * goes on (a log file on a full disk takes lines again once there is room).
 */

/** Makes a failure of process.stdout or process.stderr drop that output
 * instead of ending the process. Once per process. */
export function surviveLostOutput(): void {
  for (const stream of [process.stdout, process.stderr]) {
    if (stream.listeners('error').includes(drop)) continue;
    stream.on('error', drop);
  }
}

function drop(): void {
  // Nothing to do: the failed write is gone, and the process goes on.
}
