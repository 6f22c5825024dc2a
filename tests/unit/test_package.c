/* test_package.c - package unpacking against archives this test writes with
 * libarchive: good ones in every format, and hostile ones (escapes, links,
 * devices, setuid, too many entries, bombs, duplicates). Every refusal must
 * name the entry, leave the destination empty and nothing outside it.
 *
 * package.c is included to reach its statics (path and symlink rules, the
 * openat2-less walk, and unpack_archive, which does not clean up, so a bomb
 * can be seen to stop at the cap).
 */
#include "functions/package.c"

#include "functions_fixtures.h"

#define MANIFEST_JSON "{\"runtime\": \"exec\", \"handler\": \"run\"}"
#define MANIFEST                                                                                   \
    {                                                                                              \
        .path = "function.json", .kind = FK_FILE, .data = MANIFEST_JSON                            \
    }
#define F(p, d)                                                                                    \
    {                                                                                              \
        .path = (p), .kind = FK_FILE, .data = (d)                                                  \
    }
#define FM(p, d, m)                                                                                \
    {                                                                                              \
        .path = (p), .kind = FK_FILE, .data = (d), .mode = (m)                                     \
    }
#define D(p)                                                                                       \
    {                                                                                              \
        .path = (p), .kind = FK_DIR                                                                \
    }
#define DM(p, m)                                                                                   \
    {                                                                                              \
        .path = (p), .kind = FK_DIR, .mode = (m)                                                   \
    }
#define L(p, t)                                                                                    \
    {                                                                                              \
        .path = (p), .kind = FK_SYMLINK, .link = (t)                                               \
    }
#define H(p, t)                                                                                    \
    {                                                                                              \
        .path = (p), .kind = FK_HARDLINK, .link = (t)                                              \
    }
#define K(p, k)                                                                                    \
    {                                                                                              \
        .path = (p), .kind = (k)                                                                   \
    }

static char root[PATH_MAX], dest[PATH_MAX], archive_path[PATH_MAX];
static int dest_fd = -1;

static void setup(void)
{
    fix_tmpdir(root);
    fix_join(dest, sizeof(dest), root, "dest");
    fix_join(archive_path, sizeof(archive_path), root, "pkg");
    cr_assert_eq(mkdir(dest, 0755), 0);
    dest_fd = fix_open_dir(dest);
}

static void teardown(void)
{
    close(dest_fd);
    fix_rmrf(root);
}

TestSuite(unpack, .init = setup, .fini = teardown);
TestSuite(hostile, .init = setup, .fini = teardown);
TestSuite(limits, .init = setup, .fini = teardown, .timeout = 120);
TestSuite(helpers, .init = setup, .fini = teardown);

static int unpack(enum fix_format fmt, const struct fix_entry *e, size_t n,
                  const struct package_limits *lim, struct package_info *info,
                  struct ember_error *err)
{
    unlink(archive_path);
    cr_assert_eq(fix_archive(archive_path, fmt, e, n), 0, "the test could not write the archive");
    return package_unpack(archive_path, dest_fd, lim, info, err);
}

/* Refused with -EINVAL and @needle in the message; nothing left anywhere. */
static void expect_refused_fmt(enum fix_format fmt, const struct fix_entry *e, size_t n,
                               const struct package_limits *lim, const char *needle)
{
    struct ember_error err = {0};
    int r = unpack(fmt, e, n, lim, NULL, &err);
    cr_log_info("refused: %s", err.msg);
    cr_expect_eq(r, -EINVAL, "accepted or wrong error (r=%d): %s", r, err.msg);
    cr_expect_eq(err.code, r);
    cr_expect_not_null(strstr(err.msg, needle), "message '%s' lacks '%s'", err.msg, needle);
    cr_expect_eq(fix_dir_count(dest), 0, "the destination was not cleaned");
    /* Nothing escaped next to it: the parent holds the archive and dest only. */
    cr_expect_eq(fix_dir_count(root), 2, "something was created outside the destination");
}

#define REFUSED(needle, ...)                                                                       \
    do {                                                                                           \
        const struct fix_entry e_[] = {__VA_ARGS__};                                               \
        expect_refused_fmt(FF_TAR_GZ, e_, ARRAY_SIZE(e_), NULL, needle);                           \
    } while (0)

#define REFUSED_ZIP(needle, ...)                                                                   \
    do {                                                                                           \
        const struct fix_entry e_[] = {__VA_ARGS__};                                               \
        expect_refused_fmt(FF_ZIP, e_, ARRAY_SIZE(e_), NULL, needle);                              \
    } while (0)

static mode_t mode_of(const char *rel)
{
    struct stat st;
    cr_assert_eq(fstatat(dest_fd, rel, &st, AT_SYMLINK_NOFOLLOW), 0, "%s: %s", rel,
                 strerror(errno));
    return st.st_mode;
}

static void expect_content(const char *rel, const char *want)
{
    char *text = NULL;
    size_t len = 0;
    cr_assert_eq(functions__read_file(dest_fd, rel, 1 << 20, &text, &len), 0, "%s", rel);
    cr_expect_str_eq(text, want, "%s", rel);
    free(text);
}

