/* seccomp.c - THE seccomp profile of container sandboxes, as one table.
 *
 * Built once (container_host_open) with libseccomp and exported as classic
 * BPF, in two stacked parts (see container__seccomp_build): the spawner
 * installs the table before it execs the agent, and the agent adds a small
 * filter at LOAD, before any function code runs.
 *
 * Policy: anything not in the table kills the process (SCMP_ACT_KILL_PROCESS:
 * a function calling something unexpected is a bug or an attack, and either
 * way it costs only its own sandbox). Syscalls that libc and runtimes probe
 * and handle gracefully when refused get an errno instead, so that normal
 * programs degrade rather than die. Foreign architectures (i386 int 0x80,
 * x32) are killed too.
 *
 * Rules for one syscall with different actions must not overlap (libseccomp
 * lets an unconditional rule swallow conditional ones), so "allow X, refuse
 * the rest" is written as an allow for X plus refusals that cover exactly
 * the complement (see clone and socket).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <sched.h>
#include <seccomp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "sandbox/container/container_internal.h"

#define ALLOW SCMP_ACT_ALLOW
#define EPERM_ SCMP_ACT_ERRNO(EPERM)
#define ENOSYS_ SCMP_ACT_ERRNO(ENOSYS)
#define EAFNOSUPPORT_ SCMP_ACT_ERRNO(EAFNOSUPPORT)
#define EPROTONOSUPPORT_ SCMP_ACT_ERRNO(EPROTONOSUPPORT)

/* One argument comparison, written out so the table is a constant. */
#define ARG(n, cmp, a, b)                                                                          \
    {                                                                                              \
        .arg = (n), .op = (cmp), .datum_a = (a), .datum_b = (b)                                    \
    }
#define ARG_EQ(n, v) ARG(n, SCMP_CMP_EQ, (v), 0)
#define ARG_GT(n, v) ARG(n, SCMP_CMP_GT, (v), 0)
#define ARG_GE(n, v) ARG(n, SCMP_CMP_GE, (v), 0)
#define ARG_MASK(n, mask, v) ARG(n, SCMP_CMP_MASKED_EQ, (mask), (v))

/* Namespace bits of clone(2)'s flags (argument 0 on x86_64). */
#define CLONE_NS_FLAGS                                                                             \
    (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |  \
     CLONE_NEWNET)

/* Table rows: a syscall, its action, and up to two argument comparisons. */
#define R(name_, act)                                                                              \
    {                                                                                              \
        .name = (name_), .action = (act)                                                           \
    }
#define R1(name_, act, a0)                                                                         \
    {                                                                                              \
        .name = (name_), .action = (act), .n_args = 1, .args = { a0 }                              \
    }
#define R2(name_, act, a0, a1)                                                                     \
    {                                                                                              \
        .name = (name_), .action = (act), .n_args = 2, .args = { a0, a1 }                          \
    }

struct rule {
    const char *name;
    uint32_t action;
    unsigned n_args;
    struct scmp_arg_cmp args[2];
};

