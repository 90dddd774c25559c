//! Efficiency numbers of one run, computed from the history alone.

use crate::history::{Event, Outcome, ServerResult};
use crate::world::RunOutput;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use sync_core::remote::OpRef;
use sync_core::EntityType;

/// Counters of one run (units last in names).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RunMetrics {
    /// Requests that left the device.
    pub requests: u64,
    /// Of which `bulk_sync_entities` calls.
    pub bulk_requests: u64,
    /// Of which `save_game_with_relations` calls (one game each).
    pub game_requests: u64,
    /// Bytes of those requests (JSON bodies).
    pub bytes: u64,
    /// Operations sent again after an earlier send of the same (id, version).
    pub retries: u64,
    /// Requests whose outcome a timeout hid (the app's AbortError).
    pub aborts: u64,
    /// Requests that failed with an answer (4xx, 5xx, database errors).
    pub failures: u64,
    /// Edits the user made.
    pub edits: u64,
    /// Operations left quarantined at the end.
    pub quarantined: u64,
    /// Operations left failed (given up) at the end, quarantined excluded.
    pub failed: u64,
    /// From the first edit until the last moment every queue became empty of
    /// pending and syncing work (`None`: it never did).
    pub drain_time_ms: Option<i64>,
    /// Simulated length of the whole run (faults, quiesce, settle).
    pub sim_time_ms: i64,
    /// Largest total queue depth seen.
    pub queue_depth_max: u64,
    /// Total queue depth (pending + syncing + failed) over simulated time:
    /// (t_ms, depth) at each change.
    pub queue_depth: Vec<(i64, u64)>,
}

pub fn compute(run: &RunOutput) -> RunMetrics {
    let mut m = RunMetrics {
        sim_time_ms: run.end_ms,
        ..RunMetrics::default()
    };
    let mut sent: BTreeSet<(String, i64)> = BTreeSet::new();
    let mut depth_by_user: BTreeMap<u32, u64> = BTreeMap::new();
    let mut active_by_user: BTreeMap<u32, u64> = BTreeMap::new();
    let mut drained_at_ms: Option<i64> = None;
    let mut first_edit_ms: Option<i64> = None;
    for e in &run.history {
        match e {
            Event::Edit { t_ms, .. } => {
                m.edits += 1;
                first_edit_ms.get_or_insert(*t_ms);
            }
            Event::Invoke {
                call, ops, bytes, ..
            } => {
                m.requests += 1;
                m.bytes += bytes;
                match *call {
                    "bulk_sync_entities" => m.bulk_requests += 1,
                    "save_game_with_relations" => m.game_requests += 1,
                    _ => {}
                }
                for op in ops {
                    if !sent.insert((op.op_id.clone(), op.version)) {
                        m.retries += 1;
                    }
                }
            }
            Event::Complete { outcome, .. } => match outcome {
                Outcome::Ok => {}
                Outcome::Indeterminate => m.aborts += 1,
                Outcome::Failed { .. } => m.failures += 1,
                // Kills and closed tabs have their own counts (marks).
                Outcome::Dropped => {}
            },
            Event::Depth {
                t_ms,
                user,
                depth,
                active,
            } => {
                let was_active: u64 = active_by_user.values().sum();
                active_by_user.insert(*user, *active);
                let now_active: u64 = active_by_user.values().sum();
                if now_active == 0 && was_active > 0 {
                    drained_at_ms = Some(*t_ms);
                } else if now_active > 0 {
                    drained_at_ms = None;
                }
                depth_by_user.insert(*user, *depth);
                let total: u64 = depth_by_user.values().sum();
                m.queue_depth_max = m.queue_depth_max.max(total);
                match m.queue_depth.last_mut() {
                    Some(last) if last.0 == *t_ms => last.1 = total,
                    Some(last) if last.1 == total => {}
                    _ => m.queue_depth.push((*t_ms, total)),
                }
            }
            _ => {}
        }
    }
    for d in &run.devices {
        m.quarantined += d.ops.iter().filter(|o| o.quarantined).count() as u64;
        m.failed += d
            .ops
            .iter()
            .filter(|o| !o.quarantined && o.status == sync_core::OpStatus::Failed)
            .count() as u64;
    }
    // Drained only if the run also quiesced (no edit left to make).
    m.drain_time_ms = match (run.drained_at_ms.and(drained_at_ms), first_edit_ms) {
        (Some(end), Some(start)) => Some(end - start),
        (Some(end), None) => Some(end),
        _ => None,
    };
    m
}

/// How long the user's edits took to reach the server: for each edit, from
/// the moment it reached the local store until the server committed a call
/// carrying that version of its entity or a newer one (a merge folds an
/// edit into a later version; a version the server already held newer of
/// counts too, as nothing of the edit is left to send).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EditLatency {
    /// One figure a delivered edit, in edit order (not sorted).
    pub ms: Vec<i64>,
    /// Edits no committed call carried by the end of the run: made bad on
    /// purpose, given up, quarantined, still queued, or cancelled on the
    /// device (a create deleted before it was sent: the merge table's
    /// "create + delete: both removed").
    pub never: u64,
}

