/* t_oom - allocates and touches memory 1 MiB at a time until something
 * stops it: the cgroup's OOM killer (expect 502 "out of memory"). Should
 * malloc ever fail instead (an address-space limit), it answers 507 with how
 * far it got. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ember.h"

int ember_handle(const ember_request *req, ember_response *res)
{
    for (unsigned long mib = 0;; mib++) {
        char *p = malloc(1 << 20);
        if (!p) {
            char text[64];
            int n = snprintf(text, sizeof(text), "malloc failed after %lu MiB", mib);
            ember_response_status(res, 507);
            return ember_response_write(res, text, (size_t)n);
        }
        memset(p, 0xa5, 1 << 20); /* touched: really resident */
    }
}
