/* test_manifest.c - function.json: every field, every bad value, defaults,
 * unknown fields, wrong types; the handler checks against real files. */
#include "functions/manifest.h"

#include "functions_fixtures.h"

static int parse(const char *json, struct manifest *m, struct ember_error *err)
{
    return manifest_parse(json, strlen(json), m, err);
}

/* Parse @json, expect -EINVAL and @needle in the message. */
static void expect_bad(const char *json, const char *needle)
{
    struct manifest m;
    struct ember_error err = {0};
    int r = parse(json, &m, &err);
    cr_expect_eq(r, -EINVAL, "%s: accepted (r=%d)", json, r);
    cr_expect_eq(err.code, -EINVAL, "%s", json);
    cr_expect_not_null(strstr(err.msg, needle), "%s: message '%s' lacks '%s'", json, err.msg,
                       needle);
    /* A failed parse leaves nothing to free. */
    cr_expect_eq(m.env, NULL);
    cr_expect_eq(m.n_env, 0);
    manifest_free(&m);
}

static void expect_ok(const char *json, struct manifest *m)
{
    struct ember_error err = {0};
    int r = parse(json, m, &err);
    cr_assert_eq(r, 0, "%s: %s", json, err.msg);
}

#define BASE "\"runtime\": \"native\", \"handler\": \"h.so\""

Test(manifest, defaults)
{
    struct manifest m;
    expect_ok("{" BASE "}", &m);
    cr_expect_eq(m.runtime, MANIFEST_RUNTIME_NATIVE);
    cr_expect_str_eq(m.handler, "h.so");
    cr_expect_eq(m.memory_mb, MANIFEST_MEMORY_MB_DEFAULT);
    cr_expect_eq(m.timeout_ms, MANIFEST_TIMEOUT_MS_DEFAULT);
    cr_expect_eq(m.concurrency, MANIFEST_CONCURRENCY_DEFAULT);
    cr_expect_eq(m.network, MANIFEST_NETWORK_NONE);
    cr_expect_eq(m.sandbox, MANIFEST_SANDBOX_DEFAULT);
    cr_expect_eq(m.fresh_per_call, false);
    cr_expect_eq(m.n_env, 0);
    cr_expect_null(m.env);
    manifest_free(&m);
    manifest_free(&m); /* twice is fine */
}

Test(manifest, every_field)
{
    struct manifest m;
    expect_ok("{\"runtime\": \"exec\", \"handler\": \"bin/run.sh\", \"memory_mb\": 256, "
              "\"timeout_ms\": 30000, \"concurrency\": 8, \"env\": {\"ZED\": \"z\", "
              "\"GREETING\": \"hi\", \"_x1\": \"\"}, \"network\": \"none\", "
              "\"sandbox\": \"container\", \"fresh_per_call\": true}",
              &m);
    cr_expect_eq(m.runtime, MANIFEST_RUNTIME_EXEC);
    cr_expect_str_eq(m.handler, "bin/run.sh");
    cr_expect_eq(m.memory_mb, 256);
    cr_expect_eq(m.timeout_ms, 30000);
    cr_expect_eq(m.concurrency, 8);
    cr_expect_eq(m.network, MANIFEST_NETWORK_NONE);
    cr_expect_eq(m.sandbox, MANIFEST_SANDBOX_CONTAINER);
    cr_expect_eq(m.fresh_per_call, true);
    cr_assert_eq(m.n_env, 3);
    /* Sorted by key. */
    cr_expect_str_eq(m.env[0].key, "GREETING");
    cr_expect_str_eq(m.env[0].value, "hi");
    cr_expect_str_eq(m.env[1].key, "ZED");
    cr_expect_str_eq(m.env[2].key, "_x1");
    cr_expect_str_eq(m.env[2].value, "");
    manifest_free(&m);

    expect_ok("{" BASE ", \"sandbox\": \"microvm\", \"network\": \"none\", "
              "\"fresh_per_call\": false}",
              &m);
    cr_expect_eq(m.sandbox, MANIFEST_SANDBOX_MICROVM);
    cr_expect_eq(m.network, MANIFEST_NETWORK_NONE);
    manifest_free(&m);
}

Test(manifest, design_example)
{
    struct manifest m;
    expect_ok("{ \"runtime\": \"native\", \"handler\": \"hello.so\",\n"
              "  \"memory_mb\": 128, \"timeout_ms\": 5000, \"concurrency\": 1,\n"
              "  \"env\": { \"GREETING\": \"hi\" }, \"network\": \"none\" }",
              &m);
    cr_expect_eq(m.n_env, 1);
    manifest_free(&m);
}

