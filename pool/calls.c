/* calls.c - placing calls: on a warm instance, in the function's queue to
 * wait for one, or on a new instance (the wait-or-scale rule), and their
 * results on the way back to the caller.
 *
 * Calls are owned by the pool from pool_invoke until their callback (or
 * cancel). */
#include "pool/pool_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"

static void on_rescan(uv_timer_t *t);

/* ---- calls ------------------------------------------------------------------ */

/* A call stopped waiting for a new instance (it got one, or failed). */
void pool__acquired_done(struct pool_call *c)
{
    if (!c->acquiring)
        return;
    c->acquiring = false;
    c->pool->acquiring--;
    pool__kick(c->pool); /* the stem cell refill waited for this */
}

/*
 * How long a call holds an instance, for worth_waiting: a moving average
 * (1/8 weight) of warm calls' run time as emberd sees it, the answer's wait
 * for the loop included -- that is how long the instance is unavailable.
 * (The fastest recent call was tried: it ignores that wait, so under load
 * the pool kept too few instances and an open-loop p99 went from 2 ms to
 * 70 ms.) A sample counts for at most 4 times the average, so one outlier
 * (a preempted call) does not move it much; a new instance's first call
 * (first touch of everything) only seeds it.
 */
static void service_sample(struct pool_fn *fn, enum pool_acquire how, uint64_t run_ns,
                           uint64_t inside_ns)
{
    uint64_t e = fn->run_ewma_ns, s = run_ns ? run_ns : 1;
    if (how != POOL_ACQUIRE_WARM && e)
        return;
    /* The fastest warm call lately, as the sandbox timed it (the loop's
     * wait left out): each call lets it rise by 1/64 at most. */
    uint64_t f = fn->run_fast_ns, in = inside_ns ? inside_ns : s;
    if (how == POOL_ACQUIRE_WARM)
        fn->run_fast_ns = !f || in < f + f / 64 ? in : f + f / 64;
    if (e && s > 4 * e)
        s = 4 * e;
    fn->run_ewma_ns = e ? e - e / 8 + s / 8 : s;
}

static void call_complete(struct pool_call *c, struct pool_result *res)
{
    struct pool *p = c->pool;
    pool__acquired_done(c);
    struct pool_fn *fn = c->fn;
    uint64_t now = ember_now_ns();

    res->invocation_id = c->id;
    res->acquire = c->acquire;
    res->queue_ns = c->t_dequeue > c->t_arrive ? c->t_dequeue - c->t_arrive : 0;
    res->queue_ns += c->pending_ns; /* a call sent ahead waited in the instance */
    if (res->acquired) {
        res->acquire_ns = c->t_acquired > c->t_dequeue ? c->t_acquired - c->t_dequeue : 0;
        res->init_ns = c->init_ns;
    }

    p->calls++;
    if (fn) {
        fn->calls++;
        fn->last_used_ns = now;
        if (res->acquired) {
            service_sample(fn, c->acquire, res->run_ns, res->inside_ns);
            fn->last_done_ns = now;
            fn->acquired[c->acquire]++;
            pool__hist_add(&fn->acquire_hist, res->acquire_ns);
            pool__hist_add(&fn->run_hist, res->run_ns);
            pool__hist_add(&fn->queue_hist, res->queue_ns);
        }
        if (res->http_status >= 500 || res->error != SANDBOX_OK)
            fn->errors++;
        if (res->error == SANDBOX_ERR_TIMEOUT)
            fn->timeouts++;
        else if (res->error == SANDBOX_ERR_OOM)
            fn->ooms++;
        else if (res->error == SANDBOX_ERR_CRASH)
            fn->crashes++;
        if (res->http_status == 429)
            fn->rejected++;
    }
    if (res->acquired) {
        pool__hist_add(&p->acquire_hist, res->acquire_ns);
        pool__hist_add(&p->run_hist, res->run_ns);
    }
    if (res->error != SANDBOX_OK || res->http_status >= 500)
        p->errors++;

    if (!c->cancelled)
        c->cb(res, c->data);
    store_record_unref(c->rec);
    free(c);
}

