/*
 * fdpass native layer: socket system calls for AF_UNIX fd passing.
 *
 * Conventions (see fdpass.h): each function returns >= 0 or -errno. Sockets
 * are always created SOCK_CLOEXEC | SOCK_NONBLOCK, received fds always carry
 * close-on-exec (MSG_CMSG_CLOEXEC) and sends use MSG_NOSIGNAL, so that no
 * concurrent spawn() can inherit them and no dead peer can raise SIGPIPE.
 *
 * Buffers and typed arrays are passed in by JavaScript and reused across calls;
 * nothing here allocates per message.
 */
#define _GNU_SOURCE
#include "fdpass.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

/* ---- argument helpers --------------------------------------------------- */

int fdpass_get_i32(napi_env env, napi_value v, int32_t *out) {
  return napi_get_value_int32(env, v, out) == napi_ok;
}

napi_value fdpass_int(napi_env env, int64_t v) {
  napi_value r;
  napi_create_int64(env, v, &r);
  return r;
}

static int get_buffer(napi_env env, napi_value v, void **data, size_t *len) {
  bool is_buf = false;
  if (napi_is_buffer(env, v, &is_buf) == napi_ok && is_buf)
    return napi_get_buffer_info(env, v, data, len) == napi_ok;
  /* Plain Uint8Arrays are accepted too. */
  napi_typedarray_type t;
  napi_value ab;
  size_t off;
  if (napi_get_typedarray_info(env, v, &t, len, data, &ab, &off) != napi_ok)
    return 0;
  return t == napi_uint8_array;
}

static int get_i32_array(napi_env env, napi_value v, int32_t **data,
                         size_t *len) {
  napi_typedarray_type t;
  napi_value ab;
  size_t off;
  if (napi_get_typedarray_info(env, v, &t, len, (void **)data, &ab, &off) !=
      napi_ok)
    return 0;
  return t == napi_int32_array;
}

static int is_nullish(napi_env env, napi_value v) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  return t == napi_null || t == napi_undefined;
}

