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
use std::ops::Range;
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

/// Milliseconds as seconds with one decimal, as every page prints them.
pub(crate) fn secs(ms: i64) -> String {
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

/// Seeds of every scenario that the verdict page (`reports/README.md`)
/// sums up: `0..VERDICT_SEEDS`, every preset. Twenty, because that is the
/// fixed seed list of the slowest scenario (`large-backlog`), and enough
/// for a rate to mean something on every other.
pub const VERDICT_SEEDS: u64 = 20;

/// One preset over a scenario's first seeds.
#[derive(Clone, Debug, Default)]
pub struct PresetTally {
    pub seeds: u64,
    /// Seeds on which at least one checker failed.
    pub failing_seeds: u64,
    /// Seeds on which each checker failed.
    pub per_checker: BTreeMap<&'static str, u64>,
    pub requests: u64,
    /// Of which `bulk_sync_entities` calls.
    pub bulk_requests: u64,
    /// Calls whose outcome a timeout or a lost answer hid.
    pub aborts: u64,
    /// Calls answered with an error.
    pub failures: u64,
    pub edits: u64,
    /// Drain times of the seeds whose queues drained, sorted.
    pub drain_ms: Vec<i64>,
}

/// One scenario's line of the verdict page.
#[derive(Clone, Debug)]
pub struct ScenarioTally {
    pub scenario: String,
    pub presets: Vec<(Preset, PresetTally)>,
}

impl PresetTally {
    /// Runs seeds `seeds` of one preset of a scenario.
    pub fn run(s: &Scenario, preset: Preset, seeds: Range<u64>) -> PresetTally {
        let params = s.world_params();
        let mut t = PresetTally::default();
        for seed in seeds {
            let r = run_checked(&params, seed, s.engine_config(preset), false);
            t.seeds += 1;
            t.requests += r.metrics.requests;
            t.bulk_requests += r.metrics.bulk_requests;
            t.aborts += r.metrics.aborts;
            t.failures += r.metrics.failures;
            t.edits += r.metrics.edits;
            t.drain_ms.extend(r.metrics.drain_time_ms);
            let mut failed = false;
            for v in r.verdicts.iter().filter(|v| !v.ok) {
                *t.per_checker.entry(v.checker).or_default() += 1;
                failed = true;
            }
            t.failing_seeds += u64::from(failed);
        }
        t.drain_ms.sort_unstable();
        t
    }
}

impl ScenarioTally {
    fn preset(&self, p: Preset) -> Option<&PresetTally> {
        self.presets.iter().find(|(q, _)| *q == p).map(|(_, t)| t)
    }
}

/// Seeds `0..seeds` of every preset of every scenario, on `jobs` worker
/// threads (one scenario's preset at a time each, a fresh madsim runtime
/// per seed). Gathered by position, so the result does not depend on
/// scheduling.
pub fn verdict(scenarios: &[Scenario], seeds: u64, jobs: usize) -> Vec<ScenarioTally> {
    let units: Vec<(usize, Preset)> = scenarios
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.presets.iter().map(move |p| (i, *p)))
        .collect();
    // Largest workloads first, so that the longest units (large-backlog's,
    // two thirds of the whole) do not start last and leave a worker idle.
    let mut order: Vec<usize> = (0..units.len()).collect();
    order.sort_by_key(|&u| {
        let w = &scenarios[units[u].0].workload;
        std::cmp::Reverse(w.initial_backlog + w.edits)
    });
    let mut done = crate::explore::par_map(&order, jobs, |u| {
        let (i, preset) = units[u];
        PresetTally::run(&scenarios[i], preset, 0..seeds)
    })
    .into_iter();
    let mut out: Vec<ScenarioTally> = scenarios
        .iter()
        .map(|s| ScenarioTally {
            scenario: s.name.clone(),
            presets: Vec::new(),
        })
        .collect();
    for (i, preset) in units {
        let t = done.next().expect("one tally a unit");
        out[i].presets.push((preset, t));
    }
    out
}