void pool__call_finish_error(struct pool_call *c, int http_status, enum sandbox_error err,
                             const char *error_name, const char *detail)
{
    if (c->queued) {
        list_remove(&c->link);
        c->queued = false;
        c->fn->queue_len--;
    }
    if (!c->t_dequeue)
        c->t_dequeue = ember_now_ns();
    struct pool_result res = {
        .http_status = http_status,
        .error = err,
        .error_name = error_name,
        .detail = detail,
    };
    if (http_status == 429) {
        res.retry_after_s = 1;
        c->pool->rejected++;
    }
    call_complete(c, &res);
}

/* A call sent ahead came back unstarted (its instance died, or went, while
 * the call waited behind another): no code of the function saw it, so it
 * goes back to the queue, in its place by arrival, once. */
static bool requeue_unstarted(struct pool_call *c, const struct sandbox_result *sres)
{
    struct pool *p = c->pool;
    struct pool_fn *fn = c->fn;
    if (sres->error == SANDBOX_OK || !sres->unstarted || c->requeued || p->draining || fn->removed)
        return false;
    c->requeued = true;
    c->psb = NULL;
    c->pending_ns += sres->pending_ns;
    c->t_dequeue = c->t_acquired = 0;
    if (!c->deadline_ns)
        c->deadline_ns = c->t_arrive + pool__fn_queue_timeout_ms(p, fn) * 1000000ull;
    /* in arrival order, ahead of every call that came after it */
    struct list *pos = fn->queue.next;
    while (pos != &fn->queue && list_entry(pos, struct pool_call, link)->id < c->id)
        pos = pos->next;
    list_insert_tail(pos, &c->link); /* (before pos) */
    c->queued = true;
    fn->queue_len++;
    fn->requeued++;
    pool__kick(p);
    return true;
}

static void on_call_result(struct sandbox *sb, const struct sandbox_result *sres, void *data)
{
    struct pool_call *c = data;
    struct pool_sb *inst = c->psb;

    if (requeue_unstarted(c, sres)) {
        inst->inflight--;
        inst->retiring = true; /* it is dying or going */
        if (!inst->destroying && inst->inflight == 0)
            pool__instance_release(inst);
        return;
    }
    c->pending_ns += sres->pending_ns;

    struct pool_result res = {
        .http_status = sres->error == SANDBOX_OK ? sres->status
                                                 : sandbox_error_http_status(sres->error),
        .error = sres->error,
        .error_name = sres->error == SANDBOX_OK ? NULL : sandbox_error_name(sres->error),
        .detail = sres->error == SANDBOX_OK ? NULL : sres->detail,
        .headers = sres->headers,
        .n_headers = sres->n_headers,
        .body = sres->body,
        .body_len = sres->body_len,
        .acquired = true,
        .run_ns = sres->run_ns,
        .inside_ns = sres->inside_ns,
    };
    call_complete(c, &res);

    inst->inflight--;
    if (inst->destroying)
        return;
    inst->calls++;
    inst->last_used_ns = ember_now_ns();
    if (sres->error != SANDBOX_OK && sres->error != SANDBOX_ERR_HANDLER &&
        sres->error != SANDBOX_ERR_TOO_LARGE)
        inst->retiring = true; /* killed, crashed or untrustworthy: never reuse */
    if (inst->inflight == 0 || !inst->retiring)
        pool__instance_release(inst);
}

