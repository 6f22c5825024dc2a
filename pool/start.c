/* start.c - where an instance comes from: stem cells made ahead of need,
 * zygotes specialized from them, and instances forked from a zygote or
 * specialized to serve by themselves (a microVM from its function's
 * snapshot, a container function's first instance). */
#include "pool/pool_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"

#define MB (1024ull * 1024ull)

static void on_created(struct sandbox *sb, int status, void *data);

/* ---- stem cells ---------------------------------------------------------- */

static void on_stem_exit(struct sandbox *sb, const char *why, void *data)
{
    struct pool_sb *psb = data;
    log_warn("pool: stem cell %" PRIu64 " died: %s", sandbox_id(sb), why);
    if (psb->state == PSB_STEM)
        pool__psb_destroy(psb);
    /* a starting stem reports through its done callback */
}

static void on_stem_ready(struct sandbox *sb, int status, void *data)
{
    struct pool_sb *psb = data;
    struct pool *p = psb->pool;

    p->n_stems_starting[psb->kind]--;
    if (status < 0) {
        p->stem_failures++;
        log_warn("pool: stem cell creation failed: %s", strerror(-status));
        psb->role = SANDBOX_ROLE_INSTANCE; /* not counted as starting any more */
        psb->state = PSB_IDLE;
        pool__psb_destroy(psb);
        return;
    }
    p->stems_created++;
    if (p->draining || p->n_stems[psb->kind] >= p->knobs.stem_cells[psb->kind]) {
        psb->state = PSB_IDLE;
        psb->role = SANDBOX_ROLE_INSTANCE;
        pool__psb_destroy(psb);
        return;
    }
    psb->state = PSB_STEM;
    p->n_stems[psb->kind]++;
    list_insert_tail(&p->stems[psb->kind], &psb->link);
    pool__kick(p);
}

/* Start stem cells until the knob's count is ready or starting, within budget. */
void pool__stems_refill(struct pool *p)
{
    for (int k = 0; k < SANDBOX_KIND_COUNT; k++) {
        if (!p->be[k])
            continue;
        /* Refill off the call's path: on two cores a spawn running beside a
         * specialization doubles the call's wait, so calls that are getting
         * an instance right now go first -- but only for a while, or a
         * steady stream of cold starts would never see a stem cell again. */
        uint64_t now = ember_now_ns();
        if (p->acquiring > 0) {
            if (!p->refill_deferred_since)
                p->refill_deferred_since = now;
            if (now - p->refill_deferred_since < POOL_REFILL_DEFER_MAX_MS * 1000000ull)
                return;
        } else {
            p->refill_deferred_since = 0;
        }
        uint64_t stem_charge = (uint64_t)POOL_STEM_MEMORY_MB_DEFAULT * MB;
        while (!p->draining && p->n_stems[k] + p->n_stems_starting[k] < p->knobs.stem_cells[k] &&
               p->n_stems_starting[k] < POOL_STEM_STARTS_MAX &&
               p->mem_charged + stem_charge <= pool__budget_bytes(p) && p->stem_failures < 1000) {
            struct pool_sb *psb = pool__psb_new(p, (enum sandbox_kind)k, SANDBOX_ROLE_STEM);
            if (!psb)
                return;
            pool__charge(p, psb, stem_charge);
            p->n_stems_starting[k]++;
            int r = sandbox_create(p->be[k], &psb->sb, on_stem_ready, psb);
            if (r < 0) {
                log_warn("pool: cannot start a stem cell: %s", strerror(-r));
                p->stem_failures++;
                p->n_stems_starting[k]--;
                psb->role = SANDBOX_ROLE_INSTANCE;
                psb->state = PSB_IDLE;
                pool__psb_destroy(psb);
                return;
            }
            struct sandbox_events ev = {.on_exit = on_stem_exit, .data = psb};
            sandbox_set_events(psb->sb, &ev);
        }
        /* Too many stem cells after the knob went down: retire the extra. */
        while (p->n_stems[k] > p->knobs.stem_cells[k] && !list_empty(&p->stems[k])) {
            struct pool_sb *psb = list_entry(p->stems[k].next, struct pool_sb, link);
            pool__psb_destroy(psb);
        }
    }
}

