/* cgroup.c - the sandboxes' cgroups, on cgroup v1 or v2 (detected, never
 * assumed).
 *
 * Layout: below every hierarchy that carries one of memory / pids / cpu,
 *
 *     <mount>/ember/<hash of realpath(state_dir)>/<name>
 *
 * so that several emberd instances with different state dirs never touch
 * each other's groups. <name> is "sb-<id>" for spawned sandboxes or whatever
 * the caller adopts a forked instance into.
 *
 * Why the hierarchy root and not the daemon's own cgroup: on v2 a cgroup
 * that holds processes (the daemon's, usually shared with a shell or a
 * service manager) cannot hand controllers to children ("no internal
 * processes"), so a root daemon without systemd delegation has nowhere else
 * to put them; v1 follows the same layout for one rule on both.
 *
 * A pure-v2 host has cgroup2 at /sys/fs/cgroup; a v1 or hybrid host has one
 * mount per controller (possibly co-mounted, "cpu,cpuacct") and maybe a
 * cgroup2 tree with no controllers. Each controller is looked up on its own,
 * so a mixed host (memory on v2, pids on v1) also works.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/magic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "sandbox/container/container_internal.h"

#define CG_FS_ROOT "/sys/fs/cgroup"
#define CPU_PERIOD_US 100000u
/* How long remove waits for the kernel to let go of a dying group. */
#define RMDIR_TIMEOUT_NS (2ull * 1000000000ull)

static const char *const ctrl_names[CG_NCTRL] = {"memory", "pids", "cpu"};

/* ---- small file helpers (cgroupfs files are tiny) ------------------------ */

static int write_at(int dirfd, const char *path, const char *s)
{
    int fd = openat(dirfd, path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t len = strlen(s);
    ssize_t n = write(fd, s, len);
    int ret = n < 0 ? -errno : (size_t)n == len ? 0 : -EIO;
    close(fd);
    return ret;
}

/* Read at most @size - 1 bytes; NUL-terminated. */
static int read_at(int dirfd, const char *path, char *buf, size_t size)
{
    int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, buf, size - 1);
    int ret = n < 0 ? -errno : 0;
    close(fd);
    if (ret == 0)
        buf[n] = '\0';
    return ret;
}

static int read_u64_at(int dirfd, const char *path, uint64_t *v)
{
    char buf[64];
    int ret = read_at(dirfd, path, buf, sizeof(buf));
    if (ret < 0)
        return ret;
    if (strncmp(buf, "max", 3) == 0) {
        *v = UINT64_MAX;
        return 0;
    }
    char *end;
    errno = 0;
    unsigned long long x = strtoull(buf, &end, 10);
    if (errno || end == buf)
        return -EBADMSG;
    *v = x;
    return 0;
}

/* "key N" line of a flat-keyed file (memory.events, memory.oom_control). */
static int read_key_at(int dirfd, const char *path, const char *key, uint64_t *v)
{
    char buf[1024];
    int ret = read_at(dirfd, path, buf, sizeof(buf));
    if (ret < 0)
        return ret;
    size_t klen = strlen(key);
    for (char *line = buf; line && *line;
         line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ' ') {
            *v = strtoull(line + klen + 1, NULL, 10);
            return 0;
        }
    }
    return -ENOENT;
}

static bool exists_at(int dirfd, const char *path)
{
    return faccessat(dirfd, path, F_OK, 0) == 0;
}

int container__cgroup_name_check(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n >= sizeof(((struct container_proc *)0)->cgroup) || name[0] == '.')
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)name[i]) && name[i] != '-' && name[i] != '_' && name[i] != '.')
            return -EINVAL;
    return 0;
}

/* ---- detection -------------------------------------------------------- */

