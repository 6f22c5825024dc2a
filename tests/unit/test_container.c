/* test_container.c - the container backend's host side, with real
 * namespaces, cgroups and mounts.
 *
 * This file is two programs. Built normally it is the Criterion suite.
 * Built with -DCONTAINER_PROBE (the suite does that itself, with the system
 * cc, into a temp dir) it is the probe: the program a test sandbox runs
 * instead of ember-agent. The probe writes "key=value" lines about what it
 * sees to fd 3, then obeys commands the test sends (attach a package mount,
 * install the seccomp filter, switch to uid 1000, allocate memory).
 *
 * Needs root, user namespaces and cgroup controllers; skips otherwise.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

/* Commands from the test to the probe: struct probe_cmd, then len bytes,
 * an fd as SCM_RIGHTS on the same sendmsg for PROBE_MOUNT. */
enum { PROBE_MOUNT = 1, PROBE_SECCOMP = 2, PROBE_BECOME = 3, PROBE_ALLOC = 4, PROBE_EXIT = 5 };
struct probe_cmd {
    unsigned type;
    unsigned len;
};

#ifdef CONTAINER_PROBE
/* ======================================================================= */
/*  The probe (runs inside the sandbox)                                    */
/* ======================================================================= */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/filter.h>
#include <linux/netlink.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHAN 3

static void say(const char *key, const char *fmt, ...)
{
    char val[4096], line[4200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(val, sizeof(val), fmt, ap);
    va_end(ap);
    for (char *p = val; *p; p++)
        if (*p == '\n')
            *p = ';';
    int n = snprintf(line, sizeof(line), "%s=%s\n", key, val);
    if (write(CHAN, line, (size_t)n) < 0)
        _exit(2);
}

static const char *err_or_ok(int ret)
{
    return ret < 0 ? strerrorname_np(errno) : "ok";
}

static void slurp(const char *path, char *buf, size_t size)
{
    buf[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(buf, size, "<%s>", strerrorname_np(errno));
        return;
    }
    ssize_t n = read(fd, buf, size - 1);
    buf[n > 0 ? n : 0] = '\0';
    close(fd);
    size_t len = strlen(buf);
    while (len && buf[len - 1] == '\n')
        buf[--len] = '\0';
}

static void status_field(const char *field, char *out, size_t size)
{
    char buf[4096];
    slurp("/proc/self/status", buf, sizeof(buf));
    out[0] = '\0';
    char *p = strstr(buf, field);
    if (!p)
        return;
    p += strlen(field);
    while (*p == ':' || *p == '\t' || *p == ' ')
        p++;
    size_t n = strcspn(p, "\n");
    snprintf(out, size, "%.*s", (int)n, p);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void listing(const char *dir, char *out, size_t size)
{
    char *names[256];
    int n = 0;
    out[0] = '\0';
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(out, size, "<%s>", strerrorname_np(errno));
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) && n < 256)
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            names[n++] = strdup(de->d_name);
    closedir(d);
    qsort(names, (size_t)n, sizeof(*names), cmp_str);
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        len += (size_t)snprintf(out + len, size - len, "%s%s", i ? "," : "", names[i]);
        free(names[i]);
        if (len >= size)
            break;
    }
}

static void facts(char **argv)
{
    char buf[4096];
    say("argv0", "%s", argv[0]);
    say("uid", "%d", (int)getuid());
    say("gid", "%d", (int)getgid());
    status_field("Groups", buf, sizeof(buf));
    say("groups", "%s", buf);
    status_field("CapEff", buf, sizeof(buf));
    say("cap_eff", "%s", buf);
    status_field("NoNewPrivs", buf, sizeof(buf));
    say("nnp", "%s", buf);
    slurp("/proc/self/uid_map", buf, sizeof(buf));
    say("uid_map", "%s", buf);
    slurp("/proc/self/gid_map", buf, sizeof(buf));
    say("gid_map", "%s", buf);
    slurp("/proc/self/setgroups", buf, sizeof(buf));
    say("setgroups", "%s", buf);
    say("pid", "%d", (int)getpid());
    gethostname(buf, sizeof(buf));
    say("hostname", "%s", buf);
    listing("/", buf, sizeof(buf));
    say("root", "%s", buf);
    listing("/dev", buf, sizeof(buf));
    say("dev", "%s", buf);
    listing("/etc", buf, sizeof(buf));
    say("etc", "%s", buf);
    listing("/fn", buf, sizeof(buf));
    say("fn", "%s", buf);
    listing("/proc/self/fd", buf, sizeof(buf));
    say("fds", "%s", buf);
    slurp("/etc/passwd", buf, sizeof(buf));
    say("passwd", "%s", buf);
    slurp("/etc/hosts", buf, sizeof(buf));
    say("hosts", "%s", buf);
    slurp("/proc/self/cgroup", buf, sizeof(buf));
    say("cgroup", "%s", buf);
    say("shadow", "%s", err_or_ok(access("/etc/shadow", F_OK)));
    struct stat st;
    say("host_root", "%s", err_or_ok(stat("/root", &st)));
    say("write_root", "%s", err_or_ok(open("/probe-file", O_WRONLY | O_CREAT | O_CLOEXEC, 0644)));
    say("write_usr", "%s",
        err_or_ok(open("/usr/probe-file", O_WRONLY | O_CREAT | O_CLOEXEC, 0644)));
    say("write_etc", "%s", err_or_ok(open("/etc/passwd", O_WRONLY | O_CLOEXEC)));
    say("write_tmp", "%s",
        err_or_ok(open("/tmp/probe-file", O_WRONLY | O_CREAT | O_CLOEXEC, 0644)));
    int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    say("write_null", "%s", err_or_ok(fd >= 0 ? (int)write(fd, "x", 1) : -1));
    fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    say("read_urandom", "%s", err_or_ok(fd >= 0 ? (int)read(fd, buf, 16) : -1));
    say("mknod", "%s", err_or_ok(mknod("/tmp/null2", S_IFCHR | 0666, makedev(1, 3))));
    struct statfs sfs;
    statfs("/tmp", &sfs);
    say("tmp_bytes", "%llu", (unsigned long long)sfs.f_blocks * (unsigned long long)sfs.f_bsize);
    fstat(0, &st);
    say("stdin_rdev", "%u:%u", major(st.st_rdev), minor(st.st_rdev));

    struct if_nameindex *ifs = if_nameindex();
    buf[0] = '\0';
    for (size_t i = 0, len = 0; ifs && ifs[i].if_index; i++)
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%s", i ? "," : "", ifs[i].if_name);
    say("ifaces", "%s", buf);
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr = {0};
    strcpy(ifr.ifr_name, "lo");
    ioctl(s, SIOCGIFFLAGS, &ifr);
    say("lo_up", "%d", !!(ifr.ifr_flags & IFF_UP));
    close(s);

    extern char **environ;
    buf[0] = '\0';
    for (size_t i = 0, len = 0; environ[i]; i++)
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%s", i ? "," : "", environ[i]);
    say("env", "%s", buf);
    say("ready", "1");
}

