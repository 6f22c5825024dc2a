/* test_vmm.c - ember-vmm driven directly over a socketpair: a real process,
 * real KVM, guests from tests/guests (built into build/tests/guests).
 *
 * Fixtures by lifecycle: a fresh snapshot dir -> a booted monitor (which
 * wrote the snapshot) -> restored monitors. Skips without /dev/kvm. Prints
 * a few timings (no timed asserts).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "sandbox/proto.h"

#define GUESTS EMBER_BUILD_DIR "/tests/guests"
#define VMM EMBER_BUILD_DIR "/ember-vmm"

struct mon {
    pid_t pid;
    int fd;
};

/* What came back for one frame we waited on. */
struct answer {
    uint16_t type;
    uint32_t status; /* LOADED / RESET_DONE status, RESPONSE http status, FAILED reason */
    char msg[600];   /* LOADED / FAILED message */
    char body[1024]; /* RESPONSE body (truncated) */
    size_t body_len;
    char header[128]; /* value of the first response header */
    int n_logs;
    char logs[4][128];
    uint64_t ns;
};

static char snapdir[64];
static const char *memory_mb = "32";

static void skip_without_kvm(void)
{
    if (access("/dev/kvm", R_OK | W_OK) != 0)
        cr_skip_test("no /dev/kvm");
}

static void make_snapdir(void)
{
    skip_without_kvm();
    strcpy(snapdir, "/tmp/ember-vmm-test-XXXXXX");
    cr_assert_not_null(mkdtemp(snapdir));
}

static void rm_snapdir(void)
{
    char cmd[128];
    if (snapdir[0]) {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", snapdir);
        cr_expect_eq(system(cmd), 0);
    }
}

static struct mon mon_start(void)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        dup2(sv[1], 3);
        execl(VMM, "ember-vmm", (char *)NULL);
        _exit(127);
    }
    close(sv[1]);
    struct mon m = {pid, sv[0]};
    struct proto_hdr h;
    uint8_t *p;
    cr_assert_eq(proto_recv_frame(m.fd, &h, &p, NULL, NULL), 0, "no HELLO from ember-vmm");
    cr_assert_eq(h.type, PROTO_HELLO);
    free(p);
    return m;
}

/* Wait for the monitor to exit within @ms; returns its wait status or -1. */
static int mon_wait(struct mon *m, int ms)
{
    for (int i = 0; i < ms; i++) {
        int st;
        pid_t r = waitpid(m->pid, &st, WNOHANG);
        if (r == m->pid) {
            m->pid = -1;
            return st;
        }
        usleep(1000);
    }
    return -1;
}

static void mon_stop(struct mon *m)
{
    if (m->fd >= 0)
        close(m->fd);
    m->fd = -1;
    if (m->pid > 0) {
        kill(m->pid, SIGKILL);
        waitpid(m->pid, NULL, 0);
        m->pid = -1;
    }
}

static void send_frame(struct mon *m, struct proto_buf *b, const int *fds, int n_fds)
{
    cr_assert_eq(proto_buf_finish(b), 0);
    cr_assert_eq(proto_send_frame(m->fd, b, fds, n_fds), 0);
    proto_buf_free(b);
}

/* Receive until a frame other than PROTO_LOG; collect logs. 0 or -errno. */
static int recv_answer(struct mon *m, struct answer *a)
{
    memset(a, 0, sizeof(*a));
    for (;;) {
        struct proto_hdr h;
        uint8_t *p;
        struct pollfd pfd = {m->fd, POLLIN, 0};
        if (poll(&pfd, 1, 20000) != 1)
            return -ETIMEDOUT;
        int r = proto_recv_frame(m->fd, &h, &p, NULL, NULL);
        if (r < 0)
            return r;
        struct proto_reader rd;
        proto_reader_init(&rd, p, h.len);
        a->type = h.type;
        struct proto_str s = {0};
        switch (h.type) {
        case PROTO_LOG:
            proto_get_u32(&rd, &a->status);
            if (a->n_logs < 4)
                snprintf(a->logs[a->n_logs], sizeof(a->logs[0]), "%.*s", (int)rd.left,
                         (const char *)rd.p);
            a->n_logs++;
            free(p);
            continue;
        case PROTO_LOADED:
            proto_get_u32(&rd, &a->status);
            proto_get_bytes(&rd, &s);
            proto_get_u64(&rd, &a->ns);
            snprintf(a->msg, sizeof(a->msg), "%.*s", (int)s.len, s.p);
            break;
        case PROTO_RESET_DONE:
            proto_get_u32(&rd, &a->status);
            proto_get_u64(&rd, &a->ns);
            break;
        case PROTO_FAILED:
            proto_get_u32(&rd, &a->status);
            proto_get_bytes(&rd, &s);
            snprintf(a->msg, sizeof(a->msg), "%.*s", (int)s.len, s.p);
            break;
        case PROTO_RESPONSE: {
            static struct proto_response resp;
            cr_assert_eq(proto_response_decode(p, h.len, &resp), 0);
            a->status = resp.status;
            a->body_len = resp.body.len;
            snprintf(a->body, sizeof(a->body), "%.*s", (int)resp.body.len, resp.body.p);
            if (resp.n_headers)
                snprintf(a->header, sizeof(a->header), "%.*s: %.*s", (int)resp.headers[0].key.len,
                         resp.headers[0].key.p, (int)resp.headers[0].value.len,
                         resp.headers[0].value.p);
            break;
        }
        case PROTO_FORKED:
            proto_get_u32(&rd, &a->status);
            break;
        }
        free(p);
        return 0;
    }
}

