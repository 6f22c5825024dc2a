/* pool.c - the warm pool's own life: what its sandboxes cost against the
 * memory budget, when they are recycled or evicted, the functions it knows,
 * its periodic work, open and shutdown. start.c makes sandboxes; calls.c
 * places calls on them.
 *
 * Ownership: the pool owns every sandbox it creates through a struct pool_sb,
 * and frees it only in pool__psb_destroy (the one cleanup path).
 *
 * Re-entrancy: sandbox callbacks may arrive while the pool walks its lists,
 * so work that walks several lists (dispatching queued calls, refilling stem
 * cells, honouring min_warm) is deferred to one "kick" on the next loop
 * iteration instead of being done from inside callbacks.
 */
#include "pool/pool_internal.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"

#define SWEEP_INTERVAL_MS 50
#define MB (1024ull * 1024ull)

static void maybe_drain_done(struct pool *p);

const char *pool_acquire_name(enum pool_acquire a)
{
    static const char *const names[] = {"warm", "zygote", "stem", "snapshot", "cold"};
    return (unsigned)a < POOL_ACQUIRE_COUNT ? names[a] : "unknown";
}

const char *pool__state_name(enum pool_sb_state s)
{
    static const char *const names[] = {"starting", "stem", "zygote", "idle", "busy"};
    return names[s];
}

/* ---- the memory ledger ------------------------------------------------- */

uint64_t pool__budget_bytes(const struct pool *p)
{
    return p->knobs.memory_budget_mb * MB;
}

void pool__charge(struct pool *p, struct pool_sb *psb, uint64_t bytes)
{
    p->mem_charged -= psb->charge;
    psb->charge = bytes;
    p->mem_charged += bytes;
    if (p->mem_charged > p->mem_peak)
        p->mem_peak = p->mem_charged;
}

uint64_t pool__fn_memory(const struct function_record *rec)
{
    return (uint64_t)rec->manifest.memory_mb * MB;
}

/*
 * The instance a zygote forks ahead waits in the group of the next one, so
 * it may use up to the function's memory before any call: while asked for
 * it is charged as one more sandbox. It is worth no eviction, so it is
 * asked for only when the budget has room as it stands, and it is the
 * first thing pool__make_room takes back. (Room for it and one instance
 * more: a pool at the edge of its budget would otherwise fork one, take it
 * back for the next instance, and fork one again at the next sweep.)
 */
void pool__zygote_prefork(struct pool *p, struct pool_sb *z, bool on)
{
    if (!z->sb || z->state != PSB_ZYGOTE || z->destroying)
        return;
    uint64_t mem = pool__fn_memory(z->rec);
    on = on && !z->retiring && z->fn && z->fn->zygote == z && pool__fn_zygote_prefork(p, z->fn);
    if (on == z->prefork)
        return;
    if (on) {
        if (p->mem_charged + 2 * mem > pool__budget_bytes(p) || sandbox_prefork(z->sb, 1) < 0)
            return;
        pool__charge(p, z, 2 * mem);
    } else {
        int r = sandbox_prefork(z->sb, 0);
        if (r < 0 && r != -ESRCH && r != -EINVAL) {
            log_warn("pool: zygote of %s keeps its instance forked ahead: %s", z->fn->name,
                     strerror(-r));
            return; /* still there: still charged */
        }
        pool__charge(p, z, mem);
    }
    z->prefork = on;
}

/* ---- sandbox lifetime -------------------------------------------------- */

struct pool_sb *pool__psb_new(struct pool *p, enum sandbox_kind kind, enum sandbox_role role)
{
    struct pool_sb *psb = calloc(1, sizeof(*psb));
    if (!psb)
        return NULL;
    psb->pool = p;
    psb->kind = kind;
    psb->role = role;
    psb->state = PSB_STARTING;
    psb->started_ns = ember_now_ns();
    list_init(&psb->link);
    list_init(&psb->lru);
    list_init(&psb->waiters);
    list_init(&psb->wait_link);
    p->live_sandboxes++;
    return psb;
}

