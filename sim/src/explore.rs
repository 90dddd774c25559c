//! Exploration at scale: seed sweeps over worker threads, sharding for CI
//! matrices, a determinism self-check, and the catalogue of planted bugs
//! that shows the checkers catch what they claim to.

use crate::checker::CHECKERS;
use crate::history::Event;
use crate::report::{bug_flag, replay_command};
use crate::scenario::Scenario;
use crate::server::ServerBugs;
use crate::world::{run, run_checked, Checked, WorldParams};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use sync_core::engine::{EngineConfig, PlantedEngineBugs, Preset};
use sync_core::queue::QueueBackend;

/// A bug planted on purpose: a hardening switch turned off, or a server bug.
#[derive(Clone, Copy, Debug)]
pub struct PlantedBug {
    pub name: &'static str,
    /// What it breaks, in words.
    pub breaks: &'static str,
    /// The checker expected to catch it.
    pub caught_by: &'static str,
    /// The scenario that shows it.
    pub scenario: &'static str,
    kind: BugKind,
    /// Switches that mask this bug and are turned off with it. Defence in
    /// depth: per-entity versions alone already stop stale overwrites and
    /// double application, so single flight and batch ids only show their
    /// worth without them.
    pub also_disable: &'static [&'static str],
}

#[derive(Clone, Copy, Debug)]
enum BugKind {
    /// A `Hardening` switch turned off.
    Switch(&'static str),
    /// A planted server bug.
    Server(fn(&mut ServerBugs)),
    /// A planted engine bug.
    Engine(fn(&mut PlantedEngineBugs)),
}

/// The catalogue (`sim bugs`).
pub const BUGS: &[PlantedBug] = &[
    PlantedBug {
        name: "no-single-flight",
        breaks: "an edit while its entity is in flight becomes a second operation; the older one, retried later, overwrites the newer",
        caught_by: "per_entity_order",
        scenario: "stale-replay",
        kind: BugKind::Switch("single_flight"),
        also_disable: &["versions"],
    },
    PlantedBug {
        name: "no-batch-id",
        breaks: "a batch whose response was lost is applied again on retry",
        caught_by: "exactly_once",
        scenario: "flaky-network",
        kind: BugKind::Switch("batch_id"),
        also_disable: &["versions"],
    },
    PlantedBug {
        name: "no-versions",
        breaks: "a game save carries no batch id, so a timed-out save that committed is applied again by its retry (with single flight and batch ids on, the version gate is what still makes a save exactly-once); and an unresolved batch too big for the chunk is never dissolved (unsafe without versions), so abort-cascade never drains",
        caught_by: "exactly_once",
        scenario: "flaky-network",
        kind: BugKind::Switch("versions"),
        also_disable: &[],
    },
    PlantedBug {
        name: "no-parents-first",
        breaks: "children sent before their parents fail on foreign keys (and are quarantined as if bad) or lose their links",
        caught_by: "convergence",
        scenario: "parent-child",
        kind: BugKind::Switch("parents_first"),
        also_disable: &[],
    },
    PlantedBug {
        name: "no-bad-record-isolation",
        breaks: "one bad record keeps every good record of its batch off the server",
        caught_by: "convergence",
        scenario: "partial-failure",
        kind: BugKind::Switch("isolate_bad_records"),
        also_disable: &[],
    },
    PlantedBug {
        name: "no-error-classification",
        breaks: "transient errors are given up after ten tries; bad records retried ten times",
        caught_by: "convergence",
        scenario: "server-overload",
        kind: BugKind::Switch("classify_errors"),
        also_disable: &[],
    },
    PlantedBug {
        name: "no-adaptive-chunk",
        breaks: "a batch whose call outlasts the request timer, and is then cancelled by the server's statement timeout, is re-sent whole under its batch id at the same size forever: nothing ever commits",
        caught_by: "convergence",
        scenario: "abort-cascade",
        kind: BugKind::Switch("adaptive_chunk"),
        also_disable: &[],
    },
    PlantedBug {
        name: "no-atomic-local-write",
        breaks: "a kill between the local write and the enqueue loses the edit",
        caught_by: "no_lost_write",
        scenario: "app-kill-mid-sync",
        kind: BugKind::Switch("atomic_local_write"),
        also_disable: &[],
    },
    PlantedBug {
        name: "no-clock-guard",
        breaks: "an operation that failed while the device clock was ahead keeps the ready time it was given on that clock: once the clock is put right it waits as long as the clock was ahead (a day), not the longest backoff",
        caught_by: "convergence",
        scenario: "clock-skew",
        kind: BugKind::Switch("clock_guard"),
        also_disable: &[],
    },
    PlantedBug {
        name: "no-tab-lock",
        breaks: "a second tab of the app runs its own engine on the shared queue: its start resets the first tab's calls in flight and sends them again; a tab closed mid-call leaves its operations syncing until some engine starts again, which the tab that lives on never does; and one tab's completion re-queues an operation the other has re-sent under its batch id, which is then re-sent in part, so the server records the id with the part and the rest is refused (22023; it used to be answered as a replay, a lost write)",
        caught_by: "convergence",
        scenario: "second-tab",
        kind: BugKind::Switch("tab_lock"),
        also_disable: &[],
    },
    PlantedBug {
        name: "non-atomic-bulk",
        breaks: "a failed bulk call keeps the writes made before its error",
        caught_by: "atomicity",
        scenario: "partial-failure",
        kind: BugKind::Server(|b| b.non_atomic_bulk = true),
        also_disable: &[],
    },
    PlantedBug {
        name: "deletes-before-upserts",
        breaks: "the bulk call runs its deletes before its upserts: a call holding an older upsert and a newer delete of one entity deletes it, then writes the old row back, and the entity comes back to life",
        caught_by: "per_entity_order",
        scenario: "stale-replay",
        kind: BugKind::Server(|b| b.deletes_before_upserts = true),
        also_disable: &["single_flight", "versions"],
    },
    PlantedBug {
        name: "batch-id-outside-tx",
        breaks: "a batch id is recorded even when its call fails, so the retry is answered as a replay and its writes are lost",
        caught_by: "convergence",
        scenario: "offline-reconnect",
        kind: BugKind::Server(|b| b.batch_id_outside_tx = true),
        also_disable: &[],
    },
    PlantedBug {
        name: "batch-claimed-late",
        breaks: "the server looks a batch id up first and records it last, with no claim: a re-send arriving while the first call still runs (the app reloaded, or its request timer fired) misses the record, applies behind it and fails on the record's key (23505), so an honest batch that committed is rejected",
        caught_by: "no_honest_rejection",
        scenario: "reload-mid-slow-call",
        kind: BugKind::Server(|b| b.batch_claimed_late = true),
        also_disable: &[],
    },
    PlantedBug {
        name: "no-stale-reset",
        breaks: "engine start does not reset syncing operations: one in flight at a kill is never sent again",
        caught_by: "convergence",
        scenario: "app-kill-mid-sync",
        kind: BugKind::Engine(|b| b.no_stale_reset = true),
        also_disable: &[],
    },
    PlantedBug {
        name: "stale-payload",
        breaks: "a payload built from copies fetched before an await sends stale data, and mark_batch_completed then deletes the newer edit merged in between (the app's lost update)",
        caught_by: "convergence",
        scenario: "partial-failure",
        kind: BugKind::Engine(|b| b.stale_payload = true),
        also_disable: &[],
    },
    PlantedBug {
        name: "merge-keeps-batch-id",
        breaks: "an edit merged into an operation whose batch committed behind a lost response keeps that batch's id; the re-send is answered as a replay and mark_batch_completed deletes the newer edit the server never received",
        caught_by: "stable_batch_ids",
        scenario: "flaky-network",
        kind: BugKind::Engine(|b| b.merge_keeps_batch_id = true),
        also_disable: &[],
    },
    PlantedBug {
        name: "changed-op-unchecked",
        breaks: "an operation that changed between its selection and mark syncing skips the selection's parent rules: an edit that re-linked a child to a parent created after the selection sends the child without it, the call fails its foreign key, and the child is quarantined as a bad record (found in the hardened engine by a 3,000-seed sweep)",
        caught_by: "no_honest_rejection",
        scenario: "relink-mid-sync",
        kind: BugKind::Engine(|b| b.changed_op_unchecked = true),
        also_disable: &[],
    },
    PlantedBug {
        name: "roster-delete-unsubsumed",
        breaks: "a roster delete that its team's queued delete subsumes is dropped only from a fresh selection: re-sent in an unresolved batch, or pulled in as a blocker of the team's delete, it reaches a server that never saw the team and is quarantined as a bad record (found in the hardened engine by a 3,000-seed sweep)",
        caught_by: "no_honest_rejection",
        scenario: "team-churn",
        kind: BugKind::Engine(|b| b.roster_delete_unsubsumed = true),
        also_disable: &[],
    },
    PlantedBug {
        name: "superseded-resent",
        breaks: "an operation that a newer version of its entity supersedes is still sent when it comes back from an unresolved batch, a split call's unsent half or a kill: a child created for a parent, deleted while in flight, is re-sent after the parent's delete, fails its foreign key on a server that never saw the parent and is quarantined as a bad record (found in the hardened engine by a 10,000-seed sweep of offline-reconnect, seed 14001710)",
        caught_by: "no_honest_rejection",
        scenario: "orphan-resend",
        kind: BugKind::Engine(|b| b.superseded_resent = true),
        also_disable: &[],
    },
    PlantedBug {
        name: "half-unchecked",
        breaks: "the halves of a call split to isolate a bad record are sent as they were split, not held to the selection's rules again: an operation superseded, or a roster delete subsumed, by edits made while earlier halves were in flight is sent for a parent the server never saw, fails its foreign key and is treated as bad (found in the hardened engine by the orphan-resend scenario, seed 2412)",
        caught_by: "no_honest_rejection",
        scenario: "bisect-churn",
        kind: BugKind::Engine(|b| b.half_unchecked = true),
        also_disable: &[],
    },
    PlantedBug {
        name: "stale-resent",
        breaks: "an operation counts as superseded only while the newer operation of its entity is still queued: once that one has left (sent, or completed locally as subsumed), the stale one is sent again; a roster's create, in flight when the user deleted the roster and its team, comes back after the roster's delete was subsumed by the team's and fails its foreign key alone (found in the hardened engine by full-mix, seed 21002778)",
        caught_by: "no_honest_rejection",
        scenario: "stale-roster",
        kind: BugKind::Engine(|b| b.stale_resent = true),
        also_disable: &[],
    },
    PlantedBug {
        name: "name-handover-unchecked",
        breaks: "a member that takes a name another one gave up on the device is sent before that one's delete or rename lands: the call applies upserts before deletes (and a rename merged with a later edit may sit behind the taker), so the server still holds the name, rejects the call with a unique violation, and the taker is quarantined as a bad record (found in the hardened engine by the name-handover scenario)",
        caught_by: "no_honest_rejection",
        scenario: "name-handover",
        kind: BugKind::Engine(|b| b.name_handover_unchecked = true),
        also_disable: &[],
    },
    PlantedBug {
        name: "busy-loop",
        breaks: "the re-check after a pass counts operations still in backoff as work, so the engine spins through passes that send nothing (the app's busy loop)",
        caught_by: "no_busy_loop",
        scenario: "server-overload",
        kind: BugKind::Engine(|b| b.busy_loop = true),
        also_disable: &[],
    },
    PlantedBug {
        name: "user-id-from-payload",
        breaks: "the server trusts a row's user_id instead of auth.uid(): a tampered client writes into another user's data",
        caught_by: "tenant_isolation",
        scenario: "tenant-forgery",
        kind: BugKind::Server(|b| b.user_id_from_payload = true),
        also_disable: &[],
    },
    PlantedBug {
        name: "failed-escapes-merge",
        breaks: "a new edit skips its entity's failed operation and becomes a second one; Retry failed later replays the failed one's older data over it (the app's failed operation that escaped merging)",
        caught_by: "per_entity_order",
        scenario: "retry-failed",
        kind: BugKind::Engine(|b| b.failed_escapes_merge = true),
        // Only an operation given up on holds valid data in `failed`, and
        // only versions stop its replay from overwriting the newer edit.
        also_disable: &["versions", "classify_errors"],
    },
];

impl SweepSummary {
    /// Every seed held, every double run matched, every required mark was
    /// reached.
    pub fn ok(&self) -> bool {
        self.failing_seeds.is_empty()
            && self.nondeterministic_seeds.is_empty()
            && self.queue_differed_seeds.is_empty()
            && self.marks_missing.is_empty()
    }
}

impl PlantedBug {
    pub fn find(name: &str) -> Result<&'static PlantedBug, String> {
        BUGS.iter().find(|b| b.name == name).ok_or_else(|| {
            let known: Vec<&str> = BUGS.iter().map(|b| b.name).collect();
            format!("unknown bug {name:?}; known bugs: {}", known.join(", "))
        })
    }

