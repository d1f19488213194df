//! Debian's `redis-server` (stripped, on the shared libjemalloc, its functions exported in
//! `.dynsym`) traced by PID under load: sites must name redis's own functions below the
//! allocator, reach `main`, and count the keys a `DEBUG POPULATE` left behind.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use leaktrace_tests::*;

const REDIS_SERVER: &str = "/usr/bin/redis-server";
/// Keys `DEBUG POPULATE` creates while traced, each with a 100-byte value.
const POPULATED_KEYS: u64 = 5000;
/// Allocator entry points a redis site may name (jemalloc's API besides the standard ones).
const JEMALLOC_API: &[&str] = &["mallocx", "rallocx", "xallocx"];

/// A redis-server on a loopback port in its own directory, killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl RedisServer {
    fn start() -> RedisServer {
        assert!(
            Path::new(REDIS_SERVER).is_file(),
            "{REDIS_SERVER} is missing: run `cargo xtask setup` (it installs redis-server)"
        );
        let dir = TempDir::new("redis");
        let port = free_port();
        let child = Command::new(REDIS_SERVER)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--enable-debug-command", "local"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {REDIS_SERVER}: {e}"));
        let server = RedisServer {
            child,
            port,
            _dir: dir,
        };
        server.wait_ping(Duration::from_secs(10));
        server
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli (redis-tools)");
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn wait_ping(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let pong = Command::new("redis-cli")
                .args(["-p", &self.port.to_string(), "ping"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG");
            if pong {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }

    fn benchmark(&self, args: &[&str]) {
        let out = Command::new("redis-benchmark")
            .args(["-p", &self.port.to_string(), "-q"])
            .args(args)
            .output()
            .expect("run redis-benchmark (redis-tools)");
        assert!(out.status.success(), "redis-benchmark {args:?}: {out:?}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

/// One traced run: SET/GET load, long-lived keys from redis-benchmark and DEBUG POPULATE, then
/// the final report after SIGINT.
fn traced_redis() -> (Report, String) {
    let server = RedisServer::start();
    let pid = server.pid().to_string();
    let mut tracer = Tracer::start(&[
        "--pid",
        pid.as_str(),
        "--format",
        "json",
        "--interval",
        "1s",
        "--min-age",
        "0s",
        "--top",
        "200",
    ]);
    tracer.wait_attached(ATTACH_TIMEOUT);
    server.benchmark(&["-n", "20000", "-t", "set,get"]);
    server.benchmark(&["-n", "5000", "-t", "set", "-r", "100000", "-d", "100"]);
    assert_eq!(
        server.cli(&[
            "debug",
            "populate",
            &POPULATED_KEYS.to_string(),
            "populated",
            "100"
        ]),
        "OK"
    );
    thread::sleep(Duration::from_millis(1500));
    tracer.signal(libc::SIGINT);
    let finished = tracer.wait(FINISH_GRACE);
    finished.assert_success();
    (finished.report(), finished.stderr)
}

#[test]
fn redis_sites_name_redis_functions_below_the_allocator() {
    let (r, _stderr) = traced_redis();
    let ctx = r.describe();
    assert_eq!(r.allocator.name, "jemalloc", "{:?}", r.allocator);
    assert!(!r.sites.is_empty(), "no sites\n{ctx}");
    for site in &r.sites {
        assert!(
            ALLOCATORS.contains(&site.allocator.as_str())
                || JEMALLOC_API.contains(&site.allocator.as_str()),
            "allocator {:?}: {}",
            site.allocator,
            site.describe()
        );
        assert_eq!(
            site.frames[0].function(),
            site.allocator,
            "frames[0] is the entry point: {}",
            site.describe()
        );
    }
    // The memory of the populated keys: created by debugCommand, through redis's own object and
    // string code, called from the command loop that main runs.
    let populated: Vec<&Site> = r.sites_with("debugCommand");
    let allocs: u64 = populated.iter().map(|s| s.outstanding_allocs).sum();
    assert!(
        allocs >= 2 * POPULATED_KEYS,
        "{POPULATED_KEYS} keys of 100 bytes hold at least a value object and its string each; \
         debugCommand sites hold {allocs} allocations\n{ctx}"
    );
    for site in &populated {
        site.assert_chain(&["debugCommand", "call", "processCommand", "main"]);
        let caller = &site.frames[1];
        // Debian's redis-server is a link to redis-check-rdb: the module is the executable
        // as the target runs it.
        assert_eq!(
            caller.module.as_deref(),
            Some(r.target.exe.as_str()),
            "frames[1] must be redis's own code (the stack does not stop at the allocator): {}",
            site.describe()
        );
    }
    let named = |f: &str| populated.iter().any(|s| s.has_function(f));
    assert!(
        named("createStringObject") || named("createRawStringObject") || named("createObject"),
        "no redis object constructor among the debugCommand sites\n{ctx}"
    );
    assert!(
        named("sdsnewlen") || named("_sdsnewlen"),
        "no sdsnewlen among the debugCommand sites\n{ctx}"
    );
    assert!(
        named("zmalloc") || named("ztrymalloc_usable") || named("zmalloc_usable"),
        "no zmalloc among the debugCommand sites\n{ctx}"
    );
}
