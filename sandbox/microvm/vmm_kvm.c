/* vmm_kvm.c - the VM: KVM setup, guest memory and page tables, the run loop
 * with its hypercalls, CPU state save/load, reset. */
#include "sandbox/microvm/vmm.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "sandbox/proto.h"

volatile sig_atomic_t vmm_stop_requested;

/* Page table entry bits. */
#define PTE_P (1ull << 0)
#define PTE_RW (1ull << 1)
#define PTE_US (1ull << 2)
#define PTE_PS (1ull << 7)
#define PTE_NX (1ull << 63)

#define CR0_PE (1ull << 0)
#define CR0_MP (1ull << 1)
#define CR0_ET (1ull << 4)
#define CR0_NE (1ull << 5)
#define CR0_WP (1ull << 16)
#define CR0_PG (1ull << 31)
#define CR4_PAE (1ull << 5)
#define CR4_OSFXSR (1ull << 9)
#define CR4_OSXMMEXCPT (1ull << 10)
#define EFER_LME (1ull << 8)
#define EFER_LMA (1ull << 10)
#define EFER_NXE (1ull << 11)

#define RFLAGS_RESERVED (1ull << 1)
#define RFLAGS_IOPL3 (3ull << 12)

/* GDT selectors (ember_guest_abi.h: the GDT page at EMBER_GUEST_GDT). */
#define SEL_USER_DATA (0x18 | 3)
#define SEL_USER_CODE (0x20 | 3)
#define SEL_TSS 0x28
#define TSS_OFFSET 0x800 /* the TSS lives in the GDT's page */

/* Page-table pages inside EMBER_GUEST_PT_BASE. */
#define PT_PML4 0
#define PT_PDPT 1
#define PT_LOW 2   /* 4 KiB pages of [0, 2 MiB) */
#define PT_STACK 3 /* 4 KiB pages of [2 MiB, 4 MiB) */
#define PT_PD0 4   /* one page directory per GiB */
#define VMM_MEM_MAX ((uint64_t)(EMBER_GUEST_PT_PAGES - PT_PD0) << 30)

static int kvm_err(struct ember_error *err, const char *what)
{
    return ember_error_sys(err, -errno, "%s", what);
}

static uint32_t cpuid_leaf_reg(const struct kvm_cpuid2 *c, uint32_t fn, int reg)
{
    for (uint32_t i = 0; i < c->nent; i++)
        if (c->entries[i].function == fn && c->entries[i].index == 0) {
            const struct kvm_cpuid_entry2 *e = &c->entries[i];
            return reg == 0 ? e->eax : reg == 1 ? e->ebx : reg == 2 ? e->ecx : e->edx;
        }
    return 0;
}

static int setup_cpuid(struct vmm *vm, struct ember_error *err)
{
    uint32_t nent = 128;
    for (;;) {
        struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + nent * sizeof(c->entries[0]));
        if (!c)
            return ember_error_set(err, -ENOMEM, "cpuid: out of memory");
        c->nent = nent;
        if (ioctl(vm->kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
            vm->cpuid = c;
            break;
        }
        int ret = -errno;
        free(c);
        if (ret != -E2BIG || nent >= 4096)
            return ember_error_sys(err, ret, "KVM_GET_SUPPORTED_CPUID");
        nent *= 2;
    }
    /* The host's answer carries the APIC id of whichever CPU ran the ioctl:
     * give the one vCPU id 0, so the guest sees the same CPUID in every VM
     * and the snapshot's CPUID checksum means something. */
    uint32_t crc = 0;
    for (uint32_t i = 0; i < vm->cpuid->nent; i++) {
        struct kvm_cpuid_entry2 *e = &vm->cpuid->entries[i];
        if (e->function == 1)
            e->ebx &= 0x00ffffffu;
        if (e->function == 0xb || e->function == 0x1f)
            e->edx = 0;
        uint32_t words[7] = {e->function, e->index, e->flags, e->eax, e->ebx, e->ecx, e->edx};
        crc = vmm_crc32c(crc, words, sizeof(words));
    }
    if (ioctl(vm->vcpu_fd, KVM_SET_CPUID2, vm->cpuid) < 0)
        return kvm_err(err, "KVM_SET_CPUID2");
    vm->cpuid_crc = crc;
    return 0;
}

