/* sandbox.h - the sandbox interface: one ops table per backend.
 *
 * The pool knows sandboxes only through this header. A sandbox is one
 * supervised process tree behind a framed channel (proto.h):
 *
 *   stem cell  generic: namespaces, cgroup, mounts and agent ready, no
 *              function loaded. May be given to any function, once.
 *   zygote     a stem cell specialized to one function version: package
 *              loaded, ember_init run (or, microVM, a snapshot taken). It
 *              serves no calls; instances are forked from it.
 *   instance   forked from a zygote (copy-on-write, its own cgroup and
 *              channel; microVM: restored from the snapshot); serves calls.
 *
 *   sandbox_create ──▶ stem ──sandbox_specialize──▶ zygote ──sandbox_fork──▶ instance
 *
 * A backend with specialized_serves set (microVM) skips the zygote: its
 * specialize restores (or first takes) the function's snapshot and the
 * result is an instance; the snapshot on disk plays the zygote's part.
 *
 * A sandbox that ran one function's code is never given to another: the only
 * transition out of "stem" is specialize, and nothing returns to "stem".
 *
 * Threading: every function here is called on the loop thread and never
 * blocks; slow work (clone, mounts, cgroup setup) runs on libuv's thread pool
 * and completes through the callback, on the loop thread.
 *
 * Lifetime: a sandbox lives until sandbox_destroy(); after that no callback
 * of it is called and its memory is freed once its handles close. A sandbox
 * that dies on its own (crash, OOM kill, timeout kill) reports on_exit once
 * and stays allocated until the owner calls sandbox_destroy().
 */
#ifndef EMBER_SANDBOX_SANDBOX_H
#define EMBER_SANDBOX_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "functions/manifest.h"

struct sandbox;
struct sandbox_backend;

enum sandbox_kind {
    SANDBOX_CONTAINER,
    SANDBOX_MICROVM,
};
#define SANDBOX_KIND_COUNT 2

enum sandbox_role {
    SANDBOX_ROLE_STEM,
    SANDBOX_ROLE_ZYGOTE,
    SANDBOX_ROLE_INSTANCE,
};

/** Why an invocation failed (sandbox_result.error). */
enum sandbox_error {
    SANDBOX_OK = 0,
    SANDBOX_ERR_TIMEOUT,    /* timeout_ms passed; the sandbox was killed      -> 504 */
    SANDBOX_ERR_OOM,        /* cgroup OOM kill (detail "out of memory")       -> 502 */
    SANDBOX_ERR_CRASH,      /* process died; detail names the signal/status    -> 502 */
    SANDBOX_ERR_HANDLER,    /* handler returned nonzero / exec exit status     -> 502 */
    SANDBOX_ERR_BAD_OUTPUT, /* bad CGI headers, bad frame from the sandbox     -> 502 */
    SANDBOX_ERR_TOO_LARGE,  /* response over SANDBOX_RESPONSE_MAX              -> 502 */
    SANDBOX_ERR_GONE,       /* sandbox destroyed (drain, delete) before answer -> 503 */
    SANDBOX_ERR_INTERNAL,   /*                                                -> 500 */
};

#define SANDBOX_RESPONSE_MAX (6u << 20) /* bytes of one response body */
#define SANDBOX_PIPELINE_DEPTH 4        /* calls sent ahead of a concurrency-1 one */

/** Daemon-wide settings a backend needs; filled by emberd from flags/config. */
struct sandbox_config {
    const char *state_dir;     /* --state; backends keep run/ files under it */
    const char *agent_path;    /* absolute path of ember-agent */
    const char *vmm_path;      /* absolute path of ember-vmm */
    uint32_t pids_max;         /* per sandbox; default 64 */
    uint32_t stem_memory_mb;   /* limit of a stem cell before specialization */
    uint32_t tmp_size_mb;      /* /tmp tmpfs size; default 64 */
    uint32_t cpu_quota_pct;    /* CPU quota per sandbox, % of one core; default 100 */
    uint32_t uid_base;         /* first host uid/gid for sandboxes; default 1000000000 */
    uint32_t uid_count;        /* size of that range; default 65536 */
    bool no_favordynmods;      /* --no-favordynmods: leave the kernel's cgroup
                                  migration lock in its default mode (see
                                  sandbox/container/cgroup.c) */
    const char *cgroup_tag;    /* set by a backend: keeps the cgroups (and
                                  leftover cleanup) of two backends sharing a
                                  state dir apart; NULL for the container one */
};