Test(manifest, integer_ranges)
{
    static const struct {
        const char *field;
        long long min, max;
    } f[] = {
        {"memory_mb", MANIFEST_MEMORY_MB_MIN, MANIFEST_MEMORY_MB_MAX},
        {"timeout_ms", MANIFEST_TIMEOUT_MS_MIN, MANIFEST_TIMEOUT_MS_MAX},
        {"concurrency", 1, MANIFEST_CONCURRENCY_MAX},
    };
    for (size_t i = 0; i < ARRAY_SIZE(f); i++) {
        char json[256], msg[128];
        struct manifest m;
        snprintf(msg, sizeof(msg), "%s: must be an integer between %lld and %lld", f[i].field,
                 f[i].min, f[i].max);

        /* Both ends are in. */
        long long ok[] = {f[i].min, f[i].max};
        for (size_t k = 0; k < 2; k++) {
            snprintf(json, sizeof(json), "{" BASE ", \"%s\": %lld}", f[i].field, ok[k]);
            expect_ok(json, &m);
            manifest_free(&m);
        }
        const char *bad[] = {"-1",   "0",    "1.5", "128.0", "1e2",         "\"128\"",
                             "true", "null", "[]",  "{}",    "99999999999", "-9223372036854775808"};
        for (size_t k = 0; k < ARRAY_SIZE(bad); k++) {
            /* 0 is fine for nobody; 1 is fine for timeout and concurrency. */
            snprintf(json, sizeof(json), "{" BASE ", \"%s\": %s}", f[i].field, bad[k]);
            expect_bad(json, msg);
        }
        snprintf(json, sizeof(json), "{" BASE ", \"%s\": %lld}", f[i].field, f[i].min - 1);
        expect_bad(json, msg);
        snprintf(json, sizeof(json), "{" BASE ", \"%s\": %lld}", f[i].field, f[i].max + 1);
        expect_bad(json, msg);
    }
    expect_bad("{" BASE ", \"memory_mb\": 15}",
               "memory_mb: must be an integer between 16 and 16384");
}

Test(manifest, runtime)
{
    expect_bad("{\"handler\": \"h.so\"}", "runtime: required");
    expect_bad("{\"runtime\": \"python\", \"handler\": \"main.handle\"}",
               "runtime: \"python\" is not supported by this version");
    expect_bad("{\"runtime\": \"node\", \"handler\": \"main.handle\"}",
               "runtime: \"node\" is not supported by this version");
    expect_bad("{\"runtime\": \"java\", \"handler\": \"h\"}",
               "runtime: must be \"native\" or \"exec\"");
    expect_bad("{\"runtime\": \"Native\", \"handler\": \"h\"}", "runtime: must be");
    expect_bad("{\"runtime\": 1, \"handler\": \"h\"}", "runtime: must be");
    expect_bad("{\"runtime\": null, \"handler\": \"h\"}", "runtime: must be");
    expect_bad("{\"runtime\": [\"native\"], \"handler\": \"h\"}", "runtime: must be");
}

