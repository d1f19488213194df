//! The Go toolchain version and main module recorded by the linker in `.go.buildinfo`. The
//! blob is loaded data, so it survives `-ldflags='-s -w'`: it is what picks the per-version
//! struct-offset table for stripped binaries. Format as documented in Go's `debug/buildinfo`.
use object::{Object, ObjectSection, ObjectSegment};

use super::elf_data::{read_va, segment_has, uvarint};

const MAGIC: &[u8; 14] = b"\xff Go buildinf:";
const HEADER_SIZE: usize = 32;
/// The linker aligns the blob to 16 bytes; the magic is only searched at such addresses.
const ALIGN: u64 = 16;
/// Flags bit 1: strings inline after the header (Go >= 1.18) rather than pointed to.
const FLAG_INLINE: u8 = 0x2;
const FLAG_BIG_ENDIAN: u8 = 0x1;
/// Bounds the magic search in segments when the section headers are gone; the blob sits at
/// the start of the writable data.
const SEARCH_LIMIT: u64 = 1 << 20;
/// Module info longer than this is corrupt (it lists dependencies and build settings).
const MAX_STRING: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BuildInfoError {
    #[error("not an ELF file: {0}")]
    Parse(#[from] object::Error),
    #[error("no Go build information (not a Go binary)")]
    NotFound,
    #[error("Go build information is malformed: {0}")]
    Malformed(&'static str),
}

/// A Go toolchain release such as `go1.27.3`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoVersion {
    pub major: u32,
    pub minor: u32,
    /// 0 for a `.0` release and for pre-releases (`go1.21rc2`).
    pub patch: u32,
    /// As recorded, with any suffix (`go1.22.1 X:boringcrypto`).
    pub raw: String,
}

impl GoVersion {
    /// Parses `goMAJOR.MINOR[.PATCH]` with an optional suffix. Development builds
    /// (`devel go1.23-abc…`) give `None`: their struct layouts match no release.
    pub fn parse(raw: &str) -> Option<GoVersion> {
        let rest = raw.strip_prefix("go")?;
        let (major, rest) = leading_number(rest)?;
        let (minor, rest) = leading_number(rest.strip_prefix('.')?)?;
        let patch = rest
            .strip_prefix('.')
            .and_then(leading_number)
            .map_or(0, |(patch, _)| patch);
        Some(GoVersion {
            major,
            minor,
            patch,
            raw: raw.to_owned(),
        })
    }
}

fn leading_number(s: &str) -> Option<(u32, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    Some((s[..end].parse().ok()?, &s[end..]))
}

/// What `.go.buildinfo` says about the binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildInfo {
    /// The toolchain version string, e.g. `go1.27.3`.
    pub version: String,
    /// The main package's import path (`path` line), when module info is present.
    pub path: Option<String>,
    /// The main module's path (`mod` line); absent for GOPATH-mode builds.
    pub main_module: Option<String>,
}

impl BuildInfo {
    pub fn go_version(&self) -> Option<GoVersion> {
        GoVersion::parse(&self.version)
    }
}

/// The Go version of an ELF image, or `None` when it is not a Go binary or the version is
/// not a release.
pub fn go_version(elf: &[u8]) -> Option<GoVersion> {
    read(elf).ok()?.go_version()
}

/// Reads the build information of an ELF image.
pub fn read(elf: &[u8]) -> Result<BuildInfo, BuildInfoError> {
    let file = object::File::parse(elf)?;
    let addr = find_blob(&file).ok_or(BuildInfoError::NotFound)?;
    decode(addr, &|addr, len| read_va(&file, addr, len))
}

/// Address of the blob: the start of `.go.buildinfo`, or, for binaries without section
/// headers, the first aligned magic in a writable segment (where older linkers put it).
fn find_blob(file: &object::File<'_>) -> Option<u64> {
    if let Some(section) = file.section_by_name(".go.buildinfo") {
        let data = section.data().ok()?;
        return aligned_magic(data, section.address());
    }
    file.segments()
        .filter(|segment| segment_has(segment, object::elf::PF_W))
        .find_map(|segment| {
            let data = segment.data().ok()?;
            let len = data.len().min(SEARCH_LIMIT as usize);
            aligned_magic(&data[..len], segment.address())
        })
}

fn aligned_magic(data: &[u8], base: u64) -> Option<u64> {
    // Offset of the first 16-aligned virtual address in `data`.
    let first = (ALIGN - base % ALIGN) % ALIGN;
    (first..data.len() as u64)
        .step_by(ALIGN as usize)
        .find(|&off| data[off as usize..].starts_with(MAGIC))
        .and_then(|off| base.checked_add(off))
}

