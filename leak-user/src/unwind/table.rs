//! Compiles an ELF object's call frame information (CFI) into the compact rows that the eBPF
//! stack walker binary-searches (`leak_common::UnwindRow`, `leak-ebpf/src/unwind.rs`).
//!
//! The probes cannot interpret DWARF programs, so every FDE is evaluated here, once, when the
//! object is first seen, and each row is reduced to what an x86-64 walker needs: how to find the
//! CFA (RSP or RBP plus an offset) and where the caller's RBP was saved. Anything the probe
//! cannot follow becomes `cfa::UNKNOWN`, which makes it fall back to frame pointers.

use std::borrow::Cow;
use std::collections::HashMap;

use gimli::{
    BaseAddresses, CfaRule, CieOrFde, CommonInformationEntry, DebugFrame, EhFrame, EndianSlice,
    FrameDescriptionEntry, LittleEndian, Register, RegisterRule, UnwindContext, UnwindOffset,
    UnwindSection, X86_64,
};
use leak_common::{UnwindRow, cfa};
use object::{Architecture, FileKind, Object, ObjectKind, ObjectSection};

use super::prologue;

use crate::tracee::sections::{self, SectionError};

type Reader<'a> = EndianSlice<'a, LittleEndian>;

/// Rows evaluated per object at most (24 bytes each here): the largest real objects have a
/// few million, libc about 40 000. CFI of up to 1 GiB could otherwise describe hundreds of
/// millions, and the kernel table (`--max-unwind-rows`, 2 Mi by default) could not hold
/// them anyway.
const MAX_ROWS: usize = 1 << 23;

