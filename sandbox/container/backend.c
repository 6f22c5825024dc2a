/* backend.c - the container sandbox_ops: glue between the generic core
 * (sandbox_internal.h) and the host-side building blocks (container.h).
 *
 * Every container_* call that may block runs on libuv's thread pool through
 * sandbox__queue_work; the loop only sequences the steps:
 *
 *   create      spawn (pool) -> attach channel + pidfd -> HELLO
 *   specialize  cgroup limits + package mount (pool) -> LOAD(mount fd) -> LOADED;
 *               with spec->serve the agent then serves calls itself (a
 *               function's first instance: no fork on its path)
 *   fork        socketpair -> FORK(child end) on the zygote, which waits
 *               ("parks") in the group made for this instance, so the
 *               child is born there -> FORKED(pidfd) -> attach -> HELLO;
 *               then the next group is made (pool) and PARK moves the
 *               zygote into it. Without a fresh park (a burst): FORK also
 *               carries a group's cgroup.procs and the child moves itself.
 *               With PREFORK 1 (ct_prefork) the zygote forks the child
 *               right after each PARK, and the FORK of the child born in
 *               that park only hands it its channel.
 *   destroy     (the core has killed it) -> cgroup removal (pool) -> free
 *
 * An instance lives in its zygote's pid namespace, of which the zygote is
 * init: when the zygote dies or is destroyed, its instances die with it
 * (on_exit "died with its zygote"). Retire a zygote after its instances.
 *
 * A struct container_sb is "busy" while a step outside the core owns it (a
 * pool job, or the zygote's FORKED wait for a new instance); a destroy that
 * comes then is finished by that step when it returns.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "sandbox/container/container.h"
#include "sandbox/sandbox_internal.h"

struct container_sb {
    struct container_host *host;
    uint64_t id;
    char cgroup[128];
    bool have_cgroup; /* a cgroup exists (or may): remove it at the end */
    bool busy;        /* a pool job or a FORKED wait owns this; a destroy
                         meanwhile is finished when it returns */

    sandbox_done_cb cb; /* the core's completion of the current op */
    void *cb_data;

    /* thread-pool inputs and outputs of the current step */
    struct container_limits lim;
    struct container_proc proc;
    struct ember_error err;
    int result;
    char *package_dir;
    int mount_fd;
    struct proto_buf load;

    /* fork: the instance's side until it is attached */
    int chan_fd;
    int pidfd;
    pid_t host_pid;
    int procs_fds[CONTAINER_MAX_HIERARCHIES]; /* its cgroup.procs, for the child */
    int n_procs_fds;

    /* zygote: the next instance's cgroup, made ahead so that a fork needs
     * no thread-pool step at all ("in-<n>", its procs fds) */
    char next_cgroup[32];
    int next_fds[CONTAINER_MAX_HIERARCHIES];
    int n_next_fds;
    bool next_ready;
    struct container_limits next_lim;
    struct ember_error next_err;
    int next_result;

    /* zygote parking: between forks the zygote waits inside the next
     * instance's group (PROTO_PARK), so that the child is born in it and
     * moves nowhere; after the fork it parks in the one after. */
    char park[32];      /* the group of the last PARK sent */
    bool park_fresh;    /* no child born in it yet: the zygote's to remove */
    bool park_busy;     /* PARK sent, PARKED not back yet */
    bool park_broken;   /* a PARK failed: forks leave the zygote alone */
    char in[128];       /* the group the zygote last said it is in */
    char deferred[128]; /* a gone child's group the zygote has not left yet */

    /* instance born in its zygote's park: until the zygote says it left
     * (PARKED), removing the group would kill the zygote */
    struct sandbox *park_zygote; /* held */
};

static struct container_sb *csb_new(struct sandbox *sb, sandbox_done_cb cb, void *data)
{
    struct container_sb *cs = calloc(1, sizeof(*cs));
    if (!cs)
        return NULL;
    cs->host = sb->backend->priv;
    cs->id = sb->id;
    cs->cb = cb;
    cs->cb_data = data;
    cs->mount_fd = -1;
    cs->chan_fd = -1;
    cs->pidfd = -1;
    cs->proc.pidfd = -1;
    cs->proc.chan_fd = -1;
    proto_buf_init(&cs->load);
    return cs;
}

