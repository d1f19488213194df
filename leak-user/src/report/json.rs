//! `--format json`: the contract of `shared/report-schema.md`.
use super::model::Report;

pub fn render(report: &Report) -> String {
    // Serializing plain structs of strings and numbers cannot fail.
    let mut out = serde_json::to_string_pretty(report).unwrap_or_else(|e| {
        format!("{{\"tool\":\"leaktrace\",\"error\":\"cannot serialize report: {e}\"}}")
    });
    out.push('\n');
    out
}
