//! `SyncQueue`: the durable local queue on SQLite, with the local entity
//! store in the same database so that "write the entity locally and enqueue
//! its operation" is one transaction.
//!
//! API STUB: signatures and semantics are fixed; bodies are being written.

use crate::model::{
    EntityType, InvalidOperation, MergePolicy, NewOperation, OpKind, SyncOperation,
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

/// The durable queue. Not `Sync`: share it behind a mutex and never hold
/// that mutex across an `.await` (a kill drops the future mid-transaction).
pub struct SyncQueue {
    _private: (),
}

#[allow(unused_variables)]
impl SyncQueue {
    /// Opens (creating if needed) a queue database file.
    pub fn open(path: &Path) -> Result<SyncQueue, QueueError> {
        todo!()
    }

    /// A queue in a fresh in-memory database.
    pub fn open_in_memory() -> Result<SyncQueue, QueueError> {
        todo!()
    }

    /// Wraps an existing connection (the simulator's disk owns one), creating
    /// the schema if missing. `name` is what errors call the database.
    pub fn from_connection(
        conn: rusqlite::Connection,
        name: &str,
    ) -> Result<SyncQueue, QueueError> {
        todo!()
    }

    /// Gives the connection back (the simulator keeps it across an app kill).
    pub fn into_connection(self) -> rusqlite::Connection {
        todo!()
    }

    /// Enqueue with the app's merge table, in one transaction. `op_id` is the
    /// id a new operation gets (client generated). `version` is the entity
    /// version the operation carries.
    pub fn enqueue(
        &mut self,
        op: NewOperation,
        op_id: &str,
        version: i64,
        now_ms: i64,
        policy: MergePolicy,
    ) -> Result<EnqueueOutcome, QueueError> {
        todo!()
    }

    /// Writes the entity to the local store (bumping its version) and
    /// enqueues its operation carrying that version, in ONE transaction.
    pub fn write_and_enqueue(
        &mut self,
        op: NewOperation,
        op_id: &str,
        now_ms: i64,
        policy: MergePolicy,
    ) -> Result<EnqueueOutcome, QueueError> {
        todo!()
    }

    /// Writes the entity to the local store only; returns the new version.
    /// (The non-atomic path of today's app: enqueue follows separately.)
    pub fn write_local(&mut self, op: &NewOperation) -> Result<i64, QueueError> {
        todo!()
    }

    pub fn local_entity(
        &self,
        entity_type: EntityType,
        entity_id: &str,
    ) -> Result<Option<LocalEntity>, QueueError> {
        todo!()
    }

    /// Every local entity, sorted by (type, id), deleted ones included.
    pub fn local_entities(&self) -> Result<Vec<LocalEntity>, QueueError> {
        todo!()
    }

    pub fn get(&self, op_id: &str) -> Result<Option<SyncOperation>, QueueError> {
        todo!()
    }

    /// Every operation, oldest first (tests and reports).
    pub fn all(&self) -> Result<Vec<SyncOperation>, QueueError> {
        todo!()
    }

    /// Up to `limit` ready pending operations, oldest timestamp first.
    pub fn get_pending(&self, limit: usize, now_ms: i64) -> Result<Vec<SyncOperation>, QueueError> {
        todo!()
    }

    /// The plan's `getPendingBatched`: ready pending operations grouped by
    /// type, oldest first within a type, at most `max_per_type` each.
    pub fn get_pending_batched(
        &self,
        select: BatchSelect,
        now_ms: i64,
    ) -> Result<BTreeMap<EntityType, Vec<SyncOperation>>, QueueError> {
        todo!()
    }

    /// Marks pending operations syncing (records the attempt time and the
    /// batch id), atomically. Ids not pending are left alone.
    pub fn mark_batch_syncing(
        &mut self,
        op_ids: &[String],
        now_ms: i64,
        batch_id: Option<&str>,
    ) -> Result<(), QueueError> {
        todo!()
    }

    /// Deletes the given operations if they are still syncing, atomically.
    pub fn mark_batch_completed(&mut self, op_ids: &[String]) -> Result<(), QueueError> {
        todo!()
    }

    /// Failure with penalty: retry count + 1, last error and attempt set;
    /// back to pending, or `failed` when the count reaches max retries.
    /// With `retry_forever`, never `failed`.
    pub fn mark_batch_failed(
        &mut self,
        op_ids: &[String],
        error: &str,
        now_ms: i64,
        retry_forever: bool,
    ) -> Result<(), QueueError> {
        todo!()
    }

    /// Abort or auth error: back to pending with retry count unchanged and
    /// the attempt time set (the 2 s rule).
    pub fn mark_batch_aborted(
        &mut self,
        op_ids: &[String],
        error: &str,
        now_ms: i64,
    ) -> Result<(), QueueError> {
        todo!()
    }

    /// Hardened: a permanent error on this single operation.
    pub fn mark_quarantined(&mut self, op_id: &str, error: &str) -> Result<(), QueueError> {
        todo!()
    }

    /// Run at engine start: every syncing operation back to pending, retry
    /// count and last attempt unchanged. Returns how many.
    pub fn reset_stale_syncing(&mut self) -> Result<u64, QueueError> {
        todo!()
    }

    /// "Retry failed": failed (and quarantined) back to pending, count 0.
    pub fn retry_failed(&mut self) -> Result<u64, QueueError> {
        todo!()
    }

    /// "Sync now": waiting pending operations ready at once.
    pub fn sync_now(&mut self) -> Result<u64, QueueError> {
        todo!()
    }

    /// Deletes failed operations.
    pub fn discard_failed(&mut self) -> Result<u64, QueueError> {
        todo!()
    }

    pub fn stats(&self, now_ms: i64) -> Result<QueueStats, QueueError> {
        todo!()
    }

    /// Earliest time a pending operation becomes ready, if any is waiting.
    pub fn next_ready_at_ms(&self) -> Result<Option<i64>, QueueError> {
        todo!()
    }

    /// Number of operations not yet completed (pending + syncing + failed).
    pub fn len(&self) -> Result<u64, QueueError> {
        todo!()
    }

    pub fn is_empty(&self) -> Result<bool, QueueError> {
        Ok(self.len()? == 0)
    }

    /// Hardened: ids of operations (other than `exclude`) that are pending
    /// or syncing for this entity, oldest first.
    pub fn ops_for_entity(
        &self,
        entity_type: EntityType,
        entity_id: &str,
    ) -> Result<Vec<SyncOperation>, QueueError> {
        todo!()
    }

    /// Deletes one operation (hardened: a failed operation superseded by a
    /// newer one of the same entity).
    pub fn remove(&mut self, op_id: &str) -> Result<bool, QueueError> {
        todo!()
    }

    /// A persistent counter (e.g. for batch ids): returns the next value.
    pub fn next_sequence(&mut self, name: &str) -> Result<i64, QueueError> {
        todo!()
    }

    /// Hardened exactly-once: the oldest ready pending batch that was sent
    /// with an id and whose outcome is unknown (an abort kept its id), with
    /// all its pending operations, so it can be re-sent under the same id.
    pub fn unresolved_batch(
        &self,
        now_ms: i64,
    ) -> Result<Option<(String, Vec<SyncOperation>)>, QueueError> {
        todo!()
    }

    /// Forgets the batch id of these operations (their next send is a new
    /// request).
    pub fn clear_batch_id(&mut self, op_ids: &[String]) -> Result<(), QueueError> {
        todo!()
    }

    /// Overrides when these pending operations become ready (hardened
    /// jittered backoff).
    pub fn set_ready_at(&mut self, op_ids: &[String], ready_at_ms: i64) -> Result<(), QueueError> {
        todo!()
    }
}
