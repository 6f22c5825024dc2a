/* functions_internal.h - helpers shared by manifest.c, package.c, store.c
 * and upload.c, and the store object that store.c and upload.c share.
 *
 * Not part of the module's interface: nothing outside functions/ (other than
 * its unit tests) includes this file. The file-system helpers all work
 * relative to a directory fd and never follow a symlink, so a package cannot
 * steer them outside the directory they were given.
 */
#ifndef EMBER_FUNCTIONS_INTERNAL_H
#define EMBER_FUNCTIONS_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "functions/store.h"

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

/* ---- the store (store.c and upload.c) ---- */

/* Names in the layout drawn at the top of store.c. */
#define STORE__RECORD_FILE "record.json"
#define STORE__CURRENT_LINK "current"
#define STORE__VERSIONS_DIR "versions"

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

/* store.c */
/** 16 random hex digits (and a NUL) for temporary names. */
void store__random_hex(char out[17]);
/** fsync(2) @fd. 0 or -errno. */
int store__fsync_fd(int fd);
/** Open directory @name in @dirfd, made with @mode if absent (*made says so). fd or -errno. */
int store__dir_open_or_make(int dirfd, const char *name, mode_t mode, bool *made);
/** @a + @b, saturating at UINT64_MAX. */
uint64_t store__add_sat(uint64_t a, uint64_t b);
/** A record of @version of @name with its paths filled in (one reference); NULL: no memory. */
struct function_record *store__record_new(const struct store *s, const char *name,
                                          const char *version);
/** Room in the registry for one more function, before a publish touches the disk. 0 or -ENOMEM. */
int store__reg_reserve(struct store *s);
/** Make @rec (reference taken) its function's current record; returns the old one to unref. */
struct function_record *store__reg_put(struct store *s, struct function_record *rec);
/** The record of @version of @name, from its directory in @versions_fd. -EINVAL if damaged. */
int store__version_load(struct store *s, int versions_fd, const char *name, const char *version,
                        struct function_record **out, struct ember_error *err);
/** Remove all but @keep1 and @keep2 from @dirfd (to trash/ when @s is given); log failures. */
void store__remove_others(struct store *s, int dirfd, const char *what, const char *keep1,
                          const char *keep2);

#endif
