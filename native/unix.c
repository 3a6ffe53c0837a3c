/*
 * fdpass native layer: AF_UNIX sockets and the generic fd calls.
 *
 * Conventions (see fdpass.h): each function returns >= 0 or -errno. Sockets
 * are always created SOCK_CLOEXEC | SOCK_NONBLOCK so that no concurrent
 * spawn() can inherit them; accepted ones too (accept4).
 *
 * Addresses travel as the raw bytes of sun_path: a path is its bytes (no
 * terminator), an abstract name starts with a NUL byte. src/socket/address.ts
 * validates lengths; fdpass_make_unix_addr re-checks so that no input can
 * overflow sun_path.
 */
#include "fdpass.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* ---- sun_path ------------------------------------------------------------ */

int fdpass_make_unix_addr(const void *bytes, size_t len, struct sockaddr_un *sa,
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

size_t fdpass_read_unix_addr(const struct sockaddr_un *sa, socklen_t salen,
                             void *out, size_t cap) {
  const size_t base = offsetof(struct sockaddr_un, sun_path);
  size_t len = salen > base ? salen - base : 0;
  if (len > sizeof(sa->sun_path)) len = sizeof(sa->sun_path);
  if (len > cap) len = cap;
  /* Paths may come back with their terminator; drop it. */
  if (len > 0 && sa->sun_path[0] != '\0') len = strnlen(sa->sun_path, len);
  memcpy(out, sa->sun_path, len);
  return len;
}

/* ---- adapters ------------------------------------------------------------- */

/*
 * Most exports take an fd (or an int) and one more argument, and return what
 * one system call gave: a `run` function does the call (no napi; >= 0 or
 * -errno) and one of these adapters fetches the arguments for it.
 */
static napi_value fdpass_call_with_fd(napi_env env, napi_callback_info info,
                                      int (*run)(int fd)) {
  FDPASS_ARGS(1);
  int32_t fd;
  if (!fdpass_get_i32(env, argv[0], &fd)) FDPASS_THROW_TYPE("fd");
  return fdpass_create_int(env, run(fd));
}

static napi_value fdpass_call_with_int(napi_env env, napi_callback_info info,
                                       const char *what,
                                       int (*run)(int fd, int32_t v)) {
  FDPASS_ARGS(2);
  int32_t fd, v;
  if (!fdpass_get_i32(env, argv[0], &fd)) FDPASS_THROW_TYPE("fd");
  if (!fdpass_get_i32(env, argv[1], &v)) FDPASS_THROW_TYPE(what);
  return fdpass_create_int(env, run(fd, v));
}

static napi_value fdpass_call_with_bool(napi_env env, napi_callback_info info,
                                        int (*run)(int fd, bool on)) {
  FDPASS_ARGS(2);
  int32_t fd;
  bool on;
  if (!fdpass_get_i32(env, argv[0], &fd)) FDPASS_THROW_TYPE("fd");
  if (!fdpass_get_bool(env, argv[1], &on)) FDPASS_THROW_TYPE("on");
  return fdpass_create_int(env, run(fd, on));
}

/* (an int, out Int32Array of at least `need`): run fills out[0..need). */
static napi_value fdpass_call_with_out(napi_env env, napi_callback_info info,
                                       const char *first, size_t need,
                                       int (*run)(int32_t v, int32_t *out)) {
  FDPASS_ARGS(2);
  int32_t v, *out;
  size_t n;
  if (!fdpass_get_i32(env, argv[0], &v)) FDPASS_THROW_TYPE(first);
  if (!fdpass_get_i32_array(env, argv[1], &out, &n) || n < need)
    FDPASS_THROW_TYPE("out");
  return fdpass_create_int(env, run(v, out));
}

/* (fd, addr bytes): run gets the sockaddr_un built from the bytes. */
static napi_value fdpass_call_with_addr(
    napi_env env, napi_callback_info info,
    int (*run)(int fd, const struct sockaddr_un *sa, socklen_t len)) {
  FDPASS_ARGS(2);
  int32_t fd;
  void *bytes;
  size_t len;
  if (!fdpass_get_i32(env, argv[0], &fd)) FDPASS_THROW_TYPE("fd");
  if (!fdpass_get_buffer(env, argv[1], &bytes, &len)) FDPASS_THROW_TYPE("addr");
  struct sockaddr_un sa;
  socklen_t salen;
  int r = fdpass_make_unix_addr(bytes, len, &sa, &salen);
  if (r < 0) return fdpass_create_int(env, r);
  return fdpass_create_int(env, run(fd, &sa, salen));
}

/* ---- socket lifecycle ------------------------------------------------------ */

/* socket(type) -> fd */
napi_value fdpass_open_socket(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(1);
  int32_t type;
  if (!fdpass_get_i32(env, argv[0], &type)) FDPASS_THROW_TYPE("type");
  int fd = socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  return fdpass_create_int(env, fd < 0 ? -errno : fd);
}

static int fdpass_run_socketpair(int32_t type, int32_t *out) {
  int sv[2];
  if (socketpair(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0)
    return -errno;
  out[0] = sv[0];
  out[1] = sv[1];
  return 0;
}

/* socketpair(type, out Int32Array[2]) -> 0 */
napi_value fdpass_open_socketpair(napi_env env, napi_callback_info info) {
  return fdpass_call_with_out(env, info, "type", 2, fdpass_run_socketpair);
}

/* (Not bind itself as the run function: with _GNU_SOURCE glibc declares
 * its address argument as a transparent union.) */
static int fdpass_run_bind(int fd, const struct sockaddr_un *sa, socklen_t len) {
  return bind(fd, (const struct sockaddr *)sa, len) < 0 ? -errno : 0;
}

/* bind(fd, addr) -> 0 */
napi_value fdpass_bind_unix(napi_env env, napi_callback_info info) {
  return fdpass_call_with_addr(env, info, fdpass_run_bind);
}

static int fdpass_run_connect(int fd, const struct sockaddr_un *sa,
                              socklen_t len) {
  return connect(fd, (const struct sockaddr *)sa, len) < 0 ? -errno : 0;
}

/* connect(fd, addr) -> 0 */
napi_value fdpass_connect_unix(napi_env env, napi_callback_info info) {
  return fdpass_call_with_addr(env, info, fdpass_run_connect);
}

static int fdpass_run_listen(int fd, int32_t backlog) {
  return listen(fd, backlog) < 0 ? -errno : 0;
}

/* listen(fd, backlog) -> 0 */
napi_value fdpass_listen_socket(napi_env env, napi_callback_info info) {
  return fdpass_call_with_int(env, info, "backlog", fdpass_run_listen);
}

/*
 * accept(fd, out Int32Array) -> count
 * Accepts until EAGAIN or until out is full. Works for any listening socket
 * (AF_UNIX or TCP). When nothing was accepted the error is returned; when
 * some were, they are returned and the error (say EMFILE) shows again next
 * call.
 */
napi_value fdpass_accept_conns(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(2);
  int32_t fd, *out;
  size_t cap, n = 0;
  if (!fdpass_get_i32(env, argv[0], &fd)) FDPASS_THROW_TYPE("fd");
  if (!fdpass_get_i32_array(env, argv[1], &out, &cap)) FDPASS_THROW_TYPE("out");
  while (n < cap) {
    int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (c < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (n == 0) return fdpass_create_int(env, -errno);
      break;
    }
    out[n++] = c;
  }
  return fdpass_create_int(env, (int64_t)n);
}

static int fdpass_run_shutdown(int fd, int32_t how) {
  return shutdown(fd, how) < 0 ? -errno : 0;
}

/* shutdown(fd, how) -> 0 */
napi_value fdpass_shutdown_socket(napi_env env, napi_callback_info info) {
  return fdpass_call_with_int(env, info, "how", fdpass_run_shutdown);
}

/* ---- any fd --------------------------------------------------------------- */

/* EINTR counts as closed on Linux: never retry. */
static int fdpass_run_close(int fd) {
  return close(fd) < 0 && errno != EINTR ? -errno : 0;
}

/* close(fd) -> 0 */
napi_value fdpass_close_fd(napi_env env, napi_callback_info info) {
  return fdpass_call_with_fd(env, info, fdpass_run_close);
}

/* closeMany(fds Int32Array, start, count) -> number that failed (EBADF) */
napi_value fdpass_close_fds(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(3);
  int32_t *fds, start, count;
  size_t n;
  if (!fdpass_get_i32_array(env, argv[0], &fds, &n)) FDPASS_THROW_TYPE("fds");
  if (!fdpass_get_i32(env, argv[1], &start)) FDPASS_THROW_TYPE("start");
  if (!fdpass_get_i32(env, argv[2], &count)) FDPASS_THROW_TYPE("count");
  if (start < 0 || count < 0 || (size_t)start + (size_t)count > n)
    FDPASS_THROW_TYPE("range");
  int failed = 0;
  for (int32_t i = start; i < start + count; i++)
    if (close(fds[i]) < 0 && errno == EBADF) failed++;
  return fdpass_create_int(env, failed);
}

static int fdpass_run_dup(int fd) {
  int r = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  return r < 0 ? -errno : r;
}

/* dup(fd) -> new fd with close-on-exec */
napi_value fdpass_dup_fd(napi_env env, napi_callback_info info) {
  return fdpass_call_with_fd(env, info, fdpass_run_dup);
}

static int fdpass_run_fd_flags(int fd) {
  int r = fcntl(fd, F_GETFD);
  return r < 0 ? -errno : r;
}

/* fdFlags(fd) -> F_GETFD flags; the cheapest "is this fd open?" check */
napi_value fdpass_get_fd_flags(napi_env env, napi_callback_info info) {
  return fdpass_call_with_fd(env, info, fdpass_run_fd_flags);
}

/* nofileLimit() -> the soft RLIMIT_NOFILE (capped at 2^31-1) */
napi_value fdpass_get_nofile_limit(napi_env env, napi_callback_info info) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) < 0) return fdpass_create_int(env, -errno);
  return fdpass_create_int(
      env, rl.rlim_cur > 0x7fffffff ? 0x7fffffff : (int64_t)rl.rlim_cur);
}

