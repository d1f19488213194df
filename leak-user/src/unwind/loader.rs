//! Keeps the kernel's unwind tables in step with the target's executable mappings.
//!
//! Rows are appended once per object (by device and inode) and never moved; the small mapping
//! table is rebuilt in the inactive half and then switched, so a probe never reads a half-built
//! table.
use std::{collections::HashMap, io, sync::Arc};

use aya::{
    Ebpf,
    maps::{Array, MapData, MapError},
};
use leak_common::{ExecMapping, MAX_MAPPINGS, UnwindRow, unwind_state};
use thiserror::Error;

use super::{return_probes::ReturnInstanceOffsets, table};
use crate::collect::batch;
use crate::tracee::{
    MappedObject,
    elf::{ElfObject, LoadSegment, vaddr_of_offset},
    files::TargetFiles,
    process::executable_objects,
};

#[derive(Debug, Error)]
pub enum LoaderError {
    #[error("eBPF map {0} is missing")]
    MissingMap(&'static str),
    #[error("cannot update eBPF map {map}: {source}")]
    Map { map: &'static str, source: MapError },
}

type ObjectKey = ((i32, i32), u64);

/// What is known of one object.
struct ObjectRows {
    rows_start: u32,
    rows_len: u32,
    segments: Vec<LoadSegment>,
}

/// User-space side of the unwind tables.
pub struct UnwindTables {
    files: Arc<TargetFiles>,
    objects: HashMap<ObjectKey, ObjectRows>,
    next_row: u32,
    capacity: u32,
    active: u32,
    generation: u32,
    installed: Vec<ExecMapping>,
    /// Whether the probes were told where return probes keep return addresses (tried once).
    return_offsets_tried: bool,
    /// Rows read from new objects and not yet written to the kernel: (first index, rows).
    pending: Vec<(u32, Vec<UnwindRow>)>,
    /// The mappings the rows were read for.
    mappings: Vec<MappedObject>,
    /// Objects whose rows did not fit (`--max-unwind-rows`): their frames fall back to frame
    /// pointers.
    pub objects_without_room: Vec<String>,
    /// Objects most of whose functions no CFI describes: their rows were derived from the
    /// machine code (`prologue`).
    pub objects_unwound_from_code: Vec<String>,
}

impl UnwindTables {
    pub fn new(files: Arc<TargetFiles>, capacity: u32) -> Self {
        Self {
            files,
            objects: HashMap::new(),
            next_row: 0,
            capacity,
            active: 0,
            generation: 0,
            installed: Vec::new(),
            return_offsets_tried: false,
            pending: Vec::new(),
            mappings: Vec::new(),
            objects_without_room: Vec::new(),
            objects_unwound_from_code: Vec::new(),
        }
    }

    pub fn rows_used(&self) -> u32 {
        self.next_row
    }

    /// Reads the target's mappings and the unwind rows of any new object, without touching the
    /// kernel (so it can run while the eBPF object loads). Returns false when the target's
    /// mappings cannot be read (it exited).
    pub fn prepare(&mut self) -> bool {
        let Ok(mappings) = executable_objects(self.files.pid()) else {
            return false;
        };
        for mapping in &mappings {
            let key = (mapping.dev, mapping.inode);
            if !self.objects.contains_key(&key) {
                let (object, rows) = self.read_object(mapping);
                if let Some(rows) = rows {
                    self.pending.push((object.rows_start, rows));
                }
                self.objects.insert(key, object);
            }
        }
        self.mappings = mappings;
        true
    }

    /// Reads the target's mappings and installs tables for anything new. A target that has
    /// exited leaves the tables as they are.
    pub fn sync(&mut self, ebpf: &mut Ebpf) -> Result<bool, LoaderError> {
        if !self.prepare() {
            return Ok(false);
        }
        self.write_pending(ebpf)?;
        let table: Vec<ExecMapping> = self
            .mappings
            .iter()
            .filter_map(|mapping| {
                let object = self.objects.get(&(mapping.dev, mapping.inode))?;
                let vaddr = vaddr_of_offset(&object.segments, mapping.offset)?;
                Some(ExecMapping {
                    start: mapping.start,
                    end: mapping.end,
                    bias: mapping.start.wrapping_sub(vaddr),
                    rows_start: object.rows_start,
                    rows_len: object.rows_len,
                })
            })
            .take(MAX_MAPPINGS as usize)
            .collect();
        if !self.return_offsets_tried {
            self.return_offsets_tried = true;
            install_return_offsets(ebpf)?;
        }
        if table == self.installed {
            return Ok(false);
        }
        self.install(ebpf, &table)?;
        self.installed = table;
        Ok(true)
    }

    /// The object's place in `UNWIND_ROWS` and, when it has rows and they fit, the rows to
    /// write there.
    fn read_object(&mut self, mapping: &MappedObject) -> (ObjectRows, Option<Vec<UnwindRow>>) {
        let nothing = |segments| ObjectRows {
            rows_start: 0,
            rows_len: 0,
            segments,
        };
        let opened = self.files.open_mapped(mapping).map_err(Into::into);
        let object = match opened.and_then(ElfObject::from_file) {
            Ok(object) => object,
            Err(error) => {
                log::debug!("{error}: its frames use frame pointers");
                return (nothing(Vec::new()), None);
            }
        };
        let segments = object.load_segments();
        let rows = match table::build(object.data()) {
            Ok(table) => {
                if table.functions_from_code > 0 {
                    log::debug!(
                        "{}: {} of {} functions without CFI unwound from their code",
                        mapping.path.display(),
                        table.functions_from_code,
                        table.functions
                    );
                }
                if table.mostly_from_code() {
                    self.objects_unwound_from_code
                        .push(mapping.path.display().to_string());
                }
                table.rows
            }
            Err(error) => {
                log::debug!("no unwind rows for {}: {error}", mapping.path.display());
                Vec::new()
            }
        };
        let Ok(rows_len) = u32::try_from(rows.len()) else {
            return (nothing(segments), None);
        };
        if self.next_row.saturating_add(rows_len) > self.capacity {
            self.objects_without_room
                .push(mapping.path.display().to_string());
            return (nothing(segments), None);
        }
        let rows_start = self.next_row;
        self.next_row += rows_len;
        let object = ObjectRows {
            rows_start,
            rows_len,
            segments,
        };
        (object, Some(rows))
    }

    /// Writes the rows read since the last call: one batch per object where the kernel has
    /// batch updates, a system call per row where not.
    fn write_pending(&mut self, ebpf: &mut Ebpf) -> Result<(), LoaderError> {
        let err = |source| LoaderError::Map {
            map: "UNWIND_ROWS",
            source,
        };
        for (start, rows) in std::mem::take(&mut self.pending) {
            let keys: Vec<u32> = (start..).take(rows.len()).collect();
            let data = ebpf
                .map_mut("UNWIND_ROWS")
                .ok_or(LoaderError::MissingMap("UNWIND_ROWS"))?;
            let batched = match data {
                aya::maps::Map::Array(data) => batch::update_all(data, &keys, &rows),
                _ => Err(io::Error::from(io::ErrorKind::Unsupported)),
            };
            match batched {
                Ok(()) => continue,
                Err(e) if e.kind() == io::ErrorKind::Unsupported => {}
                Err(e) => {
                    return Err(err(MapError::SyscallError(aya::sys::SyscallError {
                        call: "bpf_map_update_batch",
                        io_error: e,
                    })));
                }
            }
            let mut array: Array<&mut MapData, UnwindRow> = map(ebpf, "UNWIND_ROWS")?;
            for (key, row) in keys.iter().zip(&rows) {
                array.set(*key, row, 0).map_err(err)?;
            }
        }
        Ok(())
    }

    fn install(&mut self, ebpf: &mut Ebpf, table: &[ExecMapping]) -> Result<(), LoaderError> {
        let next = self.active ^ 1;
        let err = |map| move |source| LoaderError::Map { map, source };
        {
            let mut mappings: Array<&mut MapData, ExecMapping> = map(ebpf, "UNWIND_MAPPINGS")?;
            for (i, mapping) in table.iter().enumerate() {
                mappings
                    .set(next * MAX_MAPPINGS + i as u32, mapping, 0)
                    .map_err(err("UNWIND_MAPPINGS"))?;
            }
        }
        let mut state: Array<&mut MapData, u32> = map(ebpf, "UNWIND_STATE")?;
        state
            .set(unwind_state::LEN0 + next, table.len() as u32, 0)
            .map_err(err("UNWIND_STATE"))?;
        state
            .set(unwind_state::ACTIVE, next, 0)
            .map_err(err("UNWIND_STATE"))?;
        self.active = next;
        // New generation: rules cached for the old mappings stop matching.
        self.generation = (self.generation + 1) & 0x7fff;
        state
            .set(unwind_state::GENERATION, self.generation, 0)
            .map_err(err("UNWIND_STATE"))?;
        Ok(())
    }
}

/// Lets the walk see through return probes' trampolines; without the kernel's BTF such a
/// frame ends the stack, as before.
fn install_return_offsets(ebpf: &mut Ebpf) -> Result<(), LoaderError> {
    match ReturnInstanceOffsets::of_running_kernel() {
        Ok(offsets) => offsets.install(ebpf).map_err(|source| LoaderError::Map {
            map: "UNWIND_STATE",
            source,
        }),
        Err(error) => {
            log::debug!("{error}: stacks end at a return probe's trampoline");
            Ok(())
        }
    }
}

fn map<'a, V: aya::Pod>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<Array<&'a mut MapData, V>, LoaderError> {
    let map = ebpf.map_mut(name).ok_or(LoaderError::MissingMap(name))?;
    Array::try_from(map).map_err(|source| LoaderError::Map { map: name, source })
}
