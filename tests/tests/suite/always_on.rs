//! `--always-on`: sampled tracing that escalates a slowly leaking site to exact tracing.
//! targets/always_on.c leaks 64 bytes every 10 ms from leak_slowly() among about 6000
//! short-lived allocations a second from three churn sites, and writes the time of each leak.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    thread,
    time::{Duration, Instant},
};

use leaktrace_tests::*;
use serde_json::Value;

const LEAK_BYTES: u64 = 64;
const RUN_SECONDS: &str = "12";

#[test]
fn a_slow_leak_among_churn_is_escalated_and_reported_exactly() {
    let built = build("always_on", Variant::O2NoFramePointer);
    let stamps_file = built.dir.join("stamps");
    let report_file = built.dir.join("report.json");
    // 2 KiB samples: the leak (6.4 KB/s) is sampled about 3 times a second, so its estimate
    // is seen growing within seconds; 512 KiB would take minutes.
    let mut tracer = Tracer::start(&[
        "--always-on",
        "--sample-bytes",
        "2KiB",
        "--interval",
        "1s",
        "--min-age",
        "1s",
        "--metrics-addr",
        "127.0.0.1:0",
        "--format",
        "json",
        "--output",
        report_file.to_str().expect("path"),
        "run",
        "--",
        built.exe.to_str().expect("path"),
        stamps_file.to_str().expect("path"),
        RUN_SECONDS,
    ]);
    tracer.wait_attached(Duration::from_secs(30));
    let metrics = served_metrics_address(&tracer);

    // While it runs, the endpoint serves the escalated site and its exact figures.
    let served = wait_for(Duration::from_secs(11), || {
        http_get(metrics, "/metrics").filter(|m| m.contains("leaktrace_escalated_sites 1"))
    })
    .unwrap_or_else(|| panic!("never escalated; stderr:\n{}", tracer.stderr_so_far()));
    let series = "leaktrace_escalated_exact_outstanding_bytes{site=\"leak_slowly always_on.c:";
    assert!(served.contains(series), "{served}");

    let finished = tracer.wait(Duration::from_secs(60));
    finished.assert_success();
    assert!(
        finished
            .stderr
            .contains("leaktrace: leak_slowly always_on.c:")
            && finished
                .stderr
                .contains("is growing: traced exactly from now on"),
        "{}",
        finished.stderr
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&report_file).expect("report"))
        .expect("a JSON report");
    assert_eq!(report["settings"]["sample_bytes"], 2048);

    // Only the leak was escalated: the churn sites never held anything for long.
    let escalations = &report["escalations"];
    assert_eq!(escalations["count"], 1, "{escalations}");
    assert_eq!(escalations["refused"], 0);
    let escalated = &escalations["sites"][0];
    let line = marked_line("always_on", "leak");
    assert_eq!(
        escalated["site"],
        format!("leak_slowly always_on.c:{line}"),
        "{escalated}"
    );

    // Its exact figures are the leaks made since the escalation: every malloc that started
    // after `at_unix_ns` (its time is taken just before the call), and at most the one in
    // flight at that instant (they are 10 ms apart).
    let at = escalated["at_unix_ns"].as_u64().expect("at_unix_ns");
    let stamps = read_stamps(&std::fs::read(&stamps_file).expect("stamps"));
    let after = stamps.iter().filter(|&&t| t >= at).count() as u64;
    let exact_allocs = escalated["exact_outstanding_allocs"]
        .as_u64()
        .expect("allocs");
    assert!(
        (after..=after + 1).contains(&exact_allocs),
        "{exact_allocs} exact allocations, the target made {after} after the escalation"
    );
    assert!(after > 100, "escalated too late: {after} leaks after it");
    assert_eq!(
        escalated["exact_outstanding_bytes"],
        exact_allocs * LEAK_BYTES
    );

    // The report's site says the same, beside the estimate of the older, sampled leaks.
    let sites = report["sites"].as_array().expect("sites");
    let leak = sites
        .iter()
        .find(|s| s["escalated"].is_object())
        .expect("an escalated site");
    assert!(has_function(leak, "leak_slowly"), "{leak}");
    assert_eq!(leak["escalated"]["exact_outstanding_allocs"], exact_allocs);
    assert_eq!(leak["verdict"], "growing");
    for site in sites.iter().filter(|s| s["escalated"].is_null()) {
        assert!(!has_function(site, "leak_slowly"), "{site}");
    }
}

fn has_function(site: &Value, name: &str) -> bool {
    site["frames"]
        .as_array()
        .is_some_and(|frames| frames.iter().any(|f| f["function"] == name))
}

fn read_stamps(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

/// The `serving metrics on http://ADDR/metrics` line leaktrace printed.
fn served_metrics_address(tracer: &Tracer) -> SocketAddr {
    let stderr = tracer.stderr_so_far();
    let addr = stderr
        .lines()
        .find_map(|l| l.strip_prefix("leaktrace: serving metrics on http://"))
        .unwrap_or_else(|| panic!("no metrics address in\n{stderr}"));
    addr.trim_end_matches("/metrics")
        .parse()
        .expect("metrics address")
}

fn wait_for<T>(timeout: Duration, mut poll: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(found) = poll() {
            return Some(found);
        }
        thread::sleep(Duration::from_millis(200));
    }
    None
}

fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.contains(" 200 ").then(|| body.to_owned())
}
