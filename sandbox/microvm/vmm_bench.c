/* vmm_bench.c - ember-vmm-bench: numbers for the microVM backend, measured
 * against the real monitor over a socketpair (what emberd does, minus HTTP).
 *
 *   ember-vmm-bench [--vmm PATH] [--guests DIR] [-n N]
 *
 * DIR holds hello.elf and g_probe.elf (build/tests/guests). Prints:
 * restore (LOAD -> LOADED) and restore-to-first-response p50/p99, warm call
 * round trip, reset cost (monitor side, and with dirtied pages), hypercall
 * round trip measured inside the guest, and the PSS of idle restored VMs.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/clock.h"
#include "sandbox/proto.h"

struct mon {
    pid_t pid;
    int fd;
};

static const char *vmm_path = "./ember-vmm";
static const char *guests = "./tests/guests";
static char snapdir[] = "/tmp/ember-vmm-bench-XXXXXX";

static void die(const char *what)
{
    fprintf(stderr, "ember-vmm-bench: %s\n", what);
    exit(1);
}

static struct mon start(void)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        die("socketpair");
    pid_t pid = fork();
    if (pid == 0) {
        dup2(sv[1], 3);
        execl(vmm_path, "ember-vmm", (char *)NULL);
        _exit(127);
    }
    close(sv[1]);
    struct mon m = {pid, sv[0]};
    struct proto_hdr h;
    uint8_t *p;
    if (proto_recv_frame(m.fd, &h, &p, NULL, NULL) < 0 || h.type != PROTO_HELLO)
        die("no HELLO");
    free(p);
    return m;
}

static void stop(struct mon *m)
{
    close(m->fd);
    kill(m->pid, SIGKILL);
    waitpid(m->pid, NULL, 0);
}

/* Next non-LOG frame: its type, and its payload in *out (free it). */
static uint16_t answer(struct mon *m, uint8_t **out, uint32_t *len)
{
    for (;;) {
        struct proto_hdr h;
        uint8_t *p;
        if (proto_recv_frame(m->fd, &h, &p, NULL, NULL) < 0)
            die("monitor went away");
        if (h.type == PROTO_LOG) {
            free(p);
            continue;
        }
        *out = p;
        *len = h.len;
        return h.type;
    }
}

static void load(struct mon *m, const char *image, const char *want)
{
    char dir[128];
    snprintf(dir, sizeof(dir), "%s/%s", snapdir, image); /* one snapshot per image */
    if (access(dir, F_OK) != 0 && mkdir(dir, 0700) != 0)
        die("mkdir");
    struct proto_pair o[] = {
        {{"function", 8}, {"bench", 5}},
        {{"version", 7}, {image, (uint32_t)strlen(image)}},
        {{"handler", 7}, {image, (uint32_t)strlen(image)}},
        {{"memory_mb", 9}, {"64", 2}},
        {{"package_dir", 11}, {guests, (uint32_t)strlen(guests)}},
        {{"snapshot_dir", 12}, {dir, (uint32_t)strlen(dir)}},
    };
    struct proto_buf b;
    proto_buf_init(&b);
    proto_buf_begin(&b, PROTO_LOAD, 1);
    proto_put_pairs(&b, o, 6);
    proto_buf_finish(&b);
    proto_send_frame(m->fd, &b, NULL, 0);
    proto_buf_free(&b);
    uint8_t *p;
    uint32_t len;
    if (answer(m, &p, &len) != PROTO_LOADED)
        die("no LOADED");
    struct proto_reader r;
    uint32_t st;
    struct proto_str msg;
    proto_reader_init(&r, p, len);
    proto_get_u32(&r, &st);
    proto_get_bytes(&r, &msg);
    if (st != 0 || (want && !proto_str_eq(msg, want))) {
        fprintf(stderr, "LOADED %u '%.*s', want '%s'\n", st, (int)msg.len, msg.p, want);
        die("load");
    }
    free(p);
}

/* One call; returns the body as a number (atol) or -1. */
static long call(struct mon *m, const char *path, const char *query)
{
    struct proto_buf b;
    proto_buf_init(&b);
    proto_buf_begin(&b, PROTO_INVOKE, 7);
    proto_put_bytes(&b, "GET", 3);
    proto_put_bytes(&b, path, strlen(path));
    proto_put_bytes(&b, query, strlen(query));
    proto_put_pairs(&b, NULL, 0);
    proto_put_bytes(&b, "", 0);
    proto_buf_finish(&b);
    proto_send_frame(m->fd, &b, NULL, 0);
    proto_buf_free(&b);
    uint8_t *p;
    uint32_t len;
    if (answer(m, &p, &len) != PROTO_RESPONSE)
        die("call failed");
    static struct proto_response resp;
    proto_response_decode(p, len, &resp);
    char num[32] = "";
    snprintf(num, sizeof(num), "%.*s", (int)(resp.body.len < 31 ? resp.body.len : 31), resp.body.p);
    free(p);
    return strtol(num, NULL, 10);
}