/* clang-format off */
static const struct rule profile[] = {
    /* -- Descriptors the process holds: the bread and butter of every program. */
    R("read", ALLOW), R("write", ALLOW), R("readv", ALLOW), R("writev", ALLOW),
    R("pread64", ALLOW), R("pwrite64", ALLOW), R("preadv", ALLOW), R("pwritev", ALLOW),
    R("preadv2", ALLOW), R("pwritev2", ALLOW), R("lseek", ALLOW), R("close", ALLOW),
    R("close_range", ALLOW), R("dup", ALLOW), R("dup2", ALLOW), R("dup3", ALLOW),
    R("fcntl", ALLOW), R("ioctl", ALLOW), R("pipe", ALLOW), R("pipe2", ALLOW),
    R("sendfile", ALLOW), R("splice", ALLOW), R("tee", ALLOW), R("vmsplice", ALLOW),
    R("copy_file_range", ALLOW), R("fsync", ALLOW), R("fdatasync", ALLOW),
    R("sync_file_range", ALLOW), R("syncfs", ALLOW), R("sync", ALLOW),
    R("fadvise64", ALLOW), R("readahead", ALLOW), R("flock", ALLOW),
    R("ftruncate", ALLOW), R("fallocate", ALLOW), R("memfd_create", ALLOW),

    /* -- The file system as the sandbox sees it: its own ro root, /tmp, /fn.
     *    Ownership and mode changes only ever reach its own files (no caps,
     *    and host-owned files are unmapped in its user namespace). */
    R("open", ALLOW), R("openat", ALLOW), R("openat2", ALLOW), R("creat", ALLOW),
    R("stat", ALLOW), R("fstat", ALLOW), R("lstat", ALLOW), R("newfstatat", ALLOW),
    R("statx", ALLOW), R("statfs", ALLOW), R("fstatfs", ALLOW),
    R("access", ALLOW), R("faccessat", ALLOW), R("faccessat2", ALLOW),
    R("readlink", ALLOW), R("readlinkat", ALLOW), R("getdents", ALLOW), R("getdents64", ALLOW),
    R("getcwd", ALLOW), R("chdir", ALLOW), R("fchdir", ALLOW),
    R("mkdir", ALLOW), R("mkdirat", ALLOW), R("rmdir", ALLOW),
    R("unlink", ALLOW), R("unlinkat", ALLOW), R("rename", ALLOW), R("renameat", ALLOW),
    R("renameat2", ALLOW), R("link", ALLOW), R("linkat", ALLOW), R("symlink", ALLOW),
    R("symlinkat", ALLOW), R("truncate", ALLOW), R("umask", ALLOW),
    R("chmod", ALLOW), R("fchmod", ALLOW), R("fchmodat", ALLOW), R("fchmodat2", ALLOW),
    R("chown", ALLOW), R("fchown", ALLOW), R("lchown", ALLOW), R("fchownat", ALLOW),
    R("utime", ALLOW), R("utimes", ALLOW), R("utimensat", ALLOW), R("futimesat", ALLOW),
    R("getxattr", ALLOW), R("lgetxattr", ALLOW), R("fgetxattr", ALLOW),
    R("listxattr", ALLOW), R("llistxattr", ALLOW), R("flistxattr", ALLOW),
    R("setxattr", ALLOW), R("lsetxattr", ALLOW), R("fsetxattr", ALLOW),
    R("removexattr", ALLOW), R("lremovexattr", ALLOW), R("fremovexattr", ALLOW),
    R("inotify_init", ALLOW), R("inotify_init1", ALLOW), R("inotify_add_watch", ALLOW),
    R("inotify_rm_watch", ALLOW),

    /* -- Memory: malloc, dlopen (mmap + mprotect of PROT_EXEC), JITs. */
    R("brk", ALLOW), R("mmap", ALLOW), R("munmap", ALLOW), R("mremap", ALLOW),
    R("mprotect", ALLOW), R("madvise", ALLOW), R("msync", ALLOW), R("mincore", ALLOW),
    R("mlock", ALLOW), R("mlock2", ALLOW), R("munlock", ALLOW), R("mlockall", ALLOW),
    R("munlockall", ALLOW), R("membarrier", ALLOW), R("get_mempolicy", ALLOW),
    R("set_mempolicy", ALLOW), R("mbind", ALLOW), R("pkey_alloc", ALLOW),
    R("pkey_free", ALLOW), R("pkey_mprotect", ALLOW),

    /* -- Processes and threads inside the sandbox's own pid namespace:
     *    glibc start-up (set_tid_address, robust lists, rseq, arch_prctl),
     *    pthreads (futex), shells (fork via clone, wait4, execve). */
    R("execve", ALLOW), R("execveat", ALLOW), R("fork", ALLOW), R("vfork", ALLOW),
    R("exit", ALLOW), R("exit_group", ALLOW), R("wait4", ALLOW), R("waitid", ALLOW),
    R("getpid", ALLOW), R("getppid", ALLOW), R("gettid", ALLOW), R("set_tid_address", ALLOW),
    R("set_robust_list", ALLOW), R("get_robust_list", ALLOW), R("rseq", ALLOW),
    R("futex", ALLOW), R("futex_waitv", ALLOW), R("futex_wake", ALLOW),
    R("futex_wait", ALLOW), R("futex_requeue", ALLOW),
    R("arch_prctl", ALLOW), R("prctl", ALLOW), R("restart_syscall", ALLOW),
    R("sched_yield", ALLOW), R("sched_getaffinity", ALLOW), R("sched_setaffinity", ALLOW),
    R("sched_getparam", ALLOW), R("sched_setparam", ALLOW), R("sched_getscheduler", ALLOW),
    R("sched_setscheduler", ALLOW), R("sched_get_priority_max", ALLOW),
    R("sched_get_priority_min", ALLOW), R("sched_rr_get_interval", ALLOW),
    R("sched_getattr", ALLOW), R("sched_setattr", ALLOW), R("getpriority", ALLOW),
    R("setpriority", ALLOW), R("ioprio_get", ALLOW), R("ioprio_set", ALLOW), R("getcpu", ALLOW),
    R("getrlimit", ALLOW), R("setrlimit", ALLOW), R("prlimit64", ALLOW),
    R("getrusage", ALLOW), R("times", ALLOW),
    R("pidfd_open", ALLOW), R("pidfd_send_signal", ALLOW),

    /* -- clone: threads and fork yes, new namespaces no. The allow covers
     *    flags without any namespace bit; one refusal per bit covers the
     *    rest exactly. clone3 passes its flags in memory a filter cannot
     *    read, so it reports ENOSYS and glibc falls back to clone. */
    R1("clone", ALLOW, ARG_MASK(0, CLONE_NS_FLAGS, 0)),
    R1("clone", EPERM_, ARG_MASK(0, CLONE_NEWNS, CLONE_NEWNS)),
    R1("clone", EPERM_, ARG_MASK(0, CLONE_NEWCGROUP, CLONE_NEWCGROUP)),
    R1("clone", EPERM_, ARG_MASK(0, CLONE_NEWUTS, CLONE_NEWUTS)),
    R1("clone", EPERM_, ARG_MASK(0, CLONE_NEWIPC, CLONE_NEWIPC)),
    R1("clone", EPERM_, ARG_MASK(0, CLONE_NEWUSER, CLONE_NEWUSER)),
    R1("clone", EPERM_, ARG_MASK(0, CLONE_NEWPID, CLONE_NEWPID)),
    R1("clone", EPERM_, ARG_MASK(0, CLONE_NEWNET, CLONE_NEWNET)),
    R("clone3", ENOSYS_),

    /* -- Signals, timers and clocks (reading clocks; setting them is below). */
    R("rt_sigaction", ALLOW), R("rt_sigprocmask", ALLOW), R("rt_sigreturn", ALLOW),
    R("rt_sigpending", ALLOW), R("rt_sigtimedwait", ALLOW), R("rt_sigsuspend", ALLOW),
    R("rt_sigqueueinfo", ALLOW), R("rt_tgsigqueueinfo", ALLOW), R("sigaltstack", ALLOW),
    R("kill", ALLOW), R("tkill", ALLOW), R("tgkill", ALLOW), R("pause", ALLOW),
    R("nanosleep", ALLOW), R("clock_nanosleep", ALLOW), R("alarm", ALLOW),
    R("getitimer", ALLOW), R("setitimer", ALLOW), R("timer_create", ALLOW),
    R("timer_settime", ALLOW), R("timer_gettime", ALLOW), R("timer_getoverrun", ALLOW),
    R("timer_delete", ALLOW), R("timerfd_create", ALLOW), R("timerfd_settime", ALLOW),
    R("timerfd_gettime", ALLOW), R("clock_gettime", ALLOW), R("clock_getres", ALLOW),
    R("gettimeofday", ALLOW), R("time", ALLOW),
    R("eventfd", ALLOW), R("eventfd2", ALLOW), R("signalfd", ALLOW), R("signalfd4", ALLOW),

    /* -- Waiting for events. */
    R("poll", ALLOW), R("ppoll", ALLOW), R("select", ALLOW), R("pselect6", ALLOW),
    R("epoll_create", ALLOW), R("epoll_create1", ALLOW), R("epoll_ctl", ALLOW),
    R("epoll_wait", ALLOW), R("epoll_pwait", ALLOW), R("epoll_pwait2", ALLOW),

    /* -- Sockets. The network namespace has only lo; unix sockets reach
     *    nothing outside. Address families: unix, inet, inet6, and
     *    netlink-route (getaddrinfo's AI_ADDRCONFIG, getifaddrs). Every
     *    other family answers EAFNOSUPPORT (added in code below the table:
     *    the long tail of rarely used families is where kernel bugs live). */
    R1("socket", ALLOW, ARG_EQ(0, AF_UNIX)),
    R1("socket", ALLOW, ARG_EQ(0, AF_INET)),
    R1("socket", ALLOW, ARG_EQ(0, AF_INET6)),
    R2("socket", ALLOW, ARG_EQ(0, AF_NETLINK), ARG_EQ(2, NETLINK_ROUTE)),
    R2("socket", EPROTONOSUPPORT_, ARG_EQ(0, AF_NETLINK), ARG_GT(2, NETLINK_ROUTE)),
    R("socketpair", ALLOW), R("bind", ALLOW), R("listen", ALLOW), R("connect", ALLOW),
    R("accept", ALLOW), R("accept4", ALLOW), R("getsockname", ALLOW), R("getpeername", ALLOW),
    R("sendto", ALLOW), R("recvfrom", ALLOW), R("sendmsg", ALLOW), R("recvmsg", ALLOW),
    R("sendmmsg", ALLOW), R("recvmmsg", ALLOW), R("shutdown", ALLOW),
    R("setsockopt", ALLOW), R("getsockopt", ALLOW),

    /* -- System V and POSIX IPC: private to the sandbox's IPC namespace. */
    R("shmget", ALLOW), R("shmat", ALLOW), R("shmdt", ALLOW), R("shmctl", ALLOW),
    R("semget", ALLOW), R("semop", ALLOW), R("semtimedop", ALLOW), R("semctl", ALLOW),
    R("msgget", ALLOW), R("msgsnd", ALLOW), R("msgrcv", ALLOW), R("msgctl", ALLOW),
    R("mq_open", ALLOW), R("mq_unlink", ALLOW), R("mq_timedsend", ALLOW),
    R("mq_timedreceive", ALLOW), R("mq_notify", ALLOW), R("mq_getsetattr", ALLOW),

    /* -- Identity. Reading is free; changing ids or capabilities can only
     *    drop privileges once the agent has switched to uid 1000 (no caps
     *    left), and the agent may do its own switch after installing this. */
    R("getuid", ALLOW), R("geteuid", ALLOW), R("getgid", ALLOW), R("getegid", ALLOW),
    R("getresuid", ALLOW), R("getresgid", ALLOW), R("getgroups", ALLOW),
    R("setuid", ALLOW), R("setgid", ALLOW), R("setreuid", ALLOW), R("setregid", ALLOW),
    R("setresuid", ALLOW), R("setresgid", ALLOW), R("setgroups", ALLOW),
    R("setfsuid", ALLOW), R("setfsgid", ALLOW), R("capget", ALLOW), R("capset", ALLOW),
    R("setsid", ALLOW), R("getsid", ALLOW), R("setpgid", ALLOW), R("getpgid", ALLOW),
    R("getpgrp", ALLOW),

    /* -- Facts about the machine, and restricting oneself further. */
    R("uname", ALLOW), R("sysinfo", ALLOW), R("getrandom", ALLOW),
    R("seccomp", ALLOW), R("landlock_create_ruleset", ALLOW),
    R("landlock_add_rule", ALLOW), R("landlock_restrict_self", ALLOW),

    /* -- personality: only the default persona (PER_LINUX). Other personas
     *    turn off ASLR or make reads imply exec; the query (0xffffffff) is
     *    refused too, which no common program minds. */
    R1("personality", ALLOW, ARG_EQ(0, 0)),
    R1("personality", EPERM_, ARG_GT(0, 0)),

    /* -- Mounts, namespaces and roots: the sandbox's shape is fixed by the
     *    host and the agent before this filter goes on. */
    R("mount", EPERM_), R("umount2", EPERM_), R("pivot_root", EPERM_), R("chroot", EPERM_),
    R("unshare", EPERM_), R("setns", EPERM_), R("fsopen", EPERM_), R("fsconfig", EPERM_),
    R("fsmount", EPERM_), R("fspick", EPERM_), R("open_tree", EPERM_),
    R("move_mount", EPERM_), R("mount_setattr", EPERM_),

    /* -- The kernel itself: modules, kexec, BPF, perf, keyrings, swap,
     *    reboot, accounting, quotas. Not for functions; EPERM is what an
     *    unprivileged caller would see anyway. */
    R("init_module", EPERM_), R("finit_module", EPERM_), R("delete_module", EPERM_),
    R("kexec_load", EPERM_), R("kexec_file_load", EPERM_), R("bpf", EPERM_),
    R("perf_event_open", EPERM_), R("keyctl", EPERM_), R("add_key", EPERM_),
    R("request_key", EPERM_), R("swapon", EPERM_), R("swapoff", EPERM_),
    R("reboot", EPERM_), R("acct", EPERM_), R("quotactl", EPERM_), R("quotactl_fd", EPERM_),
    R("syslog", EPERM_), R("vhangup", EPERM_), R("lookup_dcookie", EPERM_),
    R("fanotify_init", EPERM_), R("sethostname", EPERM_), R("setdomainname", EPERM_),
    R("mknod", EPERM_), R("mknodat", EPERM_), R("iopl", EPERM_), R("ioperm", EPERM_),
    R("modify_ldt", EPERM_),

    /* -- Time is the host's: setting clocks is refused. */
    R("clock_settime", EPERM_), R("settimeofday", EPERM_), R("adjtimex", EPERM_),
    R("clock_adjtime", EPERM_),

    /* -- Reaching into other processes or around path checks: ptrace and
     *    its relatives, file handles (open_by_handle_at escapes mounts). */
    R("ptrace", EPERM_), R("process_vm_readv", EPERM_), R("process_vm_writev", EPERM_),
    R("kcmp", EPERM_), R("pidfd_getfd", EPERM_), R("process_madvise", EPERM_),
    R("process_mrelease", EPERM_), R("migrate_pages", EPERM_), R("move_pages", EPERM_),
    R("name_to_handle_at", EPERM_), R("open_by_handle_at", EPERM_),

    /* -- Large attack surface, rarely needed; callers fall back (libuv,
     *    liburing users and userfaultfd users all check for errors). */
    R("io_uring_setup", EPERM_), R("io_uring_enter", EPERM_), R("io_uring_register", EPERM_),
    R("userfaultfd", EPERM_), R("memfd_secret", EPERM_),
};
/* clang-format on */

