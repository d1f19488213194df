//! `--format pprof`: the report as a gzipped pprof profile (`profile.proto`), for
//! `go tool pprof`, Pyroscope, Parca, Grafana and the rest of the pprof ecosystem.
//!
//! - Sample types `inuse_space`/`bytes` and `inuse_objects`/`count`; `inuse_space` is the
//!   default, as in Go's heap profiles.
//! - One sample per reported stack: every call site holding allocations older than `--min-age`
//!   (the caller builds the report without the `--top` cut).
//! - Locations carry function, file and line; functions inlined at an address are lines of one
//!   location, innermost first. The full stack is kept, allocator entry points included;
//!   `drop_frames` names those entry points so that pprof charges the bytes to their callers.
//! - Mappings carry the object file and its GNU build ID (read from the file itself), and the
//!   address range it is mapped at when the target is still running.
//! - Labels per sample: `age_bucket` (age of its oldest allocation), `verdict` and `allocator`;
//!   with `--reachability`, `reachability` (`reachable`, `partly_unreachable`, `unreachable`).
//!   Go targets: a site whose bytes goroutines allocated has one sample per creation site of
//!   those goroutines, labelled `goroutine_created_by` (`main.serve main.go:80`), and one
//!   without that label for the rest (allocated outside any goroutine).
pub mod goheap;
pub mod goroutines;
pub mod proto;

use std::{
    collections::HashMap,
    io::Write as _,
    path::{Path, PathBuf},
};

use flate2::{Compression, write::GzEncoder};
use prost::Message as _;
use thiserror::Error;

use super::model::{Frame, Report, Site, SiteReachability, Verdict};
use crate::tracee::{MappedObject, files::TargetFiles, process::executable_objects};

#[derive(Debug, Error)]
pub enum PprofError {
    #[error("cannot compress the profile: {0}")]
    Compress(#[source] std::io::Error),
}

/// The gzipped profile of `report`, with mappings and build IDs read for its target.
pub fn render(report: &Report) -> Result<Vec<u8>, PprofError> {
    let modules = ProcModules::read(report.target.pid);
    let profile = profile(report, |path, addresses| modules.info(path, addresses));
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&profile.encode_to_vec())
        .map_err(PprofError::Compress)?;
    gz.finish().map_err(PprofError::Compress)
}

/// The gzipped goroutine profile of a Go target (see [`goroutines`]).
pub fn render_goroutines(report: &Report) -> Result<Option<Vec<u8>>, PprofError> {
    let Some(profile) = goroutines::profile(report) else {
        return Ok(None);
    };
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&profile.encode_to_vec())
        .map_err(PprofError::Compress)?;
    gz.finish().map_err(PprofError::Compress).map(Some)
}

/// The gzipped Go heap profile of a Go target (see [`goheap`]).
pub fn render_goheap(report: &Report) -> Result<Option<Vec<u8>>, PprofError> {
    let Some(profile) = goheap::profile(report) else {
        return Ok(None);
    };
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&profile.encode_to_vec())
        .map_err(PprofError::Compress)?;
    gz.finish().map_err(PprofError::Compress).map(Some)
}

/// Where the goroutine profile goes beside `--output FILE`: `leaks.pb.gz` gives
/// `leaks.goroutines.pb.gz`.
pub fn goroutine_profile_path(output: &Path) -> PathBuf {
    companion_path(output, "goroutines")
}

/// Where the Go heap profile goes beside `--output FILE`: `leaks.goheap.pb.gz`.
pub fn goheap_profile_path(output: &Path) -> PathBuf {
    companion_path(output, "goheap")
}

fn companion_path(output: &Path, kind: &str) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match name.strip_suffix(".pb.gz") {
        Some(stem) => format!("{stem}.{kind}.pb.gz"),
        None => format!("{name}.{kind}.pb.gz"),
    };
    output.with_file_name(name)
}

/// What is known about one object file the stacks go through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleInfo {
    /// GNU build ID, lowercase hex.
    pub build_id: Option<String>,
    /// Where it is mapped: `[start, limit)` and the file offset of `start`.
    pub range: Option<(u64, u64, u64)>,
}

/// `--reachability`: whether the last scan found all, part or none of the site unreachable.
fn reachability_label(reach: SiteReachability, outstanding_bytes: u64) -> &'static str {
    match reach.unreachable_bytes {
        0 => "reachable",
        lost if lost >= outstanding_bytes => "unreachable",
        _ => "partly_unreachable",
    }
}