static void csb_free(struct container_sb *cs)
{
    if (cs->park_zygote)
        sandbox__release(cs->park_zygote);
    for (int i = 0; i < cs->n_procs_fds; i++)
        close(cs->procs_fds[i]);
    for (int i = 0; i < cs->n_next_fds; i++)
        close(cs->next_fds[i]);
    if (cs->mount_fd >= 0)
        close(cs->mount_fd);
    if (cs->chan_fd >= 0)
        close(cs->chan_fd);
    if (cs->pidfd >= 0) {
        pidfd_send_signal(cs->pidfd, SIGKILL, NULL, 0);
        close(cs->pidfd);
    }
    proto_buf_free(&cs->load);
    free(cs->package_dir);
    free(cs);
}

static void done(struct sandbox *sb, struct container_sb *cs, int status)
{
    cs->cb(sb, status, cs->cb_data);
}

static struct container_limits function_limits(const struct sandbox *sb)
{
    const struct sandbox_config *cfg = &sb->backend->cfg;
    return (struct container_limits){
        .memory_bytes = (uint64_t)sb->memory_mb << 20,
        .pids_max = cfg->pids_max,
        .cpu_quota_pct = cfg->cpu_quota_pct,
    };
}

/* ---- release ---- */

static void work_remove(void *ctx)
{
    struct container_sb *cs = ctx;
    if (cs->next_cgroup[0])
        container_cgroup_remove(cs->host, cs->next_cgroup); /* made ahead, unused */
    if (cs->park[0] && cs->park_fresh)
        container_cgroup_remove(cs->host, cs->park); /* the zygote's, no child's */
    if (cs->deferred[0])
        container_cgroup_remove(cs->host, cs->deferred);
    cs->result = container_cgroup_remove(cs->host, cs->cgroup);
}

/* A group removed on its own (a zygote leaving a gone child's group). */
struct remove_job {
    struct container_host *host;
    char cgroup[128];
};

static void work_remove_job(void *ctx)
{
    struct remove_job *j = ctx;
    int r = container_cgroup_remove(j->host, j->cgroup);
    if (r < 0 && r != -ENOENT)
        log_warn("container: removing cgroup %s: %s", j->cgroup, strerror(-r));
}

static void after_remove_job(struct sandbox *sb, void *ctx)
{
    free(ctx);
}

static void remove_later(struct sandbox *sb, struct container_host *host, const char *cgroup)
{
    struct remove_job *j = calloc(1, sizeof(*j));
    if (j) {
        j->host = host;
        snprintf(j->cgroup, sizeof(j->cgroup), "%s", cgroup);
        if (sandbox__queue_work(sb, work_remove_job, after_remove_job, j) == 0)
            return;
    }
    free(j);
    log_warn("container: cgroup %s left behind", cgroup);
}

/* An instance born in its zygote's park goes while the zygote may still be
 * in its group: the zygote takes the group and removes it once it has left
 * (PARKED), or when it goes itself. */
static void hand_group_to_zygote(struct container_sb *cs)
{
    struct sandbox *z = cs->park_zygote;
    cs->park_zygote = NULL;
    struct container_sb *zs = z->priv;
    if (cs->have_cgroup && zs && !sandbox__destroyed(z) && strcmp(zs->in, cs->cgroup) == 0 &&
        !zs->deferred[0]) {
        snprintf(zs->deferred, sizeof(zs->deferred), "%s", cs->cgroup);
        cs->have_cgroup = false;
    }
    sandbox__release(z);
}

static void after_remove(struct sandbox *sb, void *ctx)
{
    struct container_sb *cs = ctx;
    if (cs->result < 0 && cs->result != -ENOENT)
        log_warn("sandbox %" PRIu64 ": removing cgroup %s: %s", cs->id, cs->cgroup,
                 strerror(-cs->result));
    csb_free(cs);
}

/* The sandbox is destroyed and no step owns @cs any more: give the cgroup
 * back (blocking: on the pool) and free. */
static void release(struct sandbox *sb, struct container_sb *cs)
{
    sb->priv = NULL;
    for (int i = 0; i < cs->n_next_fds; i++)
        close(cs->next_fds[i]);
    cs->n_next_fds = 0;
    if (cs->park_zygote)
        hand_group_to_zygote(cs);
    if (cs->have_cgroup && sandbox__queue_work(sb, work_remove, after_remove, cs) == 0)
        return;
    if (cs->have_cgroup)
        log_warn("sandbox %" PRIu64 ": cgroup %s left behind", cs->id, cs->cgroup);
    csb_free(cs);
}

