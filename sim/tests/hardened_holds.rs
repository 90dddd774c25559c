//! The hardened preset holds every invariant on every scenario, over each
//! scenario's fixed seed list (`test_seeds`: 200, 20 for large-backlog).
//! A failure prints the replay command of every failing seed.
//!
//! `SIM_SEEDS=N` caps the seeds per scenario (a quick local run);
//! `SIM_SCENARIO=name` runs one scenario.

use sim::scenario::Scenario;
use sim::world::run_checked;
use sync_core::engine::Preset;

#[test]
fn hardened_holds_every_invariant_on_every_scenario() {
    let cap: Option<u64> = std::env::var("SIM_SEEDS")
        .ok()
        .map(|s| s.parse().expect("SIM_SEEDS"));
    let only = std::env::var("SIM_SCENARIO").ok();
    let mut failures = Vec::new();
    let mut runs = 0u64;
    for name in Scenario::known() {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let s = Scenario::embedded(&name).expect("embedded scenario");
        let params = s.world_params();
        let seeds = cap.map_or(s.test_seeds, |c| c.min(s.test_seeds));
        let started = std::time::Instant::now();
        for seed in 0..seeds {
            let r = run_checked(&params, seed, s.engine_config(Preset::Hardened), false);
            runs += 1;
            for v in r.verdicts.iter().filter(|v| !v.ok) {
                failures.push(format!(
                    "{name} seed {seed}: {} ({}): {}\n  replay: cargo run -p sim -- replay {name} --seed {seed} --preset hardened --trace",
                    v.checker,
                    v.first_offender.as_deref().unwrap_or("-"),
                    v.detail
                ));
            }
        }
        eprintln!("{name}: {seeds} seeds in {:.1?}", started.elapsed());
    }
    assert!(runs > 0, "no scenario ran");
    assert!(
        failures.is_empty(),
        "the hardened preset broke an invariant:\n{}",
        failures.join("\n")
    );
}