int vmm_init(struct vmm *vm, int chan, int kvm_fd, struct ember_error *err)
{
    int ret;

    memset(vm, 0, sizeof(*vm));
    vm->chan = chan;
    vm->vm_fd = vm->vcpu_fd = -1;
    vm->kvm_fd = kvm_fd >= 0 ? kvm_fd : open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (vm->kvm_fd < 0)
        return kvm_err(err, "open /dev/kvm");
    ret = ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0);
    if (ret != KVM_API_VERSION) {
        ret = ember_error_set(err, -ENOTSUP, "KVM_GET_API_VERSION: %d, want %d", ret,
                              KVM_API_VERSION);
        goto err_close_kvm;
    }
    vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
    if (vm->vm_fd < 0) {
        ret = kvm_err(err, "KVM_CREATE_VM");
        goto err_close_kvm;
    }
    vm->vcpu_fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, 0);
    if (vm->vcpu_fd < 0) {
        ret = kvm_err(err, "KVM_CREATE_VCPU");
        goto err_close_vm;
    }
    ret = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (ret < (int)sizeof(struct kvm_run)) {
        ret = kvm_err(err, "KVM_GET_VCPU_MMAP_SIZE");
        goto err_close_vcpu;
    }
    vm->run_size = (size_t)ret;
    vm->run = mmap(NULL, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vm->vcpu_fd, 0);
    if (vm->run == MAP_FAILED) {
        vm->run = NULL;
        ret = kvm_err(err, "mmap kvm_run");
        goto err_close_vcpu;
    }
    ret = setup_cpuid(vm, err);
    if (ret < 0)
        goto err_unmap_run;

    vm->has_xsave = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE) > 0;
    vm->has_xcrs = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XCRS) > 0;
    int sync = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_SYNC_REGS);
    /* With sync regs the kernel copies the GPRs into kvm_run on every exit:
     * a hypercall's arguments cost no KVM_GET_REGS. */
    vm->has_sync_regs = sync > 0 && (sync & KVM_SYNC_X86_REGS);
    if (vm->has_sync_regs)
        vm->run->kvm_valid_regs = KVM_SYNC_X86_REGS;
    return 0;

err_unmap_run:
    munmap(vm->run, vm->run_size);
    vm->run = NULL;
err_close_vcpu:
    close(vm->vcpu_fd);
    vm->vcpu_fd = -1;
err_close_vm:
    close(vm->vm_fd);
    vm->vm_fd = -1;
err_close_kvm:
    close(vm->kvm_fd);
    vm->kvm_fd = -1;
    return ret;
}

void vmm_destroy(struct vmm *vm)
{
    if (vm->mem)
        munmap(vm->mem, vm->mem_size);
    if (vm->run)
        munmap(vm->run, vm->run_size);
    free(vm->cpuid);
    if (vm->vcpu_fd >= 0)
        close(vm->vcpu_fd);
    if (vm->vm_fd >= 0)
        close(vm->vm_fd);
    if (vm->kvm_fd >= 0)
        close(vm->kvm_fd);
    memset(vm, 0, sizeof(*vm));
    vm->kvm_fd = vm->vm_fd = vm->vcpu_fd = -1;
}

void *vmm_guest_ptr(const struct vmm *vm, uint64_t gpa, uint64_t len)
{
    /* Below the boot page lie the GDT and page tables: supervisor-only to the
     * guest, so no hypercall may touch them on its behalf either. */
    if (gpa < EMBER_GUEST_BOOT || gpa > vm->mem_size || len > vm->mem_size - gpa)
        return NULL;
    return vm->mem + gpa;
}

static int set_slot(struct vmm *vm, uint8_t *mem, uint64_t size, struct ember_error *err)
{
    struct kvm_userspace_memory_region r = {.slot = 0, .guest_phys_addr = 0};
    if (vm->slot_set) {
        /* a slot's host address cannot change in place: delete, then add */
        r.memory_size = 0;
        if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
            return kvm_err(err, "KVM_SET_USER_MEMORY_REGION (delete)");
        vm->slot_set = false;
    }
    r.memory_size = size;
    r.userspace_addr = (uint64_t)(uintptr_t)mem;
    if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
        return kvm_err(err, "KVM_SET_USER_MEMORY_REGION");
    vm->slot_set = true;
    return 0;
}

