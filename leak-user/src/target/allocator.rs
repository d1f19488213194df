//! Finding the allocator the target really uses: the first object in the dynamic linker's
//! lookup order that exports `malloc` — the executable itself when statically linked, an
//! LD_PRELOADed or linked jemalloc/tcmalloc/mimalloc, otherwise libc.
use std::{
    collections::{HashMap, HashSet, VecDeque},
    path::{Path, PathBuf},
    process::Command,
};

use leak_common::kind;
use thiserror::Error;

use super::{
    elf::{ElfError, ElfObject},
    probe_site::skip_flag_only_prologue,
    process::{MappedObject, TargetProcess},
};

/// An allocator function and the eBPF program that probes its entry.
#[derive(Debug, Clone, Copy)]
pub struct EntrySpec {
    pub name: &'static str,
    pub program: &'static str,
    /// The attach cookie: which function `alloc_enter` is looking at (`leak_common::kind`).
    pub cookie: Option<u32>,
    /// Also probed at return (the address or status comes back there).
    pub returns: bool,
}

const fn allocating(name: &'static str, kind: u32) -> EntrySpec {
    EntrySpec {
        name,
        program: "alloc_enter",
        cookie: Some(kind),
        returns: true,
    }
}

const fn releasing(name: &'static str, program: &'static str) -> EntrySpec {
    EntrySpec {
        name,
        program,
        cookie: None,
        returns: false,
    }
}

/// Taken from the allocator object. `aligned_alloc` precedes `memalign`: glibc 2.36 exports them
/// at one address, and C11 code calls the former.
pub const HEAP_ENTRY_POINTS: [EntrySpec; 10] = [
    allocating("malloc", kind::MALLOC),
    allocating("calloc", kind::CALLOC),
    allocating("realloc", kind::REALLOC),
    allocating("reallocarray", kind::REALLOCARRAY),
    allocating("posix_memalign", kind::POSIX_MEMALIGN),
    allocating("aligned_alloc", kind::ALIGNED_ALLOC),
    allocating("memalign", kind::MEMALIGN),
    allocating("valloc", kind::VALLOC),
    allocating("pvalloc", kind::PVALLOC),
    releasing("free", "free_enter"),
];

/// Taken from the first object exporting them (libc even under jemalloc: its own mmaps happen
/// inside malloc and are ignored there).
pub const MAP_ENTRY_POINTS: [EntrySpec; 2] = [
    allocating("mmap", kind::MMAP),
    releasing("munmap", "munmap_enter"),
];

/// One probe site.
#[derive(Debug, Clone)]
pub struct EntryPoint {
    pub spec: EntrySpec,
    /// The object as the target sees it.
    pub path: String,
    /// The same object, openable from here.
    pub host_path: PathBuf,
    /// File offset of the function's first instruction (where the return probe goes).
    pub offset: u64,
    /// File offset for the entry probe: past a leading flag-only instruction the kernel would
    /// have to single-step (see `probe_site`).
    pub entry_offset: u64,
    /// Another entry point at the same address, already probed (glibc's memalign).
    pub alias_of: Option<&'static str>,
}

#[derive(Debug, Clone)]
pub struct Allocator {
    pub name: String,
    pub path: String,
    pub entries: Vec<EntryPoint>,
    pub missing: Vec<&'static str>,
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

/// A candidate object: its path in the target's view and a path we can open.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    path: String,
    host_path: PathBuf,
}

/// The allocator of a running process.
pub fn for_process(
    target: &TargetProcess,
    objects: &[MappedObject],
) -> Result<Allocator, AllocatorError> {
    let candidates = lookup_order(target, objects)?;
    let exe = target.exe.display().to_string();
    choose(&candidates, &exe).map_err(|none| match none {
        Choice::None { go: true } => AllocatorError::PureGo {
            pid: target.pid,
            comm: target.comm.clone(),
        },
        Choice::None { go: false } => AllocatorError::NoAllocator {
            pid: target.pid,
            comm: target.comm.clone(),
            exe: exe.clone(),
        },
        Choice::Failed(error) => error,
    })
}

