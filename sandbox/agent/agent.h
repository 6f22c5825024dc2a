/* agent.h - ember-agent internals shared by its source files.
 *
 * ember-agent is the only ember code inside a container sandbox. It talks to
 * emberd over fd 3 (proto.h) and lives through three roles:
 *
 *   stem cell  agent.c: sends HELLO, waits for LOAD.
 *   zygote     load.c specializes it (package at /fn, privileges dropped,
 *              seccomp installed, handler loaded, ember_init run); agent.c
 *              then forks an instance per FORK and reports their exits.
 *   instance   instance.c: serves INVOKEs through native.c (dlopen'd
 *              handler) or exec.c (a CGI program per call), with worker
 *              threads up to the manifest's concurrency.
 *
 * Around them: chan.c (framed writes to fd 3, one lock), logcap.c (the
 * function's stdout/stderr as LOG frames), crash.c (fatal signals become
 * FAILED frames), cgi.c (pure CGI/HTTP rules).
 */
#ifndef EMBER_AGENT_AGENT_H
#define EMBER_AGENT_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "functions/sdk/ember.h"
#include "sandbox/proto.h"

#define AGENT_CHAN_FD 3
#define AGENT_FN_DIR "/fn"
#define AGENT_FN_UID 1000 /* the function's identity; mapped by the spawner */
#define AGENT_FN_GID 1000
#define AGENT_RESPONSE_MAX (6u << 20) /* = SANDBOX_RESPONSE_MAX (sandbox.h) */
#define AGENT_RESPONSE_HEADERS_MAX 100
#define AGENT_WORKERS_MAX 256              /* threads of one instance, whatever concurrency says */
#define AGENT_LOG_BUDGET_BYTES (64u << 10) /* log bytes forwarded per call and stream */
#define AGENT_LOG_BUDGET_LINES 1000        /* log lines forwarded per call and stream */
#define AGENT_SOFTWARE "ember/1"

enum agent_runtime {
    AGENT_RUNTIME_NATIVE,
    AGENT_RUNTIME_EXEC,
};

typedef int (*agent_handle_fn)(const ember_request *req, ember_response *res);

/** The function this process was specialized to; set once by LOAD. */
struct agent_fn {
    char function[256];
    char version[160];
    enum agent_runtime runtime;
    char handler[4096]; /* "/fn/<handler>" */
    uint32_t timeout_ms;
    uint32_t memory_mb;
    uint32_t concurrency;   /* >= 1 */
    bool serve;             /* LOAD asked this sandbox to serve, not to fork */
    agent_handle_fn handle; /* native */
};

/* ---- chan.c: the channel to emberd ---- */

/** Adopt fd 3 as the channel (CLOEXEC). */
void agent__chan_init(void);
/** Send a finished frame with optional fds; serialized with every other
 *  writer of the channel. 0 or -errno. */
int agent__send(const struct proto_buf *frame, const int *fds, int n_fds);
/** Send @frame after clearing crash slot @slot under the channel lock, so
 *  that the crash handler never answers a call that has been answered. */
int agent__send_answer(const struct proto_buf *frame, unsigned slot);
/** Frame builders; each leaves a finished frame in @b (init'ed by caller). */
int agent__frame_failed(struct proto_buf *b, uint32_t id, enum proto_fail reason, const char *fmt,
                        ...) __attribute__((format(printf, 4, 5)));
int agent__frame_response(struct proto_buf *b, uint32_t id, uint32_t status,
                          const struct proto_pair *headers, uint32_t n_headers, const void *body,
                          size_t body_len);
/** If @b holds a RESPONSE, add how long the call ran (@run_ns) to it,
 *  unless that would take it over the size limit. */
int agent__frame_response_time(struct proto_buf *b, uint64_t run_ns);
/** Build and send a small frame: u32 @a, then (if @msg) u32 len + @msg, then
 *  (if @with_u64) u64 @c. Covers LOADED, FORKED, EXITED, RESET_DONE. */
int agent__send_status(uint16_t type, uint32_t id, uint32_t a, const uint32_t *b, const char *msg,
                       const uint64_t *c, const int *fds, int n_fds);
