/* sandbox_internal.h - the generic core the backends build on (internal to
 * sandbox/; the pool never includes this).
 *
 * sandbox.c, chan.c and steps.c own everything that is the same for a
 * container and a microVM:
 *
 *   - struct sandbox and struct sandbox_backend, their ids, roles, lifetime;
 *   - the channel (chan.c): emberd's end of a SOCK_STREAM socketpair,
 *     driven by a uv_poll_t, frames parsed incrementally and checked
 *     (sandbox output is untrusted), fds sent and received with SCM_RIGHTS;
 *   - the process: a pidfd watched for exit, direct children reaped with
 *     waitid(P_PIDFD), the death classified (OOM, crash frame, wait status);
 *   - calls: PROTO_INVOKE out, PROTO_RESPONSE / PROTO_FAILED in, per-call
 *     timers, several calls in flight keyed by call id;
 *   - waits (steps.c) for one expected frame (HELLO, LOADED, FORKED,
 *     RESET_DONE) with a timeout, and the common exchanges built on them;
 *   - thread-pool work that keeps a sandbox allocated until it completes.
 *
 * A backend fills struct sandbox_ops and composes these pieces. Its
 * operations receive a done callback from the core (a trampoline that sets
 * the role, takes the OOM baseline and drops the callback if the sandbox was
 * destroyed meanwhile): call it exactly once, on the loop thread, never from
 * inside the op itself. Report a synchronous failure by returning -errno
 * instead, and then do not call it; a create or fork that fails
 * synchronously must leave sb->priv NULL (the core frees the sandbox without
 * calling ops->destroy).
 *
 * A typical backend (see container/backend.c):
 *
 *   create      start the process (sandbox__queue_work if that blocks),
 *               sandbox__attach(chan, pidfd, pid, SANDBOX__DIRECT_CHILD),
 *               sandbox__wait_hello -> cb
 *   specialize  sandbox__load_encode(spec, extra options) at once, slow
 *               preparation on the pool, sandbox__load_send(fds) -> cb
 *   fork        sandbox__fork_send(zygote, child's channel end, ...) -> pidfd,
 *               sandbox__attach(child, ...), sandbox__wait_hello -> cb;
 *               or anything else that ends with an attached, HELLOed child
 *   invoke      sandbox__invoke
 *   stats       memory and oom_kills (OOM classification reads oom_kills)
 *   destroy     release what sb->priv holds, free it
 *
 * What the core decides on its own:
 *   - a frame that is malformed, unknown, oversize, unexpected (an answer
 *     nobody waits for, a call id not in flight, anything before HELLO, fds
 *     on a frame other than FORKED) kills the sandbox: calls in flight fail
 *     with SANDBOX_ERR_BAD_OUTPUT "bad frame from sandbox: ...";
 *   - a call timer kills the sandbox: its calls fail with SANDBOX_ERR_TIMEOUT;
 *   - a wait timer kills the sandbox (it is wedged): the wait gets -ETIMEDOUT;
 *   - EOF or a write error on the channel kills the sandbox, and its calls
 *     are judged when the pidfd reports the death: oom_kills increased ->
 *     SANDBOX_ERR_OOM "out of memory"; else the message of a PROTO_FAILED
 *     (CRASH); else the wait status (waitid for a direct child, PROTO_EXITED
 *     of its zygote otherwise, awaited SANDBOX_EXIT_STATUS_GRACE_MS);
 *   - on_exit(why) is reported once when the process is gone, for every
 *     death not caused by sandbox_destroy (also after a kill by the core,
 *     and after an op failed because the process died).
 *
 * Lifetime rules a backend must follow:
 *   - sb->priv is the backend's. ops->destroy is called once, after the core
 *     has failed every call and wait, sent SIGKILL and started closing its
 *     handles; the backend then releases what it holds (blocking release
 *     through sandbox__queue_work) and frees sb->priv when that is done.
 *   - Anything of the backend that refers to a sandbox across a loop
 *     iteration (queued work, a context waiting on another sandbox's frame)
 *     holds it: sandbox__queue_work does so itself, otherwise use
 *     sandbox__hold / sandbox__release. The core frees a destroyed sandbox
 *     when its handles are closed and nothing holds it.
 *   - After destroy, sandbox__destroyed(sb) is true: finish or undo what is
 *     in progress, call no owner callback (the trampoline drops them anyway).
 */
#ifndef EMBER_SANDBOX_INTERNAL_H
#define EMBER_SANDBOX_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/types.h>
#include <uv.h>

#include "common/error.h"
#include "sandbox/proto.h"
#include "sandbox/sandbox.h"