#define THROW_TYPE(msg)                                                       \
  do {                                                                        \
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", (msg));                \
    return NULL;                                                              \
  } while (0)

/*
 * Addresses travel as the raw bytes of sun_path: a path is its bytes (no
 * terminator), an abstract name starts with a NUL byte. src/socket/address.ts
 * validates lengths; this re-checks so that no input can overflow sun_path.
 */
static int make_addr(const void *bytes, size_t len, struct sockaddr_un *sa,
                     socklen_t *salen) {
  if (len == 0 || len > sizeof(sa->sun_path)) return -ENAMETOOLONG;
  memset(sa, 0, sizeof(*sa));
  sa->sun_family = AF_UNIX;
  memcpy(sa->sun_path, bytes, len);
  *salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
  /* A path gets its terminator counted when it fits, as most C peers do. */
  if (((const char *)bytes)[0] != '\0' && len < sizeof(sa->sun_path))
    *salen += 1;
  return 0;
}

/* ---- socket lifecycle --------------------------------------------------- */

/* socket(type) -> fd */
static napi_value fdp_socket(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(1);
  int32_t type;
  if (!fdpass_get_i32(env, argv[0], &type)) THROW_TYPE("type");
  int fd = socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  return fdpass_int(env, fd < 0 ? -errno : fd);
}

/* socketpair(type, out Int32Array[2]) -> 0 */
static napi_value fdp_socketpair(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(2);
  int32_t type, *out;
  size_t n;
  if (!fdpass_get_i32(env, argv[0], &type)) THROW_TYPE("type");
  if (!get_i32_array(env, argv[1], &out, &n) || n < 2) THROW_TYPE("out");
  int sv[2];
  if (socketpair(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0)
    return fdpass_int(env, -errno);
  out[0] = sv[0];
  out[1] = sv[1];
  return fdpass_int(env, 0);
}

/* bind(fd, addr) / connect(fd, addr) -> 0 */
static napi_value addr_call(napi_env env, napi_callback_info info,
                            int is_bind) {
  FDPASS_ARGS(2);
  int32_t fd;
  void *bytes;
  size_t len;
  if (!fdpass_get_i32(env, argv[0], &fd)) THROW_TYPE("fd");
  if (!get_buffer(env, argv[1], &bytes, &len)) THROW_TYPE("addr");
  struct sockaddr_un sa;
  socklen_t salen;
  int r = make_addr(bytes, len, &sa, &salen);
  if (r < 0) return fdpass_int(env, r);
  r = is_bind ? bind(fd, (struct sockaddr *)&sa, salen)
              : connect(fd, (struct sockaddr *)&sa, salen);
  return fdpass_int(env, r < 0 ? -errno : 0);
}

static napi_value fdp_bind(napi_env env, napi_callback_info info) {
  return addr_call(env, info, 1);
}

static napi_value fdp_connect(napi_env env, napi_callback_info info) {
  return addr_call(env, info, 0);
}

/* listen(fd, backlog) -> 0 */
static napi_value fdp_listen(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(2);
  int32_t fd, backlog;
  if (!fdpass_get_i32(env, argv[0], &fd)) THROW_TYPE("fd");
  if (!fdpass_get_i32(env, argv[1], &backlog)) THROW_TYPE("backlog");
  return fdpass_int(env, listen(fd, backlog) < 0 ? -errno : 0);
}

/*
 * accept(fd, out Int32Array) -> count
 * Accepts until EAGAIN or until out is full. Works for any listening socket
 * (AF_UNIX or TCP). When nothing was accepted the error is returned; when some
 * were, they are returned and the error (say EMFILE) shows again next call.
 */
static napi_value fdp_accept(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(2);
  int32_t fd, *out;
  size_t cap, n = 0;
  if (!fdpass_get_i32(env, argv[0], &fd)) THROW_TYPE("fd");
  if (!get_i32_array(env, argv[1], &out, &cap)) THROW_TYPE("out");
  while (n < cap) {
    int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (c < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (n == 0) return fdpass_int(env, -errno);
      break;
    }
    out[n++] = c;
  }
  return fdpass_int(env, (int64_t)n);
}

/* shutdown(fd, how) -> 0 */
static napi_value fdp_shutdown(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(2);
  int32_t fd, how;
  if (!fdpass_get_i32(env, argv[0], &fd)) THROW_TYPE("fd");
  if (!fdpass_get_i32(env, argv[1], &how)) THROW_TYPE("how");
  return fdpass_int(env, shutdown(fd, how) < 0 ? -errno : 0);
}

/* close(fd) -> 0. EINTR counts as closed on Linux: never retry. */
static napi_value fdp_close(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(1);
  int32_t fd;
  if (!fdpass_get_i32(env, argv[0], &fd)) THROW_TYPE("fd");
  if (close(fd) < 0 && errno != EINTR) return fdpass_int(env, -errno);
  return fdpass_int(env, 0);
}

/* closeMany(fds Int32Array, start, count) -> number that failed (EBADF) */
static napi_value fdp_close_many(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(3);
  int32_t *fds, start, count;
  size_t n;
  if (!get_i32_array(env, argv[0], &fds, &n)) THROW_TYPE("fds");
  if (!fdpass_get_i32(env, argv[1], &start)) THROW_TYPE("start");
  if (!fdpass_get_i32(env, argv[2], &count)) THROW_TYPE("count");
  if (start < 0 || count < 0 || (size_t)start + (size_t)count > n)
    THROW_TYPE("range");
  int failed = 0;
  for (int32_t i = start; i < start + count; i++)
    if (close(fds[i]) < 0 && errno == EBADF) failed++;
  return fdpass_int(env, failed);
}

/* dup(fd) -> new fd with close-on-exec */
static napi_value fdp_dup(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(1);
  int32_t fd;
  if (!fdpass_get_i32(env, argv[0], &fd)) THROW_TYPE("fd");
  int r = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  return fdpass_int(env, r < 0 ? -errno : r);
}

/* fdFlags(fd) -> F_GETFD flags; the cheapest "is this fd open?" check */
static napi_value fdp_fd_flags(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(1);
  int32_t fd;
  if (!fdpass_get_i32(env, argv[0], &fd)) THROW_TYPE("fd");
  int r = fcntl(fd, F_GETFD);
  return fdpass_int(env, r < 0 ? -errno : r);
}

/* nofileLimit() -> the soft RLIMIT_NOFILE (capped at 2^31-1) */
static napi_value fdp_nofile_limit(napi_env env, napi_callback_info info) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) < 0) return fdpass_int(env, -errno);
  return fdpass_int(env, rl.rlim_cur > 0x7fffffff ? 0x7fffffff : (int64_t)rl.rlim_cur);
}

/* setCloexec(fd, on) -> 0: for inherited fds (systemd's come without it) */
static napi_value fdp_set_cloexec(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(2);
  int32_t fd;
  bool on;
  if (!fdpass_get_i32(env, argv[0], &fd)) THROW_TYPE("fd");
  if (napi_get_value_bool(env, argv[1], &on) != napi_ok) THROW_TYPE("on");
  int fl = fcntl(fd, F_GETFD);
  if (fl < 0) return fdpass_int(env, -errno);
  fl = on ? (fl | FD_CLOEXEC) : (fl & ~FD_CLOEXEC);
  return fdpass_int(env, fcntl(fd, F_SETFD, fl) < 0 ? -errno : 0);
}