/// Why an object's unwind table could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The bytes do not start like an ELF file (another format, or too short to tell).
    #[error("not an ELF object")]
    NotElf,
    /// An ELF header was recognised but the file could not be parsed (truncated, corrupt).
    #[error("malformed ELF object: {0}")]
    MalformedElf(#[source] object::Error),
    /// Register numbers and the return address at CFA-8 are x86-64 conventions.
    #[error("unsupported architecture {0:?}: unwind rows are only built for x86-64")]
    UnsupportedArchitecture(Architecture),
    /// The object has neither `.eh_frame` nor `.debug_frame` (with contents).
    #[error("no .eh_frame or .debug_frame section")]
    NoCfi,
    /// A CFI section exists but its bytes could not be read (out of bounds, compressed).
    #[error("cannot read section {section}: {source}")]
    Section {
        section: &'static str,
        #[source]
        source: object::Error,
    },
    /// A compressed section declares more than
    /// [`MAX_INFLATED_SECTION_BYTES`](crate::tracee::files::MAX_INFLATED_SECTION_BYTES) inflated.
    #[error("section {section} would inflate to {size} bytes, more than leaktrace reads")]
    TooLarge { section: &'static str, size: u64 },
    /// More rows than [`MAX_ROWS`]: the object's frames use frame pointers.
    #[error("{section} describes more than {max} unwind rows")]
    TooManyRows { section: &'static str, max: usize },
    /// The CIE/FDE structure of the section could not be parsed.
    #[error("malformed CFI in {section}: {source}")]
    MalformedCfi {
        section: &'static str,
        #[source]
        source: gimli::Error,
    },
}

/// An object's rows and how many of its functions were unwound from their machine code.
#[derive(Debug, Default)]
pub struct Table {
    pub rows: Vec<UnwindRow>,
    pub functions_from_code: usize,
    /// Functions known from symbols and call targets, with or without CFI.
    pub functions: usize,
}

impl Table {
    /// Most of the object's functions have no CFI (musl's libc, hand-built libraries), as opposed
    /// to the few start-up stubs and assembly routines of an object built with unwind tables.
    pub fn mostly_from_code(&self) -> bool {
        self.functions_from_code * 2 > self.functions
    }
}

/// Compiles an ELF object's `.eh_frame` (and `.debug_frame` when there is no .eh_frame) into
/// compact rows, sorted by pc, in the object's own virtual address space.
///
/// Gaps between FDEs get a `cfa::UNKNOWN` row so they don't inherit a neighbour's rule. An FDE
/// whose instructions gimli cannot evaluate (e.g. `remember_state` nested too deep) is covered by
/// a single `cfa::UNKNOWN` row instead of failing the whole object; a section whose CIE/FDE
/// structure cannot be parsed is an error. Functions that no FDE describes get rows derived from
/// their code (see `prologue`).
#[cfg(test)]
pub fn build_rows(elf: &[u8]) -> Result<Vec<UnwindRow>, TableError> {
    build(elf).map(|table| table.rows)
}

/// `build_rows`, also telling how many functions were unwound from code.
pub fn build(elf: &[u8]) -> Result<Table, TableError> {
    let file = parse(elf)?;
    let cfi = match cfi_rows(&file) {
        Ok(rows) => rows,
        // Relocatable objects are never mapped as they are: without CFI they have nothing.
        Err(TableError::NoCfi) if file.kind() != ObjectKind::Relocatable => Vec::new(),
        Err(error) => return Err(error),
    };
    let mut functions = prologue::functions(&file, false);
    let described_count = functions.iter().filter(|f| described(&cfi, **f)).count();
    // Objects built with unwind tables give every compiled function an FDE: only those without
    // (most of) them need the functions that no symbol names.
    if described_count * 2 < functions.len() || functions.is_empty() {
        functions = prologue::functions(&file, true);
    }
    let total = functions.len();
    let derived: Vec<(prologue::Function, Vec<UnwindRow>)> = functions
        .into_iter()
        .filter(|function| !described(&cfi, *function))
        .filter_map(|function| {
            let code = prologue::code(&file, function)?;
            Some((function, prologue::derive(function, code)))
        })
        .collect();
    if cfi.is_empty() && derived.is_empty() {
        return Err(TableError::NoCfi);
    }
    Ok(Table {
        functions_from_code: derived.len(),
        functions: total,
        rows: fill_gaps(&cfi, &derived),
    })
}

fn parse(elf: &[u8]) -> Result<object::File<'_>, TableError> {
    match FileKind::parse(elf) {
        Ok(FileKind::Elf32 | FileKind::Elf64) => {}
        _ => return Err(TableError::NotElf),
    }
    let file = object::File::parse(elf).map_err(TableError::MalformedElf)?;
    if file.architecture() != Architecture::X86_64 {
        return Err(TableError::UnsupportedArchitecture(file.architecture()));
    }
    Ok(file)
}

/// The rows of the object's CFI alone.
fn cfi_rows(file: &object::File) -> Result<Vec<UnwindRow>, TableError> {
    // Pointer encodings in .eh_frame may be relative to these sections.
    let mut bases = BaseAddresses::default();
    let address = |name| file.section_by_name(name).map(|s| s.address());
    if let Some(a) = address(".eh_frame_hdr") {
        bases = bases.set_eh_frame_hdr(a);
    }
    if let Some(a) = address(".eh_frame") {
        bases = bases.set_eh_frame(a);
    }
    if let Some(a) = address(".text") {
        bases = bases.set_text(a);
    }
    if let Some(a) = address(".got") {
        bases = bases.set_got(a);
    }

    if let Some(data) = section_data(file, ".eh_frame")? {
        let mut eh_frame = EhFrame::new(&data, LittleEndian);
        eh_frame.set_address_size(8);
        return compile(&eh_frame, &bases, ".eh_frame", MAX_ROWS);
    }
    if let Some(data) = section_data(file, ".debug_frame")? {
        let mut debug_frame = DebugFrame::new(&data, LittleEndian);
        debug_frame.set_address_size(8);
        return compile(&debug_frame, &bases, ".debug_frame", MAX_ROWS);
    }
    Err(TableError::NoCfi)
}

/// The CFI row in force at `pc`, if any.
fn cfi_rule_at(rows: &[UnwindRow], pc: u64) -> Option<&UnwindRow> {
    let i = rows.partition_point(|row| row.pc <= pc);
    rows.get(i.checked_sub(1)?)
}

/// Whether some FDE describes part of `function`.
fn described(cfi: &[UnwindRow], function: prologue::Function) -> bool {
    let known = |row: &UnwindRow| row.cfa_reg != cfa::UNKNOWN;
    cfi_rule_at(cfi, function.start).is_some_and(known)
        || cfi
            .iter()
            .skip(cfi.partition_point(|row| row.pc <= function.start))
            .take_while(|row| row.pc < function.end)
            .any(known)
}

/// Lays rows derived from code into the parts of the CFI table that say nothing.
fn fill_gaps(
    cfi: &[UnwindRow],
    derived: &[(prologue::Function, Vec<UnwindRow>)],
) -> Vec<UnwindRow> {
    if derived.is_empty() {
        return cfi.to_vec();
    }
    let mut bounds: Vec<u64> = cfi.iter().map(|row| row.pc).collect();
    for (function, rows) in derived {
        bounds.extend(rows.iter().map(|row| row.pc));
        bounds.push(function.end);
    }
    bounds.sort_unstable();
    bounds.dedup();
    let derived_at = |pc: u64| {
        let i = derived.partition_point(|(function, _)| function.start <= pc);
        let (function, rows) = derived.get(i.checked_sub(1)?)?;
        (pc < function.end).then(|| cfi_rule_at(rows, pc)).flatten()
    };
    let mut out: Vec<UnwindRow> = Vec::with_capacity(bounds.len());
    for pc in bounds {
        let rule = match cfi_rule_at(cfi, pc) {
            Some(row) if row.cfa_reg != cfa::UNKNOWN => *row,
            _ => derived_at(pc).copied().unwrap_or(prologue::unknown(pc)),
        };
        if out
            .last()
            .is_none_or(|last| !prologue::same_rule(last, &rule))
        {
            out.push(UnwindRow { pc, ..rule });
        }
    }
    out
}

/// A section's bytes, or `None` when it is absent or has no contents (separate debug-info files
/// keep `.eh_frame` as `SHT_NOBITS`).
fn section_data<'data>(
    file: &object::File<'data>,
    name: &'static str,
) -> Result<Option<Cow<'data, [u8]>>, TableError> {
    let data = sections::section_data(file, name).map_err(|error| match error {
        SectionError::Read { source, .. } => TableError::Section {
            section: name,
            source,
        },
        SectionError::TooLarge { size, .. } => TableError::TooLarge {
            section: name,
            size,
        },
    })?;
    Ok(data.filter(|data| !data.is_empty()))
}

