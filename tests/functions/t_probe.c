/* t_probe - isolation probes. ?check=<name>[&path=...][&port=...] runs one
 * probe and answers "ok <detail>" if the thing worked or
 * "denied: <strerror>" if it did not, so a test can assert either way.
 *
 *   read_file&path=P   read P            -> "ok <n> bytes: <first bytes>"
 *   write&path=P       create/truncate P -> "ok wrote <n> bytes"
 *   ls&path=P          list directory P  -> "ok <name> <name> ..."
 *   count_procs        numeric /proc entries -> "ok <n>"
 *   connect&port=N     TCP to 127.0.0.1:N -> "ok connected"
 *   uid                "ok uid=U euid=E gid=G egid=G uid_map=<text>"
 *   status             "ok" + the Cap*, NoNewPrivs, Seccomp lines of
 *                      /proc/self/status
 *   mount              mount a tmpfs on /tmp
 *   ptrace             PTRACE_ATTACH to pid 1, then PTRACE_TRACEME
 *   module             init_module and finit_module
 *   env                "ok K=V K=V ..." (the whole environment)
 *   fds                "ok <fd> ..." (open descriptors)
 * Unknown or missing check: status 400.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ember.h"

extern char **environ;

#define OUT_MAX 8192

struct out {
    char buf[OUT_MAX];
    size_t len;
};

__attribute__((format(printf, 2, 3))) static void outf(struct out *o, const char *fmt, ...)
{
    if (o->len >= sizeof(o->buf))
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->len, sizeof(o->buf) - o->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n < sizeof(o->buf) - o->len ? (size_t)n : sizeof(o->buf) - o->len - 1;
}

static void denied(struct out *o, int err)
{
    outf(o, "denied: %s", strerror(err));
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decoded value of @key in the query, or "" if absent. */
static void param(const char *q, const char *key, char *out, size_t cap)
{
    size_t klen = strlen(key), n = 0;
    out[0] = '\0';
    for (const char *p = q; *p;) {
        size_t len = strcspn(p, "&");
        if (len > klen && strncmp(p, key, klen) == 0 && p[klen] == '=') {
            for (size_t i = klen + 1; i < len && n + 1 < cap; i++) {
                int hi, lo;
                if (p[i] == '%' && i + 2 < len && (hi = hexval(p[i + 1])) >= 0 &&
                    (lo = hexval(p[i + 2])) >= 0) {
                    out[n++] = (char)(hi * 16 + lo);
                    i += 2;
                } else {
                    out[n++] = p[i] == '+' ? ' ' : p[i];
                }
            }
            out[n] = '\0';
            return;
        }
        p += len + (p[len] ? 1 : 0);
    }
}

static void read_file(struct out *o, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return denied(o, errno);
    char buf[256];
    ssize_t n = read(fd, buf, sizeof(buf));
    int err = errno;
    close(fd);
    if (n < 0)
        return denied(o, err);
    outf(o, "ok %zd bytes: %.*s", n, (int)n, buf);
}

static void write_file(struct out *o, const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return denied(o, errno);
    ssize_t n = write(fd, "probe\n", 6);
    int err = errno;
    close(fd);
    if (n < 0)
        return denied(o, err);
    outf(o, "ok wrote %zd bytes", n);
}

static void list_dir(struct out *o, const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return denied(o, errno);
    outf(o, "ok");
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            outf(o, " %s", e->d_name);
    closedir(d);
}

static void count_procs(struct out *o)
{
    DIR *d = opendir("/proc");
    if (!d)
        return denied(o, errno);
    unsigned n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] >= '0' && e->d_name[0] <= '9' &&
             strspn(e->d_name, "0123456789") == strlen(e->d_name);
    closedir(d);
    outf(o, "ok %u", n);
}

static void tcp_connect(struct out *o, const char *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return denied(o, errno);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)atoi(port)),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    int err = errno;
    close(fd);
    if (r < 0)
        return denied(o, err);
    outf(o, "ok connected");
}

