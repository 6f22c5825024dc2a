/* backend.c - the microVM sandbox_ops: glue between the generic core
 * (sandbox_internal.h), the jail of the container backend (container.h) and
 * ember-vmm (vmm_main.c).
 *
 *   create      spawn ember-vmm in the jail (pool) -> attach -> HELLO: a stem
 *               cell, /dev/kvm open (or not yet: see fds below), no guest
 *   specialize  cgroup limits + open the image, the snapshot files and
 *               /dev/kvm (pool) -> LOAD(fds) -> LOADED; a snapshot the
 *               monitor created is renamed into place (pool)
 *   fork        a microVM is not forked: a NEW monitor is spawned in the jail
 *               (pool) and LOADs the zygote's spec, which restores the
 *               snapshot the zygote left (acquire "snapshot")
 *   reset       PROTO_RESET -> RESET_DONE (fresh_per_call: back to the
 *               snapshot, dirtied pages dropped)
 *   destroy     (the core has killed it) -> cgroup removal (pool) -> free
 *
 * The monitor touches no host path: emberd opens every file and passes the
 * fds with LOAD (vmm_main.c): fd[0] the guest image, fd[1]/fd[2] the
 * snapshot memory/state files (read-only when a snapshot exists, else two
 * empty temp files in snapshot_dir that the monitor fills and we rename),
 * fd[3] /dev/kvm (used when the jail's uid may not open the device).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <linux/kvm.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "sandbox/container/container.h"
#include "sandbox/sandbox_internal.h"

#define MICROVM_MEM_NAME "microvm.mem"
#define MICROVM_STATE_NAME "microvm.state"
/* The monitor's own memory beside its guest: binary, KVM structures, the
 * request copy, page tables of the host mapping. */
#define MICROVM_OVERHEAD_MB 48
/* Container and microVM sandboxes share the jail's cgroup naming: keep the
 * ids of the two backends apart. */
#define MICROVM_ID_BIT (1ull << 62)

enum { FD_IMAGE, FD_MEM, FD_STATE, FD_KVM, N_FDS };

struct microvm_sb {
    struct container_host *host;
    const char *vmm_path; /* the backend's config: outlives every sandbox */
    uint64_t id;
    char cgroup[128];
    bool have_cgroup;
    bool busy;            /* a pool job owns this */
    bool release_pending; /* destroyed while busy */

    sandbox_done_cb cb;
    void *cb_data;

    /* pool step inputs and outputs */
    struct container_limits lim;
    struct container_proc proc;
    struct ember_error err;
    int result;
    bool spawn; /* fork: spawn a monitor before opening files */

    /* the function (kept by a zygote for the instances it "forks") */
    char *package_dir, *handler, *snapshot_dir;
    uint8_t *load_bytes; /* the encoded LOAD frame */
    size_t load_len;

    /* LOAD's fds and the snapshot files this LOAD may create */
    int fds[N_FDS];
    int n_fds;
    bool snap_new;
    char tmp_mem[64], tmp_state[64];
    bool snap_rejected; /* the monitor found the existing snapshot bad */
};

static struct microvm_sb *msb_new(struct sandbox *sb, sandbox_done_cb cb, void *data)
{
    struct microvm_sb *ms = calloc(1, sizeof(*ms));
    if (!ms)
        return NULL;
    ms->host = sb->backend->priv;
    ms->vmm_path = sb->backend->cfg.vmm_path;
    ms->id = sb->id;
    ms->cb = cb;
    ms->cb_data = data;
    ms->proc.pidfd = ms->proc.chan_fd = -1;
    for (int i = 0; i < N_FDS; i++)
        ms->fds[i] = -1;
    return ms;
}

static void close_fds(struct microvm_sb *ms)
{
    for (int i = 0; i < N_FDS; i++)
        if (ms->fds[i] >= 0) {
            close(ms->fds[i]);
            ms->fds[i] = -1;
        }
    ms->n_fds = 0;
}

static void msb_free(struct microvm_sb *ms)
{
    close_fds(ms);
    if (ms->proc.chan_fd >= 0)
        close(ms->proc.chan_fd);
    if (ms->proc.pidfd >= 0) {
        kill(ms->proc.pid, SIGKILL);
        close(ms->proc.pidfd);
    }
    free(ms->package_dir);
    free(ms->handler);
    free(ms->snapshot_dir);
    free(ms->load_bytes);
    free(ms);
}