/// Age of a site's oldest allocation, in coarse buckets (bounded label values).
pub fn age_bucket(age_s: f64) -> &'static str {
    match age_s {
        a if a.is_nan() || a < 60.0 => "<1m",
        a if a < 600.0 => "1m-10m",
        a if a < 3600.0 => "10m-1h",
        a if a < 86400.0 => "1h-1d",
        _ => ">1d",
    }
}

pub fn verdict_name(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Growing => "growing",
        Verdict::Steady => "steady",
        Verdict::Young => "young",
    }
}

/// The profile of `report`; `module_info` tells about a module given the addresses seen in it.
pub fn profile(
    report: &Report,
    module_info: impl Fn(&str, &[u64]) -> ModuleInfo,
) -> proto::Profile {
    let mut b = Builder::default();
    let mappings = b.mappings(report, module_info);
    let space = b.value_type("inuse_space", "bytes");
    let objects = b.value_type("inuse_objects", "count");

    let samples = report
        .sites
        .iter()
        .flat_map(|site| b.samples(site, &mappings))
        .collect();

    let mut profile = proto::Profile {
        sample_type: vec![space, objects],
        sample: samples,
        default_sample_type: space.r#type,
        period_type: Some(b.value_type("space", "bytes")),
        period: report.settings.sample_bytes.max(1) as i64,
        time_nanos: chrono::DateTime::parse_from_rfc3339(&report.started_at)
            .ok()
            .and_then(|t| t.timestamp_nanos_opt())
            .unwrap_or(0),
        duration_nanos: seconds_to_nanos(report.duration_s),
        ..Default::default()
    };
    let drop = allocator_entry_points(report);
    if !drop.is_empty() {
        profile.drop_frames = b.strings.get(&drop.join("|"));
    }
    let comments = [
        format!("{} {}", report.tool, report.version),
        format!(
            "target: pid {} ({}) {}",
            report.target.pid, report.target.comm, report.target.exe
        ),
        format!(
            "outstanding allocations older than {}s, {} call sites",
            report.settings.min_age_s,
            report.sites.len()
        ),
    ];
    b.finish(profile, &comments)
}

fn seconds_to_nanos(s: f64) -> i64 {
    if s.is_finite() && s > 0.0 {
        (s * 1e9) as i64
    } else {
        0
    }
}

/// Plain names of the allocator entry points at the stacks' leaves, for `drop_frames` (an RE2
/// alternation pprof anchors itself). Names that would need escaping are left out.
fn allocator_entry_points(report: &Report) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for site in &report.sites {
        let leaf = site.frames.first().and_then(|f| f.function.as_deref());
        for name in [Some(site.allocator.as_str()), leaf].into_iter().flatten() {
            let plain =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if plain && !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        }
    }
    names
}

/// The string table: index 0 is "".
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Default for Strings {
    fn default() -> Self {
        Strings {
            table: vec![String::new()],
            index: HashMap::from([(String::new(), 0)]),
        }
    }
}

impl Strings {
    fn get(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }
}

#[derive(Default)]
struct Builder {
    strings: Strings,
    mapping: Vec<proto::Mapping>,
    location: Vec<proto::Location>,
    function: Vec<proto::Function>,
    functions: HashMap<(String, String), u64>,
    locations: HashMap<(u64, u64, Vec<proto::Line>), u64>,
}

impl Builder {
    /// `profile` with the comments, and the tables built for its samples.
    fn finish(mut self, mut profile: proto::Profile, comments: &[String]) -> proto::Profile {
        profile.comment = comments.iter().map(|c| self.strings.get(c)).collect();
        profile.mapping = self.mapping;
        profile.location = self.location;
        profile.function = self.function;
        profile.string_table = self.strings.table;
        profile
    }

    fn value_type(&mut self, r#type: &str, unit: &str) -> proto::ValueType {
        proto::ValueType {
            r#type: self.strings.get(r#type),
            unit: self.strings.get(unit),
        }
    }

