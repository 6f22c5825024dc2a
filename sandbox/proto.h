/* proto.h - the framed channel between emberd and a sandbox.
 *
 * A sandbox (ember-agent in a container, ember-vmm for a microVM) talks to
 * emberd over one end of a SOCK_STREAM socketpair. Every message is a frame:
 *
 *     struct proto_hdr (12 bytes, host byte order: both ends are one host)
 *     payload (hdr.len bytes)
 *
 * File descriptors travel as SCM_RIGHTS on the sendmsg() that carries the
 * frame's header (at most PROTO_MAX_FDS per frame).
 *
 * Everything a sandbox sends is untrusted: a bad length, an unknown type, a
 * frame over PROTO_MAX_PAYLOAD or a payload that fails to decode kills that
 * sandbox and fails its call with 502.
 *
 * Payload encodings use length-prefixed fields only (u32 length + bytes), so
 * bodies and header values travel as raw bytes, never base64.
 *
 *   strings  : u32 n_pairs, then n_pairs * (u32 klen, k bytes, u32 vlen, v bytes)
 *   request  : u32 method_len, method, u32 path_len, path, u32 query_len, query,
 *              pairs (headers), u32 body_len, body
 *   response : u32 status, pairs (headers), u32 body_len, body, then
 *              optionally u64 ns the call ran, as the sandbox measured it
 */
#ifndef EMBER_SANDBOX_PROTO_H
#define EMBER_SANDBOX_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROTO_VERSION 1
#define PROTO_HDR_SIZE 12
#define PROTO_MAX_PAYLOAD ((6u << 20) + (256u << 10)) /* a 6 MiB body + headers */
#define PROTO_MAX_FDS 4
#define PROTO_MAX_PAIRS 256     /* headers or options in one frame */
#define PROTO_LOG_LINE_MAX 4096 /* bytes of one log line */

enum proto_type {
    /* emberd -> sandbox */
    PROTO_LOAD = 1,     /* specialize: payload = strings (see PROTO_OPT_*);
                           container: fd[0] = detached mount of the package */
    PROTO_INVOKE = 2,   /* payload = request; hdr.id = invocation id */
    PROTO_FORK = 3,     /* zygote: fork an instance; fd[0] = its channel end;
                           fd[1..] (container, optional) = cgroup.procs of
                           the instance's cgroup, one per hierarchy, opened
                           by emberd: the child writes "0" to each (moving
                           itself in) before its HELLO; without them it
                           stays where it is born (see PROTO_PARK).
                           hdr.id = emberd's tag echoed in PROTO_FORKED */
    PROTO_RESET = 4,    /* return to the post-init snapshot (microVM) */
    PROTO_SHUTDOWN = 5, /* exit cleanly */
    PROTO_PARK = 6,     /* zygote (container): move into the cgroup whose
                           cgroup.procs files (one per hierarchy, opened by
                           emberd) are fd[0..], writing "0" to each; a FORK
                           read after it (with only fd[0]) leaves the child
                           where it is born, in that group. The zygote
                           answers PROTO_PARKED once it has moved (out of the
                           previous child's group) */
    PROTO_PREFORK = 7,  /* zygote (container): u32 n, 0 or 1: keep n instances
                           forked ahead. After each PARK the zygote forks one
                           into the group it parked in; the next FORK with
                           only fd[0] (a child born there) hands it that
                           channel instead of forking. 0 kills one that
                           waits before the zygote reads on. No answer */

    /* sandbox -> emberd */
    PROTO_HELLO = 64,      /* first frame of every sandbox process: strings
                              ("version", "pid" as seen inside) */
    PROTO_LOADED = 65,     /* answer to LOAD: u32 status (0 ok, else errno),
                              then u32 len + message; u64 init_ns */
    PROTO_RESPONSE = 66,   /* answer to INVOKE: hdr.id matches; payload = response */
    PROTO_FAILED = 67,     /* INVOKE failed inside: hdr.id matches; u32 reason
                              (enum proto_fail), u32 len + message */
    PROTO_FORKED = 68,     /* answer to FORK: hdr.id matches; u32 status, u32 pid
                              (in the sandbox's pid namespace); optionally u64
                              ns the child had waited, forked ahead (PREFORK;
                              0: forked for this FORK); fd[0] = pidfd of the
                              child on success */
    PROTO_LOG = 69,        /* one log line: u32 stream (1 stdout, 2 stderr),
                              then the line bytes (no newline), <= PROTO_LOG_LINE_MAX */
    PROTO_EXITED = 70,     /* a zygote's child died: u32 pid, u32 wait status */
    PROTO_RESET_DONE = 71, /* answer to RESET: u32 status, u64 reset_ns */
    PROTO_PARKED = 72,     /* answer to PARK: u32 status, u64 ns */
};

