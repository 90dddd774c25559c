//! Efficiency numbers of one run, computed from the history alone.

use crate::history::{Event, Outcome};
use crate::world::RunOutput;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Counters of one run (units last in names).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RunMetrics {
    /// Requests that left the device.
    pub requests: u64,
    /// Of which `bulk_sync_entities` calls.
    pub bulk_requests: u64,
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
                if *call == "bulk_sync_entities" {
                    m.bulk_requests += 1;
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