/// An edit still waiting for a commit that carries it.
struct Undelivered {
    version: i64,
    edit_ms: i64,
    /// Its place in `EditLatency::ms`.
    index: usize,
}

/// `EditLatency` of one run, from its history alone. Apart from
/// `compute` because only the studies and the verdict read it: a sweep
/// does not pay for it.
pub fn edit_to_server(run: &RunOutput) -> EditLatency {
    // Edits not yet delivered, by (user, type, id). Bound: one entry per
    // edit of the run.
    let mut waiting: BTreeMap<(u32, EntityType, &str), Vec<Undelivered>> = BTreeMap::new();
    // Calls invoked and not yet finished on the server, by request id.
    // Bound: the requests of the run.
    let mut sent: BTreeMap<u64, &[OpRef]> = BTreeMap::new();
    // An edit's figure stays -1 until a commit delivers it.
    let mut out = EditLatency::default();
    for e in &run.history {
        match e {
            Event::Edit {
                t_ms,
                user,
                entity_type,
                entity_id,
                version,
                ..
            } => {
                waiting
                    .entry((*user, *entity_type, entity_id.as_str()))
                    .or_default()
                    .push(Undelivered {
                        version: *version,
                        edit_ms: *t_ms,
                        index: out.ms.len(),
                    });
                out.ms.push(-1);
            }
            Event::Invoke { req_id, ops, .. } => {
                sent.insert(*req_id, ops);
            }
            Event::Server {
                t_ms,
                user,
                req_id,
                result,
                ..
            } => {
                let Some(ops) = sent.remove(req_id) else {
                    continue;
                };
                if !matches!(result, ServerResult::Committed { .. }) {
                    continue;
                }
                for op in ops {
                    let key = (*user, op.entity_type, op.entity_id.as_str());
                    if let Some(edits) = waiting.get_mut(&key) {
                        edits.retain(|e| {
                            let delivered = e.version <= op.version;
                            if delivered {
                                out.ms[e.index] = t_ms - e.edit_ms;
                            }
                            !delivered
                        });
                    }
                }
            }
            _ => {}
        }
    }
    out.never = out.ms.iter().filter(|&&ms| ms < 0).count() as u64;
    out.ms.retain(|&ms| ms >= 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync_core::OpKind;

    fn edit(t_ms: i64, id: &str, version: i64) -> Event {
        Event::Edit {
            t_ms,
            user: 0,
            index: 0,
            op_id: format!("op-{id}"),
            entity_type: EntityType::Player,
            entity_id: id.to_string(),
            kind: OpKind::Update,
            version,
            bad: false,
            enqueued: true,
        }
    }

    /// A call at `t_ms` carrying `ops` ((id, version) of players), and the
    /// server's answer 60 ms later.
    fn call(t_ms: i64, req_id: u64, ops: &[(&str, i64)], committed: bool) -> [Event; 2] {
        let ops = ops
            .iter()
            .map(|(id, version)| OpRef {
                op_id: format!("op-{id}"),
                entity_type: EntityType::Player,
                entity_id: id.to_string(),
                kind: OpKind::Update,
                version: *version,
            })
            .collect();
        let result = if committed {
            ServerResult::Committed {
                effects: Vec::new(),
            }
        } else {
            ServerResult::Rejected {
                error: "23514".into(),
            }
        };
        [
            Event::Invoke {
                t_ms,
                user: 0,
                tab: 0,
                req_id,
                call: "bulk_sync_entities",
                batch_id: None,
                ops,
                bytes: 0,
            },
            Event::Server {
                t_ms: t_ms + 60,
                user: 0,
                req_id,
                call: "bulk_sync_entities",
                result,
            },
        ]
    }

    #[test]
    fn an_edit_reaches_the_server_with_the_first_commit_of_its_version_or_a_newer_one() {
        let mut history = vec![edit(100, "a", 1), edit(120, "b", 1), edit(150, "a", 2)];
        // b's call is rejected; a's carries version 2, which a merge made of
        // both edits of a.
        history.extend(call(200, 1, &[("b", 1)], false));
        history.extend(call(200, 2, &[("a", 2)], true));
        // A later edit of a, then a re-send of the older version: not it.
        history.push(edit(300, "a", 3));
        history.extend(call(400, 3, &[("a", 2)], true));
        let got = edit_to_server(&RunOutput::of_history(history));
        assert_eq!(got.ms, vec![160, 110], "a v1 and a v2, in edit order");
        assert_eq!(got.never, 2, "b v1 (rejected) and a v3 (never sent)");
    }
}
