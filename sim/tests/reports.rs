//! The committed reports in `reports/` are snapshots: each must equal what
//! this build renders for its scenario's default seed, byte for byte. When
//! behaviour changes on purpose, regenerate them and review the diff:
//!
//!     UPDATE_REPORTS=1 cargo test -p sim --test reports
//!     (or: cargo run -p sim -- reports)

use sim::report::{
    render_markdown, render_verdict_markdown, verdict, ScenarioReport, VERDICT_SEEDS,
};
use sim::scenario::Scenario;
use sim::study::{committed_study, Knob};
use std::path::Path;

#[test]
fn committed_reports_match_this_build() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../reports");
    let update = std::env::var("UPDATE_REPORTS").is_ok_and(|v| v == "1");
    let mut stale = Vec::new();
    for name in Scenario::known() {
        let s = Scenario::embedded(&name).unwrap();
        let md = render_markdown(&ScenarioReport::run(&s, s.seed, &s.presets));
        let path = dir.join(format!("{name}.md"));
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &md).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(committed) if committed == md => {}
            Ok(_) => stale.push(format!("{} differs", path.display())),
            Err(e) => stale.push(format!("{} unreadable: {e}", path.display())),
        }
    }
    assert!(
        stale.is_empty(),
        "snapshot reports are stale (UPDATE_REPORTS=1 cargo test -p sim --test reports, then review the diff):\n{}",
        stale.join("\n")
    );
}

/// The verdict page sums up every scenario's first seeds under every
/// preset; like the reports, it must be what this build renders.
#[test]
fn committed_verdict_matches_this_build() {
    let scenarios: Vec<Scenario> = Scenario::known()
        .iter()
        .map(|n| Scenario::embedded(n).unwrap())
        .collect();
    let jobs = std::thread::available_parallelism().map_or(1, usize::from);
    let md = render_verdict_markdown(&verdict(&scenarios, VERDICT_SEEDS, jobs), VERDICT_SEEDS);
    matches_committed("README.md", &md);
}

/// The batch-size study (the plan's open question 2) is a committed page
/// too: sizes, seeds and scenarios fixed in `study.rs`.
#[test]
fn committed_batch_size_study_matches_this_build() {
    let jobs = std::thread::available_parallelism().map_or(1, usize::from);
    let k = Knob::MaxPerType;
    matches_committed(k.page(), &committed_study(k, jobs));
}

/// So is the debounce study (open question 1).
#[test]
fn committed_debounce_study_matches_this_build() {
    let jobs = std::thread::available_parallelism().map_or(1, usize::from);
    let k = Knob::DebounceMs;
    matches_committed(k.page(), &committed_study(k, jobs));
}

/// `reports/FILE` must be `md`; with `UPDATE_REPORTS=1` it is written
/// instead.
fn matches_committed(file: &str, md: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../reports")
        .join(file);
    if std::env::var("UPDATE_REPORTS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, md).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == md,
        "{} is stale (UPDATE_REPORTS=1 cargo test -p sim --test reports, then review the diff)",
        path.display()
    );
}

#[test]
fn same_seed_same_bytes() {
    let s = Scenario::embedded("offline-reconnect").unwrap();
    let a = render_markdown(&ScenarioReport::run(&s, 11, &s.presets));
    let b = render_markdown(&ScenarioReport::run(&s, 11, &s.presets));
    assert_eq!(a, b);
}
