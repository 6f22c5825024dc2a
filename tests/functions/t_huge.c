/* t_huge - writes a 7 MiB body, over the 6 MiB limit: expect 502 (too
 * large). Writes go on after ember_response_write fails, as careless code
 * would; the call fails anyway. */
#include <string.h>

#include "ember.h"

int ember_handle(const ember_request *req, ember_response *res)
{
    static char chunk[64 << 10];
    memset(chunk, 'h', sizeof(chunk));
    for (int i = 0; i < (7 << 20) / (int)sizeof(chunk); i++)
        ember_response_write(res, chunk, sizeof(chunk));
    return 0;
}
