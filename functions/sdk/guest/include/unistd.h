#ifndef EMBER_GUEST_UNISTD_H
#define EMBER_GUEST_UNISTD_H
#include <stddef.h>
int getentropy(void *buf, size_t len);
#endif
