//! Where exactly to put an entry probe. The kernel emulates some instructions under a uprobe
//! (push, jmp, jcc, nop) and must single-step the others, several times slower (about 1 µs
//! against 11 µs a hit on a 2-vCPU VM). glibc's `free` starts with `test %rdi,%rdi`, single-
//! stepped; the `je` after it is emulated and the argument registers are untouched there.
use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind};

/// Bytes to skip from a function's first instruction so the probe lands on an instruction the
/// kernel emulates without changing what the probe reads: a leading `test`/`cmp` between
/// registers or with an immediate only sets flags. 0 when the entry is fine as it is.
pub fn skip_flag_only_prologue(code: &[u8], address: u64) -> u64 {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    if !decoder.can_decode() {
        return 0;
    }
    let first = decoder.decode();
    let flag_only = matches!(first.mnemonic(), Mnemonic::Test | Mnemonic::Cmp)
        && (0..first.op_count()).all(|i| {
            matches!(
                first.op_kind(i),
                OpKind::Register
                    | OpKind::Immediate8
                    | OpKind::Immediate32
                    | OpKind::Immediate8to32
                    | OpKind::Immediate8to64
                    | OpKind::Immediate32to64
                    | OpKind::Immediate16
            )
        });
    if first.is_invalid() || !flag_only || !decoder.can_decode() {
        return 0;
    }
    let second = decoder.decode();
    // Only worth it when the next instruction is one the kernel emulates.
    let emulated = matches!(
        second.mnemonic(),
        Mnemonic::Je
            | Mnemonic::Jne
            | Mnemonic::Jb
            | Mnemonic::Jae
            | Mnemonic::Jbe
            | Mnemonic::Ja
            | Mnemonic::Jl
            | Mnemonic::Jge
            | Mnemonic::Jle
            | Mnemonic::Jg
            | Mnemonic::Js
            | Mnemonic::Jns
            | Mnemonic::Jo
            | Mnemonic::Jno
            | Mnemonic::Jp
            | Mnemonic::Jnp
    );
    if emulated { first.len() as u64 } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_free_skips_its_test() {
        // glibc 2.36 free: test %rdi,%rdi; je ...; push %rbp
        let free = [0x48, 0x85, 0xff, 0x0f, 0x84, 0xbf, 0, 0, 0, 0x55];
        assert_eq!(skip_flag_only_prologue(&free, 0x98ef0), 3);
    }

    #[test]
    fn pushes_and_memory_operands_stay() {
        // glibc malloc: push %r12 (already emulated).
        assert_eq!(skip_flag_only_prologue(&[0x41, 0x54, 0x55, 0x53], 0), 0);
        // test %rdi,(%rsi); je: reads memory, left alone.
        assert_eq!(
            skip_flag_only_prologue(&[0x48, 0x85, 0x3e, 0x74, 0x02], 0),
            0
        );
        // test %rdi,%rdi; mov ...: the next one is not emulated either.
        assert_eq!(
            skip_flag_only_prologue(&[0x48, 0x85, 0xff, 0x48, 0x89, 0xf8], 0),
            0
        );
        assert_eq!(skip_flag_only_prologue(&[], 0), 0);
    }
}
