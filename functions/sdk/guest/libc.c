/* libc.c - the libc subset a guest handler needs (functions/sdk/guest):
 * mem and str functions, a heap over the range the monitor gives, printf
 * formatting, stdout/stderr as the function's log, getenv over the manifest
 * env the monitor wrote, clocks and entropy through hypercalls.
 *
 * Built with -fno-tree-loop-distribute-patterns so that the loops below are
 * not turned back into calls to themselves.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "ember_guest.h"
#include "hypercall.h"

int errno;

/* ---- abort ---- */

__attribute__((noreturn)) void ember__guest_abort(const char *msg, uint64_t len)
{
    ember__guest_stdio_flush();
    for (;;)
        ember_hc(EMBER_HC_ABORT, msg, len, 0);
}

void abort(void)
{
    static const char msg[] = "abort() called";
    ember__guest_abort(msg, sizeof(msg) - 1);
}

void exit(int status)
{
    char msg[48];
    int n = snprintf(msg, sizeof(msg), "exit(%d) called", status);
    ember__guest_abort(msg, (uint64_t)n);
}

void __assert_fail(const char *expr, const char *file, unsigned line, const char *func)
{
    char msg[256];
    int n = snprintf(msg, sizeof(msg), "%s:%u: %s: assertion '%s' failed", file, line, func, expr);
    if (n < 0 || n >= (int)sizeof(msg))
        n = (int)sizeof(msg) - 1;
    ember__guest_abort(msg, (uint64_t)n);
}

/* ---- memory and strings ---- */

void *memcpy(void *restrict d, const void *restrict s, size_t n)
{
    unsigned char *dp = d;
    const unsigned char *sp = s;
    while (n >= 8) {
        uint64_t v;
        __builtin_memcpy(&v, sp, 8);
        __builtin_memcpy(dp, &v, 8);
        dp += 8, sp += 8, n -= 8;
    }
    while (n--)
        *dp++ = *sp++;
    return d;
}

void *memmove(void *d, const void *s, size_t n)
{
    unsigned char *dp = d;
    const unsigned char *sp = s;
    if (dp == sp || n == 0)
        return d;
    if (dp < sp || dp >= sp + n)
        return memcpy(d, s, n);
    while (n--)
        dp[n] = sp[n];
    return d;
}

void *memset(void *d, int c, size_t n)
{
    unsigned char *dp = d;
    uint64_t v = 0x0101010101010101ull * (unsigned char)c;
    while (n >= 8) {
        __builtin_memcpy(dp, &v, 8);
        dp += 8, n -= 8;
    }
    while (n--)
        *dp++ = (unsigned char)c;
    return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    for (; n; n--, x++, y++)
        if (*x != *y)
            return *x - *y;
    return 0;
}

void *memchr(const void *s, int c, size_t n)
{
    const unsigned char *p = s;
    for (; n; n--, p++)
        if (*p == (unsigned char)c)
            return (void *)p;
    return NULL;
}

size_t strlen(const char *s)
{
    const char *p = s;
    while (*p)
        p++;
    return (size_t)(p - s);
}

size_t strnlen(const char *s, size_t max)
{
    size_t n = 0;
    while (n < max && s[n])
        n++;
    return n;
}

int strcmp(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return (unsigned char)*a - (unsigned char)*b;
}

int strncmp(const char *a, const char *b, size_t n)
{
    for (; n; n--, a++, b++) {
        if (*a != *b)
            return (unsigned char)*a - (unsigned char)*b;
        if (!*a)
            return 0;
    }
    return 0;
}

int strcasecmp(const char *a, const char *b)
{
    while (*a && tolower((unsigned char)*a) == tolower((unsigned char)*b))
        a++, b++;
    return tolower((unsigned char)*a) - tolower((unsigned char)*b);
}

int strncasecmp(const char *a, const char *b, size_t n)
{
    for (; n; n--, a++, b++) {
        int x = tolower((unsigned char)*a), y = tolower((unsigned char)*b);
        if (x != y)
            return x - y;
        if (!x)
            return 0;
    }
    return 0;
}

char *strcpy(char *restrict d, const char *restrict s)
{
    memcpy(d, s, strlen(s) + 1);
    return d;
}

char *strncpy(char *restrict d, const char *restrict s, size_t n)
{
    size_t l = strnlen(s, n);
    memcpy(d, s, l);
    memset(d + l, 0, n - l);
    return d;
}