static void ct_destroy(struct sandbox *sb)
{
    struct container_sb *cs = sb->priv;
    if (!cs)
        return;
    if (cs->busy)
        return; /* the step that owns cs releases it when it returns */
    release(sb, cs);
}

/* Called first thing when a step returns: false if the sandbox was
 * destroyed meanwhile (then @cs has been released). */
static bool step_returns(struct sandbox *sb, struct container_sb *cs)
{
    cs->busy = false;
    if (!sandbox__destroyed(sb))
        return true;
    release(sb, cs);
    return false;
}

/* ---- backend ---- */

static int ct_backend_init(struct sandbox_backend *be, struct ember_error *err)
{
    struct container_host *h;
    be->cfg.uid_count /= 2; /* the upper half is the microVM backend's */
    int r = container_host_open(&be->cfg, &h, err);
    if (r < 0)
        return r;
    be->priv = h;
    return 0;
}

static void ct_backend_destroy(struct sandbox_backend *be)
{
    if (be->priv)
        container_host_close(be->priv);
    be->priv = NULL;
}

/* ---- create: a stem cell ---- */

static void on_stem_hello(struct sandbox *sb, int status, void *data)
{
    struct container_sb *cs = data;
    done(sb, cs, status);
}

static void work_spawn(void *ctx)
{
    struct container_sb *cs = ctx;
    cs->result = container_spawn(cs->host, cs->id, &cs->lim, NULL, &cs->proc, &cs->err);
}

static void after_spawn(struct sandbox *sb, void *ctx)
{
    struct container_sb *cs = ctx;
    cs->busy = false;
    if (cs->result < 0) {
        if (sandbox__destroyed(sb)) {
            release(sb, cs);
            return;
        }
        sandbox__set_error(sb, "spawn: %s", cs->err.msg[0] ? cs->err.msg : strerror(-cs->result));
        done(sb, cs, cs->result);
        return;
    }
    snprintf(cs->cgroup, sizeof(cs->cgroup), "%s", cs->proc.cgroup);
    cs->have_cgroup = true;
    /* Attach even when destroyed meanwhile: the core then kills the process
     * and reaps it. */
    int r =
        sandbox__attach(sb, cs->proc.chan_fd, cs->proc.pidfd, cs->proc.pid, SANDBOX__DIRECT_CHILD);
    cs->proc.chan_fd = cs->proc.pidfd = -1;
    if (sandbox__destroyed(sb)) {
        release(sb, cs);
        return;
    }
    if (r == 0)
        r = sandbox__wait_hello(sb, SANDBOX_HELLO_TIMEOUT_MS, on_stem_hello, cs);
    if (r < 0) {
        sandbox__set_error(sb, "stem cell start: %s", strerror(-r));
        done(sb, cs, r);
    }
}

static int ct_create(struct sandbox_backend *be, struct sandbox *sb, sandbox_done_cb cb, void *data)
{
    struct container_sb *cs = csb_new(sb, cb, data);
    if (!cs)
        return -ENOMEM;
    cs->lim = (struct container_limits){
        .memory_bytes = (uint64_t)be->cfg.stem_memory_mb << 20,
        .pids_max = be->cfg.pids_max,
        .cpu_quota_pct = be->cfg.cpu_quota_pct,
    };
    int r = sandbox__queue_work(sb, work_spawn, after_spawn, cs);
    if (r < 0) {
        csb_free(cs);
        return r;
    }
    cs->busy = true;
    sb->priv = cs;
    return 0;
}

/* ---- specialize: stem cell -> zygote ---- */

static void zygote_prepare_next(struct sandbox *zygote, struct container_sb *zs);
static void zygote_park(struct sandbox *zygote, struct container_sb *zs);

/* Names of instance cgroups made ahead ("in-<n>"); loop thread only. */
static uint64_t next_instance_seq(void)
{
    static uint64_t seq;
    return ++seq;
}

static void on_loaded(struct sandbox *sb, int status, void *data)
{
    struct container_sb *cs = data;
    done(sb, cs, status);
    if (status == 0 && !sb->serves && !sandbox__destroyed(sb) && sb->priv == cs) {
        snprintf(cs->in, sizeof(cs->in), "%s", cs->cgroup);
        if (cs->next_ready)
            zygote_park(sb, cs); /* in the first instance's group, made ahead */
        else
            zygote_prepare_next(sb, cs);
    }
}

