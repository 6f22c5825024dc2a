/* container_internal.h - shared between the files of sandbox/container/.
 *
 *   container.c  host probe and state, uid pairs, package mounts, pidfds
 *   spawn.c      container_spawn: the plan, the parent's half, the child
 *   cgroup.c     cgroup v1 / v2: detection, ember's root, per-sandbox groups
 *   netns.c      network namespaces made ahead by a background thread
 *   seccomp.c    THE seccomp profile (one table) and its BPF export
 *
 * Nothing here is for other modules; backend.c uses container.h only.
 */
#ifndef EMBER_SANDBOX_CONTAINER_INTERNAL_H
#define EMBER_SANDBOX_CONTAINER_INTERNAL_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/error.h"
#include "sandbox/container/container.h"

/* ---- cgroups (cgroup.c) ------------------------------------------------ */

/** The controllers ember limits. Each lives on exactly one hierarchy. */
enum cg_ctrl {
    CG_MEMORY,
    CG_PIDS,
    CG_CPU,
    CG_NCTRL,
};

/** One mounted hierarchy ember uses: a v1 controller mount or the v2 tree. */
struct cg_hier {
    int version;          /* 1 or 2 */
    unsigned ctrls;       /* 1u << enum cg_ctrl, for each controller it carries */
    char mount[PATH_MAX]; /* where it is mounted */
    int base_fd;          /* O_DIRECTORY fd of <mount>/ember/<hash> */
};

/** Where ember's cgroups are on this host; filled once, read-only after. */
struct cg_host {
    struct cg_hier hier[CG_NCTRL]; /* at most one hierarchy per controller */
    int n_hier;
    int of[CG_NCTRL]; /* hierarchy index carrying each controller */
    char rel[64];     /* "ember/<hash>", below each mount point */
    bool memsw;       /* v1 memory.memsw.* exists (swap accounting) */
    bool v2_swap;     /* v2 memory.swap.max exists */
    bool into_cgroup; /* one v2 hierarchy carries everything:
                         clone3(CLONE_INTO_CGROUP) can place a child */
    int favor_fd;     /* detached mount of a v1 hierarchy with favordynmods, or -1 */

    /* Spare groups made ahead ("spare-<n>", default limits), renamed into
     * place by create: a rename is ~4x cheaper than the mkdirs. v1 only
     * (cgroup2 refuses rename). */
    bool use_spares;
    pthread_mutex_t spare_lock;
    uint32_t spare[16]; /* their numbers, a stack */
    unsigned n_spare;
    uint32_t spare_seq;
};

/** Detect v1/v2 controllers, create ember's root below each hierarchy and
 *  remove leftovers of a previous run with the same @hash. */
int container__cgroup_open(struct cg_host *cg, const char *hash, bool favor,
                          struct ember_error *err);
/** Remove ember's root (it must be empty) and close the fds. */
void container__cgroup_close(struct cg_host *cg);
/** Make spare groups until there are enough (v1; no-op elsewhere). Slow
 *  path: call where latency does not matter (open, remove). */
void container__cgroup_fill_spares(struct cg_host *cg);
/** mkdir @name in every hierarchy and write @lim. On a CLONE_INTO_CGROUP
 *  host, *@v2_fd (if not NULL) receives an O_DIRECTORY fd of the new group. */
int container__cgroup_create(struct cg_host *cg, const char *name,
                             const struct container_limits *lim, int *v2_fd,
                             struct ember_error *err);
/** Move every thread of @pid into @name in every hierarchy. */
int container__cgroup_attach(struct cg_host *cg, const char *name, pid_t pid,
                             struct ember_error *err);
int container__cgroup_limits(struct cg_host *cg, const char *name,
                             const struct container_limits *lim, bool fresh,
                             struct ember_error *err);
int container__cgroup_remove(struct cg_host *cg, const char *name);
int container__cgroup_stats(struct cg_host *cg, const char *name, struct sandbox_stats *out);
/** 0 if @name is a plain cgroup name ember may create ("sb-42"), else -EINVAL. */
int container__cgroup_name_check(const char *name);

