/* package.c - unpack a function package (tar, tar.gz, zip) with libarchive.
 *
 * libarchive only parses; every file-system effect is ours, made relative to
 * the destination directory fd and never through a symlink: intermediate
 * directories are walked with openat(O_DIRECTORY | O_NOFOLLOW) and leaves are
 * created with O_EXCL | O_NOFOLLOW, mkdirat or symlinkat. Anything that could
 * reach outside the package, or surprise the sandbox that later reads it
 * (device nodes, setuid bits, hard links), is refused by name before it
 * touches the disk. Sizes are counted as data is written, never taken from
 * the archive's headers alone, so a compression bomb stops at the cap.
 */
#include "functions/package.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "functions/functions_internal.h"

/* ---- file-system helpers shared by the module (functions_internal.h) ---- */

static size_t quoted_len(unsigned char c)
{
    if (c == '\\')
        return 2;
    return (c >= 0x20 && c < 0x7f) ? 1 : 4;
}

const char *functions__quote(const char *s, char *buf, size_t size)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0, total = 0;

    if (size == 0)
        return buf;
    for (const char *p = s; *p; p++)
        total += quoted_len((unsigned char)*p);
    bool cut = total >= size;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        size_t need = quoted_len(c);
        /* When it does not all fit, keep room for "..." and the NUL. */
        if (cut && o + need + 4 > size) {
            if (o + 4 <= size) {
                memcpy(buf + o, "...", 3);
                o += 3;
            }
            break;
        }
        if (need == 1) {
            buf[o++] = (char)c;
        } else if (need == 2) {
            buf[o++] = '\\';
            buf[o++] = '\\';
        } else {
            buf[o++] = '\\';
            buf[o++] = 'x';
            buf[o++] = hex[c >> 4];
            buf[o++] = hex[c & 15];
        }
    }
    buf[o] = '\0';
    return buf;
}

