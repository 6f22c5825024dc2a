/* ember - the command-line client of emberd.
 *
 *   ember [--url URL] [--token TOKEN] COMMAND ...
 *
 * A blocking HTTP/1.1 client is enough here: one request per run. The
 * response body goes to stdout as the daemon sent it (JSON for the API,
 * the function's bytes for invoke); the exit status says whether the
 * request succeeded (0: 2xx, 1: other status, 2: usage, 3: transport).
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"

static void usage(FILE *f)
{
    fputs("usage: ember [--url URL] [--token TOKEN] COMMAND\n"
          "  deploy NAME PACKAGE        upload a package (.tar.gz, .tar, .zip)\n"
          "  list                       deployed functions\n"
          "  get NAME                   one function with its counters\n"
          "  delete NAME                remove a function\n"
          "  invoke NAME [--data STR|@FILE] [--async]\n"
          "                             call it (POST /v1/functions/NAME/invoke)\n"
          "  call NAME [PATH] [--method M] [--data STR|@FILE]\n"
          "                             call it by URL (/fn/NAME/PATH)\n"
          "  invocation ID              the record of an asynchronous call\n"
          "  logs NAME [LINES]          recent stdout/stderr of the function\n"
          "  pool [JSON]                show the pool, or PATCH it with JSON\n"
          "  metrics                    Prometheus text\n"
          "  health                     liveness\n"
          "URL defaults to $EMBER_URL or http://127.0.0.1:8080; TOKEN to $EMBER_TOKEN.\n",
          f);
}

struct url {
    char host[256];
    char port[8];
};

static int parse_url(const char *s, struct url *u)
{
    if (strncmp(s, "http://", 7) != 0)
        return -1;
    s += 7;
    const char *end = s + strcspn(s, "/");
    const char *colon = NULL;
    if (*s == '[') {
        const char *rb = memchr(s, ']', (size_t)(end - s));
        if (!rb)
            return -1;
        snprintf(u->host, sizeof(u->host), "%.*s", (int)(rb - s - 1), s + 1);
        colon = rb[1] == ':' ? rb + 1 : NULL;
    } else {
        colon = memchr(s, ':', (size_t)(end - s));
        snprintf(u->host, sizeof(u->host), "%.*s", (int)((colon ? colon : end) - s), s);
    }
    snprintf(u->port, sizeof(u->port), "%.*s", colon ? (int)(end - colon - 1) : 2,
             colon ? colon + 1 : "80");
    return 0;
}

static char *slurp(const char *arg, size_t *len)
{
    if (arg[0] != '@') {
        *len = strlen(arg);
        return strdup(arg);
    }
    cleanup_close int fd = open(arg + 1, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        fprintf(stderr, "ember: %s: %s\n", arg + 1, strerror(errno));
        return NULL;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (buf && got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    *len = got;
    return buf;
}

static int send_all(int fd, const void *p, size_t len)
{
    const char *c = p;
    while (len) {
        ssize_t n = send(fd, c, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        c += n;
        len -= (size_t)n;
    }
    return 0;
}

/* One request; prints the body; returns the exit status. */
static int request(const struct url *u, const char *token, const char *method, const char *target,
                   const void *body, size_t body_len, bool show_headers)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    int r = getaddrinfo(u->host, u->port, &hints, &ai);
    if (r != 0) {
        fprintf(stderr, "ember: %s: %s\n", u->host, gai_strerror(r));
        return 3;
    }
    cleanup_close int fd = -1;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) == 0)
            break;
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    if (fd < 0) {
        fprintf(stderr, "ember: cannot connect to %s:%s: %s\n", u->host, u->port,
                strerror(errno));
        return 3;
    }
    char head[1024];
    int n = snprintf(head, sizeof(head),
                     "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: ember\r\nConnection: close\r\n"
                     "Content-Length: %zu\r\n%s%s%s\r\n",
                     method, target, u->host, body_len, token ? "Authorization: Bearer " : "",
                     token ? token : "", token ? "\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof(head) || send_all(fd, head, (size_t)n) < 0 ||
        (body_len && send_all(fd, body, body_len) < 0)) {
        fprintf(stderr, "ember: sending the request failed\n");
        return 3;
    }
    size_t cap = 65536, len = 0;
    cleanup_free char *buf = malloc(cap);
    for (;;) {
        if (len == cap) {
            char *b = realloc(buf, cap *= 2);
            if (!b)
                return 3;
            buf = b;
        }
        ssize_t got = recv(fd, buf + len, cap - len, 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        len += (size_t)got;
    }
    char *sep = memmem(buf, len, "\r\n\r\n", 4);
    if (!sep || len < 12) {
        fprintf(stderr, "ember: malformed response\n");
        return 3;
    }
    int status = atoi(buf + 9);
    if (show_headers)
        fwrite(buf, 1, (size_t)(sep - buf) + 4, stderr);
    fwrite(sep + 4, 1, len - (size_t)(sep + 4 - buf), stdout);
    if (len && buf[len - 1] != '\n' && isatty(STDOUT_FILENO))
        putchar('\n');
    return status >= 200 && status < 300 ? 0 : 1;
}

