//! A run frees its whole world (queues, server model, history) before it
//! returns. Once a node's task parked on a waker that the world itself held
//! and kept it alive: 400 KB a seed, 400 MB over a 1,000-seed sweep.
//!
//! Alone in its binary: the count is per process and other tests' runs
//! would move it.

use sim::scenario::Scenario;
use sim::world::{live_worlds, run};
use sync_core::Preset;

#[test]
fn a_run_frees_its_world() {
    let s = Scenario::embedded("offline-reconnect").expect("embedded scenario");
    for preset in Preset::ALL {
        let (params, config) = s.setup(preset, None);
        for seed in 1..=3 {
            let out = run(&params, seed, config.clone(), false);
            assert!(!out.history.is_empty(), "the world ran");
            assert_eq!(
                live_worlds(),
                0,
                "{} seed {seed}: the world outlived its run",
                preset.as_str()
            );
        }
    }
}