void pool__instance_run(struct pool_sb *inst, struct pool_call *c)
{
    uint64_t now = ember_now_ns();
    if (!c->t_dequeue)
        c->t_dequeue = now;
    if (!c->t_acquired)
        c->t_acquired = now;
    pool__acquired_done(c);
    c->psb = inst;
    inst->inflight++;
    inst->state = PSB_BUSY;
    list_remove(&inst->lru);

    int r = sandbox_invoke(inst->sb, &c->call, on_call_result, c);
    if (r < 0) {
        inst->inflight--;
        inst->retiring = true;
        c->psb = NULL;
        pool__call_finish_error(c, 502, SANDBOX_ERR_INTERNAL, "sandbox failed", strerror(-r));
        if (inst->inflight == 0)
            pool__psb_destroy(inst);
    }
}

/*
 * Sending a call ahead. A call that finds every instance busy and is going
 * to wait for one (worth_waiting) can wait inside a busy instance instead
 * of in the queue: the instance (its agent, or the VM's monitor) then goes
 * from its call to the next without sleeping until emberd has read the
 * answer and sent another, which for short calls is most of what a call
 * costs the machine (two wake-ups and a context switch each way).
 *
 * The price is that the call is bound to that instance: it cannot go to
 * another one that frees up first. So a call goes ahead only where it
 * should start soon: the calls waiting there and the one running, at what
 * a call of the function takes (ewma), should be done within
 * "scale_out_wait_us"; the instance finished a call within that time (it
 * is not stuck in a long one); fewer than SANDBOX_PIPELINE_DEPTH calls wait
 * there; and it will not be recycled (max calls) before it gets to the
 * call. The call's timeout and run time start when it does; its wait in
 * the instance counts as queue time. If the instance dies or goes first,
 * the call comes back to the queue unstarted (requeue_unstarted).
 */
static bool ahead_ok(struct pool *p, struct pool_fn *fn, struct pool_sb *inst, uint64_t now)
{
    uint64_t limit = pool__fn_scale_out_wait_us(p, fn) * 1000ull;
    uint64_t max_calls = pool__fn_max_calls(p, fn);
    uint32_t cap = pool__fn_capacity(fn);
    /* (Only with one call at a time: the sandbox takes calls ahead of no
     * other, see sandbox_invoke.) */
    if (cap != 1 || limit == 0 || fn->run_ewma_ns == 0 || fn->rec->manifest.fresh_per_call)
        return false;
    if (inst->rec != fn->rec || inst->retiring || inst->reserved || inst->state != PSB_BUSY ||
        inst->inflight < cap || inst->inflight >= cap + SANDBOX_PIPELINE_DEPTH)
        return false;
    /* it should start within the limit: after the calls ahead of it */
    if ((inst->inflight - cap + 1) * fn->run_ewma_ns >= limit)
        return false;
    if (max_calls && inst->calls + inst->inflight >= max_calls)
        return false;
    return now - inst->last_used_ns < limit;
}

static void run_ahead(struct pool_sb *inst, struct pool_call *c)
{
    c->acquire = POOL_ACQUIRE_WARM;
    inst->fn->sent_ahead++;
    pool__instance_run(inst, c);
}

void pool__send_ahead(struct pool_sb *inst)
{
    struct pool_fn *fn = inst->fn;
    uint64_t now = ember_now_ns();
    while (!list_empty(&fn->queue)) {
        struct pool_call *c = list_entry(fn->queue.next, struct pool_call, link);
        if (c->requeued || !ahead_ok(inst->pool, fn, inst, now))
            return;
        list_remove(&c->link);
        c->queued = false;
        fn->queue_len--;
        run_ahead(inst, c);
    }
}

/* A busy instance @c may wait in: the one whose call started longest ago,
 * which should be the first to get to it. */
static struct pool_sb *find_ahead(struct pool *p, struct pool_fn *fn, struct pool_call *c)
{
    if (c->requeued)
        return NULL;
    uint64_t now = ember_now_ns();
    struct pool_sb *best = NULL;
    struct list *pos;
    for (pos = fn->instances.next; pos != &fn->instances; pos = pos->next) {
        struct pool_sb *inst = list_entry(pos, struct pool_sb, link);
        if (ahead_ok(p, fn, inst, now) && (!best || inst->last_used_ns < best->last_used_ns))
            best = inst;
    }
    return best;
}

