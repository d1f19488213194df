//! Go's inline trees: which functions the compiler inlined at a pc, as the runtime itself
//! expands them in tracebacks and `runtime.CallersFrames` (runtime/symtabinl.go in 1.21+,
//! `tracebackPCs` and `Frames.Next` in runtime/symtab.go before).
//!
//! A function with inlined calls has a pc-value table (`_PCDATA_InlTreeIndex`) giving at each
//! pc the index of the innermost inlined call there (-1 in its own code), and a funcdata
//! (`_FUNCDATA_InlTree`) locating its tree: an array of `inlinedCall` at
//! `moduledata.gofunc + offset`. Each entry names the inlined function and gives `parentPc`,
//! the offset from the function's entry of an instruction whose position is the call site:
//! the index and the file and line there give the caller's frame, and so on outwards.
//!
//! `gofunc` is the address of the linker's `go:func.*` symbol (`go.func.*` before 1.20).
//! Without `.symtab` it is read from `runtime.firstmoduledata`, whose layout changes between
//! Go versions; a candidate is accepted only when the trees it points at decode as trees
//! ([`plausible`]), which a wrong address does not survive.
use object::{Object, ObjectSegment, ObjectSymbol};

use super::elf_data::{i32_at, u64_at};
use super::moduledata::{MD_KEPT, MD_TEXT};
use super::pclntab::Pclntab;

/// `moduledata.gofunc` in the layouts checked against real toolchains (runtime/symtab.go and
/// the `go.func.*`/`go:func.*` symbol of their builds): Go 1.19 (`end, gcdata, gcbss, types,
/// etypes, rodata, gofunc`) and Go 1.27 (which adds `covctrs, ecovctrs` before `end`, and
/// `typedesclen` and `itaboffset, itabsize` around `etypes`). Other versions are found by
/// trying the other words of moduledata.
const MD_GOFUNC_GO118: usize = 304;
const MD_GOFUNC_GO127: usize = 344;

/// Functions whose trees [`plausible`] decodes before accepting a `gofunc`.
const PLAUSIBLE_TREES: usize = 64;

/// Tree entries [`plausible`] checks at most: a corrupt index table may claim up to 2^32
/// entries per function, each checked entry costs a name lookup.
const PLAUSIBLE_ENTRIES: u32 = 1 << 14;

/// Inlined calls deeper than this at one pc mean a corrupt tree (a cycle through parentPc).
const MAX_DEPTH: usize = 256;

/// Layout of one `inlinedCall`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// Go 1.18-1.19: `parent int16; funcID uint8; _ byte; file int32; line int32;
    /// func_ int32 (name offset); parentPc int32`.
    Go118,
    /// Go 1.20+: `funcID uint8; _ [3]byte; nameOff int32; parentPc int32; startLine int32`.
    Go120,
}

impl Layout {
    fn of(table: &Pclntab) -> Layout {
        if table.is_go118() {
            Layout::Go118
        } else {
            Layout::Go120
        }
    }

    fn entry_len(self) -> usize {
        match self {
            Layout::Go118 => 20,
            Layout::Go120 => 16,
        }
    }

    /// Offsets of `nameOff` and `parentPc` in an entry.
    fn fields(self) -> (usize, usize) {
        match self {
            Layout::Go118 => (12, 16),
            Layout::Go120 => (4, 8),
        }
    }
}

/// One inlined call of a tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InlinedCall {
    /// The inlined function's name, as an offset in the function name table.
    pub name_off: i32,
    /// Offset from the physical function's entry of an instruction at the call site.
    pub parent_pc: i32,
}

/// Where `gofunc` came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GofuncSource {
    /// The `go:func.*` (1.20+) or `go.func.*` symbol.
    Symtab,
    /// `runtime.firstmoduledata`, at this offset.
    Moduledata(usize),
}

/// The inline trees of a binary: the bytes from `gofunc` to the end of its segment.
pub struct InlineTrees {
    gofunc: u64,
    data: Vec<u8>,
    layout: Layout,
    source: GofuncSource,
}

impl std::fmt::Debug for InlineTrees {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineTrees")
            .field("gofunc", &format_args!("{:#x}", self.gofunc))
            .field("layout", &self.layout)
            .field("source", &self.source)
            .finish()
    }
}

