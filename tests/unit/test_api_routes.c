/* test_api_routes.c - the API's routing, function-name rules, token check
 * and query helpers, reached through api.c's and invoke.c's statics. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "gateway/api.c"
#include "gateway/invoke.c"

static int route(const char *path, enum route *r, char *name, const char **rest)
{
    name[0] = '\0';
    return route_match(path, r, name, rest);
}

Test(routes, fixed_paths)
{
    enum route r;
    char name[STORE_NAME_MAX + 1];
    const char *rest;
    cr_assert_eq(route("/healthz", &r, name, &rest), 0);
    cr_expect_eq(r, R_HEALTHZ);
    cr_assert_eq(route("/metrics", &r, name, &rest), 0);
    cr_expect_eq(r, R_METRICS);
    cr_assert_eq(route("/v1/pool", &r, name, &rest), 0);
    cr_expect_eq(r, R_POOL);
    cr_assert_eq(route("/v1/functions", &r, name, &rest), 0);
    cr_expect_eq(r, R_FUNCTIONS);
    cr_assert_eq(route("/v1/functions/", &r, name, &rest), 0);
    cr_expect_eq(r, R_FUNCTIONS);
    cr_expect_eq(route("/", &r, name, &rest), -ENOENT);
    cr_expect_eq(route("/v2/functions", &r, name, &rest), -ENOENT);
    cr_expect_eq(route("/healthz/x", &r, name, &rest), -ENOENT);
}

Test(routes, function_routes)
{
    enum route r;
    char name[STORE_NAME_MAX + 1];
    const char *rest;
    cr_assert_eq(route("/v1/functions/hello", &r, name, &rest), 0);
    cr_expect_eq(r, R_FUNCTION);
    cr_expect_str_eq(name, "hello");
    cr_assert_eq(route("/v1/functions/a-1/invoke", &r, name, &rest), 0);
    cr_expect_eq(r, R_INVOKE);
    cr_expect_str_eq(name, "a-1");
    cr_assert_eq(route("/v1/functions/x/logs", &r, name, &rest), 0);
    cr_expect_eq(r, R_LOGS);
    cr_expect_eq(route("/v1/functions/x/other", &r, name, &rest), -ENOENT);
    cr_assert_eq(route("/v1/invocations/0123abcd-7", &r, name, &rest), 0);
    cr_expect_eq(r, R_INVOCATION);
    cr_expect_eq(route("/v1/invocations/ZZ", &r, name, &rest), -ENOENT);
    cr_expect_eq(route("/v1/invocations/", &r, name, &rest), -ENOENT);
}

Test(routes, invoke_by_url_keeps_the_rest_of_the_path)
{
    enum route r;
    char name[STORE_NAME_MAX + 1];
    const char *rest;
    cr_assert_eq(route("/fn/hello", &r, name, &rest), 0);
    cr_expect_eq(r, R_FN_URL);
    cr_expect_str_eq(rest, "/");
    cr_assert_eq(route("/fn/hello/", &r, name, &rest), 0);
    cr_expect_str_eq(rest, "/");
    cr_assert_eq(route("/fn/hello/a/b.c", &r, name, &rest), 0);
    cr_expect_str_eq(name, "hello");
    cr_expect_str_eq(rest, "/a/b.c");
    cr_expect_eq(route("/fn", &r, name, &rest), -EINVAL);
    cr_expect_eq(route("/fn/", &r, name, &rest), -EINVAL);
}

Test(routes, name_rules)
{
    enum route r;
    char name[STORE_NAME_MAX + 1];
    const char *rest;
    const char *bad[] = {"/fn/-x", "/fn/Upper", "/fn/a_b", "/fn/a.b", "/fn/a%20b",
                         "/v1/functions/ÄÖ", "/v1/functions/x y"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_expect_eq(route(bad[i], &r, name, &rest), -EINVAL, "%s", bad[i]);
    char longest[80] = "/fn/";
    memset(longest + 4, 'a', 63);
    longest[67] = '\0';
    cr_expect_eq(route(longest, &r, name, &rest), 0, "63 characters are fine");
    longest[67] = 'a';
    longest[68] = '\0';
    cr_expect_eq(route(longest, &r, name, &rest), -EINVAL, "64 are not");
    cr_expect_eq(route("/fn/0", &r, name, &rest), 0, "a digit may start a name");
}

Test(routes, token_comparison)
{
    cr_expect(api_token_matches("s3cret", "s3cret"));
    cr_expect_not(api_token_matches("s3cret", "s3cre"));
    cr_expect_not(api_token_matches("s3cret", "s3cret!"));
    cr_expect_not(api_token_matches("s3cret", ""));
    cr_expect_not(api_token_matches("s3cret", "S3cret"));
}

Test(routes, async_query)
{
    cr_expect(query_has_async("async=1"));
    cr_expect(query_has_async("a=b&async=true"));
    cr_expect_not(query_has_async("async=0"));
    cr_expect_not(query_has_async("notasync=1"));
    cr_expect_not(query_has_async("async=10"));
    char *q = query_without_async("a=1&async=1&b=2");
    cr_expect_str_eq(q, "a=1&b=2");
    free(q);
    q = query_without_async("async=1");
    cr_expect_str_eq(q, "");
    free(q);
}

Test(routes, hop_by_hop_headers)
{
    cr_expect(hop_by_hop("Connection", 10));
    cr_expect(hop_by_hop("transfer-encoding", 17));
    cr_expect(hop_by_hop("Keep-Alive", 10));
    cr_expect_not(hop_by_hop("Content-Type", 12));
    cr_expect(server_owned("content-length", 14));
    cr_expect_not(server_owned("X-Thing", 7));
}