/* Undo mountinfo's octal escapes ("\040" for a space) in place. */
static void unescape_mountinfo(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
            r[3] >= '0' && r[3] <= '7') {
            *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
            r += 3;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

static bool has_word(const char *list, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = list; p && *p;) {
        const char *end = strpbrk(p, ", \n");
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && strncmp(p, word, n) == 0)
            return true;
        p = end ? end + 1 : NULL;
    }
    return false;
}

static int add_hier(struct cg_host *cg, int version, const char *mount)
{
    for (int i = 0; i < cg->n_hier; i++)
        if (strcmp(cg->hier[i].mount, mount) == 0)
            return i;
    if (cg->n_hier == CG_NCTRL)
        return -ENOSPC;
    struct cg_hier *hi = &cg->hier[cg->n_hier];
    hi->version = version;
    hi->ctrls = 0;
    hi->base_fd = -1;
    snprintf(hi->mount, sizeof(hi->mount), "%s", mount);
    return cg->n_hier++;
}

/* Which controllers a v2 tree offers at its root. */
static unsigned v2_controllers(const char *mount)
{
    char path[PATH_MAX + 32], buf[512];
    snprintf(path, sizeof(path), "%s/cgroup.controllers", mount);
    if (read_at(AT_FDCWD, path, buf, sizeof(buf)) < 0)
        return 0;
    unsigned set = 0;
    for (int c = 0; c < CG_NCTRL; c++)
        if (has_word(buf, ctrl_names[c]))
            set |= 1u << c;
    return set;
}

/* v1 or hybrid: one mount per (group of) controller(s), found in
 * mountinfo; a cgroup2 mount may carry what no v1 mount does. */
static int detect_mounts(struct cg_host *cg, struct ember_error *err)
{
    cleanup_fclose FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return ember_error_sys(err, -errno, "cgroup: open /proc/self/mountinfo");
    char v2_mount[PATH_MAX] = "";
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        /* id parent maj:min root mountpoint opts [optional...] - fstype source superopts */
        char *sep = strstr(line, " - ");
        if (!sep)
            continue;
        char mnt[PATH_MAX], fstype[32], src[256], super[1024] = "";
        if (sscanf(line, "%*s %*s %*s %*s %4095s", mnt) != 1 ||
            sscanf(sep + 3, "%31s %255s %1023s", fstype, src, super) < 2)
            continue;
        unescape_mountinfo(mnt);
        if (strcmp(fstype, "cgroup2") == 0 && !v2_mount[0]) {
            snprintf(v2_mount, sizeof(v2_mount), "%s", mnt);
        } else if (strcmp(fstype, "cgroup") == 0) {
            for (int c = 0; c < CG_NCTRL; c++) {
                if (cg->of[c] >= 0 || !has_word(super, ctrl_names[c]))
                    continue;
                int i = add_hier(cg, 1, mnt);
                if (i < 0)
                    continue;
                cg->hier[i].ctrls |= 1u << c;
                cg->of[c] = i;
            }
        }
    }
    free(line);
    if (v2_mount[0]) {
        unsigned set = v2_controllers(v2_mount);
        for (int c = 0; c < CG_NCTRL; c++) {
            if (cg->of[c] >= 0 || !(set & (1u << c)))
                continue;
            int i = add_hier(cg, 2, v2_mount);
            if (i < 0)
                continue;
            cg->hier[i].ctrls |= 1u << c;
            cg->of[c] = i;
        }
    }
    return 0;
}

