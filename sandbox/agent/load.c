/* load.c - specialize a stem cell: PROTO_LOAD.
 *
 * The order is the point. Everything that needs privilege happens first
 * (attach the package at /fn), then the agent gives up what it holds
 * (groups, ids, every capability, the bounding set, new privileges,
 * dumpability), then it installs the seccomp filter, and only then does
 * function code run: dlopen() runs the handler's constructors, so loading is
 * already running the function.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "sandbox/agent/agent.h"

/** LOAD's options, borrowed from the payload. */
struct load_opts {
    struct proto_str function, version, runtime, handler, seccomp;
    uint32_t timeout_ms, memory_mb, concurrency;
    bool serve;
    struct proto_pair env[PROTO_MAX_PAIRS];
    uint32_t n_env;
};

static int fail(char *msg, size_t len, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *msg, size_t len, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, len, fmt, ap);
    va_end(ap);
    return code;
}

/* memchr that accepts the NULL of an absent option. */
static bool has_byte(struct proto_str s, char c)
{
    return s.len > 0 && memchr(s.p, c, s.len) != NULL;
}

static bool env_key_valid(struct proto_str k)
{
    if (k.len == 0 || k.len > 255 || (k.p[0] >= '0' && k.p[0] <= '9'))
        return false;
    for (uint32_t i = 0; i < k.len; i++) {
        char c = k.p[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_'))
            return false;
    }
    return true;
}

/* A relative path inside the package: no leading '/', no ".." component. */
static bool handler_valid(struct proto_str h)
{
    if (h.len == 0 || h.len > 1024 || h.p[0] == '/' || has_byte(h, '\0'))
        return false;
    for (uint32_t i = 0; i < h.len;) {
        uint32_t j = i;
        while (j < h.len && h.p[j] != '/')
            j++;
        if (j - i == 2 && h.p[i] == '.' && h.p[i + 1] == '.')
            return false;
        i = j + 1;
    }
    return true;
}

static int parse_opts(const uint8_t *payload, size_t len, struct load_opts *o, char *msg,
                      size_t msg_len)
{
    static struct proto_pair pairs[PROTO_MAX_PAIRS]; /* one LOAD per process */
    struct proto_reader rd;
    uint32_t n;
    memset(o, 0, sizeof(*o));
    o->concurrency = 1;
    proto_reader_init(&rd, payload, len);
    if (proto_get_pairs(&rd, pairs, PROTO_MAX_PAIRS, &n) < 0 || rd.left != 0)
        return fail(msg, msg_len, -EBADMSG, "LOAD: malformed options");
    size_t env_prefix = strlen(PROTO_OPT_ENV_PREFIX);
    for (uint32_t i = 0; i < n; i++) {
        struct proto_str k = pairs[i].key, v = pairs[i].value;
        uint32_t *num = NULL;
        if (proto_str_eq(k, PROTO_OPT_FUNCTION))
            o->function = v;
        else if (proto_str_eq(k, PROTO_OPT_VERSION))
            o->version = v;
        else if (proto_str_eq(k, PROTO_OPT_RUNTIME))
            o->runtime = v;
        else if (proto_str_eq(k, PROTO_OPT_HANDLER))
            o->handler = v;
        else if (proto_str_eq(k, PROTO_OPT_SECCOMP))
            o->seccomp = v;
        else if (proto_str_eq(k, PROTO_OPT_TIMEOUT_MS))
            num = &o->timeout_ms;
        else if (proto_str_eq(k, PROTO_OPT_MEMORY_MB))
            num = &o->memory_mb;
        else if (proto_str_eq(k, PROTO_OPT_CONCURRENCY))
            num = &o->concurrency;
        else if (proto_str_eq(k, PROTO_OPT_SERVE))
            o->serve = proto_str_eq(v, "1");
        else if (k.len > env_prefix && memcmp(k.p, PROTO_OPT_ENV_PREFIX, env_prefix) == 0) {
            struct proto_str name = {k.p + env_prefix, k.len - (uint32_t)env_prefix};
            if (!env_key_valid(name) || has_byte(v, '\0'))
                return fail(msg, msg_len, -EINVAL, "LOAD: bad env entry '%.*s'",
                            (int)(k.len > 64 ? 64 : k.len), k.p);
            o->env[o->n_env].key = name;
            o->env[o->n_env++].value = v;
        }
        /* Other keys (package_dir, snapshot_dir, newer ones) are not ours. */
        if (num && proto_str_u32(v, num) < 0)
            return fail(msg, msg_len, -EINVAL, "LOAD: '%.*s' is not a number", (int)k.len, k.p);
    }
    if (o->function.len == 0 || o->function.len >= 256 || has_byte(o->function, '/') ||
        has_byte(o->function, '\0'))
        return fail(msg, msg_len, -EINVAL, "LOAD: missing or bad '%s'", PROTO_OPT_FUNCTION);
    if (o->version.len >= 160 || has_byte(o->version, '\0'))
        return fail(msg, msg_len, -EINVAL, "LOAD: bad '%s'", PROTO_OPT_VERSION);
    if (!handler_valid(o->handler))
        return fail(msg, msg_len, -EINVAL, "LOAD: missing or bad '%s'", PROTO_OPT_HANDLER);
    if (o->seccomp.len == 0 || o->seccomp.len % sizeof(struct sock_filter) != 0 ||
        o->seccomp.len / sizeof(struct sock_filter) > BPF_MAXINSNS)
        return fail(msg, msg_len, -EINVAL, "LOAD: missing or bad '%s' filter", PROTO_OPT_SECCOMP);
    if (o->concurrency == 0)
        o->concurrency = 1;
    return 0;
}

/* Only what the manifest grants, plus a few ember facts. Manifest keys never
 * start with EMBER_ (manifest.c rejects them), and ours are set last anyway. */
static int set_env(const struct load_opts *o, const struct agent_fn *fn)
{
    char num[16];
    if (clearenv() != 0)
        return -ENOMEM;
    if (setenv("PATH", "/usr/local/bin:/usr/bin:/bin", 1) < 0 || setenv("HOME", "/tmp", 1) < 0 ||
        setenv("TMPDIR", "/tmp", 1) < 0)
        return -errno;
    for (uint32_t i = 0; i < o->n_env; i++) {
        char key[256];
        cleanup_free char *value = strndup(o->env[i].value.p, o->env[i].value.len);
        if (!value)
            return -ENOMEM;
        memcpy(key, o->env[i].key.p, o->env[i].key.len);
        key[o->env[i].key.len] = '\0';
        if (setenv(key, value, 1) < 0)
            return -errno;
    }
    snprintf(num, sizeof(num), "%u", fn->memory_mb);
    if (setenv("EMBER_FUNCTION", fn->function, 1) < 0 ||
        setenv("EMBER_VERSION", fn->version, 1) < 0 || setenv("EMBER_MEMORY_MB", num, 1) < 0)
        return -errno;
    snprintf(num, sizeof(num), "%u", fn->timeout_ms);
    if (setenv("EMBER_TIMEOUT_MS", num, 1) < 0)
        return -errno;
    return 0;
}

static int drop_privileges(char *msg, size_t len)
{
    /* The bounding set needs CAP_SETPCAP, so it goes before the uid change
     * that empties the other sets. */
    for (int cap = 0;; cap++) {
        if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) < 0)
            break; /* EINVAL past the last capability this kernel knows */
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0)
            return fail(msg, len, -errno, "prctl(PR_CAPBSET_DROP, %d): %s", cap, strerror(errno));
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        return fail(msg, len, -errno, "clear ambient capabilities: %s", strerror(errno));
    /* With "deny" in /proc/self/setgroups the spawner already left no
     * supplementary groups; that is the state we want. */
    if (setgroups(0, NULL) < 0 && !(errno == EPERM && getgroups(0, NULL) == 0))
        return fail(msg, len, -errno, "setgroups: %s", strerror(errno));
    if (setresgid(AGENT_FN_GID, AGENT_FN_GID, AGENT_FN_GID) < 0)
        return fail(msg, len, -errno, "setresgid(%d): %s", AGENT_FN_GID, strerror(errno));
    if (setresuid(AGENT_FN_UID, AGENT_FN_UID, AGENT_FN_UID) < 0)
        return fail(msg, len, -errno, "setresuid(%d): %s", AGENT_FN_UID, strerror(errno));
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {{0}};
    if (syscall(SYS_capset, &hdr, data) < 0)
        return fail(msg, len, -errno, "capset: %s", strerror(errno));
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return fail(msg, len, -errno, "PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
    /* The uid change cleared the parent-death signal the spawner set: arm it
     * again so that a zygote never outlives a crashed emberd. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
        return fail(msg, len, -errno, "PR_SET_PDEATHSIG: %s", strerror(errno));
    /* Not dumpable: no core files, and other processes of the same uid (the
     * sibling instances) cannot ptrace this one or read its /proc entries. */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
        return fail(msg, len, -errno, "PR_SET_DUMPABLE: %s", strerror(errno));

    /* Trust, but verify: no way back to root. */
    uid_t r, e, s;
    if (getresuid(&r, &e, &s) < 0 || r != AGENT_FN_UID || e != AGENT_FN_UID || s != AGENT_FN_UID ||
        setresuid(0, 0, 0) == 0)
        return fail(msg, len, -EPERM, "privilege drop did not stick");
    if (syscall(SYS_capget, &hdr, data) < 0 || data[0].permitted || data[1].permitted ||
        data[0].effective || data[1].effective)
        return fail(msg, len, -EPERM, "capabilities remain after the drop");
    return 0;
}

