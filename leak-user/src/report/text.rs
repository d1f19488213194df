//! The text report: the same `Report` as the JSON one, for people, at most 80 columns wide.

use super::{
    model::{
        CodeLocation, EndedBy, Escalations, Frame, GoHeap, GoroutineSite, Goroutines, Language,
        OomKill, Report, Site, Verdict,
    },
    units,
};

const WIDTH: usize = 80;
const INDENT: &str = "    ";
/// Width of the header's labels (`outstanding: `).
const LABEL: usize = 13;

/// Renders the whole report; every line is at most 80 characters.
pub fn render(report: &Report) -> String {
    let mut out = Lines::default();
    header(&mut out, report);
    out.blank();
    sites(&mut out, report);
    if let Some(line) = super::reach_text::summary(report) {
        out.blank();
        out.push(line);
    }
    if let Some(goroutines) = &report.goroutines {
        out.blank();
        goroutine_sites(&mut out, goroutines);
    }
    if let Some(heap) = &report.go_heap {
        out.blank();
        go_heap(&mut out, heap);
    }
    if !report.oom_kills.is_empty() {
        out.blank();
        oom_kills(&mut out, &report.oom_kills);
    }
    if let Some(escalations) = report.escalations.as_ref().filter(|e| e.count > 0) {
        out.blank();
        escalated_sites(&mut out, escalations);
    }
    out.finish()
}

/// `--always-on`: every escalated site, also those outside the top.
fn escalated_sites(out: &mut Lines, escalations: &Escalations) {
    let refused = match escalations.refused {
        0 => String::new(),
        n => format!(", {n} refused (set full)"),
    };
    out.push(format!(
        "Traced exactly since their estimate kept growing: {} of at most {} sites{refused}",
        escalations.count, escalations.limit
    ));
    for site in &escalations.sites {
        let f = &site.figures;
        out.push(format!(
            "{INDENT}{}  since {}: {} in {} allocs",
            shorten(&site.site, 40),
            units::duration(f.at_s),
            units::bytes(f.exact_outstanding_bytes),
            f.exact_outstanding_allocs
        ));
    }
}

