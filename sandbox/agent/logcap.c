/* logcap.c - the function's stdout and stderr, forwarded as LOG frames.
 *
 * fds 1 and 2 are pipes whose write ends are O_NONBLOCK: a function that
 * writes faster than emberd reads gets EAGAIN (its bytes are lost to it)
 * instead of blocking a call or the answer to one. The agent reads the other
 * ends, cuts lines (at most PROTO_LOG_LINE_MAX bytes each; the rest of a
 * longer line is dropped) and forwards them while the current call's budget
 * lasts (per stream, so a flood on stdout cannot drown stderr); beyond it
 * lines are counted and dropped, and the end of the call reports
 * "[ember: N bytes of output dropped]" on that stream. With concurrency
 * above 1, every call that starts refills the budget of the instance.
 *
 * Readers: the main thread when poll() says a pipe is readable, and each
 * worker when its call ends (so that a call's lines reach emberd before its
 * answer). One mutex orders them.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "sandbox/agent/agent.h"

#define PIPE_SIZE (1 << 20) /* ask for room; the kernel may give less */

struct log_stream {
    int rfd;
    size_t budget_bytes;
    unsigned budget_lines;
    size_t used;      /* bytes in line */
    bool truncating;  /* dropping the rest of an overlong line */
    uint64_t dropped; /* bytes not forwarded since the last report */
};

static struct {
    pthread_mutex_t mu;
    bool active;
    struct log_stream s[2]; /* stdout, stderr */
} lg = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .s = {{.rfd = -1}, {.rfd = -1}},
};

/* The lines being put together, kept apart from the state above: a fork
 * child writes that state (agent__log_redirect) before its HELLO, and with
 * a line buffer between the two streams' fields it spanned two pages, each
 * a copy-on-write fault of ~3 us here. */
static char line[2][PROTO_LOG_LINE_MAX];

bool agent__log_active(void)
{
    return lg.active;
}

void agent__log_fds(int *out_fd, int *err_fd)
{
    *out_fd = lg.s[0].rfd;
    *err_fd = lg.s[1].rfd;
}

void agent__log_budget_reset(void)
{
    pthread_mutex_lock(&lg.mu);
    for (int i = 0; i < 2; i++) {
        lg.s[i].budget_bytes = AGENT_LOG_BUDGET_BYTES;
        lg.s[i].budget_lines = AGENT_LOG_BUDGET_LINES;
    }
    pthread_mutex_unlock(&lg.mu);
}

/* A zygote makes its next instance's pipes ahead (agent__log_spare_make),
 * so that the fork child only has to put them in place. */
static int spare[2][2] = {{-1, -1}, {-1, -1}}; /* [stream][read, write] */

static int pipe_make(int p[2])
{
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0)
        return -errno;
    /* Best effort: a bigger pipe loses less of a burst. */
    fcntl(p[1], F_SETPIPE_SZ, PIPE_SIZE);
    return 0;
}

void agent__log_spare_drop(void)
{
    for (int i = 0; i < 2; i++) {
        for (int k = 0; k < 2; k++) {
            if (spare[i][k] >= 0)
                close(spare[i][k]);
            spare[i][k] = -1;
        }
    }
}

void agent__log_spare_make(void)
{
    agent__log_spare_drop();
    for (int i = 0; i < 2; i++) {
        if (pipe_make(spare[i]) < 0) {
            agent__log_spare_drop(); /* the child makes its own */
            return;
        }
    }
}

int agent__log_redirect(void)
{
    for (int i = 0; i < 2; i++) {
        int p[2] = {spare[i][0], spare[i][1]};
        spare[i][0] = spare[i][1] = -1;
        if (p[0] < 0) {
            int r = pipe_make(p);
            if (r < 0)
                return r;
        }
        cleanup_close int r = p[0], w = p[1];
        /* dup2 clears CLOEXEC on 1 and 2: exec handlers inherit stderr. */
        if (dup2(w, STDOUT_FILENO + i) < 0)
            return -errno;
        pthread_mutex_lock(&lg.mu);
        if (lg.s[i].rfd >= 0)
            close(lg.s[i].rfd);
        lg.s[i].rfd = steal_fd(&r);
        lg.s[i].used = 0;
        lg.s[i].truncating = false;
        lg.s[i].dropped = 0;
        pthread_mutex_unlock(&lg.mu);
    }
    lg.active = true;
    agent__log_budget_reset();
    return 0;
}

/* One complete (or cut) line of stream @i; mu held. */
static void emit(int i, const char *p, size_t len, size_t raw_len)
{
    struct log_stream *s = &lg.s[i];
    if (s->budget_lines == 0 || s->budget_bytes < len) {
        s->dropped += raw_len;
        s->budget_lines = 0; /* keep order: no short line after a dropped one */
        return;
    }
    s->budget_lines--;
    s->budget_bytes -= len;
    agent__send_log(i + 1, p, len);
}

static void feed(int i, const char *p, size_t n)
{
    struct log_stream *s = &lg.s[i];
    while (n > 0) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        if (s->truncating) {
            s->dropped += take + (nl ? 1 : 0);
        } else {
            size_t room = sizeof(line[i]) - s->used;
            size_t keep = take < room ? take : room;
            memcpy(line[i] + s->used, p, keep);
            s->used += keep;
            if (take > keep) {
                /* Over PROTO_LOG_LINE_MAX: forward the head, drop the rest. */
                emit(i, line[i], s->used, s->used);
                s->dropped += take - keep + (nl ? 1 : 0);
                s->used = 0;
                s->truncating = true;
            } else if (nl) {
                emit(i, line[i], s->used, s->used + 1);
                s->used = 0;
            }
        }
        if (nl)
            s->truncating = false;
        p += take + (nl ? 1 : 0);
        n -= take + (nl ? 1 : 0);
    }
}

void agent__log_drain(bool end_of_call)
{
    char buf[16384];
    pthread_mutex_lock(&lg.mu);
    /* One poll says which pipe has anything: most calls write nothing, and
     * two reads that fail with EAGAIN cost more than one poll. */
    struct pollfd pfd[2];
    for (int i = 0; i < 2; i++)
        pfd[i] = (struct pollfd){.fd = lg.s[i].rfd, .events = POLLIN};
    if (poll(pfd, 2, 0) < 0)
        pfd[0].revents = pfd[1].revents = POLLIN; /* unsure: read both */
    for (int i = 0; i < 2; i++) {
        struct log_stream *s = &lg.s[i];
        if (s->rfd < 0)
            continue;
        for (; pfd[i].revents;) {
            ssize_t n = read(s->rfd, buf, sizeof(buf));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            feed(i, buf, (size_t)n);
        }
        if (!end_of_call)
            continue;
        if (s->used > 0) {
            emit(i, line[i], s->used, s->used);
            s->used = 0;
        }
        if (s->dropped > 0) {
            char note[96];
            int len = snprintf(note, sizeof(note), "[ember: %llu bytes of output dropped]",
                               (unsigned long long)s->dropped);
            agent__send_log(i + 1, note, (size_t)len);
            s->dropped = 0;
        }
    }
    pthread_mutex_unlock(&lg.mu);
}