Test(manifest, handler)
{
    expect_bad("{\"runtime\": \"native\"}", "handler: required");
    expect_bad("{\"runtime\": \"native\", \"handler\": \"\"}", "handler: must not be empty");
    expect_bad("{\"runtime\": \"native\", \"handler\": \"/etc/passwd\"}",
               "handler: must be a relative path");
    expect_bad("{\"runtime\": \"native\", \"handler\": \"../x.so\"}",
               "handler: must not contain '..'");
    expect_bad("{\"runtime\": \"native\", \"handler\": \"a/../../x.so\"}",
               "handler: must not contain '..'");
    expect_bad("{\"runtime\": \"native\", \"handler\": \"a/..\"}",
               "handler: must not contain '..'");
    expect_bad("{\"runtime\": \"native\", \"handler\": \"./x.so\"}",
               "handler: must not contain '.'");
    expect_bad("{\"runtime\": \"native\", \"handler\": \"a//x.so\"}",
               "handler: must not contain empty");
    expect_bad("{\"runtime\": \"native\", \"handler\": \"lib/\"}",
               "handler: must not contain empty");
    expect_bad("{\"runtime\": \"native\", \"handler\": \"a\\nb\"}",
               "handler: must not contain control");
    expect_bad("{\"runtime\": \"native\", \"handler\": 5}", "handler: must be a string");
    expect_bad("{\"runtime\": \"native\", \"handler\": \"x\\u0000y\"}",
               "function.json: invalid JSON");

    /* Length: MANIFEST_HANDLER_MAX bytes fit, one more does not. */
    char json[600], name[MANIFEST_HANDLER_MAX + 2];
    struct manifest m;
    memset(name, 'a', sizeof(name));
    name[MANIFEST_HANDLER_MAX] = '\0';
    snprintf(json, sizeof(json), "{\"runtime\": \"native\", \"handler\": \"%s\"}", name);
    expect_ok(json, &m);
    cr_expect_eq(strlen(m.handler), MANIFEST_HANDLER_MAX);
    manifest_free(&m);
    name[MANIFEST_HANDLER_MAX] = 'a';
    name[MANIFEST_HANDLER_MAX + 1] = '\0';
    snprintf(json, sizeof(json), "{\"runtime\": \"native\", \"handler\": \"%s\"}", name);
    expect_bad(json, "handler: must be at most 255 bytes");

    /* Names with dots that are not "." or ".." are fine. */
    expect_ok("{\"runtime\": \"native\", \"handler\": \"..a/.b/c..so\"}", &m);
    manifest_free(&m);
    expect_ok("{\"runtime\": \"native\", \"handler\": \"caf\\u00e9.so\"}", &m);
    manifest_free(&m);
}

Test(manifest, enums_and_bool)
{
    expect_bad("{" BASE ", \"network\": \"bridge\"}", "network: must be \"none\" or \"host\"");
    expect_bad("{" BASE ", \"network\": true}", "network: must be");
    expect_bad("{" BASE ", \"network\": null}", "network: must be");
    expect_bad("{" BASE ", \"sandbox\": \"vm\"}", "sandbox: must be \"container\" or \"microvm\"");
    expect_bad("{" BASE ", \"sandbox\": 0}", "sandbox: must be");
    expect_bad("{" BASE ", \"sandbox\": \"default\"}", "sandbox: must be");
    expect_bad("{" BASE ", \"fresh_per_call\": 1}", "fresh_per_call: must be true or false");
    expect_bad("{" BASE ", \"fresh_per_call\": \"true\"}", "fresh_per_call: must be");
    expect_bad("{" BASE ", \"fresh_per_call\": null}", "fresh_per_call: must be");
    /* A microVM runs SDK guest images: native only. */
    expect_bad("{\"runtime\": \"exec\", \"handler\": \"run\", \"sandbox\": \"microvm\"}",
               "sandbox: \"microvm\" needs runtime \"native\"");
}

