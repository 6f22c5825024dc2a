/* spawn.c - container_spawn: from a plan to an exec'd sandbox process.
 *
 * This runs on a thread-pool thread of a multithreaded daemon. The child is
 * started posix_spawn-style: clone3 with CLONE_VM onto a stack of its own,
 * so no page tables are copied and the daemon takes no copy-on-write faults
 * afterwards (a fork of a 50 MiB daemon costs ~1 ms more). The child may
 * therefore only make raw system calls until it execs (see child_main).
 * Everything it needs - paths, strings, argv, envp - is prepared in a
 * struct plan before cloning.
 *
 *   parent (host root, thread-pool thread)  child (new user/pid/mnt/ipc/uts ns;
 *   --------------------------------------   net ns from netns.c's pool or new)
 *   plan, exec fd, socketpair, pipes, stack
 *   [v2: cgroup, then CLONE_INTO_CGROUP]
 *   [setns into a pooled net ns]
 *   clone3 ──────────────────────────────▶ move its fds to 3..6, close the rest
 *   [setns back]                            rslave /; clone the host paths it
 *   write uid_map / gid_map                 binds (open_tree, while file access
 *   [v1: cgroup (a spare renamed, or        is still host root's); hostname;
 *    mkdir) + limits + attach]              [lo up]; a proc for its pid ns
 *   release ─────────────────────────────▶ setresgid/setgroups/setresuid to ns root
 *                                           unshare cgroup ns; tmpfs root over "/";
 *                                           mountpoints, /etc, binds, /tmp, /proc;
 *                                           root read-only; pivot_root; stdio
 *   wait: EOF = exec'd ◀─────────────────── execveat(exec fd, "", AT_EMPTY_PATH)
 *         a record = failed step + errno     (the status pipe is CLOEXEC)
 *
 * The child works on its mounts while the parent writes maps and cgroups:
 * both halves run at once on two cores.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/filter.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "sandbox/container/container_internal.h"

/* The child's fds, in place from its first steps until exec. */
enum {
    CHILD_CHAN = 3,    /* the channel; the only fd that survives exec besides 0-2 */
    CHILD_EXEC = 4,    /* O_PATH of the program (CLOEXEC) */
    CHILD_RELEASE = 5, /* parent -> child: maps and cgroup are in place */
    CHILD_STATUS = 6,  /* child -> parent: a failure record, or EOF at exec */
    CHILD_FIRST_FREE = 7,
};

#define NS_FLAGS                                                                                   \
    (CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET)

#define MAX_BINDS                                                                                  \
    (1 + CONTAINER_MAX_USR_LINKS + 6 + ARRAY_SIZE(((struct container_spawn_opts *)0)->ro_binds))

/* One host path bound read-only (or, /dev nodes, as they are) into the root. */
struct bind {
    const char *src; /* absolute host path */
    const char *dst; /* path below the new root, no leading '/' */
    bool dir;        /* mountpoint is a directory (else an empty file) */
    bool parents;    /* create missing parent directories */
    bool late;       /* after /tmp is attached (it may live below /tmp) */
    unsigned flags;  /* open_tree flags beyond CLONE|CLOEXEC */
    uint64_t attr;   /* MOUNT_ATTR_* */
};

struct file {
    const char *path;
    const char *data;
};

/* Everything the child needs, prepared by the parent before clone3. */
struct plan {
    int fd_src[4]; /* parent-side numbers of CHILD_CHAN..CHILD_STATUS */
    int fd_high;   /* 1 + the highest of them */
    bool lo_up;    /* bring up lo (not when the namespace came from the pool) */
    struct bind binds[MAX_BINDS];
    int n_binds;
    const struct container_usr_link *links;
    int n_links;
    char tmp_size[24];
    char *const *argv;
    char *const *envp;
    struct sock_fprog stem_filter; /* .len 0: none (not the agent) */
};

/* Where the child was when it failed: named in the parent's error. */
enum step {
    STEP_FDS,
    STEP_SIGNALS,
    STEP_RSLAVE,
    STEP_OPEN_TREE,
    STEP_SETATTR,
    STEP_HOSTNAME,
    STEP_LO,
    STEP_PROC,
    STEP_WAIT,
    STEP_SETRESGID,
    STEP_SETGROUPS,
    STEP_SETRESUID,
    STEP_PDEATHSIG,
    STEP_CGROUPNS,
    STEP_ROOT,
    STEP_ATTACH_ROOT,
    STEP_MKDIR,
    STEP_MKFILE,
    STEP_SYMLINK,
    STEP_ETC,
    STEP_MOVE,
    STEP_TMP,
    STEP_ROOT_RO,
    STEP_PIVOT,
    STEP_UMOUNT_OLD,
    STEP_STDIO,
    STEP_SECCOMP,
    STEP_EXEC,
};

