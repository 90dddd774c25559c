//! Reports: one scenario, one seed, the presets side by side, as Markdown
//! (for `reports/` and pull requests) or JSON (for tools).
//!
//! Rendering is a pure function of the runs: the same scenario, seed and
//! build give byte-identical output (no clock, no hash-map order).

use crate::checker::{CheckResult, CHECKERS};
use crate::metrics::RunMetrics;
use crate::scenario::Scenario;
use crate::world::run_checked;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use sync_core::engine::Preset;

/// One preset's run.
#[derive(Clone, Debug, Serialize)]
pub struct PresetRun {
    pub preset: Preset,
    pub metrics: RunMetrics,
    pub verdicts: Vec<CheckResult>,
}

impl PresetRun {
    pub fn ok(&self) -> bool {
        self.verdicts.iter().all(|v| v.ok)
    }
}

/// A scenario's report for one seed.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioReport {
    pub scenario: String,
    pub summary: String,
    pub seed: u64,
    /// The options the seed expanded to (swarm testing).
    pub options: BTreeMap<String, String>,
    pub runs: Vec<PresetRun>,
    /// `Scenario::replay_target`: what replay commands name.
    #[serde(skip)]
    pub replay_target: String,
}

impl ScenarioReport {
    /// Runs the given presets of a scenario on one seed.
    pub fn run(s: &Scenario, seed: u64, presets: &[Preset]) -> ScenarioReport {
        let params = s.world_params();
        let mut options =
            crate::nemesis::plan(&params.faults, params.workload.users, seed).describe();
        options.insert(
            "edits_per_user".into(),
            (params.workload.edits + params.workload.initial_backlog).to_string(),
        );
        let runs = presets
            .iter()
            .map(|p| {
                let r = run_checked(&params, seed, s.engine_config(*p), false);
                PresetRun {
                    preset: *p,
                    metrics: r.metrics,
                    verdicts: r.verdicts,
                }
            })
            .collect();
        ScenarioReport {
            scenario: s.name.clone(),
            summary: s.summary.clone(),
            seed,
            options,
            runs,
            replay_target: s.replay_target(),
        }
    }

    /// Whether the hardened preset (if it ran) held every invariant.
    pub fn hardened_ok(&self) -> bool {
        self.runs
            .iter()
            .filter(|r| r.preset == Preset::Hardened)
            .all(PresetRun::ok)
    }
}

/// The ` --bug NAME` flag a command repeats for a planted bug; empty
/// without one.
pub fn bug_flag(bug: Option<&str>) -> String {
    bug.map(|b| format!(" --bug {b}")).unwrap_or_default()
}

/// The command that replays one preset of one seed; `target` is
/// `Scenario::replay_target` (the name, with `--file` for a scenario loaded
/// from a file).
pub fn replay_command(target: &str, seed: u64, preset: Preset) -> String {
    format!(
        "cargo run -p sim -- replay {target} --seed {seed} --preset {} --trace",
        preset.as_str()
    )
}

fn secs(ms: i64) -> String {
    format!("{:.1}", ms as f64 / 1000.0)
}

/// Markdown, for `reports/` and review.
pub fn render_markdown(r: &ScenarioReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Scenario `{}`\n", r.scenario);
    let _ = writeln!(s, "> {}\n", r.summary);
    let _ = writeln!(
        s,
        "Seed {} · reproduce with `cargo run -p sim -- scenario {} --seed {}`\n",
        r.seed, r.scenario, r.seed
    );
    s.push_str("## Options this seed expanded to\n\n| option | value |\n|---|---|\n");
    for (k, v) in &r.options {
        let _ = writeln!(s, "| {k} | {v} |");
    }

    s.push_str("\n## Presets side by side\n\n|  |");
    for run in &r.runs {
        let _ = write!(s, " {} |", run.preset.as_str());
    }
    s.push_str("\n|---|");
    for _ in &r.runs {
        s.push_str("---|");
    }
    s.push('\n');
    let row = |s: &mut String, name: &str, f: &dyn Fn(&PresetRun) -> String| {
        let _ = write!(s, "| {name} |");
        for run in &r.runs {
            let _ = write!(s, " {} |", f(run));
        }
        s.push('\n');
    };
    row(&mut s, "requests", &|x| x.metrics.requests.to_string());
    row(&mut s, "bulk calls", &|x| {
        x.metrics.bulk_requests.to_string()
    });
    row(&mut s, "bytes sent", &|x| x.metrics.bytes.to_string());
    row(&mut s, "drain time (s, simulated)", &|x| {
        x.metrics
            .drain_time_ms
            .map(secs)
            .unwrap_or_else(|| "never".into())
    });
    row(&mut s, "operations re-sent", &|x| {
        x.metrics.retries.to_string()
    });
    row(&mut s, "aborts (timeouts)", &|x| {
        x.metrics.aborts.to_string()
    });
    row(&mut s, "failed responses", &|x| {
        x.metrics.failures.to_string()
    });
    row(&mut s, "edits", &|x| x.metrics.edits.to_string());
    row(&mut s, "left failed (gave up)", &|x| {
        x.metrics.failed.to_string()
    });
    row(&mut s, "quarantined", &|x| {
        x.metrics.quarantined.to_string()
    });
    row(&mut s, "max queue depth", &|x| {
        x.metrics.queue_depth_max.to_string()
    });
    for checker in CHECKERS {
        row(
            &mut s,
            checker,
            &|x| match x.verdicts.iter().find(|v| v.checker == checker) {
                Some(v) if v.ok => "✅".to_string(),
                Some(v) => format!("❌ {}", v.violations),
                None => "—".to_string(),
            },
        );
    }

    s.push_str(&chart(r));

    s.push_str("\n## Violations\n\n");
    let mut any = false;
    for run in &r.runs {
        for v in run.verdicts.iter().filter(|v| !v.ok) {
            any = true;
            let _ = writeln!(
                s,
                "- **{}** · `{}` ({} found): {}  \n  first offender: `{}`  \n  replay: `{}`",
                run.preset.as_str(),
                v.checker,
                v.violations,
                v.detail.replace('|', "\\|"),
                v.first_offender.as_deref().unwrap_or("-"),
                replay_command(&r.replay_target, r.seed, run.preset)
            );
        }
    }
    if !any {
        s.push_str("None: every preset held every invariant on this seed.\n");
    }
    s
}

