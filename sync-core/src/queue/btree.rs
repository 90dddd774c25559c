//! The B-tree store behind [`super::SyncQueue`]: SQLite's rules, row for row,
//! on ordered maps, so that a simulated device pays for its queue in map
//! operations instead of SQL statements (SQLite and rusqlite were 63% of
//! offline-reconnect's instructions and 67% of large-backlog's).
//!
//! Each SQLite table and index has a map here that answers the same walk:
//! - `rows` is `ops`, keyed by `seq` (the rowid). A new row gets one more
//!   than the largest `seq` held, or 1 (SQLite's rowid rule without
//!   AUTOINCREMENT), and a merge moves its row to one more than the largest
//!   `seq` including its own;
//! - `pending_by_type` is `ops_pending_by_type`, `pending_by_time` the
//!   pending part of `ops_by_time`, `pending_by_ready` the readiness range
//!   (SQLite scans for it; here it is kept, so `next_ready_at_ms` and
//!   `any_ready` are one look), `syncing` and `failed` the rest of
//!   `ops_by_time`, `by_entity` is `ops_by_entity`, `by_batch`
//!   `ops_by_batch`, `by_id` the UNIQUE index on `id`;
//! - `entities`, `sequences`, `released` and `released_by_name` are the
//!   other tables and `released_names_by_name`.
//!
//! Invariant (deliberately not checked at run time, held by
//! `tests/queue_backends.rs`): every index holds exactly the rows `rows`
//! holds, under the keys their fields give. Every change of a row goes
//! through `insert_row`, `remove_row`, `update` or `move_row`, which keep
//! it.
//!
//! Atomicity: nothing here can fail half way except a duplicate operation
//! id (SQLite's UNIQUE constraint), which is checked before anything is
//! written; an import that could hit one runs on a copy.

