//! Checkers: each reads the history, the server's journal (the `Server`
//! events) and the final states, and says whether one guarantee held,
//! naming the first offending entity and operation when it did not.
//!
//! | checker | guarantee |
//! |---|---|
//! | atomicity | a bulk call committed all of its operations or none; no rejected call changed the server |
//! | per_entity_order | the server never went back to an older local version of an entity (no stale overwrite, no resurrection) |
//! | exactly_once | no operation (id, version) was applied by two commits |
//! | convergence | after healing: server equals the device for every entity, no pending or failed work left except quarantined bad records, each with its error |
//! | no_lost_write | every entity's last edit reached the server or is still reported (failed or quarantined) on the device |
//! | referential_integrity | no game or adjustment on the server lost a parent link the device has (checked once nothing of the entity is queued) |
//! | tenant_isolation | every row a user holds is one of that user's entities |
//! | no_busy_loop | no device runs more than a few sync passes that send nothing at one simulated instant |
//! | no_honest_rejection | the server rejects a call the device still waits for, for its content, only when it carries a bad record |
//! | stable_batch_ids | a call that re-uses a batch id carries only operations (entity, version, kind) every earlier call under that id carried |

use crate::history::{Event, ServerResult};
use crate::views::{expected, ServerSnapshot};
use crate::world::{DeviceFinal, RunOutput};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use sync_core::remote::OpRef;
use sync_core::{EntityType, OpKind, OpStatus};

/// One checker's verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    pub checker: &'static str,
    pub ok: bool,
    /// How many violations were found.
    pub violations: u64,
    /// The first violation, in words.
    pub detail: String,
    /// `type/id (op ...)` of the first offender.
    pub first_offender: Option<String>,
}

pub const CHECKERS: [&str; 10] = [
    "atomicity",
    "per_entity_order",
    "exactly_once",
    "convergence",
    "no_lost_write",
    "referential_integrity",
    "tenant_isolation",
    "no_busy_loop",
    "no_honest_rejection",
    "stable_batch_ids",
];

/// Sync passes that send nothing, per device and simulated instant, beyond
/// which the engine is spinning. An engine that stops after an empty pass
/// runs one per trigger, and a handful of triggers can share an instant
/// (an edit's nudge, the interval, a restart); a busy loop runs until its
/// pass bound (1,000).
pub const IDLE_PASSES_PER_INSTANT_MAX: u64 = 8;

#[derive(Default)]
struct Tally {
    violations: u64,
    first: Option<(String, String)>,
}

impl Tally {
    fn flag(&mut self, offender: String, detail: String) {
        self.violations += 1;
        if self.first.is_none() {
            self.first = Some((offender, detail));
        }
    }

    fn finish(self, checker: &'static str) -> CheckResult {
        match self.first {
            None => CheckResult {
                checker,
                ok: true,
                violations: 0,
                detail: String::new(),
                first_offender: None,
            },
            Some((offender, detail)) => CheckResult {
                checker,
                ok: false,
                violations: self.violations,
                detail,
                first_offender: Some(offender),
            },
        }
    }
}

/// What one server effect did to one entity, as the checkers need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EffectKind {
    /// The write changed the entity (upsert or delete).
    Applied { delete: bool },
    /// Ignored: not newer than what the server holds.
    Stale,
    /// A batch-id replay answered from the record.
    Replayed,
    /// A game lost a link because the parent was missing.
    LinkNulled { column: String },
}

fn key(t: EntityType, id: &str) -> String {
    format!("{}/{}", t.as_str(), id)
}

/// `type/id (op ID)`: how a verdict names its offending operation.
fn op_label(op: &OpRef) -> String {
    format!("{} (op {})", key(op.entity_type, &op.entity_id), op.op_id)
}

/// Runs every checker.
pub fn check_all(run: &RunOutput) -> Vec<CheckResult> {
    let j = Journal::new(run);
    let snaps: Vec<ServerSnapshot> = run
        .devices
        .iter()
        .map(|d| ServerSnapshot::new(&run.server, &d.user_id))
        .collect();
    vec![
        atomicity(&j),
        per_entity_order(&j),
        exactly_once(&j),
        convergence(run, &snaps),
        no_lost_write(run, &j, &snaps),
        referential_integrity(run, &j, &snaps),
        tenant_isolation(run, &snaps),
        no_busy_loop(run),
        no_honest_rejection(run, &j),
        stable_batch_ids(run),
    ]
}

/// One applied effect with the operation it came from: (req_id, user, op,
/// kind).
type Effect<'a> = (u64, u32, &'a OpRef, EffectKind);

/// The journal: every server event joined with the request that caused it.
struct Journal<'a> {
    invokes: BTreeMap<u64, (&'static str, &'a [OpRef])>,
    /// (req_id, user, committed effects or rejection, partial write flag)
    server: Vec<(u64, u32, &'a ServerResult)>,
    /// Matched once here for the four checkers that read them (matching is
    /// O(effects x operations) per request).
    effects: Vec<Effect<'a>>,
}

