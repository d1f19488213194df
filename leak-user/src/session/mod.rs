//! One tracing run: find the target, attach, sample at every interval, end on the duration,
//! a signal or the target's exit, and write the final report.
use std::{
    collections::HashMap,
    io::IsTerminal as _,
    num::NonZeroU32,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use aya::Ebpf;
use leak_common::counter;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    time::{MissedTickBehavior, interval, sleep_until},
};

use crate::{
    analysis::{History, Trend},
    attach::{self, MapLimits},
    cli::{Format, TraceOptions},
    collect::{self, Snapshot, clock::KernelClock},
    golang::{probes::GoProbes, tracker::ProbeCounts},
    launch::{self, EntryStop, Launched},
    memory,
    metrics::{self, Metrics},
    oom::watch::{OomWatch, Victim, WatchError},
    pinned::PinnedProcess,
    report::{
        self, RunInfo,
        model::{EndedBy, Language, Memory, OomKill, Settings},
        output::{self, Sink},
    },
    status::{self, Status},
    symbolize::Symbolizer,
    target::{Allocator, TargetProcess, allocator, elf::ElfObject},
    target_lock::{LockError, TargetLock},
    unwind::{
        dlopen::{DlopenHook, HookError},
        loader::UnwindTables,
    },
};

mod go_target;

use go_target::GoState;

pub enum TargetSpec {
    Pid(u32),
    Run {
        command: Vec<String>,
        /// `--user USER[:GROUP]`.
        user: Option<String>,
    },
}

/// How often new mappings (dlopen) are looked for; much faster while a launched command loads
/// its libraries.
const MAPPINGS_REFRESH: Duration = Duration::from_millis(500);
const STARTUP_REFRESH: Duration = Duration::from_millis(5);
const STARTUP_WINDOW: Duration = Duration::from_secs(2);

