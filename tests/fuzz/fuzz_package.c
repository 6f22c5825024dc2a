/* fuzz_package.c - libFuzzer driver: arbitrary bytes as a package archive.
 *
 * package_unpack must never crash, never write outside its destination and,
 * when it refuses, leave the destination empty; what it accepts holds only
 * directories (0755), regular files (0644/0755) and symlinks. Accepted
 * packages go on through manifest_parse and manifest_check_handler, as in a
 * deploy. Files go to a tmpfs when there is one: fsync is cheap there.
 */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "functions/functions_internal.h"
#include "functions/manifest.h"
#include "functions/package.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char base[PATH_MAX];
static char archive[PATH_MAX + 16];
static int base_fd = -1, dest_fd = -1;

static void cleanup(void)
{
    if (base[0]) {
        int fd = open("/", O_RDONLY | O_DIRECTORY);
        functions__remove_tree(fd, base + 1);
        close(fd);
    }
}

static void setup(void)
{
    const char *tmp = getenv("TMPDIR");
    struct stat st;
    if (!tmp || !*tmp)
        tmp = stat("/dev/shm", &st) == 0 ? "/dev/shm" : "/tmp";
    snprintf(base, sizeof(base), "%s/ember-fuzz-XXXXXX", tmp);
    if (!mkdtemp(base) || base[0] != '/')
        abort();
    atexit(cleanup);
    base_fd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (base_fd < 0 || mkdirat(base_fd, "dest", 0755) < 0)
        abort();
    dest_fd = openat(base_fd, "dest", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dest_fd < 0)
        abort();
    snprintf(archive, sizeof(archive), "%s/pkg", base);
}

/* Only what package_unpack promises may be in the tree. */
static void check_tree(int dirfd)
{
    struct functions__dir d;
    if (functions__dir_read(dirfd, &d) < 0)
        abort();
    for (size_t i = 0; i < d.n; i++) {
        struct stat st;
        if (fstatat(dirfd, d.v[i], &st, AT_SYMLINK_NOFOLLOW) < 0)
            abort();
        mode_t perm = st.st_mode & 07777;
        if (S_ISDIR(st.st_mode)) {
            if (perm != 0755)
                abort();
            int fd = openat(dirfd, d.v[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0)
                abort();
            check_tree(fd);
            close(fd);
        } else if (S_ISREG(st.st_mode)) {
            if (perm != 0644 && perm != 0755)
                abort();
        } else if (!S_ISLNK(st.st_mode)) {
            abort();
        }
    }
    functions__dir_free(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (base_fd < 0)
        setup();

    int fd = openat(base_fd, "pkg", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || functions__write_all(fd, data, size) < 0)
        abort();
    close(fd);

    /* Small limits keep each run quick; the caps are part of what is tested. */
    struct package_limits lim = {
        .max_entries = 64, .max_unpacked_bytes = 1 << 20, .max_file_bytes = 256 << 10};
    struct package_info info;
    struct ember_error err = {0};
    int r = package_unpack(archive, dest_fd, &lim, &info, &err);
    if (r < 0) {
        if (err.msg[0] == '\0')
            abort();
        struct functions__dir d;
        if (functions__dir_read(dest_fd, &d) < 0 || d.n != 0)
            abort(); /* a refusal must leave nothing behind */
        functions__dir_free(&d);
    } else {
        if (info.entries > lim.max_entries || info.unpacked_bytes > lim.max_unpacked_bytes)
            abort();
        check_tree(dest_fd);
        char *text = NULL;
        size_t len;
        if (functions__read_file(dest_fd, "function.json", MANIFEST_FILE_MAX, &text, &len) == 0) {
            struct manifest m;
            if (manifest_parse(text, len, &m, &err) == 0) {
                manifest_check_handler(&m, dest_fd, &err);
                manifest_free(&m);
            }
            free(text);
        }
        if (functions__remove_contents(dest_fd) < 0)
            abort();
    }
    /* Nothing but the archive and dest next to each other. */
    struct functions__dir d;
    if (functions__dir_read(base_fd, &d) < 0 || d.n != 2)
        abort();
    functions__dir_free(&d);
    return 0;
}