impl<'a> Journal<'a> {
    fn new(run: &'a RunOutput) -> Journal<'a> {
        let mut invokes = BTreeMap::new();
        let mut server = Vec::new();
        for e in &run.history {
            match e {
                Event::Invoke {
                    req_id, call, ops, ..
                } => {
                    invokes.insert(*req_id, (*call, ops.as_slice()));
                }
                Event::Server {
                    req_id,
                    user,
                    result,
                    ..
                } => server.push((*req_id, *user, result)),
                _ => {}
            }
        }
        let effects = Self::match_effects(&invokes, &server);
        Journal {
            invokes,
            server,
            effects,
        }
    }

    /// Every applied effect with the operation it came from.
    fn effects(&self) -> &[Effect<'a>] {
        &self.effects
    }

    fn match_effects(
        invokes: &BTreeMap<u64, (&'static str, &'a [OpRef])>,
        server: &[(u64, u32, &'a ServerResult)],
    ) -> Vec<Effect<'a>> {
        let mut out = Vec::new();
        for (req_id, user, result) in server {
            let ServerResult::Committed { effects } = result else {
                continue;
            };
            let ops = invokes.get(req_id).map(|(_, o)| *o).unwrap_or(&[]);
            // An entity may appear twice in one plan payload (two queued
            // operations): match effects to operations in order, deletes to
            // deletes.
            let mut used = vec![false; ops.len()];
            for eff in effects {
                let (t, id, kind) = crate::views::effect_view(eff);
                let want_delete = matches!(kind, EffectKind::Applied { delete: true });
                let pos = ops
                    .iter()
                    .enumerate()
                    .position(|(i, o)| {
                        !used[i]
                            && o.entity_type == t
                            && o.entity_id == id
                            && (!matches!(kind, EffectKind::Applied { .. })
                                || o.kind.is_delete() == want_delete)
                    })
                    .or_else(|| {
                        ops.iter()
                            .position(|o| o.entity_type == t && o.entity_id == id)
                    });
                if let Some(i) = pos {
                    if matches!(kind, EffectKind::Applied { .. }) {
                        used[i] = true;
                    }
                    out.push((*req_id, *user, &ops[i], kind));
                }
            }
        }
        out
    }
}

fn atomicity(j: &Journal) -> CheckResult {
    let mut t = Tally::default();
    for (req_id, _user, result) in &j.server {
        let Some((call, ops)) = j.invokes.get(req_id) else {
            continue;
        };
        match result {
            ServerResult::Committed { effects } => {
                if *call != "bulk_sync_entities" {
                    continue;
                }
                let touched: BTreeSet<(EntityType, String)> = effects
                    .iter()
                    .map(|e| {
                        let (t, id, _) = crate::views::effect_view(e);
                        (t, id)
                    })
                    .collect();
                let replay = effects
                    .iter()
                    .any(|e| crate::views::effect_view(e).2 == EffectKind::Replayed);
                if replay {
                    continue;
                }
                for op in ops.iter() {
                    if !touched.contains(&(op.entity_type, op.entity_id.clone())) {
                        t.flag(
                            op_label(op),
                            format!(
                                "request #{req_id} committed without its operation {} on {}",
                                op.op_id,
                                key(op.entity_type, &op.entity_id)
                            ),
                        );
                    }
                }
            }
            ServerResult::Rejected { error } if error.contains("partial write") => {
                let first = ops.first();
                t.flag(
                    first.map(op_label).unwrap_or_default(),
                    format!("request #{req_id} was rejected but changed the server: {error}"),
                );
            }
            ServerResult::Rejected { .. } => {}
        }
    }
    t.finish("atomicity")
}

fn per_entity_order(j: &Journal) -> CheckResult {
    let mut t = Tally::default();
    // (user, type, id) -> (highest version applied, was it a delete)
    let mut held: BTreeMap<(u32, EntityType, String), (i64, bool)> = BTreeMap::new();
    for &(req_id, user, op, ref kind) in j.effects() {
        let &EffectKind::Applied { delete } = kind else {
            continue;
        };
        let k = (user, op.entity_type, op.entity_id.clone());
        if let Some((v, was_delete)) = held.get(&k).copied() {
            if op.version < v {
                let what = if was_delete && !delete {
                    "resurrection: a deleted entity came back"
                } else {
                    "stale overwrite"
                };
                t.flag(
                    op_label(op),
                    format!(
                        "{what}: request #{req_id} applied v{} of {} after v{v} was committed",
                        op.version,
                        key(op.entity_type, &op.entity_id)
                    ),
                );
                continue;
            }
        }
        held.insert(k, (op.version, delete));
    }
    t.finish("per_entity_order")
}

fn exactly_once(j: &Journal) -> CheckResult {
    let mut t = Tally::default();
    let mut seen: BTreeMap<(u32, String, i64), u64> = BTreeMap::new();
    for &(req_id, user, op, ref kind) in j.effects() {
        if !matches!(kind, EffectKind::Applied { .. }) {
            continue;
        }
        let k = (user, op.op_id.clone(), op.version);
        if let Some(first) = seen.get(&k) {
            t.flag(
                op_label(op),
                format!(
                    "operation {} v{} applied twice: by request #{first} and again by #{req_id}",
                    op.op_id, op.version
                ),
            );
        } else {
            seen.insert(k, req_id);
        }
    }
    t.finish("exactly_once")
}

/// Whether an operation still in the queue is a quarantined bad record the
/// scenario made on purpose.
fn is_expected_quarantine(
    run: &RunOutput,
    dev: &DeviceFinal,
    op: &sync_core::SyncOperation,
) -> bool {
    op.quarantined
        && op.last_error.is_some()
        && run.bad_edits.iter().any(|e| {
            e.user == dev.user
                && e.op.entity_type == op.entity_type
                && e.op.entity_id == op.entity_id
                && e.op.data == op.data
        })
}

/// Entities whose last edit is a bad record the engine quarantined on
/// purpose: the server keeps the last good version, so they are excused from
/// comparison with the device.
fn excused(run: &RunOutput, dev: &DeviceFinal) -> BTreeSet<(EntityType, String)> {
    dev.ops
        .iter()
        .filter(|op| is_expected_quarantine(run, dev, op))
        .map(|op| (op.entity_type, op.entity_id.clone()))
        .collect()
}

fn convergence(run: &RunOutput, snaps: &[ServerSnapshot]) -> CheckResult {
    let mut t = Tally::default();
    for (dev, snap) in run.devices.iter().zip(snaps) {
        let excused = excused(run, dev);
        for op in &dev.ops {
            if is_expected_quarantine(run, dev, op) {
                continue;
            }
            let state = if op.quarantined {
                "quarantined, but the scenario did not make it bad"
            } else {
                match op.status {
                    OpStatus::Failed => "failed (gave up after max retries)",
                    OpStatus::Syncing => "still syncing",
                    OpStatus::Pending => "still pending",
                }
            };
            t.flag(
                format!("{} (op {})", key(op.entity_type, &op.entity_id), op.id),
                format!(
                    "u{}: queue not drained after healing: {} is {state}; last error: {}",
                    dev.user,
                    key(op.entity_type, &op.entity_id),
                    op.last_error.as_deref().unwrap_or("none")
                ),
            );
        }
        for local in &dev.local {
            if excused.contains(&(local.entity_type, local.entity_id.clone())) {
                continue;
            }
            let server = snap.entity(local.entity_type, &local.entity_id);
            let want = expected(local);
            if server != want {
                t.flag(
                    key(local.entity_type, &local.entity_id),
                    format!(
                        "u{}: server and device differ on {} (device v{}{}): {}",
                        dev.user,
                        key(local.entity_type, &local.entity_id),
                        local.version,
                        if local.deleted { ", deleted" } else { "" },
                        difference(&want, &server)
                    ),
                );
            }
        }
    }
    t.finish("convergence")
}

fn short(v: &Option<Value>) -> String {
    match v {
        None => "absent".to_string(),
        Some(v) => {
            let s = v.to_string();
            if s.len() > 120 {
                format!("{}...", &s[..120])
            } else {
                s
            }
        }
    }
}

/// Where two entity views differ: the differing fields (one level into a
/// game's parts), or the whole values when one side is absent.
fn difference(device: &Option<Value>, server: &Option<Value>) -> String {
    fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) if path.matches('.').count() < 2 => {
                let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let (va, vb) = (
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                    );
                    if va != vb {
                        walk(&format!("{path}.{k}"), va, vb, out);
                    }
                }
            }
            _ => out.push(format!(
                "{}: device {} / server {}",
                path.trim_start_matches('.'),
                short(&Some(a.clone())),
                short(&Some(b.clone()))
            )),
        }
    }
    match (device, server) {
        (Some(a), Some(b)) => {
            let mut out = Vec::new();
            walk("", a, b, &mut out);
            out.truncate(4);
            out.join("; ")
        }
        _ => format!("device {} / server {}", short(device), short(server)),
    }
}

