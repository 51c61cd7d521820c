//! `memcpy` and `memmove` of the static x86_64 musl binary (`scripts/image`, what Dapr's Helm
//! chart runs). musl's own copy byte by byte up to an 8-byte boundary, then `rep movsq`, then byte
//! by byte again: a start-up cost of tens of cycles on every copy, and the server's copies are
//! short ones (TLS records, HTTP/2 frames, protobuf and DER fields). In the image musl's `memcpy`
//! was 5-7 % of the server's CPU where glibc's build spends 2-3 % (docs/PERFORMANCE.md,
//! *The image's memory copies*). These take their place: up to 128 bytes with at most eight
//! unaligned 16-byte loads followed by the same stores (no loop, overlap-safe), longer ones in
//! 64-byte blocks, the last 64 bytes (copying backwards, the first) loaded before the loop and
//! stored after it. No `rep movsb`: it is slow on processors without ERMS and, on some with it,
//! to a destination that is not aligned.
//!
//! Owns only these two routines, written in assembly so that no compiler can turn them into calls
//! to themselves. They are assembled in every x86_64 test build under the names `sentry_memcpy`
//! and `sentry_memmove` (the tests below check them against the C library's), and also bear the
//! C library's names only in the musl build, where the static link takes them before libc.a's.

use core::arch::global_asm;

