//! Shrinking: reduce a failing run to a small one that still fails the same
//! checker, and write it as a scenario file with a `[script]`.
//!
//! Method: delta debugging (Zeller and Hildebrandt's ddmin, removing
//! complements) over the run's data: its edits, fault windows and the two
//! loss probabilities. Not proptest's shrinking: a run is one seed of a
//! whole world, not a value drawn from a strategy, and its workload and
//! faults are already plain data, which is what ddmin wants.
//!
//! Two passes: first whole entities (every edit of one entity together,
//! so updates never lose their create) and whole faults, then single
//! edits. A candidate counts as still failing only when
//! - the target checker fails, and no checker that held on the original
//!   run fails; and
//! - the control holds: the same candidate under the hardened preset with
//!   no planted bug passes every checker. Without the control, removing a
//!   parent's create slides into a different failure (a child rejected for
//!   its missing parent) that has nothing to do with the bug.
//!   `no_honest_rejection` is the checker that sees that slide when the
//!   rejected child harms nothing else (one regression shrunk before it
//!   existed kept a child whose parent's create was gone). The control
//!   is skipped when the subject is itself hardened without a bug (a real
//!   hardened failure) or when the original run fails the control too;
//!   and
//! - its workload is one the app could make
//!   (`workload::app_could_make`, the generator's own model of the
//!   device): no child names a parent whose create was removed or that
//!   was deleted before it, no staff member takes a name another one
//!   still holds (a hand-over whose delete was removed), and no update or
//!   delete names an entity whose create was removed. The control
//!   misses that slide when the bug
//!   makes the hardened preset skip the child, and it has no control at
//!   all for a real hardened failure. Such candidates are not run.
//!
//! The seed is kept, so madsim's draws (which message a loss probability
//! drops, latencies) come from the same stream; they can still shift as the
//! run shrinks, which is why each candidate is re-run.
//!
//! Bound: at most `max_runs` candidates (each one run of the subject, plus
//! one of the control when there is one); when the budget runs out the
//! result is the smallest failing run found so far and says it is not
//! minimal.

use crate::explore::PlantedBug;
use crate::nemesis::FaultPlan;
use crate::report::bug_flag;
use crate::scenario::{Scenario, Shrunk};
use crate::script::ScriptSection;
use crate::workload::app_could_make;
use crate::world::{run_checked, Script, WorldParams};
use std::collections::BTreeMap;
use std::sync::Arc;
use sync_core::engine::Preset;
use sync_core::EngineConfig;

/// What to shrink.
pub struct ShrinkOptions {
    pub seed: u64,
    pub preset: Preset,
    pub bug: Option<&'static PlantedBug>,
    /// The checker to preserve; default: the first one the run fails.
    pub checker: Option<String>,
    /// Upper bound on candidates tried (see the module's Bound).
    pub max_runs: u64,
}

/// One removable piece of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Atom {
    Edit(usize),
    /// (kind, user, index in that user's list) of a fault window.
    Window(u8, usize, usize),
    ServerErrors(usize),
    RequestLoss,
    ResponseLoss,
}

/// How big a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    pub edits: usize,
    pub windows: usize,
    pub losses: usize,
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} edits, {} fault windows, {} loss probabilities",
            self.edits, self.windows, self.losses
        )
    }
}

pub struct ShrinkResult {
    /// Whether candidates were held to the control (hardened, no bug).
    pub controlled: bool,
    pub checker: &'static str,
    /// Candidates tried, the original run included.
    pub runs: u64,
    pub before: Size,
    pub after: Size,
    /// False when the run budget ran out before ddmin finished.
    pub minimal: bool,
    /// The shrunk run as a scenario, ready to write.
    pub scenario: Scenario,
}

fn size(script: &Script) -> Size {
    let windows = |v: &Vec<Vec<crate::nemesis::Window>>| v.iter().map(Vec::len).sum::<usize>();
    let p = &script.plan;
    Size {
        edits: script.edits.len(),
        windows: windows(&p.offline)
            + windows(&p.silent_drop)
            + windows(&p.kills)
            + windows(&p.token_expired)
            + windows(&p.clock_skew)
            + windows(&p.second_tab)
            + windows(&p.tab_handover)
            + p.server_errors.len(),
        losses: usize::from(p.request_loss > 0.0) + usize::from(p.response_loss > 0.0),
    }
}

fn per_user_lists(p: &FaultPlan) -> [&Vec<Vec<crate::nemesis::Window>>; 7] {
    [
        &p.offline,
        &p.silent_drop,
        &p.kills,
        &p.token_expired,
        &p.clock_skew,
        &p.second_tab,
        &p.tab_handover,
    ]
}