/* ---- timeouts of the steps that are not calls (named so logs and tests
 *      agree) ---- */

/** Process started (spawn returned, or fork answered) -> its PROTO_HELLO. */
#define SANDBOX_HELLO_TIMEOUT_MS 10000
/** PROTO_LOAD -> PROTO_LOADED, added to the function's own timeout_ms, which
 *  bounds ember_init. */
#define SANDBOX_LOAD_TIMEOUT_MS 10000
/** PROTO_FORK -> PROTO_FORKED, PROTO_RESET -> PROTO_RESET_DONE. */
#define SANDBOX_STEP_TIMEOUT_MS 10000
/** Thread-pool steps (spawn, cgroup setup, mounts) are not timed: a blocking
 *  syscall cannot be interrupted from the loop. */

/** After an instance that is not our child dies with calls in flight and no
 *  better explanation, how long to wait for its zygote's PROTO_EXITED (the
 *  wait status) before reporting the death without one. */
#define SANDBOX_EXIT_STATUS_GRACE_MS 200

/** Bytes read from one channel per loop wakeup, so that one chatty sandbox
 *  cannot starve the others (the poll is level-triggered: the rest is read
 *  on the next iteration). */
#define SANDBOX_READ_BUDGET (256u << 10)

/** Wait for a frame whatever its hdr.id (LOADED, RESET_DONE, HELLO). */
#define SANDBOX__ANY_ID UINT32_MAX

/** sandbox__attach flags. */
#define SANDBOX__DIRECT_CHILD 0x1u /* emberd's own child: reap it with waitid */

/* ---- the backend object ---- */

struct sandbox_backend {
    const struct sandbox_ops *ops;
    enum sandbox_kind kind;
    uv_loop_t *loop;
    struct sandbox_config cfg; /* deep copy (strings owned); zero knobs defaulted */
    void *priv;                /* the backend's state, set by ops->backend_init */

    /* core-private */
    uint64_t next_id;   /* sandbox ids, from 1 */
    uint32_t next_tag;  /* FORK tags */
    size_t n_sandboxes; /* allocated and not yet freed */
    bool closing;       /* sandbox_backend_close waits for n_sandboxes == 0 */
};

/* ---- one sandbox ---- */

struct sandbox;

/** A frame delivered to a wait. fds: take one by setting its slot to -1; the
 *  core closes the others after the callback. */
struct sandbox__frame {
    struct proto_hdr hdr;
    const uint8_t *payload; /* hdr.len bytes; valid during the callback */
    int fds[PROTO_MAX_FDS];
    int n_fds;
};

/**
 * A wait ended: @status 0 and @f the frame, or @status < 0 and @f NULL:
 * -ETIMEDOUT (the sandbox was killed: it is wedged), -ECHILD (the process
 * died or was killed), -ECANCELED (sandbox_destroy).
 */
typedef void (*sandbox__frame_cb)(struct sandbox *sb, int status, struct sandbox__frame *f,
                                  void *data);
/** A multi-step exchange ended: 0 or -errno (as sandbox__frame_cb, plus
 *  -EPROTO for a refusal reported by the sandbox, e.g. LOADED status != 0). */
typedef void (*sandbox__status_cb)(struct sandbox *sb, int status, void *data);
/** PROTO_FORKED arrived (or the wait failed): on success @pidfd is the
 *  child's (owned by the callee: attach or close it), @ns_pid its pid in
 *  the zygote's namespace and @ahead_ns how long it had waited, forked
 *  ahead (0: forked for this FORK); on failure @pidfd is -1. */
typedef void (*sandbox__forked_cb)(struct sandbox *zygote, int status, int pidfd, pid_t ns_pid,
                                   uint64_t ahead_ns, void *data);
/** Thread-pool function: runs off the loop; touch only @ctx. */
typedef void (*sandbox__work_fn)(void *ctx);
/** Loop-side completion of sandbox__queue_work; check sandbox__destroyed. */
typedef void (*sandbox__after_fn)(struct sandbox *sb, void *ctx);

struct sandbox__wait;
struct sandbox__inflight;
struct sandbox__out;

enum sandbox__op {
    SANDBOX__OP_NONE,
    SANDBOX__OP_CREATE,
    SANDBOX__OP_SPECIALIZE,
    SANDBOX__OP_FORK,
    SANDBOX__OP_RESET,
};

