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

static void reap(void)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        /* A child that made itself our tracee reports stops too; only
         * deaths count. */
        if (!WIFEXITED(status) && !WIFSIGNALED(status))
            continue;
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
 * closed once the child has left the zygote's group (or -1). */
__attribute__((noreturn)) static void become_instance(int chan, const int *fds, int n_fds,
                                                      int moved)
{
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

static void do_fork(uint32_t id, int *fds, int n_fds)
{
    if (role != ROLE_ZYGOTE || n_fds < 1) {
        close_fds(fds, n_fds);
        agent__send_status(PROTO_FORKED, id, EINVAL, &(uint32_t){0}, NULL, NULL, NULL, 0);
        return;
    }
    if (n_kids == cap_kids) {
        size_t cap = cap_kids ? cap_kids * 2 : 16;
        pid_t *k = realloc(kids, cap * sizeof(*k));
        if (!k) {
            close_fds(fds, n_fds);
            agent__send_status(PROTO_FORKED, id, ENOMEM, &(uint32_t){0}, NULL, NULL, NULL, 0);
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
        agent__send_status(PROTO_FORKED, id, (uint32_t)err, &(uint32_t){0}, NULL, NULL, NULL, 0);
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        if (moved[0] >= 0)
            close(moved[0]);
        become_instance(fds[0], fds, n_fds, moved[1]);
    }
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
        agent__send_status(PROTO_FORKED, id, (uint32_t)err, &(uint32_t){0}, NULL, NULL, NULL, 0);
        return;
    }
    kids[n_kids++] = pid;
    agent__log_spare_drop(); /* the child's now; never a second child's */
    /* A zombie still has a pidfd: this works even if the child is gone. */
    cleanup_close int pidfd = pidfd_open(pid, 0);
    if (pidfd < 0) {
        err = errno;
        kill(pid, SIGKILL); /* reaped and reported like any other */
        agent__send_status(PROTO_FORKED, id, (uint32_t)err, &(uint32_t){(uint32_t)pid}, NULL, NULL,
                           NULL, 0);
        return;
    }
    agent__send_status(PROTO_FORKED, id, 0, &(uint32_t){(uint32_t)pid}, NULL, NULL, &pidfd, 1);
    /* The child has this fork's pipes; make the next one's now, while the
     * child starts up and emberd waits for its HELLO. */
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