static void work_specialize(void *ctx)
{
    struct container_sb *cs = ctx;
    cs->result = container_cgroup_set(cs->host, cs->cgroup, &cs->lim, &cs->err);
    if (cs->result < 0)
        return;
    int fd = container_package_mount(cs->package_dir, &cs->err);
    if (fd < 0) {
        cs->result = fd;
        return;
    }
    cs->mount_fd = fd;
    /* A zygote's first instance's cgroup too, while we are on the pool:
     * the fork that follows the LOAD then needs no step of its own. */
    if (cs->next_cgroup[0])
        cs->next_result = container_cgroup_prepare(cs->host, cs->next_cgroup, &cs->next_lim,
                                                   cs->next_fds, &cs->n_next_fds, &cs->next_err);
}

static void after_specialize(struct sandbox *sb, void *ctx)
{
    struct container_sb *cs = ctx;
    free(cs->package_dir);
    cs->package_dir = NULL;
    if (!step_returns(sb, cs))
        return;
    if (cs->result < 0) {
        proto_buf_free(&cs->load);
        sandbox__set_error(sb, "specialize: %s",
                           cs->err.msg[0] ? cs->err.msg : strerror(-cs->result));
        done(sb, cs, cs->result);
        return;
    }
    if (cs->next_cgroup[0] && cs->next_result == 0 && cs->n_next_fds > 0)
        cs->next_ready = true;
    else
        cs->next_cgroup[0] = '\0';
    /* The mount goes to the agent, which attaches it at /fn. */
    int fds[1] = {cs->mount_fd};
    cs->mount_fd = -1;
    int r = sandbox__load_send(sb, &cs->load, fds, 1, on_loaded, cs);
    if (r < 0) {
        sandbox__set_error(sb, "specialize: sending LOAD: %s", strerror(-r));
        done(sb, cs, r);
    }
}

static int ct_specialize(struct sandbox *sb, const struct sandbox_spec *spec, sandbox_done_cb cb,
                         void *data)
{
    struct container_sb *cs = sb->priv;
    if (!cs || cs->busy)
        return -EBUSY;
    if (!spec->package_dir)
        return -EINVAL;
    /* A served instance is its namespace's init: with calls on worker
     * threads it cannot reap orphans without stealing a call's child. */
    if (spec->serve && spec->manifest && spec->manifest->concurrency > 1)
        return -EINVAL;

    size_t bpf_len = 0;
    const void *bpf = container_seccomp_bpf(cs->host, &bpf_len);
    if (!bpf || bpf_len == 0 || bpf_len > UINT32_MAX)
        return -ENOTSUP;
    struct proto_pair extra[] = {
        {{PROTO_OPT_SECCOMP, sizeof(PROTO_OPT_SECCOMP) - 1}, {bpf, (uint32_t)bpf_len}},
        {{PROTO_OPT_SERVE, sizeof(PROTO_OPT_SERVE) - 1}, {"1", 1}},
    };
    /* Everything of @spec the later steps need is copied now: the frame
     * and the package path. */
    int r = sandbox__load_encode(&cs->load, spec, extra, spec->serve ? 2 : 1);
    if (r < 0) {
        proto_buf_free(&cs->load);
        return r;
    }
    cs->package_dir = strdup(spec->package_dir);
    if (!cs->package_dir) {
        proto_buf_free(&cs->load);
        return -ENOMEM;
    }
    cs->lim = function_limits(sb);
    cs->cb = cb;
    cs->cb_data = data;
    memset(&cs->err, 0, sizeof(cs->err));
    /* An instance that serves itself stays in its own group and forks nothing. */
    if (spec->serve)
        cs->next_cgroup[0] = '\0';
    else
        snprintf(cs->next_cgroup, sizeof(cs->next_cgroup), "in-%" PRIu64, next_instance_seq());
    cs->next_lim = cs->lim;
    memset(&cs->next_err, 0, sizeof(cs->next_err));
    r = sandbox__queue_work(sb, work_specialize, after_specialize, cs);
    if (r < 0) {
        free(cs->package_dir);
        cs->package_dir = NULL;
        proto_buf_free(&cs->load);
        return r;
    }
    cs->busy = true;
    return 0;
}

