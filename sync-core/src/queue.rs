//! `SyncQueue`: the durable local queue, with the local entity store beside
//! it so that "write the entity locally and enqueue its operation" is one
//! atomic step.
//!
//! Two stores answer the same API, and every method's contract is stated
//! here, once:
//! - [`sqlite`]: the real queue, a SQLite database (a file on a device, an
//!   in-memory connection in tests and in the simulator). This is what the
//!   plan ships.
//! - [`btree`]: the same rules on plain B-tree maps, nothing durable of its
//!   own. It exists for speed: SQLite is two thirds of a simulated run's
//!   instructions, and a sweep on this store explores several times as
//!   many seeds a second. It is held to SQLite by
//!   `tests/queue_backends.rs` (every public method, every answer, the
//!   whole state after every step) and by `tests/queue_model.rs`, and the
//!   simulator re-runs a share of every B-tree sweep's seeds on SQLite and
//!   requires identical histories (`sim explore --queue btree`).
//!
//! Validation (`NewOperation::validate`) and the planted bug's switch live
//! here, so neither store can disagree on them.

mod btree;
mod sqlite;

use crate::model::{
    merge_kinds, EntityType, InvalidOperation, MergeOutcome, MergePolicy, NewOperation, OpKind,
    SyncOperation,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Errors of the queue. Never a panic for bad input or a bad file.
#[derive(Debug)]
pub enum QueueError {
    /// The operation broke the app's rules; nothing was written.
    Invalid(InvalidOperation),
    /// The database file is corrupt, not SQLite, or another program's
    /// database: names the file.
    Corrupt { path: PathBuf, detail: String },
    /// Any other SQLite error, with what the queue was doing.
    Sqlite {
        context: &'static str,
        source: rusqlite::Error,
    },
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueError::Invalid(e) => write!(f, "{e}"),
            QueueError::Corrupt { path, detail } => write!(
                f,
                "queue database {} is corrupt or not a sync queue: {detail}",
                path.display()
            ),
            QueueError::Sqlite { context, source } => write!(f, "queue {context}: {source}"),
        }
    }
}

impl std::error::Error for QueueError {}

/// What `enqueue` did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum EnqueueOutcome {
    /// A new operation with this id.
    Inserted { op_id: String },
    /// Merged into the existing operation with this id (merge table).
    Merged { op_id: String, kind: OpKind },
    /// create + delete: the existing operation was removed and nothing added.
    Cancelled { removed_op_id: String },
    /// delete + anything: the existing delete was replaced by a new operation.
    Replaced {
        removed_op_id: String,
        op_id: String,
    },
}

/// What `write_and_enqueue` did: the queue's merge outcome and the entity's
/// new local version (the one its operation carries).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub outcome: EnqueueOutcome,
    pub version: i64,
}

/// The local copy of one entity (the device's truth).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalEntity {
    pub entity_type: EntityType,
    pub entity_id: String,
    /// `Value::Null` when deleted.
    pub data: Value,
    /// Bumped by every local write, deletes included; never reused.
    pub version: i64,
    pub deleted: bool,
}

/// Queue counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    pub pending: u64,
    pub syncing: u64,
    pub failed: u64,
    pub quarantined: u64,
    /// Age of the oldest pending operation (by created-at), if any.
    pub oldest_pending_age_ms: Option<i64>,
}

/// Options of `get_pending_batched`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSelect {
    /// At most this many operations per entity type (plan: 50).
    pub max_per_type: usize,
    /// Hardened: skip an operation when another operation of the same entity
    /// is `syncing`, and take at most one (the oldest) per entity.
    pub single_flight: bool,
}

/// Where a newer version of an operation's entity is held
/// (`SyncQueue::newer_version`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NewerVersion {
    /// Another queued operation of the entity carries a newer version.
    pub queued: bool,
    /// The local entity has moved past the operation. Without `queued`,
    /// the newer operation has left the queue (sent, or completed locally
    /// as subsumed): an operation is written with its entity's version in
    /// one transaction, and a later write merges into it unless it is in
    /// flight, so the entity moves past it only through a second
    /// operation.
    pub local: bool,
}