/** What a function needs from a sandbox: given to sandbox_specialize. */
struct sandbox_spec {
    const char *function;      /* name */
    const char *version;       /* digest */
    const char *package_dir;   /* absolute host path of the unpacked package */
    const char *snapshot_dir;  /* absolute host path for backend artefacts */
    const struct manifest *manifest;
    /** The specialized sandbox serves calls itself instead of becoming a
     *  zygote: a function's first container instance, which then pays no
     *  fork. It can never fork (nothing of a call's state may be copied).
     *  Container: only for concurrency 1 (-EINVAL otherwise). */
    bool serve;
};

struct sandbox_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/** One call; the sandbox copies what it needs before sandbox_invoke returns. */
struct sandbox_call {
    uint32_t id;
    const char *method;
    const char *path;          /* after /fn/{name}; "/" for the invoke route */
    const char *query;         /* without '?'; "" if none */
    const struct sandbox_header *headers;
    size_t n_headers;
    const void *body;
    size_t body_len;
    uint32_t timeout_ms;
};

/** The answer to a call. Valid only during the result callback. */
struct sandbox_result {
    enum sandbox_error error;
    char detail[256];          /* for errors: "out of memory", "killed by signal 11 (SIGSEGV)" */
    int status;                /* HTTP status set by the function */
    const struct sandbox_header *headers;
    size_t n_headers;
    const void *body;
    size_t body_len;
    uint64_t run_ns;           /* the call started -> answer received */
    uint64_t inside_ns;        /* ...of which the sandbox says it ran the call
                                  (0: not said; untrusted, at most run_ns) */
    uint64_t pending_ns;       /* sent ahead of its start (see sandbox_invoke):
                                  how long it waited behind the instance's calls */
    bool unstarted;            /* failed before it started: the instance died or
                                  went while the call waited behind others, so
                                  no code of the function saw it; it may run
                                  elsewhere */
};

/** Memory and OOM facts read from the sandbox's cgroup. */
struct sandbox_stats {
    uint64_t memory_limit;     /* bytes */
    uint64_t memory_current;   /* bytes */
    uint64_t oom_kills;
};

typedef void (*sandbox_done_cb)(struct sandbox *sb, int status, void *data);
typedef void (*sandbox_result_cb)(struct sandbox *sb, const struct sandbox_result *res,
                                  void *data);
typedef void (*sandbox_exit_cb)(struct sandbox *sb, const char *why, void *data);
typedef void (*sandbox_log_cb)(struct sandbox *sb, int stream, const char *line, size_t len,
                               void *data);

/** Owner's event hooks; set once with sandbox_set_events. */
struct sandbox_events {
    sandbox_exit_cb on_exit;   /* the process died on its own (not via destroy) */
    sandbox_log_cb on_log;     /* a line the function wrote */
    void *data;
};

/** The ops table every backend fills (crun's cgroup manager, kvmtool's virtio_ops). */
struct sandbox_ops {
    const char *name; /* "container", "microvm" */
    /** true: a specialized sandbox serves calls itself (microVM: LOAD restores
     *  the snapshot and the VM waits for requests), and a function's next
     *  instance is another stem cell specialized from the same snapshot.
     *  false: specialize makes a zygote that only forks instances. */
    bool specialized_serves;
    /** Probe the host (namespaces, cgroups, /dev/kvm); -ENOTSUP + message if unusable. */
    int (*backend_init)(struct sandbox_backend *be, struct ember_error *err);
    void (*backend_destroy)(struct sandbox_backend *be);
    /** Start a stem cell; @cb(status) once it is ready or failed. */
    int (*create)(struct sandbox_backend *be, struct sandbox *sb, sandbox_done_cb cb, void *data);
    /** Turn a ready stem cell into a zygote of @spec (an instance if
     *  spec->serve or specialized_serves); @cb(status) after init. */
    int (*specialize)(struct sandbox *sb, const struct sandbox_spec *spec, sandbox_done_cb cb,
                      void *data);
    /** Fork @child (allocated by the core) from zygote @sb; @cb(child, status). */
    int (*fork)(struct sandbox *sb, struct sandbox *child, sandbox_done_cb cb, void *data);
    /** Keep @n (0 or 1) instances of zygote @sb forked ahead, off the path
     *  of the forks that take them (NULL if unsupported). With 0 none is
     *  left by the time a later op reaches the sandbox. */
    int (*prefork)(struct sandbox *sb, uint32_t n);
    /** Return an instance to its post-init state (NULL if unsupported). */
    int (*reset)(struct sandbox *sb, sandbox_done_cb cb, void *data);
    /** Send a call. */
    int (*invoke)(struct sandbox *sb, const struct sandbox_call *call, sandbox_result_cb cb,
                  void *data);
    int (*stats)(struct sandbox *sb, struct sandbox_stats *out);
    /** Kill the process tree, release cgroup and mounts; free when closed. */
    void (*destroy)(struct sandbox *sb);
};

