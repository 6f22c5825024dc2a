/* vmm.h - ember-vmm internals: one process, one KVM microVM, one vCPU
 * (internal to sandbox/microvm; the guest contract is
 * functions/sdk/guest/ember_guest_abi.h).
 *
 * Life of a monitor:
 *   vmm_init        /dev/kvm open, VM and vCPU created, CPUID set: a stem
 *                   cell, no guest memory yet
 *   vmm_boot        load the ELF into fresh memory (memfd), run ember_init
 *                   until the guest's first WAIT
 *   vmm_snapshot_write   guest memory + CPU state -> two files
 *   vmm_restore     map the memory file MAP_PRIVATE, load the CPU state:
 *                   every VM that serves calls runs from a snapshot mapping
 *   vmm_reset       MADV_DONTNEED the private mapping + CPU state again
 */
#ifndef EMBER_SANDBOX_MICROVM_VMM_H
#define EMBER_SANDBOX_MICROVM_VMM_H

#include <linux/kvm.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "functions/sdk/guest/ember_guest_abi.h"

#define VMM_MEM_ALIGN (2ull << 20) /* guest memory is a whole number of 2 MiB pages */
#define VMM_ELF_MAX (64u << 20)    /* bytes of a guest image file */
#define VMM_VERSION_MAX 128

/** Where the guest's regions are (ember_guest_abi.h); saved in snapshots. */
struct vmm_layout {
    uint64_t mem_size;
    uint64_t image_end; /* end of the highest PT_LOAD, 4 KiB aligned */
    uint64_t heap_start, heap_end;
    uint64_t req_base, req_cap;
};

/** vCPU state: what a snapshot holds and a reset puts back. */
struct vmm_cpu {
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    struct kvm_fpu fpu; /* used when the host has no KVM_GET_XSAVE */
    struct kvm_xsave xsave;
    struct kvm_xcrs xcrs;
    uint32_t has_xsave, has_xcrs;
};

struct vmm {
    int kvm_fd, vm_fd, vcpu_fd;
    struct kvm_run *run;
    size_t run_size;
    struct kvm_cpuid2 *cpuid;
    uint32_t cpuid_crc;
    bool has_xsave, has_xcrs, has_sync_regs;

    /* Guest memory: a shared memfd while booting, then a MAP_PRIVATE mapping
     * of the snapshot memory file (private == true). */
    uint8_t *mem;
    uint64_t mem_size;
    bool private;
    bool slot_set;
    struct vmm_layout layout;
    struct vmm_cpu snap; /* CPU state at the snapshot point */
    uint64_t seed_gen;

    int chan;            /* emberd's channel: logs go out from the run loop */
    uint32_t call_id;    /* id of the in-flight call (for PROTO_LOG context) */
    uint64_t hypercalls; /* count, for measurements */
};

/** Why vmm_run returned. */
enum vmm_stop {
    VMM_STOP_WAIT,    /* EMBER_HC_WAIT: the snapshot point */
    VMM_STOP_RESPOND, /* EMBER_HC_RESPOND: *arg = guest address of the response */
    VMM_STOP_ABORT,   /* EMBER_HC_ABORT: err->msg holds the guest's message */
    VMM_STOP_CRASH,   /* the guest faulted or misbehaved: err->msg says how */
    VMM_STOP_SIGNAL,  /* SIGTERM: the monitor is asked to stop */
};

extern volatile sig_atomic_t vmm_stop_requested;

/* vmm_kvm.c */
/** Open /dev/kvm (or take @kvm_fd if >= 0: ownership passes, also on
 *  failure), create the VM and its vCPU, set CPUID. */
int vmm_init(struct vmm *vm, int chan, int kvm_fd, struct ember_error *err);
void vmm_destroy(struct vmm *vm);
/** Allocate @mem_size bytes of guest memory, load the image, build page
 *  tables, GDT, boot info and env, set the vCPU to the entry point. */
int vmm_boot(struct vmm *vm, const uint8_t *elf, size_t elf_len, uint64_t mem_size, const char *env,
             size_t env_len, uint32_t n_env, struct ember_error *err);
/** Run the vCPU until a stop the caller must handle; hypercalls LOG, CLOCK and
 *  RANDOM are served inside. */
int vmm_run(struct vmm *vm, enum vmm_stop *stop, uint64_t *arg, struct ember_error *err);
/** Complete a pending `in` without entering the guest (immediate_exit). */
int vmm_flush_io(struct vmm *vm, struct ember_error *err);
int vmm_cpu_save(struct vmm *vm, struct vmm_cpu *cpu, struct ember_error *err);
int vmm_cpu_load(struct vmm *vm, const struct vmm_cpu *cpu, struct ember_error *err);
/** Map guest memory from @mem_fd MAP_PRIVATE and register it with KVM
 *  (replacing any earlier mapping). */
int vmm_map_private(struct vmm *vm, int mem_fd, uint64_t mem_size, struct ember_error *err);
/** Fresh random seed into the guest's boot page (every restore and reset). */
int vmm_reseed(struct vmm *vm, struct ember_error *err);
/** Back to the snapshot: drop private pages, reload the CPU state, reseed. */
int vmm_reset(struct vmm *vm, struct ember_error *err);
/** Host pointer for guest range [gpa, gpa+len) if it lies inside the guest's
 *  user-accessible memory, else NULL. */
void *vmm_guest_ptr(const struct vmm *vm, uint64_t gpa, uint64_t len);

/* vmm_elf.c */
/** Validate a guest image; fills the highest loaded address and the entry. */
int vmm_elf_check(const uint8_t *elf, size_t len, uint64_t mem_limit, uint64_t *image_end,
                  uint64_t *entry, struct ember_error *err);
/** Copy the PT_LOAD segments of a checked image into guest memory. */
void vmm_elf_load(const uint8_t *elf, uint8_t *mem);

/* vmm_snapshot.c */
struct vmm_snapshot_id {
    const char *version; /* function version digest */
    uint64_t mem_size;
    uint32_t cpuid_crc;
};
/** Write guest memory (its nonzero pages) to empty @mem_fd and the CPU state,
 *  layout and checksums to empty @state_fd; fsync both. */
int vmm_snapshot_write(struct vmm *vm, const struct vmm_snapshot_id *id, int mem_fd, int state_fd,
                       struct ember_error *err);
/** Check @state_fd and @mem_fd against @id and their checksums, then map the
 *  memory and load the CPU state: the VM is ready to serve. -EINVAL (with a
 *  reason) for a snapshot that is corrupt, stale or from another format. */
int vmm_snapshot_restore(struct vmm *vm, const struct vmm_snapshot_id *id, int mem_fd, int state_fd,
                         struct ember_error *err);
uint32_t vmm_crc32c(uint32_t crc, const void *p, size_t len);

/* vmm_seccomp.c */
enum vmm_seccomp_phase {
    VMM_SECCOMP_STEM,  /* after the VM exists: KVM ioctls, snapshot file I/O */
    VMM_SECCOMP_SERVE, /* after LOAD: no more opening, writing or renaming files */
};
int vmm_seccomp_install(enum vmm_seccomp_phase phase, struct ember_error *err);

#endif