struct sandbox {
    /* ---- for backends: read freely; write only where noted ---- */
    const struct sandbox_ops *ops;
    struct sandbox_backend *backend;
    uv_loop_t *loop;
    enum sandbox_kind kind;
    enum sandbox_role role; /* set by the core when an op succeeds */
    uint64_t id;            /* unique per backend, from 1 */
    pid_t pid;              /* host pid once attached, else 0 */
    pid_t ns_pid;           /* pid inside the sandbox (HELLO "pid"), else 0 */
    uint64_t init_ns;       /* from PROTO_LOADED (sandbox__load_send) */
    uint64_t ahead_ns;      /* instance: waited this long, forked ahead */
    /* The function's limits: set by the core before ops->specialize and
     * inherited by forks (a stem cell has 0, 0, 1). */
    uint32_t memory_mb;
    uint32_t timeout_ms;
    uint32_t concurrency;
    bool crash_fatal;       /* a call's crash is the instance's death (the
                               function runs in the agent's or VM's process,
                               not in an exec child) */
    struct sandbox *zygote; /* the zygote an instance was forked from,
                               NULL once that zygote is destroyed */
    void *priv;             /* the backend's */

    /* ---- core-private ---- */
    struct sandbox_events events;
    LIST_ENTRY(sandbox) sibling;   /* in zygote->children */
    LIST_HEAD(, sandbox) children; /* instances forked from here */

    /* pending owner operation (create / specialize / fork / reset) */
    enum sandbox__op op;
    sandbox_done_cb op_cb;
    void *op_data;

    /* the channel */
    int chan_fd;
    uv_poll_t chan_poll;
    uv_prepare_t chan_flush; /* writes what the loop iteration queued */
    bool chan_open;  /* chan_poll and chan_flush initialized and not closing */
    int chan_events; /* UV_READABLE | UV_WRITABLE currently asked */
    uint8_t rx_hdr_raw[PROTO_HDR_SIZE];
    size_t rx_hdr_got;
    struct proto_hdr rx_hdr;
    uint8_t *rx_payload;
    size_t rx_payload_got, rx_payload_cap;
    int rx_fds[PROTO_MAX_FDS];
    int rx_n_fds;
    bool hello_seen;
    bool chan_wbroken; /* a write failed: nothing more is sent */
    TAILQ_HEAD(, sandbox__out) outq;

    /* the process */
    int pidfd;
    uv_poll_t pid_poll;
    bool pid_open; /* pid_poll initialized and not closing */
    bool direct_child;
    bool attached;
    bool exited; /* the pidfd reported the exit */
    bool reaped; /* a direct child's status was collected */
    bool have_status;
    int wait_status; /* waitpid-style, valid if have_status */
    uv_timer_t exit_timer;
    bool exit_timer_open;
    bool death_done;  /* calls classified, on_exit reported */
    bool zygote_gone; /* its zygote died or was destroyed */

    /* state */
    bool destroyed; /* sandbox_destroy was called */
    bool killed;    /* we sent SIGKILL; kill_reason says why */
    bool failed;    /* an op failed: only destroy is left */
    bool serves;    /* specialized with spec->serve: an instance, not a zygote */
    char kill_reason[256];
    char crash_detail[256]; /* from a PROTO_FAILED(CRASH) */
    char last_error[256];   /* sandbox_last_error */
    uint64_t oom_base;      /* oom_kills when the sandbox last became ready */
    bool have_oom_base;     /* (a backend that knows, e.g. a fork into a new
                               cgroup, sets it and saves the core a read) */

    TAILQ_HEAD(, sandbox__inflight) calls; /* in the order sent */
    uint32_t n_calls;
    uint32_t n_started;     /* the rest wait in the sandbox behind them */
    bool starts_closed;     /* dying: no waiting call will start */
    TAILQ_HEAD(, sandbox__wait) waits;

    unsigned handles; /* initialized handles not yet closed */
    unsigned holds;   /* sandbox__hold count (queued work included) */
};

/* ---- backend object ---- */

/**
 * sandbox_backend_open with an explicit ops table (tests use a fake one;
 * sandbox_backend_open dispatches on kind to this). Copies @cfg. Calls
 * ops->backend_init, which may set be->priv. 0 or -errno with @err filled.
 */
int sandbox__backend_open(const struct sandbox_ops *ops, enum sandbox_kind kind, uv_loop_t *loop,
                          const struct sandbox_config *cfg, struct sandbox_backend **out,
                          struct ember_error *err);

/* ---- the process and its channel ---- */

/**
 * Give @sb its process: @chan_fd (emberd's end of the socketpair), @pidfd
 * and the host @pid; ownership of both fds passes to the core, also on
 * failure. Flags: SANDBOX__DIRECT_CHILD if emberd must reap it. Reading
 * starts at once; the first frame must be PROTO_HELLO (sandbox__wait_hello).
 * On a destroyed sandbox the process is killed (and reaped when it is a
 * direct child) and -ECANCELED returned. -EALREADY if already attached.
 */
