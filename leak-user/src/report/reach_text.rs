//! The text report's reachability lines (`--reachability`): per site, what the last scan found
//! and what it means together with the growth verdict; one summary line for the scan.
use super::{
    model::{Reachability, Report, Site, Verdict},
    units,
};

/// The lines under a site's head line (without indentation); none before a scan.
pub fn site_lines(site: &Site) -> Vec<String> {
    let Some(reach) = site.reachability else {
        return Vec::new();
    };
    let growing = site.verdict == Verdict::Growing;
    if reach.unreachable_bytes == 0 {
        let mut lines = vec!["reachable: every block is still referenced".to_owned()];
        if growing {
            lines.push(
                "growing but reachable: a growing structure, not a lost pointer; look at who \
                 holds it (a list, cache or map that only grows)"
                    .to_owned(),
            );
        }
        return lines;
    }
    let direct = reach.unreachable_bytes - reach.indirect_bytes;
    let what = match (direct, reach.indirect_bytes) {
        (_, 0) => "definitely lost".to_owned(),
        (0, _) => "indirectly lost".to_owned(),
        (d, i) => format!(
            "definitely lost {}, indirectly lost {}",
            units::bytes(d),
            units::bytes(i)
        ),
    };
    let mut lines = vec![format!(
        "UNREACHABLE {} in {} allocs ({what})",
        units::bytes(reach.unreachable_bytes),
        reach.unreachable_allocs
    )];
    if growing {
        lines.push("growing and unreachable: a certain leak".to_owned());
    }
    lines
}

/// `reachability: 10.6 KiB unreachable (19 blocks, 1.2 KiB indirect), paused 7.0 ms`.
pub fn summary(report: &Report) -> Option<String> {
    let scan: &Reachability = report.reachability.as_ref()?;
    Some(format!(
        "reachability: {} unreachable ({} blocks, {} indirect), paused {:.1} ms{}",
        units::bytes(scan.unreachable_bytes),
        scan.unreachable_allocs,
        units::bytes(scan.indirect_bytes),
        scan.pause_ms,
        if scan.consistent { "" } else { ", 2 passes" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::SiteReachability;

    fn site(verdict: Verdict, lost: u64, indirect: u64) -> Site {
        Site {
            outstanding_bytes: 307_200,
            outstanding_allocs: 300,
            oldest_age_s: 9.0,
            growth_bytes_per_s: 1000.0,
            verdict,
            allocator: "malloc".into(),
            frames: Vec::new(),
            total_allocs: 300,
            total_bytes: 307_200,
            reachability: Some(SiteReachability {
                unreachable_bytes: lost,
                unreachable_allocs: lost / 1024,
                indirect_bytes: indirect,
                indirect_allocs: indirect / 1024,
            }),
            stack_id: 7,
            ..Site::example()
        }
    }

    #[test]
    fn lost_and_growing_is_a_certain_leak() {
        assert_eq!(
            site_lines(&site(Verdict::Growing, 307_200, 0)),
            [
                "UNREACHABLE 300.0 KiB in 300 allocs (definitely lost)",
                "growing and unreachable: a certain leak"
            ]
        );
        assert_eq!(
            site_lines(&site(Verdict::Steady, 307_200, 102_400)),
            [
                "UNREACHABLE 300.0 KiB in 300 allocs (definitely lost 200.0 KiB, indirectly lost 100.0 KiB)"
            ]
        );
    }

    #[test]
    fn growing_but_reachable_points_at_the_holder() {
        let lines = site_lines(&site(Verdict::Growing, 0, 0));
        assert_eq!(lines[0], "reachable: every block is still referenced");
        assert!(lines[1].starts_with("growing but reachable: a growing structure"));
        assert!(
            site_lines(&Site {
                reachability: None,
                ..site(Verdict::Growing, 0, 0)
            })
            .is_empty()
        );
    }
}
