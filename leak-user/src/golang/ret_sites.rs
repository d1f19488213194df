//! Where a Go function returns. A uretprobe on a Go function replaces the return address
//! on a stack that the runtime copies and unwinds itself ("unexpected return pc", SIGILL when
//! the goroutine resumes on another thread), so return probes go on each RET instruction
//! instead, found by decoding the function's code.
use iced_x86::{Decoder, DecoderOptions, Mnemonic};
use object::{Object, ObjectSegment};

use super::elf_data::read_va;

/// Addresses of every RET instruction in `[func_addr, func_addr + func_size)`, where `code`
/// holds the bytes starting at `func_addr` (at least `func_size` of them; fewer just bound the
/// scan). The decoding is linear from the entry: Go's compiler puts no data in text, and
/// the size bound keeps it out of the next function (or the INT3 padding before it). A
/// function that leaves only by tail jumps or panics has none.
pub fn ret_offsets(code: &[u8], func_addr: u64, func_size: u64) -> Vec<u64> {
    let len = usize::try_from(func_size).map_or(code.len(), |size| size.min(code.len()));
    let mut decoder = Decoder::with_ip(64, &code[..len], func_addr, DecoderOptions::NONE);
    let mut rets = Vec::new();
    while decoder.can_decode() {
        let instruction = decoder.decode();
        // An instruction cut by the bound decodes as invalid and ends the loop; a genuinely
        // invalid byte (never emitted by Go) is skipped by its decoded length.
        // Near returns only (C3, C2 iw): Go never emits far returns.
        if instruction.mnemonic() == Mnemonic::Ret {
            rets.push(instruction.ip());
        }
    }
    rets
}

/// The code bytes of `[addr, addr + size)` in an ELF image, for [`ret_offsets`].
pub fn function_code(elf: &[u8], addr: u64, size: u64) -> Option<&[u8]> {
    let file = object::File::parse(elf).ok()?;
    read_va(&file, addr, size)
}

/// File offset of virtual address `va`, as uprobes (`path` + offset) need it.
pub fn file_offset(elf: &[u8], va: u64) -> Option<u64> {
    let file = object::File::parse(elf).ok()?;
    file.segments().find_map(|segment| {
        let (offset, file_size) = segment.file_range();
        let rel = va.checked_sub(segment.address())?;
        (rel < file_size).then(|| offset + rel)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golang::symbols::GoSymbols;
    use crate::golang::testutil::{self, TOOLCHAINS, Variant};

    #[test]
    fn finds_rets_and_stays_in_bounds() {
        // push rbp; ret; mov eax, 1; ret 8; int3; ret (beyond the size)
        let code = [0x55, 0xc3, 0xb8, 1, 0, 0, 0, 0xc2, 8, 0, 0xcc, 0xc3];
        assert_eq!(ret_offsets(&code, 0x1000, 11), vec![0x1001, 0x1007]);
        assert_eq!(
            ret_offsets(&code, 0x1000, 100),
            vec![0x1001, 0x1007, 0x100b]
        );
        // The size cuts `mov eax, 1` in two: its imm bytes are not read as a RET.
        assert_eq!(ret_offsets(&[0xb8, 0xc3, 0, 0, 0], 0, 3), Vec::<u64>::new());
        assert!(ret_offsets(&[], 0, 10).is_empty());
    }

    /// RET addresses `go tool objdump` lists for a function.
    fn objdump_rets(toolchain: testutil::Toolchain, elf: &std::path::Path, func: &str) -> Vec<u64> {
        let text = testutil::objdump(toolchain, elf, &format!("^{func}$"));
        text.lines()
            .filter(|line| line.split_whitespace().nth(3) == Some("RET"))
            .filter_map(|line| {
                let addr = line.split_whitespace().nth(1)?.strip_prefix("0x")?;
                u64::from_str_radix(addr, 16).ok()
            })
            .collect()
    }

    #[test]
    fn newproc1_rets_match_go_objdump() {
        for toolchain in TOOLCHAINS {
            for variant in [Variant::Plain, Variant::Stripped, Variant::PieStripped] {
                let path = testutil::build(toolchain, variant);
                let elf = testutil::read(&path);
                let symbols = GoSymbols::open(&elf).unwrap();
                let (addr, size) = symbols.function("runtime.newproc1").unwrap();
                let code = function_code(&elf, addr, size).unwrap();
                let rets = ret_offsets(code, addr, size);
                assert!(!rets.is_empty(), "{toolchain:?} {variant:?}");
                for &ret in &rets {
                    assert!((addr..addr + size).contains(&ret));
                    let offset = file_offset(&elf, ret).unwrap() as usize;
                    assert_eq!(elf[offset], 0xc3, "{toolchain:?} {variant:?} {ret:#x}");
                }
                // objdump needs .symtab; the stripped builds have the same layout.
                if variant != Variant::PieStripped {
                    let plain = testutil::build(toolchain, Variant::Plain);
                    assert_eq!(rets, objdump_rets(toolchain, &plain, "runtime.newproc1"));
                }
            }
        }
    }

    #[test]
    fn file_offsets_follow_the_program_headers() {
        for toolchain in TOOLCHAINS {
            let elf = testutil::read(&testutil::build(toolchain, Variant::PieStripped));
            let file = object::File::parse(&*elf).unwrap();
            let text = file.section_by_name(".text").unwrap();
            let (sh_offset, _) = object::ObjectSection::file_range(&text).unwrap();
            let sh_addr = object::ObjectSection::address(&text);
            // aya's rule for `func+off` probes: va - sh_addr + sh_offset.
            assert_eq!(file_offset(&elf, sh_addr + 0x40), Some(sh_offset + 0x40));
            assert_eq!(file_offset(&elf, 0), None);
        }
    }
}
