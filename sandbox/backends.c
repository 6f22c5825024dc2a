/* backends.c - sandbox_backend_open: pick the ops table of a kind.
 *
 * Kept apart from sandbox.c so that a program (or a unit test with a fake
 * backend) that only uses the core does not link every backend.
 */
#include <errno.h>

#include "sandbox/sandbox_internal.h"

/* The microVM backend comes from sandbox/microvm/backend.c, which may not be
 * built yet. A weak reference is NULL when nothing defines the symbol. But
 * a weak reference alone never pulls a member out of a static library, so
 * when the source is there (the sandbox library's glob then compiles it)
 * the reference is made strong. EMBER_HAVE_MICROVM lets the build say so
 * explicitly, which also recompiles this file when the source appears. */
#if defined(EMBER_HAVE_MICROVM) || __has_include("microvm/backend.c")
extern const struct sandbox_ops sandbox_microvm_ops;
#define MICROVM_OPS (&sandbox_microvm_ops)
#else
extern const struct sandbox_ops sandbox_microvm_ops __attribute__((weak));
#define MICROVM_OPS (&sandbox_microvm_ops) /* NULL unless something defines it */
#endif

int sandbox_backend_open(enum sandbox_kind kind, uv_loop_t *loop, const struct sandbox_config *cfg,
                         struct sandbox_backend **out, struct ember_error *err)
{
    *out = NULL;
    switch (kind) {
    case SANDBOX_CONTAINER:
        return sandbox__backend_open(&sandbox_container_ops, kind, loop, cfg, out, err);
    case SANDBOX_MICROVM: {
        const struct sandbox_ops *ops = MICROVM_OPS;
        if (!ops)
            return ember_error_set(err, -ENOTSUP, "microvm backend not built");
        return sandbox__backend_open(ops, kind, loop, cfg, out, err);
    }
    }
    return ember_error_set(err, -EINVAL, "unknown sandbox kind %d", (int)kind);
}
