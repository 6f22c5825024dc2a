/* test_api.c - the HTTP API and the function store against the real emberd:
 * deploy, list, get, redeploy, delete; pipelining, chunked bodies and every
 * transport limit; restart and kill -9 durability; hostile packages. None of
 * these needs a sandbox, so they run anywhere. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

static const char *const MANIFEST_EXEC = "{\"runtime\": \"exec\", \"handler\": \"run.sh\"}";
static const char BAD_MEM[] = "{\"runtime\":\"exec\",\"handler\":\"run.sh\",\"memory_mb\":1}";
static const char BAD_FIELD[] = "{\"runtime\":\"exec\",\"handler\":\"run.sh\",\"colour\":1}";
static const char SCRIPT[] = "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho hi\n";

/* A small valid package (exec runtime) at a temp path, varied by @salt. */
static void make_pkg(char *path, size_t len, const char *salt, enum pkg_format fmt)
{
    static int seq;
    snprintf(path, len, "/tmp/ember-api-%d-%d.pkg", getpid(), ++seq);
    struct pkg_entry e[] = {
        {.path = "function.json", .kind = PKG_FILE, .data = MANIFEST_EXEC,
         .len = strlen(MANIFEST_EXEC)},
        {.path = "run.sh", .kind = PKG_FILE, .data = SCRIPT, .len = sizeof(SCRIPT) - 1,
         .mode = 0755},
        {.path = "salt.txt", .kind = PKG_FILE, .data = salt, .len = strlen(salt)},
    };
    cr_assert_eq(pkg_write(path, fmt, e, 3), 0);
}

static json_t *body_json(const struct resp *r)
{
    json_error_t err;
    json_t *j = json_loads(r->body, 0, &err);
    cr_assert(j, "response is not JSON: %s (%s)", r->body, err.text);
    return j;
}

static const char *jstr(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    cr_assert(s, "no string '%s' in %s", key, json_dumps(o, 0));
    return s;
}

static struct emberd d;

static void start(void)
{
    memset(&d, 0, sizeof(d));
    cr_assert_eq(emberd_start(&d, NULL), 0);
}

static void stop(void)
{
    if (d.pid > 0)
        cr_expect_eq(emberd_stop(&d), 0, "emberd must exit 0 on SIGTERM");
    emberd_cleanup(&d);
}

TestSuite(api, .init = start, .fini = stop, .timeout = 60);

Test(api, healthz_and_404)
{
    struct resp r;
    cr_assert_eq(http_call(d.port, "GET", "/healthz", NULL, NULL, 0, &r), 0);
    cr_expect_eq(r.status, 200);
    resp_free(&r);
    cr_assert_eq(http_call(d.port, "GET", "/nope", NULL, NULL, 0, &r), 0);
    cr_expect_eq(r.status, 404);
    json_t *j = body_json(&r);
    cr_expect_str_eq(jstr(j, "error"), "not found");
    json_decref(j);
    resp_free(&r);
    cr_assert_eq(http_call(d.port, "GET", "/v1/functions/nothere", NULL, NULL, 0, &r), 0);
    cr_expect_eq(r.status, 404);
    resp_free(&r);
    cr_assert_eq(http_call(d.port, "POST", "/v1/functions", NULL, "", 0, &r), 0);
    cr_expect_eq(r.status, 405);
    char *allow = resp_header(&r, "Allow");
    cr_expect(allow && strstr(allow, "GET"));
    free(allow);
    resp_free(&r);
}