/// The part of a CFI row the probe uses (an `UnwindRow` without its pc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rule {
    cfa_reg: u8,
    cfa_offset: i32,
    rbp_saved: u8,
    rbp_offset: i16,
}

impl Rule {
    const UNKNOWN: Rule = Rule::only(cfa::UNKNOWN);
    const END: Rule = Rule::only(cfa::END);

    /// A rule without offsets, so equal rules merge regardless of leftover CFA state.
    const fn only(cfa_reg: u8) -> Rule {
        Rule {
            cfa_reg,
            cfa_offset: 0,
            rbp_saved: 0,
            rbp_offset: 0,
        }
    }

    fn at(self, pc: u64) -> UnwindRow {
        UnwindRow {
            pc,
            cfa_offset: self.cfa_offset,
            rbp_offset: self.rbp_offset,
            cfa_reg: self.cfa_reg,
            rbp_saved: self.rbp_saved,
        }
    }

    fn of(row: &UnwindRow) -> Rule {
        Rule {
            cfa_reg: row.cfa_reg,
            cfa_offset: row.cfa_offset,
            rbp_saved: row.rbp_saved,
            rbp_offset: row.rbp_offset,
        }
    }
}

/// One evaluated CFI row, `[start, end)`.
struct RawRow {
    start: u64,
    end: u64,
    rule: Rule,
}