pub async fn run(options: TraceOptions, spec: TargetSpec) -> Result<()> {
    output::check(
        options.format,
        options.output.as_deref(),
        std::io::stdout().is_terminal(),
    )?;
    attach::preflight()?;
    let mut sink = Sink::open(options.output.clone())?;
    // Before attaching: a port in use ends the run before it starts.
    let metrics_listener = match options.metrics_addr {
        Some(addr) => Some(metrics::bind(addr).await?),
        None => None,
    };
    let started_at = report::now_utc();
    let started = Instant::now();

    let Prepared {
        target,
        allocator,
        mut launched,
        pinned,
        _lock,
    } = prepare_target(spec, options.force)?;
    startup_phase(started, "target and allocator found");
    let pid = NonZeroU32::new(target.pid).context("PID 0 is not a process")?;
    let language = if target.open_exe().is_ok_and(|e| e.is_go()) {
        Language::Go
    } else {
        Language::C
    };
    let mut go_probes = go_target::probes(&target, &allocator)?;
    startup_phase(started, "Go runtime inspected");
    // The pinned process's pidfd: its exit is noticed, whatever its PID names afterwards.
    let exit_fd = pinned.exit_fd()?;
    // SAFETY: the AsyncFd owns the descriptor, which stays open until it is dropped.
    let exit_watch = unsafe { AsyncFd::register(exit_fd) }
        .map_err(|e| anyhow::anyhow!("cannot watch a pidfd: {e}"))?;

    // Kernel run-time statistics stay on while this descriptor is open.
    let bpf_stats = options
        .bpf_stats
        .then(|| aya::sys::enable_stats(aya::sys::Stats::RunTime))
        .transpose()
        .context("cannot enable BPF run-time statistics")?;
    let limits = MapLimits {
        allocs: options.max_allocs,
        stacks: options.max_stacks,
        unwind_rows: options.max_unwind_rows,
        empty_probes: options.empty_probes,
        sample_bytes: options.sample_bytes.map_or(0, |b| b.0),
        go: go_probes.as_ref().map(|p| p.offsets),
    };
    let programs = attach::programs_for(&allocator, go_probes.is_some(), launched.is_some());
    let mut tables = UnwindTables::new(target.files.clone(), options.max_unwind_rows);
    // The kernel's part (maps, verification: most of the startup time) on a thread, while this
    // one reads the running target's unwind tables.
    let mut ebpf = std::thread::scope(|scope| {
        let loading = scope.spawn(|| attach::load_with_programs(limits, &programs));
        if launched.is_none() {
            tables.prepare();
        }
        loading.join()
    })
    .map_err(|_| anyhow::anyhow!("the eBPF loading thread panicked"))??;
    startup_phase(started, "eBPF object loaded");
    let _clock = KernelClock::start(&mut ebpf)?;
    let (probed, mut symbolizer, mut dlopen_hook) = attach_probes(
        &mut ebpf,
        &mut tables,
        &target,
        &allocator,
        go_probes.as_mut(),
        launched.as_mut(),
        started,
    )
    .await?;
    // Probes on a PID that now names another process would trace that one: refuse.
    pinned
        .verify()
        .with_context(|| format!("PID {pid} exited while leaktrace was attaching"))?;
    startup_phase(started, "probes attached");
    if !options.quiet {
        let probes = if allocator.entries.is_empty() {
            "goroutine probes only (a pure Go program)".to_owned()
        } else {
            format!(
                "{} probes on {} ({})",
                probed.len(),
                allocator.path,
                allocator.name
            )
        };
        eprintln!(
            "leaktrace: attached to {} (pid {}): {probes}; {} unwind rows{}",
            crate::escape::control_chars(&target.comm),
            target.pid,
            tables.rows_used(),
            match options.duration {
                Some(d) => format!("; tracing for {}", humantime::format_duration(d)),
                None => "; Ctrl-C to stop".to_owned(),
            }
        );
    }

    let metrics = metrics_listener.map(|listener| {
        let metrics = Metrics::new(options.top);
        if !options.quiet
            && let Ok(addr) = listener.local_addr()
        {
            eprintln!("leaktrace: serving metrics on http://{addr}/metrics");
        }
        tokio::spawn(metrics::serve(listener, metrics.registry()));
        metrics
    });
    let mut status = Status::new(options.quiet);
    let mut status_tick = interval(status::EVERY);
    status_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    status_tick.tick().await;

    let settings = Settings {
        min_age_s: options.min_age.as_secs_f64(),
        interval_s: options.interval.as_secs_f64(),
        sample_bytes: options.sample_bytes.map_or(0, |b| b.0),
    };
    let mut session = Session {
        options: &options,
        target: &target,
        pinned: &pinned,
        language,
        allocator: &allocator,
        probed: &probed,
        settings,
        started_at,
        started,
        history: History::default(),
        memory: Memory::default(),
        memory_trend: Trend::default(),
        oom_kills: Vec::new(),
        stack_activity: HashMap::new(),
        stacks_evicted: 0,
        go: go_probes.as_ref().map(|p| GoState::new(p, &target)),
    };
    // A first reading now: a target killed before the first interval still has its figures.
    session.read_memory(0.0, 0);
    // Optional: without the tracepoint the run goes on, and an OOM kill reads as an exit.
    let mut oom_watch = match OomWatch::attach(&mut ebpf) {
        Ok(watch) => Some(watch),
        Err(error) => {
            log::warn!("OOM kills will not be recognised: {error}");
            None
        }
    };

    let mut sample_tick = interval(options.interval);
    sample_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    sample_tick.tick().await;
    let mut refresh_tick = interval(if launched.is_some() {
        STARTUP_REFRESH
    } else {
        MAPPINGS_REFRESH
    });
    refresh_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut startup = launched.is_some();
    let deadline = options
        .duration
        .map(|d| tokio::time::Instant::from_std(started + d));
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;

    let ended_by = loop {
        tokio::select! {
            _ = sample_tick.tick() => {
                let snapshot = session.sample(&ebpf)?;
                session.make_room_for_stacks(&mut ebpf, &snapshot)?;
                status.sampled(snapshot.outstanding_bytes);
                let text = options.format == Format::Text && options.output.is_none() && !options.quiet;
                let jsonl = options.format == Format::Jsonl;
                if text || jsonl || metrics.is_some() {
                    let report = session.report(&ebpf, &snapshot, &mut symbolizer, None, options.top);
                    if let Some(metrics) = &metrics {
                        metrics.update(&report);
                    }
                    if text {
                        status.clear();
                        print!("{}", report::text::render(&report));
                    }
                    if jsonl {
                        sink.write(output::json_line(&report).as_bytes())?;
                    }
                }
            }
            _ = status_tick.tick(), if status.enabled() => {
                if let Ok(c) = collect::counters(&ebpf) {
                    let dropped = c.get(counter::DROP_ALLOC_MAP_FULL)
                        + c.get(counter::DROP_STACK_MAP_FULL)
                        + c.get(counter::DROP_IN_FLIGHT_FULL);
                    status.show(started.elapsed(), c.get(counter::ALLOCS), dropped);
                }
            }
            _ = refresh_tick.tick() => {
                // A command that re-executed itself stops at its entry point again: its new
                // tables go in before it runs on.
                let reexecuted = launched.as_ref().filter(|l| l.stopped_at_entry_again());
                tables.sync(&mut ebpf)?;
                symbolizer.refresh()?;
                if let Some(launched) = reexecuted {
                    launched.resume();
                }
                if startup && started.elapsed() > STARTUP_WINDOW {
                    startup = false;
                    refresh_tick = interval(MAPPINGS_REFRESH);
                }
            }
            stop = next_dlopen_stop(dlopen_hook.as_mut()) => match stop {
                // The target is stopped in its loader: the new object's rows go in first.
                Ok(()) => {
                    tables.sync(&mut ebpf)?;
                    symbolizer.refresh()?;
                    if let Some(hook) = dlopen_hook.as_mut() {
                        hook.resume();
                    }
                }
                Err(error) => {
                    log::warn!("stopped watching dlopen: {error}");
                    dlopen_hook = None;
                }
            },
            victims = next_victims(oom_watch.as_mut()) => match victims {
                Ok(victims) => {
                    if session.note_oom_kills(&victims) {
                        break EndedBy::OomKilled;
                    }
                }
                Err(error) => {
                    log::warn!("stopped watching OOM kills: {error}");
                    oom_watch = None;
                }
            },
            _ = sigint.recv() => break EndedBy::Signal,
            _ = sigterm.recv() => break EndedBy::Signal,
            _ = exit_watch.readable() => break EndedBy::TargetExited,
            _ = async { sleep_until(deadline.unwrap_or_else(far_future)).await }, if deadline.is_some() => break EndedBy::Duration,
        }
    };

    if let Some(hook) = dlopen_hook.take() {
        hook.finish(&mut ebpf);
    }
    // A kill the watch had not delivered yet when the target's exit was noticed.
    let mut ended_by = ended_by;
    if let Some(watch) = oom_watch.as_mut()
        && session.note_oom_kills(&watch.pending())
    {
        ended_by = EndedBy::OomKilled;
    }
    status.clear();
    let snapshot = session.sample(&ebpf)?;
    // Profiles show every site older than --min-age; --top cuts the other formats.
    let top = if options.format.is_profile() {
        usize::MAX
    } else {
        options.top
    };
    let report = session.report(&ebpf, &snapshot, &mut symbolizer, Some(ended_by), top);
    if let Some(metrics) = &metrics {
        metrics.update(&report);
    }
    if !tables.objects_without_room.is_empty() {
        log::warn!(
            "unwind rows ran out (--max-unwind-rows): frame pointers used for {}",
            tables.objects_without_room.join(", ")
        );
    }
    if !tables.objects_unwound_from_code.is_empty() {
        log::info!(
            "unwound from machine code (no CFI): {}",
            tables.objects_unwound_from_code.join(", ")
        );
    }
    sink.write(&output::render(options.format, &report)?)?;
    if options.format == Format::Pprof {
        go_target::write_goroutine_profile(&report, options.output.as_deref(), options.quiet)?;
    }
    if bpf_stats.is_some() {
        print_bpf_stats(&ebpf);
    }
    // Detaching waits for the kernel to retire each probe (a grace period apiece, under a
    // kernel lock: closing them from several threads takes as long), so it comes after the
    // report is out.
    drop(ebpf);
    if let Some(mut launched) = launched {
        launched.stop(launch::STOP_GRACE);
    }
    Ok(())
}