/*
 * Add the LOAD filter on top of the stem filter the spawner installed (the
 * function's table with move_mount still open; seccomp.c explains the
 * split). The LOAD filter alone would leave a function nearly unfiltered, so
 * a process that is not already in filter mode refuses to load anything.
 */
static int install_seccomp(struct proto_str bpf, char *msg, size_t len)
{
    if (prctl(PR_GET_SECCOMP, 0, 0, 0, 0) != 2)
        return fail(msg, len, -EPERM,
                    "seccomp: the stem filter is missing; refusing to "
                    "load function code without it");
    /* The payload is not aligned for struct sock_filter; copy it. */
    cleanup_free struct sock_filter *prog = malloc(bpf.len);
    if (!prog)
        return fail(msg, len, -ENOMEM, "seccomp: out of memory");
    memcpy(prog, bpf.p, bpf.len);
    struct sock_fprog fprog = {
        .len = (unsigned short)(bpf.len / sizeof(struct sock_filter)),
        .filter = prog,
    };
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &fprog) != 0)
        return fail(msg, len, errno ? -errno : -EBUSY, "seccomp(SET_MODE_FILTER): %s",
                    strerror(errno ? errno : EBUSY));
    return 0;
}

/* stdin is /dev/null from here on: a function never reads the spawner's. */
static void stdin_null(void)
{
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    if (fd != STDIN_FILENO) {
        dup2(fd, STDIN_FILENO);
        close(fd);
    }
}

