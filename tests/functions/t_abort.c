/* t_abort - dies of SIGABRT: expect 502 with "killed by signal 6 (SIGABRT)". */
#include <stdlib.h>

#include "ember.h"

int ember_handle(const ember_request *req, ember_response *res)
{
    abort();
}
