//! What leaktrace needs from an ELF object: exported functions as file offsets (uprobes are
//! placed by offset), the dynamic-linking names, and the segment layout.
use std::{path::Path, sync::Arc};

use object::{
    Endianness, Object as _, ObjectSection as _, ObjectSymbol as _, SymbolKind,
    elf::{DT_NEEDED, DT_SONAME, PT_INTERP, PT_LOAD},
    read::elf::{Dyn as _, ElfFile64, ProgramHeader as _},
};
use thiserror::Error;

use super::files::{self, FileError, ObjectFile};

#[derive(Debug, Error)]
pub enum ElfError {
    #[error(transparent)]
    File(#[from] FileError),
    /// A mapped object asked for with no process to open it through.
    #[error("cannot open {path}: no process to open it through")]
    NotOpened { path: String },
    #[error("{path} is not a 64-bit ELF object: {source}")]
    Parse {
        path: String,
        source: object::read::Error,
    },
}

/// A parsed ELF file over its mapped contents.
pub struct ElfObject {
    pub path: String,
    file: Arc<ObjectFile>,
}

impl ElfObject {
    /// A host path leaktrace chose itself (the program of `run -- CMD`, tests); a target's
    /// files come through [`files::TargetFiles`] and [`ElfObject::from_file`].
    pub fn open(path: &Path) -> Result<Self, ElfError> {
        Self::from_file(files::open_host(path)?)
    }

    pub fn from_file(file: ObjectFile) -> Result<Self, ElfError> {
        let object = Self {
            path: file.label().to_owned(),
            file: Arc::new(file),
        };
        object.parse()?;
        Ok(object)
    }

    pub fn data(&self) -> &[u8] {
        self.file.data()
    }

    /// The opened file, e.g. for its [`ObjectFile::kernel_path`].
    pub fn file(&self) -> &ObjectFile {
        &self.file
    }

    /// The opened file, shared: probes placed in it through its
    /// [`ObjectFile::kernel_path`] need it open until they are attached.
    pub fn shared_file(&self) -> Arc<ObjectFile> {
        Arc::clone(&self.file)
    }

    fn parse(&self) -> Result<ElfFile64<'_, Endianness>, ElfError> {
        ElfFile64::parse(self.data()).map_err(|source| ElfError::Parse {
            path: self.path.clone(),
            source,
        })
    }

    /// Defined functions whose names `wanted` accepts: exported ones from the dynamic symbol
    /// table first, then those only in the full symbol table (static binaries, and allocators
    /// linked into an executable without exporting them).
    pub fn functions(&self, wanted: impl Fn(&str) -> bool) -> Vec<FunctionSymbol> {
        let Ok(elf) = self.parse() else {
            return Vec::new();
        };
        let mut found: Vec<FunctionSymbol> = Vec::new();
        for (table, exported) in [(elf.dynamic_symbols(), true), (elf.symbols(), false)] {
            for symbol in table {
                if !symbol.is_definition() || symbol.kind() != SymbolKind::Text {
                    continue;
                }
                let Ok(name) = symbol.name() else { continue };
                // Versioned names from some toolchains: "malloc@@GLIBC_2.2.5".
                let name = name.split('@').next().unwrap_or(name);
                if !wanted(name) || found.iter().any(|f| f.name == name) {
                    continue;
                }
                if let Some(offset) = file_offset(&elf, symbol.address()) {
                    found.push(FunctionSymbol {
                        name: name.to_owned(),
                        offset,
                        size: symbol.size(),
                        exported,
                    });
                }
            }
        }
        found
    }

    /// The bytes of the file from `offset`, at most `len` of them.
    pub fn bytes_at(&self, offset: u64, len: u64) -> &[u8] {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let Some(rest) = self.data().get(start..) else {
            return &[];
        };
        let len = usize::try_from(len).unwrap_or(usize::MAX).min(rest.len());
        &rest[..len]
    }

    /// File offset of the entry point (`e_entry`).
    pub fn entry_offset(&self) -> Option<u64> {
        let elf = self.parse().ok()?;
        file_offset(&elf, elf.entry())
    }