/// What a failure or an abort does to its operations' batch id (hardened
/// exactly-once), written in the same UPDATE as the status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchIdAfter {
    /// Kept: the outcome is unknown, so a re-send must carry the same id.
    Keep,
    /// Forgotten: the next send of these operations is a new request (the
    /// outcome is known, or the batch is being split).
    Forget,
}

/// The merge table under a policy, for both stores: the app's
/// `merge_kinds`, except that the hardened policy never cancels. The
/// "create" may be a re-create of an entity the server has (delete + create
/// replaced the delete), or a create that was sent and aborted and may have
/// committed; cancelling would leave the entity on the server. A delete of
/// an entity the server never saw is a harmless no-op.
fn merge_outcome(old: OpKind, new: OpKind, policy: MergePolicy) -> MergeOutcome {
    match merge_kinds(old, new) {
        MergeOutcome::RemoveBoth if policy == MergePolicy::PendingOrFailed => {
            MergeOutcome::Merge(OpKind::Delete)
        }
        outcome => outcome,
    }
}

/// Which store a queue keeps its rows in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueBackend {
    /// SQLite: the queue the plan ships.
    Sqlite,
    /// B-tree maps: the same answers, several times cheaper, not durable.
    Btree,
}

impl QueueBackend {
    pub const ALL: [QueueBackend; 2] = [QueueBackend::Sqlite, QueueBackend::Btree];

    pub fn as_str(self) -> &'static str {
        match self {
            QueueBackend::Sqlite => "sqlite",
            QueueBackend::Btree => "btree",
        }
    }

    pub fn parse(s: &str) -> Option<QueueBackend> {
        QueueBackend::ALL.into_iter().find(|b| b.as_str() == s)
    }
}

impl fmt::Display for QueueBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

enum Store {
    Sqlite(sqlite::SqliteQueue),
    Btree(Box<btree::BtreeQueue>),
}

/// The durable queue. Not `Sync`: share it behind a mutex and never hold
/// that mutex across an `.await` (a kill drops the future mid-transaction).
///
/// Every method is atomic: it does all of its writes or, on an error, none.
pub struct SyncQueue {
    store: Store,
    /// What errors call the database (a path or a name).
    name: PathBuf,
    /// Planted bug, simulation builds only (`plant_merge_keeps_batch_id`).
    #[cfg(madsim)]
    merge_keeps_batch_id: bool,
}

/// Runs `$e` on whichever store `$q` holds, bound as `$s` (both stores have
/// the same method names and signatures, so one expression fits both).
macro_rules! on_store {
    ($q:expr, $s:ident => $e:expr) => {
        match $q {
            Store::Sqlite($s) => $e,
            Store::Btree($s) => $e,
        }
    };
}

impl SyncQueue {
    fn with_store(store: Store, name: PathBuf) -> SyncQueue {
        SyncQueue {
            store,
            name,
            #[cfg(madsim)]
            merge_keeps_batch_id: false,
        }
    }

