/* g_noinit - no ember_init at all (the runtime's weak reference is NULL). */
#include "ember.h"

int ember_handle(const ember_request *req, ember_response *res)
{
    (void)req;
    return ember_response_write(res, "no init", 7);
}