Test(manifest, env)
{
    struct manifest m;

    expect_ok("{" BASE ", \"env\": {}}", &m);
    cr_expect_eq(m.n_env, 0);
    manifest_free(&m);

    expect_bad("{" BASE ", \"env\": []}", "env: must be an object");
    expect_bad("{" BASE ", \"env\": \"A=1\"}", "env: must be an object");
    expect_bad("{" BASE ", \"env\": null}", "env: must be an object");
    expect_bad("{" BASE ", \"env\": {\"A\": 1}}", "env.A: must be a string");
    expect_bad("{" BASE ", \"env\": {\"A\": null}}", "env.A: must be a string");
    expect_bad("{" BASE ", \"env\": {\"A\": [\"x\"]}}", "env.A: must be a string");
    expect_bad("{" BASE ", \"env\": {\"\": \"x\"}}", "env: key '' must be 1 to 128 bytes");
    expect_bad("{" BASE ", \"env\": {\"1A\": \"x\"}}", "env: key '1A' must match");
    expect_bad("{" BASE ", \"env\": {\"A-B\": \"x\"}}", "env: key 'A-B' must match");
    expect_bad("{" BASE ", \"env\": {\"A B\": \"x\"}}", "env: key 'A B' must match");
    expect_bad("{" BASE ", \"env\": {\"A=B\": \"x\"}}", "env: key 'A=B' must match");
    expect_bad("{" BASE ", \"env\": {\"\\u00e9\": \"x\"}}", "env: key '\\xc3\\xa9' must match");
    expect_bad("{" BASE ", \"env\": {\"EMBER_TOKEN\": \"x\"}}",
               "env: key 'EMBER_TOKEN' is reserved");
    expect_bad("{" BASE ", \"env\": {\"EMBER_\": \"x\"}}", "is reserved");
    expect_bad("{" BASE ", \"env\": {\"A\": \"1\", \"A\": \"2\"}}",
               "function.json: duplicate key 'A' at line 1");
    /* Long keys too (jansson's own message quotes only short ones). */
    expect_bad("{" BASE ", \"env\": {\"A_RATHER_LONG_VARIABLE_NAME\": \"1\", "
               "\"A_RATHER_LONG_VARIABLE_NAME\" : \"2\"}}",
               "duplicate key 'A_RATHER_LONG_VARIABLE_NAME'");
    expect_bad("{" BASE ", \"env\": {\"A\\\"B\": \"1\", \"A\\\"B\": \"2\"}}",
               "duplicate key 'A\\\\\"B'");

    /* Not reserved: no underscore, or another case. */
    expect_ok("{" BASE ", \"env\": {\"EMBER\": \"x\", \"ember_x\": \"y\", \"EMBERS_\": \"z\"}}",
              &m);
    manifest_free(&m);

    /* Key length. */
    char key[MANIFEST_ENV_KEY_MAX + 2], json[1024];
    memset(key, 'K', sizeof(key));
    key[MANIFEST_ENV_KEY_MAX] = '\0';
    snprintf(json, sizeof(json), "{" BASE ", \"env\": {\"%s\": \"v\"}}", key);
    expect_ok(json, &m);
    manifest_free(&m);
    key[MANIFEST_ENV_KEY_MAX] = 'K';
    key[MANIFEST_ENV_KEY_MAX + 1] = '\0';
    snprintf(json, sizeof(json), "{" BASE ", \"env\": {\"%s\": \"v\"}}", key);
    expect_bad(json, "must be 1 to 128 bytes");

    /* Value length. */
    char *big = malloc(MANIFEST_ENV_VALUE_MAX + 200);
    char *val = malloc(MANIFEST_ENV_VALUE_MAX + 2);
    memset(val, 'v', MANIFEST_ENV_VALUE_MAX + 1);
    val[MANIFEST_ENV_VALUE_MAX] = '\0';
    snprintf(big, MANIFEST_ENV_VALUE_MAX + 200, "{" BASE ", \"env\": {\"V\": \"%s\"}}", val);
    expect_ok(big, &m);
    cr_expect_eq(strlen(m.env[0].value), MANIFEST_ENV_VALUE_MAX);
    manifest_free(&m);
    val[MANIFEST_ENV_VALUE_MAX] = 'v';
    val[MANIFEST_ENV_VALUE_MAX + 1] = '\0';
    snprintf(big, MANIFEST_ENV_VALUE_MAX + 200, "{" BASE ", \"env\": {\"V\": \"%s\"}}", val);
    expect_bad(big, "env.V: must be at most 4096 bytes");
    free(val);
    free(big);

    /* Count: MANIFEST_ENV_MAX fit, one more does not. */
    char many[8192];
    for (int n = MANIFEST_ENV_MAX; n <= MANIFEST_ENV_MAX + 1; n++) {
        size_t o = (size_t)snprintf(many, sizeof(many), "{" BASE ", \"env\": {");
        for (int i = 0; i < n; i++)
            o += (size_t)snprintf(many + o, sizeof(many) - o, "%s\"K%02d\": \"%d\"", i ? ", " : "",
                                  n - 1 - i, i);
        snprintf(many + o, sizeof(many) - o, "}}");
        if (n == MANIFEST_ENV_MAX) {
            expect_ok(many, &m);
            cr_expect_eq(m.n_env, MANIFEST_ENV_MAX);
            for (size_t i = 1; i < m.n_env; i++)
                cr_expect_lt(strcmp(m.env[i - 1].key, m.env[i].key), 0);
            manifest_free(&m);
        } else {
            expect_bad(many, "env: more than 64 variables");
        }
    }
}

Test(manifest, unknown_and_duplicate_fields)
{
    expect_bad("{" BASE ", \"memory\": 128}", "memory: unknown field");
    expect_bad("{" BASE ", \"Runtime\": \"native\"}", "Runtime: unknown field");
    expect_bad("{" BASE ", \"env_vars\": {}}", "env_vars: unknown field");
    expect_bad("{\"x\\u0001y\": 1, " BASE "}", "x\\x01y: unknown field");
    expect_bad("{" BASE ", \"memory_mb\": 128, \"memory_mb\": 256}",
               "function.json: duplicate key 'memory_mb' at line 1, column");
    expect_bad("{\"runtime\": \"native\",\n \"runtime\": \"exec\", \"handler\": \"h\"}",
               "duplicate key 'runtime' at line 2");
}