static int detect(struct cg_host *cg, struct ember_error *err)
{
    for (int c = 0; c < CG_NCTRL; c++)
        cg->of[c] = -1;

    /* Pure v2: the whole of /sys/fs/cgroup is one cgroup2 tree. */
    struct statfs sfs;
    if (statfs(CG_FS_ROOT, &sfs) == 0 && sfs.f_type == CGROUP2_SUPER_MAGIC) {
        unsigned set = v2_controllers(CG_FS_ROOT);
        int i = add_hier(cg, 2, CG_FS_ROOT);
        for (int c = 0; c < CG_NCTRL; c++)
            if (set & (1u << c)) {
                cg->hier[i].ctrls |= 1u << c;
                cg->of[c] = i;
            }
    } else {
        int ret = detect_mounts(cg, err);
        if (ret < 0)
            return ret;
    }

    for (int c = 0; c < CG_NCTRL; c++)
        if (cg->of[c] < 0)
            return ember_error_set(err, -ENOTSUP,
                                   "cgroup: the %s controller is not available "
                                   "(neither a v1 mount nor in a cgroup2 cgroup.controllers)",
                                   ctrl_names[c]);
    cg->into_cgroup = cg->n_hier == 1 && cg->hier[0].version == 2;
    return 0;
}

/* ---- ember's root -------------------------------------------------------- */

/* v2: a parent must list a controller in cgroup.subtree_control before its
 * children get the interface files. One write per controller so that a
 * failure names it. */
static int v2_delegate(int dirfd, const char *path, unsigned ctrls, struct ember_error *err)
{
    char have[512] = "";
    read_at(dirfd, "cgroup.subtree_control", have, sizeof(have));
    for (int c = 0; c < CG_NCTRL; c++) {
        if (!(ctrls & (1u << c)) || has_word(have, ctrl_names[c]))
            continue;
        char op[32];
        snprintf(op, sizeof(op), "+%s", ctrl_names[c]);
        int ret = write_at(dirfd, "cgroup.subtree_control", op);
        if (ret < 0)
            return ember_error_sys(err, ret, "cgroup: write %s to %s/cgroup.subtree_control", op,
                                   path);
    }
    return 0;
}

static int mkdir_open(int dirfd, const char *name, const char *shown, struct ember_error *err)
{
    if (mkdirat(dirfd, name, 0755) < 0 && errno != EEXIST)
        return ember_error_sys(err, -errno, "cgroup: mkdir %s", shown);
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return ember_error_sys(err, -errno, "cgroup: open %s", shown);
    return fd;
}

static int open_base(struct cg_host *cg, struct cg_hier *hi, const char *hash,
                     struct ember_error *err)
{
    char shown[PATH_MAX + 64];
    cleanup_close int top = open(hi->mount, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (top < 0)
        return ember_error_sys(err, -errno, "cgroup: open %s", hi->mount);
    if (hi->version == 2) {
        int ret = v2_delegate(top, hi->mount, hi->ctrls, err);
        if (ret < 0)
            return ret;
    }
    snprintf(shown, sizeof(shown), "%s/ember", hi->mount);
    cleanup_close int ember = mkdir_open(top, "ember", shown, err);
    if (ember < 0)
        return ember;
    if (hi->version == 2) {
        int ret = v2_delegate(ember, shown, hi->ctrls, err);
        if (ret < 0)
            return ret;
    }
    snprintf(shown, sizeof(shown), "%s/%s", hi->mount, cg->rel);
    int base = mkdir_open(ember, hash, shown, err);
    if (base < 0)
        return base;
    if (hi->version == 2) {
        int ret = v2_delegate(base, shown, hi->ctrls, err);
        if (ret < 0) {
            close(base);
            return ret;
        }
    }
    hi->base_fd = base;
    return 0;
}

/* ---- killing and removing ------------------------------------------------ */

/* Is the process that now has host @pid a member of @rel/@name? Asked after
 * pidfd_open(@pid): if the pidfd's process has died and the number been
 * reused since, the pidfd no longer reaches anyone (ESRCH); if it lives, it
 * is the one /proc/@pid shows. So a recycled pid is never killed. */
static bool pid_in_group(pid_t pid, const char *rel, const char *name)
{
    char path[64], buf[2048], want[256];
    snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
    if (read_at(AT_FDCWD, path, buf, sizeof(buf)) < 0)
        return false;
    int wn = snprintf(want, sizeof(want), "/%s/%s", rel, name);
    for (char *line = buf; line && *line;) {
        char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        if (len >= (size_t)wn && strncmp(line + len - (size_t)wn, want, (size_t)wn) == 0)
            return true;
        line = nl ? nl + 1 : NULL;
    }
    return false;
}

/* SIGKILL every process listed in <hier>/<rel>/<name>/cgroup.procs.
 * Returns how many were signalled, or -errno. */
static int kill_listed(struct cg_host *cg, struct cg_hier *hi, const char *name)
{
    char path[192];
    snprintf(path, sizeof(path), "%s/cgroup.procs", name);
    cleanup_close int fd = openat(hi->base_fd, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    cleanup_fclose FILE *f = fdopen(fd, "r");
    if (!f)
        return -errno;
    fd = -1;
    int n = 0, pid;
    while (fscanf(f, "%d", &pid) == 1) {
        int pfd = pidfd_open(pid, 0);
        if (pfd < 0)
            continue; /* already gone */
        if (pid_in_group(pid, cg->rel, name) && pidfd_send_signal(pfd, SIGKILL, NULL, 0) == 0)
            n++;
        close(pfd);
    }
    return n;
}

static void kill_group(struct cg_host *cg, const char *name)
{
    for (int i = 0; i < cg->n_hier; i++) {
        struct cg_hier *hi = &cg->hier[i];
        if (hi->version == 2) {
            /* cgroup.kill (5.14+) kills the whole subtree atomically, forks
             * included; without it, fall back to the walk below. */
            char path[192];
            snprintf(path, sizeof(path), "%s/cgroup.kill", name);
            if (write_at(hi->base_fd, path, "1") == 0)
                continue;
        }
        kill_listed(cg, hi, name);
    }
}

static void nap(uint64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000ull),
                          .tv_nsec = (long)(ns % 1000000000ull)};
    nanosleep(&ts, NULL);
}