static void done(struct sandbox *sb, struct microvm_sb *ms, int status)
{
    ms->cb(sb, status, ms->cb_data);
}

static struct container_limits vm_limits(const struct sandbox *sb, uint32_t memory_mb)
{
    const struct sandbox_config *cfg = &sb->backend->cfg;
    return (struct container_limits){
        .memory_bytes = ((uint64_t)memory_mb + MICROVM_OVERHEAD_MB) << 20,
        .pids_max = cfg->pids_max,
        .cpu_quota_pct = cfg->cpu_quota_pct,
    };
}

/* ---- release ---- */

static void work_remove(void *ctx)
{
    struct microvm_sb *ms = ctx;
    ms->result = container_cgroup_remove(ms->host, ms->cgroup);
    /* temp snapshot files of a LOAD that never finished */
    if (ms->snap_new && ms->snapshot_dir) {
        cleanup_close int dfd = open(ms->snapshot_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            unlinkat(dfd, ms->tmp_mem, 0);
            unlinkat(dfd, ms->tmp_state, 0);
        }
    }
}

static void after_remove(struct sandbox *sb, void *ctx)
{
    struct microvm_sb *ms = ctx;
    if (ms->result < 0 && ms->result != -ENOENT)
        log_warn("sandbox %" PRIu64 ": removing cgroup %s: %s", ms->id, ms->cgroup,
                 strerror(-ms->result));
    msb_free(ms);
}

static void release(struct sandbox *sb, struct microvm_sb *ms)
{
    sb->priv = NULL;
    if ((ms->have_cgroup || ms->snap_new) &&
        sandbox__queue_work(sb, work_remove, after_remove, ms) == 0)
        return;
    if (ms->have_cgroup)
        log_warn("sandbox %" PRIu64 ": cgroup %s left behind", ms->id, ms->cgroup);
    msb_free(ms);
}

static void vm_destroy(struct sandbox *sb)
{
    struct microvm_sb *ms = sb->priv;
    if (!ms)
        return;
    if (ms->busy) {
        ms->release_pending = true;
        return;
    }
    release(sb, ms);
}

static bool step_returns(struct sandbox *sb, struct microvm_sb *ms)
{
    ms->busy = false;
    if (!sandbox__destroyed(sb))
        return true;
    release(sb, ms);
    return false;
}

/* ---- backend ---- */

static int vm_backend_init(struct sandbox_backend *be, struct ember_error *err)
{
    if (!be->cfg.vmm_path || access(be->cfg.vmm_path, X_OK) != 0)
        return ember_error_set(err, -ENOTSUP, "microvm: ember-vmm not found at '%s'",
                               be->cfg.vmm_path ? be->cfg.vmm_path : "(unset)");
    cleanup_close int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        return ember_error_sys(err, -errno, "microvm: open /dev/kvm");
    int v = ioctl(kvm, KVM_GET_API_VERSION, 0);
    if (v != KVM_API_VERSION)
        return ember_error_set(err, -ENOTSUP, "microvm: KVM_GET_API_VERSION %d, want %d", v,
                               KVM_API_VERSION);
    /* The monitors' jails get their own cgroup root and the upper half of
     * the uid range, apart from the container backend's sandboxes. */
    be->cfg.cgroup_tag = "microvm";
    be->cfg.uid_count /= 2;
    be->cfg.uid_base += be->cfg.uid_count;
    struct container_host *h;
    int r = container_host_open(&be->cfg, &h, err);
    if (r < 0)
        return r;
    be->priv = h;
    return 0;
}

static void vm_backend_destroy(struct sandbox_backend *be)
{
    if (be->priv)
        container_host_close(be->priv);
    be->priv = NULL;
}

/* ---- pool steps: spawn, open the LOAD fds, rename a new snapshot ---- */

static int spawn_monitor(struct microvm_sb *ms)
{
    const struct container_spawn_opts opts = {.exec_path = ms->vmm_path, .dev_kvm = true};
    int r =
        container_spawn(ms->host, ms->id | MICROVM_ID_BIT, &ms->lim, &opts, &ms->proc, &ms->err);
    if (r == 0) {
        snprintf(ms->cgroup, sizeof(ms->cgroup), "%s", ms->proc.cgroup);
        ms->have_cgroup = true;
    }
    return r;
}

