//! Reading section contents and virtual addresses out of an ELF image, shared by the Go
//! readers. The workspace builds `object` without its `compression` feature, so compressed
//! debug sections (Go writes DWARF zlib-compressed, as SHF_COMPRESSED since Go 1.12 or as
//! GNU `.zdebug_*` before) are inflated here with flate2.
use std::borrow::Cow;
use std::io::Read;

use object::{CompressionFormat, Object, ObjectSection, ObjectSegment, SectionKind, SegmentFlags};

use crate::tracee::files::MAX_INFLATED_SECTION_BYTES as MAX_UNCOMPRESSED;

#[derive(Debug, thiserror::Error)]
pub enum SectionError {
    #[error("reading section {name}: {source}")]
    Object { name: String, source: object::Error },
    #[error("section {name} uses an unsupported compression format ({format:?})")]
    Format {
        name: String,
        format: CompressionFormat,
    },
    #[error("section {name}: uncompressed size {size} is implausible")]
    TooLarge { name: String, size: u64 },
    #[error("inflating section {name}: {source}")]
    Inflate {
        name: String,
        source: std::io::Error,
    },
}

/// A section's (uncompressed) bytes, or `None` when it is absent or has no file contents.
/// `.debug_X` is also looked up as GNU-compressed `.zdebug_X` (which `object` itself only
/// does with its `compression` feature, though it reports that format without it).
pub fn section_data<'data>(
    file: &object::File<'data>,
    name: &str,
) -> Result<Option<Cow<'data, [u8]>>, SectionError> {
    let zdebug = name
        .strip_prefix(".debug_")
        .map(|rest| format!(".zdebug_{rest}"));
    let Some(section) = file
        .section_by_name(name)
        .or_else(|| file.section_by_name(zdebug.as_deref()?))
    else {
        return Ok(None);
    };
    if section.kind() == SectionKind::UninitializedData {
        return Ok(None);
    }
    let compressed = section
        .compressed_data()
        .map_err(|source| SectionError::Object {
            name: name.to_owned(),
            source,
        })?;
    match compressed.format {
        CompressionFormat::None => Ok(Some(Cow::Borrowed(compressed.data))),
        CompressionFormat::Zlib => {
            let size = compressed.uncompressed_size;
            if size > MAX_UNCOMPRESSED {
                return Err(SectionError::TooLarge {
                    name: name.to_owned(),
                    size,
                });
            }
            let mut out = Vec::with_capacity(size as usize);
            flate2::read::ZlibDecoder::new(compressed.data)
                .take(size)
                .read_to_end(&mut out)
                .map_err(|source| SectionError::Inflate {
                    name: name.to_owned(),
                    source,
                })?;
            Ok(Some(Cow::Owned(out)))
        }
        format => Err(SectionError::Format {
            name: name.to_owned(),
            format,
        }),
    }
}

/// `len` bytes at virtual address `addr` as the file maps them (from a PT_LOAD segment, so it
/// also works on binaries whose section headers were removed). `None` when they are not all
/// backed by file contents.
pub fn read_va<'data>(file: &object::File<'data>, addr: u64, len: u64) -> Option<&'data [u8]> {
    file.segments().find_map(|segment| {
        segment
            .data_range(addr, len)
            .ok()
            .flatten()
            .filter(|data| data.len() as u64 == len)
    })
}

/// Whether a program header has all the `PF_*` bits of `flags`.
pub fn segment_has(segment: &object::Segment<'_, '_>, flags: u32) -> bool {
    matches!(segment.flags(), SegmentFlags::Elf { p_flags } if p_flags & flags == flags)
}

/// Little-endian u64 at `off` in `data`.
pub fn u64_at(data: &[u8], off: usize) -> Option<u64> {
    let bytes = data.get(off..off.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// Little-endian u32 at `off` in `data`.
pub fn u32_at(data: &[u8], off: usize) -> Option<u32> {
    let bytes = data.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// Little-endian i32 at `off` in `data`.
pub fn i32_at(data: &[u8], off: usize) -> Option<i32> {
    u32_at(data, off).map(|value| value as i32)
}

/// Go's unsigned LEB128 varint (`encoding/binary.Uvarint`): value and bytes consumed.
pub fn uvarint(data: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in data.iter().enumerate().take(10) {
        let bits = u64::from(byte & 0x7f);
        // The 10th byte may only carry the top bit of a u64.
        if i == 9 && byte > 1 {
            return None;
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uvarint_decodes_like_go() {
        assert_eq!(uvarint(&[0x00]), Some((0, 1)));
        assert_eq!(uvarint(&[0x7f]), Some((127, 1)));
        assert_eq!(uvarint(&[0xac, 0x02]), Some((300, 2)));
        assert_eq!(
            uvarint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Some((u64::MAX, 10))
        );
        // Overflow and truncation are errors, not wrapped values.
        assert_eq!(
            uvarint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            None
        );
        assert_eq!(uvarint(&[0x80, 0x80]), None);
        assert_eq!(uvarint(&[]), None);
    }

    #[test]
    fn fixed_width_reads_are_bounded() {
        let data = [1, 0, 0, 0, 0, 0, 0, 0, 2];
        assert_eq!(u64_at(&data, 0), Some(1));
        assert_eq!(u64_at(&data, 2), None);
        assert_eq!(u32_at(&data, 5), Some(0x0200_0000));
        assert_eq!(u32_at(&data, usize::MAX), None);
    }
}
