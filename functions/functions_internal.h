/* functions_internal.h - helpers shared by manifest.c, package.c and store.c.
 *
 * Not part of the module's interface: nothing outside functions/ (other than
 * its unit tests) includes this file. The file-system helpers all work
 * relative to a directory fd and never follow a symlink, so a package cannot
 * steer them outside the directory they were given.
 */
#ifndef EMBER_FUNCTIONS_INTERNAL_H
#define EMBER_FUNCTIONS_INTERNAL_H

#include <stddef.h>
#include <sys/types.h>

/** Bytes read from an archive per step while unpacking (also the test's slack). */
#define FUNCTIONS__IO_BUFFER (64 * 1024)

/**
 * Open @path below @dirfd without following any symlink and without leaving
 * @dirfd: openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), or, on kernels
 * without openat2, a component walk with O_NOFOLLOW that refuses "..".
 * @flags are openat flags (O_CLOEXEC and O_NOFOLLOW are added). Returns the fd
 * or -errno (-ELOOP or -EXDEV for a symlink or an escape on the way).
 */
int functions__open_beneath(int dirfd, const char *path, int flags, mode_t mode);

/**
 * The entries of a directory (without "." and ".."), read completely before
 * any is acted on so that removals do not race the directory stream.
 * v[i] is a name, type[i] its d_type (DT_UNKNOWN on some file systems).
 */
struct functions__dir {
    char **v;
    unsigned char *type;
    size_t n, cap;
};

/** Read the entries of the directory @dirfd into @out. 0 or -errno. */
int functions__dir_read(int dirfd, struct functions__dir *out);

/** Free what functions__dir_read filled in; safe on a zeroed struct. */
void functions__dir_free(struct functions__dir *d);

/** fsync @dirfd and every directory below it (files are not touched). 0 or -errno. */
int functions__fsync_dirs(int dirfd);

/**
 * Remove @name (a file, symlink or directory tree) in @dirfd, never following
 * a symlink. 0 (also when @name does not exist) or -errno.
 */
int functions__remove_tree(int dirfd, const char *name);

/** Remove everything inside the directory @dirfd, which stays. 0 or -errno. */
int functions__remove_contents(int dirfd);

/** write(2) all of @len bytes, retrying on EINTR and short writes. 0 or -errno. */
int functions__write_all(int fd, const void *data, size_t len);

/**
 * Read the regular file @path below @dirfd (via functions__open_beneath) into
 * a malloc'd, NUL-terminated buffer. -EFBIG if it is larger than @max bytes,
 * -EINVAL if it is not a regular file.
 */
int functions__read_file(int dirfd, const char *path, size_t max, char **out, size_t *len);

/**
 * Quote untrusted text for an error message: printable ASCII is kept,
 * anything else becomes \xHH, and long text is cut with "...". Returns @buf.
 */
const char *functions__quote(const char *s, char *buf, size_t size);

/** Size of a buffer for functions__quote that keeps messages readable. */
#define FUNCTIONS__QUOTE_MAX 160

#endif