Test(manifest, not_an_object)
{
    expect_bad("[]", "function.json: must be a JSON object");
    expect_bad("[{\"runtime\": \"native\"}]", "function.json: must be a JSON object");
    expect_bad("\"native\"", "function.json: invalid JSON");
    expect_bad("42", "function.json: invalid JSON");
    expect_bad("null", "function.json: invalid JSON");
    expect_bad("", "function.json: invalid JSON");
    expect_bad("{", "function.json: invalid JSON");
    expect_bad("{" BASE ",}", "function.json: invalid JSON at line 1");
    expect_bad("{" BASE "} {}", "function.json: invalid JSON");
    expect_bad("{" BASE ", \"memory_mb\": 12_8}", "function.json: invalid JSON");
    /* Not UTF-8. */
    expect_bad("{\"runtime\": \"native\", \"handler\": \"\xff.so\"}",
               "function.json: invalid JSON");

    /* Embedded NUL outside a string. */
    struct manifest m;
    struct ember_error err = {0};
    static const char nul[] = "{\"runtime\": \"native\", \"handler\": \"h.so\"}\0garbage";
    cr_expect_eq(manifest_parse(nul, sizeof(nul) - 1, &m, &err), -EINVAL);
}

Test(manifest, size_limit)
{
    /* Whitespace padding up to exactly the limit is fine; one more byte is not. */
    size_t n = MANIFEST_FILE_MAX + 1;
    char *json = malloc(n + 1);
    static const char body[] = "{" BASE "}";
    memset(json, ' ', n);
    memcpy(json, body, sizeof(body) - 1);
    json[n] = '\0';

    struct manifest m;
    struct ember_error err = {0};
    cr_expect_eq(manifest_parse(json, MANIFEST_FILE_MAX, &m, &err), 0, "%s", err.msg);
    manifest_free(&m);
    cr_expect_eq(manifest_parse(json, n, &m, &err), -EINVAL);
    cr_expect_str_eq(err.msg, "function.json: larger than 65536 bytes");
    free(json);
}

Test(manifest, copy_and_names)
{
    struct manifest m, c;
    expect_ok("{" BASE ", \"env\": {\"A\": \"1\", \"B\": \"2\"}, \"memory_mb\": 64}", &m);
    cr_assert_eq(manifest_copy(&c, &m), 0);
    manifest_free(&m);
    cr_expect_eq(c.n_env, 2);
    cr_expect_str_eq(c.env[1].key, "B");
    cr_expect_str_eq(c.env[1].value, "2");
    cr_expect_eq(c.memory_mb, 64);
    cr_expect_str_eq(c.handler, "h.so");
    manifest_free(&c);

    struct manifest z = {0}, zc;
    cr_expect_eq(manifest_copy(&zc, &z), 0);
    cr_expect_null(zc.env);

    cr_expect_str_eq(manifest_runtime_name(MANIFEST_RUNTIME_NATIVE), "native");
    cr_expect_str_eq(manifest_runtime_name(MANIFEST_RUNTIME_EXEC), "exec");
    cr_expect_str_eq(manifest_sandbox_name(MANIFEST_SANDBOX_DEFAULT), "default");
    cr_expect_str_eq(manifest_sandbox_name(MANIFEST_SANDBOX_CONTAINER), "container");
    cr_expect_str_eq(manifest_sandbox_name(MANIFEST_SANDBOX_MICROVM), "microvm");
    cr_expect_str_eq(manifest_network_name(MANIFEST_NETWORK_NONE), "none");
    cr_expect_str_eq(manifest_network_name(MANIFEST_NETWORK_HOST), "host");
}

/* ---- handler checks against files ---- */

static char pkg_path[PATH_MAX];
static int pkg_fd = -1;

static void pkg_setup(void)
{
    fix_tmpdir(pkg_path);
    pkg_fd = fix_open_dir(pkg_path);
}

static void pkg_teardown(void)
{
    close(pkg_fd);
    fix_rmrf(pkg_path);
}

static void put(const char *rel, const void *data, size_t len, mode_t mode)
{
    fix_write_at(pkg_fd, rel, data, len, mode);
}

