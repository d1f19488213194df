//! `--always-on`'s escalation: a call site whose sampled estimate has the `growing` verdict
//! for [`GROWING_INTERVALS`] intervals in a row is traced exactly from then on, so the report
//! names it with exact figures without tracing everything. The kernel side knows a site by the
//! return address of its allocator call (the stack's second frame): every stack that shares
//! that caller (a wrapper such as `strdup`) is traced exactly with it.
mod kernel;

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use leak_common::escalation::MAX_SITES;

pub use kernel::install;

use crate::report::model::Verdict;

/// Consecutive `growing` verdicts before a site is escalated: one interval can rise by chance
/// (a churning site's samples go up and down), three in a row rarely do.
pub const GROWING_INTERVALS: u32 = 3;

/// One escalated call site.
#[derive(Debug, Clone, PartialEq)]
pub struct Escalated {
    /// The stack whose growth escalated it.
    pub stack_id: u64,
    pub return_address: u64,
    /// Seconds into the run, and when, once the kernel traced it exactly.
    pub at_s: f64,
    pub at: DateTime<Utc>,
    /// The site's name, as in the metrics (`function file:line`).
    pub name: String,
}

/// What becomes of a stack that kept growing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Trace its call site exactly.
    Escalate,
    /// Its call site is traced exactly already (another stack through the same caller).
    AlreadyExact,
    /// The escalated set is full: counted, and the site stays sampled.
    Refused,
}

/// The escalation state of a run: bounded by the kernel's stacks (streaks) and `MAX_SITES`.
#[derive(Debug, Default)]
pub struct Escalation {
    /// Consecutive growing verdicts of each stack growing now.
    streaks: HashMap<u64, u32>,
    /// Growing stacks decided already (refused or exact already), while they keep growing.
    settled: HashSet<u64>,
    /// Escalated sites by return address.
    sites: BTreeMap<u64, Escalated>,
    refused: u64,
}

impl Escalation {
    /// Takes this interval's verdict of every stack with outstanding blocks; returns the
    /// stacks that have grown for `GROWING_INTERVALS` intervals in a row and wait for a
    /// decision.
    pub fn candidates(&mut self, verdicts: impl IntoIterator<Item = (u64, Verdict)>) -> Vec<u64> {
        let previous = std::mem::take(&mut self.streaks);
        for (stack, verdict) in verdicts {
            if stack != 0 && verdict == Verdict::Growing {
                let streak = previous.get(&stack).copied().unwrap_or(0) + 1;
                self.streaks.insert(stack, streak);
            }
        }
        self.settled.retain(|s| self.streaks.contains_key(s));
        let escalated: HashSet<u64> = self.sites.values().map(|s| s.stack_id).collect();
        let mut ready: Vec<u64> = self
            .streaks
            .iter()
            .filter(|&(s, &n)| {
                n >= GROWING_INTERVALS && !self.settled.contains(s) && !escalated.contains(s)
            })
            .map(|(&s, _)| s)
            .collect();
        ready.sort_unstable();
        ready
    }

    /// Decides a candidate whose allocator call returns to `return_address`. `Escalate` is a
    /// promise: [`Escalation::record`] follows once the kernel has it.
    pub fn decide(&mut self, stack_id: u64, return_address: u64) -> Decision {
        let decision = if self.sites.contains_key(&return_address) {
            Decision::AlreadyExact
        } else if self.sites.len() >= MAX_SITES as usize {
            self.refused += 1;
            Decision::Refused
        } else {
            return Decision::Escalate;
        };
        self.settled.insert(stack_id);
        decision
    }

    pub fn record(&mut self, site: Escalated) {
        self.sites.insert(site.return_address, site);
    }

    /// The escalated site a stack's allocator call returning to `return_address` belongs to.
    pub fn site(&self, return_address: u64) -> Option<&Escalated> {
        self.sites.get(&return_address)
    }

    /// Escalated sites, in the order they were escalated.
    pub fn sites(&self) -> Vec<&Escalated> {
        let mut sites: Vec<&Escalated> = self.sites.values().collect();
        sites.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        sites
    }

    pub fn len(&self) -> u32 {
        self.sites.len() as u32
    }

    /// Sites that kept growing while the escalated set was full.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Verdict::{Growing, Steady, Young};

    fn site(stack_id: u64, return_address: u64) -> Escalated {
        Escalated {
            stack_id,
            return_address,
            at_s: stack_id as f64,
            at: Utc::now(),
            name: format!("site{stack_id}"),
        }
    }

    #[test]
    fn three_growing_intervals_in_a_row_make_a_candidate() {
        let mut e = Escalation::default();
        assert!(e.candidates([(7, Young), (9, Growing)]).is_empty());
        assert!(e.candidates([(7, Growing), (9, Growing)]).is_empty());
        assert_eq!(e.candidates([(7, Growing), (9, Growing)]), vec![9]);
        assert_eq!(e.candidates([(7, Growing), (9, Growing)]), vec![7, 9]);
    }

    #[test]
    fn a_pause_in_growth_starts_the_count_again() {
        let mut e = Escalation::default();
        e.candidates([(5, Growing)]);
        e.candidates([(5, Growing)]);
        e.candidates([(5, Steady)]);
        assert!(e.candidates([(5, Growing)]).is_empty());
        assert!(e.candidates([(5, Growing)]).is_empty());
        assert_eq!(e.candidates([(5, Growing)]), vec![5]);
        // A stack that vanished (its blocks freed) loses its streak too.
        assert!(e.candidates([]).is_empty());
        assert!(e.candidates([(5, Growing)]).is_empty());
    }

    #[test]
    fn escalated_stacks_are_not_candidates_again() {
        let mut e = Escalation::default();
        for _ in 0..2 {
            e.candidates([(1, Growing), (2, Growing)]);
        }
        assert_eq!(e.candidates([(1, Growing), (2, Growing)]), vec![1, 2]);
        assert_eq!(e.decide(1, 0x400100), Decision::Escalate);
        e.record(site(1, 0x400100));
        // Another stack through the same caller is exact already, and settled.
        assert_eq!(e.decide(2, 0x400100), Decision::AlreadyExact);
        assert!(e.candidates([(1, Growing), (2, Growing)]).is_empty());
        assert_eq!(e.site(0x400100).map(|s| s.stack_id), Some(1));
        assert_eq!(e.len(), 1);
    }

    #[test]
    fn a_full_set_refuses_and_counts_each_site_once() {
        let mut e = Escalation::default();
        for i in 0..u64::from(MAX_SITES) {
            assert_eq!(e.decide(i + 1, 0x1000 + i), Decision::Escalate);
            e.record(site(i + 1, 0x1000 + i));
        }
        let verdicts = [(100, Growing)];
        for _ in 0..2 {
            e.candidates(verdicts);
        }
        assert_eq!(e.candidates(verdicts), vec![100]);
        assert_eq!(e.decide(100, 0x9999), Decision::Refused);
        assert!(e.candidates(verdicts).is_empty());
        assert_eq!((e.len(), e.refused()), (MAX_SITES, 1));
    }
}
