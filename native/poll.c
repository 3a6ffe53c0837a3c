/*
 * fdpass native layer: readiness watchers. This is the only file that calls
 * libuv, whose ABI is not promised across Node majors; keep it that way.
 *
 *   pollOpen(fd, callback) -> handle | -errno   callback(events | -errno)
 *   pollSet(handle, events) -> 0 | -errno       1 readable, 2 writable, 0 stop;
 *                                               -EBADF once the watcher closed
 *   pollRef(handle, bool)                       keep the loop alive or not;
 *                                               nothing once closed
 *   pollClose(handle)                           stop and release; nothing once
 *                                               closed, so any number of times
 *
 * The loop is the environment's (napi_get_uv_event_loop), so the addon works
 * in worker threads.
 *
 * Who owns what. Three pieces, each freed by exactly one party:
 * - The watcher (struct fdpass_poll): the uv_poll_t, a strong reference to
 *   the callback and its async context. It is on its environment's open list
 *   from pollOpen until it closes, by pollClose or by the environment cleanup
 *   hook (teardown of the process or worker), which closes whatever
 *   JavaScript left open. Closing stops it, releases the callback and the
 *   context, and uv_close()s it; its memory is freed in uv_close's callback,
 *   never before. A callback may close its own watcher: the callback and the
 *   context are then released when it returns.
 * - The box (struct fdpass_poll_box): what JavaScript holds, a napi external
 *   over a small heap struct pointing at the watcher. The external's
 *   finalizer frees it (when it is collected, or at teardown); closing never
 *   does, so a handle JavaScript still holds is never dangling.
 * - The link between them: box->poll and poll->box are cleared together
 *   (fdpass_detach_box) when either side goes first. Closing the watcher
 *   clears them, so a stale handle finds no watcher: that is what makes the
 *   calls above safe after close. Collecting the box clears them, so the
 *   cleanup hook, closing a watcher whose box is gone, writes into no freed
 *   box. A watcher whose box was collected keeps running until teardown (its
 *   callback is strongly held and may still fire): garbage collection never
 *   stops a watcher.
 */
#include "fdpass.h"

#include <errno.h>
#include <stdlib.h>
#include <uv.h>

typedef struct fdpass_poll fdpass_poll;

typedef struct {
  fdpass_poll *poll; /* NULL once the watcher closed */
} fdpass_poll_box;

/* Per environment (instance data): the watchers that are open. */
typedef struct {
  fdpass_poll *head;
} fdpass_instance;

struct fdpass_poll {
  napi_env env;
  napi_ref callback;
  napi_async_context ctx;
  fdpass_instance *inst;
  fdpass_poll *prev, *next;
  fdpass_poll_box *box; /* NULL once the box was collected or detached */
  bool closing;
  bool dispatching; /* inside napi_make_callback */
  uv_poll_t handle;
  /* Slack in case a later libuv's uv_poll_t is larger than the headers this
   * was compiled against: the loop writes only inside the handle it owns. */
  char slack[256];
};

/* Marks the externals this file made, so that no other external passed in
 * is taken for a box (where the runtime can tag externals). */
static const napi_type_tag fdpass_poll_tag = {0x6664706173735f70ULL,
                                              0x6f6c6c5f626f7831ULL};

static void fdpass_detach_box(fdpass_poll *p) {
  if (!p->box) return;
  p->box->poll = NULL;
  p->box = NULL;
}

static void fdpass_unlink_poll(fdpass_poll *p) {
  if (p->prev) p->prev->next = p->next;
  else if (p->inst->head == p) p->inst->head = p->next;
  if (p->next) p->next->prev = p->prev;
  p->prev = p->next = NULL;
}

static void fdpass_release_callback(fdpass_poll *p) {
  if (p->callback) napi_delete_reference(p->env, p->callback);
  if (p->ctx) napi_async_destroy(p->env, p->ctx);
  p->callback = NULL;
  p->ctx = NULL;
}

static void fdpass_free_poll(uv_handle_t *h) { free(h->data); }

/* Stops the watcher, cuts it from its box and its list, and starts closing
 * it. Idempotent. Its memory goes in fdpass_free_poll, on a later loop turn. */
