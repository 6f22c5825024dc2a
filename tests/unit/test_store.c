/* test_store.c - the function store on real directories: deploy, get, list,
 * redeploy, versions, delete, reopen, leftovers of interrupted work, bad
 * packages that must change nothing, concurrent commits from threads, and
 * kill -9 at random instants of a deploy loop. */
#include "functions/store.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "functions_fixtures.h"

#define EXEC_MANIFEST "{\"runtime\": \"exec\", \"handler\": \"run\"}"

static char base[PATH_MAX], state[PATH_MAX], work[PATH_MAX];

static void setup(void)
{
    ember_log_set_level(EMBER_LOG_WARN);
    fix_tmpdir(base);
    fix_join(state, sizeof(state), base, "state/nested");
    fix_join(work, sizeof(work), base, "work");
    cr_assert_eq(mkdir(work, 0755), 0);
}

static void teardown(void)
{
    fix_rmrf(base);
}

TestSuite(store, .init = setup, .fini = teardown, .timeout = 120);

/* A package in memory. */
struct blob {
    unsigned char *p;
    size_t len;
    char digest[65];
};

static void blob_free(struct blob *b)
{
    free(b->p);
    b->p = NULL;
}

static void blob_make(struct blob *b, enum fix_format fmt, const struct fix_entry *e, size_t n)
{
    static int seq;
    char path[PATH_MAX], name[32];
    snprintf(name, sizeof(name), "pkg-%d", seq++);
    fix_join(path, sizeof(path), work, name);
    cr_assert_eq(fix_archive(path, fmt, e, n), 0);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    cr_assert_geq(fd, 0);
    struct stat st;
    cr_assert_eq(fstat(fd, &st), 0);
    b->len = (size_t)st.st_size;
    b->p = malloc(b->len);
    cr_assert_eq(read(fd, b->p, b->len), (ssize_t)b->len);
    close(fd);
    unlink(path);

    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len;
    cr_assert_eq(EVP_Digest(b->p, b->len, md, &md_len, EVP_sha256(), NULL), 1);
    for (unsigned i = 0; i < md_len; i++)
        snprintf(b->digest + 2 * i, 3, "%02x", md[i]);
}

/* An exec function: @manifest as function.json, a script whose text is @tag. */
static void blob_exec(struct blob *b, const char *manifest, const char *tag)
{
    char script[256];
    snprintf(script, sizeof(script), "#!/bin/sh\necho '%s'\n", tag);
    const struct fix_entry e[] = {
        {.path = "function.json", .kind = FK_FILE, .data = manifest},
        {.path = "run", .kind = FK_FILE, .data = script, .mode = 0755},
        {.path = "lib/", .kind = FK_DIR},
        {.path = "lib/data/x.txt", .kind = FK_FILE, .data = tag},
    };
    blob_make(b, FF_TAR_GZ, e, ARRAY_SIZE(e));
}

/* Upload @b in small pieces and commit it as @name. */
static int deploy(struct store *s, const char *name, const struct blob *b,
                  struct function_record **out, bool *created, bool *unchanged,
                  struct ember_error *err)
{
    struct store_upload *up = NULL;
    int r = store_upload_begin(s, &up, err);
    if (r < 0)
        return r;
    for (size_t off = 0; off < b->len; off += 1000) {
        size_t k = b->len - off < 1000 ? b->len - off : 1000;
        r = store_upload_write(up, b->p + off, k, err);
        if (r < 0)
            break;
    }
    /* Commit even after a failed write: it must refuse and free @up. */
    struct ember_error cerr = {0};
    int c = store_upload_commit(up, name, out, created, unchanged, r < 0 ? &cerr : err);
    return r < 0 ? r : c;
}

/* Deploy that must succeed; returns the record (caller unrefs). */
static struct function_record *deploy_ok(struct store *s, const char *name, const struct blob *b,
                                         bool want_created, bool want_unchanged)
{
    struct function_record *rec = NULL;
    bool created = !want_created, unchanged = !want_unchanged;
    struct ember_error err = {0};
    int r = deploy(s, name, b, &rec, &created, &unchanged, &err);
    cr_assert_eq(r, 0, "deploy %s: %s", name, err.msg);
    cr_assert_not_null(rec);
    cr_expect_eq(created, want_created, "%s: created", name);
    cr_expect_eq(unchanged, want_unchanged, "%s: unchanged", name);
    cr_expect_str_eq(rec->name, name);
    cr_expect_str_eq(rec->version, b->digest);
    return rec;
}

static struct store *open_store(const struct package_limits *lim)
{
    struct store *s = NULL;
    struct ember_error err = {0};
    int r = store_open(state, lim, &s, &err);
    cr_assert_eq(r, 0, "store_open: %s", err.msg);
    return s;
}

static long count_in(const char *rel)
{
    char p[PATH_MAX];
    return fix_dir_count(fix_join(p, sizeof(p), state, rel));
}

static bool exists_in(const char *rel)
{
    char p[PATH_MAX];
    return fix_exists(fix_join(p, sizeof(p), state, rel));
}

static void plant_file(const char *rel, const char *text)
{
    char p[PATH_MAX];
    fix_write_file(fix_join(p, sizeof(p), state, rel), text, strlen(text), 0644);
}

static void plant_dir(const char *rel)
{
    char p[PATH_MAX];
    cr_assert_eq(mkdir(fix_join(p, sizeof(p), state, rel), 0755), 0, "%s: %s", rel,
                 strerror(errno));
}

