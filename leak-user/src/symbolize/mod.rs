//! Target addresses to functions, source files and lines (blazesym), for the report's frames.
//!
//! The target may exit (or be OOM-killed) before the final report, so nothing here depends on the
//! process at symbolization time: `new`/`refresh` snapshot its executable file mappings and keep
//! each mapped file open. Lookups translate an address to a file offset in that mapping and hand
//! blazesym `/proc/self/fd/N` (our own descriptor), which stays valid after the target is gone,
//! after the file was deleted or replaced on disk, and for files inside another mount namespace.
//!
//! Go binaries get the frames of their Go code from `.gopclntab` instead, the table the Go
//! runtime keeps for its own tracebacks (stripped binaries keep it), inlined calls expanded from
//! its inline trees; their C code (cgo) still goes to blazesym: see [`Backend`].
//!
//! Descriptors are bounded: only the most recently used modules keep their file open
//! ([`open_objects`]); the others are reopened through the target's mapping when needed, which
//! may fail once the target and the file are gone (their frames then name the module only).
//!
//! Not `Send`: blazesym's symbolizer keeps `Rc`s and `RefCell`s. Keep it on one thread.
mod open_objects;

use std::{
    collections::HashMap,
    fs::File,
    io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use blazesym::symbolize::{
    CodeInfo, Input, Sym, Symbolized, evict,
    source::{Elf, Source},
};
use procfs::process::{MMPermissions, MMapPath, Process};
use thiserror::Error;

use self::open_objects::OpenObjects;
use crate::{
    golang::symbols::{GoFrame, GoSymbols, SymbolsError},
    limits,
    report::model::Frame,
    tracee::{
        MappedObject,
        files::{FileError, ObjectFile, TargetFiles},
    },
};

/// A miss (address in no known mapping) re-reads the maps at most this often, so a stack into
/// code mapped after the last `refresh` still resolves, without a maps read per anonymous (JIT)
/// address.
const AUTO_REFRESH_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum SymbolizeError {
    #[error("no process with PID {pid}")]
    NoSuchProcess { pid: u32 },
    #[error("cannot read /proc/{pid}/{what}: {source}")]
    Unreadable {
        pid: u32,
        what: &'static str,
        #[source]
        source: procfs::ProcError,
    },
    #[error(transparent)]
    Files(#[from] FileError),
}

/// One file mapped executable into the target, open while among the recently used.
#[derive(Debug)]
struct Module {
    /// As the target sees it, for the report.
    path: String,
    /// The latest mapping of it seen: where it is reopened from, and checked against.
    mapping: MappedObject,
    /// `None` when closed ([`OpenObjects`]) or when no way of opening it worked: frames then
    /// carry the module and nothing else.
    file: Option<ObjectFile>,
    /// Exported function names by start address, read on first need.
    exported: Option<HashMap<u64, String>>,
    /// How its addresses are symbolized, decided on first need.
    backend: Option<Backend>,
}

impl Module {
    /// What blazesym opens: our descriptor, valid for as long as `self`.
    fn source_path(&self) -> Option<PathBuf> {
        self.file.as_ref().map(ObjectFile::kernel_path)
    }

    /// Internal aliases (`__GI___libc_malloc`, `__libc_malloc`, `_IO_puts`) are what the debug
    /// info or the first symbol at an address often names; people look for `malloc` and
    /// `puts`. Use the exported name of the same function instead, when there is a plain one.
    fn prefer_exported_name(&mut self, frame: &mut Frame, sym_addr: u64) {
        if !frame
            .function
            .as_deref()
            .is_some_and(|f| f.starts_with('_'))
        {
            return;
        }
        let file = self.file.as_ref();
        let exported = self.exported.get_or_insert_with(|| {
            file.map(|f| exported_functions(f.file()))
                .unwrap_or_default()
        });
        if let Some(name) = exported.get(&sym_addr) {
            frame.function = Some(name.clone());
        }
    }
}

/// How the addresses of one module become frames.
///
/// The rule for Go binaries (a `.gopclntab` or `.go.buildinfo` section): a pc inside a Go
/// function of the table (one with a line table: Go or Go assembly) gets its frames from the
/// table, with or without DWARF, exactly as the Go runtime's tracebacks and
/// `runtime.CallersFrames` give them: the functions inlined there from the inline trees, then
/// the physical function. Everything else (C code of a cgo binary, libc and other libraries,
/// markers, headers) goes to blazesym as for any ELF file.
///
/// Why not DWARF when there is some: Go's DWARF for inlined calls is not always right (Go
/// 1.19's `DW_AT_call_line` for cgo's `_Cfunc__CMalloc` inlined at a `C.malloc` call is a few
/// lines past the call, 113 for a call on line 110 of the cgo test target; 1.27's is right),
/// while the table is what the runtime's own tracebacks rely on; and one source for Go
/// frames makes a stripped and an unstripped build of one program give the same frames.
/// (One difference from the runtime's tracebacks: inlined `<autogenerated>` wrappers, which
/// `runtime.Callers` mostly hides, are kept.)
///
/// blazesym knows nothing of `.gopclntab`. Its hook for other formats is the process dispatcher
/// (`Builder::set_process_dispatcher`), but that serves only `Source::Process`, which reads
/// `/proc/PID/maps` and opens the target's files at symbolization time: against the design here
/// (the target may be gone by then, our own descriptors pin the files). So the choice is made
/// per module, by the same kind of test a dispatcher would make, and a Go module is looked up
/// by file offset -> link-time address through its program headers, exactly as blazesym's
/// `Input::FileOffset` does for the ELF files it reads.
#[derive(Debug)]
enum Backend {
    /// blazesym on the ELF file: DWARF (with inlined functions) when present, else `.symtab`
    /// and `.dynsym`. Everything that is not a Go binary.
    Blazesym,
    /// A Go binary: Go functions from `.gopclntab`, inlined calls expanded
    /// ([`GoSymbols::frames`]). Addresses outside its Go functions (C code of a cgo binary,
    /// headers, padding past the last function) still go to blazesym: DWARF for C code when
    /// the binary has it, else the file's own symbols, `.symtab` when it was kept and
    /// `.dynsym` at exact addresses only (in a stripped binary they stay unknown, but for a
    /// name the table gives them).
    Go(Box<GoModule>),
}

impl Backend {
    fn of(file: Option<&ObjectFile>, path: &str) -> Backend {
        let Some(file) = file else {
            return Backend::Blazesym;
        };
        match GoModule::open(file) {
            Ok(Some(go)) => Backend::Go(Box::new(go)),
            Ok(None) => Backend::Blazesym,
            Err(e) => {
                log::debug!("{path}: no Go symbols from .gopclntab: {e}");
                Backend::Blazesym
            }
        }
    }
}

#[derive(Debug, Error)]
enum GoModuleError {
    #[error("cannot read the file: {0}")]
    Read(#[from] io::Error),
    #[error("not an ELF file: {0}")]
    Parse(#[from] object::Error),
    #[error(transparent)]
    Symbols(#[from] SymbolsError),
}

/// A Go executable or shared object, its Go symbols read from `.gopclntab`.
struct GoModule {
    symbols: GoSymbols,
    /// `PT_LOAD` segments as (file offset, file size, virtual address).
    segments: Vec<(u64, u64, u64)>,
}

impl std::fmt::Debug for GoModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoModule")
            .field("functions", &self.symbols.functions().count())
            .field("segments", &self.segments)
            .finish()
    }
}

impl GoModule {
    /// `Ok(None)` for anything but a Go binary (`.gopclntab` or `.go.buildinfo` section).
    /// Only section headers are read for that test; the whole file only for a Go binary.
    fn open(file: &ObjectFile) -> Result<Option<GoModule>, GoModuleError> {
        use object::{Object, ObjectSection};

        let data = file.data();
        let elf = object::File::parse(data)?;
        let go = elf.sections().any(|section| {
            section
                .name()
                .is_ok_and(|name| name.ends_with(".gopclntab") || name == ".go.buildinfo")
        });
        if !go {
            return Ok(None);
        }
        let symbols = GoSymbols::open(data)?;
        let segments = elf
            .segments()
            .map(|segment| {
                use object::ObjectSegment;
                let (offset, size) = segment.file_range();
                (offset, size, segment.address())
            })
            .collect();
        Ok(Some(GoModule { symbols, segments }))
    }

    /// The frames of the instruction at `file_offset` (innermost first), reported at `pc`.
    fn frames(&self, pc: u64, file_offset: u64, module: &str) -> GoLookup {
        let Some(vaddr) = self
            .segments
            .iter()
            .find(|&&(offset, size, _)| file_offset >= offset && file_offset - offset < size)
            .and_then(|&(offset, _, vaddr)| vaddr.checked_add(file_offset - offset))
        else {
            return GoLookup::NotGo(None);
        };
        let frame = |found: GoFrame| Frame {
            address: format!("0x{pc:x}"),
            function: (!found.function.is_empty()).then_some(found.function),
            file: found.file,
            line: found.line,
            module: Some(module.to_owned()),
            inlined: found.inlined,
        };
        if !self.symbols.has_lines(vaddr) {
            return GoLookup::NotGo(self.symbols.lookup(vaddr).map(frame));
        }
        GoLookup::Go(self.symbols.frames(vaddr).into_iter().map(frame).collect())
    }
}

/// What `.gopclntab` says of a pc.
enum GoLookup {
    /// The frames of Go code.
    Go(Vec<Frame>),
    /// Not Go code: for blazesym, with the table's name for it if it has one (a function
    /// without line table: C code linked among Go functions, a marker).
    NotGo(Option<Frame>),
}

/// The plainest exported name of each exported function start (no leading underscore; then the
/// shortest, then the first in byte order, so `free` beats `cfree`). Reads only `.dynsym`.
fn exported_functions(file: &File) -> HashMap<u64, String> {
    use object::{Object, ObjectSymbol, SymbolKind, SymbolScope};

    let cache = object::ReadCache::new(file);
    let Ok(elf) = object::File::parse(&cache) else {
        return HashMap::new();
    };
    let mut best: HashMap<u64, String> = HashMap::new();
    for sym in elf.dynamic_symbols() {
        if !sym.is_definition()
            || sym.kind() != SymbolKind::Text
            || sym.scope() != SymbolScope::Dynamic
        {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        if name.is_empty() || name.starts_with('_') {
            continue;
        }
        let better = |old: &String| (name.len(), name) < (old.len(), old.as_str());
        match best.get_mut(&sym.address()) {
            Some(old) if !better(old) => {}
            Some(old) => *old = name.to_owned(),
            None => {
                best.insert(sym.address(), name.to_owned());
            }
        }
    }
    best
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mapping {
    start: u64,
    end: u64,
    /// File offset of `start`.
    offset: u64,
    module: usize,
}

/// A pc and whether it is a return address (looked up one byte back).
type PcKey = (u64, bool);

/// Identity of a mapped file: a library replaced on disk while mapped is a different module.
type FileKey = ((i32, i32), u64);

/// Pcs to look up in one module, each with the file offset of its lookup address.
type ModuleEntries = Vec<(PcKey, u64)>;

/// One executable file mapping as read from `/proc/PID/maps`.
struct MapsEntry {
    start: u64,
    end: u64,
    offset: u64,
    key: FileKey,
    path: PathBuf,
}

impl MapsEntry {
    fn mapped_object(&self) -> MappedObject {
        MappedObject {
            start: self.start,
            end: self.end,
            offset: self.offset,
            dev: self.key.0,
            inode: self.key.1,
            path: self.path.clone(),
        }
    }
}

/// Symbolized pcs kept, at most: far more than the sites of any report.
const MAX_CACHED_PCS: usize = 1 << 16;

pub struct Symbolizer {
    pid: u32,
    files: TargetFiles,
    /// Start time (clock ticks after boot) of the process we snapshotted: a later process that
    /// reuses the PID must not be merged in.
    start_time: u64,
    inner: blazesym::symbolize::Symbolizer,
    modules: Vec<Module>,
    modules_by_key: HashMap<FileKey, usize>,
    /// The modules whose file is open.
    open: OpenObjects,
    /// Sorted by `start`, non-overlapping.
    mappings: Vec<Mapping>,
    /// Per `(pc, is_return_address)`: reports symbolize the same stacks again and again.
    cache: HashMap<PcKey, Vec<Frame>>,
    last_refresh: Instant,
    /// The process exited (or the PID now belongs to another one): stop reading /proc.
    gone: bool,
}

impl std::fmt::Debug for Symbolizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Symbolizer")
            .field("pid", &self.pid)
            .field("modules", &self.modules)
            .field("mappings", &self.mappings.len())
            .field("cached", &self.cache.len())
            .field("gone", &self.gone)
            .finish()
    }
}

impl Symbolizer {
    /// Snapshots the target's executable file-backed mappings now, so that a report still
    /// symbolizes after the target has exited.
    pub fn new(pid: u32) -> Result<Self, SymbolizeError> {
        let process = open_process(pid)?;
        let start_time = process
            .stat()
            .map_err(|e| proc_error(pid, "stat", e))?
            .starttime;
        let maps = read_exec_maps(pid, &process)?;
        let files = TargetFiles::new(pid)?;
        let inner = blazesym::symbolize::Symbolizer::builder()
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .enable_demangling(true)
            // Our descriptors pin the files: no need to stat them before every lookup.
            .enable_auto_reload(false)
            .build();
        let mut symbolizer = Self {
            pid,
            files,
            start_time,
            inner,
            modules: Vec::new(),
            modules_by_key: HashMap::new(),
            open: OpenObjects::for_nofile_limit(limits::open_files_soft_limit()),
            mappings: Vec::new(),
            cache: HashMap::new(),
            last_refresh: Instant::now(),
            gone: false,
        };
        symbolizer.merge(maps);
        Ok(symbolizer)
    }

    /// Re-reads /proc/PID/maps to learn objects mapped since (dlopen); keeps what it had for
    /// objects no longer mapped. Errors if the process is gone are ignored (returns Ok with
    /// nothing new).
    pub fn refresh(&mut self) -> Result<(), SymbolizeError> {
        self.last_refresh = Instant::now();
        if self.gone {
            return Ok(());
        }
        let read = open_process(self.pid).and_then(|process| {
            let stat = process
                .stat()
                .map_err(|e| proc_error(self.pid, "stat", e))?;
            if stat.starttime != self.start_time {
                return Err(SymbolizeError::NoSuchProcess { pid: self.pid });
            }
            // Same `Process` handle (a /proc/PID directory descriptor): these maps are the ones
            // of the process whose start time we just checked, even if the PID is reused now.
            read_exec_maps(self.pid, &process)
        });
        match read {
            Ok(maps) => {
                self.merge(maps);
                Ok(())
            }
            Err(SymbolizeError::NoSuchProcess { .. }) => {
                self.gone = true;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// `pcs[0]` is an exact instruction address (the allocator's entry), `pcs[1..]` are return
    /// addresses (looked up at `pc - 1`, the call instruction, but reported as given). Returns
    /// frames innermost first; a pc inside inlined code expands to the inlined callee(s) first
    /// (`inlined: true`), then the function they were inlined into, all with the same address.
    pub fn symbolize(&mut self, pcs: &[u64]) -> Vec<Frame> {
        // Bounded for runs of days: distinct pcs are few (code), but objects come and go.
        if self.cache.len() > MAX_CACHED_PCS {
            self.cache.clear();
        }
        let keys: Vec<PcKey> = pcs.iter().enumerate().map(|(i, &pc)| (pc, i > 0)).collect();
        let mut misses: Vec<PcKey> = keys
            .iter()
            .copied()
            .filter(|key| !self.cache.contains_key(key))
            .collect();
        misses.sort_unstable();
        misses.dedup();
        if !misses.is_empty() {
            self.resolve(&misses);
        }
        let mut frames = Vec::with_capacity(pcs.len());
        for key in keys {
            match self.cache.get(&key) {
                Some(cached) => frames.extend(cached.iter().cloned()),
                // Not cached: in no mapping we know of (heap, JIT code, unmapped).
                None => frames.push(unknown_frame(key.0, None)),
            }
        }
        frames
    }

    /// The frames of one pc (inlined callees first); a return address is looked up at pc - 1.
    pub fn frames_at(&mut self, pc: u64, is_return: bool) -> Vec<Frame> {
        let key = (pc, is_return);
        if !self.cache.contains_key(&key) {
            self.resolve(&[key]);
        }
        self.cache
            .get(&key)
            .cloned()
            .unwrap_or_else(|| vec![unknown_frame(pc, None)])
    }

    fn resolve(&mut self, misses: &[PcKey]) {
        let unmapped = misses.iter().any(|&key| {
            lookup_address(key)
                .and_then(|a| self.mapping_of(a))
                .is_none()
        });
        if unmapped
            && !self.gone
            && self.last_refresh.elapsed() >= AUTO_REFRESH_EVERY
            && let Err(e) = self.refresh()
        {
            log::debug!("symbolizer: {e}");
        }

        // All offsets of a module together: one blazesym call per module.
        let mut by_module: HashMap<usize, Vec<(PcKey, u64)>> = HashMap::new();
        for &key in misses {
            let Some(addr) = lookup_address(key) else {
                continue;
            };
            let Some(mapping) = self.mapping_of(addr) else {
                continue;
            };
            // `mapping_of` guarantees start <= addr, and offsets are far below u64::MAX.
            let file_offset = mapping.offset.saturating_add(addr - mapping.start);
            by_module
                .entry(mapping.module)
                .or_default()
                .push((key, file_offset));
        }

        for (module_index, entries) in by_module {
            self.reopen(module_index);
            let (entries, fallbacks) = self.resolve_go(module_index, entries);
            if !entries.is_empty() {
                self.resolve_blazesym(module_index, &entries);
            }
            // blazesym had nothing where the Go table at least has a name.
            for (key, frame) in fallbacks {
                if let Some(frames) = self.cache.get_mut(&key)
                    && let [only] = frames.as_slice()
                    && only.function.is_none()
                {
                    *frames = vec![frame];
                }
            }
        }
    }

    /// Caches the frames `.gopclntab` gives for the Go code of a Go binary; returns the
    /// entries left for blazesym (all of them for any other module), and the table's frame for
    /// those it names without being Go code.
    fn resolve_go(
        &mut self,
        module_index: usize,
        entries: ModuleEntries,
    ) -> (ModuleEntries, Vec<(PcKey, Frame)>) {
        let module = &mut self.modules[module_index];
        let backend = module
            .backend
            .get_or_insert_with(|| Backend::of(module.file.as_ref(), &module.path));
        let Backend::Go(go) = backend else {
            return (entries, Vec::new());
        };
        let (mut rest, mut fallbacks) = (Vec::new(), Vec::new());
        for (key, file_offset) in entries {
            // `file_offset` is already that of the lookup address (a return address - 1).
            match go.frames(key.0, file_offset, &module.path) {
                GoLookup::Go(frames) => {
                    self.cache.insert(key, frames);
                }
                GoLookup::NotGo(fallback) => {
                    rest.push((key, file_offset));
                    fallbacks.extend(fallback.map(|frame| (key, frame)));
                }
            }
        }
        (rest, fallbacks)
    }

    /// One blazesym call for the module, with all of its offsets.
    fn resolve_blazesym(&mut self, module_index: usize, entries: &[(PcKey, u64)]) {
        let module = &self.modules[module_index];
        let offsets: Vec<u64> = entries.iter().map(|&(_, offset)| offset).collect();
        let symbolized = module.source_path().map(|path| {
            let source = Source::Elf(Elf::new(path));
            self.inner.symbolize(&source, Input::FileOffset(&offsets))
        });
        // Owned frames plus the symbol's start for the alias fix-up below.
        let resolved: Vec<(PcKey, Vec<Frame>, Option<u64>)> = match symbolized {
            Some(Ok(results)) => entries
                .iter()
                .zip(results)
                .map(|(&(key, _), result)| match result {
                    Symbolized::Sym(sym) => {
                        (key, sym_frames(&sym, key.0, &module.path), Some(sym.addr))
                    }
                    Symbolized::Unknown(_) => {
                        (key, vec![unknown_frame(key.0, Some(&module.path))], None)
                    }
                })
                .collect(),
            other => {
                if let Some(Err(e)) = other {
                    log::debug!("cannot symbolize in {}: {e}", module.path);
                }
                // The file is unreadable or not ELF: that will not change, so cache it too.
                entries
                    .iter()
                    .map(|&(key, _)| (key, vec![unknown_frame(key.0, Some(&module.path))], None))
                    .collect()
            }
        };
        let module = &mut self.modules[module_index];
        for (key, mut frames, sym_addr) in resolved {
            if let (Some(outer), Some(sym_addr)) = (frames.last_mut(), sym_addr) {
                module.prefer_exported_name(outer, sym_addr);
            }
            self.cache.insert(key, frames);
        }
    }

    /// Makes the module's file open (again) and most recently used, closing the least recently
    /// used one beyond the budget. The file is reopened from its latest mapping and must be the
    /// same file (device and inode); when that fails the module stays without a file.
    fn reopen(&mut self, index: usize) {
        let Some(module) = self.modules.get_mut(index) else {
            return;
        };
        if module.file.is_none() {
            match self.files.open_mapped(&module.mapping) {
                Ok(file) => module.file = Some(file),
                Err(e) => {
                    log::debug!("PID {}: {e}: its frames will have no symbols", self.pid);
                    return;
                }
            }
        }
        if let Some(least_recent) = self.open.touch(index) {
            self.close(least_recent);
        }
    }

    /// Closes a module's file, and blazesym's: its cache is keyed by our `/proc/self/fd/N`,
    /// a path that a later open may reuse for another file.
    fn close(&mut self, index: usize) {
        let Some(file) = self.modules.get_mut(index).and_then(|m| m.file.take()) else {
            return;
        };
        let source = evict::Evict::Elf(evict::Elf::new(file.kernel_path()));
        if let Err(e) = self.inner.evict(&source) {
            log::debug!("blazesym kept {}: {e}", file.label());
        }
        self.open.forget(index);
    }

    fn mapping_of(&self, addr: u64) -> Option<Mapping> {
        let index = self.mappings.partition_point(|m| m.start <= addr);
        let mapping = *self.mappings.get(index.checked_sub(1)?)?;
        (addr < mapping.end).then_some(mapping)
    }

    /// Adds new mappings; one that overlaps older ones replaces them (dlclose then dlopen of
    /// something else at the same place).
    fn merge(&mut self, maps: Vec<MapsEntry>) {
        let mut replaced = false;
        for entry in maps {
            let known = self.modules_by_key.get(&entry.key).copied();
            let same = known.is_some_and(|module| {
                self.mappings.contains(&Mapping {
                    start: entry.start,
                    end: entry.end,
                    offset: entry.offset,
                    module,
                })
            });
            if same {
                continue;
            }
            let module = match known {
                Some(module) => {
                    self.modules[module].mapping = entry.mapped_object();
                    module
                }
                None => {
                    self.modules.push(Module {
                        path: entry.path.to_string_lossy().into_owned(),
                        mapping: entry.mapped_object(),
                        file: None,
                        exported: None,
                        backend: None,
                    });
                    let index = self.modules.len() - 1;
                    self.modules_by_key.insert(entry.key, index);
                    // Opened now, while the target surely still maps it.
                    self.reopen(index);
                    index
                }
            };
            let before = self.mappings.len();
            self.mappings
                .retain(|m| m.end <= entry.start || m.start >= entry.end);
            replaced |= self.mappings.len() != before;
            let at = self.mappings.partition_point(|m| m.start < entry.start);
            self.mappings.insert(
                at,
                Mapping {
                    start: entry.start,
                    end: entry.end,
                    offset: entry.offset,
                    module,
                },
            );
        }
        if replaced {
            // Cached frames may name the object that used to be there. Rare: start over.
            self.cache.clear();
        }
    }
}

/// Where to look a pc up: return addresses point after the call, which may already be the next
/// line or even the next function.
fn lookup_address((pc, is_return): PcKey) -> Option<u64> {
    if is_return {
        pc.checked_sub(1)
    } else {
        Some(pc)
    }
}

fn open_process(pid: u32) -> Result<Process, SymbolizeError> {
    let raw = i32::try_from(pid).map_err(|_| SymbolizeError::NoSuchProcess { pid })?;
    Process::new(raw).map_err(|e| proc_error(pid, "stat", e))
}

fn proc_error(pid: u32, what: &'static str, error: procfs::ProcError) -> SymbolizeError {
    match error {
        procfs::ProcError::NotFound(_) => SymbolizeError::NoSuchProcess { pid },
        procfs::ProcError::Io(ref e, _)
            if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) =>
        {
            SymbolizeError::NoSuchProcess { pid }
        }
        source => SymbolizeError::Unreadable { pid, what, source },
    }
}

fn read_exec_maps(pid: u32, process: &Process) -> Result<Vec<MapsEntry>, SymbolizeError> {
    let maps = process.maps().map_err(|e| proc_error(pid, "maps", e))?;
    Ok(maps
        .into_iter()
        .filter(|map| map.perms.contains(MMPermissions::EXECUTE))
        .filter_map(|map| match map.pathname {
            MMapPath::Path(path) => Some(MapsEntry {
                start: map.address.0,
                end: map.address.1,
                offset: map.offset,
                key: (map.dev, map.inode),
                path: strip_deleted(&path),
            }),
            _ => None,
        })
        .collect())
}

/// The kernel appends " (deleted)" to paths of files removed or replaced since mapping.
fn strip_deleted(path: &Path) -> PathBuf {
    let s = path.to_string_lossy();
    match s.strip_suffix(" (deleted)") {
        Some(stripped) => PathBuf::from(stripped),
        None => path.to_path_buf(),
    }
}

fn unknown_frame(pc: u64, module: Option<&str>) -> Frame {
    Frame {
        address: format!("0x{pc:x}"),
        function: None,
        file: None,
        line: None,
        module: module.map(str::to_owned),
        inlined: false,
    }
}

/// blazesym lists inlined functions outermost first, each with the location inside it; the
/// report wants the innermost first.
fn sym_frames(sym: &Sym<'_>, pc: u64, module: &str) -> Vec<Frame> {
    let frame = |name: &str, code_info: Option<&CodeInfo<'_>>, inlined: bool| {
        let (file, line) = match code_info {
            Some(info) => (Some(source_file(info)), info.line),
            None => (None, None),
        };
        Frame {
            address: format!("0x{pc:x}"),
            function: (!name.is_empty()).then(|| name.to_owned()),
            file,
            line,
            module: Some(module.to_owned()),
            inlined,
        }
    };
    let mut frames: Vec<Frame> = sym
        .inlined
        .iter()
        .rev()
        .map(|inlined| frame(&inlined.name, inlined.code_info.as_ref(), true))
        .collect();
    frames.push(frame(&sym.name, sym.code_info.as_deref(), false));
    frames
}

/// The path as DWARF gives it: directory joined with the file name when known.
fn source_file(info: &CodeInfo<'_>) -> String {
    info.to_path().to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead, BufReader, Write},
        process::{Child, ChildStdin, ChildStdout, Command, Stdio},
        sync::atomic::{AtomicUsize, Ordering},
    };

    use super::*;
    use crate::golang::testutil::{self, TOOLCHAINS, Toolchain, Variant};

    const LEAKY_C: &str = include_str!("testdata/leaky.c");

    const PLUGIN_C: &str = include_str!("testdata/plugin.c");

    const KLASS_CPP: &str = include_str!("testdata/klass.cc");

    /// A scratch directory and the program running from it; both go away on drop.
    struct Target {
        dir: PathBuf,
        exe: PathBuf,
        child: Child,
        stdin: ChildStdin,
        stdout: BufReader<ChildStdout>,
    }

    impl Target {
        fn pid(&self) -> u32 {
            self.child.id()
        }

        /// `name=0x...` pairs of the program's next output line.
        fn addresses(&mut self) -> HashMap<String, u64> {
            let mut line = String::new();
            self.stdout
                .read_line(&mut line)
                .expect("read target output");
            line.split_whitespace()
                .filter_map(|pair| pair.split_once('='))
                .filter_map(|(name, value)| {
                    let hex = value.strip_prefix("0x")?;
                    Some((name.to_owned(), u64::from_str_radix(hex, 16).ok()?))
                })
                .collect()
        }

        fn kill(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Drop for Target {
        fn drop(&mut self) {
            self.kill();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn scratch_dir() -> PathBuf {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "leaktrace-sym-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    }

    fn compile(compiler: &str, dir: &Path, source: &str, text: &str, out: &str, extra: &[&str]) {
        let src = dir.join(source);
        std::fs::write(&src, text).expect("write source");
        let output = Command::new(compiler)
            .args(["-O2", "-g", "-o"])
            .arg(dir.join(out))
            .arg(&src)
            .args(extra)
            .output()
            .unwrap_or_else(|e| panic!("{compiler} is needed for these tests: {e}"));
        assert!(
            output.status.success(),
            "{compiler} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn start(dir: PathBuf, exe: &str, args: &[PathBuf]) -> Target {
        let exe = dir.join(exe);
        let mut child = Command::new(&exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start target");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Target {
            dir,
            exe,
            child,
            stdin,
            stdout,
        }
    }

    fn leaky(with_plugin: bool) -> Target {
        let dir = scratch_dir();
        compile(
            "gcc",
            &dir,
            "leaky.c",
            LEAKY_C,
            "leaky",
            &["-fPIE", "-pie", "-ldl"],
        );
        let mut args = Vec::new();
        if with_plugin {
            compile(
                "gcc",
                &dir,
                "plugin.c",
                PLUGIN_C,
                "libplug.so",
                &["-shared", "-fPIC"],
            );
            args.push(dir.join("libplug.so"));
        }
        start(dir, "leaky", &args)
    }

    /// 1-based line of the line carrying `marker` in `source`.
    fn line_of(source: &str, marker: &str) -> u32 {
        let index = source
            .lines()
            .position(|line| line.contains(marker))
            .expect("marker in source");
        u32::try_from(index + 1).expect("small line number")
    }

    fn only(frames: Vec<Frame>) -> Frame {
        assert_eq!(frames.len(), 1, "{frames:#?}");
        frames.into_iter().next().expect("one frame")
    }

    #[test]
    fn function_file_line_and_module_of_an_executable() {
        let mut target = leaky(false);
        let addrs = target.addresses();
        let leak_fn = addrs["leak_fn"];
        let mut symbolizer = Symbolizer::new(target.pid()).expect("snapshot");

        let frame = only(symbolizer.symbolize(&[leak_fn]));
        assert_eq!(frame.address, format!("0x{leak_fn:x}"));
        assert_eq!(frame.function.as_deref(), Some("leak_fn"));
        let file = frame.file.as_deref().expect("file");
        assert!(file.ends_with("leaky.c"), "{file}");
        assert!(Path::new(file).is_absolute(), "directory joined: {file}");
        assert_eq!(frame.line, Some(line_of(LEAKY_C, "L_FN")));
        assert_eq!(
            frame.module.as_deref(),
            Some(target.exe.to_str().expect("utf-8 path"))
        );
        assert!(!frame.inlined);

        // A return address is looked up one byte back but reported as given.
        let frames = symbolizer.symbolize(&[leak_fn, leak_fn + 1]);
        assert_eq!(frames.len(), 2, "{frames:#?}");
        assert_eq!(frames[1].address, format!("0x{:x}", leak_fn + 1));
        assert_eq!(frames[1].function.as_deref(), Some("leak_fn"));
        assert_eq!(frames[1].line, frames[0].line);
    }

    #[test]
    fn inlined_code_expands_to_callee_then_caller() {
        let mut target = leaky(false);
        let leak_fn = target.addresses()["leak_fn"];
        let mut symbolizer = Symbolizer::new(target.pid()).expect("snapshot");

        // Some instruction of leak_fn belongs to the inlined helper; find it.
        let inlined = (leak_fn..leak_fn + 256)
            .map(|pc| symbolizer.symbolize(&[pc]))
            .take_while(|frames| {
                frames.last().and_then(|f| f.function.as_deref()) == Some("leak_fn")
            })
            .find(|frames| frames.len() > 1)
            .expect("an address inside the inlined helper");
        assert_eq!(inlined.len(), 2, "{inlined:#?}");
        let (callee, caller) = (&inlined[0], &inlined[1]);
        assert_eq!(callee.function.as_deref(), Some("inl_helper"));
        assert!(callee.inlined);
        assert!(
            callee
                .file
                .as_deref()
                .is_some_and(|f| f.ends_with("leaky.c"))
        );
        let body = line_of(LEAKY_C, "L_INL_START")..=line_of(LEAKY_C, "L_INL_END");
        assert!(
            callee.line.is_some_and(|line| body.contains(&line)),
            "{callee:?}"
        );
        assert_eq!(caller.function.as_deref(), Some("leak_fn"));
        assert!(!caller.inlined);
        assert_eq!(caller.line, Some(line_of(LEAKY_C, "L_CALL")));
        assert_eq!(callee.address, caller.address);
    }

    #[test]
    fn libc_malloc_resolves_in_libc() {
        let mut target = leaky(false);
        let malloc = target.addresses()["malloc"];
        let mut symbolizer = Symbolizer::new(target.pid()).expect("snapshot");
        let frame = only(symbolizer.symbolize(&[malloc]));
        let function = frame.function.as_deref().expect("function");
        // glibc's debug info names it `__GI___libc_malloc`, its .dynsym also `__libc_malloc`.
        assert_eq!(function, "malloc", "{frame:?}");
        assert!(
            frame
                .module
                .as_deref()
                .is_some_and(|m| m.ends_with("libc.so.6")),
            "{frame:?}"
        );
    }

    /// One open object at a time: every lookup in another module closes the previous one and
    /// reopens its own, and the frames stay right.
    #[test]
    fn closed_modules_reopen_on_demand() {
        let mut target = leaky(false);
        let addrs = target.addresses();
        let (leak_fn, malloc) = (addrs["leak_fn"], addrs["malloc"]);
        let mut symbolizer = Symbolizer::new(target.pid()).expect("snapshot");
        symbolizer.open = OpenObjects::with_capacity(1);
        for index in 0..symbolizer.modules.len() {
            symbolizer.close(index);
        }
        let open_files = |s: &Symbolizer| s.modules.iter().filter(|m| m.file.is_some()).count();
        for round in 0..3 {
            // A fresh cache each time, so that each lookup reaches the file.
            symbolizer.cache.clear();
            let exe = only(symbolizer.symbolize(&[leak_fn]));
            assert_eq!(exe.function.as_deref(), Some("leak_fn"), "round {round}");
            assert_eq!(exe.line, Some(line_of(LEAKY_C, "L_FN")));
            assert_eq!(open_files(&symbolizer), 1);
            let libc = only(symbolizer.symbolize(&[malloc]));
            assert_eq!(libc.function.as_deref(), Some("malloc"), "round {round}");
            assert_eq!(open_files(&symbolizer), 1);
        }
    }

    #[test]
    fn exported_names_skip_internal_aliases() {
        // Without glibc's debug info the first symbol at malloc's address may be `__libc_malloc`.
        let libc = std::fs::read_to_string("/proc/self/maps")
            .expect("own maps")
            .lines()
            .filter_map(|line| line.split_whitespace().nth(5))
            .find(|path| path.ends_with("libc.so.6"))
            .map(PathBuf::from)
            .expect("libc is mapped");
        let names = exported_functions(&File::open(libc).expect("open libc"));
        for wanted in ["malloc", "free", "calloc", "realloc"] {
            assert!(names.values().any(|n| n == wanted), "{wanted}");
        }
        assert!(!names.values().any(|n| n.starts_with('_') || n == "cfree"));
    }

    #[test]
    fn path_fallback_checks_the_inode() {
        use std::os::unix::fs::MetadataExt as _;
        // A range with no map_files entry forces the fallback to the path in the root.
        let exe = std::env::current_exe().expect("own exe");
        let inode = std::fs::metadata(&exe).expect("stat own exe").ino();
        let entry = |inode| MapsEntry {
            start: 0x1000,
            end: 0x2000,
            offset: 0,
            key: ((0, 0), inode),
            path: exe.clone(),
        };
        let files = TargetFiles::new(std::process::id()).expect("own files");
        let device = std::fs::metadata(&exe).expect("stat").dev();
        let (major, minor) = (libc::major(device) as i32, libc::minor(device) as i32);
        let mut same = entry(inode).mapped_object();
        same.dev = (major, minor);
        assert!(files.open_mapped(&same).is_ok());
        let mut other = entry(inode + 1).mapped_object();
        other.dev = (major, minor);
        assert!(files.open_mapped(&other).is_err());
    }

    #[test]
    fn unmapped_address_is_unknown() {
        let target = leaky(false);
        let mut symbolizer = Symbolizer::new(target.pid()).expect("snapshot");
        let frames = symbolizer.symbolize(&[0x10, 0]);
        assert_eq!(
            frames,
            vec![
                unknown_frame(0x10, None),
                Frame {
                    address: "0x0".into(),
                    function: None,
                    file: None,
                    line: None,
                    module: None,
                    inlined: false,
                }
            ]
        );
    }

    #[test]
    fn works_after_the_target_exited_and_its_files_were_deleted() {
        let mut target = leaky(false);
        let addrs = target.addresses();
        let mut symbolizer = Symbolizer::new(target.pid()).expect("snapshot");
        target.kill();
        std::fs::remove_dir_all(&target.dir).expect("delete the program");

        symbolizer
            .refresh()
            .expect("refresh ignores an exited target");
        let frames = symbolizer.symbolize(&[addrs["malloc"], addrs["leak_fn"] + 1]);
        assert_eq!(frames.len(), 2, "{frames:#?}");
        assert!(
            frames[0]
                .module
                .as_deref()
                .is_some_and(|m| m.ends_with("libc.so.6"))
        );
        assert_eq!(frames[1].function.as_deref(), Some("leak_fn"));
        assert_eq!(frames[1].line, Some(line_of(LEAKY_C, "L_FN")));
        assert_eq!(
            frames[1].module.as_deref(),
            Some(target.exe.to_str().expect("utf-8 path"))
        );
    }

    #[test]
    fn objects_loaded_later_are_learned() {
        let mut target = leaky(true);
        target.addresses();
        let mut refreshed = Symbolizer::new(target.pid()).expect("snapshot");
        let mut automatic = Symbolizer::new(target.pid()).expect("snapshot");
        target.stdin.write_all(b"go\n").expect("ask for dlopen");
        let plugin_fn = target.addresses()["plugin_fn"];
        assert_ne!(plugin_fn, 0, "dlopen failed");

        refreshed.refresh().expect("refresh");
        let frame = only(refreshed.symbolize(&[plugin_fn]));
        assert_eq!(frame.function.as_deref(), Some("plugin_fn"));
        assert!(
            frame
                .module
                .as_deref()
                .is_some_and(|m| m.ends_with("libplug.so"))
        );

        // Without an explicit refresh, a miss re-reads the maps (rate-limited).
        std::thread::sleep(AUTO_REFRESH_EVERY);
        let frame = only(automatic.symbolize(&[plugin_fn]));
        assert_eq!(frame.function.as_deref(), Some("plugin_fn"));
    }

    #[test]
    fn cpp_names_are_demangled() {
        let dir = scratch_dir();
        compile(
            "g++",
            &dir,
            "klass.cpp",
            KLASS_CPP,
            "klass",
            &["-Wno-pmf-conversions", "-fPIE", "-pie"],
        );
        let mut target = start(dir, "klass", &[]);
        let method = target.addresses()["method"];
        let mut symbolizer = Symbolizer::new(target.pid()).expect("snapshot");
        let frame = only(symbolizer.symbolize(&[method]));
        assert_eq!(frame.function.as_deref(), Some("ns::Klass::method(int)"));
        assert!(
            frame
                .file
                .as_deref()
                .is_some_and(|f| f.ends_with("klass.cpp"))
        );
    }

    /// Prints, as the Go runtime itself symbolizes them, a function's entry and a return
    /// address inside it, then waits for a line on stdin.
    const MARKER_GO: &str = include_str!("testdata/marker.go");

    const MARKER: testutil::Program = testutil::Program {
        name: "marker",
        files: &[("main.go", MARKER_GO)],
    };

    fn go_marker(toolchain: Toolchain, variant: Variant) -> Target {
        // A copy in a scratch directory: the target removes its directory when dropped, and
        // the build is shared by the tests of this process.
        let exe = testutil::build_program(&MARKER, toolchain, variant);
        let dir = scratch_dir();
        std::fs::copy(&exe, dir.join("marker")).expect("copy the Go target");
        start(dir, "marker", &[])
    }

    /// The Go runtime's own answers, and ours for the entry of `main.marker` and the return
    /// address in it; checks that the module was symbolized by `expected` means.
    fn go_marker_frames(
        toolchain: Toolchain,
        variant: Variant,
    ) -> (HashMap<String, String>, Vec<Frame>, Symbolizer) {
        let mut target = go_marker(toolchain, variant);
        let mut line = String::new();
        target
            .stdout
            .read_line(&mut line)
            .expect("read target output");
        let fields: HashMap<String, String> = line
            .split_whitespace()
            .filter_map(|pair| pair.split_once('='))
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        let hex = |name: &str| {
            fields
                .get(name)
                .and_then(|value| value.strip_prefix("0x"))
                .and_then(|value| u64::from_str_radix(value, 16).ok())
                .unwrap_or_else(|| panic!("{name} in {line:?}"))
        };
        let (marker, entry, ret) = (hex("marker"), hex("entry"), hex("ret"));
        assert_eq!(marker, entry, "{line}");
        assert!(ret > entry, "{line}");
        let mut symbolizer = Symbolizer::new(target.pid()).expect("snapshot");
        let frames = symbolizer.symbolize(&[marker, ret]);
        (fields, frames, symbolizer)
    }

    fn backend_of_exe(symbolizer: &Symbolizer) -> &Backend {
        let exe = symbolizer
            .modules
            .iter()
            .find(|module| module.path.ends_with("/marker"))
            .expect("the executable is a module");
        exe.backend.as_ref().expect("backend chosen")
    }

    fn assert_marker_frames(what: &str, fields: &HashMap<String, String>, frames: &[Frame]) {
        assert_eq!(frames.len(), 2, "{what}: {frames:#?}");
        let (entry, call) = (&frames[0], &frames[1]);
        assert_eq!(entry.address, fields["entry"], "{what}");
        assert_eq!(call.address, fields["ret"], "{what}: reported as given");
        for frame in frames {
            assert_eq!(frame.function.as_deref(), Some("main.marker"), "{what}");
            assert!(!frame.inlined, "{what}");
            // -trimpath: the module path and the file name.
            let file = frame.file.as_deref().expect("file");
            assert_eq!(file, "example.com/leaky/main.go", "{what}");
            assert_eq!(file, fields["file"], "{what}: as the Go runtime says");
            assert!(
                frame
                    .module
                    .as_deref()
                    .is_some_and(|m| m.ends_with("/marker")),
                "{what}: {frame:?}"
            );
        }
        assert_eq!(entry.line, Some(line_of(MARKER_GO, "L_ENTRY")), "{what}");
        assert_eq!(
            entry.line.map(|l| l.to_string()).as_ref(),
            Some(&fields["entryline"]),
            "{what}"
        );
        // A return address is looked up one byte back: the line of the call.
        assert_eq!(call.line, Some(line_of(MARKER_GO, "L_CALL")), "{what}");
        assert_eq!(
            call.line.map(|l| l.to_string()).as_ref(),
            Some(&fields["line"]),
            "{what}"
        );
    }

    const GO_VARIANTS: [Variant; 5] = [
        Variant::Plain,
        Variant::Stripped,
        Variant::PieStripped,
        Variant::Cgo,
        Variant::CgoStripped,
    ];

    /// Go frames come from `.gopclntab` in every build, DWARF or not, and are those the Go
    /// runtime gives.
    #[test]
    fn go_frames_come_from_gopclntab() {
        for toolchain in TOOLCHAINS {
            for variant in GO_VARIANTS {
                let what = format!("{toolchain:?} {variant:?}");
                let (fields, frames, symbolizer) = go_marker_frames(toolchain, variant);
                assert_marker_frames(&what, &fields, &frames);
                assert!(
                    matches!(backend_of_exe(&symbolizer), Backend::Go(_)),
                    "{what}"
                );
            }
        }
    }

    /// Calls inlined into one another, and the Go runtime's own frames for the stack there;
    /// in the cgo variants also a `C.malloc` (whose cgo wrapper is inlined into the caller),
    /// with the stack at the time of the call: the executable's own `malloc` (interposing
    /// libc's) calls back into Go, which takes the stack there.
    const INLINE_GO: &str = include_str!("testdata/inline.go");

    const INLINE_NOCGO_GO: &str = include_str!("testdata/inline-nocgo.go");

    const INLINE_CGO_GO: &str = include_str!("testdata/inline-cgo.go");

    const INLINE_MALLOC_C: &str = include_str!("testdata/inline-malloc.c");

    const INLINE: testutil::Program = testutil::Program {
        name: "inline",
        files: &[
            ("main.go", INLINE_GO),
            ("nocgo.go", INLINE_NOCGO_GO),
            ("cmalloc.go", INLINE_CGO_GO),
            ("malloc.c", INLINE_MALLOC_C),
        ],
    };

    /// A frame as the Go runtime gives it.
    #[derive(Debug)]
    struct RuntimeFrame {
        ret: u64,
        inlined: bool,
        function: String,
        file: String,
        line: u32,
    }

    /// The runtime's frames of report `name`, grouped by physical frame: the frames inlined
    /// there, then the function they were inlined into. Each group's first frame is at the
    /// real return address (the others at the runtime's virtual pcs for inlined frames).
    fn runtime_frames(target: &mut Target, name: &str) -> Vec<Vec<RuntimeFrame>> {
        let mut groups = Vec::new();
        let mut group = Vec::new();
        loop {
            let mut line = String::new();
            target
                .stdout
                .read_line(&mut line)
                .expect("read target output");
            let mut words = line.split_whitespace();
            assert_eq!(words.next(), Some(name), "{line:?}");
            let fields: HashMap<&str, &str> =
                words.filter_map(|pair| pair.split_once('=')).collect();
            if fields.is_empty() {
                assert_eq!(line.trim(), format!("{name} end"));
                break;
            }
            let frame = RuntimeFrame {
                ret: u64::from_str_radix(&fields["ret"][2..], 16).expect("hex ret"),
                inlined: fields["inlined"] == "true",
                function: fields["func"].to_owned(),
                file: fields["file"].to_owned(),
                line: fields["line"].parse().expect("line"),
            };
            let physical = !frame.inlined;
            group.push(frame);
            if physical {
                groups.push(std::mem::take(&mut group));
            }
        }
        assert!(group.is_empty(), "{group:?}");
        groups
    }

    /// Our frames for each physical frame of the runtime's, looked up at its return address,
    /// are the runtime's frames: names, files, lines, inlined or not.
    fn assert_runtime_frames(
        what: &str,
        symbolizer: &mut Symbolizer,
        exe: &Path,
        groups: &[Vec<RuntimeFrame>],
    ) {
        for group in groups {
            let ret = group[0].ret;
            let ours = symbolizer.frames_at(ret, true);
            let got: Vec<_> = ours
                .iter()
                .map(|f| {
                    (
                        f.function.as_deref().unwrap_or("?"),
                        f.file.as_deref().unwrap_or("?"),
                        f.line.unwrap_or(0),
                        f.inlined,
                    )
                })
                .collect();
            let want: Vec<_> = group
                .iter()
                .map(|f| (f.function.as_str(), f.file.as_str(), f.line, f.inlined))
                .collect();
            assert_eq!(got, want, "{what}: at {ret:#x}");
            for frame in &ours {
                assert_eq!(frame.address, format!("0x{ret:x}"), "{what}");
                assert_eq!(frame.module.as_deref(), exe.to_str(), "{what}");
            }
        }
    }

    /// Expanded inlined calls are the Go runtime's (`runtime.CallersFrames`), in every build;
    /// in a cgo build also at the call of `C.malloc`, where Go 1.19's DWARF has the wrong call
    /// line; C code (the executable's malloc) is still blazesym's.
    #[test]
    fn inlined_go_frames_are_the_runtimes() {
        for toolchain in TOOLCHAINS {
            for variant in GO_VARIANTS {
                let what = format!("{toolchain:?} {variant:?}");
                let built = testutil::build_program(&INLINE, toolchain, variant);
                let dir = scratch_dir();
                std::fs::copy(&built, dir.join("inline")).expect("copy the Go target");
                let mut target = start(dir, "inline", &[]);
                let groups = runtime_frames(&mut target, "inline");
                let mut symbolizer = Symbolizer::new(target.pid()).expect("snapshot");
                let exe = target.exe.clone();
                assert_runtime_frames(&what, &mut symbolizer, &exe, &groups);
                let names: Vec<Vec<&str>> = groups
                    .iter()
                    .map(|group| group.iter().map(|f| f.function.as_str()).collect())
                    .collect();
                assert_eq!(
                    names,
                    [
                        vec!["main.inner", "main.middle", "main.outer"],
                        vec!["main.main"]
                    ],
                    "{what}"
                );
                let lines: Vec<u32> = groups[0].iter().map(|f| f.line).collect();
                let line = |mark| line_of(INLINE_GO, mark);
                assert_eq!(
                    lines,
                    [line("L_INNER"), line("L_MIDDLE"), line("L_OUTER")],
                    "{what}"
                );
                if !matches!(variant, Variant::Cgo | Variant::CgoStripped) {
                    continue;
                }
                let groups = runtime_frames(&mut target, "cmalloc");
                assert_runtime_frames(&what, &mut symbolizer, &exe, &groups);
                let call = groups
                    .iter()
                    .find(|group| group[0].function == "main._Cfunc__CMalloc")
                    .unwrap_or_else(|| panic!("{what}: no inlined cgo wrapper in {groups:#?}"));
                assert_eq!(call.len(), 2, "{what}: {call:#?}");
                assert_eq!(call[0].file, "_cgo_gotypes.go", "{what}");
                assert_eq!(call[1].function, "main.cmalloc", "{what}");
                assert_eq!(call[1].file, "example.com/leaky/cmalloc.go", "{what}");
                assert_eq!(call[1].line, line_of(INLINE_CGO_GO, "L_CMALLOC"), "{what}");

                let malloc = target.addresses()["malloc"];
                let frame = only(symbolizer.symbolize(&[malloc]));
                assert_eq!(frame.function.as_deref(), Some("malloc"), "{what}");
                assert_eq!(frame.module.as_deref(), exe.to_str(), "{what}");
                // DWARF, in the build that kept it.
                if variant == Variant::Cgo {
                    assert!(
                        frame
                            .file
                            .as_deref()
                            .is_some_and(|f| f.ends_with("malloc.c")),
                        "{what}: {frame:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn stripped_go_outside_its_functions_is_unknown() {
        let mut target = go_marker(Toolchain::Recent, Variant::PieStripped);
        target.addresses();
        let mut symbolizer = Symbolizer::new(target.pid()).expect("snapshot");
        let exe = symbolizer
            .mappings
            .iter()
            .find(|m| symbolizer.modules[m.module].path.ends_with("/marker"))
            .copied()
            .expect("the executable is mapped");
        // The first bytes of the executable mapping are ELF headers (or .text before the
        // first Go function): no function there, and blazesym has no symbols to offer.
        let frame = only(symbolizer.symbolize(&[exe.start]));
        assert_eq!(frame.function, None, "{frame:?}");
        assert_eq!(frame.file, None);
        assert_eq!(frame.line, None);
        assert!(matches!(backend_of_exe(&symbolizer), Backend::Go(_)));
    }

    #[inline(never)]
    fn rust_marker(x: u64) -> u64 {
        std::hint::black_box(x).wrapping_mul(31)
    }

    #[test]
    fn rust_names_are_demangled() {
        let mut symbolizer = Symbolizer::new(std::process::id()).expect("snapshot self");
        let pc = rust_marker as fn(u64) -> u64 as usize as u64;
        assert_eq!(rust_marker(1), 31);
        let frames = symbolizer.symbolize(&[pc]);
        let function = frames
            .last()
            .and_then(|f| f.function.as_deref())
            .expect("function");
        assert!(function.contains("rust_marker"), "{function}");
        assert!(
            !function.starts_with("_ZN") && !function.starts_with("_R"),
            "{function}"
        );
    }

    #[test]
    fn missing_process_is_named() {
        let err = Symbolizer::new(4_194_303).expect_err("no such pid");
        assert!(
            matches!(err, SymbolizeError::NoSuchProcess { pid: 4_194_303 }),
            "{err}"
        );
        assert!(err.to_string().contains("4194303"));
        assert!(matches!(
            Symbolizer::new(u32::MAX),
            Err(SymbolizeError::NoSuchProcess { .. })
        ));
    }
}