enum proto_fail {
    PROTO_FAIL_HANDLER = 1,    /* ember_handle returned nonzero / exec exit != 0 */
    PROTO_FAIL_BAD_OUTPUT = 2, /* exec: malformed CGI header block */
    PROTO_FAIL_TOO_LARGE = 3,  /* response over the limit */
    PROTO_FAIL_CRASH = 4,      /* exec child or guest died; message says how */
    PROTO_FAIL_INTERNAL = 5,
};

/* Option keys of PROTO_LOAD's strings. */
#define PROTO_OPT_FUNCTION "function" /* name */
#define PROTO_OPT_VERSION "version"   /* digest */
#define PROTO_OPT_RUNTIME "runtime"   /* "native" | "exec" */
#define PROTO_OPT_HANDLER "handler"   /* path relative to the package root */
#define PROTO_OPT_TIMEOUT_MS "timeout_ms"
#define PROTO_OPT_MEMORY_MB "memory_mb"
#define PROTO_OPT_ENV_PREFIX "env."           /* "env.GREETING" = "hi" */
#define PROTO_OPT_PACKAGE_DIR "package_dir"   /* microVM: host path of the package */
#define PROTO_OPT_SNAPSHOT_DIR "snapshot_dir" /* microVM: where snapshots live */
#define PROTO_OPT_SECCOMP                                                                          \
    "seccomp" /* container: BPF (struct sock_filter[]) to install before loading */
#define PROTO_OPT_CONCURRENCY "concurrency"
#define PROTO_OPT_SERVE "serve" /* container: "1" = serve calls after the LOAD, never fork */

struct proto_hdr {
    uint16_t type;
    uint16_t flags; /* 0; reserved */
    uint32_t id;
    uint32_t len;
};

/** A borrowed byte string: points into a frame's payload. */
struct proto_str {
    const char *p;
    uint32_t len;
};

struct proto_pair {
    struct proto_str key;
    struct proto_str value;
};

/** A decoded request; every pointer borrows from the payload. */
struct proto_request {
    struct proto_str method, path, query;
    uint32_t n_headers;
    struct proto_pair headers[PROTO_MAX_PAIRS];
    struct proto_str body;
};

/** A decoded response; every pointer borrows from the payload. */
struct proto_response {
    uint32_t status;
    uint32_t n_headers;
    struct proto_pair headers[PROTO_MAX_PAIRS];
    struct proto_str body;
    uint64_t run_ns; /* 0 if absent */
};

/** Growable output buffer for encoding; or, from proto_buf_init_fixed,
 *  one over the caller's memory that never grows nor is freed. */
struct proto_buf {
    uint8_t *data;
    size_t len, cap;
    bool fixed;
};

/** Reader over a payload; every get fails (returns -EBADMSG) past the end. */
struct proto_reader {
    const uint8_t *p;
    size_t left;
};

/** Check a header received from an untrusted peer: known type, len within
 *  PROTO_MAX_PAYLOAD, flags 0. 0 or -EBADMSG / -EMSGSIZE. */
int proto_hdr_check(const struct proto_hdr *h);

void proto_buf_init(struct proto_buf *b);
/** Encode into @mem (@cap bytes): an encoder that would need more fails
 *  with -EMSGSIZE; proto_buf_free only forgets it. For a fork child, whose
 *  first malloc would copy heap pages it shares with its zygote. */
void proto_buf_init_fixed(struct proto_buf *b, void *mem, size_t cap);
void proto_buf_free(struct proto_buf *b);
/** Reserve PROTO_HDR_SIZE bytes for the header; proto_buf_finish fills it. */
int proto_buf_begin(struct proto_buf *b, uint16_t type, uint32_t id);
int proto_buf_finish(struct proto_buf *b); /* -EMSGSIZE if payload too large */
int proto_put_u32(struct proto_buf *b, uint32_t v);
int proto_put_u64(struct proto_buf *b, uint64_t v);
int proto_put_bytes(struct proto_buf *b, const void *p, size_t len); /* u32 len + bytes */
int proto_put_raw(struct proto_buf *b, const void *p, size_t len);   /* bytes only */
int proto_put_pairs(struct proto_buf *b, const struct proto_pair *pairs, uint32_t n);