static void *thread_main(void *arg)
{
    return arg;
}

static void run_shell(const char *script)
{
    int p[2];
    pipe2(p, O_CLOEXEC);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 1);
        dup2(p[1], 2);
        execl("/bin/sh", "sh", "-c", script, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    char out[2048] = "";
    size_t len = 0;
    ssize_t n;
    while ((n = read(p[0], out + len, sizeof(out) - 1 - len)) > 0)
        len += (size_t)n;
    out[len] = '\0';
    close(p[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    say("sh_out", "%s", out);
    say("sh_status", "%d", status);
}

static void seccomp_checks(const void *bpf, unsigned len)
{
    struct sock_fprog prog = {.len = (unsigned short)(len / 8), .filter = (void *)bpf};
    say("nnp_set", "%s", err_or_ok(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)));
    say("seccomp_install", "%s",
        err_or_ok((int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)));

    say("sc_unshare", "%s", err_or_ok(unshare(CLONE_NEWUSER)));
    say("sc_mount", "%s", err_or_ok(mount("none", "/tmp", "tmpfs", 0, NULL)));
    say("sc_clone_newnet", "%s",
        err_or_ok((int)syscall(SYS_clone, CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0)));
    say("sc_clone3", "%s", err_or_ok((int)syscall(SYS_clone3, NULL, 0)));
    say("sc_ptrace", "%s", err_or_ok((int)syscall(SYS_ptrace, 0, 0, 0, 0)));
    say("sc_bpf", "%s", err_or_ok((int)syscall(SYS_bpf, 0, 0, 0)));
    say("sc_keyctl", "%s", err_or_ok((int)syscall(SYS_keyctl, 0, 0, 0, 0, 0)));
    say("sc_io_uring", "%s", err_or_ok((int)syscall(SYS_io_uring_setup, 1, NULL)));
    say("sc_personality_bsd", "%s", err_or_ok(personality(PER_BSD)));
    say("sc_personality_linux", "%s", err_or_ok(personality(PER_LINUX)));
    say("sc_af_packet", "%s", err_or_ok(socket(AF_PACKET, SOCK_RAW, 0)));
    say("sc_af_alg", "%s", err_or_ok(socket(AF_ALG, SOCK_SEQPACKET, 0)));
    say("sc_af_inet", "%s", err_or_ok(socket(AF_INET, SOCK_STREAM, 0)));
    say("sc_af_unix", "%s", err_or_ok(socket(AF_UNIX, SOCK_STREAM, 0)));
    say("sc_netlink_route", "%s", err_or_ok(socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE)));
    say("sc_netlink_audit", "%s", err_or_ok(socket(AF_NETLINK, SOCK_RAW, NETLINK_AUDIT)));

    pthread_t th;
    int ret = pthread_create(&th, NULL, thread_main, NULL);
    if (ret == 0)
        ret = pthread_join(th, NULL);
    say("sc_thread", "%s", ret == 0 ? "ok" : strerrorname_np(ret));
    void *lib = dlopen("libm.so.6", RTLD_NOW);
    say("sc_dlopen", "%s", lib && dlsym(lib, "cos") ? "ok" : dlerror());
    run_shell("echo hello | cat; x=$(echo sub); echo $x; ls / | wc -l >/dev/null; "
              "echo to-stderr >/dev/stderr; sleep 0; exit 3");
}

