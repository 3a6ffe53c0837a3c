/*
 * fdpass native layer: module registration. The table below is every
 * function JavaScript sees (src/native.ts types exactly these), and
 * `constants` every number it needs from C: socket constants, limits, and
 * the field names of the records msgio.c writes. Names and values here are
 * an interface: renaming one breaks src/.
 */
#include "fdpass.h"
#include "cmsg.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

static napi_value fdpass_create_constants(napi_env env) {
  napi_value o;
  if (napi_create_object(env, &o) != napi_ok) return NULL;
  static const struct {
    const char *name;
    int64_t value;
  } k[] = {
      {"SOCK_STREAM", SOCK_STREAM},
      {"SOCK_DGRAM", SOCK_DGRAM},
      {"SOCK_SEQPACKET", SOCK_SEQPACKET},
      {"AF_UNIX", AF_UNIX},
      {"AF_INET", AF_INET},
      {"AF_INET6", AF_INET6},
      {"MSG_TRUNC", MSG_TRUNC},
      {"MSG_CTRUNC", MSG_CTRUNC},
      {"SHUT_RD", SHUT_RD},
      {"SHUT_WR", SHUT_WR},
      {"SHUT_RDWR", SHUT_RDWR},
      {"FD_CLOEXEC", FD_CLOEXEC},
      {"MAX_FDS", FDPASS_MAX_FDS},
      {"RECV_META", RECV_META},
      {"RECV_ADDR", RECV_ADDR},
      {"SEND_META", SEND_META},
      {"STOP_EOF", STOP_EOF},
      {"RECV_OFF", RECV_OFF},
      {"RECV_LEN", RECV_LEN},
      {"RECV_STORED", RECV_STORED},
      {"RECV_NFDS", RECV_NFDS},
      {"RECV_FLAGS", RECV_FLAGS},
      {"RECV_HAS_CREDS", RECV_HAS_CREDS},
      {"RECV_PID", RECV_PID},
      {"RECV_UID", RECV_UID},
      {"RECV_GID", RECV_GID},
      {"RECV_ADDRLEN", RECV_ADDRLEN},
      {"SEND_LEN", SEND_LEN},
      {"SEND_NFDS", SEND_NFDS},
      {"SEND_HAS_CREDS", SEND_HAS_CREDS},
      {"SEND_PID", SEND_PID},
      {"SEND_UID", SEND_UID},
      {"SEND_GID", SEND_GID},
      {"RECV_CTL", FDPASS_CMSG_RECV_SPACE},
      {"SUN_PATH_MAX", sizeof(((struct sockaddr_un *)0)->sun_path)},
      {"SOL_SOCKET", SOL_SOCKET},
      {"SO_REUSEADDR", SO_REUSEADDR},
      {"IPPROTO_IPV6", IPPROTO_IPV6},
      {"IPV6_V6ONLY", IPV6_V6ONLY},
      {"IPPROTO_TCP", IPPROTO_TCP},
      {"TCP_NODELAY", TCP_NODELAY},
      {"TCP_KEEPIDLE", TCP_KEEPIDLE},
      {"SO_KEEPALIVE", SO_KEEPALIVE},
      {"TCP_DEFER_ACCEPT", TCP_DEFER_ACCEPT},
      {"ETOOMANYREFS", ETOOMANYREFS},
      {"O_PATH", O_PATH},
      {"HANDOFF_WORKERS", HANDOFF_WORKERS},
      {"HANDOFF_COUNT", HANDOFF_COUNT},
      {"HANDOFF_FIRST_ID", HANDOFF_FIRST_ID},
      {"HANDOFF_LISTENER", HANDOFF_LISTENER},
      {"HANDOFF_MAX_WORKERS", HANDOFF_MAX_WORKERS},
      {"HANDOFF_CHAN", HANDOFF_CHAN},
      {"HANDOFF_SENT", HANDOFF_SENT},
      {"HANDOFF_PLAN", HANDOFF_PLAN},
      {"HANDOFF_FDS", HANDOFF_FDS},
      {"HANDOFF_SIZE", HANDOFF_SIZE},
  };
  for (size_t i = 0; i < sizeof(k) / sizeof(k[0]); i++)
    if (napi_set_named_property(env, o, k[i].name,
                                fdpass_create_int(env, k[i].value)) != napi_ok)
      return NULL;
  return o;
}

