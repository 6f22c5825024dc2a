/* t_sleep - sleeps ?ms=N milliseconds (default 100), then answers
 * "slept N" -- or, with &crash, dies of SIGSEGV. For timeouts, queueing,
 * concurrency and calls that wait behind a dying one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ember.h"

int ember_handle(const ember_request *req, ember_response *res)
{
    const char *q = ember_request_query(req);
    const char *p = strstr(q, "ms=");
    long ms = p && (p == q || p[-1] == '&') ? strtol(p + 3, NULL, 10) : 100;
    if (ms < 0)
        ms = 0;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
    if (strstr(q, "crash"))
        *(volatile int *)NULL = 1;
    char text[64];
    int n = snprintf(text, sizeof(text), "slept %ld", ms);
    ember_response_header(res, "Content-Type", "text/plain");
    return ember_response_write(res, text, (size_t)n);
}
