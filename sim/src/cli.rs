//! The `sim` command line.
//!
//! Exit codes: 0 when the hardened preset held every invariant (violations
//! of `individual` and `batched` are findings, printed, not failures); 1
//! when the hardened preset broke one; 2 for bad input.

use crate::explore::PlantedBug;
use crate::report::{
    bug_flag, render_json, render_markdown, render_verdict_markdown, replay_command, verdict,
    ScenarioReport, VERDICT_SEEDS,
};
use crate::scenario::{Scenario, ScenarioError};
use crate::study::{committed_study, Knob};
use crate::world::run_checked;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use sync_core::engine::Preset;
use sync_core::queue::QueueBackend;

#[derive(Parser, Debug)]
#[command(
    name = "sim",
    about = "Deterministic simulation of the batch-sync plan: scenarios, presets, checkers, reports"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PresetArg {
    Individual,
    Batched,
    Hardened,
    All,
}

impl PresetArg {
    /// The one preset a command that runs a single world takes.
    fn single(self, command: &str) -> Result<Preset, String> {
        match self {
            PresetArg::All => Err(format!("{command} takes one preset, not `all`")),
            PresetArg::Individual => Ok(Preset::Individual),
            PresetArg::Batched => Ok(Preset::Batched),
            PresetArg::Hardened => Ok(Preset::Hardened),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Markdown,
    Json,
}

/// What `sim batch-size` and `sim debounce` share: which scenario, which
/// seeds, which presets, how to print.
#[derive(Args, Debug)]
pub struct StudyArgs {
    /// Scenario name (see `sim list`); ignored with --file.
    name: String,
    /// Load the scenario from this TOML file instead.
    #[arg(long)]
    file: Option<PathBuf>,
    #[arg(long, default_value_t = crate::study::STUDY_SEEDS)]
    seeds: u64,
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// `all`: batched and hardened for a batch size (a size means nothing
    /// to individual, which sends one operation a call); all three for a
    /// debounce.
    #[arg(long, value_enum, default_value = "all")]
    preset: PresetArg,
    /// Worker threads (default: all cores).
    #[arg(long)]
    jobs: Option<usize>,
    #[arg(long, value_enum, default_value = "markdown")]
    format: Format,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Every scenario, one line each with its purpose.
    List,
    /// Run a scenario and print its report (or, with --seeds, a summary of a
    /// seed sweep).
    Scenario {
        /// Scenario name (see `sim list`); ignored with --file.
        name: String,
        /// Seed to run (default: the scenario's own).
        #[arg(long)]
        seed: Option<u64>,
        /// Run this many seeds starting at --seed and print a summary.
        #[arg(long)]
        seeds: Option<u64>,
        #[arg(long, value_enum, default_value = "all")]
        preset: PresetArg,
        #[arg(long, value_enum, default_value = "markdown")]
        format: Format,
        /// Load the scenario from this TOML file instead.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Replay one run, optionally with a line per event in simulated time.
    Replay {
        name: String,
        #[arg(long)]
        seed: u64,
        #[arg(long, value_enum)]
        preset: PresetArg,
        #[arg(long)]
        trace: bool,
        #[arg(long)]
        file: Option<PathBuf>,
        /// Plant a bug from `sim bugs`.
        #[arg(long)]
        bug: Option<String>,
    },
    /// Reduce a failing seed to a minimal run that still fails the same
    /// checker (delta debugging) and write it as a scenario file.
    Shrink {
        /// Scenario name (see `sim list`); ignored with --file.
        name: String,
        #[arg(long)]
        seed: u64,
        #[arg(long, value_enum)]
        preset: PresetArg,
        /// Plant a bug from `sim bugs`.
        #[arg(long)]
        bug: Option<String>,
        /// The checker to preserve (default: the first one the run fails).
        #[arg(long)]
        checker: Option<String>,
        /// Upper bound on candidates tried (each one run, two when the
        /// hardened preset is the control).
        #[arg(long, default_value_t = 2000)]
        max_runs: u64,
        /// Where to write the scenario (default: NAME-PRESET[-BUG]-seedN.toml
        /// in the current folder).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Load the scenario from this TOML file instead.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Regenerate the snapshot reports in a folder (default `reports/`).
    Reports {
        #[arg(long, default_value = "reports")]
        dir: PathBuf,
    },
    /// Sweep many seeds of a scenario (or `all`) on worker threads.
    Explore {
        /// Scenario name, or `all`; ignored with --file.
        name: String,
        /// Load the scenario from this TOML file instead.
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long)]
        seeds: u64,
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// Worker threads (default: all cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// This shard's share of the seeds, as K/M (1-based).
        #[arg(long, default_value = "1/1")]
        shard: String,
        #[arg(long, value_enum, default_value = "hardened")]
        preset: PresetArg,
        /// Plant a bug from `sim bugs`.
        #[arg(long)]
        bug: Option<String>,
        /// Fraction of seeds run twice to check determinism.
        #[arg(long, default_value_t = 0.05)]
        check_determinism: f64,
        /// The store of the devices' queues: `sqlite`, the queue the plan
        /// ships, or `btree`, the same rules on B-tree maps at a fraction
        /// of the cost, cross-checked against SQLite (--check-queue).
        #[arg(long, value_enum, default_value = "sqlite")]
        queue: QueueArg,
        /// With --queue btree: the fraction of seeds run again on SQLite
        /// and compared whole (every failing seed always is).
        #[arg(long, default_value_t = 0.05)]
        check_queue: f64,
        /// Do not fail when a scenario's coverage marks go unreached (for a
        /// smoke sweep too short to reach rare ones).
        #[arg(long)]
        skip_marks: bool,
        #[arg(long, value_enum, default_value = "text")]
        format: SweepFormat,
    },
    /// The plan's open question 2: the same seeds of a scenario at several
    /// batch sizes (operations per entity type), presets side by side.
    BatchSize {
        #[command(flatten)]
        study: StudyArgs,
        /// Comma-separated sizes, each 1..=1000 (the server refuses a call
        /// of more than 500 operations).
        #[arg(long, default_value = Knob::MaxPerType.default_values())]
        sizes: String,
    },
    /// The plan's open question 1: the same seeds of a scenario with several
    /// waits after a nudge before a pass, presets side by side.
    Debounce {
        #[command(flatten)]
        study: StudyArgs,
        /// Comma-separated waits in milliseconds, each 0..=60000.
        #[arg(long, default_value = Knob::DebounceMs.default_values())]
        delays: String,
    },
    /// The catalogue of planted bugs; with --measure, seeds to first catch.
    Bugs {
        #[arg(long)]
        measure: bool,
        /// Seeds to try per bug when measuring.
        #[arg(long, default_value_t = 1000)]
        budget: u64,
    },
}

/// `--queue`: the store of the devices' queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum QueueArg {
    Sqlite,
    Btree,
}

impl QueueArg {
    fn backend(self) -> QueueBackend {
        match self {
            QueueArg::Sqlite => QueueBackend::Sqlite,
            QueueArg::Btree => QueueBackend::Btree,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SweepFormat {
    Text,
    Json,
}

fn parse_shard(s: &str) -> Result<(u64, u64), String> {
    let (k, m) = s
        .split_once('/')
        .ok_or_else(|| format!("--shard must be K/M, got {s:?}"))?;
    let k: u64 = k
        .parse()
        .map_err(|_| format!("--shard K is not a number: {k:?}"))?;
    let m: u64 = m
        .parse()
        .map_err(|_| format!("--shard M is not a number: {m:?}"))?;
    if m == 0 || k == 0 || k > m {
        return Err(format!("--shard needs 1 <= K <= M, got {k}/{m}"));
    }
    Ok((k, m))
}

/// What a command printed and how it ended (testable without a process).
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

fn presets(arg: PresetArg, scenario: &Scenario) -> Vec<Preset> {
    match arg {
        PresetArg::All => scenario.presets.clone(),
        PresetArg::Individual => vec![Preset::Individual],
        PresetArg::Batched => vec![Preset::Batched],
        PresetArg::Hardened => vec![Preset::Hardened],
    }
}

fn load(name: &str, file: Option<&Path>) -> Result<Scenario, ScenarioError> {
    match file {
        Some(p) => Scenario::from_file(p),
        None => Scenario::embedded(name),
    }
}

/// The `--preset` and `--bug` (none, or a bug of the catalogue) of a
/// command that runs one preset.
fn preset_and_bug(
    preset: PresetArg,
    bug: Option<&str>,
    command: &str,
) -> Result<(Preset, Option<&'static PlantedBug>), String> {
    Ok((
        preset.single(command)?,
        bug.map(PlantedBug::find).transpose()?,
    ))
}

/// Worker threads when `--jobs` is not given: every core.
fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// `sim batch-size` and `sim debounce`: one scenario's study of `knob` at
/// `values` (a `Knob::flag` list). Exit 1 when hardened broke an invariant
/// at some value, 2 for bad input.
fn run_study(knob: Knob, a: StudyArgs, values: &str) -> Outcome {
    let s = match load(&a.name, a.file.as_deref()) {
        Ok(s) => s,
        Err(e) => return bad_input(e),
    };
    let values = match knob.parse_values(values) {
        Ok(v) => v,
        Err(e) => return bad_input(e),
    };
    let (seeds, start) = (a.seeds, a.start);
    if seeds == 0 {
        return bad_input("--seeds must be at least 1");
    }
    let Some(end) = start.checked_add(seeds) else {
        return bad_input("--start plus --seeds is past the last seed");
    };
    let presets = match a.preset.single(knob.command()) {
        Err(_all) => knob.presets().to_vec(),
        Ok(p) if knob.presets().contains(&p) => vec![p],
        // Only a batch size leaves a preset out.
        Ok(_) => {
            return bad_input(
                "a batch size means nothing to individual (one operation a call); \
                 use batched, hardened or all",
            )
        }
    };
    let jobs = a.jobs.unwrap_or_else(default_jobs);
    let rows = crate::study::study(
        knob,
        std::slice::from_ref(&s),
        &presets,
        &values,
        start..end,
        jobs,
    );
    let hardened_ok = rows
        .iter()
        .all(|r| r.preset != Preset::Hardened || r.tally.failing_seeds == 0);
    let stdout = match a.format {
        Format::Markdown => {
            let listed: Vec<String> = values.iter().map(u64::to_string).collect();
            let provenance = format!(
                "Produced by `sim {} {} {} {} --seeds {seeds} --start {start}`.",
                knob.command(),
                s.replay_target(),
                knob.flag(),
                listed.join(",")
            );
            crate::study::render_markdown(knob, &rows, start..end, &provenance)
        }
        Format::Json => crate::study::render_json(knob, &rows),
    };
    Outcome {
        code: if hardened_ok { 0 } else { 1 },
        stdout,
        stderr: String::new(),
    }
}

fn bad_input(e: impl std::fmt::Display) -> Outcome {
    Outcome {
        code: 2,
        stdout: String::new(),
        stderr: format!("error: {e}\n"),
    }
}

/// Runs a parsed command. Trace lines (replay --trace) go straight to
/// stdout as they happen; everything else is returned.
pub fn run(cli: Cli) -> Outcome {
    match cli.command {
        Command::List => {
            let mut out = String::new();
            for name in Scenario::known() {
                match Scenario::embedded(&name) {
                    Ok(s) => out.push_str(&format!("{name:<20} {}\n", s.summary)),
                    Err(e) => return bad_input(e),
                }
            }
            Outcome {
                code: 0,
                stdout: out,
                stderr: String::new(),
            }
        }
        Command::Scenario {
            name,
            seed,
            seeds,
            preset,
            format,
            file,
        } => {
            let s = match load(&name, file.as_deref()) {
                Ok(s) => s,
                Err(e) => return bad_input(e),
            };
            let seed = seed.unwrap_or(s.seed);
            let presets = presets(preset, &s);
            match seeds {
                Some(0) => bad_input("--seeds must be at least 1"),
                Some(n) if n > 1 => sweep(&s, seed, n, &presets),
                _ => {
                    let report = ScenarioReport::run(&s, seed, &presets);
                    let stdout = match format {
                        Format::Markdown => render_markdown(&report),
                        Format::Json => render_json(&report) + "\n",
                    };
                    let mut stderr = String::new();
                    for run in &report.runs {
                        for v in run.verdicts.iter().filter(|v| !v.ok) {
                            stderr.push_str(&format!(
                                "{} violated {} on seed {seed}: replay with `{}`\n",
                                run.preset.as_str(),
                                v.checker,
                                replay_command(&s.replay_target(), seed, run.preset)
                            ));
                        }
                    }
                    Outcome {
                        code: if report.hardened_ok() { 0 } else { 1 },
                        stdout,
                        stderr,
                    }
                }
            }
        }
        Command::Replay {
            name,
            seed,
            preset,
            trace,
            file,
            bug,
        } => {
            let s = match load(&name, file.as_deref()) {
                Ok(s) => s,
                Err(e) => return bad_input(e),
            };
            let (preset, bug) = match preset_and_bug(preset, bug.as_deref(), "replay") {
                Ok(pb) => pb,
                Err(e) => return bad_input(e),
            };
            let (params, config) = s.setup(preset, bug);
            let mut head = format!(
                "replay {} seed {seed} preset {}{}\noptions:\n",
                s.name,
                preset.as_str(),
                bug.map(|b| format!(" bug {}", b.name)).unwrap_or_default()
            );
            for (k, v) in params.expand(seed).plan.describe() {
                head.push_str(&format!("  {k} = {v}\n"));
            }
            // The header first, so a trace follows it on the terminal.
            print!("{head}");
            let _ = std::io::stdout().flush();
            let r = run_checked(&params, seed, config, trace);
            let mut out = String::from("verdicts:\n");
            for v in &r.verdicts {
                if v.ok {
                    out.push_str(&format!("  {:<22} ok\n", v.checker));
                } else {
                    out.push_str(&format!(
                        "  {:<22} VIOLATED x{}: {} (first offender {})\n",
                        v.checker,
                        v.violations,
                        v.detail,
                        v.first_offender.as_deref().unwrap_or("-")
                    ));
                }
            }
            let m = &r.metrics;
            out.push_str(&format!(
                "metrics: requests={} bulk={} bytes={} retries={} aborts={} failures={} drain_time_s={}\n",
                m.requests,
                m.bulk_requests,
                m.bytes,
                m.retries,
                m.aborts,
                m.failures,
                m.drain_time_ms
                    .map(|t| format!("{:.1}", t as f64 / 1000.0))
                    .unwrap_or_else(|| "never".into())
            ));
            Outcome {
                code: if r.ok() { 0 } else { 1 },
                stdout: out,
                stderr: String::new(),
            }
        }
        Command::Shrink {
            name,
            seed,
            preset,
            bug,
            checker,
            max_runs,
            out,
            file,
        } => {
            let s = match load(&name, file.as_deref()) {
                Ok(s) => s,
                Err(e) => return bad_input(e),
            };
            let (preset, bug) = match preset_and_bug(preset, bug.as_deref(), "shrink") {
                Ok(pb) => pb,
                Err(e) => return bad_input(e),
            };
            if let Some(c) = &checker {
                if !crate::checker::CHECKERS.contains(&c.as_str()) {
                    return bad_input(format!(
                        "unknown checker {c:?}; checkers: {}",
                        crate::checker::CHECKERS.join(", ")
                    ));
                }
            }
            let opts = crate::shrink::ShrinkOptions {
                seed,
                preset,
                bug,
                checker,
                max_runs: max_runs.max(1),
            };
            let r = match crate::shrink::shrink(&s, &opts) {
                Ok(r) => r,
                Err(e) => return bad_input(e),
            };
            let path = out.unwrap_or_else(|| PathBuf::from(format!("{}.toml", r.scenario.name)));
            let text = match crate::shrink::scenario_file(&r, &path) {
                Ok(t) => t,
                Err(e) => return bad_input(e),
            };
            if let Err(e) = std::fs::write(&path, text) {
                return bad_input(format!("cannot write {}: {e}", path.display()));
            }
            Outcome {
                code: 0,
                stdout: format!(
                    "shrunk {} seed {seed} preset {}: {} still fails\n  before: {}\n  after:  {}\n  {} candidates{}\n  wrote {}\n  replay: cargo run -p sim -- replay {} --file {} --seed {seed} --preset {}{} --trace\n",
                    s.name,
                    preset.as_str(),
                    r.checker,
                    r.before,
                    r.after,
                    r.runs,
                    if r.minimal { ", minimal" } else { ", candidate budget spent: not minimal" },
                    path.display(),
                    r.scenario.name,
                    path.display(),
                    preset.as_str(),
                    bug_flag(bug.map(|b| b.name)),
                ),
                stderr: String::new(),
            }
        }
        Command::Explore {
            name,
            file,
            seeds,
            start,
            jobs,
            shard,
            preset,
            bug,
            check_determinism,
            queue,
            check_queue,
            skip_marks,
            format,
        } => {
            let shard = match parse_shard(&shard) {
                Ok(s) => s,
                Err(e) => return bad_input(e),
            };
            if !(0.0..=1.0).contains(&check_determinism) {
                return bad_input("--check-determinism must be in [0, 1]");
            }
            if !(0.0..=1.0).contains(&check_queue) {
                return bad_input("--check-queue must be in [0, 1]");
            }
            let (preset, bug) = match preset_and_bug(preset, bug.as_deref(), "explore") {
                Ok(pb) => pb,
                Err(e) => return bad_input(e),
            };
            let all = name == "all" && file.is_none();
            let scenarios: Vec<Result<Scenario, ScenarioError>> = if all {
                Scenario::known()
                    .iter()
                    .map(|n| Scenario::embedded(n))
                    .collect()
            } else {
                vec![load(&name, file.as_deref())]
            };
            let jobs = jobs.unwrap_or_else(default_jobs);
            let opts = crate::explore::SweepOptions {
                start,
                seeds,
                shard,
                jobs,
                preset,
                bug,
                check_determinism,
                queue: queue.backend(),
                check_queue,
                require_marks: !skip_marks,
                progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            };
            let mut stdout = String::new();
            let mut json = Vec::new();
            let mut ok = true;
            for s in scenarios {
                let s = match s {
                    Ok(s) => s,
                    Err(e) => return bad_input(e),
                };
                let summary = crate::explore::sweep(&s, &opts);
                ok &= summary.ok();
                match format {
                    SweepFormat::Text => stdout.push_str(&crate::explore::render_text(&summary)),
                    SweepFormat::Json => json.push(summary),
                }
            }
            if format == SweepFormat::Json {
                // One object either way: a scenario's summary, or for `all`
                // the sum with every scenario's summary inside.
                let text = if all {
                    serde_json::to_string_pretty(&crate::explore::AllSweepsSummary::new(json))
                } else {
                    serde_json::to_string_pretty(&json.first())
                };
                stdout = text.expect("summaries serialize") + "\n";
            }
            Outcome {
                code: if ok { 0 } else { 1 },
                stdout,
                stderr: String::new(),
            }
        }
        Command::Bugs { measure, budget } => {
            let mut out = String::new();
            let mut all_caught = true;
            let bugs = crate::explore::BUGS;
            // Columns as wide as their longest entry.
            let width = |f: fn(&crate::explore::PlantedBug) -> &str| {
                bugs.iter().map(|b| f(b).len()).max().unwrap_or(0)
            };
            let (name_w, checker_w, scenario_w) = (
                width(|b| b.name),
                width(|b| b.caught_by),
                width(|b| b.scenario),
            );
            for b in bugs {
                out.push_str(&format!(
                    "{:<name_w$} caught by {:<checker_w$} in {:<scenario_w$} {}{}\n",
                    b.name,
                    b.caught_by,
                    b.scenario,
                    if b.also_disable.is_empty() {
                        String::new()
                    } else {
                        format!("(with {} off) ", b.also_disable.join(" and "))
                    },
                    b.breaks
                ));
                if measure {
                    match crate::explore::seeds_to_catch(b, budget) {
                        Some((seed, failed)) => {
                            let expected = failed.contains(&b.caught_by);
                            all_caught &= expected;
                            out.push_str(&format!(
                                "{:<name_w$} seeds to first catch: {} (seed {seed}: {}){}\n",
                                "",
                                seed + 1,
                                failed.join(", "),
                                if expected {
                                    ""
                                } else {
                                    " NOT by the expected checker"
                                }
                            ));
                        }
                        None => {
                            all_caught = false;
                            out.push_str(&format!(
                                "{:<name_w$} NOT caught within {budget} seeds\n",
                                ""
                            ));
                        }
                    }
                }
            }
            Outcome {
                code: if all_caught { 0 } else { 1 },
                stdout: out,
                stderr: String::new(),
            }
        }
        Command::BatchSize { study, sizes } => run_study(Knob::MaxPerType, study, &sizes),
        Command::Debounce { study, delays } => run_study(Knob::DebounceMs, study, &delays),
        Command::Reports { dir } => {
            let mut written = String::new();
            for name in Scenario::known() {
                let s = match Scenario::embedded(&name) {
                    Ok(s) => s,
                    Err(e) => return bad_input(e),
                };
                let md = render_markdown(&ScenarioReport::run(&s, s.seed, &s.presets));
                let path = dir.join(format!("{name}.md"));
                if let Err(e) =
                    std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, md))
                {
                    return bad_input(format!("cannot write {}: {e}", path.display()));
                }
                written.push_str(&format!("wrote {}\n", path.display()));
            }
            let mut scenarios = Vec::new();
            for name in Scenario::known() {
                match Scenario::embedded(&name) {
                    Ok(s) => scenarios.push(s),
                    Err(e) => return bad_input(e),
                }
            }
            let tallies = verdict(&scenarios, VERDICT_SEEDS, default_jobs());
            let pages = [
                (
                    "README.md",
                    render_verdict_markdown(&tallies, VERDICT_SEEDS),
                ),
                (
                    Knob::MaxPerType.page(),
                    committed_study(Knob::MaxPerType, default_jobs()),
                ),
                (
                    Knob::DebounceMs.page(),
                    committed_study(Knob::DebounceMs, default_jobs()),
                ),
            ];
            for (file, md) in pages {
                let path = dir.join(file);
                if let Err(e) = std::fs::write(&path, md) {
                    return bad_input(format!("cannot write {}: {e}", path.display()));
                }
                written.push_str(&format!("wrote {}\n", path.display()));
            }
            Outcome {
                code: 0,
                stdout: written,
                stderr: String::new(),
            }
        }
    }
}

/// Seeds `start..start+n` of every preset: violations per checker, failing
/// seeds with replay commands, and speed. Speed figures are wall-clock
/// measurements of this machine, printed apart from the (deterministic)
/// findings.
fn sweep(s: &Scenario, start: u64, n: u64, presets: &[Preset]) -> Outcome {
    let params = s.world_params();
    let mut out = format!("sweep {} seeds {}..{}\n", s.name, start, start + n);
    let mut stderr = String::new();
    let mut hardened_ok = true;
    for preset in presets {
        let wall = std::time::Instant::now();
        let mut per_checker: BTreeMap<&str, u64> = BTreeMap::new();
        let mut failing: Vec<u64> = Vec::new();
        let mut sim_ms: i64 = 0;
        for seed in start..start + n {
            let r = run_checked(&params, seed, s.engine_config(*preset), false);
            sim_ms += r.metrics.sim_time_ms;
            let mut failed = false;
            for v in r.verdicts.iter().filter(|v| !v.ok) {
                *per_checker.entry(v.checker).or_default() += 1;
                failed = true;
            }
            if failed {
                failing.push(seed);
            }
        }
        let secs = wall.elapsed().as_secs_f64().max(1e-9);
        if *preset == Preset::Hardened && !failing.is_empty() {
            hardened_ok = false;
        }
        out.push_str(&format!(
            "{:<10} seeds={} failing_seeds={}",
            preset.as_str(),
            n,
            failing.len()
        ));
        for (c, k) in &per_checker {
            out.push_str(&format!(" {c}={k}"));
        }
        out.push('\n');
        for seed in failing.iter().take(5) {
            out.push_str(&format!(
                "  replay: {}\n",
                replay_command(&s.replay_target(), *seed, *preset)
            ));
        }
        stderr.push_str(&format!(
            "{:<10} {:.1} seeds/s, {:.0}x real time (wall clock, this machine)\n",
            preset.as_str(),
            n as f64 / secs,
            sim_ms as f64 / 1000.0 / secs
        ));
    }
    Outcome {
        code: if hardened_ok { 0 } else { 1 },
        stdout: out,
        stderr,
    }
}

/// Parses `args` (with the program name first) and runs; clap's own errors
/// (unknown flags, bad values) exit 2 too.
pub fn run_args<I, T>(args: I) -> Outcome
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    match Cli::try_parse_from(args) {
        Ok(cli) => run(cli),
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let text = e.render().to_string();
            if code == 0 {
                Outcome {
                    code,
                    stdout: text,
                    stderr: String::new(),
                }
            } else {
                Outcome {
                    code,
                    stdout: String::new(),
                    stderr: text,
                }
            }
        }
    }
}

