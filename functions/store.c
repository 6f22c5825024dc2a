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
 * A deploy prepares the whole version in tmp/, fsyncs it, renames it into
 * versions/ (an unreferenced directory, harmless if we crash), and publishes
 * it with ONE atomic rename of a fresh symlink over "current", then fsyncs
 * the function's directory. So after a crash a function is at its old
 * version or its new one; store_open removes whatever no "current" names.
 * At most two versions stay: the current one and the one before it, which
 * a running sandbox may still be using.
 */
#include "functions/store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/evp.h>
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

#define RECORD_FILE "record.json"
#define RECORD_MAX (64 * 1024)
#define CURRENT_LINK "current"
#define CURRENT_TEMP "current.new"
#define VERSIONS_DIR "versions"
/* Archive bytes allowed per entry beyond its data (headers, long names,
 * padding), to bound an upload before it is unpacked. */
#define UPLOAD_ENTRY_OVERHEAD (16 * 1024)

struct store {
    char *dir; /* absolute state directory */
    int state_fd, functions_fd, tmp_fd, trash_fd, lock_fd;
    struct package_limits lim;
    uint64_t upload_max;
    enum manifest_sandbox default_sandbox; /* what "sandbox" absent means */

    /* Serialises the publishing part of commits and deletes on disk. */
    pthread_mutex_t disk_lock;
    /* Guards reg; held only for memory updates, never across I/O, because
     * the loop thread takes it in store_function_get/list. */
    pthread_mutex_t reg_lock;
    struct function_record **reg; /* one reference each; sorted by name */
    size_t n_reg, cap_reg;
};

struct store_upload {
    struct store *s;
    int fd;
    char file[32]; /* name in tmp/ */
    EVP_MD_CTX *md;
    uint64_t size;
    int error; /* a failed write spoils the upload for good */
};

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
static void random_hex(char out[17])
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

static int fsync_fd(int fd)
{
    return fsync(fd) < 0 ? -errno : 0;
}

/* Open directory @name in @dirfd, creating it with @mode first if needed.
 * *made says whether it was created (so the caller fsyncs @dirfd). */
static int dir_open_or_make(int dirfd, const char *name, mode_t mode, bool *made)
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