/*
 * The one cleanup path of a pool_sb: unlink from every list, give back its
 * memory, destroy the sandbox (which kills the process tree and releases its
 * cgroup), and drop references. A zygote with live children is only marked
 * retiring; the last child's destruction finishes it, because killing a
 * container zygote (pid 1 of its namespace) would kill its children too.
 */
void pool__psb_destroy(struct pool_sb *psb)
{
    struct pool *p = psb->pool;

    if (psb->destroying)
        return;
    if (psb->role == SANDBOX_ROLE_ZYGOTE && psb->children > 0) {
        psb->retiring = true;
        pool__zygote_prefork(p, psb, false);
        if (psb->fn && psb->fn->zygote == psb) {
            psb->fn->zygote = NULL;
            list_insert_tail(&psb->fn->zygotes, &psb->link);
        }
        return;
    }
    psb->destroying = true;
    /* First the sandbox: calls still in flight complete (SANDBOX_ERR_GONE)
     * through on_call_result while this psb is intact. */
    if (psb->sb)
        sandbox_destroy(psb->sb);
    psb->sb = NULL;
    if (psb->reserved) {
        struct pool_call *c = psb->reserved;
        psb->reserved = NULL;
        pool__call_finish_error(c, 503, SANDBOX_ERR_GONE, "sandbox gone",
                                "the instance was destroyed before it could serve the call");
    }

    list_remove(&psb->lru);
    list_remove(&psb->wait_link);
    if (psb->state == PSB_STEM && p->n_stems[psb->kind] > 0)
        p->n_stems[psb->kind]--;
    if (psb->role == SANDBOX_ROLE_STEM && psb->state == PSB_STARTING &&
        p->n_stems_starting[psb->kind] > 0)
        p->n_stems_starting[psb->kind]--;
    list_remove(&psb->link);

    if (psb->role == SANDBOX_ROLE_INSTANCE && psb->fn && psb->fn->n_instances > 0)
        psb->fn->n_instances--;
    if (psb->fn && psb->fn->zygote == psb)
        psb->fn->zygote = NULL;

    pool__charge(p, psb, 0);

    struct pool_sb *zygote = psb->zygote;
    if (psb->rec)
        store_record_unref(psb->rec);
    free(psb);
    p->live_sandboxes--;

    if (zygote) {
        zygote->children--;
        if (zygote->retiring && zygote->children == 0)
            pool__psb_destroy(zygote);
    }
    pool__kick(p);
    maybe_drain_done(p);
}

/* ---- eviction ------------------------------------------------------------ */

/*
 * Make room for @need bytes: evict idle instances, least recently used first
 * across all functions; then zygotes that no longer parent anything; then
 * ready stem cells (they are cheap to make again). Returns true if @need now
 * fits in the budget.
 */
bool pool__make_room(struct pool *p, uint64_t need)
{
    uint64_t budget = pool__budget_bytes(p);
    if (p->mem_charged + need <= budget)
        return true;

    struct list *pos, *tmp;
    for (pos = p->functions.next; pos != &p->functions; pos = pos->next) {
        struct pool_fn *fn = list_entry(pos, struct pool_fn, link);
        if (fn->zygote && fn->zygote->prefork)
            pool__zygote_prefork(p, fn->zygote, false);
        if (p->mem_charged + need <= budget)
            return true;
    }
    while (p->mem_charged + need > budget && !list_empty(&p->idle_lru)) {
        struct pool_sb *victim = list_entry(p->idle_lru.next, struct pool_sb, lru);
        p->evictions++;
        log_debug("pool: evicting idle instance of %s", victim->fn ? victim->fn->name : "?");
        pool__psb_destroy(victim);
    }
    list_foreach_safe(pos, tmp, &p->functions)
    {
        if (p->mem_charged + need <= budget)
            break;
        struct pool_fn *fn = list_entry(pos, struct pool_fn, link);
        if (fn->zygote && fn->zygote->state == PSB_ZYGOTE && fn->zygote->children == 0 &&
            list_empty(&fn->queue)) {
            p->evictions++;
            pool__psb_destroy(fn->zygote);
        }
    }
    for (int k = 0; k < SANDBOX_KIND_COUNT && p->mem_charged + need > budget; k++) {
        while (p->mem_charged + need > budget && !list_empty(&p->stems[k])) {
            struct pool_sb *stem = list_entry(p->stems[k].next, struct pool_sb, link);
            p->evictions++;
            pool__psb_destroy(stem);
        }
    }
    return p->mem_charged + need <= budget;
}

