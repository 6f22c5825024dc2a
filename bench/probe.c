/*
 * ember-probe - what this machine charges for the steps a zygote fork is
 * made of, measured without ember: fork() itself, a copy-on-write fault,
 * and a wake-up across a socketpair on one CPU and across two.
 *
 * A zygote scale-out is a FORK frame (a wake-up), the fork, the child's
 * first writes (copy-on-write faults) and its HELLO (another wake-up). On
 * bare metal these are ~30 us, ~0.5 us and ~5 us; under a nested
 * hypervisor they can be many times that, and this tool shows how many, so
 * that pool-starts.sh's zygote row can be read against the platform.
 *
 * Each figure is the median of ROUNDS samples. No root needed.
 */
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 41
#define COW_PAGES 64
#define PINGS 2000
#define PAGE 4096

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double median_us(uint64_t *v, size_t n)
{
    qsort(v, n, sizeof(*v), cmp_u64);
    return (double)v[n / 2] / 1000.0;
}

static int die(const char *what)
{
    fprintf(stderr, "ember-probe: %s: %s\n", what, strerror(errno));
    return 1;
}

/* fork() as the parent sees it, for a process with @mem of written memory
 * (the zygote's anonymous memory is ~150 KiB). */
static int probe_fork(char *mem, size_t len, double *out)
{
    uint64_t t[ROUNDS];
    for (int i = 0; i < ROUNDS; i++) {
        memset(mem, i, len); /* present and private again, as in a zygote */
        uint64_t t0 = now_ns();
        pid_t pid = fork();
        if (pid == 0)
            _exit(0);
        t[i] = now_ns() - t0;
        if (pid < 0)
            return die("fork");
        waitpid(pid, NULL, 0);
    }
    *out = median_us(t, ROUNDS);
    return 0;
}

/* A child's first write to each of COW_PAGES pages it shares with its
 * parent, per page. */
static int probe_cow(char *mem, double *out)
{
    uint64_t t[ROUNDS];
    int pfd[2];
    if (pipe(pfd) < 0)
        return die("pipe");
    for (int i = 0; i < ROUNDS; i++) {
        memset(mem, i, (size_t)COW_PAGES * PAGE);
        pid_t pid = fork();
        if (pid < 0)
            return die("fork");
        if (pid == 0) {
            uint64_t t0 = now_ns();
            for (size_t p = 0; p < COW_PAGES; p++)
                ((volatile char *)mem)[p * PAGE] = (char)(i + 1);
            uint64_t d = (now_ns() - t0) / COW_PAGES;
            _exit(write(pfd[1], &d, sizeof(d)) == sizeof(d) ? 0 : 1);
        }
        if (read(pfd[0], &t[i], sizeof(t[i])) != sizeof(t[i]))
            return die("read");
        waitpid(pid, NULL, 0);
    }
    close(pfd[0]);
    close(pfd[1]);
    *out = median_us(t, ROUNDS);
    return 0;
}

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof(set), &set); /* best effort */
}

/* Round trip of one byte over a socketpair between two processes pinned
 * to @cpu_a and @cpu_b; each side sleeps in read() between messages. With
 * @idle_us, both sleep that long before each round trip, so the wake-up
 * finds an idle CPU (as a FORK finds a zygote); without, round trips go
 * back to back and the CPUs never settle. */
static int probe_pingpong(int cpu_a, int cpu_b, unsigned idle_us, double *out)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        return die("socketpair");
    pid_t pid = fork();
    if (pid < 0)
        return die("fork");
    if (pid == 0) {
        pin(cpu_b);
        close(sv[0]);
        char c;
        while (read(sv[1], &c, 1) == 1 && write(sv[1], &c, 1) == 1)
            ;
        _exit(0);
    }
    close(sv[1]);
    pin(cpu_a);
    int per_round = idle_us ? 1 : PINGS / ROUNDS;
    uint64_t t[ROUNDS];
    char c = 'x';
    for (int r = 0; r < ROUNDS; r++) {
        if (idle_us)
            usleep(idle_us);
        uint64_t t0 = now_ns();
        for (int i = 0; i < per_round; i++) {
            if (write(sv[0], &c, 1) != 1 || read(sv[0], &c, 1) != 1)
                return die("ping");
        }
        t[r] = (now_ns() - t0) / (uint64_t)per_round;
    }
    close(sv[0]);
    waitpid(pid, NULL, 0);
    *out = median_us(t, ROUNDS);
    return 0;
}

int main(int argc, char **argv)
{
    (void)argv;
    if (argc > 1) {
        fputs("usage: ember-probe\n"
              "prints the median cost of fork(), of a copy-on-write fault and of a\n"
              "wake-up round trip on one CPU and across two, on this machine\n",
              argc == 2 ? stdout : stderr);
        return argc == 2 ? 0 : 2;
    }
    size_t len = 160 * 1024;
    if (len < (size_t)COW_PAGES * PAGE)
        len = (size_t)COW_PAGES * PAGE;
    char *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return die("mmap");

    /* The first two CPUs this process may run on. */
    int cpu[2] = {-1, -1}, cpus = 0;
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof(allowed), &allowed) == 0) {
        for (int c = 0; c < CPU_SETSIZE && cpus < 2; c++)
            if (CPU_ISSET(c, &allowed))
                cpu[cpus++] = c;
    }
    if (cpus == 0)
        cpu[cpus++] = 0;

    double fork_us = 0, cow_us = 0, same_us = 0, cross_us = -1, idle_us = -1;
    if (probe_fork(mem, len, &fork_us) || probe_cow(mem, &cow_us) ||
        probe_pingpong(cpu[0], cpu[0], 0, &same_us))
        return 1;
    if (cpus > 1 && (probe_pingpong(cpu[0], cpu[1], 0, &cross_us) ||
                     probe_pingpong(cpu[0], cpu[1], 1000, &idle_us)))
        return 1;

    printf("fork() of a process with %zu KiB written, parent side    %8.1f us\n", len / 1024,
           fork_us);
    printf("copy-on-write fault, per page (child's first write)       %8.2f us\n", cow_us);
    printf("wake-up round trip over a socketpair, same CPU            %8.1f us\n", same_us);
    if (cpus > 1) {
        printf("wake-up round trip, CPU %d <-> CPU %d, back to back         %8.1f us\n", cpu[0],
               cpu[1], cross_us);
        printf("wake-up round trip, CPU %d <-> CPU %d, after 1 ms idle      %8.1f us\n", cpu[0],
               cpu[1], idle_us);
    } else {
        printf("wake-up round trip across CPUs: one CPU allowed, not measured\n");
    }
    return 0;
}
