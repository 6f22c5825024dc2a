/* vmm_main.c - ember-vmm: one process per microVM, speaking the framed
 * protocol (sandbox/proto.h) with emberd on fd 3, like ember-agent.
 *
 *   start     open /dev/kvm, create the VM and its vCPU, install the stem
 *             seccomp filter, send PROTO_HELLO: a stem cell
 *   LOAD      restore the function's snapshot if a valid one exists, else
 *             boot the image, run ember_init to the first WAIT and snapshot;
 *             either way the VM then runs from the snapshot mapping
 *   INVOKE    request into guest memory, run to RESPOND, PROTO_RESPONSE
 *   RESET     back to the snapshot (fresh_per_call)
 *   FORK      not served: a microVM "fork" is a new ember-vmm whose LOAD
 *             restores the snapshot (see backend.c); answers ENOTSUP
 *
 * LOAD's file descriptors (the jailed case; emberd opens every file):
 *   fd[0] the guest image (package_dir/handler), read-only
 *   fd[1] the snapshot memory file, fd[2] the snapshot state file: either
 *         an existing snapshot opened read-only, or two empty files opened
 *         read-write that the monitor fills (emberd renames them into place
 *         after PROTO_LOADED says "booted")
 *   fd[3] optional: /dev/kvm opened by emberd, used when the monitor could
 *         not open it itself (a jail whose uid may not open the device): the
 *         VM is then created at LOAD instead of at start
 * Without fds (tests, a monitor run by hand) the monitor opens
 * package_dir/handler itself and keeps the snapshot in snapshot_dir as
 * microvm.mem + microvm.state (temp file, fsync, rename). With fd[0] only,
 * the snapshot lives in memfds private to this VM.
 *
 * A guest that faults, misbehaves or aborts fails the call in flight with
 * PROTO_FAILED and the monitor exits: emberd replaces the VM.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "sandbox/microvm/vmm.h"
#include "sandbox/proto.h"

#define VMM_RESPONSE_MAX (6u << 20) /* SANDBOX_RESPONSE_MAX */
#define VMM_RESP_HEADER_BYTES (64u << 10)
#define SNAP_MEM_NAME "microvm.mem"
#define SNAP_STATE_NAME "microvm.state"

struct load_opts {
    struct proto_str function, version, handler, package_dir, snapshot_dir;
    uint32_t memory_mb, timeout_ms;
    char *env;
    size_t env_len;
    uint32_t n_env;
};

static struct vmm vm;
static bool vm_ready; /* KVM open, VM and vCPU created */
static bool loaded;
static bool use_seccomp = true;
static int chan = 3;

static void on_sigterm(int sig)
{
    (void)sig;
    vmm_stop_requested = 1;
    if (vm.run)
        vm.run->immediate_exit = 1; /* a KVM_RUN in progress returns EINTR */
}

/* ---- frames out ---- */

static int send_buf(struct proto_buf *b)
{
    int ret = proto_buf_finish(b);
    if (ret == 0)
        ret = proto_send_frame(chan, b, NULL, 0);
    proto_buf_free(b);
    if (ret < 0)
        log_error("ember-vmm: send frame: %s", strerror(-ret));
    return ret;
}

static int send_hello(void)
{
    char pid[16], version[16];
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    snprintf(version, sizeof(version), "%d", PROTO_VERSION);
    struct proto_pair p[] = {
        {{"version", 7}, {version, (uint32_t)strlen(version)}},
        {{"pid", 3}, {pid, (uint32_t)strlen(pid)}},
        {{"kind", 4}, {"microvm", 7}},
    };
    struct proto_buf b;
    proto_buf_init(&b);
    int ret = proto_buf_begin(&b, PROTO_HELLO, 0);
    if (ret == 0)
        ret = proto_put_pairs(&b, p, ARRAY_SIZE(p));
    return ret ? ret : send_buf(&b);
}