fn header(out: &mut Lines, report: &Report) {
    let what = if report.is_final {
        match report.ended_by {
            Some(reason) => format!("final report ({})", ended_by(reason)),
            None => "final report".to_string(),
        }
    } else {
        format!("report at {}", units::duration(report.duration_s))
    };
    out.push(format!("{} {}: {what}", report.tool, report.version));

    let target = &report.target;
    let in_namespace = target
        .pid_in_namespace
        .map(|pid| format!(", pid {pid} in its namespace"))
        .unwrap_or_default();
    out.push(format!(
        "target:      pid {}{in_namespace} ({}), language {}",
        target.pid,
        target.comm,
        language(target.language)
    ));
    out.push(format!("executable:  {}", path_tail(&target.exe, LABEL)));
    let allocator = &report.allocator;
    let name = format!("allocator:   {} ", allocator.name);
    let room = name.chars().count();
    out.push(format!("{name}{}", path_tail(&allocator.path, room)));
    // One line per allocator probed (their symbols are in the JSON report), then anything
    // else probed (the Go runtime's probes).
    for family in &allocator.families {
        let label = format!(
            "  probed:    {} {} entry points in ",
            family.probed.len(),
            family.name
        );
        let room = label.chars().count();
        out.push(format!("{label}{}", path_tail(&family.path, room)));
    }
    let others: Vec<String> = allocator
        .probed
        .iter()
        .filter(|p| !allocator.families.iter().any(|f| f.probed.contains(p)))
        .cloned()
        .collect();
    if allocator.families.is_empty() || !others.is_empty() {
        out.wrap("  probed:    ", &or_none(&others), ", ");
    }
    if !allocator.missing.is_empty() {
        out.wrap("  missing:   ", &allocator.missing, ", ");
    }
    out.push(format!(
        "started:     {}, ran {}",
        report.started_at,
        units::duration(report.duration_s)
    ));
    if report.settings.sample_bytes > 0 {
        out.push(format!(
            "sampling:    one allocation per {}: figures are estimates",
            units::bytes(report.settings.sample_bytes)
        ));
    }

    let totals = &report.totals;
    out.wrap(
        "outstanding: ",
        &[
            format!(
                "{} in {} allocs",
                units::bytes(totals.outstanding_bytes),
                totals.outstanding_allocs
            ),
            format!(
                "(seen {} allocs, {} frees)",
                totals.allocs_seen, totals.frees_seen
            ),
        ],
        " ",
    );
    if totals.dropped == 0 {
        out.push("dropped:     0".to_string());
    } else {
        let reasons = &totals.drop_reasons;
        let mut why = vec![
            format!("alloc map full: {}", reasons.alloc_map_full),
            format!("stack map full: {}", reasons.stack_map_full),
        ];
        if reasons.in_flight_map_full > 0 {
            why.push(format!(
                "in-flight map full: {}",
                reasons.in_flight_map_full
            ));
        }
        if reasons.totals_map_full > 0 {
            why.push(format!("totals map full: {}", reasons.totals_map_full));
        }
        if reasons.kernel_skipped > 0 {
            why.push(format!(
                "skipped by the kernel while another BPF program ran: {}",
                reasons.kernel_skipped
            ));
        }
        // Word by word, so the warning wraps instead of being cut.
        let text = format!(
            "DROPPED {} allocations ({}) — figures are lower bounds; raise \
             --max-allocs/--max-stacks",
            totals.dropped,
            why.join(", ")
        );
        let words: Vec<String> = text.split(' ').map(str::to_owned).collect();
        out.wrap_with("", "  ", &words, " ");
    }

    let memory = &report.memory;
    let mut figures: Vec<String> = [
        ("rss", memory.rss_bytes),
        ("anon", memory.anon_bytes),
        ("file", memory.file_bytes),
        ("shmem", memory.shmem_bytes),
        ("go heap", memory.go_heap_bytes),
        ("go stacks", memory.go_stack_bytes),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.map(|v| format!("{name} {}", units::bytes(v))))
    .collect();
    if figures.is_empty() {
        out.push("memory:      unknown".to_string());
        return;
    }
    figures.push(format!(
        "tracked native {}",
        units::bytes(memory.native_tracked_bytes)
    ));
    if let Some(rest) = memory.unexplained_bytes {
        figures.push(format!("unexplained anon {}", units::bytes(rest)));
    }
    if let Some(growth) = memory.growth_bytes_per_s {
        figures.push(format!("anon {}", units::rate(growth)));
    }
    out.wrap("memory:      ", &figures, ", ");
    if let Some(cgroup) = &memory.cgroup {
        let mut parts = vec![format!("{} ({})", cgroup.path, cgroup.version)];
        if let Some(usage) = cgroup.usage_bytes {
            parts.push(format!("usage {}", units::bytes(usage)));
        }
        match cgroup.limit_bytes {
            Some(limit) => parts.push(format!("limit {}", units::bytes(limit))),
            None => parts.push("no limit".to_owned()),
        }
        if let Some(kills) = cgroup.oom_kills {
            parts.push(format!("{kills} OOM kills"));
        }
        if let Some(secs) = memory.time_to_limit_s {
            parts.push(format!("limit in ~{} at this rate", units::duration(secs)));
        }
        out.wrap("cgroup:      ", &parts, ", ");
    }
}

fn ended_by(reason: EndedBy) -> &'static str {
    match reason {
        EndedBy::Duration => "duration reached",
        EndedBy::Signal => "interrupted",
        EndedBy::TargetExited => "target exited",
        EndedBy::OomKilled => "KILLED BY THE OOM KILLER",
    }
}

fn language(language: Language) -> &'static str {
    match language {
        Language::C => "c",
        Language::Go => "go",
    }
}

fn or_none(items: &[String]) -> Vec<String> {
    if items.is_empty() {
        vec!["none".to_string()]
    } else {
        items.to_vec()
    }
}

