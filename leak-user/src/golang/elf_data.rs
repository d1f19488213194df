//! Reading section contents and virtual addresses out of an ELF image, shared by the Go
//! readers (Go writes DWARF zlib-compressed: SHF_COMPRESSED since Go 1.12, GNU `.zdebug_*`
//! before; [`section_data`] inflates both).
use object::{Object, ObjectSegment, SegmentFlags};

pub use crate::tracee::sections::{SectionError, section_data};

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