static void send_load(struct mon *m, const char *image, const char *version, const int *fds,
                      int n_fds)
{
    struct proto_pair opts[] = {
        {{"function", 8}, {"probe", 5}},
        {{"version", 7}, {version, (uint32_t)strlen(version)}},
        {{"handler", 7}, {image, (uint32_t)strlen(image)}},
        {{"memory_mb", 9}, {memory_mb, (uint32_t)strlen(memory_mb)}},
        {{"timeout_ms", 10}, {"1000", 4}},
        {{"env.GREETING", 12}, {"hi there", 8}},
        {{"package_dir", 11}, {GUESTS, (uint32_t)strlen(GUESTS)}},
        {{"snapshot_dir", 12}, {snapdir, (uint32_t)strlen(snapdir)}},
    };
    struct proto_buf b;
    proto_buf_init(&b);
    cr_assert_eq(proto_buf_begin(&b, PROTO_LOAD, 1), 0);
    cr_assert_eq(proto_put_pairs(&b, opts, n_fds ? 6 : 8), 0);
    send_frame(m, &b, fds, n_fds);
}

static struct answer load(struct mon *m, const char *image, const char *version)
{
    struct answer a;
    send_load(m, image, version, NULL, 0);
    cr_assert_eq(recv_answer(m, &a), 0);
    cr_assert_eq(a.type, PROTO_LOADED);
    return a;
}

static int invoke(struct mon *m, uint32_t id, const char *path, const char *body, struct answer *a)
{
    struct proto_pair hdrs[] = {{{"X-Test", 6}, {"yes", 3}}};
    struct proto_buf b;
    proto_buf_init(&b);
    cr_assert_eq(proto_buf_begin(&b, PROTO_INVOKE, id), 0);
    proto_put_bytes(&b, "POST", 4);
    proto_put_bytes(&b, path, strlen(path));
    proto_put_bytes(&b, "", 0);
    proto_put_pairs(&b, hdrs, 1);
    proto_put_bytes(&b, body, strlen(body));
    send_frame(m, &b, NULL, 0);
    return recv_answer(m, a);
}

static struct answer reset(struct mon *m)
{
    struct answer a;
    struct proto_buf b;
    proto_buf_init(&b);
    cr_assert_eq(proto_buf_begin(&b, PROTO_RESET, 9), 0);
    send_frame(m, &b, NULL, 0);
    cr_assert_eq(recv_answer(m, &a), 0);
    cr_assert_eq(a.type, PROTO_RESET_DONE);
    return a;
}

/* A booted monitor of g_probe (writes the snapshot), then stopped. */
static void boot_probe_snapshot(void)
{
    struct mon m = mon_start();
    struct answer a = load(&m, "g_probe.elf", "v1");
    cr_assert_eq(a.status, 0, "LOAD failed: %s", a.msg);
    cr_assert_str_eq(a.msg, "booted");
    cr_assert_eq(a.n_logs, 1);
    cr_assert_str_eq(a.logs[0], "init done");
    mon_stop(&m);
}

static struct mon restored_probe(void)
{
    struct mon m = mon_start();
    struct answer a = load(&m, "g_probe.elf", "v1");
    cr_assert_eq(a.status, 0, "LOAD failed: %s", a.msg);
    cr_assert_str_eq(a.msg, "restored");
    return m;
}