    /// Turns off the switches that mask this bug (`also_disable`), and
    /// nothing else: the engine the bug is planted into, without the bug.
    pub fn unmask(&self, config: &mut EngineConfig) {
        for s in self.also_disable {
            assert!(config.hardening.disable(s), "known switch {s}");
        }
    }

    /// Plants the bug into a run's configuration.
    pub fn plant(&self, config: &mut EngineConfig, params: &mut WorldParams) {
        self.unmask(config);
        match self.kind {
            BugKind::Switch(s) => {
                assert!(config.hardening.disable(s), "known switch {s}");
            }
            BugKind::Server(f) => f(&mut params.server_bugs),
            BugKind::Engine(f) => f(&mut config.planted),
        }
    }
}

/// What a sweep found for one preset.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SweepSummary {
    pub scenario: String,
    pub preset: String,
    pub bug: Option<String>,
    pub seeds: u64,
    /// Seeds on which each checker failed.
    pub violations: BTreeMap<String, u64>,
    pub failing_seeds: Vec<u64>,
    /// For each failing seed, in the same order, the command that replays it.
    pub replay_commands: Vec<String>,
    /// Seeds whose two runs differed (determinism self-check).
    pub nondeterministic_seeds: Vec<u64>,
    /// For each of them, the first event that differed between the runs.
    pub first_differences: Vec<String>,
    pub determinism_checked: u64,
    /// The store the devices' queues kept their rows in (`sqlite`, `btree`).
    pub queue: String,
    /// B-tree sweeps: seeds also run on SQLite (every failing seed and a
    /// share of the others), and those whose two runs differed, with the
    /// first difference. Any is a bug in the B-tree queue, and fails the
    /// sweep.
    pub queue_checked: u64,
    pub queue_differed_seeds: Vec<u64>,
    pub queue_first_differences: Vec<String>,
    /// Coverage marks: how many seeds reached each (every mark reached).
    pub marks: BTreeMap<String, u64>,
    /// Marks the scenario requires that no seed reached. Enforced for the
    /// hardened preset without a planted bug (engine marks such as
    /// `bad_record_isolated` only exist there); empty otherwise.
    pub marks_missing: Vec<String>,
    /// Wall-clock measurements of this machine (not findings).
    pub seeds_per_second: f64,
    pub sim_seconds_per_wall_second: f64,
    pub wall_seconds: f64,
}