fn sites(out: &mut Lines, report: &Report) {
    let min_age = units::duration(report.settings.min_age_s);
    if report.sites.is_empty() {
        let totals = &report.totals;
        out.push(format!(
            "No call site holds allocations older than {min_age} (--min-age)."
        ));
        if totals.outstanding_allocs > 0 {
            out.push(format!(
                "{} younger allocations ({}) are outstanding.",
                totals.outstanding_allocs,
                units::bytes(totals.outstanding_bytes)
            ));
        }
        return;
    }
    out.push(format!(
        "Call sites holding allocations older than {min_age}, largest first:"
    ));
    for (index, site) in report.sites.iter().enumerate() {
        out.blank();
        site_lines(out, index + 1, site);
    }
}

fn site_lines(out: &mut Lines, rank: usize, site: &Site) {
    let verdict = match site.verdict {
        Verdict::Growing => "GROWING",
        Verdict::Steady => "STEADY",
        Verdict::Young => "YOUNG",
    };
    out.wrap_with(
        "",
        INDENT,
        &[
            format!("#{rank}"),
            format!(
                "{} in {} allocs",
                units::bytes(site.outstanding_bytes),
                site.outstanding_allocs
            ),
            format!("oldest {}", units::duration(site.oldest_age_s)),
            units::rate(site.growth_bytes_per_s),
            verdict.to_string(),
            format!("via {}", site.allocator),
        ],
        "  ",
    );
    if let Some(e) = &site.escalated {
        out.push(format!(
            "{INDENT}ESCALATED at {}: exact since then {} in {} allocs",
            units::duration(e.at_s),
            units::bytes(e.exact_outstanding_bytes),
            e.exact_outstanding_allocs
        ));
    }
    if site.frames.is_empty() {
        out.push(format!("{INDENT}(no stack)"));
    }
    for frame in &site.frames {
        out.push(frame_line(frame));
    }
    if site.truncated {
        out.push(format!("{INDENT}... (stack truncated)"));
    }
    // One creation site says nothing the stack does not: only a split is worth lines.
    if site.goroutine_sites.len() > 1 {
        for by in &site.goroutine_sites {
            out.push(format!(
                "{INDENT}by goroutines created at {}: {}",
                created_by_place(&by.created_by),
                units::bytes(by.outstanding_bytes)
            ));
        }
    }
    for line in super::reach_text::site_lines(site) {
        out.push(format!("{INDENT}{line}"));
    }
}

/// `main.serve (main.go:80)`.
fn created_by_place(place: &CodeLocation) -> String {
    let function = place.function.as_deref().unwrap_or("??");
    match (&place.file, place.line) {
        (Some(file), Some(line)) => format!("{function} ({}:{line})", basename(file)),
        (Some(file), None) => format!("{function} ({})", basename(file)),
        _ => function.to_string(),
    }
}

