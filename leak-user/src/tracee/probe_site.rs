//! Where exactly to put an entry probe. The kernel emulates a few instructions under a uprobe
//! (push of a register, jmp, jcc, call, nop) and must single-step every other one, several
//! times slower (about 1 µs against 11 µs a hit on a 2-vCPU VM). Allocators often start with
//! something else: glibc's `free` with `test %rdi,%rdi`, jemalloc's `free` with `mov`s,
//! mimalloc's `mi_malloc` by moving its argument to `%rsi` and loading the heap into `%rdi`.
//!
//! So the probe moves forward over the entry's straight-line code to the first instruction the
//! kernel emulates, as long as everything it passes over
//! - falls through (no branch, call or return), and nothing else in the function jumps into
//!   the stretch passed over (the probe would fire on a path that never had the arguments);
//! - leaves the stack pointer and the return address alone (a return probe at the same place
//!   finds the caller's address at `[rsp]`, and the stack walk starts from the entry's frame);
//! - keeps every argument the probe reads in some register: a copy (`mov %rdi,%rcx`) is
//!   followed, and the probe is told where each argument ended up.
//!
//! Otherwise the probe stays on the first instruction.
use iced_x86::{
    Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, Mnemonic, OpAccess,
    OpKind, Register,
};
use leak_common::{probe_cookie, reg};

/// Instructions the probe may move past, at most.
const MAX_PASSED: usize = 12;
/// Bytes of a function decoded to find jumps into its first instructions.
const MAX_FUNCTION_BYTES: usize = 64 * 1024;

/// Where a probe goes and where it finds the arguments there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSite {
    /// File offset of the probed instruction.
    pub offset: u64,
    /// The register (`leak_common::reg`) holding each argument the probe reads.
    pub regs: [u8; probe_cookie::ARGS],
    /// Whether the kernel emulates the probed instruction (false: single-stepped).
    pub emulated: bool,
}

/// The probe site of a function whose code (from its first instruction, `size` bytes when
/// known) starts at file offset `offset`, for a probe that reads the System V arguments
/// `args` (0 = the first).
pub fn place(code: &[u8], offset: u64, args: &[u8]) -> ProbeSite {
    let at_entry: Vec<u8> = args
        .iter()
        .map(|&a| reg::ARGS[usize::from(a) % 6])
        .collect();
    let entry = ProbeSite {
        offset,
        regs: registers(&at_entry.iter().map(|&r| 1u16 << r).collect::<Vec<_>>()),
        emulated: false,
    };
    let code = &code[..code.len().min(MAX_FUNCTION_BYTES)];
    let instructions: Vec<Instruction> = Decoder::with_ip(64, code, offset, DecoderOptions::NONE)
        .into_iter()
        .take_while(|i| !i.is_invalid())
        .collect();
    let Some(first) = instructions.first() else {
        return entry;
    };
    if emulated(first) {
        return ProbeSite {
            emulated: true,
            ..entry
        };
    }
    let targets = branch_targets(&instructions);
    // Each argument's value and the registers holding it (a bit per `leak_common::reg`).
    let mut holders: Vec<u16> = at_entry.iter().map(|&r| 1u16 << r).collect();
    let mut info = InstructionInfoFactory::new();
    for (passed, pair) in instructions.windows(2).enumerate() {
        let (insn, next) = (&pair[0], &pair[1]);
        if passed >= MAX_PASSED || !passable(insn, &mut info) {
            break;
        }
        track_moves(insn, &mut info, &mut holders);
        if holders.contains(&0) || targets.iter().any(|&t| t > offset && t <= next.ip()) {
            break;
        }
        if emulated(next) {
            return ProbeSite {
                offset: next.ip(),
                regs: registers(&holders),
                emulated: true,
            };
        }
    }
    entry
}

/// The instructions the kernel emulates rather than single-steps (arch/x86/kernel/uprobes.c:
/// relative jumps and calls, conditional jumps, nops, and pushes of a register).
fn emulated(insn: &Instruction) -> bool {
    match insn.mnemonic() {
        Mnemonic::Nop => true,
        Mnemonic::Push => insn.op0_kind() == OpKind::Register,
        _ => {
            matches!(
                insn.flow_control(),
                FlowControl::UnconditionalBranch
                    | FlowControl::ConditionalBranch
                    | FlowControl::Call
            ) && matches!(insn.op0_kind(), OpKind::NearBranch64 | OpKind::NearBranch32)
        }
    }
}

