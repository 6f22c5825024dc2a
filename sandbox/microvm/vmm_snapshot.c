/* vmm_snapshot.c - snapshot files: write them after ember_init, check and
 * restore them in every VM of the function.
 *
 * Two files. The memory file is the guest's memory byte for byte, sparse:
 * only nonzero pages are written, so it costs disk and page cache for what
 * the guest touched, and a restored VM maps it MAP_PRIVATE at offset 0. The
 * state file says what the memory file must be and holds the CPU:
 *
 *   struct snap_hdr   magic "EMBRSNAP", format version, sizes, the function
 *                     version, CPUID checksum, layout, vCPU state, and the
 *                     memory file's data extents with their CRC32C
 *   snap_extent[n]    (offset, length) of each run of nonzero pages
 *   u32               CRC32C of everything above
 *
 * A snapshot is rejected (and the caller boots afresh) when the magic,
 * format version, function version, memory size or CPUID differ, or when a
 * checksum fails. Both ends run on one host, so fields are in host order.
 */
#include "sandbox/microvm/vmm.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"

#define SNAP_MAGIC "EMBRSNAP"
#define SNAP_FORMAT 1
#define SNAP_EXTENTS_MAX 65536u

struct snap_extent {
    uint64_t off, len;
};

struct snap_hdr {
    char magic[8];
    uint32_t format;
    uint32_t hdr_size;
    uint32_t abi_version;
    uint32_t cpuid_crc;
    uint32_t n_extents;
    uint32_t mem_crc;
    uint64_t mem_size;
    uint64_t mem_data;
    char version[VMM_VERSION_MAX];
    struct vmm_layout layout;
    struct vmm_cpu cpu;
};

/* ---- CRC32C (Castagnoli): SSE4.2's crc32 instruction, or a table ---- */

static uint32_t crc_table[256];

static void crc_table_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1)));
        crc_table[i] = c;
    }
}

__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const uint8_t *p, size_t len)
{
    uint64_t c = crc;
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
        p += 8, len -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (len--)
        c32 = __builtin_ia32_crc32qi(c32, *p++);
    return c32;
}

uint32_t vmm_crc32c(uint32_t crc, const void *data, size_t len)
{
    static int hw = -1;
    const uint8_t *p = data;
    if (hw < 0) {
        __builtin_cpu_init();
        hw = __builtin_cpu_supports("sse4.2");
        if (!hw)
            crc_table_init();
    }
    crc = ~crc;
    if (hw) {
        crc = crc_hw(crc, p, len);
    } else {
        while (len--)
            crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    }
    return ~crc;
}

/* ---- write ---- */

static bool page_zero(const uint8_t *p)
{
    const uint64_t *q = (const uint64_t *)p;
    for (int i = 0; i < 512; i += 4)
        if (q[i] | q[i + 1] | q[i + 2] | q[i + 3])
            return false;
    return true;
}

