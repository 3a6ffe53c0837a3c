/*
 * fdpass native layer: fetching JavaScript arguments.
 *
 * Typed arrays and Buffers are borrowed, never copied: the pointers stay
 * valid for the call that fetched them and no longer, and JavaScript reuses
 * the same arrays across calls so that nothing is allocated per message.
 */
#include "fdpass.h"

int fdpass_get_i32(napi_env env, napi_value v, int32_t *out) {
  return napi_get_value_int32(env, v, out) == napi_ok;
}

int fdpass_get_bool(napi_env env, napi_value v, bool *out) {
  return napi_get_value_bool(env, v, out) == napi_ok;
}

napi_value fdpass_create_int(napi_env env, int64_t v) {
  napi_value r;
  napi_create_int64(env, v, &r);
  return r;
}

int fdpass_get_buffer(napi_env env, napi_value v, void **data, size_t *len) {
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

int fdpass_get_i32_array(napi_env env, napi_value v, int32_t **data,
                         size_t *len) {
  napi_typedarray_type t;
  napi_value ab;
  size_t off;
  if (napi_get_typedarray_info(env, v, &t, len, (void **)data, &ab, &off) !=
      napi_ok)
    return 0;
  return t == napi_int32_array;
}

int fdpass_is_nullish(napi_env env, napi_value v) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return 0;
  return t == napi_null || t == napi_undefined;
}
