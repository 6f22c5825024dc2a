/* manifest.h - function.json, the package's manifest (DESIGN.md "Package").
 *
 * Public interface of the functions/ module, together with package.h and
 * store.h.
 */
#ifndef EMBER_FUNCTIONS_MANIFEST_H
#define EMBER_FUNCTIONS_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

enum manifest_runtime {
    MANIFEST_RUNTIME_NATIVE, /* ELF .so exporting ember_handle (functions/sdk/ember.h) */
    MANIFEST_RUNTIME_EXEC,   /* any executable, CGI/1.1 per call */
};

enum manifest_sandbox {
    MANIFEST_SANDBOX_DEFAULT,   /* not given: the daemon's --backend */
    MANIFEST_SANDBOX_CONTAINER,
    MANIFEST_SANDBOX_MICROVM,
};

enum manifest_network {
    MANIFEST_NETWORK_NONE, /* loopback only (default) */
    MANIFEST_NETWORK_HOST,
};

/* Limits of the fields; each has a name so that docs, errors and tests agree. */
#define MANIFEST_HANDLER_MAX 255          /* bytes of "handler" */
#define MANIFEST_MEMORY_MB_DEFAULT 128
#define MANIFEST_MEMORY_MB_MIN 16
#define MANIFEST_MEMORY_MB_MAX 16384
#define MANIFEST_TIMEOUT_MS_DEFAULT 5000
#define MANIFEST_TIMEOUT_MS_MIN 1
#define MANIFEST_TIMEOUT_MS_MAX 900000
#define MANIFEST_CONCURRENCY_DEFAULT 1
#define MANIFEST_CONCURRENCY_MAX 1000
#define MANIFEST_ENV_MAX 64               /* number of env entries */
#define MANIFEST_ENV_KEY_MAX 128
#define MANIFEST_ENV_VALUE_MAX 4096
#define MANIFEST_FILE_MAX (64 * 1024)     /* bytes of function.json */

/*
 * The mark of a microVM guest image built by the ember SDK: an ELF note in a
 * section named EMBER_GUEST_NOTE_SECTION, with owner (n_name)
 * EMBER_GUEST_NOTE_OWNER and type EMBER_GUEST_NOTE_TYPE ("EMBR"). The SDK
 * emits it; manifest_check_handler requires it for "sandbox": "microvm" (in
 * that section, or in a PT_NOTE segment if the section headers were stripped).
 */
#define EMBER_GUEST_NOTE_SECTION ".note.ember"
#define EMBER_GUEST_NOTE_OWNER "ember"
#define EMBER_GUEST_NOTE_TYPE 0x454d4252u

struct manifest_env {
    char *key;   /* [A-Za-z_][A-Za-z0-9_]*, not starting with EMBER_ */
    char *value;
};

/** A validated manifest with every default filled in. */
struct manifest {
    enum manifest_runtime runtime;
    char handler[MANIFEST_HANDLER_MAX + 1]; /* relative path inside the package */
    uint32_t memory_mb;
    uint32_t timeout_ms;
    uint32_t concurrency;
    enum manifest_network network;
    enum manifest_sandbox sandbox;
    bool fresh_per_call;
    size_t n_env;
    struct manifest_env *env; /* owned; sorted by key */
};

/**
 * Parse and validate function.json text. Unknown fields and bad values fail
 * with -EINVAL and a message naming the field ("memory_mb: must be an integer
 * between 16 and 16384"). On success @out owns heap memory: manifest_free().
 */
int manifest_parse(const char *json, size_t len, struct manifest *out, struct ember_error *err);

/**
 * Check the handler against the unpacked package rooted at @pkg_dirfd: it
 * exists, is a regular file inside the package (no symlink out), and fits its
 * runtime (native: an ELF shared object; exec: executable bit; microvm: an
 * ELF64 x86-64 static executable built with the ember SDK). -EINVAL + message.
 */
int manifest_check_handler(const struct manifest *m, int pkg_dirfd, struct ember_error *err);

/** Release what manifest_parse allocated; safe on a zeroed struct. */
void manifest_free(struct manifest *m);

/** Deep copy (for records that outlive the parse). */
int manifest_copy(struct manifest *dst, const struct manifest *src);

const char *manifest_runtime_name(enum manifest_runtime r);
const char *manifest_sandbox_name(enum manifest_sandbox s);
const char *manifest_network_name(enum manifest_network n);

#endif