fn no_lost_write(run: &RunOutput, j: &Journal, snaps: &[ServerSnapshot]) -> CheckResult {
    let mut t = Tally::default();
    // Highest version applied on the server, per (user, type, id).
    let mut reached: BTreeMap<(u32, EntityType, String), i64> = BTreeMap::new();
    for &(_, user, op, ref kind) in j.effects() {
        if matches!(kind, EffectKind::Applied { .. } | EffectKind::Stale) {
            let e = reached
                .entry((user, op.entity_type, op.entity_id.clone()))
                .or_insert(i64::MIN);
            *e = (*e).max(op.version);
        }
    }
    for (dev, snap) in run.devices.iter().zip(snaps) {
        for local in &dev.local {
            let k = (dev.user, local.entity_type, local.entity_id.clone());
            let delivered = reached.get(&k).is_some_and(|v| *v >= local.version);
            // Reported: an operation for the entity is still on the device
            // (the user can see it failed or waiting).
            let reported = dev
                .ops
                .iter()
                .any(|o| o.entity_type == local.entity_type && o.entity_id == local.entity_id);
            // A create cancelled by a delete before it left the device never
            // needed to reach the server. (Asked last: building both views
            // is the dear part, and most entities were delivered.)
            let server_agrees =
                || snap.entity(local.entity_type, &local.entity_id) == expected(local);
            if !delivered && !reported && !server_agrees() {
                t.flag(
                    key(local.entity_type, &local.entity_id),
                    format!(
                        "u{}: the last edit of {} (v{}) never reached the server and nothing on the device reports it",
                        dev.user,
                        key(local.entity_type, &local.entity_id),
                        local.version
                    ),
                );
            }
        }
    }
    t.finish("no_lost_write")
}

fn referential_integrity(run: &RunOutput, j: &Journal, snaps: &[ServerSnapshot]) -> CheckResult {
    let mut t = Tally::default();
    for (dev, snap) in run.devices.iter().zip(snaps) {
        // An entity with an operation still queued has a newer local copy
        // than the server's by design (a bad record retried forever, say):
        // that is convergence's finding, not a link the server lost. The
        // `excused` quarantined bad records are queued operations too, so
        // this one set covers them.
        let queued: BTreeSet<(EntityType, &str)> = dev
            .ops
            .iter()
            .map(|op| (op.entity_type, op.entity_id.as_str()))
            .collect();
        for local in dev.local.iter().filter(|l| !l.deleted) {
            if queued.contains(&(local.entity_type, local.entity_id.as_str())) {
                continue;
            }
            let row = match local.entity_type {
                EntityType::Game => &local.data["game"],
                EntityType::PlayerAdjustment => &local.data,
                _ => continue,
            };
            let Some(server_row) = snap.row(local.entity_type, &local.entity_id) else {
                continue; // missing entirely: convergence's business
            };
            for col in ["season_id", "tournament_id", "team_id"] {
                let want = &row[col];
                if !want.is_null() && server_row[col].is_null() {
                    t.flag(
                        key(local.entity_type, &local.entity_id),
                        format!(
                            "u{}: {} lost its link {col} = {want} on the server",
                            dev.user,
                            key(local.entity_type, &local.entity_id)
                        ),
                    );
                }
            }
        }
    }
    for &(req_id, _user, op, ref kind) in j.effects() {
        if let EffectKind::LinkNulled { column } = kind {
            t.flag(
                key(op.entity_type, &op.entity_id),
                format!(
                    "request #{req_id} saved {} before its parent: {column} set to null",
                    key(op.entity_type, &op.entity_id)
                ),
            );
        }
    }
    t.finish("referential_integrity")
}

fn tenant_isolation(run: &RunOutput, snaps: &[ServerSnapshot]) -> CheckResult {
    let mut t = Tally::default();
    for (dev, snap) in run.devices.iter().zip(snaps) {
        let prefix = format!("u{}_", dev.user);
        for (table, id) in snap.row_ids() {
            let own = id.starts_with(&prefix) || id == "app" || id == "default";
            if !own {
                t.flag(
                    format!("{table}/{id}"),
                    format!(
                        "u{} holds row {table}/{id}, which is not one of its entities",
                        dev.user
                    ),
                );
            }
        }
    }
    t.finish("tenant_isolation")
}

