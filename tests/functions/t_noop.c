/* t_noop - "ok" and nothing else: the floor for benchmarks. */
#include "ember.h"

int ember_handle(const ember_request *req, ember_response *res)
{
    return ember_response_write(res, "ok", 2);
}