static void put_elf(const char *rel, const struct fix_elf *o, mode_t mode)
{
    unsigned char buf[2048];
    size_t n = fix_elf_build(buf, sizeof(buf), o);
    put(rel, buf, n, mode);
}

static int check(const char *json, struct ember_error *err)
{
    struct manifest m;
    cr_assert_eq(parse(json, &m, err), 0, "%s", err->msg);
    memset(err, 0, sizeof(*err));
    int r = manifest_check_handler(&m, pkg_fd, err);
    manifest_free(&m);
    return r;
}

static void expect_check(const char *json, int want, const char *needle)
{
    struct ember_error err = {0};
    int r = check(json, &err);
    cr_expect_eq(r, want, "%s: r=%d (%s)", json, r, err.msg);
    if (needle)
        cr_expect_not_null(strstr(err.msg, needle), "%s: message '%s' lacks '%s'", json, err.msg,
                           needle);
}

#define NATIVE(h) "{\"runtime\": \"native\", \"handler\": \"" h "\"}"
#define EXEC(h) "{\"runtime\": \"exec\", \"handler\": \"" h "\"}"
#define GUEST(h) "{\"runtime\": \"native\", \"handler\": \"" h "\", \"sandbox\": \"microvm\"}"

TestSuite(handler, .init = pkg_setup, .fini = pkg_teardown);

Test(handler, native)
{
    put_elf("ok.so", &(struct fix_elf){.type = ET_DYN}, 0644);
    expect_check(NATIVE("ok.so"), 0, NULL);
    /* sandbox container changes nothing for native. */
    expect_check("{\"runtime\": \"native\", \"handler\": \"ok.so\", \"sandbox\": \"container\"}", 0,
                 NULL);

    put_elf("exe", &(struct fix_elf){.type = ET_EXEC}, 0755);
    expect_check(NATIVE("exe"), -EINVAL,
                 "handler 'exe': runtime \"native\" needs an ELF64 "
                 "x86-64 shared object, but it is not a shared object");
    put_elf("32.so", &(struct fix_elf){.type = ET_DYN, .elf32 = true}, 0644);
    expect_check(NATIVE("32.so"), -EINVAL, "it is a 32-bit ELF file");
    put_elf("arm.so", &(struct fix_elf){.type = ET_DYN, .machine = EM_AARCH64}, 0644);
    expect_check(NATIVE("arm.so"), -EINVAL, "another machine than x86-64");
    put("text.so", "hello", 5, 0644);
    expect_check(NATIVE("text.so"), -EINVAL,
                 "handler 'text.so': runtime \"native\" needs an "
                 "ELF64 x86-64 shared object, but it is not an ELF");
    put("empty.so", "", 0, 0644);
    expect_check(NATIVE("empty.so"), -EINVAL, "it is not an ELF file");
    put("short.so",
        "\x7f"
        "ELF\x02\x01",
        6, 0644);
    expect_check(NATIVE("short.so"), -EINVAL, "its ELF header is truncated");
}

Test(handler, missing_and_not_regular)
{
    expect_check(NATIVE("nope.so"), -EINVAL, "handler 'nope.so': not found in the package");
    expect_check(NATIVE("dir/nope.so"), -EINVAL, "not found in the package");

    cr_assert_eq(mkdirat(pkg_fd, "lib", 0755), 0);
    expect_check(NATIVE("lib"), -EINVAL, "handler 'lib': not a regular file");

    cr_assert_eq(mkfifoat(pkg_fd, "fifo", 0644), 0);
    expect_check(EXEC("fifo"), -EINVAL, "handler 'fifo': not a regular file");

    /* A regular file on the way is not a directory. */
    put_elf("file.so", &(struct fix_elf){.type = ET_DYN}, 0644);
    expect_check(NATIVE("file.so/x"), -EINVAL, "not found in the package");
}