/// A sweep of `all` scenarios as one JSON object: the same headline fields
/// as a single scenario's `SweepSummary`, added up, with each scenario's
/// summary under `scenarios`.
#[derive(Clone, Debug, Serialize)]
pub struct AllSweepsSummary {
    /// Always `all`.
    pub scenario: String,
    pub preset: String,
    pub bug: Option<String>,
    /// Seeds run, over every scenario.
    pub seeds: u64,
    /// Seeds on which each checker failed, over every scenario.
    pub violations: BTreeMap<String, u64>,
    /// Every failing seed with its scenario.
    pub failing_seeds: Vec<FailingSeed>,
    pub nondeterministic_seeds: Vec<ScenarioSeed>,
    /// The store the devices' queues kept their rows in.
    pub queue: String,
    /// B-tree sweeps: seeds also run on SQLite, and those that differed.
    pub queue_checked: u64,
    pub queue_differed_seeds: Vec<ScenarioSeed>,
    /// Every required mark no seed reached, with its scenario.
    pub marks_missing: Vec<MissingMark>,
    /// Wall-clock measurements of this machine over the whole sweep.
    pub seeds_per_second: f64,
    pub sim_seconds_per_wall_second: f64,
    pub wall_seconds: f64,
    pub scenarios: Vec<SweepSummary>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FailingSeed {
    pub scenario: String,
    pub seed: u64,
    /// The command that replays it.
    pub replay: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ScenarioSeed {
    pub scenario: String,
    pub seed: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MissingMark {
    pub scenario: String,
    pub mark: String,
}

impl AllSweepsSummary {
    /// Adds up the summaries of one preset (and bug) over several scenarios.
    pub fn new(scenarios: Vec<SweepSummary>) -> AllSweepsSummary {
        let first = scenarios.first();
        let mut out = AllSweepsSummary {
            scenario: "all".to_string(),
            preset: first.map(|s| s.preset.clone()).unwrap_or_default(),
            bug: first.and_then(|s| s.bug.clone()),
            seeds: 0,
            violations: BTreeMap::new(),
            failing_seeds: Vec::new(),
            nondeterministic_seeds: Vec::new(),
            queue: first.map(|s| s.queue.clone()).unwrap_or_default(),
            queue_checked: 0,
            queue_differed_seeds: Vec::new(),
            marks_missing: Vec::new(),
            seeds_per_second: 0.0,
            sim_seconds_per_wall_second: 0.0,
            wall_seconds: 0.0,
            scenarios: Vec::new(),
        };
        let mut sim_seconds = 0.0;
        for s in &scenarios {
            out.seeds += s.seeds;
            for (c, n) in &s.violations {
                *out.violations.entry(c.clone()).or_default() += n;
            }
            out.failing_seeds
                .extend(
                    s.failing_seeds
                        .iter()
                        .zip(&s.replay_commands)
                        .map(|(seed, replay)| FailingSeed {
                            scenario: s.scenario.clone(),
                            seed: *seed,
                            replay: replay.clone(),
                        }),
                );
            out.nondeterministic_seeds
                .extend(s.nondeterministic_seeds.iter().map(|seed| ScenarioSeed {
                    scenario: s.scenario.clone(),
                    seed: *seed,
                }));
            out.queue_checked += s.queue_checked;
            out.queue_differed_seeds
                .extend(s.queue_differed_seeds.iter().map(|seed| ScenarioSeed {
                    scenario: s.scenario.clone(),
                    seed: *seed,
                }));
            out.marks_missing
                .extend(s.marks_missing.iter().map(|m| MissingMark {
                    scenario: s.scenario.clone(),
                    mark: m.clone(),
                }));
            out.wall_seconds += s.wall_seconds;
            sim_seconds += s.sim_seconds_per_wall_second * s.wall_seconds;
        }
        if out.wall_seconds > 0.0 {
            out.seeds_per_second = out.seeds as f64 / out.wall_seconds;
            out.sim_seconds_per_wall_second = sim_seconds / out.wall_seconds;
        }
        out.scenarios = scenarios;
        out
    }
}

/// How to sweep.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    pub start: u64,
    pub seeds: u64,
    /// (k, m): run only seeds with (seed - start) % m == k - 1.
    pub shard: (u64, u64),
    pub jobs: usize,
    pub preset: Preset,
    pub bug: Option<&'static PlantedBug>,
    /// Fraction of seeds run twice and compared.
    pub check_determinism: f64,
    /// The store the devices' queues keep their rows in.
    pub queue: QueueBackend,
    /// With the B-tree queue: the fraction of seeds run again on SQLite
    /// and compared, besides every failing seed (which always is).
    pub check_queue: f64,
    /// Fail when a mark the scenario lists is reached by no seed (hardened,
    /// no bug). Off for smoke sweeps too short to reach rare marks.
    pub require_marks: bool,
    /// Draw a progress bar on stderr (the CLI sets it when stderr is a
    /// terminal). Display only: it never reaches a summary.
    pub progress: bool,
}

/// One seed's outcome.
struct SeedResult {
    failed: Vec<&'static str>,
    sim_time_ms: i64,
    /// When the seed ran twice: the first difference between the two
    /// histories (`None` inside: identical).
    determinism: Option<Option<String>>,
    /// When the seed ran again on SQLite (a B-tree sweep): the first
    /// difference between the two runs (`None` inside: identical).
    queue_check: Option<Option<String>>,
    marks: Vec<&'static str>,
}

/// A fraction of a sweep's seeds as "every n-th seed by position" (the
/// re-runs' choice); `None` at 0.
fn every_nth(fraction: f64) -> Option<usize> {
    (fraction > 0.0).then(|| (1.0 / fraction).round().max(1.0) as usize)
}

/// Counts one seed's re-run (determinism, or the queue stores' cross-check):
/// `check` is `None` when the seed was not re-run, else the first
/// difference between its runs, if any.
fn tally_rerun(
    seed: u64,
    check: Option<Option<String>>,
    checked: &mut u64,
    differed: &mut Vec<u64>,
    differences: &mut Vec<String>,
) {
    let Some(difference) = check else {
        return;
    };
    *checked += 1;
    if let Some(diff) = difference {
        differed.push(seed);
        differences.push(format!("seed {seed}: {diff}"));
    }
}

/// The checkers that failed on a run.
fn failed_checkers(r: &Checked) -> Vec<&'static str> {
    r.verdicts
        .iter()
        .filter(|v| !v.ok)
        .map(|v| v.checker)
        .collect()
}

/// The first difference between the same seed's runs on two queue stores:
/// the history, then each device's final queue and local store, then the
/// coverage marks and the checkers' verdicts.
fn first_store_difference(a: &Checked, b: &Checked) -> Option<String> {
    if let Some(d) = first_difference(
        &fingerprint(&a.output.history),
        &fingerprint(&b.output.history),
    ) {
        return Some(d);
    }
    let devices = |r: &Checked| -> Vec<String> {
        r.output.devices.iter().map(|d| format!("{d:?}")).collect()
    };
    if let Some(u) = devices(a).iter().zip(devices(b)).position(|(x, y)| *x != y) {
        return Some(format!("device {u}'s final queue or local store differs"));
    }
    if a.output.marks != b.output.marks {
        return Some(format!(
            "coverage marks differ: {:?} / {:?}",
            a.output.marks, b.output.marks
        ));
    }
    let (fa, fb) = (failed_checkers(a), failed_checkers(b));
    (fa != fb).then(|| format!("failed checkers differ: {fa:?} / {fb:?}"))
}

/// The first event at which two runs' histories differ, if any.
fn first_difference(a: &[String], b: &[String]) -> Option<String> {
    let i = a.iter().zip(b).position(|(x, y)| x != y);
    match i {
        Some(i) => Some(format!("event {i} differs: {} / {}", a[i], b[i])),
        None if a.len() != b.len() => Some(format!(
            "one run has {} events, the other {}",
            a.len(),
            b.len()
        )),
        None => None,
    }
}

/// A history as text, for the determinism comparison.
fn fingerprint(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| format!("{e:?}")).collect()
}

