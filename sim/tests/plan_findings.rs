//! The checkers can fail: on the plan as written (`batched`) and on today's
//! engine (`individual`) the simulator finds the hazards app-behavior.md
//! describes, each within a small seed budget. If one of these stops
//! showing, a checker or a fault went blind.

use sim::history::{Event, ServerResult};
use sim::scenario::Scenario;
use sim::world::run_checked;
use sync_core::engine::Preset;

/// The first seed below `budget` on which `checker` fails, if any.
fn first_failing(scenario: &str, preset: Preset, checker: &str, budget: u64) -> Option<u64> {
    let s = Scenario::embedded(scenario).unwrap();
    let params = s.world_params();
    (0..budget).find(|seed| {
        run_checked(&params, *seed, s.engine_config(preset), false)
            .verdicts
            .iter()
            .any(|v| v.checker == checker && !v.ok)
    })
}

#[track_caller]
fn shows(scenario: &str, preset: Preset, checker: &str) {
    assert!(
        first_failing(scenario, preset, checker, 60).is_some(),
        "{scenario}: {} never broke {checker} in 60 seeds",
        preset.as_str()
    );
}

/// Whether the server rejected a call of the run with an error naming
/// every one of `words` (a SQLSTATE, a table).
fn rejected_with(run: &sim::world::Checked, words: &[&str]) -> bool {
    run.output.history.iter().any(|e| {
        matches!(e, Event::Server { result: ServerResult::Rejected { error }, .. }
            if words.iter().all(|w| error.contains(w)))
    })
}

#[test]
fn stale_replay_overwrites_newer_edits() {
    shows("stale-replay", Preset::Batched, "per_entity_order");
    shows("stale-replay", Preset::Individual, "per_entity_order");
}

#[test]
fn lost_responses_apply_operations_twice() {
    shows("flaky-network", Preset::Batched, "exactly_once");
    shows("abort-cascade", Preset::Batched, "exactly_once");
}

#[test]
fn a_poison_record_keeps_the_batch_from_converging() {
    shows("partial-failure", Preset::Batched, "convergence");
}

#[test]
fn games_before_parents_lose_their_links() {
    shows("parent-child", Preset::Batched, "referential_integrity");
    shows("parent-child", Preset::Individual, "referential_integrity");
}

#[test]
fn children_sent_without_their_new_parents_are_rejected_as_bad() {
    shows("relink-mid-sync", Preset::Batched, "no_honest_rejection");
    shows("relink-mid-sync", Preset::Individual, "no_honest_rejection");
}

#[test]
fn kills_between_local_write_and_enqueue_lose_writes() {
    shows("app-kill-mid-sync", Preset::Batched, "no_lost_write");
}

#[test]
fn retry_failed_replays_an_operation_that_escaped_merging() {
    shows("retry-failed", Preset::Batched, "per_entity_order");
    shows("retry-failed", Preset::Individual, "per_entity_order");
}

#[test]
fn retry_failed_keeps_a_bad_record_failing_its_batch_forever() {
    shows("retry-quarantined", Preset::Batched, "convergence");
}

#[test]
fn a_name_handed_over_in_one_call_is_rejected() {
    // The plan's call applies upserts before deletes: a new member's create
    // meets the old member still holding the name it gave up.
    shows("name-handover", Preset::Batched, "no_honest_rejection");
}

#[test]
fn overlapping_roster_replacements_miss_each_others_rows() {
    // A roster call outlives the client's timer and its re-send replaces
    // the same roster while it runs. Without a version, `_sync_roster`
    // takes no lock before its DELETE, which misses the rows the other
    // call committed meanwhile: re-inserting one fails with 23505 (and
    // rosters with no player in common both stay), as on PostgreSQL
    // (`overlapping_rosters` in tests/postgres.rs).
    let s = Scenario::embedded("roster-overlap").unwrap();
    let params = s.world_params();
    for preset in [Preset::Batched, Preset::Individual] {
        let first = (0..20).find(|seed| {
            let run = run_checked(&params, *seed, s.engine_config(preset), false);
            let collided = rejected_with(&run, &["23505", "team_players"]);
            run.output.marks.contains_key("roster_rows_unseen") && collided
        });
        assert!(
            first.is_some(),
            "roster-overlap: {}: no overlapping roster replacement failed on a row it could not see in 20 seeds",
            preset.as_str()
        );
    }
}

