//! Real inputs for the fuzz targets: built, captured, or this machine's own.
use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use object::{Object as _, ObjectSection as _};

use super::Seed;
use crate::golang::testutil::{self, Toolchain, Variant};

/// The Go binaries the Go unit tests build: a recent toolchain with symbols and DWARF, Go
/// 1.19 stripped, and a cgo build (C code among the Go functions).
pub fn go_binaries() -> Vec<(String, Vec<u8>)> {
    [
        (Toolchain::Recent, Variant::Plain),
        (Toolchain::Go119, Variant::Stripped),
        (Toolchain::Recent, Variant::CgoStripped),
    ]
    .into_iter()
    .map(|(toolchain, variant)| {
        let path = testutil::build(toolchain, variant);
        (
            format!("go-{toolchain:?}-{variant:?}"),
            testutil::read(&path),
        )
    })
    .collect()
}

/// A small C program (a test target) built with gcc -O2, and this process's libc.
pub fn native_objects() -> Vec<(String, Vec<u8>)> {
    let libc = mapped_libc();
    vec![
        ("native-O2".to_owned(), read(c_program())),
        ("libc".to_owned(), read(&libc)),
    ]
}

/// One seed per named section present in each binary, focused on that section's bytes.
pub fn sections(binaries: &[(String, Vec<u8>)], names: &[&str]) -> Vec<Seed> {
    let mut seeds = Vec::new();
    for (binary, bytes) in binaries {
        for name in names {
            if let Some(focus) = section_range(bytes, name) {
                seeds.push(Seed {
                    name: format!("{binary}:{name}"),
                    bytes: bytes.clone(),
                    focus,
                });
            }
        }
    }
    seeds
}

/// The ELF header, program and section headers of each binary (the first 4 KiB, and the
/// section header table at the end).
pub fn elf_headers(binaries: &[(String, Vec<u8>)]) -> Vec<Seed> {
    let mut seeds = Vec::new();
    for (binary, bytes) in binaries {
        seeds.push(Seed {
            name: format!("{binary}:headers"),
            bytes: bytes.clone(),
            focus: 0..bytes.len().min(4096),
        });
        let shoff = bytes
            .get(0x28..0x30)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .and_then(|off| usize::try_from(off).ok())
            .filter(|&off| off < bytes.len());
        if let Some(shoff) = shoff {
            seeds.push(Seed {
                name: format!("{binary}:section-headers"),
                bytes: bytes.clone(),
                focus: shoff..bytes.len(),
            });
        }
    }
    seeds
}

fn section_range(bytes: &[u8], name: &str) -> Option<std::ops::Range<usize>> {
    let file = object::File::parse(bytes).ok()?;
    let (offset, size) = file.section_by_name(name)?.file_range()?;
    let start = usize::try_from(offset).ok()?;
    Some(start..start.checked_add(usize::try_from(size).ok()?)?)
}

/// A file of `leak-user/src/<relative>`.
pub fn testdata(relative: &str) -> Vec<u8> {
    read(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src")
            .join(relative),
    )
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn mapped_libc() -> PathBuf {
    std::fs::read_to_string("/proc/self/maps")
        .expect("own maps")
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| path.ends_with("libc.so.6"))
        .map(PathBuf::from)
        .expect("libc is mapped")
}

/// tests/targets/native.c built once per test process.
fn c_program() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let targets = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/targets");
        let dir = std::env::temp_dir().join(format!("leaktrace-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create seed dir");
        let exe = dir.join("native-O2");
        let status = Command::new("gcc")
            .args(["-O2", "-pthread", "-I"])
            .arg(&targets)
            .arg("-o")
            .arg(&exe)
            .arg(targets.join("native.c"))
            .status()
            .expect("run gcc");
        assert!(status.success(), "gcc native.c failed");
        exe
    })
}