/// Decodes the blob at `addr`; `read(addr, len)` returns exactly `len` mapped bytes.
fn decode<'a>(
    addr: u64,
    read: &dyn Fn(u64, u64) -> Option<&'a [u8]>,
) -> Result<BuildInfo, BuildInfoError> {
    let header = read(addr, HEADER_SIZE as u64).ok_or(BuildInfoError::Malformed("header"))?;
    let (ptr_size, flags) = (header[14], header[15]);
    let (version, module) = if flags & FLAG_INLINE != 0 {
        let start = addr
            .checked_add(HEADER_SIZE as u64)
            .ok_or(BuildInfoError::Malformed("address"))?;
        let (version, next) = inline_string(read, start)?;
        let (module, _) = inline_string(read, next)?;
        (version, module)
    } else {
        let big_endian = flags & FLAG_BIG_ENDIAN != 0;
        let ptr = |bytes: &[u8]| read_ptr(bytes, ptr_size, big_endian);
        let width = usize::from(ptr_size);
        let header_ptr = |off: usize| {
            header
                .get(off..)
                .and_then(ptr)
                .ok_or(BuildInfoError::Malformed("pointer size"))
        };
        let version_ptr = header_ptr(16)?;
        let module_ptr = header_ptr(16 + width)?;
        (
            pointed_string(read, &ptr, width, version_ptr)?,
            // Binaries built outside module mode have an empty module string.
            pointed_string(read, &ptr, width, module_ptr).unwrap_or_default(),
        )
    };
    if version.is_empty() {
        return Err(BuildInfoError::Malformed("empty version"));
    }
    // Unframed before any UTF-8 conversion: the sentinels are not UTF-8, and replacing their
    // bytes would change the lengths the framing check relies on.
    let module = String::from_utf8_lossy(unframe(&module));
    let module = module.as_ref();
    Ok(BuildInfo {
        version: String::from_utf8_lossy(&version).into_owned(),
        path: module_field(module, "path"),
        main_module: module_field(module, "mod"),
    })
}

fn read_ptr(bytes: &[u8], ptr_size: u8, big_endian: bool) -> Option<u64> {
    match (ptr_size, big_endian) {
        (8, false) => Some(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)),
        (8, true) => Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?)),
        (4, false) => Some(u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?).into()),
        (4, true) => Some(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?).into()),
        _ => None,
    }
}

/// A varint length followed by that many bytes (Go >= 1.18); returns the string and the
/// address after it.
fn inline_string<'a>(
    read: &dyn Fn(u64, u64) -> Option<&'a [u8]>,
    addr: u64,
) -> Result<(Vec<u8>, u64), BuildInfoError> {
    // A varint is at most 10 bytes but the blob may end sooner: take what is mapped.
    let prefix = (1..=10)
        .rev()
        .find_map(|len| read(addr, len))
        .ok_or(BuildInfoError::Malformed("string length"))?;
    let (len, used) = uvarint(prefix).ok_or(BuildInfoError::Malformed("string length"))?;
    if len > MAX_STRING {
        return Err(BuildInfoError::Malformed("string length"));
    }
    let overflow = BuildInfoError::Malformed("address");
    let start = addr.checked_add(used as u64).ok_or(overflow)?;
    let bytes = read(start, len).ok_or(BuildInfoError::Malformed("string data"))?;
    let next = start
        .checked_add(len)
        .ok_or(BuildInfoError::Malformed("address"))?;
    Ok((bytes.to_vec(), next))
}

/// A Go string header (data pointer, length) at `addr` (Go < 1.18).
fn pointed_string<'a>(
    read: &dyn Fn(u64, u64) -> Option<&'a [u8]>,
    ptr: &dyn Fn(&[u8]) -> Option<u64>,
    width: usize,
    addr: u64,
) -> Result<Vec<u8>, BuildInfoError> {
    let header = read(addr, 2 * width as u64).ok_or(BuildInfoError::Malformed("string header"))?;
    let data = ptr(header).ok_or(BuildInfoError::Malformed("string header"))?;
    let len = ptr(&header[width..]).ok_or(BuildInfoError::Malformed("string header"))?;
    if len > MAX_STRING {
        return Err(BuildInfoError::Malformed("string length"));
    }
    let bytes = read(data, len).ok_or(BuildInfoError::Malformed("string data"))?;
    Ok(bytes.to_vec())
}

/// cmd/go wraps module info in two 16-byte sentinels; strip them as `debug/buildinfo` does.
fn unframe(module: &[u8]) -> &[u8] {
    if module.len() >= 33 && module[module.len() - 17] == b'\n' {
        &module[16..module.len() - 16]
    } else {
        &[]
    }
}