/* ---- good packages ---- */

Test(unpack, tar_gz_tree_and_modes)
{
    const struct fix_entry e[] = {
        D("./"),
        MANIFEST,
        FM("./run", "#!/bin/sh\n", 0777),
        D("lib/"),
        FM("lib/data.txt", "data", 0666),
        FM("bin/tool", "tool", 0700), /* implicit directory bin/ */
        FM("bin/secret", "s", 0600),
        FM("bin/group-x", "g", 0654), /* group/other exec bits alone do not count */
        L("lib/link", "data.txt"),
        L("lib/deep/up", "../../run"),
        L("dot", "."),
        F("a//b/.//c", "c"),
        F("empty", NULL),
    };
    struct package_info info = {0};
    struct ember_error err = {0};
    int r = unpack(FF_TAR_GZ, e, ARRAY_SIZE(e), NULL, &info, &err);
    cr_assert_eq(r, 0, "%s", err.msg);
    cr_expect_eq(info.entries, ARRAY_SIZE(e));
    cr_expect_eq(info.unpacked_bytes, strlen(MANIFEST_JSON) + 10 + 4 + 4 + 1 + 1 + 1);

    expect_content("function.json", MANIFEST_JSON);
    expect_content("run", "#!/bin/sh\n");
    expect_content("lib/data.txt", "data");
    expect_content("a/b/c", "c");
    expect_content("empty", "");
    cr_expect_eq(mode_of("run") & 07777, 0755);
    cr_expect_eq(mode_of("lib/data.txt") & 07777, 0644);
    cr_expect_eq(mode_of("bin/tool") & 07777, 0755);
    cr_expect_eq(mode_of("bin/secret") & 07777, 0644);
    cr_expect_eq(mode_of("bin/group-x") & 07777, 0644);
    cr_expect_eq(mode_of("bin") & 07777, 0755);
    cr_expect(S_ISDIR(mode_of("lib")));
    cr_expect(S_ISLNK(mode_of("lib/link")));
    cr_expect(S_ISLNK(mode_of("lib/deep/up")));

    char target[64];
    ssize_t n = readlinkat(dest_fd, "lib/link", target, sizeof(target) - 1);
    cr_assert_gt(n, 0);
    target[n] = '\0';
    cr_expect_str_eq(target, "data.txt");
}

Test(unpack, umask_does_not_matter)
{
    const struct fix_entry e[] = {MANIFEST, FM("d/x", "x", 0755), D("e/")};
    mode_t old = umask(077);
    struct ember_error err = {0};
    int r = unpack(FF_TAR, e, ARRAY_SIZE(e), NULL, NULL, &err);
    umask(old);
    cr_assert_eq(r, 0, "%s", err.msg);
    cr_expect_eq(mode_of("function.json") & 07777, 0644);
    cr_expect_eq(mode_of("d") & 07777, 0755);
    cr_expect_eq(mode_of("d/x") & 07777, 0755);
    cr_expect_eq(mode_of("e") & 07777, 0755);
}

Test(unpack, every_format)
{
    static const enum fix_format formats[] = {FF_TAR_GZ, FF_TAR,       FF_GNUTAR, FF_USTAR,
                                              FF_ZIP,    FF_ZIP_STORE, FF_ZIP64};
    for (size_t i = 0; i < ARRAY_SIZE(formats); i++) {
        const struct fix_entry e[] = {
            D("lib/"),           F("lib/a.txt", "aaaa"), MANIFEST, FM("run", "#!/bin/sh\n", 0755),
            L("lib/b", "a.txt"),
        };
        struct package_info info = {0};
        struct ember_error err = {0};
        int r = unpack(formats[i], e, ARRAY_SIZE(e), NULL, &info, &err);
        cr_expect_eq(r, 0, "format %zu: %s", i, err.msg);
        cr_expect_eq(info.entries, 5, "format %zu", i);
        expect_content("lib/a.txt", "aaaa");
        cr_expect(S_ISLNK(mode_of("lib/b")), "format %zu", i);
        cr_expect_eq(mode_of("run") & 07777, 0755, "format %zu", i);
        cr_assert_eq(functions__remove_contents(dest_fd), 0);
    }
}

Test(unpack, zip_streamed_sizes_and_late_directories)
{
    /* Sizes left unset: the zip writer streams with data descriptors.
     * Directory entries after their contents, as some zip tools write them. */
    const struct fix_entry e[] = {
        {.path = "function.json", .kind = FK_FILE, .data = MANIFEST_JSON, .no_size = true},
        {.path = "x/y/z.txt", .kind = FK_FILE, .data = "zzz", .no_size = true},
        D("x/y/"),
        D("x/"),
        FM("run", "#!/bin/sh\n", 0755),
    };
    struct ember_error err = {0};
    int r = unpack(FF_ZIP, e, ARRAY_SIZE(e), NULL, NULL, &err);
    cr_assert_eq(r, 0, "%s", err.msg);
    expect_content("x/y/z.txt", "zzz");
    expect_content("function.json", MANIFEST_JSON);
}