int vmm_map_private(struct vmm *vm, int mem_fd, uint64_t mem_size, struct ember_error *err)
{
    /* Lazy and copy-on-write: pages the guest only reads stay in the page
     * cache, shared by every VM restored from this file. */
    uint8_t *mem =
        mmap(NULL, mem_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, mem_fd, 0);
    if (mem == MAP_FAILED)
        return kvm_err(err, "mmap snapshot memory");
    int ret = set_slot(vm, mem, mem_size, err);
    if (ret < 0) {
        munmap(mem, mem_size);
        return ret;
    }
    if (vm->mem)
        munmap(vm->mem, vm->mem_size);
    vm->mem = mem;
    vm->mem_size = mem_size;
    vm->private = true;
    return 0;
}

/* Protection of the image's 4 KiB page at @va: its segment's flags. */
static uint64_t image_page_flags(const uint8_t *elf, uint64_t va, uint64_t nxbit)
{
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)elf;
    uint64_t flags = 0; /* not in any segment: absent */
    for (int i = 0; i < eh->e_phnum; i++) {
        const Elf64_Phdr *ph = (const Elf64_Phdr *)(elf + eh->e_phoff + (size_t)i * sizeof(*ph));
        uint64_t lo = ph->p_vaddr & ~4095ull, hi = (ph->p_vaddr + ph->p_memsz + 4095) & ~4095ull;
        if (ph->p_type != PT_LOAD || va < lo || va >= hi)
            continue;
        /* a page shared by two segments gets the union of their rights */
        flags |= PTE_P | PTE_US;
        if (ph->p_flags & PF_W)
            flags |= PTE_RW;
        if (!(ph->p_flags & PF_X))
            flags |= PTE_NX;
    }
    if ((flags & PTE_NX) && !nxbit)
        flags &= ~PTE_NX;
    return flags;
}

static void build_page_tables(struct vmm *vm, const uint8_t *elf, bool nx)
{
    uint64_t *pt[EMBER_GUEST_PT_PAGES];
    for (int i = 0; i < EMBER_GUEST_PT_PAGES; i++)
        pt[i] = (uint64_t *)(vm->mem + EMBER_GUEST_PT_BASE + (uint64_t)i * 4096);
    uint64_t ptaddr = EMBER_GUEST_PT_BASE;
    uint64_t nxbit = nx ? PTE_NX : 0;
    uint64_t image_top = (vm->layout.image_end + VMM_MEM_ALIGN - 1) & ~(VMM_MEM_ALIGN - 1);
    uint64_t n_gib = (vm->mem_size + (1ull << 30) - 1) >> 30;
    uint64_t n_img = (image_top - EMBER_GUEST_IMAGE_BASE) / VMM_MEM_ALIGN;
    /* 4 KiB pages for the image (text read-only, data no-execute) while
     * page-table pages last; else 2 MiB pages, executable */
    bool fine = PT_PD0 + n_gib + n_img <= EMBER_GUEST_PT_PAGES;

    pt[PT_PML4][0] = (ptaddr + PT_PDPT * 4096) | PTE_P | PTE_RW | PTE_US;
    for (uint64_t g = 0; g < n_gib; g++)
        pt[PT_PDPT][g] = (ptaddr + (PT_PD0 + g) * 4096) | PTE_P | PTE_RW | PTE_US;

    /* [0, 2 MiB): page 0 absent; GDT and page tables supervisor-only; the
     * boot page and env block user-accessible. */
    for (uint64_t a = 4096; a < VMM_MEM_ALIGN; a += 4096) {
        uint64_t e = a | PTE_P | PTE_RW | nxbit;
        if (a >= EMBER_GUEST_BOOT)
            e |= PTE_US;
        pt[PT_LOW][a >> 12] = e;
    }
    /* [2 MiB, 4 MiB): the stack, over one absent guard page. */
    for (uint64_t a = EMBER_GUEST_STACK_GUARD + 4096; a < EMBER_GUEST_STACK_TOP; a += 4096)
        pt[PT_STACK][(a >> 12) & 511] = a | PTE_P | PTE_RW | PTE_US | nxbit;

    uint64_t *pd0 = pt[PT_PD0];
    pd0[0] = (ptaddr + PT_LOW * 4096) | PTE_P | PTE_RW | PTE_US;
    pd0[1] = (ptaddr + PT_STACK * 4096) | PTE_P | PTE_RW | PTE_US;
    uint64_t next_pt = PT_PD0 + n_gib;
    for (uint64_t a = EMBER_GUEST_IMAGE_BASE; a < vm->mem_size; a += VMM_MEM_ALIGN) {
        uint64_t *pde = &pt[PT_PD0 + (a >> 30)][(a >> 21) & 511];
        if (a < image_top && fine) {
            uint64_t *ptp = pt[next_pt];
            *pde = (ptaddr + next_pt * 4096) | PTE_P | PTE_RW | PTE_US;
            next_pt++;
            for (uint64_t v = a; v < a + VMM_MEM_ALIGN; v += 4096) {
                uint64_t f = image_page_flags(elf, v, nxbit);
                ptp[(v >> 12) & 511] = f ? v | f : 0;
            }
        } else {
            /* the heap and request area: no-execute */
            *pde = a | PTE_P | PTE_RW | PTE_US | PTE_PS | (a >= image_top ? nxbit : 0);
        }
    }
}

