/* cgi.c - CGI/1.1 meta-variables and output parsing; HTTP header rules. */
#include "sandbox/agent/cgi.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/cleanup.h"

bool agent__http_token_valid(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
            continue;
        if (!strchr("!#$%&'*+-.^_`|~", c) || c == '\0')
            return false;
    }
    return true;
}

bool agent__http_value_valid(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

static bool name_is(const char *name, size_t len, const char *want)
{
    return strlen(want) == len && strncasecmp(name, want, len) == 0;
}

bool agent__http_header_dropped(const char *name, size_t len)
{
    static const char *const dropped[] = {"Connection", "Keep-Alive", "Transfer-Encoding", "TE",
                                          "Trailer",    "Upgrade",    "Content-Length"};
    for (size_t i = 0; i < ARRAY_SIZE(dropped); i++)
        if (name_is(name, len, dropped[i]))
            return true;
    return len >= 6 && strncasecmp(name, "Proxy-", 6) == 0;
}

/* ---- the environment of an exec call ---- */

struct envv {
    char **v;
    size_t n, cap;
};

static int env_add(struct envv *e, const char *name, const char *value, size_t value_len)
{
    if (e->n + 2 > e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 64;
        char **v = realloc(e->v, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        e->v = v;
        e->cap = cap;
    }
    size_t nl = strlen(name);
    char *s = malloc(nl + 1 + value_len + 1);
    if (!s)
        return -ENOMEM;
    memcpy(s, name, nl);
    s[nl] = '=';
    memcpy(s + nl + 1, value, value_len);
    s[nl + 1 + value_len] = '\0';
    e->v[e->n++] = s;
    e->v[e->n] = NULL;
    return 0;
}

static int env_addf(struct envv *e, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int env_addf(struct envv *e, const char *name, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    if ((size_t)n >= sizeof(buf))
        n = sizeof(buf) - 1;
    return env_add(e, name, buf, (size_t)n);
}

/* Index in @e of the entry named @name (length @nl), or -1. */
static ssize_t env_find(const struct envv *e, const char *name, size_t nl)
{
    for (size_t i = 0; i < e->n; i++)
        if (strncmp(e->v[i], name, nl) == 0 && e->v[i][nl] == '=')
            return (ssize_t)i;
    return -1;
}

static const struct proto_str *header_find(const struct proto_request *req, const char *name)
{
    for (uint32_t i = 0; i < req->n_headers; i++)
        if (name_is(req->headers[i].key.p, req->headers[i].key.len, name))
            return &req->headers[i].value;
    return NULL;
}

static bool has_nul(struct proto_str s)
{
    return s.len > 0 && memchr(s.p, '\0', s.len) != NULL;
}

/* "HTTP_" + the header name upper-cased with '-' as '_', or false if the
 * name cannot be a meta-variable. */
static bool http_var_name(struct proto_str key, char *out, size_t cap)
{
    if (!agent__http_token_valid(key.p, key.len) || key.len + 6 > cap)
        return false;
    memcpy(out, "HTTP_", 5);
    for (uint32_t i = 0; i < key.len; i++) {
        char c = key.p[i];
        if (c == '_')
            return false;
        out[5 + i] = c == '-' ? '_' : (char)((c >= 'a' && c <= 'z') ? c - 32 : c);
        if (!((out[5 + i] >= 'A' && out[5 + i] <= 'Z') ||
              (out[5 + i] >= '0' && out[5 + i] <= '9') || out[5 + i] == '_'))
            return false; /* a tchar that is no shell-name character */
    }
    out[5 + key.len] = '\0';
    return true;
}

/* Request headers as HTTP_* variables, repeats joined with ", " (RFC 3875
 * 4.1.18). */
static int env_add_headers(struct envv *e, const struct proto_request *req)
{
    char name[256];
    for (uint32_t i = 0; i < req->n_headers; i++) {
        const struct proto_pair *h = &req->headers[i];
        if (name_is(h->key.p, h->key.len, "Content-Type") ||
            name_is(h->key.p, h->key.len, "Content-Length") ||
            name_is(h->key.p, h->key.len, "Proxy") ||
            name_is(h->key.p, h->key.len, CGI_REMOTE_ADDR_HEADER))
            continue;
        if (has_nul(h->value) || !http_var_name(h->key, name, sizeof(name)))
            continue;
        size_t nl = strlen(name);
        ssize_t at = env_find(e, name, nl);
        if (at < 0) {
            int r = env_add(e, name, h->value.p, h->value.len);
            if (r < 0)
                return r;
            continue;
        }
        size_t old = strlen(e->v[at]);
        char *s = realloc(e->v[at], old + 2 + h->value.len + 1);
        if (!s)
            return -ENOMEM;
        memcpy(s + old, ", ", 2);
        memcpy(s + old + 2, h->value.p, h->value.len);
        s[old + 2 + h->value.len] = '\0';
        e->v[at] = s;
    }
    return 0;
}

/* SERVER_NAME and SERVER_PORT from the Host header ("name[:port]",
 * "[v6]:port"), else localhost:80. */
static int env_add_server(struct envv *e, const struct proto_request *req)
{
    const struct proto_str *host = header_find(req, "Host");
    const char *name = "localhost", *port = "80";
    size_t name_len = strlen(name), port_len = strlen(port);
    if (host && host->len > 0 && !has_nul(*host) && agent__http_value_valid(host->p, host->len)) {
        const char *p = host->p, *end = host->p + host->len;
        const char *colon = NULL;
        if (p[0] == '[') {
            const char *rb = memchr(p, ']', host->len);
            if (rb && rb + 1 < end && rb[1] == ':')
                colon = rb + 1;
        } else {
            colon = memchr(p, ':', host->len);
        }
        name = p;
        name_len = colon ? (size_t)(colon - p) : host->len;
        if (colon && colon + 1 < end) {
            port = colon + 1;
            port_len = (size_t)(end - port);
        }
    }
    int r = env_add(e, "SERVER_NAME", name, name_len);
    return r < 0 ? r : env_add(e, "SERVER_PORT", port, port_len);
}

int agent__cgi_env_build(const struct cgi_server *srv, const struct proto_request *req,
                         char *const *base, char ***out)
{
    struct envv e = {0};
    int r = 0;
    const struct proto_str *ctype = header_find(req, "Content-Type");
    const struct proto_str *raddr = header_find(req, CGI_REMOTE_ADDR_HEADER);

#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((r = (x)) < 0)                                                                         \
            goto fail;                                                                             \
    } while (0)
    TRY(env_add(&e, "GATEWAY_INTERFACE", "CGI/1.1", 7));
    TRY(env_add(&e, "SERVER_PROTOCOL", "HTTP/1.1", 8));
    TRY(env_addf(&e, "SERVER_SOFTWARE", "%s", srv->software));
    TRY(env_add_server(&e, req));
    TRY(env_add(&e, "REQUEST_METHOD", req->method.p, req->method.len));
    TRY(env_addf(&e, "SCRIPT_NAME", "/fn/%s", srv->function));
    TRY(env_add(&e, "PATH_INFO", req->path.p, req->path.len));
    TRY(env_add(&e, "QUERY_STRING", req->query.p, req->query.len));
    /* RFC 3875 4.1.2 and 4.1.3: set only when there is a body / a type. */
    if (req->body.len > 0)
        TRY(env_addf(&e, "CONTENT_LENGTH", "%u", req->body.len));
    if (ctype && !has_nul(*ctype))
        TRY(env_add(&e, "CONTENT_TYPE", ctype->p, ctype->len));
    if (raddr && !has_nul(*raddr))
        TRY(env_add(&e, "REMOTE_ADDR", raddr->p, raddr->len));
    TRY(env_add_headers(&e, req));
    size_t n_meta = e.n;
    for (size_t i = 0; base && base[i]; i++) {
        const char *eq = strchr(base[i], '=');
        if (!eq || eq == base[i])
            continue;
        size_t nl = (size_t)(eq - base[i]);
        bool shadowed = false;
        for (size_t j = 0; j < n_meta && !shadowed; j++)
            shadowed = strncmp(e.v[j], base[i], nl) == 0 && e.v[j][nl] == '=';
        if (!shadowed) {
            char name[256];
            if (nl >= sizeof(name))
                continue;
            memcpy(name, base[i], nl);
            name[nl] = '\0';
            TRY(env_add(&e, name, eq + 1, strlen(eq + 1)));
        }
    }
#undef TRY
    *out = e.v; /* never NULL: the meta-variables above are always there */
    return 0;
fail:
    agent__cgi_env_free(e.v);
    return r;
}

void agent__cgi_env_free(char **env)
{
    for (size_t i = 0; env && env[i]; i++)
        free(env[i]);
    free(env);
}

const char *agent__cgi_env_get(char *const *env, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; env && env[i]; i++)
        if (strncmp(env[i], name, nl) == 0 && env[i][nl] == '=')
            return env[i] + nl + 1;
    return NULL;
}

/* ---- an exec handler's output ---- */

static int bad(char *why, size_t why_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int bad(char *why, size_t why_len, const char *fmt, ...)
{
    if (why && why_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, why_len, fmt, ap);
        va_end(ap);
    }
    return -EBADMSG;
}

/* Does the first line of @buf start "token:"? Then the output opens with a
 * header block. */
static bool starts_with_header(const char *buf, size_t len)
{
    size_t i = 0;
    while (i < len && buf[i] != ':' && buf[i] != '\n')
        i++;
    return i < len && buf[i] == ':' && agent__http_token_valid(buf, i);
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* "NNN reason" -> NNN in 100..599. */
static int parse_status(const char *v, size_t len)
{
    if (len < 3 || (len > 3 && v[3] != ' '))
        return -1;
    int code = 0;
    for (int i = 0; i < 3; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        code = code * 10 + (v[i] - '0');
    }
    return code >= 100 && code <= 599 ? code : -1;
}

int agent__cgi_parse(const char *buf, size_t len, struct cgi_output *out, char *why, size_t why_len)
{
    memset(out, 0, sizeof(*out));
    out->status = 200;
    if (!starts_with_header(buf, len)) {
        out->body = buf;
        out->body_len = len;
        return 0;
    }

    bool have_status = false, have_location = false;
    size_t pos = 0;
    for (;;) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        if (!nl) {
            if (len - pos > CGI_HEADER_BLOCK_MAX || pos > CGI_HEADER_BLOCK_MAX)
                return bad(why, why_len, "CGI header block over %u bytes", CGI_HEADER_BLOCK_MAX);
            return bad(why, why_len, "CGI header block not ended by an empty line");
        }
        const char *line = buf + pos;
        size_t line_len = (size_t)(nl - line);
        pos += line_len + 1;
        if (pos > CGI_HEADER_BLOCK_MAX)
            return bad(why, why_len, "CGI header block over %u bytes", CGI_HEADER_BLOCK_MAX);
        if (line_len > 0 && line[line_len - 1] == '\r')
            line_len--;
        if (line_len == 0)
            break;

        if (is_ows(line[0]))
            return bad(why, why_len, "CGI header block: folded line");
        const char *colon = memchr(line, ':', line_len);
        if (!colon)
            return bad(why, why_len, "CGI header line without ':'");
        size_t name_len = (size_t)(colon - line);
        if (!agent__http_token_valid(line, name_len))
            return bad(why, why_len, "CGI header name is not a token");
        const char *v = colon + 1, *vend = line + line_len;
        while (v < vend && is_ows(*v))
            v++;
        while (vend > v && is_ows(vend[-1]))
            vend--;
        size_t vlen = (size_t)(vend - v);
        if (!agent__http_value_valid(v, vlen))
            return bad(why, why_len, "CGI header '%.*s': control character in value",
                       (int)(name_len > 64 ? 64 : name_len), line);

        if (name_is(line, name_len, "Status")) {
            int code = parse_status(v, vlen);
            if (have_status || code < 0)
                return bad(why, why_len, "CGI Status: '%.*s' is not one 'NNN reason'",
                           (int)(vlen > 64 ? 64 : vlen), v);
            have_status = true;
            out->status = code;
            continue;
        }
        if (name_is(line, name_len, "Location")) {
            if (vlen == 0)
                return bad(why, why_len, "CGI Location: empty");
            have_location = true;
        }
        if (agent__http_header_dropped(line, name_len))
            continue;
        if (out->n_headers == CGI_HEADERS_MAX)
            return bad(why, why_len, "CGI header block: more than %u headers", CGI_HEADERS_MAX);
        struct proto_pair *h = &out->headers[out->n_headers++];
        h->key.p = line;
        h->key.len = (uint32_t)name_len;
        h->value.p = v;
        h->value.len = (uint32_t)vlen;
    }
    if (have_location && !have_status)
        out->status = 302;
    out->body = buf + pos;
    out->body_len = len - pos;
    return 0;
}