static void become_function(void)
{
    /* What the agent does at specialization, in a child so the probe keeps
     * its privileges for later commands. */
    int p[2];
    pipe2(p, O_CLOEXEC);
    pid_t pid = fork();
    if (pid == 0) {
        char buf[256];
        int ok = setgroups(0, NULL) == 0 && setresgid(1000, 1000, 1000) == 0 &&
                 setresuid(1000, 1000, 1000) == 0;
        status_field("CapEff", buf, sizeof(buf));
        dprintf(p[1], "b_ok=%d\nb_uid=%d\nb_cap_eff=%s\n", ok, (int)getuid(), buf);
        int fd = open("/tmp/by-1000", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        dprintf(p[1], "b_write_tmp=%s\n", err_or_ok(fd));
        dprintf(p[1], "b_kill_init=%s\n", err_or_ok(kill(1, 0)));
        dprintf(p[1], "b_mount=%s\n", err_or_ok(mount("none", "/tmp", "tmpfs", 0, NULL)));
        _exit(0);
    }
    close(p[1]);
    char out[1024] = "";
    size_t len = 0;
    ssize_t n;
    while ((n = read(p[0], out + len, sizeof(out) - 1 - len)) > 0)
        len += (size_t)n;
    out[len] = '\0';
    close(p[0]);
    waitpid(pid, NULL, 0);
    if (write(CHAN, out, strlen(out)) < 0)
        _exit(2);
}

int main(int argc, char **argv)
{
    (void)argc;
    facts(argv);
    for (;;) {
        struct probe_cmd cmd;
        char cbuf[CMSG_SPACE(sizeof(int))];
        struct iovec iov = {.iov_base = &cmd, .iov_len = sizeof(cmd)};
        struct msghdr msg = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
        ssize_t n = recvmsg(CHAN, &msg, MSG_CMSG_CLOEXEC | MSG_WAITALL);
        if (n != sizeof(cmd))
            return 0;
        int fd = -1;
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        if (c && c->cmsg_type == SCM_RIGHTS)
            memcpy(&fd, CMSG_DATA(c), sizeof(fd));
        char *payload = malloc(cmd.len + 1);
        size_t got = 0;
        while (got < cmd.len && (n = read(CHAN, payload + got, cmd.len - got)) > 0)
            got += (size_t)n;
        payload[got] = '\0';

        switch (cmd.type) {
        case PROBE_MOUNT: {
            char buf[256];
            say("mount", "%s",
                err_or_ok(move_mount(fd, "", AT_FDCWD, "/fn", MOVE_MOUNT_F_EMPTY_PATH)));
            slurp("/fn/hello", buf, sizeof(buf));
            say("fn_hello", "%s", buf);
            listing("/fn", buf, sizeof(buf));
            say("fn_list", "%s", buf);
            say("fn_write", "%s", err_or_ok(open("/fn/new", O_WRONLY | O_CREAT | O_CLOEXEC, 0644)));
            break;
        }
        case PROBE_SECCOMP:
            seccomp_checks(payload, cmd.len);
            break;
        case PROBE_BECOME:
            become_function();
            break;
        case PROBE_ALLOC: {
            size_t mb = strtoul(payload, NULL, 10);
            char *p = malloc(mb << 20);
            for (size_t i = 0; p && i < (mb << 20); i += 4096)
                p[i] = 1;
            say("alloc", "%s", p ? "ok" : "ENOMEM");
            break;
        }
        case PROBE_EXIT:
            return 0;
        }
        free(payload);
        say("done", "%u", cmd.type);
    }
}

#else
/* ======================================================================= */
/*  The suite                                                              */
/* ======================================================================= */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/clock.h"
#include "sandbox/container/container.h"
#include "sandbox/container/container_internal.h"

#define UID_BASE 1000000000u
#define UID_COUNT 65536u

static char work_dir[64]; /* temp dir: the probe, state dirs, a package */
static char probe_path[128];

/* What a test opened, so that .fini cleans up even after a failed assert
 * (otherwise its cgroups would outlive it under a state dir nobody reuses). */
static struct container_host *open_hosts[4];
static struct {
    struct container_host *h;
    struct container_proc *p;
} live[8];

static void track_proc(struct container_host *h, struct container_proc *p, bool on)
{
    for (size_t i = 0; i < sizeof(live) / sizeof(live[0]); i++) {
        if (on && !live[i].p) {
            live[i].h = h;
            live[i].p = p;
            return;
        }
        if (!on && live[i].p == p) {
            live[i].p = NULL;
            return;
        }
    }
}

static void close_host(struct container_host *h)
{
    for (size_t i = 0; i < sizeof(open_hosts) / sizeof(open_hosts[0]); i++)
        if (open_hosts[i] == h)
            open_hosts[i] = NULL;
    container_host_close(h);
}

static struct container_limits limits = {
    .memory_bytes = 64ull << 20,
    .pids_max = 32,
    .cpu_quota_pct = 50,
};

/* ---- setup --------------------------------------------------------------- */

static void rm_rf(const char *path)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", path);
}

/* Build the probe from this very file, once per test process. */
static void build_probe(void)
{
    snprintf(work_dir, sizeof(work_dir), "/tmp/ember-ctr-XXXXXX");
    cr_assert_not_null(mkdtemp(work_dir));
    chmod(work_dir, 0755);
    snprintf(probe_path, sizeof(probe_path), "%s/probe", work_dir);
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "cc -O1 -DCONTAINER_PROBE -o '%s' '%s/tests/unit/test_container.c' -ldl -lpthread",
             probe_path, EMBER_SOURCE_DIR);
    cr_assert_eq(system(cmd), 0, "building the probe failed: %s", cmd);
}

static void make_dir(char *out, size_t size, const char *name)
{
    snprintf(out, size, "%s/%s", work_dir, name);
    mkdir(out, 0755);
}

/* Open a host on a fresh state dir, or skip the test with the reason. */
static struct container_host *open_host(const char *state_name)
{
    if (geteuid() != 0)
        cr_skip_test("needs root (namespaces, uid maps, cgroups)");
    char state[128];
    make_dir(state, sizeof(state), state_name);
    struct sandbox_config cfg = {
        .state_dir = state,
        .agent_path = probe_path,
        .pids_max = 64,
        .tmp_size_mb = 16,
        .cpu_quota_pct = 100,
        .uid_base = UID_BASE,
        .uid_count = UID_COUNT,
    };
    struct ember_error err = {0};
    struct container_host *h = NULL;
    int ret = container_host_open(&cfg, &h, &err);
    if (ret == -ENOTSUP)
        cr_skip_test("container backend unavailable here: %s", err.msg);
    cr_assert_eq(ret, 0, "container_host_open: %s", err.msg);
    for (size_t i = 0; i < sizeof(open_hosts) / sizeof(open_hosts[0]); i++)
        if (!open_hosts[i]) {
            open_hosts[i] = h;
            break;
        }
    return h;
}

static void suite_init(void)
{
    build_probe();
}

static void suite_fini(void)
{
    for (size_t i = 0; i < sizeof(live) / sizeof(live[0]); i++)
        if (live[i].p) {
            container_cgroup_remove(live[i].h, live[i].p->cgroup);
            close(live[i].p->pidfd);
            close(live[i].p->chan_fd);
        }
    for (size_t i = 0; i < sizeof(open_hosts) / sizeof(open_hosts[0]); i++)
        if (open_hosts[i])
            container_host_close(open_hosts[i]);
    rm_rf(work_dir);
}

/* One suite-wide timeout: a per-test .timeout makes libcriterion 2.4 leak 48
 * bytes in its runner under -j2 (seen by LeakSanitizer). */
TestSuite(container, .init = suite_init, .fini = suite_fini, .timeout = 300);

/* ---- talking to the probe ------------------------------------------------ */

struct facts {
    char text[65536];
    size_t len;
};