/* Kill what is left in @name and rmdir it everywhere. The kernel frees a
 * group only once its last task has passed exit, so rmdir gets EBUSY for a
 * moment after the kill: retry with a growing pause, killing again (a
 * process may have forked between the listing and the signal). */
static int remove_group(struct cg_host *cg, const char *name)
{
    uint64_t waited = 0, pause = 50 * 1000; /* 50 us, doubling to 10 ms */
    int ret = 0;
    kill_group(cg, name);
    for (int i = 0; i < cg->n_hier; i++) {
        struct cg_hier *hi = &cg->hier[i];
        for (;;) {
            if (unlinkat(hi->base_fd, name, AT_REMOVEDIR) == 0 || errno == ENOENT)
                break;
            ret = -errno;
            if (ret != -EBUSY || waited >= RMDIR_TIMEOUT_NS) {
                log_warn("container: rmdir %s/%s/%s: %s", hi->mount, cg->rel, name, strerror(-ret));
                break;
            }
            nap(pause);
            waited += pause;
            pause = pause * 2 > 10000000 ? 10000000 : pause * 2;
            kill_group(cg, name);
            ret = 0;
        }
    }
    return ret;
}

/* Remove every group a previous run with this state dir left behind. */
static void remove_leftovers(struct cg_host *cg)
{
    for (int i = 0; i < cg->n_hier; i++) {
        int fd = openat(cg->hier[i].base_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
            continue;
        DIR *d = fdopendir(fd);
        if (!d) {
            close(fd);
            continue;
        }
        struct dirent *de;
        while ((de = readdir(d))) {
            if (de->d_type != DT_DIR || container__cgroup_name_check(de->d_name) < 0)
                continue;
            log_info("container: removing leftover cgroup %s/%s/%s", cg->hier[i].mount, cg->rel,
                     de->d_name);
            remove_group(cg, de->d_name);
        }
        closedir(d);
    }
}

/* ---- limits ---------------------------------------------------------------- */

static int write_limit(struct cg_host *cg, struct cg_hier *hi, const char *name, const char *file,
                       const char *val, struct ember_error *err)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", name, file);
    int ret = write_at(hi->base_fd, path, val);
    if (ret < 0)
        return ember_error_sys(err, ret, "cgroup: write '%s' to %s/%s/%s", val, hi->mount, cg->rel,
                               path);
    return 0;
}

