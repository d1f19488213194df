//! Targets that try to exhaust or mislead leaktrace through the files they map: thousands of
//! distinct executable mappings under a low descriptor limit, a sparse multi-gigabyte file
//! mapped executable. The run must still end with an exact report.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use leaktrace_tests::*;

/// Descriptor limit (soft and hard) leaktrace runs under in the churn test: far below the
/// number of files the target maps.
const NOFILE: &str = "512";

/// `leaktrace --pid` on TARGET under `prlimit --nofile=LIMIT:LIMIT` (prlimit execs leaktrace,
/// so the tracer's PID is leaktrace's).
fn traced_under_nofile_limit(built: &Built, target_args: &[&str]) -> (Target, Finished) {
    let mut target = Target::spawn(&built.exe, target_args);
    target.wait_ready();
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={NOFILE}:{NOFILE}"))
        .arg(leaktrace_bin())
        .args(["--pid", &target.pid.to_string()])
        .args(["--format", "json", "--interval", "300ms", "--min-age", "0s"]);
    let mut tracer = Tracer::start_command(cmd);
    tracer.wait_attached(ATTACH_TIMEOUT);
    target.go();
    target.wait_line("done", Duration::from_secs(60));
    let finished = tracer.wait(Duration::from_secs(60));
    (target, finished)
}

fn assert_site(report: &Report, function: &str, allocs: u64, bytes: u64) {
    let site = report.site_with(function);
    assert_eq!(
        (site.outstanding_allocs, site.outstanding_bytes),
        (allocs, bytes),
        "{}",
        site.describe()
    );
    assert_eq!(
        site.frame(function).line,
        Some(u64::from(marked_line("mapfiles", function))),
        "{}",
        site.describe()
    );
}

/// 2 rounds of 3000 distinct files mapped executable, 6000 objects in all, with leaktrace
/// limited to 512 descriptors: it keeps a bounded set of objects open and still symbolizes
/// every leak exactly.
#[test]
fn thousands_of_mapped_files_under_a_low_descriptor_limit() {
    let built = build("mapfiles", Variant::O0);
    let files = TempDir::new("mapfiles-churn");
    let dir = files.path().to_string_lossy().into_owned();
    let (_target, finished) = traced_under_nofile_limit(&built, &[&dir, "2", "3000"]);
    finished.assert_success();
    let report = finished.report();
    let ctx = report.describe();
    // leak_round(0) then leak_round(1): 1 + 2 blocks of 96 bytes from one call site.
    assert_site(&report, "leak_round", 3, 3 * 96);
    assert_site(&report, "leak_after", 3, 3 * 160);
    assert_eq!(report.totals.outstanding_allocs, 6, "{ctx}");
    assert_eq!(report.totals.outstanding_bytes, 3 * 96 + 3 * 160, "{ctx}");
}

/// A 6 GiB sparse file (over the 4 GiB leaktrace reads) mapped executable: refused without
/// being read, and the leaks are reported.
#[test]
fn sparse_multi_gigabyte_file_mapped_executable() {
    sparse_file_run(6 << 30);
}

/// A 3 GiB sparse file (under the cap): mapped lazily, never read whole.
#[test]
fn sparse_file_under_the_size_cap() {
    sparse_file_run(3 << 30);
}

fn sparse_file_run(bytes: u64) {
    let built = build("mapfiles", Variant::O0);
    let files = TempDir::new("mapfiles-sparse");
    let dir = files.path().to_string_lossy().into_owned();
    let started = Instant::now();
    let (_target, finished) =
        traced_under_nofile_limit(&built, &[&dir, "sparse", &bytes.to_string()]);
    finished.assert_success();
    let report = finished.report();
    assert_site(&report, "leak_round", 1, 96);
    assert_site(&report, "leak_after", 3, 3 * 160);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

/// A copy of EXE in DIR with PATCH applied to its bytes.
fn patched_copy(exe: &Path, dir: &TempDir, patch: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = fs::read(exe).expect("read the Go binary");
    patch(&mut bytes);
    let copy = dir.path().join(exe.file_name().expect("file name"));
    fs::write(&copy, &bytes).expect("write the patched copy");
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).expect("chmod");
    copy
}

/// Where SUB starts in BYTES, at FROM or after; panics when absent.
fn find(bytes: &[u8], from: usize, sub: &[u8]) -> usize {
    bytes[from..]
        .windows(sub.len())
        .position(|w| w == sub)
        .map(|at| from + at)
        .unwrap_or_else(|| panic!("{:?} not found", String::from_utf8_lossy(sub)))
}

