//! Finding every allocator entry point the target really calls, in the objects it really calls
//! them in.
//!
//! Names other objects bind to (the C heap, `mmap`, C++ `operator new`, exported allocator
//! APIs) are taken from the first object in the dynamic linker's lookup order that exports
//! them, as the linker binds them: an LD_PRELOADed or linked jemalloc/tcmalloc/mimalloc, else
//! libc. An allocator linked into an object without exporting it (a static binary, Rust's
//! tikv-jemallocator with its `_rjem_` prefix, a static mimalloc) is probed in that object.
use std::{
    collections::{HashMap, HashSet, VecDeque},
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
};

use leak_common::probe_cookie;
use thiserror::Error;

use super::{
    catalogue::{self, Api, Entry, Role},
    elf::{ElfError, ElfObject, FunctionSymbol},
    files::{ObjectFile, TargetFiles},
    probe_site::{self, ProbeSite},
    process::{ExeSource, MappedObject, TargetProcess},
};

/// One probed entry point.
#[derive(Debug, Clone)]
pub struct EntryPoint {
    /// Its id in the catalogue.
    pub id: u16,
    /// The symbol as the object names it (`_rjem_mallocx`).
    pub symbol: String,
    /// The object as the target sees it.
    pub path: String,
    /// The same object, opened and checked: probes are placed in it through its
    /// `kernel_path`, never by a path the target could swap.
    pub object: Arc<ObjectFile>,
    /// File offset of the function's first instruction.
    pub function_offset: u64,
    /// Where the probes go (entry and return: one trap for both).
    pub site: ProbeSite,
    /// Another entry point at the same address, probed already (glibc's memalign is
    /// aligned_alloc): this one is not probed again.
    pub alias_of: Option<String>,
}

impl EntryPoint {
    pub fn entry(&self) -> &'static Entry {
        &catalogue::ENTRIES[usize::from(self.id)]
    }

    /// The eBPF program of its entry probe.
    pub fn program(&self) -> &'static str {
        match self.entry().role() {
            Role::Allocates => "alloc_enter",
            Role::Releases => "free_enter",
            Role::Unmaps => "munmap_enter",
        }
    }

    /// Whether it is probed at return too (the block's address comes back there).
    pub fn returns(&self) -> bool {
        self.entry().role() == Role::Allocates
    }

    /// The attach cookie: how the probe reads the call and which entry point it is.
    pub fn cookie(&self) -> u64 {
        probe_cookie::encode(self.entry().call, self.site.regs, self.id)
    }
}

/// An allocator implementation, told by the symbols its object defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavour {
    Glibc,
    Musl,
    Jemalloc,
    Tcmalloc,
    Mimalloc,
    Unknown,
}

impl Flavour {
    pub fn as_str(self) -> &'static str {
        match self {
            Flavour::Glibc => "glibc",
            Flavour::Musl => "musl",
            Flavour::Jemalloc => "jemalloc",
            Flavour::Tcmalloc => "tcmalloc",
            Flavour::Mimalloc => "mimalloc",
            Flavour::Unknown => "unknown",
        }
    }
}

/// The entry points probed in one object, for one allocator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    pub flavour: Flavour,
    pub path: String,
    /// Symbols probed (aliases included).
    pub probed: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Allocator {
    /// The flavour of the object that provides `malloc`.
    pub name: String,
    pub path: String,
    /// The C heap is linked into the executable (a static binary).
    pub linked_into_executable: bool,
    pub entries: Vec<EntryPoint>,
    /// Standard entry points nothing defines: skipped, not an error.
    pub missing: Vec<&'static str>,
    pub families: Vec<Family>,
}

impl Allocator {
    /// A pure Go program: no C allocator, only its goroutines are traced.
    pub fn pure_go() -> Self {
        Self {
            name: "none (pure Go)".to_owned(),
            path: String::new(),
            linked_into_executable: false,
            entries: Vec::new(),
            missing: Vec::new(),
            families: Vec::new(),
        }
    }
}

#[derive(Debug, Error)]
pub enum AllocatorError {
    #[error(
        "PID {pid} ({comm}) is a pure Go program with no C allocator to probe; \
         native allocation tracing does not apply (goroutine tracking is the way for Go leaks)"
    )]
    PureGo { pid: u32, comm: String },
    #[error(
        "PID {pid} ({comm}): no loaded object exports malloc ({exe} may be a stripped static binary)"
    )]
    NoAllocator { pid: u32, comm: String, exe: String },
    #[error("{program}: no object exports malloc (a stripped static binary?)")]
    NoAllocatorInProgram { program: String },
    #[error("cannot list the libraries of {program} with {loader}: {reason}")]
    Loader {
        program: String,
        loader: String,
        reason: String,
    },
    #[error(transparent)]
    Elf(#[from] ElfError),
}