static int open_load_fds(struct microvm_sb *ms)
{
    cleanup_close int pkg = open(ms->package_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (pkg < 0)
        return ember_error_sys(&ms->err, -errno, "open package dir %s", ms->package_dir);
    ms->fds[FD_IMAGE] = openat(pkg, ms->handler, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (ms->fds[FD_IMAGE] < 0)
        return ember_error_sys(&ms->err, -errno, "open guest image %s/%s", ms->package_dir,
                               ms->handler);
    if (mkdir(ms->snapshot_dir, 0700) < 0 && errno != EEXIST)
        return ember_error_sys(&ms->err, -errno, "mkdir %s", ms->snapshot_dir);
    cleanup_close int dfd = open(ms->snapshot_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return ember_error_sys(&ms->err, -errno, "open snapshot dir %s", ms->snapshot_dir);
    ms->fds[FD_MEM] = openat(dfd, MICROVM_MEM_NAME, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    ms->fds[FD_STATE] = openat(dfd, MICROVM_STATE_NAME, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (ms->fds[FD_MEM] < 0 || ms->fds[FD_STATE] < 0) {
        /* none yet: two empty files for the monitor to fill */
        for (int i = FD_MEM; i <= FD_STATE; i++)
            if (ms->fds[i] >= 0) {
                close(ms->fds[i]);
                ms->fds[i] = -1;
            }
        snprintf(ms->tmp_mem, sizeof(ms->tmp_mem), "." MICROVM_MEM_NAME ".%" PRIu64, ms->id);
        snprintf(ms->tmp_state, sizeof(ms->tmp_state), "." MICROVM_STATE_NAME ".%" PRIu64, ms->id);
        int fl = O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW;
        ms->fds[FD_MEM] = openat(dfd, ms->tmp_mem, fl, 0600);
        ms->fds[FD_STATE] = openat(dfd, ms->tmp_state, fl, 0600);
        ms->snap_new = true;
        if (ms->fds[FD_MEM] < 0 || ms->fds[FD_STATE] < 0)
            return ember_error_sys(&ms->err, -errno, "create snapshot files in %s",
                                   ms->snapshot_dir);
    }
    /* The jail's uid may not be allowed to open the device itself. */
    ms->fds[FD_KVM] = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    ms->n_fds = ms->fds[FD_KVM] >= 0 ? 4 : 3;
    return 0;
}

static void work_prepare(void *ctx)
{
    struct microvm_sb *ms = ctx;
    memset(&ms->err, 0, sizeof(ms->err));
    if (ms->spawn) {
        ms->result = spawn_monitor(ms);
        if (ms->result < 0)
            return;
    } else if (ms->have_cgroup) {
        ms->result = container_cgroup_set(ms->host, ms->cgroup, &ms->lim, &ms->err);
        if (ms->result < 0)
            return;
    }
    ms->result = open_load_fds(ms);
}

static void work_commit(void *ctx)
{
    struct microvm_sb *ms = ctx;
    cleanup_close int dfd = open(ms->snapshot_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ms->result = 0;
    if (dfd < 0) {
        ms->result = -errno;
        return;
    }
    if (ms->snap_new && ms->result == 0) {
        /* memory first: a state file never names memory that is not there
         * (and the state's checksums catch a mismatched pair anyway) */
        if (renameat(dfd, ms->tmp_mem, dfd, MICROVM_MEM_NAME) < 0 ||
            renameat(dfd, ms->tmp_state, dfd, MICROVM_STATE_NAME) < 0)
            ms->result = -errno;
        else if (fsync(dfd) < 0)
            ms->result = -errno;
        if (ms->result == 0)
            ms->snap_new = false;
    } else if (ms->snap_rejected) {
        /* the next specialize writes a good one */
        unlinkat(dfd, MICROVM_STATE_NAME, 0);
        unlinkat(dfd, MICROVM_MEM_NAME, 0);
    }
}

/* ---- LOAD and its answer ---- */

static void after_commit(struct sandbox *sb, void *ctx)
{
    struct microvm_sb *ms = ctx;
    if (!step_returns(sb, ms))
        return;
    if (ms->result < 0)
        log_warn("sandbox %" PRIu64 ": snapshot in %s not kept: %s", ms->id, ms->snapshot_dir,
                 strerror(-ms->result));
    done(sb, ms, 0); /* the VM itself is loaded either way */
}

static void on_loaded(struct sandbox *sb, int status, struct sandbox__frame *f, void *data)
{
    struct microvm_sb *ms = data;
    if (status < 0) {
        done(sb, ms, status);
        return;
    }
    struct proto_reader r;
    uint32_t st = 0;
    struct proto_str msg = {"", 0};
    uint64_t ns = 0;
    proto_reader_init(&r, f->payload, f->hdr.len);
    if (proto_get_u32(&r, &st) < 0 || proto_get_bytes(&r, &msg) < 0 || proto_get_u64(&r, &ns) < 0) {
        sandbox__kill(sb, SANDBOX_ERR_BAD_OUTPUT, "bad PROTO_LOADED");
        done(sb, ms, -EBADMSG);
        return;
    }
    char text[200];
    size_t n = msg.len < sizeof(text) - 1 ? msg.len : sizeof(text) - 1;
    for (size_t i = 0; i < n; i++)
        text[i] = (msg.p[i] >= 0x20 && msg.p[i] < 0x7f) ? msg.p[i] : '?';
    text[n] = 0;
    sb->init_ns = ns;
    if (st != 0) {
        sandbox__set_error(sb, "load failed: %s", text[0] ? text : strerror((int)st));
        done(sb, ms, (st > 0 && st < 4096) ? -(int)st : -EPROTO);
        return;
    }
    ms->snap_rejected = strstr(text, "snapshot rejected") != NULL;
    if (ms->snap_rejected)
        log_warn("sandbox %" PRIu64 ": %s", ms->id, text);
    if (!ms->snap_new && !ms->snap_rejected) {
        done(sb, ms, 0);
        return;
    }
    int r2 = sandbox__queue_work(sb, work_commit, after_commit, ms);
    if (r2 < 0) {
        done(sb, ms, 0);
        return;
    }
    ms->busy = true;
}

static int send_load(struct sandbox *sb, struct microvm_sb *ms)
{
    struct proto_buf b;
    proto_buf_init(&b);
    b.data = malloc(ms->load_len);
    if (!b.data)
        return -ENOMEM;
    memcpy(b.data, ms->load_bytes, ms->load_len);
    b.len = b.cap = ms->load_len;
    /* Wait first: the answer cannot come before the send returns anyway. */
    int r = sandbox__expect(sb, PROTO_LOADED, SANDBOX__ANY_ID,
                            SANDBOX_LOAD_TIMEOUT_MS + sb->timeout_ms, on_loaded, ms);
    if (r < 0) {
        proto_buf_free(&b);
        return r;
    }
    int fds[N_FDS];
    int n = ms->n_fds;
    memcpy(fds, ms->fds, sizeof(fds));
    for (int i = 0; i < N_FDS; i++)
        ms->fds[i] = -1;
    ms->n_fds = 0;
    return sandbox__send(sb, &b, fds, n);
}

/* ---- create: a stem cell ---- */

static void on_hello(struct sandbox *sb, int status, void *data)
{
    struct microvm_sb *ms = data;
    if (status < 0 || !ms->load_bytes) {
        done(sb, ms, status);
        return;
    }
    /* an instance: straight on to LOAD, which restores the snapshot */
    int r = send_load(sb, ms);
    if (r < 0) {
        sandbox__set_error(sb, "instance: sending LOAD: %s", strerror(-r));
        done(sb, ms, r);
    }
}

static void work_spawn(void *ctx)
{
    struct microvm_sb *ms = ctx;
    memset(&ms->err, 0, sizeof(ms->err));
    ms->result = spawn_monitor(ms);
}

static void attach_and_hello(struct sandbox *sb, struct microvm_sb *ms)
{
    int r =
        sandbox__attach(sb, ms->proc.chan_fd, ms->proc.pidfd, ms->proc.pid, SANDBOX__DIRECT_CHILD);
    ms->proc.chan_fd = ms->proc.pidfd = -1;
    if (sandbox__destroyed(sb)) {
        release(sb, ms);
        return;
    }
    if (r == 0)
        r = sandbox__wait_hello(sb, SANDBOX_HELLO_TIMEOUT_MS, on_hello, ms);
    if (r < 0) {
        sandbox__set_error(sb, "ember-vmm start: %s", strerror(-r));
        done(sb, ms, r);
    }
}

static void after_spawn(struct sandbox *sb, void *ctx)
{
    struct microvm_sb *ms = ctx;
    ms->busy = false;
    if (ms->result < 0) {
        if (sandbox__destroyed(sb)) {
            release(sb, ms);
            return;
        }
        sandbox__set_error(sb, "spawn ember-vmm: %s",
                           ms->err.msg[0] ? ms->err.msg : strerror(-ms->result));
        done(sb, ms, ms->result);
        return;
    }
    attach_and_hello(sb, ms);
}

static int vm_create(struct sandbox_backend *be, struct sandbox *sb, sandbox_done_cb cb, void *data)
{
    struct microvm_sb *ms = msb_new(sb, cb, data);
    if (!ms)
        return -ENOMEM;
    ms->lim = (struct container_limits){
        .memory_bytes = ((uint64_t)be->cfg.stem_memory_mb + MICROVM_OVERHEAD_MB) << 20,
        .pids_max = be->cfg.pids_max,
        .cpu_quota_pct = be->cfg.cpu_quota_pct,
    };
    int r = sandbox__queue_work(sb, work_spawn, after_spawn, ms);
    if (r < 0) {
        msb_free(ms);
        return r;
    }
    ms->busy = true;
    sb->priv = ms;
    return 0;
}

/* ---- specialize: stem cell -> zygote (boot + snapshot, or restore) ---- */

static void after_prepare(struct sandbox *sb, void *ctx)
{
    struct microvm_sb *ms = ctx;
    if (!step_returns(sb, ms))
        return;
    if (ms->result < 0) {
        close_fds(ms);
        sandbox__set_error(sb, "%s: %s", ms->spawn ? "instance" : "specialize",
                           ms->err.msg[0] ? ms->err.msg : strerror(-ms->result));
        if (ms->spawn && ms->proc.pidfd >= 0) {
            /* spawned, then a file failed: the core kills and reaps it */
            sandbox__attach(sb, ms->proc.chan_fd, ms->proc.pidfd, ms->proc.pid,
                            SANDBOX__DIRECT_CHILD);
            ms->proc.chan_fd = ms->proc.pidfd = -1;
            sandbox__kill(sb, SANDBOX_ERR_INTERNAL, "instance setup failed");
        }
        done(sb, ms, ms->result);
        return;
    }
    if (ms->spawn) {
        attach_and_hello(sb, ms); /* HELLO, then LOAD (on_hello) */
        return;
    }
    int r = send_load(sb, ms);
    if (r < 0) {
        sandbox__set_error(sb, "specialize: sending LOAD: %s", strerror(-r));
        done(sb, ms, r);
    }
}

static int keep_spec(struct microvm_sb *ms, const char *package_dir, const char *handler,
                     const char *snapshot_dir)
{
    ms->package_dir = strdup(package_dir);
    ms->handler = strdup(handler);
    ms->snapshot_dir = strdup(snapshot_dir);
    return ms->package_dir && ms->handler && ms->snapshot_dir ? 0 : -ENOMEM;
}

static int vm_specialize(struct sandbox *sb, const struct sandbox_spec *spec, sandbox_done_cb cb,
                         void *data)
{
    struct microvm_sb *ms = sb->priv;
    if (!ms || ms->busy)
        return -EBUSY;
    if (!spec->package_dir || !spec->snapshot_dir || !spec->manifest)
        return -EINVAL;
    const char *handler = spec->manifest->handler;
    if (!handler[0] || handler[0] == '/' || strstr(handler, ".."))
        return -EINVAL;
    struct proto_pair extra[] = {
        {{PROTO_OPT_PACKAGE_DIR, sizeof(PROTO_OPT_PACKAGE_DIR) - 1},
         {spec->package_dir, (uint32_t)strlen(spec->package_dir)}},
        {{PROTO_OPT_SNAPSHOT_DIR, sizeof(PROTO_OPT_SNAPSHOT_DIR) - 1},
         {spec->snapshot_dir, (uint32_t)strlen(spec->snapshot_dir)}},
    };
    struct proto_buf b;
    proto_buf_init(&b);
    int r = sandbox__load_encode(&b, spec, extra, ARRAY_SIZE(extra));
    if (r < 0) {
        proto_buf_free(&b);
        return r;
    }
    free(ms->load_bytes);
    ms->load_bytes = b.data; /* kept: every instance LOADs the same */
    ms->load_len = b.len;
    free(ms->package_dir);
    free(ms->handler);
    free(ms->snapshot_dir);
    r = keep_spec(ms, spec->package_dir, handler, spec->snapshot_dir);
    if (r < 0)
        return r;
    ms->lim = vm_limits(sb, sb->memory_mb);
    ms->cb = cb;
    ms->cb_data = data;
    ms->spawn = false;
    ms->snap_new = ms->snap_rejected = false;
    r = sandbox__queue_work(sb, work_prepare, after_prepare, ms);
    if (r < 0)
        return r;
    ms->busy = true;
    return 0;
}

/* ---- fork: a new monitor restoring the zygote's snapshot ---- */

static int vm_fork(struct sandbox *zygote, struct sandbox *child, sandbox_done_cb cb, void *data)
{
    struct microvm_sb *zs = zygote->priv;
    if (!zs || !zs->load_bytes)
        return -EINVAL;
    struct microvm_sb *ms = msb_new(child, cb, data);
    if (!ms)
        return -ENOMEM;
    int r = keep_spec(ms, zs->package_dir, zs->handler, zs->snapshot_dir);
    ms->load_bytes = malloc(zs->load_len);
    if (r < 0 || !ms->load_bytes) {
        msb_free(ms);
        return -ENOMEM;
    }
    memcpy(ms->load_bytes, zs->load_bytes, zs->load_len);
    ms->load_len = zs->load_len;
    ms->lim = vm_limits(child, child->memory_mb ? child->memory_mb : zygote->memory_mb);
    ms->spawn = true;
    r = sandbox__queue_work(child, work_prepare, after_prepare, ms);
    if (r < 0) {
        msb_free(ms);
        return r;
    }
    ms->busy = true;
    child->priv = ms;
    return 0;
}

/* ---- reset: back to the snapshot ---- */

static void on_reset_done(struct sandbox *sb, int status, struct sandbox__frame *f, void *data)
{
    struct microvm_sb *ms = data;
    if (status == 0) {
        struct proto_reader r;
        uint32_t st;
        uint64_t ns;
        proto_reader_init(&r, f->payload, f->hdr.len);
        if (proto_get_u32(&r, &st) < 0 || proto_get_u64(&r, &ns) < 0) {
            sandbox__kill(sb, SANDBOX_ERR_BAD_OUTPUT, "bad PROTO_RESET_DONE");
            status = -EBADMSG;
        } else if (st != 0) {
            sandbox__set_error(sb, "reset failed: %s", strerror((int)st));
            status = (st < 4096) ? -(int)st : -EPROTO;
        }
    }
    done(sb, ms, status);
}

static int vm_reset(struct sandbox *sb, sandbox_done_cb cb, void *data)
{
    struct microvm_sb *ms = sb->priv;
    if (!ms || ms->busy)
        return -EBUSY;
    ms->cb = cb;
    ms->cb_data = data;
    int r = sandbox__expect(sb, PROTO_RESET_DONE, SANDBOX__ANY_ID, SANDBOX_STEP_TIMEOUT_MS,
                            on_reset_done, ms);
    if (r < 0)
        return r;
    struct proto_buf b;
    proto_buf_init(&b);
    r = proto_buf_begin(&b, PROTO_RESET, 0);
    if (r == 0)
        r = proto_buf_finish(&b);
    if (r == 0)
        r = sandbox__send(sb, &b, NULL, 0);
    else
        proto_buf_free(&b);
    if (r < 0)
        sandbox__kill(sb, SANDBOX_ERR_INTERNAL, "reset: sending RESET: %s", strerror(-r));
    return 0; /* the wait reports the outcome */
}

/* ---- the rest ---- */

static int vm_stats(struct sandbox *sb, struct sandbox_stats *out)
{
    struct microvm_sb *ms = sb->priv;
    if (!ms || !ms->have_cgroup)
        return -ENOENT;
    return container_cgroup_stats(ms->host, ms->cgroup, out);
}

const struct sandbox_ops sandbox_microvm_ops = {
    .name = "microvm",
    .specialized_serves = true,
    .backend_init = vm_backend_init,
    .backend_destroy = vm_backend_destroy,
    .create = vm_create,
    .specialize = vm_specialize,
    .fork = vm_fork,
    .reset = vm_reset,
    .invoke = sandbox__invoke,
    .stats = vm_stats,
    .destroy = vm_destroy,
};
