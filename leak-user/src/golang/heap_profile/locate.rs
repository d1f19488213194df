//! Where the runtime keeps its memory profile: `runtime.mbuckets` (the list of buckets),
//! `runtime.mProfCycle` (the profile cycle) and `runtime.MemProfileRate`. From `.symtab`, else
//! (stripped binaries) by decoding the runtime functions that use them, found by name in
//! `.gopclntab`. Link-time addresses: a PIE's load bias is the caller's to add.
use std::collections::BTreeSet;

use iced_x86::{Instruction, Mnemonic, OpKind, Register};
use object::{Object, ObjectSymbol};

use super::super::runtime_code::RuntimeCode;
use super::super::symbols::GoSymbols;

const MBUCKETS: &str = "runtime.mbuckets";
const MPROF_CYCLE: &str = "runtime.mProfCycle";
const MEM_PROFILE_RATE: &str = "runtime.MemProfileRate";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProfileVars {
    pub mbuckets: Option<u64>,
    pub mprof_cycle: Option<u64>,
    pub mem_profile_rate: Option<u64>,
    /// True when found by decoding code (no `.symtab`).
    pub from_code: bool,
}

impl ProfileVars {
    /// Names of the variables not found.
    pub fn missing(&self) -> Vec<&'static str> {
        [
            (self.mbuckets, MBUCKETS),
            (self.mprof_cycle, MPROF_CYCLE),
            (self.mem_profile_rate, MEM_PROFILE_RATE),
        ]
        .into_iter()
        .filter(|(found, _)| found.is_none())
        .map(|(_, name)| name)
        .collect()
    }

    pub fn locate(elf: &[u8]) -> ProfileVars {
        let Ok(file) = object::File::parse(elf) else {
            return ProfileVars::default();
        };
        let symbol = |name: &str| {
            file.symbols()
                .find(|s| s.name() == Ok(name))
                .map(|s| s.address())
        };
        let from_symtab = ProfileVars {
            mbuckets: symbol(MBUCKETS),
            mprof_cycle: symbol(MPROF_CYCLE),
            mem_profile_rate: symbol(MEM_PROFILE_RATE),
            from_code: false,
        };
        if from_symtab.missing().is_empty() {
            return from_symtab;
        }
        let Ok(symbols) = GoSymbols::open(elf) else {
            return from_symtab;
        };
        let code = RuntimeCode {
            file: &file,
            symbols: &symbols,
        };
        ProfileVars {
            mbuckets: code.mbuckets(),
            mprof_cycle: code.mprof_cycle(),
            mem_profile_rate: code.mem_profile_rate(),
            from_code: true,
        }
    }
}

impl RuntimeCode<'_> {
    /// `mProf_FlushLocked` (1.19 and 1.27 alike) loads one global, the list head:
    /// `for b := mbuckets; b != nil; b = b.allnext`.
    fn mbuckets(&self) -> Option<u64> {
        let loads = rip_loads(&self.decode("runtime.mProf_FlushLocked")?, 8);
        single(loads.into_iter())
    }

    /// `mProf_Flush` reads `mProfCycle.value` (a uint32) in `setFlushed`, the one 4-byte
    /// global it loads.
    fn mprof_cycle(&self) -> Option<u64> {
        let loads = rip_loads(&self.decode("runtime.mProf_Flush")?, 4);
        single(loads.into_iter())
    }

    /// `profilealloc` loads `mcache0` and `MemProfileRate`; only the rate is compared with 1
    /// (`nextSample`: `if MemProfileRate == 1`).
    fn mem_profile_rate(&self) -> Option<u64> {
        let instructions = self.decode("runtime.profilealloc")?;
        let mut held: [Option<u64>; 16] = [None; 16];
        let mut compared = BTreeSet::new();
        for instruction in &instructions {
            if let Some((register, addr)) = rip_load(instruction, 8) {
                held[register] = Some(addr);
            } else if instruction.mnemonic() == Mnemonic::Cmp
                && instruction.op0_kind() == OpKind::Register
                && matches!(
                    instruction.op1_kind(),
                    OpKind::Immediate8to64 | OpKind::Immediate32to64
                )
                && instruction.immediate(1) == 1
                && let Some(index) = gpr64(instruction.op0_register())
            {
                compared.extend(held[index]);
            }
        }
        single(compared.into_iter())
    }
}

/// `MOV r, [rip+disp]` of `size` bytes: the register's index and the address.
fn rip_load(instruction: &Instruction, size: usize) -> Option<(usize, u64)> {
    if instruction.mnemonic() != Mnemonic::Mov
        || !instruction.is_ip_rel_memory_operand()
        || instruction.op0_kind() != OpKind::Register
        || instruction.memory_size().size() != size
    {
        return None;
    }
    let register = instruction.op0_register().full_register();
    Some((gpr64(register)?, instruction.ip_rel_memory_address()))
}

/// The distinct addresses `size`-byte `MOV`s load from.
fn rip_loads(instructions: &[Instruction], size: usize) -> BTreeSet<u64> {
    instructions
        .iter()
        .filter_map(|i| rip_load(i, size))
        .map(|(_, addr)| addr)
        .collect()
}

fn gpr64(register: Register) -> Option<usize> {
    use Register::*;
    const GPRS: [Register; 16] = [
        RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8, R9, R10, R11, R12, R13, R14, R15,
    ];
    GPRS.iter().position(|&r| r == register.full_register())
}

fn single(mut items: impl Iterator<Item = u64>) -> Option<u64> {
    let first = items.next()?;
    items.next().is_none().then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golang::testutil::{self, TOOLCHAINS, Variant};

    /// Stripped builds find by decoding code what `.symtab` names in the plain build of the
    /// same source.
    #[test]
    fn stripped_builds_find_the_symtab_addresses() {
        for toolchain in TOOLCHAINS {
            let plain =
                ProfileVars::locate(&testutil::read(&testutil::build(toolchain, Variant::Plain)));
            assert_eq!(plain.missing(), Vec::<&str>::new(), "{toolchain:?}");
            assert!(!plain.from_code);
            let stripped = ProfileVars::locate(&testutil::read(&testutil::build(
                toolchain,
                Variant::Stripped,
            )));
            assert_eq!(
                stripped,
                ProfileVars {
                    from_code: true,
                    ..plain
                },
                "{toolchain:?}"
            );
            // A stripped PIE: the same code, at link-time addresses.
            let pie = ProfileVars::locate(&testutil::read(&testutil::build(
                toolchain,
                Variant::PieStripped,
            )));
            assert_eq!(pie.missing(), Vec::<&str>::new(), "{toolchain:?} PIE");
        }
    }

    #[test]
    fn non_go_input_finds_nothing() {
        let me = std::fs::read("/proc/self/exe").unwrap();
        assert_eq!(
            ProfileVars::locate(&me).missing().len(),
            3,
            "leaktrace's own binary has no Go runtime"
        );
        assert_eq!(ProfileVars::locate(b"not an elf").missing().len(), 3);
    }
}