char *strcat(char *restrict d, const char *restrict s)
{
    strcpy(d + strlen(d), s);
    return d;
}

char *strncat(char *restrict d, const char *restrict s, size_t n)
{
    char *e = d + strlen(d);
    size_t l = strnlen(s, n);
    memcpy(e, s, l);
    e[l] = 0;
    return d;
}

char *strchr(const char *s, int c)
{
    for (;; s++) {
        if (*s == (char)c)
            return (char *)s;
        if (!*s)
            return NULL;
    }
}

char *strrchr(const char *s, int c)
{
    const char *last = NULL;
    for (;; s++) {
        if (*s == (char)c)
            last = s;
        if (!*s)
            return (char *)last;
    }
}

char *strstr(const char *h, const char *n)
{
    size_t nl = strlen(n);
    if (!nl)
        return (char *)h;
    for (; *h; h++)
        if (*h == *n && strncmp(h, n, nl) == 0)
            return (char *)h;
    return NULL;
}

size_t strspn(const char *s, const char *accept)
{
    size_t n = 0;
    while (s[n] && strchr(accept, s[n]))
        n++;
    return n;
}

size_t strcspn(const char *s, const char *reject)
{
    size_t n = 0;
    while (s[n] && !strchr(reject, s[n]))
        n++;
    return n;
}

char *strdup(const char *s)
{
    return strndup(s, strlen(s));
}

char *strndup(const char *s, size_t n)
{
    size_t l = strnlen(s, n);
    char *d = malloc(l + 1);
    if (!d)
        return NULL;
    memcpy(d, s, l);
    d[l] = 0;
    return d;
}

char *strtok_r(char *restrict s, const char *restrict delim, char **restrict save)
{
    if (!s)
        s = *save;
    s += strspn(s, delim);
    if (!*s) {
        *save = s;
        return NULL;
    }
    char *e = s + strcspn(s, delim);
    if (*e)
        *e++ = 0;
    *save = e;
    return s;
}

char *strerror(int err)
{
    switch (err) {
    case 0:
        return "Success";
    case ENOENT:
        return "No such file or directory";
    case ENOMEM:
        return "Cannot allocate memory";
    case EINVAL:
        return "Invalid argument";
    case ERANGE:
        return "Numerical result out of range";
    case ENOSYS:
        return "Function not implemented";
    default:
        return "Unknown error";
    }
}

/* ---- heap ----
 *
 * Power-of-two size classes with one free list each, carved from a bump
 * pointer over [heap_start, heap_end). A block's 16-byte header keeps its
 * class. The block at the top of the heap grows in place on realloc (a
 * response body doubling its buffer costs no copy and no second block). */

#define HEAP_MAGIC 0x656d6272u
#define HEAP_MIN_CLASS 5
#define HEAP_MAX_CLASS 48

struct block {
    uint32_t magic;
    uint32_t cls;
    uint64_t pad;
};
struct free_block {
    struct block h;
    struct free_block *next;
};

static uintptr_t heap_cur, heap_end;
static struct free_block *free_lists[HEAP_MAX_CLASS + 1];

void ember__guest_heap_init(uint64_t start, uint64_t end)
{
    heap_cur = (uintptr_t)((start + 15) & ~15ull);
    heap_end = (uintptr_t)end;
}

static int size_class(size_t n)
{
    if (n > ((size_t)1 << HEAP_MAX_CLASS) - sizeof(struct block))
        return -1;
    size_t total = n + sizeof(struct block);
    int c = HEAP_MIN_CLASS;
    while (((size_t)1 << c) < total)
        c++;
    return c;
}

static struct block *header_of(void *p)
{
    struct block *b = (struct block *)p - 1;
    if (b->magic != HEAP_MAGIC) {
        static const char msg[] = "free/realloc: not a heap pointer";
        ember__guest_abort(msg, sizeof(msg) - 1);
    }
    return b;
}

void *malloc(size_t n)
{
    int c = size_class(n);
    if (c < 0) {
        errno = ENOMEM;
        return NULL;
    }
    struct block *b;
    if (free_lists[c]) {
        b = &free_lists[c]->h;
        free_lists[c] = free_lists[c]->next;
    } else {
        size_t size = (size_t)1 << c;
        if (heap_end - heap_cur < size) {
            errno = ENOMEM;
            return NULL;
        }
        b = (struct block *)heap_cur;
        heap_cur += size;
    }
    b->magic = HEAP_MAGIC;
    b->cls = (uint32_t)c;
    return b + 1;
}

