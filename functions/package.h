/* package.h - safe unpacking of a function package (tar, tar.gz, zip). */
#ifndef EMBER_FUNCTIONS_PACKAGE_H
#define EMBER_FUNCTIONS_PACKAGE_H

#include <stdint.h>

#include "common/error.h"

#define PACKAGE_MAX_ENTRIES_DEFAULT 10000
#define PACKAGE_MAX_UNPACKED_DEFAULT (256ull << 20)   /* all files together */
#define PACKAGE_MAX_FILE_DEFAULT (256ull << 20)       /* one file */

struct package_limits {
    uint64_t max_entries;
    uint64_t max_unpacked_bytes;
    uint64_t max_file_bytes;
};

/** Fills @lim with the defaults above. */
void package_limits_default(struct package_limits *lim);

struct package_info {
    uint64_t entries;
    uint64_t unpacked_bytes;
};

/**
 * Unpack the archive at @archive_path into the empty directory @dest_dirfd.
 * Blocking: call it from the thread pool. Refuses, with -EINVAL and a message
 * naming the entry: absolute paths, ".." components, symlinks that resolve
 * outside the package, hard links, device nodes, FIFOs, sockets,
 * setuid/setgid bits, more than max_entries entries, more than
 * max_unpacked_bytes in all (counted while writing, so a bomb stops at the
 * cap), one file over max_file_bytes, a package without function.json.
 * Written files are fsynced; the caller fsyncs directories (see store.c).
 * On failure the caller removes @dest_dirfd's contents.
 */
int package_unpack(const char *archive_path, int dest_dirfd, const struct package_limits *lim,
                   struct package_info *info, struct ember_error *err);

#endif