/* setBlocking(fd, on) -> 0: for fds handed to code that expects blocking I/O */
static napi_value fdp_set_blocking(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(2);
  int32_t fd;
  bool on;
  if (!fdpass_get_i32(env, argv[0], &fd)) THROW_TYPE("fd");
  if (napi_get_value_bool(env, argv[1], &on) != napi_ok) THROW_TYPE("on");
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return fdpass_int(env, -errno);
  fl = on ? (fl & ~O_NONBLOCK) : (fl | O_NONBLOCK);
  return fdpass_int(env, fcntl(fd, F_SETFL, fl) < 0 ? -errno : 0);
}

/* ---- socket options ----------------------------------------------------- */

/* sockInfo(fd, out Int32Array[3]) -> 0: [SO_DOMAIN, SO_TYPE, SO_ACCEPTCONN] */
static napi_value fdp_sock_info(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(2);
  int32_t fd, *out;
  size_t n;
  if (!fdpass_get_i32(env, argv[0], &fd)) THROW_TYPE("fd");
  if (!get_i32_array(env, argv[1], &out, &n) || n < 3) THROW_TYPE("out");
  static const int opts[3] = {SO_DOMAIN, SO_TYPE, SO_ACCEPTCONN};
  for (int i = 0; i < 3; i++) {
    int v = 0;
    socklen_t l = sizeof(v);
    if (getsockopt(fd, SOL_SOCKET, opts[i], &v, &l) < 0)
      return fdpass_int(env, -errno);
    out[i] = v;
  }
  return fdpass_int(env, 0);
}

/* peerCred(fd, out Int32Array[3]) -> 0: SO_PEERCRED as [pid, uid, gid] */
static napi_value fdp_peer_cred(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(2);
  int32_t fd, *out;
  size_t n;
  if (!fdpass_get_i32(env, argv[0], &fd)) THROW_TYPE("fd");
  if (!get_i32_array(env, argv[1], &out, &n) || n < 3) THROW_TYPE("out");
  struct ucred uc;
  socklen_t l = sizeof(uc);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &l) < 0)
    return fdpass_int(env, -errno);
  out[0] = uc.pid;
  out[1] = (int32_t)uc.uid;
  out[2] = (int32_t)uc.gid;
  return fdpass_int(env, 0);
}

/* sockError(fd) -> -errno pending on the socket (SO_ERROR, which clears it), or 0 */
static napi_value fdp_sock_error(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(1);
  int32_t fd;
  if (!fdpass_get_i32(env, argv[0], &fd)) THROW_TYPE("fd");
  int v = 0;
  socklen_t l = sizeof(v);
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &v, &l) < 0) return fdpass_int(env, -errno);
  return fdpass_int(env, -v);
}

/* setPassCred(fd, on) -> 0: SO_PASSCRED */
static napi_value fdp_set_pass_cred(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(2);
  int32_t fd;
  bool on;
  if (!fdpass_get_i32(env, argv[0], &fd)) THROW_TYPE("fd");
  if (napi_get_value_bool(env, argv[1], &on) != napi_ok) THROW_TYPE("on");
  int v = on ? 1 : 0;
  int r = setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &v, sizeof(v));
  return fdpass_int(env, r < 0 ? -errno : 0);
}

/* sockName(fd, out Buffer, peer) -> length of sun_path bytes written */
static napi_value fdp_sock_name(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(3);
  int32_t fd;
  void *buf;
  size_t cap;
  bool peer;
  if (!fdpass_get_i32(env, argv[0], &fd)) THROW_TYPE("fd");
  if (!get_buffer(env, argv[1], &buf, &cap)) THROW_TYPE("out");
  if (napi_get_value_bool(env, argv[2], &peer) != napi_ok) THROW_TYPE("peer");
  struct sockaddr_un sa;
  socklen_t l = sizeof(sa);
  memset(&sa, 0, sizeof(sa));
  int r = peer ? getpeername(fd, (struct sockaddr *)&sa, &l)
               : getsockname(fd, (struct sockaddr *)&sa, &l);
  if (r < 0) return fdpass_int(env, -errno);
  if (sa.sun_family != AF_UNIX) return fdpass_int(env, -EAFNOSUPPORT);
  size_t plen = l > offsetof(struct sockaddr_un, sun_path)
                    ? l - offsetof(struct sockaddr_un, sun_path)
                    : 0;
  /* Paths may come back with their terminator; drop it. */
  if (plen > 0 && sa.sun_path[0] != '\0')
    plen = strnlen(sa.sun_path, plen);
  if (plen > cap) plen = cap;
  memcpy(buf, sa.sun_path, plen);
  return fdpass_int(env, (int64_t)plen);
}