/* ---- the front door the pool uses (sandbox.c dispatches to the ops) ---- */

/**
 * Create the backend @kind. -ENOTSUP with a message naming what is missing
 * (no /dev/kvm, no user namespaces, no cgroup controller). Blocking: call at
 * daemon start. Also removes leftovers of a previous run (cgroups, mounts,
 * run files) under cfg->state_dir.
 */
int sandbox_backend_open(enum sandbox_kind kind, uv_loop_t *loop,
                         const struct sandbox_config *cfg, struct sandbox_backend **out,
                         struct ember_error *err);
/** Destroy the backend; every sandbox must already be destroyed. */
void sandbox_backend_close(struct sandbox_backend *be);
const char *sandbox_kind_name(enum sandbox_kind kind);
/** Parse "container" / "microvm"; -EINVAL otherwise. */
int sandbox_kind_parse(const char *s, enum sandbox_kind *out);

/** Start a stem cell; *out is owned by the caller at once (destroy it even if
 *  @cb reports failure). @cb runs on the loop when ready or failed. */
int sandbox_create(struct sandbox_backend *be, struct sandbox **out, sandbox_done_cb cb,
                   void *data);
int sandbox_specialize(struct sandbox *sb, const struct sandbox_spec *spec, sandbox_done_cb cb,
                       void *data);
/** Fork an instance from zygote @zygote (or, for a backend whose specialized
 *  sandboxes serve, from any specialized instance: the copy is made from the
 *  function's snapshot); *out owned by the caller at once. */
int sandbox_fork(struct sandbox *zygote, struct sandbox **out, sandbox_done_cb cb, void *data);
/** See sandbox_ops.prefork: what a zygote keeps forked ahead, counted by
 *  the caller (each may use up to the function's memory). -ENOTSUP if the
 *  backend cannot, -EINVAL if @zygote is not a ready zygote. */
int sandbox_prefork(struct sandbox *zygote, uint32_t n);
/** -ENOTSUP if the backend cannot reset. */
int sandbox_reset(struct sandbox *sb, sandbox_done_cb cb, void *data);
/** One call at a time per instance unless the manifest's concurrency allows
 *  more (the core multiplexes by call->id). With one at a time, up to
 *  SANDBOX_PIPELINE_DEPTH calls more may be sent ahead: they wait in the
 *  sandbox, in order, and start (their timeout and run time count from
 *  then) as the running call answers, so the instance goes from one call to
 *  the next without waiting for emberd. If the instance dies or goes first,
 *  they fail with res->unstarted set. (Not with more at a time: the agent's
 *  worker threads could take a waiting call while another thread's crash
 *  kills the instance, and "unstarted" would not be sure.)
 *  call->timeout_ms 0 means the manifest's. 0, or
 *  -ESRCH (dead), -EBUSY (concurrency and pipeline full), -EEXIST (id in
 *  flight), -EINVAL (not an instance), -E2BIG / -EMSGSIZE (request too
 *  big); on error @cb is not called. */
int sandbox_invoke(struct sandbox *sb, const struct sandbox_call *call, sandbox_result_cb cb,
                   void *data);
int sandbox_stats(struct sandbox *sb, struct sandbox_stats *out);
void sandbox_set_events(struct sandbox *sb, const struct sandbox_events *ev);
/** Kill and release; pending calls complete with SANDBOX_ERR_GONE first. */
void sandbox_destroy(struct sandbox *sb);

/** See sandbox_ops.specialized_serves. */
bool sandbox_backend_specialized_serves(const struct sandbox_backend *be);

enum sandbox_role sandbox_role(const struct sandbox *sb);
enum sandbox_kind sandbox_kind_of(const struct sandbox *sb);
pid_t sandbox_pid(const struct sandbox *sb);
uint64_t sandbox_id(const struct sandbox *sb);
/** ns spent in specialize (package load + ember_init), as the sandbox reported. */
uint64_t sandbox_init_ns(const struct sandbox *sb);
/** An instance forked ahead (sandbox_prefork): how long it had waited; 0
 *  if forked for its own fork. */
uint64_t sandbox_ahead_ns(const struct sandbox *sb);
/** Why the last create/specialize/fork/reset failed, or why the sandbox died
 *  or was killed ("" if nothing failed): e.g. the handler's load error as the
 *  sandbox reported it, "timed out after 5000 ms". Borrowed: valid until the
 *  next call on @sb. */
const char *sandbox_last_error(const struct sandbox *sb);

/** HTTP status for a sandbox error (504, 502, 503, 500). */
int sandbox_error_http_status(enum sandbox_error e);
const char *sandbox_error_name(enum sandbox_error e);

#endif
