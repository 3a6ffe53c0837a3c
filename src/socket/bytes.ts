/**
 * Copying bytes between buffers, the one helper the framing (frame.ts), the
 * send path (send-queue.ts) and the receive path (receiver.ts) share.
 */

/**
 * Copies src[start, end) to dst at `at`. Small copies (most fdpass messages
 * are a few bytes) take a plain loop: there the call and argument checks of
 * TypedArray#set or Buffer#copy cost more than the copy itself.
 */
export function copyBytes(dst: Uint8Array, at: number, src: Uint8Array, start: number, end: number): void {
  const n = end - start;
  if (n <= 64) {
    for (let i = 0; i < n; i++) dst[at + i] = src[start + i]!;
    return;
  }
  dst.set(start === 0 && end === src.length ? src : src.subarray(start, end), at);
}