/* ---- sendmsg ------------------------------------------------------------ */

/* One send record (Int32Array, SEND_META ints per message), by field. */
#define SEND_LEN 0
#define SEND_NFDS 1
#define SEND_HAS_CREDS 2
#define SEND_PID 3
#define SEND_UID 4
#define SEND_GID 5
#define SEND_META 6

/*
 * sendmsgs(fd, data, meta Int32Array, fds Int32Array, count, addr|null,
 *          result Int32Array[2]) -> 0 or -errno
 *
 * Sends `count` messages, one sendmsg() each: message i is the next meta[i].len
 * bytes of `data` with the next meta[i].nfds fds of `fds` as SCM_RIGHTS (and
 * SCM_CREDENTIALS when asked). result[0] = messages sent whole, result[1] =
 * bytes of the next message that a stream socket took before it filled up.
 * That remainder must be resent WITHOUT fds (they went with its first byte),
 * which is the caller's job: this function stops at the first short write.
 */
static napi_value fdp_sendmsgs(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(7);
  int32_t fd, count, *meta, *fds, *result;
  size_t dlen, mlen, flen, rlen;
  char *data;
  if (!fdpass_get_i32(env, argv[0], &fd)) THROW_TYPE("fd");
  if (!get_buffer(env, argv[1], (void **)&data, &dlen)) THROW_TYPE("data");
  if (!get_i32_array(env, argv[2], &meta, &mlen)) THROW_TYPE("meta");
  if (!get_i32_array(env, argv[3], &fds, &flen)) THROW_TYPE("fds");
  if (!fdpass_get_i32(env, argv[4], &count)) THROW_TYPE("count");
  if (!get_i32_array(env, argv[6], &result, &rlen) || rlen < 2)
    THROW_TYPE("result");
  if (count < 0 || (size_t)count * SEND_META > mlen) THROW_TYPE("count");

  struct sockaddr_un sa;
  socklen_t salen = 0;
  if (!is_nullish(env, argv[5])) {
    void *ab;
    size_t alen;
    if (!get_buffer(env, argv[5], &ab, &alen)) THROW_TYPE("addr");
    int r = make_addr(ab, alen, &sa, &salen);
    if (r < 0) return fdpass_int(env, r);
  }

  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * FDPASS_MAX_FDS) +
             CMSG_SPACE(sizeof(struct ucred))];
  } ctl;

  size_t doff = 0, foff = 0;
  result[0] = 0;
  result[1] = 0;
  for (int32_t i = 0; i < count; i++) {
    const int32_t *m = meta + (size_t)i * SEND_META;
    size_t len = (size_t)m[SEND_LEN], nfds = (size_t)m[SEND_NFDS];
    if (m[SEND_LEN] < 0 || m[SEND_NFDS] < 0 || nfds > FDPASS_MAX_FDS || doff + len > dlen ||
        foff + nfds > flen)
      THROW_TYPE("meta");

    struct iovec iov = {.iov_base = data + doff, .iov_len = len};
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (salen) {
      msg.msg_name = &sa;
      msg.msg_namelen = salen;
    }
    size_t clen = 0;
    if (nfds) {
      struct cmsghdr *c = (struct cmsghdr *)ctl.buf;
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
      memcpy(CMSG_DATA(c), fds + foff, sizeof(int) * nfds);
      clen += CMSG_SPACE(sizeof(int) * nfds);
    }
    if (m[SEND_HAS_CREDS]) {
      struct cmsghdr *c = (struct cmsghdr *)(ctl.buf + clen);
      struct ucred uc = {.pid = m[SEND_PID], .uid = (uid_t)m[SEND_UID], .gid = (gid_t)m[SEND_GID]};
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_CREDENTIALS;
      c->cmsg_len = CMSG_LEN(sizeof(uc));
      memcpy(CMSG_DATA(c), &uc, sizeof(uc));
      clen += CMSG_SPACE(sizeof(uc));
    }
    if (clen) {
      msg.msg_control = ctl.buf;
      msg.msg_controllen = clen;
    }

    ssize_t n;
    do {
      n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return fdpass_int(env, -errno);
    if ((size_t)n < len) {
      result[1] = (int32_t)n;
      return fdpass_int(env, -EAGAIN);
    }
    result[0] = i + 1;
    doff += len;
    foff += nfds;
  }
  return fdpass_int(env, 0);
}

