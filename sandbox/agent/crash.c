/* crash.c - a fatal signal in function code becomes an answer, then death.
 *
 * When the handler crashes, emberd should learn why ("killed by signal 11
 * (SIGSEGV)") for each call in flight rather than only see the process go.
 * The handler runs on an alternate stack (a stack overflow is one of the
 * crashes) and uses async-signal-safe calls only: the frames are built
 * beforehand, one per signal, and the handler copies one to its stack,
 * patches the call id, takes the channel lock (a futex, chan.c) and write()s.
 * Then it restores the default action and re-raises, so the process dies of
 * the original signal (emberd and the wait status see the truth); pid 1,
 * which cannot raise a fatal signal at itself, exits with 128 + signal.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "sandbox/agent/agent.h"

#define FRAME_MAX 160
#define ALTSTACK_SIZE (64u << 10)

static const int fatal_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGSYS};

struct prebuilt {
    size_t len;
    uint8_t bytes[FRAME_MAX];
};

static enum agent_crash_mode crash_mode;
static uint32_t crash_load_id;
/* Per mode; a zygote builds its instances' frames at LOAD, so that a fork
 * child finds them made. */
static struct prebuilt frames[3][ARRAY_SIZE(fatal_signals)];
static bool built[3];
static bool handlers_installed; /* kept across forks, like the frames */
/* Slot i: 0 idle, else (1 << 32) | call id. */
static _Atomic uint64_t *slots;
static unsigned n_slots;
static atomic_flag crashing = ATOMIC_FLAG_INIT;

void agent__signal_describe(int sig, char *buf, size_t len)
{
    const char *abbrev = sigabbrev_np(sig);
    if (abbrev)
        snprintf(buf, len, "killed by signal %d (SIG%s)", sig, abbrev);
    else
        snprintf(buf, len, "killed by signal %d", sig);
}

void agent__crash_slot_set(unsigned slot, uint32_t id)
{
    if (slot < n_slots)
        atomic_store(&slots[slot], (1ull << 32) | id);
}

void agent__crash_slot_clear(unsigned slot)
{
    if (slot < n_slots)
        atomic_store(&slots[slot], 0);
}

static void set_id(struct prebuilt *f, uint32_t id)
{
    memcpy(f->bytes + offsetof(struct proto_hdr, id), &id, sizeof(id));
}

static void on_fatal(int sig, siginfo_t *si, void *uctx)
{
    int saved = errno;
    /* A second crashing thread waits for the first to take the process down. */
    if (atomic_flag_test_and_set(&crashing)) {
        for (;;)
            pause();
    }
    size_t k = 0;
    while (k < ARRAY_SIZE(fatal_signals) && fatal_signals[k] != sig)
        k++;
    if (k < ARRAY_SIZE(fatal_signals) && crash_mode != AGENT_CRASH_NONE &&
        agent__chan_lock_signal(1000) == 0) {
        struct prebuilt f = frames[crash_mode][k];
        if (crash_mode == AGENT_CRASH_LOAD) {
            set_id(&f, crash_load_id);
            agent__chan_write_raw(f.bytes, f.len);
        } else {
            for (unsigned i = 0; i < n_slots; i++) {
                uint64_t v = atomic_load(&slots[i]);
                if (!v)
                    continue;
                set_id(&f, (uint32_t)v);
                agent__chan_write_raw(f.bytes, f.len);
            }
        }
        agent__chan_unlock_signal();
    }
    /* pid 1 of its namespace (a sandbox serving itself) ignores a signal it
     * raises with the default action: only a forced one would kill it. The
     * answer above told the truth; end the same way every time. */
    if (getpid() == 1)
        _exit(128 + sig);
    struct sigaction sa = {.sa_handler = SIG_DFL};
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
    /* Pending until we return (sig is blocked in here); a fault would also
     * re-trigger on its own when the instruction runs again. */
    raise(sig);
    errno = saved;
}

static int prebuild(enum agent_crash_mode mode)
{
    if (built[mode])
        return 0;
    for (size_t k = 0; k < ARRAY_SIZE(fatal_signals); k++) {
        char msg[96];
        agent__signal_describe(fatal_signals[k], msg, sizeof(msg));
        struct proto_buf b;
        proto_buf_init(&b);
        int r;
        if (mode == AGENT_CRASH_LOAD) {
            char m[128];
            snprintf(m, sizeof(m), "function %s while loading", msg);
            r = proto_buf_begin(&b, PROTO_LOADED, 0);
            if (!r)
                r = proto_put_u32(&b, ECANCELED);
            if (!r)
                r = proto_put_bytes(&b, m, strlen(m));
            if (!r)
                r = proto_put_u64(&b, 0);
            if (!r)
                r = proto_buf_finish(&b);
        } else {
            r = agent__frame_failed(&b, 0, PROTO_FAIL_CRASH, "%s", msg);
        }
        if (!r && b.len > FRAME_MAX)
            r = -EOVERFLOW;
        if (!r) {
            memcpy(frames[mode][k].bytes, b.data, b.len);
            frames[mode][k].len = b.len;
        }
        proto_buf_free(&b);
        if (r)
            return r;
    }
    built[mode] = true;
    return 0;
}

int agent__crash_thread_init(void)
{
    size_t size = ALTSTACK_SIZE;
    long min = sysconf(_SC_SIGSTKSZ);
    if (min > 0 && (size_t)min > size)
        size = (size_t)min;
    stack_t ss = {.ss_size = size, .ss_sp = malloc(size)};
    if (!ss.ss_sp)
        return -ENOMEM;
    if (sigaltstack(&ss, NULL) < 0) {
        int r = -errno;
        free(ss.ss_sp);
        return r;
    }
    /* The stack lives as long as the thread; threads live as long as the
     * process. */
    return 0;
}

int agent__crash_init(enum agent_crash_mode mode, uint32_t load_id, unsigned want_slots)
{
    if (mode != AGENT_CRASH_NONE) {
        int r = prebuild(mode);
        if (!r && mode == AGENT_CRASH_LOAD)
            r = prebuild(AGENT_CRASH_INSTANCE); /* for the zygote's children */
        if (r)
            return r;
    }
    if (want_slots > n_slots) {
        /* Set once per process (the instance's workers); never freed. */
        _Atomic uint64_t *s = calloc(want_slots, sizeof(*s));
        if (!s)
            return -ENOMEM;
        slots = s;
        n_slots = want_slots;
    }
    for (unsigned i = 0; i < n_slots; i++)
        atomic_store(&slots[i], 0);
    crash_load_id = load_id;
    crash_mode = mode;

    static bool have_altstack;
    if (!have_altstack) {
        int r = agent__crash_thread_init();
        if (r)
            return r;
        have_altstack = true;
    }
    if (handlers_installed)
        return 0;
    struct sigaction sa = {.sa_sigaction = on_fatal, .sa_flags = SA_SIGINFO | SA_ONSTACK};
    sigemptyset(&sa.sa_mask);
    for (size_t k = 0; k < ARRAY_SIZE(fatal_signals); k++)
        sigaddset(&sa.sa_mask, fatal_signals[k]);
    for (size_t k = 0; k < ARRAY_SIZE(fatal_signals); k++)
        if (sigaction(fatal_signals[k], &sa, NULL) < 0)
            return -errno;
    handlers_installed = true;
    return 0;
}

/* The handlers stay (a fork child would only install them again); in
 * AGENT_CRASH_NONE they report nothing and die of the signal as if there
 * were none. */
void agent__crash_reset(void)
{
    crash_mode = AGENT_CRASH_NONE;
}