/* Read lines until "<until>=..." has arrived (or EOF / 10 s). */
static void read_until(int fd, struct facts *f, const char *until)
{
    char want[64];
    int wn = snprintf(want, sizeof(want), "\n%s=", until);
    uint64_t deadline = ember_now_ns() + 10ull * 1000000000ull;
    for (;;) {
        f->text[f->len] = '\0';
        if (strstr(f->text, want) || (strncmp(f->text, want + 1, (size_t)wn - 1) == 0))
            return;
        int left = (int)((deadline - ember_now_ns()) / 1000000);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        cr_assert_gt(left, 0, "probe: no '%s' within 10 s; got:\n%s", until, f->text);
        cr_assert_geq(poll(&p, 1, left), 0);
        ssize_t n = read(fd, f->text + f->len, sizeof(f->text) - 1 - f->len);
        cr_assert_gt(n, 0, "probe: EOF before '%s'; got:\n%s", until, f->text);
        f->len += (size_t)n;
    }
}

/* The value of the last "key=" line, copied into a static buffer. */
static const char *fact(const struct facts *f, const char *key)
{
    static char val[4096];
    char want[64];
    snprintf(want, sizeof(want), "%s=", key);
    const char *found = NULL;
    for (const char *p = f->text; p && *p;) {
        if (strncmp(p, want, strlen(want)) == 0)
            found = p + strlen(want);
        p = strchr(p, '\n');
        p = p ? p + 1 : NULL;
    }
    cr_assert_not_null(found, "probe did not report '%s'; got:\n%s", key, f->text);
    size_t n = strcspn(found, "\n");
    snprintf(val, sizeof(val), "%.*s", (int)n, found);
    return val;
}

#define expect_fact(f, key, want) cr_expect_str_eq(fact((f), (key)), (want), "%s", key)

static void send_cmd(int chan, unsigned type, const void *payload, unsigned len, int fd)
{
    struct probe_cmd cmd = {.type = type, .len = len};
    char cbuf[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {.iov_base = &cmd, .iov_len = sizeof(cmd)};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (fd >= 0) {
        memset(cbuf, 0, sizeof(cbuf));
        msg.msg_control = cbuf;
        msg.msg_controllen = sizeof(cbuf);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(fd));
    }
    cr_assert_eq(sendmsg(chan, &msg, 0), (ssize_t)sizeof(cmd));
    if (len)
        cr_assert_eq(write(chan, payload, len), (ssize_t)len);
}

static void spawn_probe(struct container_host *h, uint64_t id,
                        const struct container_spawn_opts *opts, struct container_proc *p,
                        struct facts *f)
{
    struct ember_error err = {0};
    int ret = container_spawn(h, id, &limits, opts, p, &err);
    cr_assert_eq(ret, 0, "container_spawn: %s", err.msg);
    track_proc(h, p, true);
    if (f) {
        f->len = 0;
        read_until(p->chan_fd, f, "ready");
    }
}

/* Kill, reap, remove the cgroup; checks that nothing is left. */
static void destroy(struct container_host *h, struct container_proc *p)
{
    track_proc(h, p, false);
    pidfd_send_signal(p->pidfd, SIGKILL, NULL, 0);
    siginfo_t si;
    cr_expect_eq(waitid(P_PIDFD, (id_t)p->pidfd, &si, WEXITED), 0);
    cr_expect_eq(container_cgroup_remove(h, p->cgroup), 0);
    close(p->pidfd);
    close(p->chan_fd);
}

/* Path of a cgroup file in the hierarchy carrying @ctrl. */
static void cg_path(struct container_host *h, enum cg_ctrl ctrl, const char *group,
                    const char *file, char *out, size_t size)
{
    struct cg_hier *hi = &h->cg.hier[h->cg.of[ctrl]];
    snprintf(out, size, "%s/%s/%s%s%s", hi->mount, h->cg.rel, group, file ? "/" : "",
             file ? file : "");
}

static void read_text(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "re");
    cr_assert_not_null(f, "open %s: %s", path, strerror(errno));
    size_t n = fread(buf, 1, size - 1, f);
    buf[n] = '\0';
    fclose(f);
    while (n && buf[n - 1] == '\n')
        buf[--n] = '\0';
}

static bool group_exists(struct container_host *h, const char *group)
{
    for (int c = 0; c < CG_NCTRL; c++) {
        char path[512];
        cg_path(h, (enum cg_ctrl)c, group, NULL, path, sizeof(path));
        if (access(path, F_OK) == 0)
            return true;
    }
    return false;
}

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- tests ------------------------------------------------------------- */

Test(container, seccomp_program_is_built)
{
    struct container_host *h = open_host("state-bpf");
    size_t len = 0;
    const void *bpf = container_seccomp_bpf(h, &len);
    cr_assert_not_null(bpf);
    /* What LOAD carries is the small filter stacked on the stem one. */
    cr_expect_gt(len, 0);
    cr_expect_lt(len, 8 * 32, "the LOAD filter is meant to be tiny: %zu bytes", len);
    cr_expect_eq(len % 8, 0);
    void *stem;
    size_t stem_len;
    struct ember_error err = {0};
    cr_assert_eq(container__seccomp_build(CONTAINER_SECCOMP_STEM, &stem, &stem_len, &err), 0,
                 "%s", err.msg);
    cr_expect_gt(stem_len, 8 * 50, "suspiciously small: %zu bytes", stem_len);
    cr_expect_leq(stem_len, 4096 * 8);
    free(stem);
    close_host(h);
}

