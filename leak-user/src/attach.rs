//! Loading the eBPF object and attaching its probes to the target's allocator.
//!
//! Everything attached is owned by the returned [`aya::Ebpf`]: dropping it detaches every probe,
//! so an error half-way leaves nothing behind.
use std::{io, num::NonZeroU32, path::Path, sync::Arc};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    programs::{
        ProgramError, UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
    },
};
use thiserror::Error;

use aya::maps::Array;
use leak_common::go_param;

use crate::golang::{offsets::RuntimeOffsets, probes::GoProbes};
use crate::tracee::{Allocator, EntryPoint};
use crate::uprobe_multi::{Direction, LinkKind, MultiError, MultiLinks, Probes};

/// The eBPF object built from `leak-ebpf` by build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/leak"));

/// The return probe shared by all allocating entry points.
const RETURN_PROGRAM: &str = "alloc_return";

/// The entry probe shared by all allocating entry points.
const ENTRY_PROGRAM: &str = "alloc_enter";

/// `ENTRY_PROGRAM` and `RETURN_PROGRAM` as one uprobe session program.
const SESSION_PROGRAM: &str = "alloc_session";

/// The allocator's programs, attached through `uprobe_multi` links where the kernel has them.
const MULTI_LINK_PROGRAMS: [&str; 4] =
    [ENTRY_PROGRAM, RETURN_PROGRAM, "free_enter", "munmap_enter"];

/// How allocator probes are linked (a hidden option, for the bench and the fallback tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ProbeLinks {
    /// The fastest the kernel has: uprobe sessions (6.12+), else `uprobe_multi` links (6.6+),
    /// else one link per probe.
    #[default]
    Auto,
    /// `uprobe_multi` links with a return probe on every allocating call, no sessions.
    Multi,
    /// One perf-event link per probe, as before Linux 6.6.
    PerProbe,
}

/// The probe on the dynamic loader's debugger hook.
const DLOPEN_PROGRAM: &str = "dl_debug_state";