Test(api, deploy_list_get_redeploy_delete)
{
    char pkg1[256], pkg2[256];
    make_pkg(pkg1, sizeof(pkg1), "one", PKG_TAR_GZ);
    make_pkg(pkg2, sizeof(pkg2), "two", PKG_ZIP);
    struct resp r;

    cr_assert_eq(deploy_file(d.port, "fn-a", pkg1, &r), 201, "%s", r.body);
    json_t *j = body_json(&r);
    cr_expect_str_eq(jstr(j, "name"), "fn-a");
    cr_expect_str_eq(jstr(j, "runtime"), "exec");
    char v1[80];
    snprintf(v1, sizeof(v1), "%s", jstr(j, "version"));
    cr_expect_eq(strlen(v1), 64, "version is a SHA-256 digest");
    cr_expect_eq(json_integer_value(json_object_get(j, "memory_mb")), 128, "default filled in");
    json_decref(j);
    resp_free(&r);

    /* identical bytes: a no-op, 200, same version */
    cr_assert_eq(deploy_file(d.port, "fn-a", pkg1, &r), 200, "%s", r.body);
    j = body_json(&r);
    cr_expect_str_eq(jstr(j, "version"), v1);
    json_decref(j);
    resp_free(&r);

    /* new bytes (zip this time): new version, 200 */
    cr_assert_eq(deploy_file(d.port, "fn-a", pkg2, &r), 200, "%s", r.body);
    j = body_json(&r);
    cr_expect_str_neq(jstr(j, "version"), v1);
    json_decref(j);
    resp_free(&r);

    cr_assert_eq(deploy_file(d.port, "fn-b", pkg1, &r), 201);
    resp_free(&r);

    cr_assert_eq(http_call(d.port, "GET", "/v1/functions", NULL, NULL, 0, &r), 0);
    cr_expect_eq(r.status, 200);
    j = body_json(&r);
    json_t *arr = json_object_get(j, "functions");
    cr_assert_eq(json_array_size(arr), 2);
    cr_expect_str_eq(jstr(json_array_get(arr, 0), "name"), "fn-a");
    cr_expect_str_eq(jstr(json_array_get(arr, 1), "name"), "fn-b");
    json_decref(j);
    resp_free(&r);

    cr_assert_eq(http_call(d.port, "GET", "/v1/functions/fn-b", NULL, NULL, 0, &r), 0);
    cr_expect_eq(r.status, 200);
    j = body_json(&r);
    cr_expect(json_is_object(json_object_get(j, "stats")), "record carries counters");
    json_decref(j);
    resp_free(&r);

    cr_assert_eq(http_call(d.port, "DELETE", "/v1/functions/fn-b", NULL, NULL, 0, &r), 0);
    cr_expect_eq(r.status, 200);
    resp_free(&r);
    cr_assert_eq(http_call(d.port, "GET", "/v1/functions/fn-b", NULL, NULL, 0, &r), 0);
    cr_expect_eq(r.status, 404);
    resp_free(&r);
    cr_assert_eq(http_call(d.port, "DELETE", "/v1/functions/fn-b", NULL, NULL, 0, &r), 0);
    cr_expect_eq(r.status, 404);
    resp_free(&r);
    unlink(pkg1);
    unlink(pkg2);
}

Test(api, bad_names_and_paths)
{
    const char *bad[] = {"/v1/functions/Upper", "/v1/functions/-dash",
                         "/v1/functions/a_b", "/fn/x%20y",
                         "/v1/functions/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct resp r;
        cr_assert_eq(http_call(d.port, "GET", bad[i], NULL, NULL, 0, &r), 0);
        cr_expect_eq(r.status, 400, "%s -> %d", bad[i], r.status);
        resp_free(&r);
    }
    /* bad percent-encoding and a malformed request line */
    int fd = tcp_connect(d.port);
    const char *req = "GET /v1/functions/%zz HTTP/1.1\r\nHost: x\r\n\r\n";
    tcp_send_all(fd, req, strlen(req));
    char *out = tcp_read_all(fd, 2000, NULL);
    cr_expect(strncmp(out, "HTTP/1.1 400", 12) == 0, "%s", out);
    cr_expect(strstr(out, "\"error\""), "JSON error body: %s", out);
    free(out);
    close(fd);
    fd = tcp_connect(d.port);
    req = "GARBAGE\r\n\r\n";
    tcp_send_all(fd, req, strlen(req));
    out = tcp_read_all(fd, 2000, NULL);
    cr_expect(strncmp(out, "HTTP/1.1 400", 12) == 0, "%s", out);
    free(out);
    close(fd);
}