/// Targets of the function's relative jumps and calls.
fn branch_targets(instructions: &[Instruction]) -> Vec<u64> {
    instructions
        .iter()
        .filter(|i| matches!(i.op0_kind(), OpKind::NearBranch64 | OpKind::NearBranch32))
        .map(Instruction::near_branch_target)
        .collect()
}

/// Whether the probe may move past `insn`: it falls through and leaves the stack pointer and
/// the stack above it alone.
fn passable(insn: &Instruction, info: &mut InstructionInfoFactory) -> bool {
    if insn.flow_control() != FlowControl::Next || insn.has_lock_prefix() {
        return false;
    }
    let info = info.info(insn);
    let writes_rsp = info
        .used_registers()
        .iter()
        .any(|u| u.register().full_register() == Register::RSP && writes(u.access()));
    let writes_stack = info
        .used_memory()
        .iter()
        .any(|m| m.base().full_register() == Register::RSP && writes(m.access()));
    !writes_rsp && !writes_stack
}

fn writes(access: OpAccess) -> bool {
    !matches!(
        access,
        OpAccess::None | OpAccess::Read | OpAccess::CondRead | OpAccess::NoMemAccess
    )
}

/// Follows the arguments through `insn`: a 64-bit register copy adds the destination to the
/// holders of the source's value; any other write to a register takes it away from all.
fn track_moves(insn: &Instruction, info: &mut InstructionInfoFactory, holders: &mut [u16]) {
    let copy = (insn.mnemonic() == Mnemonic::Mov
        && insn.op_count() == 2
        && insn.op0_kind() == OpKind::Register
        && insn.op1_kind() == OpKind::Register
        && insn.op0_register().is_gpr64()
        && insn.op1_register().is_gpr64())
    .then(|| (number(insn.op0_register()), number(insn.op1_register())));
    let written: Vec<Register> = info
        .info(insn)
        .used_registers()
        .iter()
        .filter(|u| writes(u.access()))
        .map(|u| u.register().full_register())
        .collect();
    for holder in holders.iter_mut() {
        let had_source = matches!(copy, Some((_, Some(src))) if *holder & (1 << src) != 0);
        for register in &written {
            if let Some(n) = number(*register) {
                *holder &= !(1 << n);
            }
        }
        if let (true, Some((Some(dst), _))) = (had_source, copy) {
            *holder |= 1 << dst;
        }
    }
}

/// A register's number in `leak_common::reg`, for those a probe can read.
fn number(register: Register) -> Option<u8> {
    Some(match register.full_register() {
        Register::RDI => reg::RDI,
        Register::RSI => reg::RSI,
        Register::RDX => reg::RDX,
        Register::RCX => reg::RCX,
        Register::R8 => reg::R8,
        Register::R9 => reg::R9,
        Register::RAX => reg::RAX,
        Register::RBX => reg::RBX,
        Register::RBP => reg::RBP,
        Register::R10 => reg::R10,
        Register::R11 => reg::R11,
        Register::R12 => reg::R12,
        Register::R13 => reg::R13,
        Register::R14 => reg::R14,
        Register::R15 => reg::R15,
        _ => return None,
    })
}