static int load_native(struct agent_fn *fn, char *msg, size_t len)
{
    void *h = dlopen(fn->handler, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        return fail(msg, len, -ENOEXEC, "dlopen: %s", e ? e : "failed");
    }
    /* The handle stays open for the life of the process. */
    fn->handle = (agent_handle_fn)dlsym(h, "ember_handle");
    if (!fn->handle)
        return fail(msg, len, -ENOEXEC, "%s does not export ember_handle", fn->handler);
    int (*init)(void) = (int (*)(void))dlsym(h, "ember_init");
    if (init) {
        int rc = init();
        if (rc != 0)
            return fail(msg, len, -ECANCELED, "ember_init returned %d", rc);
    }
    return 0;
}

static int load_exec(struct agent_fn *fn, char *msg, size_t len)
{
    struct stat st;
    if (stat(fn->handler, &st) < 0)
        return fail(msg, len, -errno, "%s: %s", fn->handler, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return fail(msg, len, -ENOEXEC, "%s is not a regular file", fn->handler);
    /* With the function's own ids: can it run the handler? */
    if (faccessat(AT_FDCWD, fn->handler, X_OK, AT_EACCESS) < 0)
        return fail(msg, len, -errno, "%s is not executable: %s", fn->handler, strerror(errno));
    return 0;
}

int agent__load(uint32_t id, const uint8_t *payload, size_t len, int mount_fd, struct agent_fn *fn,
                char *msg, size_t msg_len)
{
    cleanup_free struct load_opts *o = calloc(1, sizeof(*o));
    if (!o)
        return fail(msg, msg_len, -ENOMEM, "LOAD: out of memory");
    int r = parse_opts(payload, len, o, msg, msg_len);
    if (r)
        return r;

    memset(fn, 0, sizeof(*fn));
    memcpy(fn->function, o->function.p, o->function.len);
    if (o->version.len)
        memcpy(fn->version, o->version.p, o->version.len);
    snprintf(fn->handler, sizeof(fn->handler), "%s/%.*s", AGENT_FN_DIR, (int)o->handler.len,
             o->handler.p);
    fn->timeout_ms = o->timeout_ms;
    fn->memory_mb = o->memory_mb;
    fn->concurrency = o->concurrency;
    fn->serve = o->serve;
    if (proto_str_eq(o->runtime, "native"))
        fn->runtime = AGENT_RUNTIME_NATIVE;
    else if (proto_str_eq(o->runtime, "exec"))
        fn->runtime = AGENT_RUNTIME_EXEC;
    else
        return fail(msg, msg_len, -ENOTSUP, "runtime '%.*s' is not served by ember-agent",
                    (int)(o->runtime.len > 32 ? 32 : o->runtime.len), o->runtime.p);

    if (mount_fd < 0)
        return fail(msg, msg_len, -EBADF, "LOAD without the package mount");
    if (move_mount(mount_fd, "", AT_FDCWD, AGENT_FN_DIR, MOVE_MOUNT_F_EMPTY_PATH) < 0)
        return fail(msg, msg_len, -errno, "move_mount(package, %s): %s", AGENT_FN_DIR,
                    strerror(errno));
    /* Enter the new mount, not the directory under it. */
    if (chdir(AGENT_FN_DIR) < 0)
        return fail(msg, msg_len, -errno, "chdir(%s): %s", AGENT_FN_DIR, strerror(errno));

    stdin_null();
    r = agent__log_redirect();
    if (r)
        return fail(msg, msg_len, r, "log pipes: %s", strerror(-r));
    /* Line-buffered: a call's lines leave the function's stdio when written. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    r = set_env(o, fn);
    if (r)
        return fail(msg, msg_len, r, "environment: %s", strerror(-r));

    r = drop_privileges(msg, msg_len);
    if (r)
        return r;
    r = install_seccomp(o->seccomp, msg, msg_len);
    if (r)
        return r;

    /* From here on function code runs: a crash answers this LOAD. */
    r = agent__crash_init(AGENT_CRASH_LOAD, id, 0);
    if (r)
        return fail(msg, msg_len, r, "signal handlers: %s", strerror(-r));
    if (fn->runtime == AGENT_RUNTIME_NATIVE)
        r = load_native(fn, msg, msg_len);
    else
        r = load_exec(fn, msg, msg_len);
    agent__crash_reset();
    fflush(stdout);
    fflush(stderr);
    agent__log_drain(true);
    return r;
}