static const char *const step_names[] = {
    [STEP_FDS] = "arrange fds",
    [STEP_SIGNALS] = "reset signal dispositions",
    [STEP_RSLAVE] = "mount --make-rslave /",
    [STEP_OPEN_TREE] = "open_tree (clone)",
    [STEP_SETATTR] = "mount_setattr",
    [STEP_HOSTNAME] = "sethostname",
    [STEP_LO] = "bring up lo",
    [STEP_PROC] = "mount proc",
    [STEP_WAIT] = "wait for the parent",
    [STEP_SETRESGID] = "setresgid(0)",
    [STEP_SETGROUPS] = "setgroups(0)",
    [STEP_SETRESUID] = "setresuid(0)",
    [STEP_PDEATHSIG] = "prctl(PR_SET_PDEATHSIG)",
    [STEP_CGROUPNS] = "unshare(CLONE_NEWCGROUP)",
    [STEP_ROOT] = "mount tmpfs root",
    [STEP_ATTACH_ROOT] = "move_mount root over /",
    [STEP_MKDIR] = "mkdir",
    [STEP_MKFILE] = "create mountpoint",
    [STEP_SYMLINK] = "symlink",
    [STEP_ETC] = "write",
    [STEP_MOVE] = "move_mount",
    [STEP_TMP] = "mount tmpfs /tmp",
    [STEP_ROOT_RO] = "make root read-only",
    [STEP_PIVOT] = "pivot_root",
    [STEP_UMOUNT_OLD] = "detach the old root",
    [STEP_STDIO] = "stdio to /dev/null",
    [STEP_SECCOMP] = "seccomp (stem filter)",
    [STEP_EXEC] = "execveat",
};

/* What the child writes to CHILD_STATUS when a step fails. */
struct child_report {
    int32_t step;
    int32_t err;
    int32_t index; /* bind index, or -1 */
    int32_t pad;
};

/* ---- generated /etc ------------------------------------------------------ */

/* The identities that exist inside: root for the agent's setup, ember (1000)
 * for the function, nobody for unmapped ids (host files show up as 65534). */
static const struct file etc_files[] = {
    {"etc/passwd", "root:x:0:0:root:/root:/usr/sbin/nologin\n"
                   "ember:x:1000:1000:ember function:/tmp:/usr/sbin/nologin\n"
                   "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"},
    {"etc/group", "root:x:0:\n"
                  "ember:x:1000:\n"
                  "nogroup:x:65534:\n"},
    {"etc/hosts", "127.0.0.1\tlocalhost ember\n"
                  "::1\tlocalhost ip6-localhost ip6-loopback\n"},
};

/* Directories of the new root; /fn stays empty for the agent's package. */
static const char *const root_dirs[] = {"usr", "dev", "etc", "fn", "proc", "tmp"};

/* /dev: these nodes only, bound from the host (mknod is impossible in a user
 * namespace); the conventional links into /proc for shells' /dev/stdin etc. */
static const struct {
    const char *src, *dst;
} dev_nodes[] = {
    {"/dev/null", "dev/null"},     {"/dev/zero", "dev/zero"},       {"/dev/full", "dev/full"},
    {"/dev/random", "dev/random"}, {"/dev/urandom", "dev/urandom"},
};
static const struct {
    const char *name, *target;
} dev_links[] = {
    {"dev/fd", "/proc/self/fd"},
    {"dev/stdin", "/proc/self/fd/0"},
    {"dev/stdout", "/proc/self/fd/1"},
    {"dev/stderr", "/proc/self/fd/2"},
};

static char *const agent_argv[] = {(char *)"ember-agent", NULL};
static char *const agent_envp[] = {(char *)"PATH=/usr/bin:/bin", (char *)"HOME=/tmp",
                                   (char *)"LANG=C.UTF-8", NULL};

/* ---- the child: raw system calls only ------------------------------------ */

/* The child shares the daemon's memory (CLONE_VM, like posix_spawn: no page
 * tables to copy, no copy-on-write faults in the daemon afterwards) but runs
 * on its own stack while the parent thread carries on. So it must not touch
 * anything the parent uses: not even errno, which lives in the parent
 * thread's TLS. Hence raw system calls returning -errno, no libc (not even
 * memcpy), and no sanitizer instrumentation (ASan's fake stacks and
 * UBSan's reports also live in that TLS). */
#define CHILD_FN __attribute__((noinline, no_sanitize("address", "undefined")))

#if defined(__x86_64__)
#define SPAWN_CLONE_VM 1
static inline __attribute__((always_inline)) long raw6(long n, long a, long b, long c, long d,
                                                       long e, long f)
{
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}
#else
/* Elsewhere: fork semantics (a copy of the address space), where libc's
 * syscall() and its errno are the child's own. */
#define SPAWN_CLONE_VM 0
static long raw6(long n, long a, long b, long c, long d, long e, long f)
{
    long ret = syscall(n, a, b, c, d, e, f);
    return ret < 0 ? -errno : ret;
}
#endif

#define SC_(n, a, b, c, d, e, f, ...)                                                              \
    raw6((long)(n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), (long)(f))