#define FDPASS_METHOD(js, c) {js, 0, c, 0, 0, 0, napi_enumerable, 0}

static napi_value fdpass_init_module(napi_env env, napi_value exports) {
  static const napi_property_descriptor d[] = {
      /* unix.c */
      FDPASS_METHOD("socket", fdpass_open_socket),
      FDPASS_METHOD("socketpair", fdpass_open_socketpair),
      FDPASS_METHOD("bind", fdpass_bind_unix),
      FDPASS_METHOD("connect", fdpass_connect_unix),
      FDPASS_METHOD("listen", fdpass_listen_socket),
      FDPASS_METHOD("accept", fdpass_accept_conns),
      FDPASS_METHOD("shutdown", fdpass_shutdown_socket),
      FDPASS_METHOD("close", fdpass_close_fd),
      FDPASS_METHOD("closeMany", fdpass_close_fds),
      FDPASS_METHOD("dup", fdpass_dup_fd),
      FDPASS_METHOD("fdFlags", fdpass_get_fd_flags),
      FDPASS_METHOD("setBlocking", fdpass_set_blocking),
      FDPASS_METHOD("setCloexec", fdpass_set_cloexec),
      FDPASS_METHOD("nofileLimit", fdpass_get_nofile_limit),
      FDPASS_METHOD("sockInfo", fdpass_get_sock_info),
      FDPASS_METHOD("peerCred", fdpass_get_peer_cred),
      FDPASS_METHOD("setPassCred", fdpass_set_pass_cred),
      FDPASS_METHOD("sockError", fdpass_get_sock_error),
      FDPASS_METHOD("sockName", fdpass_get_sock_name),
      /* msgio.c */
      FDPASS_METHOD("sendmsgs", fdpass_send_msgs),
      FDPASS_METHOD("recvmsgs", fdpass_recv_msgs),
      /* scratch.c */
      FDPASS_METHOD("sendScratch", fdpass_register_send_scratch),
      FDPASS_METHOD("recvScratch", fdpass_register_recv_scratch),
      /* inet.c */
      FDPASS_METHOD("socketInet", fdpass_open_inet_socket),
      FDPASS_METHOD("setIntOpt", fdpass_set_int_opt),
      FDPASS_METHOD("getIntOpt", fdpass_get_int_opt),
      FDPASS_METHOD("bindInet", fdpass_bind_inet),
      FDPASS_METHOD("inetName", fdpass_get_inet_name),
      FDPASS_METHOD("dropSyns", fdpass_drop_syns),
      FDPASS_METHOD("recv", fdpass_recv_bytes),
      /* creds.c */
      FDPASS_METHOD("noNewPrivs", fdpass_set_no_new_privs),
      FDPASS_METHOD("getpwnam", fdpass_get_user_by_name),
      FDPASS_METHOD("getpwuid", fdpass_get_user_by_id),
      FDPASS_METHOD("getgrnam", fdpass_get_group_by_name),
      /* handoff.c */
      FDPASS_METHOD("handoff", fdpass_hand_off),
      /* poll.c */
      FDPASS_METHOD("pollOpen", fdpass_open_poll),
      FDPASS_METHOD("pollSet", fdpass_set_poll),
      FDPASS_METHOD("pollRef", fdpass_ref_poll),
      FDPASS_METHOD("pollClose", fdpass_close_poll),
  };
  if (fdpass_init_poll(env) != napi_ok) return NULL;
  if (napi_define_properties(env, exports, sizeof(d) / sizeof(d[0]), d) !=
      napi_ok)
    return NULL;
  napi_value constants = fdpass_create_constants(env);
  if (!constants ||
      napi_set_named_property(env, exports, "constants", constants) != napi_ok)
    return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, fdpass_init_module)
