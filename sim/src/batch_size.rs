//! `sim batch-size`: the plan's open question 2 ("What's the optimal max
//! batch size? Too small: more requests, less benefit. Too large: timeout
//! risk, memory pressure. Recommendation: 50 per entity type") answered
//! with runs. Each (scenario, preset, size) runs the same seeds with
//! `world.max_per_type` set to the size, so the only difference between two
//! rows of one preset is the size: same workloads, same fault plans.
//!
//! Under `batched` (the plan) the size is what every call may carry per
//! type. Under `hardened` it is the ceiling of the adaptive chunk size,
//! which halves after a timeout and grows back after successes (doubling,
//! or by a quarter from half a size the server cancelled), and a call never
//! carries more than the server's cap.
//!
//! `reports/batch-size.md` is this study over `STUDY_SCENARIOS`, generated
//! by `sim reports` and held byte for byte by `tests/reports.rs`.

use crate::checker::CHECKERS;
use crate::report::{secs, PresetTally};
use crate::scenario::Scenario;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Range;
use sync_core::engine::Preset;

/// Sizes a study tries when none are given: the plan's 50, two below, two
/// above.
pub const DEFAULT_SIZES: [usize; 5] = [10, 25, 50, 100, 200];

/// The scenarios of `reports/batch-size.md`: the plan's own yardstick (a
/// backup import under 30 s), one type in bulk, a big import of every type
/// onto a busy server (where one call can outrun the statement timeout and
/// 017's cap), and an overloaded server with 503 bursts. The study of any
/// other: `sim batch-size NAME`.
pub const STUDY_SCENARIOS: [&str; 4] = [
    "backup-import",
    "large-batch",
    "big-import",
    "server-overload",
];

/// The presets a size matters to (`individual` sends one operation a call).
pub const STUDY_PRESETS: [Preset; 2] = [Preset::Batched, Preset::Hardened];

/// Seeds of the committed study: as many as the verdict page's.
pub const STUDY_SEEDS: u64 = crate::report::VERDICT_SEEDS;

/// One scenario under one preset at one size.
#[derive(Clone, Debug)]
pub struct SizeRow {
    pub scenario: String,
    pub preset: Preset,
    pub max_per_type: usize,
    pub tally: PresetTally,
}

impl SizeRow {
    /// Every seed held every invariant and drained.
    fn safe(&self) -> bool {
        self.tally.failing_seeds == 0 && self.never_drained() == 0
    }

    fn never_drained(&self) -> u64 {
        self.tally.seeds - self.tally.drain_ms.len() as u64
    }

    fn median_drain_ms(&self) -> Option<i64> {
        self.tally
            .drain_ms
            .get(self.tally.drain_ms.len() / 2)
            .copied()
    }

    fn per_seed(&self, n: u64) -> f64 {
        n as f64 / self.tally.seeds.max(1) as f64
    }

    fn requests_per_edit(&self) -> Option<f64> {
        (self.tally.edits > 0).then(|| self.tally.requests as f64 / self.tally.edits as f64)
    }
}

/// Runs `seeds` of every scenario under every preset at every size, on
/// `jobs` worker threads (one (scenario, preset, size) unit at a time each).
/// Rows come back in (scenario, preset, size) order whatever the
/// scheduling.
pub fn study(
    scenarios: &[Scenario],
    presets: &[Preset],
    sizes: &[usize],
    seeds: Range<u64>,
    jobs: usize,
) -> Vec<SizeRow> {
    let mut units: Vec<(usize, Preset, usize)> = Vec::new();
    for (i, _) in scenarios.iter().enumerate() {
        for p in presets {
            for size in sizes {
                units.push((i, *p, *size));
            }
        }
    }
    // Largest workloads first, so a long unit does not start last.
    let mut order: Vec<usize> = (0..units.len()).collect();
    order.sort_by_key(|&u| {
        let w = &scenarios[units[u].0].workload;
        std::cmp::Reverse(w.initial_backlog + w.edits)
    });
    let tallies = crate::explore::par_map(&order, jobs, |u| {
        let (i, preset, size) = units[u];
        let mut s = scenarios[i].clone();
        s.world.max_per_type = size;
        PresetTally::run(&s, preset, seeds.clone())
    });
    units
        .into_iter()
        .zip(tallies)
        .map(|((i, preset, size), tally)| SizeRow {
            scenario: scenarios[i].name.clone(),
            preset,
            max_per_type: size,
            tally,
        })
        .collect()
}

/// For one scenario and preset: the size whose median drain is shortest
/// among those on which every seed held every invariant and drained (ties:
/// fewer requests, then the smaller size).
fn fastest_safe<'a>(rows: &[&'a SizeRow]) -> Option<&'a SizeRow> {
    rows.iter()
        .copied()
        .filter(|r| r.safe())
        .min_by_key(|r| (r.median_drain_ms(), r.tally.requests, r.max_per_type))
}