/* ---- instances ------------------------------------------------------------ */

static void on_instance_exit(struct sandbox *sb, const char *why, void *data)
{
    struct pool_sb *inst = data;
    log_info("pool: instance %" PRIu64 " of %s exited: %s", sandbox_id(sb),
             inst->fn ? inst->fn->name : "?", why);
    /* Calls in flight are failed by the sandbox core through their result
     * callbacks; what is left is to stop using the instance. */
    if (inst->state == PSB_IDLE)
        pool__psb_destroy(inst);
    else
        inst->retiring = true;
}

static void on_instance_log(struct sandbox *sb, int stream, const char *line, size_t len,
                            void *data)
{
    struct pool_sb *psb = data;
    if (psb->fn)
        pool__log_add(&psb->fn->log, sandbox_id(sb), stream, line, len);
}

static void on_instance_forked(struct sandbox *sb, int status, void *data)
{
    struct pool_sb *inst = data;
    struct pool_call *c = inst->reserved;
    inst->reserved = NULL;

    if (status < 0) {
        const char *why = sb ? sandbox_last_error(sb) : NULL;
        log_warn("pool: fork of %s failed: %s", inst->fn->name,
                 why && why[0] ? why : strerror(-status));
        if (c)
            pool__call_finish_error(c, 502, SANDBOX_ERR_INTERNAL, "sandbox failed",
                                    why && why[0] ? why
                                                  : "could not start an instance of the function");
        pool__psb_destroy(inst);
        return;
    }
    if (sandbox_ahead_ns(sb) > 0)
        inst->pool->forked_ahead++;
    if (c && !c->cancelled) {
        c->t_acquired = ember_now_ns();
        c->acquire = inst->acquire;
        pool__instance_run(inst, c);
        return;
    }
    if (c) { /* cancelled while the instance started */
        pool__acquired_done(c);
        store_record_unref(c->rec);
        free(c);
    }
    pool__instance_release(inst);
}

static void instance_fork(struct pool_sb *inst)
{
    struct pool_sb *z = inst->zygote;
    int r = sandbox_fork(z->sb, &inst->sb, on_instance_forked, inst);
    if (r < 0) {
        on_instance_forked(NULL, r, inst);
        return;
    }
    struct sandbox_events ev = {
        .on_exit = on_instance_exit, .on_log = on_instance_log, .data = inst};
    sandbox_set_events(inst->sb, &ev);
}

/* ---- zygotes ------------------------------------------------------------- */

static void zygote_fail_waiters(struct pool_sb *z, const char *detail)
{
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &z->waiters)
    {
        struct pool_sb *inst = list_entry(pos, struct pool_sb, wait_link);
        list_remove(&inst->wait_link);
        struct pool_call *c = inst->reserved;
        inst->reserved = NULL;
        if (c)
            pool__call_finish_error(c, 502, SANDBOX_ERR_INTERNAL, "function failed to initialize",
                                    detail);
        inst->zygote = NULL;
        z->children--;
        pool__psb_destroy(inst);
    }
}

static void on_zygote_exit(struct sandbox *sb, const char *why, void *data)
{
    struct pool_sb *z = data;
    log_warn("pool: zygote of %s exited: %s", z->fn ? z->fn->name : "?", why);
    if (z->fn && z->fn->zygote == z) {
        /* Its instances die with it; they report their own exits. New calls
         * will make a new zygote. */
        z->fn->zygote = NULL;
        list_insert_tail(&z->fn->zygotes, &z->link);
    }
    z->retiring = true;
    if (z->state == PSB_ZYGOTE && z->children == 0)
        pool__psb_destroy(z);
}