void proto_reader_init(struct proto_reader *r, const void *payload, size_t len);
int proto_get_u32(struct proto_reader *r, uint32_t *v);
int proto_get_u64(struct proto_reader *r, uint64_t *v);
int proto_get_bytes(struct proto_reader *r, struct proto_str *s);
/** Decode pairs into @pairs (capacity @cap); -E2BIG over cap. */
int proto_get_pairs(struct proto_reader *r, struct proto_pair *pairs, uint32_t cap, uint32_t *n);

/** Decode whole payloads; -EBADMSG on any inconsistency (trailing bytes too). */
int proto_request_decode(const void *payload, size_t len, struct proto_request *out);
int proto_response_decode(const void *payload, size_t len, struct proto_response *out);

/* The small sandbox -> emberd payloads. Each decoder consumes the whole
 * payload or fails with -EBADMSG; pointers borrow from the payload. */
struct proto_loaded { /* PROTO_LOADED */
    uint32_t status;
    struct proto_str message;
    uint64_t init_ns;
};
struct proto_failed { /* PROTO_FAILED */
    uint32_t reason;  /* enum proto_fail */
    struct proto_str message;
};
struct proto_forked { /* PROTO_FORKED */
    uint32_t status, pid;
    uint64_t ahead_ns; /* 0 if absent */
};
struct proto_exited { /* PROTO_EXITED */
    uint32_t pid, status;
};
struct proto_done { /* PROTO_RESET_DONE, PROTO_PARKED */
    uint32_t status;
    uint64_t ns; /* what the step took inside */
};
struct proto_log { /* PROTO_LOG: stream 1 or 2, then the line */
    uint32_t stream;
    const char *line;
    size_t len;
};

int proto_loaded_decode(const void *p, size_t len, struct proto_loaded *m);
int proto_failed_decode(const void *p, size_t len, struct proto_failed *m);
int proto_forked_decode(const void *p, size_t len, struct proto_forked *m);
int proto_exited_decode(const void *p, size_t len, struct proto_exited *m);
int proto_done_decode(const void *p, size_t len, struct proto_done *m);
/** -EMSGSIZE for a line over PROTO_LOG_LINE_MAX. */
int proto_log_decode(const void *p, size_t len, struct proto_log *m);

/** May a response carry this header? Name an RFC 9110 token, value
 *  without CR, LF or NUL. */
bool proto_header_valid(const struct proto_pair *h);

/** Blocking helpers for the sandbox side (agent, vmm): whole frame with fds.
 *  proto_recv_frame allocates *payload (free it); returns 0, -errno, or
 *  -ECONNRESET on EOF. */
int proto_send_frame(int fd, const struct proto_buf *frame, const int *fds, int n_fds);
int proto_recv_frame(int fd, struct proto_hdr *h, uint8_t **payload, int *fds, int *n_fds);
/** Sleep until @fd has something to read: 0, or -errno (-EINTR included).
 *  Call it before a receive that would block: asleep in a unix stream
 *  recvmsg, a task is also woken when the peer reads what the task sent
 *  (unix_write_space), i.e. twice per request; poll's event mask filters
 *  that wake-up out. */
int proto_wait_readable(int fd);

struct msghdr;
/** Append the SCM_RIGHTS fds of a received @msg to @fds (*@n_fds of @max
 *  used); those past @max are closed. True if any were closed or the
 *  control data was cut (MSG_CTRUNC): the sender broke the protocol. */
bool proto_cmsg_fds(const struct msghdr *msg, int *fds, int *n_fds, int max);

/** Bytes read ahead from a channel that carries no fds (an instance's): a
 *  frame and what follows come in one recvmsg instead of two. */
#define PROTO_RXBUF_SIZE (16u << 10)
struct proto_rxbuf {
    uint8_t data[PROTO_RXBUF_SIZE];
    size_t start, end;
};
/** proto_recv_frame through @rb; fds that arrive are closed. With
 *  @borrowed, a payload that is all in @rb is lent, not copied (*@borrowed
 *  set; valid until the next read into @rb, not to be freed). */
int proto_recv_frame_buffered(int fd, struct proto_rxbuf *rb, struct proto_hdr *h,
                              uint8_t **payload, bool *borrowed);
/** Is a whole frame read ahead (poll() would not say so)? */
bool proto_rxbuf_has_frame(const struct proto_rxbuf *rb);

/** Does @s equal the C string @c? */
int proto_str_eq(struct proto_str s, const char *c);
/** @s as a decimal uint32 (digits only, no sign or space): 0, or -EINVAL. */
int proto_str_u32(struct proto_str s, uint32_t *out);
/** Write @v in decimal to @out (no NUL); returns the digit count. */
size_t proto_u32_str(uint32_t v, char out[10]);

#endif