Test(container, spawn_shapes_the_sandbox)
{
    struct container_host *h = open_host("state-shape");
    struct container_proc p;
    struct facts f;
    spawn_probe(h, 1, NULL, &p, &f);

    /* Identity: ns root, mapped to two host ids of the range, no host groups. */
    expect_fact(&f, "argv0", "ember-agent");
    expect_fact(&f, "uid", "0");
    expect_fact(&f, "gid", "0");
    expect_fact(&f, "groups", "");
    expect_fact(&f, "setgroups", "allow");
    uint32_t root_id = p.host_uid - 1;
    char want[128];
    snprintf(want, sizeof(want), "0 %u 1;1000 %u 1", root_id, p.host_uid);
    char got[256];
    snprintf(got, sizeof(got), "%s", fact(&f, "uid_map"));
    /* /proc prints the map in columns; squeeze the blanks. */
    char squeezed[256];
    size_t j = 0;
    for (size_t i = 0; got[i] && j < sizeof(squeezed) - 1; i++)
        if (got[i] != ' ' || (j && squeezed[j - 1] != ' ' && squeezed[j - 1] != ';'))
            squeezed[j++] = got[i];
    squeezed[j] = '\0';
    cr_expect_str_eq(squeezed, want);
    cr_expect(p.host_uid >= UID_BASE && p.host_uid < UID_BASE + UID_COUNT);
    cr_expect_eq((p.host_uid - UID_BASE) % 2, 1);
    /* Every capability this kernel knows, in its own user namespace. */
    char last[16], caps[32];
    read_text("/proc/sys/kernel/cap_last_cap", last, sizeof(last));
    snprintf(caps, sizeof(caps), "%016llx", (1ull << (atoi(last) + 1)) - 1);
    cr_expect_str_eq(fact(&f, "cap_eff"), caps);
    /* The agent starts under the stem filter, which needs no_new_privs. */
    expect_fact(&f, "nnp", "1");

    /* The host sees the sandbox as the pair's first id. */
    char path[64], status[4096];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)p.pid);
    read_text(path, status, sizeof(status));
    unsigned ruid, euid;
    const char *u = strstr(status, "\nUid:");
    cr_assert_not_null(u);
    cr_assert_eq(sscanf(u, "\nUid: %u %u", &ruid, &euid), 2);
    cr_expect_eq(ruid, root_id);
    cr_expect(ruid >= UID_BASE && ruid < UID_BASE + UID_COUNT);

    /* Namespaces. */
    expect_fact(&f, "pid", "1");
    expect_fact(&f, "hostname", "ember");
    expect_fact(&f, "ifaces", "lo");
    expect_fact(&f, "lo_up", "1");
    /* Its cgroup namespace is rooted at its own group: every hierarchy's
     * line reads "/" (v1: one line per hierarchy; v2: "0::/"). */
    char cg[4096];
    snprintf(cg, sizeof(cg), "%s;", fact(&f, "cgroup"));
    for (char *line = cg, *end; (end = strchr(line, ';')); line = end + 1) {
        *end = '\0';
        size_t n = strlen(line);
        cr_expect(n >= 2 && strcmp(line + n - 2, ":/") == 0, "cgroup line '%s'", line);
    }

    /* The root: minimal, read-only but /tmp. */
    const char *root = fact(&f, "root");
    cr_expect(strstr(root, "dev,etc,fn") && strstr(root, "proc") && strstr(root, "tmp,usr"),
              "root: %s", root);
    cr_expect(strstr(root, "bin") && strstr(root, "lib"), "root: %s", root);
    cr_expect(!strstr(root, "root") && !strstr(root, "home") && !strstr(root, "var") &&
                  !strstr(root, "work"),
              "root: %s", root);
    expect_fact(&f, "dev", "fd,full,null,random,stderr,stdin,stdout,urandom,zero");
    expect_fact(&f, "etc", "group,hosts,passwd");
    expect_fact(&f, "fn", "");
    expect_fact(&f, "shadow", "ENOENT");
    expect_fact(&f, "host_root", "ENOENT");
    expect_fact(&f, "write_root", "EROFS");
    expect_fact(&f, "write_usr", "EROFS");
    expect_fact(&f, "write_etc", "EROFS");
    expect_fact(&f, "write_tmp", "ok");
    expect_fact(&f, "write_null", "ok");
    expect_fact(&f, "read_urandom", "ok");
    expect_fact(&f, "mknod", "EPERM");
    expect_fact(&f, "tmp_bytes", "16777216");
    cr_expect(strstr(fact(&f, "passwd"), "ember:x:1000:1000:") != NULL);
    cr_expect(strstr(fact(&f, "hosts"), "127.0.0.1\tlocalhost") != NULL);

    /* Process hygiene: fds 0-3 only (+ the one listing), /dev/null stdio,
     * a clean environment. */
    expect_fact(&f, "fds", "0,1,2,3,4");
    expect_fact(&f, "stdin_rdev", "1:3");
    expect_fact(&f, "env", "PATH=/usr/bin:/bin,HOME=/tmp,LANG=C.UTF-8");

    cr_expect_eq(container_pidfd_pid(p.pidfd), p.pid);
    destroy(h, &p);
    cr_expect_not(group_exists(h, "sb-1"));
    close_host(h);
}

/* A zygote's FORKED may carry any descriptor: one that is not a pidfd is
 * refused, and a real pidfd after it still gives its pid. */
Test(container, pidfd_pid_refuses_what_is_not_a_pidfd)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    cr_expect_eq(container_pidfd_pid(p[0]), -EBADF);
    pid_t c = fork();
    cr_assert_geq(c, 0);
    if (c == 0) {
        pause();
        _exit(0);
    }
    int fd = pidfd_open(c, 0);
    cr_assert_geq(fd, 0);
    cr_expect_eq(container_pidfd_pid(fd), c);
    kill(c, SIGKILL);
    waitpid(c, NULL, 0);
    close(fd);
    close(p[0]);
    close(p[1]);
}

