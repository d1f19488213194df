//! One fuzz target per parser family. Each checks only that the parser returns (an error is
//! fine) without panicking and in bounded time; what it returns is exercised further where
//! leaktrace uses it (lookups, decoding).
use std::io::Cursor;

use procfs::{
    FromBufRead,
    process::{MemoryMaps, MountInfos, Status},
};

use super::{Seed, fuzz, seeds};
use crate::{
    golang::{
        buildinfo::{self, GoVersion},
        goroutines::{decode_goroutine, g_read_len},
        heap_profile::{self, TargetMemory, layout::BucketLayout, locate::ProfileVars},
        offsets::RuntimeOffsets,
        probes::GoProbes,
        runtime_vars::{GoroutineLimits, RuntimeVars},
        symbols::GoSymbols,
    },
    oom::{kmsg, tracepoint::MarkVictimLayout},
    tracee::probe_site,
    unwind::table,
};

/// Pcs looked up per parsed table: spread over the functions the seed table has.
const LOOKUPS: usize = 64;

/// `.eh_frame` and `.eh_frame_hdr` rows (gimli) of a C program and libc, and their ELF
/// headers.
#[test]
fn fuzz_eh_frame_rows() {
    let objects = seeds::native_objects();
    let mut seeds = seeds::sections(&objects, &[".eh_frame", ".eh_frame_hdr"]);
    seeds.extend(seeds::elf_headers(&objects[..1]));
    fuzz("eh_frame_rows", &seeds, |elf| {
        let _ = table::build_rows(elf);
    });
}

