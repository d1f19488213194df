//! The Go side of a session: whether the target's goroutines can be traced and how, where
//! the probes find the runtime's cgo trampolines, the reader of its memory, and the goroutine
//! profile written beside the heap one.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use aya::Ebpf;

use crate::{
    analysis::History,
    attach, collect,
    golang::{
        heap_profile::{HeapProfileError, HeapProfileReader, HeapReading, ProfileLocation},
        probes::GoProbes,
        reader::GoReader,
        runtime_vars::RuntimeVars,
        tracker::{LiveGoroutine, Tracker},
    },
    report,
    tracee::{Allocator, TargetProcess, allocator, elf, remote_memory::RemoteMemory},
};

/// The goroutine probes of a Go target; None for other targets, and for a Go target whose
/// runtime leaktrace cannot read while it still has a C allocator to trace.
pub fn probes(target: &TargetProcess, allocator: &Allocator) -> Result<Option<GoProbes>> {
    let Ok(exe) = target.open_exe() else {
        return Ok(None);
    };
    if !exe.is_go() {
        return Ok(None);
    }
    match GoProbes::for_binary(exe.data()) {
        Ok(probes) => {
            log::info!(
                "Go {}.{}: runtime.g offsets from {:?}",
                probes.version.major,
                probes.version.minor,
                probes.offsets_source
            );
            Ok(Some(probes))
        }
        Err(error) if allocator.entries.is_empty() => bail!(
            "cannot trace the goroutines of {}: {error}",
            target.exe.display()
        ),
        Err(error) => {
            log::warn!("goroutines will not be traced: {error}");
            Ok(None)
        }
    }
}

/// Tells the probes where the Go runtime's cgo trampolines are, once the target is mapped.
pub fn set_params(ebpf: &mut Ebpf, go: &mut GoProbes, target: &TargetProcess) -> Result<()> {
    let bias = exe_bias(target)?;
    if go.cgo_mmap.is_none() && go.cgo_mmap_slot.is_some() {
        let exe = target.open_exe()?;
        let memory = RemoteMemory::open(target.pid)?;
        go.resolve_cgo_mmap(exe.data(), bias, |addr| memory.read_u64(addr));
        if go.cgo_mmap.is_none() {
            log::warn!("x_cgo_mmap not found: the Go heap may show as native mmap sites");
        }
    }
    attach::set_go_params(ebpf, go, bias)?;
    Ok(())
}

/// Run-time minus link-time address of the target's executable (0 unless it is PIE).
fn exe_bias(target: &TargetProcess) -> Result<u64> {
    let exe = target.open_exe()?;
    let segments = exe.load_segments();
    target
        .exe_mappings(&exe)?
        .iter()
        .find_map(|o| {
            let vaddr = elf::vaddr_of_offset(&segments, o.offset)?;
            Some(o.start.wrapping_sub(vaddr))
        })
        .with_context(|| {
            format!(
                "PID {}: {} is not mapped executable",
                target.pid,
                target.exe.display()
            )
        })
}

/// A pure Go program has no C allocator: only its goroutines are traced.
pub fn pure_go_has_none(
    found: Result<Allocator, allocator::AllocatorError>,
) -> Result<Allocator, allocator::AllocatorError> {
    match found {
        Err(allocator::AllocatorError::PureGo { .. }) => Ok(Allocator::pure_go()),
        other => other,
    }
}

#[derive(Default)]
pub struct GoState {
    pub tracker: Tracker,
    /// None when the program's memory cannot be read (then only the probes' view counts).
    pub reader: Option<GoReader>,
    /// At the last sample.
    pub live: Vec<LiveGoroutine>,
    pub complete: bool,
    pub heap_inuse: Option<u64>,
    /// None when the runtime's heap profile cannot be read (`heap_unavailable` says why).
    pub heap_profile: Option<HeapProfileReader>,
    /// The last profile read.
    pub heap_reading: Option<HeapReading>,
    /// Each heap profile site's in-use bytes at every reading.
    pub heap_history: History,
    pub heap_unavailable: Option<String>,
}

impl GoState {
    pub fn new(probes: &GoProbes, target: &TargetProcess) -> GoState {
        let reader = go_reader(probes, target)
            .inspect_err(|e| log::warn!("goroutine states will not be read: {e:#}"))
            .ok();
        let (heap_profile, heap_unavailable) = match heap_profile_reader(probes, target) {
            Ok(reader) => (Some(reader), None),
            Err(error) => {
                log::warn!("{error:#}");
                (None, Some(format!("{error:#}")))
            }
        };
        GoState {
            reader,
            heap_profile,
            heap_unavailable,
            ..GoState::default()
        }
    }

    /// Bytes of every live goroutine's stack, when the runtime's list was read whole.
    pub fn stack_bytes(&self) -> Option<u64> {
        if !self.complete {
            return None;
        }
        self.live
            .iter()
            .try_fold(0u64, |sum, g| Some(sum.saturating_add(g.stack_bytes?)))
    }

