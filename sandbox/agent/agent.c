/* agent.c - ember-agent's main: the stem cell and the zygote.
 *
 * Started by the container backend as pid 1 of fresh namespaces with the
 * channel on fd 3. As a stem cell it says HELLO and waits for LOAD; once
 * loaded it is a zygote: it serves no calls, it forks an instance per FORK
 * (instance.c) and tells emberd when one dies (EXITED). Between forks it
 * waits in the next instance's cgroup (PARK), so that a child is born in
 * its own group. Being pid 1 it also reaps whatever gets orphaned inside
 * the sandbox. A LOAD with "serve" makes it an instance itself instead (a
 * function's first one).
 *
 * With PREFORK 1 the zygote forks the next instance ahead, as soon as it
 * has parked: the child waits in that group on a private socket, and the
 * next FORK of a child born there hands it its channel instead of
 * forking. fork() and the child's first trip through the scheduler, 45% of
 * a scale-out here, then happen between calls rather than during one.
 *
 * The zygote stays single-threaded so that fork() is safe; it reads the
 * channel, its log pipes (ember_init may leave threads that print) and
 * SIGCHLD with one ppoll().
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "sandbox/agent/agent.h"

enum role {
    ROLE_STEM,
    ROLE_ZYGOTE,
    ROLE_SPOILED, /* a LOAD failed half-way: good for nothing but SHUTDOWN */
};

static enum role role = ROLE_STEM;
static struct agent_fn fn;
static volatile sig_atomic_t child_exited;

/* Instances forked by this zygote; other children (orphans re-parented to
 * pid 1) are reaped without a word. */
static pid_t *kids;
static size_t n_kids, cap_kids;

/* The instance forked ahead (PREFORK), not a kid until a FORK takes it. */
static struct {
    uint32_t want;   /* PREFORK's count: 0 or 1 */
    bool fresh;      /* parked, and no child born in this group yet */
    pid_t pid;       /* 0: none waiting */
    int sock, pidfd; /* the zygote's end of its socket; its pidfd */
    uint64_t born_ns;
} ahead = {.sock = -1, .pidfd = -1};

static void on_sigchld(int sig)
{
    child_exited = 1;
}

static void close_fds(const int *fds, int n)
{
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

static bool kid_remove(pid_t pid)
{
    for (size_t i = 0; i < n_kids; i++) {
        if (kids[i] == pid) {
            kids[i] = kids[--n_kids];
            return true;
        }
    }
    return false;
}

static void ahead_forget(void)
{
    if (ahead.sock >= 0)
        close(ahead.sock);
    if (ahead.pidfd >= 0)
        close(ahead.pidfd);
    ahead.sock = ahead.pidfd = -1;
    ahead.pid = 0;
}

static void reap(void)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        /* A child that made itself our tracee reports stops too; only
         * deaths count. */
        if (!WIFEXITED(status) && !WIFSIGNALED(status))
            continue;
        if (pid == ahead.pid) {
            /* Died waiting (its group's limits): the next FORK forks. */
            ahead_forget();
            continue;
        }
        if (kid_remove(pid)) {
            uint32_t st = (uint32_t)status;
            agent__send_status(PROTO_EXITED, 0, (uint32_t)pid, &st, NULL, NULL, NULL, 0);
        }
    }
}

