/*
 * fdpass native layer: the message loops, sendmsgs() and recvmsgs().
 *
 * Each crosses into JavaScript once per batch: it loops over one sendmsg()
 * or recvmsg() per message until EAGAIN (or a buffer is full) and reports
 * each message as a record (the layouts are in fdpass.h). Control data is
 * built and read by cmsg.c. Received fds always carry close-on-exec
 * (MSG_CMSG_CLOEXEC) and sends use MSG_NOSIGNAL, so that no concurrent
 * spawn() can inherit them and no dead peer can raise SIGPIPE.
 *
 * The buffers and typed arrays are JavaScript's, registered once per thread
 * (scratch.c) and reused across calls; nothing here allocates per message.
 */
#include "fdpass.h"
#include "cmsg.h"
#include "scratch.h"

#include <errno.h>
#include <poll.h>
#include <string.h>

/* ---- sendmsg ------------------------------------------------------------ */

ssize_t fdpass_sendmsg_fds(int fd, const void *data, size_t len,
                           const int32_t *fds, size_t nfds,
                           const struct ucred *creds,
                           const struct sockaddr_un *to, socklen_t tolen) {
  union {
    struct cmsghdr align;
    char buf[FDPASS_CMSG_SPACE];
  } ctl;
  ssize_t clen = fdpass_encode_cmsg(ctl.buf, sizeof(ctl.buf), fds, nfds, creds);
  if (clen < 0) return clen;
  struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
  struct msghdr msg;
  memset(&msg, 0, sizeof(msg));
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (tolen) {
    msg.msg_name = (void *)to;
    msg.msg_namelen = tolen;
  }
  if (clen) {
    msg.msg_control = ctl.buf;
    msg.msg_controllen = (size_t)clen;
  }
  ssize_t n;
  do {
    n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  return n < 0 ? -errno : n;
}

/*
 * sendmsgs(scratch, fd, count, addr|null, data|null) -> 0 or -errno
 *
 * Sends `count` messages, one sendmsg() each: message i is the next meta[i].len
 * bytes of the data (the scratch's, or `data` when given: one large message
 * sent from its own buffer) with the next meta[i].nfds fds of the scratch's
 * fds as SCM_RIGHTS (and SCM_CREDENTIALS when asked). result[0] = messages
 * sent whole, result[1] = bytes of the next message that a stream socket
 * took before it filled up. That remainder must be resent WITHOUT fds (they
 * went with its first byte), which is the caller's job: this function stops
 * at the first short write.
 */
napi_value fdpass_send_msgs(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(5);
  fdpass_send_scratch *sc = fdpass_get_send_scratch(env, argv[0]);
  int32_t fd, count;
  if (!sc) FDPASS_THROW_TYPE("scratch");
  if (!fdpass_get_i32(env, argv[1], &fd)) FDPASS_THROW_TYPE("fd");
  if (!fdpass_get_i32(env, argv[2], &count)) FDPASS_THROW_TYPE("count");
  int32_t *meta = sc->meta, *fds = sc->fds, *result = sc->result;
  size_t mlen = sc->mlen, flen = sc->flen, dlen = sc->dlen;
  char *data = sc->data;
  if (!fdpass_is_nullish(env, argv[4]) &&
      !fdpass_get_buffer(env, argv[4], (void **)&data, &dlen))
    FDPASS_THROW_TYPE("data");
  if (count < 0 || (size_t)count * SEND_META > mlen) FDPASS_THROW_TYPE("count");

  struct sockaddr_un sa;
  socklen_t salen = 0;
  if (!fdpass_is_nullish(env, argv[3])) {
    void *ab;
    size_t alen;
    if (!fdpass_get_buffer(env, argv[3], &ab, &alen)) FDPASS_THROW_TYPE("addr");
    int r = fdpass_make_unix_addr(ab, alen, &sa, &salen);
    if (r < 0) return fdpass_create_int(env, r);
  }

  size_t doff = 0, foff = 0;
  result[0] = 0;
  result[1] = 0;
  for (int32_t i = 0; i < count; i++) {
    const int32_t *m = meta + (size_t)i * SEND_META;
    size_t len = (size_t)m[SEND_LEN], nfds = (size_t)m[SEND_NFDS];
    if (m[SEND_LEN] < 0 || m[SEND_NFDS] < 0 || nfds > FDPASS_MAX_FDS ||
        doff + len > dlen || foff + nfds > flen)
      FDPASS_THROW_TYPE("meta");

    struct ucred uc = {.pid = m[SEND_PID],
                       .uid = (uid_t)m[SEND_UID],
                       .gid = (gid_t)m[SEND_GID]};
    /* The sizes were checked above: a negative n is sendmsg()'s errno. */
    ssize_t n = fdpass_sendmsg_fds(fd, data + doff, len, fds + foff, nfds,
                                   m[SEND_HAS_CREDS] ? &uc : NULL, &sa, salen);
    if (n < 0) return fdpass_create_int(env, (int64_t)n);
    if ((size_t)n < len) {
      result[1] = (int32_t)n;
      return fdpass_create_int(env, -EAGAIN);
    }
    result[0] = i + 1;
    doff += len;
    foff += nfds;
  }
  return fdpass_create_int(env, 0);
}

/* ---- recvmsg ------------------------------------------------------------ */

/* Records one received message in its meta record m, its fds in fds[*foff..]
 * and its sender's address in addr (when not NULL). Returns its fd count. */
static int32_t fdpass_record_msg(const struct msghdr *msg, size_t r, size_t room,
                                 size_t boff, int32_t *m, int32_t *fds,
                                 size_t *foff, size_t flen, char *addr) {
  struct fdpass_cmsg_info ci;
  fdpass_decode_cmsg(msg, fds + *foff, flen - *foff, &ci);
  *foff += ci.nfds;
  memset(m, 0, sizeof(int32_t) * RECV_META);
  m[RECV_OFF] = (int32_t)boff;
  m[RECV_LEN] = (int32_t)r;
  m[RECV_STORED] = (int32_t)(r < room ? r : room);
  m[RECV_NFDS] = (int32_t)ci.nfds;
  m[RECV_FLAGS] = msg->msg_flags;
  if (ci.has_creds) {
    m[RECV_HAS_CREDS] = 1;
    m[RECV_PID] = ci.creds.pid;
    m[RECV_UID] = (int32_t)ci.creds.uid;
    m[RECV_GID] = (int32_t)ci.creds.gid;
  }
  if (addr)
    m[RECV_ADDRLEN] = (int32_t)fdpass_read_unix_addr(
        msg->msg_name, msg->msg_namelen, addr, RECV_ADDR);
  return (int32_t)ci.nfds;
}

/*
 * A zero-byte SEQPACKET read without fds is EOF only when the peer hung up
 * and nothing is queued behind it (an empty message is legal). The peek has
 * no control buffer, so no fd gets installed by it.
 */
static bool fdpass_check_seqpacket_eof(int fd) {
  struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
  if (poll(&p, 1, 0) != 1 || !(p.revents & (POLLRDHUP | POLLHUP))) return false;
  char b;
  struct iovec iov = {.iov_base = &b, .iov_len = 1};
  struct msghdr pm;
  memset(&pm, 0, sizeof(pm));
  pm.msg_iov = &iov;
  pm.msg_iovlen = 1;
  ssize_t pr = recvmsg(fd, &pm, MSG_PEEK | MSG_DONTWAIT);
  return pr == 0 && !(pm.msg_flags & MSG_CTRUNC);
}

/*
 * recvmsgs(scratch, fd, maxMsgs, maxMsgSize, maxFds, addrs bool) -> count
 *
 * Receives until EAGAIN, EOF, maxMsgs, or until the next message might not
 * fit (less than maxMsgSize bytes of buf, or fewer than 254 fd slots, left).
 * maxMsgSize 0 means a byte stream: each read takes the space left. For
 * packets MSG_TRUNC makes meta.len the true size, so a message larger
 * than its space is reported (stored < len), never silently cut.
 *
 * Every fd that arrives is reported in `fds`, including those of a message
 * flagged MSG_CTRUNC, so that the caller can close them; the batch ends
 * after such a message (the receiver is likely out of fd slots until the
 * caller closes them); at most `maxFds` fd slots of the scratch are used.
 * status[0] tells whether EOF stopped the loop; status[1] holds an error
 * (-errno) that ended a loop which had already received something. With
 * `addrs`, each sender's address goes to the scratch's addrs (datagrams).
 * The scratch is per thread, so that worker threads share nothing.
 */
napi_value fdpass_recv_msgs(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(6);
  fdpass_recv_scratch *sc = fdpass_get_recv_scratch(env, argv[0]);
  int32_t fd, max_msgs, max_size, max_fds;
  bool with_addrs;
  if (!sc) FDPASS_THROW_TYPE("scratch");
  if (!fdpass_get_i32(env, argv[1], &fd)) FDPASS_THROW_TYPE("fd");
  if (!fdpass_get_i32(env, argv[2], &max_msgs)) FDPASS_THROW_TYPE("maxMsgs");
  if (!fdpass_get_i32(env, argv[3], &max_size)) FDPASS_THROW_TYPE("maxMsgSize");
  if (!fdpass_get_i32(env, argv[4], &max_fds)) FDPASS_THROW_TYPE("maxFds");
  if (!fdpass_get_bool(env, argv[5], &with_addrs)) FDPASS_THROW_TYPE("addrs");
  int32_t *meta = sc->meta, *fds = sc->fds, *status = sc->status;
  size_t blen = sc->blen, mlen = sc->mlen, alen = sc->alen;
  size_t flen = max_fds < 0 ? 0 : (size_t)max_fds;
  if (flen > sc->flen) flen = sc->flen;
  char *buf = sc->buf, *addrs = with_addrs ? sc->addrs : NULL, *ctl = sc->ctl;
  if (max_msgs < 1 || (size_t)max_msgs * RECV_META > mlen ||
      (addrs && (size_t)max_msgs * RECV_ADDR > alen) || max_size < 0 ||
      flen < FDPASS_MAX_FDS + 1)
    FDPASS_THROW_TYPE("capacity");

  size_t boff = 0, foff = 0;
  int32_t n = 0;
  status[0] = STOP_DRAINED;
  status[1] = 0;

  /*
   * One recvmsg() per message, not recvmmsg(): at RLIMIT_NOFILE a message
   * comes with MSG_CTRUNC, and the batch must stop right there (see below),
   * which recvmmsg() cannot do: it would read on and truncate the next ones.
   */
  bool is_stream = max_size == 0;
  while (n < max_msgs) {
    size_t room = blen - boff;
    if (n > 0 && (is_stream ? room == 0 : room < (size_t)max_size)) break;
    if (n > 0 && flen - foff < FDPASS_MAX_FDS + 1) break;
    if (!is_stream && room > (size_t)max_size) room = (size_t)max_size;
    struct iovec iov = {.iov_base = buf + boff, .iov_len = room};
    struct sockaddr_un sa;
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl;
    msg.msg_controllen = FDPASS_CMSG_RECV_SPACE;
    if (addrs) {
      msg.msg_name = &sa;
      msg.msg_namelen = sizeof(sa);
    }
    int flags = MSG_CMSG_CLOEXEC | MSG_DONTWAIT | (is_stream ? 0 : MSG_TRUNC);
    ssize_t r;
    do {
      r = recvmsg(fd, &msg, flags);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
      int e = errno;
      if (n == 0) return fdpass_create_int(env, -e);
      if (e != EAGAIN && e != EWOULDBLOCK) status[1] = -e;
      break;
    }
    int32_t *m = meta + (size_t)n * RECV_META;
    int32_t nfds =
        fdpass_record_msg(&msg, (size_t)r, room, boff, m, fds, &foff, flen,
                          addrs ? addrs + (size_t)n * RECV_ADDR : NULL);
    /* Zero bytes: EOF on a stream (a stream message has at least one byte);
     * on SEQPACKET maybe an empty message; datagram sockets have no EOF. */
    if (r == 0 && nfds == 0 && !addrs &&
        (is_stream || fdpass_check_seqpacket_eof(fd))) {
      status[0] = STOP_EOF;
      break;
    }
    boff += m[RECV_STORED];
    n++;
    /* MSG_CTRUNC usually means RLIMIT_NOFILE: the fds this one brought fill
     * the table until the caller closes them, so reading on would truncate
     * every following message too. Hand this batch back first. */
    if (msg.msg_flags & MSG_CTRUNC) break;
    /* A short stream read means the queue is (momentarily) empty, or the
     * kernel stopped at an fd-bearing segment (then read on). */
    if (is_stream && (size_t)r < room && nfds == 0) break;
  }
  return fdpass_create_int(env, n);
}
