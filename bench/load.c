/* load.c - open-loop load: requests are due at times fixed in advance by
 * the arrival pattern, whatever the server does, and each latency is taken
 * from the request's *intended* send time. When every connection is busy a
 * due request waits for the next free one and that wait counts in its
 * latency, so a stalled server shows up as high percentiles instead of as
 * fewer samples (no coordinated omission).
 *
 * Arrivals are generated lazily; a timerfd armed at the next arrival's
 * absolute CLOCK_MONOTONIC time wakes the loop with microsecond precision
 * (libuv's own timers tick in milliseconds). How late the generator
 * actually sent is kept separately as "send lag", so its own overhead is
 * visible in the report.
 */
#include "bench/bench.h"
#include "common/clock.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/timerfd.h>
#include <unistd.h>

const char *const load_err_names[LERR__COUNT] = {"timeout", "connect", "io", "protocol", "unsent"};

/* ---- results ------------------------------------------------------------ */

int load_result_init(struct load_result *r)
{
    memset(r, 0, sizeof(*r));
    r->peak_memory_bytes = -1;
    r->peak_sandboxes = -1;
    r->latency = hist_new();
    r->send_lag = hist_new();
    bool ok = r->latency && r->send_lag;
    for (int k = 0; k < ACQ__COUNT; k++) {
        r->kind_latency[k] = hist_new();
        ok = ok && r->kind_latency[k];
    }
    if (!ok) {
        load_result_destroy(r);
        return -ENOMEM;
    }
    return 0;
}

void load_result_destroy(struct load_result *r)
{
    free(r->latency);
    free(r->send_lag);
    for (int k = 0; k < ACQ__COUNT; k++)
        free(r->kind_latency[k]);
    free(r->records);
    memset(r, 0, sizeof(*r));
}

uint64_t load_result_errors(const struct load_result *r)
{
    uint64_t n = 0;
    for (int e = 0; e < LERR__COUNT; e++)
        n += r->errs[e];
    for (int s = 400; s < 600; s++)
        n += r->status_counts[s];
    return n;
}

double load_result_cold_ratio(const struct load_result *r)
{
    uint64_t named = 0;
    for (int k = 0; k < ACQ_NONE; k++)
        named += r->kinds[k];
    if (!named)
        return -1;
    return (double)(named - r->kinds[ACQ_WARM]) / (double)named;
}

/* ---- arrivals ----------------------------------------------------------- */

/* xoshiro256** seeded through splitmix64: fast, and the same seed gives the
 * same Poisson schedule on every run and every machine. */
