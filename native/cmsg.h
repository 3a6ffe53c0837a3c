/*
 * fdpass native layer: control messages (cmsg(3)) as plain C.
 *
 * No Node-API and no system calls here: these functions only lay out and
 * read the control data of a struct msghdr, so that msgio.c is left with
 * the loops and the syscalls (the shape of Go's UnixRights/ParseUnixRights).
 * Needs _GNU_SOURCE (struct ucred), which binding.gyp defines.
 */
#ifndef FDPASS_CMSG_H
#define FDPASS_CMSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

/* Linux's SCM_MAX_FD: the most fds one sendmsg() may carry. */
#define FDPASS_MAX_FDS 253

/* Control space for a full SCM_RIGHTS plus SCM_CREDENTIALS: what one
 * message that fdpass sends can carry. */
#define FDPASS_CMSG_SPACE                                                     \
  (CMSG_SPACE(sizeof(int) * FDPASS_MAX_FDS) + CMSG_SPACE(sizeof(struct ucred)))

/* Control space to receive into: the above, with slack for any other control
 * message the kernel may add (SCM_SECURITY). Exported as RECV_CTL. */
#define FDPASS_CMSG_RECV_SPACE (FDPASS_CMSG_SPACE + 256)

/*
 * Writes SCM_RIGHTS carrying fds[0..nfds) (none when nfds is 0), then
 * SCM_CREDENTIALS when creds is not NULL, into ctl, which must be aligned
 * for struct cmsghdr. Returns the control length to put in msg_controllen
 * (0: no control data), or -EINVAL for more than FDPASS_MAX_FDS fds, or
 * -ENOBUFS when cap is too small. The fds stay the caller's: the kernel
 * duplicates them at sendmsg().
 */
ssize_t fdpass_encode_cmsg(void *ctl, size_t cap, const int32_t *fds,
                           size_t nfds, const struct ucred *creds);

/* What the control data of one received message carried. */
struct fdpass_cmsg_info {
  size_t nfds;           /* fds appended to the caller's array */
  bool has_creds;        /* SCM_CREDENTIALS came (the receiver set SO_PASSCRED) */
  struct ucred creds;
};

/*
 * Reads the control data of a message recvmsg() filled in: appends the fds of
 * SCM_RIGHTS to fds[0..cap) and reports SCM_CREDENTIALS. Every fd appended is
 * now open in this process and belongs to the caller. cap must be at least
 * FDPASS_MAX_FDS (one message carries no more), so that no fd is left out
 * unowned. Messages of other levels or types are skipped.
 */
void fdpass_decode_cmsg(const struct msghdr *msg, int32_t *fds, size_t cap,
                        struct fdpass_cmsg_info *out);

#endif