use super::{
    merge_outcome, BatchIdAfter, BatchSelect, EnqueueOutcome, LocalEntity, NewerVersion,
    QueueError, QueueStats, Written,
};
use crate::model::{
    app_ready_at_ms, EntityType, MergeOutcome, MergePolicy, NewOperation, OpKind, OpStatus,
    SyncOperation, DEFAULT_MAX_RETRIES,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Bound;

const TYPES: usize = EntityType::ALL.len();

/// One value per entity type, indexed by the type's place in
/// `EntityType::ALL` (its declaration order), so a lookup by `&str` id
/// needs no owned key.
type PerType<V> = [V; TYPES];

fn ti(t: EntityType) -> usize {
    t as usize
}

/// FNV-1a, `by_id`'s hasher: no per-process random key (the map's layout is
/// the same on every run), and a few instructions a byte on short ids.
#[derive(Clone, Copy, Debug)]
struct IdHasher(u64);

impl Default for IdHasher {
    fn default() -> IdHasher {
        IdHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A row of `ops`: the operation (its `seq` is the row's key) and when it
/// is ready.
#[derive(Clone, Debug)]
struct Row {
    op: SyncOperation,
    ready_at_ms: i64,
}

/// A row of `entities`.
#[derive(Clone, Debug)]
struct Entity {
    /// `Value::Null` when deleted.
    data: Value,
    version: i64,
    deleted: bool,
}

/// The indexes that follow a row's state (status, timestamp, readiness,
/// batch id), which most writes change; apart from the identity indexes
/// (`by_id`, `by_entity`), which only an insert, a delete or a merge does.
#[derive(Clone, Debug, Default)]
struct StateIndex {
    /// Pending rows of each type by (timestamp, seq).
    pending_by_type: PerType<BTreeSet<(i64, i64)>>,
    /// Pending rows by (timestamp, seq).
    pending_by_time: BTreeSet<(i64, i64)>,
    /// Pending rows by (ready at, seq).
    pending_by_ready: BTreeSet<(i64, i64)>,
    syncing: BTreeSet<i64>,
    failed: BTreeSet<i64>,
    /// Rows with a batch id.
    by_batch: BTreeMap<String, BTreeSet<i64>>,
}

#[derive(Clone, Debug, Default)]
pub(super) struct BtreeQueue {
    /// Boxed: a B-tree node shifts its values on every insert and remove,
    /// and a row is a few hundred bytes.
    rows: BTreeMap<i64, Box<Row>>,
    /// Looked up, never iterated (so its order reaches nothing): a hash map
    /// with a fixed hasher, where a B-tree compared a dozen ids a lookup.
    by_id: HashMap<String, i64, BuildHasherDefault<IdHasher>>,
    /// Every row of each entity, any status.
    by_entity: PerType<BTreeMap<String, BTreeSet<i64>>>,
    state: StateIndex,
    entities: PerType<BTreeMap<String, Entity>>,
    sequences: BTreeMap<String, i64>,
    /// entity id -> name -> the version whose arrival frees the name.
    released: PerType<BTreeMap<String, BTreeMap<String, i64>>>,
    /// name -> the entities that released it.
    released_by_name: PerType<BTreeMap<String, BTreeSet<String>>>,
}

/// What SQLite answers when an insert repeats an operation id.
fn duplicate_id() -> QueueError {
    QueueError::Sqlite {
        context: "insert op",
        source: rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE),
            Some("UNIQUE constraint failed: ops.id".to_string()),
        ),
    }
}

impl StateIndex {
    /// Adds the row's entries.
    fn add(&mut self, seq: i64, row: &Row) {
        let op = &row.op;
        match op.status {
            OpStatus::Pending => {
                self.pending_by_type[ti(op.entity_type)].insert((op.timestamp_ms, seq));
                self.pending_by_time.insert((op.timestamp_ms, seq));
                self.pending_by_ready.insert((row.ready_at_ms, seq));
            }
            OpStatus::Syncing => {
                self.syncing.insert(seq);
            }
            OpStatus::Failed => {
                self.failed.insert(seq);
            }
        }
        if let Some(batch) = &op.batch_id {
            match self.by_batch.get_mut(batch.as_str()) {
                Some(rows) => {
                    rows.insert(seq);
                }
                None => {
                    self.by_batch.insert(batch.clone(), BTreeSet::from([seq]));
                }
            }
        }
    }

    /// Removes the row's entries (as the row was when they were added).
    fn remove(&mut self, seq: i64, row: &Row) {
        let op = &row.op;
        match op.status {
            OpStatus::Pending => {
                self.pending_by_type[ti(op.entity_type)].remove(&(op.timestamp_ms, seq));
                self.pending_by_time.remove(&(op.timestamp_ms, seq));
                self.pending_by_ready.remove(&(row.ready_at_ms, seq));
            }
            OpStatus::Syncing => {
                self.syncing.remove(&seq);
            }
            OpStatus::Failed => {
                self.failed.remove(&seq);
            }
        }
        if let Some(batch) = &op.batch_id {
            if let Some(rows) = self.by_batch.get_mut(batch.as_str()) {
                rows.remove(&seq);
                if rows.is_empty() {
                    self.by_batch.remove(batch.as_str());
                }
            }
        }
    }
}

impl BtreeQueue {
    // ----- rows and their indexes ------------------------------------------

    /// The `seq` a new row gets, and a merged row moves to.
    fn next_seq(&self) -> i64 {
        self.rows.last_key_value().map_or(1, |(seq, _)| seq + 1)
    }

    fn insert_row(&mut self, seq: i64, mut row: Row) {
        row.op.seq = seq;
        self.state.add(seq, &row);
        self.by_id.insert(row.op.id.clone(), seq);
        let entity = &row.op.entity_id;
        match self.by_entity[ti(row.op.entity_type)].get_mut(entity.as_str()) {
            Some(rows) => {
                rows.insert(seq);
            }
            None => {
                self.by_entity[ti(row.op.entity_type)]
                    .insert(entity.clone(), BTreeSet::from([seq]));
            }
        }
        self.rows.insert(seq, Box::new(row));
    }

    fn remove_row(&mut self, seq: i64) -> Option<Row> {
        let row = *self.rows.remove(&seq)?;
        self.state.remove(seq, &row);
        self.by_id.remove(row.op.id.as_str());
        let by_entity = &mut self.by_entity[ti(row.op.entity_type)];
        if let Some(rows) = by_entity.get_mut(row.op.entity_id.as_str()) {
            rows.remove(&seq);
            if rows.is_empty() {
                by_entity.remove(row.op.entity_id.as_str());
            }
        }
        Some(row)
    }

    /// Changes one row in place (not its `seq`, id or entity: a merge
    /// moves it, `move_row`).
    fn update(&mut self, seq: i64, change: impl FnOnce(&mut Row)) {
        let Some(row) = self.rows.get_mut(&seq) else {
            return;
        };
        self.state.remove(seq, row);
        change(row);
        self.state.add(seq, row);
    }

    /// Moves row `old` past every row, its own included (a merge: SQLite's
    /// `seq = MAX(seq) + 1`), changed by `change`. Its id and entity stay,
    /// so their indexes are updated in place.
    fn move_row(&mut self, old: i64, change: impl FnOnce(&mut Row)) {
        let seq = self.next_seq();
        let Some(mut row) = self.rows.remove(&old) else {
            return;
        };
        self.state.remove(old, &row);
        change(&mut row);
        row.op.seq = seq;
        if let Some(at) = self.by_id.get_mut(row.op.id.as_str()) {
            *at = seq;
        }
        if let Some(seqs) =
            self.by_entity[ti(row.op.entity_type)].get_mut(row.op.entity_id.as_str())
        {
            seqs.remove(&old);
            seqs.insert(seq);
        }
        self.state.add(seq, &row);
        self.rows.insert(seq, row);
    }

    fn seq_of(&self, op_id: &str) -> Option<i64> {
        self.by_id.get(op_id).copied()
    }

    fn row_of(&self, op_id: &str) -> Option<&Row> {
        self.seq_of(op_id)
            .and_then(|seq| self.rows.get(&seq))
            .map(|r| &**r)
    }

    fn status_of(&self, op_id: &str) -> Option<(i64, OpStatus)> {
        let seq = self.seq_of(op_id)?;
        Some((seq, self.rows.get(&seq)?.op.status))
    }

    /// The rows of one entity, oldest `seq` first.
    fn entity_rows<'a>(
        &'a self,
        t: EntityType,
        entity_id: &str,
    ) -> impl DoubleEndedIterator<Item = &'a Row> + 'a {
        self.by_entity[ti(t)]
            .get(entity_id)
            .into_iter()
            .flatten()
            .filter_map(|seq| self.rows.get(seq).map(|r| &**r))
    }

    fn entity_has(&self, t: EntityType, entity_id: &str, statuses: &[OpStatus]) -> bool {
        self.entity_rows(t, entity_id)
            .any(|r| statuses.contains(&r.op.status))
    }

    /// The ids of `op_ids`, each once, in id order (SQLite's `update_ids`
    /// order: the answers do not depend on it, but the same order keeps
    /// the two stores step for step alike).
    fn unique_seqs(&self, op_ids: &[String]) -> Vec<i64> {
        let unique: BTreeSet<&String> = op_ids.iter().collect();
        unique
            .into_iter()
            .filter_map(|id| self.seq_of(id))
            .collect()
    }

    // ----- writes ----------------------------------------------------------

    pub(super) fn clear(&mut self) -> Result<(), QueueError> {
        *self = BtreeQueue::default();
        Ok(())
    }

    /// The newest mergeable operation of `op`'s entity (at most one exists
    /// under PendingOrFailed; under PendingOnly the newest pending one).
    fn find_mergeable(&self, op: &NewOperation, policy: MergePolicy) -> Option<i64> {
        let mergeable: &[OpStatus] = match policy {
            MergePolicy::PendingOnly => &[OpStatus::Pending],
            MergePolicy::PendingOrFailed => &[OpStatus::Pending, OpStatus::Failed],
        };
        self.entity_rows(op.entity_type, &op.entity_id)
            .rev()
            .find(|r| mergeable.contains(&r.op.status))
            .map(|r| r.op.seq)
    }

    /// What the merge table does with `op` given `existing`, with the
    /// hardened rule that never cancels.
    fn outcome(
        &self,
        op: &NewOperation,
        existing: Option<i64>,
        policy: MergePolicy,
    ) -> Option<MergeOutcome> {
        let old = self.rows.get(&existing?)?;
        Some(merge_outcome(old.op.kind, op.kind, policy))
    }

    /// Whether enqueueing `op` as `op_id` would insert a row whose id is
    /// already taken (after a replace has deleted the row it replaces).
    fn id_taken(
        &self,
        op: &NewOperation,
        op_id: &str,
        existing: Option<i64>,
        policy: MergePolicy,
    ) -> bool {
        let Some(seq) = self.seq_of(op_id) else {
            return false;
        };
        match self.outcome(op, existing, policy) {
            None => true,
            Some(MergeOutcome::Replace) => existing != Some(seq),
            Some(MergeOutcome::Merge(_) | MergeOutcome::RemoveBoth) => false,
        }
    }

    fn insert_new(&mut self, op: NewOperation, op_id: &str, version: i64, now_ms: i64) {
        let seq = self.next_seq();
        let row = Row {
            op: SyncOperation {
                id: op_id.to_string(),
                entity_type: op.entity_type,
                entity_id: op.entity_id,
                kind: op.kind,
                data: op.data,
                version,
                timestamp_ms: now_ms,
                status: OpStatus::Pending,
                retry_count: 0,
                max_retries: DEFAULT_MAX_RETRIES,
                last_error: None,
                last_attempt_ms: None,
                created_at_ms: now_ms,
                batch_id: None,
                quarantined: false,
                seq,
            },
            ready_at_ms: app_ready_at_ms(0, None),
        };
        self.insert_row(seq, row);
    }

    /// The merge table applied; the caller has checked `id_taken`.
    #[allow(clippy::too_many_arguments)]
    fn enqueue_checked(
        &mut self,
        op: NewOperation,
        op_id: &str,
        version: i64,
        now_ms: i64,
        policy: MergePolicy,
        existing: Option<i64>,
        keep_batch: bool,
    ) -> EnqueueOutcome {
        let old = existing.and_then(|seq| Some((seq, self.rows.get(&seq)?.op.id.clone())));
        let (Some((old_seq, old_id)), Some(outcome)) = (old, self.outcome(&op, existing, policy))
        else {
            self.insert_new(op, op_id, version, now_ms);
            return EnqueueOutcome::Inserted {
                op_id: op_id.to_string(),
            };
        };
        match outcome {
            MergeOutcome::Merge(kind) => {
                self.move_row(old_seq, |row| {
                    let o = &mut row.op;
                    o.kind = kind;
                    o.data = op.data;
                    o.version = version;
                    o.timestamp_ms = now_ms;
                    o.status = OpStatus::Pending;
                    o.retry_count = 0;
                    o.last_error = None;
                    o.last_attempt_ms = None;
                    if !keep_batch {
                        o.batch_id = None;
                    }
                    o.quarantined = false;
                    row.ready_at_ms = app_ready_at_ms(0, None);
                });
                EnqueueOutcome::Merged {
                    op_id: old_id,
                    kind,
                }
            }
            MergeOutcome::RemoveBoth => {
                self.remove_row(old_seq);
                EnqueueOutcome::Cancelled {
                    removed_op_id: old_id,
                }
            }
            MergeOutcome::Replace => {
                self.remove_row(old_seq);
                self.insert_new(op, op_id, version, now_ms);
                EnqueueOutcome::Replaced {
                    removed_op_id: old_id,
                    op_id: op_id.to_string(),
                }
            }
        }
    }

    pub(super) fn enqueue(
        &mut self,
        op: NewOperation,
        op_id: &str,
        version: i64,
        now_ms: i64,
        policy: MergePolicy,
        keep_batch: bool,
    ) -> Result<EnqueueOutcome, QueueError> {
        let existing = self.find_mergeable(&op, policy);
        if self.id_taken(&op, op_id, existing, policy) {
            return Err(duplicate_id());
        }
        Ok(self.enqueue_checked(op, op_id, version, now_ms, policy, existing, keep_batch))
    }

    fn local_version(&self, op: &NewOperation) -> Option<i64> {
        self.entities[ti(op.entity_type)]
            .get(op.entity_id.as_str())
            .map(|e| e.version)
    }

    /// Writes `op` to the local store over version `prev`; returns the new
    /// version.
    fn write_local_at(&mut self, op: &NewOperation, prev: Option<i64>) -> i64 {
        let deleted = op.kind.is_delete();
        let version = prev.unwrap_or(0) + 1;
        if prev.is_some() && op.entity_type.unique_name() {
            self.record_release(op, version);
        }
        let entity = Entity {
            data: if deleted {
                Value::Null
            } else {
                op.data.clone()
            },
            version,
            deleted,
        };
        let entities = &mut self.entities[ti(op.entity_type)];
        match entities.get_mut(op.entity_id.as_str()) {
            Some(e) => *e = entity,
            None => {
                entities.insert(op.entity_id.clone(), entity);
            }
        }
        version
    }

    /// Before an existing entity of a `unique_name` type is overwritten:
    /// if the edit gives up its name (a delete, or a new name), records the
    /// name as released at `version`. A name given up twice keeps the later
    /// version.
    fn record_release(&mut self, op: &NewOperation, version: i64) {
        let t = ti(op.entity_type);
        let old = self.entities[t]
            .get(op.entity_id.as_str())
            .and_then(|e| e.data.get("name"))
            .and_then(Value::as_str);
        let Some(old) = old else {
            return;
        };
        let kept = !op.kind.is_delete() && op.data.get("name").and_then(Value::as_str) == Some(old);
        if kept {
            return;
        }
        let old = old.to_string();
        self.released[t]
            .entry(op.entity_id.clone())
            .or_default()
            .insert(old.clone(), version);
        self.released_by_name[t]
            .entry(old)
            .or_default()
            .insert(op.entity_id.clone());
    }

    /// Settles the names `op`'s entity gave up at `op`'s version or before
    /// (SQLite's trigger `released_names_settled`).
    fn settle_released(&mut self, op: &SyncOperation) {
        if !op.entity_type.unique_name() {
            return;
        }
        let t = ti(op.entity_type);
        let Some(names) = self.released[t].get_mut(op.entity_id.as_str()) else {
            return;
        };
        let settled: Vec<String> = names
            .iter()
            .filter(|(_, v)| **v <= op.version)
            .map(|(name, _)| name.clone())
            .collect();
        for name in &settled {
            names.remove(name);
        }
        if names.is_empty() {
            self.released[t].remove(op.entity_id.as_str());
        }
        for name in settled {
            if let Some(ids) = self.released_by_name[t].get_mut(&name) {
                ids.remove(op.entity_id.as_str());
                if ids.is_empty() {
                    self.released_by_name[t].remove(&name);
                }
            }
        }
    }

    pub(super) fn write_and_enqueue(
        &mut self,
        op: NewOperation,
        op_id: &str,
        now_ms: i64,
        policy: MergePolicy,
        keep_batch: bool,
    ) -> Result<Written, QueueError> {
        let prev = self.local_version(&op);
        let existing = self.find_mergeable(&op, policy);
        if self.id_taken(&op, op_id, existing, policy) {
            return Err(duplicate_id());
        }
        let version = self.write_local_at(&op, prev);
        let outcome =
            self.enqueue_checked(op, op_id, version, now_ms, policy, existing, keep_batch);
        Ok(Written { outcome, version })
    }

    pub(super) fn write_and_enqueue_all(
        &mut self,
        edits: Vec<(NewOperation, String)>,
        now_ms: i64,
        policy: MergePolicy,
        keep_batch: bool,
    ) -> Result<Vec<Written>, QueueError> {
        // Only an id already held, or repeated, can fail an edit half way;
        // then the import runs on a copy (all or nothing). Otherwise it
        // runs in place, without the copy's O(queue) cost.
        let mut ids = BTreeSet::new();
        let may_fail = edits
            .iter()
            .any(|(_, id)| self.by_id.contains_key(id.as_str()) || !ids.insert(id.as_str()));
        let backup = may_fail.then(|| self.clone());
        let mut out = Vec::with_capacity(edits.len());
        for (op, op_id) in edits {
            match self.write_and_enqueue(op, &op_id, now_ms, policy, keep_batch) {
                Ok(w) => out.push(w),
                Err(e) => {
                    if let Some(backup) = backup {
                        *self = backup;
                    }
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    pub(super) fn write_local(&mut self, op: &NewOperation) -> Result<i64, QueueError> {
        let prev = self.local_version(op);
        Ok(self.write_local_at(op, prev))
    }

    // ----- reads -------------------------------------------------------------

    pub(super) fn local_entity(
        &self,
        entity_type: EntityType,
        entity_id: &str,
    ) -> Result<Option<LocalEntity>, QueueError> {
        Ok(self.entities[ti(entity_type)]
            .get(entity_id)
            .map(|e| LocalEntity {
                entity_type,
                entity_id: entity_id.to_string(),
                data: e.data.clone(),
                version: e.version,
                deleted: e.deleted,
            }))
    }

    pub(super) fn local_entities(&self) -> Result<Vec<LocalEntity>, QueueError> {
        let mut out = Vec::new();
        for t in EntityType::ALL {
            for (id, e) in &self.entities[ti(t)] {
                out.push(LocalEntity {
                    entity_type: t,
                    entity_id: id.clone(),
                    data: e.data.clone(),
                    version: e.version,
                    deleted: e.deleted,
                });
            }
        }
        Ok(out)
    }

    pub(super) fn get(&self, op_id: &str) -> Result<Option<SyncOperation>, QueueError> {
        Ok(self.row_of(op_id).map(|r| r.op.clone()))
    }

    pub(super) fn all(&self) -> Result<Vec<SyncOperation>, QueueError> {
        let mut ops: Vec<SyncOperation> = self.rows.values().map(|r| r.op.clone()).collect();
        ops.sort_by_key(|o| (o.timestamp_ms, o.seq));
        Ok(ops)
    }

    pub(super) fn get_pending(
        &self,
        limit: usize,
        now_ms: i64,
    ) -> Result<Vec<SyncOperation>, QueueError> {
        Ok(self
            .state
            .pending_by_time
            .iter()
            .filter_map(|(_, seq)| self.rows.get(seq))
            .filter(|r| r.ready_at_ms <= now_ms)
            .take(limit)
            .map(|r| r.op.clone())
            .collect())
    }

    pub(super) fn any_ready(&self, now_ms: i64) -> Result<bool, QueueError> {
        Ok(self
            .state
            .pending_by_ready
            .first()
            .is_some_and(|(ready, _)| *ready <= now_ms))
    }

    pub(super) fn get_pending_batched(
        &self,
        select: BatchSelect,
        now_ms: i64,
    ) -> Result<BTreeMap<EntityType, Vec<SyncOperation>>, QueueError> {
        let mut out = BTreeMap::new();
        if select.max_per_type == 0 {
            return Ok(out);
        }
        for t in EntityType::ALL {
            let mut picked: Vec<SyncOperation> = Vec::new();
            let mut seen: BTreeSet<&str> = BTreeSet::new();
            // Bound: one pass over this type's pending rows, stopped at
            // `max_per_type` picks.
            for (_, seq) in &self.state.pending_by_type[ti(t)] {
                let Some(row) = self.rows.get(seq) else {
                    continue;
                };
                if row.ready_at_ms > now_ms {
                    continue;
                }
                let op = &row.op;
                if select.single_flight
                    && (self.entity_has(t, &op.entity_id, &[OpStatus::Syncing])
                        || !seen.insert(op.entity_id.as_str()))
                {
                    continue;
                }
                picked.push(op.clone());
                if picked.len() == select.max_per_type {
                    break;
                }
            }
            if !picked.is_empty() {
                out.insert(t, picked);
            }
        }
        Ok(out)
    }

    // ----- batch marking -------------------------------------------------------

    pub(super) fn mark_batch_syncing(
        &mut self,
        op_ids: &[String],
        now_ms: i64,
        batch_id: Option<&str>,
    ) -> Result<(), QueueError> {
        for seq in self.unique_seqs(op_ids) {
            self.mark_syncing(seq, now_ms, batch_id);
        }
        Ok(())
    }

    /// Marks row `seq` syncing if it is pending; whether it did.
    fn mark_syncing(&mut self, seq: i64, now_ms: i64, batch_id: Option<&str>) -> bool {
        if self.rows.get(&seq).map(|r| r.op.status) != Some(OpStatus::Pending) {
            return false;
        }
        self.update(seq, |r| {
            r.op.status = OpStatus::Syncing;
            r.op.last_attempt_ms = Some(now_ms);
            if let Some(b) = batch_id {
                r.op.batch_id = Some(b.to_string());
            }
        });
        true
    }

    pub(super) fn mark_batch_syncing_unchanged(
        &mut self,
        ops: &[SyncOperation],
        now_ms: i64,
        batch_id: Option<&str>,
    ) -> Result<Vec<bool>, QueueError> {
        Ok(ops
            .iter()
            .map(|op| {
                let same = self.rows.get(&op.seq).is_some_and(|r| r.op.id == op.id);
                same && self.mark_syncing(op.seq, now_ms, batch_id)
            })
            .collect())
    }

    pub(super) fn mark_batch_completed(&mut self, op_ids: &[String]) -> Result<(), QueueError> {
        for id in op_ids {
            let Some((seq, OpStatus::Syncing)) = self.status_of(id) else {
                continue;
            };
            if let Some(row) = self.remove_row(seq) {
                self.settle_released(&row.op);
            }
        }
        Ok(())
    }

    pub(super) fn mark_batch_failed(
        &mut self,
        op_ids: &[String],
        error: &str,
        now_ms: i64,
        retry_forever: bool,
        batch: BatchIdAfter,
    ) -> Result<(), QueueError> {
        self.after_attempt(op_ids, error, now_ms, batch, |r| {
            let count = r.op.retry_count.saturating_add(1);
            r.op.retry_count = count;
            r.op.status = if !retry_forever && count >= r.op.max_retries {
                OpStatus::Failed
            } else {
                OpStatus::Pending
            };
            r.ready_at_ms = app_ready_at_ms(count, Some(now_ms));
        });
        Ok(())
    }

    pub(super) fn mark_batch_aborted(
        &mut self,
        op_ids: &[String],
        error: &str,
        now_ms: i64,
        batch: BatchIdAfter,
    ) -> Result<(), QueueError> {
        self.after_attempt(op_ids, error, now_ms, batch, |r| {
            r.op.status = OpStatus::Pending;
            r.ready_at_ms = app_ready_at_ms(r.op.retry_count, Some(now_ms));
        });
        Ok(())
    }

    /// What a failure and an abort share: each of `op_ids` that is syncing
    /// or pending (a failed one is left alone) records the attempt and the
    /// error, keeps or forgets its batch id, and `then` sets its status,
    /// count and ready time.
    fn after_attempt(
        &mut self,
        op_ids: &[String],
        error: &str,
        now_ms: i64,
        batch: BatchIdAfter,
        then: impl Fn(&mut Row),
    ) {
        for seq in self.unique_seqs(op_ids) {
            if self
                .rows
                .get(&seq)
                .is_none_or(|r| r.op.status == OpStatus::Failed)
            {
                continue;
            }
            self.update(seq, |r| {
                r.op.last_error = Some(error.to_string());
                r.op.last_attempt_ms = Some(now_ms);
                if batch == BatchIdAfter::Forget {
                    r.op.batch_id = None;
                }
                then(r);
            });
        }
    }

    pub(super) fn mark_quarantined(&mut self, op_id: &str, error: &str) -> Result<(), QueueError> {
        if let Some(seq) = self.seq_of(op_id) {
            self.update(seq, |r| {
                r.op.status = OpStatus::Failed;
                r.op.quarantined = true;
                r.op.last_error = Some(error.to_string());
                r.op.batch_id = None;
            });
        }
        Ok(())
    }

    pub(super) fn reset_stale_syncing(&mut self) -> Result<u64, QueueError> {
        let syncing: Vec<i64> = self.state.syncing.iter().copied().collect();
        for &seq in &syncing {
            self.update(seq, |r| {
                r.op.status = OpStatus::Pending;
                r.ready_at_ms = app_ready_at_ms(r.op.retry_count, r.op.last_attempt_ms);
            });
        }
        Ok(syncing.len() as u64)
    }

    pub(super) fn retry_failed(&mut self) -> Result<u64, QueueError> {
        let failed: Vec<i64> = self.state.failed.iter().copied().collect();
        for &seq in &failed {
            self.update(seq, |r| {
                let o = &mut r.op;
                o.status = OpStatus::Pending;
                o.retry_count = 0;
                o.quarantined = false;
                o.last_attempt_ms = None;
                o.batch_id = None;
                r.ready_at_ms = i64::MIN;
            });
        }
        Ok(failed.len() as u64)
    }

    /// Every pending operation ready later than `latest_ms` is made ready
    /// at `latest_ms`; returns how many.
    pub(super) fn ready_by(
        &mut self,
        latest_ms: i64,
        _context: &'static str,
    ) -> Result<u64, QueueError> {
        let later: Vec<i64> = self
            .state
            .pending_by_ready
            .range((Bound::Excluded((latest_ms, i64::MAX)), Bound::Unbounded))
            .map(|(_, seq)| *seq)
            .collect();
        for &seq in &later {
            self.update(seq, |r| r.ready_at_ms = latest_ms);
        }
        Ok(later.len() as u64)
    }

    pub(super) fn discard_failed(&mut self) -> Result<u64, QueueError> {
        let failed: Vec<i64> = self.state.failed.iter().copied().collect();
        for &seq in &failed {
            self.remove_row(seq);
        }
        Ok(failed.len() as u64)
    }

    // ----- counts --------------------------------------------------------------

    pub(super) fn stats(&self, now_ms: i64) -> Result<QueueStats, QueueError> {
        let oldest = self
            .state
            .pending_by_time
            .iter()
            .filter_map(|(_, seq)| self.rows.get(seq))
            .map(|r| r.op.created_at_ms)
            .min();
        Ok(QueueStats {
            pending: self.state.pending_by_time.len() as u64,
            syncing: self.state.syncing.len() as u64,
            failed: self.state.failed.len() as u64,
            quarantined: self
                .state
                .failed
                .iter()
                .filter(|seq| self.rows.get(seq).is_some_and(|r| r.op.quarantined))
                .count() as u64,
            oldest_pending_age_ms: oldest.map(|t| now_ms - t),
        })
    }

    pub(super) fn status_counts(&self) -> Result<(u64, u64, u64), QueueError> {
        Ok((
            self.state.pending_by_time.len() as u64,
            self.state.syncing.len() as u64,
            self.state.failed.len() as u64,
        ))
    }

    pub(super) fn next_ready_at_ms(&self) -> Result<Option<i64>, QueueError> {
        Ok(self.state.pending_by_ready.first().map(|(ready, _)| *ready))
    }

    pub(super) fn len(&self) -> Result<u64, QueueError> {
        Ok(self.rows.len() as u64)
    }

    // ----- per-entity reads ------------------------------------------------------

    pub(super) fn queued_for_entity(
        &self,
        entity_type: EntityType,
        entity_id: &str,
    ) -> Result<Vec<(String, OpKind)>, QueueError> {
        Ok(self
            .entity_rows(entity_type, entity_id)
            .map(|r| (r.op.id.clone(), r.op.kind))
            .collect())
    }

    pub(super) fn newer_version(&self, op_id: &str) -> Result<Option<NewerVersion>, QueueError> {
        let Some(row) = self.row_of(op_id) else {
            return Ok(None);
        };
        let op = &row.op;
        let queued = self
            .entity_rows(op.entity_type, &op.entity_id)
            .any(|r| r.op.id != op.id && r.op.version > op.version);
        let local = self.entities[ti(op.entity_type)]
            .get(op.entity_id.as_str())
            .is_some_and(|e| e.version > op.version);
        Ok(Some(NewerVersion { queued, local }))
    }

    pub(super) fn name_releasers(
        &self,
        entity_type: EntityType,
        name: &str,
        entity_id: &str,
    ) -> Result<Vec<String>, QueueError> {
        let on_its_way = [OpStatus::Pending, OpStatus::Syncing];
        Ok(self.released_by_name[ti(entity_type)]
            .get(name)
            .into_iter()
            .flatten()
            .filter(|id| id.as_str() != entity_id)
            .filter(|id| self.entity_has(entity_type, id, &on_its_way))
            .cloned()
            .collect())
    }

    pub(super) fn retry_count(&self, op_id: &str) -> Result<Option<u32>, QueueError> {
        Ok(self.row_of(op_id).map(|r| r.op.retry_count))
    }

    pub(super) fn remove(&mut self, op_id: &str) -> Result<bool, QueueError> {
        match self.status_of(op_id) {
            Some((seq, status)) if status != OpStatus::Syncing => {
                Ok(self.remove_row(seq).is_some())
            }
            _ => Ok(false),
        }
    }

    pub(super) fn next_sequence(&mut self, name: &str) -> Result<i64, QueueError> {
        let value = match self.sequences.get_mut(name) {
            Some(v) => {
                *v += 1;
                *v
            }
            None => {
                self.sequences.insert(name.to_string(), 1);
                1
            }
        };
        Ok(value)
    }

    pub(super) fn unresolved_batch(
        &self,
        now_ms: i64,
    ) -> Result<Option<(String, Vec<SyncOperation>)>, QueueError> {
        let ready_pending = |seq: &i64| {
            self.rows
                .get(seq)
                .filter(|r| r.op.status == OpStatus::Pending && r.ready_at_ms <= now_ms)
        };
        // The rows with a batch id are a few batches' worth (in flight or
        // unresolved), as under SQLite's partial index.
        let oldest = self
            .state
            .by_batch
            .iter()
            .flat_map(|(batch, seqs)| {
                seqs.iter()
                    .filter_map(ready_pending)
                    .map(move |r| ((r.op.timestamp_ms, r.op.seq), batch))
            })
            .min_by_key(|(key, _)| *key);
        let Some((_, batch)) = oldest else {
            return Ok(None);
        };
        let mut ops: Vec<SyncOperation> = self.state.by_batch[batch.as_str()]
            .iter()
            .filter_map(|seq| self.rows.get(seq))
            .filter(|r| r.op.status == OpStatus::Pending)
            .map(|r| r.op.clone())
            .collect();
        ops.sort_by_key(|o| (o.timestamp_ms, o.seq));
        Ok(Some((batch.clone(), ops)))
    }

    pub(super) fn clear_batch_id(&mut self, op_ids: &[String]) -> Result<(), QueueError> {
        for seq in self.unique_seqs(op_ids) {
            self.update(seq, |r| r.op.batch_id = None);
        }
        Ok(())
    }

    pub(super) fn set_ready_at(&mut self, ready: &[(String, i64)]) -> Result<(), QueueError> {
        for (id, at) in ready {
            if let Some((seq, OpStatus::Pending)) = self.status_of(id) {
                self.update(seq, |r| r.ready_at_ms = *at);
            }
        }
        Ok(())
    }

    pub(super) fn is_ready(&self, op_id: &str, now_ms: i64) -> Result<bool, QueueError> {
        Ok(self.row_of(op_id).is_some_and(|r| {
            r.op.status == OpStatus::Pending
                && r.ready_at_ms <= now_ms
                && !self.entity_has(r.op.entity_type, &r.op.entity_id, &[OpStatus::Syncing])
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `PerType` arrays are indexed by `ti`, which takes the declaration
    /// order for `EntityType::ALL`'s.
    #[test]
    fn per_type_index_is_the_place_in_all() {
        for (i, t) in EntityType::ALL.into_iter().enumerate() {
            assert_eq!(ti(t), i, "{t}");
        }
    }
}
