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

/// Seconds with two decimals: an edit's trip to the server is often under
/// a tenth of a second.
pub(crate) fn secs2(ms: i64) -> String {
    format!("{:.2}", ms as f64 / 1000.0)
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
    row(&mut s, "game saves", &|x| {
        x.metrics.game_requests.to_string()
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
            game_requests: 2,
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

    fn tally(
        seeds: u64,
        failing: u64,
        drain_ms: Vec<i64>,
        edits: u64,
        requests: u64,
    ) -> PresetTally {
        PresetTally {
            seeds,
            failing_seeds: failing,
            requests,
            edits,
            drain_ms,
            ..PresetTally::default()
        }
    }

    fn scenario(name: &str, presets: [PresetTally; 3]) -> ScenarioTally {
        let [i, b, h] = presets;
        ScenarioTally {
            scenario: name.into(),
            presets: vec![
                (Preset::Individual, i),
                (Preset::Batched, b),
                (Preset::Hardened, h),
            ],
        }
    }

    /// Where each criterion's line lies: 30 s is too slow, one request an
    /// edit is no batching, one seed more than individual is an increase.
    #[test]
    fn success_criteria_are_judged_at_their_bounds() {
        let tallies = [
            scenario(
                "backup-import",
                [
                    tally(2, 0, vec![15_000, 16_000], 100, 90),
                    tally(2, 0, vec![1_000, 30_000], 100, 10),
                    tally(2, 0, vec![1_000, 29_999], 100, 10),
                ],
            ),
            scenario(
                "normal-usage",
                [
                    tally(2, 0, vec![1, 1], 20, 20),
                    tally(2, 0, vec![1, 1], 20, 20),
                    tally(2, 0, vec![1, 1], 20, 19),
                ],
            ),
            scenario(
                "x",
                [
                    tally(2, 1, vec![1, 1], 20, 20),
                    tally(2, 2, vec![1, 1], 20, 20),
                    tally(2, 1, vec![1, 1], 20, 20),
                ],
            ),
        ];
        let mut s = String::new();
        render_success_criteria(&mut s, &tallies);
        let row = |starts: &str| {
            s.lines()
                .find(|l| l.starts_with(starts))
                .unwrap_or_else(|| panic!("no row {starts:?} in {s}"))
                .to_string()
        };
        let backup = row("| Backup import");
        assert!(backup.contains("| ❌ the slowest of 2 seeds drained in 30.0 s; 0 broke an invariant | ✅ all 2 seeds drained, the slowest in 30.0 s |"), "{backup}");
        let normal = row("| Normal usage");
        assert!(
            normal.contains("| ❌ 1.00 requests per edit: every edit"),
            "{normal}"
        );
        assert!(
            normal.ends_with("| ✅ 0.95 requests per edit |"),
            "{normal}"
        );
        let failures = row("| No increase");
        assert!(
            failures.contains("| ❌ more than individual in 1 of 3 scenarios: x (2 against 1) |"),
            "{failures}"
        );
        assert!(
            failures.ends_with("| ✅ never more than individual (3 scenarios) |"),
            "{failures}"
        );
        // A set of scenarios without the criterion's scenario says so.
        let mut s = String::new();
        render_success_criteria(&mut s, &tallies[2..]);
        assert_eq!(s.matches("not run").count(), 4, "{s}");
    }

    #[test]
    fn the_game_share_names_the_highest_hardened_share() {
        let mut a = tally(2, 0, vec![1, 1], 20, 10);
        a.game_requests = 5;
        let mut b = tally(2, 0, vec![1, 1], 20, 10);
        b.game_requests = 9;
        let none = tally(2, 0, vec![1, 1], 20, 0);
        let tallies = [
            scenario("a", [none.clone(), a.clone(), a]),
            scenario("b", [none.clone(), b.clone(), b]),
            scenario("quiet", [none.clone(), none.clone(), none]),
        ];
        let mut s = String::new();
        render_game_share(&mut s, &tallies);
        assert!(s.contains("game saves are 70% of `batched`'s and 70% of `hardened`'s; the highest share under `hardened` is b's, 90%."), "{s}");
        assert!(s.contains("| b | 4.5 | 4.5 | 90% | 90% |"), "{s}");
        assert!(s.contains("| quiet | 0.0 | 0.0 | — | — |"), "{s}");
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
    /// Of which `save_game_with_relations` calls.
    pub game_requests: u64,
    /// Calls whose outcome a timeout or a lost answer hid.
    pub aborts: u64,
    /// Calls answered with an error.
    pub failures: u64,
    pub edits: u64,
    /// Drain times of the seeds whose queues drained, sorted.
    pub drain_ms: Vec<i64>,
    /// Every delivered edit's time to the server, over all seeds, sorted
    /// (`metrics::edit_to_server`).
    pub edit_to_server_ms: Vec<i64>,
    /// Edits no committed call carried, over all seeds.
    pub edits_never_on_server: u64,
}

/// One scenario's line of the verdict page.
#[derive(Clone, Debug)]
pub struct ScenarioTally {
    pub scenario: String,
    pub presets: Vec<(Preset, PresetTally)>,
}

impl PresetTally {
    /// Seeds whose queues never drained.
    pub fn never_drained(&self) -> u64 {
        self.seeds - self.drain_ms.len() as u64
    }

    /// The median drain time of the seeds that drained.
    pub fn median_drain_ms(&self) -> Option<i64> {
        self.drain_ms.get(self.drain_ms.len() / 2).copied()
    }

    /// `n` (a count over every seed) per seed.
    pub fn per_seed(&self, n: u64) -> f64 {
        n as f64 / self.seeds.max(1) as f64
    }

    /// Requests per edit the user made (`None` with no edit).
    pub fn requests_per_edit(&self) -> Option<f64> {
        (self.edits > 0).then(|| self.requests as f64 / self.edits as f64)
    }

    /// The `pct`th percentile (nearest rank) of the delivered edits' times
    /// to the server.
    pub fn edit_to_server_percentile_ms(&self, pct: usize) -> Option<i64> {
        let ms = &self.edit_to_server_ms;
        let rank = (ms.len() * pct).div_ceil(100).max(1);
        ms.get(rank - 1).copied()
    }

    /// Runs seeds `seeds` of one preset of a scenario.
    pub fn run(s: &Scenario, preset: Preset, seeds: Range<u64>) -> PresetTally {
        let params = s.world_params();
        let mut t = PresetTally::default();
        for seed in seeds {
            let r = run_checked(&params, seed, s.engine_config(preset), false);
            t.seeds += 1;
            t.requests += r.metrics.requests;
            t.bulk_requests += r.metrics.bulk_requests;
            t.game_requests += r.metrics.game_requests;
            t.aborts += r.metrics.aborts;
            t.failures += r.metrics.failures;
            t.edits += r.metrics.edits;
            t.drain_ms.extend(r.metrics.drain_time_ms);
            let latency = crate::metrics::edit_to_server(&r.output);
            t.edit_to_server_ms.extend(latency.ms);
            t.edits_never_on_server += latency.never;
            let mut failed = false;
            for v in r.verdicts.iter().filter(|v| !v.ok) {
                *t.per_checker.entry(v.checker).or_default() += 1;
                failed = true;
            }
            t.failing_seeds += u64::from(failed);
        }
        t.drain_ms.sort_unstable();
        t.edit_to_server_ms.sort_unstable();
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
         stale. Two of the plan's open questions have pages of their own: batch size in \
         [batch-size.md](batch-size.md), waiting to collect operations in \
         [debounce.md](debounce.md).\n"
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
    render_success_criteria(&mut s, tallies);
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
    s.push_str("\n\n## Cost: requests, time to the server and time to drain\n\n");
    s.push_str(
        "Requests per edit the user made, over the same seeds; the median time from an edit to \
         the server's commit of that version or a newer one, over the edits that got there; and \
         the median simulated time from the first edit until every queue was last empty of \
         pending and syncing work (seeds whose queue never drained are counted apart).\n\n",
    );
    s.push_str(
        "| scenario | requests per edit: individual | batched | hardened | median edit to server (s): individual | batched | hardened | median drain (s): individual | batched | hardened |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for t in tallies {
        let _ = write!(s, "| {} |", t.scenario);
        for p in PRESETS {
            match t.preset(p).and_then(PresetTally::requests_per_edit) {
                Some(per_edit) => {
                    let _ = write!(s, " {per_edit:.2} |");
                }
                None => s.push_str(" — |"),
            }
        }
        for p in PRESETS {
            let median = t
                .preset(p)
                .and_then(|x| x.edit_to_server_percentile_ms(50))
                .map_or_else(|| "—".to_string(), secs2);
            let _ = write!(s, " {median} |");
        }
        for p in PRESETS {
            let Some(x) = t.preset(p) else {
                s.push_str(" — |");
                continue;
            };
            let never = x.never_drained();
            let median = x
                .median_drain_ms()
                .map_or_else(|| "never".to_string(), secs);
            if never > 0 && !x.drain_ms.is_empty() {
                let _ = write!(s, " {median} ({never} never) |");
            } else {
                let _ = write!(s, " {median} |");
            }
        }
        s.push('\n');
    }
    render_game_share(&mut s, tallies);
    s
}

/// The presets that batch: the plan as written and the hardened engine,
/// the two columns of the success criteria and of question 3.
const BATCHING: [Preset; 2] = [Preset::Batched, Preset::Hardened];

/// The plan's success criteria that runs can check, for the plan as
/// written and for the hardened engine, from the same tallies as the rest
/// of the page. A criterion whose scenario is not among `tallies` says so.
fn render_success_criteria(s: &mut String, tallies: &[ScenarioTally]) {
    let find = |name: &str, p: Preset| {
        tallies
            .iter()
            .find(|t| t.scenario == name)
            .and_then(|t| t.preset(p))
    };
    s.push_str("## The plan's success criteria, checked\n\n");
    s.push_str(
        "The plan's own bar, on the same seeds. Its other criteria (existing and new tests \
         pass, the manual checklist) are not questions for a simulator.\n\n\
         | criterion | batched | hardened |\n|---|---|---|\n",
    );
    // 1. "Backup import (100 entities) syncs in <30 seconds".
    s.push_str("| Backup import (100 entities) syncs in <30 seconds (backup-import) |");
    for p in BATCHING {
        let cell = match find("backup-import", p) {
            None => "not run".to_string(),
            Some(x) => {
                let never = x.never_drained();
                match x.drain_ms.last() {
                    Some(&ms) if never == 0 && ms < 30_000 && x.failing_seeds == 0 => {
                        format!(
                            "✅ all {} seeds drained, the slowest in {} s",
                            x.seeds,
                            secs(ms)
                        )
                    }
                    Some(&ms) if never == 0 => format!(
                        "❌ the slowest of {} seeds drained in {} s; {} broke an invariant",
                        x.seeds,
                        secs(ms),
                        x.failing_seeds
                    ),
                    _ => format!("❌ {never} of {} seeds never drained", x.seeds),
                }
            }
        };
        let _ = write!(s, " {cell} |");
    }
    // 2. "Normal usage batches operations (visible in logs)".
    s.push_str("\n| Normal usage batches operations (normal-usage) |");
    for p in BATCHING {
        let cell = match find("normal-usage", p).filter(|x| x.edits > 0) {
            Some(x) => {
                let per_edit = x.requests_per_edit().unwrap_or_default();
                if x.requests < x.edits {
                    format!("✅ {per_edit:.2} requests per edit")
                } else {
                    format!(
                        "❌ {per_edit:.2} requests per edit: every edit went in a call of its own \
                         (the engine sends on each edit's nudge; [debounce.md](debounce.md) shows \
                         what a wait changes)"
                    )
                }
            }
            _ => "not run".to_string(),
        };
        let _ = write!(s, " {cell} |");
    }
    // 3. "No increase in sync failures vs current system": against
    // `individual`, scenario by scenario, seeds that broke an invariant.
    s.push_str(
        "\n| No increase in sync failures vs current system (seeds that broke an invariant, \
         scenario by scenario, against individual's) |",
    );
    for p in BATCHING {
        let mut worse: Vec<String> = Vec::new();
        let mut compared = 0;
        for t in tallies {
            let (Some(now), Some(new)) = (t.preset(Preset::Individual), t.preset(p)) else {
                continue;
            };
            compared += 1;
            if new.failing_seeds > now.failing_seeds {
                worse.push(format!(
                    "{} ({} against {})",
                    t.scenario, new.failing_seeds, now.failing_seeds
                ));
            }
        }
        let cell = if compared == 0 {
            "not run".to_string()
        } else if worse.is_empty() {
            format!("✅ never more than individual ({compared} scenarios)")
        } else {
            format!(
                "❌ more than individual in {} of {compared} scenarios: {}",
                worse.len(),
                worse.join(", ")
            )
        };
        let _ = write!(s, " {cell} |");
    }
    s.push_str("\n\n");
}

/// The plan's open question 3 ("Should we create a bulk games RPC? ...
/// No - games are already optimized"): what share of the batching presets'
/// requests still save one game each, scenario by scenario.
fn render_game_share(s: &mut String, tallies: &[ScenarioTally]) {
    let share = |games: u64, requests: u64| {
        if requests == 0 {
            "—".to_string()
        } else {
            format!("{:.0}%", 100.0 * games as f64 / requests as f64)
        }
    };
    s.push_str("\n## Open question 3: games one call each\n\n");
    let mut totals = [(0u64, 0u64); 2];
    let mut top: Option<(&str, u64, u64)> = None;
    for t in tallies {
        for (i, p) in BATCHING.iter().enumerate() {
            if let Some(x) = t.preset(*p) {
                totals[i].0 += x.game_requests;
                totals[i].1 += x.requests;
            }
        }
        if let Some(x) = t.preset(Preset::Hardened) {
            // Highest share first; ties to the scenario listed first.
            let higher = top.is_none_or(|(_, g, r)| {
                u128::from(x.game_requests) * u128::from(r) > u128::from(g) * u128::from(x.requests)
            });
            if higher && x.requests > 0 {
                top = Some((&t.scenario, x.game_requests, x.requests));
            }
        }
    }
    let _ = write!(
        s,
        "The plan keeps games on `save_game_with_relations`, one call a game, and does not batch \
         them (\"games are already optimized, complexity not worth it\"). Here is the share of \
         each batching preset's requests that saved one game, over the same seeds: a bulk games \
         call could take at most that share off the request count. Counted over every scenario's \
         requests together (large-backlog's weigh most), game saves are {} of `batched`'s and {} \
         of `hardened`'s",
        share(totals[0].0, totals[0].1),
        share(totals[1].0, totals[1].1),
    );
    match top {
        Some((name, g, r)) => {
            let _ = writeln!(
                s,
                "; the highest share under `hardened` is {name}'s, {}.\n",
                share(g, r)
            );
        }
        None => s.push_str(".\n\n"),
    }
    s.push_str(
        "| scenario | game saves per seed: batched | hardened | share of requests: batched | hardened |\n\
         |---|---|---|---|---|\n",
    );
    for t in tallies {
        let _ = write!(s, "| {} |", t.scenario);
        for p in BATCHING {
            match t.preset(p) {
                Some(x) => {
                    let _ = write!(s, " {:.1} |", x.per_seed(x.game_requests));
                }
                None => s.push_str(" — |"),
            }
        }
        for p in BATCHING {
            match t.preset(p) {
                Some(x) => {
                    let _ = write!(s, " {} |", share(x.game_requests, x.requests));
                }
                None => s.push_str(" — |"),
            }
        }
        s.push('\n');
    }
}