    /// Opens (creating if needed) a queue database file.
    pub fn open(path: &Path) -> Result<SyncQueue, QueueError> {
        let conn = rusqlite::Connection::open(path).map_err(|e| QueueError::Corrupt {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        SyncQueue::on_sqlite(conn, path.to_path_buf())
    }

    /// A queue in a fresh in-memory SQLite database.
    pub fn open_in_memory() -> Result<SyncQueue, QueueError> {
        let conn = rusqlite::Connection::open_in_memory().map_err(|source| QueueError::Sqlite {
            context: "open in memory",
            source,
        })?;
        SyncQueue::on_sqlite(conn, PathBuf::from(":memory:"))
    }

    /// Wraps an existing connection (the simulator's disk owns one), creating
    /// the schema if missing. `name` is what errors call the database.
    pub fn from_connection(
        conn: rusqlite::Connection,
        name: &str,
    ) -> Result<SyncQueue, QueueError> {
        SyncQueue::on_sqlite(conn, PathBuf::from(name))
    }

    /// A queue on `conn`, which errors call `name` (a file's path as given,
    /// not a lossy string of it).
    fn on_sqlite(conn: rusqlite::Connection, name: PathBuf) -> Result<SyncQueue, QueueError> {
        let store = sqlite::SqliteQueue::init(conn, &name)?;
        Ok(SyncQueue::with_store(Store::Sqlite(store), name))
    }

    /// An empty queue on B-tree maps (see the module docs): the same
    /// answers as SQLite, nothing durable beyond the value itself. `name`
    /// is what errors call it.
    pub fn open_btree(name: &str) -> SyncQueue {
        SyncQueue::with_store(Store::Btree(Box::default()), PathBuf::from(name))
    }

    /// Which store this queue keeps its rows in.
    pub fn backend(&self) -> QueueBackend {
        match self.store {
            Store::Sqlite(_) => QueueBackend::Sqlite,
            Store::Btree(_) => QueueBackend::Btree,
        }
    }

    /// Deletes every operation, local entity, sequence and released name,
    /// atomically (the app's sign-out). The queue then behaves exactly as a
    /// fresh one: `seq` starts again at 1, and no answer depends on what
    /// the queue held before (`tests/queue_model.rs` holds this).
    pub fn clear(&mut self) -> Result<(), QueueError> {
        on_store!(&mut self.store, s => s.clear())
    }

    /// Gives the SQLite connection back, or `None` for a B-tree queue.
    pub fn into_connection(self) -> Option<rusqlite::Connection> {
        match self.store {
            Store::Sqlite(s) => Some(s.into_connection()),
            Store::Btree(_) => None,
        }
    }

    /// Plants a bug (simulation builds only): a merge keeps the operation's
    /// batch id instead of forgetting it. An edit that merges into an
    /// operation whose batch may have committed then travels under that
    /// batch's id, the server answers it as a replay, and
    /// `mark_batch_completed` deletes the newer edit it never received.
    #[cfg(madsim)]
    pub fn plant_merge_keeps_batch_id(&mut self, on: bool) {
        self.merge_keeps_batch_id = on;
    }

    /// Whether a merge keeps the batch id: never, except with the planted
    /// bug.
    fn merge_keeps_batch_id(&self) -> bool {
        #[cfg(madsim)]
        return self.merge_keeps_batch_id;
        #[cfg(not(madsim))]
        return false;
    }

    /// The name errors use for this database.
    pub fn name(&self) -> &Path {
        &self.name
    }

    /// Enqueue with the app's merge table. `op_id` is the id a new
    /// operation gets (client generated). `version` is the entity version
    /// the operation carries.
    pub fn enqueue(
        &mut self,
        op: NewOperation,
        op_id: &str,
        version: i64,
        now_ms: i64,
        policy: MergePolicy,
    ) -> Result<EnqueueOutcome, QueueError> {
        op.validate().map_err(QueueError::Invalid)?;
        let keep = self.merge_keeps_batch_id();
        on_store!(&mut self.store, s => s.enqueue(op, op_id, version, now_ms, policy, keep))
    }

    /// Writes the entity to the local store (bumping its version) and
    /// enqueues its operation carrying that version, in ONE atomic step.
    /// A new entity starts at version 1, an existing one (deleted included:
    /// versions are never reused) goes one up. An edit of a `unique_name`
    /// type that gives up its entity's name (a delete, or a new name)
    /// records the name as released at the new version.
    pub fn write_and_enqueue(
        &mut self,
        op: NewOperation,
        op_id: &str,
        now_ms: i64,
        policy: MergePolicy,
    ) -> Result<Written, QueueError> {
        op.validate().map_err(QueueError::Invalid)?;
        let keep = self.merge_keeps_batch_id();
        on_store!(&mut self.store, s => s.write_and_enqueue(op, op_id, now_ms, policy, keep))
    }

    /// `write_and_enqueue` for several edits made at one instant (an import,
    /// or everything a user did before the app could sync), in order and in
    /// ONE atomic step: all of them or none. The queue ends as it would
    /// after one call per edit.
    pub fn write_and_enqueue_all(
        &mut self,
        edits: Vec<(NewOperation, String)>,
        now_ms: i64,
        policy: MergePolicy,
    ) -> Result<Vec<Written>, QueueError> {
        for (op, _) in &edits {
            op.validate().map_err(QueueError::Invalid)?;
        }
        let keep = self.merge_keeps_batch_id();
        on_store!(&mut self.store, s => s.write_and_enqueue_all(edits, now_ms, policy, keep))
    }

    /// Writes the entity to the local store only; returns the new version.
    /// (The non-atomic path of today's app: enqueue follows separately.)
    pub fn write_local(&mut self, op: &NewOperation) -> Result<i64, QueueError> {
        op.validate().map_err(QueueError::Invalid)?;
        on_store!(&mut self.store, s => s.write_local(op))
    }

    pub fn local_entity(
        &self,
        entity_type: EntityType,
        entity_id: &str,
    ) -> Result<Option<LocalEntity>, QueueError> {
        on_store!(&self.store, s => s.local_entity(entity_type, entity_id))
    }

    /// Every local entity, sorted by (type, id), deleted ones included.
    pub fn local_entities(&self) -> Result<Vec<LocalEntity>, QueueError> {
        on_store!(&self.store, s => s.local_entities())
    }

    pub fn get(&self, op_id: &str) -> Result<Option<SyncOperation>, QueueError> {
        on_store!(&self.store, s => s.get(op_id))
    }

    /// Every operation, oldest first (by timestamp, then `seq`; tests and
    /// reports).
    pub fn all(&self) -> Result<Vec<SyncOperation>, QueueError> {
        on_store!(&self.store, s => s.all())
    }

    /// Up to `limit` ready pending operations, oldest timestamp first.
    pub fn get_pending(&self, limit: usize, now_ms: i64) -> Result<Vec<SyncOperation>, QueueError> {
        on_store!(&self.store, s => s.get_pending(limit, now_ms))
    }

    /// Whether any pending operation is ready (`get_pending(1, now)` without
    /// reading the operation).
    pub fn any_ready(&self, now_ms: i64) -> Result<bool, QueueError> {
        on_store!(&self.store, s => s.any_ready(now_ms))
    }

    /// The plan's `getPendingBatched`: ready pending operations grouped by
    /// type, oldest first within a type, at most `max_per_type` each.
    pub fn get_pending_batched(
        &self,
        select: BatchSelect,
        now_ms: i64,
    ) -> Result<BTreeMap<EntityType, Vec<SyncOperation>>, QueueError> {
        on_store!(&self.store, s => s.get_pending_batched(select, now_ms))
    }

    /// Marks pending operations syncing (records the attempt time and the
    /// batch id), atomically. Ids not pending are left alone.
    pub fn mark_batch_syncing(
        &mut self,
        op_ids: &[String],
        now_ms: i64,
        batch_id: Option<&str>,
    ) -> Result<(), QueueError> {
        on_store!(&mut self.store, s => s.mark_batch_syncing(op_ids, now_ms, batch_id))
    }

    /// `mark_batch_syncing` as a compare-and-set: marks each of `ops`
    /// syncing only if its row is still pending and holds the content it
    /// was read with, atomically, and says per operation whether it did.
    /// The test is the row's `seq`: a merge always moves its row to a new
    /// one (see [`SyncOperation::seq`]), and a cancel or replace removes
    /// the id. A caller that gets `true` may send its copy's `kind`, `data`
    /// and `version` without reading the row again. (Its bookkeeping
    /// fields, such as `last_error`, are still as read.) An operation
    /// listed twice is marked once.
    pub fn mark_batch_syncing_unchanged(
        &mut self,
        ops: &[SyncOperation],
        now_ms: i64,
        batch_id: Option<&str>,
    ) -> Result<Vec<bool>, QueueError> {
        on_store!(&mut self.store, s => s.mark_batch_syncing_unchanged(ops, now_ms, batch_id))
    }

    /// Deletes the given operations if they are still syncing, atomically.
    /// An acknowledged operation of a `unique_name` type also settles the
    /// names its entity gave up at its version or before. Nothing else
    /// deletes a syncing operation, so only an acknowledgement settles.
    pub fn mark_batch_completed(&mut self, op_ids: &[String]) -> Result<(), QueueError> {
        on_store!(&mut self.store, s => s.mark_batch_completed(op_ids))
    }

    /// Failure with penalty: retry count + 1, last error and attempt set;
    /// back to pending, or `failed` when the count reaches max retries.
    /// With `retry_forever`, never `failed`. `batch` says whether the
    /// operations keep their batch id. Ready again after the app's backoff
    /// for the new count (1 s * 2^(n-1), capped).
    pub fn mark_batch_failed(
        &mut self,
        op_ids: &[String],
        error: &str,
        now_ms: i64,
        retry_forever: bool,
        batch: BatchIdAfter,
    ) -> Result<(), QueueError> {
        on_store!(&mut self.store, s => s.mark_batch_failed(op_ids, error, now_ms, retry_forever, batch))
    }

    /// Abort or auth error: back to pending with retry count unchanged and
    /// the attempt time set (the 2 s rule). `batch` says whether the
    /// operations keep their batch id (an abort's outcome is unknown: keep
    /// it, unless the batch is being split into new requests).
    pub fn mark_batch_aborted(
        &mut self,
        op_ids: &[String],
        error: &str,
        now_ms: i64,
        batch: BatchIdAfter,
    ) -> Result<(), QueueError> {
        on_store!(&mut self.store, s => s.mark_batch_aborted(op_ids, error, now_ms, batch))
    }

    /// Hardened: a permanent error on this single operation.
    pub fn mark_quarantined(&mut self, op_id: &str, error: &str) -> Result<(), QueueError> {
        on_store!(&mut self.store, s => s.mark_quarantined(op_id, error))
    }

    /// Run at engine start: every syncing operation back to pending, retry
    /// count and last attempt unchanged. Returns how many.
    pub fn reset_stale_syncing(&mut self) -> Result<u64, QueueError> {
        on_store!(&mut self.store, s => s.reset_stale_syncing())
    }

    /// "Retry failed": failed (and quarantined) back to pending, count 0,
    /// and its batch id forgotten. An operation given up on keeps its last
    /// batch id, but its batch-mates may have committed under that id since;
    /// re-sent under it, it would be answered as a replay and never written.
    pub fn retry_failed(&mut self) -> Result<u64, QueueError> {
        on_store!(&mut self.store, s => s.retry_failed())
    }

    /// Brings every pending operation whose ready time is more than
    /// `max_wait_ms` after `now_ms` in to `now_ms + max_wait_ms` (the
    /// hardened clock guard: such a time was computed on a clock that has
    /// gone back since). Returns how many. O(pending).
    pub fn cap_waits(&mut self, now_ms: i64, max_wait_ms: i64) -> Result<u64, QueueError> {
        let latest_ms = now_ms.saturating_add(max_wait_ms.max(0));
        on_store!(&mut self.store, s => s.ready_by(latest_ms, "cap waits"))
    }

    /// "Sync now": waiting pending operations ready at once.
    pub fn sync_now(&mut self) -> Result<u64, QueueError> {
        on_store!(&mut self.store, s => s.ready_by(i64::MIN, "sync now"))
    }

    /// Deletes failed operations.
    pub fn discard_failed(&mut self) -> Result<u64, QueueError> {
        on_store!(&mut self.store, s => s.discard_failed())
    }

    pub fn stats(&self, now_ms: i64) -> Result<QueueStats, QueueError> {
        on_store!(&self.store, s => s.stats(now_ms))
    }

    /// Operations per status: (pending, syncing, failed). Cheaper than
    /// `stats`, which the simulator cannot afford after every pass.
    pub fn status_counts(&self) -> Result<(u64, u64, u64), QueueError> {
        on_store!(&self.store, s => s.status_counts())
    }

    /// Earliest time a pending operation becomes ready, if any is waiting.
    pub fn next_ready_at_ms(&self) -> Result<Option<i64>, QueueError> {
        on_store!(&self.store, s => s.next_ready_at_ms())
    }

    /// Number of operations not yet completed (pending + syncing + failed).
    pub fn len(&self) -> Result<u64, QueueError> {
        on_store!(&self.store, s => s.len())
    }

    pub fn is_empty(&self) -> Result<bool, QueueError> {
        Ok(self.len()? == 0)
    }

    /// The id and kind of every queued operation (any status) of this
    /// entity, oldest first (by `seq`). Dependency checks only ask what is
    /// queued, so the data is not read.
    pub fn queued_for_entity(
        &self,
        entity_type: EntityType,
        entity_id: &str,
    ) -> Result<Vec<(String, OpKind)>, QueueError> {
        on_store!(&self.store, s => s.queued_for_entity(entity_type, entity_id))
    }

    /// Where the device holds a newer version of this operation's entity
    /// than the operation carries, in one read; `None` when the operation
    /// is gone.
    pub fn newer_version(&self, op_id: &str) -> Result<Option<NewerVersion>, QueueError> {
        on_store!(&self.store, s => s.newer_version(op_id))
    }

    /// Whether the device holds a newer version of this operation's entity
    /// than the operation carries (`newer_version`, either place); `None`
    /// when the operation is gone.
    pub fn superseded(&self, op_id: &str) -> Result<Option<bool>, QueueError> {
        Ok(self.newer_version(op_id)?.map(|n| n.queued || n.local))
    }

    /// The other entities of `entity_type` that gave up `name` locally
    /// whose release is not settled (no operation carrying it acknowledged
    /// yet) and that still have an operation on its way (pending or
    /// syncing), in id order: the server may still hold the name for one
    /// of them, so an upsert of `entity_id` taking it would fail the unique
    /// constraint until their operations land. A release whose entity has
    /// nothing left on its way (its operations discarded by the user, or
    /// quarantined) holds no one back: waiting for it would be waiting
    /// forever.
    pub fn name_releasers(
        &self,
        entity_type: EntityType,
        name: &str,
        entity_id: &str,
    ) -> Result<Vec<String>, QueueError> {
        on_store!(&self.store, s => s.name_releasers(entity_type, name, entity_id))
    }

    /// An operation's retry count; `None` when it is gone.
    pub fn retry_count(&self, op_id: &str) -> Result<Option<u32>, QueueError> {
        on_store!(&self.store, s => s.retry_count(op_id))
    }

    /// Deletes one operation that is not in flight (hardened: an
    /// operation superseded by a newer one of the same entity, completed
    /// locally). A `syncing` one is left alone and `false` returned: its
    /// request's outcome decides it, and only `mark_batch_completed`
    /// deletes a syncing operation, which is what settles released names.
    /// (The engine removes only operations it has just read as pending or
    /// failed; a check in `remove` found no syncing one in 300 seeds of
    /// each scenario.)
    pub fn remove(&mut self, op_id: &str) -> Result<bool, QueueError> {
        on_store!(&mut self.store, s => s.remove(op_id))
    }

    /// A persistent counter (e.g. for batch ids): returns the next value,
    /// 1 the first time.
    pub fn next_sequence(&mut self, name: &str) -> Result<i64, QueueError> {
        on_store!(&mut self.store, s => s.next_sequence(name))
    }

    /// Hardened exactly-once: the oldest ready pending batch that was sent
    /// with an id and whose outcome is unknown (an abort kept its id), with
    /// all its pending operations (oldest first), so it can be re-sent
    /// under the same id.
    pub fn unresolved_batch(
        &self,
        now_ms: i64,
    ) -> Result<Option<(String, Vec<SyncOperation>)>, QueueError> {
        on_store!(&self.store, s => s.unresolved_batch(now_ms))
    }

    /// Forgets the batch id of these operations (their next send is a new
    /// request).
    pub fn clear_batch_id(&mut self, op_ids: &[String]) -> Result<(), QueueError> {
        on_store!(&mut self.store, s => s.clear_batch_id(op_ids))
    }

    /// Overrides when these pending operations become ready (hardened
    /// jittered backoff): each (id, time) pair in order, atomically.
    pub fn set_ready_at(&mut self, ready: &[(String, i64)]) -> Result<(), QueueError> {
        on_store!(&mut self.store, s => s.set_ready_at(ready))
    }

    /// Whether this operation is pending, ready at `now_ms`, and its entity
    /// has no operation in flight (so it may join a batch).
    pub fn is_ready(&self, op_id: &str, now_ms: i64) -> Result<bool, QueueError> {
        on_store!(&self.store, s => s.is_ready(op_id, now_ms))
    }
}