/// The target, found and pinned before anything is attached.
struct Prepared {
    target: TargetProcess,
    allocator: Allocator,
    /// For `run`: the command, held before its exec.
    launched: Option<Launched>,
    pinned: PinnedProcess,
    /// None with --force.
    _lock: Option<TargetLock>,
}

/// The process to trace, the allocator it uses, and for `run` the command held before exec.
/// The process is pinned (pidfd, start time) and locked before /proc/PID is read, and checked
/// to be the same after.
fn prepare_target(spec: TargetSpec, force: bool) -> Result<Prepared> {
    // Another leaktrace on the target ends the run; a lock that cannot be taken at all (no
    // /run) does not.
    let lock = |pinned: &PinnedProcess| {
        if force {
            return Ok(None);
        }
        match TargetLock::acquire(pinned.pid, pinned.start_time) {
            Ok(lock) => Ok(Some(lock)),
            Err(held @ LockError::Held { .. }) => Err(held),
            Err(error) => {
                log::warn!("tracing without the per-target lock: {error}");
                Ok(None)
            }
        }
    };
    match spec {
        TargetSpec::Pid(pid) => {
            let pinned = PinnedProcess::open(pid)?;
            let lock = lock(&pinned)?;
            let target = TargetProcess::inspect(pid)?;
            let objects = target.executable_objects()?;
            let allocator = go_target::pure_go_has_none(allocator::for_process(&target, &objects))?;
            pinned.verify()?;
            Ok(Prepared {
                target,
                allocator,
                launched: None,
                pinned,
                _lock: lock,
            })
        }
        TargetSpec::Run { command, user } => {
            let run_as = user.as_deref().map(launch::RunAs::lookup).transpose()?;
            let program = launch::resolve_program(&command[0])?;
            let allocator = go_target::pure_go_has_none(allocator::for_program(&program))?;
            let launched = launch::launch_paused(&command, run_as.as_ref())?;
            // Our child: its PID stays its own until we reap it.
            let pinned = PinnedProcess::open(launched.pid)?;
            let lock = lock(&pinned)?;
            let target = TargetProcess::launched(launched.pid, &program)?;
            Ok(Prepared {
                target,
                allocator,
                launched: Some(launched),
                pinned,
                _lock: lock,
            })
        }
    }
}