Test(container, cgroup_limits_stats_and_remove)
{
    struct container_host *h = open_host("state-cg");
    struct container_proc p;
    struct facts f;
    spawn_probe(h, 7, NULL, &p, &f);
    cr_expect_str_eq(p.cgroup, "sb-7");

    char path[512], buf[256], pid[16];
    snprintf(pid, sizeof(pid), "%d", (int)p.pid);
    for (int c = 0; c < CG_NCTRL; c++) {
        cg_path(h, (enum cg_ctrl)c, "sb-7", "cgroup.procs", path, sizeof(path));
        read_text(path, buf, sizeof(buf));
        cr_expect_str_eq(buf, pid, "%s", path);
    }
    bool v2 = h->cg.hier[h->cg.of[CG_MEMORY]].version == 2;
    cg_path(h, CG_MEMORY, "sb-7", v2 ? "memory.max" : "memory.limit_in_bytes", path, sizeof(path));
    read_text(path, buf, sizeof(buf));
    cr_expect_str_eq(buf, "67108864");
    if (!v2 && h->cg.memsw) {
        cg_path(h, CG_MEMORY, "sb-7", "memory.memsw.limit_in_bytes", path, sizeof(path));
        read_text(path, buf, sizeof(buf));
        cr_expect_str_eq(buf, "67108864", "swap off: memsw == limit");
    }
    cg_path(h, CG_PIDS, "sb-7", "pids.max", path, sizeof(path));
    read_text(path, buf, sizeof(buf));
    cr_expect_str_eq(buf, "32");
    v2 = h->cg.hier[h->cg.of[CG_CPU]].version == 2;
    cg_path(h, CG_CPU, "sb-7", v2 ? "cpu.max" : "cpu.cfs_quota_us", path, sizeof(path));
    read_text(path, buf, sizeof(buf));
    cr_expect_str_eq(buf, v2 ? "50000 100000" : "50000");

    struct sandbox_stats st;
    cr_assert_eq(container_cgroup_stats(h, "sb-7", &st), 0);
    cr_expect_eq(st.memory_limit, 64ull << 20);
    cr_expect_gt(st.memory_current, 0);
    cr_expect_eq(st.oom_kills, 0);

    /* Specialization raises the limits, then lowers them again. */
    struct ember_error err = {0};
    struct container_limits bigger = {
        .memory_bytes = 256ull << 20, .pids_max = 100, .cpu_quota_pct = 200};
    cr_assert_eq(container_cgroup_set(h, "sb-7", &bigger, &err), 0, "%s", err.msg);
    cr_assert_eq(container_cgroup_stats(h, "sb-7", &st), 0);
    cr_expect_eq(st.memory_limit, 256ull << 20);
    cr_assert_eq(container_cgroup_set(h, "sb-7", &limits, &err), 0, "%s", err.msg);
    cr_assert_eq(container_cgroup_stats(h, "sb-7", &st), 0);
    cr_expect_eq(st.memory_limit, 64ull << 20);
    struct container_limits unlimited = {0};
    cr_assert_eq(container_cgroup_set(h, "sb-7", &unlimited, &err), 0, "%s", err.msg);
    cr_assert_eq(container_cgroup_stats(h, "sb-7", &st), 0);
    cr_expect_eq(st.memory_limit, UINT64_MAX);

    /* Remove kills what is left (the probe is alive) and leaves nothing. */
    track_proc(h, &p, false);
    cr_expect_eq(container_cgroup_remove(h, "sb-7"), 0);
    cr_expect_not(group_exists(h, "sb-7"));
    siginfo_t si;
    cr_expect_eq(waitid(P_PIDFD, (id_t)p.pidfd, &si, WEXITED), 0);
    cr_expect_eq(si.si_status, SIGKILL);
    close(p.pidfd);
    close(p.chan_fd);

    cr_expect_eq(container_cgroup_stats(h, "../x", &st), -EINVAL);
    cr_expect_eq(container_cgroup_remove(h, "sb-7"), 0, "removing twice is fine");
    close_host(h);
}

Test(container, oom_kill_is_counted)
{
    struct container_host *h = open_host("state-oom");
    /* Without swap accounting a host with swap pages the probe out instead
     * of killing it. */
    bool v1 = h->cg.hier[h->cg.of[CG_MEMORY]].version == 1;
    if (!(v1 ? h->cg.memsw : h->cg.v2_swap)) {
        char swaps[4096];
        read_text("/proc/swaps", swaps, sizeof(swaps));
        if (strchr(swaps, '\n')) {
            close_host(h);
            cr_skip_test("swap is on without swap accounting: no OOM kill to count");
        }
    }
    struct container_proc p;
    struct facts f;
    struct container_limits small = {
        .memory_bytes = 32ull << 20, .pids_max = 16, .cpu_quota_pct = 100};
    struct ember_error err = {0};
    cr_assert_eq(container_spawn(h, 3, &small, NULL, &p, &err), 0, "%s", err.msg);
    track_proc(h, &p, true);
    f.len = 0;
    read_until(p.chan_fd, &f, "ready");
    send_cmd(p.chan_fd, PROBE_ALLOC, "128", 3, -1);
    siginfo_t si;
    cr_assert_eq(waitid(P_PIDFD, (id_t)p.pidfd, &si, WEXITED), 0);
    cr_expect_eq(si.si_code, CLD_KILLED);
    cr_expect_eq(si.si_status, SIGKILL);
    struct sandbox_stats st;
    cr_assert_eq(container_cgroup_stats(h, "sb-3", &st), 0);
    cr_expect_geq(st.oom_kills, 1);
    track_proc(h, &p, false);
    cr_expect_eq(container_cgroup_remove(h, "sb-3"), 0);
    close(p.pidfd);
    close(p.chan_fd);
    close_host(h);
}

Test(container, package_mount_attaches_read_only)
{
    struct container_host *h = open_host("state-pkg");
    char pkg[128], file[160];
    make_dir(pkg, sizeof(pkg), "package");
    snprintf(file, sizeof(file), "%s/hello", pkg);
    FILE *fp = fopen(file, "we");
    cr_assert_not_null(fp);
    fputs("hi from the package\n", fp);
    fclose(fp);

    struct container_proc p;
    struct facts f;
    spawn_probe(h, 11, NULL, &p, &f);
    struct ember_error err = {0};
    int mfd = container_package_mount(pkg, &err);
    cr_assert_geq(mfd, 0, "container_package_mount: %s", err.msg);
    send_cmd(p.chan_fd, PROBE_MOUNT, NULL, 0, mfd);
    close(mfd);
    read_until(p.chan_fd, &f, "done");
    expect_fact(&f, "mount", "ok");
    expect_fact(&f, "fn_hello", "hi from the package");
    expect_fact(&f, "fn_list", "hello");
    expect_fact(&f, "fn_write", "EROFS");
    destroy(h, &p);

    cr_expect_lt(container_package_mount("/nonexistent/pkg", &err), 0);
    cr_expect(strstr(err.msg, "/nonexistent/pkg") != NULL, "%s", err.msg);
    close_host(h);
}

