/*
 * fdpass native layer: process credentials, for the workers of
 * `fdpass serve --user USER[:GROUP]` (src/serve/privileges.ts decides).
 *
 * - noNewPrivs: prctl(PR_SET_NO_NEW_PRIVS), which Node has no call for.
 * - getpwnam/getpwuid/getgrnam: the passwd and group databases through
 *   NSS (files, LDAP, systemd's dynamic users, ...), which Node cannot
 *   look up for any user but the current one. The _r forms, with a buffer
 *   grown on ERANGE, so that nothing here is shared between threads.
 *
 * Each returns >= 0 or -errno; a name or id that does not exist is -ENOENT.
 */
#include "fdpass.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

/* Longest user or group name taken (systemd and shadow-utils stay far below). */
#define FDPASS_NAME_MAX 256
/* Largest NSS buffer tried before giving up with -ERANGE. */
#define FDPASS_NSS_BUF_MAX (1 << 20)

/* noNewPrivs() -> 0: prctl(PR_SET_NO_NEW_PRIVS, 1) for the calling thread
 * and every process it starts from now on. */
napi_value fdpass_set_no_new_privs(napi_env env, napi_callback_info info) {
  int r = prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  return fdpass_create_int(env, r < 0 ? -errno : 0);
}

/* A user or group name argument (NUL-free, at most FDPASS_NAME_MAX bytes):
 * 1 when it is one. */
static int fdpass_get_name(napi_env env, napi_value v, char *out, size_t cap) {
  size_t len;
  if (napi_get_value_string_utf8(env, v, out, cap, &len) != napi_ok) return 0;
  return len > 0 && len < cap - 1 && strlen(out) == len;
}

/* Runs one *_r lookup with a buffer grown on ERANGE: 0 when found,
 * -ENOENT when not, else -errno. `lookup` returns the _r call's result and
 * sets *found. */
static int fdpass_run_nss(int (*lookup)(const void *key, void *rec, char *buf,
                                        size_t len, int *found),
                          const void *key, void *rec) {
  size_t len = 1024;
  for (;;) {
    char *buf = malloc(len);
    if (!buf) return -ENOMEM;
    int found = 0;
    int r = lookup(key, rec, buf, len, &found);
    free(buf); /* the caller copies out what it needs inside lookup */
    if (r == ERANGE && len < FDPASS_NSS_BUF_MAX) {
      len *= 4;
      continue;
    }
    if (r != 0) return -r;
    return found ? 0 : -ENOENT;
  }
}

/* What the lookups copy out of a passwd or group entry before its buffer goes. */
struct fdpass_ident {
  int32_t id;
  int32_t gid;
  char name[FDPASS_NAME_MAX];
};

static void fdpass_copy_passwd(const struct passwd *pw, struct fdpass_ident *out) {
  out->id = (int32_t)pw->pw_uid;
  out->gid = (int32_t)pw->pw_gid;
  strncpy(out->name, pw->pw_name, sizeof(out->name) - 1);
  out->name[sizeof(out->name) - 1] = '\0';
}

static int fdpass_lookup_pwnam(const void *key, void *rec, char *buf, size_t len,
                               int *found) {
  struct passwd pw, *res = NULL;
  int r = getpwnam_r((const char *)key, &pw, buf, len, &res);
  if (r == 0 && res) {
    fdpass_copy_passwd(res, rec);
    *found = 1;
  }
  return r;
}

static int fdpass_lookup_pwuid(const void *key, void *rec, char *buf, size_t len,
                               int *found) {
  struct passwd pw, *res = NULL;
  int r = getpwuid_r(*(const uid_t *)key, &pw, buf, len, &res);
  if (r == 0 && res) {
    fdpass_copy_passwd(res, rec);
    *found = 1;
  }
  return r;
}

static int fdpass_lookup_grnam(const void *key, void *rec, char *buf, size_t len,
                               int *found) {
  struct group gr, *res = NULL;
  int r = getgrnam_r((const char *)key, &gr, buf, len, &res);
  if (r == 0 && res) {
    ((struct fdpass_ident *)rec)->id = (int32_t)res->gr_gid;
    *found = 1;
  }
  return r;
}

/* getpwnam(name, out Int32Array[2]) -> 0: [uid, primary gid] of the user */
napi_value fdpass_get_user_by_name(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(2);
  char name[FDPASS_NAME_MAX];
  int32_t *out;
  size_t n;
  if (!fdpass_get_name(env, argv[0], name, sizeof(name))) FDPASS_THROW_TYPE("name");
  if (!fdpass_get_i32_array(env, argv[1], &out, &n) || n < 2) FDPASS_THROW_TYPE("out");
  struct fdpass_ident id = {0};
  int r = fdpass_run_nss(fdpass_lookup_pwnam, name, &id);
  if (r == 0) {
    out[0] = id.id;
    out[1] = id.gid;
  }
  return fdpass_create_int(env, r);
}

/* getpwuid(uid, out Int32Array[2], name Uint8Array) -> length of the user's
 * name (written to `name`, cut to its size): [uid, primary gid] in out */
napi_value fdpass_get_user_by_id(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(3);
  int32_t uid;
  int32_t *out;
  size_t n, cap;
  char *name;
  if (!fdpass_get_i32(env, argv[0], &uid) || uid < 0) FDPASS_THROW_TYPE("uid");
  if (!fdpass_get_i32_array(env, argv[1], &out, &n) || n < 2) FDPASS_THROW_TYPE("out");
  if (!fdpass_get_buffer(env, argv[2], (void **)&name, &cap)) FDPASS_THROW_TYPE("name");
  struct fdpass_ident id = {0};
  uid_t key = (uid_t)uid;
  int r = fdpass_run_nss(fdpass_lookup_pwuid, &key, &id);
  if (r < 0) return fdpass_create_int(env, r);
  out[0] = id.id;
  out[1] = id.gid;
  size_t len = strlen(id.name);
  if (len > cap) len = cap;
  memcpy(name, id.name, len);
  return fdpass_create_int(env, (int64_t)len);
}

/* getgrnam(name, out Int32Array[1]) -> 0: [gid] of the group */
napi_value fdpass_get_group_by_name(napi_env env, napi_callback_info info) {
  FDPASS_ARGS(2);
  char name[FDPASS_NAME_MAX];
  int32_t *out;
  size_t n;
  if (!fdpass_get_name(env, argv[0], name, sizeof(name))) FDPASS_THROW_TYPE("name");
  if (!fdpass_get_i32_array(env, argv[1], &out, &n) || n < 1) FDPASS_THROW_TYPE("out");
  struct fdpass_ident id = {0};
  int r = fdpass_run_nss(fdpass_lookup_grnam, name, &id);
  if (r == 0) out[0] = id.id;
  return fdpass_create_int(env, r);
}
