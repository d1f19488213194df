//! Decoding goroutines from bytes read out of a live Go process (`/proc/PID/mem`): the
//! pointer array at `runtime.allgptr` and each `runtime.g` it points to. The process keeps
//! running while it is read, so a `g` can be caught half-updated: records that fail the
//! checks are dropped rather than reported as garbage.
use super::elf_data::u64_at;
use super::offsets::RuntimeOffsets;
use super::runtime_vars::{G_SCAN, GoroutineLimits};

/// `_Gwaiting`, the same in every Go release.
pub const G_WAITING: u32 = 4;
/// `_Gdead`, the same in every Go release.
pub const G_DEAD: u32 = 6;

/// One goroutine as its `runtime.g` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoroutineRecord {
    pub goid: u64,
    /// `g.atomicstatus` without the scan bit: index into `RuntimeVars::statuses`.
    pub status: u32,
    /// Index into `RuntimeVars::wait_reasons`; meaningful while waiting.
    pub waitreason: u8,
    /// pc just after the `go` statement's call that created the goroutine: look up
    /// `gopc - 1` for its line. Like every pc here, a run-time address: subtract the load
    /// bias of a PIE before looking it up in the file.
    pub gopc: u64,
    /// Entry of the goroutine's function (often a `gowrap`/`funcN` wrapper).
    pub startpc: u64,
    /// Where a goroutine that is not running resumes: the start of its unwind.
    pub sched_pc: u64,
    pub sched_sp: u64,
    pub sched_bp: u64,
    /// The stack, `[stack_lo, stack_hi)`.
    pub stack_lo: u64,
    pub stack_hi: u64,
}

/// How many bytes from the start of a `g` [`decode_goroutine`] needs.
pub fn g_read_len(offsets: &RuntimeOffsets) -> usize {
    let o = offsets;
    // Offsets are checked against the struct's size when read from DWARF; saturating anyway,
    // so that no offsets can make this wrap to a short read.
    let end = [
        o.g_stack_lo.saturating_add(8),
        o.g_stack_hi.saturating_add(8),
        o.g_sched_sp.saturating_add(8),
        o.g_sched_pc.saturating_add(8),
        o.g_sched_bp.saturating_add(8),
        o.g_atomicstatus.saturating_add(4),
        o.g_goid.saturating_add(8),
        o.g_waitreason.saturating_add(1),
        o.g_gopc.saturating_add(8),
        o.g_startpc.saturating_add(8),
    ]
    .into_iter()
    .max()
    .unwrap_or(0);
    usize::try_from(end).unwrap_or(usize::MAX)
}

/// The `*g` pointers of the array at `allgptr` (`allglen` of them, 8 bytes each); nil
/// entries are left out.
pub fn g_pointers(array: &[u8]) -> Vec<u64> {
    array
        .chunks_exact(8)
        .map(|chunk| u64::from_le_bytes(chunk.try_into().unwrap_or_default()))
        .filter(|&ptr| ptr != 0)
        .collect()
}

