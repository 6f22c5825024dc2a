/* store.c - the function store: versions on disk, published atomically, and
 * the in-memory registry the event loop reads.
 *
 * Layout under the state directory:
 *
 *   lock                                  flock'd by the one process that owns the store
 *   functions/<name>/current              symlink to "versions/<digest>": the live version
 *   functions/<name>/current.new          the next "current" while it is switched
 *   functions/<name>/versions/<digest>/   one version, complete before it is linked:
 *       record.json                       name, digest, limits, env keys, sizes, time
 *       pkg/                              the unpacked package (function.json inside)
 *       snap/                             backends' artefacts, made on demand
 *   tmp/upload-<rand>                     uploads being received
 *   tmp/stage-<rand>/                     versions being unpacked and checked
 *   trash/<name>.<rand>/                  deleted functions being removed
 *
 * A deploy (upload.c) prepares the whole version in tmp/, fsyncs it,
 * renames it into versions/ (an unreferenced directory, harmless if we
 * crash), and publishes it with ONE atomic rename of a fresh symlink over
 * "current", then fsyncs the function's directory. So after a crash a
 * function is at its old version or its new one; store_open removes whatever
 * no "current" names. At most two versions stay: the current one and the one
 * before it, which a running sandbox may still be using.
 */
#include "functions/store.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "functions/functions_internal.h"

#define RECORD_MAX (64 * 1024)
/* Archive bytes allowed per entry beyond its data (headers, long names,
 * padding), to bound an upload before it is unpacked. */
#define UPLOAD_ENTRY_OVERHEAD (16 * 1024)

bool store_name_valid(const char *name, size_t len)
{
    if (len == 0 || len > STORE_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (i > 0 && c == '-')))
            return false;
    }
    return true;
}

static bool version_valid(const char *v)
{
    size_t i = 0;
    for (; v[i]; i++)
        if (!((v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'f')))
            return false;
    return i == STORE_VERSION_LEN;
}

/* 16 random hex digits for temporary names. */
void store__random_hex(char out[17])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[8];

    if (getrandom(b, sizeof(b), 0) != sizeof(b)) {
        /* Not secret, only unique: time and address will do. */
        uint64_t x = ember_now_ns() ^ (uint64_t)(uintptr_t)out;
        memcpy(b, &x, sizeof(b));
    }
    for (int i = 0; i < 8; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[16] = '\0';
}

int store__fsync_fd(int fd)
{
    return fsync(fd) < 0 ? -errno : 0;
}

/* Open directory @name in @dirfd, creating it with @mode first if needed.
 * *made says whether it was created (so the caller fsyncs @dirfd). */
int store__dir_open_or_make(int dirfd, const char *name, mode_t mode, bool *made)
{
    *made = false;
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0 || errno != ENOENT)
        return fd < 0 ? -errno : fd;
    if (mkdirat(dirfd, name, mode) < 0 && errno != EEXIST)
        return -errno;
    *made = true;
    fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

/* ---- records ---- */

void store_record_ref(struct function_record *r)
{
    __atomic_add_fetch(&r->refs, 1, __ATOMIC_RELAXED);
}

void store_record_unref(struct function_record *r)
{
    if (!r)
        return;
    if (__atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        manifest_free(&r->manifest);
        free(r);
    }
}

struct function_record *store__record_new(const struct store *s, const char *name,
                                          const char *version)
{
    struct function_record *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->refs = 1;
    snprintf(r->name, sizeof(r->name), "%s", name);
    snprintf(r->version, sizeof(r->version), "%s", version);
    /* store_open checked that these fit. */
    snprintf(r->package_dir, sizeof(r->package_dir),
             "%s/functions/%s/" STORE__VERSIONS_DIR "/%s/pkg", s->dir, name, version);
    snprintf(r->snapshot_dir, sizeof(r->snapshot_dir),
             "%s/functions/%s/" STORE__VERSIONS_DIR "/%s/snap", s->dir, name, version);
    return r;
}

static void format_rfc3339(int64_t ms, char *buf, size_t size)
{
    time_t sec = (time_t)(ms / 1000);
    int frac = (int)(ms % 1000);
    struct tm tm;

    if (frac < 0) {
        frac += 1000;
        sec--;
    }
    gmtime_r(&sec, &tm);
    size_t n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, size - n, ".%03dZ", frac);
}