/* ---- fork: zygote -> instance ---- */

static void on_child_hello(struct sandbox *child, int status, void *data)
{
    struct container_sb *cs = data;
    struct sandbox *zygote = child->zygote;
    if (zygote)
        sandbox__hold(zygote); /* across the pool's callback */
    done(child, cs, status);
    /* The zygote's next park is made now, not during the fork: on two cores
     * the group's making and the zygote's move would slow the child down. */
    if (zygote) {
        struct container_sb *zs = zygote->priv;
        if (zs && !sandbox__destroyed(zygote)) {
            if (zs->next_ready)
                zygote_park(zygote, zs);
            else
                zygote_prepare_next(zygote, zs);
        }
        sandbox__release(zygote);
    }
}

/*
 * The instance's cgroup is made before the fork, and the child moves itself
 * in (writing "0" to the cgroup.procs files emberd opened) before its HELLO:
 * nothing on the host waits for a migration between FORKED and the first
 * call, and the fork path has one thread-pool step, before the fork.
 */
static void work_prepare(void *ctx)
{
    struct container_sb *cs = ctx;
    cs->result = container_cgroup_prepare(cs->host, cs->cgroup, &cs->lim, cs->procs_fds,
                                          &cs->n_procs_fds, &cs->err);
}

static void close_procs_fds(struct container_sb *cs)
{
    for (int i = 0; i < cs->n_procs_fds; i++)
        close(cs->procs_fds[i]);
    cs->n_procs_fds = 0;
}

static void on_forked(struct sandbox *zygote, int status, int pidfd, pid_t ns_pid,
                      uint64_t ahead_ns, void *data)
{
    struct sandbox *child = data;
    struct container_sb *cs = child->priv;
    cleanup_close int fd = pidfd;

    cs->busy = false;
    if (sandbox__destroyed(child)) {
        if (fd >= 0)
            pidfd_send_signal(fd, SIGKILL, NULL, 0); /* its zygote reaps it */
        release(child, cs);
        sandbox__release(child);
        return;
    }
    if (status < 0) {
        sandbox__set_error(child, "fork: %s",
                           zygote->last_error[0] ? zygote->last_error : strerror(-status));
        done(child, cs, status);
        sandbox__release(child);
        return;
    }
    pid_t pid = container_pidfd_pid(fd);
    if (pid <= 0) {
        pidfd_send_signal(fd, SIGKILL, NULL, 0);
        sandbox__set_error(child, "fork: no host pid for the instance: %s",
                           strerror(pid < 0 ? -pid : ESRCH));
        done(child, cs, pid < 0 ? pid : -ESRCH);
        sandbox__release(child);
        return;
    }
    child->ns_pid = ns_pid;
    child->ahead_ns = ahead_ns;
    cs->host_pid = pid;
    /* Every instance's group is new: no OOM kill to count from. */
    child->oom_base = 0;
    child->have_oom_base = true;
    /* The instance is not our child: the zygote reaps it and reports its
     * status with PROTO_EXITED. */
    int r = sandbox__attach(child, cs->chan_fd, steal_fd(&fd), pid, 0);
    cs->chan_fd = -1;
    if (r == 0)
        r = sandbox__wait_hello(child, SANDBOX_HELLO_TIMEOUT_MS, on_child_hello, cs);
    if (r < 0) {
        sandbox__set_error(child, "instance start: %s", strerror(-r));
        done(child, cs, r);
    }
    sandbox__release(child);
}

/* Socketpair and FORK with the instance's cgroup.procs fds (taken). Does
 * not call the op's callback: returns 0 or -errno. */
static int send_fork(struct sandbox *child, struct container_sb *cs)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        int r = -errno;
        close_procs_fds(cs);
        return r;
    }
    cs->chan_fd = sv[0];
    int fds[1 + CONTAINER_MAX_HIERARCHIES];
    int n = 0;
    fds[n++] = sv[1];
    for (int i = 0; i < cs->n_procs_fds; i++)
        fds[n++] = cs->procs_fds[i];
    cs->n_procs_fds = 0; /* sent (or closed) by fork_send */
    /* The FORKED wait sits on the zygote but refers to the child: hold it
     * and mark cs busy until the answer comes. */
    int r = sandbox__fork_send(child->zygote, fds, n, on_forked, child);
    if (r < 0) {
        close(cs->chan_fd);
        cs->chan_fd = -1;
        return r;
    }
    cs->busy = true;
    sandbox__hold(child);
    return 0;
}