/// `    leak_malloc  leaky.c:12`, `    malloc  (libc.so.6)`, `    ??  0x7f12...  (libfoo.so)`.
/// A long (C++) name is shortened rather than the location.
fn frame_line(frame: &Frame) -> String {
    let name = match &frame.function {
        Some(function) if frame.inlined => format!("{function} (inlined)"),
        Some(function) => function.clone(),
        None => format!("??  {}", frame.address),
    };
    let location = match (&frame.file, frame.line, &frame.module) {
        (Some(file), Some(line), _) => format!("{}:{line}", basename(file)),
        (Some(file), None, _) => basename(file).to_string(),
        (None, _, Some(module)) => format!("({})", basename(module)),
        (None, _, None) => String::new(),
    };
    if location.is_empty() {
        return format!("{INDENT}{name}");
    }
    // Keep at least 20 columns for the name, cut the location only if it must.
    let room = WIDTH
        .saturating_sub(INDENT.len() + 2 + location.chars().count())
        .max(20);
    format!("{INDENT}{}  {location}", shorten(&name, room))
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn goroutine_sites(out: &mut Lines, goroutines: &Goroutines) {
    let mut head = format!("Goroutines: {} live", goroutines.live);
    if goroutines.created + goroutines.exited > 0 {
        head += &format!(
            " ({} created, {} exited while traced)",
            goroutines.created, goroutines.exited
        );
    }
    out.push(head);
    if goroutines.coverage != "all" {
        out.push(format!(
            "{INDENT}only goroutines created while traced: the runtime's list was not found"
        ));
    }
    if goroutines.dropped > 0 {
        out.push(format!(
            "{INDENT}warning: {} goroutines not tracked (map full)",
            goroutines.dropped
        ));
    }
    for (index, site) in goroutines.sites.iter().enumerate() {
        out.blank();
        goroutine_site(out, index + 1, site);
    }
}

fn goroutine_site(out: &mut Lines, rank: usize, site: &GoroutineSite) {
    let mut head = vec![
        format!("#{rank}"),
        format!("{} live", site.live),
        format!("{:+.1}/s", site.growth_per_s),
        format!("{:?}", site.verdict).to_uppercase(),
    ];
    if let Some(start) = &site.start_function {
        head.push(start.clone());
    }
    out.wrap_with("", INDENT, &head, "  ");
    out.push(format!(
        "{INDENT}created by {}",
        code_place(&site.created_by)
    ));
    if let Some(blocked) = &site.blocked_at {
        let share = if site.blocked_at_count < site.live {
            format!(" ({} of them)", site.blocked_at_count)
        } else {
            String::new()
        };
        out.push(format!("{INDENT}blocked at {}{share}", code_place(blocked)));
    }
    if !site.states.is_empty() {
        let states: Vec<String> = site
            .states
            .iter()
            .map(|(state, count)| format!("{state} {count}"))
            .collect();
        out.wrap(&format!("{INDENT}states: "), &states, ", ");
    }
}

fn go_heap(out: &mut Lines, heap: &GoHeap) {
    if let Some(reason) = &heap.unavailable {
        out.wrap("Go heap: ", std::slice::from_ref(reason), " ");
        return;
    }
    let when = if heap.at_oom_kill {
        "read at the OOM kill".to_owned()
    } else {
        format!("read at {}", units::duration(heap.read_at_s))
    };
    out.wrap_with(
        "",
        INDENT,
        &[
            format!(
                "Go heap (runtime profile): {} in use in {} objects",
                units::bytes(heap.inuse_bytes.max(0) as u64),
                heap.inuse_objects
            ),
            format!("as of GC cycle {}, {when},", heap.gc_cycle),
            format!(
                "sampled every {}",
                units::bytes(heap.sample_rate_bytes.max(0) as u64)
            ),
        ],
        " ",
    );
    for (index, site) in heap.sites.iter().enumerate() {
        out.blank();
        out.wrap_with(
            "",
            INDENT,
            &[
                format!("#{}", index + 1),
                format!(
                    "{} in {} objects",
                    units::bytes(site.inuse_bytes.max(0) as u64),
                    site.inuse_objects
                ),
                units::rate(site.growth_bytes_per_s),
                format!("{:?}", site.verdict).to_uppercase(),
            ],
            "  ",
        );
        for frame in &site.frames {
            out.push(frame_line(frame));
        }
    }
}

/// `main.leakTimeout  main.go:41`.
fn code_place(place: &CodeLocation) -> String {
    let function = place.function.as_deref().unwrap_or("??");
    match (&place.file, place.line) {
        (Some(file), Some(line)) => format!("{function}  {}:{line}", basename(file)),
        (Some(file), None) => format!("{function}  {}", basename(file)),
        _ => function.to_string(),
    }
}

fn oom_kills(out: &mut Lines, kills: &[OomKill]) {
    out.push(format!("OOM kills: {}", kills.len()));
    for kill in kills {
        let mut parts = vec![
            kill.time.clone(),
            format!("pid {} ({})", kill.pid, kill.comm),
        ];
        if let Some(kb) = kill.anon_rss_kb {
            parts.push(format!(
                "anon-rss {}",
                units::bytes(kb.saturating_mul(1024))
            ));
        }
        if let Some(cgroup) = &kill.cgroup {
            parts.push(format!("cgroup {cgroup}"));
        }
        parts.push(format!("[{}]", kill.source));
        out.wrap_with("  ", INDENT, &parts, "  ");
    }
}

/// `name` cut to `width` characters, marked with `...`.
fn shorten(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let kept: String = text.chars().take(width.saturating_sub(3)).collect();
    format!("{kept}...")
}

/// A path that fits after `used` columns: its end is what tells files apart.
fn path_tail(path: &str, used: usize) -> String {
    let width = WIDTH.saturating_sub(used).max(20);
    let count = path.chars().count();
    if count <= width {
        return path.to_string();
    }
    let kept: String = path.chars().skip(count - (width - 3)).collect();
    format!("...{kept}")
}

/// Output lines, each cut to `WIDTH`.
#[derive(Default)]
struct Lines(Vec<String>);

impl Lines {
    /// Every line goes through here: the target's strings in it are escaped.
    fn push(&mut self, line: String) {
        let line = crate::escape::control_chars(line.trim_end());
        self.0.push(shorten(&line, WIDTH));
    }

    fn blank(&mut self) {
        self.0.push(String::new());
    }

    /// `parts` after `prefix`, continued under it (aligned) when a line would be too long.
    fn wrap(&mut self, prefix: &str, parts: &[String], separator: &str) {
        let indent = " ".repeat(prefix.chars().count());
        self.wrap_with(prefix, &indent, parts, separator);
    }

    fn wrap_with(&mut self, first: &str, continuation: &str, parts: &[String], separator: &str) {
        let mut line = first.to_string();
        let mut empty = true;
        for part in parts {
            let joined = line.chars().count() + separator.len() + part.chars().count();
            if !empty && joined > WIDTH {
                self.push(std::mem::replace(&mut line, continuation.to_string()));
                empty = true;
            }
            if !empty {
                // Separators end with their spaces; at a line end `push` trims them.
                line.push_str(separator);
            }
            line.push_str(part);
            empty = false;
        }
        self.push(line);
    }

    fn finish(self) -> String {
        let mut text = self.0.join("\n");
        text.push('\n');
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::{
        Allocator, DropReasons, Memory, NativeByGoroutineSite, Settings, Target, Totals, Verdict,
    };

    fn frame(function: Option<&str>, file: Option<&str>, line: Option<u32>) -> Frame {
        Frame {
            address: "0x7f1234567890".into(),
            function: function.map(str::to_owned),
            file: file.map(str::to_owned),
            line,
            module: Some("/usr/lib/x86_64-linux-gnu/libc.so.6".into()),
            inlined: false,
        }
    }

    fn site(bytes: u64, verdict: Verdict, frames: Vec<Frame>) -> Site {
        Site {
            outstanding_bytes: bytes,
            outstanding_allocs: 12,
            oldest_age_s: 9.8,
            growth_bytes_per_s: 1228.8,
            verdict,
            allocator: "malloc".into(),
            frames,
            total_allocs: 100,
            total_bytes: 100_000,
            ..Site::example()
        }
    }

    fn report() -> Report {
        let long_cpp = "std::vector<std::pair<std::basic_string<char>, std::map<int, \
                        std::shared_ptr<ns::Klass>>>>::_M_realloc_insert(iterator, value_type&&)";
        let mut inlined = frame(Some("fill_buffer"), Some("/src/app/leaky.c"), Some(8));
        inlined.inlined = true;
        Report {
            tool: "leaktrace",
            version: "0.1.0",
            is_final: true,
            target: Target {
                pid: 1234,
                pid_in_namespace: None,
                comm: "leaky".into(),
                exe: "/opt/some/really/long/installation/directory/for/the/program/bin/leaky"
                    .into(),
                language: Language::C,
            },
            started_at: "2026-11-23T13:00:00Z".into(),
            duration_s: 30.0,
            settings: Settings {
                min_age_s: 5.0,
                interval_s: 5.0,
                sample_bytes: 0,
            },
            totals: Totals {
                outstanding_bytes: 12 * 1024 + 4096,
                outstanding_allocs: 14,
                allocs_seen: 50_000,
                frees_seen: 48_976,
                dropped: 123,
                drop_reasons: DropReasons {
                    alloc_map_full: 100,
                    stack_map_full: 23,
                    in_flight_map_full: 0,
                    kernel_skipped: 0,
                    totals_map_full: 0,
                },
                stacks_evicted: 0,
            },
            sites: vec![
                Site {
                    truncated: true,
                    ..site(
                        12 * 1024,
                        Verdict::Growing,
                        vec![
                            frame(Some("malloc"), None, None),
                            inlined,
                            frame(Some("leak_malloc"), Some("/src/app/leaky.c"), Some(12)),
                            frame(
                                Some(long_cpp),
                                Some("/usr/include/c++/12/bits/vector.tcc"),
                                Some(512),
                            ),
                            Frame {
                                module: None,
                                ..frame(None, None, None)
                            },
                            frame(None, None, None),
                        ],
                    )
                },
                site(4096, Verdict::Steady, vec![]),
                Site {
                    allocator: "posix_memalign".into(),
                    outstanding_allocs: 1_234_567,
                    oldest_age_s: 3725.0,
                    growth_bytes_per_s: -3072.0,
                    ..site(1023 * 1024 * 1024, Verdict::Young, vec![])
                },
            ],
            goroutines: None,
            go_heap: None,
            memory: Memory {
                rss_bytes: Some(10 << 20),
                anon_bytes: Some(8 << 20),
                go_heap_bytes: None,
                cgroup_limit_bytes: None,
                ..Memory::default()
            },
            oom_kills: vec![],
            allocator: Allocator {
                path: "/usr/lib/x86_64-linux-gnu/libc.so.6".into(),
                name: "glibc".into(),
                probed: [
                    "malloc",
                    "calloc",
                    "realloc",
                    "free",
                    "posix_memalign",
                    "memalign",
                ]
                .map(String::from)
                .to_vec(),
                missing: vec!["pvalloc".into()],
                linked_into_executable: false,
                families: vec![],
            },
            ended_by: Some(EndedBy::Signal),
            escalations: None,
            reachability: None,
        }
    }

    fn assert_fits(text: &str) {
        for line in text.lines() {
            assert!(line.chars().count() <= WIDTH, "too wide: {line:?}");
        }
    }

    #[test]
    fn renders_sites_within_80_columns() {
        let text = render(&report());
        assert_fits(&text);
        for needle in [
            "leaktrace 0.1.0: final report (interrupted)",
            "target:      pid 1234 (leaky), language c",
            "executable:  ...ome/really/long/installation/directory/for/the/program/bin/leaky\n",
            "allocator:   glibc /usr/lib/x86_64-linux-gnu/libc.so.6",
            "missing:   pvalloc",
            "16.0 KiB in 14 allocs",
            "#1  12.0 KiB in 12 allocs  oldest 9.8s  +1.2 KiB/s  GROWING  via malloc",
            "    malloc  (libc.so.6)",
            "    fill_buffer (inlined)  leaky.c:8",
            "    leak_malloc  leaky.c:12",
            "...  vector.tcc:512",
            "    ??  0x7f1234567890\n",
            "    ??  0x7f1234567890  (libc.so.6)",
            "... (stack truncated)",
            "STEADY",
            "YOUNG",
            "-3.0 KiB/s",
            "oldest 1h02m",
            "rss 10.0 MiB, anon 8.0 MiB",
        ] {
            assert!(text.contains(needle), "{needle:?} missing in\n{text}");
        }
        // The site line that does not fit wraps instead of losing its verdict.
        assert!(text.contains("\n    via posix_memalign\n"), "{text}");
    }

    #[test]
    fn a_site_split_over_goroutine_creation_sites_lists_them() {
        let by = |function: &str, line, bytes| NativeByGoroutineSite {
            created_by: CodeLocation {
                function: Some(function.into()),
                file: Some("/src/app/main.go".into()),
                line: Some(line),
            },
            outstanding_bytes: bytes,
            outstanding_allocs: bytes / 1000,
        };
        let mut r = report();
        r.sites[0].goroutine_sites = vec![
            by("main.startA", 75, 300_000),
            by("main.startB", 82, 50_000),
        ];
        // One creation site only: the stack says it all.
        r.sites[1].goroutine_sites = vec![by("main.serve", 80, 4096)];
        let text = render(&r);
        assert_fits(&text);
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("by goroutines created at"))
            .collect();
        assert_eq!(
            lines,
            [
                "    by goroutines created at main.startA (main.go:75): 293.0 KiB",
                "    by goroutines created at main.startB (main.go:82): 48.8 KiB",
            ]
        );
    }

    #[test]
    fn an_escalated_site_shows_its_exact_figures() {
        let mut escalated = report();
        let escalations = Escalations::one_site("leak_malloc leaky.c:12", 5120, 80, 0);
        escalated.sites[0].escalated = Some(escalations.sites[0].figures.clone());
        escalated.escalations = Some(escalations);
        let text = render(&escalated);
        assert_fits(&text);
        assert!(
            text.ends_with(
                "Traced exactly since their estimate kept growing: 1 of at most 64 sites\n    \
                 leak_malloc leaky.c:12  since 4.0s: 5.0 KiB in 80 allocs\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("GROWING  via malloc\n    ESCALATED at 4.0s: exact since then 5.0 KiB in 80 allocs\n"),
            "{text}"
        );
    }

    #[test]
    fn a_namespaced_target_shows_both_pids() {
        let mut contained = report();
        contained.target.pid_in_namespace = Some(7);
        let text = render(&contained);
        assert!(
            text.contains("target:      pid 1234, pid 7 in its namespace (leaky), language c"),
            "{text}"
        );
        assert_fits(&text);
    }

    #[test]
    fn dropped_allocations_are_a_warning() {
        let text = render(&report());
        assert!(text.contains("DROPPED 123 allocations (alloc map full: 100, stack map full: 23)"));
        assert!(text.contains("lower bounds"), "{text}");
        assert!(text.contains("--max-allocs/--max-stacks"), "{text}");

        let mut clean = report();
        clean.totals.dropped = 0;
        let text = render(&clean);
        assert!(text.contains("dropped:     0"), "{text}");
        assert!(!text.contains("DROPPED"));
    }

    #[test]
    fn no_sites_names_the_min_age() {
        let mut empty = report();
        empty.sites.clear();
        empty.is_final = false;
        let text = render(&empty);
        assert_fits(&text);
        assert!(text.contains("leaktrace 0.1.0: report at 30.0s"), "{text}");
        assert!(text.contains("older than 5.0s (--min-age)"), "{text}");
        assert!(text.contains("14 younger allocations (16.0 KiB)"), "{text}");
    }

    #[test]
    fn goroutines_and_oom_kills_have_sections() {
        let mut go = report();
        go.target.language = Language::Go;
        let place = |function: &str, file: &str, line| CodeLocation {
            function: Some(function.into()),
            file: Some(file.into()),
            line: Some(line),
        };
        go.goroutines = Some(Goroutines {
            live: 412,
            sites: vec![GoroutineSite {
                created_by: place("main.leakTimeout", "/src/main.go", 41),
                start_function: Some("main.leakTimeout.func1".into()),
                live: 100,
                growth_per_s: 10.0,
                verdict: Verdict::Growing,
                states: [("chan send".to_owned(), 100)].into(),
                blocked_at: Some(place("main.leakTimeout.func1", "main.go", 43)),
                blocked_at_count: 100,
                oldest_age_s: Some(9.5),
            }],
            created: 120,
            exited: 20,
            dropped: 0,
            cgo_stacks_joined: 0,
            runtime_mmap_bytes: 0,
            coverage: "all",
        });
        go.oom_kills = vec![OomKill {
            pid: 1234,
            comm: "leaky".into(),
            time: "2026-11-23T13:00:29Z".into(),
            source: "tracepoint".into(),
            cgroup: Some("/kubepods/burstable/pod0123456789abcdef/0123456789abcdef".into()),
            anon_rss_kb: Some(65280),
        }];
        let text = render(&go);
        assert_fits(&text);
        for needle in [
            "Goroutines: 412 live (120 created, 20 exited while traced)",
            "#1  100 live  +10.0/s  GROWING  main.leakTimeout.func1",
            "    created by main.leakTimeout  main.go:41",
            "    blocked at main.leakTimeout.func1  main.go:43",
            "    states: chan send 100",
            "OOM kills: 1",
            "pid 1234 (leaky)  anon-rss 63.8 MiB",
            "[tracepoint]",
        ] {
            assert!(text.contains(needle), "{needle:?} missing in\n{text}");
        }
    }
}