static void on_zygote_ready(struct sandbox *sb, int status, void *data)
{
    struct pool_sb *z = data;

    if (status < 0) {
        char detail[256];
        const char *why = sb ? sandbox_last_error(sb) : NULL;
        snprintf(detail, sizeof(detail), "%s", why && why[0] ? why : strerror(-status));
        log_warn("pool: %s failed to initialize: %s", z->fn->name, detail);
        z->fn->errors++;
        zygote_fail_waiters(z, detail);
        z->children = 0;
        if (z->fn->zygote == z)
            z->fn->zygote = NULL;
        pool__psb_destroy(z);
        return;
    }
    z->state = PSB_ZYGOTE;
    z->last_used_ns = ember_now_ns();
    uint64_t init_ns = sandbox_init_ns(sb);

    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &z->waiters)
    {
        struct pool_sb *inst = list_entry(pos, struct pool_sb, wait_link);
        list_remove(&inst->wait_link);
        if (inst->reserved)
            inst->reserved->init_ns = init_ns;
        instance_fork(inst);
    }
    if (z->retiring && z->children == 0)
        pool__psb_destroy(z);
    else
        pool__zygote_prefork(z->pool, z, true);
}

/*
 * Specialize @psb's sandbox to its function version. The events go to
 * @on_exit (and the function's log); @done gets the outcome, also when
 * sandbox_specialize refuses at once.
 */
static void specialize(struct pool_sb *psb, sandbox_exit_cb on_exit, sandbox_done_cb done)
{
    struct function_record *rec = psb->rec;
    struct sandbox_spec spec = {
        .function = rec->name,
        .version = rec->version,
        .package_dir = rec->package_dir,
        .snapshot_dir = rec->snapshot_dir,
        .manifest = &rec->manifest,
        .serve = psb->role == SANDBOX_ROLE_INSTANCE,
    };
    struct sandbox_events ev = {.on_exit = on_exit, .on_log = on_instance_log, .data = psb};
    sandbox_set_events(psb->sb, &ev);
    int r = sandbox_specialize(psb->sb, &spec, done, psb);
    if (r < 0)
        done(psb->sb, r, psb);
}

/* The stem cell (or the fresh sandbox) is ready: specialize it. */
static void zygote_specialize(struct pool_sb *z)
{
    z->role = SANDBOX_ROLE_ZYGOTE;
    specialize(z, on_zygote_exit, on_zygote_ready);
}

enum sandbox_kind pool__fn_kind(const struct pool *p, const struct pool_fn *fn)
{
    switch (fn->rec->manifest.sandbox) {
    case MANIFEST_SANDBOX_CONTAINER:
        return SANDBOX_CONTAINER;
    case MANIFEST_SANDBOX_MICROVM:
        return SANDBOX_MICROVM;
    default:
        return p->default_kind;
    }
}

/*
 * A sandbox of @kind for @fn, as @role: a ready stem cell (*how = stem) or
 * a new one to create (*how = cold), charged to the ledger. A specialized
 * stem cell never goes back to the generic pool: from here it belongs to
 * this function version only. NULL if out of memory.
 */
static struct pool_sb *take_sandbox(struct pool *p, struct pool_fn *fn, enum sandbox_kind kind,
                                    enum sandbox_role role, enum pool_acquire *how)
{
    struct pool_sb *psb;
    if (!list_empty(&p->stems[kind])) {
        psb = list_entry(p->stems[kind].next, struct pool_sb, link);
        list_remove(&psb->link);
        p->n_stems[kind]--;
        psb->state = PSB_STARTING;
        *how = POOL_ACQUIRE_STEM;
    } else {
        psb = pool__psb_new(p, kind, role);
        if (!psb)
            return NULL;
        *how = POOL_ACQUIRE_COLD;
    }
    psb->role = role;
    psb->fn = fn;
    psb->rec = fn->rec;
    store_record_ref(psb->rec);
    pool__charge(p, psb, pool__fn_memory(fn->rec));
    return psb;
}

/* Build @psb's sandbox from nothing; @on_exit watches it once it is up. */
static int create_cold(struct pool *p, struct pool_sb *psb, sandbox_exit_cb on_exit)
{
    int r = sandbox_create(p->be[psb->kind], &psb->sb, on_created, psb);
    if (r < 0)
        return r;
    struct sandbox_events ev = {.on_exit = on_exit, .data = psb};
    sandbox_set_events(psb->sb, &ev);
    return 0;
}

/*
 * Make the function's zygote from a stem cell if one is ready, else from a
 * new sandbox. Returns how (stem or cold), or -errno.
 */