Test(container, seccomp_profile_runs_a_shell_and_refuses_the_rest)
{
    struct container_host *h = open_host("state-sc");
    struct container_proc p;
    struct facts f;
    spawn_probe(h, 12, NULL, &p, &f);
    size_t len;
    const void *bpf = container_seccomp_bpf(h, &len);
    send_cmd(p.chan_fd, PROBE_SECCOMP, bpf, (unsigned)len, -1);
    read_until(p.chan_fd, &f, "done");
    expect_fact(&f, "nnp_set", "ok");
    expect_fact(&f, "seccomp_install", "ok");
    expect_fact(&f, "sc_unshare", "EPERM");
    expect_fact(&f, "sc_mount", "EPERM");
    expect_fact(&f, "sc_clone_newnet", "EPERM");
    expect_fact(&f, "sc_clone3", "ENOSYS");
    expect_fact(&f, "sc_ptrace", "EPERM");
    expect_fact(&f, "sc_bpf", "EPERM");
    expect_fact(&f, "sc_keyctl", "EPERM");
    expect_fact(&f, "sc_io_uring", "EPERM");
    expect_fact(&f, "sc_personality_bsd", "EPERM");
    expect_fact(&f, "sc_personality_linux", "ok");
    expect_fact(&f, "sc_af_packet", "EAFNOSUPPORT");
    expect_fact(&f, "sc_af_alg", "EAFNOSUPPORT");
    expect_fact(&f, "sc_af_inet", "ok");
    expect_fact(&f, "sc_af_unix", "ok");
    expect_fact(&f, "sc_netlink_route", "ok");
    expect_fact(&f, "sc_netlink_audit", "EPROTONOSUPPORT");
    expect_fact(&f, "sc_thread", "ok");
    expect_fact(&f, "sc_dlopen", "ok");
    expect_fact(&f, "sh_out", "hello;sub;to-stderr;");
    expect_fact(&f, "sh_status", "768"); /* exit 3 */

    /* Still alive: the filter killed nothing. */
    siginfo_t si = {0};
    cr_expect_eq(waitid(P_PIDFD, (id_t)p.pidfd, &si, WEXITED | WNOHANG | WNOWAIT), 0);
    cr_expect_eq(si.si_pid, 0);
    destroy(h, &p);
    close_host(h);
}

Test(container, function_identity_has_no_privileges)
{
    struct container_host *h = open_host("state-become");
    struct container_proc p;
    struct facts f;
    spawn_probe(h, 13, NULL, &p, &f);
    send_cmd(p.chan_fd, PROBE_BECOME, NULL, 0, -1);
    read_until(p.chan_fd, &f, "done");
    expect_fact(&f, "b_ok", "1");
    expect_fact(&f, "b_uid", "1000");
    expect_fact(&f, "b_cap_eff", "0000000000000000");
    expect_fact(&f, "b_write_tmp", "ok");
    expect_fact(&f, "b_kill_init", "EPERM");
    expect_fact(&f, "b_mount", "EPERM");
    destroy(h, &p);
    close_host(h);
}

Test(container, ro_binds_and_dev_kvm)
{
    struct container_host *h = open_host("state-binds");
    char dir[128], file[160];
    make_dir(dir, sizeof(dir), "snapshots");
    snprintf(file, sizeof(file), "%s/snap", dir);
    FILE *fp = fopen(file, "we");
    cr_assert_not_null(fp);
    fclose(fp);
    /* The state dir is root-only: the child clones it while still host root. */
    chmod(work_dir, 0700);
    bool kvm = access("/dev/kvm", F_OK) == 0;
    struct container_spawn_opts opts = {.dev_kvm = kvm, .ro_binds = {dir, NULL}};
    struct container_proc p;
    struct facts f;
    struct ember_error err = {0};
    int ret = container_spawn(h, 14, &limits, &opts, &p, &err);
    chmod(work_dir, 0755);
    cr_assert_eq(ret, 0, "container_spawn: %s", err.msg);
    track_proc(h, &p, true);
    f.len = 0;
    read_until(p.chan_fd, &f, "ready");
    const char *dev = fact(&f, "dev");
    cr_expect_eq(strstr(dev, "kvm") != NULL, kvm, "dev: %s", dev);
    destroy(h, &p);

    /* Bad binds are refused before anything is created. */
    const char *bad[] = {"relative", "/usr/share", "/a/../b", "/", "/nonexistent-x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct container_spawn_opts o = {.ro_binds = {bad[i], NULL}};
        ret = container_spawn(h, 15, &limits, &o, &p, &err);
        cr_expect_lt(ret, 0, "%s accepted", bad[i]);
    }
    cr_expect_not(group_exists(h, "sb-15"));
    close_host(h);
}

Test(container, spawn_errors_name_the_step)
{
    struct container_host *h = open_host("state-err");
    struct container_spawn_opts opts = {.exec_path = "/nonexistent/agent"};
    struct container_proc p;
    struct ember_error err = {0};
    cr_expect_eq(container_spawn(h, 21, &limits, &opts, &p, &err), -ENOENT);
    cr_expect(strstr(err.msg, "/nonexistent/agent") != NULL, "%s", err.msg);

    /* Not executable: fails at execveat, inside, after all the setup. */
    char path[160];
    snprintf(path, sizeof(path), "%s/not-exec", work_dir);
    FILE *fp = fopen(path, "we");
    cr_assert_not_null(fp);
    fclose(fp);
    opts.exec_path = path;
    cr_expect_eq(container_spawn(h, 22, &limits, &opts, &p, &err), -EACCES);
    cr_expect(strstr(err.msg, "execveat") != NULL, "%s", err.msg);
    cr_expect_not(group_exists(h, "sb-22"));
    close_host(h);
}

