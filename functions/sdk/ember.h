/* ember.h - the native function ABI (DESIGN.md "Native ABI").
 *
 * A native function is an ELF shared object that exports ember_handle and,
 * optionally, ember_init. The sandbox's agent loads it once per zygote
 * (dlopen RTLD_NOW|RTLD_LOCAL), calls ember_init there, and forks instances
 * that call ember_handle once per invocation. The accessors below are
 * provided by the process that loads the function (ember-agent, or the
 * microVM guest runtime); a function links against nothing of ours.
 *
 * The request and response types are opaque so that the ABI can grow without
 * breaking built functions. Everything a request accessor returns is owned
 * by the request and valid until ember_handle returns; copy what must live
 * longer.
 *
 * Threading: with "concurrency" above 1 in function.json, ember_handle runs
 * on several threads at once, each with its own request and response.
 * ember_init runs in the zygote before any instance is forked: threads it
 * starts do not exist in instances (fork copies only the calling thread).
 *
 * Output: what the function writes to stdout and stderr becomes its log
 * (GET /v1/functions/{name}/logs), one entry per line, bounded per call.
 *
 * Building (without CMake):
 *     cc -std=c11 -O2 -fPIC -shared -fvisibility=hidden \
 *        -I<ember>/functions/sdk -o hello.so hello.c
 * With CMake, include functions/sdk/ember.cmake and use ember_add_function().
 */
#ifndef EMBER_H
#define EMBER_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Version of this ABI. Incremented on incompatible changes only. */
#define EMBER_ABI_VERSION 1

/** Mark the entry points a function exports (visible even when the object is
 *  built with -fvisibility=hidden). */
#define EMBER_EXPORT __attribute__((visibility("default")))

/** One invocation's request; owned by the runtime, read-only to the function. */
typedef struct ember_request ember_request;
/** One invocation's response under construction; owned by the runtime. */
typedef struct ember_response ember_response;

/** The HTTP method ("GET", "POST", ...). Never NULL. */
const char *ember_request_method(const ember_request *req);

/** The path after /fn/{name}: "/" or "/a/b". For
 *  POST /v1/functions/{name}/invoke it is "/". Never NULL. */
const char *ember_request_path(const ember_request *req);

/** The query string without '?', still percent-encoded; "" if none. */
const char *ember_request_query(const ember_request *req);

/** The value of request header @name, compared case-insensitively; the first
 *  one if the header repeats. NULL if absent. */
const char *ember_request_header(const ember_request *req, const char *name);

/** The request body and its length in *len (@len may be NULL). The bytes are
 *  not NUL-terminated; an empty body gives a non-NULL pointer and 0. */
const void *ember_request_body(const ember_request *req, size_t *len);

/** Set the HTTP status (100-599); the default is 200. A value outside that
 *  range fails the call with 502 once ember_handle returns. */
void ember_response_status(ember_response *res, int code);

/** Add a response header (both strings are copied). Returns 0, or -1 if the
 *  name is not an HTTP token, the value holds CR, LF or NUL, or too many
 *  headers were set. Hop-by-hop headers (Connection, Transfer-Encoding, ...)
 *  and Content-Length are accepted and dropped: the gateway frames the
 *  response itself. */
int ember_response_header(ember_response *res, const char *name, const char *value);

/** Append @len bytes of @data to the response body. Returns 0, or -1 when the
 *  body would exceed the runtime's limit (6 MiB); the call then fails with 502
 *  whatever ember_handle returns. */
int ember_response_write(ember_response *res, const void *data, size_t len);

/* ---- exported by the function ---- */

/** Optional. Called once per zygote (or before a microVM snapshot), before
 *  any call: open files, build tables. Returning nonzero fails the load, and
 *  the call that needed it gets 502. */
EMBER_EXPORT int ember_init(void);

/** Required. Handle one invocation: read @req, fill @res. Returns 0 on
 *  success; nonzero turns the call into a 502 whatever @res holds. */
EMBER_EXPORT int ember_handle(const ember_request *req, ember_response *res);

#ifdef __cplusplus
}
#endif

#endif