static void instance_signals(void)
{
    sigset_t none;
    sigemptyset(&none);
    signal(SIGCHLD, SIG_DFL);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

/* LOAD with "serve": this sandbox is the function's instance itself, the
 * fork saved. Nothing was forked yet, so nothing is left to report. */
__attribute__((noreturn)) static void serve_here(void)
{
    instance_signals();
    agent__instance_run(&fn, false);
}

static void do_load(uint32_t id, const uint8_t *payload, size_t len, int *fds, int n_fds)
{
    char msg[512] = "";
    uint64_t t0 = ember_now_ns();
    if (role != ROLE_STEM) {
        close_fds(fds, n_fds);
        agent__send_status(PROTO_LOADED, id, EALREADY, NULL, "this sandbox was already loaded",
                           &(uint64_t){0}, NULL, 0);
        return;
    }
    int r = agent__load(id, payload, len, n_fds > 0 ? fds[0] : -1, &fn, msg, sizeof(msg));
    close_fds(fds, n_fds);
    uint64_t init_ns = ember_now_ns() - t0;
    role = r == 0 ? ROLE_ZYGOTE : ROLE_SPOILED;
    agent__send_status(PROTO_LOADED, id, r == 0 ? 0 : (uint32_t)-r, NULL, msg, &init_ns, NULL, 0);
    if (r == 0 && fn.serve)
        serve_here();
    if (r == 0)
        agent__log_spare_make(); /* for the first FORK */
}

/* The child side of FORK: become an instance on channel @chan. @moved:
 * closed once the child has left the zygote's group (or -1). @ahead: a
 * child forked ahead, which did the signals and agent__instance_prepare
 * while it waited. */
__attribute__((noreturn)) static void become_instance(int chan, const int *fds, int n_fds,
                                                      int moved, bool ahead)
{
    if (!ahead)
        instance_signals();
    /* Move into the instance's own cgroup first: fds[1..] are its
     * cgroup.procs files, opened by emberd (which is what grants the
     * write); "0" means the writer. Nothing of the function runs before. */
    for (int i = 1; i < n_fds; i++) {
        if (write(fds[i], "0", 1) != 1) {
            agent__warn("instance: cannot enter its cgroup: %s", strerror(errno));
            _exit(71);
        }
    }
    if (moved >= 0)
        close(moved);
    /* Replaces (closes) the zygote's channel; CLOEXEC keeps it from exec
     * handlers. */
    if (dup3(chan, AGENT_CHAN_FD, O_CLOEXEC) < 0)
        _exit(127);
    close_fds(fds, n_fds);
    /* The zygote's list of kids is left as it is: the instance never looks
     * at it, and freeing it would copy a heap page on the fork's path. */
    agent__instance_run(&fn, true);
}

/* The child forked ahead: get ready, wait for its channel, then become
 * that instance. Until then fd 3 is the private socket, so that nothing
 * this process might write (a warning, a crash report) reaches the
 * zygote's channel. */
__attribute__((noreturn)) static void ahead_wait(int sock)
{
    if (dup3(sock, AGENT_CHAN_FD, O_CLOEXEC) < 0)
        _exit(127);
    close(sock);
    instance_signals();
    agent__instance_prepare(&fn, true);
    char byte;
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
    ssize_t n;
    do
        n = recvmsg(AGENT_CHAN_FD, &msg, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n != 1)
        _exit(0); /* EOF: dropped (PREFORK 0), or the zygote went */
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    int chan;
    if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
        c->cmsg_len != CMSG_LEN(sizeof(int)))
        _exit(127);
    memcpy(&chan, CMSG_DATA(c), sizeof(chan));
    become_instance(chan, &chan, 1, -1, true);
}

/* Fork the next instance ahead if PREFORK asks for one and the zygote sits
 * in a group no child was born in (the one a FORK without cgroup fds puts
 * its child in). */
static void ahead_make(void)
{
    if (role != ROLE_ZYGOTE || ahead.want == 0 || !ahead.fresh || ahead.pid > 0)
        return;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        agent__warn("zygote: no socket for a child forked ahead: %s", strerror(errno));
        return;
    }
    fflush(stdout);
    fflush(stderr);
    agent__log_drain(false);
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        ahead_wait(sv[1]);
    }
    close(sv[1]);
    int pidfd = pid > 0 ? pidfd_open(pid, 0) : -1;
    if (pidfd < 0) {
        agent__warn("zygote: forking ahead: %s", strerror(errno));
        if (pid > 0)
            kill(pid, SIGKILL); /* reaped without a word */
        close(sv[0]);
        return;
    }
    ahead.pid = pid;
    ahead.sock = sv[0];
    ahead.pidfd = pidfd;
    ahead.born_ns = ember_now_ns();
    /* The child has the log pipes; the next child's are made now. */
    agent__log_spare_drop();
    agent__log_spare_make();
}

/* PREFORK: keep @want children forked ahead (0 or 1). */
static void do_prefork(const uint8_t *payload, size_t len)
{
    uint32_t want = 0;
    if (len == sizeof(want))
        memcpy(&want, payload, sizeof(want));
    ahead.want = want > 0 ? 1 : 0;
    if (ahead.want == 0 && ahead.pid > 0) {
        /* Gone before this returns: emberd stops counting its memory now. */
        kill(ahead.pid, SIGKILL);
        while (waitpid(ahead.pid, NULL, 0) < 0 && errno == EINTR)
            ;
        ahead_forget();
    }
    ahead_make();
}