Test(api, pipelined_and_chunked)
{
    char pkg[256];
    make_pkg(pkg, sizeof(pkg), "pipe", PKG_TAR_GZ);
    size_t len;
    char *data = read_file(pkg, &len);

    /* three requests in one write, answered in order on one connection */
    int fd = tcp_connect(d.port);
    const char *reqs = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                       "GET /v1/functions/none HTTP/1.1\r\nHost: x\r\n\r\n"
                       "GET /v1/functions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    tcp_send_all(fd, reqs, strlen(reqs));
    char *out = tcp_read_all(fd, 5000, NULL);
    char *a = strstr(out, "HTTP/1.1 200"), *b = strstr(out, "HTTP/1.1 404");
    cr_assert(a && b, "%s", out);
    cr_expect(a < b, "answered in order");
    cr_expect(strstr(b + 1, "HTTP/1.1 200"), "third answered after the second");
    free(out);
    close(fd);

    /* a chunked deploy, in small chunks */
    fd = tcp_connect(d.port);
    const char *head = "PUT /v1/functions/chunky HTTP/1.1\r\nHost: x\r\n"
                       "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    tcp_send_all(fd, head, strlen(head));
    for (size_t off = 0; off < len; off += 100) {
        size_t n = len - off < 100 ? len - off : 100;
        char sz[32];
        snprintf(sz, sizeof(sz), "%zx\r\n", n);
        tcp_send_all(fd, sz, strlen(sz));
        tcp_send_all(fd, data + off, n);
        tcp_send_all(fd, "\r\n", 2);
    }
    tcp_send_all(fd, "0\r\n\r\n", 5);
    out = tcp_read_all(fd, 10000, NULL);
    cr_expect(strncmp(out, "HTTP/1.1 201", 12) == 0, "%s", out);
    free(out);
    close(fd);

    /* Expect: 100-continue */
    fd = tcp_connect(d.port);
    char hdr[256];
    snprintf(hdr, sizeof(hdr),
             "PUT /v1/functions/cont HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n"
             "Expect: 100-continue\r\nConnection: close\r\n\r\n", len);
    tcp_send_all(fd, hdr, strlen(hdr));
    out = tcp_read_all(fd, 2000, NULL);
    cr_expect(strncmp(out, "HTTP/1.1 100", 12) == 0, "%s", out);
    free(out);
    tcp_send_all(fd, data, len);
    out = tcp_read_all(fd, 10000, NULL);
    cr_expect(strstr(out, "HTTP/1.1 201"), "%s", out);
    free(out);
    close(fd);
    free(data);
    unlink(pkg);
}

Test(api, limits)
{
    struct resp r;
    /* header bytes -> 431 */
    char *big = malloc(20000);
    memset(big, 'a', 19999);
    big[19999] = '\0';
    char *hdr = malloc(20100);
    snprintf(hdr, 20100, "X-Big: %s", big);
    const char *hdrs[] = {hdr, NULL};
    cr_assert_eq(http_call(d.port, "GET", "/healthz", hdrs, NULL, 0, &r), 0);
    cr_expect_eq(r.status, 431);
    resp_free(&r);
    free(hdr);
    free(big);

    /* body over the invoke limit -> 413, decided from Content-Length */
    int fd = tcp_connect(d.port);
    const char *req = "POST /fn/whatever HTTP/1.1\r\nHost: x\r\nContent-Length: 7340032\r\n\r\n";
    tcp_send_all(fd, req, strlen(req));
    char *out = tcp_read_all(fd, 3000, NULL);
    /* unknown function answers 404 before the body; deploy an app first */
    cr_expect(strncmp(out, "HTTP/1.1 404", 12) == 0 || strncmp(out, "HTTP/1.1 413", 12) == 0,
              "%s", out);
    free(out);
    close(fd);

    fd = tcp_connect(d.port);
    req = "PUT /v1/functions/huge HTTP/1.1\r\nHost: x\r\nContent-Length: 70000000\r\n\r\n";
    tcp_send_all(fd, req, strlen(req));
    out = tcp_read_all(fd, 3000, NULL);
    cr_expect(strncmp(out, "HTTP/1.1 413", 12) == 0, "%s", out);
    free(out);
    close(fd);
}

Test(api, slowloris_gets_408)
{
    emberd_stop(&d);
    emberd_cleanup(&d);
    memset(&d, 0, sizeof(d));
    const char *args[] = {"--header-timeout-ms", "300", NULL};
    cr_assert_eq(emberd_start(&d, args), 0);
    int fd = tcp_connect(d.port);
    tcp_send_all(fd, "GET /healthz HTTP/1.1\r\nHost:", 28);
    char *out = tcp_read_all(fd, 3000, NULL);
    cr_expect(strncmp(out, "HTTP/1.1 408", 12) == 0, "%s", out);
    free(out);
    close(fd);
}

