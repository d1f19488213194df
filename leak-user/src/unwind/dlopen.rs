//! The dlopen hook, user-space side: a library loaded while tracing gets its unwind rows before
//! any of its code runs.
//!
//! The probe (`leak-ebpf/src/dlopen.rs`) sits on the dynamic loader's `_dl_debug_state`, which
//! glibc and musl call once a new object is mapped and before its constructors run. It stops the
//! process and sends an event; the session then installs the new rows (`UnwindTables::sync`)
//! and continues the process with SIGCONT. A process is never left stopped: the probe stops
//! only while this side's clock is fresh, every stop is answered, and `finish` (or dropping the
//! hook, on error paths) continues the process after detaching the probe.
use std::{
    io,
    num::NonZeroU32,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{Array, MapData, RingBuf},
};
use leak_common::dlopen_event;
use object::{Object, ObjectSymbol};
use thiserror::Error;
use tokio::io::unix::AsyncFd;

use crate::attach::{self, AttachError};
use crate::tracee::{
    MappedObject,
    elf::{ElfObject, vaddr_of_offset},
    files::ObjectFile,
    process::{TargetProcess, executable_objects},
    remote_memory::RemoteMemory,
};

const DEBUG_STATE: &str = "_dl_debug_state";
/// glibc's `struct r_debug`.
const GLIBC_R_DEBUG: &str = "_r_debug";
/// musl's pointer to its `struct debug` (same layout as glibc's `r_debug`).
const MUSL_DEBUG_ADDR: &str = "_dl_debug_addr";
/// Offset of `r_state` in `r_debug`: after `int r_version` (padded), `r_map` and `r_brk`.
const R_STATE_OFFSET: u64 = 24;