    /// Reads the runtime's heap profile now. A torn read keeps the last one; a runtime that
    /// keeps no profile is said once and not read again.
    pub fn read_heap_profile(&mut self, t_s: f64) {
        let Some(reader) = &self.heap_profile else {
            return;
        };
        // After the OOM kill, what was read at it stands (a dying process reads torn).
        if self.heap_reading.as_ref().is_some_and(|r| r.at_oom_kill) {
            return;
        }
        match reader.read() {
            Ok(profile) => {
                self.heap_history.record_values(
                    t_s,
                    profile
                        .sites
                        .iter()
                        .map(|site| (site.key(), site.figures.inuse_bytes.max(0) as u64)),
                );
                self.heap_reading = Some(HeapReading {
                    profile,
                    read_at_s: t_s,
                    at_oom_kill: false,
                });
            }
            Err(HeapProfileError::Disabled) => {
                let reason = HeapProfileError::Disabled.to_string();
                log::warn!("{reason}");
                self.heap_unavailable = Some(reason);
                self.heap_profile = None;
            }
            Err(error) => log::debug!("Go heap profile not read this time: {error}"),
        }
    }

    /// As the OOM killer takes the target: a profile read now replaces the last one only if
    /// it holds something (the memory may be going away under the read).
    pub fn read_heap_profile_at_kill(&mut self, t_s: f64) {
        let Some(reader) = &self.heap_profile else {
            return;
        };
        match reader.read() {
            Ok(profile) if profile.sites.iter().any(|s| s.figures.inuse_bytes > 0) => {
                log::info!("Go heap profile read at the OOM kill");
                self.heap_reading = Some(HeapReading {
                    profile,
                    read_at_s: t_s,
                    at_oom_kill: true,
                });
            }
            Ok(_) => log::info!("Go heap profile empty at the OOM kill: the last reading stands"),
            Err(error) => {
                log::info!(
                    "Go heap profile unreadable at the OOM kill ({error}): the last reading stands"
                )
            }
        }
    }
}

impl GoState {
    /// The goroutines now: the probes' map, and the runtime's own list when it can be read.
    /// Once the target is gone its memory is too: the last reading stands.
    pub fn sample(&mut self, ebpf: &Ebpf, target: &TargetProcess, t_s: f64) -> Result<()> {
        let probed: HashMap<_, _> = collect::goroutines(ebpf)?.into_iter().collect();
        if !target.is_alive() {
            return Ok(());
        }
        (self.live, self.complete) = match &self.reader {
            Some(reader) => reader.goroutines(&probed),
            None => (
                probed
                    .iter()
                    .map(|(&g, p)| LiveGoroutine::probed(g, p))
                    .collect(),
                false,
            ),
        };
        self.heap_inuse = self.reader.as_ref().and_then(GoReader::heap_inuse);
        self.read_heap_profile(t_s);
        self.tracker.record(t_s, &self.live);
        Ok(())
    }
}

/// What reads the target's goroutines and Go heap through its memory.
fn go_reader(probes: &GoProbes, target: &TargetProcess) -> Result<GoReader> {
    let exe = target.open_exe()?;
    let vars = RuntimeVars::for_binary(exe.data(), &probes.version)?;
    let memory = RemoteMemory::open(target.pid)?;
    Ok(GoReader::new(
        memory,
        probes.offsets,
        vars,
        exe_bias(target)?,
    ))
}

/// What reads the runtime's heap profile through the target's memory.
fn heap_profile_reader(probes: &GoProbes, target: &TargetProcess) -> Result<HeapProfileReader> {
    let exe = target.open_exe()?;
    let location = ProfileLocation::for_binary(exe.data(), &probes.version)?;
    log::info!(
        "Go heap profile: bucket layout from {:?}",
        location.layout_source
    );
    let memory = RemoteMemory::open(target.pid)?;
    Ok(HeapProfileReader::new(memory, location, exe_bias(target)?))
}

/// Go targets: the goroutine profile beside the heap one (`leaks.goroutines.pb.gz`).
pub fn write_goroutine_profile(
    report: &report::model::Report,
    output: Option<&Path>,
    quiet: bool,
) -> Result<()> {
    let Some(profile) = report::pprof::render_goroutines(report)? else {
        return Ok(());
    };
    write_companion(
        &profile,
        "goroutine",
        output.map(report::pprof::goroutine_profile_path),
        quiet,
    )
}

/// Go targets: the runtime's heap profile beside the native one (`leaks.goheap.pb.gz`).
pub fn write_goheap_profile(
    report: &report::model::Report,
    output: Option<&Path>,
    quiet: bool,
) -> Result<()> {
    let Some(profile) = report::pprof::render_goheap(report)? else {
        return Ok(());
    };
    write_companion(
        &profile,
        "Go heap",
        output.map(report::pprof::goheap_profile_path),
        quiet,
    )
}

/// A profile written beside `--output FILE` (at `path`).
fn write_companion(profile: &[u8], what: &str, path: Option<PathBuf>, quiet: bool) -> Result<()> {
    let Some(path) = path else {
        log::warn!("the {what} profile needs --output FILE: it goes beside that file");
        return Ok(());
    };
    // Created as --output is: never through a symbolic link, a new file mode 0600.
    report::output::Sink::open(Some(path.clone()))?.write(profile)?;
    if !quiet {
        eprintln!("leaktrace: {what} profile written to {}", path.display());
    }
    Ok(())
}