Test(api, hostile_packages_rejected_store_unchanged)
{
    char good[256];
    make_pkg(good, sizeof(good), "keep", PKG_TAR_GZ);
    struct resp r;
    cr_assert_eq(deploy_file(d.port, "victim", good, &r), 201);
    json_t *j = body_json(&r);
    char version[80];
    snprintf(version, sizeof(version), "%s", jstr(j, "version"));
    json_decref(j);
    resp_free(&r);

    const char *fj = MANIFEST_EXEC;
    struct {
        const char *what;
        struct pkg_entry e[3];
        size_t n;
        const char *needle;
    } cases[] = {
        {"absolute path", {{.path = "function.json", .kind = PKG_FILE, .data = fj, .len = strlen(fj)},
                           {.path = "/etc/evil", .kind = PKG_FILE, .data = "x", .len = 1}}, 2, "/etc/evil"},
        {"dot-dot", {{.path = "function.json", .kind = PKG_FILE, .data = fj, .len = strlen(fj)},
                     {.path = "a/../../evil", .kind = PKG_FILE, .data = "x", .len = 1}}, 2, "evil"},
        {"symlink out", {{.path = "function.json", .kind = PKG_FILE, .data = fj, .len = strlen(fj)},
                         {.path = "run.sh", .kind = PKG_SYMLINK, .link = "../../../etc/passwd"}}, 2, "run.sh"},
        {"hard link", {{.path = "function.json", .kind = PKG_FILE, .data = fj, .len = strlen(fj)},
                       {.path = "run.sh", .kind = PKG_HARDLINK, .link = "function.json"}}, 2, "run.sh"},
        {"device", {{.path = "function.json", .kind = PKG_FILE, .data = fj, .len = strlen(fj)},
                    {.path = "null", .kind = PKG_CHARDEV}}, 2, "null"},
        {"fifo", {{.path = "function.json", .kind = PKG_FILE, .data = fj, .len = strlen(fj)},
                  {.path = "pipe", .kind = PKG_FIFO}}, 2, "pipe"},
        {"setuid", {{.path = "function.json", .kind = PKG_FILE, .data = fj, .len = strlen(fj)},
                    {.path = "run.sh", .kind = PKG_FILE, .data = SCRIPT, .len = 5, .mode = 04755}}, 2, "run.sh"},
        {"no manifest", {{.path = "run.sh", .kind = PKG_FILE, .data = SCRIPT, .len = 5, .mode = 0755}}, 1,
         "function.json"},
        {"bad manifest", {{.path = "function.json", .kind = PKG_FILE, .data = BAD_MEM, .len = sizeof(BAD_MEM) - 1},
                          {.path = "run.sh", .kind = PKG_FILE, .data = SCRIPT, .len = 5, .mode = 0755}}, 2, "memory_mb"},
        {"unknown field", {{.path = "function.json", .kind = PKG_FILE, .data = BAD_FIELD, .len = sizeof(BAD_FIELD) - 1},
                           {.path = "run.sh", .kind = PKG_FILE, .data = SCRIPT, .len = 5, .mode = 0755}}, 2, "colour"},
        {"missing handler", {{.path = "function.json", .kind = PKG_FILE, .data = fj, .len = strlen(fj)}}, 1, "run.sh"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char path[256];
        snprintf(path, sizeof(path), "/tmp/ember-hostile-%d-%zu.tar.gz", getpid(), i);
        cr_assert_eq(pkg_write(path, PKG_TAR_GZ, cases[i].e, cases[i].n), 0, "%s", cases[i].what);
        int status = deploy_file(d.port, "victim", path, &r);
        cr_expect_eq(status, 400, "%s: got %d %s", cases[i].what, status, r.body);
        cr_expect(r.body && strstr(r.body, cases[i].needle), "%s: message names '%s': %s",
                  cases[i].what, cases[i].needle, r.body);
        resp_free(&r);
        unlink(path);
    }
    /* a compression bomb: 300 MiB of zeros, over the 256 MiB unpack cap */
    char bomb[256];
    snprintf(bomb, sizeof(bomb), "/tmp/ember-bomb-%d.tar.gz", getpid());
    struct pkg_entry be[] = {
        {.path = "function.json", .kind = PKG_FILE, .data = fj, .len = strlen(fj)},
        {.path = "zeros", .kind = PKG_FILE, .size_override = 300ll << 20},
    };
    cr_assert_eq(pkg_write(bomb, PKG_TAR_GZ, be, 2), 0);
    int status = deploy_file(d.port, "victim", bomb, &r);
    cr_expect_eq(status, 400, "bomb: %d %s", status, r.body);
    resp_free(&r);
    unlink(bomb);

    /* the store is unchanged: same version, and nothing left in its tmp */
    cr_assert_eq(http_call(d.port, "GET", "/v1/functions/victim", NULL, NULL, 0, &r), 0);
    j = body_json(&r);
    cr_expect_str_eq(jstr(j, "version"), version);
    json_decref(j);
    resp_free(&r);
    unlink(good);
}

Test(api, restart_and_kill9_durability)
{
    char pkg1[256], pkg2[256];
    make_pkg(pkg1, sizeof(pkg1), "v1", PKG_TAR_GZ);
    struct resp r;
    cr_assert_eq(deploy_file(d.port, "durable", pkg1, &r), 201);
    json_t *j = body_json(&r);
    char version[80];
    snprintf(version, sizeof(version), "%s", jstr(j, "version"));
    json_decref(j);
    resp_free(&r);

    /* restart: the function is found again */
    cr_assert_eq(emberd_stop(&d), 0);
    cr_assert_eq(emberd_start(&d, NULL), 0);
    cr_assert_eq(http_call(d.port, "GET", "/v1/functions/durable", NULL, NULL, 0, &r), 0);
    cr_assert_eq(r.status, 200);
    j = body_json(&r);
    cr_expect_str_eq(jstr(j, "version"), version);
    json_decref(j);
    resp_free(&r);

    /* kill -9 in the middle of an upload of a new version */
    make_pkg(pkg2, sizeof(pkg2), "v2-but-never-finished", PKG_TAR_GZ);
    size_t len;
    char *data = read_file(pkg2, &len);
    int fd = tcp_connect(d.port);
    char hdr[256];
    snprintf(hdr, sizeof(hdr),
             "PUT /v1/functions/durable HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n",
             len + 100000);
    tcp_send_all(fd, hdr, strlen(hdr));
    tcp_send_all(fd, data, len);
    usleep(200000);
    emberd_kill9(&d);
    close(fd);
    free(data);

    cr_assert_eq(emberd_start(&d, NULL), 0);
    cr_assert_eq(http_call(d.port, "GET", "/v1/functions/durable", NULL, NULL, 0, &r), 0);
    cr_assert_eq(r.status, 200);
    j = body_json(&r);
    cr_expect_str_eq(jstr(j, "version"), version, "old version intact after kill -9");
    json_decref(j);
    resp_free(&r);
    unlink(pkg1);
    unlink(pkg2);
}

Test(api, token_required_on_v1)
{
    emberd_stop(&d);
    emberd_cleanup(&d);
    memset(&d, 0, sizeof(d));
    const char *args[] = {"--token", "s3cret", NULL};
    cr_assert_eq(emberd_start(&d, args), 0);
    struct resp r;
    cr_assert_eq(http_call(d.port, "GET", "/v1/functions", NULL, NULL, 0, &r), 0);
    cr_expect_eq(r.status, 401);
    resp_free(&r);
    const char *wrong[] = {"Authorization: Bearer s3cre", NULL};
    cr_assert_eq(http_call(d.port, "GET", "/v1/functions", wrong, NULL, 0, &r), 0);
    cr_expect_eq(r.status, 401);
    resp_free(&r);
    const char *right[] = {"Authorization: Bearer s3cret", NULL};
    cr_assert_eq(http_call(d.port, "GET", "/v1/functions", right, NULL, 0, &r), 0);
    cr_expect_eq(r.status, 200);
    resp_free(&r);
    cr_assert_eq(http_call(d.port, "GET", "/healthz", NULL, NULL, 0, &r), 0);
    cr_expect_eq(r.status, 200, "healthz stays open");
    resp_free(&r);
}

Test(api, refuses_public_address_without_token)
{
    char path[PATH_MAX];
    char cmd[PATH_MAX + 128];
    snprintf(cmd, sizeof(cmd), "%s --listen 0.0.0.0:0 --state /tmp/ember-never 2>/dev/null",
             build_path("emberd", path));
    int status = system(cmd);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 2, "status %d", status);
}

Test(api, metrics_are_prometheus_text)
{
    struct resp r;
    cr_assert_eq(http_call(d.port, "GET", "/metrics", NULL, NULL, 0, &r), 0);
    cr_assert_eq(r.status, 200);
    /* every non-comment line is "name{labels} value" or "name value" */
    char *save, *line;
    int samples = 0;
    for (line = strtok_r(r.body, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#') {
            cr_expect(strncmp(line, "# HELP ", 7) == 0 || strncmp(line, "# TYPE ", 7) == 0,
                      "%s", line);
            continue;
        }
        char *sp = strrchr(line, ' ');
        cr_assert(sp, "%s", line);
        char *end;
        strtod(sp + 1, &end);
        cr_expect(*end == '\0', "value parses: %s", line);
        cr_expect((line[0] >= 'a' && line[0] <= 'z') || line[0] == '_', "%s", line);
        samples++;
    }
    cr_expect(samples > 10);
    resp_free(&r);
}