static struct function_record *record_new(const struct store *s, const char *name,
                                          const char *version)
{
    struct function_record *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->refs = 1;
    snprintf(r->name, sizeof(r->name), "%s", name);
    snprintf(r->version, sizeof(r->version), "%s", version);
    /* store_open checked that these fit. */
    snprintf(r->package_dir, sizeof(r->package_dir), "%s/functions/%s/" VERSIONS_DIR "/%s/pkg",
             s->dir, name, version);
    snprintf(r->snapshot_dir, sizeof(r->snapshot_dir), "%s/functions/%s/" VERSIONS_DIR "/%s/snap",
             s->dir, name, version);
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
static int reg_reserve(struct store *s)
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
static struct function_record *reg_put(struct store *s, struct function_record *rec)
{
    struct function_record *old = NULL;
    bool found;

    pthread_mutex_lock(&s->reg_lock);
    size_t i = reg_find(s, rec->name, &found);
    if (found) {
        old = s->reg[i];
        s->reg[i] = rec;
    } else {
        /* reg_reserve made room. */
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
static int version_load(struct store *s, int versions_fd, const char *name, const char *version,
                        struct function_record **out, struct ember_error *err)
{
    cleanup_close int vfd =
        functions__open_beneath(versions_fd, version, O_RDONLY | O_DIRECTORY, 0);
    if (vfd < 0)
        return damaged(err, vfd, "version directory");

    cleanup_free char *text = NULL;
    size_t len;
    int r = functions__read_file(vfd, RECORD_FILE, RECORD_MAX, &text, &len);
    if (r < 0)
        return damaged(err, r, RECORD_FILE);
    json_error_t je;
    json_auto_t *root = json_loadb(text, len, 0, &je);
    const char *rname, *rversion, *rruntime, *rhandler;
    json_int_t created, package_size, unpacked_size;
    if (!root ||
        json_unpack(root, "{s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "name", &rname, "version",
                    &rversion, "runtime", &rruntime, "handler", &rhandler, "created_ms", &created,
                    "package_size", &package_size, "unpacked_size", &unpacked_size) < 0)
        return ember_error_set(err, -EINVAL, RECORD_FILE ": unreadable or incomplete");
    if (strcmp(rname, name) != 0 || strcmp(rversion, version) != 0)
        return ember_error_set(err, -EINVAL, RECORD_FILE ": names another function or version");

    cleanup_close int pkg = functions__open_beneath(vfd, "pkg", O_RDONLY | O_DIRECTORY, 0);
    if (pkg < 0)
        return damaged(err, pkg, "pkg");
    cleanup_free char *mtext = NULL;
    r = functions__read_file(pkg, "function.json", MANIFEST_FILE_MAX, &mtext, &len);
    if (r < 0)
        return damaged(err, r, "pkg/function.json");

    struct function_record *rec = record_new(s, name, version);
    if (!rec)
        return ember_error_set(err, -ENOMEM, "out of memory");
    r = manifest_parse(mtext, len, &rec->manifest, err);
    if (r == 0 && (strcmp(rruntime, manifest_runtime_name(rec->manifest.runtime)) != 0 ||
                   strcmp(rhandler, rec->manifest.handler) != 0))
        r = ember_error_set(err, -EINVAL, RECORD_FILE " and function.json disagree");
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
    static const char prefix[] = VERSIONS_DIR "/";

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
    random_hex(rnd);
    snprintf(trash, sizeof(trash), "%.64s.%s", name, rnd);
    if (renameat(dirfd, name, s->trash_fd, trash) < 0)
        return -errno;
    return 0;
}

/* Remove what is not @keep1 or @keep2 from the directory @dirfd (into the
 * trash when @s is given); log what fails. Used for versions/ and for a
 * function's own directory. */
static void remove_others(struct store *s, int dirfd, const char *what, const char *keep1,
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
    ssize_t n = readlinkat(fn, CURRENT_LINK, target, sizeof(target) - 1);
    if (n < 0) {
        if (errno == ENOENT)
            return ember_error_set(err, -EINVAL,
                                   "no current version (an interrupted first deploy)");
        return damaged(err, -errno, CURRENT_LINK);
    }
    target[n] = '\0';
    const char *version = link_version(target);
    if (!version)
        return ember_error_set(err, -EINVAL, CURRENT_LINK " does not name a version");

    cleanup_close int versions =
        openat(fn, VERSIONS_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (versions < 0)
        return damaged(err, -errno, VERSIONS_DIR);
    int r = version_load(s, versions, name, version, out, err);
    if (r < 0)
        return r;

    /* Nothing runs yet, so the previous version is not needed any more, and
     * anything else (a temporary symlink, a half-moved version) is a leftover. */
    char what[STORE_NAME_MAX + 32];
    snprintf(what, sizeof(what), "function '%s'", name);
    remove_others(NULL, fn, what, CURRENT_LINK, VERSIONS_DIR);
    remove_others(NULL, versions, what, version, NULL);
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
        if (s->n_reg == s->cap_reg && reg_reserve(s) < 0) {
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
    if (fsync_fd(s->functions_fd) < 0)
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

static uint64_t add_sat(uint64_t a, uint64_t b)
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
    s->upload_max = add_sat(
        add_sat(s->lim.max_unpacked_bytes, mul_sat(s->lim.max_entries, UPLOAD_ENTRY_OVERHEAD)),
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
    if (strlen(s->dir) + sizeof("/functions//" VERSIONS_DIR "//pkg") + STORE_NAME_MAX +
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
        int fd = dir_open_or_make(s->state_fd, dirs[i].name, dirs[i].mode, &made);
        if (fd < 0) {
            r = ember_error_sys(err, fd, "store: %s/%s", s->dir, dirs[i].name);
            goto err_fds;
        }
        *(int *)((char *)s + dirs[i].fd_off) = fd;
    }
    if (fsync_fd(s->state_fd) < 0)
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

/* ---- uploads ---- */

int store_upload_begin(struct store *s, struct store_upload **out, struct ember_error *err)
{
    struct store_upload *up = calloc(1, sizeof(*up));
    if (!up)
        return ember_error_set(err, -ENOMEM, "upload: out of memory");
    up->s = s;
    up->md = EVP_MD_CTX_new();
    if (!up->md || EVP_DigestInit_ex(up->md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(up->md);
        free(up);
        return ember_error_set(err, -ENOMEM, "upload: cannot start SHA-256");
    }
    for (int tries = 0;; tries++) {
        char rnd[17];
        random_hex(rnd);
        snprintf(up->file, sizeof(up->file), "upload-%s", rnd);
        up->fd =
            openat(s->tmp_fd, up->file, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (up->fd >= 0)
            break;
        if (errno != EEXIST || tries == 8) {
            int r =
                ember_error_sys(err, -errno, "upload: cannot create %s/tmp/%s", s->dir, up->file);
            EVP_MD_CTX_free(up->md);
            free(up);
            return r;
        }
    }
    *out = up;
    return 0;
}

int store_upload_write(struct store_upload *up, const void *data, size_t len,
                       struct ember_error *err)
{
    if (up->error)
        return ember_error_set(err, up->error, "upload: an earlier write failed");
    if (add_sat(up->size, len) > up->s->upload_max) {
        up->error = -EFBIG;
        return ember_error_set(err, -EFBIG, "package: larger than %" PRIu64 " bytes",
                               up->s->upload_max);
    }
    int r = functions__write_all(up->fd, data, len);
    if (r < 0) {
        up->error = r;
        return ember_error_sys(err, r, "upload: write");
    }
    if (EVP_DigestUpdate(up->md, data, len) != 1) {
        up->error = -EIO;
        return ember_error_set(err, -EIO, "upload: SHA-256 failed");
    }
    up->size += len;
    return 0;
}

void store_upload_abort(struct store_upload *up)
{
    if (!up)
        return;
    if (up->fd >= 0) {
        unlinkat(up->s->tmp_fd, up->file, 0);
        close(up->fd);
    }
    EVP_MD_CTX_free(up->md);
    free(up);
}

/* Write record.json for @rec into the version directory @vfd, fsynced. */
static int record_write(int vfd, const struct function_record *rec, struct ember_error *err)
{
    json_auto_t *j = store_record_json(rec);
    if (!j)
        return ember_error_set(err, -ENOMEM, RECORD_FILE ": cannot build");
    cleanup_free char *text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (!text)
        return ember_error_set(err, -ENOMEM, RECORD_FILE ": cannot build");
    cleanup_close int fd =
        openat(vfd, RECORD_FILE, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return ember_error_sys(err, -errno, "commit: create " RECORD_FILE);
    size_t len = strlen(text);
    text[len] = '\n'; /* json_dumps leaves no newline; overwrite the NUL */
    int r = functions__write_all(fd, text, len + 1);
    if (r == 0 && fsync(fd) < 0)
        r = -errno;
    if (r < 0)
        return ember_error_sys(err, r, "commit: write " RECORD_FILE);
    return 0;
}

/*
 * Unpack the upload into tmp/<stage>/pkg, validate it, write record.json and
 * fsync every file and directory. On success *out is the new record (one
 * reference) and the stage directory is complete; on failure it is removed.
 */
static int stage_prepare(struct store_upload *up, const char *name, const char *version,
                         const char *stage, struct function_record **out, struct ember_error *err)
{
    struct store *s = up->s;
    struct function_record *rec = NULL;
    struct package_info info = {0};
    cleanup_free char *mtext = NULL;
    size_t mlen;
    char path[PATH_MAX];
    cleanup_close int sfd = -1;
    cleanup_close int pkg = -1;
    bool made;
    int r;

    if (mkdirat(s->tmp_fd, stage, 0711) < 0)
        return ember_error_sys(err, -errno, "commit: mkdir tmp/%s", stage);
    sfd = openat(s->tmp_fd, stage, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sfd < 0) {
        r = ember_error_sys(err, -errno, "commit: open tmp/%s", stage);
        goto fail;
    }
    pkg = dir_open_or_make(sfd, "pkg", 0755, &made);
    if (pkg < 0 || fchmod(pkg, 0755) < 0) {
        r = ember_error_sys(err, pkg < 0 ? pkg : -errno, "commit: mkdir pkg");
        goto fail;
    }

    snprintf(path, sizeof(path), "%s/tmp/%s", s->dir, up->file);
    r = package_unpack(path, pkg, &s->lim, &info, err);
    if (r < 0)
        goto fail;

    rec = record_new(s, name, version);
    if (!rec) {
        r = ember_error_set(err, -ENOMEM, "commit: out of memory");
        goto fail;
    }
    r = functions__read_file(pkg, "function.json", MANIFEST_FILE_MAX, &mtext, &mlen);
    if (r == -EFBIG) {
        r = ember_error_set(err, -EINVAL, "function.json: larger than %d bytes", MANIFEST_FILE_MAX);
        goto fail;
    }
    if (r < 0) {
        r = ember_error_sys(err, r, "function.json");
        goto fail;
    }
    struct ember_error merr = {0};
    r = manifest_parse(mtext, mlen, &rec->manifest, &merr);
    if (r < 0) {
        /* Name the file as well as the field. */
        if (strncmp(merr.msg, "function.json", 13) == 0)
            ember_error_set(err, r, "%s", merr.msg);
        else
            ember_error_set(err, r, "function.json: %s", merr.msg);
        goto fail;
    }
    /* A manifest without "sandbox" runs on the daemon's default backend:
     * check the handler for that one (a microVM needs a guest image). Only
     * at upload: a stored function is not re-judged if the default changes. */
    struct manifest as_run = rec->manifest;
    if (as_run.sandbox == MANIFEST_SANDBOX_DEFAULT)
        as_run.sandbox = s->default_sandbox;
    r = manifest_check_handler(&as_run, pkg, err);
    if (r < 0)
        goto fail;
    rec->created_ms = ember_wall_ms();
    rec->package_size = up->size;
    rec->unpacked_size = info.unpacked_bytes;

    r = record_write(sfd, rec, err);
    if (r < 0)
        goto fail;
    /* Files were fsynced as they were written; now every directory entry. */
    r = functions__fsync_dirs(sfd);
    if (r < 0) {
        ember_error_sys(err, r, "commit: fsync");
        goto fail;
    }
    *out = rec;
    return 0;

fail:
    store_record_unref(rec);
    int q = functions__remove_tree(s->tmp_fd, stage);
    if (q < 0)
        log_warn("store: cannot remove tmp/%s: %s", stage, strerror(-q));
    return r;
}

/*
 * The publishing part of a commit, under disk_lock: move the stage into
 * versions/ (or find the version already there: the previous one), switch
 * "current" with one rename, fsync, update the registry, prune. On success
 * *out is a new reference to the live record.
 */
static int publish(struct store *s, const char *name, const char *version, const char *stage,
                   struct function_record *staged, struct function_record **out, bool *created,
                   bool *unchanged, struct ember_error *err)
{
    struct function_record *cur = store_function_get(s, name);
    struct function_record *rec = NULL;
    bool fn_made = false, moved = false, made;
    cleanup_close int fn = -1;
    cleanup_close int versions = -1;
    int r;

    /* Redeploy of the live bytes, raced with another commit: nothing to do. */
    if (cur && strcmp(cur->version, version) == 0) {
        functions__remove_tree(s->tmp_fd, stage);
        *unchanged = true;
        *out = cur;
        return 0;
    }
    r = reg_reserve(s);
    if (r < 0) {
        ember_error_set(err, r, "commit: out of memory");
        goto out;
    }

    fn = dir_open_or_make(s->functions_fd, name, 0711, &fn_made);
    if (fn < 0) {
        r = ember_error_sys(err, fn, "commit: functions/%s", name);
        goto out;
    }
    if (fn_made && (r = fsync_fd(s->functions_fd)) < 0) {
        ember_error_sys(err, r, "commit: fsync functions/");
        goto undo;
    }
    versions = dir_open_or_make(fn, VERSIONS_DIR, 0711, &made);
    if (versions < 0) {
        r = ember_error_sys(err, versions, "commit: functions/%s/" VERSIONS_DIR, name);
        goto undo;
    }
    if (made && (r = fsync_fd(fn)) < 0) {
        ember_error_sys(err, r, "commit: fsync functions/%s", name);
        goto undo;
    }

    r = renameat2(s->tmp_fd, stage, versions, version, RENAME_NOREPLACE) < 0 ? -errno : 0;
    if (r == -EEXIST) {
        /* The previous version, redeployed: it is complete (it was published
         * once) and may be in use, so it is kept as it is, with its record. */
        struct ember_error lerr = {0};
        r = version_load(s, versions, name, version, &rec, &lerr);
        if (r == 0) {
            functions__remove_tree(s->tmp_fd, stage);
        } else if (r == -EINVAL) {
            /* Damaged: nothing can use it; ours replaces it. */
            log_warn("store: %s: replacing damaged version %.12s: %s", name, version, lerr.msg);
            r = functions__remove_tree(versions, version);
            if (r == 0)
                r = renameat2(s->tmp_fd, stage, versions, version, RENAME_NOREPLACE) < 0 ? -errno
                                                                                         : 0;
            if (r == 0)
                moved = true;
        } else {
            ember_error_set(err, r, "commit: existing version: %s", lerr.msg);
            goto undo;
        }
    } else if (r == 0) {
        moved = true;
    }
    if (r < 0) {
        ember_error_sys(err, r, "commit: rename into " VERSIONS_DIR);
        goto undo;
    }
    if (moved) {
        rec = staged;
        store_record_ref(rec);
    }
    if ((r = fsync_fd(versions)) < 0) {
        ember_error_sys(err, r, "commit: fsync " VERSIONS_DIR);
        goto undo;
    }

    /* The publish: one rename of a fresh symlink over "current". */
    char target[sizeof(VERSIONS_DIR) + STORE_VERSION_LEN + 1];
    snprintf(target, sizeof(target), VERSIONS_DIR "/%s", version);
    if (unlinkat(fn, CURRENT_TEMP, 0) < 0 && errno != ENOENT) {
        r = ember_error_sys(err, -errno, "commit: unlink " CURRENT_TEMP);
        goto undo;
    }
    if (symlinkat(target, fn, CURRENT_TEMP) < 0) {
        r = ember_error_sys(err, -errno, "commit: symlink " CURRENT_TEMP);
        goto undo;
    }
    if (renameat(fn, CURRENT_TEMP, fn, CURRENT_LINK) < 0) {
        r = ember_error_sys(err, -errno, "commit: rename " CURRENT_LINK);
        unlinkat(fn, CURRENT_TEMP, 0);
        goto undo;
    }
    /* From here the new version is live; the fsync makes it durable. If it
     * fails the switch may or may not survive a crash: report it, since a
     * 200 must mean durable, but keep memory in line with the disk as seen. */
    r = fsync_fd(fn);
    if (r < 0)
        ember_error_sys(err, r, "commit: fsync functions/%s", name);

    store_record_ref(rec);
    struct function_record *old = reg_put(s, rec);
    store_record_unref(old);
    if (r == 0) {
        *created = cur == NULL;
        *out = rec;
        rec = NULL;
    }

    /* Keep the new version and the one it replaced; older ones go to the
     * trash, where calls still running in them can finish. */
    char what[STORE_NAME_MAX + 32];
    snprintf(what, sizeof(what), "function '%s'", name);
    remove_others(s, versions, what, version, cur ? cur->version : NULL);
    goto out;

undo:
    /* Nothing was published: take back what this commit added. */
    if (moved && functions__remove_tree(versions, version) < 0)
        log_warn("store: cannot remove functions/%s/" VERSIONS_DIR "/%s", name, version);
    if (fn_made && functions__remove_tree(s->functions_fd, name) < 0)
        log_warn("store: cannot remove functions/%s", name);
out:
    store_record_unref(rec);
    store_record_unref(cur);
    return r;
}

int store_upload_commit(struct store_upload *up, const char *name, struct function_record **out,
                        bool *created, bool *unchanged, struct ember_error *err)
{
    struct store *s = up->s;
    struct function_record *staged = NULL;
    bool created_local, unchanged_local;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    char version[STORE_VERSION_LEN + 1];
    char stage[32];
    int r;

    if (!created)
        created = &created_local;
    if (!unchanged)
        unchanged = &unchanged_local;
    *out = NULL;
    *created = *unchanged = false;

    if (!store_name_valid(name, strlen(name))) {
        r = ember_error_set(err, -EINVAL, "name: must match [a-z0-9][a-z0-9-]{0,62}");
        goto out;
    }
    if (up->error) {
        r = ember_error_set(err, up->error, "upload: an earlier write failed");
        goto out;
    }
    if (EVP_DigestFinal_ex(up->md, md, &md_len) != 1 || md_len != STORE_VERSION_LEN / 2) {
        r = ember_error_set(err, -EIO, "upload: SHA-256 failed");
        goto out;
    }
    for (unsigned i = 0; i < md_len; i++)
        snprintf(version + 2 * i, 3, "%02x", md[i]);

    /* The same bytes as the live version: answer before any work. */
    struct function_record *cur = store_function_get(s, name);
    if (cur && strcmp(cur->version, version) == 0) {
        *unchanged = true;
        *out = cur;
        r = 0;
        goto out;
    }
    store_record_unref(cur);

    if (fsync(up->fd) < 0) {
        r = ember_error_sys(err, -errno, "upload: fsync");
        goto out;
    }
    char rnd[17];
    random_hex(rnd);
    snprintf(stage, sizeof(stage), "stage-%s", rnd);
    /* The slow part (unpack, checks, fsyncs) runs outside any lock, so
     * commits of different functions overlap. */
    r = stage_prepare(up, name, version, stage, &staged, err);
    if (r < 0)
        goto out;
    /* The archive is not needed any more; drop it before publishing. */
    store_upload_abort(up);
    up = NULL;

    pthread_mutex_lock(&s->disk_lock);
    r = publish(s, name, version, stage, staged, out, created, unchanged, err);
    pthread_mutex_unlock(&s->disk_lock);
    store_record_unref(staged);
    if (r == 0)
        log_info("store: %s %s version %.12s", name,
                 *unchanged ? "kept" : (*created ? "created" : "updated to"), version);

out:
    store_upload_abort(up);
    return r;
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
    random_hex(rnd);
    snprintf(trash, sizeof(trash), "%s.%s", name, rnd);
    /* One rename takes the whole function out of the live tree. */
    if (renameat(s->functions_fd, name, s->trash_fd, trash) < 0) {
        r = ember_error_sys(err, -errno, "delete: rename functions/%s", name);
        pthread_mutex_unlock(&s->disk_lock);
        store_record_unref(cur);
        return r;
    }
    r = fsync_fd(s->functions_fd);
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
