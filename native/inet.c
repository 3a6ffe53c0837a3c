/*
 * fdpass native layer: TCP sockets for the listeners of `fdpass serve`, the
 * BPF filter that lets a listener drain without resetting anyone, and the
 * bounded reads of a connection's first bytes (the PROXY protocol header).
 * Nothing else uses these; accept() is unix.c's, for every kind of listener.
 */
#include "fdpass.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/filter.h>
#include <netinet/in.h>

/* socketInet(family) -> fd: AF_INET or AF_INET6 SOCK_STREAM, cloexec, nonblocking */
napi_value fdpass_open_inet_socket(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(1);
  int32_t family;
  if (!fdpass_get_i32(env, argv[0], &family)) FDPASS_THROW_TYPE("family");
  if (family != AF_INET && family != AF_INET6)
    return fdpass_create_int(env, -EAFNOSUPPORT);
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  return fdpass_create_int(env, fd < 0 ? -errno : fd);
}

/* setIntOpt(fd, level, name, value) -> 0: setsockopt with an int */
napi_value fdpass_set_int_opt(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(4);
  int32_t fd, level, name, value;
  if (!fdpass_get_i32(env, argv[0], &fd) || !fdpass_get_i32(env, argv[1], &level) ||
      !fdpass_get_i32(env, argv[2], &name) || !fdpass_get_i32(env, argv[3], &value))
    FDPASS_THROW_TYPE("setIntOpt");
  int r = setsockopt(fd, level, name, &value, sizeof(value));
  return fdpass_create_int(env, r < 0 ? -errno : 0);
}

/* getIntOpt(fd, level, name, out Int32Array[1]) -> 0: getsockopt of an int into out[0] */
napi_value fdpass_get_int_opt(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(4);
  int32_t fd, level, name;
  int32_t *out;
  size_t olen;
  if (!fdpass_get_i32(env, argv[0], &fd) || !fdpass_get_i32(env, argv[1], &level) ||
      !fdpass_get_i32(env, argv[2], &name) || !fdpass_get_i32_array(env, argv[3], &out, &olen) || olen < 1)
    FDPASS_THROW_TYPE("getIntOpt");
  int value = 0;
  socklen_t len = sizeof(value);
  int r = getsockopt(fd, level, name, &value, &len);
  if (r == 0) out[0] = value;
  return fdpass_create_int(env, r < 0 ? -errno : 0);
}

/* bindInet(fd, family, ip string, port) -> 0 (-EINVAL for an unparsable ip) */
napi_value fdpass_bind_inet(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(4);
  int32_t fd, family, port;
  char ip[INET6_ADDRSTRLEN + 1];
  size_t iplen;
  if (!fdpass_get_i32(env, argv[0], &fd) || !fdpass_get_i32(env, argv[1], &family) ||
      !fdpass_get_i32(env, argv[3], &port))
    FDPASS_THROW_TYPE("bindInet");
  if (napi_get_value_string_utf8(env, argv[2], ip, sizeof(ip), &iplen) != napi_ok)
    FDPASS_THROW_TYPE("ip");
  if (port < 0 || port > 65535) return fdpass_create_int(env, -EINVAL);
  int r;
  if (family == AF_INET) {
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1)
      return fdpass_create_int(env, -EINVAL);
    r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
  } else if (family == AF_INET6) {
    struct sockaddr_in6 sa = {.sin6_family = AF_INET6,
                              .sin6_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET6, ip, &sa.sin6_addr) != 1)
      return fdpass_create_int(env, -EINVAL);
    r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
  } else {
    return fdpass_create_int(env, -EAFNOSUPPORT);
  }
  return fdpass_create_int(env, r < 0 ? -errno : 0);
}

/*
 * recv(fd, buf, len, peek) -> bytes received (0: the peer closed): one
 * recv() of at most len bytes (and at most buf's size) into buf, never
 * blocking (MSG_DONTWAIT: -EAGAIN when nothing is there); with peek
 * (MSG_PEEK) the bytes stay queued for the next reader. A PROXY protocol
 * header is taken this way, peeked at, then received exactly, so that no
 * byte after it leaves the socket.
 */
napi_value fdpass_recv_bytes(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(4);
  int32_t fd, len;
  bool peek;
  void *buf;
  size_t cap;
  if (!fdpass_get_i32(env, argv[0], &fd)) FDPASS_THROW_TYPE("fd");
  if (!fdpass_get_buffer(env, argv[1], &buf, &cap)) FDPASS_THROW_TYPE("buf");
  if (!fdpass_get_i32(env, argv[2], &len) || len < 0) FDPASS_THROW_TYPE("len");
  if (!fdpass_get_bool(env, argv[3], &peek)) FDPASS_THROW_TYPE("peek");
  if ((size_t)len > cap) len = (int32_t)cap;
  ssize_t n;
  do {
    n = recv(fd, buf, (size_t)len, MSG_DONTWAIT | (peek ? MSG_PEEK : 0));
  } while (n < 0 && errno == EINTR);
  return fdpass_create_int(env, n < 0 ? -errno : n);
}

/*
 * inetName(fd, peer, out Buffer) -> port, writing the address as text into
 * out (NUL-terminated): getsockname/getpeername of a TCP socket.
 */
napi_value fdpass_get_inet_name(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(3);
  int32_t fd;
  bool peer;
  char *out;
  size_t cap;
  if (!fdpass_get_i32(env, argv[0], &fd)) FDPASS_THROW_TYPE("fd");
  if (!fdpass_get_bool(env, argv[1], &peer)) FDPASS_THROW_TYPE("peer");
  if (!fdpass_get_buffer(env, argv[2], (void **)&out, &cap) ||
      cap < INET6_ADDRSTRLEN)
    FDPASS_THROW_TYPE("out");
  struct sockaddr_storage ss;
  socklen_t l = sizeof(ss);
  int r = peer ? getpeername(fd, (struct sockaddr *)&ss, &l)
               : getsockname(fd, (struct sockaddr *)&ss, &l);
  if (r < 0) return fdpass_create_int(env, -errno);
  if (ss.ss_family == AF_INET) {
    struct sockaddr_in *sa = (struct sockaddr_in *)&ss;
    inet_ntop(AF_INET, &sa->sin_addr, out, (socklen_t)cap);
    return fdpass_create_int(env, ntohs(sa->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    struct sockaddr_in6 *sa = (struct sockaddr_in6 *)&ss;
    inet_ntop(AF_INET6, &sa->sin6_addr, out, (socklen_t)cap);
    return fdpass_create_int(env, ntohs(sa->sin6_port));
  }
  return fdpass_create_int(env, -EAFNOSUPPORT);
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
napi_value fdpass_drop_syns(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(1);
  int32_t fd;
  if (!fdpass_get_i32(env, argv[0], &fd)) FDPASS_THROW_TYPE("fd");
  struct sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 13),          /* A = TCP flags */
      BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0x12),       /* A &= SYN | ACK */
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x02, 0, 1), /* SYN alone? */
      BPF_STMT(BPF_RET | BPF_K, 0),                    /* drop */
      BPF_STMT(BPF_RET | BPF_K, 0xffffffff),           /* keep */
  };
  struct sock_fprog prog = {.len = sizeof(code) / sizeof(code[0]),
                            .filter = code};
  int r = setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog));
  return fdpass_create_int(env, r < 0 ? -errno : 0);
}