#[derive(Debug, Error)]
pub enum AttachError {
    #[error("leaktrace needs root (or CAP_BPF and CAP_PERFMON) to load eBPF programs")]
    NotPermitted,
    #[error("this kernel has no uprobe support (CONFIG_UPROBE_EVENTS): {0} is missing")]
    NoUprobes(&'static str),
    #[error("cannot load the eBPF programs: {0}")]
    Load(#[source] Box<EbpfError>),
    #[error("the eBPF program {program} is missing from the object")]
    MissingProgram { program: &'static str },
    #[error("cannot load eBPF program {program}: {source}")]
    Program {
        program: &'static str,
        source: Box<ProgramError>,
    },
    #[error("the eBPF map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("cannot write the eBPF map {0}: {1}")]
    Map(&'static str, #[source] Box<aya::maps::MapError>),
    #[error("{0}")]
    Multi(#[source] Box<MultiError>),
    #[error("cannot attach {program} to {function} in {path}: {source}")]
    Attach {
        program: &'static str,
        function: &'static str,
        path: String,
        source: Box<ProgramError>,
    },
}

/// Sizes of the kernel-side maps, and how the programs are set up at load time.
#[derive(Debug, Clone, Copy)]
pub struct MapLimits {
    pub allocs: u32,
    pub stacks: u32,
    pub unwind_rows: u32,
    /// `--empty-probes`: every allocator probe returns at once (the bench's floor).
    pub empty_probes: bool,
    /// `--sample-bytes`: mean bytes between sampled allocations (0: record every one).
    pub sample_bytes: u64,
    /// Go targets: the `runtime.g` offsets the goroutine probes read.
    pub go: Option<RuntimeOffsets>,
    pub links: ProbeLinks,
}

impl MapLimits {
    /// For runs that probe no allocator (`leaktrace oom --follow`).
    pub fn minimal() -> Self {
        Self {
            allocs: 1024,
            stacks: 64,
            unwind_rows: 1024,
            empty_probes: false,
            sample_bytes: 0,
            go: None,
            links: ProbeLinks::Auto,
        }
    }
}

/// Checks what can be checked before touching the kernel, for a clear message.
pub fn preflight() -> Result<(), AttachError> {
    const UPROBE_PMU: &str = "/sys/bus/event_source/devices/uprobe";
    if !Path::new(UPROBE_PMU).exists() {
        return Err(AttachError::NoUprobes(UPROBE_PMU));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 && !has_bpf_capabilities() {
        return Err(AttachError::NotPermitted);
    }
    Ok(())
}

/// CAP_PERFMON (38) and CAP_BPF (39) in the effective set.
fn has_bpf_capabilities() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 38) != 0 && caps & (1 << 39) != 0)
}

/// The uprobe programs a target needs: its allocator's, the Go runtime's, and the entry stop
/// of a launched command.
pub fn programs_for(allocator: &Allocator, go: bool, launched: bool) -> Vec<&'static str> {
    let mut programs: Vec<&'static str> = Vec::new();
    for entry in &allocator.entries {
        programs.push(entry.program());
        if entry.returns() {
            programs.push(RETURN_PROGRAM);
        }
    }
    if go {
        programs.extend(["go_goroutine_exit", "go_cgocall_enter", "go_newproc1_ret"]);
    }
    if launched {
        programs.push("program_entry");
    }
    programs.sort_unstable();
    programs.dedup();
    programs
}

/// Loads the object (creating its maps) and then `programs` (verifying them), so that the
/// probes can all be attached in one burst: the kernel waits out an RCU grace period (~20 ms
/// here) at the first uprobe registered after a pause, and a verification between two
/// attaches is such a pause. The allocator's programs are loaded for `uprobe_multi` links when
/// the kernel takes them (then aya does not load them), else as aya's per-probe programs.
pub fn load_with_programs(
    limits: MapLimits,
    programs: &[&'static str],
) -> Result<Loaded, AttachError> {
    let mut ebpf = load(limits)?;
    let multi = match limits.links {
        ProbeLinks::PerProbe => None,
        links => load_multi_link_programs(&ebpf, programs, links == ProbeLinks::Auto),
    };
    let sessions = multi
        .as_ref()
        .is_some_and(|m| m.has_program(SESSION_PROGRAM));
    for &program in programs {
        let by_session = sessions && [ENTRY_PROGRAM, RETURN_PROGRAM].contains(&program);
        if !by_session && !multi.as_ref().is_some_and(|m| m.has_program(program)) {
            loaded_uprobe(&mut ebpf, program)?;
        }
    }
    Ok(Loaded {
        ebpf,
        multi_links: multi,
    })
}

/// The loaded object, and the allocator's programs for `uprobe_multi` links (`None`: per-probe
/// links), which own those links once attached: dropping it detaches them.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub multi_links: Option<MultiLinks>,
}

/// The allocator's programs among `programs`, for multi links, the allocating ones as one
/// session program where the kernel has sessions and `sessions` allows them; `None` where the
/// kernel refuses multi links (before Linux 6.6) or they cannot be loaded that way: per-probe
/// links remain.
fn load_multi_link_programs(
    ebpf: &Ebpf,
    programs: &[&'static str],
    sessions: bool,
) -> Option<MultiLinks> {
    let wanted: Vec<&'static str> = programs
        .iter()
        .copied()
        .filter(|p| MULTI_LINK_PROGRAMS.contains(p))
        .collect();
    if wanted.is_empty() {
        return None;
    }
    if sessions && wanted.contains(&ENTRY_PROGRAM) {
        let with_session: Vec<(&'static str, LinkKind)> = wanted
            .iter()
            .filter(|p| ![ENTRY_PROGRAM, RETURN_PROGRAM].contains(p))
            .map(|&p| (p, LinkKind::Multi))
            .chain([(SESSION_PROGRAM, LinkKind::Session)])
            .collect();
        match MultiLinks::load(EBPF_OBJECT, ebpf, &with_session) {
            Ok(multi) => {
                log::debug!("allocator programs loaded for uprobe sessions: {with_session:?}");
                return Some(multi);
            }
            Err(error) if error.is_unsupported() => {
                log::debug!("no uprobe sessions on this kernel: {error}");
            }
            Err(error) => log::warn!("no uprobe sessions (a return trap per call): {error}"),
        }
    }
    let multi_only: Vec<(&'static str, LinkKind)> =
        wanted.iter().map(|&p| (p, LinkKind::Multi)).collect();
    match MultiLinks::load(EBPF_OBJECT, ebpf, &multi_only) {
        Ok(multi) => {
            log::debug!("allocator programs loaded for uprobe_multi links: {wanted:?}");
            Some(multi)
        }
        Err(error) if error.is_unsupported() => {
            log::debug!("no uprobe_multi programs on this kernel, per-probe links: {error}");
            None
        }
        Err(error) => {
            log::warn!("per-probe links (slower to attach and detach): {error}");
            None
        }
    }
}

/// The uprobe program `program`, verified by the kernel (now, unless it was already).
fn loaded_uprobe<'a>(
    ebpf: &'a mut Ebpf,
    program: &'static str,
) -> Result<&'a mut UProbe, AttachError> {
    let probe: &mut UProbe = ebpf
        .program_mut(program)
        .ok_or(AttachError::MissingProgram { program })?
        .try_into()
        .map_err(|source| AttachError::Program {
            program,
            source: Box::new(source),
        })?;
    if probe.fd().is_err() {
        probe.load().map_err(|source| AttachError::Program {
            program,
            source: Box::new(source),
        })?;
    }
    Ok(probe)
}

pub fn load(limits: MapLimits) -> Result<Ebpf, AttachError> {
    raise_memlock_limit();
    let go = limits.go;
    EbpfLoader::new()
        .override_global("EMPTY_PROBES", &u8::from(limits.empty_probes), true)
        .override_global("SAMPLE_BYTES", &limits.sample_bytes, true)
        .override_global("GO_TARGET", &u8::from(go.is_some()), true)
        .override_global("GO_G_GOID", &go.map_or(0, |g| g.g_goid), true)
        .override_global("GO_G_GOPC", &go.map_or(0, |g| g.g_gopc), true)
        .override_global("GO_G_STARTPC", &go.map_or(0, |g| g.g_startpc), true)
        .map_max_entries("ALLOCS", limits.allocs)
        .map_max_entries("STACKS", limits.stacks)
        .map_max_entries("STACK_TOTALS", limits.stacks)
        .map_max_entries("UNWIND_ROWS", limits.unwind_rows)
        .load(EBPF_OBJECT)
        .map_err(|error| match &error {
            EbpfError::MapError(aya::maps::MapError::CreateError { io_error, .. })
                if io_error.kind() == io::ErrorKind::PermissionDenied =>
            {
                AttachError::NotPermitted
            }
            _ => AttachError::Load(Box::new(error)),
        })
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; newer ones to the memory cgroup,
/// where raising the limit is neither needed nor, without CAP_SYS_RESOURCE, possible.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        log::debug!(
            "cannot raise RLIMIT_MEMLOCK ({}); fine on kernels that charge BPF memory to the memory cgroup",
            io::Error::last_os_error()
        );
    }
}

/// Attaches the entry probe of every entry point, and the return probe where it returns a
/// value, for the target process only. Returns the names of the probed entry points.
///
/// The order matters on a running target: releasing probes (free, munmap) and return probes go
/// in before any allocating entry probe, so no allocation is recorded whose free or return could
/// still be missed (a missed free would be reported as a leak forever). A return probe sits on
/// the same instruction as its entry probe: one trap for both.
///
/// With multi links, each step is one `uprobe_multi` link per object; if the kernel refuses them,
/// they are dropped (with what they attached) and every probe gets its own link.
pub fn attach(
    loaded: &mut Loaded,
    allocator: &Allocator,
    pid: NonZeroU32,
) -> Result<Vec<String>, AttachError> {
    let Loaded {
        ebpf,
        multi_links: multi,
    } = loaded;
    let entries: Vec<&EntryPoint> = allocator
        .entries
        .iter()
        .filter(|e| e.alias_of.is_none())
        .collect();
    let attached_by_multi = match multi.as_mut() {
        Some(links) => match attach_multi(
            links,
            &attach_steps(&entries, links.has_program(SESSION_PROGRAM)),
            pid,
        ) {
            Ok(()) => {
                log::debug!(
                    "allocator probes: {} uprobe_multi links",
                    links.link_count()
                );
                true
            }
            Err(error) if error.is_unsupported() => {
                log::debug!("no uprobe_multi links on this kernel, per-probe links: {error}");
                *multi = None;
                false
            }
            Err(error) => return Err(AttachError::Multi(Box::new(error))),
        },
        None => false,
    };
    if !attached_by_multi {
        for step in &attach_steps(&entries, false) {
            for entry in &step.entries {
                attach_entry_point(ebpf, step.program, entry, pid)?;
            }
        }
    }
    // Aliases are probed too: they are the same code (glibc's memalign is aligned_alloc).
    let mut probed: Vec<String> = Vec::new();
    for entry in &allocator.entries {
        if !probed.contains(&entry.symbol) {
            probed.push(entry.symbol.clone());
        }
    }
    Ok(probed)
}

/// One program on a set of entry points.
struct AttachStep<'a> {
    program: &'static str,
    direction: Direction,
    entries: Vec<&'a EntryPoint>,
}

