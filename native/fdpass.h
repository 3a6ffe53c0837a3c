/*
 * fdpass native layer: what the Node-API translation units share.
 *
 * The addon is deliberately thin. Every export wraps one system call (or a
 * loop of one system call until EAGAIN, so that JavaScript is entered once per
 * batch) and returns a number: a result >= 0, or a negative errno. It never
 * builds an error message and never decides policy; src/ does that.
 *
 * One job per file, every function named fdpass_<verb>_<noun>:
 *   addon.c  registration: the table of exports and the constants object
 *   args.c   fetching and checking JavaScript arguments
 *   unix.c   AF_UNIX sockets and generic fd calls (and sun_path encoding)
 *   cmsg.c   control messages (SCM_RIGHTS, SCM_CREDENTIALS): plain C, no napi
 *   msgio.c  sendmsgs/recvmsgs: the batched message loops
 *   scratch.c  the loops' scratch arrays, registered once per thread
 *   inet.c   TCP, the BPF filter and bounded reads of a connection's first
 *            bytes (PROXY header), used only by `fdpass serve`
 *   creds.c  process credentials: no_new_privs, passwd/group lookups
 *            (the workers' --user of `fdpass serve`)
 *   poll.c   readiness watchers: the only file that touches libuv
 *   handoff.c  `fdpass serve`'s accept-and-hand-off of one readiness event
 *            in one crossing, following a plan made in TypeScript
 *
 * binding.gyp defines _GNU_SOURCE for every file (accept4, struct ucred,
 * MSG_CMSG_CLOEXEC, POLLRDHUP).
 */
#ifndef FDPASS_H
#define FDPASS_H

#ifndef NAPI_VERSION
#define NAPI_VERSION 8
#endif
#include <node_api.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

/*
 * Record layouts shared with TypeScript: the constants object exports every
 * name below, and src/ reads records only through those names.
 */

/* One send record (Int32Array, SEND_META ints per message), by field. */
#define SEND_LEN 0
#define SEND_NFDS 1
#define SEND_HAS_CREDS 2
#define SEND_PID 3
#define SEND_UID 4
#define SEND_GID 5
#define SEND_META 6

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
#define RECV_ADDR 108 /* bytes per sender address: sizeof(sun_path) */

/* handoff()'s io array (handoff.c), by int offset: a header, then the
 * sections chan[HANDOFF_MAX_WORKERS], sent[HANDOFF_MAX_WORKERS],
 * plan[MAX_FDS], fds[MAX_FDS]. */
#define HANDOFF_WORKERS 0
#define HANDOFF_COUNT 1
#define HANDOFF_FIRST_ID 2
#define HANDOFF_LISTENER 3
#define HANDOFF_MAX_WORKERS 64
#define HANDOFF_CHAN 4
#define HANDOFF_SENT (HANDOFF_CHAN + HANDOFF_MAX_WORKERS)
#define HANDOFF_PLAN (HANDOFF_SENT + HANDOFF_MAX_WORKERS)
#define HANDOFF_FDS (HANDOFF_PLAN + 253)
#define HANDOFF_SIZE (HANDOFF_FDS + 253)

/* status[0] after recvmsgs: why the loop stopped */
#define STOP_DRAINED 0 /* EAGAIN or a buffer filled up */
#define STOP_EOF 1

/* ---- args.c ------------------------------------------------------------- */

/* Fetches exactly n arguments into argv[] (missing ones are undefined). */
#define FDPASS_ARGS(n)                                                        \
  size_t argc = (n);                                                          \
  napi_value argv[(n) > 0 ? (n) : 1];                                         \
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok)        \
    return NULL;

/* Throws TypeError(code ERR_INVALID_ARG_TYPE) naming the bad argument. The
 * caller is a napi callback with `env` in scope; it returns at once. */