int sandbox__attach(struct sandbox *sb, int chan_fd, int pidfd, pid_t pid, unsigned flags);

/**
 * Queue one frame (built with proto_buf_begin..proto_buf_finish) on the
 * channel: written once the loop iteration's events are handled, or at once
 * if it carries fds (such a frame goes alone in a sendmsg). Takes @frame's
 * memory (left empty) and @fds (closed once sent or on failure), also on
 * failure. -ESRCH if the channel is gone (dead, killed,
 * destroyed), -ENOTCONN before sandbox__attach.
 */
int sandbox__send(struct sandbox *sb, struct proto_buf *frame, int *fds, int n_fds);

/**
 * Wait for the next frame of @type (with hdr.id @id, or SANDBOX__ANY_ID).
 * @cb runs once, never inside this call: with the frame (its payload already
 * validated by the core), or with an error (see sandbox__frame_cb). A frame
 * is delivered to the oldest matching wait; a LOADED / FORKED / RESET_DONE
 * that matches none is a bad frame. A wait for HELLO when HELLO was already
 * read succeeds on the next loop iteration with @f NULL. On timeout (0 =
 * none) the sandbox is killed (it is wedged) before @cb runs with
 * -ETIMEDOUT. -ECANCELED destroyed, -ECHILD dead or killed, -ENOTCONN not
 * attached.
 */
int sandbox__expect(struct sandbox *sb, uint16_t type, uint32_t id, uint32_t timeout_ms,
                    sandbox__frame_cb cb, void *data);

/** Wait for PROTO_HELLO (validated by the core: "version" must be
 *  PROTO_VERSION; "pid" sets sb->ns_pid). @cb gets 0 or a wait error. */
int sandbox__wait_hello(struct sandbox *sb, uint32_t timeout_ms, sandbox__status_cb cb, void *data);

/**
 * Encode the PROTO_LOAD frame of @spec into @b: the standard options
 * (function, version, runtime, handler, timeout_ms, memory_mb, concurrency,
 * env.KEY) followed by the backend's @extra pairs (seccomp, package_dir,
 * snapshot_dir...). Copies everything: @spec may go away afterwards.
 * -E2BIG over PROTO_MAX_PAIRS, -EMSGSIZE over PROTO_MAX_PAYLOAD.
 */
int sandbox__load_encode(struct proto_buf *b, const struct sandbox_spec *spec,
                         const struct proto_pair *extra, uint32_t n_extra);

/**
 * Send an encoded PROTO_LOAD (@frame and @fds taken as by sandbox__send) and
 * wait for PROTO_LOADED, SANDBOX_LOAD_TIMEOUT_MS + sb->timeout_ms. Sets
 * sb->init_ns. A LOADED with status != 0 ends with -status (or -EPROTO) and
 * its message in sandbox_last_error.
 */
int sandbox__load_send(struct sandbox *sb, struct proto_buf *frame, int *fds, int n_fds,
                       sandbox__status_cb cb, void *data);

/**
 * Ask zygote @zygote to fork: sends PROTO_FORK with @fds (fds[0]: the new
 * instance's end of its socketpair; then what proto.h lists for FORK, e.g.
 * the cgroup.procs files the child moves itself into; all taken, also on
 * failure, and closed once sent) under a fresh tag and waits
 * SANDBOX_STEP_TIMEOUT_MS for the matching PROTO_FORKED. The pidfd it
 * carries is checked to be one (signal 0). A FORKED status != 0 ends with
 * -status and a message in the zygote's sandbox_last_error. Several forks
 * may be outstanding at once.
 */
int sandbox__fork_send(struct sandbox *zygote, int *fds, int n_fds, sandbox__forked_cb cb,
                       void *data);

/**
 * Send PROTO_RESET and wait SANDBOX_STEP_TIMEOUT_MS for PROTO_RESET_DONE
 * (the microVM's return to its post-init snapshot). A RESET_DONE status != 0
 * ends with -status (or -EPROTO).
 */
int sandbox__reset_send(struct sandbox *sb, sandbox__status_cb cb, void *data);

/**
 * Send PROTO_PARK with @fds (the cgroup.procs files the zygote moves itself
 * into; taken, also on failure) and wait SANDBOX_STEP_TIMEOUT_MS for
 * PROTO_PARKED. A PARKED status != 0 ends with -status. One at a time.
 */
int sandbox__park_send(struct sandbox *zygote, int *fds, int n_fds, sandbox__status_cb cb,
                       void *data);