static int send_status(uint16_t type, uint32_t id, uint32_t status, const char *msg, uint64_t ns)
{
    struct proto_buf b;
    proto_buf_init(&b);
    int ret = proto_buf_begin(&b, type, id);
    if (ret == 0)
        ret = proto_put_u32(&b, status);
    if (ret == 0 && type == PROTO_LOADED)
        ret = proto_put_bytes(&b, msg, strlen(msg));
    if (ret == 0)
        ret = proto_put_u64(&b, ns);
    return ret ? ret : send_buf(&b);
}

static int send_failed(uint32_t id, enum proto_fail reason, const char *msg)
{
    struct proto_buf b;
    proto_buf_init(&b);
    int ret = proto_buf_begin(&b, PROTO_FAILED, id);
    if (ret == 0)
        ret = proto_put_u32(&b, reason);
    if (ret == 0)
        ret = proto_put_bytes(&b, msg, strlen(msg));
    return ret ? ret : send_buf(&b);
}

/* The VM is dead or the channel is: nothing more to serve. */
__attribute__((noreturn)) static void die_after(uint32_t id, enum proto_fail reason,
                                                const char *msg)
{
    log_warn("ember-vmm: %s", msg);
    send_failed(id, reason, msg);
    exit(1);
}

/* ---- LOAD ---- */

/* The stem cell proper: the VM and its vCPU, then the first seccomp layer. */
static int start_vm(int kvm_fd, struct ember_error *err)
{
    int ret = vmm_init(&vm, chan, kvm_fd, err);
    if (ret < 0)
        return ret;
    if (use_seccomp && (ret = vmm_seccomp_install(VMM_SECCOMP_STEM, err)) < 0)
        return ret;
    vm_ready = true;
    return 0;
}

static int parse_load(const uint8_t *payload, size_t len, struct load_opts *o,
                      struct ember_error *err)
{
    static struct proto_pair pairs[PROTO_MAX_PAIRS];
    struct proto_reader r;
    uint32_t n;
    proto_reader_init(&r, payload, len);
    if (proto_get_pairs(&r, pairs, PROTO_MAX_PAIRS, &n) < 0 || r.left != 0)
        return ember_error_set(err, -EBADMSG, "LOAD: bad options payload");

    memset(o, 0, sizeof(*o));
    o->memory_mb = 128;
    size_t env_cap = 0;
    for (uint32_t i = 0; i < n; i++) {
        struct proto_str k = pairs[i].key, v = pairs[i].value;
        char num[16];
        if (proto_str_eq(k, PROTO_OPT_FUNCTION))
            o->function = v;
        else if (proto_str_eq(k, PROTO_OPT_VERSION))
            o->version = v;
        else if (proto_str_eq(k, PROTO_OPT_HANDLER))
            o->handler = v;
        else if (proto_str_eq(k, PROTO_OPT_PACKAGE_DIR))
            o->package_dir = v;
        else if (proto_str_eq(k, PROTO_OPT_SNAPSHOT_DIR))
            o->snapshot_dir = v;
        else if (proto_str_eq(k, PROTO_OPT_MEMORY_MB) || proto_str_eq(k, PROTO_OPT_TIMEOUT_MS)) {
            if (v.len == 0 || v.len >= sizeof(num))
                return ember_error_set(err, -EINVAL, "LOAD: bad %.*s", (int)k.len, k.p);
            memcpy(num, v.p, v.len);
            num[v.len] = 0;
            char *end;
            unsigned long x = strtoul(num, &end, 10);
            if (*end || x == 0 || x > 1u << 30)
                return ember_error_set(err, -EINVAL, "LOAD: bad %.*s", (int)k.len, k.p);
            if (k.p[0] == 'm')
                o->memory_mb = (uint32_t)x;
            else
                o->timeout_ms = (uint32_t)x;
        } else if (k.len > strlen(PROTO_OPT_ENV_PREFIX) &&
                   memcmp(k.p, PROTO_OPT_ENV_PREFIX, strlen(PROTO_OPT_ENV_PREFIX)) == 0) {
            size_t kl = k.len - strlen(PROTO_OPT_ENV_PREFIX);
            if (memchr(k.p, 0, k.len) || memchr(v.p, 0, v.len) || memchr(k.p + 4, '=', kl))
                return ember_error_set(err, -EINVAL, "LOAD: bad env entry");
            size_t need = o->env_len + kl + 1 + v.len + 1;
            if (need > env_cap) {
                env_cap = need * 2;
                char *e = realloc(o->env, env_cap);
                if (!e)
                    return ember_error_set(err, -ENOMEM, "LOAD: out of memory");
                o->env = e;
            }
            memcpy(o->env + o->env_len, k.p + 4, kl);
            o->env[o->env_len + kl] = '=';
            memcpy(o->env + o->env_len + kl + 1, v.p, v.len);
            o->env[need - 1] = 0;
            o->env_len = need;
            o->n_env++;
        }
    }
    if (o->version.len == 0 || o->version.len >= VMM_VERSION_MAX ||
        memchr(o->version.p, 0, o->version.len))
        return ember_error_set(err, -EINVAL, "LOAD: missing or bad version");
    return 0;
}

