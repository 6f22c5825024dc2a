/* t_forkbomb - forks until the pids limit says no, then answers
 * "forked N: <strerror>" (N children, each sleeping 30 s before it exits).
 * It stops at 100000 in case nothing limits it. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ember.h"

int ember_handle(const ember_request *req, ember_response *res)
{
    unsigned long n = 0;
    int err = 0;
    while (n < 100000) {
        pid_t pid = fork();
        if (pid == 0) {
            /* Don't keep the instance's channel or log pipes alive. */
            close_range(0, ~0u, 0);
            sleep(30);
            _exit(0);
        }
        if (pid < 0) {
            err = errno;
            break;
        }
        n++;
    }
    char text[128];
    int len = snprintf(text, sizeof(text), "forked %lu: %s", n, err ? strerror(err) : "no limit");
    ember_response_header(res, "Content-Type", "text/plain");
    return ember_response_write(res, text, (size_t)len);
}