/// The verdict page: every scenario's first seeds under every preset, how
/// many broke an invariant and which, and what the sync cost. Markdown for
/// `reports/README.md`, which GitHub shows under the per-seed reports.
pub fn render_verdict_markdown(tallies: &[ScenarioTally], seeds: u64) -> String {
    const PRESETS: [Preset; 3] = [Preset::Individual, Preset::Batched, Preset::Hardened];
    let mut s = String::new();
    s.push_str("# The verdict, scenario by scenario\n\n");
    let _ = writeln!(
        s,
        "Seeds 0..{seeds} of every scenario under each preset: `individual` is today's app \
         (one request per operation), `batched` the plan as written (`bulk_sync_entities`, up to \
         50 operations per type, all or nothing), `hardened` the plan with the fixes the \
         simulator showed it needs (ARCHITECTURE.md, \"The hardened switches\"). Each scenario's \
         own report shows one seed in full, with the replay command of every violation. \
         Regenerate with `cargo run -p sim -- reports`; `cargo test` fails while this page is \
         stale. The plan's open question on batch size has a page of its own: \
         [batch-size.md](batch-size.md).\n"
    );
    let mut totals = [(0u64, 0u64); 3];
    for t in tallies {
        for (i, p) in PRESETS.iter().enumerate() {
            if let Some(x) = t.preset(*p) {
                totals[i].0 += x.failing_seeds;
                totals[i].1 += x.seeds;
            }
        }
    }
    let said: Vec<String> = PRESETS
        .iter()
        .zip(totals)
        .map(|(p, (failing, seeds))| match failing {
            0 => format!("`{}` held every invariant on all {seeds} runs", p.as_str()),
            _ => format!(
                "`{}` broke an invariant on {failing} of {seeds} runs",
                p.as_str()
            ),
        })
        .collect();
    let _ = writeln!(s, "In short: {}.\n", said.join("; "));
    s.push_str("## Safety: seeds that broke an invariant\n\n");
    s.push_str(
        "A cell counts the seeds on which the preset broke at least one invariant, then names \
         each checker that failed and on how many of those seeds.\n\n",
    );
    s.push_str("| scenario | individual | batched | hardened |\n|---|---|---|---|\n");
    for t in tallies {
        let _ = write!(s, "| [{0}]({0}.md) |", t.scenario);
        for p in PRESETS {
            let Some(x) = t.preset(p) else {
                s.push_str(" — |");
                continue;
            };
            if x.failing_seeds == 0 {
                let _ = write!(s, " ✅ none of {} |", x.seeds);
                continue;
            }
            let checkers: Vec<String> = CHECKERS
                .iter()
                .filter_map(|c| x.per_checker.get(c).map(|n| format!("{c} {n}")))
                .collect();
            let _ = write!(
                s,
                " ❌ {} of {}: {} |",
                x.failing_seeds,
                x.seeds,
                checkers.join(", ")
            );
        }
        s.push('\n');
    }
    let _ = write!(s, "| **all {} scenarios** |", tallies.len());
    for (failing, seeds) in totals {
        let _ = write!(s, " **{failing} of {seeds}** |");
    }
    s.push_str("\n\n## Cost: requests and time to drain\n\n");
    s.push_str(
        "Requests per edit the user made, over the same seeds, and the median simulated time \
         from the first edit until every queue was last empty of pending and syncing work (seeds \
         whose queue never drained are counted apart).\n\n",
    );
    s.push_str(
        "| scenario | requests per edit: individual | batched | hardened | median drain (s): individual | batched | hardened |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for t in tallies {
        let _ = write!(s, "| {} |", t.scenario);
        for p in PRESETS {
            match t.preset(p) {
                Some(x) if x.edits > 0 => {
                    let _ = write!(s, " {:.2} |", x.requests as f64 / x.edits as f64);
                }
                _ => s.push_str(" — |"),
            }
        }
        for p in PRESETS {
            let Some(x) = t.preset(p) else {
                s.push_str(" — |");
                continue;
            };
            let never = x.seeds - x.drain_ms.len() as u64;
            let median = x
                .drain_ms
                .get(x.drain_ms.len() / 2)
                .map_or_else(|| "never".to_string(), |ms| secs(*ms));
            if never > 0 && !x.drain_ms.is_empty() {
                let _ = write!(s, " {median} ({never} never) |");
            } else {
                let _ = write!(s, " {median} |");
            }
        }
        s.push('\n');
    }
    s
}
