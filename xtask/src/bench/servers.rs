//! The real workloads of `cargo xtask bench`: Debian's redis-server (on jemalloc) under
//! `redis-benchmark -t set,get -P 1`, and nginx (one worker, on glibc) serving a static file
//! under `wrk -t2 -c32`, each server and its load generator on this machine, both on loopback.
//!
//! Each runs untraced, under leaktrace (full tracing, then `--sample-bytes` [`SAMPLE_BYTES`]),
//! and under the peer (`bench/memleak_classic.bt` on the server's allocator library), the modes
//! interleaved in [`SERVER_RUNS`] rounds. Every run starts a fresh server with its own config in
//! a directory of `target/bench/servers`, on a free port, attaches the tracer to the process that
//! serves (nginx's worker, not its master), and lets the load generator run to its end: wrk for
//! [`WRK_SECONDS`], redis-benchmark for [`REDIS_REQUESTS`] requests per command (it has no time
//! bound; a few seconds untraced). leaktrace runs with `--bpf-stats`, so each traced row also
//! says which of its programs ran how often and at what cost in the kernel.

use std::{
    fmt::Write as _,
    fs,
    net::{Ipv4Addr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use super::{
    Mode, PEER_READY, READY_TIMEOUT, SAMPLE_BYTES, WORKLOADS_ENV,
    allocators::Allocator,
    median,
    runner::{
        LEAKTRACE_READY, Ready, Stream, Tracer, drain, leaktrace_command, mapped_allocator,
        wait_timeout,
    },
    spread, table,
};
use crate::{cmd, cmd::say};

/// Rounds of every server scenario; the table shows their median.
pub(super) const SERVER_RUNS: usize = 3;
/// How long each wrk run lasts.
const WRK_SECONDS: u64 = 6;
/// wrk's threads and connections, as in the measurement.
const WRK_THREADS: u32 = 2;
const WRK_CONNECTIONS: u32 = 32;
/// Requests per command (SET, then GET) of each redis-benchmark run.
const REDIS_REQUESTS: u64 = 250_000;
/// How long a server may take to exit after SIGTERM.
const SERVER_EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// The goals: the share of the untraced throughput kept under full tracing and sampled.
const FULL_GOAL: f64 = 0.5;
const SAMPLED_GOAL: f64 = 0.7;

/// The modes of a server scenario, in the order of a round (no floor: `--empty-probes` is about
/// the loop's per-pair cost, and the loop rows measure it).
const SERVER_MODES: [Mode; 4] = [Mode::Untraced, Mode::Leaktrace, Mode::Sampled, Mode::Peer];

/// A real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Server {
    Redis,
    Nginx,
}

impl Server {
    /// The allocator under the server: the library the peer's probes go on.
    fn allocator(self) -> Allocator {
        match self {
            Self::Redis => Allocator::Jemalloc,
            Self::Nginx => Allocator::Glibc,
        }
    }

    /// The load, as the table names it.
    fn load(self) -> String {
        match self {
            Self::Redis => format!("redis-benchmark -t set,get -P 1 -n {REDIS_REQUESTS}"),
            Self::Nginx => format!(
                "wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{WRK_SECONDS}s, a 4 KiB static file"
            ),
        }
    }
}

/// A real workload: a server and its load.
pub(super) struct ServerWorkload {
    pub(super) name: &'static str,
    pub(super) slug: &'static str,
    server: Server,
}

pub(super) static SERVER_WORKLOADS: [ServerWorkload; 2] = [
    ServerWorkload {
        name: "redis (jemalloc)",
        slug: "redis",
        server: Server::Redis,
    },
    ServerWorkload {
        name: "nginx (glibc)",
        slug: "nginx",
        server: Server::Nginx,
    },
];

/// Whether SLUG names a real workload.
pub(super) fn is_slug(slug: &str) -> bool {
    SERVER_WORKLOADS.iter().any(|w| w.slug == slug)
}

/// The real workloads to run: all, or those [`WORKLOADS_ENV`] names (the loop's slugs are
/// checked by the caller).
pub(super) fn selected() -> Vec<&'static ServerWorkload> {
    let Some(wanted) = std::env::var_os(WORKLOADS_ENV).filter(|v| !v.is_empty()) else {
        return SERVER_WORKLOADS.iter().collect();
    };
    let wanted = wanted.to_string_lossy().into_owned();
    SERVER_WORKLOADS
        .iter()
        .filter(|w| wanted.split(',').any(|slug| slug.trim() == w.slug))
        .collect()
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub(super) struct ServerRun {
    /// Requests the load generator completed, and in how many seconds.
    pub requests: u64,
    pub seconds: f64,
    /// Traced runs: the tracer's figures.
    pub tracer: Option<ServerTracerRun>,
}

impl ServerRun {
    fn requests_per_s(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

/// A traced run's tracer.
#[derive(Debug, Clone, Serialize)]
pub(super) struct ServerTracerRun {
    pub cpu_s: f64,
    pub peak_rss_mib: f64,
    pub attach_ms: f64,
    /// leaktrace's `totals.allocs_seen` (sampled allocations only, when sampling).
    pub allocs_seen: Option<u64>,
    pub dropped: Option<u64>,
    /// leaktrace's `--bpf-stats` lines.
    pub bpf_stats: Vec<ProbeStat>,
}

/// One `leaktrace: bpf-stats NAME RUNS NS_PER_RUN` line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct ProbeStat {
    pub program: String,
    pub runs: u64,
    pub ns_per_run: f64,
}

impl ProbeStat {
    fn parse(line: &str) -> Option<Self> {
        let mut fields = line
            .strip_prefix("leaktrace: bpf-stats ")?
            .split_whitespace();
        let stat = Self {
            program: fields.next()?.to_owned(),
            runs: fields.next()?.parse().ok()?,
            ns_per_run: fields.next()?.parse().ok()?,
        };
        fields.next().is_none().then_some(stat)
    }
}

/// All runs of one real workload in one mode.
pub(super) struct ServerScenario {
    pub(super) workload: &'static ServerWorkload,
    pub(super) mode: Mode,
    pub(super) runs: Vec<ServerRun>,
}

impl ServerScenario {
    pub(super) fn name(&self) -> String {
        format!("{}, {}", self.workload.name, self.mode.label())
    }

    fn rps(&self) -> Vec<f64> {
        self.runs.iter().map(ServerRun::requests_per_s).collect()
    }

    /// Failures: leaktrace dropping allocations, or seeing none.
    pub(super) fn problems(&self) -> Vec<String> {
        if !matches!(self.mode, Mode::Leaktrace | Mode::Sampled) {
            return Vec::new();
        }
        self.runs
            .iter()
            .enumerate()
            .filter_map(|(i, run)| {
                let tracer = run.tracer.as_ref()?;
                let problem = match (tracer.allocs_seen, tracer.dropped) {
                    (_, Some(dropped)) if dropped > 0 => format!("dropped {dropped}"),
                    (Some(0), _) if self.mode == Mode::Leaktrace => "saw no allocation".to_owned(),
                    _ => return None,
                };
                Some(format!("{} run {}: {problem}", self.name(), i + 1))
            })
            .collect()
    }
}

/// Runs the real workloads' scenarios in interleaved rounds.
pub(super) fn run(
    workloads: &[&'static ServerWorkload],
    leaktrace: &Path,
    out_dir: &Path,
    peer: &mut super::Peer,
) -> Result<Vec<ServerScenario>> {
    let mut scenarios: Vec<ServerScenario> = workloads
        .iter()
        .flat_map(|&workload| {
            SERVER_MODES.iter().map(move |&mode| ServerScenario {
                workload,
                mode,
                runs: Vec::new(),
            })
        })
        .collect();
    if scenarios.is_empty() {
        return Ok(scenarios);
    }
    let servers_dir = out_dir.join("servers");
    // Warm up (page cache, CPU frequency); not counted.
    for workload in workloads {
        let server = RunningServer::start(workload.server, &servers_dir)?;
        server.load()?;
        server.stop()?;
    }
    for round in 1..=SERVER_RUNS {
        for scenario in &mut scenarios {
            let name = scenario.name();
            let run = match run_one(scenario, leaktrace, &servers_dir, out_dir, peer) {
                Ok(Some(run)) => run,
                Ok(None) => continue,
                Err(err) if scenario.mode == Mode::Peer => {
                    say!("bench: {name} run {round}: the peer failed: {err:#}");
                    peer.unavailable = Some(format!("{err:#}"));
                    continue;
                }
                Err(err) => return Err(err.context(format!("{name} run {round}"))),
            };
            say!(
                "bench: {name} run {round}: {:.0} requests/s ({} in {:.1} s){}",
                run.requests_per_s(),
                run.requests,
                run.seconds,
                run.tracer
                    .as_ref()
                    .and_then(|t| t.allocs_seen)
                    .map_or_else(String::new, |a| format!("; allocs_seen {a}"))
            );
            scenario.runs.push(run);
        }
    }
    Ok(scenarios)
}

/// One run of one scenario; `None` when the peer is unavailable.
fn run_one(
    scenario: &ServerScenario,
    leaktrace: &Path,
    servers_dir: &Path,
    out_dir: &Path,
    peer: &super::Peer,
) -> Result<Option<ServerRun>> {
    if scenario.mode == Mode::Peer && peer.unavailable.is_some() {
        return Ok(None);
    }
    let server = RunningServer::start(scenario.workload.server, servers_dir)?;
    let report = out_dir.join(format!(
        "leaktrace-{}-{}.json",
        scenario.mode.key(),
        scenario.workload.slug
    ));
    let (command, ready) = match scenario.mode {
        Mode::Untraced | Mode::Floor => {
            let (requests, seconds) = server.load()?;
            server.stop()?;
            return Ok(Some(ServerRun {
                requests,
                seconds,
                tracer: None,
            }));
        }
        Mode::Leaktrace | Mode::Sampled => {
            let mut command = leaktrace_command(leaktrace, server.pid, &report);
            command.args(["--interval", "1s", "--bpf-stats"]);
            if scenario.mode == Mode::Sampled {
                command.args(["--sample-bytes", SAMPLE_BYTES]);
            }
            (command, LEAKTRACE_READY)
        }
        Mode::Peer => {
            let library = mapped_allocator(server.pid, scenario.workload.server.allocator())?;
            let mut command = Command::new(&peer.bpftrace);
            command
                .args(["-B", "line"])
                .arg(&peer.script)
                .arg(server.pid.to_string())
                .arg(library);
            let ready = Ready {
                stream: Stream::Stdout,
                prefix: PEER_READY,
            };
            (command, ready)
        }
    };
    let mut tracer = Tracer::start(command, ready)?;
    let (requests, seconds) = server.load()?;
    let usage = tracer.usage()?;
    tracer.stop()?;
    let stderr = drain(&tracer.stderr, Instant::now() + Duration::from_secs(2));
    server.stop()?;
    let totals = if scenario.mode.is_leaktrace() {
        Some(super::read_totals(&report)?)
    } else {
        None
    };
    Ok(Some(ServerRun {
        requests,
        seconds,
        tracer: Some(ServerTracerRun {
            cpu_s: usage.cpu_s,
            peak_rss_mib: usage.peak_rss_mib,
            attach_ms: usage.attach_ms,
            allocs_seen: totals.map(|t| t.allocs_seen),
            dropped: totals.map(|t| t.dropped),
            bpf_stats: stderr.iter().filter_map(|l| ProbeStat::parse(l)).collect(),
        }),
    }))
}

/// Reads (requests completed, seconds taken) from a load generator's output.
type ParseLoad = fn(&str) -> Option<(u64, f64)>;

/// A server started for one run, listening on a free loopback port.
struct RunningServer {
    server: Server,
    child: Child,
    /// The process that serves the requests (nginx's worker), which the tracers attach to.
    pid: u32,
    port: u16,
}

impl RunningServer {
    fn start(server: Server, servers_dir: &Path) -> Result<Self> {
        let port = free_port()?;
        let dir = servers_dir.join(format!("{server:?}-{port}").to_lowercase());
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
        let mut command = match server {
            Server::Redis => redis_command(&dir, port),
            Server::Nginx => nginx_command(&dir, port)?,
        };
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command
            .spawn()
            .with_context(|| format!("could not start `{}`", cmd::display(&command)))?;
        let mut running = Self {
            server,
            pid: child.id(),
            child,
            port,
        };
        running.wait_until_serving()?;
        if server == Server::Nginx {
            running.pid = only_child(running.child.id())?;
        }
        Ok(running)
    }

    /// Waits until the port accepts connections.
    fn wait_until_serving(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_err() {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{:?} exited at start ({})",
                    self.server,
                    cmd::describe(status)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{:?} does not accept connections on port {} after {} s",
                    self.server,
                    self.port,
                    READY_TIMEOUT.as_secs()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Runs the load generator to its end: (requests completed, seconds taken).
    fn load(&self) -> Result<(u64, f64)> {
        let port = self.port.to_string();
        let (mut command, parse): (Command, ParseLoad) = match self.server {
            Server::Redis => {
                let n = REDIS_REQUESTS.to_string();
                let args = ["-h", "127.0.0.1", "-p", &port, "-t", "set,get", "-P", "1"];
                let mut command = cmd::new("redis-benchmark", args);
                command.args(["-n", &n, "--csv"]);
                (command, parse_redis_benchmark)
            }
            Server::Nginx => {
                let mut command = cmd::new(
                    "wrk",
                    [
                        format!("-t{WRK_THREADS}"),
                        format!("-c{WRK_CONNECTIONS}"),
                        format!("-d{WRK_SECONDS}s"),
                    ],
                );
                command.arg(format!("http://127.0.0.1:{port}/index.html"));
                (command, parse_wrk)
            }
        };
        let output = cmd::output(&mut command)?;
        parse(&output).with_context(|| {
            format!(
                "no throughput in the output of `{}`:\n{output}",
                cmd::display(&command)
            )
        })
    }

    /// SIGTERM (both servers exit cleanly on it), then waits.
    fn stop(mut self) -> Result<()> {
        let pid = libc::pid_t::try_from(self.child.id()).context("pid out of range")?;
        // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        wait_timeout(&mut self.child, SERVER_EXIT_TIMEOUT)?;
        Ok(())
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        // Only after an error: stop() has reaped it otherwise.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A port no one listens on now (the kernel's pick for an ephemeral bind).
fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("could not bind a loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// redis-server on PORT, in the foreground, nothing persisted, its files in DIR.
fn redis_command(dir: &Path, port: u16) -> Command {
    let mut command = Command::new("redis-server");
    command
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"));
    command
}

/// nginx with one worker, in the foreground, serving a 4 KiB `index.html` from DIR on PORT, its
/// pid, log and temp files in DIR.
fn nginx_command(dir: &Path, port: u16) -> Result<Command> {
    let page: String = (0..4096).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    fs::write(dir.join("index.html"), page)?;
    let d = dir.display();
    let config = format!(
        "worker_processes 1;\n\
         daemon off;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n\
         \x20 access_log off;\n\
         \x20 client_body_temp_path {d}/body;\n\
         \x20 proxy_temp_path {d}/proxy;\n\
         \x20 fastcgi_temp_path {d}/fastcgi;\n\
         \x20 uwsgi_temp_path {d}/uwsgi;\n\
         \x20 scgi_temp_path {d}/scgi;\n\
         \x20 server {{ listen 127.0.0.1:{port}; root {d}; }}\n\
         }}\n"
    );
    let config_path = dir.join("nginx.conf");
    fs::write(&config_path, config)?;
    let mut command = Command::new("nginx");
    command
        .arg("-c")
        .arg(&config_path)
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"));
    Ok(command)
}

/// The single child of PARENT (nginx's worker), waiting for it to appear.
fn only_child(parent: u32) -> Result<u32> {
    let path = PathBuf::from(format!("/proc/{parent}/task/{parent}/children"));
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let children = fs::read_to_string(&path)
            .with_context(|| format!("could not read {}", path.display()))?;
        let pids: Vec<u32> = children
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if let [pid] = pids[..] {
            return Ok(pid);
        }
        if Instant::now() > deadline {
            bail!("nginx (pid {parent}) has children {pids:?}, not one worker");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// redis-benchmark `--csv`: a header, then `"SET","<rps>",...` and `"GET","<rps>",...`. Each
/// command ran [`REDIS_REQUESTS`] requests; returns their sum and the time they took.
fn parse_redis_benchmark(output: &str) -> Option<(u64, f64)> {
    let rates: Vec<f64> = output
        .lines()
        .filter(|line| line.starts_with("\"SET\"") || line.starts_with("\"GET\""))
        .map(|line| line.split(',').nth(1)?.trim_matches('"').parse().ok())
        .collect::<Option<_>>()?;
    (rates.len() == 2 && rates.iter().all(|&r| r > 0.0)).then(|| {
        let seconds = rates.iter().map(|r| REDIS_REQUESTS as f64 / r).sum();
        (REDIS_REQUESTS * 2, seconds)
    })
}

/// wrk's `  <n> requests in <duration>, <bytes> read` line (duration like `6.01s` or `1.00m`).
fn parse_wrk(output: &str) -> Option<(u64, f64)> {
    let line = output.lines().find(|l| l.contains(" requests in "))?;
    let (requests, rest) = line.trim().split_once(" requests in ")?;
    let duration = rest.split(',').next()?.trim();
    let seconds = if let Some(ms) = duration.strip_suffix("ms") {
        ms.parse::<f64>().ok()? / 1e3
    } else if let Some(s) = duration.strip_suffix('s') {
        s.parse().ok()?
    } else {
        duration.strip_suffix('m')?.parse::<f64>().ok()? * 60.0
    };
    Some((requests.parse().ok()?, seconds)).filter(|&(n, s)| n > 0 && s > 0.0)
}

/// One line of the real-workload table, also written to results.json.
#[derive(Debug, Serialize)]
pub(super) struct ServerRow {
    pub name: String,
    pub workload: &'static str,
    pub mode: &'static str,
    pub load: String,
    pub requests_per_s: Option<f64>,
    pub spread: Option<f64>,
    /// The median over rounds of this run's throughput over that round's untraced run.
    pub vs_untraced: Option<f64>,
    /// Full tracing's allocations (hence pairs: the servers free what they allocate) per
    /// request, shared by the rows of the workload.
    pub allocs_per_request: Option<f64>,
    /// (1/traced - 1/untraced) per request, over the pairs per request.
    pub added_us_per_pair: Option<f64>,
    /// The kernel's time in leaktrace's programs per request (from `--bpf-stats`).
    pub probe_us_per_request: Option<f64>,
    pub tracer_cpu_s: Option<f64>,
    pub tracer_peak_rss_mib: Option<f64>,
    pub attach_ms: Option<f64>,
    /// Per program: the median over runs of runs per request and ns per run.
    pub probes: Vec<ProbeCost>,
    pub requests_per_s_runs: Vec<f64>,
    /// Goal: the least share of the untraced throughput this mode keeps.
    pub goal: Option<f64>,
    pub goal_holds: Option<bool>,
}

#[derive(Debug, Serialize)]
pub(super) struct ProbeCost {
    pub program: String,
    pub runs_per_request: f64,
    pub ns_per_run: f64,
}

pub(super) fn rows(scenarios: &[ServerScenario]) -> Vec<ServerRow> {
    scenarios
        .iter()
        .map(|scenario| {
            let of = |mode: Mode| {
                scenarios
                    .iter()
                    .find(|s| s.mode == mode && s.workload.slug == scenario.workload.slug)
            };
            let rps = median(scenario.rps());
            let untraced = of(Mode::Untraced)
                .map(ServerScenario::rps)
                .unwrap_or_default();
            let vs_untraced = match scenario.mode {
                Mode::Untraced => None,
                _ => median(
                    scenario
                        .rps()
                        .iter()
                        .zip(&untraced)
                        .map(|(t, u)| t / u)
                        .collect(),
                ),
            };
            let allocs_per_request = of(Mode::Leaktrace).and_then(|full| {
                median(
                    full.runs
                        .iter()
                        .filter_map(|r| {
                            Some(r.tracer.as_ref()?.allocs_seen? as f64 / r.requests as f64)
                        })
                        .collect(),
                )
            });
            let added_us_per_pair = match (scenario.mode, rps, median(untraced.clone())) {
                (Mode::Untraced, ..) => None,
                (_, Some(traced), Some(untraced)) => {
                    allocs_per_request.map(|pairs| (1.0 / traced - 1.0 / untraced) * 1e6 / pairs)
                }
                _ => None,
            };
            let tracer_median = |field: fn(&ServerTracerRun) -> f64| {
                median(
                    scenario
                        .runs
                        .iter()
                        .filter_map(|r| Some(field(r.tracer.as_ref()?)))
                        .collect(),
                )
            };
            let probes = probe_costs(scenario);
            let probe_us_per_request = (!probes.is_empty()).then(|| {
                probes
                    .iter()
                    .map(|p| p.runs_per_request * p.ns_per_run / 1e3)
                    .sum()
            });
            let goal = match scenario.mode {
                Mode::Leaktrace => Some(FULL_GOAL),
                Mode::Sampled => Some(SAMPLED_GOAL),
                _ => None,
            };
            ServerRow {
                name: scenario.name(),
                workload: scenario.workload.slug,
                mode: scenario.mode.key(),
                load: scenario.workload.server.load(),
                requests_per_s: rps,
                spread: spread(&scenario.rps()),
                vs_untraced,
                allocs_per_request,
                added_us_per_pair,
                probe_us_per_request,
                tracer_cpu_s: tracer_median(|t| t.cpu_s),
                tracer_peak_rss_mib: tracer_median(|t| t.peak_rss_mib),
                attach_ms: tracer_median(|t| t.attach_ms),
                probes,
                requests_per_s_runs: scenario.rps(),
                goal,
                goal_holds: goal.and_then(|g| Some(vs_untraced? >= g)),
            }
        })
        .collect()
}

/// Per program leaktrace ran, the medians over the scenario's runs.
fn probe_costs(scenario: &ServerScenario) -> Vec<ProbeCost> {
    let mut programs: Vec<&str> = scenario
        .runs
        .iter()
        .filter_map(|r| r.tracer.as_ref())
        .flat_map(|t| t.bpf_stats.iter().map(|s| s.program.as_str()))
        .collect();
    programs.sort_unstable();
    programs.dedup();
    programs
        .into_iter()
        .filter_map(|program| {
            let stats: Vec<(f64, f64)> = scenario
                .runs
                .iter()
                .filter_map(|r| {
                    let stat = r
                        .tracer
                        .as_ref()?
                        .bpf_stats
                        .iter()
                        .find(|s| s.program == program)?;
                    Some((stat.runs as f64 / r.requests as f64, stat.ns_per_run))
                })
                .collect();
            Some(ProbeCost {
                program: program.to_owned(),
                runs_per_request: median(stats.iter().map(|s| s.0).collect())?,
                ns_per_run: median(stats.iter().map(|s| s.1).collect())?,
            })
        })
        .collect()
}

/// The real-workload section of the printed table.
pub(super) fn table(rows: &[ServerRow], out: &mut String) {
    if rows.is_empty() {
        return;
    }
    let opt = |value: Option<f64>, decimals: usize, suffix: &str| {
        value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}{suffix}"))
    };
    let _ = writeln!(
        out,
        "real workloads: server and load generator on this machine, median of {SERVER_RUNS} rounds"
    );
    let header = [
        "scenario",
        "requests/s",
        "spread",
        "vs untraced",
        "allocs/request",
        "added us/pair",
        "probes us/request",
        "tracer CPU s",
        "tracer RSS MiB",
        "attach ms",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            vec![
                row.name.clone(),
                opt(row.requests_per_s, 0, ""),
                opt(row.spread.map(|s| s * 100.0), 0, "%"),
                opt(row.vs_untraced, 2, ""),
                opt(row.allocs_per_request, 2, ""),
                opt(row.added_us_per_pair, 2, ""),
                opt(row.probe_us_per_request, 2, ""),
                opt(row.tracer_cpu_s, 2, ""),
                opt(row.tracer_peak_rss_mib, 1, ""),
                opt(row.attach_ms, 0, ""),
            ]
        })
        .collect();
    table::write_columns(out, &header, &cells, |i| {
        rows[i].workload != rows[i - 1].workload
    });
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "per-probe kernel cost (--bpf-stats, medians over runs):"
    );
    for row in rows.iter().filter(|r| !r.probes.is_empty()) {
        let probes: Vec<String> = row
            .probes
            .iter()
            .map(|p| {
                format!(
                    "{} {:.2}/request x {:.0} ns",
                    p.program, p.runs_per_request, p.ns_per_run
                )
            })
            .collect();
        let _ = writeln!(out, "  {}: {}", row.name, probes.join(", "));
    }
    let _ = writeln!(out);
    for note in [
        "loads: ".to_owned()
            + &SERVER_WORKLOADS
                .iter()
                .map(|w| format!("{}: {}", w.name, w.server.load()))
                .collect::<Vec<_>>()
                .join("; "),
        "vs untraced: the median over rounds of the run's requests/s over that round's untraced run's.".to_owned(),
        "allocs/request: full tracing's allocs_seen over the requests (the servers free what they allocate: pairs per request).".to_owned(),
        "added us/pair: (1/traced - 1/untraced requests/s) per request, over allocs/request; it includes the tracer's own CPU time taken from the server and load generator on 2 vCPUs.".to_owned(),
        "probes us/request: the kernel's time in leaktrace's programs per request (runs x ns per run), the part of the added time --bpf-stats sees; the uprobe trap itself is outside it.".to_owned(),
    ] {
        let _ = writeln!(out, "{note}");
    }
    let _ = writeln!(out, "real-workload goals:");
    for row in rows.iter().filter(|r| r.goal.is_some()) {
        let _ = writeln!(
            out,
            "  {}: at least {:.1} of untraced throughput: {} -> {}",
            row.name,
            row.goal.unwrap_or_default(),
            opt(row.vs_untraced, 2, ""),
            match row.goal_holds {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "not measured",
            }
        );
    }
    let _ = writeln!(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from `redis-benchmark -t set,get -n 250000 -P 1 --csv` (Debian 12's 7.0).
    const REDIS_CSV: &str = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\
\"SET\",\"61087.36\",\"0.526\",\"0.104\",\"0.503\",\"0.783\",\"0.951\",\"28.623\"\n\
\"GET\",\"54362.60\",\"0.604\",\"0.120\",\"0.535\",\"0.815\",\"3.639\",\"14.631\"\n";

    /// Captured from `wrk -t2 -c32 -d3s` (Debian 12's 4.1.0).
    const WRK_OUTPUT: &str = "Running 3s test @ http://127.0.0.1:18089/index.html\n  2 threads and 32 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     0.88ms    1.96ms  39.86ms   96.25%\n    Req/Sec    25.79k     6.16k   37.78k    63.33%\n  153944 requests in 3.01s, 847.99MB read\nRequests/sec:  51193.75\nTransfer/sec:    282.00MB\n";

    #[test]
    fn redis_benchmark_csv_gives_both_commands_requests_and_time() {
        let (requests, seconds) = parse_redis_benchmark(REDIS_CSV).unwrap();
        assert_eq!(requests, 500_000);
        let expected = 250_000.0 / 61087.36 + 250_000.0 / 54362.60;
        assert!((seconds - expected).abs() < 1e-9, "{seconds}");
        assert_eq!(parse_redis_benchmark("\"SET\",\"61087.36\"\n"), None);
    }

    #[test]
    fn wrk_output_gives_requests_and_duration() {
        assert_eq!(parse_wrk(WRK_OUTPUT), Some((153_944, 3.01)));
        let minutes = WRK_OUTPUT.replace("in 3.01s", "in 1.50m");
        assert_eq!(parse_wrk(&minutes), Some((153_944, 90.0)));
        assert_eq!(parse_wrk("Running 3s test\n"), None);
    }

    #[test]
    fn bpf_stats_lines_parse_and_others_do_not() {
        assert_eq!(
            ProbeStat::parse("leaktrace: bpf-stats alloc_enter 1801853 620.5"),
            Some(ProbeStat {
                program: "alloc_enter".to_owned(),
                runs: 1_801_853,
                ns_per_run: 620.5
            })
        );
        assert_eq!(
            ProbeStat::parse("leaktrace: attached to redis-server"),
            None
        );
        assert_eq!(
            ProbeStat::parse("leaktrace: bpf-stats alloc_enter 12"),
            None
        );
    }
}
