//! State-machine test of `SyncQueue` against a plain in-memory reference
//! model of the same rules: the merge table (both policies), readiness and
//! backoff, oldest-first selection, the plan's batch selection (with and
//! without single flight), batch marking, stale reset, retry and sync-now.
//! After every command the queue's whole content and every answer must
//! equal the model's.

use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use sync_core::model::{
    app_ready_at_ms, merge_kinds, EntityType, MergeOutcome, MergePolicy, NewOperation, OpKind,
    OpStatus, SyncOperation, BACKOFF_CAP_MS, DEFAULT_MAX_RETRIES,
};
use sync_core::queue::{BatchIdAfter, BatchSelect, NewerVersion, QueueError};
use sync_core::SyncQueue;

#[derive(Clone, Debug)]
enum Cmd {
    Enqueue {
        t: u8,
        id: u8,
        kind: u8,
    },
    GetPending {
        limit: usize,
    },
    GetBatched {
        max: usize,
        single: bool,
    },
    /// Mark syncing the ops at these positions of the current list.
    Syncing(Vec<usize>),
    /// Compare-and-set mark of the copies at these positions of the last
    /// batch read (they may have changed since).
    SyncingHeld(Vec<usize>),
    Completed(Vec<usize>),
    Failed(Vec<usize>, bool),
    Aborted(Vec<usize>),
    ResetStale,
    RetryFailed,
    SyncNow,
    Advance(i64),
}

fn cmd() -> impl Strategy<Value = Cmd> {
    let picks = || prop::collection::vec(0usize..8, 0..4);
    prop_oneof![
        6 => (0u8..3, 0u8..2, 0u8..3).prop_map(|(t, id, kind)| Cmd::Enqueue { t, id, kind }),
        2 => (1usize..6).prop_map(|limit| Cmd::GetPending { limit }),
        2 => (1usize..4, any::<bool>()).prop_map(|(max, single)| Cmd::GetBatched { max, single }),
        3 => picks().prop_map(Cmd::Syncing),
        3 => picks().prop_map(Cmd::SyncingHeld),
        2 => picks().prop_map(Cmd::Completed),
        2 => (picks(), any::<bool>()).prop_map(|(p, f)| Cmd::Failed(p, f)),
        2 => picks().prop_map(Cmd::Aborted),
        1 => Just(Cmd::ResetStale),
        1 => Just(Cmd::RetryFailed),
        1 => Just(Cmd::SyncNow),
        3 => prop_oneof![Just(500i64), Just(2_000), Just(10_000), Just(400_000)].prop_map(Cmd::Advance),
    ]
}

/// The reference: a Vec of operations and the rules written out plainly.
#[derive(Clone, Debug, PartialEq)]
struct RefOp {
    id: String,
    t: EntityType,
    entity_id: String,
    kind: OpKind,
    data: serde_json::Value,
    version: i64,
    timestamp: i64,
    seq: u64,
    status: OpStatus,
    retry: u32,
    last_attempt: Option<i64>,
    created_at: i64,
    last_error: Option<String>,
    /// sync-now: ready at once until the next attempt changes it.
    ready_now: bool,
}

impl RefOp {
    fn ready_at(&self) -> i64 {
        if self.ready_now {
            i64::MIN
        } else {
            app_ready_at_ms(self.retry, self.last_attempt)
        }
    }
}

#[derive(Default)]
struct Model {
    ops: Vec<RefOp>,
    seq: u64,
}

impl Model {
    fn sorted(&self) -> Vec<&RefOp> {
        let mut v: Vec<&RefOp> = self.ops.iter().collect();
        v.sort_by_key(|o| (o.timestamp, o.seq));
        v
    }