/* ---- instances ------------------------------------------------------------ */

uint32_t pool__fn_capacity(const struct pool_fn *fn)
{
    return fn->rec->manifest.concurrency ? fn->rec->manifest.concurrency : 1;
}

static void instance_make_idle(struct pool_sb *inst)
{
    struct pool *p = inst->pool;
    inst->state = PSB_IDLE;
    inst->last_used_ns = ember_now_ns();
    list_remove(&inst->lru);
    list_insert_tail(&p->idle_lru, &inst->lru);
}

/* An instance finished a call or became ready with nothing reserved. */
static void on_instance_reset(struct sandbox *sb, int status, void *data);

void pool__instance_release(struct pool_sb *inst)
{
    struct pool *p = inst->pool;
    struct pool_fn *fn = inst->fn;

    bool recycle = inst->retiring || p->draining || fn->removed || inst->rec != fn->rec;
    uint64_t max_calls = pool__fn_max_calls(p, fn);
    if (max_calls && inst->calls >= max_calls)
        recycle = true;
    if (!recycle && fn->rec->manifest.fresh_per_call && inst->calls > 0) {
        /* No state may survive the call. A backend that can put the
         * instance back to its post-init snapshot does (microVM: drop the
         * dirty pages, ~0.1 ms); otherwise the instance goes and the next
         * call gets a fresh one from the zygote. */
        if (inst->inflight == 0 && sandbox_reset(inst->sb, on_instance_reset, inst) == 0) {
            inst->state = PSB_STARTING;
            return;
        }
        recycle = true;
    }

    if (recycle) {
        if (inst->inflight == 0)
            pool__psb_destroy(inst);
        else
            inst->retiring = true;
        return;
    }
    if (fn->want_zygote)
        pool__kick(p); /* the first instance served: now make the zygote */
    /* Serve the queue first: the queued call pays no acquire at all. */
    while (inst->inflight < pool__fn_capacity(fn) && !list_empty(&fn->queue)) {
        struct pool_call *c = list_entry(fn->queue.next, struct pool_call, link);
        list_remove(&c->link);
        c->queued = false;
        fn->queue_len--;
        c->acquire = POOL_ACQUIRE_WARM;
        pool__instance_run(inst, c);
    }
    if (!list_empty(&fn->queue))
        pool__send_ahead(inst);
    if (inst->inflight == 0)
        instance_make_idle(inst);
}

static void on_instance_reset(struct sandbox *sb, int status, void *data)
{
    struct pool_sb *inst = data;
    if (status < 0) {
        log_warn("pool: reset of an instance of %s failed: %s", inst->fn->name,
                 strerror(-status));
        pool__psb_destroy(inst);
        return;
    }
    inst->calls = 0; /* as good as new */
    inst->state = PSB_IDLE;
    pool__instance_release(inst);
}

/* ---- functions ------------------------------------------------------------ */

static void fn_retire_instances(struct pool_fn *fn, bool all)
{
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &fn->instances)
    {
        struct pool_sb *inst = list_entry(pos, struct pool_sb, link);
        if (!all && inst->rec == fn->rec)
            continue;
        if (inst->state == PSB_IDLE)
            pool__psb_destroy(inst);
        else
            inst->retiring = true;
    }
    if (fn->zygote && (all || fn->zygote->rec != fn->rec)) {
        struct pool_sb *z = fn->zygote;
        if (z->state == PSB_STARTING) {
            /* still being made: let it finish for its waiters, then retire */
            z->retiring = true;
            fn->zygote = NULL;
            list_insert_tail(&fn->zygotes, &z->link);
        } else {
            pool__psb_destroy(z);
        }
    }
}

