/* Unit tests of ember-agent's CGI/1.1 rules (sandbox/agent/cgi.c): the
 * meta-variables an exec handler sees and the output it may print. */
#include <criterion/criterion.h>
#include <string.h>

#include "sandbox/agent/agent.h"
#include "sandbox/agent/cgi.c"
#include "sandbox/sandbox.h"

#define S(lit) ((struct proto_str){(lit), sizeof(lit) - 1})

static struct proto_request *request(void)
{
    static struct proto_request r;
    memset(&r, 0, sizeof(r));
    r.method = S("POST");
    r.path = S("/a/b");
    r.query = S("x=1&y=two");
    r.body = S("hello");
    return &r;
}

static void add_header(struct proto_request *r, const char *k, const char *v)
{
    r->headers[r->n_headers].key = (struct proto_str){k, (uint32_t)strlen(k)};
    r->headers[r->n_headers].value = (struct proto_str){v, (uint32_t)strlen(v)};
    r->n_headers++;
}

static const struct cgi_server srv = {.function = "echo", .software = "ember/1"};

static char **build(const struct proto_request *r, char *const *base)
{
    char **env = NULL;
    cr_assert_eq(agent__cgi_env_build(&srv, r, base, &env), 0);
    cr_assert_not_null(env);
    return env;
}

static size_t count(char **env)
{
    size_t n = 0;
    while (env[n])
        n++;
    return n;
}

Test(cgi_env, rfc3875_meta_variables)
{
    struct proto_request *r = request();
    add_header(r, "Content-Type", "text/plain");
    add_header(r, "Content-Length", "5");
    add_header(r, "Host", "example.org:8080");
    char **env = build(r, NULL);
    cr_assert_str_eq(agent__cgi_env_get(env, "GATEWAY_INTERFACE"), "CGI/1.1");
    cr_assert_str_eq(agent__cgi_env_get(env, "SERVER_PROTOCOL"), "HTTP/1.1");
    cr_assert_str_eq(agent__cgi_env_get(env, "SERVER_SOFTWARE"), "ember/1");
    cr_assert_str_eq(agent__cgi_env_get(env, "SERVER_NAME"), "example.org");
    cr_assert_str_eq(agent__cgi_env_get(env, "SERVER_PORT"), "8080");
    cr_assert_str_eq(agent__cgi_env_get(env, "REQUEST_METHOD"), "POST");
    cr_assert_str_eq(agent__cgi_env_get(env, "SCRIPT_NAME"), "/fn/echo");
    cr_assert_str_eq(agent__cgi_env_get(env, "PATH_INFO"), "/a/b");
    cr_assert_str_eq(agent__cgi_env_get(env, "QUERY_STRING"), "x=1&y=two");
    cr_assert_str_eq(agent__cgi_env_get(env, "CONTENT_LENGTH"), "5");
    cr_assert_str_eq(agent__cgi_env_get(env, "CONTENT_TYPE"), "text/plain");
    cr_assert_str_eq(agent__cgi_env_get(env, "HTTP_HOST"), "example.org:8080");
    /* Content-* travel as CONTENT_*, never HTTP_CONTENT_*. */
    cr_assert_null(agent__cgi_env_get(env, "HTTP_CONTENT_TYPE"));
    cr_assert_null(agent__cgi_env_get(env, "HTTP_CONTENT_LENGTH"));
    cr_assert_null(agent__cgi_env_get(env, "REMOTE_ADDR"));
    agent__cgi_env_free(env);
}

Test(cgi_env, empty_request)
{
    struct proto_request *r = request();
    r->method = S("GET");
    r->path = S("/");
    r->query = S("");
    r->body = S("");
    char **env = build(r, NULL);
    cr_assert_str_eq(agent__cgi_env_get(env, "QUERY_STRING"), "");
    cr_assert_str_eq(agent__cgi_env_get(env, "PATH_INFO"), "/");
    cr_assert_str_eq(agent__cgi_env_get(env, "SERVER_NAME"), "localhost");
    cr_assert_str_eq(agent__cgi_env_get(env, "SERVER_PORT"), "80");
    cr_assert_null(agent__cgi_env_get(env, "CONTENT_LENGTH"));
    cr_assert_null(agent__cgi_env_get(env, "CONTENT_TYPE"));
    agent__cgi_env_free(env);
}