/// The study as Markdown: one table per scenario, a row per preset and
/// size, and a generated line naming each preset's fastest safe size.
/// `provenance` (Markdown) says how to produce the page again.
pub fn render_markdown(rows: &[SizeRow], seeds: Range<u64>, provenance: &str) -> String {
    let mut s = String::new();
    s.push_str("# Batch size: the plan's open question 2\n\n");
    let _ = writeln!(
        s,
        "The plan sends up to 50 operations per entity type in one `bulk_sync_entities` call and \
         asks what the best size is (\"Too small: more requests, less benefit. Too large: timeout \
         risk, memory pressure\"). Here each scenario runs seeds {}..{} once per size, with \
         nothing else changed: same workloads, same faults. Under `batched` (the plan as \
         written) the size is what one call may carry per type; under `hardened` it is the \
         ceiling of the adaptive chunk size, which halves after a timeout and grows back after \
         successes. The server refuses \
         a call of more than {} operations (017's limit). {provenance}\n",
        seeds.start,
        seeds.end,
        crate::server::MAX_BULK_OPS,
    );
    s.push_str(
        "Columns: seeds that broke an invariant (and which checkers); requests per edit the \
         user made; per seed, calls whose answer a timeout or a loss hid (aborted) and calls \
         answered with an error (failed); the median and slowest simulated time from the first \
         edit until the queue was last empty (seeds whose queue never drained are counted \
         apart).\n",
    );
    let mut scenarios: Vec<&str> = Vec::new();
    for r in rows {
        if !scenarios.contains(&r.scenario.as_str()) {
            scenarios.push(&r.scenario);
        }
    }
    for name in scenarios {
        let mine: Vec<&SizeRow> = rows.iter().filter(|r| r.scenario == name).collect();
        let _ = writeln!(s, "\n## {name}\n");
        let mut presets: Vec<Preset> = Vec::new();
        for r in &mine {
            if !presets.contains(&r.preset) {
                presets.push(r.preset);
            }
        }
        let said: Vec<String> = presets
            .iter()
            .map(|p| {
                let of_p: Vec<&SizeRow> = mine.iter().copied().filter(|r| r.preset == *p).collect();
                match fastest_safe(&of_p) {
                    Some(r) => format!(
                        "`{}` drains fastest at {} a type (median {} s) of the sizes on which \
                         every seed held every invariant",
                        p.as_str(),
                        r.max_per_type,
                        r.median_drain_ms().map_or_else(|| "-".into(), secs)
                    ),
                    None => format!(
                        "`{}` broke an invariant or left its queue undrained at every size",
                        p.as_str()
                    ),
                }
            })
            .collect();
        let _ = writeln!(s, "{}.\n", said.join("; "));
        s.push_str(
            "| preset | max per type | broke an invariant | requests per edit | aborted calls per seed | failed calls per seed | median drain (s) | slowest drain (s) |\n\
             |---|---|---|---|---|---|---|---|\n",
        );
        for r in &mine {
            let t = &r.tally;
            let broke = if t.failing_seeds == 0 {
                format!("✅ none of {}", t.seeds)
            } else {
                let checkers: Vec<String> = CHECKERS
                    .iter()
                    .filter_map(|c| t.per_checker.get(c).map(|n| format!("{c} {n}")))
                    .collect();
                format!(
                    "❌ {} of {}: {}",
                    t.failing_seeds,
                    t.seeds,
                    checkers.join(", ")
                )
            };
            let never = r.never_drained();
            let median = r
                .median_drain_ms()
                .map_or_else(|| "never".to_string(), secs);
            let slowest = match (t.drain_ms.last(), never) {
                (_, n) if n > 0 => format!("never on {n}"),
                (Some(ms), _) => secs(*ms),
                (None, _) => "never".to_string(),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.2} | {:.2} | {} | {} |",
                r.preset.as_str(),
                r.max_per_type,
                broke,
                r.requests_per_edit()
                    .map_or_else(|| "-".into(), |x| format!("{x:.2}")),
                r.per_seed(t.aborts),
                r.per_seed(t.failures),
                median,
                slowest
            );
        }
    }
    s
}

/// `reports/batch-size.md`: `STUDY_SCENARIOS` under `STUDY_PRESETS` at
/// `DEFAULT_SIZES`, seeds `0..STUDY_SEEDS`.
pub fn committed_study(jobs: usize) -> String {
    let scenarios: Vec<Scenario> = STUDY_SCENARIOS
        .iter()
        .map(|n| Scenario::embedded(n).expect("an embedded scenario"))
        .collect();
    let rows = study(
        &scenarios,
        &STUDY_PRESETS,
        &DEFAULT_SIZES,
        0..STUDY_SEEDS,
        jobs,
    );
    render_markdown(
        &rows,
        0..STUDY_SEEDS,
        "Regenerate with `cargo run -p sim -- reports`; `cargo test` fails while this page is \
         stale. Another scenario, other sizes or more seeds: `cargo run --release -p sim -- \
         batch-size NAME --sizes 10,50,200 --seeds 100`.",
    )
}