void free(void *p)
{
    if (!p)
        return;
    struct block *b = header_of(p);
    size_t size = (size_t)1 << b->cls;
    if ((uintptr_t)b + size == heap_cur) {
        /* the top block: give it back to the bump pointer */
        b->magic = 0;
        heap_cur = (uintptr_t)b;
        return;
    }
    struct free_block *f = (struct free_block *)b;
    f->h.magic = 0;
    f->next = free_lists[b->cls];
    free_lists[b->cls] = f;
}

void *calloc(size_t nmemb, size_t size)
{
    if (size && nmemb > SIZE_MAX / size) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = malloc(nmemb * size);
    if (p)
        memset(p, 0, nmemb * size);
    return p;
}

void *realloc(void *p, size_t n)
{
    if (!p)
        return malloc(n);
    if (n == 0) {
        free(p);
        return NULL;
    }
    struct block *b = header_of(p);
    size_t have = ((size_t)1 << b->cls) - sizeof(struct block);
    if (n <= have)
        return p;
    int c = size_class(n);
    if (c < 0) {
        errno = ENOMEM;
        return NULL;
    }
    if ((uintptr_t)b + ((size_t)1 << b->cls) == heap_cur &&
        heap_end - (uintptr_t)b >= ((size_t)1 << c)) {
        heap_cur = (uintptr_t)b + ((size_t)1 << c);
        b->cls = (uint32_t)c;
        return p;
    }
    void *q = malloc(n);
    if (!q)
        return NULL;
    memcpy(q, p, have);
    free(p);
    return q;
}

/* ---- environment ---- */

char *getenv(const char *name)
{
    const struct ember_boot *boot = (const struct ember_boot *)EMBER_GUEST_BOOT;
    size_t nl = strlen(name);
    const char *p = (const char *)boot->env, *end = p + boot->env_len;
    while (p < end && *p) {
        size_t l = strnlen(p, (size_t)(end - p));
        if (l > nl && p[nl] == '=' && memcmp(p, name, nl) == 0)
            return (char *)p + nl + 1;
        p += l + 1;
    }
    return NULL;
}

/* ---- numbers ---- */

unsigned long long strtoull(const char *restrict s, char **restrict end, int base)
{
    const char *p = s;
    while (isspace((unsigned char)*p))
        p++;
    int neg = 0;
    if (*p == '+' || *p == '-')
        neg = *p++ == '-';
    if ((base == 0 || base == 16) && p[0] == '0' && (p[1] | 32) == 'x' &&
        isxdigit((unsigned char)p[2]))
        p += 2, base = 16;
    else if (base == 0)
        base = p[0] == '0' ? 8 : 10;
    unsigned long long v = 0;
    int any = 0, overflow = 0;
    for (;; p++) {
        int d;
        if (isdigit((unsigned char)*p))
            d = *p - '0';
        else if (isalpha((unsigned char)*p))
            d = (*p | 32) - 'a' + 10;
        else
            break;
        if (d >= base)
            break;
        if (v > (~0ull - (unsigned)d) / (unsigned)base)
            overflow = 1;
        v = v * (unsigned)base + (unsigned)d;
        any = 1;
    }
    if (end)
        *end = (char *)(any ? p : s);
    if (overflow) {
        errno = ERANGE;
        return ~0ull;
    }
    return neg ? -v : v;
}

long long strtoll(const char *restrict s, char **restrict end, int base)
{
    const char *p = s;
    while (isspace((unsigned char)*p))
        p++;
    int neg = *p == '-';
    unsigned long long v = strtoull(s, end, base);
    unsigned long long mag = neg ? -v : v;
    if (!neg && mag > (unsigned long long)INT64_MAX) {
        errno = ERANGE;
        return INT64_MAX;
    }
    if (neg && mag > (unsigned long long)INT64_MAX + 1) {
        errno = ERANGE;
        return INT64_MIN;
    }
    return (long long)v;
}

long strtol(const char *restrict s, char **restrict end, int base)
{
    return (long)strtoll(s, end, base);
}