/* Families socket(2) may use; every other one answers EAFNOSUPPORT. */
static const int allowed_families[] = {AF_UNIX, AF_INET, AF_INET6, AF_NETLINK};

static bool family_allowed(int fam)
{
    for (size_t i = 0; i < ARRAY_SIZE(allowed_families); i++)
        if (allowed_families[i] == fam)
            return true;
    return false;
}

static int add_rule(scmp_filter_ctx ctx, const struct rule *r, struct ember_error *err)
{
    int nr = seccomp_syscall_resolve_name(r->name);
    if (nr == __NR_SCMP_ERROR) {
        /* Newer than this libseccomp: leave it to the default action. */
        log_debug("container: seccomp: libseccomp does not know %s; skipped", r->name);
        return 0;
    }
    int ret = seccomp_rule_add_array(ctx, r->action, nr, r->n_args, r->args);
    if (ret < 0)
        return ember_error_sys(err, ret, "seccomp: rule for %s", r->name);
    return 0;
}

static int add_family_refusals(scmp_filter_ctx ctx, struct ember_error *err)
{
    for (int fam = 0; fam < AF_MAX; fam++) {
        if (family_allowed(fam))
            continue;
        struct rule r = R1("socket", EAFNOSUPPORT_, ARG_EQ(0, (uint64_t)fam));
        int ret = add_rule(ctx, &r, err);
        if (ret < 0)
            return ret;
    }
    struct rule beyond = R1("socket", EAFNOSUPPORT_, ARG_GE(0, AF_MAX));
    return add_rule(ctx, &beyond, err);
}