/// What the allocator lookup reads of an ELF file: symbols, dynamic section, interpreter,
/// program headers, the code where probes go. Through a real file, as leaktrace opens them.
#[test]
fn fuzz_elf_object() {
    let objects = seeds::native_objects();
    let mut seeds = seeds::elf_headers(&objects);
    seeds.extend(seeds::sections(
        &objects,
        &[".dynsym", ".dynstr", ".dynamic", ".symtab", ".interp"],
    ));
    let dir = std::env::temp_dir().join(format!("leaktrace-fuzz-elf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    let path = dir.join("object");
    fuzz("elf_object", &seeds, |elf| {
        std::fs::write(&path, elf).expect("write scratch file");
        let Ok(object) = crate::tracee::elf::ElfObject::open(&path) else {
            return;
        };
        let wanted = |name: &str| name.contains("alloc") || name == "free" || name == "main";
        for function in object.functions(wanted) {
            // Where the allocator lookup would place its probe: decodes the function's code.
            let code = object.bytes_at(function.offset, function.size.max(64));
            let _ = probe_site::place(code, function.offset, &[0, 1, 5]);
        }
        let _ = (object.soname(), object.needed(), object.interpreter());
        let _ = (
            object.entry_offset(),
            object.is_go(),
            object.load_segments(),
        );
        let _ = object.bytes_at(u64::MAX - 1, u64::MAX);
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// `.gopclntab`, moduledata, inline trees and `.symtab` of Go binaries, then lookups.
#[test]
fn fuzz_go_symbols() {
    let binaries = seeds::go_binaries();
    let pcs = lookup_pcs(&binaries);
    let mut seeds = seeds::sections(
        &binaries,
        &[".gopclntab", ".noptrdata", ".data.rel.ro", ".rodata"],
    );
    seeds.extend(seeds::elf_headers(&binaries[..1]));
    fuzz("go_symbols", &seeds, |elf| {
        let Ok(symbols) = GoSymbols::open(elf) else {
            return;
        };
        for &pc in &pcs {
            let _ = symbols.frames(pc);
            let _ = (symbols.lookup(pc), symbols.has_lines(pc));
        }
        let _ = symbols.function("main.leaky");
        let _ = symbols.functions().count();
    });
}

/// Where the goroutine probes go: runtime functions found through the table and `.symtab`,
/// their code decoded for return sites and emulable entries.
#[test]
fn fuzz_go_probes() {
    let binaries = seeds::go_binaries();
    let seeds = seeds::sections(&binaries, &[".symtab", ".gopclntab", ".text"]);
    fuzz("go_probes", &seeds, |elf| {
        let _ = GoProbes::for_binary(elf);
    });
}

/// `.go.buildinfo`: version and settings.
#[test]
fn fuzz_go_buildinfo() {
    let binaries = seeds::go_binaries();
    let seeds = seeds::sections(&binaries, &[".go.buildinfo", ".rodata"]);
    fuzz("go_buildinfo", &seeds, |elf| {
        let _ = buildinfo::read(elf);
    });
}

/// Struct member offsets from Go DWARF, as goroutine reads use them.
#[test]
fn fuzz_go_dwarf_offsets() {
    let binaries = uncompressed_dwarf(seeds::go_binaries());
    let seeds = seeds::sections(&binaries, &[".debug_info", ".debug_abbrev", ".debug_str"]);
    fuzz("go_dwarf_offsets", &seeds, |elf| {
        if let Ok(offsets) = RuntimeOffsets::from_dwarf(elf) {
            decode_with(&offsets);
        }
    });
}

/// Runtime variables (allgs, gcController, wait reason names) from `.symtab`, the
/// disassembly of runtime functions and `.data`.
#[test]
fn fuzz_go_runtime_vars() {
    let binaries = seeds::go_binaries();
    let version = GoVersion::parse("go1.27").expect("version");
    let seeds = seeds::sections(&binaries, &[".symtab", ".gopclntab", ".rodata", ".data"]);
    fuzz("go_runtime_vars", &seeds, |elf| {
        let Ok(vars) = RuntimeVars::for_binary(elf, &version) else {
            return;
        };
        let _ = (vars.wait_reason(u8::MAX), vars.status(u32::MAX));
        let _ = vars.goroutine_limits();
    });
}

/// A `g` as read from the target: any bytes, decoded with real offsets.
#[test]
fn fuzz_goroutine_decode() {
    let version = GoVersion::parse("go1.27").expect("version");
    let offsets = RuntimeOffsets::for_version(&version).expect("table row");
    let len = g_read_len(&offsets);
    let limits = GoroutineLimits {
        max_status: 9,
        wait_reasons: 47,
    };
    // A waiting goroutine: status 4, goid 7, a stack, sp inside it.
    let mut waiting = vec![0u8; len];
    let mut put = |at: u64, value: u64, width: usize| {
        let at = usize::try_from(at).expect("small offset");
        waiting[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
    };
    put(offsets.g_atomicstatus, 4, 4);
    put(offsets.g_goid, 7, 8);
    put(offsets.g_stack_lo, 0xc000_0000, 8);
    put(offsets.g_stack_hi, 0xc000_8000, 8);
    put(offsets.g_sched_sp, 0xc000_4000, 8);
    put(offsets.g_waitreason, 2, 1);
    let seeds = [Seed::whole("waiting-g", waiting)];
    fuzz("goroutine_decode", &seeds, |g| {
        let _ = decode_goroutine(g, &offsets, &limits);
    });
}

/// The Go heap profile's bucket list as read from the target: any bytes mapped at
/// [`BUCKETS_BASE`], walked from there with the real layouts.
#[test]
fn fuzz_go_heap_buckets() {
    let layouts: Vec<BucketLayout> = ["go1.19.8", "go1.27.3"]
        .iter()
        .filter_map(|raw| GoVersion::parse(raw))
        .filter_map(|version| BucketLayout::for_binary(b"", &version))
        .map(|(layout, _)| layout)
        .collect();
    assert_eq!(layouts.len(), 2);
    let seeds: Vec<Seed> = layouts
        .iter()
        .map(|layout| {
            Seed::whole(
                format!("{}-byte-cycles", layout.cycle.size),
                bucket_list(layout),
            )
        })
        .collect();
    fuzz("go_heap_buckets", &seeds, |bytes| {
        let memory = FakeMemory(bytes);
        for layout in &layouts {
            let _ = heap_profile::read_buckets(&memory, layout, BUCKETS_BASE);
        }
    });
}

/// Where [`fuzz_go_heap_buckets`] maps its input.
const BUCKETS_BASE: u64 = 0x10000;

struct FakeMemory<'a>(&'a [u8]);

impl TargetMemory for FakeMemory<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let unmapped = || std::io::Error::from_raw_os_error(libc::EIO);
        let start = usize::try_from(addr.checked_sub(BUCKETS_BASE).ok_or_else(unmapped)?)
            .map_err(|_| unmapped())?;
        let end = start.checked_add(buf.len()).ok_or_else(unmapped)?;
        buf.copy_from_slice(self.0.get(start..end).ok_or_else(unmapped)?);
        Ok(())
    }
}

/// Two memory-profile buckets of 3 PCs each, the first linking to the second.
fn bucket_list(layout: &BucketLayout) -> Vec<u8> {
    let one = layout.header_size + 3 * 8 + layout.record_size();
    let mut bytes = vec![0u8; usize::try_from(2 * one).expect("small")];
    let mut put = |at: u64, value: u64| {
        let at = usize::try_from(at).expect("small");
        bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
    };
    for (i, next) in [(0, BUCKETS_BASE + one), (one, 0)] {
        put(i + layout.allnext, next);
        put(i + layout.typ, 1);
        put(i + layout.size, 64);
        put(i + layout.nstk, 3);
        put(i + layout.header_size + 3 * 8 + layout.active, 5);
    }
    bytes
}

/// Where a Go binary keeps its heap profile (`.symtab`, else decoded runtime code).
#[test]
fn fuzz_go_heap_profile_vars() {
    let binaries = seeds::go_binaries();
    let seeds = seeds::sections(&binaries, &[".symtab", ".gopclntab", ".text"]);
    fuzz("go_heap_profile_vars", &seeds, |elf| {
        let _ = ProfileVars::locate(elf);
    });
}

/// `/dev/kmsg` records and their assembly into OOM kill events.
#[test]
fn fuzz_kmsg() {
    let seeds: Vec<Seed> = [
        "oom/testdata/kmsg-6.18-dict.txt",
        "oom/testdata/kmsg-6.18-memcg-kill.txt",
        "oom/testdata/kmsg-6.18-memcg-ratelimited.txt",
    ]
    .into_iter()
    .map(|name| Seed::whole(name, seeds::testdata(name)))
    .collect();
    fuzz("kmsg", &seeds, |raw| {
        let text = String::from_utf8_lossy(raw);
        for record in text.split('\n') {
            let _ = kmsg::KmsgRecord::parse(record.as_bytes());
        }
        if let Ok(records) = kmsg::parse_stream(&text) {
            let _ = kmsg::assemble(&records);
        }
    });
}

/// The `mark_victim` tracepoint's format file, and records decoded with it.
#[test]
fn fuzz_tracepoint_format() {
    let format = seeds::testdata("oom/testdata/mark_victim-format-6.18.txt");
    let record = seeds::testdata("oom/testdata/mark_victim-record-6.18.bin");
    let layout = MarkVictimLayout::parse(&String::from_utf8_lossy(&format)).expect("layout");
    let seeds = [Seed::whole("format", format)];
    let check_record = record.clone();
    fuzz("tracepoint_format", &seeds, |text| {
        if let Ok(layout) = MarkVictimLayout::parse(&String::from_utf8_lossy(text)) {
            let _ = layout.fixed_size();
            let _ = layout.decode(&check_record);
        }
    });
    fuzz(
        "tracepoint_record",
        &[Seed::whole("record", record)],
        |raw| {
            let _ = layout.decode(raw);
        },
    );
}

/// `/proc` files the target shapes (its name, its paths, its cgroup), through procfs.
#[test]
fn fuzz_proc_files() {
    let dir = "memory/testdata/v1-6.18";
    let own_maps = std::fs::read("/proc/self/maps").expect("own maps");
    let seeds = vec![
        Seed::whole("status", seeds::testdata(&format!("{dir}/proc-pid-status"))),
        Seed::whole("cgroup", seeds::testdata(&format!("{dir}/proc-pid-cgroup"))),
        Seed::whole(
            "mountinfo",
            seeds::testdata(&format!("{dir}/proc-self-mountinfo")),
        ),
        Seed::whole("maps", own_maps),
    ];
    fuzz("proc_files", &seeds, |raw| {
        let _ = Status::from_buf_read(Cursor::new(raw));
        let _ = procfs::ProcessCGroups::from_buf_read(Cursor::new(raw));
        let _ = MountInfos::from_buf_read(Cursor::new(raw));
        let _ = MemoryMaps::from_buf_read(Cursor::new(raw));
    });
}

/// Goroutine decoding with offsets a (fuzzed) DWARF gave: reads stay inside the `g`.
fn decode_with(offsets: &RuntimeOffsets) {
    let len = g_read_len(offsets);
    let limits = GoroutineLimits {
        max_status: 9,
        wait_reasons: 0,
    };
    let g = vec![0u8; len.min(1 << 16)];
    let _ = decode_goroutine(&g, offsets, &limits);
}

/// Copies of the binaries with DWARF decompressed (Go compresses it), so that mutations
/// reach the DWARF parser rather than zlib; binaries without DWARF are left out.
fn uncompressed_dwarf(binaries: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    let dir = std::env::temp_dir().join(format!("leaktrace-fuzz-dwarf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    binaries
        .into_iter()
        .filter_map(|(name, bytes)| {
            let (input, output) = (dir.join(&name), dir.join(format!("{name}.plain")));
            std::fs::write(&input, &bytes).ok()?;
            let status = std::process::Command::new("objcopy")
                .arg("--decompress-debug-sections")
                .arg(&input)
                .arg(&output)
                .status()
                .ok()?;
            let plain = std::fs::read(&output).ok()?;
            (status.success() && RuntimeOffsets::from_dwarf(&plain).is_ok())
                .then(|| (format!("{name}-plain-dwarf"), plain))
        })
        .collect()
}

/// Pcs spread over the Go functions of the first binary (entries and middles).
fn lookup_pcs(binaries: &[(String, Vec<u8>)]) -> Vec<u64> {
    let symbols = GoSymbols::open(&binaries[0].1).expect("seed parses");
    let functions: Vec<(u64, u64)> = symbols
        .functions()
        .map(|(_, entry, size)| (entry, size))
        .collect();
    let step = (functions.len() / LOOKUPS).max(1);
    functions
        .iter()
        .step_by(step)
        .flat_map(|&(entry, size)| [entry, entry + size / 2])
        .collect()
}

/// The reachability scan's reading of target memory: a block table and a memory image (as the
/// target's heap has them: blocks with headers between them, pointers to starts and middles),
/// parsed as `(count, [address, size] * count, memory at the first block)`. Every block a word
/// is said to point into contains it; the root gaps never overlap a block.
#[test]
fn fuzz_reachability_graph() {
    use crate::reachability::graph::{Block, Graph};
    let base: u64 = 0x55d0_c1e9_d2a0;
    let blocks: Vec<(u64, u64)> = (0..12).map(|i| (base + i * 1040, 1024)).collect();
    let mut seed = vec![blocks.len() as u8];
    for (address, size) in &blocks {
        seed.extend(address.to_le_bytes());
        seed.extend(size.to_le_bytes());
    }
    for i in 0..(12 * 1040 / 8) as u64 {
        let word = match i % 7 {
            0 => base + (i * 8) % (12 * 1040),
            3 => base + 64,
            5 => 1041 | 1,
            _ => 0x0101_0101_0101_0101,
        };
        seed.extend(word.to_le_bytes());
    }
    fuzz(
        "reachability_graph",
        &[Seed::whole("heap", seed)],
        |input| {
            let Some((&count, rest)) = input.split_first() else {
                return;
            };
            let table_len = (usize::from(count) * 16).min(rest.len() / 16 * 16);
            let (table, memory) = rest.split_at(table_len);
            let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
            let blocks: Vec<Block> = table
                .chunks_exact(16)
                .map(|pair| Block {
                    address: word(&pair[..8]),
                    size: word(&pair[8..]),
                    stack_id: 1,
                    timestamp_ns: 0,
                })
                .collect();
            let at = blocks.first().map_or(0, |b| b.address);
            let graph = Graph::new(blocks);
            graph.each_pointer(at, memory, |i| {
                let b = &graph.blocks[i];
                assert!(b.size > 0 && i < graph.blocks.len());
            });
            let end = at.saturating_add(memory.len() as u64);
            for (start, stop) in graph.gaps(at, end) {
                assert!(at <= start && start < stop && stop <= end);
                for b in &graph.blocks {
                    let b_end = b.address.saturating_add(b.size);
                    assert!(stop <= b.address || start >= b_end, "gap overlaps a block");
                }
            }
        },
    );
}

/// The walk over glibc's heaps (chunk headers, the tcache key, an arena's heap_info) of a
/// captured `[heap]` and thread arena: the free ranges it finds lie in the window read, in
/// order, never overlapping.
#[test]
fn fuzz_glibc_heap_walk() {
    use crate::reachability::{
        glibc_heap::{self, captured_heaps},
        roots::Region,
    };
    for (region, bytes) in captured_heaps() {
        let name = format!("glibc_heap_{:?}", region.kind);
        fuzz(&name, &[Seed::whole("heap", bytes)], |image| {
            let region = Region {
                end: region.start + image.len() as u64,
                ..region
            };
            let mut read = |at: u64, buf: &mut [u8]| {
                let from = at.checked_sub(region.start).map(|o| o as usize);
                let src = from.and_then(|f| image.get(f..f.checked_add(buf.len())?));
                src.map(|s| buf.copy_from_slice(s)).is_some()
            };
            let key = glibc_heap::tcache_key(region, &mut read);
            let Some(mut walk) = glibc_heap::walk(region, key, &mut read) else {
                return;
            };
            let mut last_end = region.start;
            for (i, part) in image.chunks(1000).enumerate() {
                let at = region.start + (i * 1000) as u64;
                for (start, end) in walk.free_in(at, part) {
                    assert!(start >= at.max(last_end) && start < end);
                    assert!(end <= at + part.len() as u64);
                    last_end = end;
                }
            }
        });
    }
}