/* Find an idle (or not full) instance of the current version, most recently
 * used first so that the others age out. */
static struct pool_sb *find_warm(struct pool_fn *fn)
{
    struct pool_sb *best = NULL;
    uint32_t cap = pool__fn_capacity(fn);
    struct list *pos;
    for (pos = fn->instances.next; pos != &fn->instances; pos = pos->next) {
        struct pool_sb *inst = list_entry(pos, struct pool_sb, link);
        if (inst->rec != fn->rec || inst->retiring || inst->reserved)
            continue;
        if (inst->state != PSB_IDLE && inst->state != PSB_BUSY)
            continue;
        if (inst->inflight >= cap)
            continue;
        /* fresh_per_call: only an instance no call has touched yet (a
         * pristine one from min_warm, or one reset to its snapshot) */
        if (fn->rec->manifest.fresh_per_call && (inst->state != PSB_IDLE || inst->calls > 0))
            continue;
        if (!best || inst->last_used_ns > best->last_used_ns)
            best = inst;
    }
    return best;
}

#define LOOP_LOOK_NS 2000000ull   /* loop_saturated: shortest window, a verdict holds as long */
#define LOOP_STALE_NS 10000000ull /* ...a longer one is mostly the past: start over */
#define LOOP_IDLE_PCT 5           /* ...saturated below this much idle time */
#define LOOP_CALM_WINDOWS 3       /* ...and until this many windows in a row had more */

/*
 * Has emberd's loop been busy all along (idle under LOOP_IDLE_PCT of the
 * last windows)? Then calls wait for the loop, not for an instance, and
 * another instance only adds itself to the CPUs' run queues and a wake-up
 * to its calls. Under wrk -c64 on a no-op the loop idles ~1% of the time;
 * the pool made 16 instances, and 2 gave 76k calls/s and p99 1.6 ms where
 * 16 gave 63k and 4.2 ms (5 alternating pairs). Saturated at once, calm
 * only after LOOP_CALM_WINDOWS windows in a row (a window with a little
 * idle time comes now and then under full load, and each would let the
 * pool grow by one); a window that starts after a quiet spell counts as
 * saturated, so that a burst does not make instances before the loop can
 * tell.
 */
static bool loop_saturated(struct pool *p, uint64_t now)
{
    uint64_t window = now - p->loop_window_ns;
    if (!p->loop_metrics)
        return false;
    if (window < LOOP_LOOK_NS)
        return p->loop_saturated;
    uint64_t idle = uv_metrics_idle_time(p->loop);
    if (window > LOOP_STALE_NS || (idle - p->loop_idle_ns) * 100 < window * LOOP_IDLE_PCT)
        p->loop_calm = 0;
    else if (p->loop_calm < LOOP_CALM_WINDOWS)
        p->loop_calm++;
    p->loop_saturated = p->loop_calm < LOOP_CALM_WINDOWS;
    p->loop_window_ns = now;
    p->loop_idle_ns = idle;
    return p->loop_saturated;
}

/*
 * All instances are busy: is waiting for one cheaper than a new instance?
 * A call queued behind calls that run ~30 us is served before a fork would
 * be done, and on few cores every extra instance costs the others a
 * wake-up per call. So the call waits if the instances should get to it
 * (the calls queued ahead, spread over the busy instances, at what a call
 * costs one) within the function's "scale_out_wait_us" (0: never wait).
 * Once it has waited POOL_SCALE_OUT_STUCK times that while no instance
 * finished a call for as long (they are stuck in long calls, not just
 * busy), it waits no more: on_rescan places it.
 */
