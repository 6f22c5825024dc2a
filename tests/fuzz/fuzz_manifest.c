/* fuzz_manifest.c - libFuzzer driver: arbitrary bytes as function.json.
 *
 * manifest_parse must refuse or accept without crashing, leaking or reading
 * out of bounds; what it accepts must satisfy the manifest's invariants, and
 * survive a deep copy. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "functions/manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct manifest m, copy;
    struct ember_error err = {0};

    if (manifest_parse((const char *)data, size, &m, &err) < 0) {
        /* Every refusal explains itself. */
        if (err.msg[0] == '\0' || err.code >= 0)
            abort();
        return 0;
    }
    if (m.handler[0] == '\0' || m.handler[0] == '/')
        abort();
    /* No component may be "." or "..": "..." is just a name. */
    for (const char *c = m.handler; *c;) {
        size_t n = strcspn(c, "/");
        if ((n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
            abort();
        c += n;
        if (*c == '/')
            c++;
    }
    if (m.memory_mb < MANIFEST_MEMORY_MB_MIN || m.memory_mb > MANIFEST_MEMORY_MB_MAX ||
        m.timeout_ms < MANIFEST_TIMEOUT_MS_MIN || m.timeout_ms > MANIFEST_TIMEOUT_MS_MAX ||
        m.concurrency < 1 || m.concurrency > MANIFEST_CONCURRENCY_MAX || m.n_env > MANIFEST_ENV_MAX)
        abort();
    for (size_t i = 0; i < m.n_env; i++) {
        if (strncmp(m.env[i].key, "EMBER_", 6) == 0 ||
            strlen(m.env[i].value) > MANIFEST_ENV_VALUE_MAX)
            abort();
        if (i > 0 && strcmp(m.env[i - 1].key, m.env[i].key) >= 0)
            abort();
    }
    if (manifest_copy(&copy, &m) == 0)
        manifest_free(&copy);
    manifest_free(&m);
    return 0;
}