// System V x86_64: rdi = destination, rsi = source, rdx = length; the destination is returned in
// rax; rcx, r8-r10 and xmm0-xmm7 are the caller's to lose.
global_asm!(
    ".pushsection .text.sentry_mem_copy,\"ax\",@progbits",
    // One 64-byte block from [rsi] to [rdi], read whole before it is written.
    ".macro sentry_copy_64",
    "    movups xmm0, xmmword ptr [rsi]",
    "    movups xmm1, xmmword ptr [rsi + 16]",
    "    movups xmm2, xmmword ptr [rsi + 32]",
    "    movups xmm3, xmmword ptr [rsi + 48]",
    "    movups xmmword ptr [rdi], xmm0",
    "    movups xmmword ptr [rdi + 16], xmm1",
    "    movups xmmword ptr [rdi + 32], xmm2",
    "    movups xmmword ptr [rdi + 48], xmm3",
    ".endm",
    ".p2align 4",
    ".globl sentry_memmove",
    ".hidden sentry_memmove",
    ".type sentry_memmove,@function",
    "sentry_memmove:",
    "    mov rax, rdi",
    "    cmp rdx, 128",
    "    jbe .Lsentry_copy_short",
    // dst - src >= len (unsigned): the destination starts before the source or after its end,
    // so a forward copy never overwrites a byte before reading it.
    "    mov rcx, rdi",
    "    sub rcx, rsi",
    "    cmp rcx, rdx",
    "    jae .Lsentry_copy_long",
    // The destination starts inside the source: backwards, 64 bytes at a time from the end; the
    // first 64 bytes are read before any is written and stored last.
    "    movups xmm4, xmmword ptr [rsi]",
    "    movups xmm5, xmmword ptr [rsi + 16]",
    "    movups xmm6, xmmword ptr [rsi + 32]",
    "    movups xmm7, xmmword ptr [rsi + 48]",
    "    mov r8, rdi",
    "    lea rsi, [rsi + rdx - 64]",
    "    lea rdi, [rdi + rdx - 64]",
    "    lea rcx, [rdx - 64]",
    ".Lsentry_move_back_block:",
    "    sentry_copy_64",
    "    sub rsi, 64",
    "    sub rdi, 64",
    "    sub rcx, 64",
    "    ja .Lsentry_move_back_block",
    "    movups xmmword ptr [r8], xmm4",
    "    movups xmmword ptr [r8 + 16], xmm5",
    "    movups xmmword ptr [r8 + 32], xmm6",
    "    movups xmmword ptr [r8 + 48], xmm7",
    "    ret",
    ".size sentry_memmove, . - sentry_memmove",
    ".p2align 4",
    ".globl sentry_memcpy",
    ".hidden sentry_memcpy",
    ".type sentry_memcpy,@function",
    "sentry_memcpy:",
    "    mov rax, rdi",
    "    cmp rdx, 128",
    "    ja .Lsentry_copy_long",
    // Up to 128 bytes: every load before the first store, so the same code serves memmove.
    ".Lsentry_copy_short:",
    "    cmp rdx, 16",
    "    ja .Lsentry_copy_17_128",
    "    cmp rdx, 8",
    "    jb .Lsentry_copy_0_7",
    "    mov rcx, qword ptr [rsi]",
    "    mov r8, qword ptr [rsi + rdx - 8]",
    "    mov qword ptr [rdi], rcx",
    "    mov qword ptr [rdi + rdx - 8], r8",
    "    ret",
    ".Lsentry_copy_0_7:",
    "    cmp rdx, 4",
    "    jb .Lsentry_copy_0_3",
    "    mov ecx, dword ptr [rsi]",
    "    mov r8d, dword ptr [rsi + rdx - 4]",
    "    mov dword ptr [rdi], ecx",
    "    mov dword ptr [rdi + rdx - 4], r8d",
    "    ret",
    // 1-3 bytes: the first, the last and the middle one (some of them the same byte).
    ".Lsentry_copy_0_3:",
    "    test rdx, rdx",
    "    jz .Lsentry_copy_done",
    "    movzx ecx, byte ptr [rsi]",
    "    movzx r8d, byte ptr [rsi + rdx - 1]",
    "    mov r9, rdx",
    "    shr r9, 1",
    "    movzx r10d, byte ptr [rsi + r9]",
    "    mov byte ptr [rdi], cl",
    "    mov byte ptr [rdi + rdx - 1], r8b",
    "    mov byte ptr [rdi + r9], r10b",
    ".Lsentry_copy_done:",
    "    ret",
    ".Lsentry_copy_17_128:",
    "    cmp rdx, 32",
    "    ja .Lsentry_copy_33_128",
    "    movups xmm0, xmmword ptr [rsi]",
    "    movups xmm1, xmmword ptr [rsi + rdx - 16]",
    "    movups xmmword ptr [rdi], xmm0",
    "    movups xmmword ptr [rdi + rdx - 16], xmm1",
    "    ret",
    ".Lsentry_copy_33_128:",
    "    cmp rdx, 64",
    "    ja .Lsentry_copy_65_128",
    "    movups xmm0, xmmword ptr [rsi]",
    "    movups xmm1, xmmword ptr [rsi + 16]",
    "    movups xmm2, xmmword ptr [rsi + rdx - 32]",
    "    movups xmm3, xmmword ptr [rsi + rdx - 16]",
    "    movups xmmword ptr [rdi], xmm0",
    "    movups xmmword ptr [rdi + 16], xmm1",
    "    movups xmmword ptr [rdi + rdx - 32], xmm2",
    "    movups xmmword ptr [rdi + rdx - 16], xmm3",
    "    ret",
    ".Lsentry_copy_65_128:",
    "    movups xmm0, xmmword ptr [rsi]",
    "    movups xmm1, xmmword ptr [rsi + 16]",
    "    movups xmm2, xmmword ptr [rsi + 32]",
    "    movups xmm3, xmmword ptr [rsi + 48]",
    "    movups xmm4, xmmword ptr [rsi + rdx - 64]",
    "    movups xmm5, xmmword ptr [rsi + rdx - 48]",
    "    movups xmm6, xmmword ptr [rsi + rdx - 32]",
    "    movups xmm7, xmmword ptr [rsi + rdx - 16]",
    "    movups xmmword ptr [rdi], xmm0",
    "    movups xmmword ptr [rdi + 16], xmm1",
    "    movups xmmword ptr [rdi + 32], xmm2",
    "    movups xmmword ptr [rdi + 48], xmm3",
    "    movups xmmword ptr [rdi + rdx - 64], xmm4",
    "    movups xmmword ptr [rdi + rdx - 48], xmm5",
    "    movups xmmword ptr [rdi + rdx - 32], xmm6",
    "    movups xmmword ptr [rdi + rdx - 16], xmm7",
    "    ret",
    // Over 128 bytes, forwards (memcpy, or memmove when the destination does not start inside
    // the source): the last 64 bytes are read first and stored last, over whatever the last
    // whole block wrote there; the blocks before them are read before they are written.
    ".Lsentry_copy_long:",
    "    movups xmm4, xmmword ptr [rsi + rdx - 64]",
    "    movups xmm5, xmmword ptr [rsi + rdx - 48]",
    "    movups xmm6, xmmword ptr [rsi + rdx - 32]",
    "    movups xmm7, xmmword ptr [rsi + rdx - 16]",
    "    lea r8, [rdi + rdx - 64]",
    "    lea rcx, [rdx - 64]",
    ".Lsentry_copy_block:",
    "    sentry_copy_64",
    "    add rsi, 64",
    "    add rdi, 64",
    "    sub rcx, 64",
    "    ja .Lsentry_copy_block",
    "    movups xmmword ptr [r8], xmm4",
    "    movups xmmword ptr [r8 + 16], xmm5",
    "    movups xmmword ptr [r8 + 32], xmm6",
    "    movups xmmword ptr [r8 + 48], xmm7",
    "    ret",
    ".Lsentry_copy_end:",
    ".size sentry_memcpy, .Lsentry_copy_end - sentry_memcpy",
    ".popsection",
);

