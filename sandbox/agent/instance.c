/* instance.c - an instance: serve INVOKEs until emberd lets go.
 *
 * The main thread reads frames from fd 3 and the log pipes. With a
 * concurrency of 1 it runs each call itself; otherwise calls go
 * to worker threads, started on demand up to the manifest's concurrency
 * (capped at AGENT_WORKERS_MAX), so a handler that runs long never stops the
 * log from flowing, and calls over the concurrency wait in order. A worker
 * owns crash slot N (its index) for the call it runs; it forwards the call's
 * log lines, then answers.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "sandbox/agent/agent.h"

#define QUEUE_MAX 4096      /* calls waiting for a worker; emberd keeps far fewer */
#define KEEP_BUF (1u << 20) /* answer buffers above this are freed after use */

struct job {
    struct job *next;
    uint32_t id;
    uint32_t len;
    uint8_t *payload;
};

static struct {
    const struct agent_fn *fn;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *head, **tail;
    unsigned queued;
    unsigned workers, idle, max_workers;
} pool = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .cv = PTHREAD_COND_INITIALIZER,
};

static void run(struct job *job, unsigned slot, struct proto_request *req, struct proto_buf *out)
{
    agent__crash_slot_set(slot, job->id);
    agent__log_budget_reset();
    uint64_t t0 = ember_now_ns();
    int r;
    if (proto_request_decode(job->payload, job->len, req) < 0)
        r = agent__frame_failed(out, job->id, PROTO_FAIL_INTERNAL, "malformed INVOKE payload");
    else if (pool.fn->runtime == AGENT_RUNTIME_NATIVE)
        r = agent__native_call(pool.fn, job->id, req, out);
    else
        r = agent__exec_call(pool.fn, job->id, req, out);
    if (r == 0)
        r = agent__frame_response_time(out, ember_now_ns() - t0);
    if (r < 0)
        r = agent__frame_failed(out, job->id, PROTO_FAIL_INTERNAL, "agent: %s", strerror(-r));
    /* The call's output goes out before its answer. A write that met a full
     * pipe left stdio's error flag set: the next call starts clean. */
    fflush(stdout);
    fflush(stderr);
    clearerr(stdout);
    clearerr(stderr);
    agent__log_drain(true);
    if (r == 0)
        agent__send_answer(out, slot);
    else
        agent__crash_slot_clear(slot);
    if (out->cap > KEEP_BUF) {
        proto_buf_free(out);
        proto_buf_init(out);
    }
}

static void *worker(void *arg)
{
    unsigned slot = (unsigned)(uintptr_t)arg;
    struct proto_buf out;
    proto_buf_init(&out);
    /* A decoded request holds ~8 KiB of header slots: one per worker, reused. */
    struct proto_request *req = malloc(sizeof(*req));
    agent__crash_thread_init();
    for (;;) {
        pthread_mutex_lock(&pool.mu);
        while (!pool.head) {
            pool.idle++;
            pthread_cond_wait(&pool.cv, &pool.mu);
            pool.idle--;
        }
        struct job *job = pool.head;
        pool.head = job->next;
        if (!pool.head)
            pool.tail = &pool.head;
        pool.queued--;
        pthread_mutex_unlock(&pool.mu);

        if (req)
            run(job, slot, req, &out);
        else
            agent__send_failed(job->id, PROTO_FAIL_INTERNAL, "agent: out of memory");
        free(job->payload);
        free(job);
    }
    return NULL;
}

/* Hand a call to a worker, starting one if all are busy and the manifest
 * allows more. Takes @payload. */
static void enqueue(uint32_t id, uint8_t *payload, uint32_t len)
{
    struct job *job = calloc(1, sizeof(*job));
    if (!job) {
        free(payload);
        agent__send_failed(id, PROTO_FAIL_INTERNAL, "agent: out of memory");
        return;
    }
    job->id = id;
    job->payload = payload;
    job->len = len;

    pthread_mutex_lock(&pool.mu);
    if (pool.queued >= QUEUE_MAX) {
        pthread_mutex_unlock(&pool.mu);
        free(payload);
        free(job);
        agent__send_failed(id, PROTO_FAIL_INTERNAL, "agent: over %u calls waiting", QUEUE_MAX);
        return;
    }
    bool start = pool.idle <= pool.queued && pool.workers < pool.max_workers;
    if (start) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int r = pthread_create(&t, &attr, worker, (void *)(uintptr_t)pool.workers);
        pthread_attr_destroy(&attr);
        if (r == 0) {
            pool.workers++;
        } else if (pool.workers == 0) {
            /* The pids limit, most likely; nobody could ever run it. */
            pthread_mutex_unlock(&pool.mu);
            free(payload);
            free(job);
            agent__send_failed(id, PROTO_FAIL_INTERNAL, "agent: no worker thread: %s", strerror(r));
            return;
        }
    }
    *pool.tail = job;
    pool.tail = &job->next;
    pool.queued++;
    pthread_cond_signal(&pool.cv);
    pthread_mutex_unlock(&pool.mu);
}

/*
 * With a concurrency of 1 there is never a second call to overlap with, so
 * the main thread runs the call itself: handing it to a worker would cost
 * two futex wake-ups and two context switches per call, more than a no-op
 * handler costs in all. Output written meanwhile waits in the (non-blocking)
 * pipes and is drained right after the call.
 */
