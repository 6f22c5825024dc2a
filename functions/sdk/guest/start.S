/* start.S - entry point of a microVM guest image.
 *
 * The monitor enters here at CPL 3 with rsp at the top of the guest stack
 * (EMBER_GUEST_STACK_TOP) and every other register zero. */
    .section .text.start, "ax", @progbits
    .globl _start
    .type _start, @function
_start:
    xorl %ebp, %ebp
    andq $-16, %rsp
    call ember__guest_main
    ud2 /* not reached: ember__guest_main never returns */
    .size _start, . - _start

/* The note the package check and the monitor look for: owner "ember",
 * type "EMBR", descriptor = the guest ABI version (ember_guest_abi.h). */
    .section .note.ember, "a", @note
    .balign 4
    .long 6          /* namesz: "ember\0" */
    .long 4          /* descsz */
    .long 0x454d4252 /* EMBER_NOTE_TYPE */
    .asciz "ember"
    .balign 4
    .long 1          /* EMBER_GUEST_ABI_VERSION */
    .balign 4

    .section .note.GNU-stack, "", @progbits