// The C library's names, in the musl build only: the linker resolves every `memcpy` and
// `memmove` of the program (Rust's, aws-lc's, mimalloc's, musl's own) to these, and never takes
// libc.a's `memcpy.o` or `memmove.o`.
#[cfg(target_env = "musl")]
global_asm!(
    ".globl memcpy",
    ".type memcpy,@function",
    ".set memcpy, sentry_memcpy",
    ".size memcpy, .Lsentry_copy_end - sentry_memcpy",
    ".globl memmove",
    ".type memmove,@function",
    ".set memmove, sentry_memmove",
    ".size memmove, sentry_memcpy - sentry_memmove",
);

#[cfg(test)]
mod tests {
    extern "C" {
        fn sentry_memcpy(dst: *mut u8, src: *const u8, len: usize) -> *mut u8;
        fn sentry_memmove(dst: *mut u8, src: *const u8, len: usize) -> *mut u8;
    }

    /// Lengths around every boundary of the routines, and long ones.
    fn lengths() -> impl Iterator<Item = usize> {
        (0..=300).chain([511, 512, 513, 4095, 4096, 4097, 65_543])
    }

    /// A buffer whose every byte differs from its neighbours.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn memcpy_copies_every_length_at_every_alignment_and_touches_nothing_else() {
        for len in lengths() {
            for src_off in [0, 1, 3, 7, 8, 15] {
                for dst_off in [0, 1, 5, 8, 13] {
                    let src = pattern(len + 32, 1);
                    let mut dst = pattern(len + 32, 200);
                    let mut want = dst.clone();
                    want[dst_off..dst_off + len].copy_from_slice(&src[src_off..src_off + len]);
                    // SAFETY: both ranges lie inside their buffers, which do not overlap.
                    let ret = unsafe {
                        sentry_memcpy(
                            dst.as_mut_ptr().add(dst_off),
                            src.as_ptr().add(src_off),
                            len,
                        )
                    };
                    assert_eq!(ret, dst.as_mut_ptr().wrapping_add(dst_off));
                    assert!(dst == want, "memcpy len {len} src+{src_off} dst+{dst_off}");
                }
            }
        }
    }

    #[test]
    fn memmove_agrees_with_the_c_library_on_overlapping_ranges_in_both_directions() {
        for len in lengths() {
            let distances: Vec<isize> = if len <= 300 {
                (-140..=140).collect()
            } else {
                vec![
                    -4097, -140, -129, -65, -17, -16, -1, 0, 1, 16, 17, 65, 129, 140, 4097,
                ]
            };
            for distance in distances {
                let base = distance.unsigned_abs().max(1);
                let mut buf = pattern(len + 2 * base, 9);
                let src_at = base;
                let dst_at = base.wrapping_add_signed(distance);
                let mut want = buf.clone();
                want.copy_within(src_at..src_at + len, dst_at);
                let p = buf.as_mut_ptr();
                // SAFETY: both ranges lie inside `buf`; memmove allows them to overlap.
                let ret = unsafe { sentry_memmove(p.add(dst_at), p.add(src_at), len) };
                assert_eq!(ret, p.wrapping_add(dst_at));
                assert!(buf == want, "memmove len {len} distance {distance}");
            }
        }
    }
}
