/*
 * The fiber switch for x86-64 (System V): what a call must preserve, and
 * nothing else — rbx, rbp, r12-r15, the MXCSR control bits and the x87
 * control word.  No system call (swapcontext makes one per switch to save
 * the signal mask; fibers share their thread's).
 *
 *   void eddy__fiber_jump(void **save, void *to)
 *
 * A fresh stack is laid out by fiber.c as if suspended here: control
 * words, six zeroed registers (rbp = 0 ends frame-pointer walks), and
 * eddy__fiber_start as the return address.
 */
#if defined(__x86_64__) && !defined(EDDY_FIBER_UCONTEXT_ONLY)
    .text
    .globl  eddy__fiber_jump
    .hidden eddy__fiber_jump
    .type   eddy__fiber_jump,@function
    .p2align 4
eddy__fiber_jump:
    .cfi_startproc
    pushq   %rbp
    pushq   %rbx
    pushq   %r12
    pushq   %r13
    pushq   %r14
    pushq   %r15
    subq    $8, %rsp
    stmxcsr (%rsp)
    fnstcw  4(%rsp)
    movq    %rsp, (%rdi)
    movq    %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw   4(%rsp)
    addq    $8, %rsp
    popq    %r15
    popq    %r14
    popq    %r13
    popq    %r12
    popq    %rbx
    popq    %rbp
    ret
    .cfi_endproc
    .size   eddy__fiber_jump,.-eddy__fiber_jump

    .globl  eddy__fiber_start
    .hidden eddy__fiber_start
    .type   eddy__fiber_start,@function
    .p2align 4
eddy__fiber_start:
    .cfi_startproc
    .cfi_undefined rip          /* the outermost frame of a fiber */
    xorl    %ebp, %ebp
    call    eddy__fiber_main
    ud2
    .cfi_endproc
    .size   eddy__fiber_start,.-eddy__fiber_start
#endif
    .section .note.GNU-stack,"",@progbits