TestSuite(vmm, .init = make_snapdir, .fini = rm_snapdir, .timeout = 120);

Test(vmm, hello_example)
{
    struct mon m = mon_start();
    struct answer a = load(&m, "hello.elf", "hello-1");
    cr_assert_eq(a.status, 0, "%s", a.msg);
    cr_assert_eq(invoke(&m, 7, "/", "", &a), 0);
    cr_assert_eq(a.type, PROTO_RESPONSE, "frame %u: %s", a.type, a.msg);
    cr_assert_eq(a.status, 200);
    cr_assert_str_eq(a.body, "hi there, world");
    mon_stop(&m);
}

Test(vmm, boot_then_restore)
{
    boot_probe_snapshot();
    struct stat st;
    char path[128];
    snprintf(path, sizeof(path), "%s/microvm.state", snapdir);
    cr_assert_eq(stat(path, &st), 0);

    struct mon m = restored_probe();
    struct answer a;
    cr_assert_eq(invoke(&m, 1, "/echo", "ping body", &a), 0);
    cr_assert_eq(a.type, PROTO_RESPONSE, "%s", a.msg);
    cr_assert_eq(a.status, 201);
    cr_assert_str_eq(a.body, "ping body");
    cr_assert_str_eq(a.header, "X-Echo: yes");
    cr_assert_eq(invoke(&m, 2, "/env", "", &a), 0);
    cr_assert_str_eq(a.body, "hi there");
    cr_assert_eq(invoke(&m, 3, "/sse", "", &a), 0);
    cr_assert_str_eq(a.body, "2525.000");
    cr_assert_eq(invoke(&m, 4, "/malloc", "", &a), 0);
    cr_assert_eq(a.status, 200, "%s", a.msg);
    cr_assert_eq(invoke(&m, 5, "/clock", "", &a), 0);
    cr_assert_eq(a.status, 200);
    cr_assert_eq(invoke(&m, 7, "/log", "", &a), 0);
    cr_assert_eq(a.n_logs, 3);
    cr_assert_str_eq(a.logs[0], "line one 1");
    cr_assert_str_eq(a.logs[2], "to stderr");
    mon_stop(&m);
}

Test(vmm, no_init_and_init_failure)
{
    struct mon m = mon_start();
    struct answer a = load(&m, "g_noinit.elf", "n1");
    cr_assert_eq(a.status, 0, "%s", a.msg);
    cr_assert_eq(invoke(&m, 1, "/", "", &a), 0);
    cr_assert_str_eq(a.body, "no init");
    mon_stop(&m);

    m = mon_start();
    a = load(&m, "g_initfail.elf", "f1");
    cr_assert_neq(a.status, 0);
    cr_assert_str_eq(a.msg, "guest abort: ember_init returned 3");
    cr_assert_neq(mon_wait(&m, 5000), -1, "monitor kept running after a failed init");
    mon_stop(&m);
}

Test(vmm, bad_images)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/not-elf", snapdir);
    FILE *f = fopen(path, "w");
    fputs("#!/bin/sh\necho hi\n", f);
    fclose(f);
    int fd = open(path, O_RDONLY);
    struct mon m = mon_start();
    send_load(&m, "x", "bad1", &fd, 1);
    close(fd);
    struct answer a;
    cr_assert_eq(recv_answer(&m, &a), 0);
    cr_assert_neq(a.status, 0);
    cr_assert(strstr(a.msg, "not an ELF"), "%s", a.msg);
    mon_stop(&m);

    /* a host executable is ELF but not a guest image */
    fd = open(VMM, O_RDONLY);
    m = mon_start();
    send_load(&m, "x", "bad2", &fd, 1);
    close(fd);
    cr_assert_eq(recv_answer(&m, &a), 0);
    cr_assert_neq(a.status, 0);
    cr_assert(strstr(a.msg, "guest image"), "%s", a.msg);
    mon_stop(&m);
}

Test(vmm, warm_calls)
{
    boot_probe_snapshot();
    struct mon m = restored_probe();
    struct answer a;
    uint64_t t0 = ember_now_ns();
    for (int i = 1; i <= 200; i++) {
        cr_assert_eq(invoke(&m, (uint32_t)i, "/count", "", &a), 0);
        char want[16];
        snprintf(want, sizeof(want), "%d", i);
        cr_assert_str_eq(a.body, want);
    }
    printf("vmm: warm call round trip (socketpair + guest): %.1f us\n",
           (double)(ember_now_ns() - t0) / 200 / 1000);
    mon_stop(&m);
}

