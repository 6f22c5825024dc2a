/* g_initfail - ember_init fails: the LOAD must fail with its message. */
#include "ember.h"

int ember_init(void)
{
    return 3;
}

int ember_handle(const ember_request *req, ember_response *res)
{
    (void)req;
    return ember_response_write(res, "unreachable", 11);
}