int main(int argc, char **argv)
{
    const char *url = getenv("EMBER_URL") ? getenv("EMBER_URL") : "http://127.0.0.1:8080";
    const char *token = getenv("EMBER_TOKEN");
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--url") == 0 && i + 1 < argc)
            url = argv[++i];
        else if (strcmp(argv[i], "--token") == 0 && i + 1 < argc)
            token = argv[++i];
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    struct url u;
    if (parse_url(url, &u) < 0) {
        fprintf(stderr, "ember: --url must look like http://HOST:PORT\n");
        return 2;
    }
    const char *cmd = argv[i++];
    int left = argc - i;
    char target[2048];
    if (strcmp(cmd, "deploy") == 0 && left == 2) {
        size_t len;
        char at[PATH_MAX + 2];
        snprintf(at, sizeof(at), "@%s", argv[i + 1]);
        cleanup_free char *pkg = slurp(at, &len);
        if (!pkg)
            return 2;
        snprintf(target, sizeof(target), "/v1/functions/%s", argv[i]);
        return request(&u, token, "PUT", target, pkg, len, false);
    }
    if (strcmp(cmd, "list") == 0 && left == 0)
        return request(&u, token, "GET", "/v1/functions", NULL, 0, false);
    if ((strcmp(cmd, "get") == 0 || strcmp(cmd, "delete") == 0) && left == 1) {
        snprintf(target, sizeof(target), "/v1/functions/%s", argv[i]);
        return request(&u, token, cmd[0] == 'g' ? "GET" : "DELETE", target, NULL, 0, false);
    }
    if (strcmp(cmd, "logs") == 0 && (left == 1 || left == 2)) {
        snprintf(target, sizeof(target), "/v1/functions/%s/logs?lines=%s", argv[i],
                 left == 2 ? argv[i + 1] : "100");
        return request(&u, token, "GET", target, NULL, 0, false);
    }
    if (strcmp(cmd, "invocation") == 0 && left == 1) {
        snprintf(target, sizeof(target), "/v1/invocations/%s", argv[i]);
        return request(&u, token, "GET", target, NULL, 0, false);
    }
    if ((strcmp(cmd, "invoke") == 0 || strcmp(cmd, "call") == 0) && left >= 1) {
        const char *name = argv[i++];
        const char *path = "";
        const char *method = "POST";
        const char *data = NULL;
        bool async = false, verbose = false;
        for (; i < argc; i++) {
            if (strcmp(argv[i], "--data") == 0 && i + 1 < argc)
                data = argv[++i];
            else if (strcmp(argv[i], "--method") == 0 && i + 1 < argc)
                method = argv[++i];
            else if (strcmp(argv[i], "--async") == 0)
                async = true;
            else if (strcmp(argv[i], "-v") == 0)
                verbose = true;
            else if (argv[i][0] == '/' && cmd[0] == 'c')
                path = argv[i];
            else {
                usage(stderr);
                return 2;
            }
        }
        size_t len = 0;
        cleanup_free char *body = data ? slurp(data, &len) : NULL;
        if (data && !body)
            return 2;
        if (cmd[0] == 'i')
            snprintf(target, sizeof(target), "/v1/functions/%s/invoke%s", name,
                     async ? "?async=1" : "");
        else
            snprintf(target, sizeof(target), "/fn/%s%s", name, path);
        return request(&u, token, method, target, body, len, verbose);
    }
    if (strcmp(cmd, "pool") == 0 && left <= 1)
        return left ? request(&u, token, "PATCH", "/v1/pool", argv[i], strlen(argv[i]), false)
                    : request(&u, token, "GET", "/v1/pool", NULL, 0, false);
    if (strcmp(cmd, "metrics") == 0 && left == 0)
        return request(&u, token, "GET", "/metrics", NULL, 0, false);
    if (strcmp(cmd, "health") == 0 && left == 0)
        return request(&u, token, "GET", "/healthz", NULL, 0, false);
    usage(stderr);
    return 2;
}
