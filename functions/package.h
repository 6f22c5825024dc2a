/* package.h - safe unpacking of a function package (tar, tar.gz, zip). */
#ifndef EMBER_FUNCTIONS_PACKAGE_H
#define EMBER_FUNCTIONS_PACKAGE_H

#include <stdint.h>

#include "common/error.h"

#define PACKAGE_MAX_ENTRIES_DEFAULT 10000
#define PACKAGE_MAX_UNPACKED_DEFAULT (256ull << 20)   /* all files together */
#define PACKAGE_MAX_FILE_DEFAULT (256ull << 20)       /* one file */
#define PACKAGE_MAX_DEPTH 64 /* directories an entry may be nested in (fixed) */

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
 * Written files are fsynced; the caller fsyncs directories (see upload.c).
 * On failure the caller removes @dest_dirfd's contents.
 *
 * Also refused: sticky bits, duplicate entries (after "./x" -> "x"
 * normalisation), entries nested deeper than PACKAGE_MAX_DEPTH, any entry
 * whose path goes through a symlink or a file, and symlink targets with ".."
 * after a name ("a/../.."), since "a" may itself be a symlink and lexical
 * resolution cannot tell where such a chain ends. File modes become 0755 if
 * the owner could execute, else 0644; directories 0755. @lim NULL means the
 * defaults; @info (may be NULL) is filled on success. On failure this
 * function empties @dest_dirfd itself as well, so the caller's removal finds
 * nothing left.
 */
int package_unpack(const char *archive_path, int dest_dirfd, const struct package_limits *lim,
                   struct package_info *info, struct ember_error *err);

#endif