Test(cgi_env, http_headers)
{
    struct proto_request *r = request();
    add_header(r, "X-Forwarded-Proto", "https");
    add_header(r, "accept", "text/html");
    add_header(r, "Accept", "application/json");
    add_header(r, "X_Sneaky", "aliases X-Sneaky");
    add_header(r, "Proxy", "http://evil:8080");
    add_header(r, "Host", "[::1]:9000");
    add_header(r, CGI_REMOTE_ADDR_HEADER, "192.0.2.7");
    add_header(r, "X-Weird!", "not a shell name");
    char **env = build(r, NULL);
    cr_assert_str_eq(agent__cgi_env_get(env, "HTTP_X_FORWARDED_PROTO"), "https");
    cr_assert_str_eq(agent__cgi_env_get(env, "HTTP_ACCEPT"), "text/html, application/json");
    cr_assert_null(agent__cgi_env_get(env, "HTTP_X_SNEAKY"));
    cr_assert_null(agent__cgi_env_get(env, "HTTP_PROXY"), "httpoxy");
    cr_assert_null(agent__cgi_env_get(env, "HTTP_X_WEIRD!"));
    cr_assert_str_eq(agent__cgi_env_get(env, "SERVER_NAME"), "[::1]");
    cr_assert_str_eq(agent__cgi_env_get(env, "SERVER_PORT"), "9000");
    cr_assert_str_eq(agent__cgi_env_get(env, "REMOTE_ADDR"), "192.0.2.7");
    cr_assert_null(agent__cgi_env_get(env, "HTTP_X_EMBER_REMOTE_ADDR"));
    agent__cgi_env_free(env);
}

Test(cgi_env, header_with_nul_is_skipped)
{
    struct proto_request *r = request();
    r->headers[0].key = S("X-Nul");
    r->headers[0].value = (struct proto_str){"a\0b", 3};
    r->n_headers = 1;
    char **env = build(r, NULL);
    cr_assert_null(agent__cgi_env_get(env, "HTTP_X_NUL"));
    agent__cgi_env_free(env);
}

Test(cgi_env, base_environment_follows_and_never_shadows)
{
    struct proto_request *r = request();
    const char *base[] = {
        "PATH=/usr/bin:/bin", "GREETING=hi", "REQUEST_METHOD=FAKE", "QUERY_STRING=fake", "noequals",
        "=novalue",           NULL};
    char **env = build(r, (char *const *)base); /* execve's type */
    cr_assert_str_eq(agent__cgi_env_get(env, "PATH"), "/usr/bin:/bin");
    cr_assert_str_eq(agent__cgi_env_get(env, "GREETING"), "hi");
    cr_assert_str_eq(agent__cgi_env_get(env, "REQUEST_METHOD"), "POST");
    cr_assert_str_eq(agent__cgi_env_get(env, "QUERY_STRING"), "x=1&y=two");
    size_t n = count(env), methods = 0;
    for (size_t i = 0; i < n; i++) {
        cr_assert_not_null(strchr(env[i], '='), "%s", env[i]);
        methods += strncmp(env[i], "REQUEST_METHOD=", 15) == 0;
    }
    cr_assert_eq(methods, 1);
    agent__cgi_env_free(env);
}

static int parse(const char *text, struct cgi_output *o, char *why)
{
    return agent__cgi_parse(text, strlen(text), o, why, 160);
}

Test(cgi_parse, no_header_block_is_all_body)
{
    struct cgi_output o;
    char why[160];
    const char *text = "hello world\nsecond line\n";
    cr_assert_eq(parse(text, &o, why), 0);
    cr_assert_eq(o.status, 200);
    cr_assert_eq(o.n_headers, 0);
    cr_assert_eq(o.body, text);
    cr_assert_eq(o.body_len, strlen(text));

    cr_assert_eq(parse("<html>: not a header\n", &o, why), 0, "space in the name");
    cr_assert_eq(o.body_len, strlen("<html>: not a header\n"));
    cr_assert_eq(parse("", &o, why), 0);
    cr_assert_eq(o.status, 200);
    cr_assert_eq(o.body_len, 0);
    cr_assert_eq(parse("\nbody", &o, why), 0);
    cr_assert_eq(o.body_len, 5);
}

Test(cgi_parse, status_and_headers_lf)
{
    struct cgi_output o;
    char why[160];
    const char *text = "Status: 404 Not Found\nContent-Type: text/plain\nX-A:  spaced value \t\n"
                       "\nthe body\n";
    cr_assert_eq(parse(text, &o, why), 0, "%s", why);
    cr_assert_eq(o.status, 404);
    cr_assert_eq(o.n_headers, 2);
    cr_assert(proto_str_eq(o.headers[0].key, "Content-Type"));
    cr_assert(proto_str_eq(o.headers[0].value, "text/plain"));
    cr_assert(proto_str_eq(o.headers[1].key, "X-A"));
    cr_assert(proto_str_eq(o.headers[1].value, "spaced value"));
    cr_assert_eq(o.body_len, strlen("the body\n"));
    cr_assert_eq(memcmp(o.body, "the body\n", o.body_len), 0);
}

Test(cgi_parse, crlf_and_empty_body)
{
    struct cgi_output o;
    char why[160];
    cr_assert_eq(parse("Content-Type: text/html\r\nStatus: 201\r\n\r\n", &o, why), 0, "%s", why);
    cr_assert_eq(o.status, 201);
    cr_assert_eq(o.n_headers, 1);
    cr_assert(proto_str_eq(o.headers[0].value, "text/html"));
    cr_assert_eq(o.body_len, 0);
    /* The body keeps its own CRLFs. */
    cr_assert_eq(parse("A: b\r\n\r\nx\r\ny\r\n", &o, why), 0);
    cr_assert_eq(o.body_len, 6);
}