/// Every atom of a script, grouped: one group per entity (all its edits),
/// one per fault window, one per loss probability.
fn groups(script: &Script) -> Vec<Vec<Atom>> {
    let mut by_entity: BTreeMap<(u32, sync_core::EntityType, &str), Vec<Atom>> = BTreeMap::new();
    for (i, e) in script.edits.iter().enumerate() {
        by_entity
            .entry((e.user, e.op.entity_type, e.op.entity_id.as_str()))
            .or_default()
            .push(Atom::Edit(i));
    }
    let mut out: Vec<Vec<Atom>> = by_entity.into_values().collect();
    for (k, lists) in per_user_lists(&script.plan).iter().enumerate() {
        for (u, ws) in lists.iter().enumerate() {
            out.extend((0..ws.len()).map(|i| vec![Atom::Window(k as u8, u, i)]));
        }
    }
    out.extend((0..script.plan.server_errors.len()).map(|i| vec![Atom::ServerErrors(i)]));
    if script.plan.request_loss > 0.0 {
        out.push(vec![Atom::RequestLoss]);
    }
    if script.plan.response_loss > 0.0 {
        out.push(vec![Atom::ResponseLoss]);
    }
    out
}

/// The part of `full` that `keep` names.
fn select(full: &Script, keep: &[Vec<Atom>]) -> Script {
    let atoms: std::collections::BTreeSet<Atom> = keep.iter().flatten().copied().collect();
    let p = &full.plan;
    let filter = |k: u8, lists: &Vec<Vec<crate::nemesis::Window>>| {
        lists
            .iter()
            .enumerate()
            .map(|(u, ws)| {
                ws.iter()
                    .enumerate()
                    .filter(|(i, _)| atoms.contains(&Atom::Window(k, u, *i)))
                    .map(|(_, w)| *w)
                    .collect()
            })
            .collect()
    };
    let [offline, silent_drop, kills, token_expired, clock_skew, second_tab, tab_handover] =
        per_user_lists(p);
    Script {
        edits: full
            .edits
            .iter()
            .enumerate()
            .filter(|(i, _)| atoms.contains(&Atom::Edit(*i)))
            .map(|(_, e)| e.clone())
            .collect(),
        plan: FaultPlan {
            request_loss: if atoms.contains(&Atom::RequestLoss) {
                p.request_loss
            } else {
                0.0
            },
            response_loss: if atoms.contains(&Atom::ResponseLoss) {
                p.response_loss
            } else {
                0.0
            },
            offline: filter(0, offline),
            silent_drop: filter(1, silent_drop),
            kills: filter(2, kills),
            token_expired: filter(3, token_expired),
            clock_skew: filter(4, clock_skew),
            second_tab: filter(5, second_tab),
            tab_handover: filter(6, tab_handover),
            server_errors: p
                .server_errors
                .iter()
                .enumerate()
                .filter(|(i, _)| atoms.contains(&Atom::ServerErrors(*i)))
                .map(|(_, w)| *w)
                .collect(),
            ..p.clone()
        },
    }
}

/// ddmin, complements only: split into `n` chunks; if dropping one chunk
/// still fails, keep the rest and coarsen; else refine until chunks are
/// single groups. Returns the smallest failing list found.
fn ddmin(
    mut current: Vec<Vec<Atom>>,
    fails: &mut dyn FnMut(&[Vec<Atom>]) -> Option<bool>,
) -> (Vec<Vec<Atom>>, bool) {
    let mut n = 2usize;
    // Bound: every round either removes at least one group or doubles n up
    // to the group count; `fails` returns None once the run budget is spent.
    loop {
        if current.len() == 1 {
            return match fails(&[]) {
                Some(true) => (Vec::new(), true),
                Some(false) => (current, true),
                None => (current, false),
            };
        }
        if current.is_empty() {
            return (current, true);
        }
        let chunk = current.len().div_ceil(n);
        let mut reduced = false;
        for start in (0..current.len()).step_by(chunk) {
            let rest: Vec<Vec<Atom>> = current[..start]
                .iter()
                .chain(current[(start + chunk).min(current.len())..].iter())
                .cloned()
                .collect();
            match fails(&rest) {
                None => return (current, false),
                Some(true) => {
                    current = rest;
                    n = (n - 1).max(2);
                    reduced = true;
                    break;
                }
                Some(false) => {}
            }
        }
        if !reduced {
            if n >= current.len() {
                return (current, true);
            }
            n = (2 * n).min(current.len());
        }
    }
}