Test(vmm, fresh_per_call_reset)
{
    boot_probe_snapshot();
    struct mon m = restored_probe();
    struct answer a;
    char first_rand[64] = "";
    uint64_t reset_ns = 0;
    for (int i = 0; i < 20; i++) {
        cr_assert_eq(invoke(&m, 1, "/count", "", &a), 0);
        cr_assert_str_eq(a.body, "1", "call %d after reset saw %s", i, a.body);
        cr_assert_eq(invoke(&m, 2, "/count", "", &a), 0);
        cr_assert_str_eq(a.body, "2");
        cr_assert_eq(invoke(&m, 3, "/rand", "", &a), 0);
        if (i == 0)
            snprintf(first_rand, sizeof(first_rand), "%.60s", a.body);
        else
            cr_assert_str_neq(a.body, first_rand, "reset replayed the random stream");
        struct answer r = reset(&m);
        cr_assert_eq(r.status, 0);
        reset_ns += r.ns;
    }
    printf("vmm: reset (monitor side): %.1f us\n", (double)reset_ns / 20 / 1000);
    mon_stop(&m);
}

Test(vmm, restored_vms_do_not_share_randomness)
{
    boot_probe_snapshot();
    struct mon a1 = restored_probe(), a2 = restored_probe();
    struct answer x, y;
    cr_assert_eq(invoke(&a1, 1, "/rand", "", &x), 0);
    cr_assert_eq(invoke(&a2, 1, "/rand", "", &y), 0);
    cr_assert_str_neq(x.body, y.body);
    mon_stop(&a1);
    mon_stop(&a2);
}

/* CRC32C, for writing a state file of another format version. */
static uint32_t crc32c(const void *data, size_t len)
{
    const uint8_t *p = data;
    uint32_t c = ~0u;
    while (len--) {
        c ^= *p++;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1)));
    }
    return ~c;
}

static void flip_byte(const char *name, off_t off)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", snapdir, name);
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0);
    uint8_t b;
    cr_assert_eq(pread(fd, &b, 1, off), 1);
    b ^= 0x40;
    cr_assert_eq(pwrite(fd, &b, 1, off), 1);
    close(fd);
}

static void expect_rejected(const char *why)
{
    struct mon m = mon_start();
    struct answer a = load(&m, "g_probe.elf", "v1");
    cr_assert_eq(a.status, 0, "%s", a.msg);
    cr_assert(strstr(a.msg, "booted (snapshot rejected: ") && strstr(a.msg, why),
              "want rejection '%s', got '%s'", why, a.msg);
    cr_assert_eq(invoke(&m, 1, "/count", "", &a), 0);
    cr_assert_str_eq(a.body, "1");
    mon_stop(&m);
    /* the rejected snapshot was replaced: the next monitor restores */
    m = restored_probe();
    mon_stop(&m);
}

Test(vmm, corrupt_snapshots_are_rejected)
{
    boot_probe_snapshot();
    /* the code of the guest image: first data page of the memory file */
    flip_byte("microvm.mem", 0x400000 + 100);
    expect_rejected("memory file checksum mismatch");

    flip_byte("microvm.state", 200);
    expect_rejected("state file checksum mismatch");

    /* another format version, with a valid checksum */
    char path[128];
    snprintf(path, sizeof(path), "%s/microvm.state", snapdir);
    int fd = open(path, O_RDWR);
    struct stat st;
    fstat(fd, &st);
    uint8_t *buf = malloc((size_t)st.st_size);
    cr_assert_eq(pread(fd, buf, (size_t)st.st_size, 0), st.st_size);
    uint32_t format = 99;
    memcpy(buf + 8, &format, 4);
    uint32_t crc = crc32c(buf, (size_t)st.st_size - 4);
    memcpy(buf + st.st_size - 4, &crc, 4);
    cr_assert_eq(pwrite(fd, buf, (size_t)st.st_size, 0), st.st_size);
    close(fd);
    free(buf);
    expect_rejected("format version 99");

    /* another function version */
    struct mon m = mon_start();
    struct answer a = load(&m, "g_probe.elf", "v2");
    cr_assert(strstr(a.msg, "taken of version 'v1'"), "%s", a.msg);
    mon_stop(&m);
}