static void plant_link(const char *rel, const char *target)
{
    char p[PATH_MAX];
    cr_assert_eq(symlink(target, fix_join(p, sizeof(p), state, rel)), 0);
}

static void expect_current(const char *name, const char *version)
{
    char rel[256], p[PATH_MAX], target[256];
    snprintf(rel, sizeof(rel), "functions/%s/current", name);
    ssize_t n = readlink(fix_join(p, sizeof(p), state, rel), target, sizeof(target) - 1);
    cr_assert_gt(n, 0, "%s: %s", rel, strerror(errno));
    target[n] = '\0';
    char want[256];
    snprintf(want, sizeof(want), "versions/%s", version);
    cr_expect_str_eq(target, want);
}

Test(store, name_valid)
{
    static const char *const good[] = {"a", "0", "hello", "hello-world", "a-", "9lives", "a--b"};
    static const char *const bad[] = {"",    "-a", "A",  "hello_world", "hello.world",
                                      "a/b", "..", " a", "a ",          "caf\xc3\xa9"};
    for (size_t i = 0; i < ARRAY_SIZE(good); i++)
        cr_expect(store_name_valid(good[i], strlen(good[i])), "'%s'", good[i]);
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        cr_expect_not(store_name_valid(bad[i], strlen(bad[i])), "'%s'", bad[i]);
    /* STORE_NAME_MAX characters fit, one more does not. */
    char longest[STORE_NAME_MAX + 2];
    memset(longest, 'x', sizeof(longest));
    longest[0] = '7';
    longest[5] = '-';
    cr_expect(store_name_valid(longest, STORE_NAME_MAX));
    cr_expect_not(store_name_valid(longest, STORE_NAME_MAX + 1));
    /* The length is the caller's: a prefix of a longer string. */
    cr_expect(store_name_valid("ab/cd", 2));
    cr_expect_not(store_name_valid("ab\0cd", 5));
}

Test(store, open_creates_layout)
{
    struct store *s = open_store(NULL);
    cr_expect(exists_in("functions"));
    cr_expect(exists_in("tmp"));
    cr_expect(exists_in("trash"));
    cr_expect(exists_in("lock"));
    cr_expect_eq(store_function_count(s), 0);
    struct function_record **v = NULL;
    size_t n = 99;
    cr_assert_eq(store_function_list(s, &v, &n), 0);
    cr_expect_eq(n, 0);
    free(v);
    cr_expect_null(store_function_get(s, "nope"));
    store_close(s);
}

Test(store, one_process_per_store)
{
    struct store *s = open_store(NULL), *t = NULL;
    struct ember_error err = {0};
    cr_expect_eq(store_open(state, NULL, &t, &err), -EBUSY);
    cr_expect_not_null(strstr(err.msg, "in use"), "%s", err.msg);
    store_close(s);
    s = open_store(NULL);
    store_close(s);
}

Test(store, deploy_get_list)
{
    struct store *s = open_store(NULL);
    static const char manifest[] = "{\"runtime\": \"exec\", \"handler\": \"run\", "
                                   "\"memory_mb\": 64, \"env\": {\"SECRET\": \"hunter2\", "
                                   "\"A\": \"1\"}}";
    struct blob b;
    blob_exec(&b, manifest, "hello");
    int64_t before = ember_wall_ms();
    struct function_record *r = deploy_ok(s, "hello", &b, true, false);
    cr_expect_eq(r->manifest.runtime, MANIFEST_RUNTIME_EXEC);
    cr_expect_str_eq(r->manifest.handler, "run");
    cr_expect_eq(r->manifest.memory_mb, 64);
    cr_expect_eq(r->manifest.timeout_ms, MANIFEST_TIMEOUT_MS_DEFAULT);
    cr_assert_eq(r->manifest.n_env, 2);
    cr_expect_str_eq(r->manifest.env[1].value, "hunter2");
    cr_expect_eq(r->package_size, b.len);
    cr_expect_eq(r->unpacked_size,
                 strlen(manifest) + strlen("#!/bin/sh\necho 'hello'\n") + strlen("hello"));
    cr_expect_geq(r->created_ms, before);
    cr_expect_leq(r->created_ms, ember_wall_ms());

    /* Paths: absolute, in the version's directory. */
    char want[PATH_MAX], real_state[PATH_MAX], rel[256];
    cr_assert_not_null(realpath(state, real_state));
    snprintf(rel, sizeof(rel), "functions/hello/versions/%s/pkg", b.digest);
    cr_expect_str_eq(r->package_dir, fix_join(want, sizeof(want), real_state, rel));
    snprintf(rel, sizeof(rel), "functions/hello/versions/%s/snap", b.digest);
    cr_expect_str_eq(r->snapshot_dir, fix_join(want, sizeof(want), real_state, rel));
    char p[PATH_MAX];
    cr_expect(fix_exists(fix_join(p, sizeof(p), r->package_dir, "function.json")));
    cr_expect(fix_exists(fix_join(p, sizeof(p), r->package_dir, "lib/data/x.txt")));
    cr_expect_not(fix_exists(r->snapshot_dir), "made on demand by backends, not here");
    expect_current("hello", b.digest);
    cr_expect_eq(count_in("tmp"), 0);

    /* record.json names env keys, never values. */
    snprintf(rel, sizeof(rel), "functions/hello/versions/%s", b.digest);
    int vfd = fix_open_dir(fix_join(p, sizeof(p), state, rel));
    char *text = NULL;
    size_t len;
    cr_assert_eq(functions__read_file(vfd, "record.json", 1 << 16, &text, &len), 0);
    close(vfd);
    cr_expect_not_null(strstr(text, "\"SECRET\""));
    cr_expect_null(strstr(text, "hunter2"));
    cr_expect_not_null(strstr(text, b.digest));
    free(text);

    struct function_record *g = store_function_get(s, "hello");
    cr_assert_eq(g, r, "the registry hands out the published record");
    store_record_unref(g);
    cr_expect_null(store_function_get(s, "hell"));
    cr_expect_null(store_function_get(s, "hello2"));

    /* More functions; list is sorted by name. */
    const char *names[] = {"zeta", "alpha", "mid-1"};
    for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
        struct blob o;
        blob_exec(&o, EXEC_MANIFEST, names[i]);
        store_record_unref(deploy_ok(s, names[i], &o, true, false));
        blob_free(&o);
    }
    cr_expect_eq(store_function_count(s), 4);
    struct function_record **v;
    size_t n;
    cr_assert_eq(store_function_list(s, &v, &n), 0);
    cr_assert_eq(n, 4);
    const char *sorted[] = {"alpha", "hello", "mid-1", "zeta"};
    for (size_t i = 0; i < n; i++) {
        cr_expect_str_eq(v[i]->name, sorted[i]);
        store_record_unref(v[i]);
    }
    free(v);
    store_record_unref(r);
    blob_free(&b);
    store_close(s);
}