/*
 * Two filters, stacked, make the function's profile:
 *
 *   stem  the table above, except that move_mount is allowed: installed by
 *         the spawner just before it execs the agent, so a stem cell runs
 *         under it from its first instruction, and the agent can still
 *         attach the package at LOAD.
 *   load  a handful of instructions refusing move_mount: installed by the
 *         agent at LOAD, after attaching the package and dropping every
 *         capability, before any function code runs.
 *
 * The kernel applies every filter of a process and the strictest answer
 * wins, so stem + load is exactly the table. Why not install the table at
 * LOAD: the kernel compiles a filter when it is installed, ~0.4 us per
 * instruction here, ~230 us for the table's 541, on every cold start; the
 * load filter costs a few microseconds.
 */
int container__seccomp_build(enum container_seccomp_filter which, void **bpf, size_t *len,
                             struct ember_error *err)
{
    cleanup_close int mfd = -1;
    cleanup_free void *prog = NULL;
    scmp_filter_ctx ctx = seccomp_init(which == CONTAINER_SECCOMP_LOAD ? SCMP_ACT_ALLOW
                                                                       : SCMP_ACT_KILL_PROCESS);
    if (!ctx)
        return ember_error_set(err, -ENOMEM, "seccomp: seccomp_init failed");
    int ret = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
    if (ret < 0) {
        ember_error_sys(err, ret, "seccomp: set bad-arch action");
        goto err_ctx;
    }
    /* A binary tree of syscall numbers instead of a linear scan: ~8
     * comparisons per syscall rather than ~300. Optional (libseccomp 2.5+). */
    seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);

    if (which == CONTAINER_SECCOMP_LOAD) {
        struct rule close_it = R("move_mount", EPERM_);
        if ((ret = add_rule(ctx, &close_it, err)) < 0)
            goto err_ctx;
    } else {
        for (size_t i = 0; i < ARRAY_SIZE(profile); i++) {
            struct rule r = profile[i];
            if (which == CONTAINER_SECCOMP_STEM && strcmp(r.name, "move_mount") == 0)
                r.action = ALLOW; /* the load filter takes it away again */
            if ((ret = add_rule(ctx, &r, err)) < 0)
                goto err_ctx;
        }
        if ((ret = add_family_refusals(ctx, err)) < 0)
            goto err_ctx;
    }

    /* libseccomp writes BPF only to an fd: export into a memfd and read it
     * back, so the agent gets plain bytes at LOAD. */
    mfd = memfd_create("ember-seccomp", MFD_CLOEXEC);
    if (mfd < 0) {
        ret = ember_error_sys(err, -errno, "seccomp: memfd_create");
        goto err_ctx;
    }
    if ((ret = seccomp_export_bpf(ctx, mfd)) < 0) {
        ember_error_sys(err, ret, "seccomp: seccomp_export_bpf");
        goto err_ctx;
    }
    struct stat st;
    if (fstat(mfd, &st) < 0) {
        ret = ember_error_sys(err, -errno, "seccomp: fstat memfd");
        goto err_ctx;
    }
    /* struct sock_filter is 8 bytes; the kernel takes at most 4096 of them. */
    if (st.st_size <= 0 || st.st_size % 8 != 0 || st.st_size > 4096 * 8) {
        ret = ember_error_set(err, -E2BIG, "seccomp: exported program has %lld bytes",
                              (long long)st.st_size);
        goto err_ctx;
    }
    prog = malloc((size_t)st.st_size);
    if (!prog) {
        ret = ember_error_set(err, -ENOMEM, "seccomp: out of memory");
        goto err_ctx;
    }
    ssize_t n = pread(mfd, prog, (size_t)st.st_size, 0);
    if (n != st.st_size) {
        ret = ember_error_sys(err, n < 0 ? -errno : -EIO, "seccomp: read back BPF");
        goto err_ctx;
    }
    seccomp_release(ctx);
    *len = (size_t)st.st_size;
    *bpf = steal_pointer(&prog);
    return 0;

err_ctx:
    seccomp_release(ctx);
    return ret;
}
