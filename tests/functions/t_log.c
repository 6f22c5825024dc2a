/* t_log - writes to its log, then floods it:
 *   stdout "t_log: hello from stdout", stderr "t_log: hello from stderr",
 *   then 1 MiB to stdout (1024 lines of 1023 'x'), answering "ok".
 * The flood is over the per-call budget: expect the two hello lines, some
 * x lines, and a "[ember: N bytes of output dropped]" line. */
#include <stdio.h>
#include <string.h>

#include "ember.h"

int ember_handle(const ember_request *req, ember_response *res)
{
    printf("t_log: hello from stdout\n");
    fprintf(stderr, "t_log: hello from stderr\n");
    fflush(stdout);
    static char line[1024];
    memset(line, 'x', sizeof(line) - 1);
    line[sizeof(line) - 1] = '\n';
    for (int i = 0; i < 1024; i++)
        fwrite(line, 1, sizeof(line), stdout);
    fflush(stdout);
    return ember_response_write(res, "ok", 2);
}