struct rng {
    uint64_t s[4];
};

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(struct rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform in [0, 1). */
static double rng_unit(struct rng *r)
{
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

struct arrivals {
    const struct load_config *cfg;
    struct rng rng;
    uint64_t i; /* arrivals handed out so far */
    uint64_t limit_ns, max;
    double poisson_t; /* ns */
    bool done;
    uint64_t t; /* the next arrival, from the start */
    uint32_t fn;
    uint32_t rr; /* i modulo the number of functions */
};

static void arrivals_peek(struct arrivals *a)
{
    const struct load_config *cfg = a->cfg;
    if (a->i >= a->max) {
        a->done = true;
        return;
    }
    a->fn = a->rr; /* round-robin, without a division per arrival */
    switch (cfg->pattern) {
    case PAT_CONSTANT:
        a->t = (uint64_t)((double)a->i * (1e9 / cfg->rate));
        break;
    case PAT_POISSON:
        /* Exponential gaps with mean 1/rate; 1 - u is in (0, 1]. */
        a->poisson_t += -log(1.0 - rng_unit(&a->rng)) * (1e9 / cfg->rate);
        a->t = (uint64_t)a->poisson_t;
        break;
    case PAT_BURST:
        a->t = (a->i / cfg->burst_size) * (uint64_t)cfg->burst_interval_ms * 1000000ull;
        break;
    case PAT_TRACE:
        if (a->i >= cfg->n_trace) {
            a->done = true;
            return;
        }
        a->t = cfg->trace[a->i].t_ns;
        a->fn = cfg->trace[a->i].fn;
        break;
    }
    if (a->t >= a->limit_ns)
        a->done = true;
}

static void arrivals_init(struct arrivals *a, const struct load_config *cfg)
{
    memset(a, 0, sizeof(*a));
    a->cfg = cfg;
    uint64_t x = cfg->seed;
    for (int k = 0; k < 4; k++)
        a->rng.s[k] = splitmix64(&x);
    a->limit_ns = (uint64_t)(cfg->duration_s * 1e9);
    a->max = cfg->max_requests ? cfg->max_requests : UINT64_MAX;
    arrivals_peek(a);
}

static void arrivals_advance(struct arrivals *a)
{
    a->i++;
    if (++a->rr >= a->cfg->n_fns)
        a->rr = 0;
    arrivals_peek(a);
}

/* ---- the run ------------------------------------------------------------ */

struct load;

struct lconn {
    struct hconn h;
    struct load *L;
    uint64_t intended; /* ns from start */
    uint32_t fn;
    bool busy;
};

struct pending {
    uint64_t t;
    uint32_t fn;
};

struct mconn {
    struct hconn h;
    struct load *L;
    char *head;
    bool busy;
};

struct load {
    uv_loop_t *loop;
    const struct load_config *cfg;
    struct load_result *res;
    struct lconn *conns;
    uint32_t n_conns;
    uint32_t *idle; /* stack of idle connection indices */
    uint32_t n_idle;
    struct arrivals arr;
    uint64_t start; /* ember_now_ns() at t = 0 */
    uint64_t in_flight;
    bool arrivals_done, finishing;
    bool armed; /* the timerfd is set for armed_for */
    uint64_t armed_for;
    int tfd;
    uv_poll_t tpoll;
    uv_timer_t tick;
    uint64_t next_progress_ns, last_progress_at, last_completed;
    uv_timer_t mtimer;
    struct mconn metrics;
    unsigned open_handles;
};

static void on_handle_closed(uv_handle_t *h)
{
    struct load *L = h->data;
    L->open_handles--;
}

static void close_handle(struct load *L, uv_handle_t *h)
{
    if (!uv_is_closing(h)) {
        h->data = L;
        uv_close(h, on_handle_closed);
    }
}

static void run_finish(struct load *L);

static void record_push(struct load_result *r, const struct load_record *rec)
{
    if (r->n_records == r->cap_records) {
        size_t cap = r->cap_records ? r->cap_records * 2 : 4096;
        struct load_record *p = realloc(r->records, cap * sizeof(*p));
        if (!p)
            return; /* the summary still counts it */
        r->records = p;
        r->cap_records = cap;
    }
    r->records[r->n_records++] = *rec;
}

static enum load_err classify(int err)
{
    switch (err) {
    case UV_ETIMEDOUT:
        return LERR_TIMEOUT;
    case UV_ECONNREFUSED:
    case UV_ENETUNREACH:
    case UV_EHOSTUNREACH:
    case UV_EADDRNOTAVAIL:
    case UV_EADDRINUSE:
    case UV_EMFILE:
        return LERR_CONNECT;
    case UV_EPROTO:
        return LERR_PROTO;
    default:
        return LERR_IO;
    }
}

/* @now: ember_now_ns() if the caller just read it, else 0. */
static void send_on(struct load *L, struct lconn *lc, uint64_t t, uint32_t fn, uint64_t now)
{
    const struct load_config *cfg = L->cfg;
    if (!now)
        now = ember_now_ns();
    uint64_t due = L->start + t;
    hist_record(L->res->send_lag, now > due ? now - due : 0);
    lc->intended = t;
    lc->fn = fn;
    lc->busy = true;
    L->in_flight++;
    L->res->sent++;
    const struct load_fn *f = &cfg->fns[fn];
    uv_buf_t bufs[2] = {uv_buf_init(f->head, (unsigned)f->head_len),
                        uv_buf_init((char *)cfg->body, (unsigned)cfg->body_len)};
    hconn_send(&lc->h, bufs, cfg->body_len ? 2 : 1, cfg->head_method, now);
}

/*
 * Due requests wait in the generator itself: nothing is generated, and no
 * timer armed, just because an arrival is due while no connection is free.
 * The next connection to finish takes the oldest due request (arrivals come
 * out in time order), so overload costs no memory and no work per waiting
 * request, and the backlog is computed rather than stored.
 */
static void generator_advance(struct load *L)
{
    L->res->scheduled++;
    arrivals_advance(&L->arr);
    if (L->arr.done)
        L->arrivals_done = true;
}

/* The oldest request due by @now (from the start), if any. */
static bool take_due(struct load *L, uint64_t now, struct pending *out)
{
    if (L->arr.done || L->arr.t > now)
        return false;
    *out = (struct pending){L->arr.t, L->arr.fn};
    generator_advance(L);
    return true;
}

/* Due by @now and not sent yet: exact for constant, burst and trace, the
 * expected number for Poisson. */
static uint64_t backlog_at(const struct load *L, uint64_t now)
{
    const struct arrivals *a = &L->arr;
    const struct load_config *cfg = L->cfg;
    if (a->done || a->t > now)
        return 0;
    uint64_t due = 0;
    switch (cfg->pattern) {
    case PAT_CONSTANT:
        due = (uint64_t)((double)now * cfg->rate / 1e9) + 1;
        break;
    case PAT_POISSON:
        due = a->i + 1 + (uint64_t)((double)(now - a->t) * cfg->rate / 1e9);
        break;
    case PAT_BURST:
        due = (now / ((uint64_t)cfg->burst_interval_ms * 1000000ull) + 1) * cfg->burst_size;
        break;
    case PAT_TRACE: {
        size_t lo = a->i, hi = cfg->n_trace; /* first event after now */
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (cfg->trace[mid].t_ns <= now)
                lo = mid + 1;
            else
                hi = mid;
        }
        due = lo;
        break;
    }
    }
    if (due > a->max)
        due = a->max;
    return due > a->i ? due - a->i : 0;
}

static void maybe_done(struct load *L)
{
    if (L->arrivals_done && L->in_flight == 0)
        run_finish(L);
}

static void on_conn_response(struct hconn *h, int err)
{
    struct lconn *lc = container_of(h, struct lconn, h);
    struct load *L = lc->L;
    struct load_result *r = L->res;
    if (!lc->busy)
        return;
    lc->busy = false;
    L->in_flight--;

    struct load_record rec = {.intended_ns = lc->intended, .fn = lc->fn, .kind = ACQ_NONE};
    for (int p = 0; p < PH__COUNT; p++)
        rec.phase_ms[p] = -1;
    if (err == 0) {
        uint64_t due = L->start + lc->intended;
        uint64_t lat = h->resp.done_ns > due ? h->resp.done_ns - due : 0;
        int status = h->resp.status;
        struct timing tm;
        httpc_timing_parse(h->resp.timing, h->resp.timing_len, &tm);
        r->completed++;
        r->status_counts[status >= 0 && status < 600 ? status : 0]++;
        if (status >= 200 && status < 400)
            r->ok++;
        hist_record(r->latency, lat);
        hist_record(r->kind_latency[tm.kind], lat);
        r->kinds[tm.kind]++;
        for (int p = 0; p < PH__COUNT; p++) {
            if (tm.have & (1u << p)) {
                r->phase_sum_ms[p] += tm.dur_ms[p];
                r->phase_n[p]++;
                rec.phase_ms[p] = (float)tm.dur_ms[p];
            }
        }
        rec.latency_ns = lat;
        rec.status = (uint16_t)status;
        rec.kind = (uint8_t)tm.kind;
    } else {
        enum load_err e = classify(err);
        r->errs[e]++;
        rec.err = (uint8_t)(e + 1);
    }
    if (L->cfg->keep_records)
        record_push(r, &rec);
}

static void arm(struct load *L);

static void on_conn_idle(struct hconn *h)
{
    struct lconn *lc = container_of(h, struct lconn, h);
    struct load *L = lc->L;
    if (L->finishing)
        return;
    struct pending p;
    uint64_t now = ember_now_ns() - L->start;
    if (take_due(L, now, &p)) {
        /* It waited for this connection: note how many still do. */
        uint64_t backlog = backlog_at(L, now);
        if (backlog > L->res->max_backlog)
            L->res->max_backlog = backlog;
        send_on(L, lc, p.t, p.fn, now + L->start);
        return;
    }
    L->idle[L->n_idle++] = (uint32_t)(lc - L->conns);
    arm(L);
    maybe_done(L);
}

static void on_conn_closed(struct hconn *h)
{
    struct lconn *lc = container_of(h, struct lconn, h);
    lc->L->open_handles--;
}

static const struct hconn_ops conn_ops = {
    .on_response = on_conn_response,
    .on_idle = on_conn_idle,
    .on_closed = on_conn_closed,
};

/* ---- scheduler ----------------------------------------------------------- */

/* Wake at the next arrival, if a connection is idle to send it; one
 * timerfd_settime per arrival at most. */
static void arm(struct load *L)
{
    if (L->arr.done || L->n_idle == 0 || L->finishing)
        return;
    if (L->armed && L->armed_for == L->arr.t)
        return;
    uint64_t at = L->start + L->arr.t;
    struct itimerspec its = {.it_value = {.tv_sec = (time_t)(at / 1000000000ull),
                                          .tv_nsec = (long)(at % 1000000000ull)}};
    if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
        its.it_value.tv_nsec = 1; /* zero would disarm */
    timerfd_settime(L->tfd, TFD_TIMER_ABSTIME, &its, NULL);
    L->armed = true;
    L->armed_for = L->arr.t;
}

/* Send what is due on idle connections, then sleep until the next arrival. */
static void pump(struct load *L)
{
    if (L->finishing)
        return;
    uint64_t now = ember_now_ns() - L->start;
    struct pending p;
    while (L->n_idle > 0 && take_due(L, now, &p))
        send_on(L, &L->conns[L->idle[--L->n_idle]], p.t, p.fn, 0);
    arm(L);
    maybe_done(L);
}

static void on_tfd(uv_poll_t *p, int status, int events)
{
    struct load *L = container_of(p, struct load, tpoll);
    uint64_t expirations;
    ssize_t n = read(L->tfd, &expirations, sizeof(expirations));
    (void)n; /* EAGAIN when a re-arm raced the wakeup; pump decides anyway */
    L->armed = false;
    pump(L);
}

/* ---- GET /metrics while the run goes ---------------------------------- */

bool load_metrics_sum(const char *text, const char *name, double *out)
{
    size_t nl = strlen(name);
    bool found = false;
    double sum = 0;
    for (const char *line = text; line && *line;) {
        const char *eol = strchr(line, '\n');
        const char *end = eol ? eol : line + strlen(line);
        if (*line != '#' && (size_t)(end - line) > nl && strncmp(line, name, nl) == 0 &&
            (line[nl] == '{' || line[nl] == ' ' || line[nl] == '\t')) {
            const char *p = line + nl;
            if (*p == '{') {
                bool quoted = false;
                for (p++; p < end; p++) {
                    if (quoted && *p == '\\' && p + 1 < end)
                        p++;
                    else if (*p == '"')
                        quoted = !quoted;
                    else if (!quoted && *p == '}')
                        break;
                }
                if (p < end)
                    p++;
            }
            char num[64];
            while (p < end && (*p == ' ' || *p == '\t'))
                p++;
            size_t k = 0;
            while (p < end && *p != ' ' && *p != '\t' && *p != '\r' && k < sizeof(num) - 1)
                num[k++] = *p++;
            num[k] = '\0';
            char *e;
            double v = strtod(num, &e);
            if (k > 0 && e != num && isfinite(v)) {
                sum += v;
                found = true;
            }
        }
        line = eol ? eol + 1 : NULL;
    }
    if (found)
        *out = sum;
    return found;
}

static void on_metrics_response(struct hconn *h, int err)
{
    struct mconn *m = container_of(h, struct mconn, h);
    struct load_result *r = m->L->res;
    m->busy = false;
    if (err || h->resp.status != 200 || !h->resp.body)
        return;
    r->metrics_polls++;
    double v;
    if (load_metrics_sum(h->resp.body, "ember_pool_memory_bytes", &v) &&
        (int64_t)v > r->peak_memory_bytes)
        r->peak_memory_bytes = (int64_t)v;
    if (load_metrics_sum(h->resp.body, "ember_sandboxes", &v) && (int64_t)v > r->peak_sandboxes)
        r->peak_sandboxes = (int64_t)v;
}

static void on_metrics_idle(struct hconn *h)
{
}

static void on_metrics_closed(struct hconn *h)
{
    struct mconn *m = container_of(h, struct mconn, h);
    m->L->open_handles--;
}

static const struct hconn_ops metrics_ops = {
    .on_response = on_metrics_response,
    .on_idle = on_metrics_idle,
    .on_closed = on_metrics_closed,
};

static void on_mtimer(uv_timer_t *t)
{
    struct load *L = container_of(t, struct load, mtimer);
    struct mconn *m = &L->metrics;
    if (m->busy || L->finishing)
        return;
    m->busy = true;
    uv_buf_t b = uv_buf_init(m->head, (unsigned)strlen(m->head));
    hconn_send(&m->h, &b, 1, false, 0);
}

/* ---- periodic: timeouts, drain deadline, progress --------------------- */

static void progress(struct load *L, uint64_t now)
{
    struct load_result *r = L->res;
    char p99[32] = "-";
    if (r->completed)
        report_fmt_ns(p99, sizeof(p99), (double)hist_percentile(r->latency, 99.0));
    double dt = (double)(now - L->last_progress_at) / 1e9;
    uint64_t finished = r->completed;
    for (int e = 0; e < LERR__COUNT; e++)
        finished += r->errs[e];
    uint64_t backlog = backlog_at(L, now - L->start);
    fprintf(stderr,
            "[%5.1fs] sent %-8llu done %-8llu in-flight %-5llu backlog %-6llu rps %-8.0f "
            "p99 %-10s errors %llu%s\n",
            (double)(now - L->start) / 1e9, (unsigned long long)r->sent,
            (unsigned long long)finished, (unsigned long long)L->in_flight,
            (unsigned long long)backlog,
            dt > 0 ? (double)(r->completed - L->last_completed) / dt : 0.0, p99,
            (unsigned long long)load_result_errors(r), L->arrivals_done ? "  draining" : "");
    L->last_completed = r->completed;
    L->last_progress_at = now;
}

static void on_tick(uv_timer_t *t)
{
    struct load *L = container_of(t, struct load, tick);
    const struct load_config *cfg = L->cfg;
    uint64_t now = ember_now_ns();
    uint64_t timeout_ns = (uint64_t)cfg->timeout_ms * 1000000ull;
    for (uint32_t i = 0; i < L->n_conns; i++) {
        struct lconn *lc = &L->conns[i];
        if (lc->busy && now - lc->h.sent_ns > timeout_ns)
            hconn_abort(&lc->h, UV_ETIMEDOUT);
    }
    /* Send what an idle connection can take (a late timer wakeup, say). */
    pump(L);
    uint64_t backlog = backlog_at(L, now - L->start);
    if (backlog > L->res->max_backlog)
        L->res->max_backlog = backlog;
    if (!cfg->quiet && now >= L->next_progress_ns) {
        progress(L, now);
        L->next_progress_ns += 1000000000ull;
    }
    /* Past the last arrival plus one timeout nothing can still be on time. */
    uint64_t deadline = L->start + (uint64_t)(cfg->duration_s * 1e9) + timeout_ns;
    if (now >= deadline && !L->finishing) {
        L->finishing = true; /* no more sends while the aborts call back */
        for (uint32_t i = 0; i < L->n_conns; i++)
            if (L->conns[i].busy)
                hconn_abort(&L->conns[i].h, UV_ETIMEDOUT);
        while (!L->arr.done) { /* due long ago, never sent */
            L->res->errs[LERR_UNSENT]++;
            generator_advance(L);
        }
        L->finishing = false;
        run_finish(L);
    }
}

static void run_finish(struct load *L)
{
    if (L->finishing)
        return;
    L->finishing = true;
    uint64_t now = ember_now_ns();
    /* Arrivals spread over the whole duration when time ended them, even if
     * the last one fell a gap short of it; a run ended by --max-requests or
     * the end of a trace took only as long as it took. */
    L->res->elapsed_s = (double)(now - L->start) / 1e9;
    if (L->arr.t >= L->arr.limit_ns && L->res->elapsed_s < L->cfg->duration_s)
        L->res->elapsed_s = L->cfg->duration_s;
    /* Unsent backlog (drain deadline) was counted by the caller. */
    close_handle(L, (uv_handle_t *)&L->tpoll);
    close_handle(L, (uv_handle_t *)&L->tick);
    if (L->cfg->metrics_poll_ms) {
        close_handle(L, (uv_handle_t *)&L->mtimer);
        hconn_close_final(&L->metrics.h);
    }
    for (uint32_t i = 0; i < L->n_conns; i++)
        hconn_close_final(&L->conns[i].h);
}

static void on_wake(uv_timer_t *t)
{
}

/* Connect every connection before t = 0, so connection setup is not charged
 * to the first requests. Bounded: 5 s, after which the run starts anyway and
 * the failures show up as connect errors. */
static void preconnect(struct load *L)
{
    for (uint32_t i = 0; i < L->n_conns; i++)
        hconn_connect(&L->conns[i].h);
    uint64_t until = ember_now_ns() + 5000000000ull;
    uv_timer_start(&L->tick, on_wake, 10, 10);
    for (;;) {
        uint32_t connecting = 0;
        for (uint32_t i = 0; i < L->n_conns; i++)
            connecting +=
                L->conns[i].h.state == HCONN_CONNECTING || L->conns[i].h.state == HCONN_CLOSING;
        if (!connecting || ember_now_ns() > until)
            break;
        uv_run(L->loop, UV_RUN_ONCE);
    }
    uv_timer_stop(&L->tick);
}

int load_run(uv_loop_t *loop, const struct load_config *cfg, struct load_result *res)
{
    struct load *L = calloc(1, sizeof(*L));
    if (!L)
        return -ENOMEM;
    int rc = 0;
    L->loop = loop;
    L->cfg = cfg;
    L->res = res;
    L->n_conns = cfg->connections;
    L->conns = calloc(L->n_conns, sizeof(*L->conns));
    L->idle = calloc(L->n_conns, sizeof(*L->idle));
    if (!L->conns || !L->idle) {
        rc = -ENOMEM;
        goto err_alloc;
    }
    L->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (L->tfd < 0) {
        rc = -errno;
        goto err_alloc;
    }
    rc = uv_poll_init(loop, &L->tpoll, L->tfd);
    if (rc < 0)
        goto err_tfd;
    L->open_handles++;
    uv_timer_init(loop, &L->tick);
    L->open_handles++;
    for (uint32_t i = 0; i < L->n_conns; i++) {
        hconn_init(&L->conns[i].h, loop, cfg->target, &conn_ops);
        L->conns[i].L = L;
        L->open_handles++;
    }
    if (cfg->metrics_poll_ms) {
        hconn_init(&L->metrics.h, loop, cfg->target, &metrics_ops);
        L->metrics.h.keep_body = true;
        L->metrics.L = L;
        L->metrics.head = httpc_format_head(cfg->target, "GET", "/metrics", NULL, 0);
        uv_timer_init(loop, &L->mtimer);
        L->open_handles += 2;
    }

    /* The default 50 us timer slack would be charged to every latency. */
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    preconnect(L);
    /* Every connection starts idle, lowest index on top. */
    for (uint32_t i = 0; i < L->n_conns; i++)
        L->idle[L->n_idle++] = L->n_conns - 1 - i;

    arrivals_init(&L->arr, cfg);
    L->start = ember_now_ns();
    L->next_progress_ns = L->start + 1000000000ull;
    L->last_progress_at = L->start;
    uint64_t tick_ms = cfg->timeout_ms / 4 ? cfg->timeout_ms / 4 : 1;
    if (tick_ms > 50)
        tick_ms = 50;
    uv_timer_start(&L->tick, on_tick, tick_ms, tick_ms);
    if (cfg->metrics_poll_ms && L->metrics.head)
        uv_timer_start(&L->mtimer, on_mtimer, 0, cfg->metrics_poll_ms);
    uv_poll_start(&L->tpoll, UV_READABLE, on_tfd);
    pump(L);

    uv_run(loop, UV_RUN_DEFAULT);
    /* Handles we closed are all gone once the loop ran dry. */
    if (L->open_handles != 0)
        fprintf(stderr, "ember-bench: warning: %u handles still open after the run\n",
                L->open_handles);

    if (cfg->metrics_poll_ms) {
        /* One more look after the load, which is when a pool is often largest. */
        char *body = NULL;
        if (httpc_call(loop, cfg->target, "GET", "/metrics", NULL, NULL, 0, 2000, &body, NULL) ==
                200 &&
            body) {
            double v;
            res->metrics_polls++;
            if (load_metrics_sum(body, "ember_pool_memory_bytes", &v) &&
                (int64_t)v > res->peak_memory_bytes)
                res->peak_memory_bytes = (int64_t)v;
            if (load_metrics_sum(body, "ember_sandboxes", &v) && (int64_t)v > res->peak_sandboxes)
                res->peak_sandboxes = (int64_t)v;
        }
        free(body);
        hconn_destroy(&L->metrics.h);
        free(L->metrics.head);
    }
    for (uint32_t i = 0; i < L->n_conns; i++)
        hconn_destroy(&L->conns[i].h);
    rc = 0;
err_tfd:
    close(L->tfd);
err_alloc:
    free(L->idle);
    free(L->conns);
    free(L);
    return rc;
}
