//! Decoder for Go's `.gopclntab` (the runtime's own symbol table, kept by `-s -w`), formats of
//! Go 1.18-1.19 (magic 0xfffffff0) and 1.20+ (0xfffffff1), little-endian 64-bit only. Layout as
//! described by Go's `runtime/symtab.go` and `debug/gosym`: a header of offsets to sub-tables,
//! a function table of (entry offset from the text start, `_func` offset) pairs, and per
//! function varint-coded pc → value tables for sp delta, file, line and the `PCDATA` tables
//! (of which only the inline tree index is read here), followed by `FUNCDATA` offsets (of
//! which only the inline tree's).
use super::elf_data::{u32_at, u64_at, uvarint};

pub const MAGIC_GO118: u32 = 0xffff_fff0;
pub const MAGIC_GO120: u32 = 0xffff_fff1;
/// Fixed part of the header: magic, two pad bytes, pc quantum, pointer size, then 8 words.
const HEADER_LEN: usize = 8 + 8 * 8;
/// `_func` fields up to `cuOffset`, identical in the 1.18 and 1.20 formats.
const FUNC_LEN: usize = 36;
/// Longest function or file name read: Go's longest (generic instantiations spelled out)
/// stay far below; a longer one is a corrupt table.
const MAX_NAME_BYTES: usize = 1 << 12;
/// The whole fixed part of `_func`, before its `pcdata [npcdata]uint32` and
/// `funcdata [nfuncdata]uint32` arrays: `cuOffset`, then (1.20+ only) `startLine int32`, then
/// `funcID`, `flag`, a pad byte and `nfuncdata`, one byte each.
const FUNC_STRUCT_LEN_GO118: usize = FUNC_LEN + 4;
const FUNC_STRUCT_LEN_GO120: usize = FUNC_LEN + 8;
/// Offset of `npcdata` in `_func`.
const FUNC_NPCDATA: usize = 28;
/// `_PCDATA_InlTreeIndex` (runtime/symtab.go, internal/abi): the pc-value table giving the
/// index in the function's inline tree of the call inlined at a pc, -1 outside inlined code.
const PCDATA_INL_TREE_INDEX: u32 = 2;
/// `_FUNCDATA_InlTree`: the funcdata slot of the inline tree, an offset from
/// `moduledata.gofunc`.
const FUNCDATA_INL_TREE: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum PclntabError {
    #[error("pclntab magic {0:#x} is not a Go >= 1.18 little-endian table")]
    Magic(u32),
    #[error("pclntab header is malformed: {0}")]
    Header(&'static str),
}

/// The header fields (offsets are relative to the start of the table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub magic: u32,
    pub quantum: u8,
    pub nfunc: usize,
    /// Word 2: the text start in older tables (1.19), 0 (no longer stored) in 1.27.
    pub text_start: u64,
    pub funcname: usize,
    pub cutab: usize,
    pub filetab: usize,
    pub pctab: usize,
    /// The function table, and the base of `_func` offsets.
    pub functab: usize,
}

impl Header {
    pub fn parse(data: &[u8]) -> Result<Header, PclntabError> {
        let magic = u32_at(data, 0).ok_or(PclntabError::Header("truncated"))?;
        if magic != MAGIC_GO118 && magic != MAGIC_GO120 {
            return Err(PclntabError::Magic(magic));
        }
        if data.len() < HEADER_LEN {
            return Err(PclntabError::Header("truncated"));
        }
        let (pad, quantum, ptr_size) = (&data[4..6], data[6], data[7]);
        if pad != [0, 0] || quantum != 1 || ptr_size != 8 {
            return Err(PclntabError::Header("not an amd64 table"));
        }
        let word = |i: usize| u64_at(data, 8 + 8 * i).unwrap_or(u64::MAX);
        let offset = |i: usize| -> Result<usize, PclntabError> {
            usize::try_from(word(i))
                .ok()
                .filter(|&off| off >= HEADER_LEN && off <= data.len())
                .ok_or(PclntabError::Header("offset out of the table"))
        };
        let header = Header {
            magic,
            quantum,
            nfunc: usize::try_from(word(0)).map_err(|_| PclntabError::Header("nfunc"))?,
            text_start: word(2),
            funcname: offset(3)?,
            cutab: offset(4)?,
            filetab: offset(5)?,
            pctab: offset(6)?,
            functab: offset(7)?,
        };
        // nfunc + 1 entries of two u32 (the last holds the end of text).
        let functab_len = header
            .nfunc
            .checked_add(1)
            .and_then(|n| n.checked_mul(8))
            .ok_or(PclntabError::Header("nfunc"))?;
        if data.len() - header.functab < functab_len {
            return Err(PclntabError::Header("function table truncated"));
        }
        Ok(header)
    }
}