/* Give channel @chan to the child forked ahead. Returns its pid (its
 * pidfd in *@pidfd) or 0 if there is none or it is gone. */
static pid_t ahead_take(int chan, int *pidfd, uint64_t *waited_ns)
{
    if (ahead.pid <= 0)
        return 0;
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    memset(&u, 0, sizeof(u));
    char byte = 'F';
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &chan, sizeof(chan));
    ssize_t r;
    do
        r = sendmsg(ahead.sock, &msg, MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    pid_t pid = ahead.pid;
    if (r != 1) {
        /* Dead or dying: make sure, and fork instead. */
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        ahead_forget();
        return 0;
    }
    *pidfd = ahead.pidfd;
    ahead.pidfd = -1;
    *waited_ns = ember_now_ns() - ahead.born_ns;
    ahead_forget(); /* the socket: the child has what it needs */
    return pid;
}

static void fork_failed(uint32_t id, int err, pid_t pid)
{
    agent__send_status(PROTO_FORKED, id, (uint32_t)err, &(uint32_t){(uint32_t)pid}, NULL, NULL,
                       NULL, 0);
}

static void do_fork(uint32_t id, int *fds, int n_fds)
{
    if (role != ROLE_ZYGOTE || n_fds < 1) {
        close_fds(fds, n_fds);
        fork_failed(id, EINVAL, 0);
        return;
    }
    if (n_kids == cap_kids) {
        size_t cap = cap_kids ? cap_kids * 2 : 16;
        pid_t *k = realloc(kids, cap * sizeof(*k));
        if (!k) {
            close_fds(fds, n_fds);
            fork_failed(id, ENOMEM, 0);
            return;
        }
        kids = k;
        cap_kids = cap;
    }
    /* Nothing buffered may be printed twice. */
    fflush(stdout);
    fflush(stderr);
    agent__log_drain(false);

    /* A child that moves itself (fds[1..]) is born in the zygote's group;
     * the zygote reads no further frame until it has left, so that a PARK
     * after this FORK (after which emberd removes the group the zygote
     * left) cannot find it still there. */
    int moved[2] = {-1, -1};
    if (n_fds > 1 && pipe2(moved, O_CLOEXEC) < 0) {
        int err = errno;
        close_fds(fds, n_fds);
        fork_failed(id, err, 0);
        return;
    }
    /* The child forked ahead waits in the group the zygote parked in: it
     * is for the FORK whose child is born there, one without cgroup fds. A
     * FORK with them (its group was made apart) forks on the spot. */
    cleanup_close int pidfd = -1;
    uint64_t waited_ns = 0;
    pid_t pid = n_fds == 1 ? ahead_take(fds[0], &pidfd, &waited_ns) : 0;
    bool fork_now = pid == 0; /* none waits forked ahead */
    if (fork_now) {
        pid = fork();
        if (pid == 0) {
            if (moved[0] >= 0)
                close(moved[0]);
            become_instance(fds[0], fds, n_fds, moved[1], false);
        }
    }
    if (n_fds == 1)
        ahead.fresh = false; /* a child is born in this group */
    int err = pid < 0 ? errno : 0;
    close_fds(fds, n_fds);
    if (moved[0] >= 0) {
        close(moved[1]);
        char c;
        while (pid > 0 && read(moved[0], &c, 1) < 0 && errno == EINTR)
            ; /* EOF: moved, or gone */
        close(moved[0]);
    }
    if (pid < 0) {
        fork_failed(id, err, 0);
        return;
    }
    kids[n_kids++] = pid;
    if (fork_now) {
        agent__log_spare_drop(); /* the child's now; never a second child's */
        /* A zombie still has a pidfd: this works even if the child is gone. */
        pidfd = pidfd_open(pid, 0);
        if (pidfd < 0) {
            err = errno;
            kill(pid, SIGKILL); /* reaped and reported like any other */
            fork_failed(id, err, pid);
            return;
        }
    }
    agent__send_status(PROTO_FORKED, id, 0, &(uint32_t){(uint32_t)pid}, NULL, &waited_ns, &pidfd,
                       1);
    /* The child has this fork's pipes; make the next one's now, while the
     * child starts up and emberd waits for its HELLO. */
    if (fork_now)
        agent__log_spare_make();
}