int functions__write_all(int fd, const void *data, size_t len)
{
    const char *p = data;

    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The openat2-less fallback: one component at a time, never following a
 * symlink, refusing "..". Absolute paths are refused like RESOLVE_BENEATH. */
static int open_beneath_walk(int dirfd, const char *path, int flags, mode_t mode)
{
    cleanup_free char *copy = strdup(path);
    cleanup_close int cur = -1;
    char *save = NULL;

    if (!copy)
        return -ENOMEM;
    if (path[0] == '/')
        return -EXDEV;

    char *comp = strtok_r(copy, "/", &save);
    if (!comp) { /* "" or only slashes: the directory itself */
        int fd = openat(dirfd, ".", flags | O_CLOEXEC, mode);
        return fd < 0 ? -errno : fd;
    }
    for (;;) {
        char *next = strtok_r(NULL, "/", &save);
        int at = cur >= 0 ? cur : dirfd;
        if (strcmp(comp, "..") == 0)
            return -EXDEV;
        if (!next) {
            int fd = openat(at, comp, flags | O_CLOEXEC | O_NOFOLLOW, mode);
            return fd < 0 ? -errno : fd;
        }
        if (strcmp(comp, ".") != 0) {
            int fd = openat(at, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0) {
                /* O_DIRECTORY answers ENOTDIR for a symlink; say ELOOP
                 * like RESOLVE_NO_SYMLINKS does. */
                struct stat st;
                if (errno == ENOTDIR && fstatat(at, comp, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                    S_ISLNK(st.st_mode))
                    return -ELOOP;
                return -errno;
            }
            if (cur >= 0)
                close(cur);
            cur = fd;
        }
        comp = next;
    }
}

int functions__open_beneath(int dirfd, const char *path, int flags, mode_t mode)
{
    struct open_how how = {
        .flags = (uint64_t)(flags | O_CLOEXEC | O_NOFOLLOW),
        .mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
    if (fd >= 0)
        return (int)fd;
    /* ENOSYS: an old kernel; EPERM: a seccomp profile that predates openat2.
     * The walk gives the same guarantees with more syscalls. */
    if (errno != ENOSYS && errno != EPERM)
        return -errno;
    return open_beneath_walk(dirfd, path, flags, mode);
}

void functions__dir_free(struct functions__dir *d)
{
    for (size_t i = 0; i < d->n; i++)
        free(d->v[i]);
    free(d->v);
    free(d->type);
    *d = (struct functions__dir){0};
}

int functions__dir_read(int dirfd, struct functions__dir *out)
{
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    DIR *dir = fdopendir(fd);
    if (!dir) {
        int r = -errno;
        close(fd);
        return r;
    }
    *out = (struct functions__dir){0};
    int r = 0;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(dir);
        if (!de) {
            r = errno ? -errno : 0;
            break;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (out->n == out->cap) {
            size_t cap = out->cap ? out->cap * 2 : 16;
            char **v = realloc(out->v, cap * sizeof(*v));
            if (!v) {
                r = -ENOMEM;
                break;
            }
            out->v = v;
            unsigned char *t = realloc(out->type, cap);
            if (!t) {
                r = -ENOMEM;
                break;
            }
            out->type = t;
            out->cap = cap;
        }
        out->v[out->n] = strdup(de->d_name);
        if (!out->v[out->n]) {
            r = -ENOMEM;
            break;
        }
        out->type[out->n++] = de->d_type;
    }
    closedir(dir);
    if (r < 0)
        functions__dir_free(out);
    return r;
}

static bool entry_is_dir(int dirfd, const char *name, unsigned char d_type)
{
    struct stat st;

    if (d_type != DT_UNKNOWN)
        return d_type == DT_DIR;
    return fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
}

int functions__fsync_dirs(int dirfd)
{
    struct functions__dir names;
    int r = functions__dir_read(dirfd, &names);
    if (r < 0)
        return r;
    for (size_t i = 0; i < names.n && r == 0; i++) {
        if (!entry_is_dir(dirfd, names.v[i], names.type[i]))
            continue;
        int fd = openat(dirfd, names.v[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            r = -errno;
            break;
        }
        r = functions__fsync_dirs(fd);
        close(fd);
    }
    functions__dir_free(&names);
    if (r == 0 && fsync(dirfd) < 0)
        r = -errno;
    return r;
}

int functions__remove_contents(int dirfd)
{
    struct functions__dir names;
    int r = functions__dir_read(dirfd, &names);
    if (r < 0)
        return r;
    for (size_t i = 0; i < names.n; i++) {
        int q = functions__remove_tree(dirfd, names.v[i]);
        if (q < 0 && r == 0)
            r = q;
    }
    functions__dir_free(&names);
    return r;
}

int functions__remove_tree(int dirfd, const char *name)
{
    if (unlinkat(dirfd, name, 0) == 0 || errno == ENOENT)
        return 0;
    /* Linux says EISDIR for a directory; POSIX allows EPERM. */
    if (errno != EISDIR && errno != EPERM)
        return -errno;
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    int r = functions__remove_contents(fd);
    close(fd);
    if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT && r == 0)
        r = -errno;
    return r;
}

int functions__read_file(int dirfd, const char *path, size_t max, char **out, size_t *len)
{
    cleanup_close int fd = functions__open_beneath(dirfd, path, O_RDONLY, 0);
    struct stat st;

    if (fd < 0)
        return fd;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode))
        return -EINVAL;
    if ((uint64_t)st.st_size > max)
        return -EFBIG;

    /* Read to EOF rather than trusting st_size, but never past @max. */
    size_t cap = (size_t)st.st_size + 1, n = 0;
    cleanup_free char *buf = malloc(cap + 1);
    if (!buf)
        return -ENOMEM;
    for (;;) {
        if (n == cap)
            return -EFBIG;
        ssize_t m = read(fd, buf + n, cap - n);
        if (m < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (m == 0)
            break;
        n += (size_t)m;
        if (n > max)
            return -EFBIG;
    }
    buf[n] = '\0';
    *len = n;
    *out = steal_pointer(&buf);
    return 0;
}

/* ---- unpacking ---- */

#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)

void package_limits_default(struct package_limits *lim)
{
    lim->max_entries = PACKAGE_MAX_ENTRIES_DEFAULT;
    lim->max_unpacked_bytes = PACKAGE_MAX_UNPACKED_DEFAULT;
    lim->max_file_bytes = PACKAGE_MAX_FILE_DEFAULT;
}

/* The normalised paths seen so far, to refuse duplicates by name rather than
 * by whatever EEXIST a later mkdir or open happens to hit. */
struct name_set {
    char **slot;
    size_t cap, n;
};

static uint64_t name_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static int name_set_grow(struct name_set *set)
{
    size_t cap = set->cap ? set->cap * 2 : 64;
    char **slot = calloc(cap, sizeof(*slot));
    if (!slot)
        return -ENOMEM;
    for (size_t i = 0; i < set->cap; i++) {
        if (!set->slot[i])
            continue;
        size_t j = name_hash(set->slot[i]) & (cap - 1);
        while (slot[j])
            j = (j + 1) & (cap - 1);
        slot[j] = set->slot[i];
    }
    free(set->slot);
    set->slot = slot;
    set->cap = cap;
    return 0;
}

/* 0: added; 1: already there; -ENOMEM. */
static int name_set_add(struct name_set *set, const char *name)
{
    if ((set->n + 1) * 2 > set->cap) {
        int r = name_set_grow(set);
        if (r < 0)
            return r;
    }
    size_t j = name_hash(name) & (set->cap - 1);
    while (set->slot[j]) {
        if (strcmp(set->slot[j], name) == 0)
            return 1;
        j = (j + 1) & (set->cap - 1);
    }
    set->slot[j] = strdup(name);
    if (!set->slot[j])
        return -ENOMEM;
    set->n++;
    return 0;
}

static void name_set_free(struct name_set *set)
{
    for (size_t i = 0; i < set->cap; i++)
        free(set->slot[i]);
    free(set->slot);
    *set = (struct name_set){0};
}

/*
 * Normalise an archive path into @out: "./x" and "a//b" become "x" and
 * "a/b", a trailing '/' goes. Returns NULL and sets *depth (number of
 * components; 0 for the root itself), or the reason the path is refused.
 */
static const char *path_normalise(const char *in, char *out, size_t size, unsigned *depth)
{
    size_t o = 0;
    unsigned n = 0;

    if (in[0] == '\0')
        return "empty path";
    if (in[0] == '/')
        return "absolute paths are not allowed";
    for (const char *p = in; *p;) {
        const char *end = strchrnul(p, '/');
        size_t len = (size_t)(end - p);
        if (len == 2 && p[0] == '.' && p[1] == '.')
            return "'..' components are not allowed";
        if (len > 0 && !(len == 1 && p[0] == '.')) {
            if (len > NAME_MAX)
                return "a path component is longer than 255 bytes";
            if (o + (o > 0) + len + 1 > size)
                return "path too long";
            if (o > 0)
                out[o++] = '/';
            memcpy(out + o, p, len);
            o += len;
            if (++n > PACKAGE_MAX_DEPTH)
                return "nested deeper than " STRINGIFY(PACKAGE_MAX_DEPTH) " directories";
        }
        p = *end ? end + 1 : end;
    }
    out[o] = '\0';
    *depth = n;
    return NULL;
}

/*
 * Does the symlink at @link (normalised, @depth components) with @target
 * stay inside the package? Resolved lexically from the link's directory.
 * A ".." after a name is refused too: that name may itself be a symlink
 * (a chain), and lexical resolution cannot know where it leads. With ".."
 * only at the front, each link climbs real directories (our walk never
 * creates an entry through a symlink) and then descends, so any chain of
 * accepted links stays inside. Returns NULL or the reason.
 */
static const char *symlink_check(unsigned depth, const char *target)
{
    unsigned level = depth - 1; /* components of the link's directory */
    bool named = false;         /* a name component seen already */
    bool dotdot_after_name = false;

    if (target[0] == '\0')
        return "symlink with an empty target";
    if (target[0] == '/')
        return "symlink to an absolute path";
    if (strlen(target) >= PATH_MAX)
        return "symlink target too long";
    for (const char *p = target; *p;) {
        const char *end = strchrnul(p, '/');
        size_t len = (size_t)(end - p);
        if (len == 2 && p[0] == '.' && p[1] == '.') {
            if (level == 0)
                return "symlink target leaves the package";
            level--;
            if (named)
                dotdot_after_name = true;
        } else if (len > 0 && !(len == 1 && p[0] == '.')) {
            level++;
            named = true;
        }
        p = *end ? end + 1 : end;
    }
    if (dotdot_after_name)
        return "symlink target has '..' after a name, which could leave the package "
               "through another symlink";
    return NULL;
}

struct unpack {
    struct archive *a;
    int root;
    const struct package_limits *lim;
    struct package_info info;
    struct name_set seen;
    char *buf;
    char nested_manifest[PATH_MAX]; /* first "dir/function.json", for the hint */
    struct ember_error *err;
};

/* Refuse entry @path with a message naming it. */
__attribute__((format(printf, 4, 5))) static int refuse(struct unpack *u, int code,
                                                        const char *path, const char *fmt, ...)
{
    char q[FUNCTIONS__QUOTE_MAX], why[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    functions__quote(path, q, sizeof(q));
    if (code == -EINVAL)
        return ember_error_set(u->err, code, "unpack: entry '%s': %s", q, why);
    return ember_error_sys(u->err, code, "unpack: entry '%s': %s", q, why);
}

/*
 * Open the directory that holds the last component of @path (normalised,
 * non-empty), creating missing directories 0755 on the way. Never follows a
 * symlink: an existing symlink or file in the way is refused. Sets *leaf to
 * the last component inside @path. Returns the fd or a negative code.
 */
static int parent_open(struct unpack *u, const char *name, char *path, const char **leaf)
{
    cleanup_close int cur = -1;
    char *p = path;

    for (;;) {
        char *slash = strchr(p, '/');
        if (!slash)
            break;
        *slash = '\0';
        int at = cur >= 0 ? cur : u->root;
        bool made = false;
        int fd = openat(at, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT) {
            if (mkdirat(at, p, 0755) < 0 && errno != EEXIST) {
                int r = -errno;
                char q[FUNCTIONS__QUOTE_MAX];
                functions__quote(path, q, sizeof(q));
                *slash = '/';
                return refuse(u, r, name, "cannot create directory '%s'", q);
            }
            made = true;
            fd = openat(at, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        }
        if (fd < 0) {
            int r = -errno;
            char q[FUNCTIONS__QUOTE_MAX];
            functions__quote(path, q, sizeof(q));
            *slash = '/';
            if (r == -ELOOP || r == -ENOTDIR)
                return refuse(u, -EINVAL, name,
                              "'%s' on its path is not a directory (a symlink or a file)", q);
            return refuse(u, r, name, "cannot open directory '%s'", q);
        }
        /* Our mode, whatever the umask. */
        if (made && fchmod(fd, 0755) < 0) {
            int r = -errno;
            close(fd);
            *slash = '/';
            return refuse(u, r, name, "chmod");
        }
        if (cur >= 0)
            close(cur);
        cur = fd;
        *slash = '/';
        p = slash + 1;
    }
    *leaf = p;
    if (cur < 0) {
        int fd = fcntl(u->root, F_DUPFD_CLOEXEC, 0);
        if (fd < 0)
            return refuse(u, -errno, name, "dup");
        return fd;
    }
    return steal_fd(&cur);
}

static int unpack_dir(struct unpack *u, const char *name, char *path)
{
    const char *leaf;
    cleanup_close int parent = parent_open(u, name, path, &leaf);
    if (parent < 0)
        return parent;
    bool made = mkdirat(parent, leaf, 0755) == 0;
    if (!made && errno != EEXIST)
        return refuse(u, -errno, name, "mkdir");
    /* Already there: fine if a directory made for an earlier entry's path. */
    cleanup_close int fd = openat(parent, leaf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ELOOP || errno == ENOTDIR)
            return refuse(u, -EINVAL, name, "conflicts with an earlier entry of another type");
        return refuse(u, -errno, name, "open");
    }
    if (made && fchmod(fd, 0755) < 0)
        return refuse(u, -errno, name, "chmod");
    return 0;
}

static int unpack_symlink(struct unpack *u, const char *name, char *path, unsigned depth,
                          struct archive_entry *e)
{
    const char *target = archive_entry_symlink(e);
    if (!target)
        target = archive_entry_symlink_utf8(e);
    if (!target)
        return refuse(u, -EINVAL, name, "symlink target is not readable");
    const char *why = symlink_check(depth, target);
    if (why) {
        char q[FUNCTIONS__QUOTE_MAX];
        return refuse(u, -EINVAL, name, "%s ('%s')", why, functions__quote(target, q, sizeof(q)));
    }
    const char *leaf;
    cleanup_close int parent = parent_open(u, name, path, &leaf);
    if (parent < 0)
        return parent;
    if (symlinkat(target, parent, leaf) < 0) {
        if (errno == EEXIST)
            return refuse(u, -EINVAL, name, "conflicts with an earlier entry");
        return refuse(u, -errno, name, "symlink");
    }
    return 0;
}

static int unpack_file(struct unpack *u, const char *name, char *path, mode_t perm,
                       struct archive_entry *e)
{
    const struct package_limits *lim = u->lim;

    /* The header's size is only a hint for an early, clear refusal; what
     * counts is what is written, below. */
    if (archive_entry_size_is_set(e) && archive_entry_size(e) >= 0 &&
        (uint64_t)archive_entry_size(e) > lim->max_file_bytes)
        return refuse(u, -EINVAL, name, "file larger than the limit of %" PRIu64 " bytes",
                      lim->max_file_bytes);

    const char *leaf;
    cleanup_close int parent = parent_open(u, name, path, &leaf);
    if (parent < 0)
        return parent;
    /* Keep the owner's execute bit and nothing else of the archive's mode. */
    mode_t mode = (perm & S_IXUSR) ? 0755 : 0644;
    cleanup_close int fd =
        openat(parent, leaf, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (errno == EEXIST)
            return refuse(u, -EINVAL, name, "conflicts with an earlier entry");
        return refuse(u, -errno, name, "create");
    }
    if (fchmod(fd, mode) < 0)
        return refuse(u, -errno, name, "chmod");

    uint64_t size = 0;
    for (;;) {
        la_ssize_t n = archive_read_data(u->a, u->buf, FUNCTIONS__IO_BUFFER);
        if (n < 0) {
            char q[FUNCTIONS__QUOTE_MAX];
            return refuse(u, -EINVAL, name, "cannot read its data: %s",
                          functions__quote(archive_error_string(u->a) ?: "?", q, sizeof(q)));
        }
        if (n == 0)
            break;
        /* Check before writing, so the disk never holds more than the caps. */
        if (size + (uint64_t)n > lim->max_file_bytes)
            return refuse(u, -EINVAL, name, "file larger than the limit of %" PRIu64 " bytes",
                          lim->max_file_bytes);
        if (u->info.unpacked_bytes + (uint64_t)n > lim->max_unpacked_bytes)
            return refuse(u, -EINVAL, name,
                          "the package unpacks to more than the limit of %" PRIu64 " bytes",
                          lim->max_unpacked_bytes);
        int r = functions__write_all(fd, u->buf, (size_t)n);
        if (r < 0)
            return refuse(u, r, name, "write");
        size += (uint64_t)n;
        u->info.unpacked_bytes += (uint64_t)n;
    }
    if (fsync(fd) < 0)
        return refuse(u, -errno, name, "fsync");
    if (close(steal_fd(&fd)) < 0)
        return refuse(u, -errno, name, "close");
    return 0;
}

static int unpack_entry(struct unpack *u, struct archive_entry *e)
{
    const char *name = archive_entry_pathname(e);
    if (!name)
        name = archive_entry_pathname_utf8(e);
    if (!name)
        return ember_error_set(u->err, -EINVAL,
                               "unpack: entry #%" PRIu64 ": its path name is not readable",
                               u->info.entries + 1);

    if (++u->info.entries > u->lim->max_entries)
        return refuse(u, -EINVAL, name,
                      "the package has more than the limit of %" PRIu64 " entries",
                      u->lim->max_entries);

    char path[PATH_MAX];
    unsigned depth;
    const char *why = path_normalise(name, path, sizeof(path), &depth);
    if (why)
        return refuse(u, -EINVAL, name, "%s", why);

    /* Hard links first: in tar they also look like regular files. */
    const char *hardlink = archive_entry_hardlink(e);
    if (!hardlink)
        hardlink = archive_entry_hardlink_utf8(e);
    if (hardlink)
        return refuse(u, -EINVAL, name, "hard links are not allowed");

    mode_t type = archive_entry_filetype(e);
    switch (type) {
    case AE_IFREG:
    case AE_IFDIR:
    case AE_IFLNK:
        break;
    case AE_IFCHR:
    case AE_IFBLK:
        return refuse(u, -EINVAL, name, "device nodes are not allowed");
    case AE_IFIFO:
        return refuse(u, -EINVAL, name, "FIFOs are not allowed");
    case AE_IFSOCK:
        return refuse(u, -EINVAL, name, "sockets are not allowed");
    default:
        return refuse(u, -EINVAL, name, "unsupported entry type 0%o", (unsigned)type);
    }

    mode_t perm = archive_entry_perm(e);
    if (type != AE_IFLNK && (perm & (S_ISUID | S_ISGID | S_ISVTX)))
        return refuse(u, -EINVAL, name,
                      "setuid, setgid and sticky bits are not allowed (mode %04o)", (unsigned)perm);

    if (depth == 0) {
        /* "." or "./": the package root itself, which exists already. */
        if (type != AE_IFDIR)
            return refuse(u, -EINVAL, name, "the package root must be a directory");
        return 0;
    }

    int r = name_set_add(&u->seen, path);
    if (r < 0)
        return refuse(u, r, name, "out of memory");
    if (r > 0)
        return refuse(u, -EINVAL, name, "duplicate entry");

    if (depth > 1 && !u->nested_manifest[0]) {
        const char *base = strrchr(path, '/') + 1;
        if (strcmp(base, "function.json") == 0)
            snprintf(u->nested_manifest, sizeof(u->nested_manifest), "%s", path);
    }

    switch (type) {
    case AE_IFDIR:
        return unpack_dir(u, name, path);
    case AE_IFLNK:
        return unpack_symlink(u, name, path, depth, e);
    default:
        return unpack_file(u, name, path, perm, e);
    }
}

/* package_unpack without the cleanup, so a test can look at what a refused
 * archive left behind (a bomb must stop at the cap). */
static int unpack_archive(const char *archive_path, int dest_dirfd,
                          const struct package_limits *lim, struct package_info *info,
                          struct ember_error *err)
{
    struct package_limits def;
    struct unpack u = {.root = dest_dirfd, .err = err};
    char last[FUNCTIONS__QUOTE_MAX] = "";
    int r = 0;

    if (!lim) {
        package_limits_default(&def);
        lim = &def;
    }
    u.lim = lim;
    u.buf = malloc(FUNCTIONS__IO_BUFFER);
    u.a = archive_read_new();
    if (!u.buf || !u.a) {
        r = ember_error_set(err, -ENOMEM, "unpack: out of memory");
        goto out;
    }
    /* Exactly what DESIGN.md promises: tar (all its dialects), gzip, zip. */
    if (archive_read_support_format_tar(u.a) != ARCHIVE_OK ||
        archive_read_support_format_zip(u.a) != ARCHIVE_OK ||
        archive_read_support_filter_gzip(u.a) != ARCHIVE_OK) {
        r = ember_error_set(err, -ENOTSUP, "unpack: libarchive: %s", archive_error_string(u.a));
        goto out;
    }
    if (archive_read_open_filename(u.a, archive_path, FUNCTIONS__IO_BUFFER) != ARCHIVE_OK) {
        char q[FUNCTIONS__QUOTE_MAX];
        int e = archive_errno(u.a);
        functions__quote(archive_error_string(u.a) ?: "?", q, sizeof(q));
        if (e == ENOENT || e == EACCES || e == EIO || e == EMFILE || e == ENOMEM)
            r = ember_error_set(err, -e, "unpack: cannot open the package: %s", q);
        else
            r = ember_error_set(err, -EINVAL, "unpack: not a tar, tar.gz or zip archive: %s", q);
        goto out;
    }

    for (;;) {
        struct archive_entry *e;
        int ar = archive_read_next_header(u.a, &e);
        if (ar == ARCHIVE_EOF)
            break;
        /* ARCHIVE_WARN: e.g. a name not convertible to the locale; the
         * entry is still complete and its path is checked like any other. */
        if (ar != ARCHIVE_OK && ar != ARCHIVE_WARN) {
            char q[FUNCTIONS__QUOTE_MAX];
            functions__quote(archive_error_string(u.a) ?: "?", q, sizeof(q));
            if (u.info.entries == 0)
                r = ember_error_set(err, -EINVAL, "unpack: not a tar, tar.gz or zip archive: %s",
                                    q);
            else
                r = ember_error_set(err, -EINVAL,
                                    "unpack: the archive is damaged after entry '%s': %s", last, q);
            goto out;
        }
        r = unpack_entry(&u, e);
        if (r < 0)
            goto out;
        functions__quote(archive_entry_pathname(e) ?: "?", last, sizeof(last));
    }

    struct stat st;
    if (fstatat(dest_dirfd, "function.json", &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno != ENOENT) {
            r = ember_error_sys(err, -errno, "unpack: function.json");
        } else if (u.nested_manifest[0]) {
            char q[FUNCTIONS__QUOTE_MAX];
            r = ember_error_set(err, -EINVAL,
                                "unpack: entry 'function.json': missing at the package root "
                                "(found '%s': pack the files, not their folder)",
                                functions__quote(u.nested_manifest, q, sizeof(q)));
        } else {
            r = ember_error_set(err, -EINVAL,
                                "unpack: entry 'function.json': missing at the package root");
        }
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        r = ember_error_set(err, -EINVAL, "unpack: entry 'function.json': must be a regular file");
        goto out;
    }
    if (info)
        *info = u.info;

out:
    if (u.a)
        archive_read_free(u.a);
    name_set_free(&u.seen);
    free(u.buf);
    return r;
}

int package_unpack(const char *archive_path, int dest_dirfd, const struct package_limits *lim,
                   struct package_info *info, struct ember_error *err)
{
    int r = unpack_archive(archive_path, dest_dirfd, lim, info, err);
    if (r < 0) {
        /* @dest_dirfd was empty: leave it so. */
        int q = functions__remove_contents(dest_dirfd);
        if (q < 0 && err && err->code == r) {
            size_t n = strlen(err->msg);
            snprintf(err->msg + n, sizeof(err->msg) - n, " (and cleaning up failed: %s)",
                     strerror(-q));
        }
    }
    return r;
}