#define SC(...) SC_(__VA_ARGS__, 0, 0, 0, 0, 0, 0, 0)

struct kernel_sigaction {
    void (*handler)(int);
    unsigned long flags;
    void (*restorer)(void);
    uint64_t mask;
};

CHILD_FN static _Noreturn void child_fail(int status_fd, enum step step, long err, int index)
{
    struct child_report r = {.step = (int32_t)step, .err = (int32_t)-err, .index = index};
    SC(SYS_write, status_fd, &r, sizeof(r));
    for (;;)
        SC(SYS_exit, 127);
}

/* Run a raw call; on failure report (step, index) and exit. */
#define TRY(step, index, expr)                                                                     \
    ({                                                                                             \
        long _r = (expr);                                                                          \
        if (_r < 0)                                                                                \
            child_fail(CHILD_STATUS, (step), _r, (index));                                         \
        _r;                                                                                        \
    })

/* volatile keeps the compiler from turning these loops back into calls to
 * strlen and memcpy (which an ASan build intercepts). */
CHILD_FN static size_t c_strlen(const char *s)
{
    const volatile char *v = s;
    size_t n = 0;
    while (v[n])
        n++;
    return n;
}

/* Put the four inherited fds at 3..6 and close everything else: first copy
 * them above all of their current numbers so no move clobbers another. */
CHILD_FN static void child_fds(const struct plan *p)
{
    long tmp[4];
    for (int i = 0; i < 4; i++) {
        tmp[i] = SC(SYS_fcntl, p->fd_src[i], F_DUPFD_CLOEXEC, p->fd_high);
        if (tmp[i] < 0)
            child_fail(p->fd_src[3], STEP_FDS, tmp[i], -1);
    }
    for (int i = 0; i < 4; i++) {
        long r = SC(SYS_dup3, tmp[i], CHILD_CHAN + i, i == 0 ? 0 : O_CLOEXEC);
        if (r < 0)
            child_fail((int)tmp[3], STEP_FDS, r, -1);
    }
    TRY(STEP_FDS, -1, SC(SYS_close_range, CHILD_FIRST_FREE, ~0u, 0));
}

/* The daemon's handlers make no sense here (a handler would write into the
 * daemon's signal pipe, were it still open); defaults for all, blocked until
 * exec. Caught signals reset at exec anyway, but ignored ones would stay
 * ignored in the agent. */
CHILD_FN static void child_signals(void)
{
    struct kernel_sigaction dfl = {.handler = SIG_DFL};
    for (int sig = 1; sig < _NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP)
            continue;
        long r = SC(SYS_rt_sigaction, sig, &dfl, NULL, sizeof(dfl.mask));
        if (r < 0 && r != -EINVAL)
            child_fail(CHILD_STATUS, STEP_SIGNALS, r, sig);
    }
}

