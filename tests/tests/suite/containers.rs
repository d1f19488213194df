//! Targets in a container: their own mount, PID and cgroup namespaces, chrooted into a root on a tmpfs
//! mounted only in that namespace, at paths (`/srv/app-<random>/...`) that do not exist on the
//! host. Attached by host PID, leaktrace must open every file through the target's view and
//! report the exact leaks of targets/contained.c at their marked lines, the host PID and the
//! PID inside. Once with glibc, once with musl (its own dynamic loader copied into the root).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use leaktrace_tests::*;

/// A C library whose loader and libc are copied into the root.
#[derive(Debug, Clone, Copy)]
enum Libc {
    Glibc,
    Musl,
}

impl Libc {
    fn compiler(self) -> &'static str {
        match self {
            Libc::Glibc => "gcc",
            Libc::Musl => "musl-gcc",
        }
    }

    /// `(host file, file name in the root's lib directory)`; the loader comes first.
    fn runtime_files(self, compiler_output: &Path) -> Vec<(PathBuf, String)> {
        match self {
            // musl's libc.so is also its dynamic loader.
            Libc::Musl => vec![(
                PathBuf::from("/lib/ld-musl-x86_64.so.1"),
                "ld-musl-x86_64.so.1".to_owned(),
            )],
            Libc::Glibc => ldd(compiler_output),
        }
    }
}

/// The loader and libraries of EXE as the host resolves them, from `ldd`.
fn ldd(exe: &Path) -> Vec<(PathBuf, String)> {
    let out = Command::new("ldd").arg(exe).output().expect("run ldd");
    assert!(out.status.success(), "ldd {}", exe.display());
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut files: Vec<(PathBuf, String)> = listing
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let (name, path) = match line.split_once("=>") {
                Some((name, rest)) => (name.trim().to_owned(), rest.trim()),
                None => (String::new(), line),
            };
            let path = path.split(" (0x").next()?.trim();
            if !path.starts_with('/') {
                return None;
            }
            let name = if name.is_empty() {
                Path::new(path).file_name()?.to_string_lossy().into_owned()
            } else {
                name
            };
            Some((PathBuf::from(path), name))
        })
        .collect();
    // The loader (the line without `=>`) first.
    files.sort_by_key(|(_, name)| !name.starts_with("ld-"));
    files
}

/// A target running as PID 1 of its own PID namespace, chrooted into a tmpfs root.
struct Container {
    target: Target,
    host_pid: u32,
    /// The executable's path inside the root.
    exe_inside: String,
    /// The tmpfs mount point: an empty directory on the host.
    _mount_point: TempDir,
    _stage: TempDir,
}

fn start_contained(libc: Libc) -> Container {
    let app = format!("/srv/app-{}-{:x}", std::process::id(), rand_bits());
    assert!(!Path::new(&app).exists());
    let stage = TempDir::new("container-stage");
    let lib_dir = format!("{app}/lib");
    let exe_inside = format!("{app}/bin/contained");
    let host_lib = stage.path().join(lib_dir.trim_start_matches('/'));
    let host_exe = stage.path().join(exe_inside.trim_start_matches('/'));
    fs::create_dir_all(&host_lib).expect("lib dir");
    fs::create_dir_all(host_exe.parent().expect("bin dir")).expect("bin dir");

    // A plain build tells which runtime files the host would use.
    let plain = stage.path().join("plain");
    compile(libc, &plain, &[]);
    let files = libc.runtime_files(&plain);
    let loader = format!("{lib_dir}/{}", files[0].1);
    for (host, name) in &files {
        fs::copy(host, host_lib.join(name)).expect("copy runtime file");
    }
    compile(
        libc,
        &host_exe,
        &[
            &format!("-Wl,--dynamic-linker={loader}"),
            &format!("-Wl,-rpath,{lib_dir}"),
        ],
    );

    let mount_point = TempDir::new("container-root");
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--pid",
        "--cgroup",
        "--fork",
        "--kill-child",
        "sh",
        "-c",
    ])
    .arg(r#"mount -t tmpfs tmpfs "$1" && cp -a "$2"/srv "$1"/ && exec chroot "$1" "$3""#)
    .arg("sh")
    .arg(mount_point.path())
    .arg(stage.path())
    .arg(&exe_inside);
    let mut target = Target::spawn_command(cmd);
    target.wait_ready();
    let host_pid = only_child(target.pid);
    Container {
        target,
        host_pid,
        exe_inside,
        _mount_point: mount_point,
        _stage: stage,
    }
}