/// The allocator a program will use once started (for `leaktrace run`), from the dynamic
/// loader's own resolution (`ld.so --list`, as ldd does), so LD_PRELOAD and rpaths count.
pub fn for_program(program: &Path) -> Result<Allocator, AllocatorError> {
    let exe = ElfObject::open(program)?;
    let program_path = program.display().to_string();
    let mut candidates = vec![Candidate {
        path: program_path.clone(),
        host_path: program.to_path_buf(),
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
                host_path: PathBuf::from(&path),
                path,
            });
        }
    }
    choose(&candidates, &program_path).map_err(|none| match none {
        Choice::None { go: true } => AllocatorError::PureGo {
            pid: 0,
            comm: program_path.clone(),
        },
        Choice::None { go: false } => AllocatorError::NoAllocatorInProgram {
            program: program_path.clone(),
        },
        Choice::Failed(error) => error,
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
/// linker's symbol lookup order), then anything else mapped (dlopen'ed).
fn lookup_order(
    target: &TargetProcess,
    objects: &[MappedObject],
) -> Result<Vec<Candidate>, AllocatorError> {
    let mut mapped: Vec<PathBuf> = Vec::new();
    for object in objects {
        if !mapped.contains(&object.path) {
            mapped.push(object.path.clone());
        }
    }
    let candidate = |path: &Path| Candidate {
        path: path.display().to_string(),
        host_path: target.host_path(path),
    };
    let basename = |path: &Path| {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };

    let mut order: Vec<Candidate> = vec![candidate(&target.exe)];
    for preload in &target.preload {
        let wanted = basename(Path::new(preload));
        if let Some(path) = mapped.iter().find(|p| basename(p) == wanted) {
            order.push(candidate(path));
        }
    }

    // Names a library can be asked for: its SONAME and its file name.
    let mut by_name: HashMap<String, PathBuf> = HashMap::new();
    for path in &mapped {
        by_name.insert(basename(path), path.clone());
        if let Ok(object) = ElfObject::open(&target.host_path(path))
            && let Some(soname) = object.soname()
        {
            by_name.entry(soname).or_insert_with(|| path.clone());
        }
    }
    let mut seen: HashSet<String> = HashSet::new();
    let mut queue: VecDeque<PathBuf> = VecDeque::from([target.exe.clone()]);
    while let Some(path) = queue.pop_front() {
        let Ok(object) = ElfObject::open(&target.host_path(&path)) else {
            continue;
        };
        for name in object.needed() {
            if seen.insert(name.clone())
                && let Some(dep) = by_name.get(&name)
            {
                order.push(candidate(dep));
                queue.push_back(dep.clone());
            }
        }
    }
    for path in &mapped {
        order.push(candidate(path));
    }
    let mut unique = Vec::new();
    for c in order {
        if !unique.contains(&c) {
            unique.push(c);
        }
    }
    Ok(unique)
}

enum Choice {
    None { go: bool },
    Failed(AllocatorError),
}

fn choose(candidates: &[Candidate], exe: &str) -> Result<Allocator, Choice> {
    let heap_names: Vec<&str> = HEAP_ENTRY_POINTS.iter().map(|e| e.name).collect();
    let map_names: Vec<&str> = MAP_ENTRY_POINTS.iter().map(|e| e.name).collect();
    let mut heap: Option<(Candidate, HashMap<String, u64>)> = None;
    let mut maps: Option<(Candidate, HashMap<String, u64>)> = None;
    let mut go = false;
    for candidate in candidates {
        let Ok(object) = ElfObject::open(&candidate.host_path) else {
            if candidate.path == exe {
                // The executable must be readable; a library we cannot open is skipped.
                return Err(Choice::Failed(
                    ElfObject::open(&candidate.host_path)
                        .err()
                        .map(AllocatorError::Elf)
                        .unwrap_or(AllocatorError::NoAllocatorInProgram {
                            program: exe.to_owned(),
                        }),
                ));
            }
            continue;
        };
        if candidate.path == exe {
            go = object.is_go();
        }
        if heap.is_none() {
            let found = object.function_offsets(&heap_names);
            if found.contains_key("malloc") {
                heap = Some((candidate.clone(), found));
            }
        }
        if maps.is_none() {
            let found = object.function_offsets(&map_names);
            if found.contains_key("mmap") {
                maps = Some((candidate.clone(), found));
            }
        }
        if heap.is_some() && maps.is_some() {
            break;
        }
    }
    let Some((object, offsets)) = heap else {
        return Err(Choice::None { go });
    };

    let mut entries: Vec<EntryPoint> = Vec::new();
    let mut missing = Vec::new();
    let mut add =
        |specs: &[EntrySpec], owner: &Candidate, offsets: &HashMap<String, u64>, code: &[u8]| {
            for spec in specs {
                let Some(&offset) = offsets.get(spec.name) else {
                    missing.push(spec.name);
                    continue;
                };
                let alias_of = entries
                    .iter()
                    .find(|e| e.host_path == owner.host_path && e.offset == offset)
                    .map(|e| e.spec.name);
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                let window = code.get(start..).map_or(&[][..], |c| &c[..c.len().min(32)]);
                entries.push(EntryPoint {
                    spec: *spec,
                    path: owner.path.clone(),
                    host_path: owner.host_path.clone(),
                    offset,
                    entry_offset: offset + skip_flag_only_prologue(window, offset),
                    alias_of,
                });
            }
        };
    let code = |c: &Candidate| {
        ElfObject::open(&c.host_path)
            .map(|o| o.data().to_vec())
            .unwrap_or_default()
    };
    add(&HEAP_ENTRY_POINTS, &object, &offsets, &code(&object));
    match &maps {
        Some((owner, offsets)) => add(&MAP_ENTRY_POINTS, owner, offsets, &code(owner)),
        None => missing.extend(MAP_ENTRY_POINTS.iter().map(|e| e.name)),
    }
    Ok(Allocator {
        name: classify(&object.path, object.path == exe),
        path: object.path,
        entries,
        missing,
    })
}

fn classify(path: &str, is_executable: bool) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let name = if is_executable {
        "static"
    } else if file.contains("jemalloc") {
        "jemalloc"
    } else if file.contains("tcmalloc") {
        "tcmalloc"
    } else if file.contains("mimalloc") {
        "mimalloc"
    } else if file.starts_with("libc.so") || file.starts_with("libc-") {
        "glibc"
    } else {
        "unknown"
    };
    name.to_owned()
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
    fn names_follow_the_object() {
        assert_eq!(classify("/lib/x86_64-linux-gnu/libc.so.6", false), "glibc");
        assert_eq!(classify("/usr/lib/libjemalloc.so.2", false), "jemalloc");
        assert_eq!(classify("/opt/server", true), "static");
    }

    #[test]
    fn own_process_uses_glibc() {
        let me = TargetProcess::inspect(std::process::id()).expect("inspect self");
        let objects = me.executable_objects().expect("maps");
        let allocator = for_process(&me, &objects).expect("allocator");
        assert_eq!(allocator.name, "glibc");
        let names: Vec<_> = allocator.entries.iter().map(|e| e.spec.name).collect();
        for wanted in ["malloc", "free", "calloc", "realloc", "mmap", "munmap"] {
            assert!(names.contains(&wanted), "{wanted} missing from {names:?}");
        }
    }

    #[test]
    fn programs_resolve_through_the_loader() {
        let allocator = for_program(Path::new("/usr/bin/true")).expect("allocator of true");
        assert_eq!(allocator.name, "glibc");
        assert!(allocator.path.contains("libc.so"));
    }
}