impl InlineTrees {
    /// Finds `gofunc` and keeps what it points at; `None` when no candidate leads to trees
    /// that decode (or the binary has none).
    pub fn find(
        file: &object::File<'_>,
        table: &Pclntab,
        moduledata: Option<&[u8]>,
    ) -> Option<InlineTrees> {
        let layout = Layout::of(table);
        let symbol = file
            .symbols()
            .find(|s| matches!(s.name(), Ok("go:func.*" | "go.func.*")))
            .map(|s| (GofuncSource::Symtab, s.address()));
        // The known offsets first, then any other word past `text` (the layouts of the
        // versions in between): only a plausible candidate is taken.
        let known = match layout {
            Layout::Go118 => [MD_GOFUNC_GO118, MD_GOFUNC_GO127],
            Layout::Go120 => [MD_GOFUNC_GO127, MD_GOFUNC_GO118],
        };
        let others = (MD_TEXT + 8..MD_KEPT)
            .step_by(8)
            .filter(|off| !known.contains(off));
        let from_moduledata = known.into_iter().chain(others).filter_map(|off| {
            let gofunc = u64_at(moduledata?, off)?;
            Some((GofuncSource::Moduledata(off), gofunc))
        });
        symbol
            .into_iter()
            .chain(from_moduledata)
            .find_map(|(source, gofunc)| {
                let data = segment_tail(file, gofunc)?;
                let trees = InlineTrees {
                    gofunc,
                    data: data.to_vec(),
                    layout,
                    source,
                };
                plausible(table, &trees).then_some(trees)
            })
    }

    /// Entry `index` of the tree at `tree_off` from `gofunc`.
    pub fn call(&self, tree_off: u32, index: u32) -> Option<InlinedCall> {
        let at = usize::try_from(tree_off).ok()?.checked_add(
            usize::try_from(index)
                .ok()?
                .checked_mul(self.layout.entry_len())?,
        )?;
        let entry = self
            .data
            .get(at..at.checked_add(self.layout.entry_len())?)?;
        let (name, parent_pc) = self.layout.fields();
        Some(InlinedCall {
            name_off: i32_at(entry, name)?,
            parent_pc: i32_at(entry, parent_pc)?,
        })
    }
}

/// One frame of an inline expansion: the function (its name in the table), and the pc whose
/// file and line are that frame's position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InlineStep<'a> {
    /// `None` for the physical function.
    pub inlined: Option<&'a str>,
    pub pc: u64,
}

/// The frames at `pc` inside function `index` of the table, innermost first, as the runtime's
/// inline unwinder walks them: each inlined call at the current pc, its position that of the
/// current pc, then on to `entry + parentPc`; last the physical function at the final pc.
/// Without trees (or for a corrupt one) only the physical function, at `pc`. Unlike the
/// runtime's tracebacks, inlined wrappers (`funcID` wrapper, `<autogenerated>`) are not
/// elided: the runtime hides them depending on the frame called, which a pc alone does not
/// tell.
pub fn expand<'a>(
    table: &'a Pclntab,
    trees: Option<&InlineTrees>,
    index: usize,
    pc: u64,
) -> Vec<InlineStep<'a>> {
    let physical = |pc| vec![InlineStep { inlined: None, pc }];
    let (Some(trees), Some(func)) = (trees, table.func(index)) else {
        return physical(pc);
    };
    let Some(tree_off) = table.inline_tree(&func) else {
        return physical(pc);
    };
    let mut steps = Vec::new();
    let mut at = pc;
    while let Some(ix) = table.inline_index(&func, at) {
        let next = trees.call(tree_off, ix).and_then(|call| {
            let name = table.name_at(call.name_off)?;
            let parent = func
                .entry
                .checked_add(u64::try_from(call.parent_pc).ok()?)?;
            (parent < func.end).then_some((name, parent))
        });
        let Some((name, parent)) = next.filter(|_| steps.len() < MAX_DEPTH) else {
            log::debug!(
                "{}: corrupt inline tree at {pc:#x}: no inline expansion",
                func.name
            );
            return physical(pc);
        };
        steps.push(InlineStep {
            inlined: Some(name),
            pc: at,
        });
        at = parent;
    }
    steps.push(InlineStep {
        inlined: None,
        pc: at,
    });
    steps
}

/// Whether the trees of the first [`PLAUSIBLE_TREES`] functions that have one decode: every
/// entry their index tables use names a function of the name table and has its parentPc
/// inside the function. At least one tree must have been checked.
fn plausible(table: &Pclntab, trees: &InlineTrees) -> bool {
    let mut checked = 0;
    let mut entries_left = PLAUSIBLE_ENTRIES;
    for i in 0..table.len() {
        let Some(func) = table.func(i) else { continue };
        let (Some(tree_off), Some(max)) = (table.inline_tree(&func), table.max_inline_index(&func))
        else {
            continue;
        };
        let size = func.end.saturating_sub(func.entry);
        let Some(left) = entries_left.checked_sub(max.saturating_add(1)) else {
            // Checking this tree would exceed the budget: judge by those checked.
            break;
        };
        entries_left = left;
        for ix in 0..=max {
            let Some(call) = trees.call(tree_off, ix) else {
                return false;
            };
            let parent_ok = u64::try_from(call.parent_pc).is_ok_and(|pc| pc < size);
            if !parent_ok || table.name_at(call.name_off).is_none() {
                return false;
            }
        }
        checked += 1;
        if checked == PLAUSIBLE_TREES {
            break;
        }
    }
    checked > 0
}