/// A Mermaid `xychart-beta` of total queue depth over simulated time, one
/// line per preset, sampled at evenly spaced times (at most 60 points).
fn chart(r: &ScenarioReport) -> String {
    const POINTS: i64 = 60;
    // The interesting span: until the last change of depth in any run.
    let end_ms = r
        .runs
        .iter()
        .filter_map(|x| x.metrics.queue_depth.last().map(|p| p.0))
        .max()
        .unwrap_or(0)
        .max(1);
    let step_ms = (end_ms + POINTS - 1) / POINTS;
    let step_ms = step_ms.max(1);
    let max_depth = r
        .runs
        .iter()
        .map(|x| x.metrics.queue_depth_max)
        .max()
        .unwrap_or(0)
        .max(1);
    let mut s = String::new();
    let _ = writeln!(s, "\n## Queue depth over simulated time\n");
    let names: Vec<&str> = r.runs.iter().map(|x| x.preset.as_str()).collect();
    let _ = writeln!(
        s,
        "Operations queued (pending, syncing or failed), sampled every {} s; lines in order: {}.\n",
        secs(step_ms),
        names.join(", ")
    );
    s.push_str("```mermaid\nxychart-beta\n");
    let _ = writeln!(s, "    title \"Queue depth, seed {}\"", r.seed);
    let _ = writeln!(
        s,
        "    x-axis \"simulated time (s)\" 0 --> {}",
        secs(step_ms * POINTS)
    );
    let _ = writeln!(s, "    y-axis \"operations\" 0 --> {max_depth}");
    for run in &r.runs {
        let series = &run.metrics.queue_depth;
        let mut values = Vec::with_capacity(POINTS as usize + 1);
        let mut i = 0usize;
        let mut current = 0u64;
        for k in 0..=POINTS {
            let t = k * step_ms;
            while i < series.len() && series[i].0 <= t {
                current = series[i].1;
                i += 1;
            }
            values.push(current.to_string());
        }
        let _ = writeln!(s, "    line [{}]", values.join(", "));
    }
    s.push_str("```\n");
    s
}

/// JSON, for tools.
pub fn render_json(r: &ScenarioReport) -> String {
    serde_json::to_string_pretty(r).expect("reports serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ScenarioReport {
        let metrics = RunMetrics {
            requests: 12,
            bulk_requests: 3,
            bytes: 4096,
            retries: 2,
            aborts: 1,
            failures: 1,
            edits: 20,
            quarantined: 1,
            failed: 0,
            drain_time_ms: Some(12_345),
            sim_time_ms: 700_000,
            queue_depth_max: 20,
            queue_depth: vec![(0, 0), (1_000, 20), (5_000, 4), (12_345, 0)],
        };
        let ok = |c: &'static str| CheckResult {
            checker: c,
            ok: true,
            violations: 0,
            detail: String::new(),
            first_offender: None,
        };
        let mut bad = ok("per_entity_order");
        bad.ok = false;
        bad.violations = 2;
        bad.detail = "stale overwrite: v3 after v4".into();
        bad.first_offender = Some("player/p1 (op op-1)".into());
        ScenarioReport {
            scenario: "sample".into(),
            summary: "a hand-built report".into(),
            seed: 7,
            options: BTreeMap::from([("kills".to_string(), "1".to_string())]),
            replay_target: "sample".into(),
            runs: vec![
                PresetRun {
                    preset: Preset::Batched,
                    metrics: metrics.clone(),
                    verdicts: vec![ok("atomicity"), bad],
                },
                PresetRun {
                    preset: Preset::Hardened,
                    metrics,
                    verdicts: vec![ok("atomicity"), ok("per_entity_order")],
                },
            ],
        }
    }

    #[test]
    fn markdown_rendering() {
        let r = sample();
        let md = render_markdown(&r);
        assert_eq!(md, render_markdown(&r), "rendering is deterministic");
        assert!(md.contains(
            "replay: `cargo run -p sim -- replay sample --seed 7 --preset batched --trace`"
        ));
        insta::assert_snapshot!("sample_report_markdown", md);
    }

    #[test]
    fn json_rendering() {
        let r = sample();
        let v: serde_json::Value = serde_json::from_str(&render_json(&r)).unwrap();
        assert_eq!(v["scenario"], "sample");
        assert_eq!(v["runs"][0]["preset"], "batched");
        assert_eq!(v["runs"][0]["verdicts"][1]["ok"], false);
        assert!(r.hardened_ok());
    }
}