fn rand_bits() -> u64 {
    let mut buf = [0u8; 8];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .expect("urandom");
    u64::from_le_bytes(buf)
}

fn compile(libc: Libc, out: &Path, extra: &[&str]) {
    let src = target_source("contained");
    let built = Command::new(libc.compiler())
        .args([
            "-O2",
            "-g",
            "-fomit-frame-pointer",
            "-Wall",
            "-Wextra",
            "-Werror",
        ])
        .args(extra)
        .arg("-o")
        .arg(out)
        .arg(&src)
        .output()
        .expect("run the compiler");
    assert!(
        built.status.success(),
        "{} failed:\n{}",
        libc.compiler(),
        String::from_utf8_lossy(&built.stderr)
    );
}

/// The one child of `unshare` (which has become the target by exec).
fn only_child(pid: u32) -> u32 {
    let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .expect("children of unshare");
    let pids: Vec<u32> = children
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert_eq!(pids.len(), 1, "children of unshare {pid}: {children:?}");
    pids[0]
}

fn trace_contained(libc: Libc) -> (Report, Container) {
    trace(start_contained(libc))
}

fn trace(mut container: Container) -> (Report, Container) {
    let mut args: Vec<String> = vec!["--pid".into(), container.host_pid.to_string()];
    args.extend(DEFAULT_TRACER_ARGS.iter().map(|s| s.to_string()));
    let mut tracer = Tracer::start(&args);
    tracer.wait_attached(Duration::from_secs(60));
    container.target.go();
    container.target.wait_done();
    let finished = tracer.wait(Duration::from_secs(60));
    finished.assert_success();
    (finished.report(), container)
}

fn check_contained(libc: Libc) {
    let (report, container) = trace_contained(libc);
    let ctx = report.describe();
    assert_eq!(report.target.pid, u64::from(container.host_pid), "{ctx}");
    assert_eq!(
        report.target.pid_in_namespace,
        Some(1),
        "the target is PID 1 of its namespace\n{ctx}"
    );
    assert!(
        report.target.exe.ends_with(&container.exe_inside),
        "exe {}\n{ctx}",
        report.target.exe
    );
    assert!(
        !Path::new(&report.target.exe).exists(),
        "{} should not exist on the host",
        report.target.exe
    );
    check_leaks(&report);
    // Its cgroup namespace makes its own /proc/self/cgroup read `0::/`; the report names the
    // cgroup as the host sees it and reads usage from the host's cgroupfs.
    let host_view = fs::read_to_string(format!("/proc/{}/cgroup", container.host_pid))
        .expect("cgroup of the target");
    let cgroup = report
        .memory
        .as_ref()
        .and_then(|m| m.cgroup.as_ref())
        .unwrap_or_else(|| panic!("no memory.cgroup\n{ctx}"));
    let (version, path) = memory_cgroup(&host_view);
    assert_eq!(cgroup.path, path, "{ctx}");
    assert_eq!(cgroup.version, version, "{ctx}");
    assert!(cgroup.usage_bytes.is_some_and(|u| u > 0), "{ctx}");
}

