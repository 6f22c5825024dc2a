/* upload.c - a deploy, from the first byte received to the new version live:
 * the upload streamed into tmp/ and hashed as it comes, unpacked and checked
 * in a stage directory, fsynced, moved into versions/ and published with one
 * rename of "current" (the layout and the crash story are at the top of
 * store.c). */
#include "functions/functions_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"

#define CURRENT_TEMP "current.new" /* the next "current" while it is switched */

struct store_upload {
    struct store *s;
    int fd;
    char file[32]; /* name in tmp/ */
    EVP_MD_CTX *md;
    uint64_t size;
    int error; /* a failed write spoils the upload for good */
};

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
        store__random_hex(rnd);
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
    if (store__add_sat(up->size, len) > up->s->upload_max) {
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
        return ember_error_set(err, -ENOMEM, STORE__RECORD_FILE ": cannot build");
    cleanup_free char *text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (!text)
        return ember_error_set(err, -ENOMEM, STORE__RECORD_FILE ": cannot build");
    cleanup_close int fd =
        openat(vfd, STORE__RECORD_FILE, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return ember_error_sys(err, -errno, "commit: create " STORE__RECORD_FILE);
    size_t len = strlen(text);
    text[len] = '\n'; /* json_dumps leaves no newline; overwrite the NUL */
    int r = functions__write_all(fd, text, len + 1);
    if (r == 0 && fsync(fd) < 0)
        r = -errno;
    if (r < 0)
        return ember_error_sys(err, r, "commit: write " STORE__RECORD_FILE);
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
    pkg = store__dir_open_or_make(sfd, "pkg", 0755, &made);
    if (pkg < 0 || fchmod(pkg, 0755) < 0) {
        r = ember_error_sys(err, pkg < 0 ? pkg : -errno, "commit: mkdir pkg");
        goto fail;
    }

    snprintf(path, sizeof(path), "%s/tmp/%s", s->dir, up->file);
    r = package_unpack(path, pkg, &s->lim, &info, err);
    if (r < 0)
        goto fail;

    rec = store__record_new(s, name, version);
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
    r = store__reg_reserve(s);
    if (r < 0) {
        ember_error_set(err, r, "commit: out of memory");
        goto out;
    }

    fn = store__dir_open_or_make(s->functions_fd, name, 0711, &fn_made);
    if (fn < 0) {
        r = ember_error_sys(err, fn, "commit: functions/%s", name);
        goto out;
    }
    if (fn_made && (r = store__fsync_fd(s->functions_fd)) < 0) {
        ember_error_sys(err, r, "commit: fsync functions/");
        goto undo;
    }
    versions = store__dir_open_or_make(fn, STORE__VERSIONS_DIR, 0711, &made);
    if (versions < 0) {
        r = ember_error_sys(err, versions, "commit: functions/%s/" STORE__VERSIONS_DIR, name);
        goto undo;
    }
    if (made && (r = store__fsync_fd(fn)) < 0) {
        ember_error_sys(err, r, "commit: fsync functions/%s", name);
        goto undo;
    }

    r = renameat2(s->tmp_fd, stage, versions, version, RENAME_NOREPLACE) < 0 ? -errno : 0;
    if (r == -EEXIST) {
        /* The previous version, redeployed: it is complete (it was published
         * once) and may be in use, so it is kept as it is, with its record. */
        struct ember_error lerr = {0};
        r = store__version_load(s, versions, name, version, &rec, &lerr);
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
        ember_error_sys(err, r, "commit: rename into " STORE__VERSIONS_DIR);
        goto undo;
    }
    if (moved) {
        rec = staged;
        store_record_ref(rec);
    }
    if ((r = store__fsync_fd(versions)) < 0) {
        ember_error_sys(err, r, "commit: fsync " STORE__VERSIONS_DIR);
        goto undo;
    }

    /* The publish: one rename of a fresh symlink over "current". */
    char target[sizeof(STORE__VERSIONS_DIR) + STORE_VERSION_LEN + 1];
    snprintf(target, sizeof(target), STORE__VERSIONS_DIR "/%s", version);
    if (unlinkat(fn, CURRENT_TEMP, 0) < 0 && errno != ENOENT) {
        r = ember_error_sys(err, -errno, "commit: unlink " CURRENT_TEMP);
        goto undo;
    }
    if (symlinkat(target, fn, CURRENT_TEMP) < 0) {
        r = ember_error_sys(err, -errno, "commit: symlink " CURRENT_TEMP);
        goto undo;
    }
    if (renameat(fn, CURRENT_TEMP, fn, STORE__CURRENT_LINK) < 0) {
        r = ember_error_sys(err, -errno, "commit: rename " STORE__CURRENT_LINK);
        unlinkat(fn, CURRENT_TEMP, 0);
        goto undo;
    }
    /* From here the new version is live; the fsync makes it durable. If it
     * fails the switch may or may not survive a crash: report it, since a
     * 200 must mean durable, but keep memory in line with the disk as seen. */
    r = store__fsync_fd(fn);
    if (r < 0)
        ember_error_sys(err, r, "commit: fsync functions/%s", name);

    store_record_ref(rec);
    struct function_record *old = store__reg_put(s, rec);
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
    store__remove_others(s, versions, what, version, cur ? cur->version : NULL);
    goto out;

undo:
    /* Nothing was published: take back what this commit added. */
    if (moved && functions__remove_tree(versions, version) < 0)
        log_warn("store: cannot remove functions/%s/" STORE__VERSIONS_DIR "/%s", name, version);
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
    store__random_hex(rnd);
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
