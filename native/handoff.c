/*
 * fdpass native layer: the primary's hand-off in one crossing (`fdpass
 * serve`, src/serve/fast-handoff.ts). One readiness event of a listener:
 * accept4() a batch, then one CONNS message per worker that got any, sent
 * with sendmsg() on that worker's channel, following a plan that
 * TypeScript computed (which worker gets the i-th connection: the strategy
 * stays in src/serve/strategies.ts). No decision is made here: the C side
 * accepts, lays out the bytes of src/serve/protocol.ts's CONNS and sends.
 *
 *   handoff(listenFd, io Int32Array) -> connections accepted, or -errno
 *                                       when none was (EAGAIN: none waiting)
 *
 * io's layout (HANDOFF_* constants, in ints):
 *   [HANDOFF_WORKERS]   in: how many candidate workers (<= HANDOFF_MAX_WORKERS)
 *   [HANDOFF_COUNT]     in: at most this many connections (<= MAX_FDS)
 *   [HANDOFF_FIRST_ID]  in: the first connection's id (u32); the i-th gets
 *                       first + i (the caller keeps them from wrapping)
 *   [HANDOFF_LISTENER]  in: the listener index every connection carries
 *   chan[w]  at HANDOFF_CHAN:  in: worker w's channel fd (SOCK_SEQPACKET)
 *   sent[w]  at HANDOFF_SENT:  out: how many connections went to worker w
 *                              in one message (0: none was planned), or
 *                              the -errno of its sendmsg() (EAGAIN: its
 *                              channel is full); those were NOT handed
 *   plan[i]  at HANDOFF_PLAN:  in: the worker of the i-th connection
 *   fds[i]   at HANDOFF_FDS:   out: the i-th accepted fd
 *
 * Ownership: every accepted fd is the caller's (fds[0..n)), whether or not
 * its message went: a sent one is only lent to the kernel, which put a
 * duplicate in the message, so the caller keeps it until the worker's ACK.
 * A SOCK_SEQPACKET sendmsg() sends all or nothing, so a connection either
 * reached the worker's queue with its fd or did not leave at all.
 */
#include "fdpass.h"
#include "cmsg.h" /* FDPASS_MAX_FDS */

#include <errno.h>
#include <string.h>

/* Lays out CONNS for fds[i] of plan[i] == w, ids first + i: u8 1, u8 0,
 * u16 n, n x (u32 id, u16 listener, u16 0), little-endian. Copies those fds
 * to picked[] and returns n. */
static size_t fdpass_encode_conns(uint8_t *out, const int32_t *plan,
                                  const int32_t *fds, size_t count, int32_t w,
                                  uint32_t first, uint16_t listener,
                                  int32_t *picked) {
  size_t n = 0;
  for (size_t i = 0; i < count; i++) {
    if (plan[i] != w) continue;
    uint8_t *r = out + 4 + 8 * n;
    uint32_t id = first + (uint32_t)i;
    r[0] = (uint8_t)id;
    r[1] = (uint8_t)(id >> 8);
    r[2] = (uint8_t)(id >> 16);
    r[3] = (uint8_t)(id >> 24);
    r[4] = (uint8_t)listener;
    r[5] = (uint8_t)(listener >> 8);
    r[6] = 0;
    r[7] = 0;
    picked[n++] = fds[i];
  }
  out[0] = 1; /* Op.Conns */
  out[1] = 0;
  out[2] = (uint8_t)n;
  out[3] = (uint8_t)(n >> 8);
  return n;
}

napi_value fdpass_hand_off(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(2);
  int32_t lfd, *io;
  size_t iolen;
  if (!fdpass_get_i32(env, argv[0], &lfd)) FDPASS_THROW_TYPE("fd");
  if (!fdpass_get_i32_array(env, argv[1], &io, &iolen) || iolen < HANDOFF_SIZE)
    FDPASS_THROW_TYPE("io");
  int32_t nw = io[HANDOFF_WORKERS], count = io[HANDOFF_COUNT];
  if (nw < 1 || nw > HANDOFF_MAX_WORKERS || count < 1 || count > FDPASS_MAX_FDS)
    FDPASS_THROW_TYPE("io");
  int32_t *chan = io + HANDOFF_CHAN, *sent = io + HANDOFF_SENT;
  int32_t *plan = io + HANDOFF_PLAN, *fds = io + HANDOFF_FDS;
  for (int32_t i = 0; i < count; i++)
    if (plan[i] < 0 || plan[i] >= nw) FDPASS_THROW_TYPE("plan");

  size_t n = 0;
  while (n < (size_t)count) {
    int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (c < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (n == 0) return fdpass_create_int(env, -errno);
      break; /* an error after some: it shows again next call */
    }
    fds[n++] = c;
  }

  uint8_t bytes[4 + 8 * FDPASS_MAX_FDS];
  int32_t picked[FDPASS_MAX_FDS];
  uint32_t first = (uint32_t)io[HANDOFF_FIRST_ID];
  uint16_t listener = (uint16_t)io[HANDOFF_LISTENER];
  for (int32_t w = 0; w < nw; w++) {
    size_t m = fdpass_encode_conns(bytes, plan, fds, n, w, first, listener, picked);
    if (m == 0) {
      sent[w] = 0;
      continue;
    }
    size_t len = 4 + 8 * m;
    ssize_t r = fdpass_sendmsg_fds(chan[w], bytes, len, picked, m, NULL, NULL, 0);
    /* SEQPACKET: whole or not at all; a short count would be a stream. */
    if (r >= 0 && (size_t)r != len) r = -EPROTOTYPE;
    sent[w] = r < 0 ? (int32_t)r : (int32_t)m;
  }
  return fdpass_create_int(env, (int64_t)n);
}
