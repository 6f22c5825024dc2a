/* container.c - the container backend's host state: probing, uid pairs,
 * package mounts, pidfds, and the public cgroup calls.
 *
 * container_spawn is in spawn.c, the cgroup mechanics in cgroup.c, the
 * network namespace pool in netns.c, the seccomp profile in seccomp.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "sandbox/container/container_internal.h"

/* Top-level entries of a merged-/usr root, mirrored into the sandbox. */
static const char *const usr_links[] = {"bin", "sbin", "lib", "lib32", "lib64", "libx32"};

enum { PAIR_FREE = 0, PAIR_USED = 1, PAIR_RESERVED = 2 };

/* ---- uid/gid pairs --------------------------------------------------------- */

/* A sandbox gets a pair of host ids: one for its root (the agent during
 * setup), one for the function (uid/gid 1000 inside). Round robin, so that a
 * pair just given back is the last to be reused. */
int container__pair_take(struct container_host *h, uint64_t id, uint32_t *pair)
{
    int ret = -EAGAIN;
    pthread_mutex_lock(&h->lock);
    if (h->n_owners == h->cap_owners) {
        size_t cap = h->cap_owners ? h->cap_owners * 2 : 64;
        void *p = realloc(h->owners, cap * sizeof(*h->owners));
        if (!p) {
            ret = -ENOMEM;
            goto out;
        }
        h->owners = p;
        h->cap_owners = cap;
    }
    for (uint32_t i = 0; i < h->n_pairs; i++) {
        uint32_t k = (h->next_pair + i) % h->n_pairs;
        if (h->pair_used[k] != PAIR_FREE)
            continue;
        h->pair_used[k] = PAIR_USED;
        h->next_pair = (k + 1) % h->n_pairs;
        h->owners[h->n_owners].id = id;
        h->owners[h->n_owners].pair = k;
        h->n_owners++;
        *pair = k;
        ret = 0;
        break;
    }
out:
    pthread_mutex_unlock(&h->lock);
    return ret;
}

void container__pair_release(struct container_host *h, uint64_t id)
{
    pthread_mutex_lock(&h->lock);
    for (size_t i = 0; i < h->n_owners; i++) {
        if (h->owners[i].id != id)
            continue;
        h->pair_used[h->owners[i].pair] = PAIR_FREE;
        h->owners[i] = h->owners[--h->n_owners];
        break;
    }
    pthread_mutex_unlock(&h->lock);
}

/* Mark pairs holding an id that a host user or group owns (third field of
 * /etc/passwd and /etc/group): a sandbox must never act as a host user. */
static void reserve_host_ids(struct container_host *h, const char *file)
{
    cleanup_fclose FILE *f = fopen(file, "re");
    if (!f)
        return;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        char *p = line;
        for (int field = 0; field < 2 && p; field++)
            p = strchr(p, ':') ? strchr(p, ':') + 1 : NULL;
        if (!p)
            continue;
        char *end;
        unsigned long id = strtoul(p, &end, 10);
        if (end == p || id < h->uid_base || id - h->uid_base >= 2ull * h->n_pairs)
            continue;
        uint32_t k = (uint32_t)((id - h->uid_base) / 2);
        if (h->pair_used[k] == PAIR_FREE)
            log_warn("container: host id %lu (%s) is inside the sandbox uid range; skipping it", id,
                     file);
        h->pair_used[k] = PAIR_RESERVED;
    }
    free(line);
}

static int pairs_init(struct container_host *h, const struct sandbox_config *cfg,
                      struct ember_error *err)
{
    uint64_t base = cfg->uid_base ? cfg->uid_base : 1000000000u;
    uint64_t count = cfg->uid_count ? cfg->uid_count : 65536u;
    /* Never host root, never (uid_t)-1, and two ids per sandbox. */
    if (base == 0 || count < 2 || base + count > UINT32_MAX)
        return ember_error_set(err, -EINVAL,
                               "container: uid range [%" PRIu64 ", %" PRIu64
                               ") is unusable (must exclude 0 and 4294967295, size >= 2)",
                               base, base + count);
    h->uid_base = (uint32_t)base;
    h->n_pairs = (uint32_t)(count / 2);
    h->pair_used = calloc(h->n_pairs, 1);
    if (!h->pair_used)
        return ember_error_set(err, -ENOMEM, "container: out of memory");
    reserve_host_ids(h, "/etc/passwd");
    reserve_host_ids(h, "/etc/group");
    /* Start where the state dir's hash points, so that two daemons sharing
     * the default range rarely hand out the same pairs. */
    h->next_pair = (uint32_t)(strtoul(h->hash, NULL, 16) % h->n_pairs);
    return 0;
}

