//! Shrunk failures committed as regressions (`scenarios/regressions/`,
//! written by `sim shrink`): each must still fail its recorded checker under
//! its recorded preset (and planted bug), the hardened preset without a
//! bug must hold on it, and its workload must be one the app could make. A
//! file that stops failing means the simulator lost the ability to show
//! that failure.

use sim::explore::PlantedBug;
use sim::scenario::Scenario;
use sim::world::run_checked;
use sync_core::engine::Preset;

#[test]
fn shrunk_regressions_still_fail_their_checker() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/regressions");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("scenarios/regressions")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no regression files in {}",
        dir.display()
    );
    for path in files {
        let s = Scenario::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(s.script.is_some(), "{}: no [script]", path.display());
        let shrunk = s
            .shrunk
            .clone()
            .unwrap_or_else(|| panic!("{}: no [shrunk]", path.display()));
        let bug = shrunk.bug.as_deref().map(|b| PlantedBug::find(b).unwrap());
        let (params, config) = s.setup(shrunk.preset, bug);
        // A workload the app could make: its failure is the bug's, not a
        // missing parent's or a duplicate name's (what `sim shrink` holds
        // candidates to).
        let script = params.expand(shrunk.seed);
        assert!(
            sim::workload::app_could_make(&script.edits),
            "{}: a workload the app could not make (a child names a parent its script \
             never creates or already deleted, a staff member takes a name another holds, \
             or an update or delete names an entity that is not there)",
            path.display()
        );
        let r = run_checked(&params, shrunk.seed, config, false);
        let failed: Vec<&str> = r
            .verdicts
            .iter()
            .filter(|v| !v.ok)
            .map(|v| v.checker)
            .collect();
        assert!(
            failed.contains(&shrunk.checker.as_str()),
            "{}: expected {} to fail, failed: {failed:?}",
            path.display(),
            shrunk.checker
        );
        let control = run_checked(
            &s.world_params(),
            shrunk.seed,
            s.engine_config(Preset::Hardened),
            false,
        );
        assert!(
            control.ok(),
            "{}: hardened does not hold on it",
            path.display()
        );
    }
}
