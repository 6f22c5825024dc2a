/* t_crash - dies of SIGSEGV (a write through NULL): expect 502 with
 * "killed by signal 11 (SIGSEGV)". */
#include <stddef.h>

#include "ember.h"

int ember_handle(const ember_request *req, ember_response *res)
{
    ember_response_write(res, "about to crash", 14);
    *(volatile int *)NULL = 1;
    return 0;
}
