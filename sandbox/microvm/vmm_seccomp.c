/* vmm_seccomp.c - what ember-vmm may ask of the kernel: one table.
 *
 * Installed by the monitor itself in two stacked steps: STEM once /dev/kvm
 * is open and the VM and vCPU exist (so no new VM, vCPU or device can be
 * made, and no ioctl but the listed KVM ones on any fd), and SERVE after LOAD
 * (no more opening, writing, renaming or unlinking files). Anything else kills
 * the process: a monitor that tries it has been subverted by its guest.
 */
#include "sandbox/microvm/vmm.h"

#include <errno.h>
#include <seccomp.h>
#include <stddef.h>
#include <sys/ioctl.h>

#include "common/cleanup.h"

enum when { BOTH, STEM_ONLY };

static const struct {
    int nr;
    enum when when;
} syscalls[] = {
    /* the channel, logging, memory, time, entropy, exit */
    {SCMP_SYS(read), BOTH},
    {SCMP_SYS(write), BOTH},
    {SCMP_SYS(writev), BOTH},
    {SCMP_SYS(close), BOTH},
    {SCMP_SYS(recvmsg), BOTH},
    {SCMP_SYS(sendmsg), BOTH},
    {SCMP_SYS(poll), BOTH}, /* waiting for a frame: proto_wait_readable */
    {SCMP_SYS(mmap), BOTH},
    {SCMP_SYS(munmap), BOTH},
    {SCMP_SYS(mremap), BOTH},
    {SCMP_SYS(mprotect), BOTH},
    {SCMP_SYS(brk), BOTH},
    {SCMP_SYS(madvise), BOTH},
    {SCMP_SYS(getrandom), BOTH},
    {SCMP_SYS(clock_gettime), BOTH},
    {SCMP_SYS(gettimeofday), BOTH},
    {SCMP_SYS(getpid), BOTH},
    {SCMP_SYS(gettid), BOTH},
    {SCMP_SYS(futex), BOTH},
    {SCMP_SYS(rt_sigreturn), BOTH},
    {SCMP_SYS(rt_sigprocmask), BOTH},
    {SCMP_SYS(exit), BOTH},
    {SCMP_SYS(exit_group), BOTH},
    {SCMP_SYS(fstat), BOTH},
    {SCMP_SYS(newfstatat), BOTH},
    {SCMP_SYS(lseek), BOTH},
    /* LOAD: the image, the snapshot files */
    {SCMP_SYS(openat), STEM_ONLY},
    {SCMP_SYS(pread64), STEM_ONLY},
    {SCMP_SYS(pwrite64), STEM_ONLY},
    {SCMP_SYS(ftruncate), STEM_ONLY},
    {SCMP_SYS(fsync), STEM_ONLY},
    {SCMP_SYS(fdatasync), STEM_ONLY},
    {SCMP_SYS(renameat), STEM_ONLY},
    {SCMP_SYS(renameat2), STEM_ONLY},
    {SCMP_SYS(unlinkat), STEM_ONLY},
    {SCMP_SYS(memfd_create), STEM_ONLY},
    {SCMP_SYS(mincore), STEM_ONLY},
    {SCMP_SYS(fcntl), STEM_ONLY},
    /* installing the SERVE filter on top */
    {SCMP_SYS(prctl), STEM_ONLY},
    {SCMP_SYS(seccomp), STEM_ONLY},
};

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_UNDEFINED__) || defined(EMBER_SANITIZE)
#define SANITIZER_BUILD 1
#endif

#ifdef SANITIZER_BUILD
/* Sanitizer runtimes report errors with an alternate signal stack and /proc
 * reads: allowed in those builds only (leak checking is off in the monitor,
 * see vmm_main.c). */
static const int sanitizer_syscalls[] = {
    SCMP_SYS(sigaltstack), SCMP_SYS(rt_sigaction),
    SCMP_SYS(openat),      SCMP_SYS(open),
    SCMP_SYS(readlink),    SCMP_SYS(readlinkat),
    SCMP_SYS(getdents64),  SCMP_SYS(prctl),
    SCMP_SYS(sched_yield), SCMP_SYS(sched_getaffinity),
    SCMP_SYS(getppid),     SCMP_SYS(pipe2),
    SCMP_SYS(kill),        SCMP_SYS(tgkill),
    SCMP_SYS(nanosleep),   SCMP_SYS(clock_nanosleep),
    SCMP_SYS(uname),       SCMP_SYS(pread64),
    SCMP_SYS(dup),         SCMP_SYS(fcntl),
    SCMP_SYS(getrlimit),   SCMP_SYS(prlimit64),
    SCMP_SYS(mlock),       SCMP_SYS(munlock),
};
#endif

static const struct {
    unsigned long cmd;
    enum when when;
} kvm_ioctls[] = {
    {KVM_RUN, BOTH},       {KVM_GET_REGS, BOTH},  {KVM_SET_REGS, BOTH},
    {KVM_GET_SREGS, BOTH}, {KVM_SET_SREGS, BOTH}, {KVM_GET_FPU, BOTH},
    {KVM_SET_FPU, BOTH},   {KVM_GET_XSAVE, BOTH}, {KVM_SET_XSAVE, BOTH},
    {KVM_GET_XCRS, BOTH},  {KVM_SET_XCRS, BOTH},  {KVM_SET_USER_MEMORY_REGION, STEM_ONLY},
};

static void ctx_release(scmp_filter_ctx *ctx)
{
    if (*ctx)
        seccomp_release(*ctx);
}

int vmm_seccomp_install(enum vmm_seccomp_phase phase, struct ember_error *err)
{
    __attribute__((cleanup(ctx_release))) scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_KILL_PROCESS);
    if (!ctx)
        return ember_error_set(err, -ENOMEM, "seccomp_init");
    int ret;
    for (size_t i = 0; i < ARRAY_SIZE(syscalls); i++) {
        if (phase == VMM_SECCOMP_SERVE && syscalls[i].when == STEM_ONLY)
            continue;
        ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, syscalls[i].nr, 0);
        if (ret < 0)
            return ember_error_sys(err, ret, "seccomp_rule_add (syscall %d)", syscalls[i].nr);
    }
#ifdef SANITIZER_BUILD
    for (size_t i = 0; i < ARRAY_SIZE(sanitizer_syscalls); i++) {
        ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, sanitizer_syscalls[i], 0);
        if (ret < 0 && ret != -EEXIST)
            return ember_error_sys(err, ret, "seccomp_rule_add (syscall %d)",
                                   sanitizer_syscalls[i]);
    }
#endif
    for (size_t i = 0; i < ARRAY_SIZE(kvm_ioctls); i++) {
        if (phase == VMM_SECCOMP_SERVE && kvm_ioctls[i].when == STEM_ONLY)
            continue;
        /* the kernel reads ioctl's cmd as an unsigned int */
        ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
                               SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, kvm_ioctls[i].cmd));
        if (ret < 0)
            return ember_error_sys(err, ret, "seccomp_rule_add (ioctl %#lx)", kvm_ioctls[i].cmd);
    }
    ret = seccomp_load(ctx);
    if (ret < 0)
        return ember_error_sys(err, ret, "seccomp_load (%s)",
                               phase == VMM_SECCOMP_STEM ? "stem" : "serve");
    return 0;
}
