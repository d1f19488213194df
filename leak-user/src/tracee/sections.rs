//! A section's contents out of an ELF image, inflated when compressed (SHF_COMPRESSED or GNU
//! `.zdebug_*`, which `object`'s `compression` feature handles), within a size cap: the
//! declared inflated size comes from the file.
use std::borrow::Cow;

use object::{Object as _, ObjectSection as _, SectionKind};

use super::files::MAX_INFLATED_SECTION_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum SectionError {
    /// Out of bounds, or compressed in a format `object` does not inflate.
    #[error("reading section {name}: {source}")]
    Read {
        name: &'static str,
        #[source]
        source: object::Error,
    },
    #[error("section {name}: uncompressed size {size} is implausible")]
    TooLarge { name: &'static str, size: u64 },
}

/// The (uncompressed) bytes of section `name`, or `None` when it is absent or has no file
/// contents (`SHT_NOBITS`, as separate debug files keep `.eh_frame`). `.debug_X` is also
/// found as `.zdebug_X`.
pub fn section_data<'data>(
    file: &object::File<'data>,
    name: &'static str,
) -> Result<Option<Cow<'data, [u8]>>, SectionError> {
    let Some(section) = file.section_by_name(name) else {
        return Ok(None);
    };
    if section.kind() == SectionKind::UninitializedData {
        return Ok(None);
    }
    let read = |source| SectionError::Read { name, source };
    let declared = section.compressed_data().map_err(read)?.uncompressed_size;
    if declared > MAX_INFLATED_SECTION_BYTES {
        return Err(SectionError::TooLarge {
            name,
            size: declared,
        });
    }
    section.uncompressed_data().map(Some).map_err(read)
}