static int zygote_start(struct pool *p, struct pool_fn *fn, enum pool_acquire *how)
{
    enum sandbox_kind kind = pool__fn_kind(p, fn);
    if (!p->be[kind])
        return -ENOTSUP;
    struct pool_sb *z = take_sandbox(p, fn, kind, SANDBOX_ROLE_ZYGOTE, how);
    if (!z)
        return -ENOMEM;
    z->acquire = *how;
    fn->zygote = z;

    if (*how == POOL_ACQUIRE_STEM) {
        zygote_specialize(z);
    } else {
        int r = create_cold(p, z, on_zygote_exit);
        if (r < 0) {
            fn->zygote = NULL;
            pool__psb_destroy(z);
            return r;
        }
    }
    pool__kick(p); /* refill the stem cell we took, off this call's path */
    return 0;
}

/*
 * The zygote of a function whose first instance served by itself, made
 * after that instance's call, from a spare stem cell: while no call waits
 * for an instance (on two cores it would slow them down), only with a stem
 * cell left over for the next first call (a stream of first calls needs
 * them more), and only within the budget as it stands: it is worth no
 * eviction. Without it, scale-out makes one on the call's path.
 */
void pool__zygote_background(struct pool *p, struct pool_fn *fn)
{
    /* (Without instances and unused for a keep-alive, the sweep would
     * retire it at once.) */
    bool unused = fn->n_instances == 0 && fn->last_used_ns &&
                  ember_now_ns() - fn->last_used_ns >= pool__fn_keepalive_ms(p, fn) * 1000000ull;
    if (fn->zygote || fn->removed || !fn->rec || unused) {
        fn->want_zygote = false;
        return;
    }
    /* Not now: a later kick (the sweep's at the latest) tries again. */
    if (p->acquiring > 0 || p->draining || p->n_stems[pool__fn_kind(p, fn)] < 2 ||
        p->mem_charged + pool__fn_memory(fn->rec) > pool__budget_bytes(p))
        return;
    enum pool_acquire how;
    int r = zygote_start(p, fn, &how);
    if (r < 0)
        log_debug("pool: no zygote for %s: %s", fn->name, strerror(-r));
    else
        fn->want_zygote = false;
}

/* ---- instances that serve straight after specialize ---------------------- */

static void on_direct_ready(struct sandbox *sb, int status, void *data)
{
    struct pool_sb *inst = data;
    if (status == 0) {
        if (inst->kind == SANDBOX_MICROVM)
            inst->fn->snapshot_ready = true;
        if (inst->reserved)
            inst->reserved->init_ns = sandbox_init_ns(sb);
    }
    on_instance_forked(sb, status, inst);
}

static void direct_specialize(struct pool_sb *inst)
{
    specialize(inst, on_instance_exit, on_direct_ready);
}

/* A sandbox made from nothing for @data (a zygote, or a directly serving
 * instance) is up, or failed: specialize it for its function. */
static void on_created(struct sandbox *sb, int status, void *data)
{
    struct pool_sb *psb = data;
    bool direct = psb->role == SANDBOX_ROLE_INSTANCE;
    if (status < 0) {
        if (direct)
            on_instance_forked(sb, status, psb);
        else
            on_zygote_ready(sb, status, psb);
        return;
    }
    if (direct)
        direct_specialize(psb);
    else
        zygote_specialize(psb);
}

/*
 * A backend whose specialized sandboxes serve calls themselves: the
 * function's snapshot on disk plays the zygote, and each instance is a stem
 * cell (or a new sandbox) specialized from it. Also a container function's
 * first instance: the stem cell serves the call itself rather than become a
 * zygote and fork (~0.5 ms less on a cold start); the zygote is made after
 * that call, off its path (fn_want_zygote).
 */
