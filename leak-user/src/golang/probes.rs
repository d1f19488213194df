//! Where goroutine and cgo tracing put their probes in a Go executable, and what the probes
//! need to know about it (struct offsets, address ranges of the runtime's cgo trampolines).
use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};
use object::{Object, ObjectSymbol, SymbolKind};

use super::buildinfo::{self, GoVersion};
use super::offsets::{OffsetsError, OffsetsSource, RuntimeOffsets};
use super::ret_sites::{file_offset, function_code, ret_offsets};
use super::symbols::{GoSymbols, SymbolsError};

#[derive(Debug, thiserror::Error)]
pub enum GoProbesError {
    #[error("no Go version in .go.buildinfo")]
    NoVersion,
    #[error("Go {0} is older than 1.18, whose runtime leaktrace does not know")]
    TooOld(String),
    #[error("reading the Go symbol table: {0}")]
    Symbols(#[from] SymbolsError),
    #[error("runtime.g offsets: {0}")]
    Offsets(#[from] OffsetsError),
    #[error("the Go runtime has no {0}")]
    MissingFunction(&'static str),
    #[error("{0} has no RET instruction to probe")]
    NoReturn(&'static str),
}

/// A link-time address range `[start, end)`.
pub type Range = (u64, u64);

#[derive(Debug, Clone)]
pub struct GoProbes {
    pub version: GoVersion,
    pub offsets: RuntimeOffsets,
    pub offsets_source: OffsetsSource,
    /// File offsets of `runtime.newproc1`'s RET instructions.
    pub newproc1_rets: Vec<u64>,
    /// `runtime.gdestroy` (or `goexit0`): name and the file offset of its probe.
    pub exit: (&'static str, u64),
    /// cgo binaries: `runtime.cgocall`'s probe past its stack check (if it has one).
    pub cgocall: Option<u64>,
    /// cgo binaries: where asmcgocall saves the calling goroutine's `g`, relative to the stack
    /// pointer its C callee returns to.
    pub g_slot: Option<u64>,
    pub asmcgocall: Option<Range>,
    pub landingpad: Option<Range>,
    /// `x_cgo_mmap` (from `.symtab`; in stripped binaries see [`GoProbes::resolve_cgo_mmap`]).
    pub cgo_mmap: Option<Range>,
    /// Stripped cgo binaries: where the runtime's `_cgo_mmap` pointer to `x_cgo_mmap` is.
    pub cgo_mmap_slot: Option<u64>,
}

impl GoProbes {
    pub fn for_binary(elf: &[u8]) -> Result<GoProbes, GoProbesError> {
        let version = buildinfo::go_version(elf).ok_or(GoProbesError::NoVersion)?;
        if version.major == 1 && version.minor < 18 {
            return Err(GoProbesError::TooOld(format!(
                "{}.{}",
                version.major, version.minor
            )));
        }
        let (offsets, offsets_source) = RuntimeOffsets::for_binary(elf)?;
        let symbols = GoSymbols::open(elf)?;
        let func = |name: &'static str| {
            symbols
                .function(name)
                .ok_or(GoProbesError::MissingFunction(name))
        };

        let newproc1 = func("runtime.newproc1")?;
        let newproc1_rets = rets(elf, newproc1);
        if newproc1_rets.is_empty() {
            return Err(GoProbesError::NoReturn("runtime.newproc1"));
        }
        // gdestroy is where every goroutine ends from Go 1.23 on (coroutines too); older
        // runtimes end them in goexit0. Both take the g in RAX and run on g0.
        let exit = match symbols.function("runtime.gdestroy") {
            Some(f) => ("runtime.gdestroy", entry_probe(elf, f)),
            None => (
                "runtime.goexit0",
                entry_probe(elf, func("runtime.goexit0")?),
            ),
        };
        let exit = (
            exit.0,
            exit.1.ok_or(GoProbesError::MissingFunction(exit.0))?,
        );

        // The assembly bodies (ABI0), not their ABIInternal wrappers: C code returns into them.
        let range = |name: &str| {
            symbols
                .function(&format!("{name}.abi0"))
                .or_else(|| symbols.function(name))
                .map(|(a, s)| (a, a + s))
        };
        let cgo_mmap = c_function(elf, "x_cgo_mmap");
        let is_cgo = cgo_mmap.is_some() || has_cgo(elf);
        let cgo_mmap_slot = match cgo_mmap {
            Some(_) => None,
            None if !is_cgo => None,
            None => symbols
                .function("runtime.callCgoMmap.abi0")
                .or_else(|| symbols.function("runtime.callCgoMmap"))
                .and_then(|f| pointer_loaded_into_rax(elf, f)),
        };
        let cgocall = match symbols.function("runtime.cgocall") {
            Some(f) if is_cgo => entry_probe(elf, f),
            _ => None,
        };
        let asmcgocall = range("runtime.asmcgocall");
        let g_slot = asmcgocall
            .filter(|_| is_cgo)
            .and_then(|(start, end)| saved_g_slot(elf, (start, end - start)));
        Ok(GoProbes {
            version,
            offsets,
            offsets_source,
            newproc1_rets,
            exit,
            cgocall,
            g_slot,
            asmcgocall,
            landingpad: range("runtime.asmcgocall_landingpad"),
            cgo_mmap,
            cgo_mmap_slot,
        })
    }

    /// Stripped cgo binaries: `x_cgo_mmap` from the `_cgo_mmap` pointer of the running
    /// target (`read_u64` reads its memory; relocated already, so PIE works too), up to the
    /// function's first RET, which comes after its call to mmap.
    pub fn resolve_cgo_mmap(
        &mut self,
        elf: &[u8],
        bias: u64,
        read_u64: impl Fn(u64) -> Option<u64>,
    ) {
        if self.cgo_mmap.is_some() {
            return;
        }
        let Some(slot) = self.cgo_mmap_slot else {
            return;
        };
        let Some(function) = read_u64(slot.wrapping_add(bias)) else {
            return;
        };
        self.cgo_mmap = c_function_extent(elf, function.wrapping_sub(bias));
    }
}

/// asmcgocall, once on the system stack, aligns SP (`ANDQ $~15, SP`) and saves the
/// goroutine's g (`MOVQ DI, n(SP)`, "save g"): that n.
fn saved_g_slot(elf: &[u8], (addr, size): (u64, u64)) -> Option<u64> {
    let code = function_code(elf, addr, size)?;
    let mut decoder = Decoder::with_ip(64, code, addr, DecoderOptions::NONE);
    let mut aligned = false;
    while decoder.can_decode() {
        let instruction = decoder.decode();
        if instruction.mnemonic() == Mnemonic::And && instruction.op0_register() == Register::RSP {
            aligned = true;
        } else if aligned
            && instruction.mnemonic() == Mnemonic::Mov
            && instruction.op0_kind() == OpKind::Memory
            && instruction.memory_base() == Register::RSP
            && instruction.op1_register() == Register::RDI
        {
            return Some(instruction.memory_displacement64());
        }
    }
    None
}

/// The address `MOVQ sym(SB), AX` loads from, in a function's code.
fn pointer_loaded_into_rax(elf: &[u8], (addr, size): (u64, u64)) -> Option<u64> {
    let code = function_code(elf, addr, size)?;
    let mut decoder = Decoder::with_ip(64, code, addr, DecoderOptions::NONE);
    while decoder.can_decode() {
        let instruction = decoder.decode();
        if instruction.mnemonic() == Mnemonic::Mov
            && instruction.op0_register() == Register::RAX
            && instruction.op1_kind() == OpKind::Memory
            && instruction.memory_base() == Register::RIP
        {
            return Some(instruction.memory_displacement64());
        }
    }
    None
}

/// `[addr, end of its first RET)`: enough of a small C function to hold its calls.
fn c_function_extent(elf: &[u8], addr: u64) -> Option<Range> {
    const MAX_SCAN: u64 = 256;
    let code = function_code(elf, addr, MAX_SCAN).or_else(|| function_code(elf, addr, 64))?;
    let mut decoder = Decoder::with_ip(64, code, addr, DecoderOptions::NONE);
    while decoder.can_decode() {
        let instruction = decoder.decode();
        if instruction.is_invalid() {
            return None;
        }
        if instruction.mnemonic() == Mnemonic::Ret {
            return Some((addr, instruction.next_ip()));
        }
    }
    None
}

/// File offsets of a function's RET instructions.
fn rets(elf: &[u8], (addr, size): (u64, u64)) -> Vec<u64> {
    let Some(code) = function_code(elf, addr, size) else {
        return Vec::new();
    };
    ret_offsets(code, addr, size)
        .into_iter()
        .filter_map(|va| file_offset(elf, va))
        .collect()
}

/// File offset of a Go function's entry probe: past the stack-bound check when the prologue
/// has one (see [`skip_stack_check`]).
fn entry_probe(elf: &[u8], (addr, size): (u64, u64)) -> Option<u64> {
    let skip =
        function_code(elf, addr, size.min(32)).map_or(0, |code| skip_stack_check(code, addr));
    file_offset(elf, addr + skip)
}

/// Go's prologue compares SP with the goroutine's stack bound (`CMP SP|R12, 16(R14)`, after a
/// `LEA -n(SP), R12` for large frames) and jumps to `morestack` when short, which copies the
/// stack and restarts the function: a probe on the first instruction fires twice then, and a
/// CMP is single-stepped (slow). The instruction after the `JBE` runs once per call, with
/// SP, BP and the argument registers untouched; it is chosen when the kernel emulates it
/// (`PUSH BP`), else the `JBE` itself. Returns the bytes to skip, 0 without such a prologue.
pub fn skip_stack_check(code: &[u8], address: u64) -> u64 {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    for _ in 0..3 {
        if !decoder.can_decode() {
            return 0;
        }
        let instruction = decoder.decode();
        match instruction.mnemonic() {
            Mnemonic::Lea if instruction.op0_register() == Register::R12 => {}
            Mnemonic::Cmp | Mnemonic::Test
                if (0..instruction.op_count())
                    .all(|i| instruction.op_kind(i) != OpKind::Memory)
                    || instruction.memory_base() == Register::R14 => {}
            Mnemonic::Jbe => {
                let jbe = instruction.ip() - address;
                if decoder.can_decode() {
                    let next = decoder.decode();
                    if next.mnemonic() == Mnemonic::Push {
                        return next.ip() - address;
                    }
                }
                return jbe;
            }
            _ => return 0,
        }
    }
    0
}

/// A C function's range from `.symtab` (absent in stripped binaries).
fn c_function(elf: &[u8], name: &str) -> Option<Range> {
    let file = object::File::parse(elf).ok()?;
    file.symbols()
        .find(|s| s.kind() == SymbolKind::Text && s.name() == Ok(name) && s.size() > 0)
        .and_then(|s| Some((s.address(), s.address().checked_add(s.size())?)))
}

/// Linked with cgo: the binary needs a C library (pure Go binaries are static).
fn has_cgo(elf: &[u8]) -> bool {
    object::File::parse(elf).is_ok_and(|file| {
        file.imports()
            .is_ok_and(|imports| imports.iter().any(|i| i.name() == b"malloc"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golang::testutil::{self, TOOLCHAINS, Variant};

    #[test]
    fn stack_check_prologues() {
        // cmp 0x10(%r14),%rsp; jbe +0x40; push %rbp
        let small = [0x49, 0x3b, 0x66, 0x10, 0x76, 0x40, 0x55];
        assert_eq!(skip_stack_check(&small, 0x1000), 6);
        // lea -0x28(%rsp),%r12; cmp 0x10(%r14),%r12; jbe; sub $8,%rsp (not emulated)
        let large = [
            0x4c, 0x8d, 0x64, 0x24, 0xd8, 0x4d, 0x3b, 0x66, 0x10, 0x76, 0x40, 0x48, 0x83, 0xec,
            0x08,
        ];
        assert_eq!(skip_stack_check(&large, 0x1000), 9);
        // push %rbp first (no stack check): stays at the entry.
        assert_eq!(skip_stack_check(&[0x55, 0x48, 0x89, 0xe5], 0), 0);
        assert_eq!(skip_stack_check(&[], 0), 0);
    }

    #[test]
    fn probes_of_real_binaries() {
        for toolchain in TOOLCHAINS {
            for variant in [
                Variant::Plain,
                Variant::Stripped,
                Variant::Cgo,
                Variant::CgoStripped,
            ] {
                let elf = testutil::read(&testutil::build(toolchain, variant));
                let probes = GoProbes::for_binary(&elf)
                    .unwrap_or_else(|e| panic!("{toolchain:?} {variant:?}: {e}"));
                assert!(!probes.newproc1_rets.is_empty());
                let cgo = matches!(variant, Variant::Cgo | Variant::CgoStripped);
                assert_eq!(probes.cgocall.is_some(), cgo, "{toolchain:?} {variant:?}");
                if cgo {
                    assert!(probes.asmcgocall.is_some());
                    // From the runtime's asm_amd64.s: `MOVQ DI, 48(SP)` in 1.19, 8(SP) since.
                    let want = match toolchain {
                        testutil::Toolchain::Recent => 8,
                        testutil::Toolchain::Go119 => 48,
                    };
                    assert_eq!(probes.g_slot, Some(want), "{toolchain:?} {variant:?}");
                } else {
                    assert_eq!(probes.g_slot, None);
                }
                assert_eq!(
                    probes.cgo_mmap.is_some(),
                    variant == Variant::Cgo,
                    "{toolchain:?} {variant:?}"
                );
                if variant == Variant::CgoStripped {
                    // The same program unstripped names x_cgo_mmap in .symtab.
                    let plain = testutil::read(&testutil::build(toolchain, Variant::Cgo));
                    let want = GoProbes::for_binary(&plain).unwrap().cgo_mmap.unwrap();
                    let mut stripped = probes.clone();
                    let slot_value = |at: u64| {
                        let file = object::File::parse(&*elf).ok()?;
                        let bytes = super::super::elf_data::read_va(&file, at, 8)?;
                        Some(u64::from_le_bytes(bytes.try_into().ok()?))
                    };
                    stripped.resolve_cgo_mmap(&elf, 0, slot_value);
                    let (start, end) = stripped.cgo_mmap.expect("x_cgo_mmap located");
                    assert_eq!(start, want.0, "{toolchain:?}");
                    assert!(end > start && end <= want.1, "{toolchain:?}");
                }
                let want_exit = match toolchain {
                    testutil::Toolchain::Recent => "runtime.gdestroy",
                    testutil::Toolchain::Go119 => "runtime.goexit0",
                };
                assert_eq!(probes.exit.0, want_exit);
            }
        }
    }
}