static void after_prepare(struct sandbox *child, void *ctx)
{
    struct container_sb *cs = ctx;
    cs->busy = false;
    /* Even a failed prepare may have left the group: removal is harmless. */
    cs->have_cgroup = true;
    if (sandbox__destroyed(child)) {
        close_procs_fds(cs);
        release(child, cs);
        return;
    }
    int r = cs->result;
    if (r < 0)
        close_procs_fds(cs);
    else
        r = send_fork(child, cs);
    if (r < 0) {
        sandbox__set_error(child, "fork: %s",
                           cs->result < 0 && cs->err.msg[0] ? cs->err.msg : strerror(-r));
        done(child, cs, r);
    }
}

static void work_prepare_next(void *ctx)
{
    struct container_sb *zs = ctx;
    zs->next_result = container_cgroup_prepare(zs->host, zs->next_cgroup, &zs->next_lim,
                                               zs->next_fds, &zs->n_next_fds, &zs->next_err);
}

static void after_prepare_next(struct sandbox *zygote, void *ctx)
{
    struct container_sb *zs = ctx;
    if (!step_returns(zygote, zs))
        return; /* destroyed meanwhile: release removed the group too */
    if (zs->next_result < 0) {
        log_warn("sandbox %" PRIu64 ": cgroup for the next instance: %s", zs->id,
                 zs->next_err.msg[0] ? zs->next_err.msg : strerror(-zs->next_result));
        zs->next_cgroup[0] = '\0';
        return; /* forks make their own, one step slower */
    }
    zs->next_ready = true;
    zygote_park(zygote, zs);
}

static void on_parked(struct sandbox *zygote, int status, void *data)
{
    struct container_sb *zs = data;
    zs->park_busy = false;
    if (sandbox__destroyed(zygote) || status == -ECHILD)
        return; /* its release removes what it holds */
    if (status < 0) {
        log_warn("sandbox %" PRIu64 ": zygote cannot change cgroup (%s): its instances "
                 "move themselves from now on",
                 zs->id, zygote->last_error[0] ? zygote->last_error : strerror(-status));
        zs->park_broken = true;
        return;
    }
    char left[sizeof(zs->in)];
    snprintf(left, sizeof(left), "%s", zs->in);
    snprintf(zs->in, sizeof(zs->in), "%s", zs->park);
    if (zs->deferred[0] && strcmp(zs->deferred, left) == 0) {
        remove_later(zygote, zs->host, zs->deferred);
        zs->deferred[0] = '\0';
    }
    /* A child born in this park meanwhile said HELLO while the PARK was
     * out, and its zygote_park was skipped: park again now, or the zygote
     * would wait in a used group until the next fork (every fork then
     * moving its child, and none forked ahead). */
    if (!zs->park_fresh) {
        if (zs->next_ready)
            zygote_park(zygote, zs);
        else
            zygote_prepare_next(zygote, zs);
    }
}

/* Move the zygote into the group made ahead, unless it waits in a fresh one
 * already. Forks sent after the PARK find it there (frames are read in
 * order), so nothing waits for PARKED but the removal of the group left. */
static void zygote_park(struct sandbox *zygote, struct container_sb *zs)
{
    if (!zs->next_ready || zs->park_fresh || zs->park_busy || zs->park_broken)
        return;
    int fds[CONTAINER_MAX_HIERARCHIES];
    int n = zs->n_next_fds;
    memcpy(fds, zs->next_fds, sizeof(fds));
    zs->n_next_fds = 0;
    zs->next_ready = false;
    snprintf(zs->park, sizeof(zs->park), "%s", zs->next_cgroup);
    zs->next_cgroup[0] = '\0';
    zs->park_fresh = true; /* unused either way: the zygote's to remove */
    if (sandbox__park_send(zygote, fds, n, on_parked, zs) < 0) {
        zs->park_broken = true;
        return;
    }
    zs->park_busy = true;
}