/* ---- probing ----------------------------------------------------------- */

/* FNV-1a: stable across runs and builds; collisions only matter between
 * state dirs in use at the same time on one host. */
static void hash_state_dir(const char *path, const char *tag, char out[9])
{
    uint32_t x = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)path; *p; p++)
        x = (x ^ *p) * 16777619u;
    /* A second backend on the same state dir gets its own cgroup root, so
     * that neither takes the other's sandboxes for leftovers. */
    for (const unsigned char *p = (const unsigned char *)(tag ? tag : ""); *p; p++)
        x = (x ^ *p) * 16777619u;
    snprintf(out, 9, "%08" PRIx32, x);
}

/* Really create the namespaces once: the sysctl knobs (max_user_namespaces,
 * Ubuntu's apparmor_restrict_unprivileged_userns, a container runtime's
 * seccomp profile) are too many to read one by one. */
static int probe_namespaces(struct ember_error *err)
{
    struct clone_args args = {
        .flags = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS |
                 CLONE_NEWNET | CLONE_NEWCGROUP,
        .exit_signal = SIGCHLD,
    };
    pid_t pid = (pid_t)syscall(SYS_clone3, &args, sizeof(args));
    if (pid == 0)
        _exit(0);
    if (pid < 0) {
        int e = errno;
        if (e == ENOSYS)
            return ember_error_set(err, -ENOTSUP,
                                   "container: clone3 is not available "
                                   "(kernel 5.3 or later is needed)");
        return ember_error_sys(err, e == EPERM || e == EINVAL || e == ENOSPC ? -ENOTSUP : -e,
                               "container: cannot create user, pid, mount, ipc, uts, net and "
                               "cgroup namespaces (clone3; check user.max_user_namespaces)");
    }
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
    /* The package mount and the child's root use the new mount API. */
    int fd = open_tree(AT_FDCWD, "/", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return ember_error_sys(err, e == ENOSYS ? -ENOTSUP : -e,
                               "container: open_tree(OPEN_TREE_CLONE) (kernel 5.12 or later "
                               "is needed for the mount API)");
    }
    close(fd);
    return 0;
}

static void find_usr_links(struct container_host *h)
{
    for (size_t i = 0; i < ARRAY_SIZE(usr_links); i++) {
        struct container_usr_link *l = &h->links[h->n_links];
        snprintf(l->name, sizeof(l->name), "%s", usr_links[i]);
        snprintf(l->path, sizeof(l->path), "/%s", usr_links[i]);
        struct stat st;
        if (lstat(l->path, &st) < 0)
            continue;
        if (S_ISLNK(st.st_mode)) {
            ssize_t n = readlink(l->path, l->target, sizeof(l->target) - 1);
            if (n <= 0 || (size_t)n >= sizeof(l->target) - 1)
                continue;
            l->target[n] = '\0';
        } else if (S_ISDIR(st.st_mode)) {
            l->target[0] = '\0';
        } else {
            continue;
        }
        h->n_links++;
    }
}

/* ---- the host ------------------------------------------------------------ */

int container_host_open(const struct sandbox_config *cfg, struct container_host **out,
                        struct ember_error *err)
{
    if (!cfg || !cfg->state_dir || !cfg->agent_path)
        return ember_error_set(err, -EINVAL, "container: state_dir and agent_path are required");
    if (geteuid() != 0)
        return ember_error_set(err, -ENOTSUP,
                               "container: emberd must run as root to manage "
                               "namespaces, uid maps and cgroups");