unsigned long strtoul(const char *restrict s, char **restrict end, int base)
{
    return (unsigned long)strtoull(s, end, base);
}

int atoi(const char *s)
{
    return (int)strtol(s, NULL, 10);
}

long atol(const char *s)
{
    return strtol(s, NULL, 10);
}

int abs(int v)
{
    return v < 0 ? -v : v;
}

long labs(long v)
{
    return v < 0 ? -v : v;
}

void qsort(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *))
{
    /* insertion sort over bytes: small inputs are what handlers sort */
    unsigned char *a = base;
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && cmp(a + (j - 1) * size, a + j * size) > 0; j--)
            for (size_t k = 0; k < size; k++) {
                unsigned char t = a[(j - 1) * size + k];
                a[(j - 1) * size + k] = a[j * size + k];
                a[j * size + k] = t;
            }
}

/* ---- random: xoshiro256** seeded from the monitor's seed ---- */

static uint64_t rng[4];

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(void)
{
    uint64_t r = rotl(rng[1] * 5, 7) * 9, t = rng[1] << 17;
    rng[2] ^= rng[0];
    rng[3] ^= rng[1];
    rng[1] ^= rng[2];
    rng[0] ^= rng[3];
    rng[2] ^= t;
    rng[3] = rotl(rng[3], 45);
    return r;
}

void ember__guest_reseed(const struct ember_boot *boot)
{
    memcpy(rng, boot->seed, sizeof(rng));
    if (!(rng[0] | rng[1] | rng[2] | rng[3]))
        rng[0] = 1;
}

int rand(void)
{
    return (int)(rng_next() >> 33);
}

void srand(unsigned seed)
{
    uint64_t z = seed;
    for (int i = 0; i < 4; i++) {
        z += 0x9e3779b97f4a7c15ull;
        uint64_t x = z;
        x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
        x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
        rng[i] = x ^ (x >> 31);
    }
}

int getentropy(void *buf, size_t len)
{
    unsigned char *p = buf;
    while (len) {
        size_t n = len < EMBER_RANDOM_MAX ? len : EMBER_RANDOM_MAX;
        if (ember_hc(EMBER_HC_RANDOM, p, n, 0) != 0) {
            errno = EIO;
            return -1;
        }
        p += n, len -= n;
    }
    return 0;
}

/* ---- clocks ---- */

int clock_gettime(clockid_t clk, struct timespec *ts)
{
    uint64_t ns;
    if (clk != CLOCK_REALTIME && clk != CLOCK_MONOTONIC) {
        errno = EINVAL;
        return -1;
    }
    ember_hc(EMBER_HC_CLOCK, clk, &ns, 0);
    ts->tv_sec = (time_t)(ns / 1000000000u);
    ts->tv_nsec = (long)(ns % 1000000000u);
    return 0;
}

time_t time(time_t *t)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (t)
        *t = ts.tv_sec;
    return ts.tv_sec;
}

/* ---- formatting ---- */

struct out {
    char *buf;
    size_t cap, len;
};

static void out_put(struct out *o, char c)
{
    if (o->len + 1 < o->cap)
        o->buf[o->len] = c;
    o->len++;
}

static void out_pad(struct out *o, char c, int n)
{
    while (n-- > 0)
        out_put(o, c);
}

static void out_str(struct out *o, const char *s, size_t n, int width, int left)
{
    if (!left)
        out_pad(o, ' ', width - (int)n);
    for (size_t i = 0; i < n; i++)
        out_put(o, s[i]);
    if (left)
        out_pad(o, ' ', width - (int)n);
}

static void out_num(struct out *o, unsigned long long v, int neg, unsigned base, int upper,
                    int width, int prec, int left, int zero, char sign, const char *prefix)
{
    char digits[24];
    int nd = 0;
    const char *set = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    while (v) {
        digits[nd++] = set[v % base];
        v /= base;
    }
    if (prec < 0)
        prec = 1;
    else
        zero = 0;
    int nz = prec > nd ? prec - nd : 0;
    int npre = (neg || sign ? 1 : 0) + (int)strlen(prefix);
    int total = nd + nz + npre;
    if (!left && !zero)
        out_pad(o, ' ', width - total);
    if (neg)
        out_put(o, '-');
    else if (sign)
        out_put(o, sign);
    for (const char *p = prefix; *p; p++)
        out_put(o, *p);
    if (!left && zero)
        out_pad(o, '0', width - total);
    out_pad(o, '0', nz);
    while (nd)
        out_put(o, digits[--nd]);
    if (left)
        out_pad(o, ' ', width - total);
}