/// One FDE: its address range and its rows in `RawRow` storage.
struct Span {
    start: u64,
    end: u64,
    rows: std::ops::Range<usize>,
}

/// Evaluates every FDE of `section`, then lays the FDEs out by address; more than `max_rows`
/// rows is an error.
fn compile<'a, S: UnwindSection<Reader<'a>>>(
    section: &S,
    bases: &BaseAddresses,
    name: &'static str,
    max_rows: usize,
) -> Result<Vec<UnwindRow>, TableError> {
    let malformed = |source| TableError::MalformedCfi {
        section: name,
        source,
    };
    // FDEs share a handful of CIEs; parsing each once keeps libc well under a millisecond per
    // thousand FDEs.
    let mut cies: HashMap<usize, CommonInformationEntry<Reader<'a>>> = HashMap::new();
    let mut ctx = UnwindContext::new();
    let mut raw = Vec::new();
    let mut spans = Vec::new();

    let mut entries = section.entries(bases);
    while let Some(entry) = entries.next().map_err(malformed)? {
        let partial = match entry {
            CieOrFde::Cie(cie) => {
                cies.insert(cie.offset(), cie);
                continue;
            }
            CieOrFde::Fde(partial) => partial,
        };
        let fde = partial
            .parse(|section, bases, offset| {
                let key = UnwindOffset::into(offset);
                if let Some(cie) = cies.get(&key) {
                    return Ok(cie.clone());
                }
                let cie = section.cie_from_offset(bases, offset)?;
                cies.insert(key, cie.clone());
                Ok(cie)
            })
            .map_err(malformed)?;
        let (start, end) = (fde.initial_address(), fde.end_address());
        // Empty FDEs and tombstoned ones (discarded code, address -1 wrapping) describe nothing.
        if end <= start {
            continue;
        }
        let first = raw.len();
        let evaluated = evaluate(section, bases, &mut ctx, &fde, &mut raw, max_rows);
        if raw.len() >= max_rows {
            return Err(TableError::TooManyRows {
                section: name,
                max: max_rows,
            });
        }
        if evaluated.is_err() || raw.len() == first {
            raw.truncate(first);
            raw.push(RawRow {
                start,
                end,
                rule: Rule::UNKNOWN,
            });
        }
        spans.push(Span {
            start,
            end,
            rows: first..raw.len(),
        });
    }

    // Stable: among FDEs starting at the same address, the first in the section wins.
    spans.sort_by_key(|span| span.start);
    Ok(lay_out(&spans, &raw))
}

/// Appends the non-empty rows of one FDE to `out`.
fn evaluate<'a, S: UnwindSection<Reader<'a>>>(
    section: &S,
    bases: &BaseAddresses,
    ctx: &mut UnwindContext<usize>,
    fde: &FrameDescriptionEntry<Reader<'a>>,
    out: &mut Vec<RawRow>,
    max_rows: usize,
) -> gimli::Result<()> {
    let ra = fde.cie().return_address_register();
    let mut table = fde.rows(section, bases, ctx)?;
    while out.len() < max_rows
        && let Some(row) = table.next_row()?
    {
        let (start, end) = (row.start_address(), row.end_address());
        if start < end {
            out.push(RawRow {
                start,
                end,
                rule: compact(row.cfa(), row.register(ra), row.register(X86_64::RBP)),
            });
        }
    }
    Ok(())
}

