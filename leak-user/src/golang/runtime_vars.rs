//! Where a live Go process keeps what a sampler reads through `/proc/PID/mem`: the goroutine
//! list (`runtime.allglen` / `runtime.allgptr`, the copy of `runtime.allgs` kept for racy
//! readers), the names of wait reasons and goroutine statuses, and the heap's in-use bytes.
//! Everything is found in the ELF file, without running it: from `.symtab` when the binary
//! has one, else by decoding the runtime functions that use these variables (found by name
//! in `.gopclntab`, which stripped binaries keep), else from a table per Go release
//! generated from real toolchains (see `table_rows_are_the_toolchains` below).
//! Addresses are link-time virtual addresses: a PIE's load bias is the caller's to add.
use std::collections::{BTreeSet, HashMap};

use iced_x86::{Instruction, Mnemonic, OpKind, Register};
use object::elf::{PF_W, R_X86_64_RELATIVE};
use object::{Object, ObjectSegment, ObjectSymbol, RelocationFlags};

use super::buildinfo::GoVersion;
use super::elf_data::{read_va, segment_has, u64_at};
use super::offsets;
use super::runtime_code::RuntimeCode;
use super::symbols::{GoSymbols, SymbolsError};

/// Offsets of the `runtime.gcControllerState` fields that `(*mheap).allocSpan` updates
/// together: `heapInUse` (what `runtime.MemStats.HeapInuse` reports), `heapReleased` and
/// `heapFree`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcControllerOffsets {
    pub heap_in_use: u64,
    pub heap_released: u64,
    pub heap_free: u64,
}

/// What the embedded table knows of one Go release line.
struct VersionRow {
    minor: u32,
    /// The toolchain the row was generated from (the generator test names it). Read by no
    /// code, tests included: it documents the row.
    #[allow(dead_code)]
    raw: &'static str,
    /// `_G*` constants of `runtime/runtime2.go` without the prefix, indexed by status.
    statuses: &'static [&'static str],
    /// `runtime.waitReasonStrings`, indexed by `waitReason`.
    wait_reasons: &'static [&'static str],
    gc_controller: GcControllerOffsets,
}

/// Rows printed by `table_rows_are_the_toolchains` (linux/amd64): statuses from the
/// toolchain's `runtime/runtime2.go`, wait reasons from a binary's `runtime.waitReasonStrings`,
/// offsets from its DWARF.
const TABLE: &[VersionRow] = &[
    VersionRow {
        minor: 19,
        raw: "go1.19.8",
        statuses: &[
            "idle",
            "runnable",
            "running",
            "syscall",
            "waiting",
            "moribund_unused",
            "dead",
            "enqueue_unused",
            "copystack",
            "preempted",
        ],
        wait_reasons: &[
            "",
            "GC assist marking",
            "IO wait",
            "chan receive (nil chan)",
            "chan send (nil chan)",
            "dumping heap",
            "garbage collection",
            "garbage collection scan",
            "panicwait",
            "select",
            "select (no cases)",
            "GC assist wait",
            "GC sweep wait",
            "GC scavenge wait",
            "chan receive",
            "chan send",
            "finalizer wait",
            "force gc (idle)",
            "semacquire",
            "sleep",
            "sync.Cond.Wait",
            "timer goroutine (idle)",
            "trace reader (blocked)",
            "wait for GC cycle",
            "GC worker (idle)",
            "preempted",
            "debug call",
        ],
        gc_controller: GcControllerOffsets {
            heap_in_use: 304,
            heap_released: 312,
            heap_free: 320,
        },
    },
    VersionRow {
        minor: 27,
        raw: "go1.27.3",
        statuses: &[
            "idle",
            "runnable",
            "running",
            "syscall",
            "waiting",
            "moribund_unused",
            "dead",
            "enqueue_unused",
            "copystack",
            "preempted",
            "leaked",
            "deadextra",
        ],
        wait_reasons: &[
            "",
            "GC assist marking",
            "IO wait",
            "dumping heap",
            "garbage collection",
            "garbage collection scan",
            "panicwait",
            "GC assist wait",
            "GC sweep wait",
            "GC scavenge wait",
            "finalizer wait",
            "force gc (idle)",
            "GOMAXPROCS updater (idle)",
            "semacquire",
            "sleep",
            "chan receive (nil chan)",
            "chan send (nil chan)",
            "select (no cases)",
            "select",
            "chan receive",
            "chan send",
            "sync.Cond.Wait",
            "sync.Mutex.Lock",
            "sync.RWMutex.RLock",
            "sync.RWMutex.Lock",
            "sync.WaitGroup.Wait",
            "trace reader (blocked)",
            "wait for GC cycle",
            "GC worker (idle)",
            "GC worker (active)",
            "preempted",
            "debug call",
            "GC mark termination",
            "stopping the world",
            "flushing proc caches",
            "trace goroutine status",
            "trace proc status",
            "page trace flush",
            "coroutine",
            "GC weak to strong wait",
            "synctest.Run",
            "synctest.Wait",
            "chan receive (durable)",
            "chan send (durable)",
            "select (durable)",
            "sync.WaitGroup.Wait (durable)",
            "cleanup wait",
        ],
        gc_controller: GcControllerOffsets {
            heap_in_use: 272,
            heap_released: 280,
            heap_free: 288,
        },
    },
];