    fn enqueue(
        &mut self,
        op: NewOperation,
        op_id: &str,
        version: i64,
        now: i64,
        policy: MergePolicy,
    ) -> Result<(), ()> {
        if op.validate().is_err() {
            return Err(());
        }
        self.seq += 1;
        let seq = self.seq;
        let mergeable = |o: &RefOp| {
            o.t == op.entity_type
                && o.entity_id == op.entity_id
                && (o.status == OpStatus::Pending
                    || (policy == MergePolicy::PendingOrFailed && o.status == OpStatus::Failed))
        };
        let existing = self
            .ops
            .iter()
            .enumerate()
            .filter(|(_, o)| mergeable(o))
            .max_by_key(|(_, o)| o.seq)
            .map(|(i, _)| i);
        let fresh = RefOp {
            id: op_id.to_string(),
            t: op.entity_type,
            entity_id: op.entity_id.clone(),
            kind: op.kind,
            data: op.data.clone(),
            version,
            timestamp: now,
            seq,
            status: OpStatus::Pending,
            retry: 0,
            last_attempt: None,
            created_at: now,
            last_error: None,
            ready_now: false,
        };
        let Some(i) = existing else {
            self.ops.push(fresh);
            return Ok(());
        };
        let mut outcome = merge_kinds(self.ops[i].kind, op.kind);
        if outcome == MergeOutcome::RemoveBoth && policy == MergePolicy::PendingOrFailed {
            outcome = MergeOutcome::Merge(OpKind::Delete);
        }
        match outcome {
            MergeOutcome::Merge(kind) => {
                let o = &mut self.ops[i];
                o.kind = kind;
                o.data = op.data;
                o.version = version;
                o.timestamp = now;
                o.seq = seq;
                o.status = OpStatus::Pending;
                o.retry = 0;
                o.last_attempt = None;
                o.last_error = None;
                o.ready_now = false;
            }
            MergeOutcome::RemoveBoth => {
                self.ops.remove(i);
            }
            MergeOutcome::Replace => {
                self.ops.remove(i);
                self.ops.push(fresh);
            }
        }
        Ok(())
    }

    fn pending_ready(&self, now: i64) -> Vec<&RefOp> {
        self.sorted()
            .into_iter()
            .filter(|o| o.status == OpStatus::Pending && o.ready_at() <= now)
            .collect()
    }

    fn batched(&self, max: usize, single: bool, now: i64) -> BTreeMap<EntityType, Vec<String>> {
        let mut out: BTreeMap<EntityType, Vec<String>> = BTreeMap::new();
        let mut seen: BTreeMap<EntityType, Vec<String>> = BTreeMap::new();
        for o in self.pending_ready(now) {
            if single {
                let syncing = self.ops.iter().any(|x| {
                    x.t == o.t && x.entity_id == o.entity_id && x.status == OpStatus::Syncing
                });
                let dup = seen.get(&o.t).is_some_and(|v| v.contains(&o.entity_id));
                if syncing || dup {
                    continue;
                }
            }
            let v = out.entry(o.t).or_default();
            if v.len() < max {
                v.push(o.id.clone());
                seen.entry(o.t).or_default().push(o.entity_id.clone());
            }
        }
        out
    }

    fn by_ids(&mut self, ids: &[String]) -> Vec<&mut RefOp> {
        self.ops
            .iter_mut()
            .filter(|o| ids.contains(&o.id))
            .collect()
    }
}

fn ids_at(q: &SyncQueue, picks: &[usize]) -> Vec<String> {
    let all = q.all().unwrap();
    let mut ids: Vec<String> = picks
        .iter()
        .filter_map(|i| all.get(*i).map(|o| o.id.clone()))
        .collect();
    ids.dedup();
    ids
}

fn compare(q: &SyncQueue, m: &Model) -> Result<(), TestCaseError> {
    let real: Vec<_> = q
        .all()
        .unwrap()
        .into_iter()
        .map(|o| {
            (
                o.id,
                o.entity_type,
                o.entity_id,
                o.kind,
                o.data,
                o.version,
                o.timestamp_ms,
                o.status,
                o.retry_count,
                o.last_attempt_ms,
                o.created_at_ms,
                o.last_error,
            )
        })
        .collect();
    let model: Vec<_> = m
        .sorted()
        .into_iter()
        .map(|o| {
            (
                o.id.clone(),
                o.t,
                o.entity_id.clone(),
                o.kind,
                o.data.clone(),
                o.version,
                o.timestamp,
                o.status,
                o.retry,
                o.last_attempt,
                o.created_at,
                o.last_error.clone(),
            )
        })
        .collect();
    prop_assert_eq!(real, model);
    let count = |s: OpStatus| m.ops.iter().filter(|o| o.status == s).count() as u64;
    prop_assert_eq!(
        q.status_counts().unwrap(),
        (
            count(OpStatus::Pending),
            count(OpStatus::Syncing),
            count(OpStatus::Failed)
        )
    );
    // The dependency reads that skip the data agree with the model too.
    let mut by_seq: Vec<&RefOp> = m.ops.iter().collect();
    by_seq.sort_by_key(|o| o.seq);
    for o in &m.ops {
        let queued: Vec<(String, OpKind)> = by_seq
            .iter()
            .filter(|p| p.t == o.t && p.entity_id == o.entity_id)
            .map(|p| (p.id.clone(), p.kind))
            .collect();
        prop_assert_eq!(q.queued_for_entity(o.t, &o.entity_id).unwrap(), queued);
        let newer = m.ops.iter().any(|p| {
            p.t == o.t && p.entity_id == o.entity_id && p.id != o.id && p.version > o.version
        });
        // No local store here (`enqueue`): the newer version is queued.
        prop_assert_eq!(q.superseded(&o.id).unwrap(), Some(newer));
        prop_assert_eq!(
            q.newer_version(&o.id).unwrap(),
            Some(NewerVersion {
                queued: newer,
                local: false
            })
        );
        prop_assert_eq!(q.retry_count(&o.id).unwrap(), Some(o.retry));
    }
    prop_assert_eq!(q.superseded("no-such-op").unwrap(), None);
    prop_assert_eq!(q.retry_count("no-such-op").unwrap(), None);
    Ok(())
}