/// One function of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Func<'a> {
    pub name: &'a str,
    pub entry: u64,
    /// Up to the next function's entry (includes alignment padding).
    pub end: u64,
    /// Offset of its `_func` in the table.
    func_off: usize,
}

/// A parsed table plus the text start its entry offsets are relative to.
pub struct Pclntab {
    data: Vec<u8>,
    header: Header,
    text_start: u64,
}

impl Pclntab {
    pub fn new(data: Vec<u8>, header: Header, text_start: u64) -> Pclntab {
        Pclntab {
            data,
            header,
            text_start,
        }
    }

    pub fn len(&self) -> usize {
        self.header.nfunc
    }

    /// Entry offset of functab slot `i` (`i == len()` is the end of text).
    pub fn entry_off(&self, i: usize) -> Option<u32> {
        u32_at(&self.data, self.header.functab + 8 * i)
    }

    pub fn func(&self, i: usize) -> Option<Func<'_>> {
        if i >= self.header.nfunc {
            return None;
        }
        let entry = self.text_start.checked_add(self.entry_off(i)?.into())?;
        let end = self.text_start.checked_add(self.entry_off(i + 1)?.into())?;
        let rel = u32_at(&self.data, self.header.functab + 8 * i + 4)?;
        let func_off = self.header.functab.checked_add(rel as usize)?;
        let fields = self.data.get(func_off..func_off.checked_add(FUNC_LEN)?)?;
        let name_off = u32_at(fields, 4)? as usize;
        let name = self.c_str(self.header.funcname.checked_add(name_off)?)?;
        Some(Func {
            name,
            entry,
            end,
            func_off,
        })
    }

    /// Index of the function containing `pc`, by binary search of the sorted entries.
    pub fn find(&self, pc: u64) -> Option<usize> {
        let rel = u32::try_from(pc.checked_sub(self.text_start)?).ok()?;
        let n = self.header.nfunc;
        if n == 0 || rel < self.entry_off(0)? || rel >= self.entry_off(n)? {
            return None;
        }
        // First slot whose entry is beyond pc, minus one. Slots are read from the file: an
        // unreadable one ends the search as if it were beyond.
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.entry_off(mid).is_some_and(|entry| entry <= rel) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1)
    }

    /// Code size of a function: where its pc → sp-delta table ends. The linker writes that
    /// table over exactly the function's bytes, so this excludes the padding before the next
    /// function (what `.symtab` sizes also exclude).
    pub fn code_size(&self, func: &Func<'_>) -> Option<u64> {
        let pcsp = self.field(func, 16)?;
        let mut table = self.pc_table(pcsp, func)?;
        let mut end = func.entry;
        for (pc, _) in table.by_ref() {
            end = pc;
        }
        (!table.corrupt && end > func.entry).then_some(end - func.entry)
    }

    /// Source file of `pc` inside `func`.
    pub fn file(&self, func: &Func<'_>, pc: u64) -> Option<&str> {
        let fileno = self.value_at(self.field(func, 20)?, func, pc)?;
        // cuOffset 0 is the first compilation unit, not a missing table.
        let cu = u32_at(&self.data, func.func_off.checked_add(32)?)?;
        let slot = u64::from(cu).checked_add(u64::try_from(fileno).ok()?)?;
        let file_off = u32_at(
            &self.data,
            self.header
                .cutab
                .checked_add(usize::try_from(slot).ok()?.checked_mul(4)?)?,
        )?;
        // !0 marks a file slot the compilation unit does not use.
        if file_off == u32::MAX {
            return None;
        }
        self.c_str(self.header.filetab.checked_add(file_off as usize)?)
    }

    /// Source line of `pc` inside `func`.
    pub fn line(&self, func: &Func<'_>, pc: u64) -> Option<u32> {
        let line = self.value_at(self.field(func, 24)?, func, pc)?;
        u32::try_from(line).ok()
    }

    /// Whether this is the Go 1.18-1.19 table format (else 1.20+).
    pub fn is_go118(&self) -> bool {
        self.header.magic == MAGIC_GO118
    }

    /// Size of `_func` before its variable-length arrays.
    fn func_struct_len(&self) -> usize {
        if self.is_go118() {
            FUNC_STRUCT_LEN_GO118
        } else {
            FUNC_STRUCT_LEN_GO120
        }
    }

    /// Offset of the start of `func`'s `PCDATA` table `index` in the pc table area, if any.
    fn pcdata(&self, func: &Func<'_>, index: u32) -> Option<u32> {
        let npcdata = u32_at(&self.data, func.func_off.checked_add(FUNC_NPCDATA)?)?;
        if index >= npcdata {
            return None;
        }
        let off = func
            .func_off
            .checked_add(self.func_struct_len())?
            .checked_add(4 * index as usize)?;
        // 0: no table.
        u32_at(&self.data, off).filter(|&table| table != 0)
    }

    /// Index in `func`'s inline tree of the innermost call inlined at `pc`; `None` in the
    /// function's own code (the table's -1) or when it has no such table.
    pub fn inline_index(&self, func: &Func<'_>, pc: u64) -> Option<u32> {
        let table = self.pcdata(func, PCDATA_INL_TREE_INDEX)?;
        u32::try_from(self.value_at(table, func, pc)?).ok()
    }

    /// The largest index `func`'s inline tree index table gives anywhere in the function;
    /// `None` when there is no table, it never leaves -1, or it is corrupt.
    pub fn max_inline_index(&self, func: &Func<'_>) -> Option<u32> {
        let table = self.pcdata(func, PCDATA_INL_TREE_INDEX)?;
        let mut runs = self.pc_table(table, func)?;
        let max = runs.by_ref().map(|(_, value)| value).max();
        if runs.corrupt {
            return None;
        }
        u32::try_from(max?).ok()
    }

    /// Offset from `moduledata.gofunc` of `func`'s inline tree; `None` when nothing was
    /// inlined into it.
    pub fn inline_tree(&self, func: &Func<'_>) -> Option<u32> {
        let fixed = func.func_off.checked_add(self.func_struct_len())?;
        let nfuncdata = *self.data.get(fixed.checked_sub(1)?)?;
        if FUNCDATA_INL_TREE >= nfuncdata {
            return None;
        }
        let npcdata = u32_at(&self.data, func.func_off.checked_add(FUNC_NPCDATA)?)?;
        let off = fixed
            .checked_add(usize::try_from(npcdata).ok()?.checked_mul(4)?)?
            .checked_add(4 * usize::from(FUNCDATA_INL_TREE))?;
        // ^uint32(0): no entry.
        u32_at(&self.data, off).filter(|&off| off != u32::MAX)
    }

    /// The function name at `name_off` in the function name table, as inline tree entries
    /// refer to them; `None` unless a non-empty name starts exactly there.
    pub fn name_at(&self, name_off: i32) -> Option<&str> {
        let off = usize::try_from(name_off).ok()?;
        let table_len = self.header.cutab.checked_sub(self.header.funcname)?;
        if off >= table_len {
            return None;
        }
        let start = self.header.funcname + off;
        if off > 0 && self.data.get(start - 1) != Some(&0) {
            return None;
        }
        self.c_str(start).filter(|name| !name.is_empty())
    }

    /// A `u32` field of `_func`; 0 (no table) gives `None`.
    fn field(&self, func: &Func<'_>, off: usize) -> Option<u32> {
        u32_at(&self.data, func.func_off.checked_add(off)?).filter(|&value| value != 0)
    }

    /// The value a pc-value table gives for `target`.
    fn value_at(&self, table_off: u32, func: &Func<'_>, target: u64) -> Option<i32> {
        self.pc_table(table_off, func)?
            .find(|&(pc, _)| target < pc)
            .map(|(_, value)| value)
    }

    /// `func`'s table at `table_off`, its runs bounded by the function: many functions of a
    /// corrupt table may share one long table, and walking all of it for each would be
    /// quadratic in the table's size.
    fn pc_table(&self, table_off: u32, func: &Func<'_>) -> Option<PcTable<'_>> {
        let start = self.header.pctab.checked_add(table_off as usize)?;
        let quantum = u64::from(self.header.quantum);
        Some(PcTable {
            data: self.data.get(start..)?,
            pc: func.entry,
            entry: func.entry,
            end: func.end,
            // One run per instruction at most; a pc delta of 0 is never written, two spare.
            runs_left: (func.end.saturating_sub(func.entry) / quantum.max(1)).saturating_add(2),
            value: -1,
            quantum,
            corrupt: false,
        })
    }

    /// The NUL-terminated string at `off`, at most [`MAX_NAME_BYTES`] long. The search is a
    /// `memchr` (through `CStr`): names of a corrupt table may overlap and be long.
    fn c_str(&self, off: usize) -> Option<&str> {
        let bytes = self.data.get(off..)?;
        let bytes = bytes.get(..MAX_NAME_BYTES.min(bytes.len()))?;
        std::ffi::CStr::from_bytes_until_nul(bytes)
            .ok()?
            .to_str()
            .ok()
    }
}