/// Reduces a full DWARF row to the probe's rule.
fn compact(cfa_rule: &CfaRule<usize>, ra: RegisterRule<usize>, rbp: RegisterRule<usize>) -> Rule {
    if ra == RegisterRule::Undefined {
        return Rule::END;
    }
    let CfaRule::RegisterAndOffset { register, offset } = *cfa_rule else {
        return Rule::UNKNOWN;
    };
    let cfa_reg = match register {
        X86_64::RSP => cfa::RSP,
        X86_64::RBP => cfa::RBP,
        Register(_) => return Rule::UNKNOWN,
    };
    let Ok(cfa_offset) = i32::try_from(offset) else {
        return Rule::UNKNOWN;
    };
    let rbp_offset = match rbp {
        RegisterRule::Offset(n) => i16::try_from(n).ok(),
        _ => None,
    };
    Rule {
        cfa_reg,
        cfa_offset,
        rbp_saved: u8::from(rbp_offset.is_some()),
        rbp_offset: rbp_offset.unwrap_or(0),
    }
}

/// Flattens FDEs (sorted by start) into rows sorted by pc.
///
/// Where an FDE overlaps ground already laid out, only its part past that ground is kept, so the
/// output stays sorted whatever the input. Where the next FDE starts later than the previous one
/// ended, an UNKNOWN row marks the gap; one also closes the table.
fn lay_out(spans: &[Span], raw: &[RawRow]) -> Vec<UnwindRow> {
    let mut out: Vec<UnwindRow> = Vec::with_capacity(raw.len() + spans.len());
    let mut covered: Option<u64> = None;
    for span in spans {
        let lower = match covered {
            Some(end) if span.end <= end => continue,
            Some(end) if span.start < end => end,
            Some(end) => {
                if span.start > end {
                    push(&mut out, end, Rule::UNKNOWN);
                }
                span.start
            }
            None => span.start,
        };
        for row in raw.get(span.rows.clone()).unwrap_or_default() {
            let start = row.start.max(lower);
            if start < row.end.min(span.end) {
                push(&mut out, start, row.rule);
            }
        }
        covered = Some(span.end);
    }
    if let Some(end) = covered {
        push(&mut out, end, Rule::UNKNOWN);
    }
    out
}