/// The app's busy loop: a re-check that counts operations still in backoff
/// as work makes the engine run pass after pass at one instant, each
/// sending nothing. Counted from the devices' `IdlePass` events.
fn no_busy_loop(run: &RunOutput) -> CheckResult {
    let mut t = Tally::default();
    let mut idle: BTreeMap<(u32, i64), u64> = BTreeMap::new();
    for e in &run.history {
        if let Event::IdlePass { t_ms, user } = e {
            *idle.entry((*user, *t_ms)).or_default() += 1;
        }
    }
    for ((user, t_ms), n) in idle {
        if n > IDLE_PASSES_PER_INSTANT_MAX {
            t.flag(
                format!("u{user}@{t_ms}ms"),
                format!(
                    "u{user} ran {n} sync passes that sent nothing at {t_ms} ms \
                     (more than {IDLE_PASSES_PER_INSTANT_MAX}: a busy loop)"
                ),
            );
        }
    }
    t.finish("no_busy_loop")
}

/// Whether a server error blames the records a call carries (SQLSTATE class
/// 22, data exception; 23, integrity constraint; 54, program limit such as
/// the payload cap), as opposed to the session (28), a concurrent writer
/// (40) or the server's health (57, 5xx).
fn blames_records(error: &str) -> bool {
    error
        .strip_prefix("database ")
        .is_some_and(|e| ["22", "23", "54"].iter().any(|class| e.starts_with(class)))
}

/// The server never rejects, for its content, a call the device is still
/// waiting for unless the call carries a bad record. Each such rejection
/// makes the engine treat an honest record as bad: it splits the batch and
/// may quarantine a record that was fine. `convergence` sees the harm only
/// when the rejection's answer arrives and the quarantine sticks; this
/// checker sees the rejection itself.
///
/// A call the device already gave up on (its timeout fired first) is exempt:
/// it can land after newer calls committed, and rejecting what is now out of
/// date is the server protecting itself (abort-cascade). So is a call
/// dropped unanswered (`Outcome::Dropped`: its tab closed or the app was
/// killed), for the same reason: the tab that takes over sends newer
/// calls while it may still run (tab-handover, seed 50002774: a team's
/// delete committed ahead of the dropped call's roster for it).
fn no_honest_rejection(run: &RunOutput, j: &Journal) -> CheckResult {
    let mut t = Tally::default();
    // A bad edit merged into an older operation keeps that operation's id,
    // so bad records are known by entity and version: the version an
    // operation carries is its latest edit's.
    let mut bad: BTreeSet<(u32, EntityType, &str, i64)> = BTreeSet::new();
    let mut completed: BTreeSet<u64> = BTreeSet::new();
    for e in &run.history {
        match e {
            Event::Edit {
                user,
                entity_type,
                entity_id,
                version,
                bad: true,
                ..
            } => {
                bad.insert((*user, *entity_type, entity_id.as_str(), *version));
            }
            Event::Complete { req_id, .. } => {
                completed.insert(*req_id);
            }
            Event::Server {
                req_id,
                user,
                result: ServerResult::Rejected { error },
                ..
            } if !completed.contains(req_id) && blames_records(error) => {
                let ops = j.invokes.get(req_id).map(|(_, o)| *o).unwrap_or(&[]);
                let carries_bad = ops.iter().any(|o| {
                    bad.contains(&(*user, o.entity_type, o.entity_id.as_str(), o.version))
                });
                if carries_bad {
                    continue;
                }
                // The offender is the operation the error names (a roster
                // shares its team's id), else the call's first.
                let named: BTreeSet<&str> = error
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .collect();
                let offender = ops
                    .iter()
                    .find(|o| named.contains(o.entity_id.as_str()))
                    .or(ops.first());
                t.flag(
                    offender.map(op_label).unwrap_or_default(),
                    format!(
                        "request #{req_id} of u{user} carried no bad record, yet the server \
                         rejected it while the device waited: {error}"
                    ),
                );
            }
            _ => {}
        }
    }
    t.finish("no_honest_rejection")
}

/// A batch id names one request's content. The server answers an id it
/// has recorded from the record, without applying anything, so an
/// operation that travels under an id whose call committed without it is
/// acknowledged and never applied: a lost write that `no_lost_write` sees
/// only if nothing later covers it (017 now refuses such a versioned call
/// with 22023). A call under an id may carry only operations that every
/// earlier call under it carried: any of those may be the one the server
/// recorded (an earlier call lost in flight is not), and the client cannot
/// tell which. So a re-send may carry less (operations merged since leave
/// the batch), never anything else. This checks the client at the call
/// that breaks the rule, whatever the server answers.
fn stable_batch_ids(run: &RunOutput) -> CheckResult {
    type Carried<'a> = BTreeSet<(EntityType, &'a str, i64, OpKind)>;
    fn carried(op: &OpRef) -> (EntityType, &str, i64, OpKind) {
        (op.entity_type, op.entity_id.as_str(), op.version, op.kind)
    }
    let mut t = Tally::default();
    // (user, batch id) -> every earlier call under it: (req_id, what it
    // carried). Bounded by the calls of the run.
    let mut earlier: BTreeMap<(u32, &str), Vec<(u64, Carried)>> = BTreeMap::new();
    for e in &run.history {
        let Event::Invoke {
            user,
            req_id,
            batch_id: Some(batch),
            ops,
            ..
        } = e
        else {
            continue;
        };
        let calls = earlier.entry((*user, batch.as_str())).or_default();
        for op in ops {
            let Some((without, _)) = calls.iter().find(|(_, c)| !c.contains(&carried(op))) else {
                continue;
            };
            t.flag(
                op_label(op),
                format!(
                    "request #{req_id} of u{user} re-used batch id {batch} for {} {} v{}, \
                     which request #{without} under the same id did not carry: if the \
                     server recorded #{without}, a replay acknowledges it unapplied",
                    op.kind.as_str(),
                    key(op.entity_type, &op.entity_id),
                    op.version
                ),
            );
        }
        calls.push((*req_id, ops.iter().map(carried).collect()));
    }
    t.finish("stable_batch_ids")
}