CHILD_FN static long child_loopback_up(void)
{
    long s = SC(SYS_socket, AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return s;
    struct ifreq ifr;
    for (size_t i = 0; i < sizeof(ifr); i++)
        ((volatile char *)&ifr)[i] = 0;
    ifr.ifr_name[0] = 'l';
    ifr.ifr_name[1] = 'o';
    long ret = SC(SYS_ioctl, s, SIOCGIFFLAGS, &ifr);
    if (ret == 0) {
        ifr.ifr_flags |= IFF_UP;
        ret = SC(SYS_ioctl, s, SIOCSIFFLAGS, &ifr);
    }
    SC(SYS_close, s);
    return ret;
}

/* A detached mount of a new @type superblock. */
CHILD_FN static long child_fsmount(const char *type, const char *size, const char *mode,
                                   uint64_t attr)
{
    long fs = SC(SYS_fsopen, type, FSOPEN_CLOEXEC);
    if (fs < 0)
        return fs;
    long ret = 0;
    if (size)
        ret = SC(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "size", size, 0);
    if (ret == 0 && mode)
        ret = SC(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "mode", mode, 0);
    if (ret == 0)
        ret = SC(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0);
    if (ret == 0)
        ret = SC(SYS_fsmount, fs, FSMOUNT_CLOEXEC, attr);
    SC(SYS_close, fs);
    return ret;
}

/* mkdir -p of the parents of @path (relative to @dirfd), in a stack copy. */
CHILD_FN static void child_mkdir_parents(long dirfd, const char *path, int index)
{
    char buf[PATH_MAX];
    size_t n = c_strlen(path);
    if (n >= sizeof(buf))
        child_fail(CHILD_STATUS, STEP_MKDIR, -ENAMETOOLONG, index);
    volatile char *vbuf = buf;
    for (size_t i = 0; i <= n; i++)
        vbuf[i] = path[i];
    for (size_t i = 0; i < n; i++) {
        if (buf[i] != '/')
            continue;
        buf[i] = '\0';
        long r = SC(SYS_mkdirat, dirfd, buf, 0755);
        if (r < 0 && r != -EEXIST)
            child_fail(CHILD_STATUS, STEP_MKDIR, r, index);
        buf[i] = '/';
    }
}

CHILD_FN static void child_mountpoint(long root, const struct bind *b, int index)
{
    if (b->parents)
        child_mkdir_parents(root, b->dst, index);
    if (b->dir) {
        long r = SC(SYS_mkdirat, root, b->dst, 0755);
        if (r < 0 && r != -EEXIST)
            child_fail(CHILD_STATUS, STEP_MKDIR, r, index);
    } else {
        long fd =
            TRY(STEP_MKFILE, index,
                SC(SYS_openat, root, b->dst, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644));
        SC(SYS_close, fd);
    }
}

CHILD_FN static void child_bind(long root, const struct plan *p, const long *bind_fd, int i)
{
    child_mountpoint(root, &p->binds[i], i);
    TRY(STEP_MOVE, i,
        SC(SYS_move_mount, bind_fd[i], "", root, p->binds[i].dst, MOVE_MOUNT_F_EMPTY_PATH));
}

CHILD_FN static int child_main(void *arg)
{
    const struct plan *p = arg;
    long bind_fd[MAX_BINDS];

    child_fds(p);
    child_signals();

    /* -- Still host root as far as file permissions go (kuid 0, unmapped in
     *    the new namespace), so clone the host paths now: a ro_bind below a
     *    root-only state dir is reachable only now. Nothing can leak back to
     *    the host: our copy of the mount table becomes a slave first. */
    TRY(STEP_RSLAVE, -1, SC(SYS_mount, NULL, "/", NULL, MS_REC | MS_SLAVE, NULL));
    for (int i = 0; i < p->n_binds; i++) {
        const struct bind *b = &p->binds[i];
        bind_fd[i] = TRY(
            STEP_OPEN_TREE, i,
            SC(SYS_open_tree, AT_FDCWD, b->src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | b->flags));
        struct mount_attr attr = {.attr_set = b->attr, .propagation = MS_PRIVATE};
        TRY(STEP_SETATTR, i,
            SC(SYS_mount_setattr, bind_fd[i], "", AT_EMPTY_PATH | (b->flags & AT_RECURSIVE), &attr,
               sizeof(attr)));
    }
    TRY(STEP_HOSTNAME, -1, SC(SYS_sethostname, "ember", 5));
    if (p->lo_up)
        TRY(STEP_LO, -1, child_loopback_up());
    /* proc for the new pid namespace (we are its pid 1). */
    long proc_fd = TRY(STEP_PROC, -1,
                       child_fsmount("proc", NULL, NULL,
                                     MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC));

    /* -- The parent has written the maps (and placed us in our cgroup). */
    char go;
    long n = SC(SYS_read, CHILD_RELEASE, &go, 1);
    if (n != 1)
        child_fail(CHILD_STATUS, STEP_WAIT, n < 0 ? n : -EPIPE, -1);
    SC(SYS_close, CHILD_RELEASE);

    /* Become the namespace's root (kuid = the sandbox's host uid) and drop
     * the daemon's supplementary groups, which would otherwise keep host
     * gid 0 in the sandbox. (That is why /proc/pid/setgroups stays "allow":
     * the parent writes gid_map with CAP_SETGID in the host namespace.) */
    TRY(STEP_SETRESGID, -1, SC(SYS_setresgid, 0, 0, 0));
    TRY(STEP_SETGROUPS, -1, SC(SYS_setgroups, 0, NULL));
    TRY(STEP_SETRESUID, -1, SC(SYS_setresuid, 0, 0, 0));
    /* Dies with the daemon thread that spawned it (set after setresuid,
     * which clears it). A thread-pool thread lives as long as the daemon. */
    TRY(STEP_PDEATHSIG, -1, SC(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0));
    /* Now that we are in our cgroup, make it our cgroup namespace's root. */
    TRY(STEP_CGROUPNS, -1, SC(SYS_unshare, CLONE_NEWCGROUP));

    /* -- A fresh tmpfs as the root, attached over "/" so pivot_root has a
     *    mount to turn into the root; populated through its fd. */
    long root = TRY(STEP_ROOT, -1,
                    child_fsmount("tmpfs", "1m", "0755",
                                  MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC));
    TRY(STEP_ATTACH_ROOT, -1, SC(SYS_move_mount, root, "", AT_FDCWD, "/", MOVE_MOUNT_F_EMPTY_PATH));
    for (size_t i = 0; i < ARRAY_SIZE(root_dirs); i++)
        TRY(STEP_MKDIR, -1, SC(SYS_mkdirat, root, root_dirs[i], 0755));
    for (int i = 0; i < p->n_links; i++)
        if (p->links[i].target[0])
            TRY(STEP_SYMLINK, -1, SC(SYS_symlinkat, p->links[i].target, root, p->links[i].name));
    for (size_t i = 0; i < ARRAY_SIZE(dev_links); i++)
        TRY(STEP_SYMLINK, -1, SC(SYS_symlinkat, dev_links[i].target, root, dev_links[i].name));
    for (size_t i = 0; i < ARRAY_SIZE(etc_files); i++) {
        long fd = TRY(
            STEP_ETC, -1,
            SC(SYS_openat, root, etc_files[i].path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
        size_t len = c_strlen(etc_files[i].data);
        long w = SC(SYS_write, fd, etc_files[i].data, len);
        if (w != (long)len)
            child_fail(CHILD_STATUS, STEP_ETC, w < 0 ? w : -EIO, -1);
        SC(SYS_close, fd);
    }
    for (int i = 0; i < p->n_binds; i++)
        if (!p->binds[i].late)
            child_bind(root, p, bind_fd, i);
    long tmp =
        TRY(STEP_TMP, -1,
            child_fsmount("tmpfs", p->tmp_size, "1777", MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV));
    TRY(STEP_MOVE, -1, SC(SYS_move_mount, tmp, "", root, "tmp", MOVE_MOUNT_F_EMPTY_PATH));
    TRY(STEP_MOVE, -1, SC(SYS_move_mount, proc_fd, "", root, "proc", MOVE_MOUNT_F_EMPTY_PATH));
    for (int i = 0; i < p->n_binds; i++)
        if (p->binds[i].late)
            child_bind(root, p, bind_fd, i);
    /* The root only (not recursive): /tmp stays writable. */
    struct mount_attr ro = {.attr_set = MOUNT_ATTR_RDONLY};
    TRY(STEP_ROOT_RO, -1, SC(SYS_mount_setattr, root, "", AT_EMPTY_PATH, &ro, sizeof(ro)));

    /* pivot_root(".", "."): the old root ends up stacked on the new one and
     * is detached with everything below it. */
    TRY(STEP_PIVOT, -1, SC(SYS_fchdir, root));
    TRY(STEP_PIVOT, -1, SC(SYS_pivot_root, ".", "."));
    TRY(STEP_UMOUNT_OLD, -1, SC(SYS_umount2, ".", MNT_DETACH));
    TRY(STEP_PIVOT, -1, SC(SYS_chdir, "/"));

    long null = TRY(STEP_STDIO, -1, SC(SYS_openat, AT_FDCWD, "/dev/null", O_RDWR | O_CLOEXEC));
    for (int fd = 0; fd < 3; fd++)
        TRY(STEP_STDIO, -1, SC(SYS_dup3, null, fd, 0));

    uint64_t none = 0;
    TRY(STEP_SIGNALS, -1, SC(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, sizeof(none)));
    /* The agent runs under the stem filter from its first instruction (the
     * function's table with move_mount still allowed; see seccomp.c). */
    if (p->stem_filter.len) {
        TRY(STEP_SECCOMP, -1, SC(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
        TRY(STEP_SECCOMP, -1, SC(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &p->stem_filter));
    }
    long r = SC(SYS_execveat, CHILD_EXEC, "", p->argv, p->envp, AT_EMPTY_PATH);
    child_fail(CHILD_STATUS, STEP_EXEC, r, -1);
}

/* ---- the parent --------------------------------------------------------- */

/* Top-level names the sandbox root manages itself: a ro_bind may not land
 * below them (the root is read-only by then), except below /tmp. */
static bool reserved_top(const struct container_host *h, const char *rel)
{
    static const char *const fixed[] = {"usr", "dev", "etc", "fn", "proc"};
    size_t n = strcspn(rel, "/");
    for (size_t i = 0; i < ARRAY_SIZE(fixed); i++)
        if (strlen(fixed[i]) == n && strncmp(rel, fixed[i], n) == 0)
            return true;
    for (int i = 0; i < h->n_links; i++)
        if (strlen(h->links[i].name) == n && strncmp(rel, h->links[i].name, n) == 0)
            return true;
    return false;
}

static int check_ro_bind(const struct container_host *h, const char *path, bool *dir,
                         struct ember_error *err)
{
    if (!path || path[0] != '/' || path[1] == '\0' || strlen(path) >= PATH_MAX / 2)
        return ember_error_set(err, -EINVAL, "spawn: ro_bind '%s' is not an absolute path",
                               path ? path : "");
    if (strstr(path, "/../") || strstr(path, "/./") || strstr(path, "//") ||
        (strlen(path) >= 3 && strcmp(path + strlen(path) - 3, "/..") == 0) ||
        path[strlen(path) - 1] == '/')
        return ember_error_set(err, -EINVAL, "spawn: ro_bind '%s' is not a normalized path", path);
    if (reserved_top(h, path + 1))
        return ember_error_set(err, -EINVAL,
                               "spawn: ro_bind '%s' lands in a directory the sandbox root "
                               "manages itself",
                               path);
    struct stat st;
    if (stat(path, &st) < 0)
        return ember_error_sys(err, -errno, "spawn: ro_bind %s", path);
    *dir = S_ISDIR(st.st_mode);
    return 0;
}

static int build_plan(const struct container_host *h, const struct container_spawn_opts *opts,
                      struct plan *p, struct ember_error *err)
{
    const uint64_t ro = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    /* Device nodes keep dev, obviously; read-only only protects the host
     * inode's metadata (reads and writes of a device ignore it). */
    const uint64_t dev_ro = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC;

    memset(p, 0, sizeof(*p));
    p->links = h->links;
    p->n_links = h->n_links;
    p->argv = agent_argv;
    p->envp = agent_envp;
    /* Only ember-agent gets the stem filter: another program (ember-vmm)
     * brings its own. */
    if (!opts || !opts->exec_path) {
        p->stem_filter.len = (unsigned short)(h->stem_bpf_len / sizeof(struct sock_filter));
        p->stem_filter.filter = h->stem_bpf;
    }
    snprintf(p->tmp_size, sizeof(p->tmp_size), "%" PRIu32 "m", h->tmp_size_mb);

    p->binds[p->n_binds++] =
        (struct bind){.src = "/usr", .dst = "usr", .dir = true, .flags = AT_RECURSIVE, .attr = ro};
    /* A host without merged /usr has real /bin, /lib...: bind those too. */
    for (int i = 0; i < h->n_links; i++)
        if (!h->links[i].target[0])
            p->binds[p->n_binds++] = (struct bind){.src = h->links[i].path,
                                                   .dst = h->links[i].name,
                                                   .dir = true,
                                                   .flags = AT_RECURSIVE,
                                                   .attr = ro};
    for (size_t i = 0; i < ARRAY_SIZE(dev_nodes); i++)
        p->binds[p->n_binds++] =
            (struct bind){.src = dev_nodes[i].src, .dst = dev_nodes[i].dst, .attr = dev_ro};
    if (opts && opts->dev_kvm)
        p->binds[p->n_binds++] = (struct bind){
            .src = "/dev/kvm", .dst = "dev/kvm", .attr = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC};
    for (size_t i = 0; opts && i < ARRAY_SIZE(opts->ro_binds) && opts->ro_binds[i]; i++) {
        bool dir = false;
        int ret = check_ro_bind(h, opts->ro_binds[i], &dir, err);
        if (ret < 0)
            return ret;
        p->binds[p->n_binds++] = (struct bind){.src = opts->ro_binds[i],
                                               .dst = opts->ro_binds[i] + 1,
                                               .dir = dir,
                                               .parents = true,
                                               .late = true,
                                               .flags = AT_RECURSIVE,
                                               .attr = ro};
    }
    return 0;
}

/* The error for a failure record from the child. */
static int child_error(const struct plan *p, const struct child_report *r, const char *exec_path,
                       struct ember_error *err)
{
    const char *what =
        r->step >= 0 && (size_t)r->step < ARRAY_SIZE(step_names) ? step_names[r->step] : "?";
    const char *path = "";
    if (r->step == STEP_EXEC)
        path = exec_path;
    else if (r->index >= 0 && r->index < p->n_binds)
        path = r->step == STEP_OPEN_TREE || r->step == STEP_SETATTR ? p->binds[r->index].src
                                                                    : p->binds[r->index].dst;
    int code = r->err > 0 ? -r->err : -EIO;
    return ember_error_sys(err, code, "spawn: sandbox setup: %s%s%s", what, path[0] ? " " : "",
                           path);
}

/* Write /proc/<pid>/{uid,gid}_map: inside 0 and 1000 to the sandbox's pair. */
static int write_maps(pid_t pid, uint32_t host0, struct ember_error *err)
{
    char path[64], map[96];
    int n = snprintf(map, sizeof(map), "0 %" PRIu32 " 1\n1000 %" PRIu32 " 1\n", host0, host0 + 1);
    static const char *const files[] = {"uid_map", "gid_map"};
    for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
        snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, files[i]);
        cleanup_close int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
            return ember_error_sys(err, -errno, "spawn: open %s", path);
        if (write(fd, map, (size_t)n) != n)
            return ember_error_sys(err, -errno, "spawn: write '%.*s' to %s", n - 1, map, path);
    }
    return 0;
}

#define CHILD_STACK_SIZE (64 * 1024)
#define CHILD_STACK_GUARD 4096

#if SPAWN_CLONE_VM
/* clone3 onto a new stack, where the child calls fn(arg) and exits with its
 * result: libc has no clone3 wrapper, and a child cannot return through
 * this frame (it lives on the parent's stack). */
static long clone3_vm(struct clone_args *args, int (*fn)(void *), void *arg)
{
    register void *r12 __asm__("r12") = (void *)fn;
    register void *r13 __asm__("r13") = arg;
    long ret;
    __asm__ volatile("syscall\n\t"
                     "test %%rax, %%rax\n\t"
                     "jnz 1f\n\t"
                     "xor %%ebp, %%ebp\n\t"
                     "mov %%r13, %%rdi\n\t"
                     "call *%%r12\n\t"
                     "mov %%eax, %%edi\n\t"
                     "mov %[nr_exit], %%eax\n\t"
                     "syscall\n\t"
                     "ud2\n"
                     "1:"
                     : "=a"(ret)
                     : "a"((long)SYS_clone3), "D"(args), "S"(sizeof(*args)), "r"(r12),
                       "r"(r13), [nr_exit] "i"(SYS_exit)
                     : "rcx", "r11", "memory");
    return ret;
}
#endif

/* Start child_main(@plan) in new namespaces; -1 + errno on failure. */
static pid_t start_child(struct plan *plan, uint64_t flags, int cgroup_fd, int *pidfd, void *stack)
{
    struct clone_args args = {
        .flags = flags | CLONE_PIDFD,
        .pidfd = (uint64_t)(uintptr_t)pidfd,
        .exit_signal = SIGCHLD,
    };
    if (cgroup_fd >= 0) {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = (uint64_t)cgroup_fd;
    }
#if SPAWN_CLONE_VM
    args.flags |= CLONE_VM;
    args.stack = (uint64_t)(uintptr_t)stack + CHILD_STACK_GUARD;
    args.stack_size = CHILD_STACK_SIZE;
    long ret = clone3_vm(&args, child_main, plan);
    if (ret < 0) {
        errno = (int)-ret;
        return -1;
    }
    return (pid_t)ret;
#else
    (void)stack;
    pid_t pid = (pid_t)syscall(SYS_clone3, &args, sizeof(args));
    if (pid == 0)
        _exit(child_main(plan));
    return pid;
#endif
}

/* Back to the daemon's network namespace after a clone3 from a pooled one.
 * This cannot fail short of a kernel out of memory; if it does, the thread
 * would open the daemon's sockets in a sandbox's namespace, which is worse
 * than stopping. */
static void netns_return(struct container_host *h)
{
    for (int i = 0; i < 3; i++)
        if (setns(h->netns.host_fd, CLONE_NEWNET) == 0)
            return;
    log_error("container: cannot return to the daemon's network namespace: %s", strerror(errno));
    abort();
}

/* Kill a child that never became a sandbox and reap it. */
static void kill_child(int pidfd)
{
    pidfd_send_signal(pidfd, SIGKILL, NULL, 0);
    siginfo_t si;
    while (waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED) < 0 && errno == EINTR)
        ;
}

int container__spawn(struct container_host *h, uint64_t sandbox_id,
                     const struct container_limits *lim, const struct container_spawn_opts *opts,
                     struct container_proc *out, uint64_t *t, struct ember_error *err)
{
    cleanup_close int exec_fd = -1, chan = -1, chan_child = -1, rel_rd = -1, rel_wr = -1,
                      st_rd = -1, st_wr = -1, cg_fd = -1, net_fd = -1;
    uint64_t now = ember_now_ns(), mark = now;
    bool cg_made = false;
    int pidfd = -1;
    void *stack = MAP_FAILED;
#define LAP(i)                                                                                     \
    do {                                                                                           \
        now = ember_now_ns();                                                                      \
        if (t)                                                                                     \
            t[i] = now - mark;                                                                     \
        mark = now;                                                                                \
    } while (0)

    memset(out, 0, sizeof(*out));
    out->pidfd = out->chan_fd = -1;
    const char *exec_path = opts && opts->exec_path ? opts->exec_path : h->agent_path;
    snprintf(out->cgroup, sizeof(out->cgroup), "sb-%" PRIu64, sandbox_id);
    if (!lim)
        return ember_error_set(err, -EINVAL, "spawn: no limits given");

    struct plan plan;
    int ret = build_plan(h, opts, &plan, err);
    if (ret < 0)
        return ret;

    uint32_t pair;
    ret = container__pair_take(h, sandbox_id, &pair);
    if (ret < 0)
        return ember_error_set(err, ret, "spawn: no free uid pair (%" PRIu32 " in use)",
                               h->n_pairs);
    uint32_t host0 = h->uid_base + 2 * pair;

    /* Opened here, as host root: the child execs it by fd after pivot_root,
     * where no host path is visible. */
    exec_fd = open(exec_path, O_PATH | O_CLOEXEC);
    if (exec_fd < 0) {
        ret = ember_error_sys(err, -errno, "spawn: open %s", exec_path);
        goto err_pair;
    }
    int sv[2], rel[2], st[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        ret = ember_error_sys(err, -errno, "spawn: socketpair");
        goto err_pair;
    }
    chan = sv[0];
    chan_child = sv[1];
    if (pipe2(rel, O_CLOEXEC) < 0) {
        ret = ember_error_sys(err, -errno, "spawn: pipe2");
        goto err_pair;
    }
    rel_rd = rel[0];
    rel_wr = rel[1];
    if (pipe2(st, O_CLOEXEC) < 0) {
        ret = ember_error_sys(err, -errno, "spawn: pipe2");
        goto err_pair;
    }
    st_rd = st[0];
    st_wr = st[1];
    plan.fd_src[0] = chan_child;
    plan.fd_src[1] = exec_fd;
    plan.fd_src[2] = rel_rd;
    plan.fd_src[3] = st_wr;
    plan.fd_high = CHILD_FIRST_FREE;
    for (int i = 0; i < 4; i++)
        if (plan.fd_src[i] >= plan.fd_high)
            plan.fd_high = plan.fd_src[i] + 1;

    /* v2: the group exists before the child, which starts inside it (so its
     * namespaces are charged there too). v1: made while the child works. */
    if (h->cg.into_cgroup) {
        ret = container__cgroup_create(&h->cg, out->cgroup, lim, &cg_fd, err);
        if (ret < 0)
            goto err_pair;
        cg_made = true;
    }
    /* A network namespace made ahead (netns.c), else clone3 makes one. */
    uint64_t flags = NS_FLAGS;
    net_fd = container__netns_take(&h->netns);
    plan.lo_up = net_fd < 0;
    if (net_fd >= 0)
        flags &= ~(uint64_t)CLONE_NEWNET;

    /* The child's stack, below a guard page; see child_main. */
    stack = mmap(NULL, CHILD_STACK_GUARD + CHILD_STACK_SIZE, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE, -1, 0);
    if (stack == MAP_FAILED || mprotect(stack, CHILD_STACK_GUARD, PROT_NONE) < 0) {
        ret = ember_error_sys(err, -errno, "spawn: mmap the child's stack");
        goto err_stack;
    }
    LAP(CONTAINER_T_PREP);

    /* All signals blocked across clone3 so that none is delivered to the
     * child while it still has the daemon's handlers; it resets them and
     * unblocks right before exec. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    if (net_fd >= 0 && setns(net_fd, CLONE_NEWNET) < 0) {
        log_warn("container: setns into a pooled network namespace: %s", strerror(errno));
        flags |= CLONE_NEWNET;
        plan.lo_up = true;
        close(steal_fd(&net_fd));
    }
    pid_t pid = start_child(&plan, flags, cg_fd, &pidfd, stack);
    int clone_errno = errno;
    if (net_fd >= 0)
        netns_return(h);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        ret = ember_error_sys(err, -clone_errno, "spawn: clone3(user, pid, mount, ipc, uts, net%s)",
                              cg_fd >= 0 ? ", into cgroup" : "");
        goto err_stack;
    }
    LAP(CONTAINER_T_CLONE);
    /* The child's ends live on in the child only. */
    close(steal_fd(&chan_child));
    close(steal_fd(&rel_rd));
    close(steal_fd(&st_wr));
    close(steal_fd(&exec_fd));

    ret = write_maps(pid, host0, err);
    if (ret < 0)
        goto err_kill;
    LAP(CONTAINER_T_MAPS);
    if (!h->cg.into_cgroup) {
        ret = container__cgroup_create(&h->cg, out->cgroup, lim, NULL, err);
        if (ret < 0)
            goto err_kill;
        cg_made = true;
        ret = container__cgroup_attach(&h->cg, out->cgroup, pid, err);
        if (ret < 0)
            goto err_kill;
    }
    LAP(CONTAINER_T_CGROUP);

    if (write(rel_wr, "g", 1) != 1) {
        ret = ember_error_sys(err, -errno, "spawn: release the child");
        goto err_kill;
    }
    close(steal_fd(&rel_wr));

    /* EOF: exec happened (the pipe is CLOEXEC). A child killed during
     * setup (OOM, SIGKILL) also gives EOF without a record; the caller
     * learns of that death through the pidfd, as of any later one. */
    struct child_report rep;
    ssize_t n;
    while ((n = read(st_rd, &rep, sizeof(rep))) < 0 && errno == EINTR)
        ;
    if (n == (ssize_t)sizeof(rep)) {
        ret = child_error(&plan, &rep, exec_path, err);
        goto err_kill;
    }
    if (n != 0) {
        ret = ember_error_sys(err, n < 0 ? -errno : -EIO, "spawn: read the child's status");
        goto err_kill;
    }
    LAP(CONTAINER_T_CHILD);
#undef LAP
    /* exec has replaced the child's memory: the stack is ours again. */
    munmap(stack, CHILD_STACK_GUARD + CHILD_STACK_SIZE);

    out->pid = pid;
    out->pidfd = pidfd;
    out->chan_fd = steal_fd(&chan);
    out->host_uid = host0 + 1;
    return 0;

err_kill:
    kill_child(pidfd);
    close(pidfd);
err_stack:
    if (stack != MAP_FAILED)
        munmap(stack, CHILD_STACK_GUARD + CHILD_STACK_SIZE);
    /* v1 makes the group after clone (cg_made says), v2 before it. */
    if (cg_made)
        container__cgroup_remove(&h->cg, out->cgroup);
err_pair:
    container__pair_release(h, sandbox_id);
    return ret;
}

int container_spawn(struct container_host *h, uint64_t sandbox_id,
                    const struct container_limits *lim, const struct container_spawn_opts *opts,
                    struct container_proc *out, struct ember_error *err)
{
    return container__spawn(h, sandbox_id, lim, opts, out, NULL, err);
}