/// Appends a row unless it repeats the previous rule (the previous row already covers it).
fn push(out: &mut Vec<UnwindRow>, pc: u64, rule: Rule) {
    if out.last().is_some_and(|last| Rule::of(last) == rule) {
        return;
    }
    out.push(rule.at(pc));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracee::files::MAX_INFLATED_SECTION_BYTES;
    use object::ObjectSymbol;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";

    /// The rule in force at `pc`, as the probe's binary search finds it.
    fn rule_at(rows: &[UnwindRow], pc: u64) -> Option<UnwindRow> {
        let i = rows.partition_point(|r| r.pc <= pc);
        i.checked_sub(1).map(|i| rows[i])
    }

    /// Address and size of a symbol, from .symtab or .dynsym.
    fn symbol(elf: &[u8], name: &str) -> (u64, u64) {
        let file = object::File::parse(elf).unwrap();
        file.symbols()
            .chain(file.dynamic_symbols())
            .find(|s| s.name() == Ok(name) && s.address() != 0)
            .map(|s| (s.address(), s.size()))
            .unwrap_or_else(|| panic!("no symbol {name}"))
    }

    fn rows_in(rows: &[UnwindRow], (addr, size): (u64, u64)) -> Vec<UnwindRow> {
        let mut v: Vec<_> = rule_at(rows, addr).into_iter().collect();
        v.extend(rows.iter().filter(|r| r.pc > addr && r.pc < addr + size));
        v
    }

    fn check_sorted(rows: &[UnwindRow]) {
        assert!(
            rows.windows(2).all(|w| w[0].pc < w[1].pc),
            "rows not sorted"
        );
        assert!(
            rows.windows(2).all(|w| Rule::of(&w[0]) != Rule::of(&w[1])),
            "consecutive duplicate rows"
        );
        assert_eq!(rows.last().map(|r| r.cfa_reg), Some(cfa::UNKNOWN));
    }

    /// A scratch directory removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "leaktrace-table-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn gcc(dir: &Path, source: &str, args: &[&str], out: &str) -> Vec<u8> {
        let src = dir.join("prog.c");
        std::fs::write(&src, source).unwrap();
        let out = dir.join(out);
        let status = Command::new("gcc")
            .args(args)
            .arg("-o")
            .arg(&out)
            .arg(&src)
            .status()
            .expect("these tests need gcc");
        assert!(status.success(), "gcc {args:?} failed");
        std::fs::read(out).unwrap()
    }

    /// `work` keeps eight values live across calls to an opaque (`noipa`) function, which forces
    /// pushes of all six callee-saved registers (rbp included, there being no frame pointer), and
    /// has a local array (a `sub rsp`).
    const PROGRAM: &str = include_str!("testdata/unwind-table-program.c");

    #[test]
    fn libc_rows() {
        let elf = std::fs::read(LIBC).unwrap();
        let rows = build_rows(&elf).unwrap();
        assert!(rows.len() > 1000, "only {} rows", rows.len());
        check_sorted(&rows);

        let (malloc, _) = symbol(&elf, "malloc");
        let at_entry = rule_at(&rows, malloc).unwrap();
        assert_eq!(
            (at_entry.cfa_reg, at_entry.cfa_offset),
            (cfa::RSP, 8),
            "{at_entry:?}"
        );
        // Thread start (clone3) and similar end the walk.
        assert!(rows.iter().any(|r| r.cfa_reg == cfa::END));
    }

    /// libc's `.eh_frame` under a cap of 1000 rows: refused as a whole, not cut short.
    #[test]
    fn row_cap_refuses_the_object() {
        let elf = std::fs::read(LIBC).unwrap();
        let file = object::File::parse(&*elf).unwrap();
        let section = file.section_by_name(".eh_frame").unwrap();
        let mut bases = BaseAddresses::default().set_eh_frame(section.address());
        if let Some(text) = file.section_by_name(".text") {
            bases = bases.set_text(text.address());
        }
        let data = section.data().unwrap();
        let mut eh_frame = EhFrame::new(data, LittleEndian);
        eh_frame.set_address_size(8);
        let capped = compile(&eh_frame, &bases, ".eh_frame", 1000);
        assert!(
            matches!(
                capped,
                Err(TableError::TooManyRows {
                    section: ".eh_frame",
                    max: 1000
                })
            ),
            "{capped:?}"
        );
        assert!(
            compile(&eh_frame, &bases, ".eh_frame", MAX_ROWS)
                .unwrap()
                .len()
                > 1000
        );
    }

    #[test]
    fn omit_frame_pointer() {
        let dir = TempDir::new("o2");
        let elf = gcc(&dir.0, PROGRAM, &["-O2", "-fomit-frame-pointer"], "prog-o2");
        let rows = build_rows(&elf).unwrap();
        check_sorted(&rows);

        let work = symbol(&elf, "work");
        let entry = rule_at(&rows, work.0).unwrap();
        assert_eq!(
            (entry.cfa_reg, entry.cfa_offset),
            (cfa::RSP, 8),
            "{entry:?}"
        );
        let inside = rows_in(&rows, work);
        let deepest = inside
            .iter()
            .filter(|r| r.cfa_reg == cfa::RSP)
            .max_by_key(|r| r.cfa_offset)
            .unwrap();
        // Six pushes and a 256-byte array.
        assert!(deepest.cfa_offset >= 8 + 6 * 8 + 256, "{inside:?}");
        assert_eq!(entry.rbp_saved, 0, "{entry:?}");
        assert!(
            inside.iter().all(|r| r.cfa_reg == cfa::RSP),
            "no frame pointer expected: {inside:?}"
        );
        // rbp was pushed as a callee-saved register somewhere below the CFA.
        assert!(
            inside.iter().any(|r| r.rbp_saved == 1 && r.rbp_offset < -8),
            "{inside:?}"
        );

        // crt1's _start marks the return address undefined: the walk ends there.
        let start = symbol(&elf, "_start");
        let start_rows = rows_in(&rows, start);
        assert!(
            start_rows.iter().any(|r| r.cfa_reg == cfa::END),
            "{start_rows:?}"
        );
        // The padding after _start belongs to no FDE: it must not inherit END.
        assert_eq!(
            rule_at(&rows, start.0 + start.1).map(|r| r.cfa_reg),
            Some(cfa::UNKNOWN)
        );
    }

    #[test]
    fn frame_pointer() {
        let dir = TempDir::new("o0");
        let elf = gcc(&dir.0, PROGRAM, &["-O0"], "prog-o0");
        let rows = build_rows(&elf).unwrap();
        check_sorted(&rows);

        let work = symbol(&elf, "work");
        let entry = rule_at(&rows, work.0).unwrap();
        assert_eq!(
            (entry.cfa_reg, entry.cfa_offset),
            (cfa::RSP, 8),
            "{entry:?}"
        );
        // push %rbp; mov %rsp,%rbp
        let inside = rows_in(&rows, work);
        let fp = UnwindRow {
            pc: 0,
            cfa_reg: cfa::RBP,
            cfa_offset: 16,
            rbp_saved: 1,
            rbp_offset: -16,
        };
        assert!(
            inside.iter().any(|r| UnwindRow { pc: 0, ..*r } == fp),
            "{inside:?}"
        );
        assert!(
            inside
                .iter()
                .any(|r| (r.cfa_reg, r.cfa_offset, r.rbp_saved, r.rbp_offset)
                    == (cfa::RSP, 16, 1, -16)),
            "{inside:?}"
        );
    }

    /// Checks the layout against libc's own FDE list, read the other way: through the sorted
    /// search table in `.eh_frame_hdr`.
    #[test]
    fn libc_gaps_are_unknown() {
        let elf = std::fs::read(LIBC).unwrap();
        let rows = build_rows(&elf).unwrap();
        let file = object::File::parse(&*elf).unwrap();
        let section = |name| file.section_by_name(name).unwrap();
        let (hdr, eh) = (section(".eh_frame_hdr"), section(".eh_frame"));
        let bases = BaseAddresses::default()
            .set_eh_frame_hdr(hdr.address())
            .set_eh_frame(eh.address())
            .set_text(section(".text").address());
        let eh_frame = EhFrame::new(eh.data().unwrap(), LittleEndian);
        let parsed = gimli::EhFrameHdr::new(hdr.data().unwrap(), LittleEndian)
            .parse(&bases, 8)
            .unwrap();
        let table = parsed.table().unwrap();
        let mut iter = table.iter(&bases);
        let mut fdes = Vec::new();
        while let Some((_, fde_ptr)) = iter.next().unwrap() {
            let offset = table.pointer_to_offset(fde_ptr).unwrap();
            let fde = eh_frame
                .fde_from_offset(&bases, offset, EhFrame::cie_from_offset)
                .unwrap();
            fdes.push((fde.initial_address(), fde.end_address()));
        }
        assert!(fdes.len() > 1000);

        let mut gaps = 0;
        for pair in fdes.windows(2) {
            if pair[0].1 != pair[1].0 {
                gaps += 1;
                let rule = rule_at(&rows, pair[0].1).unwrap();
                assert_eq!(rule.cfa_reg, cfa::UNKNOWN, "gap after {:x?}", pair[0]);
            }
        }
        assert!(gaps > 100, "only {gaps} gaps");
        // Every row that is not a sentinel lies inside an FDE.
        for row in rows.iter().filter(|r| r.cfa_reg != cfa::UNKNOWN) {
            let i = fdes.partition_point(|f| f.0 <= row.pc);
            assert!(i > 0 && row.pc < fdes[i - 1].1, "{row:?} outside every FDE");
        }
    }

    /// Without `.eh_frame` contents (`-fno-asynchronous-unwind-tables`, no crt files) the rows
    /// come from `.debug_frame`.
    #[test]
    fn debug_frame_fallback() {
        let dir = TempDir::new("debugframe");
        let elf = gcc(
            &dir.0,
            PROGRAM,
            &[
                "-O2",
                "-fomit-frame-pointer",
                "-g",
                "-fno-asynchronous-unwind-tables",
                "-fno-unwind-tables",
                "-shared",
                "-nostdlib",
                "-fPIC",
            ],
            "libdf.so",
        );
        let file = object::File::parse(&*elf).unwrap();
        assert!(
            file.section_by_name(".eh_frame")
                .is_none_or(|s| s.size() == 0)
        );
        let rows = build_rows(&elf).unwrap();
        check_sorted(&rows);
        let work = symbol(&elf, "work");
        let entry = rule_at(&rows, work.0).unwrap();
        assert_eq!(
            (entry.cfa_reg, entry.cfa_offset),
            (cfa::RSP, 8),
            "{entry:?}"
        );
        let inside = rows_in(&rows, work);
        assert!(
            inside
                .iter()
                .any(|r| r.cfa_reg == cfa::RSP && r.cfa_offset >= 8 + 6 * 8 + 256),
            "{inside:?}"
        );
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(matches!(build_rows(b""), Err(TableError::NotElf)));
        assert!(matches!(
            build_rows(b"#!/bin/sh\necho hi\n"),
            Err(TableError::NotElf)
        ));

        let elf = std::fs::read(LIBC).unwrap();
        for len in [4, 16, 64, 4096, elf.len() / 2, elf.len() - 1] {
            assert!(build_rows(&elf[..len]).is_err(), "truncated to {len}");
        }

        // Garbage in .eh_frame: the first entry's length claims more than the section holds.
        let file = object::File::parse(&*elf).unwrap();
        let (offset, size) = file
            .section_by_name(".eh_frame")
            .unwrap()
            .file_range()
            .unwrap();
        let mut corrupt = elf.clone();
        corrupt[offset as usize..(offset + size) as usize].fill(0xff);
        assert!(matches!(
            build_rows(&corrupt),
            Err(TableError::MalformedCfi {
                section: ".eh_frame",
                ..
            })
        ));
    }

    #[test]
    fn object_without_cfi() {
        let dir = TempDir::new("nocfi");
        let elf = gcc(
            &dir.0,
            "int f(int x) { return x + 1; }\n",
            &[
                "-c",
                "-O2",
                "-fno-asynchronous-unwind-tables",
                "-fno-unwind-tables",
            ],
            "f.o",
        );
        assert!(matches!(build_rows(&elf), Err(TableError::NoCfi)));
    }

    #[test]
    fn compressed_sections_declaring_too_much_are_refused_before_inflating() {
        let dir = TempDir::new("inflate");
        let flags = ["-g", "-gz=zlib", "-fno-asynchronous-unwind-tables"];
        let mut elf = gcc(&dir.0, PROGRAM, &flags, "prog");
        let file = object::File::parse(elf.as_slice()).unwrap();
        // As built: inflates to its real size.
        let inflated = section_data(&file, ".debug_frame").unwrap().unwrap();
        assert!(!inflated.is_empty());
        // The compressed bytes follow the 24-byte Elf64_Chdr: ch_type, ch_reserved, then
        // ch_size, the declared inflated size.
        let data_offset = file
            .section_by_name(".debug_frame")
            .and_then(|s| s.compressed_file_range().ok())
            .map(|r| r.offset as usize)
            .unwrap();
        let declared = MAX_INFLATED_SECTION_BYTES + 1;
        elf[data_offset - 16..data_offset - 8].copy_from_slice(&declared.to_le_bytes());
        let file = object::File::parse(elf.as_slice()).unwrap();
        let err = section_data(&file, ".debug_frame").unwrap_err();
        assert!(
            matches!(err, TableError::TooLarge { section: ".debug_frame", size } if size == declared),
            "{err}"
        );
    }
}
