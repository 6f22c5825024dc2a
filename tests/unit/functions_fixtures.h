/* functions_fixtures.h - what the functions/ unit tests share: temporary
 * directories, packages written with libarchive's archive_write API (hostile
 * ones included), and tiny hand-made ELF files for the handler checks.
 *
 * Included by tests/unit/test_{manifest,package,store}.c only; everything is
 * static so each test executable gets its own copy.
 */
#ifndef EMBER_TESTS_FUNCTIONS_FIXTURES_H
#define EMBER_TESTS_FUNCTIONS_FIXTURES_H

#include <archive.h>
#include <archive_entry.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "functions/functions_internal.h"
#include "functions/manifest.h"

#define FIX_UNUSED __attribute__((unused))

/* ---- temporary directories ---- */

/** mkdtemp under $TMPDIR (or /tmp); aborts the test on failure. */
static FIX_UNUSED void fix_tmpdir(char out[PATH_MAX])
{
    const char *base = getenv("TMPDIR");
    snprintf(out, PATH_MAX, "%s/ember-unit-XXXXXX", base && *base ? base : "/tmp");
    cr_assert_not_null(mkdtemp(out), "mkdtemp: %s", strerror(errno));
}

/** rm -rf @path (never following symlinks). */
static FIX_UNUSED void fix_rmrf(const char *path)
{
    char parent[PATH_MAX];
    snprintf(parent, sizeof(parent), "%s", path);
    char *slash = strrchr(parent, '/');
    cr_assert_not_null(slash);
    *slash = '\0';
    int dfd = open(parent[0] ? parent : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    cr_assert_geq(dfd, 0);
    functions__remove_tree(dfd, slash + 1);
    close(dfd);
}

static FIX_UNUSED int fix_open_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
    return fd;
}