static int set_memory(struct cg_host *cg, const char *name, uint64_t bytes, bool fresh,
                      struct ember_error *err)
{
    struct cg_hier *hi = &cg->hier[cg->of[CG_MEMORY]];
    char val[32];
    if (hi->version == 2) {
        if (bytes)
            snprintf(val, sizeof(val), "%" PRIu64, bytes);
        else
            snprintf(val, sizeof(val), "max");
        int ret = write_limit(cg, hi, name, "memory.max", val, err);
        if (ret == 0 && cg->v2_swap)
            ret = write_limit(cg, hi, name, "memory.swap.max", "0", err);
        return ret;
    }

    snprintf(val, sizeof(val), "%" PRId64, bytes ? (int64_t)bytes : (int64_t)-1);
    if (!cg->memsw)
        return write_limit(cg, hi, name, "memory.limit_in_bytes", val, err);
    /* v1 insists memsw >= limit at every instant: raise memsw first, lower
     * it last. A fresh group is unlimited in both, so the limit goes first. */
    if (fresh) {
        int ret = write_limit(cg, hi, name, "memory.limit_in_bytes", val, err);
        return ret < 0 ? ret : write_limit(cg, hi, name, "memory.memsw.limit_in_bytes", val, err);
    }
    if (write_limit(cg, hi, name, "memory.memsw.limit_in_bytes", val, NULL) == 0)
        return write_limit(cg, hi, name, "memory.limit_in_bytes", val, err);
    int ret = write_limit(cg, hi, name, "memory.limit_in_bytes", val, err);
    return ret < 0 ? ret : write_limit(cg, hi, name, "memory.memsw.limit_in_bytes", val, err);
}

int container__cgroup_limits(struct cg_host *cg, const char *name,
                             const struct container_limits *lim, bool fresh,
                             struct ember_error *err)
{
    int ret = set_memory(cg, name, lim->memory_bytes, fresh, err);
    if (ret < 0)
        return ret;

    char val[48];
    struct cg_hier *pids = &cg->hier[cg->of[CG_PIDS]];
    if (lim->pids_max)
        snprintf(val, sizeof(val), "%" PRIu32, lim->pids_max);
    else
        snprintf(val, sizeof(val), "max");
    ret = write_limit(cg, pids, name, "pids.max", val, err);
    if (ret < 0)
        return ret;

    /* cpu_quota_pct is a share of one core per CPU_PERIOD_US period. */
    struct cg_hier *cpu = &cg->hier[cg->of[CG_CPU]];
    uint64_t quota = (uint64_t)lim->cpu_quota_pct * CPU_PERIOD_US / 100;
    if (quota && quota < 1000)
        quota = 1000; /* the kernel's minimum (1 ms) */
    if (cpu->version == 2) {
        if (quota)
            snprintf(val, sizeof(val), "%" PRIu64 " %u", quota, CPU_PERIOD_US);
        else
            snprintf(val, sizeof(val), "max %u", CPU_PERIOD_US);
        return write_limit(cg, cpu, name, "cpu.max", val, err);
    }
    /* v1: the period of a new group is already the kernel default (100 ms);
     * write it only when changing limits later (it may have been altered). */
    if (!fresh) {
        snprintf(val, sizeof(val), "%u", CPU_PERIOD_US);
        ret = write_limit(cg, cpu, name, "cpu.cfs_period_us", val, err);
        if (ret < 0)
            return ret;
    }
    snprintf(val, sizeof(val), "%" PRId64, quota ? (int64_t)quota : (int64_t)-1);
    return write_limit(cg, cpu, name, "cpu.cfs_quota_us", val, err);
}

