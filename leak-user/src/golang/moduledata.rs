//! Finding `.gopclntab` in an ELF image and the text address its function entries are offsets
//! from. Newer Go (1.27; 1.19 still does) no longer stores that address in the table header
//! (it needed a relocation); the runtime takes it from `moduledata.text`, and so do we when
//! `.symtab` (and its `runtime.text`) was stripped. With external linking (cgo) `.text`
//! starts with C code, so the section address is only a last resort.
//!
//! `runtime.firstmoduledata` itself, found by its pointers to the table, is kept for the
//! other fields a stripped binary has no symbol for (`gofunc`, see `inltree`).
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

use super::elf_data::{segment_has, u32_at, u64_at};
use super::pclntab::{Header, MAGIC_GO118, MAGIC_GO120, PclntabError};

/// Offsets in `runtime.moduledata` (the same in the Go 1.19 and 1.27 sources; a layout that
/// differs fails the pointer checks and falls through): the pcHeader pointer, the
/// funcnametab slice, the ftab slice and `text`.
const MD_PCHEADER: usize = 0;
const MD_FUNCNAMETAB: usize = 8;
const MD_FTAB_PTR: usize = 128;
const MD_FTAB_LEN: usize = 136;
pub const MD_TEXT: usize = 176;
/// How much of `runtime.moduledata` is kept: past `gofunc` in every layout read so far (1.19:
/// 304, 1.27: 344), with room for fields later versions add before it.
pub const MD_KEPT: usize = 512;

/// How the text start was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextSource {
    /// The pclntab header (Go 1.19; zero in 1.27).
    Header,
    /// The `runtime.text` symbol.
    Symtab,
    /// `runtime.firstmoduledata.text`, found by its pointer to the pclntab.
    Moduledata,
    /// The `.text` section address (correct for Go's internal linker only).
    TextSection,
}

/// The table's bytes and what is needed to decode them.
pub struct Located {
    pub data: Vec<u8>,
    pub header: Header,
    pub text_start: u64,
    pub text_source: TextSource,
    /// The first [`MD_KEPT`] bytes (fewer at the end of its segment) of the
    /// `runtime.moduledata` pointing at the table, when one was found.
    pub moduledata: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    #[error("no .gopclntab (not a Go >= 1.18 binary)")]
    NoPclntab,
    #[error(transparent)]
    Pclntab(#[from] PclntabError),
    #[error("cannot tell where the Go text starts")]
    NoTextStart,
}

pub fn locate(file: &object::File<'_>) -> Result<Located, LocateError> {
    let (data, addr) = find_table(file)?;
    let header = Header::parse(data)?;
    let moduledata = find_moduledata(file, addr, &header);
    let first = u32_at(data, header.functab).ok_or(LocateError::NoTextStart)?;
    let end = u32_at(data, header.functab + 8 * header.nfunc).ok_or(LocateError::NoTextStart)?;
    let candidates = [
        (
            TextSource::Header,
            Some(header.text_start).filter(|&t| t != 0),
        ),
        (TextSource::Symtab, symbol(file, "runtime.text")),
        (
            TextSource::Moduledata,
            moduledata.and_then(|md| u64_at(md, MD_TEXT)),
        ),
        (
            TextSource::TextSection,
            file.section_by_name(".text").map(|s| s.address()),
        ),
    ];
    let (text_source, text_start) = candidates
        .into_iter()
        .find_map(|(source, text)| {
            let text = text?;
            executable(
                file,
                text.checked_add(first.into())?,
                text.checked_add(end.into())?,
            )
            .then_some((source, text))
        })
        .ok_or(LocateError::NoTextStart)?;
    Ok(Located {
        data: data.to_vec(),
        header,
        text_start,
        text_source,
        moduledata: moduledata.map(<[u8]>::to_vec),
    })
}

/// The table's bytes and address: the `.gopclntab` section (`.data.rel.ro.gopclntab` in
/// some PIE builds), else a header found in a loaded segment when section headers are gone.
fn find_table<'data>(file: &object::File<'data>) -> Result<(&'data [u8], u64), LocateError> {
    if let Some(section) = file
        .sections()
        .find(|s| s.name().is_ok_and(|name| name.ends_with(".gopclntab")))
    {
        let data = section.data().map_err(|_| LocateError::NoPclntab)?;
        return Ok((data, section.address()));
    }
    for segment in file.segments() {
        let Ok(data) = segment.data() else { continue };
        // The linker aligns the table to at least 8 bytes.
        let first = ((8 - segment.address() % 8) % 8) as usize;
        for off in (first..data.len()).step_by(8) {
            let magic = u32_at(data, off);
            if matches!(magic, Some(MAGIC_GO118 | MAGIC_GO120))
                && Header::parse(&data[off..]).is_ok_and(|h| h.nfunc > 0)
            {
                let addr = segment.address().checked_add(off as u64);
                return addr
                    .map(|addr| (&data[off..], addr))
                    .ok_or(LocateError::NoPclntab);
            }
        }
    }
    Err(LocateError::NoPclntab)
}

fn symbol(file: &object::File<'_>, name: &str) -> Option<u64> {
    file.symbols()
        .find(|s| s.name() == Ok(name))
        .map(|s| s.address())
}

/// The start of the `runtime.moduledata` whose pcHeader pointer is `table_addr` (up to
/// [`MD_KEPT`] bytes), checked against the funcnametab and ftab slices so that a stray equal
/// word is not mistaken for it. Go's linker writes these pointers in place even in PIE
/// binaries.
fn find_moduledata<'data>(
    file: &object::File<'data>,
    table_addr: u64,
    header: &Header,
) -> Option<&'data [u8]> {
    // Only compared with words read from the file: wrapping is harmless.
    let funcnametab = table_addr.wrapping_add(header.funcname as u64);
    let ftab = table_addr.wrapping_add(header.functab as u64);
    let ftab_len = header.nfunc as u64 + 1;
    file.segments()
        .filter(|segment| segment_has(segment, object::elf::PF_W))
        .find_map(|segment| {
            let data = segment.data().ok()?;
            let first = ((8 - segment.address() % 8) % 8) as usize;
            (first..data.len()).step_by(8).find_map(|off| {
                let at = |field: usize| u64_at(data, off + field);
                (at(MD_PCHEADER)? == table_addr
                    && at(MD_FUNCNAMETAB)? == funcnametab
                    && at(MD_FTAB_PTR)? == ftab
                    && at(MD_FTAB_LEN)? == ftab_len)
                    .then(|| &data[off..data.len().min(off + MD_KEPT)])
            })
        })
}

/// Whether `[start, end)` lies in one executable segment.
fn executable(file: &object::File<'_>, start: u64, end: u64) -> bool {
    file.segments().any(|segment| {
        segment_has(&segment, object::elf::PF_X)
            && start >= segment.address()
            && end <= segment.address().saturating_add(segment.size())
    })
}
