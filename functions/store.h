/* store.h - the function store: durable, atomic, versioned by SHA-256.
 *
 * Threading: functions marked "blocking" do disk I/O and fsync; the gateway
 * runs them on libuv's thread pool. The registry (get/list) is read from the
 * loop thread; it is guarded by a mutex that blocking calls hold only for
 * in-memory updates, never across I/O.
 *
 * Guarantees: a deploy is visible only once its files and directory entries
 * are fsynced, and the switch is one atomic rename; after kill -9 at any
 * instant a function is at its old version or its new one. store_open removes
 * leftovers of interrupted uploads and rebuilds the registry from disk.
 */
#ifndef EMBER_FUNCTIONS_STORE_H
#define EMBER_FUNCTIONS_STORE_H

#include <stdbool.h>
#include <stdint.h>
#include <limits.h>

#include <jansson.h>

#include "common/error.h"
#include "functions/manifest.h"
#include "functions/package.h"

#define STORE_NAME_MAX 63 /* function names: [a-z0-9][a-z0-9-]{0,62} */
#define STORE_VERSION_LEN 64 /* hex SHA-256 */

struct store;
struct store_upload;

/** One deployed function version. Immutable once published; refcounted. */
struct function_record {
    char name[STORE_NAME_MAX + 1];
    char version[STORE_VERSION_LEN + 1]; /* hex SHA-256 of the package bytes */
    struct manifest manifest;
    int64_t created_ms;       /* wall clock, ms since epoch, of the deploy */
    uint64_t package_size;    /* bytes of the uploaded archive */
    uint64_t unpacked_size;   /* bytes of the files unpacked */
    char package_dir[PATH_MAX];  /* absolute host path of the unpacked root */
    char snapshot_dir[PATH_MAX]; /* absolute path where backends may keep
                                    per-version artefacts (microVM snapshots);
                                    created on demand, deleted with the version */
    int refs;                    /* store_record_ref/unref; atomic */
};

/** True if @name matches [a-z0-9][a-z0-9-]{0,62}. */
bool store_name_valid(const char *name, size_t len);

/**
 * Open (creating if needed) the store under @state_dir; remove leftovers of
 * interrupted uploads and deletes; load every function. Blocking.
 * Functions found damaged or half-made on disk are removed and logged, not
 * fatal; an I/O error while loading is (nothing is removed then). -EBUSY if
 * another store holds @state_dir (an flock on @state_dir/lock).
 */
int store_open(const char *state_dir, const struct package_limits *lim, struct store **out,
               struct ember_error *err);
/** Free the store (does not touch the disk). */
void store_close(struct store *s);

/** Start an upload: a temporary file in the state directory. Blocking (open). */
int store_upload_begin(struct store *s, struct store_upload **out, struct ember_error *err);
/**
 * Append bytes (hashes them on the way). -EFBIG once the upload is larger than
 * the package limits allow for any archive (max_unpacked_bytes plus 16 KiB of
 * headers per entry plus 1 MiB); after any failure the upload is spoiled and
 * only store_upload_abort or a failing store_upload_commit remain. Blocking (write).
 */
int store_upload_write(struct store_upload *up, const void *data, size_t len,
                       struct ember_error *err);
/**
 * Finish the upload as function @name: fsync, unpack, validate the manifest
 * and handler, fsync files and directories, publish with one atomic rename.
 * If the function's current version has the same digest, nothing changes and
 * *created = false, *unchanged = true. On success *out is a new reference to
 * the published record (store_record_unref it). Always frees @up.
 * -EINVAL with a message for a bad package or manifest. Blocking.
 * Redeploying the version before the current one switches back to it as it
 * is on disk, with its original record (created, sizes).
 */
int store_upload_commit(struct store_upload *up, const char *name,
                        struct function_record **out, bool *created, bool *unchanged,
                        struct ember_error *err);
/** Drop an upload and its temporary file. Blocking (unlink). */
void store_upload_abort(struct store_upload *up);

/**
 * Delete @name atomically: one rename moves it out of the live tree into
 * trash/, where store_trash_sweep removes it after STORE_TRASH_GRACE_MS (a
 * call still running in it finishes). -ENOENT if absent, -EINVAL if @name is
 * not a valid name. Blocking.
 */
int store_function_delete(struct store *s, const char *name, struct ember_error *err);

/** The backend a manifest without "sandbox" runs on (the daemon's
 *  --backend), so that uploads check their handler for it. Default: container. */
void store_set_default_sandbox(struct store *s, enum manifest_sandbox sandbox);

/** How long removed versions wait in trash/ before store_trash_sweep may
 *  delete them: longer than any call can run (MANIFEST_TIMEOUT_MS_MAX). */
#define STORE_TRASH_GRACE_MS (MANIFEST_TIMEOUT_MS_MAX + 60000ull)

/**
 * Remove entries of trash/ (deleted functions, versions pruned by a commit)
 * that have been there at least @min_age_ms. Returns how many were removed,
 * or -errno. Blocking; emberd runs it on the thread pool now and then.
 */
int store_trash_sweep(struct store *s, uint64_t min_age_ms);

/** New reference to the current record of @name, or NULL. Non-blocking. */
struct function_record *store_function_get(struct store *s, const char *name);

/**
 * New references to every current record, sorted by name; *out is a malloc'd
 * array the caller frees after unref'ing each. Non-blocking.
 */
int store_function_list(struct store *s, struct function_record ***out, size_t *n);

/** Take one more reference to @r. Thread-safe. */
void store_record_ref(struct function_record *r);
/** Drop a reference; the last one frees @r. NULL is ignored. Thread-safe. */
void store_record_unref(struct function_record *r);

/**
 * The record as the API shows it: a new jansson object (caller json_decref's
 * it) with name, version, runtime, handler, sandbox, memory_mb, timeout_ms,
 * concurrency, network, fresh_per_call, env_keys (sorted array of names; env
 * values are never shown), created (RFC 3339 UTC, ms precision), created_ms,
 * package_size and unpacked_size. NULL on allocation failure. Non-blocking.
 */
json_t *store_record_json(const struct function_record *r);

/** Number of functions (for metrics). */
size_t store_function_count(struct store *s);

#endif