/* ---- the internal interface ----------------------------------------------- */

/*
 * Moving a process between cgroups (a zygote's fork leaving for its own
 * group) takes the kernel's global cgroup_threadgroup_rwsem for writing,
 * which normally waits for an RCU grace period: 5-40 ms here, measured, for
 * one write to cgroup.procs. A hierarchy mounted with "favordynmods" flips
 * that lock to a mode where writers are cheap and fork/exit pay a little
 * instead, for every hierarchy, while the mount lives. ember holds such a
 * mount of an empty named v1 hierarchy, detached (fsmount: it appears in no
 * mount table) and kept only by this fd, so it goes away with the daemon.
 * That trade is the right one for a host that migrates a process on every
 * scale-out; a kernel without the option just keeps the slow path.
 */
static void favor_dynmods(struct cg_host *cg)
{
    int fs = fsopen("cgroup", FSOPEN_CLOEXEC);
    if (fs < 0) {
        log_debug("container: fsopen cgroup: %s", strerror(errno));
        return;
    }
    if (fsconfig(fs, FSCONFIG_SET_STRING, "name", "ember-favordynmods", 0) < 0 ||
        fsconfig(fs, FSCONFIG_SET_FLAG, "none", NULL, 0) < 0 ||
        fsconfig(fs, FSCONFIG_SET_FLAG, "favordynmods", NULL, 0) < 0 ||
        fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) {
        log_info("container: cgroup favordynmods unavailable (%s): process moves between "
                 "cgroups stay slow", strerror(errno));
        close(fs);
        return;
    }
    cg->favor_fd = fsmount(fs, FSMOUNT_CLOEXEC, 0);
    if (cg->favor_fd < 0)
        log_info("container: fsmount cgroup favordynmods: %s", strerror(errno));
    close(fs);
}

int container__cgroup_open(struct cg_host *cg, const char *hash, bool favor,
                          struct ember_error *err)
{
    memset(cg, 0, sizeof(*cg));
    cg->favor_fd = -1;
    pthread_mutex_init(&cg->spare_lock, NULL);
    for (int i = 0; i < CG_NCTRL; i++)
        cg->hier[i].base_fd = -1;
    snprintf(cg->rel, sizeof(cg->rel), "ember/%s", hash);

    int ret = detect(cg, err);
    if (ret < 0)
        return ret;
    for (int i = 0; i < cg->n_hier; i++) {
        ret = open_base(cg, &cg->hier[i], hash, err);
        if (ret < 0)
            goto err_close;
    }

    struct cg_hier *mem = &cg->hier[cg->of[CG_MEMORY]];
    if (mem->version == 1)
        cg->memsw = exists_at(mem->base_fd, "memory.memsw.limit_in_bytes");
    else
        cg->v2_swap = exists_at(mem->base_fd, "memory.swap.max");

    remove_leftovers(cg);
    cg->favor_fd = -1;
    if (favor && cg->hier[cg->of[CG_MEMORY]].version == 1)
        favor_dynmods(cg);
    cg->use_spares = true;
    for (int i = 0; i < cg->n_hier; i++)
        if (cg->hier[i].version != 1)
            cg->use_spares = false;
    container__cgroup_fill_spares(cg);
    for (int i = 0; i < cg->n_hier; i++)
        log_debug("container: cgroup v%d %s/%s carries%s%s%s", cg->hier[i].version,
                  cg->hier[i].mount, cg->rel,
                  cg->hier[i].ctrls & (1u << CG_MEMORY) ? " memory" : "",
                  cg->hier[i].ctrls & (1u << CG_PIDS) ? " pids" : "",
                  cg->hier[i].ctrls & (1u << CG_CPU) ? " cpu" : "");
    return 0;

err_close:
    container__cgroup_close(cg);
    return ret;
}