/// Shrinks one failing run of `s`. `Err` when the run does not fail (or not
/// the asked checker): there is nothing to shrink.
pub fn shrink(s: &Scenario, o: &ShrinkOptions) -> Result<ShrinkResult, String> {
    let (params, config) = s.setup(o.preset, o.bug);
    let full = Arc::new(params.expand(o.seed));
    let failed_under = |params: &WorldParams, config: &EngineConfig, script: &Arc<Script>| {
        let mut p = params.clone();
        p.script = Some(Arc::clone(script));
        run_checked(&p, o.seed, config.clone(), false)
            .verdicts
            .iter()
            .filter(|v| !v.ok)
            .map(|v| v.checker)
            .collect::<Vec<&'static str>>()
    };
    let failed_on = |script: &Arc<Script>| failed_under(&params, &config, script);
    let (control_params, control_config) = s.setup(Preset::Hardened, None);
    let holds_control =
        |script: &Arc<Script>| failed_under(&control_params, &control_config, script).is_empty();
    let original = failed_on(&full);
    let use_control = !(o.preset == Preset::Hardened && o.bug.is_none()) && holds_control(&full);
    // A hand-written script may break the rule on purpose; then it is not
    // imposed on its candidates.
    let keep_links = app_could_make(&full.edits);
    let checker: &'static str = match &o.checker {
        Some(c) => original.iter().copied().find(|f| f == c).ok_or_else(|| {
            format!(
                "seed {} of {} under {} does not fail {c} (it fails: {})",
                o.seed,
                s.name,
                o.preset.as_str(),
                if original.is_empty() {
                    "nothing".to_string()
                } else {
                    original.join(", ")
                }
            )
        })?,
        None => original.first().copied().ok_or_else(|| {
            format!(
                "seed {} of {} holds every invariant under {}: nothing to shrink",
                o.seed,
                s.name,
                o.preset.as_str()
            )
        })?,
    };
    let mut runs = 1u64;
    let mut fails = |keep: &[Vec<Atom>]| -> Option<bool> {
        if runs >= o.max_runs {
            return None;
        }
        let candidate = Arc::new(select(&full, keep));
        if keep_links && !app_could_make(&candidate.edits) {
            // Not run: no budget spent on a workload the app cannot make.
            return Some(false);
        }
        runs += 1;
        let failed = failed_on(&candidate);
        Some(
            failed.contains(&checker)
                && failed.iter().all(|c| original.contains(c))
                && (!use_control || holds_control(&candidate)),
        )
    };
    let (coarse, done_coarse) = ddmin(groups(&full), &mut fails);
    let (fine, done_fine) = if done_coarse {
        let singles: Vec<Vec<Atom>> = coarse.iter().flatten().map(|a| vec![*a]).collect();
        ddmin(singles, &mut fails)
    } else {
        (coarse, false)
    };
    let shrunk = select(&full, &fine);
    let name = format!(
        "{}-{}{}-seed{}",
        s.name,
        o.preset.as_str(),
        o.bug.map(|b| format!("-{}", b.name)).unwrap_or_default(),
        o.seed
    );
    let mut scenario = s.clone();
    scenario.name = name;
    scenario.summary = format!(
        "{} seed {} shrunk: {} still fails {checker}",
        s.name,
        o.seed,
        o.preset.as_str()
    );
    scenario.presets = vec![o.preset];
    scenario.seed = o.seed;
    // A shrunk run reaches only what its failure needs.
    scenario.marks = Vec::new();
    scenario.script = Some(ScriptSection::from_script(&shrunk));
    scenario.shrunk = Some(Shrunk {
        from: s.name.clone(),
        seed: o.seed,
        preset: o.preset,
        bug: o.bug.map(|b| b.name.to_string()),
        checker: checker.to_string(),
    });
    Ok(ShrinkResult {
        controlled: use_control,
        checker,
        runs,
        before: size(&full),
        after: size(&shrunk),
        minimal: done_fine,
        scenario,
    })
}

/// The scenario file text: a comment saying what it is, then the TOML.
pub fn scenario_file(r: &ShrinkResult, path: &std::path::Path) -> Result<String, String> {
    let body = toml::to_string(&r.scenario).map_err(|e| format!("cannot write TOML: {e}"))?;
    let from = r.scenario.shrunk.as_ref().expect("a shrunk scenario");
    Ok(format!(
        "# Shrunk by `sim shrink {} --seed {} --preset {}{}` ({} candidates of delta\n\
         # debugging{}{}).\n\
         # Before: {}.\n\
         # After:  {}; still fails `{}`.\n\
         # Replay: cargo run -p sim -- replay {} --file {} --seed {} --preset {}{} --trace\n\n{body}",
        from.from,
        from.seed,
        from.preset.as_str(),
        bug_flag(from.bug.as_deref()),
        r.runs,
        if r.minimal { "" } else { "; candidate budget spent, not minimal" },
        if r.controlled { "; the hardened preset holds on it" } else { "" },
        r.before,
        r.after,
        r.checker,
        r.scenario.name,
        path.display(),
        from.seed,
        from.preset.as_str(),
        bug_flag(from.bug.as_deref()),
    ))
}