Test(unpack, unicode_and_odd_names)
{
    const struct fix_entry e[] = {
        MANIFEST,      F("caf\xc3\xa9.txt", "1"), F("sp ace", "2"), F("...", "3"),
        F("..a", "4"), F("-dash", "5"),
    };
    struct ember_error err = {0};
    int r = unpack(FF_TAR_GZ, e, ARRAY_SIZE(e), NULL, NULL, &err);
    cr_assert_eq(r, 0, "%s", err.msg);
    expect_content("...", "3");
    expect_content("..a", "4");
}

/* ---- hostile packages ---- */

Test(hostile, absolute_paths)
{
    REFUSED("unpack: entry '/etc/evil': absolute paths are not allowed", MANIFEST,
            F("/etc/evil", "x"));
    REFUSED("entry '/tmp/': absolute paths", MANIFEST, D("/tmp/"));
    REFUSED("entry '/x': absolute paths", MANIFEST, L("/x", "function.json"));
    REFUSED_ZIP("entry '/etc/evil': absolute paths", MANIFEST, F("/etc/evil", "x"));
}

Test(hostile, dotdot)
{
    REFUSED("entry '../x': '..' components are not allowed", MANIFEST, F("../x", "x"));
    REFUSED("entry 'a/../../x': '..' components", MANIFEST, F("a/../../x", "x"));
    REFUSED("entry 'a/../b': '..' components", MANIFEST, F("a/../b", "x"));
    REFUSED("entry '../': '..' components", MANIFEST, D(".."));
    REFUSED("entry './../x': '..' components", MANIFEST, F("./../x", "x"));
    REFUSED("entry 'a/../': '..' components", MANIFEST, D("a/.."));
    REFUSED("entry '../../etc/cron.d/x': '..'", MANIFEST, L("../../etc/cron.d/x", "y"));
    REFUSED_ZIP("entry '../x': '..' components", MANIFEST, F("../x", "x"));
    REFUSED_ZIP("entry 'a/../../x'", MANIFEST, F("a/../../x", "x"));
}

Test(hostile, symlinks_out)
{
    REFUSED("entry 'evil': symlink target leaves the package ('../../etc/passwd')", MANIFEST,
            L("evil", "../../etc/passwd"));
    REFUSED("entry 'evil': symlink to an absolute path ('/etc/passwd')", MANIFEST,
            L("evil", "/etc/passwd"));
    REFUSED("entry 'evil': symlink target leaves the package", MANIFEST, L("evil", ".."));
    REFUSED("entry 'a/b/evil': symlink target leaves the package ('../../../x')", MANIFEST,
            L("a/b/evil", "../../../x"));
    REFUSED("entry 'a/evil': symlink target leaves", MANIFEST, L("a/evil", "./../.././x"));
    REFUSED_ZIP("entry 'evil': symlink target leaves the package", MANIFEST,
                L("evil", "../../etc/passwd"));
    REFUSED_ZIP("entry 'evil': symlink to an absolute path", MANIFEST, L("evil", "/etc/passwd"));

    /* Climbing to the root from below it is fine. */
    const struct fix_entry ok[] = {MANIFEST, L("a/b/c/root", "../../.."),
                                   L("a/b/sib", "../../function.json")};
    struct ember_error err = {0};
    cr_expect_eq(unpack(FF_TAR_GZ, ok, ARRAY_SIZE(ok), NULL, NULL, &err), 0, "%s", err.msg);
}

Test(hostile, symlink_chains)
{
    /* "d/up" is the package root, lexically and really; "d/up/.." is then
     * outside, though lexically it is not. */
    REFUSED("entry 'esc': symlink target has '..' after a name", MANIFEST, L("d/up", ".."),
            L("esc", "d/up/../.."));
    /* The same with the link coming after the one that uses it. */
    REFUSED("entry 'esc': symlink target has '..' after a name", MANIFEST, L("esc", "self/self/.."),
            L("self", "."));
    /* Writing through a symlink, even one pointing inside. */
    REFUSED("entry 'lnk/x': 'lnk' on its path is not a directory", MANIFEST, D("d/"), L("lnk", "d"),
            F("lnk/x", "x"));
    REFUSED("entry 'up/passwd': 'up' on its path is not a directory", MANIFEST, L("up", "."),
            F("up/passwd", "x"));
    REFUSED("entry 'lnk/': duplicate entry", MANIFEST, L("lnk", "d"), D("lnk/"));
    /* A symlink replacing a file that was written, and the other way round. */
    REFUSED("entry 'x': duplicate entry", MANIFEST, F("x", "1"), L("x", "function.json"));
    REFUSED("entry 'x': duplicate entry", MANIFEST, L("x", "function.json"), F("x", "1"));
}

