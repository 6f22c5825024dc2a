/* chan.c - ember-agent's writes to fd 3.
 *
 * Several threads write frames (workers answer calls, the main thread
 * forwards log lines) and a fatal-signal handler may have to write one more
 * while another thread is half-way through a frame. One lock orders them; it
 * is a futex word rather than a pthread mutex because the crash handler must
 * take it with async-signal-safe calls only (Drepper's "Futexes Are Tricky",
 * mutex 2: 0 free, 1 locked, 2 locked with waiters).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "sandbox/agent/agent.h"

static _Atomic int lock_word;
/* The holder's identity: pthread_self() reads the thread pointer, no
 * system call (gettid cost one per frame sent), and it is what a crash
 * handler running on the same thread sees too. */
static _Atomic uintptr_t lock_owner;

static uintptr_t self_id(void)
{
    return (uintptr_t)pthread_self();
}

static long futex(_Atomic int *word, int op, int val, const struct timespec *ts)
{
    return syscall(SYS_futex, (int *)word, op, val, ts, NULL, 0);
}

/* Returns 0 with the lock held, or -ETIMEDOUT once @deadline (monotonic,
 * NULL = never) has passed. */
static int chan_lock_until(const struct timespec *deadline)
{
    int c = 0;
    if (atomic_compare_exchange_strong(&lock_word, &c, 1))
        goto locked;
    if (c != 2)
        c = atomic_exchange(&lock_word, 2);
    while (c != 0) {
        struct timespec rel, now, *ts = NULL;
        if (deadline) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            long ns =
                (deadline->tv_sec - now.tv_sec) * 1000000000L + (deadline->tv_nsec - now.tv_nsec);
            if (ns <= 0)
                return -ETIMEDOUT;
            rel.tv_sec = ns / 1000000000L;
            rel.tv_nsec = ns % 1000000000L;
            ts = &rel;
        }
        futex(&lock_word, FUTEX_WAIT_PRIVATE, 2, ts);
        c = atomic_exchange(&lock_word, 2);
    }
locked:
    atomic_store(&lock_owner, self_id());
    return 0;
}

static void chan_lock(void)
{
    chan_lock_until(NULL);
}

static void chan_unlock(void)
{
    atomic_store(&lock_owner, 0);
    if (atomic_exchange(&lock_word, 0) == 2)
        futex(&lock_word, FUTEX_WAKE_PRIVATE, 1, NULL);
}

int agent__chan_lock_signal(int ms)
{
    if (atomic_load(&lock_owner) == self_id())
        return -EDEADLK; /* this thread died inside a send: the stream is cut */
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += ms / 1000;
    deadline.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    return chan_lock_until(&deadline);
}

void agent__chan_unlock_signal(void)
{
    chan_unlock();
}

void agent__chan_write_raw(const void *p, size_t len)
{
    const char *c = p;
    while (len > 0) {
        ssize_t n = send(AGENT_CHAN_FD, c, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        c += n;
        len -= (size_t)n;
    }
}

void agent__chan_init(void)
{
    int fl = fcntl(AGENT_CHAN_FD, F_GETFD);
    if (fl >= 0)
        fcntl(AGENT_CHAN_FD, F_SETFD, fl | FD_CLOEXEC);
}

int agent__send(const struct proto_buf *frame, const int *fds, int n_fds)
{
    chan_lock();
    int r = proto_send_frame(AGENT_CHAN_FD, frame, fds, n_fds);
    chan_unlock();
    return r;
}

int agent__send_answer(const struct proto_buf *frame, unsigned slot)
{
    chan_lock();
    agent__crash_slot_clear(slot);
    int r = proto_send_frame(AGENT_CHAN_FD, frame, NULL, 0);
    chan_unlock();
    return r;
}

int agent__frame_failed(struct proto_buf *b, uint32_t id, enum proto_fail reason, const char *fmt,
                        ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof(msg))
        n = sizeof(msg) - 1;
    int r = proto_buf_begin(b, PROTO_FAILED, id);
    if (!r)
        r = proto_put_u32(b, (uint32_t)reason);
    if (!r)
        r = proto_put_bytes(b, msg, (size_t)n);
    if (!r)
        r = proto_buf_finish(b);
    return r;
}

int agent__frame_response(struct proto_buf *b, uint32_t id, uint32_t status,
                          const struct proto_pair *headers, uint32_t n_headers, const void *body,
                          size_t body_len)
{
    int r = proto_buf_begin(b, PROTO_RESPONSE, id);
    if (!r)
        r = proto_put_u32(b, status);
    if (!r)
        r = proto_put_pairs(b, headers, n_headers);
    if (!r)
        r = proto_put_bytes(b, body_len ? body : "", body_len);
    if (!r)
        r = proto_buf_finish(b);
    return r;
}

