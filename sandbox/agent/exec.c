/* exec.c - the exec runtime: one CGI/1.1 program run per call.
 *
 * The program gets the request's meta-variables and the manifest's env
 * (cgi.c), the body on stdin, the instance's stderr (the log pipe), /fn as
 * its working directory, default signal dispositions and its own process
 * group (so that killing it kills what it started). posix_spawn() rather
 * than fork(): workers are threads, and glibc's spawn is safe there.
 *
 * One poll() loop feeds stdin and drains stdout together: a program that
 * never reads its stdin, or writes a lot before reading, cannot deadlock the
 * worker. Output past the limit kills the program group at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "sandbox/agent/agent.h"
#include "sandbox/agent/cgi.h"

extern char **environ;

#define OUTPUT_MAX (AGENT_RESPONSE_MAX + CGI_HEADER_BLOCK_MAX)

struct spawned {
    pid_t pid;
    int in;  /* write end of its stdin, -1 once closed */
    int out; /* read end of its stdout */
};

static void spawn_attr_cleanup(posix_spawnattr_t *a)
{
    posix_spawnattr_destroy(a);
}

static void spawn_actions_cleanup(posix_spawn_file_actions_t *fa)
{
    posix_spawn_file_actions_destroy(fa);
}

static void env_cleanup(char ***env)
{
    agent__cgi_env_free(*env);
}

static int start(const struct agent_fn *fn, char **env, struct spawned *sp)
{
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) < 0)
        return -errno;
    cleanup_close int in_r = in[0], in_w = in[1];
    if (pipe2(out, O_CLOEXEC) < 0)
        return -errno;
    cleanup_close int out_r = out[0], out_w = out[1];

    __attribute__((cleanup(spawn_actions_cleanup))) posix_spawn_file_actions_t fa;
    __attribute__((cleanup(spawn_attr_cleanup))) posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    sigset_t all, none;
    sigfillset(&all);
    sigemptyset(&none);
    int r = posix_spawn_file_actions_adddup2(&fa, in_r, STDIN_FILENO);
    if (!r)
        r = posix_spawn_file_actions_adddup2(&fa, out_w, STDOUT_FILENO);
    if (!r)
        r = posix_spawn_file_actions_addchdir_np(&fa, AGENT_FN_DIR);
    if (!r)
        r = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                                POSIX_SPAWN_SETPGROUP);
    if (!r)
        r = posix_spawnattr_setsigmask(&attr, &none);
    if (!r)
        r = posix_spawnattr_setsigdefault(&attr, &all);
    if (!r)
        r = posix_spawnattr_setpgroup(&attr, 0);
    if (r)
        return -r;

    char *argv[] = {(char *)fn->handler, NULL};
    r = posix_spawn(&sp->pid, fn->handler, &fa, &attr, argv, env);
    if (r)
        return -r;
    if (fcntl(in_w, F_SETFL, O_NONBLOCK) < 0 || fcntl(out_r, F_SETFL, O_NONBLOCK) < 0) {
        r = -errno;
        kill(-sp->pid, SIGKILL);
        while (waitpid(sp->pid, NULL, 0) < 0 && errno == EINTR)
            ;
        return r;
    }
    sp->in = steal_fd(&in_w);
    sp->out = steal_fd(&out_r);
    return 0;
}

/* Feed @body and collect stdout into *@buf until EOF. Returns 0, -EFBIG when
 * stdout passed OUTPUT_MAX (reading stops), or -errno. */
static int pump(struct spawned *sp, const char *body, size_t body_len, char **buf, size_t *len)
{
    size_t cap = 0, sent = 0;
    if (body_len == 0) {
        close(sp->in);
        sp->in = -1;
    }
    for (;;) {
        struct pollfd pfd[2] = {{.fd = sp->out, .events = POLLIN},
                                {.fd = sp->in, .events = POLLOUT}};
        if (poll(pfd, sp->in >= 0 ? 2 : 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (sp->in >= 0 && pfd[1].revents) {
            ssize_t n = write(sp->in, body + sent, body_len - sent);
            if (n > 0)
                sent += (size_t)n;
            /* EPIPE/POLLERR: it stopped reading; the rest of the body is moot. */
            if ((n < 0 && errno != EAGAIN && errno != EINTR) || sent == body_len) {
                close(sp->in);
                sp->in = -1;
            }
        }
        if (pfd[0].revents) {
            if (*len == cap) {
                if (cap >= OUTPUT_MAX)
                    return -EFBIG;
                size_t ncap = cap ? cap * 2 : 16384;
                if (ncap > OUTPUT_MAX)
                    ncap = OUTPUT_MAX;
                char *b = realloc(*buf, ncap);
                if (!b)
                    return -ENOMEM;
                *buf = b;
                cap = ncap;
            }
            ssize_t n = read(sp->out, *buf + *len, cap - *len);
            if (n == 0)
                return 0;
            if (n < 0 && errno != EAGAIN && errno != EINTR)
                return -errno;
            if (n > 0)
                *len += (size_t)n;
        }
    }
}

static int answer(int status, uint32_t id, const char *buf, size_t len, struct proto_buf *out)
{
    if (WIFSIGNALED(status)) {
        char why[64];
        agent__signal_describe(WTERMSIG(status), why, sizeof(why));
        return agent__frame_failed(out, id, PROTO_FAIL_CRASH, "%s", why);
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
        return agent__frame_failed(out, id, PROTO_FAIL_HANDLER, "exited with status %d",
                                   WEXITSTATUS(status));
    cleanup_free struct cgi_output *o = malloc(sizeof(*o));
    if (!o)
        return -ENOMEM;
    char why[160];
    if (agent__cgi_parse(buf ? buf : "", len, o, why, sizeof(why)) < 0)
        return agent__frame_failed(out, id, PROTO_FAIL_BAD_OUTPUT, "%s", why);
    if (o->body_len > AGENT_RESPONSE_MAX)
        return agent__frame_failed(out, id, PROTO_FAIL_TOO_LARGE, "response body over %u bytes",
                                   AGENT_RESPONSE_MAX);
    return agent__frame_response(out, id, (uint32_t)o->status, o->headers, o->n_headers, o->body,
                                 o->body_len);
}

int agent__exec_call(const struct agent_fn *fn, uint32_t id, const struct proto_request *req,
                     struct proto_buf *out)
{
    __attribute__((cleanup(env_cleanup))) char **env = NULL;
    struct cgi_server srv = {.function = fn->function, .software = AGENT_SOFTWARE};
    int r = agent__cgi_env_build(&srv, req, environ, &env);
    if (r)
        return r;

    struct spawned sp = {.pid = -1, .in = -1, .out = -1};
    r = start(fn, env, &sp);
    if (r)
        return agent__frame_failed(out, id, PROTO_FAIL_HANDLER, "cannot run %s: %s", fn->handler,
                                   strerror(-r));
    cleanup_free char *buf = NULL;
    size_t len = 0;
    int pr = pump(&sp, req->body.p, req->body.len, &buf, &len);
    if (sp.in >= 0)
        close(sp.in);
    close(sp.out);
    if (pr < 0)
        kill(-sp.pid, SIGKILL); /* the whole group: it may have forked */
    int status = 0;
    while (waitpid(sp.pid, &status, 0) < 0) {
        if (errno != EINTR)
            return -errno;
    }
    if (pr == -EFBIG)
        return agent__frame_failed(out, id, PROTO_FAIL_TOO_LARGE, "response body over %u bytes",
                                   AGENT_RESPONSE_MAX);
    if (pr < 0)
        return pr;
    return answer(status, id, buf, len, out);
}
