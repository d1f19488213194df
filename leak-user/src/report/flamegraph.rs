//! `--format svg`: an interactive flame graph (inferno) of the outstanding bytes of every call
//! site holding allocations older than `--min-age`: the folded stacks of `--format folded`,
//! drawn. Open it in a browser: click to zoom, Ctrl-F to search.
use inferno::flamegraph::{self, Options, color::BasicPalette, color::Palette};
use thiserror::Error;

use super::{folded, model::Report, units};

#[derive(Debug, Error)]
#[error("cannot draw the flame graph: {0}")]
pub struct FlamegraphError(#[source] std::io::Error);

pub fn render(report: &Report) -> Result<Vec<u8>, FlamegraphError> {
    let stacks = folded::stacks(report);
    let min_age = units::duration(report.settings.min_age_s);
    if stacks.is_empty() {
        return Ok(empty(report, &min_age).into_bytes());
    }
    let lines: Vec<String> = stacks
        .iter()
        .map(|(stack, bytes)| format!("{stack} {bytes}"))
        .collect();

    let mut options = Options::default();
    options.title = title(report);
    options.subtitle = Some(format!(
        "{} held by allocations older than {min_age}, after {} ({} {})",
        units::bytes(stacks.iter().map(|(_, b)| *b).sum()),
        units::duration(report.duration_s),
        report.tool,
        report.version,
    ));
    options.count_name = "bytes".to_owned();
    options.colors = Palette::Basic(BasicPalette::Mem);
    options.hash = true;
    options.deterministic = true;

    let mut svg = Vec::new();
    flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), &mut svg)
        .map_err(FlamegraphError)?;
    Ok(svg)
}

fn title(report: &Report) -> String {
    format!(
        "Outstanding memory of {} (pid {})",
        report.target.comm, report.target.pid
    )
}

/// inferno draws nothing but an error for no stacks; say what happened instead.
fn empty(report: &Report, min_age: &str) -> String {
    let text = format!(
        "{}: no call site holds allocations older than {min_age} (--min-age)",
        title(report)
    );
    format!(
        "<?xml version=\"1.0\" standalone=\"no\"?>\n\
         <svg version=\"1.1\" width=\"1200\" height=\"60\" xmlns=\"http://www.w3.org/2000/svg\">\n\
         <text x=\"600\" y=\"34\" text-anchor=\"middle\" font-family=\"Verdana\" \
         font-size=\"14\">{}</text>\n</svg>\n",
        xml_escape(&text)
    )
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::{Frame, Site, Verdict};

    fn site(bytes: u64, names: &[&str]) -> Site {
        Site {
            outstanding_bytes: bytes,
            outstanding_allocs: 1,
            oldest_age_s: 1.0,
            growth_bytes_per_s: 0.0,
            verdict: Verdict::Growing,
            allocator: "malloc".into(),
            frames: names
                .iter()
                .map(|n| Frame {
                    address: "0x1".into(),
                    function: Some((*n).to_owned()),
                    file: None,
                    line: None,
                    module: None,
                    inlined: false,
                })
                .collect(),
            total_allocs: 1,
            total_bytes: bytes,
            ..Site::example()
        }
    }

    #[test]
    fn draws_the_stacks() {
        let report = crate::report::pprof::tests::report(vec![
            site(4096, &["malloc", "leak_big", "main"]),
            site(100, &["malloc", "std::vector<int>::push", "main"]),
        ]);
        let svg = String::from_utf8(render(&report).expect("svg")).expect("utf-8");
        assert!(svg.starts_with("<?xml"), "{svg}");
        assert!(svg.contains("leak_big"));
        assert!(svg.contains("std::vector&lt;int&gt;::push"));
        assert!(svg.contains("Outstanding memory of leaky (pid 1)"));
        assert!(svg.contains("4,096 bytes"), "{svg}");
    }

    #[test]
    fn no_stacks_is_a_message() {
        let report = crate::report::pprof::tests::report(vec![]);
        let svg = String::from_utf8(render(&report).expect("svg")).expect("utf-8");
        assert!(svg.contains("no call site holds allocations older than 0ms"));
        assert!(svg.ends_with("</svg>\n"));
    }
}