void container__cgroup_close(struct cg_host *cg)
{
    while (cg->n_spare > 0) {
        char spare[32];
        snprintf(spare, sizeof(spare), "spare-%" PRIu32, cg->spare[--cg->n_spare]);
        remove_group(cg, spare);
    }
    for (int i = 0; i < cg->n_hier; i++) {
        struct cg_hier *hi = &cg->hier[i];
        if (hi->base_fd < 0)
            continue;
        close(hi->base_fd);
        hi->base_fd = -1;
        /* Only ours: other instances may still use "ember". EBUSY/ENOTEMPTY
         * (a sandbox left, or another instance) are fine. */
        char path[PATH_MAX + 80];
        snprintf(path, sizeof(path), "%s/%s", hi->mount, cg->rel);
        if (rmdir(path) < 0 && errno != ENOENT)
            log_debug("container: rmdir %s: %s", path, strerror(errno));
        snprintf(path, sizeof(path), "%s/ember", hi->mount);
        rmdir(path);
    }
    cg->n_hier = 0;
    if (cg->favor_fd >= 0)
        close(cg->favor_fd);
    cg->favor_fd = -1;
    pthread_mutex_destroy(&cg->spare_lock);
}

/* Claim a spare for @name: rename it in every hierarchy. False if there
 * is none or a rename failed (then the spare is dropped). */
static bool take_spare(struct cg_host *cg, const char *name)
{
    if (!cg->use_spares)
        return false;
    pthread_mutex_lock(&cg->spare_lock);
    bool have = cg->n_spare > 0;
    uint32_t n = have ? cg->spare[--cg->n_spare] : 0;
    pthread_mutex_unlock(&cg->spare_lock);
    if (!have)
        return false;
    char spare[32];
    snprintf(spare, sizeof(spare), "spare-%" PRIu32, n);
    int i = 0;
    for (; i < cg->n_hier; i++)
        if (renameat(cg->hier[i].base_fd, spare, cg->hier[i].base_fd, name) < 0)
            break;
    if (i == cg->n_hier)
        return true;
    log_warn("container: rename %s/%s/%s to %s: %s", cg->hier[i].mount, cg->rel, spare, name,
             strerror(errno));
    while (i-- > 0)
        renameat(cg->hier[i].base_fd, name, cg->hier[i].base_fd, spare);
    remove_group(cg, spare);
    return false;
}

void container__cgroup_fill_spares(struct cg_host *cg)
{
    if (!cg->use_spares)
        return;
    for (;;) {
        pthread_mutex_lock(&cg->spare_lock);
        bool full = cg->n_spare >= ARRAY_SIZE(cg->spare);
        uint32_t n = cg->spare_seq++;
        pthread_mutex_unlock(&cg->spare_lock);
        if (full)
            return;
        char spare[32];
        snprintf(spare, sizeof(spare), "spare-%" PRIu32, n);
        int i = 0;
        for (; i < cg->n_hier; i++)
            if (mkdirat(cg->hier[i].base_fd, spare, 0755) < 0)
                break;
        if (i < cg->n_hier) {
            log_warn("container: mkdir %s/%s/%s: %s", cg->hier[i].mount, cg->rel, spare,
                     strerror(errno));
            while (i-- > 0)
                unlinkat(cg->hier[i].base_fd, spare, AT_REMOVEDIR);
            return;
        }
        pthread_mutex_lock(&cg->spare_lock);
        if (cg->n_spare < ARRAY_SIZE(cg->spare)) {
            cg->spare[cg->n_spare++] = n;
            n = UINT32_MAX;
        }
        pthread_mutex_unlock(&cg->spare_lock);
        if (n != UINT32_MAX) /* filled meanwhile by another thread */
            remove_group(cg, spare);
    }
}

