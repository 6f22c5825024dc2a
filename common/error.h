/* error.h - an error that says what failed, for failures a bare errno cannot
 * explain (a mount in a user namespace, a KVM ioctl, a bad manifest field).
 * crun's libcrun_error_t is the model. */
#ifndef EMBER_COMMON_ERROR_H
#define EMBER_COMMON_ERROR_H

#include <stddef.h>

/** An error: a negative errno-style code and a human message. Zeroed = none. */
struct ember_error {
    int code;        /* -errno, or -EINVAL for validation failures */
    char msg[512];   /* "unpack: entry '../x': path escapes the package" */
};

/**
 * Fill @err (may be NULL) with @code and a printf-style message.
 * Returns @code so callers can `return ember_error_set(err, -EINVAL, ...)`.
 */
int ember_error_set(struct ember_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/** Like ember_error_set, appending ": strerror(-code)". */
int ember_error_sys(struct ember_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