/// Runs `work` on every unit `0..order.len()`, on `jobs` worker threads
/// that take the units in the order `order` lists them (a permutation),
/// and returns the results by unit: what the caller gets does not depend
/// on scheduling. Each unit is run on one worker, which gives each of its
/// seeds a fresh madsim runtime. Bound: one step per unit.
pub fn par_map<T: Send>(order: &[usize], jobs: usize, work: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<T>>> = Mutex::new((0..order.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let Some(&u) = order.get(next.fetch_add(1, Ordering::SeqCst)) else {
                    return;
                };
                let t = work(u);
                done.lock().expect("results")[u] = Some(t);
            });
        }
    });
    done.into_inner()
        .expect("results")
        .into_iter()
        .map(|t| t.expect("every unit ran"))
        .collect()
}

/// Runs the sweep on `jobs` worker threads (`par_map`). Each seed gets a
/// fresh madsim runtime on its worker; results are gathered by position,
/// so the summary does not depend on scheduling.
pub fn sweep(s: &Scenario, o: &SweepOptions) -> SweepSummary {
    let (mut params, config) = s.setup(o.preset, o.bug);
    params.queue = o.queue;
    // The same world on SQLite, for the B-tree queue's cross-check.
    let on_sqlite = WorldParams {
        queue: QueueBackend::Sqlite,
        ..params.clone()
    };
    let every_on_sqlite = every_nth(o.check_queue).filter(|_| o.queue == QueueBackend::Btree);
    let (k, m) = o.shard;
    let seeds: Vec<u64> = (o.start..o.start + o.seeds)
        .filter(|seed| (seed - o.start) % m == k - 1)
        .collect();
    // Every 1/fraction-th seed (by position) is run twice; none at 0.
    let every = every_nth(o.check_determinism);
    let wall = std::time::Instant::now();
    let bar = if o.progress {
        let bar = indicatif::ProgressBar::new(seeds.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:40}] {pos}/{len} seeds, {per_sec}, eta {eta}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(s.name.clone());
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let order: Vec<usize> = (0..seeds.len()).collect();
    let results = par_map(&order, o.jobs, |i| {
        let seed = seeds[i];
        let r = run_checked(&params, seed, config.clone(), false);
        let failed = failed_checkers(&r);
        // A B-tree sweep reports a failure only as SQLite has it too: every
        // failing seed runs again there, with a share of the others.
        let queue_check = (o.queue == QueueBackend::Btree
            && (!failed.is_empty() || every_on_sqlite.is_some_and(|n| i % n == 0)))
        .then(|| first_store_difference(&r, &run_checked(&on_sqlite, seed, config.clone(), false)));
        let det = every.is_some_and(|n| i % n == 0).then(|| {
            let again = run(&params, seed, config.clone(), false);
            first_difference(
                &fingerprint(&r.output.history),
                &fingerprint(&again.history),
            )
        });
        bar.inc(1);
        SeedResult {
            failed,
            sim_time_ms: r.metrics.sim_time_ms,
            determinism: det,
            queue_check,
            marks: r.output.marks.keys().copied().collect(),
        }
    });
    bar.finish_and_clear();
    let secs = wall.elapsed().as_secs_f64().max(1e-9);
    let mut out = SweepSummary {
        scenario: s.name.clone(),
        preset: o.preset.as_str().to_string(),
        bug: o.bug.map(|b| b.name.to_string()),
        seeds: seeds.len() as u64,
        queue: o.queue.as_str().to_string(),
        ..SweepSummary::default()
    };
    let mut sim_ms = 0i64;
    for (&seed, r) in seeds.iter().zip(results) {
        sim_ms += r.sim_time_ms;
        for m in r.marks {
            *out.marks.entry(m.to_string()).or_default() += 1;
        }
        if !r.failed.is_empty() {
            out.failing_seeds.push(seed);
        }
        for c in r.failed {
            *out.violations.entry(c.to_string()).or_default() += 1;
        }
        tally_rerun(
            seed,
            r.determinism,
            &mut out.determinism_checked,
            &mut out.nondeterministic_seeds,
            &mut out.first_differences,
        );
        tally_rerun(
            seed,
            r.queue_check,
            &mut out.queue_checked,
            &mut out.queue_differed_seeds,
            &mut out.queue_first_differences,
        );
    }
    if o.require_marks && o.preset == Preset::Hardened && o.bug.is_none() && !seeds.is_empty() {
        out.marks_missing = s
            .marks
            .iter()
            .filter(|m| !out.marks.contains_key(*m))
            .cloned()
            .collect();
    }
    out.replay_commands = out
        .failing_seeds
        .iter()
        .map(|seed| {
            replay_command(&s.replay_target(), *seed, o.preset) + &bug_flag(o.bug.map(|b| b.name))
        })
        .collect();
    out.seeds_per_second = seeds.len() as f64 / secs;
    out.sim_seconds_per_wall_second = sim_ms as f64 / 1000.0 / secs;
    out.wall_seconds = secs;
    out
}