static char *str_dup(struct proto_str s)
{
    char *p = malloc(s.len + 1);
    if (p) {
        memcpy(p, s.p, s.len);
        p[s.len] = 0;
    }
    return p;
}

static int read_file(int fd, uint8_t **out, size_t *len, struct ember_error *err)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return ember_error_sys(err, -errno, "fstat guest image");
    if (!S_ISREG(st.st_mode) || st.st_size <= 0 || st.st_size > VMM_ELF_MAX)
        return ember_error_set(err, -EINVAL, "guest image: not a regular file of 1 byte to %u MiB",
                               VMM_ELF_MAX >> 20);
    cleanup_free uint8_t *buf = malloc((size_t)st.st_size);
    if (!buf)
        return ember_error_set(err, -ENOMEM, "guest image: out of memory");
    for (size_t off = 0; off < (size_t)st.st_size;) {
        ssize_t n = pread(fd, buf + off, (size_t)st.st_size - off, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return ember_error_sys(err, n < 0 ? -errno : -EIO, "read guest image");
        off += (size_t)n;
    }
    *len = (size_t)st.st_size;
    *out = steal_pointer(&buf);
    return 0;
}

static int open_image(const struct load_opts *o, struct ember_error *err)
{
    if (o->handler.len == 0 || o->package_dir.len == 0)
        return ember_error_set(err, -EINVAL, "LOAD: no image fd and no package_dir + handler");
    cleanup_free char *dir = str_dup(o->package_dir), *h = str_dup(o->handler);
    if (!dir || !h)
        return ember_error_set(err, -ENOMEM, "LOAD: out of memory");
    if (h[0] == '/' || strstr(h, ".."))
        return ember_error_set(err, -EINVAL, "LOAD: handler '%s' leaves the package", h);
    cleanup_close int dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return ember_error_sys(err, -errno, "open package dir '%s'", dir);
    int fd = openat(dfd, h, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return ember_error_sys(err, -errno, "open guest image '%s/%s'", dir, h);
    return fd;
}

/* Run a freshly booted guest through ember_init to its first WAIT. */
static int run_init(struct ember_error *err)
{
    enum vmm_stop stop;
    uint64_t arg;
    int ret = vmm_run(&vm, &stop, &arg, err);
    if (ret < 0)
        return ret;
    switch (stop) {
    case VMM_STOP_WAIT:
        return 0;
    case VMM_STOP_ABORT:
        return -ECANCELED; /* err holds "guest abort: ember_init returned 1" */
    case VMM_STOP_CRASH: {
        char m[sizeof(err->msg)];
        snprintf(m, sizeof(m), "%s", err->msg);
        return ember_error_set(err, -EFAULT, "guest crashed during init: %s", m);
    }
    case VMM_STOP_RESPOND:
        return ember_error_set(err, -EPROTO, "guest answered before any request");
    case VMM_STOP_SIGNAL:
        return ember_error_set(err, -EINTR, "terminated during init");
    }
    return -EINVAL;
}

/* Snapshot files in a directory: fresh temp names, renamed into place once
 * both are written and synced, so a reader sees the old pair or the new. */
static int snapshot_to_dir(const char *dir, const struct vmm_snapshot_id *id, int *mem_out,
                           int *state_out, struct ember_error *err)
{
    cleanup_close int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return ember_error_sys(err, -errno, "open snapshot dir '%s'", dir);
    uint32_t tag;
    if (getrandom(&tag, sizeof(tag), 0) != sizeof(tag))
        tag = (uint32_t)getpid();
    char tmp_mem[64], tmp_state[64];
    snprintf(tmp_mem, sizeof(tmp_mem), ".%s.%d.%08x", SNAP_MEM_NAME, (int)getpid(), tag);
    snprintf(tmp_state, sizeof(tmp_state), ".%s.%d.%08x", SNAP_STATE_NAME, (int)getpid(), tag);
    cleanup_close int mfd = openat(dfd, tmp_mem, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (mfd < 0)
        return ember_error_sys(err, -errno, "create %s/%s", dir, tmp_mem);
    cleanup_close int sfd = openat(dfd, tmp_state, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (sfd < 0) {
        int ret = ember_error_sys(err, -errno, "create %s/%s", dir, tmp_state);
        unlinkat(dfd, tmp_mem, 0);
        return ret;
    }
    int ret = vmm_snapshot_write(&vm, id, mfd, sfd, err);
    if (ret == 0 && (renameat(dfd, tmp_mem, dfd, SNAP_MEM_NAME) < 0 ||
                     renameat(dfd, tmp_state, dfd, SNAP_STATE_NAME) < 0))
        ret = ember_error_sys(err, -errno, "rename snapshot into %s", dir);
    if (ret < 0) {
        unlinkat(dfd, tmp_mem, 0);
        unlinkat(dfd, tmp_state, 0);
        return ret;
    }
    if (fsync(dfd) < 0)
        return ember_error_sys(err, -errno, "fsync snapshot dir '%s'", dir);
    *mem_out = steal_fd(&mfd);
    *state_out = steal_fd(&sfd);
    return 0;
}

static int do_load(const struct load_opts *o, int *fds, int n_fds, char *msg, size_t msg_size,
                   struct ember_error *err)
{
    uint64_t mem_size = ((uint64_t)o->memory_mb << 20);
    mem_size = (mem_size + VMM_MEM_ALIGN - 1) & ~(VMM_MEM_ALIGN - 1);
    cleanup_free char *version = str_dup(o->version);
    cleanup_free char *snap_dir = o->snapshot_dir.len ? str_dup(o->snapshot_dir) : NULL;
    if (!version || (o->snapshot_dir.len && !snap_dir))
        return ember_error_set(err, -ENOMEM, "LOAD: out of memory");
    struct vmm_snapshot_id id = {
        .version = version, .mem_size = mem_size, .cpuid_crc = vm.cpuid_crc};
    int ret;

    /* 1. A valid snapshot: restore it. */
    cleanup_close int mem_fd = -1, state_fd = -1;
    bool fd_writable = false;
    if (n_fds >= 3) {
        mem_fd = steal_fd(&fds[1]);
        state_fd = steal_fd(&fds[2]);
        struct stat st;
        if (fstat(state_fd, &st) < 0)
            return ember_error_sys(err, -errno, "fstat snapshot state fd");
        fd_writable = st.st_size == 0;
    } else if (snap_dir) {
        cleanup_close int dfd = open(snap_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            mem_fd = openat(dfd, SNAP_MEM_NAME, O_RDONLY | O_CLOEXEC);
            state_fd = openat(dfd, SNAP_STATE_NAME, O_RDONLY | O_CLOEXEC);
        }
    }
    char rejected[sizeof(err->msg) + 8] = "";
    if (mem_fd >= 0 && state_fd >= 0 && !fd_writable) {
        struct ember_error rerr = {0};
        ret = vmm_snapshot_restore(&vm, &id, mem_fd, state_fd, &rerr);
        if (ret == 0) {
            snprintf(msg, msg_size, "restored");
            return 0;
        }
        snprintf(rejected, sizeof(rejected), " (%s)", rerr.msg);
        log_warn("ember-vmm: %s: %s; booting afresh", version, rerr.msg);
    }

    /* 2. Boot the image and run ember_init to the snapshot point. */
    cleanup_close int elf_fd = n_fds >= 1 ? steal_fd(&fds[0]) : open_image(o, err);
    if (elf_fd < 0)
        return elf_fd;
    cleanup_free uint8_t *elf = NULL;
    size_t elf_len = 0;
    ret = read_file(elf_fd, &elf, &elf_len, err);
    if (ret < 0)
        return ret;
    ret = vmm_boot(&vm, elf, elf_len, mem_size, o->env ? o->env : "", o->env_len, o->n_env, err);
    if (ret < 0)
        return ret;
    ret = run_init(err);
    if (ret < 0)
        return ret;
    ret = vmm_flush_io(&vm, err);
    if (ret < 0)
        return ret;
    ret = vmm_cpu_save(&vm, &vm.snap, err);
    if (ret < 0)
        return ret;

    /* 3. Write the snapshot where it belongs, then serve from it like every
     *    other VM of the function. */
    int wmem = -1, wstate = -1;
    if (n_fds >= 3 && fd_writable) {
        wmem = steal_fd(&mem_fd);
        wstate = steal_fd(&state_fd);
        ret = vmm_snapshot_write(&vm, &id, wmem, wstate, err);
    } else if (snap_dir && n_fds < 3) {
        ret = snapshot_to_dir(snap_dir, &id, &wmem, &wstate, err);
    } else {
        wmem = memfd_create("ember-snapshot-mem", MFD_CLOEXEC);
        wstate = memfd_create("ember-snapshot-state", MFD_CLOEXEC);
        ret = wmem < 0 || wstate < 0 ? ember_error_sys(err, -errno, "memfd_create snapshot")
                                     : vmm_snapshot_write(&vm, &id, wmem, wstate, err);
    }
    cleanup_close int keep_mem = wmem, keep_state = wstate;
    if (ret < 0)
        return ret;
    ret = vmm_snapshot_restore(&vm, &id, keep_mem, keep_state, err);
    if (ret < 0)
        return ret;
    snprintf(msg, msg_size, "booted%s", rejected);
    return 0;
}

static void handle_load(const struct proto_hdr *h, const uint8_t *payload, int *fds, int n_fds)
{
    struct ember_error err = {0};
    struct load_opts o = {0};
    char msg[sizeof(err.msg) + 16] = "";
    uint64_t t0 = ember_now_ns();
    int ret;

    if (loaded) {
        ret = ember_error_set(&err, -EALREADY, "LOAD: already loaded");
    } else if (n_fds == 2) {
        ret = ember_error_set(&err, -EINVAL, "LOAD: %d fds (want 0, 1, 3 or 4)", n_fds);
    } else if (!vm_ready && (ret = start_vm(n_fds == 4 ? steal_fd(&fds[3]) : -1, &err)) < 0) {
        /* err says why */
    } else {
        ret = parse_load(payload, h->len, &o, &err);
        if (ret == 0)
            ret = do_load(&o, fds, n_fds, msg, sizeof(msg), &err);
        free(o.env);
    }
    uint64_t ns = ember_now_ns() - t0;
    if (ret < 0) {
        log_warn("ember-vmm: LOAD failed: %s", err.msg);
        send_status(PROTO_LOADED, h->id, (uint32_t)-ret, err.msg, ns);
        if (!loaded && vm.mem)
            exit(1); /* a guest ran and failed: this VM is done */
        return;
    }
    loaded = true;
    send_status(PROTO_LOADED, h->id, 0, msg, ns);
}

/* ---- INVOKE ---- */

/* Lay the request out in the guest's request area (ember_guest_abi.h). */
static int write_request(const struct proto_request *rq, uint32_t id, struct ember_error *err)
{
    uint64_t base = vm.layout.req_base, cap = vm.layout.req_cap;
    uint64_t need = sizeof(struct ember_guest_req) +
                    (uint64_t)rq->n_headers * sizeof(struct ember_guest_pair) + rq->method.len +
                    rq->path.len + rq->query.len + rq->body.len + 4;
    for (uint32_t i = 0; i < rq->n_headers; i++)
        need += rq->headers[i].key.len + rq->headers[i].value.len + 2;
    if (need > cap)
        return ember_error_set(err, -E2BIG,
                               "request of %llu bytes does not fit the guest's "
                               "%llu-byte request area (raise memory_mb)",
                               (unsigned long long)need, (unsigned long long)cap);

    uint8_t *area = vm.mem + base;
    struct ember_guest_req *g = (struct ember_guest_req *)area;
    struct ember_guest_pair *pairs = (struct ember_guest_pair *)(g + 1);
    uint64_t off = sizeof(*g) + (uint64_t)rq->n_headers * sizeof(*pairs);

#define PUT(dst, s)                                                                                \
    do {                                                                                           \
        memcpy(area + off, (s).p, (s).len);                                                        \
        area[off + (s).len] = 0;                                                                   \
        (dst).ptr = base + off;                                                                    \
        (dst).len = (s).len;                                                                       \
        off += (s).len + 1;                                                                        \
    } while (0)

    g->id = id;
    g->n_headers = rq->n_headers;
    g->headers = base + sizeof(*g);
    PUT(g->method, rq->method);
    PUT(g->path, rq->path);
    PUT(g->query, rq->query);
    for (uint32_t i = 0; i < rq->n_headers; i++) {
        PUT(pairs[i].name, rq->headers[i].key);
        PUT(pairs[i].value, rq->headers[i].value);
    }
    PUT(g->body, rq->body);
#undef PUT
    return 0;
}

/* Read the guest's response descriptor; every pointer is checked. Returns
 * 0 and a frame in @b, or a proto_fail reason with @msg. */
static int read_response(uint64_t gpa, uint32_t id, struct proto_buf *b, char *msg, size_t msg_size,
                         bool *fatal)
{
    static struct proto_pair pairs[PROTO_MAX_PAIRS];
    const struct ember_guest_resp *r = vmm_guest_ptr(&vm, gpa, sizeof(*r));
    *fatal = true;
    if (!r) {
        snprintf(msg, msg_size, "respond hypercall: bad descriptor address %#llx",
                 (unsigned long long)gpa);
        return PROTO_FAIL_BAD_OUTPUT;
    }
    struct ember_guest_resp resp = *r;
    if (resp.n_headers > PROTO_MAX_PAIRS) {
        snprintf(msg, msg_size, "response with %u headers", resp.n_headers);
        return PROTO_FAIL_BAD_OUTPUT;
    }
    const struct ember_guest_pair *gp =
        vmm_guest_ptr(&vm, resp.headers, (uint64_t)resp.n_headers * sizeof(*gp));
    const void *body = vmm_guest_ptr(&vm, resp.body.ptr, resp.body.len);
    if ((resp.n_headers && !gp) || (resp.body.len && !body)) {
        snprintf(msg, msg_size,
                 "response points outside guest memory (headers %#llx, body "
                 "%#llx+%llu)",
                 (unsigned long long)resp.headers, (unsigned long long)resp.body.ptr,
                 (unsigned long long)resp.body.len);
        return PROTO_FAIL_BAD_OUTPUT;
    }
    uint64_t hbytes = 0;
    for (uint32_t i = 0; i < resp.n_headers; i++) {
        struct ember_guest_pair p = gp[i];
        const char *n = vmm_guest_ptr(&vm, p.name.ptr, p.name.len);
        const char *v = vmm_guest_ptr(&vm, p.value.ptr, p.value.len);
        hbytes += p.name.len + p.value.len;
        if ((p.name.len && !n) || (p.value.len && !v) || hbytes > VMM_RESP_HEADER_BYTES) {
            snprintf(msg, msg_size,
                     "response header %u points outside guest memory or is too "
                     "large",
                     i);
            return PROTO_FAIL_BAD_OUTPUT;
        }
        pairs[i] = (struct proto_pair){{n ? n : "", (uint32_t)p.name.len},
                                       {v ? v : "", (uint32_t)p.value.len}};
    }
    /* From here the guest is sound; a bad answer costs the call only. */
    *fatal = false;
    if (resp.handler_rc != 0) {
        snprintf(msg, msg_size, "ember_handle returned %d", resp.handler_rc);
        return PROTO_FAIL_HANDLER;
    }
    if ((resp.flags & EMBER_RESP_TOO_LARGE) || resp.body.len > VMM_RESPONSE_MAX) {
        snprintf(msg, msg_size, "response body over %u bytes", VMM_RESPONSE_MAX);
        return PROTO_FAIL_TOO_LARGE;
    }
    if ((resp.flags & EMBER_RESP_BAD_STATUS) || resp.status < 100 || resp.status > 599) {
        snprintf(msg, msg_size, "status %d outside 100..599", resp.status);
        return PROTO_FAIL_BAD_OUTPUT;
    }
    int ret = proto_buf_begin(b, PROTO_RESPONSE, id);
    if (ret == 0)
        ret = proto_put_u32(b, (uint32_t)resp.status);
    if (ret == 0)
        ret = proto_put_pairs(b, pairs, resp.n_headers);
    if (ret == 0)
        ret = proto_put_bytes(b, body ? body : "", resp.body.len);
    if (ret < 0) {
        snprintf(msg, msg_size, "encode response: %s", strerror(-ret));
        return PROTO_FAIL_INTERNAL;
    }
    return 0;
}

static void handle_invoke(const struct proto_hdr *h, const uint8_t *payload)
{
    static struct proto_request rq;
    struct ember_error err = {0};

    if (!loaded) {
        send_failed(h->id, PROTO_FAIL_INTERNAL, "INVOKE before LOAD");
        return;
    }
    if (proto_request_decode(payload, h->len, &rq) < 0) {
        send_failed(h->id, PROTO_FAIL_INTERNAL, "INVOKE: bad request payload");
        return;
    }
    if (write_request(&rq, h->id, &err) < 0) {
        send_failed(h->id, PROTO_FAIL_TOO_LARGE, err.msg);
        return;
    }

    vm.call_id = h->id;
    enum vmm_stop stop;
    uint64_t arg;
    int ret = vmm_run(&vm, &stop, &arg, &err);
    if (ret < 0)
        die_after(h->id, PROTO_FAIL_INTERNAL, err.msg);
    switch (stop) {
    case VMM_STOP_RESPOND: {
        struct proto_buf b;
        char msg[256];
        bool fatal;
        proto_buf_init(&b);
        int reason = read_response(arg, h->id, &b, msg, sizeof(msg), &fatal);
        if (reason == 0) {
            send_buf(&b);
            return;
        }
        proto_buf_free(&b);
        if (fatal)
            die_after(h->id, (enum proto_fail)reason, msg);
        send_failed(h->id, (enum proto_fail)reason, msg);
        return;
    }
    case VMM_STOP_WAIT:
        die_after(h->id, PROTO_FAIL_CRASH, "guest waited again without answering");
    case VMM_STOP_ABORT:
    case VMM_STOP_CRASH:
        die_after(h->id, PROTO_FAIL_CRASH, err.msg);
    case VMM_STOP_SIGNAL:
        die_after(h->id, PROTO_FAIL_CRASH, "monitor terminated during the call");
    }
}

static bool serve_filter_on;

static void handle_reset(const struct proto_hdr *h)
{
    struct ember_error err = {0};
    uint64_t t0 = ember_now_ns();
    int ret = loaded ? vmm_reset(&vm, &err) : ember_error_set(&err, -EINVAL, "RESET before LOAD");
    uint64_t ns = ember_now_ns() - t0;
    if (ret < 0)
        log_warn("ember-vmm: reset: %s", err.msg);
    send_status(PROTO_RESET_DONE, h->id, ret < 0 ? (uint32_t)-ret : 0, NULL, ns);
    if (ret < 0 && ret != -EINVAL)
        exit(1); /* half-reset guest state must not serve another call */
}

static void handle_fork(const struct proto_hdr *h)
{
    /* microVM instances are new monitors restoring the snapshot */
    struct proto_buf b;
    proto_buf_init(&b);
    if (proto_buf_begin(&b, PROTO_FORKED, h->id) == 0 && proto_put_u32(&b, ENOTSUP) == 0 &&
        proto_put_u32(&b, 0) == 0)
        send_buf(&b);
    else
        proto_buf_free(&b);
}

#if defined(__SANITIZE_ADDRESS__)
/* LeakSanitizer's exit-time scan needs a ptrace tracer thread, which the
 * seccomp filter rightly forbids: no leak check in the monitor. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "detect_leaks=0";
}
#endif

static void usage(void)
{
    fprintf(stderr, "usage: ember-vmm [--fd N] [--no-seccomp]\n"
                    "  a KVM microVM monitor driven by emberd over the framed channel on fd N "
                    "(default 3)\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"fd", required_argument, NULL, 'f'},
        {"no-seccomp", no_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    bool seccomp = getenv("EMBER_VMM_NO_SECCOMP") == NULL;
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'f':
            chan = atoi(optarg);
            break;
        case 'n':
            seccomp = false;
            break;
        case 'h':
            usage();
            return 0;
        default:
            usage();
            return 2;
        }
    }
    struct stat st;
    if (fstat(chan, &st) < 0 || !S_ISSOCK(st.st_mode)) {
        fprintf(stderr, "ember-vmm: fd %d is not the channel socket\n", chan);
        return 2;
    }
    /* strftime in log lines reads the zone file once: before seccomp */
    tzset();
    struct sigaction sa = {.sa_handler = on_sigterm};
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* The guest is batch work, as container sandboxes are: a woken monitor
     * does not preempt emberd in the middle of its ready events. */
    sched_setscheduler(0, SCHED_BATCH, &(struct sched_param){0});

    struct ember_error err = {0};
    use_seccomp = seccomp;
    vm.kvm_fd = vm.vm_fd = vm.vcpu_fd = -1;
    int kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm_fd < 0 && errno != EACCES && errno != EPERM && errno != ENOENT) {
        log_error("ember-vmm: open /dev/kvm: %s", strerror(errno));
        return 1;
    }
    /* Without the device (a jail whose uid may not open it) the VM waits for
     * the /dev/kvm fd that comes with LOAD. */
    if (kvm_fd >= 0 && start_vm(kvm_fd, &err) < 0) {
        log_error("ember-vmm: %s", err.msg);
        return 1;
    }
    if (send_hello() < 0)
        return 1;

    for (;;) {
        struct proto_hdr h;
        cleanup_free uint8_t *payload = NULL;
        int fds[PROTO_MAX_FDS], n_fds = 0;
        /* One wake-up per call: see proto_wait_readable. */
        int w = proto_wait_readable(chan);
        if (w < 0) {
            if (w != -EINTR) {
                log_error("ember-vmm: poll: %s", strerror(-w));
                return 1;
            }
            if (vmm_stop_requested)
                return 0;
            continue;
        }
        int ret = proto_recv_frame(chan, &h, &payload, fds, &n_fds);
        if (ret == -ECONNRESET)
            return 0; /* emberd closed the channel */
        if (ret < 0) {
            log_error("ember-vmm: receive: %s", strerror(-ret));
            return 1;
        }
        switch (h.type) {
        case PROTO_LOAD:
            handle_load(&h, payload, fds, n_fds);
            if (loaded && seccomp && !serve_filter_on) {
                if (vmm_seccomp_install(VMM_SECCOMP_SERVE, &err) < 0) {
                    log_error("ember-vmm: %s", err.msg);
                    return 1;
                }
                serve_filter_on = true;
            }
            break;
        case PROTO_INVOKE:
            handle_invoke(&h, payload);
            break;
        case PROTO_RESET:
            handle_reset(&h);
            break;
        case PROTO_FORK:
            handle_fork(&h);
            break;
        case PROTO_SHUTDOWN:
            return 0;
        default:
            log_error("ember-vmm: unexpected frame type %u", h.type);
            return 1;
        }
        for (int i = 0; i < n_fds; i++)
            if (fds[i] >= 0)
                close(fds[i]);
        if (vmm_stop_requested)
            return 0;
    }
}