void pool_function_update(struct pool *p, struct function_record *rec)
{
    struct pool_fn *fn = pool__fn_get(p, rec->name, true);
    if (!fn)
        return;
    fn->removed = false;
    if (fn->rec == rec)
        return;
    if (fn->rec && strcmp(fn->rec->version, rec->version) == 0) {
        /* same version, new record object (store reload): keep instances */
        store_record_ref(rec);
        store_record_unref(fn->rec);
        fn->rec = rec;
        return;
    }
    struct function_record *old = fn->rec;
    store_record_ref(rec);
    fn->rec = rec;
    fn->want_zygote = false; /* the new version's first instance may serve */
    if (old) {
        fn_retire_instances(fn, false);
        store_record_unref(old);
    }
    pool__kick(p);
}

void pool_function_remove(struct pool *p, const char *name)
{
    struct pool_fn *fn = pool__fn_get(p, name, false);
    if (!fn)
        return;
    fn->removed = true;
    while (!list_empty(&fn->queue)) {
        struct pool_call *c = list_entry(fn->queue.next, struct pool_call, link);
        pool__call_finish_error(c, 404, SANDBOX_ERR_GONE, "not found", "the function was deleted");
    }
    fn_retire_instances(fn, true);
}

/* ---- periodic work: keep-alive, queue timeouts, min_warm, stem cells ------ */

static void sweep_fn(struct pool *p, struct pool_fn *fn, uint64_t now)
{
    /* Queue timeouts: the oldest calls are at the head. */
    while (!list_empty(&fn->queue)) {
        struct pool_call *c = list_entry(fn->queue.next, struct pool_call, link);
        if (c->deadline_ns > now)
            break;
        pool__call_finish_error(c, 429, SANDBOX_OK, "too many requests",
                                "queue timeout: no instance became free in time");
    }

    if (fn->removed || !fn->rec)
        return;

    /* Keep-alive: idle instances beyond min_warm expire. */
    uint64_t ttl_ns = pool__fn_keepalive_ms(p, fn) * 1000000ull;
    uint32_t min_warm = pool__fn_min_warm(p, fn);
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &fn->instances)
    {
        if (fn->n_instances <= min_warm)
            break;
        struct pool_sb *inst = list_entry(pos, struct pool_sb, link);
        if (inst->state == PSB_IDLE && now - inst->last_used_ns >= ttl_ns)
            pool__psb_destroy(inst);
    }
    /* A zygote with nothing to parent for a keep-alive goes too. */
    if (fn->zygote && fn->zygote->state == PSB_ZYGOTE && fn->zygote->children == 0 &&
        min_warm == 0 && list_empty(&fn->queue) && now - fn->last_used_ns >= ttl_ns &&
        now - fn->zygote->last_used_ns >= ttl_ns)
        pool__psb_destroy(fn->zygote);

    /* Asked for again once the budget has room (and the knob says so). */
    if (fn->zygote)
        pool__zygote_prefork(p, fn->zygote, true);

    /* Provisioned concurrency. */
    while (!p->draining && fn->n_instances < min_warm &&
           fn->n_instances < pool__fn_max_instances(p, fn) && pool__instance_room(p, fn)) {
        if (pool__instance_start(p, fn, NULL) < 0)
            break;
    }
}

static void on_sweep(uv_timer_t *t)
{
    struct pool *p = t->data;
    uint64_t now = ember_now_ns();
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &p->functions)
    {
        sweep_fn(p, list_entry(pos, struct pool_fn, link), now);
    }
    pool__kick(p);
}

static void on_kick(uv_idle_t *h)
{
    struct pool *p = h->data;
    uv_idle_stop(h);
    p->kick_pending = false;
    if (p->draining)
        return;
    pool__dispatch_all(p, true);
    pool__stems_refill(p);
}


void pool__kick(struct pool *p)
{
    if (p->kick_pending || p->draining)
        return;
    p->kick_pending = true;
    uv_idle_start(&p->kick, on_kick);
}

void pool__knobs_changed(struct pool *p)
{
    pool__make_room(p, 0);
    pool__kick(p);
    on_sweep(&p->sweep);
}

/* ---- open / shutdown -------------------------------------------------------- */