/// Releasing entry probes, then return probes, then allocating entry probes (see [`attach`]);
/// with `sessions`, the allocating entry points' sessions (each return tied to its entry).
fn attach_steps<'a>(entries: &[&'a EntryPoint], sessions: bool) -> Vec<AttachStep<'a>> {
    let mut steps: Vec<AttachStep<'a>> = Vec::new();
    let mut add = |program: &'static str, direction: Direction, entry: &'a EntryPoint| match steps
        .iter_mut()
        .find(|s| s.program == program && s.direction == direction)
    {
        Some(step) => step.entries.push(entry),
        None => steps.push(AttachStep {
            program,
            direction,
            entries: vec![entry],
        }),
    };
    for entry in entries.iter().filter(|e| !e.returns()) {
        add(entry.program(), Direction::Entry, entry);
    }
    if sessions {
        for entry in entries.iter().filter(|e| e.returns()) {
            add(SESSION_PROGRAM, Direction::Session, entry);
        }
        return steps;
    }
    for entry in entries.iter().filter(|e| e.returns()) {
        add(RETURN_PROGRAM, Direction::Return, entry);
    }
    for entry in entries.iter().filter(|e| e.returns()) {
        add(entry.program(), Direction::Entry, entry);
    }
    steps
}

/// Each step as one link per object.
fn attach_multi(
    links: &mut MultiLinks,
    steps: &[AttachStep<'_>],
    pid: NonZeroU32,
) -> Result<(), MultiError> {
    for step in steps {
        let mut objects: Vec<(&EntryPoint, Vec<&EntryPoint>)> = Vec::new();
        for &entry in &step.entries {
            match objects
                .iter_mut()
                .find(|(first, _)| Arc::ptr_eq(&first.object, &entry.object))
            {
                Some((_, same)) => same.push(entry),
                None => objects.push((entry, vec![entry])),
            }
        }
        for (first, same) in objects {
            let host_path = first.object.kernel_path();
            let probes = Probes {
                host_path: &host_path,
                path: &first.path,
                offsets: same.iter().map(|e| e.site.offset).collect(),
                cookies: same.iter().map(|e| e.cookie()).collect(),
            };
            links.attach(step.program, step.direction, &probes, pid)?;
        }
    }
    Ok(())
}

/// `leaktrace run`: a probe at the program's entry point that stops it there (SIGSTOP) so the
/// unwind tables of every library the loader mapped are in place before the program's code runs.
pub fn attach_entry_stop(
    ebpf: &mut Ebpf,
    program: &Path,
    entry_offset: u64,
    pid: NonZeroU32,
) -> Result<(), AttachError> {
    let path = program.display().to_string();
    let site = Site {
        host_path: program,
        path: &path,
        function: "entry point",
        offset: entry_offset,
        cookie: None,
    };
    attach_at(ebpf, "program_entry", &site, pid)
}

/// The dlopen hook: a probe on the dynamic loader's `_dl_debug_state` (file offset `offset`
/// in `loader`, as the target names it `path`), see `unwind::dlopen`.
pub fn attach_dlopen_hook(
    ebpf: &mut Ebpf,
    loader: &Path,
    path: &str,
    offset: u64,
    pid: NonZeroU32,
) -> Result<(), AttachError> {
    let site = Site {
        host_path: loader,
        path,
        function: "_dl_debug_state",
        offset,
        cookie: None,
    };
    attach_at(ebpf, DLOPEN_PROGRAM, &site, pid)
}

/// Detaches the dlopen hook: after it, no call stops the target.
pub fn detach_dlopen_hook(ebpf: &mut Ebpf) -> Result<(), AttachError> {
    let program = DLOPEN_PROGRAM;
    let probe = loaded_uprobe(ebpf, program)?;
    probe.unload().map_err(|source| AttachError::Program {
        program,
        source: Box::new(source),
    })
}

fn attach_entry_point(
    ebpf: &mut Ebpf,
    program: &'static str,
    entry: &EntryPoint,
    pid: NonZeroU32,
) -> Result<(), AttachError> {
    let path = entry.object.kernel_path();
    let site = Site {
        host_path: &path,
        path: &entry.path,
        function: entry.entry().symbol,
        offset: entry.site.offset,
        cookie: Some(entry.cookie()),
    };
    attach_at(ebpf, program, &site, pid)
}

/// Where one probe goes: a file offset in an object, named for error messages.
struct Site<'a> {
    host_path: &'a Path,
    path: &'a str,
    function: &'static str,
    offset: u64,
    cookie: Option<u64>,
}