    /// One mapping per module the frames name, the target's executable first (pprof takes the
    /// first mapping for the main binary). Returns mapping IDs by module path.
    fn mappings(
        &mut self,
        report: &Report,
        module_info: impl Fn(&str, &[u64]) -> ModuleInfo,
    ) -> HashMap<String, u64> {
        let mut order: Vec<&str> = Vec::new();
        let mut addresses: HashMap<&str, Vec<u64>> = HashMap::new();
        for frame in report.sites.iter().flat_map(|s| &s.frames) {
            let (Some(module), Some(address)) = (frame.module.as_deref(), address(frame)) else {
                continue;
            };
            let seen = addresses.entry(module).or_insert_with(|| {
                order.push(module);
                Vec::new()
            });
            seen.push(address);
        }
        order.sort_by_key(|m| *m != report.target.exe);

        let mut ids = HashMap::new();
        for module in order {
            let seen = &addresses[module];
            let info = module_info(module, seen);
            let (start, limit, offset) = info.range.unwrap_or_else(|| {
                let low = seen.iter().copied().min().unwrap_or(0);
                let high = seen.iter().copied().max().unwrap_or(0);
                (low, high.saturating_add(1), 0)
            });
            let id = self.mapping.len() as u64 + 1;
            let mapping = proto::Mapping {
                id,
                memory_start: start,
                memory_limit: limit,
                file_offset: offset,
                filename: self.strings.get(module),
                build_id: info.build_id.as_deref().map_or(0, |b| self.strings.get(b)),
                // Symbolized already: pprof must not look for the binaries to do it again.
                has_functions: true,
                has_filenames: true,
                has_line_numbers: true,
                has_inline_frames: true,
            };
            self.mapping.push(mapping);
            ids.insert(module.to_owned(), id);
        }
        ids
    }

    /// The samples of a site: one, or with goroutine creation sites one per creation site
    /// (labelled `goroutine_created_by`) and one for the rest, if any.
    fn samples(&mut self, site: &Site, mappings: &HashMap<String, u64>) -> Vec<proto::Sample> {
        let location_id = self.locations(&site.frames, mappings);
        let mut samples = Vec::new();
        let (mut bytes, mut allocs) = (site.outstanding_bytes, site.outstanding_allocs);
        for by in &site.goroutine_sites {
            let created_by = by.created_by.label();
            let label = ("goroutine_created_by", created_by.as_str());
            let values = (by.outstanding_bytes, by.outstanding_allocs);
            samples.push(self.sample(site, &location_id, values, Some(label)));
            bytes = bytes.saturating_sub(by.outstanding_bytes);
            allocs = allocs.saturating_sub(by.outstanding_allocs);
        }
        if samples.is_empty() || bytes > 0 || allocs > 0 {
            samples.push(self.sample(site, &location_id, (bytes, allocs), None));
        }
        samples
    }

    fn sample(
        &mut self,
        site: &Site,
        location_id: &[u64],
        (bytes, allocs): (u64, u64),
        extra: Option<(&str, &str)>,
    ) -> proto::Sample {
        let mut labels = vec![
            ("age_bucket", age_bucket(site.oldest_age_s)),
            ("verdict", verdict_name(site.verdict)),
            ("allocator", site.allocator.as_str()),
        ];
        if let Some(reach) = site.reachability {
            labels.push((
                "reachability",
                reachability_label(reach, site.outstanding_bytes),
            ));
        }
        proto::Sample {
            location_id: location_id.to_vec(),
            value: vec![
                i64::try_from(bytes).unwrap_or(i64::MAX),
                i64::try_from(allocs).unwrap_or(i64::MAX),
            ],
            label: labels
                .into_iter()
                .chain(extra)
                .map(|(key, value)| proto::Label {
                    key: self.strings.get(key),
                    str: self.strings.get(value),
                    ..Default::default()
                })
                .collect(),
        }
    }

    /// Location IDs of a stack, leaf first. A frame marked inlined shares its address with the
    /// frames after it, up to the first one that is not: together they are one location.
    fn locations(&mut self, frames: &[Frame], mappings: &HashMap<String, u64>) -> Vec<u64> {
        let mut ids = Vec::new();
        let mut group: Vec<&Frame> = Vec::new();
        for (i, frame) in frames.iter().enumerate() {
            group.push(frame);
            if !frame.inlined || i + 1 == frames.len() {
                ids.push(self.location(&group, mappings));
                group.clear();
            }
        }
        ids
    }

