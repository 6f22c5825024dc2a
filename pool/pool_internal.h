/* pool_internal.h - the pool's data structures, shared by pool.c (lifetime,
 * eviction, periodic work), start.c (where instances come from), calls.c
 * (placing calls), knobs.c (configuration) and stats.c (metrics, histograms,
 * logs). Not for use outside pool/. */
#ifndef EMBER_POOL_INTERNAL_H
#define EMBER_POOL_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "common/list.h"
#include "pool/pool.h"

/* Latency histogram: fixed Prometheus buckets (seconds) plus a log-linear
 * sketch for percentiles in JSON. */
#define POOL_HIST_BUCKETS 17
extern const double pool__hist_bounds[POOL_HIST_BUCKETS]; /* upper bounds, s; last = +Inf */

struct pool_hist {
    uint64_t buckets[POOL_HIST_BUCKETS]; /* non-cumulative counts */
    uint64_t count;
    double sum_s;
};

void pool__hist_add(struct pool_hist *h, uint64_t ns);
/** Approximate quantile (0..1) from the buckets, in seconds. */
double pool__hist_quantile(const struct pool_hist *h, double q);

/* Function log ring: recent lines, bounded by count and bytes. */
#define POOL_LOG_LINES 1000
#define POOL_LOG_BYTES (256u << 10)

struct pool_log_line {
    int64_t time_ms;
    uint64_t instance;
    int stream;
    char *line;
    size_t len;
};

struct pool_log {
    struct pool_log_line lines[POOL_LOG_LINES];
    size_t head, count, bytes;
    uint64_t dropped;
};

void pool__log_add(struct pool_log *l, uint64_t instance, int stream, const char *line,
                   size_t len);
void pool__log_free(struct pool_log *l);

enum pool_sb_state {
    PSB_STARTING, /* being created / specialized / forked */
    PSB_STEM,     /* ready stem cell */
    PSB_ZYGOTE,   /* ready zygote */
    PSB_IDLE,     /* instance with no call */
    PSB_BUSY,     /* instance with calls in flight */
};

struct pool_fn;
struct pool_call;

/** One sandbox the pool owns: a stem cell, a zygote or an instance. */
struct pool_sb {
    struct pool *pool;
    struct sandbox *sb;
    enum sandbox_kind kind;
    enum sandbox_role role;
    enum pool_sb_state state;
    struct pool_fn *fn;              /* NULL for stem cells */
    struct function_record *rec;     /* version it runs (zygote, instance) */
    struct pool_sb *zygote;          /* instance: the zygote it came from */
    uint32_t children;               /* zygote: live instances forked from it */
    struct list link;                /* stem list, fn->instances or fn->zygotes */
    struct list lru;                 /* pool->idle_lru while idle */
    struct list waiters;             /* zygote starting: instances waiting to fork */
    struct list wait_link;           /* instance: in its zygote's waiters */
    uint64_t charge;                 /* bytes in the memory ledger */
    bool prefork;                    /* zygote: keeps an instance forked ahead
                                        (charged twice its function's memory) */
    uint32_t inflight;
    uint64_t calls;
    uint64_t last_used_ns;
    bool retiring;                   /* destroy once idle */
    bool destroying;                 /* inside pool__psb_destroy: ignore callbacks */
    struct pool_call *reserved;      /* call that waits for this instance */
    enum pool_acquire acquire;       /* how this instance came to be */
    uint64_t started_ns;
};

/** A function known to the pool. */
struct pool_fn {
    struct list link;
    char name[STORE_NAME_MAX + 1];
    struct function_record *rec;     /* current version (own ref) */
    struct pool_fn_knobs over;
    struct pool_sb *zygote;          /* of the current version, or NULL */
    struct list zygotes;             /* retired zygotes still parenting instances */
    struct list instances;           /* pool_sb.link */
    uint32_t n_instances;            /* including starting */
    struct list queue;               /* pool_call.link */
    uint32_t queue_len;
    bool removed;
    bool snapshot_ready;             /* microVM: a specialize of this version worked */
    uint64_t run_ewma_ns;            /* how long a call holds an instance */
    uint64_t run_fast_ns;            /* ...the fastest lately (loop wait left out) */
    uint64_t last_done_ns;           /* an instance last finished a call */
    bool want_zygote;                /* container: the first instance served by
                                        itself; make the zygote off its path */
    uint64_t last_used_ns;