int vsnprintf(char *restrict buf, size_t n, const char *restrict fmt, va_list ap)
{
    struct out o = {buf, n, 0};
    for (const char *f = fmt; *f; f++) {
        if (*f != '%') {
            out_put(&o, *f);
            continue;
        }
        int left = 0, zero = 0, alt = 0, width = 0, prec = -1;
        char sign = 0;
        for (;; f++) {
            if (f[1] == '-')
                left = 1;
            else if (f[1] == '0')
                zero = 1;
            else if (f[1] == '+')
                sign = '+';
            else if (f[1] == ' ')
                sign = sign ? sign : ' ';
            else if (f[1] == '#')
                alt = 1;
            else
                break;
        }
        f++;
        if (*f == '*') {
            width = va_arg(ap, int);
            if (width < 0)
                left = 1, width = -width;
            f++;
        } else {
            while (isdigit((unsigned char)*f))
                width = width * 10 + (*f++ - '0');
        }
        if (*f == '.') {
            f++;
            prec = 0;
            if (*f == '*') {
                prec = va_arg(ap, int);
                f++;
            } else {
                while (isdigit((unsigned char)*f))
                    prec = prec * 10 + (*f++ - '0');
            }
        }
        int lng = 0; /* 0 int, 1 long, 2 long long, -1 short, -2 char, 3 size_t */
        for (;; f++) {
            if (*f == 'l')
                lng = lng == 1 ? 2 : 1;
            else if (*f == 'h')
                lng = lng == -1 ? -2 : -1;
            else if (*f == 'z' || *f == 't' || *f == 'j')
                lng = 3;
            else
                break;
        }
        switch (*f) {
        case 'd':
        case 'i': {
            long long v;
            if (lng == 2 || lng == 1 || lng == 3)
                v = lng == 2 ? va_arg(ap, long long) : va_arg(ap, long);
            else
                v = va_arg(ap, int);
            if (lng == -1)
                v = (short)v;
            else if (lng == -2)
                v = (signed char)v;
            unsigned long long m = v < 0 ? -(unsigned long long)v : (unsigned long long)v;
            out_num(&o, m, v < 0, 10, 0, width, prec, left, zero, sign, "");
            break;
        }
        case 'u':
        case 'x':
        case 'X':
        case 'o': {
            unsigned long long v;
            if (lng == 2 || lng == 1 || lng == 3)
                v = lng == 2 ? va_arg(ap, unsigned long long) : va_arg(ap, unsigned long);
            else
                v = va_arg(ap, unsigned);
            if (lng == -1)
                v = (unsigned short)v;
            else if (lng == -2)
                v = (unsigned char)v;
            unsigned base = *f == 'u' ? 10 : *f == 'o' ? 8 : 16;
            const char *pre = "";
            if (alt && v && base == 16)
                pre = *f == 'X' ? "0X" : "0x";
            else if (alt && base == 8)
                pre = "0";
            out_num(&o, v, 0, base, *f == 'X', width, prec, left, zero, 0, pre);
            break;
        }
        case 'p': {
            void *p = va_arg(ap, void *);
            out_num(&o, (uintptr_t)p, 0, 16, 0, width, -1, left, 0, 0, "0x");
            break;
        }
        case 'c': {
            char c = (char)va_arg(ap, int);
            out_str(&o, &c, 1, width, left);
            break;
        }
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s)
                s = "(null)";
            size_t l = prec >= 0 ? strnlen(s, (size_t)prec) : strlen(s);
            out_str(&o, s, l, width, left);
            break;
        }
        case 'f': {
            double d = va_arg(ap, double);
            if (prec < 0)
                prec = 6;
            if (prec > 9)
                prec = 9;
            int neg = d < 0;
            if (neg)
                d = -d;
            unsigned long long scale = 1;
            for (int i = 0; i < prec; i++)
                scale *= 10;
            unsigned long long ip = (unsigned long long)d;
            unsigned long long fp = (unsigned long long)((d - (double)ip) * (double)scale + 0.5);
            if (fp >= scale)
                ip++, fp -= scale;
            char tmp[48];
            struct out t = {tmp, sizeof(tmp), 0};
            out_num(&t, ip, neg, 10, 0, 0, -1, 0, 0, sign, "");
            if (prec > 0) {
                out_put(&t, '.');
                out_num(&t, fp, 0, 10, 0, 0, prec, 0, 0, 0, "");
            }
            size_t tl = t.len < sizeof(tmp) ? t.len : sizeof(tmp) - 1;
            if (zero && !left && width > (int)tl) {
                size_t skip = (neg || sign) ? 1 : 0;
                if (skip)
                    out_put(&o, tmp[0]);
                out_pad(&o, '0', width - (int)tl);
                out_str(&o, tmp + skip, tl - skip, 0, 0);
            } else {
                out_str(&o, tmp, tl, width, left);
            }
            break;
        }
        case '%':
            out_put(&o, '%');
            break;
        case 'n':
            break; /* not supported: it writes through a pointer from a format */
        default:
            out_put(&o, '%');
            if (*f)
                out_put(&o, *f);
            else
                f--;
            break;
        }
    }
    if (n)
        buf[o.len < n ? o.len : n - 1] = 0;
    return (int)o.len;
}