Test(store, record_json)
{
    struct store *s = open_store(NULL);
    unsigned char so[2048];
    size_t so_len = fix_elf_build(so, sizeof(so), &(struct fix_elf){.type = ET_DYN});
    const struct fix_entry e[] = {
        {.path = "function.json",
         .kind = FK_FILE,
         .data = "{\"runtime\": \"native\", \"handler\": \"hello.so\", \"timeout_ms\": 250, "
                 "\"concurrency\": 4, \"network\": \"none\", \"sandbox\": \"container\", "
                 "\"fresh_per_call\": true, \"env\": {\"ZZ\": \"v1\", \"AA\": \"v2\"}}"},
        {.path = "hello.so", .kind = FK_FILE, .data = (const char *)so, .len = so_len},
    };
    struct blob b;
    blob_make(&b, FF_ZIP, e, ARRAY_SIZE(e));
    struct function_record *r = deploy_ok(s, "native-fn", &b, true, false);

    json_t *j = store_record_json(r);
    cr_assert_not_null(j);
    cr_expect_str_eq(json_string_value(json_object_get(j, "name")), "native-fn");
    cr_expect_str_eq(json_string_value(json_object_get(j, "version")), b.digest);
    cr_expect_str_eq(json_string_value(json_object_get(j, "runtime")), "native");
    cr_expect_str_eq(json_string_value(json_object_get(j, "handler")), "hello.so");
    cr_expect_str_eq(json_string_value(json_object_get(j, "sandbox")), "container");
    cr_expect_str_eq(json_string_value(json_object_get(j, "network")), "none");
    cr_expect_eq(json_integer_value(json_object_get(j, "memory_mb")), MANIFEST_MEMORY_MB_DEFAULT);
    cr_expect_eq(json_integer_value(json_object_get(j, "timeout_ms")), 250);
    cr_expect_eq(json_integer_value(json_object_get(j, "concurrency")), 4);
    cr_expect(json_is_true(json_object_get(j, "fresh_per_call")));
    cr_expect_eq(json_integer_value(json_object_get(j, "created_ms")), r->created_ms);
    cr_expect_eq(json_integer_value(json_object_get(j, "package_size")), (json_int_t)b.len);
    cr_expect_eq(json_integer_value(json_object_get(j, "unpacked_size")),
                 (json_int_t)r->unpacked_size);
    json_t *keys = json_object_get(j, "env_keys");
    cr_assert(json_is_array(keys));
    cr_assert_eq(json_array_size(keys), 2);
    cr_expect_str_eq(json_string_value(json_array_get(keys, 0)), "AA");
    cr_expect_str_eq(json_string_value(json_array_get(keys, 1)), "ZZ");
    cr_expect_null(json_object_get(j, "env"));

    /* created: RFC 3339, UTC, milliseconds, the same instant as created_ms. */
    const char *created = json_string_value(json_object_get(j, "created"));
    cr_assert_not_null(created);
    cr_expect_eq(strlen(created), 24, "%s", created);
    cr_expect_eq(created[10], 'T');
    cr_expect_eq(created[23], 'Z');
    char ms[8];
    snprintf(ms, sizeof(ms), "%03d", (int)(r->created_ms % 1000));
    cr_expect_eq(strncmp(created + 20, ms, 3), 0, "%s vs %s", created, ms);
    time_t sec = (time_t)(r->created_ms / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    char date[32];
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
    cr_expect_eq(strncmp(created, date, 19), 0, "%s vs %s", created, date);

    char *dump = json_dumps(j, 0);
    cr_expect_null(strstr(dump, "v1"));
    cr_expect_null(strstr(dump, "v2"));
    free(dump);
    json_decref(j);

    /* The sandbox a manifest left out shows as "default". */
    struct blob d;
    blob_exec(&d, EXEC_MANIFEST, "d");
    struct function_record *rd = deploy_ok(s, "dflt", &d, true, false);
    j = store_record_json(rd);
    cr_expect_str_eq(json_string_value(json_object_get(j, "sandbox")), "default");
    cr_expect_eq(json_array_size(json_object_get(j, "env_keys")), 0);
    json_decref(j);
    store_record_unref(rd);
    blob_free(&d);

    store_record_unref(r);
    blob_free(&b);
    store_close(s);
}

Test(store, redeploy_same_bytes_is_a_no_op)
{
    struct store *s = open_store(NULL);
    struct blob b;
    blob_exec(&b, EXEC_MANIFEST, "same");
    struct function_record *r1 = deploy_ok(s, "same", &b, true, false);
    struct function_record *r2 = deploy_ok(s, "same", &b, false, true);
    cr_expect_eq(r1, r2);
    cr_expect_eq(r1->created_ms, r2->created_ms);
    cr_expect_eq(count_in("functions/same/versions"), 1);
    cr_expect_eq(count_in("tmp"), 0);
    /* Same bytes under another name are that function's own first version. */
    struct function_record *r3 = deploy_ok(s, "other", &b, true, false);
    cr_expect_str_eq(r3->version, r1->version);
    store_record_unref(r1);
    store_record_unref(r2);
    store_record_unref(r3);
    blob_free(&b);
    store_close(s);
}

Test(store, versions_keep_current_and_previous)
{
    struct store *s = open_store(NULL);
    struct blob b1, b2, b3;
    blob_exec(&b1, EXEC_MANIFEST, "v1");
    blob_exec(&b2, EXEC_MANIFEST, "v2");
    blob_exec(&b3, EXEC_MANIFEST, "v3");

    struct function_record *r1 = deploy_ok(s, "fn", &b1, true, false);
    struct function_record *r2 = deploy_ok(s, "fn", &b2, false, false);
    expect_current("fn", b2.digest);
    cr_expect_eq(count_in("functions/fn/versions"), 2, "the previous version stays");
    char p[PATH_MAX];
    cr_expect(fix_exists(fix_join(p, sizeof(p), r1->package_dir, "run")));
    struct function_record *g = store_function_get(s, "fn");
    cr_expect_str_eq(g->version, b2.digest);
    store_record_unref(g);

    struct function_record *r3 = deploy_ok(s, "fn", &b3, false, false);
    expect_current("fn", b3.digest);
    cr_expect_eq(count_in("functions/fn/versions"), 2);
    cr_expect_not(fix_exists(r1->package_dir), "the oldest version is removed");
    cr_expect(fix_exists(r2->package_dir));
    /* An old record stays readable while referenced. */
    cr_expect_str_eq(r1->version, b1.digest);
    cr_expect_str_eq(r1->manifest.handler, "run");

    /* Back to the previous version: its directory and record are reused. */
    struct function_record *r2b = deploy_ok(s, "fn", &b2, false, false);
    expect_current("fn", b2.digest);
    cr_expect_eq(r2b->created_ms, r2->created_ms);
    cr_expect_eq(count_in("functions/fn/versions"), 2);
    cr_expect(fix_exists(r3->package_dir));
    cr_expect_eq(count_in("tmp"), 0);

    store_record_unref(r1);
    store_record_unref(r2);
    store_record_unref(r2b);
    store_record_unref(r3);
    blob_free(&b1);
    blob_free(&b2);
    blob_free(&b3);
    store_close(s);
}

Test(store, damaged_previous_version_is_replaced)
{
    struct store *s = open_store(NULL);
    struct blob b1, b2;
    blob_exec(&b1, EXEC_MANIFEST, "v1");
    blob_exec(&b2, EXEC_MANIFEST, "v2");
    struct function_record *r1 = deploy_ok(s, "fn", &b1, true, false);
    store_record_unref(deploy_ok(s, "fn", &b2, false, false));
    char rel[256];
    snprintf(rel, sizeof(rel), "functions/fn/versions/%s/record.json", b1.digest);
    plant_file(rel, "{\"garbage\": true}");

    struct function_record *again = deploy_ok(s, "fn", &b1, false, false);
    cr_expect_neq(again, r1);
    cr_expect_geq(again->created_ms, r1->created_ms);
    expect_current("fn", b1.digest);
    cr_expect_eq(count_in("functions/fn/versions"), 2);
    cr_expect_eq(count_in("tmp"), 0);
    store_record_unref(again);
    store_record_unref(r1);
    store_close(s);

    /* What was written is whole: it loads after a restart. */
    s = open_store(NULL);
    struct function_record *g = store_function_get(s, "fn");
    cr_assert_not_null(g);
    cr_expect_str_eq(g->version, b1.digest);
    store_record_unref(g);
    store_close(s);
    blob_free(&b1);
    blob_free(&b2);
}

Test(store, delete)
{
    struct store *s = open_store(NULL);
    struct blob b;
    blob_exec(&b, EXEC_MANIFEST, "bye");
    struct function_record *r = deploy_ok(s, "bye", &b, true, false);
    struct function_record *keep = deploy_ok(s, "keep", &b, true, false);
    struct ember_error err = {0};
    cr_assert_eq(store_function_delete(s, "bye", &err), 0, "%s", err.msg);
    cr_expect_null(store_function_get(s, "bye"));
    cr_expect_not(exists_in("functions/bye"));
    /* in the trash until no call can still be running in it */
    cr_expect_eq(count_in("trash"), 1);
    cr_expect_eq(store_trash_sweep(s, STORE_TRASH_GRACE_MS), 0, "too young to go");
    cr_expect_eq(count_in("trash"), 1);
    cr_expect_eq(store_trash_sweep(s, 0), 1);
    cr_expect_eq(count_in("trash"), 0);
    cr_expect_eq(store_function_count(s), 1);
    cr_expect_str_eq(r->name, "bye", "a held record outlives the delete");

    cr_expect_eq(store_function_delete(s, "bye", &err), -ENOENT);
    cr_expect_not_null(strstr(err.msg, "bye"), "%s", err.msg);
    cr_expect_eq(store_function_delete(s, "../x", &err), -EINVAL);
    cr_expect_eq(store_function_delete(s, "", &err), -EINVAL);

    /* And it can come back, as new. */
    struct function_record *again = deploy_ok(s, "bye", &b, true, false);
    store_record_unref(again);
    store_record_unref(r);
    store_record_unref(keep);
    blob_free(&b);
    store_close(s);

    s = open_store(NULL);
    cr_expect_eq(store_function_count(s), 2);
    store_close(s);
}

Test(store, reopen_rebuilds_registry)
{
    struct store *s = open_store(NULL);
    struct blob a, b1, b2;
    blob_exec(&a,
              "{\"runtime\": \"exec\", \"handler\": \"run\", \"env\": {\"TOKEN\": \"t0p\"}, "
              "\"timeout_ms\": 777}",
              "a");
    blob_exec(&b1, EXEC_MANIFEST, "b1");
    blob_exec(&b2, EXEC_MANIFEST, "b2");
    struct function_record *ra = deploy_ok(s, "a", &a, true, false);
    store_record_unref(deploy_ok(s, "b", &b1, true, false));
    struct function_record *rb = deploy_ok(s, "b", &b2, false, false);
    int64_t a_created = ra->created_ms, b_created = rb->created_ms;
    uint64_t a_unpacked = ra->unpacked_size;
    store_record_unref(ra);
    store_record_unref(rb);
    store_close(s);

    s = open_store(NULL);
    cr_expect_eq(store_function_count(s), 2);
    ra = store_function_get(s, "a");
    rb = store_function_get(s, "b");
    cr_assert_not_null(ra);
    cr_assert_not_null(rb);
    cr_expect_str_eq(ra->version, a.digest);
    cr_expect_str_eq(rb->version, b2.digest);
    cr_expect_eq(ra->created_ms, a_created);
    cr_expect_eq(rb->created_ms, b_created);
    cr_expect_eq(ra->package_size, a.len);
    cr_expect_eq(ra->unpacked_size, a_unpacked);
    cr_expect_eq(ra->manifest.timeout_ms, 777);
    /* Env values come back from the package's own function.json. */
    cr_assert_eq(ra->manifest.n_env, 1);
    cr_expect_str_eq(ra->manifest.env[0].key, "TOKEN");
    cr_expect_str_eq(ra->manifest.env[0].value, "t0p");
    /* Nothing runs after a restart: only the current version is kept. */
    cr_expect_eq(count_in("functions/b/versions"), 1);
    store_record_unref(ra);
    store_record_unref(rb);

    /* Redeploying the current bytes after a restart is still a no-op. */
    store_record_unref(deploy_ok(s, "b", &b2, false, true));
    store_close(s);
    blob_free(&a);
    blob_free(&b1);
    blob_free(&b2);
}

Test(store, leftovers_removed_on_open)
{
    struct store *s = open_store(NULL);
    struct blob good, other;
    blob_exec(&good, EXEC_MANIFEST, "good");
    blob_exec(&other, EXEC_MANIFEST, "other");
    store_record_unref(deploy_ok(s, "good", &good, true, false));
    store_record_unref(deploy_ok(s, "twin", &good, true, false));
    store_close(s);

    static const char fake[] = "0000000000000000000000000000000000000000000000000000000000000000";
    static const char fake2[] = "1111111111111111111111111111111111111111111111111111111111111111";
    char rel[512];

    /* An interrupted upload and an interrupted unpack. */
    plant_file("tmp/upload-0123456789abcdef", "partial archive bytes");
    plant_dir("tmp/stage-0123456789abcdef");
    plant_dir("tmp/stage-0123456789abcdef/pkg");
    plant_file("tmp/stage-0123456789abcdef/pkg/function.json", "{");
    /* An interrupted delete. */
    plant_dir("trash/gone.0123456789abcdef");
    plant_file("trash/gone.0123456789abcdef/x", "x");
    /* A version moved in but never published, and a stale temporary symlink. */
    snprintf(rel, sizeof(rel), "functions/good/versions/%s", fake);
    plant_dir(rel);
    snprintf(rel, sizeof(rel), "functions/good/versions/%s/pkg", fake);
    plant_dir(rel);
    snprintf(rel, sizeof(rel), "versions/%s", fake);
    plant_link("functions/good/current.new", rel);
    plant_file("functions/good/stray", "?");
    /* A first deploy interrupted before "current" existed. */
    plant_dir("functions/half");
    plant_dir("functions/half/versions");
    snprintf(rel, sizeof(rel), "functions/half/versions/%s", fake);
    plant_dir(rel);
    /* "current" naming a missing version, or something that is not one. */
    plant_dir("functions/dangling");
    plant_dir("functions/dangling/versions");
    snprintf(rel, sizeof(rel), "versions/%s", fake2);
    plant_link("functions/dangling/current", rel);
    plant_dir("functions/escape");
    plant_link("functions/escape/current", "../../../../etc");
    /* A version whose record is garbage. */
    plant_dir("functions/garbled");
    plant_dir("functions/garbled/versions");
    snprintf(rel, sizeof(rel), "functions/garbled/versions/%s", fake);
    plant_dir(rel);
    snprintf(rel, sizeof(rel), "functions/garbled/versions/%s/record.json", fake);
    plant_file(rel, "not json");
    snprintf(rel, sizeof(rel), "versions/%s", fake);
    plant_link("functions/garbled/current", rel);
    /* Names that are not function names, and a plain file. */
    plant_dir("functions/Bad_Name");
    plant_file("functions/junk", "junk");
    plant_link("functions/link", "/etc");
    /* "twin" damaged after the fact: its package lost function.json. */
    snprintf(rel, sizeof(rel), "functions/twin/versions/%s/pkg/function.json", good.digest);
    char p[PATH_MAX];
    cr_assert_eq(unlink(fix_join(p, sizeof(p), state, rel)), 0);

    s = open_store(NULL);
    cr_expect_eq(store_function_count(s), 1);
    struct function_record *r = store_function_get(s, "good");
    cr_assert_not_null(r);
    cr_expect_str_eq(r->version, good.digest);
    store_record_unref(r);
    cr_expect_eq(count_in("tmp"), 0);
    cr_expect_eq(count_in("trash"), 0);
    cr_expect_eq(count_in("functions"), 1);
    cr_expect_eq(count_in("functions/good"), 2); /* current, versions */
    cr_expect_eq(count_in("functions/good/versions"), 1);

    /* And the store still works. */
    store_record_unref(deploy_ok(s, "good", &other, false, false));
    store_record_unref(deploy_ok(s, "half", &other, true, false));
    store_close(s);
    blob_free(&good);
    blob_free(&other);
}

/* A refused deploy changes nothing: not the live version, not the disk. */
static void expect_refused(struct store *s, const char *name, const struct blob *b,
                           const char *needle)
{
    struct function_record *before = store_function_get(s, name);
    char rel[128];
    snprintf(rel, sizeof(rel), "functions/%s/versions", name);
    long versions_before = count_in(rel);

    struct function_record *rec = (void *)1;
    bool created = true, unchanged = true;
    struct ember_error err = {0};
    int r = deploy(s, name, b, &rec, &created, &unchanged, &err);
    cr_log_info("refused: %s", err.msg);
    cr_expect_eq(r, -EINVAL, "r=%d %s", r, err.msg);
    cr_expect_not_null(strstr(err.msg, needle), "'%s' lacks '%s'", err.msg, needle);
    cr_expect_null(rec);
    cr_expect_not(created);
    cr_expect_not(unchanged);

    struct function_record *after = store_function_get(s, name);
    cr_expect_eq(after, before, "the live record changed");
    if (before)
        expect_current(name, before->version);
    else
        cr_expect_not(exists_in(rel), "a refused first deploy left %s", rel);
    cr_expect_eq(count_in(rel), versions_before);
    cr_expect_eq(count_in("tmp"), 0, "a refused deploy left files in tmp/");
    store_record_unref(before);
    store_record_unref(after);
}

Test(store, refused_packages_change_nothing)
{
    struct store *s = open_store(NULL);
    struct blob good;
    blob_exec(&good, EXEC_MANIFEST, "good");
    store_record_unref(deploy_ok(s, "live", &good, true, false));

    const char *names[] = {"live", "fresh"};
    for (size_t k = 0; k < ARRAY_SIZE(names); k++) {
        struct blob b;
        const struct fix_entry escape[] = {
            {.path = "function.json", .kind = FK_FILE, .data = EXEC_MANIFEST},
            {.path = "run", .kind = FK_FILE, .data = "#!/bin/sh\n", .mode = 0755},
            {.path = "../../escape", .kind = FK_FILE, .data = "x"},
        };
        blob_make(&b, FF_TAR_GZ, escape, ARRAY_SIZE(escape));
        expect_refused(s, names[k], &b, "unpack: entry '../../escape': '..' components");
        blob_free(&b);

        const struct fix_entry link_out[] = {
            {.path = "function.json", .kind = FK_FILE, .data = EXEC_MANIFEST},
            {.path = "run", .kind = FK_SYMLINK, .link = "/bin/sh"},
        };
        blob_make(&b, FF_ZIP, link_out, ARRAY_SIZE(link_out));
        expect_refused(s, names[k], &b, "entry 'run': symlink to an absolute path");
        blob_free(&b);

        blob_exec(&b, "{\"runtime\": \"exec\", \"handler\": \"run\", \"memory_mb\": 1}", "m");
        expect_refused(s, names[k], &b,
                       "function.json: memory_mb: must be an integer between 16 and 16384");
        blob_free(&b);

        blob_exec(&b, "{\"runtime\": \"exec\", \"handler\": \"run\", \"colour\": \"red\"}", "u");
        expect_refused(s, names[k], &b, "function.json: colour: unknown field");
        blob_free(&b);

        blob_exec(&b, "{\"runtime\": \"python\", \"handler\": \"main.handle\"}", "p");
        expect_refused(s, names[k], &b, "function.json: runtime: \"python\" is not supported");
        blob_free(&b);

        blob_exec(&b, "{\"runtime\": \"exec\", \"handler\": \"missing\"}", "h");
        expect_refused(s, names[k], &b, "handler 'missing': not found in the package");
        blob_free(&b);

        blob_exec(&b, "{\"runtime\": \"native\", \"handler\": \"run\"}", "n");
        expect_refused(s, names[k], &b, "handler 'run': runtime \"native\" needs an ELF64");
        blob_free(&b);

        const struct fix_entry noexec[] = {
            {.path = "function.json", .kind = FK_FILE, .data = EXEC_MANIFEST},
            {.path = "run", .kind = FK_FILE, .data = "#!/bin/sh\n", .mode = 0644},
        };
        blob_make(&b, FF_TAR, noexec, ARRAY_SIZE(noexec));
        expect_refused(s, names[k], &b, "mode 0644 has no execute bit");
        blob_free(&b);

        char *huge = malloc(MANIFEST_FILE_MAX + 100);
        memset(huge, ' ', MANIFEST_FILE_MAX + 99);
        memcpy(huge, EXEC_MANIFEST, strlen(EXEC_MANIFEST));
        huge[MANIFEST_FILE_MAX + 99] = '\0';
        blob_exec(&b, huge, "huge");
        free(huge);
        expect_refused(s, names[k], &b, "function.json: larger than 65536 bytes");
        blob_free(&b);

        const struct fix_entry nomanifest[] = {
            {.path = "run", .kind = FK_FILE, .data = "#!/bin/sh\n", .mode = 0755},
        };
        blob_make(&b, FF_TAR_GZ, nomanifest, ARRAY_SIZE(nomanifest));
        expect_refused(s, names[k], &b, "entry 'function.json': missing at the package root");
        blob_free(&b);

        b.p = (unsigned char *)strdup("definitely not an archive");
        b.len = strlen((char *)b.p);
        expect_refused(s, names[k], &b, "not a tar, tar.gz or zip archive");
        blob_free(&b);
    }
    cr_expect_eq(store_function_count(s), 1);
    blob_free(&good);
    store_close(s);
}

Test(store, bad_names_and_aborts)
{
    struct store *s = open_store(NULL);
    struct blob b;
    blob_exec(&b, EXEC_MANIFEST, "x");
    const char *bad[] = {"", "UPPER", "-lead", "a/b", "..", "a_b"};
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        struct function_record *rec = NULL;
        bool created, unchanged;
        struct ember_error err = {0};
        cr_expect_eq(deploy(s, bad[i], &b, &rec, &created, &unchanged, &err), -EINVAL);
        cr_expect_not_null(strstr(err.msg, "name: must match"), "%s", err.msg);
        cr_expect_null(rec);
    }
    cr_expect_eq(count_in("tmp"), 0);
    cr_expect_eq(count_in("functions"), 0);

    struct store_upload *up;
    struct ember_error err = {0};
    cr_assert_eq(store_upload_begin(s, &up, &err), 0);
    cr_assert_eq(store_upload_write(up, b.p, b.len, &err), 0);
    cr_expect_eq(count_in("tmp"), 1);
    store_upload_abort(up);
    cr_expect_eq(count_in("tmp"), 0);
    store_upload_abort(NULL);
    blob_free(&b);
    store_close(s);
}