    struct container_host *h = calloc(1, sizeof(*h));
    if (!h)
        return ember_error_set(err, -ENOMEM, "container: out of memory");
    int ret;
    h->state_dir = realpath(cfg->state_dir, NULL);
    if (!h->state_dir) {
        ret = ember_error_sys(err, -errno, "container: realpath %s", cfg->state_dir);
        goto err_free;
    }
    h->agent_path = strdup(cfg->agent_path);
    if (!h->agent_path) {
        ret = ember_error_set(err, -ENOMEM, "container: out of memory");
        goto err_free;
    }
    h->tmp_size_mb = cfg->tmp_size_mb ? cfg->tmp_size_mb : 64;
    hash_state_dir(h->state_dir, cfg->cgroup_tag, h->hash);
    pthread_mutex_init(&h->lock, NULL);

    ret = probe_namespaces(err);
    if (ret < 0)
        goto err_mutex;
    ret = pairs_init(h, cfg, err);
    if (ret < 0)
        goto err_mutex;
    find_usr_links(h);
    ret = container__seccomp_build(CONTAINER_SECCOMP_LOAD, &h->bpf, &h->bpf_len, err);
    if (ret < 0)
        goto err_pairs;
    ret = container__seccomp_build(CONTAINER_SECCOMP_STEM, &h->stem_bpf, &h->stem_bpf_len, err);
    if (ret < 0)
        goto err_seccomp;
    /* After every check that can fail for lack of support: this kills a
     * previous run's sandboxes, which only makes sense once we know we can
     * replace them. */
    ret = container__cgroup_open(&h->cg, h->hash, !cfg->no_favordynmods, err);
    if (ret < 0)
        goto err_seccomp;
    ret = container__netns_pool_start(&h->netns, err);
    if (ret < 0)
        goto err_cgroup;

    log_info("container: state %s -> cgroups %s, uids %" PRIu32 "..%" PRIu32
             ", seccomp %zu + %zu instructions",
             h->state_dir, h->cg.rel, h->uid_base, h->uid_base + 2 * h->n_pairs - 1,
             h->stem_bpf_len / 8, h->bpf_len / 8);
    *out = h;
    return 0;

err_cgroup:
    container__cgroup_close(&h->cg);
err_seccomp:
    free(h->stem_bpf);
    free(h->bpf);
err_pairs:
    free(h->pair_used);
err_mutex:
    pthread_mutex_destroy(&h->lock);
err_free:
    free(h->agent_path);
    free(h->state_dir);
    free(h);
    return ret;
}

void container_host_close(struct container_host *h)
{
    if (!h)
        return;
    container__netns_pool_stop(&h->netns);
    container__cgroup_close(&h->cg);
    free(h->stem_bpf);
    free(h->bpf);
    free(h->owners);
    free(h->pair_used);
    pthread_mutex_destroy(&h->lock);
    free(h->agent_path);
    free(h->state_dir);
    free(h);
}

const void *container_seccomp_bpf(const struct container_host *h, size_t *len)
{
    *len = h->bpf_len;
    return h->bpf;
}

/* ---- cgroups --------------------------------------------------------------- */

int container_cgroup_set(struct container_host *h, const char *cgroup,
                         const struct container_limits *lim, struct ember_error *err)
{
    int ret = container__cgroup_name_check(cgroup);
    if (ret < 0)
        return ember_error_set(err, ret, "cgroup: bad name '%s'", cgroup ? cgroup : "");
    return container__cgroup_limits(&h->cg, cgroup, lim, false, err);
}

int container_cgroup_adopt(struct container_host *h, const char *cgroup, pid_t pid,
                           const struct container_limits *lim, struct ember_error *err)
{
    int ret = container__cgroup_create(&h->cg, cgroup, lim, NULL, err);
    if (ret < 0)
        return ret;
    ret = container__cgroup_attach(&h->cg, cgroup, pid, err);
    if (ret < 0)
        container__cgroup_remove(&h->cg, cgroup);
    return ret;
}

int container_cgroup_prepare(struct container_host *h, const char *cgroup,
                             const struct container_limits *lim,
                             int procs_fds[CONTAINER_MAX_HIERARCHIES], int *n,
                             struct ember_error *err)
{
    *n = 0;
    int ret = container__cgroup_create(&h->cg, cgroup, lim, NULL, err);
    if (ret < 0)
        return ret;
    char path[192];
    snprintf(path, sizeof(path), "%s/cgroup.procs", cgroup);
    for (int i = 0; i < h->cg.n_hier && i < CONTAINER_MAX_HIERARCHIES; i++) {
        int fd = openat(h->cg.hier[i].base_fd, path, O_WRONLY | O_CLOEXEC);
        if (fd < 0) {
            ret = ember_error_sys(err, -errno, "cgroup: open %s/%s/%s", h->cg.hier[i].mount,
                                  h->cg.rel, path);
            for (int k = 0; k < *n; k++)
                close(procs_fds[k]);
            *n = 0;
            container__cgroup_remove(&h->cg, cgroup);
            return ret;
        }
        procs_fds[(*n)++] = fd;
    }
    return 0;
}