/// Second tab-separated field of the first line whose first field is `key`.
fn module_field(module: &str, key: &str) -> Option<String> {
    module.lines().find_map(|line| {
        let mut fields = line.split('\t');
        (fields.next() == Some(key))
            .then(|| fields.next())
            .flatten()
            .map(str::to_owned)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golang::testutil::{self, TOOLCHAINS, Toolchain, Variant};

    #[test]
    fn parses_release_versions() {
        let v = GoVersion::parse("go1.27.3").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 27, 3));
        let v = GoVersion::parse("go1.21rc2").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 21, 0));
        let v = GoVersion::parse("go1.22.1 X:boringcrypto").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 22, 1));
        assert_eq!(v.raw, "go1.22.1 X:boringcrypto");
        assert_eq!(GoVersion::parse("devel go1.23-abcdef"), None);
        assert_eq!(GoVersion::parse("go1"), None);
        assert_eq!(GoVersion::parse(""), None);
    }

    /// Module info as cmd/go frames it.
    fn framed(text: &str) -> Vec<u8> {
        let mut out = b"0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6".to_vec();
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(b"\xf92C1\x86\x18 r\x00\x82B\x10A\x16\xd8\xf2");
        out
    }

    const MODINFO: &str = "path\texample.com/old/cmd\nmod\texample.com/old\t(devel)\t\n";

    /// A memory image for `decode`: (address, bytes) regions.
    fn reader<'a>(regions: &'a [(u64, Vec<u8>)]) -> impl Fn(u64, u64) -> Option<&'a [u8]> {
        move |addr, len| {
            regions.iter().find_map(|(base, bytes)| {
                let off = usize::try_from(addr.checked_sub(*base)?).ok()?;
                bytes.get(off..off.checked_add(usize::try_from(len).ok()?)?)
            })
        }
    }

    #[test]
    fn decodes_pointer_format_of_go_before_1_18() {
        // Header: magic, ptrSize 8, flags 0 (pointers, little-endian), then the addresses of
        // two Go string headers, as Go 1.17's linker laid them out.
        let base = 0x5000;
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&[8, 0]);
        header.extend_from_slice(&0x6000u64.to_le_bytes());
        header.extend_from_slice(&0x6010u64.to_le_bytes());
        let modinfo = framed(MODINFO);
        let mut strings = Vec::new();
        strings.extend_from_slice(&0x7000u64.to_le_bytes());
        strings.extend_from_slice(&9u64.to_le_bytes());
        strings.extend_from_slice(&0x7100u64.to_le_bytes());
        strings.extend_from_slice(&(modinfo.len() as u64).to_le_bytes());
        let regions = vec![
            (base, header),
            (0x6000, strings),
            (0x7000, b"go1.17.13".to_vec()),
            (0x7100, modinfo),
        ];
        let info = decode(base, &reader(&regions)).unwrap();
        assert_eq!(info.version, "go1.17.13");
        assert_eq!(info.path.as_deref(), Some("example.com/old/cmd"));
        assert_eq!(info.main_module.as_deref(), Some("example.com/old"));
    }

    #[test]
    fn decodes_inline_format_and_rejects_garbage() {
        let mut blob = MAGIC.to_vec();
        blob.extend_from_slice(&[8, FLAG_INLINE]);
        blob.resize(HEADER_SIZE, 0);
        blob.push(8);
        blob.extend_from_slice(b"go1.20.1");
        let modinfo = framed(MODINFO);
        blob.push(modinfo.len() as u8);
        blob.extend_from_slice(&modinfo);
        let regions = vec![(0x1000, blob.clone())];
        let info = decode(0x1000, &reader(&regions)).unwrap();
        assert_eq!(info.version, "go1.20.1");
        assert_eq!(info.main_module.as_deref(), Some("example.com/old"));

        // A length running past the mapped data is an error, not a panic.
        blob[HEADER_SIZE] = 0x7f;
        let regions = vec![(0x1000, blob)];
        assert!(decode(0x1000, &reader(&regions)).is_err());
        assert!(matches!(read(b"not an elf"), Err(BuildInfoError::Parse(_))));
    }

    #[test]
    fn reads_real_binaries_stripped_or_not() {
        for toolchain in TOOLCHAINS {
            let want = go_version_output(toolchain);
            for variant in [Variant::Plain, Variant::Stripped, Variant::PieStripped] {
                let elf = testutil::read(&testutil::build(toolchain, variant));
                let info = read(&elf).unwrap();
                assert_eq!(info.version, want, "{toolchain:?} {variant:?}");
                assert_eq!(info.path.as_deref(), Some("example.com/leaky"));
                assert_eq!(info.main_module.as_deref(), Some("example.com/leaky"));
                let version = go_version(&elf).unwrap();
                assert_eq!(version.raw, want);
                assert_eq!(version.major, 1);
            }
        }
    }

    /// The version `go version` reports, e.g. `go1.27.3`.
    fn go_version_output(toolchain: Toolchain) -> String {
        let out = testutil::go_command(toolchain)
            .arg("version")
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        text.split_whitespace().nth(2).unwrap().to_owned()
    }
}