Test(vmm, snapshot_through_fds)
{
    char mem[128], state[128], img[128];
    snprintf(mem, sizeof(mem), "%s/fd.mem", snapdir);
    snprintf(state, sizeof(state), "%s/fd.state", snapdir);
    snprintf(img, sizeof(img), "%s/g_probe.elf", GUESTS);
    int fds[3] = {open(img, O_RDONLY), open(mem, O_RDWR | O_CREAT, 0600),
                  open(state, O_RDWR | O_CREAT, 0600)};
    struct mon m = mon_start();
    send_load(&m, "g_probe.elf", "fd1", fds, 3);
    struct answer a;
    cr_assert_eq(recv_answer(&m, &a), 0);
    cr_assert_eq(a.status, 0, "%s", a.msg);
    cr_assert_str_eq(a.msg, "booted");
    mon_stop(&m);
    for (int i = 0; i < 3; i++)
        close(fds[i]);

    int ro[3] = {open(img, O_RDONLY), open(mem, O_RDONLY), open(state, O_RDONLY)};
    m = mon_start();
    send_load(&m, "g_probe.elf", "fd1", ro, 3);
    cr_assert_eq(recv_answer(&m, &a), 0);
    cr_assert_str_eq(a.msg, "restored");
    cr_assert_eq(invoke(&m, 1, "/env", "", &a), 0);
    cr_assert_str_eq(a.body, "hi there");
    mon_stop(&m);
    for (int i = 0; i < 3; i++)
        close(ro[i]);
}

Test(vmm, call_failures_keep_the_vm)
{
    boot_probe_snapshot();
    struct mon m = restored_probe();
    struct answer a;
    cr_assert_eq(invoke(&m, 1, "/fail", "", &a), 0);
    cr_assert_eq(a.type, PROTO_FAILED);
    cr_assert_eq(a.status, PROTO_FAIL_HANDLER);
    cr_assert_eq(invoke(&m, 2, "/big", "", &a), 0);
    cr_assert_eq(a.type, PROTO_FAILED);
    cr_assert_eq(a.status, PROTO_FAIL_TOO_LARGE);
    cr_assert_eq(invoke(&m, 3, "/status", "", &a), 0);
    cr_assert_eq(a.type, PROTO_FAILED);
    cr_assert_eq(a.status, PROTO_FAIL_BAD_OUTPUT);
    cr_assert_eq(invoke(&m, 4, "/nope", "", &a), 0);
    cr_assert_eq(a.status, 404);
    cr_assert_eq(invoke(&m, 5, "/count", "", &a), 0);
    cr_assert_str_eq(a.body, "1");
    mon_stop(&m);

    /* a request larger than the guest's request area (16 MiB / 4) */
    memory_mb = "16";
    m = mon_start();
    a = load(&m, "g_probe.elf", "small");
    cr_assert_eq(a.status, 0, "%s", a.msg);
    cr_assert_eq(invoke(&m, 5, "/count", "", &a), 0);
    size_t n = 5u << 20;
    char *big = malloc(n + 1);
    memset(big, 'x', n);
    big[n] = 0;
    cr_assert_eq(invoke(&m, 6, "/echo", big, &a), 0);
    free(big);
    cr_assert_eq(a.type, PROTO_FAILED);
    cr_assert_eq(a.status, PROTO_FAIL_TOO_LARGE);
    cr_assert_eq(invoke(&m, 7, "/count", "", &a), 0);
    cr_assert_str_eq(a.body, "2");
    mon_stop(&m);
}

static void hostile(const char *path, uint32_t reason, const char *needle)
{
    struct mon m = restored_probe();
    struct answer a;
    int r = invoke(&m, 42, path, "", &a);
    cr_assert_eq(r, 0, "%s: no answer (%d)", path, r);
    cr_assert_eq(a.type, PROTO_FAILED, "%s: frame %u", path, a.type);
    cr_assert_eq(a.status, reason, "%s: reason %u (%s)", path, a.status, a.msg);
    cr_assert(strstr(a.msg, needle), "%s: '%s' lacks '%s'", path, a.msg, needle);
    cr_assert_neq(mon_wait(&m, 5000), -1, "%s: monitor still running", path);
    mon_stop(&m);
}

