/**
 * Memory that this process keeps alive, measured after a full garbage
 * collection: for tests that bound what some input may cost (a trickled
 * frame, say), where RSS would be too coarse and too noisy.
 */
import * as v8 from 'node:v8';
import * as vm from 'node:vm';

let gc: (() => void) | undefined;

/** Heap and ArrayBuffer bytes in use after two full collections. */
export function liveBytes(): number {
  if (!gc) {
    // The flag only has to be set before gc() is looked up.
    v8.setFlagsFromString('--expose-gc');
    gc = vm.runInNewContext('gc') as () => void;
  }
  gc();
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}
