/*
 * fdpass native layer: control-message encoding and decoding (see cmsg.h).
 */
#include "cmsg.h"

#include <errno.h>
#include <string.h>

_Static_assert(sizeof(int) == sizeof(int32_t), "fds travel as int32");

ssize_t fdpass_encode_cmsg(void *ctl, size_t cap, const int32_t *fds,
                           size_t nfds, const struct ucred *creds) {
  if (nfds > FDPASS_MAX_FDS) return -EINVAL;
  size_t need = (nfds ? CMSG_SPACE(sizeof(int) * nfds) : 0) +
                (creds ? CMSG_SPACE(sizeof(*creds)) : 0);
  if (need > cap) return -ENOBUFS;
  /* CMSG_FIRSTHDR/NXTHDR would need msg_controllen set up front; the layout
   * is fixed (rights first), so the offsets are computed directly. */
  size_t len = 0;
  if (nfds) {
    struct cmsghdr *c = (struct cmsghdr *)ctl;
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    len += CMSG_SPACE(sizeof(int) * nfds);
  }
  if (creds) {
    struct cmsghdr *c = (struct cmsghdr *)((char *)ctl + len);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_CREDENTIALS;
    c->cmsg_len = CMSG_LEN(sizeof(*creds));
    memcpy(CMSG_DATA(c), creds, sizeof(*creds));
    len += CMSG_SPACE(sizeof(*creds));
  }
  return (ssize_t)len;
}

void fdpass_decode_cmsg(const struct msghdr *msg, int32_t *fds, size_t cap,
                        struct fdpass_cmsg_info *out) {
  memset(out, 0, sizeof(*out));
  /* glibc's CMSG_NXTHDR takes a non-const msghdr; nothing is written. */
  struct msghdr *m = (struct msghdr *)msg;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
    if (c->cmsg_level != SOL_SOCKET) continue;
    if (c->cmsg_type == SCM_RIGHTS) {
      size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      if (out->nfds + k > cap) k = cap - out->nfds; /* cannot happen: see cmsg.h */
      memcpy(fds + out->nfds, CMSG_DATA(c), k * sizeof(int));
      out->nfds += k;
    } else if (c->cmsg_type == SCM_CREDENTIALS &&
               c->cmsg_len >= CMSG_LEN(sizeof(struct ucred))) {
      memcpy(&out->creds, CMSG_DATA(c), sizeof(out->creds));
      out->has_creds = true;
    }
  }
}
