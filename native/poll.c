/*
 * fdpass native layer: readiness watchers. This is the only file that calls
 * libuv, whose ABI is not promised across Node majors; keep it that way.
 *
 *   pollOpen(fd, callback) -> handle | -errno   callback(events | -errno)
 *   pollSet(handle, events) -> 0 | -errno       1 readable, 2 writable, 0 stop
 *   pollRef(handle, bool)                       keep the loop alive or not
 *   pollClose(handle)                           stop; safe twice
 *
 * The loop is the environment's (napi_get_uv_event_loop), so the addon works
 * in worker threads. A watcher holds a strong reference to its callback until
 * pollClose(); an environment cleanup hook closes whatever JavaScript left
 * open. Memory is freed in uv_close's callback, never before.
 */
#include "fdpass.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

typedef struct fdpass_poll fdpass_poll;
typedef struct {
  fdpass_poll *head;
} fdpass_instance;

struct fdpass_poll {
  napi_env env;
  napi_ref callback;
  napi_async_context ctx;
  fdpass_instance *inst;
  fdpass_poll *prev, *next;
  int closing;
  uv_poll_t handle;
  /* Slack in case a later libuv's uv_poll_t is larger than the headers this
   * was compiled against: the loop writes only inside the handle it owns. */
  char slack[256];
};

static void fdpass_unlink_poll(fdpass_poll *p) {
  if (p->prev) p->prev->next = p->next;
  else if (p->inst->head == p) p->inst->head = p->next;
  if (p->next) p->next->prev = p->prev;
  p->prev = p->next = NULL;
}

static void fdpass_free_poll(uv_handle_t *h) { free(h->data); }

/* Release JS references and start closing. Memory goes in fdpass_free_poll. */
static void fdpass_close_watcher(fdpass_poll *p) {
  if (p->closing) return;
  p->closing = 1;
  fdpass_unlink_poll(p);
  uv_poll_stop(&p->handle);
  if (p->callback) napi_delete_reference(p->env, p->callback);
  if (p->ctx) napi_async_destroy(p->env, p->ctx);
  p->callback = NULL;
  p->ctx = NULL;
  uv_close((uv_handle_t *)&p->handle, fdpass_free_poll);
}

static void fdpass_dispatch_poll(uv_poll_t *h, int status, int events) {
  fdpass_poll *p = h->data;
  if (p->closing) return;
  napi_env env = p->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value cb, recv, arg, result;
  napi_get_reference_value(env, p->callback, &cb);
  napi_get_global(env, &recv); /* make_callback needs an object */
  napi_create_int32(env, status < 0 ? status : events, &arg);
  /* make_callback, not call_function: microtasks and nextTicks run after. */
  napi_status s = napi_make_callback(env, p->ctx, recv, cb, 1, &arg, &result);
  if (s == napi_pending_exception) {
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
  napi_close_handle_scope(env, scope);
}

static int fdpass_get_poll(napi_env env, napi_value v, fdpass_poll **out) {
  void *data = NULL;
  if (napi_get_value_external(env, v, &data) != napi_ok || !data) return 0;
  *out = data;
  return 1;
}

napi_value fdpass_open_poll(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(2);
  int32_t fd;
  napi_valuetype t;
  if (!fdpass_get_i32(env, argv[0], &fd) || fd < 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "fd");
    return NULL;
  }
  napi_typeof(env, argv[1], &t);
  if (t != napi_function) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "callback");
    return NULL;
  }
  fdpass_instance *inst = NULL;
  uv_loop_t *loop = NULL;
  napi_get_instance_data(env, (void **)&inst);
  if (!inst || napi_get_uv_event_loop(env, &loop) != napi_ok)
    return fdpass_create_int(env, -EINVAL);

  fdpass_poll *p = calloc(1, sizeof(*p));
  if (!p) return fdpass_create_int(env, -ENOMEM);
  int r = uv_poll_init(loop, &p->handle, fd);
  if (r < 0) {
    free(p); /* never initialised as a handle: plain free */
    return fdpass_create_int(env, r);
  }
  p->handle.data = p;
  p->env = env;
  p->inst = inst;
  napi_value name;
  napi_create_string_utf8(env, "fdpass:poll", NAPI_AUTO_LENGTH, &name);
  if (napi_create_reference(env, argv[1], 1, &p->callback) != napi_ok ||
      napi_async_init(env, NULL, name, &p->ctx) != napi_ok) {
    fdpass_close_watcher(p);
    return fdpass_create_int(env, -ENOMEM);
  }
  p->next = inst->head;
  if (inst->head) inst->head->prev = p;
  inst->head = p;

  napi_value ext;
  napi_create_external(env, p, NULL, NULL, &ext);
  return ext;
}

napi_value fdpass_set_poll(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(2);
  fdpass_poll *p;
  int32_t events;
  if (!fdpass_get_poll(env, argv[0], &p) || !fdpass_get_i32(env, argv[1], &events)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "pollSet");
    return NULL;
  }
  if (p->closing) return fdpass_create_int(env, -EBADF);
  int ev = (events & 1 ? UV_READABLE : 0) | (events & 2 ? UV_WRITABLE : 0);
  int r = ev ? uv_poll_start(&p->handle, ev, fdpass_dispatch_poll) : uv_poll_stop(&p->handle);
  return fdpass_create_int(env, r);
}

napi_value fdpass_ref_poll(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(2);
  fdpass_poll *p;
  bool on;
  if (!fdpass_get_poll(env, argv[0], &p) || napi_get_value_bool(env, argv[1], &on)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "pollRef");
    return NULL;
  }
  if (!p->closing) {
    if (on) uv_ref((uv_handle_t *)&p->handle);
    else uv_unref((uv_handle_t *)&p->handle);
  }
  return NULL;
}

napi_value fdpass_close_poll(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(1);
  fdpass_poll *p;
  if (!fdpass_get_poll(env, argv[0], &p)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "pollClose");
    return NULL;
  }
  fdpass_close_watcher(p);
  return NULL;
}

/* Environment teardown (process exit, worker termination). */
static void fdpass_close_all_polls(void *arg) {
  fdpass_instance *inst = arg;
  while (inst->head) fdpass_close_watcher(inst->head);
}

static void fdpass_free_instance(napi_env env, void *data, void *hint) { free(data); }

napi_status fdpass_init_poll(napi_env env) {
  fdpass_instance *inst = calloc(1, sizeof(*inst));
  if (!inst) return napi_generic_failure;
  napi_status s = napi_set_instance_data(env, inst, fdpass_free_instance, NULL);
  if (s != napi_ok) {
    free(inst);
    return s;
  }
  return napi_add_env_cleanup_hook(env, fdpass_close_all_polls, inst);
}