#[test]
fn overlapping_calls_that_list_shared_rows_in_opposite_orders_deadlock() {
    // The plan fills each payload array in queue order, and an edit merged
    // meanwhile moves its operation to the back: a slow call still running
    // after the client gave up and the engine's next call can reach shared
    // rows in opposite orders. PostgreSQL then aborts one with 40P01
    // (`opposite_lock_orders` in tests/postgres.rs); the server node plays
    // the two calls' row locks against each other (world.rs
    // `RunningCall`).
    let s = Scenario::embedded("roster-overlap").unwrap();
    let params = s.world_params();
    let first = (0..20).find(|seed| {
        let run = run_checked(&params, *seed, s.engine_config(Preset::Batched), false);
        let aborted = rejected_with(&run, &["40P01"]);
        let marks = &run.output.marks;
        marks.contains_key("deadlock_detected") && marks.contains_key("lock_waited") && aborted
    });
    assert!(
        first.is_some(),
        "roster-overlap: batched: no two calls deadlocked in 20 seeds"
    );
}

#[test]
fn a_game_save_overlapping_its_creation_takes_the_game_for_new() {
    // Two tabs save one new game at once. Without a version,
    // `save_game_with_relations` finds no row to lock for a game the other
    // call is creating, and answers version 1 again (PostgreSQL's
    // behaviour, `overlapping_game_saves` in tests/postgres.rs).
    let s = Scenario::embedded("second-tab").unwrap();
    let params = s.world_params();
    let first = (0..40).find(|seed| {
        run_checked(&params, *seed, s.engine_config(Preset::Individual), false)
            .output
            .marks
            .contains_key("game_created_unseen")
    });
    assert!(
        first.is_some(),
        "second-tab: no game save met a creation it could not see in 40 seeds"
    );
}

#[test]
fn a_tab_closed_mid_call_leaves_its_operations_syncing_for_good() {
    // The user closes the tab they worked in while its call is in flight,
    // and carries on in a tab opened before that call was sent. Only an
    // engine start resets `syncing` operations, and the remaining tab's
    // engine started earlier: without a lock (the plan says nothing of
    // tabs), the closed tab's operations never leave `syncing`.
    let s = Scenario::embedded("tab-handover").unwrap();
    let params = s.world_params();
    let first = (0..20).find(|seed| {
        let run = run_checked(&params, *seed, s.engine_config(Preset::Batched), false);
        run.output.marks.contains_key("tab_closed_mid_call")
            && run.verdicts.iter().any(|v| {
                v.checker == "convergence" && !v.ok && v.detail.contains("is still syncing")
            })
    });
    assert!(
        first.is_some(),
        "tab-handover: batched: no closed tab left its operations syncing in 20 seeds"
    );
}

#[test]
fn a_call_too_big_for_a_busy_server_never_gets_through() {
    // The plan's open question 2 ("Too large: timeout risk"). At its 50 a
    // type, a big import's calls carry up to 450 operations; at 20 ms a
    // row they outrun the 8 s statement timeout, and the plan re-sends
    // the same full call until it gives up. Past 55 a type a full call
    // also exceeds 017's cap of 500 operations (54000), which the plan,
    // sizing calls per type only, cannot know.
    let s = Scenario::embedded("big-import").unwrap();
    let params = s.world_params();
    let at = |max_per_type: usize, seed: u64| {
        let mut sized = s.clone();
        sized.world.max_per_type = max_per_type;
        run_checked(&params, seed, sized.engine_config(Preset::Batched), false)
    };
    let timed_out = (0..5).find(|seed| {
        let run = at(50, *seed);
        let gave_up = run
            .verdicts
            .iter()
            .any(|v| v.checker == "convergence" && !v.ok);
        rejected_with(&run, &["57014"]) && gave_up
    });
    assert!(
        timed_out.is_some(),
        "big-import: batched at 50 a type never timed out and gave up in 5 seeds"
    );
    assert!(
        (0..5).any(|seed| rejected_with(&at(200, seed), &["54000"])),
        "big-import: batched at 200 a type never sent a call over 017's cap in 5 seeds"
    );
}
