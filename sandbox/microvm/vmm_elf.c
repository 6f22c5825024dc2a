/* vmm_elf.c - check and load a guest image. The image comes from an
 * uploaded package: every field is checked before it is used. */
#include "sandbox/microvm/vmm.h"

#include <elf.h>
#include <errno.h>
#include <string.h>

static const Elf64_Phdr *phdr_at(const uint8_t *elf, const Elf64_Ehdr *eh, int i)
{
    return (const Elf64_Phdr *)(elf + eh->e_phoff + (size_t)i * eh->e_phentsize);
}

/* The ".note.ember" note in a PT_NOTE segment: its ABI version or -1. */
static int64_t note_abi(const uint8_t *elf, size_t len, const Elf64_Phdr *ph)
{
    uint64_t off = ph->p_offset, end = ph->p_offset + ph->p_filesz;
    if (end < off || end > len)
        return -1;
    while (off + 12 <= end) {
        uint32_t namesz, descsz, type;
        memcpy(&namesz, elf + off, 4);
        memcpy(&descsz, elf + off + 4, 4);
        memcpy(&type, elf + off + 8, 4);
        uint64_t name = off + 12, desc = name + ((namesz + 3ull) & ~3ull);
        uint64_t next = desc + ((descsz + 3ull) & ~3ull);
        if (next > end)
            return -1;
        if (type == EMBER_NOTE_TYPE && namesz == sizeof(EMBER_NOTE_OWNER) &&
            memcmp(elf + name, EMBER_NOTE_OWNER, sizeof(EMBER_NOTE_OWNER)) == 0 && descsz >= 4) {
            uint32_t v;
            memcpy(&v, elf + desc, 4);
            return v;
        }
        off = next;
    }
    return -1;
}

int vmm_elf_check(const uint8_t *elf, size_t len, uint64_t mem_limit, uint64_t *image_end,
                  uint64_t *entry, struct ember_error *err)
{
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)elf;
    if (len < sizeof(*eh) || memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0)
        return ember_error_set(err, -ENOEXEC, "guest image: not an ELF file");
    if (eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_ident[EI_DATA] != ELFDATA2LSB ||
        eh->e_machine != EM_X86_64)
        return ember_error_set(err, -ENOEXEC, "guest image: not ELF64 x86-64");
    if (eh->e_type != ET_EXEC)
        return ember_error_set(err, -ENOEXEC, "guest image: not a static executable (ET_EXEC)");
    if (eh->e_phentsize != sizeof(Elf64_Phdr) || eh->e_phnum == 0 || eh->e_phnum > 64 ||
        eh->e_phoff > len || (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr) > len - eh->e_phoff)
        return ember_error_set(err, -ENOEXEC, "guest image: bad program headers");

    uint64_t end = EMBER_GUEST_IMAGE_BASE;
    bool entry_ok = false;
    int64_t abi = -1;
    int n_load = 0;
    for (int i = 0; i < eh->e_phnum; i++) {
        const Elf64_Phdr *ph = phdr_at(elf, eh, i);
        if (ph->p_type == PT_INTERP || ph->p_type == PT_DYNAMIC)
            return ember_error_set(err, -ENOEXEC, "guest image: dynamically linked");
        if (ph->p_type == PT_NOTE && abi < 0)
            abi = note_abi(elf, len, ph);
        if (ph->p_type != PT_LOAD)
            continue;
        n_load++;
        uint64_t va = ph->p_vaddr, vend = ph->p_vaddr + ph->p_memsz;
        if (ph->p_filesz > ph->p_memsz || vend < va || ph->p_offset > len ||
            ph->p_filesz > len - ph->p_offset)
            return ember_error_set(err, -ENOEXEC, "guest image: segment %d out of the file", i);
        if (va < EMBER_GUEST_IMAGE_BASE || vend > mem_limit)
            return ember_error_set(err, -ENOEXEC,
                                   "guest image: segment %d at %#llx-%#llx is "
                                   "outside %#llx-%#llx (link with the SDK's guest.ld, or give "
                                   "the function more memory)",
                                   i, (unsigned long long)va, (unsigned long long)vend,
                                   (unsigned long long)EMBER_GUEST_IMAGE_BASE,
                                   (unsigned long long)mem_limit);
        if (vend > end)
            end = vend;
        if (eh->e_entry >= va && eh->e_entry < vend && (ph->p_flags & PF_X))
            entry_ok = true;
    }
    if (n_load == 0 || !entry_ok)
        return ember_error_set(err, -ENOEXEC,
                               "guest image: entry point %#llx not in a loaded "
                               "executable segment",
                               (unsigned long long)eh->e_entry);
    if (abi < 0)
        return ember_error_set(err, -ENOEXEC,
                               "guest image: no .note.ember (not built with the "
                               "ember guest SDK)");
    if (abi != EMBER_GUEST_ABI_VERSION)
        return ember_error_set(err, -ENOEXEC,
                               "guest image: guest ABI %lld, this monitor "
                               "speaks %d",
                               (long long)abi, EMBER_GUEST_ABI_VERSION);
    *image_end = (end + 4095) & ~4095ull;
    *entry = eh->e_entry;
    return 0;
}

void vmm_elf_load(const uint8_t *elf, uint8_t *mem)
{
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)elf;
    for (int i = 0; i < eh->e_phnum; i++) {
        const Elf64_Phdr *ph = phdr_at(elf, eh, i);
        if (ph->p_type != PT_LOAD)
            continue;
        /* later segments win where two overlap; the tail past filesz is
         * bss, already zero in fresh memory unless overlapped */
        memcpy(mem + ph->p_vaddr, elf + ph->p_offset, ph->p_filesz);
        memset(mem + ph->p_vaddr + ph->p_filesz, 0, ph->p_memsz - ph->p_filesz);
    }
}