Test(handler, symlinks_refused)
{
    put_elf("real.so", &(struct fix_elf){.type = ET_DYN}, 0644);
    cr_assert_eq(symlinkat("real.so", pkg_fd, "link.so"), 0);
    expect_check(NATIVE("link.so"), -EINVAL,
                 "handler 'link.so': must be a regular file in the "
                 "package, not a symlink");

    /* Through a symlinked directory, even one pointing inside. */
    cr_assert_eq(mkdirat(pkg_fd, "lib", 0755), 0);
    put_elf("lib/in.so", &(struct fix_elf){.type = ET_DYN}, 0644);
    cr_assert_eq(symlinkat("lib", pkg_fd, "alias"), 0);
    expect_check(NATIVE("alias/in.so"), -EINVAL, "not a symlink or a path through one");
    expect_check(NATIVE("lib/in.so"), 0, NULL);

    /* Out of the package. */
    cr_assert_eq(symlinkat("/usr/lib", pkg_fd, "out"), 0);
    expect_check(NATIVE("out/libc.so.6"), -EINVAL, "not a symlink");
    cr_assert_eq(symlinkat("/bin/sh", pkg_fd, "sh"), 0);
    expect_check(EXEC("sh"), -EINVAL, "not a symlink");
}

Test(handler, exec)
{
    put("run.sh", "#!/bin/sh\necho hi\n", 18, 0755);
    expect_check(EXEC("run.sh"), 0, NULL);
    put("owner.sh", "#!/bin/sh\n", 10, 0744);
    expect_check(EXEC("owner.sh"), 0, NULL);
    put("noexec.sh", "#!/bin/sh\n", 10, 0644);
    expect_check(EXEC("noexec.sh"), -EINVAL,
                 "handler 'noexec.sh': runtime \"exec\" needs an "
                 "executable file, but mode 0644 has no execute bit");
    put("plain", "echo hi\n", 8, 0755);
    expect_check(EXEC("plain"), -EINVAL, "needs a script starting with '#!' or an ELF");
    put("empty", "", 0, 0755);
    expect_check(EXEC("empty"), -EINVAL, "needs a script starting with '#!'");
    put_elf("prog", &(struct fix_elf){.type = ET_EXEC}, 0755);
    expect_check(EXEC("prog"), 0, NULL);
    put_elf("pie", &(struct fix_elf){.type = ET_DYN}, 0755);
    expect_check(EXEC("pie"), 0, NULL);
    put_elf("arm", &(struct fix_elf){.type = ET_EXEC, .machine = EM_AARCH64}, 0755);
    expect_check(EXEC("arm"), -EINVAL,
                 "runtime \"exec\" needs an x86-64 program, but it is "
                 "built for another machine");
}

