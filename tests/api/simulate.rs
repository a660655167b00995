//! `offpeak simulate` as a user runs it: the real binary, a short scenario, the contract's
//! last line, byte-for-byte determinism, JSON, the chart, and a bad scenario refused.

use crate::first_start::BIN;
use std::process::Command;

fn simulate(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(BIN)
        .arg("simulate")
        .args(args)
        .env_clear()
        .output()
        .expect("offpeak simulate runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn simulate_prints_every_mechanism_and_the_summary_line_the_same_every_time() {
    let (code, first, stderr) = simulate(&["--days", "1", "--seed", "7"]);
    assert_eq!(code, 0, "{stderr}");
    for mechanism in ["continuous", "batch", "posted", "best_posted", "none"] {
        assert!(first.contains(mechanism), "{mechanism} in {first}");
    }
    let last = first.lines().last().unwrap_or_default();
    let fields: Vec<&str> = last.split(' ').collect();
    assert_eq!(fields[0], "simulate:", "{last}");
    let names: Vec<&str> = fields[1..]
        .iter()
        .map(|f| f.split_once('=').map_or("", |(k, _)| k))
        .collect();
    assert_eq!(
        names,
        [
            "mechanism",
            "sold_pct",
            "revenue_vs_posted",
            "revenue_vs_best_posted",
            "efficiency_pct",
            "notices_honoured_pct"
        ],
        "{last}"
    );
    assert!(
        last.starts_with("simulate: mechanism=continuous ")
            || last.starts_with("simulate: mechanism=batch "),
        "{last}"
    );
    let (_, again, _) = simulate(&["--days", "1", "--seed", "7"]);
    assert_eq!(first, again, "the same seed prints the same report");
    let (_, other, _) = simulate(&["--days", "1", "--seed", "8"]);
    assert_ne!(first, other, "another seed, another market");
}

#[test]
fn simulate_writes_json_and_a_chart_and_refuses_a_bad_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("run.svg");
    let chart_arg = chart.display().to_string();
    let (code, out, stderr) = simulate(&["--days", "1", "--json", "--chart", &chart_arg]);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert!(report.is_object(), "{report}");
    let svg = std::fs::read_to_string(&chart).expect("the chart was written");
    assert!(svg.contains("<svg"), "{}", &svg[..svg.len().min(200)]);

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"days": -3}"#).unwrap();
    let (code, _, stderr) = simulate(&["--scenario", &bad.display().to_string()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
}