    pub fn soname(&self) -> Option<String> {
        self.dynamic_strings(DT_SONAME).into_iter().next()
    }

    pub fn needed(&self) -> Vec<String> {
        self.dynamic_strings(DT_NEEDED)
    }

    /// The program interpreter (dynamic loader) path.
    pub fn interpreter(&self) -> Option<String> {
        let elf = self.parse().ok()?;
        let endian = elf.endian();
        let header = elf
            .elf_program_headers()
            .iter()
            .find(|ph| ph.p_type(endian) == PT_INTERP)?;
        let bytes = header.data(endian, self.data()).ok()?;
        let bytes = bytes.split(|b| *b == 0).next()?;
        Some(String::from_utf8_lossy(bytes).into_owned())
    }

    /// Go binaries carry `.go.buildinfo`, even when stripped.
    pub fn is_go(&self) -> bool {
        self.parse()
            .is_ok_and(|elf| elf.section_by_name(".go.buildinfo").is_some())
    }

    /// The loadable segments: where each part of the file lands in the object's address space.
    pub fn load_segments(&self) -> Vec<LoadSegment> {
        let Ok(elf) = self.parse() else {
            return Vec::new();
        };
        let endian = elf.endian();
        elf.elf_program_headers()
            .iter()
            .filter(|ph| ph.p_type(endian) == PT_LOAD)
            .map(|ph| LoadSegment {
                offset: ph.p_offset(endian),
                file_size: ph.p_filesz(endian),
                vaddr: ph.p_vaddr(endian),
            })
            .collect()
    }

    fn dynamic_strings(&self, tag: u32) -> Vec<String> {
        let Ok(elf) = self.parse() else {
            return Vec::new();
        };
        let endian = elf.endian();
        let data = self.data();
        let sections = elf.elf_section_table();
        let Ok(Some((entries, link))) = sections.dynamic(endian, data) else {
            return Vec::new();
        };
        let Ok(strings) = sections.strings(endian, data, link) else {
            return Vec::new();
        };
        entries
            .iter()
            .filter(|entry| entry.tag32(endian) == Some(tag))
            .filter_map(|entry| entry.string(endian, strings).ok())
            .map(|name| String::from_utf8_lossy(name).into_owned())
            .collect()
    }
}

/// A defined function of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSymbol {
    pub name: String,
    /// File offset of its first instruction.
    pub offset: u64,
    /// Its size in bytes (0 when the symbol does not say).
    pub size: u64,
    /// In the dynamic symbol table: other objects bind to it.
    pub exported: bool,
}

/// A `PT_LOAD` program header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSegment {
    pub offset: u64,
    pub file_size: u64,
    pub vaddr: u64,
}

/// The virtual address a mapping of the file from `offset` (page-aligned, as
/// `/proc/PID/maps` gives it) starts at.
///
/// The loader maps each segment from its offset rounded down to a page, so the segment a
/// mapping comes from is the one whose start rounds down to the mapping's offset. Looking for
/// the segment that contains the offset instead goes wrong when segments are packed in the
/// file: Rust's and lld's executables start `.text` mid-page (file 0x25640, address 0x26640),
/// and its mapping's offset 0x25000 lies inside the read-only segment before it, off by a page.
/// Header fields come from the file: nothing here may wrap.
pub fn vaddr_of_offset(segments: &[LoadSegment], offset: u64) -> Option<u64> {
    const PAGE: u64 = 4096;
    let mapped_from = |s: &&LoadSegment| s.offset & !(PAGE - 1) == offset;
    if let Some(s) = segments.iter().find(mapped_from) {
        return s.vaddr.checked_sub(s.offset - offset);
    }
    segments.iter().find_map(|s| {
        let rel = offset.checked_sub(s.offset)?;
        if rel >= s.file_size.max(1) {
            return None;
        }
        s.vaddr.checked_add(rel)
    })
}