/// Both stores: SQLite, and the B-tree queue the simulator's fast sweeps
/// use (`tests/queue_backends.rs` holds the two to each other as well).
fn queues() -> [SyncQueue; 2] {
    [
        SyncQueue::open_in_memory().unwrap(),
        SyncQueue::open_btree("btree"),
    ]
}

fn run(cmds: Vec<Cmd>, policy: MergePolicy) -> Result<(), TestCaseError> {
    for mut q in queues() {
        run_on(&mut q, cmds.clone(), policy)?;
    }
    Ok(())
}

/// Runs `cmds` on `q` and on a fresh model, comparing after every command.
fn run_on(q: &mut SyncQueue, cmds: Vec<Cmd>, policy: MergePolicy) -> Result<(), TestCaseError> {
    let mut m = Model::default();
    let mut now = 1_000i64;
    // The copies the last batch read returned, each with the model's seq
    // for it at that moment (the engine holds such copies across awaits).
    let mut held: Vec<(SyncOperation, u64)> = Vec::new();
    for (step, c) in cmds.into_iter().enumerate() {
        match c {
            Cmd::Enqueue { t, id, kind } => {
                let (op, op_id) = new_op(step, (t, id, kind));
                let real = q.enqueue(op.clone(), &op_id, step as i64, now, policy);
                let model = m.enqueue(op, &op_id, step as i64, now, policy);
                match (real, model) {
                    (Ok(_), Ok(())) => {}
                    (Err(QueueError::Invalid(_)), Err(())) => {}
                    (r, m) => prop_assert!(false, "enqueue differs: {:?} vs {:?}", r, m),
                }
            }
            Cmd::GetPending { limit } => {
                let real: Vec<String> = q
                    .get_pending(limit, now)
                    .unwrap()
                    .into_iter()
                    .map(|o| o.id)
                    .collect();
                let model: Vec<String> = m
                    .pending_ready(now)
                    .into_iter()
                    .take(limit)
                    .map(|o| o.id.clone())
                    .collect();
                prop_assert_eq!(q.any_ready(now).unwrap(), !model.is_empty());
                prop_assert_eq!(real, model);
            }
            Cmd::GetBatched { max, single } => {
                let real = q
                    .get_pending_batched(
                        BatchSelect {
                            max_per_type: max,
                            single_flight: single,
                        },
                        now,
                    )
                    .unwrap();
                held = real
                    .values()
                    .flatten()
                    .map(|o| {
                        let seq = m.ops.iter().find(|x| x.id == o.id).map_or(0, |x| x.seq);
                        (o.clone(), seq)
                    })
                    .collect();
                let real: BTreeMap<EntityType, Vec<String>> = real
                    .into_iter()
                    .map(|(t, v)| (t, v.into_iter().map(|o| o.id).collect()))
                    .collect();
                prop_assert_eq!(real, m.batched(max, single, now));
            }
            Cmd::SyncingHeld(p) => {
                let picked: Vec<&(SyncOperation, u64)> =
                    p.iter().filter_map(|i| held.get(*i)).collect();
                let copies: Vec<SyncOperation> = picked.iter().map(|(o, _)| o.clone()).collect();
                let real = q.mark_batch_syncing_unchanged(&copies, now, None).unwrap();
                let mut model = Vec::new();
                for (copy, seq) in &picked {
                    let o = m.ops.iter_mut().find(|o| o.id == copy.id);
                    let unchanged = o.is_some_and(|o| {
                        let hit = o.seq == *seq && o.status == OpStatus::Pending;
                        if hit {
                            o.status = OpStatus::Syncing;
                            o.last_attempt = Some(now);
                        }
                        hit
                    });
                    model.push(unchanged);
                }
                prop_assert_eq!(&real, &model);
                // What the engine relies on: a marked copy's content is the
                // row's content.
                let all = q.all().unwrap();
                for (copy, marked) in copies.iter().zip(&real) {
                    if *marked {
                        let row = all.iter().find(|o| o.id == copy.id).unwrap();
                        prop_assert_eq!(
                            (&row.kind, &row.data, row.version, row.seq),
                            (&copy.kind, &copy.data, copy.version, copy.seq)
                        );
                    }
                }
            }
            Cmd::Syncing(p) => {
                let ids = ids_at(q, &p);
                q.mark_batch_syncing(&ids, now, None).unwrap();
                for o in m.by_ids(&ids) {
                    if o.status == OpStatus::Pending {
                        o.status = OpStatus::Syncing;
                        o.last_attempt = Some(now);
                    }
                }
            }
            Cmd::Completed(p) => {
                let ids = ids_at(q, &p);
                q.mark_batch_completed(&ids).unwrap();
                m.ops
                    .retain(|o| !(ids.contains(&o.id) && o.status == OpStatus::Syncing));
            }
            Cmd::Failed(p, forever) => {
                let ids = ids_at(q, &p);
                q.mark_batch_failed(&ids, "boom", now, forever, BatchIdAfter::Keep)
                    .unwrap();
                for o in m.by_ids(&ids) {
                    if matches!(o.status, OpStatus::Syncing | OpStatus::Pending) {
                        o.retry += 1;
                        o.last_error = Some("boom".into());
                        o.last_attempt = Some(now);
                        o.ready_now = false;
                        o.status = if !forever && o.retry >= 10 {
                            OpStatus::Failed
                        } else {
                            OpStatus::Pending
                        };
                    }
                }
            }
            Cmd::Aborted(p) => {
                let ids = ids_at(q, &p);
                q.mark_batch_aborted(&ids, "abort", now, BatchIdAfter::Keep)
                    .unwrap();
                for o in m.by_ids(&ids) {
                    if matches!(o.status, OpStatus::Syncing | OpStatus::Pending) {
                        o.status = OpStatus::Pending;
                        o.last_error = Some("abort".into());
                        o.last_attempt = Some(now);
                        o.ready_now = false;
                    }
                }
            }
            Cmd::ResetStale => {
                let n = q.reset_stale_syncing().unwrap();
                let mut k = 0;
                for o in m.ops.iter_mut().filter(|o| o.status == OpStatus::Syncing) {
                    o.status = OpStatus::Pending;
                    o.ready_now = false;
                    k += 1;
                }
                prop_assert_eq!(n, k);
            }
            Cmd::RetryFailed => {
                q.retry_failed().unwrap();
                for o in m.ops.iter_mut().filter(|o| o.status == OpStatus::Failed) {
                    o.status = OpStatus::Pending;
                    o.retry = 0;
                    o.last_attempt = None;
                    o.ready_now = false;
                }
            }
            Cmd::SyncNow => {
                q.sync_now().unwrap();
                for o in m.ops.iter_mut().filter(|o| o.status == OpStatus::Pending) {
                    o.ready_now = true;
                }
            }
            Cmd::Advance(ms) => now += ms,
        }
        compare(q, &m)?;
        let next_model = m
            .ops
            .iter()
            .filter(|o| o.status == OpStatus::Pending)
            .map(RefOp::ready_at)
            .min();
        prop_assert_eq!(q.next_ready_at_ms().unwrap(), next_model);
        let stats = q.stats(now).unwrap();
        prop_assert_eq!(
            stats.pending as usize,
            m.ops
                .iter()
                .filter(|o| o.status == OpStatus::Pending)
                .count()
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn queue_matches_the_reference_model(
        cmds in prop::collection::vec(cmd(), 1..60),
        hardened in any::<bool>(),
    ) {
        let policy = if hardened { MergePolicy::PendingOrFailed } else { MergePolicy::PendingOnly };
        run(cmds, policy)?;
    }

    /// A cleared queue is a fresh one: after any history and `clear`, every
    /// answer matches a fresh model's. The simulator reuses cleared queues
    /// across seeds, so this is what keeps a seed's run independent of the
    /// seeds its worker ran before.
    #[test]
    fn a_cleared_queue_behaves_as_a_fresh_one(
        before in prop::collection::vec(cmd(), 0..40),
        cmds in prop::collection::vec(cmd(), 1..40),
        hardened in any::<bool>(),
    ) {
        let policy = if hardened { MergePolicy::PendingOrFailed } else { MergePolicy::PendingOnly };
        for mut q in queues() {
            run_on(&mut q, before.clone(), policy)?;
            q.next_sequence("batch").unwrap();
            q.clear().unwrap();
            prop_assert!(q.all().unwrap().is_empty());
            prop_assert!(q.local_entities().unwrap().is_empty());
            prop_assert_eq!(q.next_sequence("batch").unwrap(), 1);
            run_on(&mut q, cmds.clone(), policy)?;
        }
    }
}

#[test]
fn backoff_cap_is_the_apps() {
    assert_eq!(BACKOFF_CAP_MS, 300_000);
}

/// Single flight, spelled out: two pending operations of one entity (the
/// first was in flight when the second was made, then aborted) are never in
/// one selection; and an entity with an operation in flight is skipped.
#[test]
fn single_flight_takes_one_operation_per_entity() {
    let mut q = SyncQueue::open_in_memory().unwrap();
    let op = |n: i64| NewOperation {
        entity_type: EntityType::Player,
        entity_id: "p1".into(),
        kind: OpKind::Update,
        data: json!({"id": "p1", "n": n}),
    };
    let policy = MergePolicy::PendingOnly;
    q.enqueue(op(1), "a", 1, 0, policy).unwrap();
    q.mark_batch_syncing(&["a".into()], 0, None).unwrap();
    q.enqueue(op(2), "b", 2, 1, policy).unwrap();
    let select = |single| BatchSelect {
        max_per_type: 50,
        single_flight: single,
    };
    let ids = |m: BTreeMap<EntityType, Vec<sync_core::SyncOperation>>| -> Vec<String> {
        m.into_values().flatten().map(|o| o.id).collect()
    };
    // "a" is in flight: single flight holds "b" back.
    assert_eq!(
        ids(q.get_pending_batched(select(true), 10).unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(q.get_pending_batched(select(false), 10).unwrap()),
        vec!["b"]
    );
    q.mark_batch_aborted(&["a".into()], "timeout", 10, BatchIdAfter::Keep)
        .unwrap();
    // Both pending and ready: one per entity, the oldest.
    assert_eq!(
        ids(q.get_pending_batched(select(true), 5_000).unwrap()),
        vec!["a"]
    );
    assert_eq!(
        ids(q.get_pending_batched(select(false), 5_000).unwrap()),
        vec!["a", "b"]
    );
}

#[test]
fn failures_keep_or_forget_the_batch_id_in_the_same_update() {
    let mut q = SyncQueue::open_in_memory().unwrap();
    let policy = MergePolicy::PendingOrFailed;
    for (i, id) in ["a", "b", "c", "d"].into_iter().enumerate() {
        let (op, _) = new_op(i, (0, i as u8, 0));
        q.enqueue(op, id, 1, 0, policy).unwrap();
    }
    let all: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
    q.mark_batch_syncing(&all, 0, Some("b1")).unwrap();
    q.mark_batch_aborted(&all[0..1], "timeout", 1, BatchIdAfter::Keep)
        .unwrap();
    q.mark_batch_aborted(&all[1..2], "split", 1, BatchIdAfter::Forget)
        .unwrap();
    q.mark_batch_failed(&all[2..3], "5xx", 1, true, BatchIdAfter::Keep)
        .unwrap();
    q.mark_batch_failed(&all[3..4], "22023", 1, true, BatchIdAfter::Forget)
        .unwrap();
    let batch_ids: Vec<(String, Option<String>, u32)> = q
        .all()
        .unwrap()
        .into_iter()
        .map(|o| (o.id, o.batch_id, o.retry_count))
        .collect();
    let b1 = Some("b1".to_string());
    assert_eq!(
        batch_ids,
        vec![
            ("a".into(), b1.clone(), 0),
            ("b".into(), None, 0),
            ("c".into(), b1, 1),
            ("d".into(), None, 1),
        ]
    );
}

/// An operation given up on keeps its last batch id (`BatchIdAfter::Keep`);
/// "Retry failed" must forget it. Its batch-mates may have committed under
/// that id since (re-sent without it), so re-sending it under the id would be
/// answered as a replay and its write lost (found by the `retry-failed`
/// scenario with versions and error classification off).
#[test]
fn retry_failed_forgets_the_batch_id() {
    let mut q = SyncQueue::open_in_memory().unwrap();
    let policy = MergePolicy::PendingOrFailed;
    let (op, _) = new_op(0, (0, 1, 0));
    q.enqueue(op, "a", 1, 0, policy).unwrap();
    let a = vec!["a".to_string()];
    for attempt in 0..i64::from(DEFAULT_MAX_RETRIES) {
        q.mark_batch_syncing(&a, attempt, Some("b1")).unwrap();
        q.mark_batch_failed(&a, "5xx", attempt, false, BatchIdAfter::Keep)
            .unwrap();
    }
    let failed = &q.all().unwrap()[0];
    assert_eq!(failed.status, OpStatus::Failed);
    assert_eq!(failed.batch_id.as_deref(), Some("b1"));
    assert_eq!(q.retry_failed().unwrap(), 1);
    let revived = &q.all().unwrap()[0];
    assert_eq!(revived.status, OpStatus::Pending);
    assert_eq!(revived.batch_id, None);
}

/// An edit merged into an operation whose batch outcome is unknown (sent,
/// aborted, batch id kept) forgets the batch id: its content is a new
/// request's. With the planted bug (simulation builds) it keeps it.
#[test]
fn a_merge_forgets_the_batch_id() {
    let aborted_then_merged = |q: &mut SyncQueue| {
        let policy = MergePolicy::PendingOrFailed;
        let (op, _) = new_op(0, (0, 1, 0));
        q.enqueue(op, "a", 1, 0, policy).unwrap();
        let a = vec!["a".to_string()];
        q.mark_batch_syncing(&a, 0, Some("b1")).unwrap();
        q.mark_batch_aborted(&a, "timeout", 0, BatchIdAfter::Keep)
            .unwrap();
        assert_eq!(q.all().unwrap()[0].batch_id.as_deref(), Some("b1"));
        let (edit, _) = new_op(1, (0, 1, 1));
        q.enqueue(edit, "b", 2, 1, policy).unwrap();
        let merged = q.all().unwrap().remove(0);
        assert_eq!((merged.id.as_str(), merged.version), ("a", 2));
        merged.batch_id
    };
    let mut q = SyncQueue::open_in_memory().unwrap();
    assert_eq!(aborted_then_merged(&mut q), None);
    #[cfg(madsim)]
    {
        let mut planted = SyncQueue::open_in_memory().unwrap();
        planted.plant_merge_keeps_batch_id(true);
        assert_eq!(aborted_then_merged(&mut planted).as_deref(), Some("b1"));
    }
}

#[test]
fn superseded_sees_a_newer_version_that_has_left_the_queue() {
    // The model test above enqueues without the local store, so there the
    // local half of `superseded` never answers; here it does.
    let mut q = SyncQueue::open_in_memory().unwrap();
    let policy = MergePolicy::PendingOrFailed;
    let player = |kind: OpKind, name: &str| NewOperation {
        entity_type: EntityType::Player,
        entity_id: "p1".to_string(),
        kind,
        data: json!({"id": "p1", "name": name}),
    };
    q.write_and_enqueue(player(OpKind::Create, "a"), "a", 1_000, policy)
        .unwrap();
    q.mark_batch_syncing(&["a".to_string()], 1_000, None)
        .unwrap();
    // In flight: the edit is a second operation, not a merge.
    q.write_and_enqueue(player(OpKind::Update, "b"), "b", 1_001, policy)
        .unwrap();
    let answers = |q: &SyncQueue, id: &str| {
        (
            q.superseded(id).unwrap(),
            q.newer_version(id).unwrap().map(|n| (n.queued, n.local)),
        )
    };
    assert_eq!(answers(&q, "a"), (Some(true), Some((true, true))));
    assert_eq!(answers(&q, "b"), (Some(false), Some((false, false))));
    // The newer one leaves (sent, or completed locally): the entity has
    // still moved past the older one.
    assert!(q.remove("b").unwrap());
    assert_eq!(answers(&q, "a"), (Some(true), Some((false, true))));
    assert_eq!(answers(&q, "gone"), (None, None));
}

#[test]
fn a_released_name_holds_its_taker_until_the_release_is_acknowledged() {
    let mut q = SyncQueue::open_in_memory().unwrap();
    let policy = MergePolicy::PendingOrFailed;
    let member = |id: &str, kind: OpKind, name: Option<&str>| NewOperation {
        entity_type: EntityType::Personnel,
        entity_id: id.to_string(),
        kind,
        data: name.map_or(Value::Null, |n| json!({"id": id, "name": n})),
    };
    let send = |q: &mut SyncQueue, id: &str| {
        q.mark_batch_syncing(&[id.to_string()], 0, None).unwrap();
        q.mark_batch_completed(&[id.to_string()]).unwrap();
    };
    let waits = |q: &SyncQueue, name: &str, id: &str| {
        !q.name_releasers(EntityType::Personnel, name, id)
            .unwrap()
            .is_empty()
    };
    q.write_and_enqueue(member("a", OpKind::Create, Some("Ada")), "a1", 0, policy)
        .unwrap();
    // A name nobody gave up holds no one.
    assert!(!waits(&q, "Ada", "b"));
    send(&mut q, "a1");
    // An update that keeps the name releases nothing.
    q.write_and_enqueue(member("a", OpKind::Update, Some("Ada")), "a2", 0, policy)
        .unwrap();
    assert!(!waits(&q, "Ada", "b"));
    send(&mut q, "a2");
    // A rename releases the old name, for others only, until an operation
    // of a at that version is acknowledged (in flight is not enough).
    q.write_and_enqueue(member("a", OpKind::Update, Some("Bea")), "a3", 0, policy)
        .unwrap();
    assert!(waits(&q, "Ada", "b"));
    assert!(!waits(&q, "Ada", "a"), "a may take its own name back");
    assert!(!waits(&q, "Bea", "b"), "a's new name is not released");
    q.mark_batch_syncing(&["a3".to_string()], 0, None).unwrap();
    assert!(waits(&q, "Ada", "b"));
    q.mark_batch_completed(&["a3".to_string()]).unwrap();
    assert!(!waits(&q, "Ada", "b"));
    // A delete releases the name too; an operation that never leaves the
    // device (removed, as a discarded one is) holds no one back.
    q.write_and_enqueue(member("a", OpKind::Delete, None), "a4", 0, policy)
        .unwrap();
    assert!(waits(&q, "Bea", "b"));
    assert!(q.remove("a4").unwrap());
    assert!(!waits(&q, "Bea", "b"));
    // Other types have no unique name.
    q.write_and_enqueue(
        NewOperation {
            entity_type: EntityType::Player,
            entity_id: "p".into(),
            kind: OpKind::Create,
            data: json!({"id": "p", "name": "Ada"}),
        },
        "p1",
        0,
        policy,
    )
    .unwrap();
    q.write_and_enqueue(
        NewOperation {
            entity_type: EntityType::Player,
            entity_id: "p".into(),
            kind: OpKind::Delete,
            data: Value::Null,
        },
        "p2",
        0,
        policy,
    )
    .unwrap();
    assert!(q
        .name_releasers(EntityType::Player, "Ada", "x")
        .unwrap()
        .is_empty());
}

/// The operation a step makes from (type, entity, kind) as small numbers,
/// with its id.
fn new_op(step: usize, (t, id, kind): (u8, u8, u8)) -> (NewOperation, String) {
    let t = [EntityType::Player, EntityType::Team, EntityType::Settings][t as usize];
    let entity_id = t.fixed_id().map(str::to_string).unwrap_or(format!("e{id}"));
    let kind = [OpKind::Create, OpKind::Update, OpKind::Delete][kind as usize];
    let data = if kind == OpKind::Delete {
        json!(null)
    } else {
        json!({"id": entity_id, "step": step})
    };
    let op = NewOperation {
        entity_type: t,
        entity_id,
        kind,
        data,
    };
    (op, format!("op{step}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// `write_and_enqueue_all` ends where one `write_and_enqueue` per edit
    /// ends (same operations, local rows and answers), and a list with an
    /// invalid edit (a settings delete) changes nothing at all.
    #[test]
    fn write_and_enqueue_all_equals_one_write_per_edit(
        before in prop::collection::vec((0u8..3, 0u8..3, 0u8..3), 0..10),
        import in prop::collection::vec((0u8..3, 0u8..3, 0u8..3), 0..30),
        hardened in any::<bool>(),
    ) {
        let policy = if hardened { MergePolicy::PendingOrFailed } else { MergePolicy::PendingOnly };
        let mut one = SyncQueue::open_in_memory().unwrap();
        let mut all = SyncQueue::open_in_memory().unwrap();
        // The same history before the import, one write at a time.
        for (step, e) in before.into_iter().enumerate() {
            let (op, id) = new_op(step, e);
            let a = one.write_and_enqueue(op.clone(), &id, 1_000, policy).map_err(|e| e.to_string());
            let b = all.write_and_enqueue(op, &id, 1_000, policy).map_err(|e| e.to_string());
            prop_assert_eq!(a, b);
        }
        let snapshot = (all.all().unwrap(), all.local_entities().unwrap());
        let edits: Vec<(NewOperation, String)> = import
            .into_iter()
            .enumerate()
            .map(|(i, e)| new_op(100 + i, e))
            .collect();
        let invalid = edits.iter().any(|(op, _)| op.validate().is_err());
        let batch = all.write_and_enqueue_all(edits.clone(), 2_000, policy);
        if invalid {
            prop_assert!(matches!(batch, Err(QueueError::Invalid(_))));
            prop_assert_eq!((all.all().unwrap(), all.local_entities().unwrap()), snapshot);
        } else {
            let mut singles = Vec::new();
            for (op, id) in edits {
                singles.push(one.write_and_enqueue(op, &id, 2_000, policy).unwrap());
            }
            prop_assert_eq!(batch.unwrap(), singles);
            prop_assert_eq!(all.all().unwrap(), one.all().unwrap());
            prop_assert_eq!(all.local_entities().unwrap(), one.local_entities().unwrap());
        }
    }
}

#[test]
fn cap_waits_brings_in_only_ready_times_past_the_bound() {
    // Three pending operations: one ready now, one in a 1 s backoff, one
    // given a ready time a day out (on a clock that was a day ahead); and
    // one failed. cap_waits(now, 5 min) moves only the day-out one, to
    // now + 5 min, and leaves failed operations alone.
    let mut q = SyncQueue::open_in_memory().unwrap();
    let policy = MergePolicy::PendingOrFailed;
    let op = |id: &str| NewOperation {
        entity_type: EntityType::Player,
        entity_id: id.to_string(),
        kind: OpKind::Update,
        data: json!({"id": id, "name": id}),
    };
    for id in ["now", "soon", "day", "failed"] {
        q.write_and_enqueue(op(id), id, 0, policy).unwrap();
    }
    const DAY_MS: i64 = 86_400_000;
    q.set_ready_at(&[("soon".into(), 1_000), ("day".into(), DAY_MS)])
        .unwrap();
    q.mark_batch_syncing(&["failed".to_string()], 0, None)
        .unwrap();
    for _ in 0..DEFAULT_MAX_RETRIES {
        q.mark_batch_failed(
            &["failed".to_string()],
            "x",
            DAY_MS,
            false,
            BatchIdAfter::Forget,
        )
        .unwrap();
    }
    assert_eq!(q.get("failed").unwrap().unwrap().status, OpStatus::Failed);
    assert_eq!(q.cap_waits(0, BACKOFF_CAP_MS).unwrap(), 1);
    let ready: Vec<String> = q
        .get_pending(10, BACKOFF_CAP_MS)
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(
        ready,
        ["now", "soon", "day"],
        "the day-out one is ready at the bound"
    );
    let early: Vec<String> = q
        .get_pending(10, BACKOFF_CAP_MS - 1)
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(early, ["now", "soon"], "and not before it");
    // Nothing left past the bound: a second call changes nothing.
    assert_eq!(q.cap_waits(0, BACKOFF_CAP_MS).unwrap(), 0);
}