/// Unwind tables and probes, in the order that loses nothing: with `--pid` the tables go in
/// before the probes (allocations seen before them would have truncated stacks); a launched
/// command is let go only with the probes in place, and its tables are installed while it is
/// stopped at its entry point. Returns the probed entry points and the symbolizer, whose
/// snapshot of a launched command's mappings is taken while it is stopped: a command that
/// exits at once would otherwise leave only an empty /proc/PID/maps to read.
async fn attach_probes(
    ebpf: &mut Ebpf,
    tables: &mut UnwindTables,
    target: &TargetProcess,
    allocator: &Allocator,
    mut go: Option<&mut GoProbes>,
    launched: Option<&mut Launched>,
    started: Instant,
) -> Result<(Vec<String>, Symbolizer, Option<DlopenHook>)> {
    let pid = NonZeroU32::new(target.pid).context("PID 0 is not a process")?;
    if launched.is_none() {
        tables.sync(ebpf)?;
        startup_phase(started, "unwind tables installed");
        if let Some(go) = go.as_deref_mut() {
            go_target::set_params(ebpf, go, target)?;
        }
    }
    let exited = |e: attach::AttachError| {
        if !target.is_alive() {
            anyhow::anyhow!("PID {pid} exited while leaktrace was attaching")
        } else {
            anyhow::Error::from(e)
        }
    };
    let mut probed = attach::attach(ebpf, allocator, pid).map_err(exited)?;
    startup_phase(started, "allocator probes attached");
    if let Some(go) = go.as_deref() {
        // The verified file itself, through our descriptor: its path may not exist here.
        let exe = target.open_exe()?;
        let count = attach::attach_go(
            ebpf,
            go,
            &exe.file().kernel_path(),
            &target.exe.display().to_string(),
            pid,
        )
        .map_err(exited)?;
        probed.push(format!("{count} Go runtime probes"));
    }
    if let Some(launched) = launched {
        let entry = ElfObject::open(&launched.program)?
            .entry_offset()
            .with_context(|| format!("{} has no entry point", launched.program.display()))?;
        attach::attach_entry_stop(ebpf, &launched.program, entry, pid)?;
        launched.entry_offset = Some(entry);
        launched.release()?;
        let stopped = launched.wait_for_entry_stop().await == EntryStop::Stopped;
        tables.sync(ebpf)?;
        if let Some(go) = go {
            go_target::set_params(ebpf, go, target)?;
        }
        let symbolizer = Symbolizer::new(target.pid);
        // Before the program runs: its first dlopen is already covered.
        let hook = install_dlopen_hook(ebpf, target, pid);
        if stopped {
            launched.resume();
        }
        return Ok((probed, symbolizer?, hook));
    }
    let hook = install_dlopen_hook(ebpf, target, pid);
    Ok((probed, Symbolizer::new(target.pid)?, hook))
}