int agent__send_failed(uint32_t id, enum proto_fail reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int agent__send_hello(void);
int agent__send_log(int stream, const char *line, size_t len);
/** Agent diagnostics: to fd 2 before LOAD, then as LOG lines on stream 2
 *  prefixed "ember-agent: " (fd 2 belongs to the function by then). */
void agent__warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Async-signal-safe pieces for crash.c. */
/** Take the channel lock from a signal handler, waiting at most @ms.
 *  -EDEADLK if this thread holds it already, -ETIMEDOUT. */
int agent__chan_lock_signal(int ms);
void agent__chan_unlock_signal(void);
/** write() all of @p to the channel; the caller holds the lock. */
void agent__chan_write_raw(const void *p, size_t len);

/* ---- logcap.c: the function's stdout and stderr ---- */

/** Point fds 1 and 2 at fresh pipes (write ends non-blocking, so a flooding
 *  function never blocks; read ends CLOEXEC, kept here). Replaces the pipes
 *  of a previous call (a forked instance gets its own). 0 or -errno. */
int agent__log_redirect(void);
/** A zygote's pipes for its next instance, made off the fork's path: the
 *  child's agent__log_redirect takes them. make replaces any left; drop
 *  closes the zygote's copies once a child has them. */
void agent__log_spare_make(void);
void agent__log_spare_drop(void);
/** The read ends, for poll(); -1 before agent__log_redirect. */
void agent__log_fds(int *out_fd, int *err_fd);
/** Read what is in the pipes and forward complete lines within the budget.
 *  @end_of_call also forwards a trailing partial line and reports drops.
 *  Thread-safe. */
void agent__log_drain(bool end_of_call);
/** Refill the per-call budget (a call starts). */
void agent__log_budget_reset(void);
/** Has agent__log_redirect run (agent__warn's switch)? */
bool agent__log_active(void);

/* ---- crash.c: fatal signals ---- */

enum agent_crash_mode {
    AGENT_CRASH_NONE,     /* just die */
    AGENT_CRASH_LOAD,     /* answer LOAD @id with LOADED(ECANCELED) */
    AGENT_CRASH_INSTANCE, /* answer each call in a busy slot with FAILED(CRASH) */
};

/** Install the handlers for SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT and
 *  SIGSYS with an alternate stack for the calling thread, and pre-build the
 *  frames they send. @n_slots: crash slots (instance workers). 0 or -errno. */
int agent__crash_init(enum agent_crash_mode mode, uint32_t load_id, unsigned n_slots);
/** An alternate signal stack for the calling thread (each worker). */
int agent__crash_thread_init(void);
/** Mark @slot busy with call @id / idle. */
void agent__crash_slot_set(unsigned slot, uint32_t id);
void agent__crash_slot_clear(unsigned slot);
/** Leave the mode: the handlers stay installed (a fork child inherits them
 *  and its frames, made at LOAD) but report nothing, and a fatal signal
 *  kills as if they were not there. exec resets them anyway. */
void agent__crash_reset(void);
/** "killed by signal 11 (SIGSEGV)" into @buf. */
void agent__signal_describe(int sig, char *buf, size_t len);

/* ---- load.c ---- */

/** Specialize this stem cell per a LOAD payload (see proto.h PROTO_OPT_*),
 *  attaching @mount_fd at /fn. On failure a message is in @msg; the process
 *  may be half specialized and must not be loaded again. 0 or -errno. */
int agent__load(uint32_t id, const uint8_t *payload, size_t len, int mount_fd, struct agent_fn *fn,
                char *msg, size_t msg_len);

/* ---- instance.c, native.c, exec.c ---- */

/** Serve calls on fd 3 as an instance of @fn; never returns. @forked: a
 *  zygote's child, which makes its own log pipes and says HELLO; otherwise
 *  the loaded sandbox itself (LOAD with "serve"), already announced. */
__attribute__((noreturn)) void agent__instance_run(const struct agent_fn *fn, bool forked);
/** The part of agent__instance_run before HELLO (log pipes, crash
 *  handlers), for a child forked ahead to do while it waits; the run then
 *  skips it. Exits on failure. */
void agent__instance_prepare(const struct agent_fn *fn, bool forked);

/** Run one native call; leaves the answer frame (RESPONSE or FAILED) in @out. */
int agent__native_call(const struct agent_fn *fn, uint32_t id, const struct proto_request *req,
                       struct proto_buf *out);
/** Run one exec call; leaves the answer frame in @out. */
int agent__exec_call(const struct agent_fn *fn, uint32_t id, const struct proto_request *req,
                     struct proto_buf *out);

/** Read the next frame from the channel (blocking). EOF exits the process
 *  with 0 (emberd let go), a broken channel with 1: there is nobody to tell.
 *  An instance passes no @fds: its channel carries none, and it reads
 *  ahead (one recvmsg per frame, see agent__frame_ready); with @borrowed it
 *  may get a payload lent from that buffer (*@borrowed set: not to be
 *  freed, valid until the next read). */
void agent__recv_frame(struct proto_hdr *h, uint8_t **payload, int *fds, int *n_fds,
                       bool *borrowed);
/** Has an instance a whole frame read ahead? */
bool agent__frame_ready(void);

#endif
