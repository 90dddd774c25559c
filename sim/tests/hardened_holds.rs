//! The hardened preset holds every invariant on every scenario, over each
//! scenario's fixed seed list (`test_seeds`: 200; 50 for big-import, 20
//! for large-backlog), and reaches every coverage mark the scenario lists.
//! One test per scenario so they run in parallel. A failure lists the
//! replay command of every failing seed.
//!
//! `SIM_SEEDS=N` caps the seeds per scenario for a quick local run.

use sim::scenario::Scenario;
use sim::world::run_checked;
use sync_core::engine::Preset;

/// Runs the hardened preset over `seeds` of `s`; the marks it reached, or
/// a message naming every failing seed with the command that replays it.
fn run_hardened(
    s: &Scenario,
    seeds: u64,
    replay: impl Fn(u64) -> String,
) -> std::collections::BTreeSet<&'static str> {
    let params = s.world_params();
    let mut failures = Vec::new();
    let mut reached = std::collections::BTreeSet::new();
    for seed in 0..seeds {
        let r = run_checked(&params, seed, s.engine_config(Preset::Hardened), false);
        reached.extend(r.output.marks.keys().copied());
        for v in r.verdicts.iter().filter(|v| !v.ok) {
            failures.push(format!(
                "{} seed {seed}: {} ({}): {}\n  replay: {}",
                s.name,
                v.checker,
                v.first_offender.as_deref().unwrap_or("-"),
                v.detail,
                replay(seed)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "the hardened preset broke an invariant:\n{}",
        failures.join("\n")
    );
    reached
}

fn holds(name: &str) {
    let cap: Option<u64> = std::env::var("SIM_SEEDS")
        .ok()
        .map(|s| s.parse().expect("SIM_SEEDS is a number"));
    let s = Scenario::embedded(name).expect("embedded scenario");
    let seeds = cap.map_or(s.test_seeds, |c| c.min(s.test_seeds));
    assert!(seeds > 0, "{name}: no seeds to run");
    let reached = run_hardened(&s, seeds, |seed| {
        format!("cargo run -p sim -- replay {name} --seed {seed} --preset hardened --trace")
    });
    // Coverage marks: the states this scenario exists to reach were reached
    // (a capped run may legitimately miss some).
    if cap.is_none() {
        let missing: Vec<&String> = s
            .marks
            .iter()
            .filter(|m| !reached.contains(m.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "{name}: marks never reached in {seeds} seeds: {missing:?}"
        );
    }
}

/// The hardened preset holds at any batch size, not only at the plan's 50
/// a type: `sim batch-size` found two bugs away from it. At 1 or 3 a
/// type, upserts waiting for a name another member gives up filled their
/// type's selection while the member's operation queued behind them was
/// never selected (name-handover never drained on 27 of 30 seeds at 1).
/// At 100 or 200 a type, calls went over 017's cap of 500 operations and
/// were refused (big-import, every seed). The adaptive chunk size can
/// reach 1 under timeouts whatever the ceiling.
#[test]
fn holds_at_any_batch_size() {
    for (name, size, seeds) in [
        ("name-handover", 1, 30),
        ("name-handover", 3, 30),
        ("full-mix", 1, 10),
        ("big-import", 200, 10),
    ] {
        let mut s = Scenario::embedded(name).expect("embedded scenario");
        s.world.max_per_type = size;
        run_hardened(&s, seeds, |seed| {
            format!(
                "cargo run -p sim -- batch-size {name} --sizes {size} --preset hardened --start {seed} --seeds 1"
            )
        });
    }
}

macro_rules! scenarios {
    ($($test:ident => $name:literal,)*) => {
        $(#[test] fn $test() { holds($name); })*

        #[test]
        fn every_scenario_has_a_test() {
            let mut listed = vec![$($name.to_string()),*];
            listed.sort();
            let mut known = Scenario::known();
            known.sort();
            assert_eq!(listed, known);
        }
    };
}

scenarios! {
    normal_usage => "normal-usage",
    normal_usage_debounce => "normal-usage-debounce",
    backup_import => "backup-import",
    partial_failure => "partial-failure",
    mixed_ops => "mixed-ops",
    large_batch => "large-batch",
    big_import => "big-import",
    offline_reconnect => "offline-reconnect",
    abort_cascade => "abort-cascade",
    app_kill_mid_sync => "app-kill-mid-sync",
    flaky_network => "flaky-network",
    auth_expiry => "auth-expiry",
    server_overload => "server-overload",
    stale_replay => "stale-replay",
    parent_child => "parent-child",
    large_backlog => "large-backlog",
    tenant_forgery => "tenant-forgery",
    retry_failed => "retry-failed",
    retry_quarantined => "retry-quarantined",
    relink_mid_sync => "relink-mid-sync",
    team_churn => "team-churn",
    orphan_resend => "orphan-resend",
    bisect_churn => "bisect-churn",
    full_mix => "full-mix",
    stale_roster => "stale-roster",
    name_handover => "name-handover",
    clock_skew => "clock-skew",
    second_tab => "second-tab",
    reload_mid_slow_call => "reload-mid-slow-call",
    roster_overlap => "roster-overlap",
    tab_handover => "tab-handover",
}
