//! One tracing run: find the target, attach, sample at every interval, end on the duration,
//! a signal or the target's exit, and write the final report. [`run`] is the three steps:
//! [`Run::start`], [`Run::run_loop`], [`Run::finish`].
use std::{
    io::IsTerminal as _,
    num::NonZeroU32,
    os::fd::OwnedFd,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use aya::Ebpf;
use tokio::{
    io::unix::AsyncFd,
    net::TcpListener,
    signal::unix::{Signal, SignalKind, signal},
    time::{Interval, MissedTickBehavior, interval},
};

use crate::{
    analysis::{History, Trend},
    attach::{self, MapLimits},
    cli::TraceOptions,
    collect::clock::KernelClock,
    escalation::Escalation,
    golang::probes::GoProbes,
    launch::{self, EntryStop, Launched},
    metrics::{self, Metrics},
    oom::watch::OomWatch,
    reachability,
    report::{
        self,
        model::{Language, Memory, Settings},
        output::{self, Sink},
    },
    status::{self, Status},
    symbolize::Symbolizer,
    tracee::{
        Allocator, TargetProcess,
        allocator::{self, Flavour},
        elf::ElfObject,
        lock::{LockError, TargetLock},
        pinned::PinnedProcess,
    },
    unwind::{dlopen::DlopenHook, loader::UnwindTables},
    uprobe_multi::MultiLinks,
};

mod escalate;
mod finish;
mod go_target;
mod history_tick;
mod run_loop;
mod state;

use go_target::GoState;
use history_tick::HistoryTick;
use state::Session;

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
    let mut run = Run::start(&options, spec).await?;
    let ended_by = run.run_loop().await?;
    run.finish(ended_by)
}

/// A run from its attached probes to its final report. Fields drop in this order on an error:
/// the dlopen hook answers a pending stop, the probes go with the eBPF object, then a launched
/// command is killed.
struct Run<'a> {
    options: &'a TraceOptions,
    session: Session<'a>,
    /// None once watching dlopen failed: new libraries then get their rows at the next refresh.
    dlopen_hook: Option<DlopenHook>,
    /// None without the tracepoint: an OOM kill then reads as an exit.
    oom_watch: Option<OomWatch>,
    symbolizer: Symbolizer,
    ebpf: Ebpf,
    /// The allocator's uprobe_multi links: dropping them detaches (one grace period for all).
    multi_links: Option<MultiLinks>,
    /// Kernel time for the probes, kept current while the run lasts.
    _clock: KernelClock,
    tables: UnwindTables,
    sink: Sink,
    metrics: Option<Metrics>,
    status: Status,
    ticks: Ticks,
    /// The verdicts' frequent sample of each stack's outstanding bytes.
    history_tick: HistoryTick,
    signals: Signals,
    /// The pinned process's pidfd: its exit is noticed, whatever its PID names afterwards.
    exit_watch: AsyncFd<OwnedFd>,
    /// Kernel run-time statistics stay on while this descriptor is open (`--bpf-stats`).
    bpf_stats: Option<OwnedFd>,
    /// For `run`: the command, stopped at the end.
    launched: Option<Launched>,
    /// None with --force.
    _lock: Option<TargetLock>,
}

struct Ticks {
    sample: Interval,
    status: Interval,
    refresh: Interval,
    /// A launched command is loading its libraries: mappings are refreshed often.
    startup: bool,
    deadline: Option<tokio::time::Instant>,
}

struct Signals {
    interrupt: Signal,
    terminate: Signal,
    /// With `--reachability`: SIGUSR1 asks for a scan now.
    scan_request: Option<Signal>,
}

/// What `Run::start` has attached: the eBPF object and everything tied to its probes.
struct Attached {
    ebpf: Ebpf,
    multi_links: Option<MultiLinks>,
    clock: KernelClock,
    tables: UnwindTables,
    probed: Vec<String>,
    symbolizer: Symbolizer,
    dlopen_hook: Option<DlopenHook>,
    go_probes: Option<GoProbes>,
    exit_watch: AsyncFd<OwnedFd>,
    bpf_stats: Option<OwnedFd>,
}