fn row(version: &GoVersion) -> Option<&'static VersionRow> {
    if version.major != 1 {
        return None;
    }
    TABLE.iter().find(|row| row.minor == version.minor)
}

/// Where a value was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The binary's `.symtab` (for the heap statistic: its address; the field offset comes
    /// from the binary's DWARF, else from the table).
    Symtab,
    /// Decoding the runtime functions that use the variable (stripped binaries).
    Code,
    /// The embedded table row of the binary's Go version.
    Table,
}

/// A counter of the Go heap to read racily: `size` little-endian bytes at
/// `addr + offset` (plus the load bias), times `unit`, are bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapStat {
    /// Link-time address of the variable (`runtime.gcController`).
    pub addr: u64,
    /// Offset of the field in it (`heapInUse`).
    pub offset: u64,
    /// Bytes to read.
    pub size: u8,
    /// Bytes per counted unit (1: the field counts bytes).
    pub unit: u64,
}

impl HeapStat {
    /// Link-time address of the field. `addr` comes from the file: a stat whose sum would
    /// wrap is never made ([`RuntimeVars::for_binary`]), so wrapping never happens here.
    pub fn field_addr(&self) -> u64 {
        self.addr.wrapping_add(self.offset)
    }

    /// Bytes from the `size` bytes read at [`HeapStat::field_addr`].
    pub fn decode(&self, bytes: &[u8]) -> Option<u64> {
        let raw = bytes.get(..usize::from(self.size))?;
        let mut value = [0u8; 8];
        value.get_mut(..raw.len())?.copy_from_slice(raw);
        u64::from_le_bytes(value).checked_mul(self.unit)
    }
}

/// Where each of [`RuntimeVars`]'s values came from (`None`: not found).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VarSources {
    pub allg: Option<Source>,
    pub wait_reasons: Option<Source>,
    pub statuses: Option<Source>,
    pub heap_inuse: Option<Source>,
}

/// What a sampler of a Go process reads and how to name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeVars {
    /// `runtime.allglen` (uintptr): entries of the array at `*allgptr`. The runtime stores
    /// it after the array pointer, so a reader loading it first sees no entry that is not
    /// in the array it then loads.
    pub allglen: Option<u64>,
    /// `runtime.allgptr` (`**g`): the array of every goroutine ever created (dead ones are
    /// kept for reuse).
    pub allgptr: Option<u64>,
    /// `runtime.allgs` (a `[]*g` slice header: pointer, length, capacity), written under
    /// `allglock`: prefer `allglen`/`allgptr` for racy reads.
    pub allgs: Option<u64>,
    /// Wait reason names indexed by `g.waitreason` ("chan receive", "sleep", ...).
    pub wait_reasons: Vec<String>,
    /// Goroutine status names indexed by `g.atomicstatus` with the scan bit (0x1000)
    /// masked: from the table, the `_G*` constants of `runtime/runtime2.go` without the prefix
    /// ("idle", "runnable", ..., "moribund_unused" for numbers the runtime no longer uses);
    /// for a version without a row, the binary's `runtime.gStatusStrings` as traceback
    /// prints them ("" for unused numbers).
    pub statuses: Vec<String>,
    /// Bytes in in-use heap spans, as `runtime.MemStats.HeapInuse` reports them.
    pub heap_inuse: Option<HeapStat>,
    pub sources: VarSources,
}