static void build_gdt(struct vmm *vm)
{
    uint64_t *gdt = (uint64_t *)(vm->mem + EMBER_GUEST_GDT);
    gdt[0] = 0;
    gdt[1] = 0x00209a0000000000ull; /* 0x08 kernel code, 64-bit (unused) */
    gdt[2] = 0x0000920000000000ull; /* 0x10 kernel data (unused) */
    gdt[3] = 0x00cff2000000ffffull; /* 0x18 user data, DPL 3 */
    gdt[4] = 0x0020fa0000000000ull; /* 0x20 user code, 64-bit, DPL 3 */
    uint64_t base = EMBER_GUEST_GDT + TSS_OFFSET, limit = 0x67;
    gdt[5] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x8bull << 40) |
             (((base >> 24) & 0xff) << 56); /* 0x28 64-bit TSS, busy */
    gdt[6] = base >> 32;
}

static void set_seg(struct kvm_segment *s, uint16_t sel, uint8_t type, bool code)
{
    memset(s, 0, sizeof(*s));
    s->base = 0;
    s->limit = 0xffffffff;
    s->selector = sel;
    s->type = type;
    s->present = 1;
    s->dpl = 3;
    s->s = 1;
    s->g = 1;
    s->l = code ? 1 : 0;
    s->db = code ? 0 : 1;
}

static int setup_cpu(struct vmm *vm, uint64_t entry, bool nx, struct ember_error *err)
{
    struct kvm_sregs sregs;
    if (ioctl(vm->vcpu_fd, KVM_GET_SREGS, &sregs) < 0)
        return kvm_err(err, "KVM_GET_SREGS");
    set_seg(&sregs.cs, SEL_USER_CODE, 0xb, true);
    set_seg(&sregs.ds, SEL_USER_DATA, 0x3, false);
    sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
    memset(&sregs.tr, 0, sizeof(sregs.tr));
    sregs.tr.base = EMBER_GUEST_GDT + TSS_OFFSET;
    sregs.tr.limit = 0x67;
    sregs.tr.selector = SEL_TSS;
    sregs.tr.type = 0xb;
    sregs.tr.present = 1;
    memset(&sregs.ldt, 0, sizeof(sregs.ldt));
    sregs.ldt.type = 2;
    sregs.ldt.unusable = 1;
    sregs.gdt.base = EMBER_GUEST_GDT;
    sregs.gdt.limit = 7 * 8 - 1;
    sregs.idt.base = 0;
    sregs.idt.limit = 0; /* no handlers: any exception ends in a triple fault */
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    sregs.cr3 = EMBER_GUEST_PT_BASE;
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    sregs.efer = EFER_LME | EFER_LMA | (nx ? EFER_NXE : 0);
    memset(sregs.interrupt_bitmap, 0, sizeof(sregs.interrupt_bitmap));
    if (ioctl(vm->vcpu_fd, KVM_SET_SREGS, &sregs) < 0)
        return kvm_err(err, "KVM_SET_SREGS");

    struct kvm_fpu fpu = {.fcw = 0x37f, .mxcsr = 0x1f80};
    if (ioctl(vm->vcpu_fd, KVM_SET_FPU, &fpu) < 0)
        return kvm_err(err, "KVM_SET_FPU");

    struct kvm_regs regs = {
        .rip = entry,
        .rsp = EMBER_GUEST_STACK_TOP,
        .rflags = RFLAGS_RESERVED | RFLAGS_IOPL3,
    };
    if (ioctl(vm->vcpu_fd, KVM_SET_REGS, &regs) < 0)
        return kvm_err(err, "KVM_SET_REGS");
    return 0;
}