json_t *store_record_json(const struct function_record *r)
{
    const struct manifest *m = &r->manifest;
    char created[64];

    json_t *keys = json_array();
    if (!keys)
        return NULL;
    for (size_t i = 0; i < m->n_env; i++) /* sorted by manifest_parse */
        if (json_array_append_new(keys, json_string(m->env[i].key)) < 0) {
            json_decref(keys);
            return NULL;
        }
    format_rfc3339(r->created_ms, created, sizeof(created));
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:b, s:o, s:s, s:I, s:I, s:I}",
                     "name", r->name, "version", r->version, "runtime",
                     manifest_runtime_name(m->runtime), "handler", m->handler, "sandbox",
                     manifest_sandbox_name(m->sandbox), "memory_mb", (json_int_t)m->memory_mb,
                     "timeout_ms", (json_int_t)m->timeout_ms, "concurrency",
                     (json_int_t)m->concurrency, "network", manifest_network_name(m->network),
                     "fresh_per_call", (int)m->fresh_per_call, "env_keys", keys, "created", created,
                     "created_ms", (json_int_t)r->created_ms, "package_size",
                     (json_int_t)r->package_size, "unpacked_size", (json_int_t)r->unpacked_size);
}

/* ---- the registry (memory only; reg_lock) ---- */