/// Iterates a pc-value table: yields (end pc, value) for each run, where `value` holds for
/// pcs below `end pc` (and at or above the previous end).
struct PcTable<'a> {
    data: &'a [u8],
    pc: u64,
    entry: u64,
    /// The function's end: a run past it is corrupt.
    end: u64,
    /// Runs still allowed: a function has no more runs than instructions.
    runs_left: u64,
    value: i32,
    quantum: u64,
    /// Set when the table ended inside a varint or overflowed: it is truncated or corrupt.
    corrupt: bool,
}

impl Iterator for PcTable<'_> {
    type Item = (u64, i32);

    fn next(&mut self) -> Option<(u64, i32)> {
        // A zero value delta ends the table, except in the first pair: a function may start
        // with the initial value -1 itself (delta 0), as Go's `step` allows.
        let first = self.pc == self.entry;
        match self.data.first() {
            Some(0) if !first => return None,
            None => {
                self.corrupt = true;
                return None;
            }
            _ => {}
        }
        let Some((udelta, used)) = uvarint(self.data) else {
            self.corrupt = true;
            return None;
        };
        let Some((pc_delta, used2)) = self.data.get(used..).and_then(uvarint) else {
            self.corrupt = true;
            return None;
        };
        self.data = &self.data[used + used2..];
        // Zig-zag: odd deltas are negative.
        let udelta = udelta as u32;
        let delta = if udelta & 1 != 0 {
            !(udelta >> 1) as i32
        } else {
            (udelta >> 1) as i32
        };
        self.value = self.value.wrapping_add(delta);
        let Some(pc) = pc_delta
            .checked_mul(self.quantum)
            .and_then(|delta| self.pc.checked_add(delta))
        else {
            self.corrupt = true;
            return None;
        };
        if pc > self.end || self.runs_left == 0 {
            self.corrupt = true;
            return None;
        }
        self.runs_left -= 1;
        self.pc = pc;
        Some((self.pc, self.value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Table bytes for (value delta, pc delta) pairs, zig-zag encoded, then the terminator.
    fn encode(pairs: &[(i32, u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut put = |mut v: u64| loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        };
        for &(value, pc) in pairs {
            put(u64::from(((value << 1) ^ (value >> 31)) as u32));
            put(pc);
        }
        out.push(0);
        out
    }

    #[test]
    fn pc_table_decodes_runs() {
        // -1 → 10 for [0x100, 0x104), → 12 for [0x104, 0x190), → 9 for [0x190, 0x200).
        let bytes = encode(&[(11, 4), (2, 0x8c), (-3, 0x70)]);
        let table = PcTable {
            data: &bytes,
            pc: 0x100,
            entry: 0x100,
            end: 0x200,
            runs_left: 0x100,
            value: -1,
            quantum: 1,
            corrupt: false,
        };
        let runs: Vec<_> = table.collect();
        assert_eq!(runs, vec![(0x104, 10), (0x190, 12), (0x200, 9)]);
    }

    #[test]
    fn truncated_tables_are_errors() {
        let mut bytes = encode(&[(11, 4), (2, 300)]);
        bytes.truncate(bytes.len() - 2);
        let mut table = PcTable {
            data: &bytes,
            pc: 0,
            entry: 0,
            end: 0x1000,
            runs_left: 0x1000,
            value: -1,
            quantum: 1,
            corrupt: false,
        };
        assert_eq!(table.next(), Some((4, 10)));
        assert_eq!(table.next(), None);
        assert!(table.corrupt);
    }

    #[test]
    fn header_rejects_other_formats() {
        let mut data = vec![0u8; HEADER_LEN + 16];
        data[..4].copy_from_slice(&0xffff_fffau32.to_le_bytes());
        assert!(matches!(
            Header::parse(&data),
            Err(PclntabError::Magic(0xffff_fffa))
        ));
        data[..4].copy_from_slice(&MAGIC_GO120.to_le_bytes());
        data[6] = 1;
        data[7] = 8;
        // Offsets of 0 point into the header itself.
        assert!(matches!(Header::parse(&data), Err(PclntabError::Header(_))));
        for len in 0..HEADER_LEN {
            assert!(Header::parse(&data[..len]).is_err());
        }
    }
}