    fn location(&mut self, group: &[&Frame], mappings: &HashMap<String, u64>) -> u64 {
        // The last frame is the one the others were inlined into: its address and module.
        let outer = group[group.len() - 1];
        let address = address(outer).unwrap_or(0);
        let mapping_id = outer
            .module
            .as_deref()
            .and_then(|m| mappings.get(m))
            .copied()
            .unwrap_or(0);
        let lines: Vec<proto::Line> = group
            .iter()
            .filter_map(|frame| {
                let name = frame.function.as_deref()?;
                Some(proto::Line {
                    function_id: self.function(name, frame.file.as_deref().unwrap_or("")),
                    line: frame.line.map_or(0, i64::from),
                    column: 0,
                })
            })
            .collect();
        let key = (address, mapping_id, lines);
        if let Some(&id) = self.locations.get(&key) {
            return id;
        }
        let id = self.location.len() as u64 + 1;
        self.location.push(proto::Location {
            id,
            mapping_id,
            address,
            line: key.2.clone(),
            is_folded: false,
        });
        self.locations.insert(key, id);
        id
    }

    fn function(&mut self, name: &str, file: &str) -> u64 {
        let key = (name.to_owned(), file.to_owned());
        if let Some(&id) = self.functions.get(&key) {
            return id;
        }
        let id = self.function.len() as u64 + 1;
        let name = self.strings.get(name);
        let filename = self.strings.get(file);
        self.function.push(proto::Function {
            id,
            name,
            system_name: name,
            filename,
            start_line: 0,
        });
        self.functions.insert(key, id);
        id
    }
}

fn address(frame: &Frame) -> Option<u64> {
    let hex = frame.address.strip_prefix("0x")?;
    u64::from_str_radix(hex, 16).ok()
}

/// The target's executable file mappings (read once, empty once it has exited) and its files.
pub struct ProcModules {
    files: Option<TargetFiles>,
    maps: Vec<MappedObject>,
}

impl ProcModules {
    pub fn read(pid: u32) -> Self {
        ProcModules {
            files: TargetFiles::new(pid).ok(),
            maps: executable_objects(pid).unwrap_or_default(),
        }
    }

    pub fn info(&self, module: &str, addresses: &[u64]) -> ModuleInfo {
        let mapping = self.mapping(module, addresses);
        ModuleInfo {
            // The mapped file itself, never a path the host may give to another file.
            build_id: mapping.and_then(|m| {
                let file = self.files.as_ref()?.open_mapped(m).ok()?;
                build_id(file.data())
            }),
            range: mapping.map(|m| (m.start, m.end, m.offset)),
        }
    }

    /// The module's executable mapping that holds every address seen in it. Checking the
    /// addresses also guards against a new process that reused the PID.
    fn mapping(&self, module: &str, addresses: &[u64]) -> Option<&MappedObject> {
        self.maps
            .iter()
            .filter(|m| m.path == Path::new(module))
            .find(|m| addresses.iter().all(|a| (m.start..m.end).contains(a)))
    }
}

