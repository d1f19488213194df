//! dlopen: a plugin built without frame pointers and loaded after leaktrace attached has full
//! stacks from its very first allocation (its constructor, before dlopen returns), through the
//! dlopen hook on the loader's `_dl_debug_state`; with glibc's loader and with musl's.

use leaktrace_tests::*;

const MUSL_SPECS: &str = "/usr/lib/x86_64-linux-musl/musl-gcc.specs";

/// The host's and the plugin's compiler flags besides the common ones.
fn plugin_leaks_have_full_stacks(libc_flags: &[&str], label: &str) {
    let mut plugin_flags = libc_flags.to_vec();
    plugin_flags.extend(["-O2", "-g", "-fomit-frame-pointer", "-fPIC", "-shared"]);
    let plugin = build_with(
        "dlopen_plugin",
        &format!("libplugin-{label}.so"),
        &plugin_flags,
    );
    let mut host_flags = libc_flags.to_vec();
    host_flags.extend(["-O2", "-g", "-Wall", "-Werror"]);
    let host = build_with("dlopen_host", &format!("dlopen-host-{label}"), &host_flags);

    let plugin_path = plugin.exe.display().to_string();
    let session = trace(
        &host,
        &SessionOpts {
            target_args: &[&plugin_path],
            tracer_args: &["--duration", "2s", "--min-age", "0s", "--format", "json"],
            ..SessionOpts::default()
        },
    );
    let took = session
        .target
        .seen
        .iter()
        .find_map(|l| l.strip_prefix("dlopen_us "))
        .and_then(|us| us.parse::<u64>().ok())
        .expect("the host prints how long dlopen took");
    eprintln!("{label}: dlopen took {took} us while traced");
    let report = session.finished.report();

    // The constructor's leak: plugin frames with lines, the loader's, then the host's.
    let ctor = report.site_with("ctor_leak");
    assert_eq!(
        (ctor.outstanding_bytes, ctor.outstanding_allocs),
        (3 * 1111, 3),
        "{}",
        ctor.describe()
    );
    assert_lines(ctor, &["ctor_leak", "plugin_init"], "dlopen_plugin");
    assert_in_order(ctor, &["ctor_leak", "plugin_init", "load_plugin", "main"]);
    assert_lines(ctor, &["load_plugin", "main"], "dlopen_host");

    let exported = report.site_with("plugin_alloc");
    assert_eq!(
        (exported.outstanding_bytes, exported.outstanding_allocs),
        (4 * 2222, 4),
        "{}",
        exported.describe()
    );
    let names = exported.function_names();
    assert!(
        names[1..].starts_with(&["plugin_alloc", "plugin_leak", "call_plugin", "main"]),
        "{}",
        exported.describe()
    );
    assert_lines(exported, &["plugin_alloc", "plugin_leak"], "dlopen_plugin");
    assert_lines(exported, &["call_plugin"], "dlopen_host");
    assert!(
        took < 500_000,
        "dlopen took {took} us: the stop for the rows costs too much"
    );
}

fn assert_in_order(site: &Site, want: &[&str]) {
    let names = site.function_names();
    let mut at = 0;
    for func in want {
        match names[at..].iter().position(|n| n == func) {
            Some(i) => at += i + 1,
            None => panic!("want {want:?} in this order\n{}", site.describe()),
        }
    }
}

fn assert_lines(site: &Site, funcs: &[&str], target: &str) {
    for func in funcs {
        let frame = site
            .frames
            .iter()
            .find(|f| f.function() == *func)
            .unwrap_or_else(|| panic!("no frame {func}\n{}", site.describe()));
        assert!(
            frame
                .file
                .as_deref()
                .is_some_and(|f| f.ends_with(&format!("{target}.c"))),
            "{func}: file {:?}\n{}",
            frame.file,
            site.describe()
        );
        assert_eq!(
            frame.line,
            Some(u64::from(marked_line(target, func))),
            "{func}\n{}",
            site.describe()
        );
    }
}

#[test]
fn glibc_plugin() {
    plugin_leaks_have_full_stacks(&[], "glibc");
}

#[test]
fn musl_plugin() {
    plugin_leaks_have_full_stacks(&["-specs", MUSL_SPECS], "musl");
}

/// A target that keeps opening and closing the plugin is stopped and continued many times a
/// second; when leaktrace ends, the hook is gone and the target is left running, not stopped.
#[test]
fn target_left_running() {
    let plugin = build_with(
        "dlopen_plugin",
        "libplugin-loop.so",
        &["-O2", "-fomit-frame-pointer", "-fPIC", "-shared"],
    );
    let host = build_with("dlopen_host", "dlopen-host-loop", &["-O2", "-g"]);
    let plugin_path = plugin.exe.display().to_string();
    let session = trace(
        &host,
        &SessionOpts {
            target_args: &[&plugin_path, "loop"],
            tracer_args: &["--duration", "1s", "--format", "json"],
            ..SessionOpts::default()
        },
    );
    session.finished.assert_success();
    let pid = session.target.pid;
    let mut states = Vec::new();
    for _ in 0..20 {
        std::thread::sleep(std::time::Duration::from_millis(10));
        states.push(process_state(pid));
    }
    assert!(
        states
            .iter()
            .all(|s| s.is_some_and(|s| s != 'T' && s != 't')),
        "target {pid} stopped after leaktrace ended: states {states:?}"
    );
}