/// The exact leaks of targets/contained.c at their marked lines, and nothing else.
fn check_leaks(report: &Report) {
    let ctx = report.describe();
    for (leak_fn, allocs, bytes_each) in [
        ("contained_malloc", 10, 1000),
        ("contained_calloc", 4, 1000),
    ] {
        let site = report.site_with(leak_fn);
        assert_eq!(site.outstanding_allocs, allocs, "{leak_fn}\n{ctx}");
        assert_eq!(
            site.outstanding_bytes,
            allocs * bytes_each,
            "{leak_fn}\n{ctx}"
        );
        let frame = site.frame(leak_fn);
        assert!(
            frame
                .file
                .as_deref()
                .is_some_and(|f| f.ends_with("contained.c")),
            "{leak_fn}: file {:?}\n{ctx}",
            frame.file
        );
        assert_eq!(
            frame.line,
            Some(u64::from(marked_line("contained", leak_fn))),
            "{leak_fn}: line\n{ctx}"
        );
        assert!(site.has_function("main"), "{leak_fn}: no main\n{ctx}");
    }
    let (bytes, allocs) = report.site_sums();
    assert_eq!((bytes, allocs), (14_000, 14), "only the leaks\n{ctx}");
}

/// `(version, path)` of the memory cgroup in a `/proc/PID/cgroup` listing: v1's memory
/// hierarchy when there is one (hybrid hosts), else the v2 one.
fn memory_cgroup(listing: &str) -> (&'static str, String) {
    let fields = |line: &str| {
        let mut it = line.splitn(3, ':');
        let (_, controllers, path) = (it.next()?, it.next()?, it.next()?);
        Some((controllers.to_owned(), path.to_owned()))
    };
    let lines: Vec<(String, String)> = listing.lines().filter_map(fields).collect();
    if let Some((_, path)) = lines
        .iter()
        .find(|(c, _)| c.split(',').any(|c| c == "memory"))
    {
        return ("v1", path.clone());
    }
    let (_, path) = lines
        .iter()
        .find(|(c, _)| c.is_empty())
        .expect("a cgroup v2 line");
    ("v2", path.clone())
}

#[test]
fn glibc_target_in_its_own_root_and_pid_namespace() {
    check_contained(Libc::Glibc);
}

#[test]
fn musl_target_in_its_own_root_and_pid_namespace() {
    check_contained(Libc::Musl);
}

/// A hostile container swaps, once running, every file it mapped for a trap: its executable
/// for an absolute symlink to a host file (`/etc/shadow`, resolved against the host's root by
/// a naive `open(/proc/PID/root/...)`), its loader for a symlink to a host executable, its
/// libc for a FIFO (a naive `open` blocks forever). leaktrace must neither hang nor read them:
/// the mapped files come through their mappings, and the report is as exact as ever.
#[test]
fn a_target_that_swaps_its_files_for_traps_is_read_from_its_mappings() {
    let container = start_contained(Libc::Glibc);
    let root = PathBuf::from(format!("/proc/{}/root", container.host_pid));
    let inside = |path: &str| root.join(path.trim_start_matches('/'));
    let exe = inside(&container.exe_inside);
    let lib_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("app dir")
        .join("lib");
    let mut libs: Vec<PathBuf> = fs::read_dir(&lib_dir)
        .expect("the root's lib dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    libs.sort();
    let swap_for_link = |path: &Path, to: &str| {
        fs::remove_file(path).expect("remove a mapped file");
        std::os::unix::fs::symlink(to, path).expect("symlink");
    };
    swap_for_link(&exe, "/etc/shadow");
    for lib in &libs {
        let name = lib.file_name().map(|n| n.to_string_lossy().into_owned());
        if name.as_deref().is_some_and(|n| n.starts_with("libc.")) {
            fs::remove_file(lib).expect("remove libc");
            let path = std::ffi::CString::new(lib.as_os_str().as_encoded_bytes()).expect("path");
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0, "mkfifo");
        } else {
            swap_for_link(lib, "/usr/bin/true");
        }
    }
    let started = std::time::Instant::now();
    let (report, _container) = trace(container);
    check_leaks(&report);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the run took {:?}",
        started.elapsed()
    );
}
