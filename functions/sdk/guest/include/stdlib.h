/* stdlib.h - the guest runtime's subset (functions/sdk/guest). */
#ifndef EMBER_GUEST_STDLIB_H
#define EMBER_GUEST_STDLIB_H
#include <stddef.h>
#define EXIT_SUCCESS 0
#define EXIT_FAILURE 1
#define RAND_MAX 0x7fffffff
void *malloc(size_t n);
void *calloc(size_t nmemb, size_t size);
void *realloc(void *p, size_t n);
void free(void *p);
char *getenv(const char *name);
/* A guest has no process to end: both turn into a crash of the call. */
__attribute__((noreturn)) void abort(void);
__attribute__((noreturn)) void exit(int status);
int atoi(const char *s);
long atol(const char *s);
long strtol(const char *restrict s, char **restrict end, int base);
unsigned long strtoul(const char *restrict s, char **restrict end, int base);
long long strtoll(const char *restrict s, char **restrict end, int base);
unsigned long long strtoull(const char *restrict s, char **restrict end, int base);
int abs(int v);
long labs(long v);
void qsort(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *));
/* Seeded from the monitor's fresh random bytes on every restore and reset. */
int rand(void);
void srand(unsigned seed);
#endif