/// Each checker on hand-built histories: the simulation's sweeps show that
/// the hardened engine passes them and the planted bugs that they fail, and
/// these pin where each verdict's boundary lies (which version, which error
/// class, which instant), so a checker that stopped looking would fail here
/// first.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Outcome;
    use crate::server::{Change, Effect, UserId};
    use crate::workload::Edit;
    use crate::world::DeviceFinal;
    use sync_core::queue::QueueStats;
    use sync_core::{NewOperation, OpKind, SyncOperation};

    const BULK: &str = "bulk_sync_entities";

    fn run_of(history: Vec<Event>) -> RunOutput {
        RunOutput::of_history(history)
    }

    fn verdict(run: &RunOutput, checker: &str) -> CheckResult {
        check_all(run)
            .into_iter()
            .find(|r| r.checker == checker)
            .expect("a known checker")
    }

    fn op(op_id: &str, t: EntityType, id: &str, kind: OpKind, version: i64) -> OpRef {
        OpRef {
            op_id: op_id.to_string(),
            entity_type: t,
            entity_id: id.to_string(),
            kind,
            version,
        }
    }

    fn invoke(req_id: u64, user: u32, call: &'static str, ops: Vec<OpRef>) -> Event {
        invoke_with(req_id, user, call, None, ops)
    }

    /// A bulk call under batch id `batch`.
    fn invoke_in(req_id: u64, user: u32, batch: &str, ops: Vec<OpRef>) -> Event {
        invoke_with(req_id, user, BULK, Some(batch.to_string()), ops)
    }

    fn invoke_with(
        req_id: u64,
        user: u32,
        call: &'static str,
        batch_id: Option<String>,
        ops: Vec<OpRef>,
    ) -> Event {
        Event::Invoke {
            t_ms: 0,
            user,
            tab: 0,
            req_id,
            call,
            batch_id,
            ops,
            bytes: 0,
        }
    }

    fn committed(req_id: u64, user: u32, effects: Vec<Effect>) -> Event {
        Event::Server {
            t_ms: 0,
            user,
            req_id,
            call: BULK,
            result: ServerResult::Committed { effects },
        }
    }

    fn rejected(req_id: u64, user: u32, error: &str) -> Event {
        Event::Server {
            t_ms: 0,
            user,
            req_id,
            call: BULK,
            result: ServerResult::Rejected {
                error: error.to_string(),
            },
        }
    }

    fn timed_out(req_id: u64, user: u32) -> Event {
        Event::Complete {
            t_ms: 0,
            user,
            req_id,
            outcome: Outcome::Indeterminate,
        }
    }

    fn effect(t: EntityType, id: &str, change: Change) -> Effect {
        Effect {
            entity_type: t,
            entity_id: id.to_string(),
            change,
        }
    }

    fn edit(user: u32, t: EntityType, id: &str, version: i64, bad: bool) -> Event {
        Event::Edit {
            t_ms: 0,
            user,
            index: 0,
            op_id: format!("edit-{id}-v{version}"),
            entity_type: t,
            entity_id: id.to_string(),
            kind: OpKind::Update,
            version,
            bad,
            enqueued: true,
        }
    }

    #[test]
    fn atomicity_flags_a_commit_missing_an_operation_and_a_rejection_that_wrote() {
        let two = vec![
            op("a", EntityType::Team, "u0_team_1", OpKind::Create, 1),
            op("b", EntityType::Player, "u0_player_1", OpKind::Create, 1),
        ];
        let whole = run_of(vec![
            invoke(1, 0, BULK, two.clone()),
            committed(
                1,
                0,
                vec![
                    effect(EntityType::Team, "u0_team_1", Change::Upsert),
                    effect(EntityType::Player, "u0_player_1", Change::Upsert),
                ],
            ),
        ]);
        assert!(verdict(&whole, "atomicity").ok);

        let half = run_of(vec![
            invoke(1, 0, BULK, two.clone()),
            committed(
                1,
                0,
                vec![effect(EntityType::Team, "u0_team_1", Change::Upsert)],
            ),
        ]);
        let v = verdict(&half, "atomicity");
        assert!(!v.ok);
        assert_eq!(
            v.first_offender.as_deref(),
            Some("player/u0_player_1 (op b)")
        );

        // A replay is answered from the record: it names no effects per
        // operation, and that is not a half commit.
        let replay = run_of(vec![
            invoke(1, 0, BULK, two.clone()),
            committed(
                1,
                0,
                vec![effect(EntityType::Team, "u0_team_1", Change::Replayed)],
            ),
        ]);
        assert!(verdict(&replay, "atomicity").ok);

        let wrote = run_of(vec![
            invoke(1, 0, BULK, two),
            rejected(
                1,
                0,
                "database 23505: duplicate key (partial write: the server changed anyway)",
            ),
        ]);
        assert_eq!(verdict(&wrote, "atomicity").violations, 1);
    }

    #[test]
    fn per_entity_order_flags_an_older_version_after_a_newer_one_per_user() {
        let t = EntityType::Team;
        let history = |first: Change, second_version: i64, second_user: u32| {
            run_of(vec![
                invoke(1, 0, BULK, vec![op("a", t, "u0_team_1", OpKind::Update, 3)]),
                committed(1, 0, vec![effect(t, "u0_team_1", first)]),
                invoke(
                    2,
                    second_user,
                    BULK,
                    vec![op("a", t, "u0_team_1", OpKind::Update, second_version)],
                ),
                committed(2, second_user, vec![effect(t, "u0_team_1", Change::Upsert)]),
            ])
        };
        assert!(verdict(&history(Change::Upsert, 4, 0), "per_entity_order").ok);
        assert!(verdict(&history(Change::Upsert, 3, 0), "per_entity_order").ok);
        let stale = verdict(&history(Change::Upsert, 2, 0), "per_entity_order");
        assert!(!stale.ok);
        assert!(
            stale.detail.starts_with("stale overwrite"),
            "{}",
            stale.detail
        );
        let back = verdict(
            &history(Change::Delete { existed: true }, 2, 0),
            "per_entity_order",
        );
        assert!(back.detail.starts_with("resurrection"), "{}", back.detail);
        // Another user's entity of the same id is another entity.
        assert!(verdict(&history(Change::Upsert, 2, 1), "per_entity_order").ok);
    }

    #[test]
    fn exactly_once_flags_one_version_applied_twice_but_not_a_merge_or_a_stale_skip() {
        let t = EntityType::Player;
        let twice = |version: i64, second: Change| {
            run_of(vec![
                invoke(
                    1,
                    0,
                    BULK,
                    vec![op("a", t, "u0_player_1", OpKind::Update, 2)],
                ),
                committed(1, 0, vec![effect(t, "u0_player_1", Change::Upsert)]),
                invoke(
                    2,
                    0,
                    BULK,
                    vec![op("a", t, "u0_player_1", OpKind::Update, version)],
                ),
                committed(2, 0, vec![effect(t, "u0_player_1", second)]),
            ])
        };
        let v = verdict(&twice(2, Change::Upsert), "exactly_once");
        assert!(!v.ok);
        assert!(
            v.detail.contains("by request #1 and again by #2"),
            "{}",
            v.detail
        );
        // The same operation id with a newer version is a merged edit.
        assert!(verdict(&twice(3, Change::Upsert), "exactly_once").ok);
        let skipped = Change::SkippedStale {
            incoming: 2,
            held: 2,
        };
        assert!(verdict(&twice(2, skipped), "exactly_once").ok);
        assert!(verdict(&twice(2, Change::Replayed), "exactly_once").ok);
    }

    #[test]
    fn a_payload_with_an_entity_twice_matches_deletes_to_deletes() {
        // The plan's payload may carry a delete and a re-create of one
        // entity; the delete's effect belongs to the delete operation.
        let t = EntityType::Season;
        let run = run_of(vec![
            invoke(
                1,
                0,
                BULK,
                vec![
                    op("new", t, "u0_season_1", OpKind::Create, 5),
                    op("old", t, "u0_season_1", OpKind::Delete, 4),
                ],
            ),
            committed(
                1,
                0,
                vec![
                    effect(t, "u0_season_1", Change::Delete { existed: true }),
                    effect(t, "u0_season_1", Change::Upsert),
                ],
            ),
        ]);
        // Matched in payload order the delete (v4) would follow the create
        // (v5) and read as a stale overwrite.
        assert!(verdict(&run, "per_entity_order").ok);
        assert!(verdict(&run, "exactly_once").ok);
    }

    #[test]
    fn no_busy_loop_allows_a_handful_of_idle_passes_at_one_instant() {
        let passes = |n: u64, spread: bool| {
            run_of(
                (0..n)
                    .map(|i| Event::IdlePass {
                        t_ms: if spread { i as i64 } else { 7 },
                        user: 0,
                    })
                    .collect(),
            )
        };
        assert!(verdict(&passes(IDLE_PASSES_PER_INSTANT_MAX, false), "no_busy_loop").ok);
        let v = verdict(
            &passes(IDLE_PASSES_PER_INSTANT_MAX + 1, false),
            "no_busy_loop",
        );
        assert!(!v.ok);
        assert_eq!(v.first_offender.as_deref(), Some("u0@7ms"));
        assert!(verdict(&passes(100, true), "no_busy_loop").ok);
    }

    /// A roster call for a team the server does not hold: rejected for its
    /// content (23503) while the device waits, unless `before` says
    /// otherwise.
    fn roster_rejected(before: Vec<Event>, roster_version: i64, error: &str) -> RunOutput {
        let mut history = before;
        history.push(invoke(
            9,
            0,
            BULK,
            vec![
                op("p", EntityType::Player, "u0_player_1", OpKind::Update, 1),
                op(
                    "r",
                    EntityType::TeamRoster,
                    "u0_team_1",
                    OpKind::Update,
                    roster_version,
                ),
            ],
        ));
        history.push(rejected(9, 0, error));
        run_of(history)
    }

    const TEAM_MISSING: &str = "database 23503: team u0_team_1 not found";

    #[test]
    fn no_honest_rejection_flags_a_live_call_refused_for_records_that_were_fine() {
        let v = verdict(
            &roster_rejected(Vec::new(), 2, TEAM_MISSING),
            "no_honest_rejection",
        );
        assert!(!v.ok);
        // The error names the team's id, which the roster shares: the roster
        // is the offender, not the call's first operation.
        assert_eq!(
            v.first_offender.as_deref(),
            Some("teamRoster/u0_team_1 (op r)")
        );
        // A record the scenario made bad, but at an older version than the
        // one sent, does not excuse the call.
        let older = edit(0, EntityType::TeamRoster, "u0_team_1", 1, true);
        let v = verdict(
            &roster_rejected(vec![older], 2, TEAM_MISSING),
            "no_honest_rejection",
        );
        assert!(!v.ok);
    }

    #[test]
    fn no_honest_rejection_excuses_a_bad_record_known_by_entity_and_version() {
        // The bad edit merged into an older operation: its op id is not the
        // one sent ("r"), its entity and version are.
        let bad = edit(0, EntityType::TeamRoster, "u0_team_1", 2, true);
        let run = roster_rejected(vec![bad], 2, TEAM_MISSING);
        assert!(verdict(&run, "no_honest_rejection").ok);
        // Another user's bad record of the same id excuses nothing.
        let theirs = edit(1, EntityType::TeamRoster, "u0_team_1", 2, true);
        let run = roster_rejected(vec![theirs], 2, TEAM_MISSING);
        assert!(!verdict(&run, "no_honest_rejection").ok);
    }

    #[test]
    fn no_honest_rejection_exempts_a_call_the_device_gave_up_on() {
        let run = roster_rejected(vec![timed_out(9, 0)], 2, TEAM_MISSING);
        assert!(verdict(&run, "no_honest_rejection").ok);
        // Another request's timeout is not this one's.
        let run = roster_rejected(vec![timed_out(8, 0)], 2, TEAM_MISSING);
        assert!(!verdict(&run, "no_honest_rejection").ok);
        // Nor does a call dropped by a closed tab or a kill wait.
        let dropped = Event::Complete {
            t_ms: 0,
            user: 0,
            req_id: 9,
            outcome: Outcome::Dropped,
        };
        let run = roster_rejected(vec![dropped], 2, TEAM_MISSING);
        assert!(verdict(&run, "no_honest_rejection").ok);
    }

    #[test]
    fn no_honest_rejection_judges_only_errors_that_blame_the_records() {
        for blames in [
            "database 22P02: invalid input syntax",
            "database 23505: duplicate key",
            "database 54000: payload over the cap",
        ] {
            let run = roster_rejected(Vec::new(), 2, blames);
            assert!(!verdict(&run, "no_honest_rejection").ok, "{blames}");
        }
        for other in [
            "database 28000: not authenticated",
            "database 40001: serialization failure",
            "database 57014: statement timeout",
            "http 503: service unavailable",
            "23505 without the database prefix",
        ] {
            let run = roster_rejected(Vec::new(), 2, other);
            assert!(verdict(&run, "no_honest_rejection").ok, "{other}");
        }
    }

    #[test]
    fn stable_batch_ids_allows_a_resend_of_the_same_or_less() {
        let p1 = || op("p1", EntityType::Player, "u0_player_1", OpKind::Update, 3);
        let p2 = || op("p2", EntityType::Player, "u0_player_2", OpKind::Create, 1);
        let run = run_of(vec![
            invoke_in(1, 0, "batch-1", vec![p1(), p2()]),
            invoke_in(2, 0, "batch-1", vec![p1(), p2()]),
            // p2 merged with a later edit and left the batch.
            invoke_in(3, 0, "batch-1", vec![p1()]),
            // Ids are per user: u1's batch-1 is another batch.
            invoke_in(
                4,
                1,
                "batch-1",
                vec![op("q", EntityType::Team, "u1_team_1", OpKind::Create, 1)],
            ),
            // No batch id: nothing to compare.
            invoke(5, 0, BULK, vec![p1()]),
        ]);
        assert!(verdict(&run, "stable_batch_ids").ok);
    }

    #[test]
    fn stable_batch_ids_flags_a_newer_version_under_an_old_id() {
        let v = |version| {
            op(
                "p1",
                EntityType::Player,
                "u0_player_1",
                OpKind::Update,
                version,
            )
        };
        let run = run_of(vec![
            invoke_in(1, 0, "batch-1", vec![v(3)]),
            invoke_in(2, 0, "batch-1", vec![v(4)]),
        ]);
        let r = verdict(&run, "stable_batch_ids");
        assert!(!r.ok);
        assert_eq!(r.violations, 1);
        assert_eq!(
            r.first_offender.as_deref(),
            Some("player/u0_player_1 (op p1)")
        );
        assert!(r
            .detail
            .contains("request #2 of u0 re-used batch id batch-1 for update player/u0_player_1 v4, which request #1"));
        assert!(r.detail.contains("v4"), "{}", r.detail);
        // Another kind at the same version is other content too.
        let run = run_of(vec![
            invoke_in(1, 0, "batch-1", vec![v(3)]),
            invoke_in(
                2,
                0,
                "batch-1",
                vec![op(
                    "p1",
                    EntityType::Player,
                    "u0_player_1",
                    OpKind::Delete,
                    3,
                )],
            ),
        ]);
        assert!(!verdict(&run, "stable_batch_ids").ok);
    }

    #[test]
    fn stable_batch_ids_holds_a_resend_to_every_earlier_call() {
        // #1 is lost in flight, #2 (a part of it) is recorded: #3 carries
        // what #1 did, but #2 did not (the second-tab regression, seed 226).
        let update = || op("u", EntityType::Team, "u0_team_1", OpKind::Update, 2);
        let create = || op("c", EntityType::Team, "u0_team_2", OpKind::Create, 1);
        let run = run_of(vec![
            invoke_in(1, 0, "batch-21", vec![update(), create()]),
            invoke_in(2, 0, "batch-21", vec![create()]),
            invoke_in(3, 0, "batch-21", vec![update()]),
        ]);
        let r = verdict(&run, "stable_batch_ids");
        assert!(!r.ok);
        assert_eq!(r.first_offender.as_deref(), Some("team/u0_team_1 (op u)"));
        assert!(
            r.detail.contains("which request #2 under the same id"),
            "{}",
            r.detail
        );
    }

    fn queued(id: &str, status: OpStatus, quarantined: bool, data: Value) -> SyncOperation {
        SyncOperation {
            id: id.to_string(),
            entity_type: EntityType::Player,
            entity_id: "u0_player_1".to_string(),
            kind: OpKind::Update,
            data,
            version: 2,
            timestamp_ms: 0,
            status,
            retry_count: 0,
            max_retries: 3,
            last_error: quarantined.then(|| "database 23514: check violated".to_string()),
            last_attempt_ms: None,
            created_at_ms: 0,
            batch_id: None,
            quarantined,
            seq: 1,
        }
    }

    fn with_queue(ops: Vec<SyncOperation>, bad_data: Option<Value>) -> RunOutput {
        let mut run = run_of(Vec::new());
        run.devices.push(DeviceFinal {
            user: 0,
            user_id: UserId(0),
            local: Vec::new(),
            ops,
            stats: QueueStats::default(),
        });
        run.bad_edits = bad_data
            .into_iter()
            .map(|data| Edit {
                at_ms: 0,
                user: 0,
                op: NewOperation {
                    entity_type: EntityType::Player,
                    entity_id: "u0_player_1".to_string(),
                    kind: OpKind::Update,
                    data,
                },
                bad: true,
            })
            .collect();
        run
    }

    #[test]
    fn convergence_excuses_only_a_quarantined_record_the_scenario_made_bad() {
        let bad = serde_json::json!({ "name": "" });
        let good = serde_json::json!({ "name": "Ada" });
        let excused = with_queue(
            vec![queued("a", OpStatus::Failed, true, bad.clone())],
            Some(bad.clone()),
        );
        assert!(verdict(&excused, "convergence").ok);
        let honest = with_queue(
            vec![queued("a", OpStatus::Failed, true, good.clone())],
            Some(bad.clone()),
        );
        let v = verdict(&honest, "convergence");
        assert!(v.detail.contains("did not make it bad"), "{}", v.detail);
        for status in [OpStatus::Pending, OpStatus::Syncing, OpStatus::Failed] {
            let left = with_queue(
                vec![queued("a", status, false, bad.clone())],
                Some(bad.clone()),
            );
            assert!(!verdict(&left, "convergence").ok, "{status:?}");
        }
    }

    /// A player in the server's row shape (every column, defaults filled).
    fn player_row(id: &str, name: &str) -> Value {
        serde_json::json!({
            "id": id,
            "name": name,
            "jersey_number": null,
            "is_goalie": false,
            "notes": null,
        })
    }

    fn player(id: &str, version: i64) -> sync_core::queue::LocalEntity {
        sync_core::queue::LocalEntity {
            entity_type: EntityType::Player,
            entity_id: id.to_string(),
            data: player_row(id, "Ada"),
            version,
            deleted: false,
        }
    }

    /// User 0's device holding `local`, with the server's `rows` for user 0
    /// (written as that user: the server sets the owner).
    fn device_and_server(
        local: Vec<sync_core::queue::LocalEntity>,
        rows: &[Value],
        history: Vec<Event>,
    ) -> RunOutput {
        let mut run = with_queue(Vec::new(), None);
        run.history = history;
        run.devices[0].local = local;
        for row in rows {
            run.server
                .upsert_entity(Some(UserId(0)), EntityType::Player, row, None)
                .expect("a valid player row");
        }
        run
    }

    #[test]
    fn tenant_isolation_flags_a_row_of_another_user_in_a_users_data() {
        let own = player_row("u0_player_1", "Ada");
        let foreign = player_row("u1_player_9", "Eve");
        let run = device_and_server(Vec::new(), std::slice::from_ref(&own), Vec::new());
        assert!(verdict(&run, "tenant_isolation").ok);
        let run = device_and_server(Vec::new(), &[own, foreign], Vec::new());
        let v = verdict(&run, "tenant_isolation");
        assert!(!v.ok);
        assert!(
            v.first_offender
                .as_deref()
                .is_some_and(|o| o.ends_with("/u1_player_9")),
            "{v:?}"
        );
    }

    #[test]
    fn no_lost_write_flags_a_last_edit_neither_delivered_nor_reported() {
        let sent = |version: i64| {
            vec![
                invoke(
                    1,
                    0,
                    BULK,
                    vec![op(
                        "a",
                        EntityType::Player,
                        "u0_player_1",
                        OpKind::Update,
                        version,
                    )],
                ),
                committed(
                    1,
                    0,
                    vec![effect(EntityType::Player, "u0_player_1", Change::Upsert)],
                ),
            ]
        };
        let lost = device_and_server(vec![player("u0_player_1", 2)], &[], Vec::new());
        let v = verdict(&lost, "no_lost_write");
        assert!(!v.ok);
        assert_eq!(v.first_offender.as_deref(), Some("player/u0_player_1"));
        // Delivering an older version does not deliver the last edit.
        let older = device_and_server(vec![player("u0_player_1", 2)], &[], sent(1));
        assert!(!verdict(&older, "no_lost_write").ok);
        let delivered = device_and_server(vec![player("u0_player_1", 2)], &[], sent(2));
        assert!(verdict(&delivered, "no_lost_write").ok);
        // Still on the device, the user can see it waiting or failed.
        let mut reported = device_and_server(vec![player("u0_player_1", 2)], &[], Vec::new());
        reported.devices[0]
            .ops
            .push(queued("a", OpStatus::Failed, false, Value::Null));
        assert!(verdict(&reported, "no_lost_write").ok);
        // The server holds what the device holds (a create cancelled by its
        // delete never had to travel; here, a row written some other way).
        let row = player_row("u0_player_1", "Ada");
        let agrees = device_and_server(vec![player("u0_player_1", 2)], &[row], Vec::new());
        assert!(verdict(&agrees, "no_lost_write").ok);
    }

    #[test]
    fn convergence_compares_the_device_with_the_server_field_by_field() {
        let row = player_row("u0_player_1", "Bob");
        let run = device_and_server(vec![player("u0_player_1", 2)], &[row], Vec::new());
        let v = verdict(&run, "convergence");
        assert!(!v.ok);
        assert!(
            v.detail.contains("name: device \"Ada\" / server \"Bob\""),
            "{}",
            v.detail
        );
        let row = player_row("u0_player_1", "Ada");
        let run = device_and_server(vec![player("u0_player_1", 2)], &[row], Vec::new());
        assert!(verdict(&run, "convergence").ok);
    }

    #[test]
    fn referential_integrity_flags_a_link_the_server_nulled() {
        let t = EntityType::Game;
        let run = run_of(vec![
            invoke(
                1,
                0,
                "save_game_with_relations",
                vec![op("g", t, "u0_game_1", OpKind::Create, 1)],
            ),
            committed(
                1,
                0,
                vec![
                    effect(t, "u0_game_1", Change::Upsert),
                    effect(
                        t,
                        "u0_game_1",
                        Change::LinkNulled {
                            column: "season_id".to_string(),
                        },
                    ),
                ],
            ),
        ]);
        let v = verdict(&run, "referential_integrity");
        assert!(!v.ok);
        assert!(v.detail.contains("season_id set to null"), "{}", v.detail);
    }
}