Test(cgi_parse, location_redirects)
{
    struct cgi_output o;
    char why[160];
    cr_assert_eq(parse("Location: https://example.org/\n\n", &o, why), 0);
    cr_assert_eq(o.status, 302);
    cr_assert(proto_str_eq(o.headers[0].key, "Location"));
    cr_assert_eq(parse("Status: 301 Moved\nLocation: /x\n\n", &o, why), 0);
    cr_assert_eq(o.status, 301);
}

Test(cgi_parse, hop_by_hop_and_length_dropped)
{
    struct cgi_output o;
    char why[160];
    const char *text = "Connection: close\nKeep-Alive: 5\nTransfer-Encoding: chunked\nTE: x\n"
                       "Trailer: y\nUpgrade: h2c\nProxy-Authenticate: z\nContent-Length: 99\n"
                       "X-Kept: 1\n\nbody";
    cr_assert_eq(parse(text, &o, why), 0, "%s", why);
    cr_assert_eq(o.n_headers, 1);
    cr_assert(proto_str_eq(o.headers[0].key, "X-Kept"));
    cr_assert_eq(o.body_len, 4);
}

Test(cgi_parse, malformed)
{
    struct cgi_output o;
    char why[160];
    static const char *const bad[] = {
        "Content-Type: text/plain\n", /* never ended */
        "Content-Type: text/plain",   /* no newline at all */
        "Content-Type: text/plain\nno colon here\n\n",
        "Content-Type: text/plain\n folded\n\n",
        "Status: abc\n\n",
        "Status: 99 Too Low\n\n",
        "Status: 600 Too High\n\n",
        "Status: 200\nStatus: 404\n\n",
        "Status: 2000\n\n",
        "X-Ctl: a\x01"
        "b\n\n",
        "X-Cr: a\rb\n\n",
        "Location:\n\n",
        "A: b\nBad Name: c\n\n",
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        why[0] = '\0';
        cr_assert_eq(parse(bad[i], &o, why), -EBADMSG, "case %zu: %s", i, bad[i]);
        cr_assert_neq(why[0], '\0', "case %zu has a reason", i);
    }
}

Test(cgi_parse, limits)
{
    struct cgi_output o;
    char why[160];
    /* Too many headers. */
    size_t n = (CGI_HEADERS_MAX + 1) * 8 + 2;
    char *text = malloc(n + 1);
    size_t at = 0;
    for (unsigned i = 0; i <= CGI_HEADERS_MAX; i++)
        at += (size_t)sprintf(text + at, "X%03u: v\n", i);
    text[at++] = '\n';
    cr_assert_eq(agent__cgi_parse(text, at, &o, why, sizeof(why)), -EBADMSG);
    free(text);

    /* A header block over CGI_HEADER_BLOCK_MAX, ended or not. */
    n = CGI_HEADER_BLOCK_MAX + 64;
    text = malloc(n);
    memcpy(text, "X-Long: ", 8);
    memset(text + 8, 'a', n - 8);
    cr_assert_eq(agent__cgi_parse(text, n, &o, why, sizeof(why)), -EBADMSG);
    text[n - 2] = '\n';
    text[n - 1] = '\n';
    cr_assert_eq(agent__cgi_parse(text, n, &o, why, sizeof(why)), -EBADMSG);
    free(text);
}

Test(cgi_parse, binary_body_after_headers)
{
    struct cgi_output o;
    char why[160];
    const char text[] = "Content-Type: application/octet-stream\n\n\0\x01\xff\n";
    cr_assert_eq(agent__cgi_parse(text, sizeof(text) - 1, &o, why, sizeof(why)), 0);
    cr_assert_eq(o.body_len, 4);
    cr_assert_eq(o.body[0], '\0');
}

Test(http_rules, tokens_values_dropped)
{
    cr_assert(agent__http_token_valid("X-Good_1", 8));
    cr_assert_not(agent__http_token_valid("", 0));
    cr_assert_not(agent__http_token_valid("Bad Name", 8));
    cr_assert_not(agent__http_token_valid("Bad:", 4));
    cr_assert_not(agent__http_token_valid("a\0b", 3));
    cr_assert(agent__http_value_valid("tab\tok \xc3\xa9", 9));
    cr_assert_not(agent__http_value_valid("a\r\nb", 4));
    cr_assert_not(agent__http_value_valid("a\0b", 3));
    cr_assert_not(agent__http_value_valid("del\x7f", 4));
    cr_assert(agent__http_header_dropped("connection", 10));
    cr_assert(agent__http_header_dropped("Proxy-Connection", 16));
    cr_assert(agent__http_header_dropped("content-length", 14));
    cr_assert_not(agent__http_header_dropped("Content-Type", 12));
    cr_assert_not(agent__http_header_dropped("Proxy", 5));
}

Test(agent, response_limit_matches_the_sandbox_interface)
{
    cr_assert_eq(AGENT_RESPONSE_MAX, SANDBOX_RESPONSE_MAX);
}