static bool worth_waiting(struct pool *p, struct pool_fn *fn, struct pool_call *c)
{
    uint64_t limit = pool__fn_scale_out_wait_us(p, fn) * 1000ull;
    uint64_t service = fn->run_ewma_ns;
    if (limit == 0 || service == 0 || fn->rec->manifest.fresh_per_call ||
        fn->queue_len >= pool__fn_queue_length(p, fn))
        return false; /* (a full queue would turn the wait into a 429) */
    /* Instances being made count: they serve the queue once up. */
    uint64_t busy = 0, starting = 0;
    struct list *pos;
    for (pos = fn->instances.next; pos != &fn->instances; pos = pos->next) {
        struct pool_sb *inst = list_entry(pos, struct pool_sb, link);
        if (inst->rec == fn->rec && !inst->retiring &&
            (inst->state == PSB_BUSY || inst->state == PSB_STARTING)) {
            busy++;
            starting += inst->state == PSB_STARTING;
        }
    }
    uint64_t now = ember_now_ns(), stuck = POOL_SCALE_OUT_STUCK * limit;
    if (busy == 0 || (now - c->t_arrive >= stuck && now - fn->last_done_ns >= stuck))
        return false;
    uint64_t wait = (fn->queue_len + 1) * service / (busy * pool__fn_capacity(fn));
    /* Even so, short calls on an instance per CPU at least wait while
     * another instance is starting (a burst would otherwise ask for one per
     * call before any is up) or while the loop is saturated (then it is
     * the loop they wait for). Short by the average or by the fastest warm
     * call lately as the sandbox timed it: under a saturated loop every
     * answer also waits for the loop, which the average counts, and before
     * a warm call the average is the first call's, which touched
     * everything for the first time. (Taken to be short before any warm
     * call: a long function's first burst then waits for the loop's first
     * verdict, see the rescan below.) */
    uint64_t quick = fn->run_fast_ns < service ? fn->run_fast_ns : service;
    bool loop_bound = false;
    if (wait >= limit) {
        loop_bound = quick < limit && busy >= p->ncpu && (starting || loop_saturated(p, now));
        if (!loop_bound)
            return false;
    }
    /* Look again once this call would count as stuck, or once the loop
     * may say otherwise (sooner if another function asked for sooner). */
    uint64_t due_ms = (loop_bound ? LOOP_LOOK_NS : stuck) / 1000000 + 1;
    if (!uv_is_active((uv_handle_t *)&p->rescan) || uv_timer_get_due_in(&p->rescan) > due_ms)
        uv_timer_start(&p->rescan, on_rescan, due_ms, 0);
    return true;
}

/* Try to place @c now: warm instance, or a new one. Returns false if it has
 * to wait. */
static bool call_place(struct pool *p, struct pool_fn *fn, struct pool_call *c)
{
    struct pool_sb *warm = find_warm(fn);
    if (warm) {
        c->acquire = POOL_ACQUIRE_WARM;
        pool__instance_run(warm, c);
        return true;
    }
    if (worth_waiting(p, fn, c)) {
        struct pool_sb *busy = find_ahead(p, fn, c);
        if (!busy)
            return false;
        run_ahead(busy, c);
        return true;
    }
    if (fn->n_instances >= pool__fn_max_instances(p, fn))
        return false;
    if (!pool__instance_room(p, fn))
        return false;
    if (!c->t_dequeue)
        c->t_dequeue = ember_now_ns();
    int r = pool__instance_start(p, fn, c);
    if (r == -ENOMEM)
        return false;
    if (r < 0) {
        char detail[300];
        enum sandbox_kind kind = pool__fn_kind(p, fn);
        snprintf(detail, sizeof(detail), "%s backend unavailable: %s", sandbox_kind_name(kind),
                 p->be_err[kind][0] ? p->be_err[kind] : strerror(-r));
        pool__call_finish_error(c, 503, SANDBOX_ERR_INTERNAL, "backend unavailable", detail);
    }
    return true;
}