/* ---- recvmsg ------------------------------------------------------------ */

/* One receive record (Int32Array, RECV_META ints per message), by field:
 * offset in buf, len (true length, may exceed stored), stored, nfds,
 * msg_flags, hasCreds, pid, uid, gid, length of the sender's address. */
#define RECV_OFF 0
#define RECV_LEN 1
#define RECV_STORED 2
#define RECV_NFDS 3
#define RECV_FLAGS 4
#define RECV_HAS_CREDS 5
#define RECV_PID 6
#define RECV_UID 7
#define RECV_GID 8
#define RECV_ADDRLEN 9
#define RECV_META 10
#define RECV_ADDR 108 /* sizeof(sun_path) */

/* status[0] after recvmsgs: why the loop stopped */
#define STOP_DRAINED 0 /* EAGAIN or a buffer filled up */
#define STOP_EOF 1

/* Room for a full SCM_RIGHTS and SCM_CREDENTIALS, with slack for any other
 * control message the kernel may add (SCM_SECURITY). */
#define CTL_SIZE \
  (CMSG_SPACE(sizeof(int) * FDPASS_MAX_FDS) + CMSG_SPACE(sizeof(struct ucred)) + 256)

/* Records one received message in meta/fds/addrs. Returns its fd count. */
static int32_t take_msg(struct msghdr *msg, size_t r, size_t room, size_t boff,
                        int32_t *m, int32_t *fds, size_t *foff, size_t flen,
                        char *addr) {
  memset(m, 0, sizeof(int32_t) * RECV_META);
  int32_t nfds = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
    if (c->cmsg_level != SOL_SOCKET) continue;
    if (c->cmsg_type == SCM_RIGHTS) {
      size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      /* Capacity was checked by the caller: one message carries <= 253. */
      if (*foff + k > flen) k = flen - *foff;
      memcpy(fds + *foff, CMSG_DATA(c), k * sizeof(int));
      *foff += k;
      nfds += (int32_t)k;
    } else if (c->cmsg_type == SCM_CREDENTIALS &&
               c->cmsg_len >= CMSG_LEN(sizeof(struct ucred))) {
      struct ucred uc;
      memcpy(&uc, CMSG_DATA(c), sizeof(uc));
      m[RECV_HAS_CREDS] = 1;
      m[RECV_PID] = uc.pid;
      m[RECV_UID] = (int32_t)uc.uid;
      m[RECV_GID] = (int32_t)uc.gid;
    }
  }
  m[RECV_OFF] = (int32_t)boff;
  m[RECV_LEN] = (int32_t)r;
  m[RECV_STORED] = (int32_t)(r < room ? r : room);
  m[RECV_NFDS] = nfds;
  m[RECV_FLAGS] = msg->msg_flags;
  if (addr) {
    struct sockaddr_un *sa = msg->msg_name;
    size_t pl = msg->msg_namelen > offsetof(struct sockaddr_un, sun_path)
                    ? msg->msg_namelen - offsetof(struct sockaddr_un, sun_path)
                    : 0;
    if (pl > RECV_ADDR) pl = RECV_ADDR;
    if (pl > 0 && sa->sun_path[0] != '\0') pl = strnlen(sa->sun_path, pl);
    memcpy(addr, sa->sun_path, pl);
    m[RECV_ADDRLEN] = (int32_t)pl;
  }
  return nfds;
}

/*
 * A zero-byte SEQPACKET read without fds is EOF only when the peer hung up
 * and nothing is queued behind it (an empty message is legal). The peek has
 * no control buffer, so no fd gets installed by it.
 */
static int seqpacket_eof(int fd) {
  struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
  if (poll(&p, 1, 0) != 1 || !(p.revents & (POLLRDHUP | POLLHUP))) return 0;
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
 * recvmsgs(fd, buf, meta Int32Array, fds Int32Array, addrs Buffer|null,
 *          maxMsgs, maxMsgSize, status Int32Array[2], ctl Buffer) -> count
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
 * caller closes them). status[0] tells whether EOF stopped the loop;
 * status[1] holds an error (-errno) that ended a loop which had already
 * received something. `ctl` is the caller's scratch for control data
 * (CTL_SIZE bytes), so that worker threads share nothing.
 */
