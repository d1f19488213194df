//! musl: its libc is built without unwind tables and without frame pointers, so the callers of
//! strdup are found only through rows derived from the machine code (`unwind/prologue.rs`).
//! Dynamic (libc.so is also the loader) and static builds.

use leaktrace_tests::*;

const MUSL_SPECS: &str = "/usr/lib/x86_64-linux-musl/musl-gcc.specs";

fn strdup_reaches_main(exe_name: &str, extra: &[&str]) {
    let mut flags = vec!["-specs", MUSL_SPECS, "-O2", "-g", "-Wall", "-Werror"];
    flags.extend_from_slice(extra);
    let built = build_with("musl_strdup", exe_name, &flags);
    let session = trace(
        &built,
        &SessionOpts {
            tracer_args: &["--duration", "2s", "--min-age", "0s", "--format", "json"],
            ..SessionOpts::default()
        },
    );
    let report = session.finished.report();
    let site = report.site_with("leak_strdup");
    let len = source_len() + 1;
    assert_eq!(
        (site.outstanding_bytes, site.outstanding_allocs),
        (3 * len, 3),
        "{}",
        site.describe()
    );
    let names = site.function_names();
    let at = names.iter().position(|n| *n == "strdup");
    assert!(
        at.is_some_and(|i| names[i + 1..].starts_with(&["leak_strdup", "main"])),
        "want strdup <- leak_strdup <- main\n{}",
        site.describe()
    );
    for func in ["leak_strdup", "main"] {
        let frame = site.frames.iter().find(|f| f.function() == func).unwrap();
        assert_eq!(
            frame.line,
            Some(u64::from(marked_line("musl_strdup", func))),
            "{func}\n{}",
            site.describe()
        );
    }
}

/// strlen of the target's `source`.
fn source_len() -> u64 {
    "ninety-nine bytes are not needed here".len() as u64
}

#[test]
fn musl_dynamic() {
    strdup_reaches_main("musl-dynamic", &[]);
}

#[test]
fn musl_static() {
    strdup_reaches_main("musl-static", &["-static"]);
}