/// " (seeds [..])" naming `seeds`, or nothing when there are none.
fn seeds_named(seeds: &[u64]) -> String {
    if seeds.is_empty() {
        String::new()
    } else {
        format!(" (seeds {seeds:?})")
    }
}

/// The summary as text: findings first, then the speed line.
pub fn render_text(s: &SweepSummary) -> String {
    let mut t = format!(
        "{} preset={}{} seeds={} failing_seeds={}\n",
        s.scenario,
        s.preset,
        s.bug
            .as_deref()
            .map(|b| format!(" bug={b}"))
            .unwrap_or_default(),
        s.seeds,
        s.failing_seeds.len()
    );
    for c in CHECKERS {
        if let Some(n) = s.violations.get(c) {
            t.push_str(&format!("  {c}: {n} seeds\n"));
        }
    }
    for command in s.replay_commands.iter().take(10) {
        t.push_str(&format!("  replay: {command}\n"));
    }
    if s.failing_seeds.len() > 10 {
        t.push_str(&format!(
            "  ... and {} more failing seeds\n",
            s.failing_seeds.len() - 10
        ));
    }
    t.push_str(&format!(
        "  determinism: {} seeds run twice, {} differed{}\n",
        s.determinism_checked,
        s.nondeterministic_seeds.len(),
        seeds_named(&s.nondeterministic_seeds)
    ));
    for d in &s.first_differences {
        t.push_str(&format!("  NONDETERMINISTIC {d}\n"));
    }
    if s.queue != QueueBackend::Sqlite.as_str() {
        t.push_str(&format!(
            "  queue: {}; {} seeds also run on sqlite, {} differed{}\n",
            s.queue,
            s.queue_checked,
            s.queue_differed_seeds.len(),
            seeds_named(&s.queue_differed_seeds)
        ));
    }
    for d in &s.queue_first_differences {
        t.push_str(&format!("  QUEUE STORES DIFFER {d}\n"));
    }
    if !s.marks.is_empty() {
        let reached: Vec<String> = s.marks.iter().map(|(m, n)| format!("{m} {n}")).collect();
        t.push_str(&format!(
            "  marks (seeds reaching): {}\n",
            reached.join(", ")
        ));
    }
    for m in &s.marks_missing {
        t.push_str(&format!(
            "  MARK NEVER REACHED: {m} (the scenario requires it; a fault or path stopped firing)\n"
        ));
    }
    t.push_str(&format!(
        "  speed: {:.1} seeds/s, {:.0}x real time (wall clock, this machine)\n",
        s.seeds_per_second, s.sim_seconds_per_wall_second
    ));
    t
}

