/*
 * fdpass native layer: shared declarations.
 *
 * The addon is deliberately thin. Every export wraps one system call (or a
 * loop of one system call until EAGAIN, so that JavaScript is entered once per
 * batch) and returns a number: a result >= 0, or a negative errno. It never
 * builds an error message and never decides policy; src/ does that.
 */
#ifndef FDPASS_H
#define FDPASS_H

#define NAPI_VERSION 8
#include <node_api.h>

/* Linux's SCM_MAX_FD: the most fds one sendmsg() may carry. */
#define FDPASS_MAX_FDS 253

/* Arity-checked argument fetching shared by both translation units. */
#define FDPASS_ARGS(n)                                                        \
  size_t argc = (n);                                                          \
  napi_value argv[(n) > 0 ? (n) : 1];                                         \
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok)        \
    return NULL;

int fdpass_get_i32(napi_env env, napi_value v, int32_t *out);
napi_value fdpass_int(napi_env env, int64_t v);

/* poll.c: the only file that touches libuv. */
napi_status fdpass_poll_init(napi_env env, napi_value exports);

#endif