fn attach_at(
    ebpf: &mut Ebpf,
    program: &'static str,
    site: &Site<'_>,
    pid: NonZeroU32,
) -> Result<(), AttachError> {
    let probe = loaded_uprobe(ebpf, program)?;
    let location = UProbeAttachLocation::AbsoluteOffset(site.offset);
    probe
        .attach(
            UProbeAttachPoint {
                location,
                cookie: site.cookie,
            },
            site.host_path,
            UProbeScope::OneProcess(pid),
        )
        .map_err(|source| AttachError::Attach {
            program,
            function: site.function,
            path: site.path.to_owned(),
            source: Box::new(source),
        })?;
    Ok(())
}

/// Goroutine and cgo probes in a Go executable. Exits go in before creations (no goroutine is
/// recorded whose exit could be missed). Returns the number of probes.
pub fn attach_go(
    ebpf: &mut Ebpf,
    probes: &GoProbes,
    host_path: &Path,
    path: &str,
    pid: NonZeroU32,
) -> Result<usize, AttachError> {
    let mut attached = 0;
    let mut at = |ebpf: &mut Ebpf, program: &'static str, function: &'static str, offset: u64| {
        let site = Site {
            host_path,
            path,
            function,
            offset,
            cookie: None,
        };
        attached += 1;
        attach_at(ebpf, program, &site, pid)
    };
    at(ebpf, "go_goroutine_exit", probes.exit.0, probes.exit.1)?;
    if let Some(entry) = probes.cgocall {
        at(ebpf, "go_cgocall_enter", "runtime.cgocall", entry)?;
    }
    for &ret in &probes.newproc1_rets {
        at(ebpf, "go_newproc1_ret", "runtime.newproc1", ret)?;
    }
    Ok(attached)
}

/// Tells the probes where the Go runtime's cgo trampolines are in the running target
/// (`bias`: run-time minus link-time address of the executable).
pub fn set_go_params(ebpf: &mut Ebpf, probes: &GoProbes, bias: u64) -> Result<(), AttachError> {
    let map = ebpf
        .map_mut("GO_PARAMS")
        .ok_or(AttachError::MissingMap("GO_PARAMS"))?;
    let mut params: Array<_, u64> =
        Array::try_from(map).map_err(|e| AttachError::Map("GO_PARAMS", Box::new(e)))?;
    let ranges = [
        (go_param::ASMCGOCALL_START, probes.asmcgocall),
        (go_param::LANDINGPAD_START, probes.landingpad),
        (go_param::CGO_MMAP_START, probes.cgo_mmap),
    ];
    let mut values = vec![(go_param::G_SLOT, probes.g_slot.unwrap_or(0))];
    for (index, range) in ranges {
        let (start, end) = range.map_or((0, 0), |(s, e)| (s + bias, e + bias));
        values.extend([(index, start), (index + 1, end)]);
    }
    for (i, value) in values {
        params
            .set(i, value, 0)
            .map_err(|e| AttachError::Map("GO_PARAMS", Box::new(e)))?;
    }
    Ok(())
}