/// An object the target has (or will have) mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    /// As the target sees it.
    path: String,
    source: Source,
    executable: bool,
}

/// Where a candidate's contents come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// A running target's mapping: opened through it, checked against it.
    Mapped(MappedObject),
    /// A running target's executable (`/proc/PID/exe`).
    Exe,
    /// A host path leaktrace resolved itself (`run -- CMD`, before the command starts).
    Host(PathBuf),
}

impl Candidate {
    fn open(&self, files: Option<&TargetFiles>) -> Result<ElfObject, ElfError> {
        match (&self.source, files) {
            (Source::Mapped(mapping), Some(files)) => {
                ElfObject::from_file(files.open_mapped(mapping)?)
            }
            (Source::Exe, Some(files)) => ElfObject::from_file(files.open_exe()?),
            (Source::Host(path), _) => ElfObject::open(path),
            (_, None) => Err(ElfError::NotOpened {
                path: self.path.clone(),
            }),
        }
    }
}

/// The allocator of a running process.
pub fn for_process(
    target: &TargetProcess,
    objects: &[MappedObject],
) -> Result<Allocator, AllocatorError> {
    let files = target.files.as_ref();
    let candidates = lookup_order(target, files, objects);
    let exe = target.exe.display().to_string();
    resolve(&candidates, Some(files)).map_err(|none| match none {
        Missing::Allocator { go: true } => AllocatorError::PureGo {
            pid: target.pid,
            comm: target.comm.clone(),
        },
        Missing::Allocator { go: false } => AllocatorError::NoAllocator {
            pid: target.pid,
            comm: target.comm.clone(),
            exe: exe.clone(),
        },
        Missing::Executable(error) => error,
    })
}

/// The allocator a program will use once started (for `leaktrace run`), from the dynamic
/// loader's own resolution (`ld.so --list`, as ldd does), so LD_PRELOAD and rpaths count.
pub fn for_program(program: &Path) -> Result<Allocator, AllocatorError> {
    let exe = ElfObject::open(program)?;
    let program_path = program.display().to_string();
    let mut candidates = vec![Candidate {
        path: program_path.clone(),
        source: Source::Host(program.to_path_buf()),
        executable: true,
    }];
    if let Some(loader) = exe.interpreter() {
        let output = Command::new(&loader)
            .arg("--list")
            .arg(program)
            .output()
            .map_err(|e| AllocatorError::Loader {
                program: program_path.clone(),
                loader: loader.clone(),
                reason: e.to_string(),
            })?;
        if !output.status.success() {
            return Err(AllocatorError::Loader {
                program: program_path,
                loader,
                reason: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        for path in parse_loader_list(&String::from_utf8_lossy(&output.stdout)) {
            candidates.push(Candidate {
                source: Source::Host(PathBuf::from(&path)),
                path,
                executable: false,
            });
        }
    }
    resolve(&candidates, None).map_err(|none| match none {
        Missing::Allocator { go: true } => AllocatorError::PureGo {
            pid: 0,
            comm: program_path.clone(),
        },
        Missing::Allocator { go: false } => AllocatorError::NoAllocatorInProgram {
            program: program_path.clone(),
        },
        Missing::Executable(error) => error,
    })
}

/// Paths from `ld.so --list` output, in load order.
fn parse_loader_list(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.trim(),
                None => line,
            };
            let path = path.split(" (0x").next().unwrap_or(path).trim();
            path.starts_with('/').then(|| path.to_owned())
        })
        .collect()
}