/// The binary's entry point: returns the exit code.
pub fn main() -> i32 {
    let o = run_args(std::env::args_os());
    print!("{}", o.stdout);
    eprint!("{}", o.stderr);
    o.code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_scenario_lists_the_known_ones() {
        let o = run_args(["sim", "scenario", "nope"]);
        assert_eq!(o.code, 2);
        assert!(
            o.stderr.contains("unknown scenario \"nope\""),
            "{}",
            o.stderr
        );
        assert!(o.stderr.contains("offline-reconnect"), "{}", o.stderr);
    }

    #[test]
    fn malformed_file_names_the_line() {
        let dir = std::env::temp_dir().join(format!("sim-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(
            &path,
            "name = \"x\"\nsummary = \"y\"\n[world]\nusers = [1\n",
        )
        .unwrap();
        let o = run_args(["sim", "scenario", "x", "--file", path.to_str().unwrap()]);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(o.code, 2);
        assert!(o.stderr.contains("bad.toml:4:"), "{}", o.stderr);
    }

    #[test]
    fn bad_flags_exit_2() {
        assert_eq!(
            run_args(["sim", "scenario", "normal-usage", "--preset", "x"]).code,
            2
        );
        assert_eq!(
            run_args([
                "sim",
                "replay",
                "normal-usage",
                "--seed",
                "1",
                "--preset",
                "all"
            ])
            .code,
            2
        );
        assert_eq!(
            run_args(["sim", "scenario", "normal-usage", "--seeds", "0"]).code,
            2
        );
    }

    #[test]
    fn batch_size_refuses_bad_sizes_and_the_individual_preset() {
        for (args, says) in [
            (vec!["--sizes", "10,0"], "outside 1..=1000"),
            (vec!["--sizes", "10,ten"], "\"ten\""),
            (
                vec!["--preset", "individual"],
                "means nothing to individual",
            ),
            (vec!["--seeds", "0"], "--seeds must be at least 1"),
        ] {
            let argv = ["sim", "batch-size", "backup-import"]
                .into_iter()
                .chain(args);
            let o = run_args(argv);
            assert_eq!(o.code, 2, "{}", o.stderr);
            assert!(o.stderr.contains(says), "{}", o.stderr);
        }
        assert_eq!(run_args(["sim", "batch-size", "nope"]).code, 2);
    }

    /// The rows of a study run with `--format json` that held (exit 0).
    fn study_rows<const N: usize>(argv: [&str; N]) -> Vec<serde_json::Value> {
        let o = run_args(argv);
        assert_eq!(o.code, 0, "{}", o.stderr);
        serde_json::from_str(&o.stdout).expect("a JSON array of rows")
    }

    #[test]
    fn batch_size_runs_each_size_on_the_same_seeds() {
        let rows = study_rows([
            "sim",
            "batch-size",
            "large-batch",
            "--sizes",
            "10,200",
            "--seeds",
            "2",
            "--format",
            "json",
        ]);
        let got: Vec<(String, u64, u64)> = rows
            .iter()
            .map(|r| {
                (
                    r["preset"].as_str().unwrap().to_string(),
                    r["max_per_type"].as_u64().unwrap(),
                    r["seeds"].as_u64().unwrap(),
                )
            })
            .collect();
        let want = [
            ("batched", 10),
            ("batched", 200),
            ("hardened", 10),
            ("hardened", 200),
        ];
        assert_eq!(
            got,
            want.map(|(p, n)| (p.to_string(), n, 2)).to_vec(),
            "a row per preset and size, in that order"
        );
        // 160 players: at least 16 calls of 10 a seed; at 200 a type, a
        // few calls a seed (the first pass may start before the last
        // player is queued).
        let bulk = |i: usize| rows[i]["bulk_requests"].as_u64().unwrap();
        for (small, large) in [(0, 1), (2, 3)] {
            assert!(bulk(small) >= 2 * 16, "{rows:?}");
            assert!(bulk(large) < bulk(small) / 4, "{rows:?}");
        }
    }

    #[test]
    fn debounce_refuses_bad_delays_and_studies_every_preset() {
        for (args, says) in [
            (
                vec!["--delays", "0,60001"],
                "--delays: 60001 is outside 0..=60000",
            ),
            (vec!["--delays", "100,100"], "given twice"),
            (vec!["--seeds", "0"], "--seeds must be at least 1"),
        ] {
            let argv = ["sim", "debounce", "normal-usage"].into_iter().chain(args);
            let o = run_args(argv);
            assert_eq!(o.code, 2, "{}", o.stderr);
            assert!(o.stderr.contains(says), "{}", o.stderr);
        }
        let rows = study_rows([
            "sim",
            "debounce",
            "normal-usage",
            "--delays",
            "0",
            "--seeds",
            "1",
            "--format",
            "json",
        ]);
        let presets: Vec<&str> = rows.iter().map(|r| r["preset"].as_str().unwrap()).collect();
        assert_eq!(presets, ["individual", "batched", "hardened"]);
    }

    /// normal-usage's edits come 0.1 to 1.5 s apart on a good network: a
    /// 2 s wait gathers several into one call, and every edit waits for it.
    #[test]
    fn a_debounce_trades_requests_for_time_to_the_server() {
        let rows = study_rows([
            "sim",
            "debounce",
            "normal-usage",
            "--delays",
            "0,2000",
            "--seeds",
            "3",
            "--preset",
            "hardened",
            "--format",
            "json",
        ]);
        let get = |i: usize, key: &str| rows[i][key].as_u64().unwrap();
        assert_eq!((get(0, "debounce_ms"), get(1, "debounce_ms")), (0, 2000));
        for i in [0, 1] {
            assert_eq!(get(i, "edits"), 60, "{rows:?}");
            assert_eq!(get(i, "edits_never_on_server"), 0, "{rows:?}");
        }
        assert_eq!(get(0, "requests"), 60, "no wait: a call an edit");
        assert!(get(1, "requests") <= 40, "{rows:?}");
        // A call reaches the server in 20 to 80 ms.
        assert!(get(0, "edit_to_server_ms_p99") < 200, "{rows:?}");
        assert!(get(1, "edit_to_server_ms_median") > 500, "{rows:?}");
        assert!(get(1, "edit_to_server_ms_p99") >= 2000, "{rows:?}");
    }

    /// `sim explore ARGS --format json`: the exit code and the parsed output
    /// (stderr in the panic message if it is not JSON).
    fn explore_json(args: &[&str]) -> (i32, serde_json::Value) {
        let argv = ["sim", "explore"]
            .iter()
            .chain(args)
            .chain(&["--format", "json"])
            .copied();
        let o = run_args(argv);
        let v = serde_json::from_str(&o.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", o.stdout, o.stderr));
        (o.code, v)
    }

    #[test]
    fn explore_json_is_one_object_for_one_scenario_and_for_all() {
        let has_headline = |v: &serde_json::Value| {
            for k in [
                "scenario",
                "preset",
                "seeds",
                "violations",
                "seeds_per_second",
                "failing_seeds",
            ] {
                assert!(v.get(k).is_some(), "no {k} in {v}");
            }
        };
        let (code, v) = explore_json(&["normal-usage", "--seeds", "2", "--skip-marks"]);
        assert_eq!(code, 0, "{v}");
        has_headline(&v);
        assert_eq!(v["scenario"], "normal-usage");
        assert_eq!(v["seeds"], 2);

        // A failing sweep exits 1 and names a replay command per failing seed.
        let (code, v) = explore_json(&[
            "partial-failure",
            "--seeds",
            "1",
            "--bug",
            "non-atomic-bulk",
        ]);
        assert_eq!(code, 1, "{v}");
        assert_eq!(v["failing_seeds"], serde_json::json!([0]));
        assert_eq!(
            v["replay_commands"][0],
            "cargo run -p sim -- replay partial-failure --seed 0 --preset hardened --trace --bug non-atomic-bulk"
        );

        let (code, v) = explore_json(&[
            "all",
            "--seeds",
            "1",
            "--start",
            "3",
            "--check-determinism",
            "0",
            "--skip-marks",
        ]);
        assert_eq!(code, 0, "{v}");
        has_headline(&v);
        let n = Scenario::known().len();
        assert_eq!(v["scenario"], "all");
        assert_eq!(v["seeds"], n as u64);
        assert_eq!(v["scenarios"].as_array().map(Vec::len), Some(n));
    }

    #[test]
    fn explore_sweeps_a_scenario_file_and_its_replays_name_the_file() {
        // A shrunk regression: fails under its planted bug on its seed, and
        // `replay NAME` alone could not find it (it is not embedded).
        let file = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scenarios/regressions/roster-delete-unsubsumed-seed779437.toml"
        );
        let s = Scenario::from_file(Path::new(file)).expect("regression file");
        let seed = s.seed.to_string();
        let args = ["ignored", "--file", file, "--seeds", "1", "--start", &seed];
        let (code, v) = explore_json(&[&args[..], &["--bug", "roster-delete-unsubsumed"]].concat());
        assert_eq!(code, 1, "{v}");
        assert_eq!(v["scenario"], s.name.as_str());
        assert_eq!(
            v["replay_commands"][0],
            format!(
                "cargo run -p sim -- replay {} --file {file} --seed {seed} --preset hardened --trace --bug roster-delete-unsubsumed",
                s.name
            )
        );
        let (code, v) = explore_json(&args);
        assert_eq!(code, 0, "the hardened engine holds on it: {v}");
        // A missing file is bad input, named.
        let o = run_args([
            "sim",
            "explore",
            "x",
            "--file",
            "/nonexistent.toml",
            "--seeds",
            "1",
        ]);
        assert_eq!(o.code, 2);
        assert!(o.stderr.contains("/nonexistent.toml"), "{}", o.stderr);
    }

    #[test]
    fn list_names_every_scenario() {
        let o = run_args(["sim", "list"]);
        assert_eq!(o.code, 0);
        assert_eq!(o.stdout.lines().count(), Scenario::known().len());
    }

    #[test]
    fn a_scenario_report_is_byte_identical_twice() {
        let a = run_args(["sim", "scenario", "normal-usage", "--seed", "3"]);
        let b = run_args(["sim", "scenario", "normal-usage", "--seed", "3"]);
        assert_eq!(a.code, 0, "{}", a.stderr);
        assert_eq!(a.stdout, b.stdout);
        assert!(a.stdout.contains("## Presets side by side"));
    }
}