static int instance_start_direct(struct pool *p, struct pool_fn *fn, enum sandbox_kind kind,
                                 struct pool_call *c)
{
    enum pool_acquire how;
    struct pool_sb *inst = take_sandbox(p, fn, kind, SANDBOX_ROLE_INSTANCE, &how);
    if (!inst)
        return -ENOMEM;
    if (how == POOL_ACQUIRE_STEM && kind == SANDBOX_MICROVM && fn->snapshot_ready)
        how = POOL_ACQUIRE_SNAPSHOT;
    inst->reserved = c;
    inst->acquire = how;
    if (c && !c->acquiring) {
        c->acquiring = true;
        p->acquiring++;
    }
    fn->n_instances++;
    list_insert_tail(&fn->instances, &inst->link);
    p->created[how]++;

    if (how != POOL_ACQUIRE_COLD) {
        direct_specialize(inst);
    } else {
        int r = create_cold(p, inst, on_instance_exit);
        if (r < 0) {
            inst->reserved = NULL;
            pool__psb_destroy(inst);
            return r;
        }
    }
    pool__kick(p);
    return 0;
}

bool pool__instance_room(struct pool *p, struct pool_fn *fn)
{
    if (fn->zygote && fn->zygote->prefork)
        return true; /* at worst the instance takes over the child's charge */
    return pool__make_room(p, pool__fn_memory(fn->rec));
}

/*
 * Start a new instance of @fn, for call @c (or none, for min_warm). The
 * caller checked max_instances and the memory budget (pool__instance_room).
 */
int pool__instance_start(struct pool *p, struct pool_fn *fn, struct pool_call *c)
{
    enum sandbox_kind kind = pool__fn_kind(p, fn);
    if (!p->be[kind])
        return -ENOTSUP;
    if (sandbox_backend_specialized_serves(p->be[kind]))
        return instance_start_direct(p, fn, kind, c);
    /* Once per zygote-less spell: a function that needs instances again
     * before its zygote could be made in the background (fresh_per_call,
     * max_calls_per_instance, no spare stem cell) makes it now. Only for
     * one call at a time: a served instance is its namespace's init, and
     * with calls on worker threads it could not reap the orphans of one
     * call without stealing another's child (an exec handler's background
     * processes piled up as zombies to the pids limit); a zygote reaps
     * its instances' orphans. */
    if (!fn->zygote && fn->n_instances == 0 && !fn->want_zygote && pool__fn_capacity(fn) == 1) {
        fn->want_zygote = true;
        return instance_start_direct(p, fn, kind, c);
    }

    enum pool_acquire how = POOL_ACQUIRE_ZYGOTE;
    if (!fn->zygote) {
        if (!pool__make_room(p, 2 * pool__fn_memory(fn->rec)))
            return -ENOMEM;
        int r = zygote_start(p, fn, &how);
        if (r < 0)
            return r;
    }
    struct pool_sb *z = fn->zygote;
    if (z->state == PSB_STARTING && how == POOL_ACQUIRE_ZYGOTE)
        how = z->acquire; /* waits for a zygote still being made: same cost */
    /* No room but the charge of the child the zygote forked ahead: that
     * child becomes this instance (the FORK takes it) and its charge moves
     * here; PREFORK 0 after the FORK keeps the zygote from forking another
     * until the budget has room again (the sweep asks). */
    uint64_t need = pool__fn_memory(fn->rec);
    bool hand_over = z->prefork && p->mem_charged + need > pool__budget_bytes(p);

    struct pool_sb *inst = pool__psb_new(p, z->kind, SANDBOX_ROLE_INSTANCE);
    if (!inst)
        return -ENOMEM;
    inst->fn = fn;
    inst->rec = fn->rec;
    store_record_ref(inst->rec);
    inst->zygote = z;
    z->children++;
    inst->reserved = c;
    inst->acquire = how;
    if (c && !c->acquiring) {
        c->acquiring = true;
        p->acquiring++;
    }
    if (hand_over) {
        pool__charge(p, z, need);
        z->prefork = false;
    }
    pool__charge(p, inst, need);
    fn->n_instances++;
    list_insert_tail(&fn->instances, &inst->link);
    p->created[how]++;

    if (z->state == PSB_ZYGOTE)
        instance_fork(inst);
    else
        list_insert_tail(&z->waiters, &inst->wait_link);
    if (hand_over && z->sb)
        sandbox_prefork(z->sb, 0); /* after the FORK: it finds none waiting */
    return 0;
}