static void run_inline(uint32_t id, uint8_t *payload, uint32_t len)
{
    static struct proto_request *req;
    static struct proto_buf out;
    if (!req) {
        req = malloc(sizeof(*req));
        proto_buf_init(&out); /* (the main thread's alternate signal stack
                                 was set up by agent__crash_init) */
    }
    if (!req) {
        agent__send_failed(id, PROTO_FAIL_INTERNAL, "agent: out of memory");
        return;
    }
    struct job job = {.id = id, .payload = payload, .len = len};
    run(&job, 0, req, &out);
}

static void on_frame(const struct proto_hdr *h, uint8_t **payload, int *fds, int n_fds)
{
    for (int i = 0; i < n_fds; i++)
        close(fds[i]);
    switch (h->type) {
    case PROTO_INVOKE:
        if (pool.max_workers == 1) {
            run_inline(h->id, *payload, h->len); /* the caller frees the payload */
            return;
        }
        enqueue(h->id, *payload, h->len);
        *payload = NULL;
        return;
    case PROTO_SHUTDOWN:
        fflush(stdout);
        fflush(stderr);
        agent__log_drain(true);
        _exit(0);
    case PROTO_FORK:
        agent__send_status(PROTO_FORKED, h->id, EINVAL, &(uint32_t){0}, NULL, NULL, NULL, 0);
        return;
    case PROTO_LOAD:
        agent__send_status(PROTO_LOADED, h->id, EALREADY, NULL, "an instance cannot be loaded",
                           &(uint64_t){0}, NULL, 0);
        return;
    case PROTO_RESET:
        agent__send_status(PROTO_RESET_DONE, h->id, ENOTSUP, NULL, NULL, &(uint64_t){0}, NULL, 0);
        return;
    default:
        agent__warn("unexpected frame type %u", h->type);
        return;
    }
}

/* A served sandbox's agent is pid 1: orphans of the function's processes
 * come to it. With calls inline (concurrency 1) nothing of ours is running
 * between calls, so whatever is left to reap is an orphan. With workers an
 * exec handler's child may be waited for meanwhile; orphans then stay
 * zombies until the instance goes, bounded by the pids limit. SIGCHLD says
 * when to look, so a call costs no wait4 when nothing died. */
static volatile sig_atomic_t child_died;

static void on_sigchld(int sig)
{
    child_died = 1;
}

static void reap_orphans(void)
{
    if (!child_died)
        return;
    child_died = 0;
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
}

static bool prepared;

void agent__instance_prepare(const struct agent_fn *fn, bool forked)
{
    pool.fn = fn;
    pool.tail = &pool.head;
    pool.max_workers = fn->concurrency < AGENT_WORKERS_MAX ? fn->concurrency : AGENT_WORKERS_MAX;
    if (pool.max_workers == 0)
        pool.max_workers = 1;

    if (!forked) {
        struct sigaction sa = {.sa_handler = on_sigchld, .sa_flags = SA_RESTART | SA_NOCLDSTOP};
        sigemptyset(&sa.sa_mask);
        sigaction(SIGCHLD, &sa, NULL);
    }
    /* Own pipes: the zygote's would mix every instance's output. A
     * sandbox serving itself keeps the ones its LOAD made. */
    int r = forked ? agent__log_redirect() : 0;
    if (r == 0)
        r = agent__crash_init(AGENT_CRASH_INSTANCE, 0, pool.max_workers);
    if (r < 0) {
        agent__warn("instance setup: %s", strerror(-r));
        _exit(1);
    }
    prepared = true;
}

void agent__instance_run(const struct agent_fn *fn, bool forked)
{
    if (!prepared)
        agent__instance_prepare(fn, forked);
    if (forked && agent__send_hello() < 0)
        _exit(1);

    for (;;) {
        if (pool.max_workers == 1) {
            /* Calls run inline and each is followed by a drain of its
             * output, so between calls nothing needs watching but the
             * channel (waited for in poll: one wake-up per call). */
            int w = agent__frame_ready() ? 0 : proto_wait_readable(AGENT_CHAN_FD);
            if (w < 0 && w != -EINTR) {
                agent__warn("poll: %s", strerror(-w));
                _exit(1);
            }
            /* The call runs before the next read: its payload may stay in
             * the read-ahead buffer (no copy, no malloc). */
            struct proto_hdr h;
            uint8_t *payload = NULL;
            bool borrowed;
            agent__recv_frame(&h, &payload, NULL, NULL, &borrowed);
            on_frame(&h, &payload, NULL, 0);
            if (!borrowed)
                free(payload);
            reap_orphans();
            continue;
        }
        struct pollfd pfd[3] = {{.fd = AGENT_CHAN_FD, .events = POLLIN}};
        agent__log_fds(&pfd[1].fd, &pfd[2].fd);
        pfd[1].events = pfd[2].events = POLLIN;
        /* A frame read ahead is not in the socket any more: do not sleep. */
        bool ready = agent__frame_ready();
        if (poll(pfd, 3, ready ? 0 : -1) < 0) {
            if (errno == EINTR)
                continue;
            agent__warn("poll: %s", strerror(errno));
            _exit(1);
        }
        if ((pfd[1].revents | pfd[2].revents) != 0)
            agent__log_drain(false);
        if (pfd[0].revents == 0 && !ready)
            continue;

        struct proto_hdr h;
        cleanup_free uint8_t *payload = NULL;
        agent__recv_frame(&h, &payload, NULL, NULL, NULL);
        on_frame(&h, &payload, NULL, 0);
    }
}