int snprintf(char *restrict buf, size_t n, const char *restrict fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(buf, n, fmt, ap);
    va_end(ap);
    return r;
}

int sprintf(char *restrict buf, const char *restrict fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(buf, SIZE_MAX / 2, fmt, ap);
    va_end(ap);
    return r;
}

/* ---- stdout / stderr: line-buffered into LOG hypercalls ---- */

struct ember_guest_file {
    int stream;
    size_t len;
    char buf[EMBER_LOG_MAX];
};

static struct ember_guest_file out_file = {1, 0, {0}}, err_file = {2, 0, {0}};
FILE *const stdout = &out_file;
FILE *const stderr = &err_file;

void ember_guest_log(int stream, const char *line, size_t len)
{
    if (len > EMBER_LOG_MAX)
        len = EMBER_LOG_MAX;
    ember_hc(EMBER_HC_LOG, stream, line, len);
}

int fflush(FILE *f)
{
    if (!f) {
        fflush(stdout);
        return fflush(stderr);
    }
    if (f->len) {
        ember_guest_log(f->stream, f->buf, f->len);
        f->len = 0;
    }
    return 0;
}

void ember__guest_stdio_flush(void)
{
    fflush(NULL);
}

size_t fwrite(const void *restrict p, size_t size, size_t n, FILE *restrict f)
{
    const char *s = p;
    size_t total = size * n;
    for (size_t i = 0; i < total; i++) {
        if (s[i] == '\n') {
            ember_guest_log(f->stream, f->buf, f->len);
            f->len = 0;
            continue;
        }
        if (f->len == sizeof(f->buf))
            fflush(f);
        f->buf[f->len++] = s[i];
    }
    return n;
}

int fputc(int c, FILE *f)
{
    char ch = (char)c;
    fwrite(&ch, 1, 1, f);
    return (unsigned char)c;
}

int putc(int c, FILE *f)
{
    return fputc(c, f);
}

int putchar(int c)
{
    return fputc(c, stdout);
}

int fputs(const char *restrict s, FILE *restrict f)
{
    fwrite(s, 1, strlen(s), f);
    return 0;
}

int puts(const char *s)
{
    fputs(s, stdout);
    fputc('\n', stdout);
    return 0;
}

int vfprintf(FILE *restrict f, const char *restrict fmt, va_list ap)
{
    char small[512];
    va_list aq;
    va_copy(aq, ap);
    int n = vsnprintf(small, sizeof(small), fmt, aq);
    va_end(aq);
    if (n < (int)sizeof(small)) {
        fwrite(small, 1, (size_t)n, f);
        return n;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        fwrite(small, 1, sizeof(small) - 1, f);
        return n;
    }
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    fwrite(big, 1, (size_t)n, f);
    free(big);
    return n;
}

int fprintf(FILE *restrict f, const char *restrict fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = vfprintf(f, fmt, ap);
    va_end(ap);
    return r;
}

int vprintf(const char *restrict fmt, va_list ap)
{
    return vfprintf(stdout, fmt, ap);
}

int printf(const char *restrict fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = vfprintf(stdout, fmt, ap);
    va_end(ap);
    return r;
}