/* ---- network namespaces made ahead (netns.c) ---------------------------- */

/** A few network namespaces with lo up, kept full by a background thread. */
struct netns_pool {
    pthread_t thread;
    bool running;
    bool stop;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* the filler waits for room */
    int fd[8];           /* /proc/thread-self/ns/net of each, a stack */
    unsigned n;
    int host_fd; /* the daemon's own namespace, to return to */
};

/** Start the filler thread. */
int container__netns_pool_start(struct netns_pool *pool, struct ember_error *err);
/** Stop it and close what is left. */
void container__netns_pool_stop(struct netns_pool *pool);
/** A namespace fd (owned by the caller), or -1 if none is ready. */
int container__netns_take(struct netns_pool *pool);

/* ---- seccomp (seccomp.c) ----------------------------------------------- */

/** Build THE profile with libseccomp and export it as BPF: *@bpf is a
 *  malloc'd struct sock_filter array of *@len bytes. */
enum container_seccomp_filter {
    CONTAINER_SECCOMP_FUNCTION, /* the whole table, on its own */
    CONTAINER_SECCOMP_STEM,     /* the table with move_mount allowed */
    CONTAINER_SECCOMP_LOAD,     /* only: move_mount refused */
};
int container__seccomp_build(enum container_seccomp_filter which, void **bpf, size_t *len,
                             struct ember_error *err);

/* ---- the host (container.c) ---------------------------------------------- */

#define CONTAINER_MAX_USR_LINKS 8

/** A top-level entry of the host root that the sandbox root mirrors:
 *  "bin" -> "usr/bin" (merged /usr) or a real directory to bind. */
struct container_usr_link {
    char name[16];
    char path[20];   /* "/" + name: the host path when it is a directory */
    char target[64]; /* symlink target; "" if the host has a real directory */
};

struct container_host {
    char *state_dir; /* realpath of cfg->state_dir */
    char *agent_path;
    uint32_t tmp_size_mb;
    char hash[9]; /* 8 hex digits of a hash of state_dir */

    struct cg_host cg;
    struct netns_pool netns;

    void *bpf; /* struct sock_filter[]: the load filter, sent with LOAD */
    size_t bpf_len;
    void *stem_bpf; /* the stem filter, installed by the spawner */
    size_t stem_bpf_len;

    struct container_usr_link links[CONTAINER_MAX_USR_LINKS];
    int n_links;

    /* uid/gid pairs: pair k maps inside 0 -> base + 2k, 1000 -> base + 2k + 1 */
    pthread_mutex_t lock;
    uint32_t uid_base;
    uint32_t n_pairs;
    uint8_t *pair_used; /* 1 in use, 2 reserved (a host user/group owns it) */
    uint32_t next_pair; /* round-robin cursor */
    struct {
        uint64_t id;
        uint32_t pair;
    } * owners; /* live sandbox id -> pair, unordered */
    size_t n_owners, cap_owners;
};

/** Phases of container__spawn, for measurements (ns each). */
enum {
    CONTAINER_T_PREP,   /* plan, fds, [v2 cgroup] */
    CONTAINER_T_CLONE,  /* clone3 with the namespaces */
    CONTAINER_T_MAPS,   /* uid_map + gid_map */
    CONTAINER_T_CGROUP, /* [v1 cgroup mkdir + limits + attach] */
    CONTAINER_T_CHILD,  /* release -> exec seen (the child's rootfs work) */
    CONTAINER_T_COUNT,
};

/** container_spawn, also filling @t[CONTAINER_T_COUNT] when not NULL. */
int container__spawn(struct container_host *h, uint64_t sandbox_id,
                     const struct container_limits *lim, const struct container_spawn_opts *opts,
                     struct container_proc *out, uint64_t *t, struct ember_error *err);

/** Take a free uid/gid pair for sandbox @id; -EAGAIN if all are in use. */
int container__pair_take(struct container_host *h, uint64_t id, uint32_t *pair);
/** Give back the pair of sandbox @id (no-op if it has none). */
void container__pair_release(struct container_host *h, uint64_t id);

#endif