Test(vmm, hostile_guests)
{
    boot_probe_snapshot();
    hostile("/read_oob", PROTO_FAIL_CRASH, "triple fault");
    hostile("/write_oob", PROTO_FAIL_CRASH, "triple fault");
    hostile("/write_null", PROTO_FAIL_CRASH, "triple fault");
    hostile("/write_pt", PROTO_FAIL_CRASH, "triple fault");
    hostile("/exec_data", PROTO_FAIL_CRASH, "triple fault");
    hostile("/write_text", PROTO_FAIL_CRASH, "triple fault");
    hostile("/stack", PROTO_FAIL_CRASH, "triple fault");
    hostile("/hlt", PROTO_FAIL_CRASH, "");
    hostile("/cr3", PROTO_FAIL_CRASH, "");
    /* IOPL 3 would allow cli at CPL 3 on hardware; kvm_pvm faults it */
    hostile("/cli", PROTO_FAIL_CRASH, "");
    hostile("/triple", PROTO_FAIL_CRASH, "triple fault");
    hostile("/outport", PROTO_FAIL_CRASH, "port I/O");
    hostile("/abort", PROTO_FAIL_CRASH, "guest abort: abort() called");
    hostile("/bad_respond", PROTO_FAIL_BAD_OUTPUT, "bad descriptor");
    hostile("/bad_log", PROTO_FAIL_CRASH, "log hypercall: bad buffer");

    /* and a fresh VM of the same function works after all that */
    struct mon m = restored_probe();
    struct answer a;
    cr_assert_eq(invoke(&m, 1, "/count", "", &a), 0);
    cr_assert_str_eq(a.body, "1");
    mon_stop(&m);
}

Test(vmm, infinite_loop_is_killed_promptly)
{
    boot_probe_snapshot();
    struct mon m = restored_probe();
    struct proto_pair none[1];
    struct proto_buf b;
    proto_buf_init(&b);
    cr_assert_eq(proto_buf_begin(&b, PROTO_INVOKE, 5), 0);
    proto_put_bytes(&b, "GET", 3);
    proto_put_bytes(&b, "/loop", 5);
    proto_put_bytes(&b, "", 0);
    proto_put_pairs(&b, none, 0);
    proto_put_bytes(&b, "", 0);
    send_frame(&m, &b, NULL, 0);
    /* emberd's side: no answer by the deadline -> kill */
    struct pollfd pfd = {m.fd, POLLIN, 0};
    cr_assert_eq(poll(&pfd, 1, 200), 0, "a looping guest answered");
    uint64_t t0 = ember_now_ns();
    kill(m.pid, SIGKILL);
    cr_assert_neq(mon_wait(&m, 2000), -1);
    printf("vmm: SIGKILL of a spinning VM -> reaped in %.2f ms\n",
           (double)(ember_now_ns() - t0) / 1e6);
    mon_stop(&m);

    /* SIGTERM: the monitor interrupts its vCPU and fails the call itself */
    m = restored_probe();
    proto_buf_init(&b);
    cr_assert_eq(proto_buf_begin(&b, PROTO_INVOKE, 6), 0);
    proto_put_bytes(&b, "GET", 3);
    proto_put_bytes(&b, "/loop", 5);
    proto_put_bytes(&b, "", 0);
    proto_put_pairs(&b, none, 0);
    proto_put_bytes(&b, "", 0);
    send_frame(&m, &b, NULL, 0);
    usleep(50000);
    kill(m.pid, SIGTERM);
    struct answer a;
    cr_assert_eq(recv_answer(&m, &a), 0);
    cr_assert_eq(a.type, PROTO_FAILED);
    cr_assert(strstr(a.msg, "terminated"), "%s", a.msg);
    cr_assert_neq(mon_wait(&m, 2000), -1);
    mon_stop(&m);
}

Test(vmm, restore_to_first_response)
{
    boot_probe_snapshot();
    enum { N = 30 };
    double t[N];
    for (int i = 0; i < N; i++) {
        struct mon m = mon_start();
        uint64_t t0 = ember_now_ns();
        struct answer a = load(&m, "g_probe.elf", "v1");
        cr_assert_str_eq(a.msg, "restored");
        cr_assert_eq(invoke(&m, 1, "/count", "", &a), 0);
        t[i] = (double)(ember_now_ns() - t0) / 1000;
        cr_assert_str_eq(a.body, "1");
        mon_stop(&m);
    }
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++)
            if (t[j] < t[i]) {
                double x = t[i];
                t[i] = t[j];
                t[j] = x;
            }
    printf("vmm: LOAD(restore) -> first response: p50 %.0f us, p99 %.0f us (n=%d)\n", t[N / 2],
           t[N - 1], N);
}
