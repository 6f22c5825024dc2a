/* t_init_fail - ember_init returns 1: the load fails with
 * "ember_init returned 1" and no call ever reaches ember_handle. */
#include "ember.h"

int ember_init(void)
{
    return 1;
}

int ember_handle(const ember_request *req, ember_response *res)
{
    return ember_response_write(res, "unreachable", 11);
}