/// Executable first, then LD_PRELOAD, then the DT_NEEDED graph breadth first (the dynamic
/// linker's symbol lookup order), then anything else mapped (dlopen'ed). Each object is opened
/// through its mapping, so a container's paths, or a file replaced on disk, do not matter.
fn lookup_order(
    target: &TargetProcess,
    files: &TargetFiles,
    objects: &[MappedObject],
) -> Vec<Candidate> {
    let mut mapped: Vec<Candidate> = Vec::new();
    for object in objects {
        let path = object.path.display().to_string();
        if !mapped.iter().any(|c| c.path == path) {
            mapped.push(Candidate {
                path,
                source: Source::Mapped(object.clone()),
                executable: object.path == target.exe,
            });
        }
    }
    let exe = match mapped.iter().find(|c| c.executable) {
        Some(exe) => exe.clone(),
        None => Candidate {
            path: target.exe.display().to_string(),
            source: match &target.exe_source {
                ExeSource::Running => Source::Exe,
                ExeSource::Program(program) => Source::Host(program.clone()),
            },
            executable: true,
        },
    };
    let open = |c: &Candidate| c.open(Some(files));
    let basename = |path: &str| path.rsplit('/').next().unwrap_or(path).to_owned();

    // Names a library can be asked for: its SONAME and its file name.
    let mut by_name: HashMap<String, &Candidate> = HashMap::new();
    for c in &mapped {
        by_name.insert(basename(&c.path), c);
        if let Ok(object) = open(c)
            && let Some(soname) = object.soname()
        {
            by_name.entry(soname).or_insert(c);
        }
    }
    let mut order: Vec<Candidate> = vec![exe.clone()];
    // A preload names a file (often a symlink: `libtcmalloc_minimal.so.4`, mapped as
    // `.so.4.5.10`) or a library name: matched by file name or SONAME.
    for preload in &target.preload {
        if let Some(&c) = by_name.get(&basename(preload)) {
            order.push(c.clone());
        }
    }
    let mut seen: HashSet<String> = HashSet::new();
    let mut queue: VecDeque<Candidate> = VecDeque::from([exe]);
    while let Some(c) = queue.pop_front() {
        let Ok(object) = open(&c) else {
            continue;
        };
        for name in object.needed() {
            if seen.insert(name.clone())
                && let Some(&dep) = by_name.get(&name)
            {
                order.push(dep.clone());
                queue.push_back(dep.clone());
            }
        }
    }
    order.extend(mapped.iter().cloned());
    let mut unique: Vec<Candidate> = Vec::new();
    for c in order {
        if !unique.iter().any(|u| u.path == c.path) {
            unique.push(c);
        }
    }
    unique
}

enum Missing {
    Allocator { go: bool },
    Executable(AllocatorError),
}

/// Symbols that tell an allocator apart without being probed.
const MARKERS: [(&str, Flavour); 6] = [
    ("gnu_get_libc_version", Flavour::Glibc),
    // ptmalloc's core, in static binaries' symbol tables.
    ("_int_malloc", Flavour::Glibc),
    ("TCMallocInternalMalloc", Flavour::Tcmalloc),
    // musl's mallocng, in static binaries' symbol tables.
    ("__malloc_alloc_meta", Flavour::Musl),
    ("__libc_malloc_impl", Flavour::Musl),
    ("__malloc_donate", Flavour::Musl),
];

/// What one object defines of the catalogue.
struct Scanned {
    candidate: Candidate,
    /// Catalogue entries found, with their symbols, in catalogue order.
    found: Vec<(u16, FunctionSymbol, bool)>,
    flavour: Flavour,
    /// C++ runtimes forward `operator new`/`delete` to malloc/free: probed there.
    cxx_runtime: bool,
    code: ElfObject,
}

fn scan(candidate: &Candidate, files: Option<&TargetFiles>) -> Result<Scanned, ElfError> {
    let object = candidate.open(files)?;
    let symbols = object.functions(|name| {
        catalogue::lookup(name).is_some() || MARKERS.iter().any(|(m, _)| *m == name)
    });
    let mut found: Vec<(u16, FunctionSymbol, bool)> = symbols
        .iter()
        .filter_map(|s| catalogue::lookup(&s.name).map(|m| (m.id, s.clone(), m.prefixed)))
        .collect();
    found.sort_by_key(|(id, symbol, _)| (*id, !symbol.exported));
    let has = |name: &str| symbols.iter().any(|s| s.name == name);
    let file = candidate.path.rsplit('/').next().unwrap_or(&candidate.path);
    let soname = object.soname().unwrap_or_default();
    Ok(Scanned {
        flavour: flavour(&found, &has, &candidate.path),
        cxx_runtime: ["libstdc++.", "libc++."]
            .iter()
            .any(|p| soname.starts_with(p) || file.starts_with(p)),
        candidate: candidate.clone(),
        found,
        code: object,
    })
}