/// The cgo target with its `.gopclntab` header corrupt: the pc-value table offset (word 6
/// after the 8-byte prefix) points far past the table. The Go runtime reads its tables
/// through `runtime.moduledata`, not these offsets, so the program runs; leaktrace cannot
/// read the table: it says the goroutines are not traced and still reports the native
/// leaks, named from the binary's DWARF.
#[test]
fn corrupt_gopclntab_still_reports_native_leaks() {
    let built = go_build("cgo", GoBuild::plain(GoToolchain::Recent));
    let dir = TempDir::new("corrupt-gopclntab");
    let exe = patched_copy(&built, &dir, |bytes| {
        // The Go 1.20+ pcHeader: magic, two pad bytes, minLC 1, ptrSize 8.
        let header = find(bytes, 0, &[0xf1, 0xff, 0xff, 0xff, 0, 0, 1, 8]);
        let pctab_offset = header + 8 + 8 * 6;
        bytes[pctab_offset..pctab_offset + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    });
    let run = go_trace_with(
        &exe,
        &[],
        Duration::from_millis(2500),
        &[
            "--format",
            "json",
            "--interval",
            "1s",
            "--min-age",
            "0s",
            "--top",
            "100",
        ],
    );
    run.finished.assert_no_panic();
    assert!(
        run.finished
            .stderr
            .contains("goroutines will not be traced"),
        "{}",
        clip(&run.finished.stderr)
    );
    // Without the Go runtime's tables the walk stops where C was entered from Go
    // (runtime.asmcgocall): the native sites keep their C frames, exactly.
    let report = run.finished.report();
    let ctx = report.describe();
    let leak_c = report.site_with("leak_c");
    assert_eq!(
        (leak_c.outstanding_allocs, leak_c.outstanding_bytes),
        (6, 6 * 5000),
        "{ctx}"
    );
    leak_c.assert_chain(&["malloc", "leak_c"]);
    // C.malloc(3000) x 4, C.malloc(777) x 3 and C.CString (malloc(100)) x 10: cgo's one
    // malloc wrapper.
    let cmalloc: Vec<&Site> = report
        .sites
        .iter()
        .filter(|site| {
            site.frames.iter().any(|f| {
                f.function
                    .as_deref()
                    .is_some_and(|name| name.ends_with("_Cfunc__Cmalloc"))
            })
        })
        .collect();
    let [cmalloc] = cmalloc.as_slice() else {
        panic!("want one site of cgo's malloc wrapper\n{ctx}");
    };
    assert_eq!(
        (cmalloc.outstanding_allocs, cmalloc.outstanding_bytes),
        (4 + 3 + 10, 4 * 3000 + 3 * 777 + 10 * 100),
        "{ctx}"
    );
}

/// The goroutines target with DWARF whose `runtime.g.goid` offset is absurd (16383, far
/// outside `runtime.g`): the DWARF offsets are refused and the table row of the binary's Go
/// version is used, so goroutines read as they are (the 7 of the premature-return leak,
/// blocked in `chan send`).
#[test]
fn absurd_dwarf_offsets_fall_back_to_the_version_table() {
    let built = go_build("goroutines", GoBuild::plain(GoToolchain::Recent));
    let dir = TempDir::new("absurd-dwarf");
    let decompressed = dir.path().join("decompressed");
    let status = Command::new("objcopy")
        .arg("--decompress-debug-sections")
        .arg(&built)
        .arg(&decompressed)
        .status()
        .expect("run objcopy");
    assert!(status.success(), "objcopy --decompress-debug-sections");
    let exe = patched_copy(&decompressed, &dir, |bytes| {
        // Go DWARF names are inline strings; a member's location (ULEB128) follows its name.
        let mut from = 0;
        let g = loop {
            let at = find(bytes, from, b"runtime.g\0");
            if bytes[at - 1] != b'*' {
                break at;
            }
            from = at + 1;
        };
        let location = find(bytes, g, b"goid\0") + 5;
        assert!(
            bytes[location] & 0x80 != 0 && bytes[location + 1] & 0x80 == 0,
            "goid's offset is a two-byte ULEB128"
        );
        bytes[location..location + 2].copy_from_slice(&[0xff, 0x7f]);
    });
    let run = go_trace_with(&exe, &[], Duration::from_millis(2500), GO_TRACER_ARGS);
    run.finished.assert_no_panic();
    let report = run.finished.report();
    let ctx = report.describe();
    let goroutines = report.goroutines();
    let premature =
        goroutines.site_created_at("main.go", go_marked_line("goroutines", "premature-go"));
    assert_eq!(premature.live, 7, "{ctx}");
    assert_eq!(
        premature.states,
        BTreeMap::from([("chan send".to_string(), 7)]),
        "{ctx}"
    );
}