/// Decodes the `g` whose first bytes are `g` ([`g_read_len`] of them at least). `None`
/// when too short, or when the values cannot belong to one consistent goroutine (a read that
/// raced with the runtime): a status other than the runtime's (the scan bit aside), a zero
/// goid, a stack with `lo >= hi` for a live goroutine, or, for a waiting one, a saved sp
/// outside its stack or an unknown wait reason.
pub fn decode_goroutine(
    g: &[u8],
    offsets: &RuntimeOffsets,
    limits: &GoroutineLimits,
) -> Option<GoroutineRecord> {
    if g.len() < g_read_len(offsets) {
        return None;
    }
    let u64_field = |off: u64| u64_at(g, usize::try_from(off).ok()?);
    let status_off = usize::try_from(offsets.g_atomicstatus).ok()?;
    let raw_status = u32::from_le_bytes(g.get(status_off..status_off + 4)?.try_into().ok()?);
    if raw_status & !(G_SCAN | 0xfff) != 0 {
        return None;
    }
    let status = raw_status & !G_SCAN;
    if status > limits.max_status {
        return None;
    }
    let record = GoroutineRecord {
        goid: u64_field(offsets.g_goid)?,
        status,
        waitreason: *g.get(usize::try_from(offsets.g_waitreason).ok()?)?,
        gopc: u64_field(offsets.g_gopc)?,
        startpc: u64_field(offsets.g_startpc)?,
        sched_pc: u64_field(offsets.g_sched_pc)?,
        sched_sp: u64_field(offsets.g_sched_sp)?,
        sched_bp: u64_field(offsets.g_sched_bp)?,
        stack_lo: u64_field(offsets.g_stack_lo)?,
        stack_hi: u64_field(offsets.g_stack_hi)?,
    };
    if record.goid == 0 {
        return None;
    }
    // Dead goroutines may have given their stack back; every other one has one.
    if record.status != G_DEAD && record.stack_lo >= record.stack_hi {
        return None;
    }
    if record.status == G_WAITING {
        if !(record.stack_lo..record.stack_hi).contains(&record.sched_sp) {
            return None;
        }
        if limits.wait_reasons != 0 && usize::from(record.waitreason) >= limits.wait_reasons {
            return None;
        }
    }
    Some(record)
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::FileExt;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use object::{Object, ObjectSegment};

    use super::*;
    use crate::golang::buildinfo;
    use crate::golang::runtime_vars::{RuntimeVars, Source};
    use crate::golang::symbols::GoSymbols;
    use crate::golang::testutil::{self, Program, TOOLCHAINS, Toolchain, Variant};

    const LIMITS: GoroutineLimits = GoroutineLimits {
        max_status: 11,
        wait_reasons: 47,
    };

    fn offsets() -> RuntimeOffsets {
        let version = buildinfo::GoVersion::parse("go1.27.3").unwrap();
        RuntimeOffsets::for_version(&version).unwrap()
    }

    /// A waiting goroutine's `g` as the 1.27 layout has it.
    fn waiting_g(offsets: &RuntimeOffsets) -> Vec<u8> {
        let mut g = vec![0u8; g_read_len(offsets)];
        let mut put = |off: u64, value: u64| {
            let off = off as usize;
            g[off..off + 8].copy_from_slice(&value.to_le_bytes());
        };
        put(offsets.g_stack_lo, 0xc000_1000);
        put(offsets.g_stack_hi, 0xc000_3000);
        put(offsets.g_sched_sp, 0xc000_2f00);
        put(offsets.g_sched_pc, 0x40_1234);
        put(offsets.g_sched_bp, 0xc000_2f40);
        put(offsets.g_goid, 42);
        put(offsets.g_gopc, 0x40_5678);
        put(offsets.g_startpc, 0x40_9000);
        let status = offsets.g_atomicstatus as usize;
        g[status..status + 4].copy_from_slice(&(G_SCAN | G_WAITING).to_le_bytes());
        g[offsets.g_waitreason as usize] = 19;
        g
    }

    #[test]
    fn decodes_fields_and_masks_the_scan_bit() {
        let offsets = offsets();
        let g = waiting_g(&offsets);
        assert_eq!(
            decode_goroutine(&g, &offsets, &LIMITS),
            Some(GoroutineRecord {
                goid: 42,
                status: G_WAITING,
                waitreason: 19,
                gopc: 0x40_5678,
                startpc: 0x40_9000,
                sched_pc: 0x40_1234,
                sched_sp: 0xc000_2f00,
                sched_bp: 0xc000_2f40,
                stack_lo: 0xc000_1000,
                stack_hi: 0xc000_3000,
            })
        );
    }

    #[test]
    fn torn_reads_are_rejected() {
        let offsets = offsets();
        let good = waiting_g(&offsets);
        let set = |off: u64, bytes: &[u8]| {
            let mut g = good.clone();
            g[off as usize..off as usize + bytes.len()].copy_from_slice(bytes);
            decode_goroutine(&g, &offsets, &LIMITS)
        };
        assert!(decode_goroutine(&good[..good.len() - 1], &offsets, &LIMITS).is_none());
        assert!(set(offsets.g_goid, &0u64.to_le_bytes()).is_none());
        // Statuses past the version's last one, or with bits the runtime never sets.
        assert!(set(offsets.g_atomicstatus, &12u32.to_le_bytes()).is_none());
        assert!(set(offsets.g_atomicstatus, &0x2004u32.to_le_bytes()).is_none());
        let old = GoroutineLimits {
            max_status: 9,
            wait_reasons: 27,
        };
        let mut leaked = good.clone();
        let status = offsets.g_atomicstatus as usize;
        leaked[status..status + 4].copy_from_slice(&10u32.to_le_bytes());
        assert!(decode_goroutine(&leaked, &offsets, &LIMITS).is_some());
        assert!(decode_goroutine(&leaked, &offsets, &old).is_none());
        // A waiting goroutine's sp outside its stack, or an unknown reason.
        assert!(set(offsets.g_sched_sp, &0xc000_3000u64.to_le_bytes()).is_none());
        assert!(set(offsets.g_sched_sp, &0xc000_0fffu64.to_le_bytes()).is_none());
        assert!(set(offsets.g_waitreason, &[47]).is_none());
        assert!(decode_goroutine(&good, &offsets, &old).is_some());
        // A live goroutine without a stack; a dead one may have none.
        let no_stack = set(offsets.g_stack_hi, &0u64.to_le_bytes());
        assert!(no_stack.is_none());
        let mut dead = good.clone();
        dead[status..status + 4].copy_from_slice(&G_DEAD.to_le_bytes());
        dead[offsets.g_stack_lo as usize..offsets.g_stack_lo as usize + 16].fill(0);
        assert_eq!(
            decode_goroutine(&dead, &offsets, &LIMITS).map(|g| g.status),
            Some(G_DEAD)
        );
    }

    #[test]
    fn g_pointers_skip_nil_entries() {
        let mut array = Vec::new();
        for ptr in [0xc000_0001u64, 0, 0xc000_0002] {
            array.extend_from_slice(&ptr.to_le_bytes());
        }
        array.push(0xff); // a partial entry is ignored
        assert_eq!(g_pointers(&array), [0xc000_0001, 0xc000_0002]);
    }

    /// How many goroutines [`PARKED_MAIN`] parks on its channel.
    const PARKED: usize = 7;
    /// Line of `go park(ch, ready)` in [`PARKED_MAIN`].
    fn go_line() -> u32 {
        let index = PARKED_MAIN
            .lines()
            .position(|line| line.trim() == "go park(ch, ready)")
            .unwrap();
        index as u32 + 1
    }

    /// Parks [`PARKED`] goroutines on a channel receive, then prints `HeapInuse` (after a GC,
    /// so no sweeping changes it later) and sleeps. `time.Sleep` runs once before the
    /// reading so that the timer it allocates is not allocated after.
    const PARKED_MAIN: &str = include_str!("testdata/parked.go");

    const PARKED_PROGRAM: Program = Program {
        name: "parked",
        files: &[("main.go", PARKED_MAIN)],
    };

    /// The child is killed when the test ends, however it ends.
    struct Running(Child);

    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// What the test program's executable is mapped at minus its link-time address.
    fn load_bias(pid: u32, elf: &[u8]) -> u64 {
        let file = object::File::parse(elf).unwrap();
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
        for line in maps.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 6 || std::path::Path::new(fields[5]) != exe {
                continue;
            }
            let start = u64::from_str_radix(fields[0].split('-').next().unwrap(), 16).unwrap();
            let offset = u64::from_str_radix(fields[2], 16).unwrap();
            for segment in file.segments() {
                let (seg_offset, seg_size) = segment.file_range();
                if (seg_offset..seg_offset + seg_size).contains(&offset) {
                    return start - (segment.address() + (offset - seg_offset));
                }
            }
        }
        panic!("{} not mapped in {pid}", exe.display());
    }

    fn read_mem(mem: &std::fs::File, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        mem.read_exact_at(&mut buf, addr)
            .unwrap_or_else(|e| panic!("read {len} bytes at {addr:#x}: {e}"));
        buf
    }

    /// Every goroutine of the process, as decoded; `None` for torn ones.
    fn snapshot(
        mem: &std::fs::File,
        vars: &RuntimeVars,
        offsets: &RuntimeOffsets,
        bias: u64,
    ) -> Vec<Option<GoroutineRecord>> {
        let limits = vars.goroutine_limits().unwrap();
        let len = u64_at(&read_mem(mem, vars.allglen.unwrap() + bias, 8), 0).unwrap();
        let ptr = u64_at(&read_mem(mem, vars.allgptr.unwrap() + bias, 8), 0).unwrap();
        assert!((1..100_000).contains(&len), "allglen {len}");
        let array = read_mem(mem, ptr, len as usize * 8);
        g_pointers(&array)
            .into_iter()
            .map(|g| decode_goroutine(&read_mem(mem, g, g_read_len(offsets)), offsets, &limits))
            .collect()
    }

    /// Runs the test program built as `variant` and checks what its memory says through
    /// the variables and the layout found in its file alone.
    fn check_live(toolchain: Toolchain, variant: Variant) {
        let path = testutil::build_program(&PARKED_PROGRAM, toolchain, variant);
        let elf = testutil::read(&path);
        let version = buildinfo::go_version(&elf).unwrap();
        let vars = RuntimeVars::for_binary(&elf, &version).unwrap();
        let (offsets, _) = RuntimeOffsets::for_binary(&elf).unwrap();
        let symbols = GoSymbols::open(&elf).unwrap();
        if variant != Variant::Plain {
            assert_eq!(vars.sources.allg, Some(Source::Code));
        }

        let mut child = Running(
            Command::new(&path)
                .stdout(Stdio::piped())
                .spawn()
                .expect("start the test program"),
        );
        let mut line = String::new();
        BufReader::new(child.0.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let heap_inuse: u64 = line.trim().parse().expect("HeapInuse printed");
        let pid = child.0.id();
        let bias = load_bias(pid, &elf);
        if variant == Variant::PieStripped {
            assert_ne!(bias, 0);
        }
        let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();

        // The runtime's own counter, read racily, is what ReadMemStats reported: nothing
        // allocates a span after it.
        let heap = vars.heap_inuse.unwrap();
        let read = read_mem(&mem, heap.field_addr() + bias, usize::from(heap.size));
        assert_eq!(
            heap.decode(&read),
            Some(heap_inuse),
            "{toolchain:?} {variant:?}"
        );

        // The parked goroutines may still be on their way from `ready <- true` to `<-ch`,
        // and main (goroutine 1) from its write to its sleep.
        let waiting_on = |g: &GoroutineRecord, reason: &str| {
            vars.status(g.status) == Some("waiting")
                && vars.wait_reason(g.waitreason) == Some(reason)
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let (goroutines, parked) = loop {
            let goroutines = snapshot(&mem, &vars, &offsets, bias);
            let parked: Vec<GoroutineRecord> = goroutines
                .iter()
                .flatten()
                .filter(|g| waiting_on(g, "chan receive"))
                .copied()
                .collect();
            let main_sleeps = goroutines
                .iter()
                .flatten()
                .any(|g| g.goid == 1 && waiting_on(g, "sleep"));
            if (parked.len() == PARKED && main_sleeps) || Instant::now() > deadline {
                break (goroutines, parked);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let context = format!("{toolchain:?} {variant:?}: {goroutines:#x?}");
        assert_eq!(parked.len(), PARKED, "{context}");
        // A quiet process: no torn read.
        assert!(goroutines.iter().all(Option::is_some), "{context}");
        let goroutines: Vec<GoroutineRecord> = goroutines.into_iter().flatten().collect();
        let mut goids: Vec<u64> = goroutines.iter().map(|g| g.goid).collect();
        goids.sort_unstable();
        goids.dedup();
        assert_eq!(goids.len(), goroutines.len(), "{context}");

        // pcs in a g are run-time addresses; the symbols are at link-time ones.
        for g in &parked {
            let created = symbols.lookup(g.gopc - bias - 1).unwrap();
            assert_eq!(created.function, "main.main", "{context}");
            assert!(created.file.unwrap().ends_with("/main.go"));
            assert_eq!(created.line, Some(go_line()), "{context}");
            // startpc is a function's entry (a wrapper of `park` or `park` itself).
            let start = symbols.lookup(g.startpc - bias).unwrap();
            assert_eq!(start.entry, g.startpc - bias);
            assert!(start.function.starts_with("main."), "{}", start.function);
            // Parked in the runtime, on its own stack.
            assert!((g.stack_lo..g.stack_hi).contains(&g.sched_sp));
            let parked_in = symbols.lookup(g.sched_pc - bias).unwrap();
            assert!(parked_in.function.starts_with("runtime."), "{parked_in:?}");
        }
        // main sleeps, goroutine 1.
        let main = goroutines.iter().find(|g| g.goid == 1).unwrap();
        assert_eq!(vars.status(main.status), Some("waiting"), "{context}");
        assert_eq!(
            vars.wait_reason(main.waitreason),
            Some("sleep"),
            "{context}"
        );
    }

    /// The whole chain on a real process for each toolchain: variables and names from the
    /// file (`.symtab`, or code for the stripped builds, PIE included), goroutines decoded
    /// from `/proc/PID/mem`. Needs to read another process's memory (root, or ptrace rights).
    #[test]
    fn live_process_parked_goroutines_and_heap_inuse() {
        for toolchain in TOOLCHAINS {
            for variant in [Variant::Plain, Variant::Stripped, Variant::PieStripped] {
                check_live(toolchain, variant);
            }
        }
    }
}