fn flavour(
    found: &[(u16, FunctionSymbol, bool)],
    has: &dyn Fn(&str) -> bool,
    path: &str,
) -> Flavour {
    let api = |api: Api| {
        found
            .iter()
            .any(|(id, _, _)| catalogue::ENTRIES[usize::from(*id)].api == api)
    };
    if api(Api::Jemalloc) || found.iter().any(|(_, _, prefixed)| *prefixed) {
        return Flavour::Jemalloc;
    }
    if api(Api::Tcmalloc) {
        return Flavour::Tcmalloc;
    }
    if api(Api::Mimalloc) {
        return Flavour::Mimalloc;
    }
    if let Some((_, f)) = MARKERS.iter().find(|(m, _)| has(m)) {
        return *f;
    }
    // musl's dynamic libc exports nothing of its own allocator and has no SONAME; its paths
    // say it: /lib/ld-musl-x86_64.so.1, Alpine's libc.musl-x86_64.so.1, Debian's
    // /usr/lib/x86_64-linux-musl/libc.so.
    if path.contains("musl") {
        return Flavour::Musl;
    }
    Flavour::Unknown
}

fn resolve(candidates: &[Candidate], files: Option<&TargetFiles>) -> Result<Allocator, Missing> {
    let mut scanned: Vec<Scanned> = Vec::new();
    let mut go = false;
    for candidate in candidates {
        match scan(candidate, files) {
            Ok(s) => {
                go |= candidate.executable && s.code.is_go();
                scanned.push(s);
            }
            // The executable must be readable; a library we cannot open is skipped.
            Err(error) if candidate.executable => {
                return Err(Missing::Executable(AllocatorError::Elf(error)));
            }
            Err(error) => log::debug!("allocator symbols of {}: {error}", candidate.path),
        }
    }
    let chosen = choose(&scanned);
    let Some(provider) = chosen
        .iter()
        .find(|(_, symbol, id)| symbol.name == "malloc" && catalogue::site_name(*id) == "malloc")
        .map(|(object, _, _)| *object)
    else {
        return Err(Missing::Allocator { go });
    };
    let provider = &scanned[provider];
    if provider.flavour == Flavour::Unknown {
        log::warn!(
            "unknown allocator in {} (it defines {}): probing what it defines",
            provider.candidate.path,
            provider
                .found
                .iter()
                .map(|(_, s, _)| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let entries = entry_points(&scanned, &chosen);
    Ok(Allocator {
        name: provider.flavour.as_str().to_owned(),
        path: provider.candidate.path.clone(),
        linked_into_executable: provider.candidate.executable,
        missing: missing(&entries),
        families: families(&scanned, &entries),
        entries,
    })
}

/// The symbols to probe: (object index, symbol, entry id), in lookup order.
fn choose(scanned: &[Scanned]) -> Vec<(usize, FunctionSymbol, u16)> {
    let mut bound: HashSet<&str> = HashSet::new();
    let mut chosen = Vec::new();
    for (index, object) in scanned.iter().enumerate() {
        for (id, symbol, prefixed) in &object.found {
            let api = catalogue::ENTRIES[usize::from(*id)].api;
            let standard = matches!(api, Api::CHeap | Api::Map | Api::Cxx) && !prefixed;
            let take = if symbol.exported {
                // The dynamic linker binds a name to its first exporter.
                bound.insert(symbol.name.as_str()) && !(api == Api::Cxx && object.cxx_runtime)
            } else {
                // Linked in without exporting: the object calls its own. Standard names only
                // in an executable (a static binary), where no other object can provide them.
                !standard || object.candidate.executable
            };
            if take {
                chosen.push((index, symbol.clone(), *id));
            }
        }
    }
    chosen
}

fn entry_points(scanned: &[Scanned], chosen: &[(usize, FunctionSymbol, u16)]) -> Vec<EntryPoint> {
    let mut entries: Vec<EntryPoint> = Vec::new();
    for (index, symbol, id) in chosen {
        let object = &scanned[*index];
        let entry = &catalogue::ENTRIES[usize::from(*id)];
        // Aliases share the first one's probe (catalogue order: standard names first).
        let alias_of = entries
            .iter()
            .find(|e| e.path == object.candidate.path && e.function_offset == symbol.offset)
            .map(|e| e.symbol.clone());
        let code = object.code.bytes_at(symbol.offset, symbol.size.max(64));
        let site = probe_site::place(code, symbol.offset, entry.args);
        log::debug!(
            "{} in {}: probe at +{} ({}), arguments in {:?}",
            symbol.name,
            object.candidate.path,
            site.offset - symbol.offset,
            if site.emulated {
                "emulated"
            } else {
                "single-stepped"
            },
            &site.regs[..entry.args.len()]
        );
        entries.push(EntryPoint {
            id: *id,
            symbol: symbol.name.clone(),
            path: object.candidate.path.clone(),
            object: object.code.shared_file(),
            function_offset: symbol.offset,
            site,
            alias_of,
        });
    }
    entries
}

/// Standard entry points nothing defines.
fn missing(entries: &[EntryPoint]) -> Vec<&'static str> {
    const STANDARD: [&str; 12] = [
        "malloc",
        "calloc",
        "realloc",
        "reallocarray",
        "posix_memalign",
        "aligned_alloc",
        "memalign",
        "valloc",
        "pvalloc",
        "free",
        "mmap",
        "munmap",
    ];
    STANDARD
        .into_iter()
        .filter(|name| !entries.iter().any(|e| e.entry().symbol == *name))
        .collect()
}

/// The probed entry points by object.
fn families(scanned: &[Scanned], entries: &[EntryPoint]) -> Vec<Family> {
    let mut families: Vec<Family> = Vec::new();
    for entry in entries {
        let flavour = scanned
            .iter()
            .find(|s| s.candidate.path == entry.path)
            .map_or(Flavour::Unknown, |s| s.flavour);
        match families.iter_mut().find(|f| f.path == entry.path) {
            Some(family) => family.probed.push(entry.symbol.clone()),
            None => families.push(Family {
                flavour,
                path: entry.path.clone(),
                probed: vec![entry.symbol.clone()],
            }),
        }
    }
    families
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loader_listing_is_parsed_in_order() {
        // Captured from `/lib64/ld-linux-x86-64.so.2 --list /usr/bin/true` with a preload.
        let listing = "\tlinux-vdso.so.1 (0x00007ffd5e3f5000)\n\
                       \t/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 (0x00007f0c1a000000)\n\
                       \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0c19e1f000)\n\
                       \tlibstdc++.so.6 => /lib/x86_64-linux-gnu/libstdc++.so.6 (0x00007f0c19c00000)\n\
                       \t/lib64/ld-linux-x86-64.so.2 (0x00007f0c1a23d000)\n";
        assert_eq!(
            parse_loader_list(listing),
            vec![
                "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib/x86_64-linux-gnu/libstdc++.so.6",
                "/lib64/ld-linux-x86-64.so.2",
            ]
        );
    }

    #[test]
    fn own_process_uses_glibc() {
        let me = TargetProcess::inspect(std::process::id()).expect("inspect self");
        let objects = me.executable_objects().expect("maps");
        let allocator = for_process(&me, &objects).expect("allocator");
        assert_eq!(allocator.name, "glibc");
        assert!(!allocator.linked_into_executable);
        let names: Vec<_> = allocator
            .entries
            .iter()
            .map(|e| e.symbol.as_str())
            .collect();
        for wanted in ["malloc", "free", "calloc", "realloc", "mmap", "munmap"] {
            assert!(names.contains(&wanted), "{wanted} missing from {names:?}");
        }
        // libstdc++'s operator new forwards to malloc: not probed twice.
        assert!(!names.contains(&"_Znwm"), "{names:?}");
    }

    /// Debian's allocator packages, installed by `cargo xtask setup`.
    #[test]
    fn flavours_come_from_the_symbols() {
        let lib = "/usr/lib/x86_64-linux-gnu";
        for (path, want) in [
            (format!("{lib}/libc.so.6"), Flavour::Glibc),
            (format!("{lib}/libjemalloc.so.2"), Flavour::Jemalloc),
            (format!("{lib}/libtcmalloc_minimal.so.4"), Flavour::Tcmalloc),
            (format!("{lib}/libmimalloc.so.2"), Flavour::Mimalloc),
            ("/lib/ld-musl-x86_64.so.1".to_owned(), Flavour::Musl),
        ] {
            let candidate = Candidate {
                source: Source::Host(PathBuf::from(&path)),
                path: path.clone(),
                executable: false,
            };
            let scanned = scan(&candidate, None).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(scanned.flavour, want, "{path}");
        }
    }

    #[test]
    fn programs_resolve_through_the_loader() {
        let allocator = for_program(Path::new("/usr/bin/true")).expect("allocator of true");
        assert_eq!(allocator.name, "glibc");
        assert!(allocator.path.contains("libc.so"));
    }
}