int pool_open(const struct pool_config *cfg, struct pool **out, struct ember_error *err)
{
    struct pool *p = calloc(1, sizeof(*p));
    if (!p)
        return ember_error_set(err, -ENOMEM, "pool: out of memory");
    p->loop = cfg->loop;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    p->ncpu = ncpu > 0 ? (uint32_t)ncpu : 1;
    /* calls.c loop_saturated reads the loop's idle time. */
    int r = uv_loop_configure(p->loop, UV_METRICS_IDLE_TIME);
    p->loop_metrics = r == 0;
    if (r < 0)
        log_warn("pool: no loop idle time (%s): scale-out cannot tell a saturated loop",
                 uv_strerror(r));
    p->store = cfg->store;
    p->knobs = cfg->knobs;
    p->default_kind = cfg->default_kind;
    for (int k = 0; k < SANDBOX_KIND_COUNT; k++) {
        p->be[k] = cfg->backends[k];
        if (cfg->backend_errors[k])
            snprintf(p->be_err[k], sizeof(p->be_err[k]), "%s", cfg->backend_errors[k]);
        list_init(&p->stems[k]);
    }
    list_init(&p->functions);
    list_init(&p->idle_lru);
    uv_timer_init(p->loop, &p->sweep);
    p->sweep.data = p;
    uv_timer_init(p->loop, &p->rescan);
    p->rescan.data = p;
    uv_idle_init(p->loop, &p->kick);
    p->kick.data = p;
    uv_timer_start(&p->sweep, on_sweep, SWEEP_INTERVAL_MS, SWEEP_INTERVAL_MS);
    pool__kick(p);
    *out = p;
    return 0;
}

static void fn_free(struct pool_fn *fn)
{
    list_remove(&fn->link);
    if (fn->rec)
        store_record_unref(fn->rec);
    pool__log_free(&fn->log);
    free(fn);
}

static void on_pool_handle_closed(uv_handle_t *h)
{
    struct pool *p = h->data;
    if (--p->closing > 0)
        return; /* the last handle's callback frees */
    void (*done)(void *) = p->drain_done;
    void *data = p->drain_data;
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &p->functions)
    {
        fn_free(list_entry(pos, struct pool_fn, link));
    }
    free(p);
    if (done)
        done(data);
}

static void maybe_drain_done(struct pool *p)
{
    if (!p->draining || p->live_sandboxes > 0 || uv_is_closing((uv_handle_t *)&p->kick))
        return;
    p->closing = 3;
    uv_close((uv_handle_t *)&p->sweep, on_pool_handle_closed);
    uv_close((uv_handle_t *)&p->rescan, on_pool_handle_closed);
    uv_close((uv_handle_t *)&p->kick, on_pool_handle_closed);
}

void pool_shutdown(struct pool *p, void (*done)(void *data), void *data)
{
    p->draining = true;
    p->drain_done = done;
    p->drain_data = data;
    uv_idle_stop(&p->kick);

    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &p->functions)
    {
        struct pool_fn *fn = list_entry(pos, struct pool_fn, link);
        while (!list_empty(&fn->queue)) {
            struct pool_call *c = list_entry(fn->queue.next, struct pool_call, link);
            pool__call_finish_error(c, 503, SANDBOX_ERR_GONE, "draining",
                                    "emberd is shutting down");
        }
        struct list *ip, *it;
        list_foreach_safe(ip, it, &fn->instances)
        {
            struct pool_sb *inst = list_entry(ip, struct pool_sb, link);
            if (inst->state != PSB_STARTING)
                pool__psb_destroy(inst);
            else
                inst->retiring = true;
        }
        fn_retire_instances(fn, true);
        struct list *zp, *zt;
        list_foreach_safe(zp, zt, &fn->zygotes)
        {
            struct pool_sb *z = list_entry(zp, struct pool_sb, link);
            if (z->children == 0 && z->state != PSB_STARTING)
                pool__psb_destroy(z);
        }
    }
    for (int k = 0; k < SANDBOX_KIND_COUNT; k++) {
        while (!list_empty(&p->stems[k]))
            pool__psb_destroy(list_entry(p->stems[k].next, struct pool_sb, link));
    }
    maybe_drain_done(p);
}