    /* counters */
    uint64_t calls, errors, acquired[POOL_ACQUIRE_COUNT], timeouts, ooms, crashes, rejected;
    uint64_t sent_ahead;             /* calls sent to a busy instance to wait there */
    uint64_t requeued;               /* ...and back to the queue: their instance died first */
    struct pool_hist acquire_hist, run_hist, queue_hist;
    struct pool_log log;
};

/** One call, from pool_invoke to its callback. */
struct pool_call {
    struct list link;                /* fn->queue while queued */
    struct pool *pool;
    struct pool_fn *fn;
    struct function_record *rec;     /* own ref */
    struct sandbox_call call;        /* borrowed strings: valid until cb / cancel */
    pool_result_cb cb;
    void *data;
    bool cancelled, queued;
    uint64_t id;
    uint64_t t_arrive, t_dequeue, t_acquired;
    uint64_t deadline_ns;            /* queue timeout */
    uint64_t init_ns;
    uint64_t pending_ns;             /* sent ahead: waited in the instance */
    enum pool_acquire acquire;
    struct pool_sb *psb;             /* instance running it */
    bool acquiring;                  /* counted in pool->acquiring */
    bool requeued;                   /* back from an instance unstarted: it
                                        is not sent ahead a second time */
};

struct pool {
    uv_loop_t *loop;
    struct store *store;
    struct pool_knobs knobs;
    struct pool_fn_knobs default_over;
    enum sandbox_kind default_kind;
    struct sandbox_backend *be[SANDBOX_KIND_COUNT];
    char be_err[SANDBOX_KIND_COUNT][256];

    struct list stems[SANDBOX_KIND_COUNT];
    uint32_t n_stems[SANDBOX_KIND_COUNT];         /* ready */
    uint32_t n_stems_starting[SANDBOX_KIND_COUNT];

    struct list functions;
    struct list idle_lru;            /* idle instances, oldest first */
    uint64_t mem_charged, mem_peak;

    uv_timer_t sweep;
    uv_idle_t kick;
    uv_timer_t rescan;               /* queued calls that chose to wait */
    bool kick_pending;
    bool draining;
    void (*drain_done)(void *);
    void *drain_data;
    uint32_t live_sandboxes;         /* allocated pool_sb */
    uint32_t acquiring;              /* calls waiting for a new instance */
    uint32_t ncpu;                   /* CPUs online at start */
    uint64_t loop_window_ns;         /* calls.c loop_saturated: window start, */
    uint64_t loop_idle_ns;           /* ...the loop's idle time then, */
    bool loop_saturated;             /* ...the last verdict, */
    uint32_t loop_calm;              /* ...after this many calm windows in a row */
    bool loop_metrics;               /* the loop counts its idle time */
    uint64_t refill_deferred_since;  /* ns; stem refill held back since */
    int closing;                     /* handles whose close callback is pending */

    uint64_t next_call_id;
    uint64_t evictions, rejected, created[POOL_ACQUIRE_COUNT];
    uint64_t forked_ahead; /* instances a zygote had forked ahead */
    uint64_t stems_created, stem_failures;
    struct pool_hist acquire_hist, run_hist;
    uint64_t calls, errors;
};