static void uid(struct out *o)
{
    char map[512] = "";
    int fd = open("/proc/self/uid_map", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, map, sizeof(map) - 1);
        map[n > 0 ? n : 0] = '\0';
        close(fd);
    }
    outf(o, "ok uid=%d euid=%d gid=%d egid=%d uid_map=%s", (int)getuid(), (int)geteuid(),
         (int)getgid(), (int)getegid(), map);
}

static void status(struct out *o)
{
    FILE *f = fopen("/proc/self/status", "re");
    if (!f)
        return denied(o, errno);
    outf(o, "ok");
    char line[256];
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "Cap", 3) && strncmp(line, "NoNewPrivs", 10) &&
            strncmp(line, "Seccomp", 7))
            continue;
        line[strcspn(line, "\n")] = '\0';
        outf(o, " %s", line);
    }
    fclose(f);
}

static void try_mount(struct out *o)
{
    if (mount("tmpfs", "/tmp", "tmpfs", 0, "size=1m") < 0)
        return denied(o, errno);
    umount2("/tmp", MNT_DETACH);
    outf(o, "ok mounted");
}

static void try_ptrace(struct out *o)
{
    if (ptrace(PTRACE_ATTACH, 1, NULL, NULL) == 0) {
        ptrace(PTRACE_DETACH, 1, NULL, NULL);
        return outf(o, "ok attached to pid 1");
    }
    int err = errno;
    if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) == 0)
        return outf(o, "ok traceme");
    outf(o, "denied: %s; traceme: %s", strerror(err), strerror(errno));
}

static void try_module(struct out *o)
{
    static const char image[64];
    if (syscall(SYS_init_module, image, sizeof(image), "") == 0)
        return outf(o, "ok init_module");
    int err = errno;
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    long r = syscall(SYS_finit_module, fd, "", 0);
    int err2 = errno;
    if (fd >= 0)
        close(fd);
    if (r == 0)
        return outf(o, "ok finit_module");
    outf(o, "denied: %s; finit_module: %s", strerror(err), strerror(err2));
}

/* move_mount with a bad fd: the kernel itself would answer EBADF, so
 * EPERM can only come from the seccomp filter (the LOAD filter, stacked on
 * the stem filter that still allows it for the agent). */
static void try_move_mount(struct out *o)
{
    if (syscall(SYS_move_mount, -1, "", AT_FDCWD, "/tmp", 0x4 /* F_EMPTY_PATH */) == 0)
        return outf(o, "ok move_mount");
    outf(o, "denied: %s", strerror(errno));
}

static void env(struct out *o)
{
    outf(o, "ok");
    for (char **e = environ; e && *e; e++)
        outf(o, " %s", *e);
}

static void fds(struct out *o)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return denied(o, errno);
    outf(o, "ok");
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            outf(o, " %s", e->d_name);
    closedir(d);
}

int ember_handle(const ember_request *req, ember_response *res)
{
    struct out o;
    char check[64], path[1024], port[16];
    const char *q = ember_request_query(req);
    o.len = 0;
    o.buf[0] = '\0';
    param(q, "check", check, sizeof(check));
    param(q, "path", path, sizeof(path));
    param(q, "port", port, sizeof(port));

    if (!strcmp(check, "read_file"))
        read_file(&o, path);
    else if (!strcmp(check, "write"))
        write_file(&o, path);
    else if (!strcmp(check, "ls"))
        list_dir(&o, path);
    else if (!strcmp(check, "count_procs"))
        count_procs(&o);
    else if (!strcmp(check, "connect"))
        tcp_connect(&o, port);
    else if (!strcmp(check, "uid"))
        uid(&o);
    else if (!strcmp(check, "status"))
        status(&o);
    else if (!strcmp(check, "mount"))
        try_mount(&o);
    else if (!strcmp(check, "ptrace"))
        try_ptrace(&o);
    else if (!strcmp(check, "module"))
        try_module(&o);
    else if (!strcmp(check, "move_mount"))
        try_move_mount(&o);
    else if (!strcmp(check, "env"))
        env(&o);
    else if (!strcmp(check, "fds"))
        fds(&o);
    else {
        ember_response_status(res, 400);
        outf(&o, "unknown check '%s'", check);
    }
    ember_response_header(res, "Content-Type", "text/plain");
    return ember_response_write(res, o.buf, o.len);
}