/// Optional, like the OOM watch: without it a library loaded later gets its rows at the next
/// refresh.
fn install_dlopen_hook(
    ebpf: &mut Ebpf,
    target: &TargetProcess,
    pid: NonZeroU32,
) -> Option<DlopenHook> {
    match DlopenHook::install(ebpf, target, pid) {
        Ok(hook) => hook,
        Err(error) => {
            log::warn!("libraries loaded while tracing get their unwind rows late: {error}");
            None
        }
    }
}

struct Session<'a> {
    options: &'a TraceOptions,
    target: &'a TargetProcess,
    /// Readings of /proc/PID count only while it is still the target.
    pinned: &'a PinnedProcess,
    language: Language,
    allocator: &'a Allocator,
    probed: &'a [String],
    settings: Settings,
    started_at: chrono::DateTime<chrono::Utc>,
    started: Instant,
    history: History,
    /// The target's memory at the last reading: after it exits, what it held last.
    memory: Memory,
    memory_trend: Trend,
    oom_kills: Vec<OomKill>,
    /// Each stack's allocation count at the last sample, to tell idle stacks.
    stack_activity: HashMap<u64, u64>,
    stacks_evicted: u64,
    /// Go targets whose goroutines are traced.
    go: Option<GoState>,
}

impl Session<'_> {
    fn sample(&mut self, ebpf: &Ebpf) -> Result<Snapshot> {
        let min_age_ns = self.options.min_age.as_nanos().min(u64::MAX as u128) as u64;
        let snapshot = collect::snapshot(ebpf, min_age_ns, self.settings.sample_bytes)?;
        let t_s = self.started.elapsed().as_secs_f64();
        self.history.record(t_s, &snapshot.totals);
        self.read_memory(t_s, snapshot.outstanding_bytes);
        if let Some(go) = &mut self.go {
            go.sample(ebpf, self.target, t_s)?;
        }
        Ok(snapshot)
    }

    /// Reads the target's memory and cgroup figures. Gone (exited, killed, a zombie without
    /// figures): the last reading stays, which is what it held.
    fn read_memory(&mut self, t_s: f64, native_tracked_bytes: u64) {
        let Ok(process) = memory::process_memory(self.target.pid) else {
            return;
        };
        if process.rss_bytes.is_none() || self.pinned.verify().is_err() {
            return;
        }
        if let Some(anon) = process.anon_bytes.or(process.rss_bytes) {
            self.memory_trend.record(t_s, anon);
        }
        let cgroup = memory::cgroup_of(self.target.pid);
        let go_heap = self.go.as_ref().and_then(|go| go.heap_inuse);
        self.memory = memory::report_memory(
            Some(&process),
            cgroup.as_ref(),
            native_tracked_bytes,
            go_heap,
            self.memory_trend.bytes_per_s(),
        );
    }

    /// Long runs: when the stack map nears full, evicts the stacks that hold nothing and made
    /// no allocation since the last sample (transient call paths), so new leaks still get a
    /// stack. Stacks that hold memory are never evicted.
    fn make_room_for_stacks(&mut self, ebpf: &mut Ebpf, snapshot: &Snapshot) -> Result<()> {
        let previous = std::mem::take(&mut self.stack_activity);
        self.stack_activity = snapshot
            .totals
            .iter()
            .map(|(&id, t)| (id, t.total_allocs))
            .collect();
        let capacity = u64::from(self.options.max_stacks);
        if (snapshot.totals.len() as u64) * 10 < capacity * 9 {
            return Ok(());
        }
        let idle: Vec<u64> = snapshot
            .totals
            .iter()
            .filter(|(id, t)| {
                t.outstanding_allocs == 0
                    && !snapshot.by_stack.contains_key(id)
                    && previous.get(id) == Some(&t.total_allocs)
            })
            .map(|(&id, _)| id)
            .collect();
        self.stacks_evicted += collect::evict_stacks(ebpf, &idle)?;
        for id in &idle {
            self.stack_activity.remove(id);
        }
        Ok(())
    }

    /// Records the OOM kills that concern the target: itself (returns true: the run ends) or
    /// another process of its memory cgroup (named in the next report).
    fn note_oom_kills(&mut self, victims: &[Victim]) -> bool {
        let cgroup = self.memory.cgroup.as_ref().map(|c| c.path.clone());
        let mut target_killed = false;
        // A tracepoint without figures (older kernels): the kernel log has them.
        let logged = if victims.iter().any(|v| v.victim.lacks_figures()) {
            crate::oom::kmsg::read_kmsg_nonblocking()
                .map(|records| crate::oom::kmsg::assemble(&records))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        for victim in victims {
            let mut victim = victim.clone();
            if victim.victim.lacks_figures() {
                victim.victim.complete_from_log(&logged);
            }
            let pid = victim.victim.pid;
            let is_target = pid == self.target.pid
                || Path::new(&format!("/proc/{}/task/{pid}", self.target.pid)).exists();
            let same_cgroup =
                !is_target && cgroup.is_some() && memory::cgroup_of(pid).map(|c| c.path) == cgroup;
            if !is_target && !same_cgroup {
                continue;
            }
            let age_ns = collect::monotonic_ns().saturating_sub(victim.timestamp_ns);
            let time = chrono::Utc::now()
                - chrono::Duration::nanoseconds(age_ns.min(i64::MAX as u64) as i64);
            self.oom_kills.push(
                victim
                    .victim
                    .to_oom_kill(time, cgroup.clone(), &self.target.comm),
            );
            if is_target {
                target_killed = true;
            } else if !self.options.quiet {
                eprintln!(
                    "leaktrace: the OOM killer took PID {pid} ({}) in the target's memory cgroup",
                    crate::escape::control_chars(victim.victim.comm.as_deref().unwrap_or("?"))
                );
            }
        }
        target_killed
    }

    fn report(
        &self,
        ebpf: &Ebpf,
        snapshot: &Snapshot,
        symbolizer: &mut Symbolizer,
        ended_by: Option<EndedBy>,
        top: usize,
    ) -> report::model::Report {
        let run = RunInfo {
            target: self.target,
            language: self.language,
            allocator: self.allocator,
            probed: self.probed,
            settings: self.settings.clone(),
            started_at: self.started_at,
            duration_s: self.started.elapsed().as_secs_f64(),
            top,
        };
        let stack = |id| match collect::stack(ebpf, id) {
            Ok(trace) => trace,
            Err(error) => {
                log::warn!("{error}");
                None
            }
        };
        let mut report = report::build(&run, snapshot, &self.history, stack, symbolizer, ended_by);
        report.memory = self.memory.clone();
        report.totals.stacks_evicted = self.stacks_evicted;
        report.oom_kills = self.oom_kills.clone();
        if let Some(go) = &self.go {
            let c = &snapshot.counters;
            let counts = ProbeCounts {
                created: c.get(counter::GOROUTINES_CREATED),
                exited: c.get(counter::GOROUTINES_EXITED),
                dropped: c.get(counter::DROP_GOROUTINE_MAP_FULL),
                cgo_stacks_joined: c.get(counter::CGO_STACKS_JOINED),
                runtime_mmap_bytes: c.get(counter::GO_RUNTIME_MMAP_BYTES),
            };
            report.goroutines = Some(go.tracker.report(
                &go.live,
                counts,
                go.complete,
                snapshot.taken_ns,
                symbolizer,
            ));
        }
        report
    }
}

/// Where startup time goes (`RUST_LOG=debug`): from launch to attached should take well under
/// 200 ms.
fn startup_phase(started: Instant, phase: &str) {
    log::debug!(
        "startup: {phase} at {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
}

/// `--bpf-stats`: one line per program that ran: `leaktrace: bpf-stats NAME RUNS NS_PER_RUN`.
fn print_bpf_stats(ebpf: &Ebpf) {
    for (name, program) in ebpf.programs() {
        let Ok(info) = program.info() else { continue };
        let runs = info.run_count();
        if runs > 0 {
            let ns = info.run_time().as_nanos() as f64 / runs as f64;
            eprintln!("leaktrace: bpf-stats {name} {runs} {ns:.1}");
        }
    }
}

/// The next OOM victims, or never when the tracepoint is not watched.
async fn next_dlopen_stop(hook: Option<&mut DlopenHook>) -> Result<(), HookError> {
    match hook {
        Some(hook) => hook.next_stop().await,
        None => std::future::pending().await,
    }
}

async fn next_victims(watch: Option<&mut OomWatch>) -> Result<Vec<Victim>, WatchError> {
    match watch {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600)
}
