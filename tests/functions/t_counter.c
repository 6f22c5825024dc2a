/* t_counter - "1", "2", ...: how many calls this instance has served, so a
 * test can tell a warm instance (the count grows) from a fresh one (always
 * "1"). */
#include <stdatomic.h>
#include <stdio.h>

#include "ember.h"

static atomic_uint calls;

int ember_handle(const ember_request *req, ember_response *res)
{
    char text[32];
    int n = snprintf(text, sizeof(text), "%u", atomic_fetch_add(&calls, 1) + 1);
    ember_response_header(res, "Content-Type", "text/plain");
    return ember_response_write(res, text, (size_t)n);
}