/* Index of @name, or where it would go; *found says which. reg_lock held. */
static size_t reg_find(const struct store *s, const char *name, bool *found)
{
    size_t lo = 0, hi = s->n_reg;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(s->reg[mid]->name, name);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

/* Make room for one more function, so that a publish cannot fail on memory
 * after the disk has changed. Only publishers insert, under disk_lock. */
int store__reg_reserve(struct store *s)
{
    int r = 0;

    pthread_mutex_lock(&s->reg_lock);
    if (s->n_reg == s->cap_reg) {
        size_t cap = s->cap_reg ? s->cap_reg * 2 : 16;
        struct function_record **reg = realloc(s->reg, cap * sizeof(*reg));
        if (reg) {
            s->reg = reg;
            s->cap_reg = cap;
        } else {
            r = -ENOMEM;
        }
    }
    pthread_mutex_unlock(&s->reg_lock);
    return r;
}

/* Make @rec (whose reference the registry takes) the current record of its
 * function. Returns the record it replaced, for the caller to unref. */
struct function_record *store__reg_put(struct store *s, struct function_record *rec)
{
    struct function_record *old = NULL;
    bool found;

    pthread_mutex_lock(&s->reg_lock);
    size_t i = reg_find(s, rec->name, &found);
    if (found) {
        old = s->reg[i];
        s->reg[i] = rec;
    } else {
        /* store__reg_reserve made room. */
        memmove(&s->reg[i + 1], &s->reg[i], (s->n_reg - i) * sizeof(*s->reg));
        s->reg[i] = rec;
        s->n_reg++;
    }
    pthread_mutex_unlock(&s->reg_lock);
    return old;
}

static struct function_record *reg_take(struct store *s, const char *name)
{
    struct function_record *old = NULL;
    bool found;

    pthread_mutex_lock(&s->reg_lock);
    size_t i = reg_find(s, name, &found);
    if (found) {
        old = s->reg[i];
        memmove(&s->reg[i], &s->reg[i + 1], (s->n_reg - i - 1) * sizeof(*s->reg));
        s->n_reg--;
    }
    pthread_mutex_unlock(&s->reg_lock);
    return old;
}

struct function_record *store_function_get(struct store *s, const char *name)
{
    struct function_record *r = NULL;
    bool found;

    pthread_mutex_lock(&s->reg_lock);
    size_t i = reg_find(s, name, &found);
    if (found) {
        r = s->reg[i];
        store_record_ref(r);
    }
    pthread_mutex_unlock(&s->reg_lock);
    return r;
}

int store_function_list(struct store *s, struct function_record ***out, size_t *n)
{
    pthread_mutex_lock(&s->reg_lock);
    struct function_record **v = malloc((s->n_reg ? s->n_reg : 1) * sizeof(*v));
    if (!v) {
        pthread_mutex_unlock(&s->reg_lock);
        return -ENOMEM;
    }
    for (size_t i = 0; i < s->n_reg; i++) {
        v[i] = s->reg[i];
        store_record_ref(v[i]);
    }
    *n = s->n_reg;
    pthread_mutex_unlock(&s->reg_lock);
    *out = v;
    return 0;
}

size_t store_function_count(struct store *s)
{
    pthread_mutex_lock(&s->reg_lock);
    size_t n = s->n_reg;
    pthread_mutex_unlock(&s->reg_lock);
    return n;
}

/* ---- loading a version from disk ---- */

/* Errors that mean "this entry on disk is damaged or half-made" (remove it),
 * as opposed to the machine being in trouble (fail, touch nothing). */
static bool is_damage(int r)
{
    return r == -EINVAL || r == -ENOENT || r == -ENOTDIR || r == -ELOOP || r == -EXDEV ||
           r == -EFBIG || r == -EISDIR;
}

static int damaged(struct ember_error *err, int r, const char *what)
{
    if (is_damage(r))
        return ember_error_set(err, -EINVAL, "%s: %s", what, strerror(-r));
    return ember_error_sys(err, r, "%s", what);
}

/*
 * Build the record of version @version of @name from its directory. The
 * manifest comes from the package's own function.json (record.json holds
 * env keys only); the handler is checked again. -EINVAL if damaged.
 */
int store__version_load(struct store *s, int versions_fd, const char *name, const char *version,
                        struct function_record **out, struct ember_error *err)
{
    cleanup_close int vfd =
        functions__open_beneath(versions_fd, version, O_RDONLY | O_DIRECTORY, 0);
    if (vfd < 0)
        return damaged(err, vfd, "version directory");

    cleanup_free char *text = NULL;
    size_t len;
    int r = functions__read_file(vfd, STORE__RECORD_FILE, RECORD_MAX, &text, &len);
    if (r < 0)
        return damaged(err, r, STORE__RECORD_FILE);
    json_error_t je;
    json_auto_t *root = json_loadb(text, len, 0, &je);
    const char *rname, *rversion, *rruntime, *rhandler;
    json_int_t created, package_size, unpacked_size;
    if (!root ||
        json_unpack(root, "{s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "name", &rname, "version",
                    &rversion, "runtime", &rruntime, "handler", &rhandler, "created_ms", &created,
                    "package_size", &package_size, "unpacked_size", &unpacked_size) < 0)
        return ember_error_set(err, -EINVAL, STORE__RECORD_FILE ": unreadable or incomplete");
    if (strcmp(rname, name) != 0 || strcmp(rversion, version) != 0)
        return ember_error_set(err, -EINVAL,
                               STORE__RECORD_FILE ": names another function or version");

    cleanup_close int pkg = functions__open_beneath(vfd, "pkg", O_RDONLY | O_DIRECTORY, 0);
    if (pkg < 0)
        return damaged(err, pkg, "pkg");
    cleanup_free char *mtext = NULL;
    r = functions__read_file(pkg, "function.json", MANIFEST_FILE_MAX, &mtext, &len);
    if (r < 0)
        return damaged(err, r, "pkg/function.json");

    struct function_record *rec = store__record_new(s, name, version);
    if (!rec)
        return ember_error_set(err, -ENOMEM, "out of memory");
    r = manifest_parse(mtext, len, &rec->manifest, err);
    if (r == 0 && (strcmp(rruntime, manifest_runtime_name(rec->manifest.runtime)) != 0 ||
                   strcmp(rhandler, rec->manifest.handler) != 0))
        r = ember_error_set(err, -EINVAL, STORE__RECORD_FILE " and function.json disagree");
    if (r == 0)
        r = manifest_check_handler(&rec->manifest, pkg, err);
    if (r < 0) {
        store_record_unref(rec);
        return r;
    }
    rec->created_ms = created;
    rec->package_size = (uint64_t)package_size;
    rec->unpacked_size = (uint64_t)unpacked_size;
    *out = rec;
    return 0;
}

/* "versions/<digest>" -> digest, or NULL. */
static const char *link_version(const char *target)
{
    static const char prefix[] = STORE__VERSIONS_DIR "/";

    if (strncmp(target, prefix, sizeof(prefix) - 1) != 0)
        return NULL;
    const char *v = target + sizeof(prefix) - 1;
    return version_valid(v) ? v : NULL;
}

/* Move @name out of @dirfd into trash/ under a unique name: gone from the
 * live tree at once, removed by store_trash_sweep once no call can still
 * be reading it. */
static int to_trash(struct store *s, int dirfd, const char *name)
{
    char rnd[17], trash[PATH_MAX];
    store__random_hex(rnd);
    snprintf(trash, sizeof(trash), "%.64s.%s", name, rnd);
    if (renameat(dirfd, name, s->trash_fd, trash) < 0)
        return -errno;
    return 0;
}

/* Remove what is not @keep1 or @keep2 from the directory @dirfd (into the
 * trash when @s is given); log what fails. Used for versions/ and for a
 * function's own directory. */
void store__remove_others(struct store *s, int dirfd, const char *what, const char *keep1,
                          const char *keep2)
{
    struct functions__dir d;

    int r = functions__dir_read(dirfd, &d);
    if (r < 0) {
        log_warn("store: %s: cannot list: %s", what, strerror(-r));
        return;
    }
    for (size_t i = 0; i < d.n; i++) {
        if ((keep1 && strcmp(d.v[i], keep1) == 0) || (keep2 && strcmp(d.v[i], keep2) == 0))
            continue;
        r = s ? to_trash(s, dirfd, d.v[i]) : functions__remove_tree(dirfd, d.v[i]);
        if (r < 0)
            log_warn("store: %s: cannot remove %s: %s", what, d.v[i], strerror(-r));
        else
            log_debug("store: %s: removed leftover %s", what, d.v[i]);
    }
    functions__dir_free(&d);
}

/* Load function @name at store_open; remove its leftovers. -EINVAL: damaged. */
static int function_load(struct store *s, const char *name, struct function_record **out,
                         struct ember_error *err)
{
    if (!store_name_valid(name, strlen(name)))
        return ember_error_set(err, -EINVAL, "not a valid function name");
    cleanup_close int fn =
        openat(s->functions_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fn < 0)
        return damaged(err, -errno, "function directory");

    char target[PATH_MAX];
    ssize_t n = readlinkat(fn, STORE__CURRENT_LINK, target, sizeof(target) - 1);
    if (n < 0) {
        if (errno == ENOENT)
            return ember_error_set(err, -EINVAL,
                                   "no current version (an interrupted first deploy)");
        return damaged(err, -errno, STORE__CURRENT_LINK);
    }
    target[n] = '\0';
    const char *version = link_version(target);
    if (!version)
        return ember_error_set(err, -EINVAL, STORE__CURRENT_LINK " does not name a version");

    cleanup_close int versions =
        openat(fn, STORE__VERSIONS_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (versions < 0)
        return damaged(err, -errno, STORE__VERSIONS_DIR);
    int r = store__version_load(s, versions, name, version, out, err);
    if (r < 0)
        return r;

    /* Nothing runs yet, so the previous version is not needed any more, and
     * anything else (a temporary symlink, a half-moved version) is a leftover. */
    char what[STORE_NAME_MAX + 32];
    snprintf(what, sizeof(what), "function '%s'", name);
    store__remove_others(NULL, fn, what, STORE__CURRENT_LINK, STORE__VERSIONS_DIR);
    store__remove_others(NULL, versions, what, version, NULL);
    return 0;
}

static int reg_cmp(const void *a, const void *b)
{
    const struct function_record *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

static int load_all(struct store *s, struct ember_error *err)
{
    struct functions__dir d;

    int r = functions__dir_read(s->functions_fd, &d);
    if (r < 0)
        return ember_error_sys(err, r, "store: cannot list %s/functions", s->dir);
    for (size_t i = 0; i < d.n; i++) {
        struct function_record *rec = NULL;
        struct ember_error e = {0};
        r = function_load(s, d.v[i], &rec, &e);
        if (r == -EINVAL) {
            char q[FUNCTIONS__QUOTE_MAX];
            log_warn("store: removing damaged function '%s': %s",
                     functions__quote(d.v[i], q, sizeof(q)), e.msg);
            int q2 = functions__remove_tree(s->functions_fd, d.v[i]);
            if (q2 < 0)
                log_error("store: cannot remove functions/%s: %s", q, strerror(-q2));
            r = 0;
            continue;
        }
        if (r < 0) {
            /* An I/O or resource failure is no evidence of damage: keep
             * everything and refuse to start. */
            r = ember_error_set(err, r, "store: loading function '%s': %s", d.v[i], e.msg);
            break;
        }
        if (s->n_reg == s->cap_reg && store__reg_reserve(s) < 0) {
            store_record_unref(rec);
            r = ember_error_set(err, -ENOMEM, "store: out of memory");
            break;
        }
        s->reg[s->n_reg++] = rec;
        r = 0;
    }
    functions__dir_free(&d);
    if (r < 0)
        return r;
    if (s->n_reg > 1)
        qsort(s->reg, s->n_reg, sizeof(*s->reg), reg_cmp);
    if (store__fsync_fd(s->functions_fd) < 0)
        log_warn("store: fsync %s/functions failed", s->dir);
    return 0;
}

/* ---- open and close ---- */

/* mkdir -p @path with @mode for what it creates. */
static int mkdir_parents(const char *path, mode_t mode)
{
    if (path[0] == '\0')
        return -EINVAL;
    cleanup_free char *p = strdup(path);
    if (!p)
        return -ENOMEM;
    for (char *q = p + 1;; q++) {
        if (*q != '/' && *q != '\0')
            continue;
        char c = *q;
        *q = '\0';
        if (mkdir(p, mode) < 0 && errno != EEXIST)
            return -errno;
        *q = c;
        if (c == '\0')
            return 0;
    }
}

uint64_t store__add_sat(uint64_t a, uint64_t b)
{
    return a + b < a ? UINT64_MAX : a + b;
}

static uint64_t mul_sat(uint64_t a, uint64_t b)
{
    return b != 0 && a > UINT64_MAX / b ? UINT64_MAX : a * b;
}

int store_open(const char *state_dir, const struct package_limits *lim, struct store **out,
               struct ember_error *err)
{
    struct store *s = calloc(1, sizeof(*s));
    int r;

    if (!s)
        return ember_error_set(err, -ENOMEM, "store: out of memory");
    s->state_fd = s->functions_fd = s->tmp_fd = s->trash_fd = s->lock_fd = -1;
    pthread_mutex_init(&s->disk_lock, NULL);
    pthread_mutex_init(&s->reg_lock, NULL);
    if (lim)
        s->lim = *lim;
    else
        package_limits_default(&s->lim);
    s->upload_max =
        store__add_sat(store__add_sat(s->lim.max_unpacked_bytes,
                                      mul_sat(s->lim.max_entries, UPLOAD_ENTRY_OVERHEAD)),
                       1 << 20);

    /* 0711: others may pass through to a package (a jailed monitor may need
     * to) but not list the store; env values live in function.json. */
    r = mkdir_parents(state_dir, 0711);
    if (r < 0) {
        ember_error_sys(err, r, "store: cannot create %s", state_dir);
        goto err_free;
    }
    s->dir = realpath(state_dir, NULL);
    if (!s->dir) {
        r = ember_error_sys(err, -errno, "store: %s", state_dir);
        goto err_free;
    }
    /* Every path a record carries must fit in PATH_MAX. */
    if (strlen(s->dir) + sizeof("/functions//" STORE__VERSIONS_DIR "//pkg") + STORE_NAME_MAX +
            STORE_VERSION_LEN >=
        PATH_MAX) {
        r = ember_error_set(err, -ENAMETOOLONG, "store: state directory path too long: %s", s->dir);
        goto err_free;
    }
    s->state_fd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->state_fd < 0) {
        r = ember_error_sys(err, -errno, "store: open %s", s->dir);
        goto err_fds;
    }
    /* Two daemons on one store would delete each other's uploads. */
    s->lock_fd = openat(s->state_fd, "lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (s->lock_fd < 0) {
        r = ember_error_sys(err, -errno, "store: %s/lock", s->dir);
        goto err_fds;
    }
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        r = -errno;
        if (r == -EWOULDBLOCK)
            r = ember_error_set(err, -EBUSY, "store: %s is in use by another process", s->dir);
        else
            ember_error_sys(err, r, "store: lock %s", s->dir);
        goto err_fds;
    }

    static const struct {
        const char *name;
        mode_t mode;
        size_t fd_off;
    } dirs[] = {
        {"functions", 0711, offsetof(struct store, functions_fd)},
        {"tmp", 0700, offsetof(struct store, tmp_fd)},
        {"trash", 0700, offsetof(struct store, trash_fd)},
    };
    for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
        bool made;
        int fd = store__dir_open_or_make(s->state_fd, dirs[i].name, dirs[i].mode, &made);
        if (fd < 0) {
            r = ember_error_sys(err, fd, "store: %s/%s", s->dir, dirs[i].name);
            goto err_fds;
        }
        *(int *)((char *)s + dirs[i].fd_off) = fd;
    }
    if (store__fsync_fd(s->state_fd) < 0)
        log_warn("store: fsync %s failed", s->dir);

    /* Interrupted uploads and deletes: nothing in tmp/ or trash/ is live. */
    r = functions__remove_contents(s->tmp_fd);
    if (r < 0)
        log_warn("store: cannot empty %s/tmp: %s", s->dir, strerror(-r));
    r = functions__remove_contents(s->trash_fd);
    if (r < 0)
        log_warn("store: cannot empty %s/trash: %s", s->dir, strerror(-r));

    r = load_all(s, err);
    if (r < 0)
        goto err_fds;
    log_info("store: %s: %zu function%s", s->dir, s->n_reg, s->n_reg == 1 ? "" : "s");
    *out = s;
    return 0;

err_fds:
    store_close(s);
    return r;
err_free:
    free(s->dir);
    pthread_mutex_destroy(&s->disk_lock);
    pthread_mutex_destroy(&s->reg_lock);
    free(s);
    return r;
}