static void fdpass_close_watcher(fdpass_poll *p) {
  if (p->closing) return;
  p->closing = true;
  fdpass_detach_box(p);
  fdpass_unlink_poll(p);
  uv_poll_stop(&p->handle);
  if (!p->dispatching) fdpass_release_callback(p);
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
  /* make_callback, not call_function: microtasks and nextTicks run after.
   * The callback may close this watcher: p stays allocated until a later
   * loop turn, and the context it runs in is released only below. */
  p->dispatching = true;
  napi_status s = napi_make_callback(env, p->ctx, recv, cb, 1, &arg, &result);
  p->dispatching = false;
  if (p->closing) fdpass_release_callback(p);
  if (s == napi_pending_exception) {
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
  napi_close_handle_scope(env, scope);
}

/* The external's finalizer: the box goes, the watcher (if open) stays. */
static void fdpass_finalize_box(napi_env env, void *data, void *hint) {
  fdpass_poll_box *box = data;
  if (box->poll) box->poll->box = NULL;
  free(box);
}

/* The box behind a handle, or 0 when v is not one. */
static int fdpass_get_box(napi_env env, napi_value v, fdpass_poll_box **out) {
  void *data = NULL;
  if (napi_get_value_external(env, v, &data) != napi_ok || !data) return 0;
  bool tagged = false;
  /* A runtime that cannot tag externals could not tag ours either. */
  if (napi_check_object_type_tag(env, v, &fdpass_poll_tag, &tagged) == napi_ok &&
      !tagged)
    return 0;
  *out = data;
  return 1;
}

napi_value fdpass_open_poll(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(2);
  int32_t fd;
  napi_valuetype t;
  if (!fdpass_get_i32(env, argv[0], &fd) || fd < 0) FDPASS_THROW_TYPE("fd");
  if (napi_typeof(env, argv[1], &t) != napi_ok || t != napi_function)
    FDPASS_THROW_TYPE("callback");
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
  p->next = inst->head;
  if (inst->head) inst->head->prev = p;
  inst->head = p;

  napi_value name, ext;
  fdpass_poll_box *box = NULL;
  if (napi_create_string_utf8(env, "fdpass:poll", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_reference(env, argv[1], 1, &p->callback) != napi_ok ||
      napi_async_init(env, NULL, name, &p->ctx) != napi_ok ||
      !(box = malloc(sizeof(*box)))) {
    fdpass_close_watcher(p);
    return fdpass_create_int(env, -ENOMEM);
  }
  box->poll = p;
  if (napi_create_external(env, box, fdpass_finalize_box, NULL, &ext) != napi_ok) {
    free(box);
    fdpass_close_watcher(p);
    return fdpass_create_int(env, -ENOMEM);
  }
  p->box = box;
  /* Best effort: Node versions that cannot tag externals fail here, and
   * fdpass_get_box then cannot check tags either. */
  napi_type_tag_object(env, ext, &fdpass_poll_tag);
  return ext;
}

napi_value fdpass_set_poll(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(2);
  fdpass_poll_box *box;
  int32_t events;
  if (!fdpass_get_box(env, argv[0], &box) || !fdpass_get_i32(env, argv[1], &events))
    FDPASS_THROW_TYPE("pollSet");
  fdpass_poll *p = box->poll;
  if (!p) return fdpass_create_int(env, -EBADF);
  int ev = (events & 1 ? UV_READABLE : 0) | (events & 2 ? UV_WRITABLE : 0);
  int r = ev ? uv_poll_start(&p->handle, ev, fdpass_dispatch_poll)
             : uv_poll_stop(&p->handle);
  return fdpass_create_int(env, r);
}

napi_value fdpass_ref_poll(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(2);
  fdpass_poll_box *box;
  bool on;
  if (!fdpass_get_box(env, argv[0], &box) || !fdpass_get_bool(env, argv[1], &on))
    FDPASS_THROW_TYPE("pollRef");
  fdpass_poll *p = box->poll;
  if (p) {
    if (on) uv_ref((uv_handle_t *)&p->handle);
    else uv_unref((uv_handle_t *)&p->handle);
  }
  return NULL;
}

napi_value fdpass_close_poll(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(1);
  fdpass_poll_box *box;
  if (!fdpass_get_box(env, argv[0], &box)) FDPASS_THROW_TYPE("pollClose");
  if (box->poll) fdpass_close_watcher(box->poll);
  return NULL;
}

/*
 * Environment teardown (process exit, worker termination): closes what
 * JavaScript left open, detaching boxes that are still reachable. Node runs
 * this hook before the boxes' finalizers and the instance data's, which it
 * runs as the Node-API environment itself goes (its own hook, added before
 * this one, runs after it: hooks run in reverse order).
 */
static void fdpass_close_all_polls(void *arg) {
  fdpass_instance *inst = arg;
  while (inst->head) fdpass_close_watcher(inst->head);
}

static void fdpass_free_instance(napi_env env, void *data, void *hint) {
  free(data);
}

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