/// The first seed below `budget` on which the planted bug makes a checker
/// fail in its scenario, with the checkers that failed.
///
/// A bug planted with masking switches off (`also_disable`) is caught only
/// on a seed where its expected checker fails with the bug and holds with
/// the same switches off and no bug: an engine without those switches may
/// break the invariant by itself (without single flight and versions,
/// `stale-replay` fails on a fifth of its seeds), and such a seed says
/// nothing about the bug. The hardened preset holds on every seed of every
/// scenario, so a bug without masking switches needs no such control run.
pub fn seeds_to_catch(bug: &'static PlantedBug, budget: u64) -> Option<(u64, Vec<&'static str>)> {
    let s = Scenario::embedded(bug.scenario).expect("bug scenario");
    let (params, config) = s.setup(Preset::Hardened, Some(bug));
    let control = (!bug.also_disable.is_empty()).then(|| {
        let (params, mut config) = s.setup(Preset::Hardened, None);
        bug.unmask(&mut config);
        (params, config)
    });
    let failed = |params: &WorldParams, seed: u64, config: &EngineConfig| -> Vec<&'static str> {
        failed_checkers(&run_checked(params, seed, config.clone(), false))
    };
    (0..budget).find_map(|seed| {
        let with_bug = failed(&params, seed, &config);
        let caught = match &control {
            None => !with_bug.is_empty(),
            Some((p, c)) => {
                with_bug.contains(&bug.caught_by) && !failed(p, seed, c).contains(&bug.caught_by)
            }
        };
        caught.then_some((seed, with_bug))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The queue stores' cross-check can fail: runs that differ are told
    /// apart, by their first differing event, and identical ones are not.
    #[test]
    fn the_store_cross_check_names_the_first_difference() {
        let s = Scenario::embedded("offline-reconnect").expect("embedded scenario");
        let (params, config) = s.setup(Preset::Hardened, None);
        let btree = WorldParams {
            queue: QueueBackend::Btree,
            ..params.clone()
        };
        let a = run_checked(&params, 1, config.clone(), false);
        let same = run_checked(&btree, 1, config.clone(), false);
        let other = run_checked(&btree, 2, config, false);
        assert_eq!(first_store_difference(&a, &same), None);
        let diff = first_store_difference(&a, &other).expect("two seeds differ");
        assert!(diff.starts_with("event "), "{diff}");
    }
}