/// Bounds of a goroutine's fields for one binary, to reject torn reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoroutineLimits {
    /// The largest status number (scan bit masked) the runtime uses.
    pub max_status: u32,
    /// How many wait reasons the runtime has (0: unknown, unchecked).
    pub wait_reasons: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeVarsError {
    #[error("not an ELF file: {0}")]
    Parse(#[from] object::Error),
    #[error("no .symtab and no usable .gopclntab: {0}")]
    Symbols(#[from] SymbolsError),
}

/// `.symtab` names looked up.
const ALLGLEN: &str = "runtime.allglen";
const ALLGPTR: &str = "runtime.allgptr";
const ALLGS: &str = "runtime.allgs";
const WAIT_REASON_STRINGS: &str = "runtime.waitReasonStrings";
const G_STATUS_STRINGS: &str = "runtime.gStatusStrings";
const GC_CONTROLLER: &str = "runtime.gcController";
const DATA_SYMBOLS: [&str; 6] = [
    ALLGLEN,
    ALLGPTR,
    ALLGS,
    WAIT_REASON_STRINGS,
    G_STATUS_STRINGS,
    GC_CONTROLLER,
];

/// Longest name accepted from a string table (the longest Go has is under 40 bytes).
const MAX_NAME: u64 = 256;
/// Most entries accepted in a string table (wait reasons: 27 in 1.19, 47 in 1.27).
const MAX_NAMES: u64 = 256;

impl RuntimeVars {
    /// Everything found for `elf`, a Go binary of `version` (from `.go.buildinfo`). Values
    /// that cannot be found are `None` or empty; only a file that is not ELF, or a binary
    /// without `.symtab` whose `.gopclntab` cannot be read, is an error.
    pub fn for_binary(elf: &[u8], version: &GoVersion) -> Result<RuntimeVars, RuntimeVarsError> {
        let file = object::File::parse(elf)?;
        let symtab = data_symbols(&file);
        let row = row(version);
        let need_code = [ALLGLEN, ALLGPTR, WAIT_REASON_STRINGS, GC_CONTROLLER]
            .iter()
            .any(|name| !symtab.contains_key(name));
        let code = if need_code {
            Some(GoSymbols::open(elf)?)
        } else {
            None
        };
        let code = code.as_ref().map(|symbols| RuntimeCode {
            file: &file,
            symbols,
        });

        let mut sources = VarSources {
            allg: None,
            wait_reasons: None,
            statuses: None,
            heap_inuse: None,
        };

        let (allglen, allgptr, allgs) = match (symtab.get(ALLGLEN), symtab.get(ALLGPTR)) {
            (Some(&(len, _)), Some(&(ptr, _))) => {
                sources.allg = Some(Source::Symtab);
                (
                    Some(len),
                    Some(ptr),
                    symtab.get(ALLGS).map(|&(addr, _)| addr),
                )
            }
            _ => match code.as_ref().and_then(RuntimeCode::allg) {
                Some(found) => {
                    sources.allg = Some(Source::Code);
                    (Some(found.allglen), Some(found.allgptr), found.allgs)
                }
                None => (None, None, None),
            },
        };

        let from_symtab = symtab
            .get(WAIT_REASON_STRINGS)
            .and_then(|&(addr, size)| read_strings(&file, addr, size / 16, false));
        let wait_reasons = if let Some(names) = from_symtab {
            sources.wait_reasons = Some(Source::Symtab);
            names
        } else if let Some(names) = code.as_ref().and_then(RuntimeCode::wait_reasons) {
            sources.wait_reasons = Some(Source::Code);
            names
        } else if let Some(row) = row {
            sources.wait_reasons = Some(Source::Table);
            row.wait_reasons.iter().map(|&s| s.to_owned()).collect()
        } else {
            Vec::new()
        };

        let statuses = if let Some(row) = row {
            sources.statuses = Some(Source::Table);
            row.statuses.iter().map(|&s| s.to_owned()).collect()
        } else if let Some(names) = symtab
            .get(G_STATUS_STRINGS)
            .and_then(|&(addr, size)| read_strings(&file, addr, size / 16, false))
        {
            sources.statuses = Some(Source::Symtab);
            names
        } else {
            Vec::new()
        };

        let heap_inuse = match symtab.get(GC_CONTROLLER) {
            Some(&(addr, _)) => {
                let offsets = gc_controller_offsets_from_dwarf(elf)
                    .or_else(|| row.map(|row| row.gc_controller))
                    .filter(|offsets| addr.checked_add(offsets.heap_in_use).is_some());
                offsets.map(|offsets| HeapStat {
                    addr,
                    offset: offsets.heap_in_use,
                    size: 8,
                    unit: 1,
                })
            }
            // The code only gives field addresses: the table says which is which.
            None => row.and_then(|row| {
                let offsets = row.gc_controller;
                let field = code.as_ref()?.heap_in_use(&offsets)?;
                Some(HeapStat {
                    addr: field.checked_sub(offsets.heap_in_use)?,
                    offset: offsets.heap_in_use,
                    size: 8,
                    unit: 1,
                })
            }),
        };
        if heap_inuse.is_some() {
            sources.heap_inuse = Some(if symtab.contains_key(GC_CONTROLLER) {
                Source::Symtab
            } else {
                Source::Code
            });
        }

        Ok(RuntimeVars {
            allglen,
            allgptr,
            allgs,
            wait_reasons,
            statuses,
            heap_inuse,
            sources,
        })
    }

    /// The name of a wait reason number.
    pub fn wait_reason(&self, reason: u8) -> Option<&str> {
        self.wait_reasons
            .get(usize::from(reason))
            .map(String::as_str)
    }

    /// The name of a status, the scan bit masked first.
    pub fn status(&self, status: u32) -> Option<&str> {
        let index = usize::try_from(status & !G_SCAN).ok()?;
        self.statuses.get(index).map(String::as_str)
    }

    /// Bounds to validate goroutines read from the process; `None` when the statuses of
    /// this runtime are unknown.
    pub fn goroutine_limits(&self) -> Option<GoroutineLimits> {
        let max_status = u32::try_from(self.statuses.len().checked_sub(1)?).ok()?;
        Some(GoroutineLimits {
            max_status,
            wait_reasons: self.wait_reasons.len(),
        })
    }
}

/// The scan bit of `g.atomicstatus`, set while the GC scans the goroutine's stack.
pub const G_SCAN: u32 = 0x1000;

/// Address and size of each of [`DATA_SYMBOLS`] in `.symtab`.
fn data_symbols(file: &object::File<'_>) -> HashMap<&'static str, (u64, u64)> {
    let mut found = HashMap::new();
    for symbol in file.symbols() {
        let Ok(name) = symbol.name() else { continue };
        if let Some(&wanted) = DATA_SYMBOLS.iter().find(|&&wanted| wanted == name) {
            found.insert(wanted, (symbol.address(), symbol.size()));
        }
    }
    found
}

/// `runtime.gcControllerState` offsets from the binary's DWARF.
fn gc_controller_offsets_from_dwarf(elf: &[u8]) -> Option<GcControllerOffsets> {
    const STRUCT: &str = "runtime.gcControllerState";
    let structs = offsets::read_structs(elf, &[STRUCT]).ok()?;
    // Checked to lie inside the struct, like the goroutine offsets.
    let member = |name| offsets::checked_member(&structs, name).ok();
    Some(GcControllerOffsets {
        heap_in_use: member("runtime.gcControllerState.heapInUse")?,
        heap_released: member("runtime.gcControllerState.heapReleased")?,
        heap_free: member("runtime.gcControllerState.heapFree")?,
    })
}

/// `count` Go strings (pointer, length) at `addr`, each printable ASCII. With `strict`,
/// the first must be empty and the others not (the shape of the runtime's name tables,
/// checked when the table was found by decoding code rather than named by `.symtab`).
fn read_strings(
    file: &object::File<'_>,
    addr: u64,
    count: u64,
    strict: bool,
) -> Option<Vec<String>> {
    if count == 0 || count > MAX_NAMES {
        return None;
    }
    let headers = read_va(file, addr, count * 16)?;
    let mut relocations: Option<HashMap<u64, u64>> = None;
    let mut names = Vec::with_capacity(count as usize);
    for i in 0..count as usize {
        let mut ptr = u64_at(headers, 16 * i)?;
        let len = u64_at(headers, 16 * i + 8)?;
        if strict && (len == 0) != (i == 0) {
            return None;
        }
        if len == 0 {
            names.push(String::new());
            continue;
        }
        if len > MAX_NAME {
            return None;
        }
        if ptr == 0 {
            // A position-independent binary may leave the pointer to its dynamic relocation
            // (Go's own linker writes it in both places).
            let relocations = relocations.get_or_insert_with(|| relative_relocations(file));
            ptr = *relocations.get(&(addr + 16 * i as u64))?;
        }
        let bytes = read_va(file, ptr, len)?;
        let name = std::str::from_utf8(bytes).ok()?;
        if !name.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
            return None;
        }
        names.push(name.to_owned());
    }
    Some(names)
}

/// Target → value of every `R_X86_64_RELATIVE` dynamic relocation.
fn relative_relocations(file: &object::File<'_>) -> HashMap<u64, u64> {
    let Some(relocations) = file.dynamic_relocations() else {
        return HashMap::new();
    };
    relocations
        .filter(|(_, relocation)| {
            matches!(relocation.flags(), RelocationFlags::Elf { r_type } if r_type == R_X86_64_RELATIVE)
        })
        .map(|(offset, relocation)| (offset, relocation.addend() as u64))
        .collect()
}

/// The goroutine list variables as the code of `runtime.allgadd` shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AllG {
    allglen: u64,
    allgptr: u64,
    allgs: Option<u64>,
}

impl RuntimeCode<'_> {
    /// `runtime.allgadd` (1.19 and 1.27 alike):
    /// ```go
    /// lock(&allglock)
    /// allgs = append(allgs, gp)
    /// if &allgs[0] != allgptr {
    ///     atomicstorep(unsafe.Pointer(&allgptr), unsafe.Pointer(&allgs[0]))
    /// }
    /// atomic.Storeuintptr(&allglen, uintptr(len(allgs)))
    /// ```
    /// The atomic stores are the only two `XCHG`s to memory; `allgptr` is the one also
    /// compared. `allgs` is the variable read at +0, +8 and +16. `runtime.forEachGRace`, where
    /// present, must load exactly `allglen` then `allgptr` (its inlined `atomicAllG`).
    fn allg(&self) -> Option<AllG> {
        let instructions = self.decode("runtime.allgadd")?;
        let mut leas = LeaTracker::default();
        let mut stored = BTreeSet::new();
        let mut compared = BTreeSet::new();
        let mut accessed = BTreeSet::new();
        for instruction in &instructions {
            if has_memory_operand(instruction) && instruction.mnemonic() != Mnemonic::Lea {
                let target = if instruction.is_ip_rel_memory_operand() {
                    Some(instruction.ip_rel_memory_address())
                } else {
                    leas.pointer(instruction)
                };
                if let Some(target) = target {
                    accessed.insert(target);
                    match instruction.mnemonic() {
                        Mnemonic::Xchg => {
                            stored.insert(target);
                        }
                        Mnemonic::Cmp => {
                            compared.insert(target);
                        }
                        _ => {}
                    }
                }
            }
            leas.step(instruction);
        }
        let allgptr = single(stored.intersection(&compared).copied())?;
        let allglen = single(stored.iter().copied().filter(|&addr| addr != allgptr))?;
        let allgs = single(accessed.iter().copied().filter(|&addr| {
            addr != allglen
                && addr != allgptr
                && addr.checked_add(8).is_some_and(|a| accessed.contains(&a))
                && addr.checked_add(16).is_some_and(|a| accessed.contains(&a))
        }));
        if let Some(race) = self.decode("runtime.forEachGRace") {
            let mut loads = Vec::new();
            for instruction in race.iter().filter(|i| i.is_ip_rel_memory_operand()) {
                let target = instruction.ip_rel_memory_address();
                if !loads.contains(&target) {
                    loads.push(target);
                }
                // Two are expected: a third already fails the check below.
                if loads.len() > 2 {
                    break;
                }
            }
            if loads != [allglen, allgptr] {
                return None;
            }
        }
        Some(AllG {
            allglen,
            allgptr,
            allgs,
        })
    }

    /// `runtime.waitReason.String` (1.19 and 1.27 alike):
    /// ```go
    /// if w < 0 || w >= waitReason(len(waitReasonStrings)) { return "unknown wait reason" }
    /// return waitReasonStrings[w]
    /// ```
    /// The one comparison of a byte register with a constant gives the length; the one
    /// address taken in writable data is the array (the other is the fallback string).
    fn wait_reasons(&self) -> Option<Vec<String>> {
        let instructions = self.decode("runtime.waitReason.String")?;
        let lengths: BTreeSet<u64> = instructions
            .iter()
            .filter(|i| i.mnemonic() == Mnemonic::Cmp && i.op_count() == 2)
            .filter(|i| i.op0_kind() == OpKind::Register && is_byte_register(i.op0_register()))
            .filter(|i| i.op1_kind() == OpKind::Immediate8)
            .map(|i| i.immediate(1))
            .collect();
        let arrays: BTreeSet<u64> = instructions
            .iter()
            .filter(|i| i.mnemonic() == Mnemonic::Lea && i.is_ip_rel_memory_operand())
            .map(Instruction::ip_rel_memory_address)
            .filter(|&addr| self.writable(addr))
            .collect();
        let count = single(lengths.into_iter())?;
        let array = single(arrays.into_iter())?;
        read_strings(self.file, array, count, true)
    }

    /// The address of `gcController.heapInUse`. `(*mheap).allocSpan` calls
    /// `(*sysMemStat).add` on `heapReleased`, `heapFree` and `heapInUse`, each address
    /// loaded into RAX just before (1.19 and 1.27 alike):
    /// ```go
    /// gcController.heapReleased.add(-int64(scav))
    /// gcController.heapFree.add(-int64(nbytes - scav))
    /// if typ == spanAllocHeap { gcController.heapInUse.add(int64(nbytes)) }
    /// ```
    /// The three addresses must be laid out as `offsets` says, and `freeSpanLocked` must
    /// update the same `heapInUse`.
    fn heap_in_use(&self, offsets: &GcControllerOffsets) -> Option<u64> {
        let (add, _) = self.symbols.function("runtime.(*sysMemStat).add")?;
        let receivers = |function: &str| -> Option<BTreeSet<u64>> {
            let mut leas = LeaTracker::default();
            let mut receivers = BTreeSet::new();
            for instruction in self.decode(function)? {
                if instruction.mnemonic() == Mnemonic::Call
                    && instruction.op0_kind() == OpKind::NearBranch64
                    && instruction.near_branch_target() == add
                {
                    receivers.extend(leas.get(Register::RAX));
                }
                leas.step(&instruction);
            }
            Some(receivers)
        };
        let alloc = receivers("runtime.(*mheap).allocSpan")?;
        let free = receivers("runtime.(*mheap).freeSpanLocked")?;
        let heap_in_use = single(alloc.iter().copied().filter(|&addr| {
            let Some(base) = addr.checked_sub(offsets.heap_in_use) else {
                return false;
            };
            let has = |offset: u64| base.checked_add(offset).is_some_and(|a| alloc.contains(&a));
            has(offsets.heap_released) && has(offsets.heap_free)
        }))?;
        free.contains(&heap_in_use).then_some(heap_in_use)
    }

    /// Whether `addr` is in a writable segment with file contents.
    fn writable(&self, addr: u64) -> bool {
        self.file.segments().any(|segment| {
            let (_, file_size) = segment.file_range();
            segment_has(&segment, PF_W)
                && addr
                    .checked_sub(segment.address())
                    .is_some_and(|rel| rel < file_size)
        })
    }
}