#define FDPASS_THROW_TYPE(what)                                               \
  do {                                                                        \
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", (what));               \
    return NULL;                                                              \
  } while (0)

/* Each returns 1 when v has the type asked for (and fills *out), else 0. */
int fdpass_get_i32(napi_env env, napi_value v, int32_t *out);
int fdpass_get_bool(napi_env env, napi_value v, bool *out);
/* A Buffer or a plain Uint8Array: its bytes, borrowed for this call. */
int fdpass_get_buffer(napi_env env, napi_value v, void **data, size_t *len);
/* An Int32Array: its ints, borrowed for this call. */
int fdpass_get_i32_array(napi_env env, napi_value v, int32_t **data,
                         size_t *len);
/* 1 for null and undefined. */
int fdpass_is_nullish(napi_env env, napi_value v);
/* The JavaScript number for a result (>= 0) or a -errno. */
napi_value fdpass_create_int(napi_env env, int64_t v);

/* ---- unix.c: sun_path bytes, shared with msgio.c -------------------------- */

/* Builds a sockaddr_un from raw sun_path bytes (a path without terminator,
 * or an abstract name starting with NUL). -ENAMETOOLONG if they do not fit. */
int fdpass_make_unix_addr(const void *bytes, size_t len, struct sockaddr_un *sa,
                          socklen_t *salen);
/* Copies the sun_path bytes of an address the kernel returned into out (at
 * most cap), without a path's terminator; returns how many. */
size_t fdpass_read_unix_addr(const struct sockaddr_un *sa, socklen_t salen,
                             void *out, size_t cap);

/* ---- msgio.c: one sendmsg() with fds, shared with handoff.c -------------- */

/* One sendmsg() of data[0..len) with fds[0..nfds) as SCM_RIGHTS (and creds
 * as SCM_CREDENTIALS when not NULL), to `to` when tolen is not 0; never
 * blocks, retries EINTR, raises no SIGPIPE (msgio.c). Returns the bytes
 * sent, or -errno (-EINVAL for more than FDPASS_MAX_FDS fds). The fds stay
 * the caller's. */
struct ucred;
ssize_t fdpass_sendmsg_fds(int fd, const void *data, size_t len,
                           const int32_t *fds, size_t nfds,
                           const struct ucred *creds,
                           const struct sockaddr_un *to, socklen_t tolen);

/* ---- exports, registered by addon.c ----------------------------------------- */

#define FDPASS_EXPORT(name) napi_value name(napi_env env, napi_callback_info info)

/* unix.c */
FDPASS_EXPORT(fdpass_open_socket);
FDPASS_EXPORT(fdpass_open_socketpair);
FDPASS_EXPORT(fdpass_bind_unix);
FDPASS_EXPORT(fdpass_connect_unix);
FDPASS_EXPORT(fdpass_listen_socket);
FDPASS_EXPORT(fdpass_accept_conns);
FDPASS_EXPORT(fdpass_shutdown_socket);
FDPASS_EXPORT(fdpass_close_fd);
FDPASS_EXPORT(fdpass_close_fds);
FDPASS_EXPORT(fdpass_dup_fd);
FDPASS_EXPORT(fdpass_get_fd_flags);
FDPASS_EXPORT(fdpass_set_blocking);
FDPASS_EXPORT(fdpass_set_cloexec);
FDPASS_EXPORT(fdpass_get_nofile_limit);
FDPASS_EXPORT(fdpass_get_sock_info);
FDPASS_EXPORT(fdpass_get_peer_cred);
FDPASS_EXPORT(fdpass_set_pass_cred);
FDPASS_EXPORT(fdpass_get_sock_error);
FDPASS_EXPORT(fdpass_get_sock_name);
/* msgio.c */
FDPASS_EXPORT(fdpass_send_msgs);
FDPASS_EXPORT(fdpass_recv_msgs);
/* scratch.c */
FDPASS_EXPORT(fdpass_register_send_scratch);
FDPASS_EXPORT(fdpass_register_recv_scratch);
/* inet.c */
FDPASS_EXPORT(fdpass_open_inet_socket);
FDPASS_EXPORT(fdpass_set_int_opt);
FDPASS_EXPORT(fdpass_get_int_opt);
FDPASS_EXPORT(fdpass_bind_inet);
FDPASS_EXPORT(fdpass_get_inet_name);
FDPASS_EXPORT(fdpass_drop_syns);
FDPASS_EXPORT(fdpass_recv_bytes);
/* creds.c */
FDPASS_EXPORT(fdpass_set_no_new_privs);
FDPASS_EXPORT(fdpass_get_user_by_name);
FDPASS_EXPORT(fdpass_get_user_by_id);
FDPASS_EXPORT(fdpass_get_group_by_name);
/* handoff.c */
FDPASS_EXPORT(fdpass_hand_off);
/* poll.c */
FDPASS_EXPORT(fdpass_open_poll);
FDPASS_EXPORT(fdpass_set_poll);
FDPASS_EXPORT(fdpass_ref_poll);
FDPASS_EXPORT(fdpass_close_poll);

/* poll.c: per-environment state and teardown; called once from module init. */
napi_status fdpass_init_poll(napi_env env);

#endif
