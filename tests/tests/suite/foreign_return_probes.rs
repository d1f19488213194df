//! Another tracer's return probe on the allocator (bpftrace's `uretprobe:...:malloc`, bcc's
//! memleak, the bench's peer) sits on malloc's first instruction and takes the return address
//! over before leaktrace's entry probe, placed a few instructions further in (jemalloc's malloc
//! starts with a `cmp` the kernel would single-step), reads it. The stacks must still reach
//! `main`: targets/native.c, -O2 without frame pointers, traced by PID with a private copy of
//! libjemalloc preloaded (so the system-wide return probe added through tracefs touches no
//! other process), five runs in a row.

use std::{fs, path::Path};

use leaktrace_tests::*;
use object::{Object, ObjectSection, ObjectSymbol};

const TRACEFS: &str = "/sys/kernel/tracing";
const JEMALLOC: &str = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";

/// tracefs at [`TRACEFS`], mounted for the test where nobody has (a fresh machine), unmounted
/// on drop.
struct Tracefs {
    mounted_here: bool,
}

impl Tracefs {
    fn ensure() -> Tracefs {
        if Path::new(TRACEFS).join("uprobe_events").exists() {
            return Tracefs {
                mounted_here: false,
            };
        }
        let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
        let (source, target) = (c("tracefs"), c(TRACEFS));
        // SAFETY: valid NUL-terminated strings, no mount data.
        let rc = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                source.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mount tracefs on {TRACEFS}: {}",
            std::io::Error::last_os_error()
        );
        Tracefs { mounted_here: true }
    }
}

impl Drop for Tracefs {
    fn drop(&mut self) {
        if self.mounted_here {
            let target = std::ffi::CString::new(TRACEFS).expect("no NUL");
            // SAFETY: a valid NUL-terminated path.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// A return probe through tracefs, removed on drop.
struct ForeignReturnProbe {
    group: String,
    library: String,
}

impl ForeignReturnProbe {
    fn on(library: &Path, offset: u64) -> ForeignReturnProbe {
        let group = format!("leaktrace_test_{}", std::process::id());
        let definition = format!("r:{group}/ret {}:{offset:#x}\n", library.display());
        append(&format!("{TRACEFS}/uprobe_events"), &definition);
        let probe = ForeignReturnProbe {
            group,
            library: library.display().to_string(),
        };
        fs::write(probe.file("enable"), "1").expect("enable the tracefs return probe");
        probe
    }

    fn file(&self, name: &str) -> String {
        format!("{TRACEFS}/events/{}/ret/{name}", self.group)
    }

    /// Times the probe fired (tracefs's uprobe_profile: `path event hits misses`).
    fn hits(&self) -> u64 {
        let profile = fs::read_to_string(format!("{TRACEFS}/uprobe_profile")).expect("profile");
        profile
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .find(|fields| fields.first() == Some(&self.library.as_str()))
            .and_then(|fields| fields.get(2)?.parse().ok())
            .unwrap_or_else(|| panic!("no line for {} in uprobe_profile:\n{profile}", self.library))
    }
}

impl Drop for ForeignReturnProbe {
    fn drop(&mut self) {
        let _ = fs::write(self.file("enable"), "0");
        let removal = format!("-:{}/ret\n", self.group);
        let _ = fs::OpenOptions::new()
            .append(true)
            .open(format!("{TRACEFS}/uprobe_events"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, removal.as_bytes()));
    }
}

fn append(path: &str, line: &str) {
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {path}: {e}"));
    std::io::Write::write_all(&mut file, line.as_bytes())
        .unwrap_or_else(|e| panic!("write {line:?} to {path}: {e}"));
}

/// The file offset of `symbol`'s first instruction in the shared object at `path`.
fn symbol_file_offset(path: &Path, symbol: &str) -> u64 {
    let data = fs::read(path).expect("read the library");
    let file = object::File::parse(&*data).expect("parse the library");
    let sym = file
        .dynamic_symbols()
        .find(|s| s.name() == Ok(symbol))
        .unwrap_or_else(|| panic!("no {symbol} in {}", path.display()));
    let section = file
        .sections()
        .find(|s| (s.address()..s.address() + s.size()).contains(&sym.address()))
        .expect("the symbol's section");
    let (file_start, _) = section.file_range().expect("a section with contents");
    sym.address() - section.address() + file_start
}

/// What targets/return_probed.c leaks: (leak function, its chain up to main, allocs, bytes
/// per alloc).
const LEAKS: &[(&str, &[&str], u64, u64)] = &[
    ("leak_direct", &["leak_direct", "main"], 40, 100),
    ("leak_inner", &["leak_inner", "leak_outer", "main"], 30, 200),
];

#[test]
fn stacks_reach_main_under_another_tracers_return_probe() {
    let dir = TempDir::new("foreign-uretprobe");
    let jemalloc = dir.path().join("libjemalloc.so.2");
    fs::copy(JEMALLOC, &jemalloc).expect("copy libjemalloc");
    let built = build("return_probed", Variant::O2NoFramePointer);
    // Declared before the probe: dropped after it.
    let _tracefs = Tracefs::ensure();
    let probe = ForeignReturnProbe::on(&jemalloc, symbol_file_offset(&jemalloc, "malloc"));
    let preload = jemalloc.to_str().expect("utf-8 path");
    for run in 1..=5 {
        let t = trace_family(&built, &[("LD_PRELOAD", preload)], &["--top", "100"]);
        let report = t.report();
        for &(leak_fn, chain, allocs, each) in LEAKS {
            let site = report.site_with(leak_fn);
            let names = site.function_names();
            assert!(
                names.len() > chain.len() && names[1..=chain.len()] == chain[..],
                "run {run}: want malloc <- {chain:?} at the top of the stack: {}",
                site.describe()
            );
            assert_eq!(
                (site.outstanding_allocs, site.outstanding_bytes),
                (allocs, allocs * each),
                "run {run}: {}",
                site.describe()
            );
        }
        // No leak is charged to a stack cut at malloc.
        assert_eq!(
            report.totals.outstanding_allocs,
            LEAKS.iter().map(|l| l.2).sum::<u64>(),
            "run {run}: {}",
            report.describe()
        );
    }
    // The other tracer's probe did take those return addresses over.
    assert!(probe.hits() >= 5 * 70, "{} hits", probe.hits());
}