/* Make the next instance's cgroup ahead, on the pool, off any call's path. */
static void zygote_prepare_next(struct sandbox *zygote, struct container_sb *zs)
{
    if (zs->busy || zs->next_ready)
        return;
    snprintf(zs->next_cgroup, sizeof(zs->next_cgroup), "in-%" PRIu64, next_instance_seq());
    zs->next_lim = function_limits(zygote);
    memset(&zs->next_err, 0, sizeof(zs->next_err));
    if (sandbox__queue_work(zygote, work_prepare_next, after_prepare_next, zs) == 0)
        zs->busy = true;
    else
        zs->next_cgroup[0] = '\0';
}

static int ct_fork(struct sandbox *zygote, struct sandbox *child, sandbox_done_cb cb, void *data)
{
    struct container_sb *cs = csb_new(child, cb, data);
    if (!cs)
        return -ENOMEM;
    child->priv = cs;
    struct container_sb *zs = zygote->priv;
    if (zs && zs->park_fresh && !zs->park_broken) {
        /* The fastest: the zygote waits in a fresh group; the child is
         * born there and the FORK carries only its channel. */
        snprintf(cs->cgroup, sizeof(cs->cgroup), "%s", zs->park);
        int r = send_fork(child, cs);
        if (r < 0) {
            child->priv = NULL;
            csb_free(cs);
            return r; /* the group is still the zygote's, unused */
        }
        zs->park_fresh = false;
        cs->have_cgroup = true;
        cs->park_zygote = zygote;
        sandbox__hold(zygote);
        return 0; /* the next park is made after this instance's HELLO */
    }
    if (zs && zs->next_ready) {
        /* The fast path: the group is there; fork now, make the next one. */
        snprintf(cs->cgroup, sizeof(cs->cgroup), "%s", zs->next_cgroup);
        memcpy(cs->procs_fds, zs->next_fds, sizeof(zs->next_fds));
        cs->n_procs_fds = zs->n_next_fds;
        zs->n_next_fds = 0;
        zs->next_ready = false;
        zs->next_cgroup[0] = '\0';
        int r = send_fork(child, cs);
        if (r < 0) {
            /* Rare (no fds, no memory). The op fails synchronously, so
             * nothing of the child may remain: remove its group here. */
            container_cgroup_remove(cs->host, cs->cgroup);
            child->priv = NULL;
            csb_free(cs);
            return r;
        }
        cs->have_cgroup = true;
        zygote_prepare_next(zygote, zs);
        return 0;
    }
    snprintf(cs->cgroup, sizeof(cs->cgroup), "sb-%" PRIu64, child->id);
    cs->lim = function_limits(child);
    int r = sandbox__queue_work(child, work_prepare, after_prepare, cs);
    if (r < 0) {
        child->priv = NULL;
        csb_free(cs);
        return r;
    }
    cs->busy = true;
    return 0;
}

/* The zygote forks the instance ahead right after a PARK, into the group
 * it parked in, and hands it the next FORK of a child born there (ct_fork's
 * fastest path, a FORK with the channel only); a FORK that carries a
 * group's cgroup.procs forks on the spot and leaves it waiting. */
static int ct_prefork(struct sandbox *zygote, uint32_t n)
{
    struct container_sb *zs = zygote->priv;
    if (!zs || zygote->serves)
        return -EINVAL;
    struct proto_buf b;
    proto_buf_init(&b);
    int r = proto_buf_begin(&b, PROTO_PREFORK, 0);
    if (r == 0)
        r = proto_put_u32(&b, n);
    if (r == 0)
        r = proto_buf_finish(&b);
    if (r < 0) {
        proto_buf_free(&b);
        return r;
    }
    return sandbox__send(zygote, &b, NULL, 0);
}

/* ---- the rest ---- */

static int ct_stats(struct sandbox *sb, struct sandbox_stats *out)
{
    struct container_sb *cs = sb->priv;
    if (!cs || !cs->have_cgroup)
        return -ENOENT;
    return container_cgroup_stats(cs->host, cs->cgroup, out);
}

const struct sandbox_ops sandbox_container_ops = {
    .name = "container",
    .backend_init = ct_backend_init,
    .backend_destroy = ct_backend_destroy,
    .create = ct_create,
    .specialize = ct_specialize,
    .fork = ct_fork,
    .prefork = ct_prefork,
    .reset = NULL, /* a forked instance is thrown away, not rewound */
    .invoke = sandbox__invoke,
    .stats = ct_stats,
    .destroy = ct_destroy,
};