static napi_value fdp_recvmsgs(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(9);
  int32_t fd, max_msgs, max_size, *meta, *fds, *status;
  size_t blen, mlen, flen, slen, alen = 0, clen;
  char *buf, *addrs = NULL, *ctl;
  if (!fdpass_get_i32(env, argv[0], &fd)) THROW_TYPE("fd");
  if (!get_buffer(env, argv[1], (void **)&buf, &blen)) THROW_TYPE("buf");
  if (!get_i32_array(env, argv[2], &meta, &mlen)) THROW_TYPE("meta");
  if (!get_i32_array(env, argv[3], &fds, &flen)) THROW_TYPE("fds");
  if (!is_nullish(env, argv[4]) &&
      !get_buffer(env, argv[4], (void **)&addrs, &alen))
    THROW_TYPE("addrs");
  if (!fdpass_get_i32(env, argv[5], &max_msgs)) THROW_TYPE("maxMsgs");
  if (!fdpass_get_i32(env, argv[6], &max_size)) THROW_TYPE("maxMsgSize");
  if (!get_i32_array(env, argv[7], &status, &slen) || slen < 2)
    THROW_TYPE("status");
  if (!get_buffer(env, argv[8], (void **)&ctl, &clen)) THROW_TYPE("ctl");
  if (max_msgs < 1 || (size_t)max_msgs * RECV_META > mlen ||
      (addrs && (size_t)max_msgs * RECV_ADDR > alen) || max_size < 0 ||
      flen < FDPASS_MAX_FDS + 1 || clen < CTL_SIZE ||
      ((uintptr_t)ctl % sizeof(size_t)) != 0)
    THROW_TYPE("capacity");

  size_t boff = 0, foff = 0;
  int32_t n = 0;
  status[0] = STOP_DRAINED;
  status[1] = 0;

  /*
   * One recvmsg() per message, not recvmmsg(): at RLIMIT_NOFILE a message
   * comes with MSG_CTRUNC, and the batch must stop right there (see below),
   * which recvmmsg() cannot do: it would read on and truncate the next ones.
   */
  int is_stream = max_size == 0;
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
    msg.msg_controllen = CTL_SIZE;
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
      if (n == 0) return fdpass_int(env, -e);
      if (e != EAGAIN && e != EWOULDBLOCK) status[1] = -e;
      break;
    }
    int32_t *m = meta + (size_t)n * RECV_META;
    int32_t nfds = take_msg(&msg, (size_t)r, room, boff, m, fds, &foff, flen,
                            addrs ? addrs + (size_t)n * RECV_ADDR : NULL);
    /* Zero bytes: EOF on a stream (a stream message has at least one byte);
     * on SEQPACKET maybe an empty message; datagram sockets have no EOF. */
    if (r == 0 && nfds == 0 && !addrs && (is_stream || seqpacket_eof(fd))) {
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
  return fdpass_int(env, n);
}

/* ---- TCP (for the dispatch server's listeners) ---------------------------- */

/* socketInet(family) -> fd: AF_INET or AF_INET6 SOCK_STREAM, cloexec, nonblocking */
static napi_value fdp_socket_inet(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(1);
  int32_t family;
  if (!fdpass_get_i32(env, argv[0], &family)) THROW_TYPE("family");
  if (family != AF_INET && family != AF_INET6) return fdpass_int(env, -EAFNOSUPPORT);
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  return fdpass_int(env, fd < 0 ? -errno : fd);
}

/* setIntOpt(fd, level, name, value) -> 0: setsockopt with an int */
static napi_value fdp_set_int_opt(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(4);
  int32_t fd, level, name, value;
  if (!fdpass_get_i32(env, argv[0], &fd) || !fdpass_get_i32(env, argv[1], &level) ||
      !fdpass_get_i32(env, argv[2], &name) || !fdpass_get_i32(env, argv[3], &value))
    THROW_TYPE("setIntOpt");
  int r = setsockopt(fd, level, name, &value, sizeof(value));
  return fdpass_int(env, r < 0 ? -errno : 0);
}

/* bindInet(fd, family, ip string, port) -> 0 (-EINVAL for an unparsable ip) */
static napi_value fdp_bind_inet(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(4);
  int32_t fd, family, port;
  char ip[INET6_ADDRSTRLEN + 1];
  size_t iplen;
  if (!fdpass_get_i32(env, argv[0], &fd) || !fdpass_get_i32(env, argv[1], &family) ||
      !fdpass_get_i32(env, argv[3], &port))
    THROW_TYPE("bindInet");
  if (napi_get_value_string_utf8(env, argv[2], ip, sizeof(ip), &iplen) != napi_ok) THROW_TYPE("ip");
  if (port < 0 || port > 65535) return fdpass_int(env, -EINVAL);
  int r;
  if (family == AF_INET) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1) return fdpass_int(env, -EINVAL);
    r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
  } else if (family == AF_INET6) {
    struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET6, ip, &sa.sin6_addr) != 1) return fdpass_int(env, -EINVAL);
    r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
  } else {
    return fdpass_int(env, -EAFNOSUPPORT);
  }
  return fdpass_int(env, r < 0 ? -errno : 0);
}

