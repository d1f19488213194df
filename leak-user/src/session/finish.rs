//! The end of a run: the final report, then detaching and stopping a launched command.
use anyhow::Result;
use aya::Ebpf;

use super::{Run, go_target};
use crate::{
    cli::Format,
    collect, launch,
    report::{model::EndedBy, output},
    uprobe_multi::MultiLinks,
};

impl Run<'_> {
    /// Writes the final report, then detaches and stops a launched command.
    pub(super) fn finish(mut self, ended_by: EndedBy) -> Result<()> {
        if let Some(hook) = self.dlopen_hook.take() {
            hook.finish(&mut self.ebpf);
        }
        // A kill the watch had not delivered yet when the target's exit was noticed.
        let mut ended_by = ended_by;
        if let Some(watch) = self.oom_watch.as_mut()
            && self.session.note_oom_kills(&watch.pending())
        {
            ended_by = EndedBy::OomKilled;
        }
        self.status.clear();
        self.write_final_report(ended_by)?;
        if self.bpf_stats.is_some() {
            print_bpf_stats(&self.ebpf, self.multi_links.as_ref());
        }
        // Detaching waits for the kernel to retire each probe (a grace period apiece, under a
        // kernel lock: closing them from several threads takes as long), so it comes after the
        // report is out. The uprobe_multi links (one grace period for all) go meanwhile.
        let (ebpf, multi_links) = (self.ebpf, self.multi_links.take());
        std::thread::scope(|scope| {
            scope.spawn(|| drop(multi_links));
            drop(ebpf);
        });
        if let Some(mut launched) = self.launched.take() {
            launched.stop(launch::STOP_GRACE);
        }
        Ok(())
    }

    fn write_final_report(&mut self, ended_by: EndedBy) -> Result<()> {
        let options = self.options;
        // A target that is gone keeps the last scan's figures.
        if !matches!(ended_by, EndedBy::TargetExited | EndedBy::OomKilled) {
            self.session.scan_reachability(&self.ebpf);
        }
        let snapshot = self.session.sample(&self.ebpf, self.multi_links.as_ref())?;
        // Profiles show every site older than --min-age; --top cuts the other formats.
        let top = if options.format.is_profile() {
            usize::MAX
        } else {
            options.top
        };
        let report = self.session.report(
            &self.ebpf,
            &snapshot,
            &mut self.symbolizer,
            Some(ended_by),
            top,
        );
        if let Some(metrics) = &self.metrics {
            metrics.update(&report);
        }
        let tables = &self.tables;
        if !tables.objects_without_room.is_empty() {
            log::warn!(
                "unwind rows ran out (--max-unwind-rows): frame pointers used for {}",
                tables.objects_without_room.join(", ")
            );
        }
        if !tables.objects_unwound_from_code.is_empty() {
            log::info!(
                "unwound from machine code (no CFI): {}",
                tables.objects_unwound_from_code.join(", ")
            );
        }
        self.sink.write(&output::render(options.format, &report)?)?;
        if options.format == Format::Pprof {
            go_target::write_goroutine_profile(&report, options.output.as_deref(), options.quiet)?;
            go_target::write_goheap_profile(&report, options.output.as_deref(), options.quiet)?;
        }
        Ok(())
    }
}

/// `--bpf-stats`: one line per program that ran: `leaktrace: bpf-stats NAME RUNS NS_PER_RUN`.
fn print_bpf_stats(ebpf: &Ebpf, multi_links: Option<&MultiLinks>) {
    let aya_programs = ebpf
        .programs()
        .filter_map(|(name, program)| Some((name, collect::prog_info::stats(program).ok()?)));
    let multi_programs = multi_links.into_iter().flat_map(|m| {
        m.programs()
            .filter_map(|(name, fd)| Some((name, collect::prog_info::stats_of_fd(fd).ok()?)))
    });
    for (name, stats) in aya_programs.chain(multi_programs) {
        if stats.run_count > 0 {
            let ns = stats.run_time_ns as f64 / stats.run_count as f64;
            eprintln!("leaktrace: bpf-stats {name} {} {ns:.1}", stats.run_count);
        }
    }
}