Test(store, upload_size_cap)
{
    struct package_limits lim;
    package_limits_default(&lim);
    lim.max_unpacked_bytes = 4096;
    lim.max_entries = 4;
    struct store *s = open_store(&lim);
    /* 4096 + 4 * 16 KiB + 1 MiB. */
    uint64_t cap = 4096 + 4 * 16384 + (1 << 20);
    struct store_upload *up;
    struct ember_error err = {0};
    cr_assert_eq(store_upload_begin(s, &up, &err), 0);
    static char chunk[65536];
    uint64_t sent = 0;
    int r = 0;
    while (sent <= cap && (r = store_upload_write(up, chunk, sizeof(chunk), &err)) == 0)
        sent += sizeof(chunk);
    cr_expect_eq(r, -EFBIG);
    cr_expect_leq(sent, cap);
    cr_expect_not_null(strstr(err.msg, "package: larger than"), "%s", err.msg);
    cr_expect_eq(store_upload_write(up, "x", 1, &err), -EFBIG, "a spoiled upload stays spoiled");
    struct function_record *rec = NULL;
    bool created, unchanged;
    cr_expect_eq(store_upload_commit(up, "big", &rec, &created, &unchanged, &err), -EFBIG);
    cr_expect_null(rec);
    cr_expect_eq(count_in("tmp"), 0);
    store_close(s);
}