Test(handler, microvm_guest)
{
    put_elf("guest", &(struct fix_elf){.type = ET_EXEC, .note = 1}, 0755);
    expect_check(GUEST("guest"), 0, NULL);
    /* Not executable is fine: the monitor loads it, nobody execs it. */
    put_elf("guest-ro", &(struct fix_elf){.type = ET_EXEC, .note = 1}, 0644);
    expect_check(GUEST("guest-ro"), 0, NULL);
    /* As the SDK links it: section and PT_NOTE segment; or stripped of sections. */
    put_elf("guest-seg", &(struct fix_elf){.type = ET_EXEC, .note = 1, .note_segment = true}, 0755);
    expect_check(GUEST("guest-seg"), 0, NULL);
    put_elf(
        "guest-strip",
        &(struct fix_elf){.type = ET_EXEC, .note = 1, .note_segment = true, .no_sections = true},
        0755);
    expect_check(GUEST("guest-strip"), 0, NULL);
    put_elf(
        "guest-strip2",
        &(struct fix_elf){.type = ET_EXEC, .note = 2, .note_segment = true, .no_sections = true},
        0755);
    expect_check(GUEST("guest-strip2"), -EINVAL, "no .note.ember note");

    static const struct {
        struct fix_elf elf;
        const char *needle;
    } bad[] = {
        {{.type = ET_DYN, .note = 1}, "position-independent"},
        {{.type = ET_REL, .note = 1}, "not an executable (ET_EXEC)"},
        {{.type = ET_EXEC, .note = 1, .interp = true}, "PT_INTERP"},
        {{.type = ET_EXEC, .note = 1, .dynamic = true}, "PT_DYNAMIC"},
        {{.type = ET_EXEC}, "no .note.ember note (owner \"ember\", type 0x454d4252)"},
        {{.type = ET_EXEC, .note = 2}, "no .note.ember note"},
        {{.type = ET_EXEC, .note = 3}, "no .note.ember note"},
        {{.type = ET_EXEC, .note = 4}, "no .note.ember note"},
        {{.type = ET_EXEC, .note = 1, .elf32 = true}, "32-bit"},
        {{.type = ET_EXEC, .note = 1, .machine = EM_386}, "another machine"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        put_elf("bad", &bad[i].elf, 0755);
        struct ember_error err = {0};
        int r = check(GUEST("bad"), &err);
        cr_expect_eq(r, -EINVAL, "case %zu: %s", i, err.msg);
        cr_expect_not_null(strstr(err.msg, "handler 'bad': sandbox \"microvm\" needs a static "
                                           "ELF64 x86-64 executable built with the ember SDK"),
                           "case %zu: %s", i, err.msg);
        cr_expect_not_null(strstr(err.msg, bad[i].needle), "case %zu: '%s' lacks '%s'", i, err.msg,
                           bad[i].needle);
    }
    put("script", "#!/bin/sh\n", 10, 0755);
    expect_check(GUEST("script"), -EINVAL, "it is not an ELF file");
}

/* Damaged headers: every offset and count pointing past the end of the file
 * must be refused cleanly, never read out of bounds. */
Test(handler, microvm_damaged_elf)
{
    unsigned char buf[2048];
    size_t n = fix_elf_build(buf, sizeof(buf), &(struct fix_elf){.type = ET_EXEC, .note = 1});
    Elf64_Ehdr eh;
    memcpy(&eh, buf, sizeof(eh));

    for (int variant = 0; variant < 9; variant++) {
        unsigned char b[2048];
        memcpy(b, buf, sizeof(b));
        Elf64_Ehdr h = eh;
        Elf64_Shdr sh;
        size_t len = n;
        switch (variant) {
        case 0:
            h.e_phoff = 1u << 30;
            break;
        case 1:
            h.e_phnum = 0xffff;
            break;
        case 2:
            h.e_shoff = (Elf64_Off)-1;
            break;
        case 3:
            h.e_shnum = 0xffff;
            break;
        case 4:
            h.e_shstrndx = 7;
            break;
        case 5:
            h.e_shentsize = 10;
            break;
        case 6: /* the note section's size runs off the file */
            memcpy(&sh, b + h.e_shoff + sizeof(sh), sizeof(sh));
            sh.sh_size = 1u << 20;
            memcpy(b + h.e_shoff + sizeof(sh), &sh, sizeof(sh));
            break;
        case 7: /* a note whose name size is absurd */
            memcpy(&sh, b + h.e_shoff + sizeof(sh), sizeof(sh));
            ((Elf64_Nhdr *)(b + sh.sh_offset))->n_namesz = 0xfffffff0u;
            break;
        case 8: /* cut in the middle of the section headers */
            len = h.e_shoff + 10;
            break;
        }
        memcpy(b, &h, sizeof(h));
        put("dmg", b, len, 0755);
        struct ember_error err = {0};
        int r = check(GUEST("dmg"), &err);
        cr_expect_eq(r, -EINVAL, "variant %d: r=%d %s", variant, r, err.msg);
    }

    /* The same for a PT_NOTE segment, with no sections to fall back on. */
    n = fix_elf_build(
        buf, sizeof(buf),
        &(struct fix_elf){.type = ET_EXEC, .note = 1, .note_segment = true, .no_sections = true});
    for (int variant = 0; variant < 3; variant++) {
        unsigned char b[2048];
        memcpy(b, buf, sizeof(b));
        Elf64_Phdr ph;
        size_t at = sizeof(Elf64_Ehdr) + sizeof(ph); /* [1]: the PT_NOTE */
        memcpy(&ph, b + at, sizeof(ph));
        cr_assert_eq(ph.p_type, PT_NOTE);
        switch (variant) {
        case 0:
            ph.p_filesz = 1ull << 40;
            break;
        case 1:
            ph.p_offset = (Elf64_Off)-8;
            break;
        case 2:
            ph.p_filesz = 5;
            break; /* cut inside the note header */
        }
        memcpy(b + at, &ph, sizeof(ph));
        put("dmg", b, n, 0755);
        struct ember_error err = {0};
        int r = check(GUEST("dmg"), &err);
        cr_expect_eq(r, -EINVAL, "segment variant %d: r=%d %s", variant, r, err.msg);
    }
}

Test(manifest, network_host_is_refused_until_a_backend_provides_it)
{
    struct manifest m = {0};
    struct ember_error err = {0};
    const char *json = "{\"runtime\": \"exec\", \"handler\": \"run.sh\", \"network\": \"host\"}";
    cr_expect_eq(manifest_parse(json, strlen(json), &m, &err), -EINVAL);
    cr_expect(strstr(err.msg, "network"), "%s", err.msg);
    manifest_free(&m);
}