/// The only item of `items`, `None` for none or several.
fn single(mut items: impl Iterator<Item = u64>) -> Option<u64> {
    let first = items.next()?;
    items.next().is_none().then_some(first)
}

fn has_memory_operand(instruction: &Instruction) -> bool {
    (0..instruction.op_count()).any(|i| instruction.op_kind(i) == OpKind::Memory)
}

fn is_byte_register(register: Register) -> bool {
    GPRS.iter().any(|row| row[0] == register)
        || matches!(
            register,
            Register::AH | Register::CH | Register::DH | Register::BH
        )
}

/// The general-purpose registers as 8-, 16-, 32- and 64-bit operands.
const GPRS: [[Register; 4]; 16] = {
    use Register::*;
    [
        [AL, AX, EAX, RAX],
        [CL, CX, ECX, RCX],
        [DL, DX, EDX, RDX],
        [BL, BX, EBX, RBX],
        [SPL, SP, ESP, RSP],
        [BPL, BP, EBP, RBP],
        [SIL, SI, ESI, RSI],
        [DIL, DI, EDI, RDI],
        [R8L, R8W, R8D, R8],
        [R9L, R9W, R9D, R9],
        [R10L, R10W, R10D, R10],
        [R11L, R11W, R11D, R11],
        [R12L, R12W, R12D, R12],
        [R13L, R13W, R13D, R13],
        [R14L, R14W, R14D, R14],
        [R15L, R15W, R15D, R15],
    ]
};

