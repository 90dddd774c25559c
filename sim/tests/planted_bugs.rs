//! Does the simulator catch what it claims to? Every planted bug in the
//! catalogue (`sim bugs`) must be caught by its expected checker within a
//! small seed budget of its scenario. `sim bugs --measure` prints the
//! seeds-to-first-catch figures.

use sim::explore::{seeds_to_catch, sweep, SweepOptions, BUGS};
use sim::scenario::Scenario;
use sync_core::engine::Preset;
use sync_core::queue::QueueBackend;

/// Seeds per bug; the search stops at the first catch, so a bug caught at
/// seed 2 costs two runs. The slowest (batch-id-outside-tx, which needs a
/// failed call retried under the same id) is caught at seed 42.
const BUDGET: u64 = 200;

#[test]
fn every_planted_bug_is_caught() {
    assert!(BUGS.len() >= 12, "the catalogue has {} bugs", BUGS.len());
    let mut missed = Vec::new();
    for bug in BUGS {
        match seeds_to_catch(bug, BUDGET) {
            Some((_, failed)) if failed.contains(&bug.caught_by) => {}
            Some((seed, failed)) => missed.push(format!(
                "{}: seed {seed} failed {failed:?}, not the expected {}",
                bug.name, bug.caught_by
            )),
            None => missed.push(format!(
                "{}: not caught in {BUDGET} seeds of {}",
                bug.name, bug.scenario
            )),
        }
    }
    assert!(missed.is_empty(), "{}", missed.join("\n"));
}

#[test]
fn sweeps_are_deterministic_and_shard_cleanly() {
    let s = Scenario::embedded("flaky-network").unwrap();
    let opts = |shard, check_determinism| SweepOptions {
        start: 0,
        seeds: 8,
        shard,
        jobs: 2,
        preset: Preset::Batched,
        bug: None,
        check_determinism,
        queue: QueueBackend::Sqlite,
        check_queue: 0.0,
        require_marks: true,
        progress: false,
    };
    let whole = sweep(&s, &opts((1, 1), 1.0));
    assert_eq!(whole.determinism_checked, 8);
    assert!(whole.nondeterministic_seeds.is_empty());
    let a = sweep(&s, &opts((1, 2), 0.5));
    let b = sweep(&s, &opts((2, 2), 0.0));
    assert_eq!(a.determinism_checked, 2, "every second seed of the shard");
    assert_eq!(b.determinism_checked, 0, "a fraction of 0 runs none twice");
    assert_eq!(a.seeds + b.seeds, whole.seeds);
    let mut both: Vec<u64> = a
        .failing_seeds
        .iter()
        .chain(&b.failing_seeds)
        .copied()
        .collect();
    both.sort();
    assert_eq!(both, whole.failing_seeds, "shards partition the seeds");
}

/// A sweep on the B-tree queue finds what the same sweep on SQLite finds,
/// seed for seed, and says it checked: every seed runs again on SQLite here
/// (`check_queue` 1.0), and the failing ones always would.
#[test]
fn a_btree_sweep_finds_what_sqlite_finds() {
    let s = Scenario::embedded("flaky-network").unwrap();
    let opts = |queue, check_queue| SweepOptions {
        start: 0,
        seeds: 8,
        shard: (1, 1),
        jobs: 2,
        preset: Preset::Batched,
        bug: None,
        check_determinism: 0.0,
        queue,
        check_queue,
        require_marks: true,
        progress: false,
    };
    let sqlite = sweep(&s, &opts(QueueBackend::Sqlite, 0.0));
    let btree = sweep(&s, &opts(QueueBackend::Btree, 1.0));
    assert!(
        !sqlite.failing_seeds.is_empty(),
        "the plan fails some of these seeds, so the comparison covers failures"
    );
    assert_eq!(btree.failing_seeds, sqlite.failing_seeds);
    assert_eq!(btree.violations, sqlite.violations);
    assert_eq!(btree.marks, sqlite.marks);
    assert_eq!((sqlite.queue.as_str(), sqlite.queue_checked), ("sqlite", 0));
    assert_eq!((btree.queue.as_str(), btree.queue_checked), ("btree", 8));
    assert!(
        btree.queue_differed_seeds.is_empty(),
        "{:?}",
        btree.queue_first_differences
    );
    // With no share asked for, the failing seeds are still run on SQLite.
    let failing_only = sweep(&s, &opts(QueueBackend::Btree, 0.0));
    assert_eq!(
        failing_only.queue_checked,
        sqlite.failing_seeds.len() as u64
    );
}