int agent__frame_response_time(struct proto_buf *b, uint64_t run_ns)
{
    struct proto_hdr h;
    if (b->len < PROTO_HDR_SIZE)
        return -EINVAL;
    memcpy(&h, b->data, sizeof(h));
    if (h.type != PROTO_RESPONSE)
        return 0;
    /* Optional: an answer at the size limit goes without it. */
    size_t len = b->len;
    if (proto_put_u64(b, run_ns) < 0 || proto_buf_finish(b) < 0) {
        b->len = len;
        return proto_buf_finish(b);
    }
    return 0;
}

int agent__send_status(uint16_t type, uint32_t id, uint32_t a, const uint32_t *b, const char *msg,
                       const uint64_t *c, const int *fds, int n_fds)
{
    struct proto_buf f;
    proto_buf_init(&f);
    int r = proto_buf_begin(&f, type, id);
    if (!r)
        r = proto_put_u32(&f, a);
    if (!r && b)
        r = proto_put_u32(&f, *b);
    if (!r && msg)
        r = proto_put_bytes(&f, msg, strlen(msg));
    if (!r && c)
        r = proto_put_u64(&f, *c);
    if (!r)
        r = proto_buf_finish(&f);
    if (!r)
        r = agent__send(&f, fds, n_fds);
    proto_buf_free(&f);
    return r;
}

int agent__send_failed(uint32_t id, enum proto_fail reason, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct proto_buf f;
    proto_buf_init(&f);
    int r = agent__frame_failed(&f, id, reason, "%s", msg);
    if (!r)
        r = agent__send(&f, NULL, 0);
    proto_buf_free(&f);
    return r;
}

/* Also a zygote's fork child's first words, on the fork's path: no malloc
 * and no printf, whose first use in the child would copy the heap, arena
 * and stdio pages it shares with the zygote (a copy-on-write fault is
 * ~3 us on this machine's hypervisor). */
int agent__send_hello(void)
{
    char version[10], pid[10];
    uint8_t mem[PROTO_HDR_SIZE + 64];
    struct proto_pair pairs[] = {
        {{"version", 7}, {version, (uint32_t)proto_u32_str(PROTO_VERSION, version)}},
        {{"pid", 3}, {pid, (uint32_t)proto_u32_str((uint32_t)getpid(), pid)}},
    };
    struct proto_buf f;
    proto_buf_init_fixed(&f, mem, sizeof(mem));
    int r = proto_buf_begin(&f, PROTO_HELLO, 0);
    if (!r)
        r = proto_put_pairs(&f, pairs, ARRAY_SIZE(pairs));
    if (!r)
        r = proto_buf_finish(&f);
    if (!r)
        r = agent__send(&f, NULL, 0);
    proto_buf_free(&f);
    return r;
}

int agent__send_log(int stream, const char *line, size_t len)
{
    if (len > PROTO_LOG_LINE_MAX)
        len = PROTO_LOG_LINE_MAX;
    struct proto_buf f;
    proto_buf_init(&f);
    int r = proto_buf_begin(&f, PROTO_LOG, 0);
    if (!r)
        r = proto_put_u32(&f, (uint32_t)stream);
    if (!r)
        r = proto_put_raw(&f, line, len);
    if (!r)
        r = proto_buf_finish(&f);
    if (!r)
        r = agent__send(&f, NULL, 0);
    proto_buf_free(&f);
    return r;
}

void agent__warn(const char *fmt, ...)
{
    char line[1024];
    int n = snprintf(line, sizeof(line), "ember-agent: ");
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len >= sizeof(line))
        len = sizeof(line) - 1;
    if (agent__log_active()) {
        agent__send_log(2, line, len);
        return;
    }
    line[len++] = '\n';
    if (write(STDERR_FILENO, line, len) < 0) {
        /* nowhere left to report to */
    }
}

static struct proto_rxbuf instance_rx; /* an instance's channel carries no fds */

bool agent__frame_ready(void)
{
    return proto_rxbuf_has_frame(&instance_rx);
}

void agent__recv_frame(struct proto_hdr *h, uint8_t **payload, int *fds, int *n_fds, bool *borrowed)
{
    if (n_fds)
        *n_fds = 0;
    if (borrowed)
        *borrowed = false;
    int r = fds ? proto_recv_frame(AGENT_CHAN_FD, h, payload, fds, n_fds)
                : proto_recv_frame_buffered(AGENT_CHAN_FD, &instance_rx, h, payload, borrowed);
    if (r == -ECONNRESET)
        _exit(0); /* emberd closed the channel: nothing left to do */
    if (r < 0) {
        agent__warn("channel: %s", strerror(-r));
        _exit(1);
    }
}