void pool_invoke(struct pool *p, struct function_record *rec, const struct sandbox_call *call,
                 pool_result_cb cb, void *data, struct pool_ticket **ticket)
{
    if (ticket)
        *ticket = NULL;
    struct pool_call *c = calloc(1, sizeof(*c));
    if (!c) {
        struct pool_result res = {.http_status = 500, .error = SANDBOX_ERR_INTERNAL,
                                  .error_name = "out of memory", .detail = "emberd"};
        cb(&res, data);
        return;
    }
    list_init(&c->link);
    c->pool = p;
    c->rec = rec;
    store_record_ref(rec);
    c->call = *call;
    c->cb = cb;
    c->data = data;
    c->id = ++p->next_call_id;
    c->call.id = (uint32_t)c->id;
    c->t_arrive = ember_now_ns();
    if (c->call.timeout_ms == 0)
        c->call.timeout_ms = rec->manifest.timeout_ms;

    if (p->draining) {
        pool__call_finish_error(c, 503, SANDBOX_ERR_GONE, "draining", "emberd is shutting down");
        return;
    }
    struct pool_fn *fn = pool__fn_get(p, rec->name, true);
    if (!fn) {
        pool__call_finish_error(c, 500, SANDBOX_ERR_INTERNAL, "out of memory", "emberd");
        return;
    }
    c->fn = fn;
    if (fn->rec != rec && (!fn->rec || strcmp(fn->rec->version, rec->version) != 0))
        pool_function_update(p, rec);

    if (ticket)
        *ticket = (struct pool_ticket *)c;

    /* Calls already waiting go first: only place directly when none wait. */
    if (list_empty(&fn->queue) && call_place(p, fn, c))
        return;

    if (fn->queue_len >= pool__fn_queue_length(p, fn)) {
        if (ticket)
            *ticket = NULL;
        pool__call_finish_error(c, 429, SANDBOX_OK, "too many requests",
                                "the function's instances and queue are full");
        return;
    }
    c->queued = true;
    c->deadline_ns = c->t_arrive + pool__fn_queue_timeout_ms(p, fn) * 1000000ull;
    list_insert_tail(&fn->queue, &c->link);
    fn->queue_len++;
    pool__kick(p);
}

void pool_ticket_cancel(struct pool_ticket *t)
{
    struct pool_call *c = (struct pool_call *)t;
    if (!c)
        return;
    if (c->queued) {
        list_remove(&c->link);
        c->queued = false;
        c->fn->queue_len--;
        store_record_unref(c->rec);
        free(c);
        return;
    }
    /* Running or waiting for an instance: the result is dropped. */
    c->cancelled = true;
}

/* Place queued calls of @fn while capacity and memory allow. */
static void dispatch_fn(struct pool *p, struct pool_fn *fn)
{
    while (!list_empty(&fn->queue)) {
        struct pool_call *c = list_entry(fn->queue.next, struct pool_call, link);
        list_remove(&c->link);
        c->queued = false;
        fn->queue_len--;
        if (!call_place(p, fn, c)) {
            list_insert_head(&fn->queue, &c->link);
            c->queued = true;
            fn->queue_len++;
            return;
        }
    }
}

/* Place what the queues hold; with @zygotes also make the zygotes that
 * functions want. */
void pool__dispatch_all(struct pool *p, bool zygotes)
{
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &p->functions)
    {
        struct pool_fn *fn = list_entry(pos, struct pool_fn, link);
        if (!list_empty(&fn->queue))
            dispatch_fn(p, fn);
        if (zygotes && fn->want_zygote)
            pool__zygote_background(p, fn);
    }
}

/* Calls that chose to wait for a busy instance: those that waited too long
 * are placed now (worth_waiting says no to them). */
static void on_rescan(uv_timer_t *t)
{
    struct pool *p = t->data;
    if (!p->draining)
        pool__dispatch_all(p, false);
}