/* Sets (on) or clears one flag with fcntl's get/set pair -> 0 or -errno. */
static int fdpass_update_fd_flag(int fd, int get, int set, int flag, bool on) {
  int fl = fcntl(fd, get);
  if (fl < 0) return -errno;
  fl = on ? (fl | flag) : (fl & ~flag);
  return fcntl(fd, set, fl) < 0 ? -errno : 0;
}

static int fdpass_run_cloexec(int fd, bool on) {
  return fdpass_update_fd_flag(fd, F_GETFD, F_SETFD, FD_CLOEXEC, on);
}

/* setCloexec(fd, on) -> 0: for inherited fds (systemd's come without it) */
napi_value fdpass_set_cloexec(napi_env env, napi_callback_info info) {
  return fdpass_call_with_bool(env, info, fdpass_run_cloexec);
}

static int fdpass_run_blocking(int fd, bool on) {
  return fdpass_update_fd_flag(fd, F_GETFL, F_SETFL, O_NONBLOCK, !on);
}

/* setBlocking(fd, on) -> 0: for fds handed to code that expects blocking I/O */
napi_value fdpass_set_blocking(napi_env env, napi_callback_info info) {
  return fdpass_call_with_bool(env, info, fdpass_run_blocking);
}

/* ---- socket options and names ------------------------------------------------ */