static int write_all(int fd, const void *p, size_t len, off_t off)
{
    const uint8_t *b = p;
    while (len) {
        ssize_t n = pwrite(fd, b, len, off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        b += n, len -= (size_t)n, off += n;
    }
    return 0;
}

int vmm_snapshot_write(struct vmm *vm, const struct vmm_snapshot_id *id, int mem_fd, int state_fd,
                       struct ember_error *err)
{
    uint64_t n_pages = vm->mem_size / 4096;
    cleanup_free unsigned char *resident = malloc(n_pages);
    size_t cap = 1024;
    cleanup_free struct snap_extent *ext = malloc(cap * sizeof(*ext));
    cleanup_free struct snap_hdr *hdr = calloc(1, sizeof(*hdr));
    if (!resident || !ext || !hdr)
        return ember_error_set(err, -ENOMEM, "snapshot: out of memory");
    if (strlen(id->version) >= sizeof(hdr->version))
        return ember_error_set(err, -ENAMETOOLONG, "snapshot: version too long");

    /* Pages the guest never touched are not in the memfd at all: mincore
     * tells which are, and only those are read. */
    if (mincore(vm->mem, vm->mem_size, resident) < 0)
        return ember_error_sys(err, -errno, "mincore guest memory");

    int ret;
    if (ftruncate(mem_fd, 0) < 0)
        return ember_error_sys(err, -errno, "ftruncate snapshot memory");
    uint32_t n = 0, mem_crc = 0;
    uint64_t data = 0;
    for (uint64_t pg = 0; pg < n_pages; pg++) {
        const uint8_t *p = vm->mem + pg * 4096;
        if (!(resident[pg] & 1) || page_zero(p))
            continue;
        uint64_t off = pg * 4096;
        if (n > 0 && ext[n - 1].off + ext[n - 1].len == off) {
            ext[n - 1].len += 4096;
        } else if (n == SNAP_EXTENTS_MAX) {
            /* too fragmented: stretch the last extent over the gap */
            ext[n - 1].len = off + 4096 - ext[n - 1].off;
        } else {
            if (n == cap) {
                struct snap_extent *e = realloc(ext, 2 * cap * sizeof(*ext));
                if (!e)
                    return ember_error_set(err, -ENOMEM, "snapshot: out of memory");
                ext = e, cap *= 2;
            }
            ext[n++] = (struct snap_extent){off, 4096};
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        ret = write_all(mem_fd, vm->mem + ext[i].off, ext[i].len, (off_t)ext[i].off);
        if (ret < 0)
            return ember_error_sys(err, ret, "write snapshot memory");
        mem_crc = vmm_crc32c(mem_crc, vm->mem + ext[i].off, ext[i].len);
        data += ext[i].len;
    }
    if (ftruncate(mem_fd, (off_t)vm->mem_size) < 0)
        return ember_error_sys(err, -errno, "ftruncate snapshot memory");
    if (fdatasync(mem_fd) < 0)
        return ember_error_sys(err, -errno, "fdatasync snapshot memory");

    memcpy(hdr->magic, SNAP_MAGIC, 8);
    hdr->format = SNAP_FORMAT;
    hdr->hdr_size = sizeof(*hdr);
    hdr->abi_version = EMBER_GUEST_ABI_VERSION;
    hdr->cpuid_crc = id->cpuid_crc;
    hdr->n_extents = n;
    hdr->mem_crc = mem_crc;
    hdr->mem_size = vm->mem_size;
    hdr->mem_data = data;
    strcpy(hdr->version, id->version);
    hdr->layout = vm->layout;
    hdr->cpu = vm->snap;

    uint32_t crc = vmm_crc32c(0, hdr, sizeof(*hdr));
    crc = vmm_crc32c(crc, ext, n * sizeof(*ext));
    if (ftruncate(state_fd, 0) < 0)
        return ember_error_sys(err, -errno, "ftruncate snapshot state");
    off_t off = 0;
    if ((ret = write_all(state_fd, hdr, sizeof(*hdr), off)) < 0 ||
        (ret = write_all(state_fd, ext, n * sizeof(*ext), off += sizeof(*hdr))) < 0 ||
        (ret = write_all(state_fd, &crc, sizeof(crc), off += n * sizeof(*ext))) < 0)
        return ember_error_sys(err, ret, "write snapshot state");
    if (fdatasync(state_fd) < 0)
        return ember_error_sys(err, -errno, "fdatasync snapshot state");
    return 0;
}

/* ---- restore ---- */

static int read_all(int fd, void *p, size_t len)
{
    uint8_t *b = p;
    off_t off = 0;
    while (len) {
        ssize_t n = pread(fd, b, len, off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO;
        b += n, len -= (size_t)n, off += n;
    }
    return 0;
}

static int reject(struct ember_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int reject(struct ember_error *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        int n = snprintf(err->msg, sizeof(err->msg), "snapshot rejected: ");
        vsnprintf(err->msg + n, sizeof(err->msg) - (size_t)n, fmt, ap);
        va_end(ap);
        err->code = -EINVAL;
    }
    return -EINVAL;
}

static bool layout_ok(const struct vmm_layout *l, uint64_t mem_size)
{
    return l->mem_size == mem_size && l->req_cap <= mem_size &&
           l->req_base == mem_size - l->req_cap && l->heap_start >= EMBER_GUEST_IMAGE_BASE &&
           l->heap_start <= l->heap_end && l->heap_end <= l->req_base &&
           l->image_end <= l->heap_start;
}

int vmm_snapshot_restore(struct vmm *vm, const struct vmm_snapshot_id *id, int mem_fd, int state_fd,
                         struct ember_error *err)
{
    struct stat st;
    if (fstat(state_fd, &st) < 0)
        return ember_error_sys(err, -errno, "fstat snapshot state");
    size_t min = sizeof(struct snap_hdr) + 4;
    if ((uint64_t)st.st_size < min ||
        (uint64_t)st.st_size > min + SNAP_EXTENTS_MAX * sizeof(struct snap_extent))
        return reject(err, "state file of %lld bytes", (long long)st.st_size);
    size_t size = (size_t)st.st_size;
    cleanup_free uint8_t *buf = malloc(size);
    if (!buf)
        return ember_error_set(err, -ENOMEM, "snapshot: out of memory");
    int ret = read_all(state_fd, buf, size);
    if (ret < 0)
        return ember_error_sys(err, ret, "read snapshot state");

    struct snap_hdr *hdr = (struct snap_hdr *)buf;
    if (memcmp(hdr->magic, SNAP_MAGIC, 8) != 0)
        return reject(err, "not an ember snapshot (bad magic)");
    if (hdr->format != SNAP_FORMAT)
        return reject(err, "format version %u, this monitor reads %u", hdr->format, SNAP_FORMAT);
    uint32_t crc;
    memcpy(&crc, buf + size - 4, 4);
    if (vmm_crc32c(0, buf, size - 4) != crc)
        return reject(err, "state file checksum mismatch");
    if (hdr->hdr_size != sizeof(*hdr) ||
        size != min + (size_t)hdr->n_extents * sizeof(struct snap_extent))
        return reject(err, "state file layout");
    if (hdr->abi_version != EMBER_GUEST_ABI_VERSION)
        return reject(err, "guest ABI %u", hdr->abi_version);
    if (strnlen(hdr->version, sizeof(hdr->version)) == sizeof(hdr->version) ||
        strcmp(hdr->version, id->version) != 0)
        return reject(err, "taken of version '%.64s', not '%.64s'", hdr->version, id->version);
    if (hdr->mem_size != id->mem_size || !layout_ok(&hdr->layout, id->mem_size))
        return reject(err, "memory size %llu, want %llu", (unsigned long long)hdr->mem_size,
                      (unsigned long long)id->mem_size);
    if (hdr->cpuid_crc != id->cpuid_crc)
        return reject(err, "taken with another CPUID (CPU or kernel changed)");

    const struct snap_extent *ext = (const struct snap_extent *)(hdr + 1);
    uint64_t prev_end = 0, data = 0;
    for (uint32_t i = 0; i < hdr->n_extents; i++) {
        if (ext[i].off % 4096 || ext[i].len % 4096 || ext[i].len == 0 || ext[i].off < prev_end ||
            ext[i].off > id->mem_size || ext[i].len > id->mem_size - ext[i].off)
            return reject(err, "extent %u out of range", i);
        prev_end = ext[i].off + ext[i].len;
        data += ext[i].len;
    }
    if (data != hdr->mem_data)
        return reject(err, "extents cover %llu bytes, header says %llu", (unsigned long long)data,
                      (unsigned long long)hdr->mem_data);
    if (fstat(mem_fd, &st) < 0)
        return ember_error_sys(err, -errno, "fstat snapshot memory");
    if ((uint64_t)st.st_size != id->mem_size)
        return reject(err, "memory file of %lld bytes, want %llu", (long long)st.st_size,
                      (unsigned long long)id->mem_size);

    ret = vmm_map_private(vm, mem_fd, id->mem_size, err);
    if (ret < 0)
        return ret;
    uint32_t mem_crc = 0;
    for (uint32_t i = 0; i < hdr->n_extents; i++)
        mem_crc = vmm_crc32c(mem_crc, vm->mem + ext[i].off, ext[i].len);
    if (mem_crc != hdr->mem_crc)
        return reject(err, "memory file checksum mismatch");

    vm->layout = hdr->layout;
    vm->snap = hdr->cpu;
    ret = vmm_cpu_load(vm, &vm->snap, err);
    if (ret < 0)
        return ret;
    return vmm_reseed(vm, err);
}