static uint64_t reset(struct mon *m)
{
    struct proto_buf b;
    proto_buf_init(&b);
    proto_buf_begin(&b, PROTO_RESET, 0);
    proto_buf_finish(&b);
    proto_send_frame(m->fd, &b, NULL, 0);
    proto_buf_free(&b);
    uint8_t *p;
    uint32_t len;
    if (answer(m, &p, &len) != PROTO_RESET_DONE)
        die("reset");
    struct proto_reader r;
    uint32_t st;
    uint64_t ns;
    proto_reader_init(&r, p, len);
    proto_get_u32(&r, &st);
    proto_get_u64(&r, &ns);
    free(p);
    return ns;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, uint64_t *ns, int n)
{
    qsort(ns, (size_t)n, sizeof(*ns), cmp_u64);
    printf("%-44s p50 %8.1f us   p99 %8.1f us   (n=%d)\n", what, (double)ns[n / 2] / 1e3,
           (double)ns[(n * 99) / 100] / 1e3, n);
}

static long pss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "Pss: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

int main(int argc, char **argv)
{
    int n = 200, c;
    static const struct option lo[] = {{"vmm", 1, NULL, 'v'}, {"guests", 1, NULL, 'g'}, {0}};
    while ((c = getopt_long(argc, argv, "n:", lo, NULL)) != -1) {
        if (c == 'v')
            vmm_path = optarg;
        else if (c == 'g')
            guests = optarg;
        else if (c == 'n')
            n = atoi(optarg);
        else
            return 2;
    }
    if (n < 10)
        n = 10;
    if (!mkdtemp(snapdir))
        die("mkdtemp");
    uint64_t *t = calloc((size_t)n * 10, sizeof(*t));

    /* snapshots of both images */
    struct mon m = start();
    uint64_t t0 = ember_now_ns();
    load(&m, "hello.elf", "booted");
    printf("%-44s %8.1f us\n", "boot + ember_init + snapshot (hello)",
           (double)(ember_now_ns() - t0) / 1e3);
    stop(&m);
    m = start();
    load(&m, "g_probe.elf", "booted");
    stop(&m);

    /* restore, from a started monitor (a stem cell) */
    uint64_t *t2 = t + n;
    for (int i = 0; i < n; i++) {
        m = start();
        t0 = ember_now_ns();
        load(&m, "hello.elf", "restored");
        t[i] = ember_now_ns() - t0;
        call(&m, "/", "");
        t2[i] = ember_now_ns() - t0;
        stop(&m);
    }
    report("restore: LOAD -> LOADED", t, n);
    report("restore -> first response (hello)", t2, n);

    /* warm calls */
    m = start();
    load(&m, "hello.elf", "restored");
    call(&m, "/", "");
    for (int i = 0; i < n * 10; i++) {
        t0 = ember_now_ns();
        call(&m, "/", "");
        t[i] = ember_now_ns() - t0;
    }
    report("warm call round trip (hello)", t, n * 10);
    printf("%-44s %8ld kB\n", "PSS of one idle restored hello VM (monitor)", pss_kib(m.pid));
    stop(&m);

    /* PSS with several VMs of one function: the snapshot's page cache and
     * the monitor's text are shared between them */
    enum { K = 8 };
    struct mon many[K];
    for (int i = 0; i < K; i++) {
        many[i] = start();
        load(&many[i], "hello.elf", "restored");
        call(&many[i], "/", "");
    }
    long sum = 0;
    for (int i = 0; i < K; i++)
        sum += pss_kib(many[i].pid);
    printf("%-44s %8ld kB\n", "PSS per idle hello VM, 8 running", sum / K);
    for (int i = 0; i < K; i++)
        stop(&many[i]);

    /* reset and hypercalls, with the probe guest */
    m = start();
    load(&m, "g_probe.elf", "restored");
    call(&m, "/count", "");
    for (int i = 0; i < n; i++) {
        call(&m, "/count", "");
        t[i] = reset(&m);
    }
    report("reset (monitor side), after a small call", t, n);
    for (int i = 0; i < n; i++) {
        call(&m, "/dirty", "256");
        t[i] = reset(&m);
    }
    report("reset after dirtying 256 pages (1 MiB)", t, n);
    for (int i = 0; i < n; i++) {
        call(&m, "/count", "");
        t0 = ember_now_ns();
        reset(&m);
        t[i] = ember_now_ns() - t0;
    }
    report("reset round trip (RESET -> RESET_DONE)", t, n);
    printf("%-44s %8ld ns\n", "hypercall round trip (in guest, CLOCK)", call(&m, "/hcbench", ""));
    stop(&m);

    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", snapdir);
    if (system(cmd) != 0)
        return 1;
    free(t);
    return 0;
}
