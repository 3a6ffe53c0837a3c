/*
 * fdpass native layer: registered scratch arrays of the message loops
 * (scratch.c), as msgio.c uses them. The pointers stay valid while the
 * handle lives.
 */
#ifndef FDPASS_SCRATCH_H
#define FDPASS_SCRATCH_H

#include <node_api.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
  char *data; /* the messages' bytes, back to back */
  size_t dlen;
  int32_t *meta; /* SEND_META ints per message */
  size_t mlen;
  int32_t *fds; /* the messages' fds, back to back */
  size_t flen;
  int32_t *result; /* [messages sent whole, bytes of the next one] */
} fdpass_send_scratch;

typedef struct {
  char *buf; /* the messages' bytes */
  size_t blen;
  int32_t *meta; /* RECV_META ints per message */
  size_t mlen;
  int32_t *fds;
  size_t flen;
  char *addrs; /* RECV_ADDR bytes per message (datagram senders) */
  size_t alen;
  int32_t *status; /* [why the loop stopped, a late -errno] */
  char *ctl;       /* control-data scratch, RECV_CTL bytes, aligned */
} fdpass_recv_scratch;

/* The scratch behind a handle, or NULL when v is not one of that kind. */
fdpass_send_scratch *fdpass_get_send_scratch(napi_env env, napi_value v);
fdpass_recv_scratch *fdpass_get_recv_scratch(napi_env env, napi_value v);

#endif