Test(container, host_open_removes_only_its_own_leftovers)
{
    /* "Previous run" of state A and a live daemon on state B. */
    struct container_host *a = open_host("state-a");
    struct container_host *b = open_host("state-b");
    cr_assert_str_neq(a->cg.rel, b->cg.rel);
    struct container_proc pa, pb;
    struct facts f;
    spawn_probe(a, 31, NULL, &pa, &f);
    spawn_probe(b, 31, NULL, &pb, &f);
    /* A crashes: its host state is gone, its sandbox and cgroup are not. */
    close_host(a);
    cr_assert(group_exists(b, "sb-31"));

    a = open_host("state-a");
    siginfo_t si;
    cr_expect_eq(waitid(P_PIDFD, (id_t)pa.pidfd, &si, WEXITED), 0);
    cr_expect_eq(si.si_status, SIGKILL, "the leftover sandbox was killed");
    cr_expect_not(group_exists(a, "sb-31"));
    memset(&si, 0, sizeof(si));
    cr_expect_eq(waitid(P_PIDFD, (id_t)pb.pidfd, &si, WEXITED | WNOHANG | WNOWAIT), 0);
    cr_expect_eq(si.si_pid, 0, "the other instance's sandbox is untouched");
    cr_expect(group_exists(b, "sb-31"));

    track_proc(a, &pa, false);
    close(pa.pidfd);
    close(pa.chan_fd);
    destroy(b, &pb);
    close_host(a);
    close_host(b);
}

Test(container, uid_pairs_are_distinct_and_recycled)
{
    struct container_host *h = open_host("state-uids");
    struct container_proc p[4];
    for (int i = 0; i < 4; i++)
        spawn_probe(h, 40 + (uint64_t)i, NULL, &p[i], NULL);
    for (int i = 0; i < 4; i++)
        for (int j = i + 1; j < 4; j++)
            cr_expect_neq(p[i].host_uid, p[j].host_uid);
    for (int i = 0; i < 4; i++)
        destroy(h, &p[i]);
    cr_expect_eq(h->n_owners, 0, "every pair was given back");
    close_host(h);
}

Test(container, adopt_moves_a_process_fast)
{
    struct container_host *h = open_host("state-adopt");
    enum { N = 50 };
    uint64_t total = 0, worst = 0, cpu = 0;
    for (int i = 0; i < N; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            pause();
            _exit(0);
        }
        char name[32];
        snprintf(name, sizeof(name), "inst-%d", i);
        struct ember_error err = {0};
        uint64_t c0 = thread_cpu_ns(), t0 = ember_now_ns();
        int ret = container_cgroup_adopt(h, name, pid, &limits, &err);
        uint64_t dt = ember_now_ns() - t0;
        cpu += thread_cpu_ns() - c0;
        cr_assert_eq(ret, 0, "adopt: %s", err.msg);
        total += dt;
        worst = dt > worst ? dt : worst;
        char path[512], buf[64], want[16];
        cg_path(h, CG_PIDS, name, "cgroup.procs", path, sizeof(path));
        read_text(path, buf, sizeof(buf));
        snprintf(want, sizeof(want), "%d", (int)pid);
        cr_expect_str_eq(buf, want);
        cr_expect_eq(container_cgroup_remove(h, name), 0);
        waitpid(pid, NULL, 0);
        cr_expect_not(group_exists(h, name));
    }
    printf("container_cgroup_adopt over %d: wall mean %.0f us, max %.0f us; cpu mean %.0f us\n", N,
           (double)total / N / 1000.0, (double)worst / 1000.0, (double)cpu / N / 1000.0);
    struct ember_error err = {0};
    cr_expect_lt(container_cgroup_adopt(h, "../escape", getpid(), &limits, &err), 0);
    close_host(h);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Not a timed assertion: prints container_spawn's latency and where it
 * goes, for the report. */
Test(container, spawn_latency)
{
    struct container_host *h = open_host("state-lat");
    enum { N = 200 };
    static uint64_t lat[N], phase[CONTAINER_T_COUNT][N];
    struct container_proc p;
    /* Warm up caches and the slab. */
    for (int i = 0; i < 5; i++) {
        spawn_probe(h, 900 + (uint64_t)i, NULL, &p, NULL);
        destroy(h, &p);
    }
    uint64_t destroy_ns = 0, t_all = ember_now_ns(), cpu = 0;
    for (int i = 0; i < N; i++) {
        struct ember_error err = {0};
        uint64_t t[CONTAINER_T_COUNT] = {0};
        uint64_t c0 = thread_cpu_ns(), t0 = ember_now_ns();
        int ret = container__spawn(h, 1000 + (uint64_t)i, &limits, NULL, &p, t, &err);
        lat[i] = ember_now_ns() - t0;
        cpu += thread_cpu_ns() - c0;
        cr_assert_eq(ret, 0, "spawn %d: %s", i, err.msg);
        track_proc(h, &p, true);
        for (int k = 0; k < CONTAINER_T_COUNT; k++)
            phase[k][i] = t[k];
        uint64_t t1 = ember_now_ns();
        destroy(h, &p);
        destroy_ns += ember_now_ns() - t1;
    }
    double wall = (double)(ember_now_ns() - t_all) / 1e9;
    static const char *const names[] = {"prep", "clone3", "uid/gid maps", "cgroup",
                                        "child setup->exec"};
    qsort(lat, N, sizeof(lat[0]), cmp_u64);
    printf("container_spawn over %d: p50 %.0f us, p90 %.0f us, p99 %.0f us, max %.0f us\n", N,
           lat[N / 2] / 1e3, lat[N * 9 / 10] / 1e3, lat[N * 99 / 100] / 1e3, lat[N - 1] / 1e3);
    for (int k = 0; k < CONTAINER_T_COUNT; k++) {
        qsort(phase[k], N, sizeof(phase[k][0]), cmp_u64);
        printf("  %-18s p50 %6.0f us  p99 %6.0f us\n", names[k], phase[k][N / 2] / 1e3,
               phase[k][N * 99 / 100] / 1e3);
    }
    printf("  spawning thread's cpu: mean %.0f us per spawn\n", (double)cpu / N / 1e3);
    printf("  destroy (kill + reap + cgroup remove): mean %.0f us\n", (double)destroy_ns / N / 1e3);
    printf("  sequential spawn+destroy rate: %.0f/s\n", N / wall);
    close_host(h);
}
#endif
