//! The run loop: one method per event, until the run ends.
use anyhow::Result;
use leak_common::counter;
use tokio::time::{interval, sleep_until};

use super::{MAPPINGS_REFRESH, Run, STARTUP_WINDOW, far_future, history_tick};
use crate::{
    cli::Format,
    collect,
    oom::watch::{OomWatch, Victim, WatchError},
    report::{self, model::EndedBy, output},
    unwind::dlopen::{DlopenHook, HookError},
};

impl Run<'_> {
    /// Samples, reports and keeps the unwind tables current until the duration, a signal, the
    /// target's exit or its OOM kill ends the run.
    pub(super) async fn run_loop(&mut self) -> Result<EndedBy> {
        loop {
            let ended_by = tokio::select! {
                _ = self.ticks.sample.tick() => {
                    self.on_sample_tick()?;
                    None
                }
                _ = sleep_until(self.history_tick.due_at()) => {
                    self.on_history_tick()?;
                    None
                }
                _ = self.ticks.status.tick(), if self.status.enabled() => {
                    self.on_status_tick();
                    None
                }
                _ = self.ticks.refresh.tick() => {
                    self.on_refresh_tick()?;
                    None
                }
                stop = next_dlopen_stop(self.dlopen_hook.as_mut()) => {
                    self.on_dlopen_stop(stop)?;
                    None
                }
                victims = next_victims(self.oom_watch.as_mut()) => self.on_oom_victims(victims),
                _ = next_signal(self.signals.scan_request.as_mut()) => {
                    self.session.scan_reachability(&self.ebpf);
                    None
                }
                _ = self.signals.interrupt.recv() => Some(EndedBy::Signal),
                _ = self.signals.terminate.recv() => Some(EndedBy::Signal),
                _ = self.exit_watch.readable() => Some(EndedBy::TargetExited),
                _ = sleep_until(self.ticks.deadline.unwrap_or_else(far_future)),
                    if self.ticks.deadline.is_some() => Some(EndedBy::Duration),
            };
            if let Some(ended_by) = ended_by {
                return Ok(ended_by);
            }
        }
    }

    /// A sample of the maps; the periodic report where one is shown, streamed or served.
    fn on_sample_tick(&mut self) -> Result<()> {
        if self
            .session
            .reach
            .as_mut()
            .is_some_and(|r| r.interval_due())
        {
            self.session.scan_reachability(&self.ebpf);
        }
        let snapshot = self.session.sample(&self.ebpf, self.multi_links.as_ref())?;
        self.session
            .make_room_for_stacks(&mut self.ebpf, &snapshot)?;
        self.escalate_growing_sites(&snapshot)?;
        self.status.sampled(snapshot.outstanding_bytes);
        let options = self.options;
        // --always-on runs for days: no periodic text reports (the metrics have them).
        let text = options.format == Format::Text
            && options.output.is_none()
            && !options.quiet
            && !options.always_on;
        let jsonl = options.format == Format::Jsonl;
        if !(text || jsonl || self.metrics.is_some()) {
            return Ok(());
        }
        let report = self.session.report(
            &self.ebpf,
            &snapshot,
            &mut self.symbolizer,
            None,
            options.top,
        );
        if let Some(metrics) = &self.metrics {
            metrics.update(&report);
        }
        if text {
            self.status.clear();
            print!("{}", report::text::render(&report));
        }
        if jsonl {
            self.sink.write(output::json_line(&report).as_bytes())?;
        }
        Ok(())
    }

    /// Each stack's outstanding bytes into the verdicts' history, between reports.
    fn on_history_tick(&mut self) -> Result<()> {
        let (wall, cpu) = (std::time::Instant::now(), history_tick::thread_cpu_time());
        let (by_stack, blocks) =
            collect::outstanding_bytes_by_stack(&self.ebpf, self.session.settings.sample_bytes)?;
        let t_s = self.session.started.elapsed().as_secs_f64();
        self.session.history.record_values(t_s, by_stack);
        let cost = history_tick::thread_cpu_time().saturating_sub(cpu);
        log::debug!(
            "history sample: {blocks} blocks in {:?} ({cost:?} of CPU)",
            wall.elapsed()
        );
        self.history_tick.read_took(cost);
        Ok(())
    }

    fn on_status_tick(&mut self) {
        if let Ok(c) = collect::counters(&self.ebpf) {
            let dropped = c.get(counter::DROP_ALLOC_MAP_FULL)
                + c.get(counter::DROP_STACK_MAP_FULL)
                + c.get(counter::DROP_IN_FLIGHT_FULL);
            self.status.show(
                self.session.started.elapsed(),
                c.get(counter::ALLOCS),
                dropped,
            );
        }
    }

    /// New mappings (dlopen, exec) get their unwind rows and symbols.
    fn on_refresh_tick(&mut self) -> Result<()> {
        // A command that re-executed itself stops at its entry point again: its new tables go
        // in before it runs on.
        let reexecuted = self
            .launched
            .as_ref()
            .filter(|l| l.stopped_at_entry_again());
        self.tables.sync(&mut self.ebpf)?;
        self.symbolizer.refresh()?;
        if let Some(launched) = reexecuted {
            launched.resume();
        }
        if self.ticks.startup && self.session.started.elapsed() > STARTUP_WINDOW {
            self.ticks.startup = false;
            self.ticks.refresh = interval(MAPPINGS_REFRESH);
        }
        Ok(())
    }

    fn on_dlopen_stop(&mut self, stop: Result<(), HookError>) -> Result<()> {
        match stop {
            // The target is stopped in its loader: the new object's rows go in first.
            Ok(()) => {
                self.tables.sync(&mut self.ebpf)?;
                self.symbolizer.refresh()?;
                if let Some(hook) = self.dlopen_hook.as_mut() {
                    hook.resume();
                }
            }
            Err(error) => {
                log::warn!("stopped watching dlopen: {error}");
                self.dlopen_hook = None;
            }
        }
        Ok(())
    }

    /// Ends the run when the target itself was killed.
    fn on_oom_victims(&mut self, victims: Result<Vec<Victim>, WatchError>) -> Option<EndedBy> {
        match victims {
            Ok(victims) => self
                .session
                .note_oom_kills(&victims)
                .then_some(EndedBy::OomKilled),
            Err(error) => {
                log::warn!("stopped watching OOM kills: {error}");
                self.oom_watch = None;
                None
            }
        }
    }
}

/// The next stop in the target's loader, or never when dlopen is not watched.
async fn next_dlopen_stop(hook: Option<&mut DlopenHook>) -> Result<(), HookError> {
    match hook {
        Some(hook) => hook.next_stop().await,
        None => std::future::pending().await,
    }
}

/// The next delivery of a signal, or never when it is not handled.
async fn next_signal(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// The next OOM victims, or never when the tracepoint is not watched.
async fn next_victims(watch: Option<&mut OomWatch>) -> Result<Vec<Victim>, WatchError> {
    match watch {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
}
