/* container.h - host-side building blocks of the container backend
 * (internal to sandbox/; the ops glue in container/backend.c uses these).
 *
 * Every function here may block (clone, mounts, cgroupfs writes): call them
 * from libuv's thread pool, never from the loop thread, except where noted.
 */
#ifndef EMBER_SANDBOX_CONTAINER_H
#define EMBER_SANDBOX_CONTAINER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/error.h"
#include "sandbox/sandbox.h"

struct container_host;

/** Inside a sandbox: uid/gid 0 is the agent during setup, CONTAINER_FUNCTION_UID
 *  the function's identity after specialization. Both map to unprivileged
 *  host ids of cfg->uid_base.. (a pair per sandbox). */
#define CONTAINER_FUNCTION_UID 1000

/** Limits applied to one sandbox's cgroup; 0 in a field means unlimited. */
struct container_limits {
    uint64_t memory_bytes;  /* memory.max / memory.limit_in_bytes; swap off */
    uint32_t pids_max;      /* pids.max */
    uint32_t cpu_quota_pct; /* % of one core (cpu.max / cfs_quota_us) */
};

/** A spawned sandbox process as the host sees it. */
struct container_proc {
    pid_t pid;           /* host pid of ember-agent (pid 1 of its namespace) */
    int pidfd;           /* owned; readable when the process exits */
    int chan_fd;         /* owned; emberd's end of the socketpair (CLOEXEC) */
    uint32_t host_uid;   /* host uid the function's uid maps to (inside 0 is
                            host_uid - 1; gids alike) */
    char cgroup[128];    /* cgroup name relative to ember's root, e.g. "sb-42" */
};

/**
 * Probe the host and prepare: user namespaces usable, cgroup v2 or v1
 * controllers (memory, pids, cpu) detected (never assumed), ember's cgroup
 * root created, leftovers of a previous run (cgroups, mounts, run files under
 * cfg->state_dir) removed, the seccomp filter built once with libseccomp and
 * exported as BPF. -ENOTSUP + message if something is missing.
 */
int container_host_open(const struct sandbox_config *cfg, struct container_host **out,
                        struct ember_error *err);
/** Remove ember's cgroup root (all sandboxes must be gone) and free. */
void container_host_close(struct container_host *h);

/** The BPF program (struct sock_filter array) the agent installs at LOAD,
 *  before any function code runs. Borrowed; lives as long as @h. Loop-safe. */
const void *container_seccomp_bpf(const struct container_host *h, size_t *len);

/** What to run in a new sandbox; NULL means ember-agent without /dev/kvm. */
struct container_spawn_opts {
    const char *exec_path; /* host path of the program (default cfg->agent_path) */
    bool dev_kvm;          /* also bind /dev/kvm into /dev (ember-vmm) */
    const char *ro_binds[4]; /* extra host paths bound read-only at the same
                                path inside (NULL-terminated; ember-vmm's
                                snapshot dir), or NULL */
};

/**
 * Start a stem cell: new user, pid, mount, ipc, uts, net and cgroup
 * namespaces; uid/gid maps to an unprivileged host range; a cgroup with
 * @lim; a minimal root (pivot_root: ro /usr and merged-/usr links, an empty
 * /fn, size-limited /tmp, fresh /proc, /dev with null zero full random
 * urandom, generated /etc); loopback up; then exec ember-agent with its
 * channel on fd 3 (PROTO_HELLO is its first frame).
 *
 * Returns 0 once the program has been exec'd (uid 0 inside with all caps of
 * its user namespace, fds 0-2 on /dev/null, env PATH HOME LANG only), or
 * -errno with @err naming the failed step and path; nothing is left behind
 * on failure. On success the caller owns @out: poll out->pidfd for the exit
 * and reap with waitid(P_PIDFD, pidfd, &si, WEXITED) (it is the caller's
 * child, exit signal SIGCHLD); release with container_cgroup_remove(h,
 * out->cgroup), which also frees the uid pair. out->cgroup is "sb-<id>".
 *
 * The sandbox is killed if the calling thread exits (PR_SET_PDEATHSIG):
 * call it from a thread that lives as long as the daemon (libuv's pool
 * threads do). Takes ~1 ms; safe to call from several threads at once.
 */
int container_spawn(struct container_host *h, uint64_t sandbox_id,
                    const struct container_limits *lim, const struct container_spawn_opts *opts,
                    struct container_proc *out,
                    struct ember_error *err);

/** Change the limits of an existing sandbox's cgroup (at specialization).
 *  Cgroup names: [A-Za-z0-9._-], not starting with '.', < 128 bytes. */
int container_cgroup_set(struct container_host *h, const char *cgroup,
                         const struct container_limits *lim, struct ember_error *err);

/** Create cgroup @cgroup with @lim and move host pid @pid into it (a forked
 *  instance leaving its zygote's cgroup). ~0.1 ms of CPU; on cgroup v1 it
 *  renames a group made ahead. Remove it with container_cgroup_remove. */
int container_cgroup_adopt(struct container_host *h, const char *cgroup, pid_t pid,
                           const struct container_limits *lim, struct ember_error *err);

/** Most hierarchies ember uses (memory, pids and cpu may each be one). */
#define CONTAINER_MAX_HIERARCHIES 3

/**
 * Create cgroup @cgroup with @lim and open its cgroup.procs in every
 * hierarchy (O_WRONLY|O_CLOEXEC) into @procs_fds; *@n gets how many. A
 * process that writes "0" to each moves itself in (the permission was
 * checked when emberd opened them): a zygote's fork child does, so that no
 * host-side migration waits on the fork path. On failure nothing is left.
 */
int container_cgroup_prepare(struct container_host *h, const char *cgroup,
                             const struct container_limits *lim,
                             int procs_fds[CONTAINER_MAX_HIERARCHIES], int *n,
                             struct ember_error *err);

/** Memory usage and OOM-kill count of @cgroup. Cheap; loop-safe. */
int container_cgroup_stats(struct container_host *h, const char *cgroup,
                           struct sandbox_stats *out);

/** Kill everything left in @cgroup and remove it, waiting (up to ~2 s) for
 *  the kernel to let go of dying tasks. Removing "sb-<id>" also frees the
 *  sandbox's uid pair. 0 if it is gone (or never existed). */
int container_cgroup_remove(struct container_host *h, const char *cgroup);

/**
 * A detached, read-only, nosuid, nodev mount of @package_dir (open_tree
 * OPEN_TREE_CLONE + mount_setattr) for the agent to attach at /fn with
 * move_mount(fd, "", AT_FDCWD, "/fn", MOVE_MOUNT_F_EMPTY_PATH). Returns the
 * fd (CLOEXEC; close it once sent) or -errno. The sandbox sees the files
 * with their host owners unmapped (nobody): they must be readable (and
 * directories searchable) by "other". Loop-safe (two syscalls).
 */
int container_package_mount(const char *package_dir, struct ember_error *err);

/** Host pid behind a pidfd (PIDFD_GET_INFO, else /proc/self/fdinfo), or -errno:
 *  -EBADF if @pidfd is not a pidfd (a zygote may send anything). Loop-safe. */
pid_t container_pidfd_pid(int pidfd);

#endif