/**
 * Kill @sb's process (SIGKILL through the pidfd) because of @detail: every
 * call in flight completes with @error and @detail, every wait fails with
 * -ECHILD, the channel closes (nothing more is read from it). on_exit
 * reports @detail once the pidfd says the process is gone. Idempotent: the
 * first reason sticks.
 */
void sandbox__kill(struct sandbox *sb, enum sandbox_error error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- calls (inflight.c) ---- */

/**
 * The generic ops->invoke: encodes PROTO_INVOKE (copying everything of
 * @call), arms the call timer (call->timeout_ms; 0 = the function's) when
 * the call starts, matches the answer by call id. -EINVAL not an instance /
 * failed / destroyed, -ESRCH dead or killed, -EBUSY an op pending or
 * concurrency and pipeline full, -EEXIST call id already in flight, -E2BIG
 * too many headers, -EMSGSIZE request over PROTO_MAX_PAYLOAD. On error @cb
 * is not called.
 */
int sandbox__invoke(struct sandbox *sb, const struct sandbox_call *call, sandbox_result_cb cb,
                    void *data);
/** Fail every call in flight with @error (those not started as unstarted);
 *  no call starts after this. */
void sandbox__complete_calls(struct sandbox *sb, enum sandbox_error error, const char *detail);
/** Did the backend's stats count an OOM kill since the sandbox became ready? */
bool sandbox__oom_seen(struct sandbox *sb);

/* ---- lifetime ---- */

/** Run @work on libuv's thread pool, then @after on the loop; @sb is held
 *  (stays allocated) in between. */
int sandbox__queue_work(struct sandbox *sb, sandbox__work_fn work, sandbox__after_fn after,
                        void *ctx);
void sandbox__hold(struct sandbox *sb);
/** Drop a hold; may free a destroyed sandbox: do not touch @sb afterwards. */
void sandbox__release(struct sandbox *sb);
/** sandbox_destroy was called: do not call owner callbacks, undo and release. */
bool sandbox__destroyed(const struct sandbox *sb);
/** Alive: attached or attachable, not killed, not exited, not destroyed. */
bool sandbox__alive(const struct sandbox *sb);

/** Set the text of sandbox_last_error (also logged at warn level). */
void sandbox__set_error(struct sandbox *sb, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/** "exited with status N" / "killed by signal N (SIGX)" for a waitpid status. */
void sandbox__describe_status(int wait_status, char *buf, size_t size);

/* ---- the core's own: shared between its files, not for backends ---- */

/* sandbox.c */
/** The name of a frame type for messages ("HELLO"; "?" if unknown). */
const char *sandbox__type_name(uint16_t type);
/** Copy untrusted bytes into a C string: printable ASCII only, truncated. */
void sandbox__sanitize(char *dst, size_t size, const char *src, size_t len);
/** Free @sb if it is destroyed, its handles are closed and nothing holds it. */
void sandbox__maybe_free(struct sandbox *sb);
/** SIGKILL @sb's process through its pidfd, unless it has none or has exited. */
void sandbox__signal_kill(struct sandbox *sb);
/** A zygote's PROTO_EXITED: the wait status of its child @ns_pid. */
void sandbox__child_exited(struct sandbox *zygote, uint32_t ns_pid, uint32_t wait_status);
/** A PROTO_RESPONSE: complete the call in flight it answers. */
void sandbox__on_response(struct sandbox *sb, const struct proto_hdr *h, const uint8_t *payload);
/** A PROTO_FAILED: fail the call in flight it answers. */
void sandbox__on_failed(struct sandbox *sb, const struct proto_hdr *h, const uint8_t *payload);

/* chan.c */
/** Start @sb's channel on @chan_fd (taken, also on failure); a failure kills @sb. */
int sandbox__chan_attach(struct sandbox *sb, int chan_fd);
/** Stop talking to the sandbox; the fd and buffers go when the handle has closed. */
void sandbox__chan_close(struct sandbox *sb);
/** Read and act on what a dead process left in its channel (bounded). */
void sandbox__chan_drain(struct sandbox *sb);
/** Kill @sb for a frame it should not have sent (SANDBOX_ERR_BAD_OUTPUT). */
void sandbox__bad_frame(struct sandbox *sb, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* steps.c */
/** Give @f to the oldest wait for it: false if nothing waits for it. */
bool sandbox__wait_deliver(struct sandbox *sb, struct sandbox__frame *f);
/** Fail every wait with @status: -ECHILD dead or killed, -ECANCELED destroyed. */
void sandbox__fail_waits(struct sandbox *sb, int status);

/** The container backend's ops (container/backend.c). */
extern const struct sandbox_ops sandbox_container_ops;

#endif