Test(hostile, links_and_special_files)
{
    REFUSED("entry 'hl': hard links are not allowed", MANIFEST, H("hl", "function.json"));
    REFUSED("entry 'hl': hard links are not allowed", MANIFEST, H("hl", "/etc/shadow"));
    REFUSED("entry 'dev/null': device nodes are not allowed", MANIFEST, K("dev/null", FK_CHR));
    REFUSED("entry 'sda': device nodes are not allowed", MANIFEST, K("sda", FK_BLK));
    REFUSED("entry 'pipe': FIFOs are not allowed", MANIFEST, K("pipe", FK_FIFO));

    /* Neither tar nor libarchive's zip writer holds sockets, but a zip's
     * Unix mode bits can say anything: patch them as a hostile tool would. */
    static const struct {
        unsigned mode;
        const char *needle;
    } patched[] = {
        {0140755, "entry 'odd': sockets are not allowed"},
        {0020644, "entry 'odd': device nodes are not allowed"},
        /* (FIFO bits libarchive's zip reader turns into a regular file.) */
        {0104755, "entry 'odd': setuid"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(patched); i++) {
        const struct fix_entry e[] = {MANIFEST, F("odd", "x")};
        unlink(archive_path);
        cr_assert_eq(fix_archive(archive_path, FF_ZIP_STORE, e, ARRAY_SIZE(e)), 0);
        cr_assert_eq(fix_zip_patch(archive_path, "odd", patched[i].mode, UINT32_MAX), 0);
        struct ember_error err = {0};
        int r = package_unpack(archive_path, dest_fd, NULL, NULL, &err);
        cr_log_info("patched zip: %s", err.msg);
        cr_expect_eq(r, -EINVAL, "%s", err.msg);
        cr_expect_not_null(strstr(err.msg, patched[i].needle), "%s", err.msg);
        cr_expect_eq(fix_dir_count(dest), 0);
    }
}

Test(hostile, privilege_bits)
{
    REFUSED("entry 'suid': setuid, setgid and sticky bits are not allowed (mode 4755)", MANIFEST,
            FM("suid", "x", 04755));
    REFUSED("entry 'sgid': setuid, setgid and sticky bits are not allowed (mode 2755)", MANIFEST,
            FM("sgid", "x", 02755));
    REFUSED("entry 'tmp/': setuid, setgid and sticky bits are not allowed (mode 1777)", MANIFEST,
            DM("tmp/", 01777));
    REFUSED("entry 'sgdir/': setuid", MANIFEST, DM("sgdir/", 02755));
    REFUSED_ZIP("entry 'suid': setuid", MANIFEST, FM("suid", "x", 04755));
}

Test(hostile, duplicates)
{
    REFUSED("entry 'a.txt': duplicate entry", MANIFEST, F("a.txt", "1"), F("a.txt", "2"));
    REFUSED("entry 'a.txt': duplicate entry", MANIFEST, F("./a.txt", "1"), F("a.txt", "2"));
    REFUSED("entry 'function.json': duplicate entry", MANIFEST, MANIFEST);
    REFUSED("entry 'd/': duplicate entry", MANIFEST, D("d/"), D("d/"));
    REFUSED("entry 'x/': duplicate entry", MANIFEST, F("x", "1"), D("x/"));
    REFUSED("entry 'x/y': 'x' on its path is not a directory", MANIFEST, F("x", "1"),
            F("x/y", "2"));
    REFUSED("entry 'd': conflicts with an earlier entry", MANIFEST, F("d/f", "1"), F("d", "2"));
    REFUSED_ZIP("entry 'a.txt': duplicate entry", MANIFEST, F("a.txt", "1"), F("a.txt", "2"));
}

Test(hostile, odd_paths)
{
    REFUSED("entry '.': the package root must be a directory", MANIFEST, F(".", "x"));

    char deep[PACKAGE_MAX_DEPTH * 2 + 8];
    size_t o = 0;
    for (int i = 0; i <= PACKAGE_MAX_DEPTH; i++) {
        deep[o++] = 'd';
        deep[o++] = '/';
    }
    deep[o++] = 'f';
    deep[o] = '\0';
    REFUSED("nested deeper than 64 directories", MANIFEST, F(deep, "x"));
    /* Exactly PACKAGE_MAX_DEPTH components is fine. */
    const struct fix_entry ok[] = {MANIFEST, F(deep + 4, "x")};
    struct ember_error err = {0};
    cr_expect_eq(unpack(FF_TAR_GZ, ok, ARRAY_SIZE(ok), NULL, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(functions__remove_contents(dest_fd), 0);

    char longname[300];
    memset(longname, 'n', 256);
    longname[256] = '\0';
    REFUSED("a path component is longer than 255 bytes", MANIFEST, F(longname, "x"));

    /* Control characters in a name are quoted in the message. */
    REFUSED("entry 'bad\\x0aname': hard links", MANIFEST, H("bad\nname", "function.json"));
}

Test(hostile, manifest_placement)
{
    REFUSED("unpack: entry 'function.json': missing at the package root", F("run", "x"));
    REFUSED("entry 'function.json': missing at the package root (found 'myfn/function.json'",
            D("myfn/"), F("myfn/function.json", MANIFEST_JSON), F("myfn/run", "x"));
    REFUSED("entry 'function.json': must be a regular file", D("function.json/"),
            F("function.json/x", "x"));
    REFUSED("entry 'function.json': must be a regular file", F("real.json", MANIFEST_JSON),
            L("function.json", "real.json"));
    REFUSED_ZIP("entry 'function.json': missing", F("run", "x"));
    /* An archive with no entries at all. */
    const struct fix_entry none[] = {{0}};
    expect_refused_fmt(FF_TAR_GZ, none, 0, NULL, "function.json");
}

Test(hostile, not_archives)
{
    struct ember_error err = {0};
    int r;

    fix_write_file(archive_path, "this is not an archive, not at all.\n", 36, 0644);
    r = package_unpack(archive_path, dest_fd, NULL, NULL, &err);
    cr_expect_eq(r, -EINVAL);
    cr_expect_not_null(strstr(err.msg, "not a tar, tar.gz or zip archive"), "%s", err.msg);

    fix_write_file(archive_path, "", 0, 0644);
    r = package_unpack(archive_path, dest_fd, NULL, NULL, &err);
    cr_expect_eq(r, -EINVAL, "%s", err.msg);

    /* A bzip2 stream: a filter DESIGN.md does not promise. */
    fix_write_file(archive_path, "BZh91AY&SY", 10, 0644);
    r = package_unpack(archive_path, dest_fd, NULL, NULL, &err);
    cr_expect_eq(r, -EINVAL, "%s", err.msg);

    r = package_unpack("/nonexistent/pkg.tar.gz", dest_fd, NULL, NULL, &err);
    cr_expect_eq(r, -ENOENT, "%s", err.msg);
    cr_expect_eq(fix_dir_count(dest), 0);
}

Test(hostile, truncated)
{
    const struct fix_entry e[] = {
        MANIFEST, {.path = "big", .kind = FK_FILE, .zeros = 1 << 20}, F("after", "x")};
    static const enum fix_format formats[] = {FF_TAR_GZ, FF_TAR, FF_ZIP};
    for (size_t i = 0; i < ARRAY_SIZE(formats); i++) {
        unlink(archive_path);
        cr_assert_eq(fix_archive(archive_path, formats[i], e, ARRAY_SIZE(e)), 0);
        struct stat st;
        cr_assert_eq(stat(archive_path, &st), 0);
        cr_assert_eq(truncate(archive_path, st.st_size * 2 / 3), 0);
        struct ember_error err = {0};
        int r = package_unpack(archive_path, dest_fd, NULL, NULL, &err);
        cr_expect_eq(r, -EINVAL, "format %zu: r=%d %s", i, r, err.msg);
        cr_expect_not_null(strstr(err.msg, "unpack: "), "%s", err.msg);
        cr_expect_eq(fix_dir_count(dest), 0);
    }
}

/* ---- limits ---- */

Test(limits, entries_custom)
{
    struct package_limits lim;
    package_limits_default(&lim);
    lim.max_entries = 5;
    const struct fix_entry five[] = {MANIFEST, F("f1", "1"), F("f2", "2"), D("d3/"), F("f4", "4")};
    struct ember_error err = {0};
    cr_expect_eq(unpack(FF_TAR_GZ, five, 5, &lim, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(functions__remove_contents(dest_fd), 0);

    const struct fix_entry six[] = {MANIFEST,     F("f1", "1"), F("f2", "2"),
                                    F("f3", "3"), F("f4", "4"), F("f5", "5")};
    expect_refused_fmt(FF_TAR_GZ, six, 6, &lim,
                       "entry 'f5': the package has more than the limit of 5 entries");
    expect_refused_fmt(FF_ZIP, six, 6, &lim, "entry 'f5': the package has more than");
}

/* The real default, with directory entries so that it stays quick. */
Test(limits, entries_default)
{
    size_t n = PACKAGE_MAX_ENTRIES_DEFAULT + 1;
    struct fix_entry *e = calloc(n, sizeof(*e));
    char(*names)[16] = calloc(n, sizeof(*names));
    e[0] = (struct fix_entry)MANIFEST;
    for (size_t i = 1; i < n; i++) {
        snprintf(names[i], sizeof(names[i]), "d%05zu/", i);
        e[i] = (struct fix_entry){.path = names[i], .kind = FK_DIR};
    }
    struct ember_error err = {0};
    struct package_info info = {0};
    cr_expect_eq(unpack(FF_TAR_GZ, e, n - 1, NULL, &info, &err), 0, "%s", err.msg);
    cr_expect_eq(info.entries, PACKAGE_MAX_ENTRIES_DEFAULT);
    cr_assert_eq(functions__remove_contents(dest_fd), 0);
    expect_refused_fmt(FF_TAR_GZ, e, n, NULL,
                       "entry 'd10000/': the package has more than the limit of 10000 entries");
    free(names);
    free(e);
}

Test(limits, file_cap)
{
    struct package_limits lim;
    package_limits_default(&lim);
    lim.max_file_bytes = 1000;
    const struct fix_entry ok[] = {MANIFEST, {.path = "f", .kind = FK_FILE, .zeros = 1000}};
    struct ember_error err = {0};
    cr_expect_eq(unpack(FF_TAR_GZ, ok, 2, &lim, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(functions__remove_contents(dest_fd), 0);

    const struct fix_entry big[] = {MANIFEST, {.path = "big", .kind = FK_FILE, .zeros = 1001}};
    expect_refused_fmt(FF_TAR_GZ, big, 2, &lim,
                       "entry 'big': file larger than the limit of 1000 bytes");
    expect_refused_fmt(FF_ZIP, big, 2, &lim, "entry 'big': file larger than the limit");
    /* Streamed zip: no size in the local header, so only counting catches it. */
    const struct fix_entry streamed[] = {
        MANIFEST, {.path = "big", .kind = FK_FILE, .zeros = 5000, .no_size = true}};
    expect_refused_fmt(FF_ZIP, streamed, 2, &lim, "entry 'big': file larger than the limit");
}

Test(limits, total_cap)
{
    struct package_limits lim;
    package_limits_default(&lim);
    lim.max_unpacked_bytes = 1000 + strlen(MANIFEST_JSON);
    const struct fix_entry ok[] = {MANIFEST,
                                   {.path = "a", .kind = FK_FILE, .zeros = 500},
                                   {.path = "b", .kind = FK_FILE, .zeros = 500}};
    struct ember_error err = {0};
    struct package_info info = {0};
    cr_expect_eq(unpack(FF_TAR_GZ, ok, 3, &lim, &info, &err), 0, "%s", err.msg);
    cr_expect_eq(info.unpacked_bytes, lim.max_unpacked_bytes);
    cr_assert_eq(functions__remove_contents(dest_fd), 0);

    const struct fix_entry over[] = {MANIFEST,
                                     {.path = "a", .kind = FK_FILE, .zeros = 500},
                                     {.path = "b", .kind = FK_FILE, .zeros = 500},
                                     {.path = "c", .kind = FK_FILE, .zeros = 1}};
    expect_refused_fmt(FF_TAR_GZ, over, 4, &lim,
                       "entry 'c': the package unpacks to more than the limit of");
}

/* 300 MiB of zeros in one entry, about 300 KB compressed: the header gives
 * it away and nothing is written. */
Test(limits, gzip_bomb_one_entry)
{
    const struct fix_entry e[] = {MANIFEST,
                                  {.path = "zeros", .kind = FK_FILE, .zeros = 300ull << 20}};
    cr_assert_eq(fix_archive(archive_path, FF_TAR_GZ, e, 2), 0);
    struct stat st;
    cr_assert_eq(stat(archive_path, &st), 0);
    cr_expect_lt(st.st_size, 2 << 20, "not much of a bomb: %lld bytes", (long long)st.st_size);

    struct ember_error err = {0};
    int r = unpack_archive(archive_path, dest_fd, NULL, NULL, &err);
    cr_expect_eq(r, -EINVAL);
    cr_expect_not_null(strstr(err.msg, "entry 'zeros': file larger than the limit"), "%s", err.msg);
    cr_expect_leq(fix_tree_bytes(dest_fd), strlen(MANIFEST_JSON));
}

/* 300 MiB of zeros in 10 MiB files: each header is plausible, so the total
 * is what stops it, counted as data is written: the destination never holds
 * more than the cap (and, before cleanup, about the cap). */
Test(limits, gzip_bomb_many_entries)
{
    enum { N = 30 };
    struct fix_entry e[N + 1];
    char names[N + 1][16];
    e[0] = (struct fix_entry)MANIFEST;
    for (int i = 1; i <= N; i++) {
        snprintf(names[i], sizeof(names[i]), "z%02d", i);
        e[i] = (struct fix_entry){.path = names[i], .kind = FK_FILE, .zeros = 10ull << 20};
    }
    cr_assert_eq(fix_archive(archive_path, FF_TAR_GZ, e, N + 1), 0);
    struct stat st;
    cr_assert_eq(stat(archive_path, &st), 0);
    cr_expect_lt(st.st_size, 2 << 20);

    struct package_limits lim;
    package_limits_default(&lim);
    lim.max_unpacked_bytes = 32ull << 20;
    struct ember_error err = {0};
    int r = unpack_archive(archive_path, dest_fd, &lim, NULL, &err);
    cr_expect_eq(r, -EINVAL);
    cr_expect_not_null(strstr(err.msg, "entry 'z04': the package unpacks to more than the "
                                       "limit of 33554432 bytes"),
                       "%s", err.msg);
    uint64_t held = fix_tree_bytes(dest_fd);
    cr_expect_leq(held, lim.max_unpacked_bytes + FUNCTIONS__IO_BUFFER);
    cr_expect_geq(held, lim.max_unpacked_bytes - FUNCTIONS__IO_BUFFER, "stopped early: %llu",
                  (unsigned long long)held);

    /* package_unpack cleans up after itself. */
    cr_assert_eq(functions__remove_contents(dest_fd), 0);
    r = package_unpack(archive_path, dest_fd, &lim, NULL, &err);
    cr_expect_eq(r, -EINVAL);
    cr_expect_eq(fix_dir_count(dest), 0);
}

/* A zip whose central directory lies: it claims 100 bytes for 300 MiB of
 * deflated zeros. The header check passes; counting stops it at the cap. */
Test(limits, zip_bomb_lying_size)
{
    const struct fix_entry e[] = {
        MANIFEST, {.path = "zeros", .kind = FK_FILE, .zeros = 300ull << 20, .no_size = true}};
    cr_assert_eq(fix_archive(archive_path, FF_ZIP, e, 2), 0);
    cr_assert_eq(fix_zip_patch(archive_path, "zeros", 0, 100), 0);
    struct package_limits lim;
    package_limits_default(&lim);
    lim.max_file_bytes = 8ull << 20;
    struct ember_error err = {0};
    int r = unpack_archive(archive_path, dest_fd, &lim, NULL, &err);
    cr_expect_eq(r, -EINVAL);
    cr_expect_not_null(strstr(err.msg, "entry 'zeros': file larger than the limit"), "%s", err.msg);
    cr_log_info("lying zip bomb left %llu bytes", (unsigned long long)fix_tree_bytes(dest_fd));
    cr_expect_leq(fix_tree_bytes(dest_fd),
                  strlen(MANIFEST_JSON) + lim.max_file_bytes + FUNCTIONS__IO_BUFFER);
}

/* ---- the rules and helpers themselves ---- */

Test(helpers, path_normalise)
{
    static const struct {
        const char *in, *out; /* out NULL: refused */
        unsigned depth;
    } c[] = {
        {"a", "a", 1},          {"./a", "a", 1},     {"a/", "a", 1},      {"a//b", "a/b", 2},
        {"./a/./b/", "a/b", 2}, {".", "", 0},        {"./", "", 0},       {".//.", "", 0},
        {"...", "...", 1},      {"", NULL, 0},       {"/a", NULL, 0},     {"..", NULL, 0},
        {"a/..", NULL, 0},      {"a/../b", NULL, 0}, {"./../a", NULL, 0}, {"a/b/../../..", NULL, 0},
    };
    for (size_t i = 0; i < ARRAY_SIZE(c); i++) {
        char out[PATH_MAX];
        unsigned depth = 99;
        const char *why = path_normalise(c[i].in, out, sizeof(out), &depth);
        if (c[i].out) {
            cr_expect_null(why, "'%s': %s", c[i].in, why);
            cr_expect_str_eq(out, c[i].out, "'%s'", c[i].in);
            cr_expect_eq(depth, c[i].depth, "'%s'", c[i].in);
        } else {
            cr_expect_not_null(why, "'%s' accepted", c[i].in);
        }
    }
    char small[4];
    unsigned depth;
    cr_expect_str_eq(path_normalise("abcd", small, sizeof(small), &depth), "path too long");
}

Test(helpers, symlink_rule)
{
    static const struct {
        unsigned depth; /* of the link itself */
        const char *target;
        bool ok;
    } c[] = {
        {1, "x", true},           {1, ".", true},          {1, "a/b/c", true},
        {2, "..", true},          {2, "../x", true},       {3, "../../x", true},
        {3, "./../.././x", true}, {1, "..", false},        {2, "../..", false},
        {1, "/etc", false},       {1, "", false},          {2, "a/../..", false},
        {3, "x/..", false},       {3, "../x/../y", false}, {1, "x/y/../z", false},
    };
    for (size_t i = 0; i < ARRAY_SIZE(c); i++) {
        const char *why = symlink_check(c[i].depth, c[i].target);
        cr_expect_eq(why == NULL, c[i].ok, "depth %u -> '%s': %s", c[i].depth, c[i].target,
                     why ? why : "accepted");
    }
}

Test(helpers, open_beneath)
{
    cr_assert_eq(mkdirat(dest_fd, "d", 0755), 0);
    fix_write_at(dest_fd, "d/f", "f", 1, 0644);
    cr_assert_eq(symlinkat("d", dest_fd, "l"), 0);
    cr_assert_eq(symlinkat("..", dest_fd, "d/up"), 0);
    cr_assert_eq(symlinkat("/etc", dest_fd, "etc"), 0);

    int (*const open_fns[])(int, const char *, int, mode_t) = {functions__open_beneath,
                                                               open_beneath_walk};
    for (size_t i = 0; i < ARRAY_SIZE(open_fns); i++) {
        int fd = open_fns[i](dest_fd, "d/f", O_RDONLY, 0);
        cr_expect_geq(fd, 0, "fn %zu: %d", i, fd);
        if (fd >= 0)
            close(fd);
        fd = open_fns[i](dest_fd, "./d//f", O_RDONLY, 0);
        cr_expect_geq(fd, 0, "fn %zu: %d", i, fd);
        if (fd >= 0)
            close(fd);
        fd = open_fns[i](dest_fd, "d", O_RDONLY | O_DIRECTORY, 0);
        cr_expect_geq(fd, 0, "fn %zu", i);
        if (fd >= 0)
            close(fd);
        cr_expect_eq(open_fns[i](dest_fd, "l/f", O_RDONLY, 0), -ELOOP, "fn %zu", i);
        cr_expect_eq(open_fns[i](dest_fd, "l", O_RDONLY, 0), -ELOOP, "fn %zu", i);
        cr_expect_eq(open_fns[i](dest_fd, "d/up/d/f", O_RDONLY, 0), -ELOOP, "fn %zu", i);
        cr_expect_eq(open_fns[i](dest_fd, "etc/passwd", O_RDONLY, 0), -ELOOP, "fn %zu", i);
        cr_expect_eq(open_fns[i](dest_fd, "../dest/d/f", O_RDONLY, 0), -EXDEV, "fn %zu", i);
        cr_expect_eq(open_fns[i](dest_fd, "d/../d/f", O_RDONLY, 0) >= 0 ||
                         open_fns[i](dest_fd, "d/../d/f", O_RDONLY, 0) == -EXDEV,
                     true); /* lexically inside: either answer is safe */
        cr_expect_eq(open_fns[i](dest_fd, "/etc/passwd", O_RDONLY, 0), -EXDEV, "fn %zu", i);
        cr_expect_eq(open_fns[i](dest_fd, "nope", O_RDONLY, 0), -ENOENT, "fn %zu", i);
        cr_expect_eq(open_fns[i](dest_fd, "d/f/x", O_RDONLY, 0), -ENOTDIR, "fn %zu", i);
    }
}

Test(helpers, remove_tree_never_follows)
{
    char outside[PATH_MAX];
    fix_join(outside, sizeof(outside), root, "outside");
    cr_assert_eq(mkdir(outside, 0755), 0);
    char victim[PATH_MAX];
    fix_join(victim, sizeof(victim), outside, "victim");
    fix_write_file(victim, "v", 1, 0644);

    cr_assert_eq(mkdirat(dest_fd, "t", 0755), 0);
    cr_assert_eq(mkdirat(dest_fd, "t/sub", 0755), 0);
    fix_write_at(dest_fd, "t/sub/f", "f", 1, 0644);
    cr_assert_eq(symlinkat(outside, dest_fd, "t/dirlink"), 0);
    cr_assert_eq(symlinkat(victim, dest_fd, "t/sub/filelink"), 0);
    cr_assert_eq(mkfifoat(dest_fd, "t/fifo", 0644), 0);

    cr_expect_eq(functions__fsync_dirs(dest_fd), 0);
    cr_expect_eq(functions__remove_tree(dest_fd, "t"), 0);
    cr_expect_eq(fix_dir_count(dest), 0);
    cr_expect(fix_exists(victim), "followed a symlink out");
    cr_expect_eq(functions__remove_tree(dest_fd, "t"), 0, "absent is fine");
    fix_write_at(dest_fd, "plain", "p", 1, 0644);
    cr_expect_eq(functions__remove_tree(dest_fd, "plain"), 0);
    cr_expect_eq(fix_dir_count(dest), 0);
}

Test(helpers, read_file)
{
    char *text = NULL;
    size_t len = 0;
    fix_write_at(dest_fd, "f", "hello", 5, 0644);
    cr_expect_eq(functions__read_file(dest_fd, "f", 5, &text, &len), 0);
    cr_expect_eq(len, 5);
    cr_expect_str_eq(text, "hello");
    free(text);
    cr_expect_eq(functions__read_file(dest_fd, "f", 4, &text, &len), -EFBIG);
    cr_assert_eq(mkdirat(dest_fd, "d", 0755), 0);
    cr_expect_eq(functions__read_file(dest_fd, "d", 4, &text, &len), -EINVAL);
    cr_assert_eq(symlinkat("f", dest_fd, "l"), 0);
    cr_expect_eq(functions__read_file(dest_fd, "l", 100, &text, &len), -ELOOP);
    cr_expect_eq(functions__read_file(dest_fd, "none", 100, &text, &len), -ENOENT);
}

Test(helpers, quote)
{
    char buf[FUNCTIONS__QUOTE_MAX];
    cr_expect_str_eq(functions__quote("plain/name.txt", buf, sizeof(buf)), "plain/name.txt");
    cr_expect_str_eq(functions__quote("a\nb\x7f\\", buf, sizeof(buf)), "a\\x0ab\\x7f\\\\");
    cr_expect_str_eq(functions__quote("caf\xc3\xa9", buf, sizeof(buf)), "caf\\xc3\\xa9");
    char longs[1000];
    memset(longs, 'x', sizeof(longs) - 1);
    longs[sizeof(longs) - 1] = '\0';
    functions__quote(longs, buf, sizeof(buf));
    cr_expect_lt(strlen(buf), sizeof(buf));
    cr_expect_str_eq(buf + strlen(buf) - 3, "...");
    char tiny[5];
    cr_expect_str_eq(functions__quote("abcdefgh", tiny, sizeof(tiny)), "a...");
    cr_expect_str_eq(functions__quote("abcd", tiny, sizeof(tiny)), "abcd");
}

Test(helpers, name_set)
{
    struct name_set set = {0};
    char name[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof(name), "n%d", i);
        cr_assert_eq(name_set_add(&set, name), 0);
    }
    for (int i = 0; i < 5000; i += 7) {
        snprintf(name, sizeof(name), "n%d", i);
        cr_assert_eq(name_set_add(&set, name), 1);
    }
    cr_expect_eq(set.n, 5000);
    name_set_free(&set);
}