/*
 * inetName(fd, peer, out Buffer) -> port, writing the address as text into
 * out (NUL-terminated): getsockname/getpeername of a TCP socket.
 */
static napi_value fdp_inet_name(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(3);
  int32_t fd;
  bool peer;
  char *out;
  size_t cap;
  if (!fdpass_get_i32(env, argv[0], &fd)) THROW_TYPE("fd");
  if (napi_get_value_bool(env, argv[1], &peer) != napi_ok) THROW_TYPE("peer");
  if (!get_buffer(env, argv[2], (void **)&out, &cap) || cap < INET6_ADDRSTRLEN) THROW_TYPE("out");
  struct sockaddr_storage ss;
  socklen_t l = sizeof(ss);
  int r = peer ? getpeername(fd, (struct sockaddr *)&ss, &l) : getsockname(fd, (struct sockaddr *)&ss, &l);
  if (r < 0) return fdpass_int(env, -errno);
  if (ss.ss_family == AF_INET) {
    struct sockaddr_in *sa = (struct sockaddr_in *)&ss;
    inet_ntop(AF_INET, &sa->sin_addr, out, (socklen_t)cap);
    return fdpass_int(env, ntohs(sa->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    struct sockaddr_in6 *sa = (struct sockaddr_in6 *)&ss;
    inet_ntop(AF_INET6, &sa->sin6_addr, out, (socklen_t)cap);
    return fdpass_int(env, ntohs(sa->sin6_port));
  }
  return fdpass_int(env, -EAFNOSUPPORT);
}

/*
 * dropSyns(fd) -> 0: attaches a classic BPF socket filter to a TCP listener
 * that drops segments with SYN set and ACK clear (new connections) and lets
 * everything else through (the final ACKs of handshakes under way). Before
 * a listener is closed, close() resets every connection the kernel queued
 * after the last accept(); with this filter it queues none, so the backlog
 * can be drained and the listener closed without resetting anyone. Clients
 * whose SYN was dropped retry it (after 1 s) and then find the port closed.
 * A TCP socket filter sees the TCP header at offset 0: byte 13 holds the
 * flags. Children accepted later inherit the filter; they never receive a
 * bare SYN.
 */
static napi_value fdp_drop_syns(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(1);
  int32_t fd;
  if (!fdpass_get_i32(env, argv[0], &fd)) THROW_TYPE("fd");
  struct sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 13),           /* A = TCP flags */
      BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0x12),        /* A &= SYN | ACK */
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x02, 0, 1),  /* SYN alone? */
      BPF_STMT(BPF_RET | BPF_K, 0),                     /* drop */
      BPF_STMT(BPF_RET | BPF_K, 0xffffffff),            /* keep */
  };
  struct sock_fprog prog = {.len = sizeof(code) / sizeof(code[0]), .filter = code};
  int r = setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog));
  return fdpass_int(env, r < 0 ? -errno : 0);
}

/* ---- module ------------------------------------------------------------- */