/* ---- threads ---- */

enum { THREADS = 6, ROUNDS = 4, NAMES = 3 };

struct worker {
    struct store *s;
    int id;
    struct blob blobs[ROUNDS];
    int failures;
    char last_error[512];
};

static volatile int readers_stop;

static void *commit_worker(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < ROUNDS; i++) {
        char name[16];
        snprintf(name, sizeof(name), "fn-%d", (w->id + i) % NAMES);
        struct function_record *rec = NULL;
        bool created, unchanged;
        struct ember_error err = {0};
        int r = deploy(w->s, name, &w->blobs[i], &rec, &created, &unchanged, &err);
        if (r < 0 || !rec || strcmp(rec->version, w->blobs[i].digest) != 0) {
            w->failures++;
            snprintf(w->last_error, sizeof(w->last_error), "%s", err.msg);
        }
        store_record_unref(rec);
    }
    return NULL;
}

static void *read_worker(void *arg)
{
    struct store *s = arg;
    while (!readers_stop) {
        struct function_record **v;
        size_t n;
        if (store_function_list(s, &v, &n) == 0) {
            for (size_t i = 0; i < n; i++) {
                /* Each record is complete whenever it is visible. */
                if (strlen(v[i]->version) != STORE_VERSION_LEN || !v[i]->manifest.handler[0])
                    abort();
                store_record_unref(v[i]);
            }
            free(v);
        }
        store_record_unref(store_function_get(s, "fn-1"));
    }
    return NULL;
}