/* Move into the group whose cgroup.procs files are @fds: the next FORK's
 * child is born there and moves nowhere, and the zygote leaves the group of
 * the child it forked last. */
static void do_park(uint32_t id, int *fds, int n_fds)
{
    uint64_t t0 = ember_now_ns();
    uint32_t err = role == ROLE_ZYGOTE && n_fds > 0 ? 0 : EINVAL;
    for (int i = 0; err == 0 && i < n_fds; i++)
        if (write(fds[i], "0", 1) != 1)
            err = (uint32_t)errno;
    close_fds(fds, n_fds);
    uint64_t ns = ember_now_ns() - t0;
    agent__send_status(PROTO_PARKED, id, err, NULL, NULL, &ns, NULL, 0);
    if (err == 0) {
        ahead.fresh = true;
        ahead_make();
    }
}

static void on_frame(const struct proto_hdr *h, uint8_t *payload, int *fds, int n_fds)
{
    switch (h->type) {
    case PROTO_PARK:
        do_park(h->id, fds, n_fds);
        return;
    case PROTO_LOAD:
        do_load(h->id, payload, h->len, fds, n_fds);
        return;
    case PROTO_FORK:
        do_fork(h->id, fds, n_fds);
        return;
    case PROTO_PREFORK:
        do_prefork(payload, h->len);
        break;
    case PROTO_SHUTDOWN:
        fflush(stdout);
        fflush(stderr);
        agent__log_drain(true);
        _exit(0);
    case PROTO_INVOKE:
        agent__send_failed(h->id, PROTO_FAIL_INTERNAL, "a %s serves no calls",
                           role == ROLE_ZYGOTE ? "zygote" : "stem cell");
        break;
    case PROTO_RESET:
        agent__send_status(PROTO_RESET_DONE, h->id, ENOTSUP, NULL, NULL, &(uint64_t){0}, NULL, 0);
        break;
    default:
        agent__warn("unexpected frame type %u", h->type);
        break;
    }
    close_fds(fds, n_fds);
}

int main(int argc, char **argv)
{
    struct stat st;
    if (fstat(AGENT_CHAN_FD, &st) < 0 || !S_ISSOCK(st.st_mode)) {
        fprintf(stderr,
                "ember-agent: fd %d is not the channel to emberd; this program is "
                "started by emberd's container backend\n",
                AGENT_CHAN_FD);
        return 2;
    }
    agent__chan_init();
    /* Nothing the spawner left open reaches function code, and 0-2 are
     * taken, so that no pipe or socket of ours lands on a standard fd. */
    close_range(AGENT_CHAN_FD + 1, ~0u, 0);
    for (int fd = 0; fd < AGENT_CHAN_FD; fd++) {
        if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) != fd)
            return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    /* Function code is batch work to the scheduler: a woken instance does
     * not preempt emberd, which then answers every ready call before the
     * instances it woke take its CPU. Under wrk -c64 emberd was preempted
     * 0.55 times per call before, 0.2 after. Fairness is unchanged (same
     * weight); a function may switch itself back to SCHED_OTHER. */
    sched_setscheduler(0, SCHED_BATCH, &(struct sched_param){0});

    sigset_t chld, waitmask;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, &waitmask);
    sigdelset(&waitmask, SIGCHLD);
    struct sigaction sa = {.sa_handler = on_sigchld, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGCHLD, &sa, NULL);

    if (agent__send_hello() < 0)
        return 1;
    for (;;) {
        struct pollfd pfd[3] = {{.fd = AGENT_CHAN_FD, .events = POLLIN}};
        agent__log_fds(&pfd[1].fd, &pfd[2].fd);
        pfd[1].events = pfd[2].events = POLLIN;
        int n = ppoll(pfd, 3, NULL, &waitmask);
        int err = errno;
        if (child_exited) {
            child_exited = 0;
            reap();
        }
        if (n < 0) {
            if (err == EINTR)
                continue;
            agent__warn("ppoll: %s", strerror(err));
            _exit(1);
        }
        if ((pfd[1].revents | pfd[2].revents) != 0)
            agent__log_drain(false);
        if (pfd[0].revents == 0)
            continue;

        struct proto_hdr h;
        cleanup_free uint8_t *payload = NULL;
        int fds[PROTO_MAX_FDS], n_fds = 0;
        agent__recv_frame(&h, &payload, fds, &n_fds, NULL);
        on_frame(&h, payload, fds, n_fds);
    }
}