impl<'a> Run<'a> {
    /// Target, allocator, eBPF object, unwind tables and probes, in that order; then the
    /// outputs, the OOM watch, the ticks and the signal handlers.
    async fn start(options: &'a TraceOptions, spec: TargetSpec) -> Result<Self> {
        output::check(
            options.format,
            options.output.as_deref(),
            std::io::stdout().is_terminal(),
        )?;
        attach::preflight()?;
        let sink = Sink::open(options.output.clone())?;
        // Before attaching: a port in use ends the run before it starts.
        let metrics_listener = match options.metrics_addr {
            Some(addr) => Some(metrics::bind(addr).await?),
            None => None,
        };
        // Before attaching: a Ctrl-C from the moment the `attached` line is out (or while
        // attaching) ends the run with its report, instead of killing leaktrace.
        let signals = Signals {
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            scan_request: options
                .reachability_on()
                .then(|| signal(SignalKind::user_defined1()))
                .transpose()
                .context("cannot handle SIGUSR1")?,
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
        let language = language_of(&target);
        let attached = load_and_attach(
            options,
            &target,
            &allocator,
            &pinned,
            launched.as_mut(),
            started,
        )
        .await?;
        announce(options, &target, &allocator, &attached);

        let metrics = metrics_listener.map(|listener| serve_metrics(options, listener));
        let status = Status::new(options.quiet);
        let mut status_tick = interval(status::EVERY);
        status_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        status_tick.tick().await;

        let heaps = if allocator
            .families
            .iter()
            .any(|f| f.flavour == Flavour::Glibc)
        {
            reachability::Heaps::Glibc
        } else {
            reachability::Heaps::Opaque
        };
        let mut session = Session {
            options,
            language,
            go: attached
                .go_probes
                .as_ref()
                .map(|p| GoState::new(p, &target)),
            target,
            pinned,
            allocator,
            probed: attached.probed,
            settings: Settings {
                min_age_s: options.min_age.as_secs_f64(),
                interval_s: options.interval.as_secs_f64(),
                sample_bytes: options.sample_bytes.map_or(0, |b| b.0),
            },
            started_at,
            // The traced window (duration_s, the verdicts' clock) starts at the attach, as
            // --duration does.
            started: Instant::now(),
            history: History::default(),
            memory: Memory::default(),
            memory_trend: Trend::default(),
            oom_kills: Vec::new(),
            stack_activity: Default::default(),
            stacks_evicted: 0,
            // Escalation makes sampled sites exact: without sampling every site is already.
            escalation: (options.always_on && options.sample_bytes.is_some())
                .then(Escalation::default),
            reach: options.reachability_on().then(|| {
                reachability::Tracker::new(
                    options.reachability_max_pause,
                    options.reachability_every,
                    heaps,
                )
            }),
        };
        // A first reading now: a target killed before the first interval still has its figures.
        session.read_memory(0.0, 0);
        let mut ebpf = attached.ebpf;
        // Optional: without the tracepoint the run goes on, and an OOM kill reads as an exit.
        let oom_watch = match OomWatch::attach(&mut ebpf) {
            Ok(watch) => Some(watch),
            Err(error) => {
                log::warn!("OOM kills will not be recognised: {error}");
                None
            }
        };
        let ticks = Ticks::start(options, status_tick, launched.is_some()).await;
        Ok(Run {
            options,
            session,
            dlopen_hook: attached.dlopen_hook,
            oom_watch,
            symbolizer: attached.symbolizer,
            ebpf,
            multi_links: attached.multi_links,
            _clock: attached.clock,
            tables: attached.tables,
            sink,
            metrics,
            status,
            ticks,
            history_tick: HistoryTick::new(options.interval),
            signals,
            exit_watch: attached.exit_watch,
            bpf_stats: attached.bpf_stats,
            launched,
            _lock,
        })
    }
}

impl Ticks {
    /// Sampling starts one interval from now; a launched command's mappings are refreshed
    /// often while it loads its libraries. `--duration` counts from now, once attached: a slow
    /// attach (a loaded machine, a large target) does not shorten the traced window.
    async fn start(options: &TraceOptions, status: Interval, launched: bool) -> Self {
        let attached = Instant::now();
        let mut sample = interval(options.interval);
        sample.set_missed_tick_behavior(MissedTickBehavior::Delay);
        sample.tick().await;
        let mut refresh = interval(if launched {
            STARTUP_REFRESH
        } else {
            MAPPINGS_REFRESH
        });
        refresh.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ticks {
            sample,
            status,
            refresh,
            startup: launched,
            deadline: options
                .duration
                .map(|d| tokio::time::Instant::from_std(attached + d)),
        }
    }
}

fn language_of(target: &TargetProcess) -> Language {
    if target.open_exe().is_ok_and(|e| e.is_go()) {
        Language::Go
    } else {
        Language::C
    }
}

/// The Go runtime's layout, the exit watch, the eBPF object (loaded on a thread while this one
/// reads the unwind tables) and the probes; the target checked to be the same process after.
async fn load_and_attach(
    options: &TraceOptions,
    target: &TargetProcess,
    allocator: &Allocator,
    pinned: &PinnedProcess,
    launched: Option<&mut Launched>,
    started: Instant,
) -> Result<Attached> {
    let pid = NonZeroU32::new(target.pid).context("PID 0 is not a process")?;
    let mut go_probes = go_target::probes(target, allocator)?;
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
        links: options.probe_links,
    };
    let programs = attach::programs_for(allocator, go_probes.is_some(), launched.is_some());
    let mut tables = UnwindTables::new(target.files.clone(), options.max_unwind_rows);
    // The kernel's part (maps, verification: most of the startup time) on a thread, while this
    // one reads the running target's unwind tables.
    let mut loaded = std::thread::scope(|scope| {
        let loading = scope.spawn(|| attach::load_with_programs(limits, &programs));
        if launched.is_none() {
            tables.prepare();
        }
        loading.join()
    })
    .map_err(|_| anyhow::anyhow!("the eBPF loading thread panicked"))??;
    startup_phase(started, "eBPF object loaded");
    let clock = KernelClock::start(&mut loaded.ebpf)?;
    let (probed, symbolizer, dlopen_hook) = attach_probes(
        &mut loaded,
        &mut tables,
        target,
        allocator,
        go_probes.as_mut(),
        launched,
        started,
    )
    .await?;
    // Probes on a PID that now names another process would trace that one: refuse.
    pinned
        .verify()
        .with_context(|| format!("PID {pid} exited while leaktrace was attaching"))?;
    startup_phase(started, "probes attached");
    // The allocator's uprobe_multi links stay until the run ends: dropping them detaches.
    let attach::Loaded { ebpf, multi_links } = loaded;
    Ok(Attached {
        ebpf,
        multi_links,
        clock,
        tables,
        probed,
        symbolizer,
        dlopen_hook,
        go_probes,
        exit_watch,
        bpf_stats,
    })
}

