/*
 * fdbench: C baseline for descriptor-passing benchmarks over an AF_UNIX
 * socketpair.
 *
 *   fdbench throughput [--type stream|seqpacket|dgram] [--fds K] [--count M]
 *                      [--warmup W] [--cpu N]
 *   fdbench pingpong   [--type stream|seqpacket|dgram] [--count M]
 *                      [--warmup W] [--cpu N] [--child-cpu N]
 *
 * Defaults: --type stream, --fds 1, --count 100000, --warmup 1000.
 *
 * throughput: the forked child sends W + M messages of 1 byte + K
 *   descriptors (K dup()s of one /dev/null descriptor, opened once).  The
 *   parent receives them (64-byte iov, control room for 253 descriptors,
 *   MSG_CMSG_CLOEXEC), aborts on MSG_CTRUNC, closes every descriptor it gets
 *   and checks that exactly K * (W + M) arrived.  The clock runs on the
 *   receiver from the end of the warm-up to the last counted message.
 *
 * pingpong: the parent sends 1 byte + one /dev/null descriptor, the child
 *   sends the received descriptor straight back (1 byte + that descriptor)
 *   and then closes its copy; the parent closes what it gets back.  Each of
 *   the M counted round trips is timed with CLOCK_MONOTONIC.
 *
 * --cpu N pins the process to CPU N before fork(), so parent and child both
 * run there; --child-cpu N then moves the child to CPU N, so that each
 * round trip is two cross-CPU wake-ups (the cost of a second process hop).
 * Output is a single JSON line on stdout; errors go to stderr as
 * "fdbench: <what>: <reason>" with exit status 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PROG "fdbench"
#define MAX_FDS 253                  /* SCM_MAX_FD */
#define RECV_IOV 64

/* Receive-side control buffer: a full SCM_RIGHTS batch plus credentials. */
#define RECV_CTL_LEN (CMSG_SPACE(MAX_FDS * sizeof(int)) + CMSG_SPACE(sizeof(struct ucred)))

union recv_ctl {
    char buf[RECV_CTL_LEN];
    struct cmsghdr align;
};

struct options {
    int pingpong;
    int type;
    const char *type_name;
    long fds;
    long count;
    long warmup;
    long cpu;                        /* -1: no pinning */
    long child_cpu;                  /* -1: the child stays with the parent */
};

static void fail_errno(const char *what)
{
    fprintf(stderr, "%s: %s: %s\n", PROG, what, strerror(errno));
}

static void fail_msg(const char *what, const char *why)
{
    fprintf(stderr, "%s: %s: %s\n", PROG, what, why);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: %s throughput [--type stream|seqpacket|dgram] [--fds K] [--count M]"
            " [--warmup W] [--cpu N]\n"
            "       %s pingpong [--type stream|seqpacket|dgram] [--count M]"
            " [--warmup W] [--cpu N] [--child-cpu N]\n",
            PROG, PROG);
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------------ */
/* arguments                                                                 */