int vmm_reseed(struct vmm *vm, struct ember_error *err)
{
    struct ember_boot *boot = (struct ember_boot *)(vm->mem + EMBER_GUEST_BOOT);
    uint8_t seed[sizeof(boot->seed)];
    uint64_t gen;
    if (getrandom(seed, sizeof(seed), 0) != (ssize_t)sizeof(seed) ||
        getrandom(&gen, sizeof(gen), 0) != (ssize_t)sizeof(gen))
        return ember_error_sys(err, -EIO, "getrandom");
    if (gen == boot->seed_gen)
        gen++;
    memcpy(boot->seed, seed, sizeof(seed));
    boot->seed_gen = gen;
    return 0;
}

int vmm_boot(struct vmm *vm, const uint8_t *elf, size_t elf_len, uint64_t mem_size, const char *env,
             size_t env_len, uint32_t n_env, struct ember_error *err)
{
    uint64_t image_end, entry;
    int ret;

    if (mem_size < 16ull << 20 || mem_size > VMM_MEM_MAX || mem_size % VMM_MEM_ALIGN)
        return ember_error_set(err, -EINVAL,
                               "memory size %llu: not a multiple of 2 MiB "
                               "between 16 MiB and %llu GiB",
                               (unsigned long long)mem_size,
                               (unsigned long long)(VMM_MEM_MAX >> 30));
    if (env_len > EMBER_GUEST_ENV_MAX)
        return ember_error_set(err, -E2BIG, "environment: %zu bytes, at most %llu", env_len,
                               (unsigned long long)EMBER_GUEST_ENV_MAX);
    uint64_t req_cap = mem_size / 4 < EMBER_GUEST_REQ_MAX ? mem_size / 4 : EMBER_GUEST_REQ_MAX;
    uint64_t req_base = mem_size - req_cap;
    ret = vmm_elf_check(elf, elf_len, (req_base - EMBER_GUEST_HEAP_MIN) & ~(VMM_MEM_ALIGN - 1),
                        &image_end, &entry, err);
    if (ret < 0)
        return ret;

    cleanup_close int fd = memfd_create("ember-guest", MFD_CLOEXEC);
    if (fd < 0)
        return kvm_err(err, "memfd_create");
    if (ftruncate(fd, (off_t)mem_size) < 0)
        return kvm_err(err, "ftruncate guest memory");
    uint8_t *mem = mmap(NULL, mem_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
    if (mem == MAP_FAILED)
        return kvm_err(err, "mmap guest memory");
    if (vm->mem)
        munmap(vm->mem, vm->mem_size);
    vm->mem = mem;
    vm->mem_size = mem_size;
    vm->private = false;

    vm->layout = (struct vmm_layout){
        .mem_size = mem_size,
        .image_end = image_end,
        /* the heap starts on the next 2 MiB page: no-execute */
        .heap_start = (image_end + VMM_MEM_ALIGN - 1) & ~(VMM_MEM_ALIGN - 1),
        .heap_end = req_base,
        .req_base = req_base,
        .req_cap = req_cap,
    };
    bool nx = cpuid_leaf_reg(vm->cpuid, 0x80000001, 3) & (1u << 20);
    build_page_tables(vm, elf, nx);
    build_gdt(vm);
    vmm_elf_load(elf, mem);
    memcpy(mem + EMBER_GUEST_ENV, env, env_len);

    struct ember_boot *boot = (struct ember_boot *)(mem + EMBER_GUEST_BOOT);
    *boot = (struct ember_boot){
        .magic = EMBER_BOOT_MAGIC,
        .abi_version = EMBER_GUEST_ABI_VERSION,
        .n_env = n_env,
        .mem_size = mem_size,
        .heap_start = vm->layout.heap_start,
        .heap_end = vm->layout.heap_end,
        .req_base = req_base,
        .req_cap = req_cap,
        .env = EMBER_GUEST_ENV,
        .env_len = env_len,
    };
    ret = vmm_reseed(vm, err);
    if (ret < 0)
        return ret;
    ret = set_slot(vm, mem, mem_size, err);
    if (ret < 0)
        return ret;
    return setup_cpu(vm, entry, nx, err);
}

int vmm_flush_io(struct vmm *vm, struct ember_error *err)
{
    /* A guest's `in` completes (eax written, rip advanced) only on the next
     * KVM_RUN; with immediate_exit that run returns EINTR before entering the
     * guest, so the saved registers are past the hypercall. */
    vm->run->immediate_exit = 1;
    int r = ioctl(vm->vcpu_fd, KVM_RUN, 0);
    int e = errno;
    vm->run->immediate_exit = vmm_stop_requested ? 1 : 0;
    if (r == 0 || e != EINTR)
        return ember_error_sys(err, r == 0 ? -EIO : -e, "KVM_RUN (immediate_exit)");
    return 0;
}

int vmm_cpu_save(struct vmm *vm, struct vmm_cpu *cpu, struct ember_error *err)
{
    memset(cpu, 0, sizeof(*cpu));
    if (ioctl(vm->vcpu_fd, KVM_GET_REGS, &cpu->regs) < 0)
        return kvm_err(err, "KVM_GET_REGS");
    if (ioctl(vm->vcpu_fd, KVM_GET_SREGS, &cpu->sregs) < 0)
        return kvm_err(err, "KVM_GET_SREGS");
    if (vm->has_xsave) {
        if (ioctl(vm->vcpu_fd, KVM_GET_XSAVE, &cpu->xsave) < 0)
            return kvm_err(err, "KVM_GET_XSAVE");
        cpu->has_xsave = 1;
    } else if (ioctl(vm->vcpu_fd, KVM_GET_FPU, &cpu->fpu) < 0) {
        return kvm_err(err, "KVM_GET_FPU");
    }
    if (vm->has_xcrs) {
        if (ioctl(vm->vcpu_fd, KVM_GET_XCRS, &cpu->xcrs) < 0)
            return kvm_err(err, "KVM_GET_XCRS");
        cpu->has_xcrs = 1;
    }
    return 0;
}

int vmm_cpu_load(struct vmm *vm, const struct vmm_cpu *cpu, struct ember_error *err)
{
    if (ioctl(vm->vcpu_fd, KVM_SET_SREGS, &cpu->sregs) < 0)
        return kvm_err(err, "KVM_SET_SREGS");
    if (cpu->has_xcrs && vm->has_xcrs && ioctl(vm->vcpu_fd, KVM_SET_XCRS, &cpu->xcrs) < 0)
        return kvm_err(err, "KVM_SET_XCRS");
    if (cpu->has_xsave) {
        if (!vm->has_xsave)
            return ember_error_set(err, -ENOTSUP, "snapshot has XSAVE state, host has none");
        if (ioctl(vm->vcpu_fd, KVM_SET_XSAVE, &cpu->xsave) < 0)
            return kvm_err(err, "KVM_SET_XSAVE");
    } else if (ioctl(vm->vcpu_fd, KVM_SET_FPU, &cpu->fpu) < 0) {
        return kvm_err(err, "KVM_SET_FPU");
    }
    if (ioctl(vm->vcpu_fd, KVM_SET_REGS, &cpu->regs) < 0)
        return kvm_err(err, "KVM_SET_REGS");
    return 0;
}

int vmm_reset(struct vmm *vm, struct ember_error *err)
{
    if (!vm->private)
        return ember_error_set(err, -ENOTSUP, "reset: guest memory is not a snapshot mapping");
    int ret = vmm_flush_io(vm, err);
    if (ret < 0)
        return ret;
    /* Dirtied pages go; the next touch reads the snapshot file again. */
    if (madvise(vm->mem, vm->mem_size, MADV_DONTNEED) < 0)
        return kvm_err(err, "madvise MADV_DONTNEED");
    ret = vmm_cpu_load(vm, &vm->snap, err);
    if (ret < 0)
        return ret;
    return vmm_reseed(vm, err);
}

/* ---- the run loop ---- */

static int crash(struct ember_error *err, enum vmm_stop *stop, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int crash(struct ember_error *err, enum vmm_stop *stop, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err) {
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        err->code = -EFAULT;
    }
    va_end(ap);
    *stop = VMM_STOP_CRASH;
    return 0;
}

static const struct kvm_regs *exit_regs(struct vmm *vm, struct kvm_regs *buf)
{
    if (vm->has_sync_regs)
        return &vm->run->s.regs.regs;
    if (ioctl(vm->vcpu_fd, KVM_GET_REGS, buf) < 0)
        memset(buf, 0, sizeof(*buf));
    return buf;
}

static int send_log(struct vmm *vm, uint32_t stream, const void *p, size_t len)
{
    struct proto_buf b;
    proto_buf_init(&b);
    int ret = proto_buf_begin(&b, PROTO_LOG, vm->call_id);
    if (ret == 0)
        ret = proto_put_u32(&b, stream);
    if (ret == 0)
        ret = proto_put_raw(&b, p, len);
    if (ret == 0)
        ret = proto_buf_finish(&b);
    if (ret == 0)
        ret = proto_send_frame(vm->chan, &b, NULL, 0);
    proto_buf_free(&b);
    return ret;
}

/* Serve one `in` exit. Returns 1 to keep running, 0 with *stop set to hand
 * the stop to the caller, or -errno for a host-side failure. */
static int hypercall(struct vmm *vm, enum vmm_stop *stop, uint64_t *arg, struct ember_error *err)
{
    struct kvm_run *run = vm->run;
    struct kvm_regs buf;

    if (run->io.direction != KVM_EXIT_IO_IN || run->io.size != 4 || run->io.count != 1 ||
        run->io.port < EMBER_HC_WAIT || run->io.port > EMBER_HC_ABORT) {
        const struct kvm_regs *r = exit_regs(vm, &buf);
        return crash(err, stop,
                     "port I/O the monitor does not serve: %s%s port %#x, %u x %u bytes "
                     "(rip %#llx)",
                     run->io.direction == KVM_EXIT_IO_IN ? "in" : "out",
                     run->io.count > 1 ? "s" : "", run->io.port, run->io.count, run->io.size,
                     (unsigned long long)r->rip);
    }
    const struct kvm_regs *r = exit_regs(vm, &buf);
    uint32_t *result = (uint32_t *)((uint8_t *)run + run->io.data_offset);
    *result = 0;
    vm->hypercalls++;

    switch (run->io.port) {
    case EMBER_HC_WAIT:
        *stop = VMM_STOP_WAIT;
        return 0;
    case EMBER_HC_RESPOND:
        *stop = VMM_STOP_RESPOND;
        *arg = r->rdi;
        return 0;
    case EMBER_HC_LOG: {
        uint64_t len = r->rdx;
        if (len > PROTO_LOG_LINE_MAX)
            len = PROTO_LOG_LINE_MAX;
        const void *p = vmm_guest_ptr(vm, r->rsi, len);
        if (!p)
            return crash(err, stop, "log hypercall: bad buffer %#llx+%llu",
                         (unsigned long long)r->rsi, (unsigned long long)r->rdx);
        int ret = send_log(vm, r->rdi == 1 ? 1 : 2, p, len);
        if (ret < 0)
            return ember_error_sys(err, ret, "send PROTO_LOG");
        return 1;
    }
    case EMBER_HC_CLOCK: {
        uint64_t *out = vmm_guest_ptr(vm, r->rsi, sizeof(uint64_t));
        if (!out || r->rdi > EMBER_CLOCK_MONOTONIC)
            return crash(err, stop, "clock hypercall: bad clock %llu or pointer %#llx",
                         (unsigned long long)r->rdi, (unsigned long long)r->rsi);
        struct timespec ts;
        clock_gettime(r->rdi == EMBER_CLOCK_REALTIME ? CLOCK_REALTIME : CLOCK_MONOTONIC, &ts);
        uint64_t ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
        memcpy(out, &ns, sizeof(ns));
        return 1;
    }
    case EMBER_HC_RANDOM: {
        uint8_t *p = r->rsi <= EMBER_RANDOM_MAX ? vmm_guest_ptr(vm, r->rdi, r->rsi) : NULL;
        if (!p)
            return crash(err, stop, "random hypercall: bad buffer %#llx+%llu",
                         (unsigned long long)r->rdi, (unsigned long long)r->rsi);
        for (uint64_t done = 0; done < r->rsi;) {
            ssize_t n = getrandom(p + done, r->rsi - done, 0);
            if (n < 0 && errno != EINTR)
                return ember_error_sys(err, -errno, "getrandom");
            if (n > 0)
                done += (uint64_t)n;
        }
        return 1;
    }
    case EMBER_HC_ABORT: {
        uint64_t len = r->rsi < 400 ? r->rsi : 400;
        const char *p = vmm_guest_ptr(vm, r->rdi, len);
        if (!p)
            return crash(err, stop, "abort hypercall with a bad message pointer %#llx",
                         (unsigned long long)r->rdi);
        if (err) {
            int n = snprintf(err->msg, sizeof(err->msg), "guest abort: ");
            for (uint64_t i = 0; i < len && n < (int)sizeof(err->msg) - 1; i++)
                err->msg[n++] = (p[i] >= 0x20 && p[i] < 0x7f) ? p[i] : '?';
            err->msg[n] = 0;
            err->code = -ECANCELED;
        }
        *stop = VMM_STOP_ABORT;
        return 0;
    }
    }
    return crash(err, stop, "unreachable hypercall");
}

int vmm_run(struct vmm *vm, enum vmm_stop *stop, uint64_t *arg, struct ember_error *err)
{
    struct kvm_run *run = vm->run;
    struct kvm_regs buf;

    *arg = 0;
    for (;;) {
        if (vmm_stop_requested) {
            *stop = VMM_STOP_SIGNAL;
            return 0;
        }
        if (ioctl(vm->vcpu_fd, KVM_RUN, 0) < 0) {
            int e = errno;
            if (e == EINTR || e == EAGAIN)
                continue;
            if (e == EFAULT)
                return crash(err, stop, "KVM_RUN: guest memory fault (%s)", strerror(e));
            return ember_error_sys(err, -e, "KVM_RUN");
        }
        switch (run->exit_reason) {
        case KVM_EXIT_IO: {
            int r = hypercall(vm, stop, arg, err);
            if (r <= 0)
                return r;
            continue;
        }
        case KVM_EXIT_SHUTDOWN:
            return crash(err, stop,
                         "guest fault: triple fault (an exception at rip %#llx, "
                         "rsp %#llx has no handler)",
                         (unsigned long long)exit_regs(vm, &buf)->rip,
                         (unsigned long long)exit_regs(vm, &buf)->rsp);
        case KVM_EXIT_MMIO:
            return crash(err, stop,
                         "guest fault: %s of %u bytes at %#llx, outside guest memory "
                         "(rip %#llx)",
                         run->mmio.is_write ? "write" : "read", run->mmio.len,
                         (unsigned long long)run->mmio.phys_addr,
                         (unsigned long long)exit_regs(vm, &buf)->rip);
        case KVM_EXIT_HLT:
            return crash(err, stop, "guest executed hlt (rip %#llx)",
                         (unsigned long long)exit_regs(vm, &buf)->rip);
        case KVM_EXIT_FAIL_ENTRY:
            return crash(err, stop, "VM entry failed (hardware reason %#llx)",
                         (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
        case KVM_EXIT_INTERNAL_ERROR:
            return crash(err, stop, "KVM internal error, suberror %u (rip %#llx)",
                         run->internal.suberror, (unsigned long long)exit_regs(vm, &buf)->rip);
        case KVM_EXIT_INTR:
            continue;
        default:
            return crash(err, stop, "unexpected VM exit %u (rip %#llx)", run->exit_reason,
                         (unsigned long long)exit_regs(vm, &buf)->rip);
        }
    }
}