/// The `attached to ...` line (not with --quiet).
fn announce(
    options: &TraceOptions,
    target: &TargetProcess,
    allocator: &Allocator,
    attached: &Attached,
) {
    if options.quiet {
        return;
    }
    let probes = if allocator.entries.is_empty() {
        "goroutine probes only (a pure Go program)".to_owned()
    } else {
        format!(
            "{} probes on {} ({})",
            attached.probed.len(),
            allocator.path,
            allocator.name
        )
    };
    eprintln!(
        "leaktrace: attached to {} (pid {}): {probes}; {} unwind rows{}",
        crate::escape::control_chars(&target.comm),
        target.pid,
        attached.tables.rows_used(),
        match options.duration {
            Some(d) => format!("; tracing for {}", humantime::format_duration(d)),
            None => "; Ctrl-C to stop".to_owned(),
        }
    );
}

/// `--metrics-addr`: the endpoint, served from now on.
fn serve_metrics(options: &TraceOptions, listener: TcpListener) -> Metrics {
    let metrics = Metrics::new(options.top);
    if !options.quiet
        && let Ok(addr) = listener.local_addr()
    {
        eprintln!("leaktrace: serving metrics on http://{addr}/metrics");
    }
    tokio::spawn(metrics::serve(listener, metrics.registry()));
    metrics
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
    loaded: &mut attach::Loaded,
    tables: &mut UnwindTables,
    target: &TargetProcess,
    allocator: &Allocator,
    mut go: Option<&mut GoProbes>,
    launched: Option<&mut Launched>,
    started: Instant,
) -> Result<(Vec<String>, Symbolizer, Option<DlopenHook>)> {
    let pid = NonZeroU32::new(target.pid).context("PID 0 is not a process")?;
    if launched.is_none() {
        tables.sync(&mut loaded.ebpf)?;
        startup_phase(started, "unwind tables installed");
        if let Some(go) = go.as_deref_mut() {
            go_target::set_params(&mut loaded.ebpf, go, target)?;
        }
    }
    let exited = |e: attach::AttachError| {
        if !target.is_alive() {
            anyhow::anyhow!("PID {pid} exited while leaktrace was attaching")
        } else {
            anyhow::Error::from(e)
        }
    };
    let mut probed = attach::attach(loaded, allocator, pid).map_err(exited)?;
    startup_phase(started, "allocator probes attached");
    if let Some(go) = go.as_deref() {
        // The verified file itself, through our descriptor: its path may not exist here.
        let exe = target.open_exe()?;
        let count = attach::attach_go(
            &mut loaded.ebpf,
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
        attach::attach_entry_stop(&mut loaded.ebpf, &launched.program, entry, pid)?;
        launched.entry_offset = Some(entry);
        launched.release()?;
        let stopped = launched.wait_for_entry_stop().await == EntryStop::Stopped;
        tables.sync(&mut loaded.ebpf)?;
        if let Some(go) = go {
            go_target::set_params(&mut loaded.ebpf, go, target)?;
        }
        let symbolizer = Symbolizer::new(target.pid);
        // Before the program runs: its first dlopen is already covered.
        let hook = install_dlopen_hook(&mut loaded.ebpf, target, pid);
        if stopped {
            launched.resume();
        }
        return Ok((probed, symbolizer?, hook));
    }
    let hook = install_dlopen_hook(&mut loaded.ebpf, target, pid);
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

/// Where startup time goes (`RUST_LOG=debug`): from launch to attached should take well under
/// 200 ms.
fn startup_phase(started: Instant, phase: &str) {
    log::debug!(
        "startup: {phase} at {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600)
}