/// One row as JSON (`sim batch-size --format json`).
#[derive(Serialize)]
struct SizeRowJson<'a> {
    scenario: &'a str,
    preset: &'static str,
    max_per_type: usize,
    seeds: u64,
    failing_seeds: u64,
    violations: &'a BTreeMap<&'static str, u64>,
    requests: u64,
    bulk_requests: u64,
    aborts: u64,
    failures: u64,
    edits: u64,
    drain_ms_median: Option<i64>,
    drain_ms_max: Option<i64>,
    never_drained: u64,
}

/// The study as one JSON array, a row per (scenario, preset, size).
pub fn render_json(rows: &[SizeRow]) -> String {
    let out: Vec<SizeRowJson> = rows
        .iter()
        .map(|r| SizeRowJson {
            scenario: &r.scenario,
            preset: r.preset.as_str(),
            max_per_type: r.max_per_type,
            seeds: r.tally.seeds,
            failing_seeds: r.tally.failing_seeds,
            violations: &r.tally.per_checker,
            requests: r.tally.requests,
            bulk_requests: r.tally.bulk_requests,
            aborts: r.tally.aborts,
            failures: r.tally.failures,
            edits: r.tally.edits,
            drain_ms_median: r.median_drain_ms(),
            drain_ms_max: r.tally.drain_ms.last().copied(),
            never_drained: r.never_drained(),
        })
        .collect();
    serde_json::to_string_pretty(&out).expect("rows serialize") + "\n"
}

/// Parses `--sizes` ("10,25,50"): each 1..=`MAX_PER_TYPE_LIMIT`, no
/// repeats, in the order given.
pub fn parse_sizes(text: &str) -> Result<Vec<usize>, String> {
    let limit = crate::scenario::MAX_PER_TYPE_LIMIT;
    let mut sizes = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let n: usize = part
            .parse()
            .map_err(|_| format!("--sizes: {part:?} is not a whole number"))?;
        if !(1..=limit).contains(&n) {
            return Err(format!("--sizes: {n} is outside 1..={limit}"));
        }
        if sizes.contains(&n) {
            return Err(format!("--sizes: {n} is given twice"));
        }
        sizes.push(n);
    }
    Ok(sizes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_or_say_why_not() {
        assert_eq!(parse_sizes("10, 50,200").unwrap(), vec![10, 50, 200]);
        assert!(parse_sizes("0").unwrap_err().contains("outside 1..=1000"));
        assert!(parse_sizes("1001").unwrap_err().contains("outside"));
        assert!(parse_sizes("10,x").unwrap_err().contains("\"x\""));
        assert!(parse_sizes("").unwrap_err().contains("whole number"));
        assert!(parse_sizes("50,50").unwrap_err().contains("twice"));
    }

    fn row(size: usize, failing: u64, drain_ms: Vec<i64>, requests: u64) -> SizeRow {
        SizeRow {
            scenario: "s".into(),
            preset: Preset::Batched,
            max_per_type: size,
            tally: PresetTally {
                seeds: 3,
                failing_seeds: failing,
                requests,
                edits: 10,
                drain_ms,
                ..PresetTally::default()
            },
        }
    }

    #[test]
    fn the_fastest_safe_size_skips_unsafe_and_undrained_sizes() {
        let broke = row(200, 1, vec![1_000, 1_000, 1_000], 1);
        let undrained = row(100, 0, vec![2_000, 2_000], 2);
        let slow = row(10, 0, vec![9_000, 9_000, 9_000], 9);
        let fast = row(50, 0, vec![3_000, 4_000, 5_000], 4);
        let rows = [&broke, &undrained, &slow, &fast];
        assert_eq!(fastest_safe(&rows).map(|r| r.max_per_type), Some(50));
        assert!(fastest_safe(&[&broke, &undrained]).is_none());
        // A tie on drain goes to fewer requests.
        let tie = row(25, 0, vec![3_000, 4_000, 5_000], 3);
        assert_eq!(
            fastest_safe(&[&fast, &tie]).map(|r| r.max_per_type),
            Some(25)
        );
    }

    #[test]
    fn markdown_names_each_presets_fastest_safe_size() {
        let mut hardened = row(25, 0, vec![5_000, 6_000, 7_000], 5);
        hardened.preset = Preset::Hardened;
        let mut broke = row(50, 2, vec![3_000], 4);
        broke.tally.per_checker.insert("convergence", 2);
        let rows = vec![row(10, 0, vec![9_000, 9_000, 9_000], 9), broke, hardened];
        let md = render_markdown(&rows, 0..3, "Produced by a test.");
        assert!(md.contains("`batched` drains fastest at 10 a type (median 9.0 s)"));
        assert!(md.contains("`hardened` drains fastest at 25 a type (median 6.0 s)"));
        assert!(md.contains(
            "| batched | 50 | ❌ 2 of 3: convergence 2 | 0.40 | 0.00 | 0.00 | 3.0 | never on 2 |"
        ));
    }
}