/* knobs.c */
void pool__fn_knobs_clear(struct pool_fn_knobs *k);
uint64_t pool__fn_keepalive_ms(const struct pool *p, const struct pool_fn *fn);
uint32_t pool__fn_min_warm(const struct pool *p, const struct pool_fn *fn);
uint32_t pool__fn_max_instances(const struct pool *p, const struct pool_fn *fn);
uint64_t pool__fn_max_calls(const struct pool *p, const struct pool_fn *fn);
uint32_t pool__fn_queue_length(const struct pool *p, const struct pool_fn *fn);
uint64_t pool__fn_queue_timeout_ms(const struct pool *p, const struct pool_fn *fn);
uint64_t pool__fn_scale_out_wait_us(const struct pool *p, const struct pool_fn *fn);
uint32_t pool__fn_zygote_prefork(const struct pool *p, const struct pool_fn *fn);
struct pool_fn *pool__fn_get(struct pool *p, const char *name, bool create);
json_t *pool__fn_knobs_json(const struct pool_fn_knobs *k);
int pool__fn_knobs_parse(const json_t *obj, struct pool_fn_knobs *k, const char *name,
                         struct ember_error *err);

/* pool.c */
/** Knobs changed: evict down to the budget, refill stems, honour min_warm. */
void pool__knobs_changed(struct pool *p);
const char *pool__state_name(enum pool_sb_state s);
/** The memory budget, in bytes. */
uint64_t pool__budget_bytes(const struct pool *p);
/** Set what @psb holds in the memory ledger to @bytes (0 gives it all back). */
void pool__charge(struct pool *p, struct pool_sb *psb, uint64_t bytes);
/** What one sandbox of @rec is charged: its manifest's memory_mb, in bytes. */
uint64_t pool__fn_memory(const struct function_record *rec);
/** A new pool_sb in PSB_STARTING, counted as live; NULL when out of memory. */
struct pool_sb *pool__psb_new(struct pool *p, enum sandbox_kind kind, enum sandbox_role role);
/** The one cleanup path of a pool_sb (a zygote with children only retires). */
void pool__psb_destroy(struct pool_sb *psb);
/** Have ready zygote @z keep an instance forked ahead (@on, and the knob
 *  and the budget as it stands allow it), charged as one more sandbox of
 *  its function; or not, giving that charge back. */
void pool__zygote_prefork(struct pool *p, struct pool_sb *z, bool on);
/** Evict until @need more bytes fit in the budget; true if they do. */
bool pool__make_room(struct pool *p, uint64_t need);
/** How many calls one instance of @fn serves at once. */
uint32_t pool__fn_capacity(const struct pool_fn *fn);
/** An instance finished a call or became ready: serve the queue, idle or recycle it. */
void pool__instance_release(struct pool_sb *inst);
/** Walk the lists on the next loop iteration: dispatch, zygotes, stem cells. */
void pool__kick(struct pool *p);

/* start.c */
/** Start stem cells until the knob's count is ready or starting, within budget. */
void pool__stems_refill(struct pool *p);
/** Room in the budget for one more instance of @fn (evicting if need be);
 *  the instance a zygote keeps forked ahead counts as that room. */
bool pool__instance_room(struct pool *p, struct pool_fn *fn);
/** Make the zygote @fn wants, off any call's path, if now is a good time. */
void pool__zygote_background(struct pool *p, struct pool_fn *fn);
/** Start an instance of @fn for @c (NULL: min_warm); 0 or -errno. */
int pool__instance_start(struct pool *p, struct pool_fn *fn, struct pool_call *c);
/** The sandbox kind @fn's manifest asks for, else the pool's default. */
enum sandbox_kind pool__fn_kind(const struct pool *p, const struct pool_fn *fn);

/* calls.c */
/** A call stopped waiting for a new instance (it got one, or failed). */
void pool__acquired_done(struct pool_call *c);
/** Fail call @c with @http_status and complete it (taking it off its queue). */
void pool__call_finish_error(struct pool_call *c, int http_status, enum sandbox_error err,
                             const char *error_name, const char *detail);
/** Run call @c on @inst, which has room for it. */
void pool__instance_run(struct pool_sb *inst, struct pool_call *c);
/** @inst is busy and the queue is not empty: send it the queue's next call
 *  to wait in the instance, if the rule for that allows (calls.c). */
void pool__send_ahead(struct pool_sb *inst);
/** Place what the queues hold; with @zygotes also make the zygotes functions want. */
void pool__dispatch_all(struct pool *p, bool zygotes);

#endif