/// The file bytes from virtual address `addr` to the end of the segment holding it.
fn segment_tail<'data>(file: &object::File<'data>, addr: u64) -> Option<&'data [u8]> {
    file.segments().find_map(|segment| {
        let (start, data) = (segment.address(), segment.data().ok()?);
        let off = usize::try_from(addr.checked_sub(start)?).ok()?;
        (off < data.len()).then(|| &data[off..])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golang::buildinfo::go_version;
    use crate::golang::moduledata;
    use crate::golang::testutil::{self, TOOLCHAINS, Variant};

    const VARIANTS: [Variant; 5] = [
        Variant::Plain,
        Variant::Stripped,
        Variant::PieStripped,
        Variant::Cgo,
        Variant::CgoStripped,
    ];

    fn gofunc_symbol(file: &object::File<'_>) -> Option<u64> {
        file.symbols()
            .find(|s| matches!(s.name(), Ok("go:func.*" | "go.func.*")))
            .map(|s| s.address())
    }

    fn table_of(located: &moduledata::Located) -> Pclntab {
        Pclntab::new(located.data.clone(), located.header, located.text_start)
    }

    /// The offset of `gofunc` in `runtime.moduledata` read from each toolchain's
    /// runtime/symtab.go holds the `go:func.*` symbol's address in the unstripped builds, and
    /// is where stripped builds find it.
    #[test]
    fn gofunc_is_found_in_every_build() {
        for toolchain in TOOLCHAINS {
            let minor = go_version(&testutil::read(&testutil::build(toolchain, Variant::Plain)))
                .unwrap()
                .minor;
            let offset = match minor {
                19 => MD_GOFUNC_GO118,
                27 => MD_GOFUNC_GO127,
                _ => panic!("no expectation for Go 1.{minor}"),
            };
            for variant in VARIANTS {
                let what = format!("{toolchain:?} {variant:?}");
                let elf = testutil::read(&testutil::build(toolchain, variant));
                let file = object::File::parse(&*elf).unwrap();
                let located = moduledata::locate(&file).unwrap();
                let md = located.moduledata.as_deref().expect("moduledata found");
                let table = table_of(&located);
                let trees = InlineTrees::find(&file, &table, Some(md)).expect(&what);
                assert_eq!(u64_at(md, offset), Some(trees.gofunc), "{what}");
                match gofunc_symbol(&file) {
                    Some(symbol) => {
                        assert_eq!(trees.gofunc, symbol, "{what}");
                        assert_eq!(trees.source, GofuncSource::Symtab, "{what}");
                    }
                    None => {
                        assert!(
                            matches!(
                                variant,
                                Variant::Stripped | Variant::PieStripped | Variant::CgoStripped
                            ),
                            "{what}"
                        );
                        assert_eq!(trees.source, GofuncSource::Moduledata(offset), "{what}");
                    }
                }
            }
        }
    }

    /// No other word of moduledata, nor an address near `gofunc`, passes for it.
    #[test]
    fn only_gofunc_is_plausible() {
        for toolchain in TOOLCHAINS {
            for variant in [Variant::Stripped, Variant::Cgo] {
                let what = format!("{toolchain:?} {variant:?}");
                let elf = testutil::read(&testutil::build(toolchain, variant));
                let file = object::File::parse(&*elf).unwrap();
                let located = moduledata::locate(&file).unwrap();
                let md = located.moduledata.as_deref().unwrap();
                let table = table_of(&located);
                let gofunc = InlineTrees::find(&file, &table, Some(md)).unwrap().gofunc;
                let trees_at = |gofunc: u64| {
                    Some(InlineTrees {
                        gofunc,
                        data: segment_tail(&file, gofunc)?.to_vec(),
                        layout: Layout::of(&table),
                        source: GofuncSource::Symtab,
                    })
                };
                assert!(plausible(&table, &trees_at(gofunc).unwrap()), "{what}");
                let words = (0..md.len()).step_by(8).filter_map(|off| u64_at(md, off));
                let near = [4, 8, 16, 20]
                    .into_iter()
                    .flat_map(|d| [gofunc - d, gofunc + d]);
                let mut rejected = 0;
                for candidate in words.chain(near).filter(|&c| c != gofunc) {
                    if let Some(trees) = trees_at(candidate) {
                        assert!(!plausible(&table, &trees), "{what}: {candidate:#x}");
                        rejected += 1;
                    }
                }
                assert!(rejected >= 20, "{what}: {rejected}");
            }
        }
    }
}
