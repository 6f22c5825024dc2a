/* hello - the smallest useful native function.
 *
 *   GET /fn/hello?name=Ada  ->  200 "hi, Ada"
 *   GET /fn/hello           ->  200 "hi, world"
 *
 * The greeting comes from $GREETING (function.json's env), read once in
 * ember_init: work done there is done once per zygote, not once per call.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ember.h"

static char greeting[64] = "hello";

int ember_init(void)
{
    const char *g = getenv("GREETING");
    if (g && *g)
        snprintf(greeting, sizeof(greeting), "%s", g);
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The value of @key in an application/x-www-form-urlencoded @query, decoded
 * into @out (at most @cap - 1 bytes). Returns 1 if found. */
static int query_param(const char *query, const char *key, char *out, size_t cap)
{
    size_t klen = strlen(key);
    for (const char *p = query; *p;) {
        const char *end = strchr(p, '&');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > klen && strncmp(p, key, klen) == 0 && p[klen] == '=') {
            size_t n = 0;
            for (size_t i = klen + 1; i < len && n + 1 < cap; i++) {
                int hi, lo;
                if (p[i] == '+') {
                    out[n++] = ' ';
                } else if (p[i] == '%' && i + 2 < len && (hi = hexval(p[i + 1])) >= 0 &&
                           (lo = hexval(p[i + 2])) >= 0) {
                    out[n++] = (char)(hi * 16 + lo);
                    i += 2;
                } else {
                    out[n++] = p[i];
                }
            }
            out[n] = '\0';
            return 1;
        }
        p += len + (end ? 1 : 0);
    }
    return 0;
}

int ember_handle(const ember_request *req, ember_response *res)
{
    char name[128];
    if (!query_param(ember_request_query(req), "name", name, sizeof(name)) || !name[0])
        strcpy(name, "world");
    char text[256];
    int n = snprintf(text, sizeof(text), "%s, %s", greeting, name);
    ember_response_header(res, "Content-Type", "text/plain; charset=utf-8");
    return ember_response_write(res, text, (size_t)n < sizeof(text) ? (size_t)n : sizeof(text) - 1);
}