void store_close(struct store *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_reg; i++)
        store_record_unref(s->reg[i]);
    free(s->reg);
    int fds[] = {s->functions_fd, s->tmp_fd, s->trash_fd, s->lock_fd, s->state_fd};
    for (size_t i = 0; i < ARRAY_SIZE(fds); i++)
        if (fds[i] >= 0)
            close(fds[i]);
    pthread_mutex_destroy(&s->disk_lock);
    pthread_mutex_destroy(&s->reg_lock);
    free(s->dir);
    free(s);
}

/* ---- delete ---- */

int store_function_delete(struct store *s, const char *name, struct ember_error *err)
{
    char trash[STORE_NAME_MAX + 24];
    int r = 0;

    if (!store_name_valid(name, strlen(name)))
        return ember_error_set(err, -EINVAL, "name: must match [a-z0-9][a-z0-9-]{0,62}");

    pthread_mutex_lock(&s->disk_lock);
    struct function_record *cur = store_function_get(s, name);
    if (!cur) {
        pthread_mutex_unlock(&s->disk_lock);
        return ember_error_set(err, -ENOENT, "function '%s' not found", name);
    }
    char rnd[17];
    store__random_hex(rnd);
    snprintf(trash, sizeof(trash), "%s.%s", name, rnd);
    /* One rename takes the whole function out of the live tree. */
    if (renameat(s->functions_fd, name, s->trash_fd, trash) < 0) {
        r = ember_error_sys(err, -errno, "delete: rename functions/%s", name);
        pthread_mutex_unlock(&s->disk_lock);
        store_record_unref(cur);
        return r;
    }
    r = store__fsync_fd(s->functions_fd);
    if (r < 0)
        ember_error_sys(err, r, "delete: fsync functions/");
    store_record_unref(reg_take(s, name));
    pthread_mutex_unlock(&s->disk_lock);
    store_record_unref(cur);

    /* Out of the live tree already. Its files stay in trash/ until
     * store_trash_sweep: a call that was running when the delete came (an
     * exec handler reads its files per call) finishes; a crash leaves them
     * for store_open. */
    if (r == 0)
        log_info("store: %s deleted", name);
    return r;
}

void store_set_default_sandbox(struct store *s, enum manifest_sandbox sandbox)
{
    s->default_sandbox = sandbox;
}

int store_trash_sweep(struct store *s, uint64_t min_age_ms)
{
    struct functions__dir d;
    int r = functions__dir_read(s->trash_fd, &d);
    if (r < 0)
        return r;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int removed = 0;
    for (size_t i = 0; i < d.n; i++) {
        struct stat st;
        if (fstatat(s->trash_fd, d.v[i], &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        /* ctime: when the rename put it in the trash */
        int64_t age_ms = ((int64_t)now.tv_sec - (int64_t)st.st_ctim.tv_sec) * 1000 +
                         ((int64_t)now.tv_nsec - (int64_t)st.st_ctim.tv_nsec) / 1000000;
        if (age_ms < (int64_t)min_age_ms)
            continue;
        int q = functions__remove_tree(s->trash_fd, d.v[i]);
        if (q < 0)
            log_warn("store: cannot remove trash/%s: %s", d.v[i], strerror(-q));
        else
            removed++;
    }
    functions__dir_free(&d);
    return removed;
}