/// uprobes are placed by file offset: `va - sh_addr + sh_offset` of the containing section.
fn file_offset(elf: &ElfFile64<'_, Endianness>, address: u64) -> Option<u64> {
    elf.sections().find_map(|section| {
        let (offset, size) = section.file_range()?;
        let rel = address.checked_sub(section.address())?;
        if rel >= size {
            return None;
        }
        offset.checked_add(rel)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";

    /// Found by `fuzz_elf_object`: tests/targets/native.c built with gcc -O2, one section
    /// header word set to 2^64-1. Symbol lookups used to overflow computing file offsets.
    #[test]
    fn section_at_the_top_of_the_address_space() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/tracee/testdata/native-O2-section-at-u64-max.bin");
        let object = ElfObject::open(&path).expect("still an ELF file");
        let functions = object.functions(|name| name == "main" || name == "leak_malloc");
        assert!(!functions.is_empty());
        let _ = object.entry_offset();
    }

    #[test]
    fn segment_arithmetic_does_not_wrap() {
        let top = LoadSegment {
            offset: u64::MAX - 1,
            file_size: u64::MAX,
            vaddr: u64::MAX,
        };
        assert_eq!(vaddr_of_offset(&[top], u64::MAX), None);
        assert_eq!(vaddr_of_offset(&[top], 0), None);
        let plain = LoadSegment {
            offset: 0x1000,
            file_size: 0x100,
            vaddr: 0x40_1000,
        };
        assert_eq!(vaddr_of_offset(&[top, plain], 0x1010), Some(0x40_1010));
        assert_eq!(vaddr_of_offset(&[plain], 0x1100), None);
    }

    #[test]
    fn libc_exports_the_allocator() {
        let libc = ElfObject::open(Path::new(LIBC)).expect("libc");
        let wanted = ["malloc", "free", "no_such_function"];
        let found = libc.functions(|name| wanted.contains(&name));
        let names: Vec<&str> = found.iter().map(|f| f.name.as_str()).collect();
        assert!(
            names.contains(&"malloc") && names.contains(&"free"),
            "{names:?}"
        );
        assert!(found.iter().all(|f| f.exported && f.size > 0));
        // The offset maps back to malloc's address through the segments.
        assert!(vaddr_of_offset(&libc.load_segments(), found[0].offset).is_some());
        assert_eq!(libc.soname().as_deref(), Some("libc.so.6"));
        assert!(!libc.is_go());
    }

    #[test]
    fn executables_name_their_loader_and_libraries() {
        let exe = std::env::current_exe().expect("current exe");
        let me = ElfObject::open(&exe).expect("own executable");
        assert!(me.interpreter().is_some_and(|i| i.contains("ld-linux")));
        assert!(me.needed().iter().any(|n| n == "libc.so.6"));
    }

    #[test]
    fn mappings_of_packed_segments_find_their_own_segment() {
        // A Rust executable's PT_LOADs (readelf -l): read-only, then text starting mid-page.
        let segments = [
            LoadSegment {
                offset: 0,
                file_size: 0x2563c,
                vaddr: 0,
            },
            LoadSegment {
                offset: 0x25640,
                file_size: 0x891e0,
                vaddr: 0x26640,
            },
        ];
        // /proc/PID/maps: the text mapping starts at file offset 0x25000, address base+0x26000.
        assert_eq!(vaddr_of_offset(&segments, 0x25000), Some(0x26000));
        assert_eq!(vaddr_of_offset(&segments, 0), Some(0));
    }

    #[test]
    fn non_elf_files_are_refused() {
        let scratch = std::env::temp_dir().join(format!("leaktrace-elf-{}", std::process::id()));
        std::fs::write(&scratch, b"#!/bin/sh\n").expect("write");
        let err = ElfObject::open(&scratch).err();
        let _ = std::fs::remove_file(&scratch);
        assert!(matches!(err, Some(ElfError::Parse { .. })));
        // Not regular: refused before anything is read.
        let err = ElfObject::open(Path::new("/proc/self/status")).err();
        assert!(
            matches!(err, Some(ElfError::File(_))),
            "{:?}",
            err.map(|e| e.to_string())
        );
    }
}