Test(store, concurrent_commits)
{
    struct store *s = open_store(NULL);
    static struct worker w[THREADS];
    for (int t = 0; t < THREADS; t++) {
        w[t] = (struct worker){.s = s, .id = t};
        for (int i = 0; i < ROUNDS; i++) {
            char tag[32];
            /* Thread 0 and 1 deploy identical bytes at the same time. */
            snprintf(tag, sizeof(tag), "t%d-r%d", t < 2 ? 0 : t, i);
            blob_exec(&w[t].blobs[i], EXEC_MANIFEST, tag);
        }
    }
    pthread_t th[THREADS], rd[2];
    readers_stop = 0;
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&rd[i], NULL, read_worker, s), 0);
    for (int t = 0; t < THREADS; t++)
        cr_assert_eq(pthread_create(&th[t], NULL, commit_worker, &w[t]), 0);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    readers_stop = 1;
    for (int i = 0; i < 2; i++)
        pthread_join(rd[i], NULL);

    for (int t = 0; t < THREADS; t++)
        cr_expect_eq(w[t].failures, 0, "thread %d: %s", t, w[t].last_error);
    cr_expect_eq(store_function_count(s), NAMES);
    cr_expect_eq(count_in("tmp"), 0);
    char versions[NAMES][STORE_VERSION_LEN + 1];
    for (int i = 0; i < NAMES; i++) {
        char name[16], rel[64];
        snprintf(name, sizeof(name), "fn-%d", i);
        snprintf(rel, sizeof(rel), "functions/%s/versions", name);
        cr_expect_leq(count_in(rel), 2, "%s", name);
        struct function_record *r = store_function_get(s, name);
        cr_assert_not_null(r);
        expect_current(name, r->version);
        snprintf(versions[i], sizeof(versions[i]), "%s", r->version);
        store_record_unref(r);
    }
    store_close(s);

    s = open_store(NULL);
    for (int i = 0; i < NAMES; i++) {
        char name[16];
        snprintf(name, sizeof(name), "fn-%d", i);
        struct function_record *r = store_function_get(s, name);
        cr_assert_not_null(r);
        cr_expect_str_eq(r->version, versions[i]);
        store_record_unref(r);
    }
    store_close(s);
    for (int t = 0; t < THREADS; t++)
        for (int i = 0; i < ROUNDS; i++)
            blob_free(&w[t].blobs[i]);
}