static int parse_long(const char *opt, const char *s, long min, long max, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *s == '\0' || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "%s: %s: invalid value: %s (expected %ld..%ld)\n",
                PROG, opt, s, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, struct options *o)
{
    int i;

    o->type = SOCK_STREAM;
    o->type_name = "stream";
    o->fds = 1;
    o->count = 100000;
    o->warmup = 1000;
    o->cpu = -1;
    o->child_cpu = -1;

    if (argc < 2) {
        usage();
        return -1;
    }
    if (strcmp(argv[1], "throughput") == 0)
        o->pingpong = 0;
    else if (strcmp(argv[1], "pingpong") == 0)
        o->pingpong = 1;
    else {
        fprintf(stderr, "%s: unknown mode: %s\n", PROG, argv[1]);
        usage();
        return -1;
    }

    for (i = 2; i < argc; i++) {
        const char *opt = argv[i];
        const char *val;
        char name[32];
        const char *eq = strchr(opt, '=');

        /* Accept both "--opt value" and "--opt=value". */
        if (eq != NULL && (size_t)(eq - opt) < sizeof name) {
            memcpy(name, opt, (size_t)(eq - opt));
            name[eq - opt] = '\0';
            val = eq + 1;
        } else {
            if (strlen(opt) >= sizeof name || i + 1 >= argc) {
                fprintf(stderr, "%s: %s: missing value or unknown option\n", PROG, opt);
                usage();
                return -1;
            }
            strcpy(name, opt);
            val = argv[++i];
        }

        if (strcmp(name, "--type") == 0) {
            if (strcmp(val, "stream") == 0)
                o->type = SOCK_STREAM;
            else if (strcmp(val, "seqpacket") == 0)
                o->type = SOCK_SEQPACKET;
            else if (strcmp(val, "dgram") == 0)
                o->type = SOCK_DGRAM;
            else {
                fprintf(stderr, "%s: --type: unknown socket type: %s\n", PROG, val);
                return -1;
            }
            o->type_name = val;
        } else if (strcmp(name, "--fds") == 0 && !o->pingpong) {
            if (parse_long(name, val, 1, MAX_FDS, &o->fds) < 0)
                return -1;
        } else if (strcmp(name, "--count") == 0) {
            if (parse_long(name, val, 1, LONG_MAX / 2, &o->count) < 0)
                return -1;
        } else if (strcmp(name, "--warmup") == 0) {
            if (parse_long(name, val, 0, LONG_MAX / 2, &o->warmup) < 0)
                return -1;
        } else if (strcmp(name, "--cpu") == 0) {
            if (parse_long(name, val, 0, CPU_SETSIZE - 1, &o->cpu) < 0)
                return -1;
        } else if (strcmp(name, "--child-cpu") == 0 && o->pingpong) {
            if (parse_long(name, val, 0, CPU_SETSIZE - 1, &o->child_cpu) < 0)
                return -1;
        } else {
            fprintf(stderr, "%s: unknown option: %s\n", PROG, name);
            usage();
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* message helpers                                                           */

/*
 * A ready-to-send message of 1 byte + descriptors.  It is built (and fully
 * zeroed, padding included) once, outside the timed loops.  The struct must
 * not be moved after fdmsg_init() because msg points into it.
 */
struct fdmsg {
    char byte;
    struct iovec iov;
    struct msghdr msg;
    _Alignas(struct cmsghdr) char ctl[CMSG_SPACE(MAX_FDS * sizeof(int))];
};

static void fdmsg_init(struct fdmsg *m, const int *fds, int nfds)
{
    struct cmsghdr *cm;

    memset(m, 0, sizeof *m);
    m->byte = 'x';
    m->iov.iov_base = &m->byte;
    m->iov.iov_len = 1;
    m->msg.msg_iov = &m->iov;
    m->msg.msg_iovlen = 1;
    m->msg.msg_control = m->ctl;
    m->msg.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
    cm = CMSG_FIRSTHDR(&m->msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
    memcpy(CMSG_DATA(cm), fds, (size_t)nfds * sizeof(int));
}

/* Replace the single descriptor of a one-descriptor message. */
static void fdmsg_set_fd(struct fdmsg *m, int fd)
{
    memcpy(CMSG_DATA(CMSG_FIRSTHDR(&m->msg)), &fd, sizeof fd);
}

static ssize_t fdmsg_send(int sock, const struct fdmsg *m)
{
    ssize_t n;

    for (;;) {
        n = sendmsg(sock, &m->msg, MSG_NOSIGNAL);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == ETOOMANYREFS) {
            /* Per-user in-flight descriptor limit (unprivileged users):
             * let the receiver drain and try again. */
            sched_yield();
            continue;
        }
        return -1;
    }
}

/*
 * Receive one message.  Descriptors are stored in fds[] (*nfds set); every
 * descriptor received is returned to the caller even on error so that it can
 * be closed.  Returns the byte count, 0 on end-of-file, -1 on error (errno
 * set), -2 when MSG_CTRUNC was reported.
 */
static ssize_t recv_fds(int sock, int *fds, int *nfds)
{
    union recv_ctl ctl;
    char buf[RECV_IOV];
    struct iovec iov = { .iov_base = buf, .iov_len = sizeof buf };
    struct msghdr msg;
    struct cmsghdr *cm;
    ssize_t n;

    *nfds = 0;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.buf;
    msg.msg_controllen = sizeof ctl.buf;

    do {
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -1;

    for (cm = CMSG_FIRSTHDR(&msg); cm != NULL; cm = CMSG_NXTHDR(&msg, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
            continue;
        size_t cnt = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t k = 0; k < cnt; k++) {
            int fd;
            memcpy(&fd, CMSG_DATA(cm) + k * sizeof(int), sizeof fd);
            if (*nfds < MAX_FDS)
                fds[(*nfds)++] = fd;
            else
                close(fd);
        }
    }
    if (msg.msg_flags & MSG_CTRUNC)
        return -2;
    return n;
}

static void close_all(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        close(fds[i]);
}

/* ------------------------------------------------------------------------ */
/* process management                                                        */

static int pin_cpu(long cpu)
{
    cpu_set_t set;

    if (cpu < 0)
        return 0;
    CPU_ZERO(&set);
    CPU_SET((int)cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) < 0) {
        fail_errno("sched_setaffinity");
        return -1;
    }
    return 0;
}

/* Wait for the child; returns 0 if it exited with status 0. */
static int reap(pid_t pid, int kill_first)
{
    int status;

    if (kill_first)
        kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            fail_errno("waitpid");
            return -1;
        }
    }
    if (kill_first)
        return -1;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (WIFSIGNALED(status))
        fprintf(stderr, "%s: child: killed by signal %d\n", PROG, WTERMSIG(status));
    else
        fprintf(stderr, "%s: child: exited with status %d\n", PROG, WEXITSTATUS(status));
    return -1;
}

/*
 * A datagram peer never sees end-of-file when the other end goes away, so
 * every receive is bounded by a generous timeout instead of hanging forever.
 */
#define RECV_TIMEOUT_S 30

static int set_recv_timeout(int sock)
{
    struct timeval tv = { .tv_sec = RECV_TIMEOUT_S, .tv_usec = 0 };

    if (setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0) {
        fail_errno("setsockopt SO_RCVTIMEO");
        return -1;
    }
    return 0;
}

/* Zero-length message without descriptors: "no more messages".  Needed for
 * datagram sockets, harmless (and skipped) for the others. */
static void send_end_marker(int sock, int type)
{
    if (type != SOCK_STREAM)
        (void)send(sock, "", 0, MSG_NOSIGNAL);
}

/* Raise the soft descriptor limit to the hard one (helps large batches). */
static void raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* ------------------------------------------------------------------------ */
/* throughput                                                                */

static int throughput_sender(int sock, const struct options *o)
{
    int fds[MAX_FDS];
    int nfds = 0;
    int rc = 1;
    long total = o->warmup + o->count;

    fds[0] = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (fds[0] < 0) {
        fail_errno("open /dev/null");
        goto out;
    }
    nfds = 1;
    while (nfds < o->fds) {
        fds[nfds] = fcntl(fds[0], F_DUPFD_CLOEXEC, 0);
        if (fds[nfds] < 0) {
            fail_errno("dup");
            goto out;
        }
        nfds++;
    }

    static struct fdmsg m;         /* ~1 KiB: keep it off the stack */
    fdmsg_init(&m, fds, nfds);
    for (long i = 0; i < total; i++) {
        ssize_t n = fdmsg_send(sock, &m);
        if (n < 0) {
            fail_errno("sendmsg");
            goto out;
        }
        if (n != 1) {
            fail_msg("sendmsg", "short send");
            goto out;
        }
    }
    rc = 0;

out:
    if (rc != 0)
        send_end_marker(sock, o->type);
    close_all(fds, nfds);
    close(sock);
    return rc;
}

static int throughput_receiver(int sock, const struct options *o, double *seconds)
{
    int fds[MAX_FDS];
    int nfds = 0;
    long total = o->warmup + o->count;
    long msgs = 0;
    long long got_fds = 0;
    double start = 0.0;
    int timing = o->warmup == 0;

    if (timing)
        start = now_seconds();

    while (msgs < total) {
        ssize_t n = recv_fds(sock, fds, &nfds);
        close_all(fds, nfds);
        if (n == -2) {
            fail_msg("recvmsg", "control data truncated (MSG_CTRUNC)");
            return -1;
        }
        if (n < 0) {
            fail_errno(errno == EAGAIN ? "recvmsg (timed out)" : "recvmsg");
            return -1;
        }
        if (n == 0 && nfds == 0) {
            fprintf(stderr, "%s: recvmsg: sender closed after %ld of %ld messages\n",
                    PROG, msgs, total);
            return -1;
        }
        /* Every message is exactly one byte; should a stream read ever
         * coalesce several, the byte count still counts messages and the
         * descriptor total below catches any mismatch. */
        msgs += n;
        got_fds += nfds;
        if (!timing && msgs >= o->warmup) {
            start = now_seconds();
            timing = 1;
        }
    }
    *seconds = now_seconds() - start;

    if (msgs != total || got_fds != (long long)o->fds * total) {
        fprintf(stderr, "%s: received %ld messages and %lld descriptors, expected %ld and %lld\n",
                PROG, msgs, got_fds, total, (long long)o->fds * total);
        return -1;
    }
    return 0;
}

static int run_throughput(const struct options *o)
{
    int sv[2];
    pid_t pid;
    double seconds = 0.0;
    int rc;

    if (socketpair(AF_UNIX, o->type | SOCK_CLOEXEC, 0, sv) < 0) {
        fail_errno("socketpair");
        return 1;
    }
    if (set_recv_timeout(sv[0]) < 0 || set_recv_timeout(sv[1]) < 0) {
        close(sv[0]);
        close(sv[1]);
        return 1;
    }
    fflush(NULL);
    pid = fork();
    if (pid < 0) {
        fail_errno("fork");
        close(sv[0]);
        close(sv[1]);
        return 1;
    }
    if (pid == 0) {
        close(sv[0]);
        _exit(throughput_sender(sv[1], o));
    }
    close(sv[1]);

    rc = throughput_receiver(sv[0], o, &seconds);
    close(sv[0]);
    if (reap(pid, rc != 0) < 0 || rc != 0)
        return 1;

    if (seconds <= 0.0)
        seconds = 1e-9;
    printf("{\"mode\":\"throughput\",\"type\":\"%s\",\"fds\":%ld,\"count\":%ld,"
           "\"seconds\":%.6f,\"msgs_per_s\":%.0f,\"fds_per_s\":%.0f}\n",
           o->type_name, o->fds, o->count, seconds,
           (double)o->count / seconds, (double)o->count * (double)o->fds / seconds);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* pingpong                                                                  */

/* Echo every descriptor back until the parent closes its end. */
static int pingpong_child(int sock, int type)
{
    int fds[MAX_FDS];
    int nfds = 0;
    int rc = 1;
    static struct fdmsg m;
    int none = -1;

    fdmsg_init(&m, &none, 1);
    for (;;) {
        ssize_t n = recv_fds(sock, fds, &nfds);
        if (n == -2) {
            fail_msg("child: recvmsg", "control data truncated (MSG_CTRUNC)");
            break;
        }
        if (n < 0) {
            fail_errno(errno == EAGAIN ? "child: recvmsg (timed out)" : "child: recvmsg");
            break;
        }
        if (n == 0 && nfds == 0) {
            rc = 0;                  /* parent is done */
            break;
        }
        if (n != 1 || nfds != 1) {
            fail_msg("child: recvmsg", "expected 1 byte and 1 descriptor");
            break;
        }
        fdmsg_set_fd(&m, fds[0]);
        if (fdmsg_send(sock, &m) != 1) {
            fail_errno("child: sendmsg");
            break;
        }
        close(fds[0]);
        nfds = 0;
    }
    if (rc != 0)
        send_end_marker(sock, type);
    close_all(fds, nfds);
    close(sock);
    return rc;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted sample, in microseconds. */
static double percentile_us(const uint64_t *sorted, long n, double p)
{
    long rank = (long)(p / 100.0 * (double)n + 0.999999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return (double)sorted[rank - 1] / 1000.0;
}

static int pingpong_parent(int sock, const struct options *o, uint64_t *samples)
{
    int fds[MAX_FDS];
    int nfds = 0;
    int devnull;
    int rc = -1;
    long total = o->warmup + o->count;

    devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0) {
        fail_errno("open /dev/null");
        return -1;
    }

    static struct fdmsg m;
    fdmsg_init(&m, &devnull, 1);
    for (long i = 0; i < total; i++) {
        uint64_t t0 = now_ns();
        if (fdmsg_send(sock, &m) != 1) {
            fail_errno("sendmsg");
            goto out;
        }
        ssize_t n = recv_fds(sock, fds, &nfds);
        uint64_t t1 = now_ns();
        close_all(fds, nfds);
        if (n == -2) {
            fail_msg("recvmsg", "control data truncated (MSG_CTRUNC)");
            goto out;
        }
        if (n < 0) {
            fail_errno(errno == EAGAIN ? "recvmsg (timed out)" : "recvmsg");
            goto out;
        }
        if (n != 1 || nfds != 1) {
            fail_msg("recvmsg", n == 0 && nfds == 0 ? "child closed the connection"
                                                    : "expected 1 byte and 1 descriptor");
            goto out;
        }
        nfds = 0;
        if (i >= o->warmup)
            samples[i - o->warmup] = t1 - t0;
    }
    rc = 0;

out:
    close(devnull);
    return rc;
}

static int run_pingpong(const struct options *o)
{
    int sv[2];
    pid_t pid;
    uint64_t *samples;
    int rc;

    samples = malloc((size_t)o->count * sizeof *samples);
    if (samples == NULL) {
        fail_errno("malloc");
        return 1;
    }
    if (socketpair(AF_UNIX, o->type | SOCK_CLOEXEC, 0, sv) < 0) {
        fail_errno("socketpair");
        free(samples);
        return 1;
    }
    if (set_recv_timeout(sv[0]) < 0 || set_recv_timeout(sv[1]) < 0) {
        close(sv[0]);
        close(sv[1]);
        free(samples);
        return 1;
    }
    fflush(NULL);
    pid = fork();
    if (pid < 0) {
        fail_errno("fork");
        close(sv[0]);
        close(sv[1]);
        free(samples);
        return 1;
    }
    if (pid == 0) {
        close(sv[0]);
        free(samples);
        if (pin_cpu(o->child_cpu) < 0)
            _exit(1);
        _exit(pingpong_child(sv[1], o->type));
    }
    close(sv[1]);

    rc = pingpong_parent(sv[0], o, samples);
    if (rc == 0)
        send_end_marker(sv[0], o->type);
    close(sv[0]);                    /* EOF (or the marker) ends the child */
    if (reap(pid, rc != 0) < 0 || rc != 0) {
        free(samples);
        return 1;
    }

    qsort(samples, (size_t)o->count, sizeof *samples, cmp_u64);
    printf("{\"mode\":\"pingpong\",\"type\":\"%s\",\"count\":%ld,"
           "\"p50_us\":%.3f,\"p90_us\":%.3f,\"p99_us\":%.3f}\n",
           o->type_name, o->count,
           percentile_us(samples, o->count, 50.0),
           percentile_us(samples, o->count, 90.0),
           percentile_us(samples, o->count, 99.0));
    free(samples);
    return 0;
}

/* ------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    struct options o;
    int rc;

    memset(&o, 0, sizeof o);
    if (parse_args(argc, argv, &o) < 0)
        return 1;

    raise_nofile();
    /* Pinning before fork() places parent and child on the same CPU. */
    if (pin_cpu(o.cpu) < 0)
        return 1;

    rc = o.pingpong ? run_pingpong(&o) : run_throughput(&o);
    if (fflush(stdout) == EOF) {
        fail_errno("stdout");
        rc = 1;
    }
    return rc;
}