int container_cgroup_stats(struct container_host *h, const char *cgroup, struct sandbox_stats *out)
{
    return container__cgroup_stats(&h->cg, cgroup, out);
}

int container_cgroup_remove(struct container_host *h, const char *cgroup)
{
    int ret = container__cgroup_remove(&h->cg, cgroup);
    /* Replace what create took, here on the slow path. */
    container__cgroup_fill_spares(&h->cg);
    /* A spawned sandbox's group is "sb-<id>": its uid pair goes with it.
     * (Adopted groups hold instances forked inside that sandbox: same pair.) */
    uint64_t id;
    int end = 0;
    if (ret == 0 && sscanf(cgroup, "sb-%" SCNu64 "%n", &id, &end) == 1 && cgroup[end] == '\0')
        container__pair_release(h, id);
    return ret;
}

/* ---- package mounts and pidfds ---------------------------------------------- */

int container_package_mount(const char *package_dir, struct ember_error *err)
{
    int fd = open_tree(AT_FDCWD, package_dir,
                       OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_SYMLINK_NOFOLLOW);
    if (fd < 0)
        return ember_error_sys(err, -errno, "package mount: open_tree %s", package_dir);
    /* Private, so nothing mounted later on the host below package_dir shows
     * up in sandboxes (and the reverse). */
    struct mount_attr attr = {
        .attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        .propagation = MS_PRIVATE,
    };
    if (mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof(attr)) < 0) {
        int ret = ember_error_sys(err, -errno, "package mount: mount_setattr %s", package_dir);
        close(fd);
        return ret;
    }
    return fd;
}

/* PIDFD_GET_INFO (Linux 6.13): its first version of struct pidfd_info,
 * which later kernels still accept (the size travels in the command). */
struct pidfd_info_v0 {
    uint64_t mask;
    uint64_t cgroupid;
    uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
    uint32_t spare0;
};
#define EMBER_PIDFD_INFO_PID 1ull
#define EMBER_PIDFD_GET_INFO _IOWR(0xFF, 11, struct pidfd_info_v0)

/* Does the kernel answer PIDFD_GET_INFO? Asked once, of a pidfd of our
 * own: a descriptor a zygote sends must not decide it (a non-pidfd answers
 * ENOTTY too, and would have sent every later fork down the slow path). */
static bool pidfd_info_works(void)
{
    static int works = -1; /* loop thread only */
    if (works < 0) {
        int fd = pidfd_open(getpid(), 0);
        struct pidfd_info_v0 info = {.mask = EMBER_PIDFD_INFO_PID};
        works = fd >= 0 && ioctl(fd, EMBER_PIDFD_GET_INFO, &info) == 0;
        if (fd >= 0)
            close(fd);
    }
    return works;
}

pid_t container_pidfd_pid(int pidfd)
{
    /* One ioctl where the kernel has it: this runs on the loop per fork. */
    if (pidfd_info_works()) {
        struct pidfd_info_v0 info = {.mask = EMBER_PIDFD_INFO_PID};
        if (ioctl(pidfd, EMBER_PIDFD_GET_INFO, &info) == 0)
            return info.pid > 0 ? (pid_t)info.pid : -EREMOTE; /* 0: not in our namespace */
        return errno == ENOTTY ? -EBADF : -errno;             /* ENOTTY: not a pidfd */
    }
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", pidfd);
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    if (n < 0)
        return -errno;
    buf[n] = '\0';
    const char *p = strstr(buf, "\nPid:");
    if (!p)
        return -EBADF; /* not a pidfd */
    long pid = strtol(p + 5, NULL, 10);
    /* -1: the process is gone (reaped); 0: not in our pid namespace. */
    if (pid <= 0)
        return pid == 0 ? -EREMOTE : -ESRCH;
    return (pid_t)pid;
}