#[derive(Debug, Error)]
pub enum HookError {
    #[error("cannot read the target's mappings: {0}")]
    Mappings(String),
    #[error("eBPF map {0} is missing")]
    MissingMap(&'static str),
    #[error("cannot use eBPF map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error(transparent)]
    Attach(#[from] AttachError),
    #[error("cannot poll the dlopen event ring: {0}")]
    Poll(#[source] io::Error),
}

/// The dynamic loader mapped in the target and where its hook and state are.
struct Loader {
    /// As the target names it.
    path: PathBuf,
    /// The loader's file, opened through its mapping: the probe is placed in it.
    object: Arc<ObjectFile>,
    debug_state_offset: u64,
    /// Run-time address of `r_debug.r_state`, when the loader exports it.
    r_state: Option<u64>,
}

/// Installed hook: the event ring and the target it stops.
pub struct DlopenHook {
    ring: AsyncFd<RingBuf<MapData>>,
    pid: u32,
    /// A stop was announced and not answered yet.
    stopped: bool,
    stopped_since: Option<Instant>,
    /// Stops answered, and the time from reading each stop's event to continuing.
    pub stops: u32,
    pub time_stopped: Duration,
}

impl DlopenHook {
    /// Attaches the hook to the loader of `target`. `Ok(None)` for a process without one
    /// (a static executable).
    pub fn install(
        ebpf: &mut Ebpf,
        target: &TargetProcess,
        pid: NonZeroU32,
    ) -> Result<Option<Self>, HookError> {
        let Some(loader) = find_loader(target)? else {
            return Ok(None);
        };
        {
            let map = ebpf
                .map_mut("DLOPEN_PARAMS")
                .ok_or(HookError::MissingMap("DLOPEN_PARAMS"))?;
            let mut params: Array<&mut MapData, u64> =
                Array::try_from(map).map_err(|source| HookError::Map {
                    map: "DLOPEN_PARAMS",
                    source,
                })?;
            params
                .set(0, loader.r_state.unwrap_or(0), 0)
                .map_err(|source| HookError::Map {
                    map: "DLOPEN_PARAMS",
                    source,
                })?;
        }
        let map = ebpf
            .take_map("DLOPEN_EVENTS")
            .ok_or(HookError::MissingMap("DLOPEN_EVENTS"))?;
        let ring = RingBuf::try_from(map).map_err(|source| HookError::Map {
            map: "DLOPEN_EVENTS",
            source,
        })?;
        // SAFETY: the AsyncFd owns the ring, whose descriptor lives as long as it does.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| HookError::Poll(io::Error::other(e.to_string())))?;
        attach::attach_dlopen_hook(
            ebpf,
            &loader.object.kernel_path(),
            &loader.path.display().to_string(),
            loader.debug_state_offset,
            pid,
        )?;
        log::debug!(
            "dlopen hook on {}{}",
            loader.path.display(),
            match loader.r_state {
                Some(_) => " (stops at RT_CONSISTENT)",
                None => " (no r_debug: stops at every call)",
            }
        );
        Ok(Some(Self {
            ring,
            pid: target.pid,
            stopped: false,
            stopped_since: None,
            stops: 0,
            time_stopped: Duration::ZERO,
        }))
    }

    /// Waits until the probe has stopped the process.
    pub async fn next_stop(&mut self) -> Result<(), HookError> {
        loop {
            let mut guard = self.ring.readable_mut().await.map_err(HookError::Poll)?;
            let stopped = drain(guard.get_inner_mut());
            guard.clear_ready();
            if stopped {
                self.stopped = true;
                self.stopped_since = Some(Instant::now());
                return Ok(());
            }
        }
    }

    /// Continues the process if the probe stopped it.
    pub fn resume(&mut self) {
        if !std::mem::take(&mut self.stopped) {
            return;
        }
        // SAFETY: sends a signal; a process gone in the meantime makes it fail harmlessly.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGCONT) };
        if let Some(since) = self.stopped_since.take() {
            self.stops += 1;
            self.time_stopped += since.elapsed();
        }
    }

    /// Detaches the probe, then answers any stop it announced meanwhile.
    pub fn finish(mut self, ebpf: &mut Ebpf) {
        if let Err(error) = attach::detach_dlopen_hook(ebpf) {
            log::warn!("cannot detach the dlopen hook: {error}");
        }
        self.answer_pending();
        if self.stops > 0 {
            log::debug!(
                "dlopen hook: {} stops, {:.2} ms each on average from event to SIGCONT",
                self.stops,
                self.time_stopped.as_secs_f64() * 1e3 / f64::from(self.stops)
            );
        }
    }

    fn answer_pending(&mut self) {
        if drain(self.ring.get_mut()) {
            self.stopped = true;
        }
        self.resume();
    }
}

impl Drop for DlopenHook {
    /// Error paths: the probe goes with the eBPF object right after; no stop stays unanswered.
    fn drop(&mut self) {
        self.answer_pending();
    }
}

/// Reads every event; true if one of them stopped the process.
fn drain(ring: &mut RingBuf<MapData>) -> bool {
    let mut stopped = false;
    while let Some(item) = ring.next() {
        let Some(bytes) = item.get(..8) else { continue };
        let mut word = [0; 8];
        word.copy_from_slice(bytes);
        stopped |= u64::from_ne_bytes(word) == dlopen_event::STOPPED;
    }
    stopped
}

/// The object named by the executable's PT_INTERP, or else any mapped object exporting
/// `_dl_debug_state` (musl's loader is its libc, mapped under libc's name).
fn find_loader(target: &TargetProcess) -> Result<Option<Loader>, HookError> {
    let interp = target
        .open_exe()
        .ok()
        .and_then(|exe| exe.interpreter())
        .map(PathBuf::from);
    let Some(interp) = interp else {
        return Ok(None);
    };
    let mut mappings =
        executable_objects(target.pid).map_err(|e| HookError::Mappings(e.to_string()))?;
    // The interpreter first (by file name: the mapped path is where its symlink leads).
    mappings.sort_by_key(|m| m.path.file_name() != interp.file_name());
    for mapping in &mappings {
        if let Some(loader) = loader_in(target, mapping) {
            return Ok(Some(loader));
        }
    }
    Ok(None)
}

fn loader_in(target: &TargetProcess, mapping: &MappedObject) -> Option<Loader> {
    let object = ElfObject::from_file(target.files.open_mapped(mapping).ok()?).ok()?;
    let debug_state_offset = object.functions(|name| name == DEBUG_STATE).first()?.offset;
    let vaddr = vaddr_of_offset(&object.load_segments(), mapping.offset)?;
    let bias = mapping.start.wrapping_sub(vaddr);
    Some(Loader {
        path: mapping.path.clone(),
        r_state: r_state_address(target.pid, object.data(), bias),
        object: object.shared_file(),
        debug_state_offset,
    })
}

/// Where `r_debug.r_state` is in the running target.
fn r_state_address(pid: u32, elf: &[u8], bias: u64) -> Option<u64> {
    let file = object::File::parse(elf).ok()?;
    let symbol = |name: &str| {
        file.dynamic_symbols()
            .find(|s| s.name() == Ok(name) && s.address() != 0)
            .map(|s| s.address().wrapping_add(bias))
    };
    if let Some(r_debug) = symbol(GLIBC_R_DEBUG) {
        return Some(r_debug + R_STATE_OFFSET);
    }
    let pointer = symbol(MUSL_DEBUG_ADDR)?;
    let debug = RemoteMemory::open(pid).ok()?.read_u64(pointer)?;
    (debug != 0).then_some(debug + R_STATE_OFFSET)
}