static int fdpass_run_sock_info(int fd, int32_t *out) {
  static const int opts[3] = {SO_DOMAIN, SO_TYPE, SO_ACCEPTCONN};
  for (int i = 0; i < 3; i++) {
    int v = 0;
    socklen_t l = sizeof(v);
    if (getsockopt(fd, SOL_SOCKET, opts[i], &v, &l) < 0) return -errno;
    out[i] = v;
  }
  return 0;
}

/* sockInfo(fd, out Int32Array[3]) -> 0: [SO_DOMAIN, SO_TYPE, SO_ACCEPTCONN] */
napi_value fdpass_get_sock_info(napi_env env, napi_callback_info info) {
  return fdpass_call_with_out(env, info, "fd", 3, fdpass_run_sock_info);
}

static int fdpass_run_peer_cred(int fd, int32_t *out) {
  struct ucred uc;
  socklen_t l = sizeof(uc);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &l) < 0) return -errno;
  out[0] = uc.pid;
  out[1] = (int32_t)uc.uid;
  out[2] = (int32_t)uc.gid;
  return 0;
}

/* peerCred(fd, out Int32Array[3]) -> 0: SO_PEERCRED as [pid, uid, gid] */
napi_value fdpass_get_peer_cred(napi_env env, napi_callback_info info) {
  return fdpass_call_with_out(env, info, "fd", 3, fdpass_run_peer_cred);
}

static int fdpass_run_sock_error(int fd) {
  int v = 0;
  socklen_t l = sizeof(v);
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &v, &l) < 0) return -errno;
  return -v;
}

/* sockError(fd) -> -errno pending on the socket (SO_ERROR, which clears it), or 0 */
napi_value fdpass_get_sock_error(napi_env env, napi_callback_info info) {
  return fdpass_call_with_fd(env, info, fdpass_run_sock_error);
}

static int fdpass_run_pass_cred(int fd, bool on) {
  int v = on ? 1 : 0;
  return setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &v, sizeof(v)) < 0 ? -errno : 0;
}

/* setPassCred(fd, on) -> 0: SO_PASSCRED, so that SCM_CREDENTIALS arrive */
napi_value fdpass_set_pass_cred(napi_env env, napi_callback_info info) {
  return fdpass_call_with_bool(env, info, fdpass_run_pass_cred);
}

/* sockName(fd, out Buffer, peer) -> length of sun_path bytes written */
napi_value fdpass_get_sock_name(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(3);
  int32_t fd;
  void *buf;
  size_t cap;
  bool peer;
  if (!fdpass_get_i32(env, argv[0], &fd)) FDPASS_THROW_TYPE("fd");
  if (!fdpass_get_buffer(env, argv[1], &buf, &cap)) FDPASS_THROW_TYPE("out");
  if (!fdpass_get_bool(env, argv[2], &peer)) FDPASS_THROW_TYPE("peer");
  struct sockaddr_un sa;
  socklen_t l = sizeof(sa);
  memset(&sa, 0, sizeof(sa));
  int r = peer ? getpeername(fd, (struct sockaddr *)&sa, &l)
               : getsockname(fd, (struct sockaddr *)&sa, &l);
  if (r < 0) return fdpass_create_int(env, -errno);
  if (sa.sun_family != AF_UNIX) return fdpass_create_int(env, -EAFNOSUPPORT);
  return fdpass_create_int(env, (int64_t)fdpass_read_unix_addr(&sa, l, buf, cap));
}