/// The GNU build ID note of an ELF file, as lowercase hex.
pub fn build_id(data: &[u8]) -> Option<String> {
    use object::Object as _;

    let elf = object::File::parse(data).ok()?;
    let id = elf.build_id().ok()??;
    if id.is_empty() {
        return None;
    }
    Some(id.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::report::model::{
        Allocator, CodeLocation, EndedBy, Language, Memory, NativeByGoroutineSite, Report,
        Settings, Site, Target, Totals, Verdict,
    };

    fn frame(addr: u64, function: Option<&str>, line: u32, module: &str) -> Frame {
        Frame {
            address: format!("0x{addr:x}"),
            function: function.map(str::to_owned),
            file: function.map(|_| "/src/leaky.c".to_owned()),
            line: function.map(|_| line),
            module: Some(module.to_owned()),
            inlined: false,
        }
    }

    fn site(bytes: u64, allocs: u64, age: f64, frames: Vec<Frame>) -> Site {
        Site {
            outstanding_bytes: bytes,
            outstanding_allocs: allocs,
            oldest_age_s: age,
            growth_bytes_per_s: 0.0,
            verdict: Verdict::Growing,
            allocator: "malloc".into(),
            frames,
            total_allocs: allocs,
            total_bytes: bytes,
            ..Site::example()
        }
    }

    pub(crate) fn report(sites: Vec<Site>) -> Report {
        Report {
            tool: "leaktrace",
            version: "0.1.0",
            is_final: true,
            target: Target {
                pid: 1,
                pid_in_namespace: None,
                comm: "leaky".into(),
                exe: "/opt/leaky".into(),
                language: Language::C,
            },
            started_at: "2026-11-23T13:00:00Z".into(),
            duration_s: 3.0,
            settings: Settings {
                min_age_s: 0.0,
                interval_s: 0.5,
                sample_bytes: 0,
            },
            totals: Totals::default(),
            sites,
            goroutines: None,
            go_heap: None,
            memory: Memory::default(),
            oom_kills: vec![],
            allocator: Allocator {
                path: "/lib/libc.so.6".into(),
                name: "glibc".into(),
                probed: vec![],
                missing: vec![],
                linked_into_executable: false,
                families: vec![],
            },
            ended_by: Some(EndedBy::Duration),
            escalations: None,
            reachability: None,
        }
    }

    const LIBC: &str = "/lib/libc.so.6";
    const EXE: &str = "/opt/leaky";

    fn sample_report() -> Report {
        let mut helper = frame(0x1010, Some("helper"), 7, EXE);
        helper.inlined = true;
        report(vec![
            site(
                4096,
                4,
                5.0,
                vec![
                    frame(0x7f00, Some("malloc"), 0, LIBC),
                    helper,
                    frame(0x1010, Some("leak_inlined"), 12, EXE),
                    frame(0x1100, Some("main"), 30, EXE),
                    frame(0x9999, None, 0, EXE),
                ],
            ),
            site(
                100,
                1,
                700.0,
                vec![
                    frame(0x7f00, Some("malloc"), 0, LIBC),
                    frame(0x1200, Some("leak_other"), 20, EXE),
                    frame(0x1100, Some("main"), 30, EXE),
                ],
            ),
        ])
    }

    fn s(p: &proto::Profile, i: i64) -> &str {
        &p.string_table[i as usize]
    }

    #[test]
    fn profile_has_heap_sample_types_and_one_sample_per_site() {
        let p = profile(&sample_report(), |_, _| ModuleInfo::default());
        let types: Vec<_> = p
            .sample_type
            .iter()
            .map(|t| (s(&p, t.r#type), s(&p, t.unit)))
            .collect();
        assert_eq!(
            types,
            [("inuse_space", "bytes"), ("inuse_objects", "count")]
        );
        assert_eq!(s(&p, p.default_sample_type), "inuse_space");
        assert_eq!(p.string_table[0], "");
        assert_eq!(p.sample.len(), 2);
        assert_eq!(p.sample[0].value, [4096, 4]);
        assert_eq!(p.sample[1].value, [100, 1]);
        assert_eq!(s(&p, p.drop_frames), "malloc");
        assert_eq!(p.duration_nanos, 3_000_000_000);
        assert!(p.time_nanos > 0);

        let labels: Vec<_> = p.sample[1]
            .label
            .iter()
            .map(|l| (s(&p, l.key), s(&p, l.str)))
            .collect();
        assert_eq!(
            labels,
            [
                ("age_bucket", "10m-1h"),
                ("verdict", "growing"),
                ("allocator", "malloc")
            ]
        );
    }

    fn by_goroutine(function: &str, line: u32, bytes: u64, allocs: u64) -> NativeByGoroutineSite {
        NativeByGoroutineSite {
            created_by: CodeLocation {
                function: Some(function.into()),
                file: Some("/src/app/main.go".into()),
                line: Some(line),
            },
            outstanding_bytes: bytes,
            outstanding_allocs: allocs,
        }
    }

    /// The site's samples: (value, `goroutine_created_by` label), on one stack.
    fn goroutine_samples(site: Site) -> Vec<(Vec<i64>, Option<String>)> {
        let p = profile(&report(vec![site]), |_, _| ModuleInfo::default());
        assert!(
            p.sample
                .windows(2)
                .all(|w| w[0].location_id == w[1].location_id)
        );
        p.sample
            .iter()
            .map(|sample| {
                let created_by = sample
                    .label
                    .iter()
                    .find(|l| s(&p, l.key) == "goroutine_created_by")
                    .map(|l| s(&p, l.str).to_owned());
                (sample.value.clone(), created_by)
            })
            .collect()
    }

    #[test]
    fn a_site_splits_into_one_sample_per_goroutine_creation_site_and_the_rest() {
        let frames = vec![frame(0x7f00, Some("malloc"), 0, LIBC)];
        let mut split = site(350_000 + 7_000, 357, 1.0, frames.clone());
        split.goroutine_sites = vec![
            by_goroutine("main.startA", 75, 300_000, 300),
            by_goroutine("main.startB", 82, 50_000, 50),
        ];
        assert_eq!(
            goroutine_samples(split.clone()),
            [
                (
                    vec![300_000, 300],
                    Some("main.startA main.go:75".to_owned())
                ),
                (vec![50_000, 50], Some("main.startB main.go:82".to_owned())),
                // Allocated outside any goroutine (a C thread): no label.
                (vec![7_000, 7], None),
            ]
        );
        // All of it from goroutines: no rest.
        split.outstanding_bytes = 350_000;
        split.outstanding_allocs = 350;
        assert_eq!(goroutine_samples(split).len(), 2);
        // No goroutine at all: the one sample of the site, unlabelled.
        assert_eq!(
            goroutine_samples(site(10, 1, 1.0, frames)),
            [(vec![10, 1], None)]
        );
    }

    #[test]
    fn inlined_frames_are_lines_of_one_location_innermost_first() {
        let p = profile(&sample_report(), |_, _| ModuleInfo::default());
        let stack = &p.sample[0].location_id;
        // malloc, helper+leak_inlined, main, unknown.
        assert_eq!(stack.len(), 4);
        let location = |id: u64| &p.location[id as usize - 1];
        let names = |id: u64| -> Vec<String> {
            location(id)
                .line
                .iter()
                .map(|l| {
                    let f = &p.function[l.function_id as usize - 1];
                    format!("{}:{}", s(&p, f.name), l.line)
                })
                .collect()
        };
        assert_eq!(names(stack[0]), ["malloc:0"]);
        assert_eq!(names(stack[1]), ["helper:7", "leak_inlined:12"]);
        assert_eq!(location(stack[1]).address, 0x1010);
        assert_eq!(names(stack[2]), ["main:30"]);
        assert!(names(stack[3]).is_empty());
        assert_eq!(location(stack[3]).address, 0x9999);
        // Shared frames are shared locations and functions.
        assert_eq!(p.sample[1].location_id[0], stack[0]);
        assert_eq!(p.sample[1].location_id[2], stack[2]);
        assert_eq!(p.function.len(), 5);
        for (i, f) in p.function.iter().enumerate() {
            assert_eq!(f.id, i as u64 + 1);
            assert_eq!(s(&p, f.filename), "/src/leaky.c");
        }
    }

    #[test]
    fn mappings_put_the_executable_first_with_build_ids() {
        let p = profile(&sample_report(), |module, addresses| ModuleInfo {
            build_id: Some(format!("id-{}", module.len())),
            range: (module == LIBC).then(|| {
                assert_eq!(addresses, [0x7f00, 0x7f00]);
                (0x7000, 0x8000, 0x1000)
            }),
        });
        assert_eq!(p.mapping.len(), 2);
        let exe = &p.mapping[0];
        assert_eq!((exe.id, s(&p, exe.filename)), (1, EXE));
        assert_eq!(s(&p, exe.build_id), "id-10");
        assert_eq!((exe.memory_start, exe.memory_limit), (0x1010, 0x999a));
        assert!(exe.has_functions && exe.has_inline_frames);
        let libc = &p.mapping[1];
        assert_eq!(s(&p, libc.filename), LIBC);
        assert_eq!(
            (libc.memory_start, libc.memory_limit, libc.file_offset),
            (0x7000, 0x8000, 0x1000)
        );
        let malloc = &p.location[p.sample[0].location_id[0] as usize - 1];
        assert_eq!(malloc.mapping_id, 2);
    }

    #[test]
    fn encodes_and_decodes() {
        let p = profile(&sample_report(), |_, _| ModuleInfo::default());
        let back = proto::Profile::decode(p.encode_to_vec().as_slice()).expect("decode");
        assert_eq!(back, p);
    }

    #[test]
    fn age_buckets() {
        assert_eq!(age_bucket(0.0), "<1m");
        assert_eq!(age_bucket(f64::NAN), "<1m");
        assert_eq!(age_bucket(60.0), "1m-10m");
        assert_eq!(age_bucket(3599.0), "10m-1h");
        assert_eq!(age_bucket(7200.0), "1h-1d");
        assert_eq!(age_bucket(1e9), ">1d");
    }

    #[test]
    fn reads_the_gnu_build_id() {
        let exe = std::env::current_exe().expect("current exe");
        // Rust test binaries are linked with a GNU build ID on Linux.
        let exe = crate::tracee::files::open_host(&exe).expect("open own exe");
        let id = build_id(exe.data()).expect("build id");
        assert!(id.len() >= 16 && id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(build_id(b"#!/bin/sh\n"), None);
    }
}