/// One register per argument: the lowest-numbered holder (the System V one while it still
/// holds the value).
fn registers(holders: &[u16]) -> [u8; probe_cookie::ARGS] {
    let mut regs = [0; probe_cookie::ARGS];
    for (slot, holder) in regs.iter_mut().zip(holders) {
        *slot = holder.trailing_zeros().min(15) as u8;
    }
    regs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(code: &[u8], args: &[u8]) -> ProbeSite {
        place(code, 0x1000, args)
    }

    #[test]
    fn glibc_free_skips_its_test() {
        // glibc 2.36 free: test %rdi,%rdi; je ...; push %rbp
        let free = [0x48, 0x85, 0xff, 0x0f, 0x84, 0xbf, 0, 0, 0, 0x55];
        let s = site(&free, &[0]);
        assert_eq!((s.offset, s.regs[0], s.emulated), (0x1003, reg::RDI, true));
    }

    #[test]
    fn endbr64_is_passed_over() {
        // CET builds: endbr64 (single-stepped, measured 9.9 µs a hit here); push %rbp.
        let s = site(&[0xf3, 0x0f, 0x1e, 0xfa, 0x55], &[0]);
        assert_eq!((s.offset, s.regs[0], s.emulated), (0x1004, reg::RDI, true));
    }

    #[test]
    fn a_push_at_entry_stays() {
        // glibc malloc: push %r12.
        let s = site(&[0x41, 0x54, 0x55, 0x53], &[0]);
        assert_eq!((s.offset, s.emulated), (0x1000, true));
    }

    #[test]
    fn mimalloc_malloc_finds_its_size_in_rsi() {
        // libmimalloc 2.0.9 mi_malloc: mov 0xb449(%rip),%rax; mov %rdi,%rsi;
        // mov %fs:(%rax),%rdi; cmp $0x400,%rsi; ja ...
        let code = [
            0x48, 0x8b, 0x05, 0x49, 0xb4, 0x00, 0x00, // mov 0xb449(%rip),%rax
            0x48, 0x89, 0xfe, // mov %rdi,%rsi
            0x64, 0x48, 0x8b, 0x38, // mov %fs:(%rax),%rdi
            0x48, 0x81, 0xfe, 0x00, 0x04, 0x00, 0x00, // cmp $0x400,%rsi
            0x77, 0x29, // ja
        ];
        let s = site(&code, &[0]);
        assert_eq!(
            (s.offset, s.regs[0], s.emulated),
            (0x1000 + 21, reg::RSI, true)
        );
    }

    #[test]
    fn jemalloc_free_keeps_rdi_through_copies() {
        // libjemalloc 5.3 free: mov %rdi,%rax; mov 0xa530e(%rip),%rdx; mov %rdi,%rcx;
        // shr $0x1a,%rax; and $-0x40000000,%rcx; ... jcc
        let code = [
            0x48, 0x89, 0xf8, // mov %rdi,%rax
            0x48, 0x8b, 0x15, 0x0e, 0x53, 0x0a, 0x00, // mov 0xa530e(%rip),%rdx
            0x48, 0x89, 0xf9, // mov %rdi,%rcx
            0x48, 0xc1, 0xe8, 0x1a, // shr $0x1a,%rax
            0x48, 0x85, 0xc0, // test %rax,%rax
            0x74, 0x02, // je +2
            0x90, 0x90,
        ];
        let s = site(&code, &[0]);
        assert_eq!(
            (s.offset, s.regs[0], s.emulated),
            (0x1000 + 20, reg::RDI, true)
        );
    }

    #[test]
    fn a_clobbered_argument_stops_the_move() {
        // mov %fs:(%rax),%rdi; je: the pointer in %rdi is gone before the jump.
        let code = [0x64, 0x48, 0x8b, 0x38, 0x74, 0x02, 0x90, 0x90];
        assert_eq!(site(&code, &[0]).offset, 0x1000);
        // Only the second argument is read: %rdi may go.
        let s = site(&code, &[1]);
        assert_eq!((s.offset, s.regs[0]), (0x1004, reg::RSI));
    }

    #[test]
    fn stack_writes_and_jumps_into_the_stretch_stop_the_move() {
        // sub $8,%rsp; je
        assert_eq!(
            site(&[0x48, 0x83, 0xec, 0x08, 0x74, 0x00], &[0]).offset,
            0x1000
        );
        // test %rdi,%rdi; jne (to itself: into the stretch passed over) — the first
        // instruction is passable, but the jcc's own target is the jcc.
        let looped = [0x48, 0x85, 0xff, 0x75, 0xfe];
        assert_eq!(site(&looped, &[0]).offset, 0x1000);
        // test %rdi,(%rsi) reads memory and is passed over; a store through %rsp is not.
        assert_eq!(site(&[0x48, 0x85, 0x3e, 0x74, 0x02], &[0]).offset, 0x1003);
        assert_eq!(
            site(&[0x48, 0x89, 0x3c, 0x24, 0x74, 0x02], &[0]).offset,
            0x1000
        );
        assert_eq!(site(&[], &[0]).offset, 0x1000);
    }
}
