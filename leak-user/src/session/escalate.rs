//! `--always-on`: at every sample, the stacks that kept growing have their call site traced
//! exactly from then on (see `crate::escalation`).
use anyhow::Result;

use super::Run;
use crate::{
    collect::{self, Snapshot},
    escalation::{self, Decision, Escalated},
    metrics, report,
};

impl Run<'_> {
    /// Escalates the call sites whose sampled estimate has been growing long enough.
    pub(super) fn escalate_growing_sites(&mut self, snapshot: &Snapshot) -> Result<()> {
        let session = &mut self.session;
        let Some(state) = session.escalation.as_mut() else {
            return Ok(());
        };
        let history = &session.history;
        let candidates = state.candidates(
            snapshot
                .by_stack
                .keys()
                .map(|&id| (id, history.assess(id).verdict)),
        );
        for stack_id in candidates {
            // The allocator call's return address: the stack's second frame.
            let Some(trace) = collect::stack(&self.ebpf, stack_id)? else {
                continue;
            };
            let len = (trace.len as usize).min(trace.pcs.len());
            if len < 2 {
                continue;
            }
            let return_address = trace.pcs[1];
            let name = metrics::frames_name(
                &self.symbolizer.symbolize(&trace.pcs[..len]),
                &session.target.exe.display().to_string(),
            );
            match state.decide(stack_id, return_address) {
                Decision::Escalate => {}
                Decision::AlreadyExact => continue,
                Decision::Refused => {
                    log::warn!("{name} keeps growing, but the escalated set is full");
                    continue;
                }
            }
            // A map that refuses the site leaves it sampled; the run goes on.
            if let Err(error) = escalation::install(&mut self.ebpf, return_address, state.len() + 1)
            {
                log::warn!("cannot trace {name} exactly: {error}");
                continue;
            }
            // From the moment the kernel has it: the exact figures start here.
            let site = Escalated {
                stack_id,
                return_address,
                at_s: session.started.elapsed().as_secs_f64(),
                at: report::now_utc(),
                name,
            };
            if !self.options.quiet {
                eprintln!(
                    "leaktrace: {} is growing: traced exactly from now on ({:.1}s into the run)",
                    crate::escape::control_chars(&site.name),
                    site.at_s
                );
            }
            state.record(site);
        }
        Ok(())
    }
}