int container__cgroup_create(struct cg_host *cg, const char *name,
                             const struct container_limits *lim, int *v2_fd,
                             struct ember_error *err)
{
    int ret = container__cgroup_name_check(name);
    if (ret < 0)
        return ember_error_set(err, ret, "cgroup: bad name '%s'", name ? name : "");
    int made = 0;
    if (take_spare(cg, name)) {
        made = cg->n_hier;
    } else {
        for (; made < cg->n_hier; made++) {
            if (mkdirat(cg->hier[made].base_fd, name, 0755) < 0) {
                ret = ember_error_sys(err, -errno, "cgroup: mkdir %s/%s/%s", cg->hier[made].mount,
                                      cg->rel, name);
                goto err_rmdir;
            }
        }
    }
    ret = container__cgroup_limits(cg, name, lim, true, err);
    if (ret < 0)
        goto err_rmdir;
    if (v2_fd && cg->into_cgroup) {
        *v2_fd = openat(cg->hier[0].base_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (*v2_fd < 0) {
            ret = ember_error_sys(err, -errno, "cgroup: open %s/%s/%s", cg->hier[0].mount, cg->rel,
                                  name);
            goto err_rmdir;
        }
    }
    return 0;

err_rmdir:
    while (made-- > 0)
        unlinkat(cg->hier[made].base_fd, name, AT_REMOVEDIR);
    return ret;
}

int container__cgroup_attach(struct cg_host *cg, const char *name, pid_t pid,
                             struct ember_error *err)
{
    char path[192], val[24];
    snprintf(path, sizeof(path), "%s/cgroup.procs", name);
    snprintf(val, sizeof(val), "%d", (int)pid);
    for (int i = 0; i < cg->n_hier; i++) {
        int ret = write_at(cg->hier[i].base_fd, path, val);
        if (ret < 0)
            return ember_error_sys(err, ret, "cgroup: move pid %d into %s/%s/%s", (int)pid,
                                   cg->hier[i].mount, cg->rel, path);
    }
    return 0;
}

int container__cgroup_remove(struct cg_host *cg, const char *name)
{
    int ret = container__cgroup_name_check(name);
    return ret < 0 ? ret : remove_group(cg, name);
}

int container__cgroup_stats(struct cg_host *cg, const char *name, struct sandbox_stats *out)
{
    int ret = container__cgroup_name_check(name);
    if (ret < 0)
        return ret;
    struct cg_hier *hi = &cg->hier[cg->of[CG_MEMORY]];
    char path[192];
    memset(out, 0, sizeof(*out));
    if (hi->version == 2) {
        snprintf(path, sizeof(path), "%s/memory.current", name);
        if ((ret = read_u64_at(hi->base_fd, path, &out->memory_current)) < 0)
            return ret;
        snprintf(path, sizeof(path), "%s/memory.max", name);
        if ((ret = read_u64_at(hi->base_fd, path, &out->memory_limit)) < 0)
            return ret;
        snprintf(path, sizeof(path), "%s/memory.events", name);
        return read_key_at(hi->base_fd, path, "oom_kill", &out->oom_kills);
    }

    snprintf(path, sizeof(path), "%s/memory.usage_in_bytes", name);
    if ((ret = read_u64_at(hi->base_fd, path, &out->memory_current)) < 0)
        return ret;
    snprintf(path, sizeof(path), "%s/memory.limit_in_bytes", name);
    if ((ret = read_u64_at(hi->base_fd, path, &out->memory_limit)) < 0)
        return ret;
    /* v1's "unlimited" is PAGE_COUNTER_MAX pages, not a round number. */
    if (out->memory_limit >= (UINT64_C(1) << 62))
        out->memory_limit = UINT64_MAX;
    /* "oom_kill N" exists since 4.13; before that failcnt (limit hits) is
     * the closest thing. */
    snprintf(path, sizeof(path), "%s/memory.oom_control", name);
    if (read_key_at(hi->base_fd, path, "oom_kill", &out->oom_kills) == 0)
        return 0;
    snprintf(path, sizeof(path), "%s/memory.failcnt", name);
    return read_u64_at(hi->base_fd, path, &out->oom_kills);
}