/// Which general-purpose register `register` is part of.
fn gpr(register: Register) -> Option<usize> {
    match register {
        Register::AH => Some(0),
        Register::CH => Some(1),
        Register::DH => Some(2),
        Register::BH => Some(3),
        _ => GPRS.iter().position(|row| row.contains(&register)),
    }
}

/// Which registers hold an address taken by `LEA reg, [rip+disp]`, along a linear scan of
/// a function. Any other write to the register, and any call, forgets it. Branches are not
/// followed: the analyses cross-check what they find instead.
#[derive(Default)]
struct LeaTracker {
    registers: [Option<u64>; 16],
}

impl LeaTracker {
    fn get(&self, register: Register) -> Option<u64> {
        self.registers[gpr(register)?]
    }

    /// The address in the memory operand `[reg]` (no index, no displacement) of an
    /// instruction, when `reg` holds one.
    fn pointer(&self, instruction: &Instruction) -> Option<u64> {
        if instruction.memory_index() != Register::None || instruction.memory_displacement64() != 0
        {
            return None;
        }
        self.get(instruction.memory_base())
    }

    fn step(&mut self, instruction: &Instruction) {
        if instruction.mnemonic() == Mnemonic::Call {
            self.registers = [None; 16];
            return;
        }
        if instruction.mnemonic() == Mnemonic::Lea
            && instruction.is_ip_rel_memory_operand()
            && instruction.op0_kind() == OpKind::Register
            && let Some(index) = gpr(instruction.op0_register())
        {
            let wide = GPRS[index][3] == instruction.op0_register();
            self.registers[index] = wide.then(|| instruction.ip_rel_memory_address());
            return;
        }
        // Operand 0 is the destination of everything Go emits here but comparisons and
        // pushes; XCHG writes both operands.
        let reads_only = matches!(
            instruction.mnemonic(),
            Mnemonic::Cmp | Mnemonic::Test | Mnemonic::Push
        );
        for operand in 0..instruction.op_count() {
            let written = (operand == 0 && !reads_only) || instruction.mnemonic() == Mnemonic::Xchg;
            if written
                && instruction.op_kind(operand) == OpKind::Register
                && let Some(index) = gpr(instruction.op_register(operand))
            {
                self.registers[index] = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golang::buildinfo;
    use crate::golang::testutil::{self, TOOLCHAINS, Toolchain, Variant};
    use iced_x86::{Decoder, DecoderOptions};

    fn vars(toolchain: Toolchain, variant: Variant) -> RuntimeVars {
        let elf = testutil::read(&testutil::build(toolchain, variant));
        let version = buildinfo::go_version(&elf).unwrap();
        RuntimeVars::for_binary(&elf, &version).unwrap()
    }

    fn symbol(elf: &[u8], name: &str) -> (u64, u64) {
        let file = object::File::parse(elf).unwrap();
        let symbol = file
            .symbols()
            .find(|s| s.name() == Ok(name))
            .unwrap_or_else(|| panic!("no symbol {name}"));
        (symbol.address(), symbol.size())
    }

    /// Unstripped builds: the addresses `.symtab` names, the offset DWARF gives.
    #[test]
    fn plain_builds_use_the_symtab() {
        for toolchain in TOOLCHAINS {
            for variant in [Variant::Plain, Variant::Cgo] {
                let elf = testutil::read(&testutil::build(toolchain, variant));
                let vars = vars(toolchain, variant);
                let all = Some(Source::Symtab);
                assert_eq!(
                    vars.sources,
                    VarSources {
                        allg: all,
                        wait_reasons: all,
                        statuses: Some(Source::Table),
                        heap_inuse: all,
                    },
                    "{toolchain:?} {variant:?}"
                );
                assert_eq!(vars.allglen, Some(symbol(&elf, ALLGLEN).0));
                assert_eq!(vars.allgptr, Some(symbol(&elf, ALLGPTR).0));
                assert_eq!(vars.allgs, Some(symbol(&elf, ALLGS).0));
                let heap = vars.heap_inuse.unwrap();
                assert_eq!(heap.addr, symbol(&elf, GC_CONTROLLER).0);
                assert_eq!(
                    Some(heap.offset),
                    gc_controller_offsets_from_dwarf(&elf).map(|o| o.heap_in_use)
                );
                assert_eq!((heap.size, heap.unit), (8, 1));
                let (_, size) = symbol(&elf, WAIT_REASON_STRINGS);
                assert_eq!(vars.wait_reasons.len() as u64, size / 16);
            }
        }
    }

    /// `.symtab` kept but DWARF removed (`-ldflags=-w`, `objcopy --strip-debug`): the
    /// address from `.symtab`, the field offset from the table.
    #[test]
    fn symtab_without_dwarf_takes_the_heap_offset_from_the_table() {
        let dir = std::env::temp_dir().join(format!("leaktrace-nodwarf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for toolchain in TOOLCHAINS {
            let plain = testutil::build(toolchain, Variant::Plain);
            let out = dir.join(format!("{toolchain:?}"));
            let status = std::process::Command::new("objcopy")
                .arg("--strip-debug")
                .arg(&plain)
                .arg(&out)
                .status()
                .expect("objcopy (binutils) is needed to remove DWARF");
            assert!(status.success());
            let elf = testutil::read(&out);
            assert_eq!(gc_controller_offsets_from_dwarf(&elf), None);
            let version = buildinfo::go_version(&elf).unwrap();
            let vars = RuntimeVars::for_binary(&elf, &version).unwrap();
            assert_eq!(vars.sources.heap_inuse, Some(Source::Symtab));
            assert_eq!(vars, self::vars(toolchain, Variant::Plain), "{toolchain:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Stripped builds find by decoding code what `.symtab` names in the unstripped build of
    /// the same source (same layout), and the same wait reasons.
    #[test]
    fn stripped_builds_find_the_symtab_addresses_in_code() {
        for toolchain in TOOLCHAINS {
            for (plain, stripped) in [
                (Variant::Plain, Variant::Stripped),
                (Variant::Cgo, Variant::CgoStripped),
            ] {
                let want = vars(toolchain, plain);
                let got = vars(toolchain, stripped);
                let code = Some(Source::Code);
                assert_eq!(
                    got.sources,
                    VarSources {
                        allg: code,
                        wait_reasons: code,
                        statuses: Some(Source::Table),
                        heap_inuse: code,
                    },
                    "{toolchain:?} {stripped:?}"
                );
                assert_eq!(
                    got,
                    RuntimeVars {
                        sources: got.sources,
                        ..want
                    }
                );
            }
            // A PIE at link-time addresses: every pointer of the name array is relocated.
            let pie = vars(toolchain, Variant::PieStripped);
            assert_eq!(pie.sources.allg, Some(Source::Code));
            assert_eq!(pie.sources.heap_inuse, Some(Source::Code));
            assert_eq!(
                pie.wait_reasons,
                vars(toolchain, Variant::Plain).wait_reasons
            );
        }
    }

    /// The wait reason numbers the fact sheet (shared/notes/go-runtime.md) lists.
    #[test]
    fn wait_reasons_match_the_fact_sheet() {
        for toolchain in TOOLCHAINS {
            let vars = vars(toolchain, Variant::Stripped);
            let elf = testutil::read(&testutil::build(toolchain, Variant::Plain));
            let version = buildinfo::go_version(&elf).unwrap();
            let numbers: &[(u8, &str)] = match version.minor {
                19 => &[
                    (14, "chan receive"),
                    (15, "chan send"),
                    (9, "select"),
                    (3, "chan receive (nil chan)"),
                    (4, "chan send (nil chan)"),
                ],
                27 => &[
                    (19, "chan receive"),
                    (20, "chan send"),
                    (18, "select"),
                    (15, "chan receive (nil chan)"),
                    (16, "chan send (nil chan)"),
                ],
                _ => panic!("the fact sheet has no values for {}", version.raw),
            };
            for &(number, name) in numbers {
                assert_eq!(vars.wait_reason(number), Some(name), "{}", version.raw);
            }
            assert_eq!(vars.wait_reason(0), Some(""));
            assert_eq!(vars.wait_reason(200), None);
            assert_eq!(vars.status(0x1004), Some("waiting"));
            assert_eq!(vars.status(6), Some("dead"));
            let max_status = vars.goroutine_limits().unwrap().max_status;
            assert_eq!(max_status, if version.minor == 19 { 9 } else { 11 });
        }
    }

    /// The table's status names agree with the display names the runtime itself keeps in
    /// `runtime.gStatusStrings` wherever it has one (`_Gdeadextra` it shows as "waiting for
    /// cgo callback").
    #[test]
    fn status_names_agree_with_g_status_strings() {
        for toolchain in TOOLCHAINS {
            let elf = testutil::read(&testutil::build(toolchain, Variant::Plain));
            let file = object::File::parse(&*elf).unwrap();
            let (addr, size) = symbol(&elf, G_STATUS_STRINGS);
            let shown = read_strings(&file, addr, size / 16, false).unwrap();
            let vars = vars(toolchain, Variant::Plain);
            assert_eq!(shown.len(), vars.statuses.len(), "{toolchain:?}");
            for (number, (shown, name)) in shown.iter().zip(&vars.statuses).enumerate() {
                match shown.as_str() {
                    "" => assert!(name.ends_with("_unused"), "{number} {name}"),
                    "waiting for cgo callback" => assert_eq!(name, "deadextra"),
                    _ => assert_eq!(shown, name, "{toolchain:?} {number}"),
                }
            }
        }
    }

    #[test]
    fn versions_without_a_row_get_what_the_binary_itself_has() {
        for toolchain in TOOLCHAINS {
            for variant in [Variant::Plain, Variant::Stripped] {
                let elf = testutil::read(&testutil::build(toolchain, variant));
                let known = vars(toolchain, variant);
                let unknown = GoVersion::parse("go1.99.0").unwrap();
                let vars = RuntimeVars::for_binary(&elf, &unknown).unwrap();
                // Names and the goroutine list come from the binary; nothing from a table.
                assert_eq!(vars.wait_reasons, known.wait_reasons);
                assert_eq!((vars.allglen, vars.allgptr), (known.allglen, known.allgptr));
                if variant == Variant::Plain {
                    // gStatusStrings: display names, "" for unused numbers.
                    assert_eq!(vars.sources.statuses, Some(Source::Symtab));
                    assert_eq!(vars.statuses.len(), known.statuses.len());
                    assert_eq!(vars.status(4), Some("waiting"));
                    assert_eq!(vars.status(5), Some(""));
                    // The address from .symtab, the offset from DWARF.
                    assert_eq!(vars.heap_inuse, known.heap_inuse);
                } else {
                    // Which address is heapInUse needs the row's layout.
                    assert_eq!(vars.statuses, Vec::<String>::new());
                    assert_eq!(vars.goroutine_limits(), None);
                    assert_eq!(vars.heap_inuse, None);
                    assert_eq!(vars.sources.heap_inuse, None);
                }
            }
        }
    }

    #[test]
    fn non_go_input() {
        let version = GoVersion::parse("go1.27.3").unwrap();
        assert!(matches!(
            RuntimeVars::for_binary(b"not an elf", &version),
            Err(RuntimeVarsError::Parse(_))
        ));
        let me = std::fs::read("/proc/self/exe").unwrap();
        assert!(matches!(
            RuntimeVars::for_binary(&me, &version),
            Err(RuntimeVarsError::Symbols(_))
        ));
    }

    #[test]
    fn heap_stat_decodes_little_endian_units() {
        let stat = HeapStat {
            addr: 0x1000,
            offset: 0x10,
            size: 8,
            unit: 8192,
        };
        assert_eq!(stat.field_addr(), 0x1010);
        assert_eq!(stat.decode(&3u64.to_le_bytes()), Some(3 * 8192));
        assert_eq!(stat.decode(&[1, 2, 3]), None);
        let narrow = HeapStat { size: 4, ..stat };
        assert_eq!(narrow.decode(&[1, 0, 0, 0, 0xff]), Some(8192));
    }

    /// The `_G*` status constants of a toolchain's `runtime/runtime2.go`, in iota order, up to
    /// `_Gscan`.
    fn status_constants(toolchain: Toolchain) -> Vec<String> {
        let output = testutil::go_command(toolchain)
            .args(["env", "GOROOT"])
            .output()
            .expect("go env GOROOT");
        assert!(output.status.success());
        let goroot = String::from_utf8(output.stdout).unwrap();
        let path = std::path::Path::new(goroot.trim()).join("src/runtime/runtime2.go");
        let source = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let mut names = Vec::new();
        let mut lines = source
            .lines()
            .map(|line| line.split("//").next().unwrap().trim())
            .skip_while(|line| !line.starts_with("_Gidle = iota"));
        for line in lines.by_ref() {
            if line.is_empty() {
                continue;
            }
            if line.starts_with("_Gscan") {
                break;
            }
            let name = line.split_whitespace().next().unwrap();
            names.push(name.strip_prefix("_G").unwrap().to_owned());
        }
        assert!(names.len() >= 10, "{names:?}");
        names
    }

    /// The table's rows are the toolchains': on a mismatch (a new toolchain), the rows to
    /// embed are printed (`cargo test table_rows_are -- --nocapture`).
    #[test]
    fn table_rows_are_the_toolchains() {
        for toolchain in TOOLCHAINS {
            let elf = testutil::read(&testutil::build(toolchain, Variant::Plain));
            let version = buildinfo::go_version(&elf).unwrap();
            let statuses = status_constants(toolchain);
            let file = object::File::parse(&*elf).unwrap();
            let (addr, size) = symbol(&elf, WAIT_REASON_STRINGS);
            let wait_reasons = read_strings(&file, addr, size / 16, false).unwrap();
            let gc_controller = gc_controller_offsets_from_dwarf(&elf).unwrap();
            let list = |names: &[String]| -> String {
                names.iter().map(|name| format!("{name:?},")).collect()
            };
            // rustfmt lays it out.
            println!(
                "VersionRow {{ minor: {}, raw: {:?}, statuses: &[{}], wait_reasons: &[{}], \
                 gc_controller: {gc_controller:?} }},",
                version.minor,
                version.raw,
                list(&statuses),
                list(&wait_reasons),
            );
            let row = row(&version).unwrap_or_else(|| panic!("no row for {}", version.raw));
            assert_eq!(row.statuses, statuses, "{}", version.raw);
            assert_eq!(row.wait_reasons, wait_reasons, "{}", version.raw);
            assert_eq!(row.gc_controller, gc_controller, "{}", version.raw);
        }
    }

    #[test]
    fn unknown_versions_have_no_row() {
        for raw in ["go1.20.5", "go1.26.0", "go1.28.0", "go2.19.0"] {
            assert!(row(&GoVersion::parse(raw).unwrap()).is_none(), "{raw}");
        }
        assert_eq!(
            TABLE.iter().map(|row| row.minor).collect::<Vec<_>>(),
            [19, 27]
        );
    }

    #[test]
    fn lea_tracking_forgets_overwritten_registers() {
        let mut tracker = LeaTracker::default();
        // lea rax, [rip+0x10]; mov ebx, 1; lea rcx, [rip+0x20]; mov eax, 2
        let code = [
            0x48, 0x8d, 0x05, 0x10, 0, 0, 0, 0xbb, 1, 0, 0, 0, 0x48, 0x8d, 0x0d, 0x20, 0, 0, 0,
            0xb8, 2, 0, 0, 0,
        ];
        let mut decoder = Decoder::with_ip(64, &code, 0x1000, DecoderOptions::NONE);
        let mut seen = Vec::new();
        while decoder.can_decode() {
            tracker.step(&decoder.decode());
            seen.push((tracker.get(Register::RAX), tracker.get(Register::RCX)));
        }
        assert_eq!(
            seen,
            [
                (Some(0x1017), None),
                (Some(0x1017), None),
                (Some(0x1017), Some(0x1033)),
                (None, Some(0x1033)),
            ]
        );
    }
}