static napi_value constants(napi_env env) {
  napi_value o;
  napi_create_object(env, &o);
  struct {
    const char *name;
    int64_t value;
  } k[] = {
      {"SOCK_STREAM", SOCK_STREAM},   {"SOCK_DGRAM", SOCK_DGRAM},
      {"SOCK_SEQPACKET", SOCK_SEQPACKET}, {"AF_UNIX", AF_UNIX},
      {"AF_INET", AF_INET},           {"AF_INET6", AF_INET6},
      {"MSG_TRUNC", MSG_TRUNC},       {"MSG_CTRUNC", MSG_CTRUNC},
      {"SHUT_RD", SHUT_RD},           {"SHUT_WR", SHUT_WR},
      {"SHUT_RDWR", SHUT_RDWR},       {"FD_CLOEXEC", FD_CLOEXEC},
      {"MAX_FDS", FDPASS_MAX_FDS},    {"RECV_META", RECV_META},
      {"RECV_ADDR", RECV_ADDR},       {"SEND_META", SEND_META},
      {"STOP_EOF", STOP_EOF},
      {"RECV_OFF", RECV_OFF},         {"RECV_LEN", RECV_LEN},
      {"RECV_STORED", RECV_STORED},   {"RECV_NFDS", RECV_NFDS},
      {"RECV_FLAGS", RECV_FLAGS},     {"RECV_HAS_CREDS", RECV_HAS_CREDS},
      {"RECV_PID", RECV_PID},         {"RECV_UID", RECV_UID},
      {"RECV_GID", RECV_GID},         {"RECV_ADDRLEN", RECV_ADDRLEN},
      {"SEND_LEN", SEND_LEN},         {"SEND_NFDS", SEND_NFDS},
      {"SEND_HAS_CREDS", SEND_HAS_CREDS}, {"SEND_PID", SEND_PID},
      {"SEND_UID", SEND_UID},         {"SEND_GID", SEND_GID},         {"RECV_CTL", CTL_SIZE},         {"SUN_PATH_MAX", 108},
      {"SOL_SOCKET", SOL_SOCKET},     {"SO_REUSEADDR", SO_REUSEADDR},
      {"IPPROTO_IPV6", IPPROTO_IPV6}, {"IPV6_V6ONLY", IPV6_V6ONLY},
      {"IPPROTO_TCP", IPPROTO_TCP},   {"TCP_NODELAY", TCP_NODELAY},
      {"ETOOMANYREFS", ETOOMANYREFS},
  };
  for (size_t i = 0; i < sizeof(k) / sizeof(k[0]); i++)
    napi_set_named_property(env, o, k[i].name, fdpass_int(env, k[i].value));
  return o;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor d[] = {
      {"socket", 0, fdp_socket, 0, 0, 0, napi_enumerable, 0},
      {"socketpair", 0, fdp_socketpair, 0, 0, 0, napi_enumerable, 0},
      {"bind", 0, fdp_bind, 0, 0, 0, napi_enumerable, 0},
      {"connect", 0, fdp_connect, 0, 0, 0, napi_enumerable, 0},
      {"listen", 0, fdp_listen, 0, 0, 0, napi_enumerable, 0},
      {"accept", 0, fdp_accept, 0, 0, 0, napi_enumerable, 0},
      {"shutdown", 0, fdp_shutdown, 0, 0, 0, napi_enumerable, 0},
      {"close", 0, fdp_close, 0, 0, 0, napi_enumerable, 0},
      {"closeMany", 0, fdp_close_many, 0, 0, 0, napi_enumerable, 0},
      {"dup", 0, fdp_dup, 0, 0, 0, napi_enumerable, 0},
      {"fdFlags", 0, fdp_fd_flags, 0, 0, 0, napi_enumerable, 0},
      {"setBlocking", 0, fdp_set_blocking, 0, 0, 0, napi_enumerable, 0},
      {"setCloexec", 0, fdp_set_cloexec, 0, 0, 0, napi_enumerable, 0},
      {"nofileLimit", 0, fdp_nofile_limit, 0, 0, 0, napi_enumerable, 0},
      {"sockInfo", 0, fdp_sock_info, 0, 0, 0, napi_enumerable, 0},
      {"peerCred", 0, fdp_peer_cred, 0, 0, 0, napi_enumerable, 0},
      {"setPassCred", 0, fdp_set_pass_cred, 0, 0, 0, napi_enumerable, 0},
      {"sockError", 0, fdp_sock_error, 0, 0, 0, napi_enumerable, 0},
      {"sockName", 0, fdp_sock_name, 0, 0, 0, napi_enumerable, 0},
      {"sendmsgs", 0, fdp_sendmsgs, 0, 0, 0, napi_enumerable, 0},
      {"recvmsgs", 0, fdp_recvmsgs, 0, 0, 0, napi_enumerable, 0},
      {"socketInet", 0, fdp_socket_inet, 0, 0, 0, napi_enumerable, 0},
      {"setIntOpt", 0, fdp_set_int_opt, 0, 0, 0, napi_enumerable, 0},
      {"bindInet", 0, fdp_bind_inet, 0, 0, 0, napi_enumerable, 0},
      {"inetName", 0, fdp_inet_name, 0, 0, 0, napi_enumerable, 0},
      {"dropSyns", 0, fdp_drop_syns, 0, 0, 0, napi_enumerable, 0},
  };
  if (napi_define_properties(env, exports, sizeof(d) / sizeof(d[0]), d) !=
      napi_ok)
    return NULL;
  napi_set_named_property(env, exports, "constants", constants(env));
  if (fdpass_poll_init(env, exports) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
