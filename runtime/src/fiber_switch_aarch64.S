/*
 * The fiber switch for aarch64 (AAPCS64): x19-x28, the frame pointer and
 * link register, d8-d15 and FPCR, nothing else.  No system call.
 *
 *   void eddy__fiber_jump(void **save, void *to)
 *
 * A fresh stack is laid out by fiber.c as if suspended here, with x29 = 0
 * (ends frame walks) and x30 = eddy__fiber_start.
 */
#if defined(__aarch64__) && !defined(EDDY_FIBER_UCONTEXT_ONLY)
    .text
    .globl  eddy__fiber_jump
    .hidden eddy__fiber_jump
    .type   eddy__fiber_jump,%function
    .p2align 4
eddy__fiber_jump:
    .cfi_startproc
    sub     sp, sp, #176
    stp     x19, x20, [sp, #0]
    stp     x21, x22, [sp, #16]
    stp     x23, x24, [sp, #32]
    stp     x25, x26, [sp, #48]
    stp     x27, x28, [sp, #64]
    stp     x29, x30, [sp, #80]
    stp     d8,  d9,  [sp, #96]
    stp     d10, d11, [sp, #112]
    stp     d12, d13, [sp, #128]
    stp     d14, d15, [sp, #144]
    mrs     x9, fpcr
    str     x9, [sp, #160]
    mov     x9, sp
    str     x9, [x0]
    mov     sp, x1
    ldp     x19, x20, [sp, #0]
    ldp     x21, x22, [sp, #16]
    ldp     x23, x24, [sp, #32]
    ldp     x25, x26, [sp, #48]
    ldp     x27, x28, [sp, #64]
    ldp     x29, x30, [sp, #80]
    ldp     d8,  d9,  [sp, #96]
    ldp     d10, d11, [sp, #112]
    ldp     d12, d13, [sp, #128]
    ldp     d14, d15, [sp, #144]
    ldr     x9, [sp, #160]
    msr     fpcr, x9
    add     sp, sp, #176
    ret
    .cfi_endproc
    .size   eddy__fiber_jump,.-eddy__fiber_jump

    .globl  eddy__fiber_start
    .hidden eddy__fiber_start
    .type   eddy__fiber_start,%function
    .p2align 4
eddy__fiber_start:
    .cfi_startproc
    .cfi_undefined x30          /* the outermost frame of a fiber */
    mov     x29, #0
    bl      eddy__fiber_main
    brk     #0
    .cfi_endproc
    .size   eddy__fiber_start,.-eddy__fiber_start
#endif
    .section .note.GNU-stack,"",%progbits