/* ---- kill -9 ---- */

enum { CRASH_VERSIONS = 6 };

/* The child: deploy the versions round and round until killed. */
static void __attribute__((noreturn)) crash_child(struct blob *b)
{
    struct store *s = NULL;
    struct ember_error err = {0};
    if (store_open(state, NULL, &s, &err) < 0)
        _exit(2);
    for (unsigned i = 0;; i++) {
        struct function_record *rec = NULL;
        bool created, unchanged;
        if (deploy(s, "crash", &b[i % CRASH_VERSIONS], &rec, &created, &unchanged, &err) < 0)
            _exit(3);
        store_record_unref(rec);
    }
}

Test(store, kill9_at_any_instant)
{
    struct blob b[CRASH_VERSIONS];
    for (int i = 0; i < CRASH_VERSIONS; i++) {
        char tag[16];
        snprintf(tag, sizeof(tag), "crash-%d", i);
        blob_exec(&b[i], EXEC_MANIFEST, tag);
    }
    /* Let the store exist before the first child, so that it is not the
     * mkdir of the state directory that gets interrupted every time. */
    store_close(open_store(NULL));

    srand((unsigned)ember_now_ns());
    int seen_function = 0;
    for (int round = 0; round < 16; round++) {
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0)
            crash_child(b);
        struct timespec ts = {0, (long)(rand() % 60 + 1) * 1000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status;
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFSIGNALED(status), "the child stopped by itself: status %d", status);

        struct store *s = open_store(NULL);
        cr_expect_eq(count_in("tmp"), 0);
        cr_expect_eq(count_in("trash"), 0);
        struct function_record *r = store_function_get(s, "crash");
        if (r) {
            seen_function++;
            int match = -1;
            for (int i = 0; i < CRASH_VERSIONS; i++)
                if (strcmp(r->version, b[i].digest) == 0)
                    match = i;
            cr_expect_geq(match, 0, "round %d: unknown version %s", round, r->version);
            expect_current("crash", r->version);
            char p[PATH_MAX];
            cr_expect(fix_exists(fix_join(p, sizeof(p), r->package_dir, "run")));
            cr_expect(fix_exists(fix_join(p, sizeof(p), r->package_dir, "lib/data/x.txt")));
            cr_expect_eq(count_in("functions/crash/versions"), 1);
            store_record_unref(r);
        } else {
            cr_expect_eq(count_in("functions"), 0, "round %d: a half function stayed", round);
        }
        store_close(s);
    }
    cr_log_info("the function existed after %d of 16 kills", seen_function);
    for (int i = 0; i < CRASH_VERSIONS; i++)
        blob_free(&b[i]);
}
