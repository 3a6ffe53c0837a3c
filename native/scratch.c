/*
 * fdpass native layer: the scratch arrays of the message loops, registered
 * once. sendmsgs() and recvmsgs() (msgio.c) read and write the same few
 * typed arrays on every call; fetching four to six of them per call costs
 * more than the call itself. JavaScript registers them once per thread
 * (sendScratch/recvScratch) and passes the handle instead.
 *
 * Who owns what: the handle is a napi external over a heap struct that
 * holds a strong reference to each array (so the memory the pointers name
 * stays alive and in place: fetching a typed array's data moves it out of
 * the V8 heap for good) and the pointers themselves. The external's
 * finalizer drops the references and frees the struct. JavaScript must not
 * transfer or detach a registered array.
 */
#include "fdpass.h"
#include "cmsg.h"
#include "scratch.h"

#include <stdint.h>
#include <stdlib.h>

static const napi_type_tag fdpass_send_tag = {0x6664706173735f73ULL,
                                              0x656e645f73637231ULL};
static const napi_type_tag fdpass_recv_tag = {0x6664706173735f72ULL,
                                              0x6563765f73637231ULL};

#define FDPASS_SCRATCH_REFS 6

typedef struct {
  napi_env env;
  napi_ref refs[FDPASS_SCRATCH_REFS];
  union {
    fdpass_send_scratch send;
    fdpass_recv_scratch recv;
  } u;
} fdpass_scratch_box;

static void fdpass_free_scratch(napi_env env, void *data, void *hint) {
  fdpass_scratch_box *b = data;
  for (int i = 0; i < FDPASS_SCRATCH_REFS; i++)
    if (b->refs[i]) napi_delete_reference(env, b->refs[i]);
  free(b);
}

/* Wraps a filled box (its arrays referenced from argv[0..nargs)) in a
 * tagged external; NULL (with an exception pending) on failure. */
static napi_value fdpass_wrap_scratch(napi_env env, fdpass_scratch_box *b,
                                      napi_value *argv, size_t nargs,
                                      const napi_type_tag *tag) {
  for (size_t i = 0; i < nargs; i++) {
    if (napi_create_reference(env, argv[i], 1, &b->refs[i]) != napi_ok) {
      fdpass_free_scratch(env, b, NULL);
      return NULL;
    }
  }
  napi_value ext;
  if (napi_create_external(env, b, fdpass_free_scratch, NULL, &ext) != napi_ok) {
    fdpass_free_scratch(env, b, NULL);
    return NULL;
  }
  napi_type_tag_object(env, ext, tag);
  return ext;
}

static void *fdpass_get_scratch(napi_env env, napi_value v,
                                const napi_type_tag *tag) {
  void *data = NULL;
  if (napi_get_value_external(env, v, &data) != napi_ok || !data) return NULL;
  bool tagged = false;
  if (napi_check_object_type_tag(env, v, tag, &tagged) == napi_ok && !tagged)
    return NULL;
  return data;
}

/* sendScratch(data Buffer, meta Int32Array, fds Int32Array, result Int32Array[2]) -> handle */
napi_value fdpass_register_send_scratch(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(4);
  fdpass_scratch_box *b = calloc(1, sizeof(*b));
  if (!b) FDPASS_THROW_TYPE("out of memory");
  fdpass_send_scratch *s = &b->u.send;
  size_t rlen;
  if (!fdpass_get_buffer(env, argv[0], (void **)&s->data, &s->dlen) ||
      !fdpass_get_i32_array(env, argv[1], &s->meta, &s->mlen) ||
      !fdpass_get_i32_array(env, argv[2], &s->fds, &s->flen) ||
      !fdpass_get_i32_array(env, argv[3], &s->result, &rlen) || rlen < 2) {
    free(b);
    FDPASS_THROW_TYPE("sendScratch");
  }
  return fdpass_wrap_scratch(env, b, argv, 4, &fdpass_send_tag);
}

/* recvScratch(buf Buffer, meta Int32Array, fds Int32Array, addrs Buffer,
 *             status Int32Array[2], ctl Buffer) -> handle */
napi_value fdpass_register_recv_scratch(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(6);
  fdpass_scratch_box *b = calloc(1, sizeof(*b));
  if (!b) FDPASS_THROW_TYPE("out of memory");
  fdpass_recv_scratch *s = &b->u.recv;
  size_t slen, clen;
  if (!fdpass_get_buffer(env, argv[0], (void **)&s->buf, &s->blen) ||
      !fdpass_get_i32_array(env, argv[1], &s->meta, &s->mlen) ||
      !fdpass_get_i32_array(env, argv[2], &s->fds, &s->flen) ||
      !fdpass_get_buffer(env, argv[3], (void **)&s->addrs, &s->alen) ||
      !fdpass_get_i32_array(env, argv[4], &s->status, &slen) || slen < 2 ||
      !fdpass_get_buffer(env, argv[5], (void **)&s->ctl, &clen) ||
      clen < FDPASS_CMSG_RECV_SPACE ||
      ((uintptr_t)s->ctl % sizeof(size_t)) != 0 || s->flen < FDPASS_MAX_FDS + 1) {
    free(b);
    FDPASS_THROW_TYPE("recvScratch");
  }
  return fdpass_wrap_scratch(env, b, argv, 6, &fdpass_recv_tag);
}

fdpass_send_scratch *fdpass_get_send_scratch(napi_env env, napi_value v) {
  fdpass_scratch_box *b = fdpass_get_scratch(env, v, &fdpass_send_tag);
  return b ? &b->u.send : NULL;
}

fdpass_recv_scratch *fdpass_get_recv_scratch(napi_env env, napi_value v) {
  fdpass_scratch_box *b = fdpass_get_scratch(env, v, &fdpass_recv_tag);
  return b ? &b->u.recv : NULL;
}