/** Number of entries in a directory (without . and ..); -1 if it cannot be read. */
static FIX_UNUSED long fix_dir_count(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return -1;
    long n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

/** Total bytes of regular files under @dirfd (recursively). */
static FIX_UNUSED uint64_t fix_tree_bytes(int dirfd)
{
    struct functions__dir d;
    uint64_t total = 0;
    if (functions__dir_read(dirfd, &d) < 0)
        return 0;
    for (size_t i = 0; i < d.n; i++) {
        struct stat st;
        if (fstatat(dirfd, d.v[i], &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        if (S_ISREG(st.st_mode)) {
            total += (uint64_t)st.st_size;
        } else if (S_ISDIR(st.st_mode)) {
            int fd = openat(dirfd, d.v[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (fd >= 0) {
                total += fix_tree_bytes(fd);
                close(fd);
            }
        }
    }
    functions__dir_free(&d);
    return total;
}

/** "@a/@b" into @buf; fails the test if it does not fit. */
static FIX_UNUSED char *fix_join(char *buf, size_t size, const char *a, const char *b)
{
    int n = snprintf(buf, size, "%s/%s", a, b);
    cr_assert(n > 0 && (size_t)n < size, "path too long");
    return buf;
}

static FIX_UNUSED void fix_write_at(int dirfd, const char *path, const void *data, size_t len,
                                    mode_t mode)
{
    int fd = openat(dirfd, path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    cr_assert_geq(fd, 0, "create %s: %s", path, strerror(errno));
    cr_assert_eq(functions__write_all(fd, data, len), 0);
    cr_assert_eq(fchmod(fd, mode), 0);
    close(fd);
}

static FIX_UNUSED void fix_write_file(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    cr_assert_geq(fd, 0, "create %s: %s", path, strerror(errno));
    cr_assert_eq(functions__write_all(fd, data, len), 0);
    cr_assert_eq(fchmod(fd, mode), 0);
    close(fd);
}

static FIX_UNUSED bool fix_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* ---- archives ---- */

enum fix_kind { FK_FILE, FK_DIR, FK_SYMLINK, FK_HARDLINK, FK_FIFO, FK_CHR, FK_BLK, FK_SOCK };

struct fix_entry {
    const char *path;
    enum fix_kind kind;
    const char *data; /* FK_FILE: contents (NULL = empty) */
    size_t len;       /* FK_FILE: bytes of data; 0 = strlen(data) */
    unsigned mode;    /* permission bits; 0 = 0644 (0755 for directories) */
    const char *link; /* symlink / hard link target */
    uint64_t zeros;   /* FK_FILE: this many zero bytes instead of data */
    bool no_size;     /* FK_FILE: leave the size unset (zip streams it) */
};

enum fix_format {
    FF_TAR_GZ,    /* pax restricted + gzip: what `ember` makes */
    FF_TAR,       /* plain pax restricted */
    FF_GNUTAR,    /* GNU tar dialect */
    FF_USTAR,     /* POSIX ustar */
    FF_ZIP,       /* zip, deflate */
    FF_ZIP_STORE, /* zip, stored */
    FF_ZIP64,     /* zip with zip64 extensions forced */
};

/** Write @n entries as an archive at @path. Returns 0, or -1 if libarchive
 * refused one of them (some formats cannot hold sockets or devices). */
static FIX_UNUSED int fix_archive(const char *path, enum fix_format fmt, const struct fix_entry *e,
                                  size_t n)
{
    struct archive *a = archive_write_new();
    cr_assert_not_null(a);
    int r = ARCHIVE_OK;
    switch (fmt) {
    case FF_TAR_GZ:
        r = archive_write_set_format_pax_restricted(a);
        if (r == ARCHIVE_OK)
            r = archive_write_add_filter_gzip(a);
        /* Level 1: the bombs compress fast and still about 1000:1. */
        if (r == ARCHIVE_OK)
            r = archive_write_set_filter_option(a, "gzip", "compression-level", "1");
        break;
    case FF_TAR:
        r = archive_write_set_format_pax_restricted(a);
        break;
    case FF_GNUTAR:
        r = archive_write_set_format_gnutar(a);
        break;
    case FF_USTAR:
        r = archive_write_set_format_ustar(a);
        break;
    case FF_ZIP:
        r = archive_write_set_format_zip(a);
        break;
    case FF_ZIP_STORE:
        r = archive_write_set_format_zip(a);
        if (r == ARCHIVE_OK)
            r = archive_write_set_format_option(a, "zip", "compression", "store");
        break;
    case FF_ZIP64:
        r = archive_write_set_format_zip(a);
        if (r == ARCHIVE_OK)
            r = archive_write_set_format_option(a, "zip", "zip64", "1");
        break;
    }
    cr_assert_eq(r, ARCHIVE_OK, "format: %s", archive_error_string(a));
    cr_assert_eq(archive_write_open_filename(a, path), ARCHIVE_OK, "%s", archive_error_string(a));

    static char zeros[64 * 1024];
    int ret = 0;
    for (size_t i = 0; i < n && ret == 0; i++) {
        struct archive_entry *ae = archive_entry_new();
        archive_entry_set_pathname(ae, e[i].path);
        archive_entry_set_mtime(ae, 1700000000, 0);
        unsigned mode = e[i].mode;
        size_t len = e[i].len ? e[i].len : e[i].data ? strlen(e[i].data) : 0;
        switch (e[i].kind) {
        case FK_FILE:
            archive_entry_set_filetype(ae, AE_IFREG);
            archive_entry_set_perm(ae, mode ? mode : 0644);
            if (!e[i].no_size)
                archive_entry_set_size(ae, e[i].zeros ? (la_int64_t)e[i].zeros : (la_int64_t)len);
            break;
        case FK_DIR:
            archive_entry_set_filetype(ae, AE_IFDIR);
            archive_entry_set_perm(ae, mode ? mode : 0755);
            break;
        case FK_SYMLINK:
            archive_entry_set_filetype(ae, AE_IFLNK);
            archive_entry_set_perm(ae, 0777);
            archive_entry_set_symlink(ae, e[i].link);
            break;
        case FK_HARDLINK:
            archive_entry_set_filetype(ae, AE_IFREG);
            archive_entry_set_perm(ae, 0644);
            archive_entry_set_hardlink(ae, e[i].link);
            archive_entry_set_size(ae, 0);
            break;
        case FK_FIFO:
            archive_entry_set_filetype(ae, AE_IFIFO);
            archive_entry_set_perm(ae, 0644);
            break;
        case FK_CHR:
            archive_entry_set_filetype(ae, AE_IFCHR);
            archive_entry_set_perm(ae, 0666);
            archive_entry_set_rdev(ae, makedev(1, 3));
            break;
        case FK_BLK:
            archive_entry_set_filetype(ae, AE_IFBLK);
            archive_entry_set_perm(ae, 0660);
            archive_entry_set_rdev(ae, makedev(7, 0));
            break;
        case FK_SOCK:
            archive_entry_set_filetype(ae, AE_IFSOCK);
            archive_entry_set_perm(ae, 0755);
            break;
        }
        r = archive_write_header(a, ae);
        /* ARCHIVE_WARN: e.g. a UTF-8 name in the C locale, written as raw bytes. */
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
            ret = -1;
        } else if (e[i].kind == FK_FILE) {
            if (e[i].zeros) {
                for (uint64_t left = e[i].zeros; left > 0;) {
                    size_t k = left < sizeof(zeros) ? (size_t)left : sizeof(zeros);
                    cr_assert_eq(archive_write_data(a, zeros, k), (la_ssize_t)k, "%s",
                                 archive_error_string(a));
                    left -= k;
                }
            } else if (len) {
                cr_assert_eq(archive_write_data(a, e[i].data, len), (la_ssize_t)len, "%s",
                             archive_error_string(a));
            }
        }
        archive_entry_free(ae);
    }
    archive_write_close(a);
    archive_write_free(a);
    return ret;
}

/**
 * Edit the central directory record of @name in the zip at @path, as a
 * hostile tool could: @mode (if not 0) becomes its Unix mode, @usize (if not
 * UINT32_MAX) its claimed uncompressed size. Returns 0, or -1 if not found.
 */
static FIX_UNUSED int fix_zip_patch(const char *path, const char *name, unsigned mode,
                                    uint32_t usize)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    cr_assert_geq(fd, 0);
    struct stat st;
    cr_assert_eq(fstat(fd, &st), 0);
    size_t len = (size_t)st.st_size;
    unsigned char *b = malloc(len);
    cr_assert_eq(pread(fd, b, len, 0), (ssize_t)len);
    int found = -1;
    size_t nlen = strlen(name);
    for (size_t i = 0; i + 46 <= len; i++) {
        if (memcmp(b + i, "PK\x01\x02", 4) != 0)
            continue;
        size_t n = (size_t)b[i + 28] | (size_t)b[i + 29] << 8;
        if (n != nlen || i + 46 + n > len || memcmp(b + i + 46, name, n) != 0)
            continue;
        if (mode) {
            uint32_t attr = (uint32_t)mode << 16;
            for (int k = 0; k < 4; k++)
                b[i + 38 + k] = (unsigned char)(attr >> (8 * k));
        }
        if (usize != UINT32_MAX)
            for (int k = 0; k < 4; k++)
                b[i + 24 + k] = (unsigned char)(usize >> (8 * k));
        found = 0;
    }
    cr_assert_eq(pwrite(fd, b, len, 0), (ssize_t)len);
    free(b);
    close(fd);
    return found;
}

/* ---- ELF files for the handler checks ---- */

struct fix_elf {
    unsigned type;        /* ET_DYN, ET_EXEC, ... */
    bool elf32;           /* ELFCLASS32 */
    unsigned machine;     /* 0 = EM_X86_64 */
    bool interp, dynamic; /* add PT_INTERP / PT_DYNAMIC */
    int note;             /* 0 none; 1 the ember note; 2 wrong owner; 3 wrong type;
                             4 the right note in a section of another name */
    bool note_segment;    /* also a PT_NOTE segment over the note */
    bool no_sections;     /* drop the section headers (a stripped image) */
};

/** Build a minimal ELF64 image into @buf (>= 1024 bytes); returns its size. */
static FIX_UNUSED size_t fix_elf_build(unsigned char *buf, size_t cap, const struct fix_elf *o)
{
    cr_assert_geq(cap, 1024);
    memset(buf, 0, cap);
    Elf64_Ehdr eh = {0};
    memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = o->elf32 ? ELFCLASS32 : ELFCLASS64;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    eh.e_ident[EI_VERSION] = EV_CURRENT;
    eh.e_type = (Elf64_Half)o->type;
    eh.e_machine = (Elf64_Half)(o->machine ? o->machine : EM_X86_64);
    eh.e_version = EV_CURRENT;
    eh.e_entry = 0x401000;
    eh.e_ehsize = sizeof(Elf64_Ehdr);

    /* Program headers right after the ELF header (room for four). */
    size_t off = sizeof(Elf64_Ehdr);
    Elf64_Phdr ph[4] = {{.p_type = PT_LOAD, .p_flags = PF_R | PF_X, .p_align = 4096}};
    unsigned nph = 1;
    if (o->interp)
        ph[nph++] = (Elf64_Phdr){.p_type = PT_INTERP};
    if (o->dynamic)
        ph[nph++] = (Elf64_Phdr){.p_type = PT_DYNAMIC};
    unsigned note_ph = o->note_segment ? nph++ : 0;
    eh.e_phoff = off;
    eh.e_phentsize = sizeof(Elf64_Phdr);
    eh.e_phnum = (Elf64_Half)nph;
    off += nph * sizeof(Elf64_Phdr);

    if (o->note) {
        /* Note contents. */
        size_t note_off = off;
        Elf64_Nhdr nh = {
            .n_namesz = 6, .n_descsz = 4, .n_type = o->note == 3 ? 1 : EMBER_GUEST_NOTE_TYPE};
        memcpy(buf + off, &nh, sizeof(nh));
        off += sizeof(nh);
        memcpy(buf + off, o->note == 2 ? "other" : "ember", 6);
        off += 8;
        memcpy(buf + off, "\x01\x00\x00\x00", 4);
        off += 4;
        size_t note_size = off - note_off;
        if (o->note_segment)
            ph[note_ph] = (Elf64_Phdr){
                .p_type = PT_NOTE, .p_offset = note_off, .p_filesz = note_size, .p_align = 4};

        /* Section name table. */
        static const char strtab[] = "\0.shstrtab\0.note.ember\0.note.other";
        size_t str_off = off;
        memcpy(buf + off, strtab, sizeof(strtab));
        off += sizeof(strtab);
        off = (off + 7) & ~(size_t)7;

        Elf64_Shdr sh[3] = {{0}};
        sh[1] = (Elf64_Shdr){.sh_name = o->note == 4 ? 23 : 11,
                             .sh_type = SHT_NOTE,
                             .sh_offset = note_off,
                             .sh_size = note_size,
                             .sh_addralign = 4};
        sh[2] = (Elf64_Shdr){.sh_name = 1,
                             .sh_type = SHT_STRTAB,
                             .sh_offset = str_off,
                             .sh_size = sizeof(strtab),
                             .sh_addralign = 1};
        if (!o->no_sections) {
            eh.e_shoff = off;
            eh.e_shentsize = sizeof(Elf64_Shdr);
            eh.e_shnum = 3;
            eh.e_shstrndx = 2;
            memcpy(buf + off, sh, sizeof(sh));
            off += sizeof(sh);
        }
    }
    memcpy(buf + sizeof(Elf64_Ehdr), ph, nph * sizeof(Elf64_Phdr));
    memcpy(buf, &eh, sizeof(eh));
    return off;
}

#endif
