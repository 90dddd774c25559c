//! The SQLite store behind [`super::SyncQueue`]: the durable queue and
//! the local entity store in one database, so that "write the entity
//! locally and enqueue its operation" is one transaction.
//!
//! Schema (version 1, marked with `PRAGMA application_id` and `user_version`
//! so a foreign or corrupt file is refused with its name):
//! - `ops`: one row per queued operation, keyed by `seq` (the rowid: the
//!   insertion order, moved to the back by a merge; it breaks timestamp
//!   ties); `ready_at_ms` is derived from `retry_count` and
//!   `last_attempt_ms` by the app's rules (or set by the hardened engine's
//!   jittered backoff) so readiness is an indexed range, not a scan.
//! - `entities`: the local store (the device's truth).
//! - `sequences`: persistent counters (batch ids).
//! - `released_names`: names of a `unique_name` type that an entity gave up
//!   locally (deleted, or renamed) at a version the server may not have
//!   yet; a row goes once an operation of that entity at that version or
//!   later is acknowledged. Another entity that takes the name waits for
//!   it (`name_releasers`).
//!
//! Cost: every batch method touches only the rows it names (primary key);
//! `get_pending_batched` probes which types have pending operations (one
//! seek each), then walks the pending `(entity_type, timestamp_ms, seq)`
//! index once per such type and stops after `max_per_type` hits, so taking
//! a batch is O(batch), not O(queue), while operations are ready.
//!
//! The methods' contracts are documented once, on `SyncQueue`; validation
//! and the planted bug's switch live there too, so a method here sees only
//! valid operations.

use super::{
    merge_outcome, BatchIdAfter, BatchSelect, EnqueueOutcome, LocalEntity, NewerVersion,
    QueueError, QueueStats, Written,
};
use crate::model::{
    app_ready_at_ms, EntityType, MergeOutcome, MergePolicy, NewOperation, OpKind, OpStatus,
    SyncOperation, DEFAULT_MAX_RETRIES,
};
use rusqlite::OptionalExtension;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// `PRAGMA application_id` of a sync queue database ("SYNQ").
const APPLICATION_ID: i32 = 0x5359_4e51;
const SCHEMA_VERSION: i32 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ops (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    version INTEGER NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    status TEXT NOT NULL,
    retry_count INTEGER NOT NULL,
    max_retries INTEGER NOT NULL,
    last_error TEXT,
    last_attempt_ms INTEGER,
    created_at_ms INTEGER NOT NULL,
    batch_id TEXT,
    quarantined INTEGER NOT NULL DEFAULT 0,
    ready_at_ms INTEGER NOT NULL
);
-- Only pending rows: batch selection reads nothing else, and an operation
-- leaving `pending` is one index delete instead of a delete and an insert
-- (2% of a sweep's instructions, 3% of a 10,000-operation run). Replaces
-- the full `ops_by_type` of databases written before it.
DROP INDEX IF EXISTS ops_by_type;
CREATE INDEX IF NOT EXISTS ops_pending_by_type ON ops (entity_type, timestamp_ms, seq)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS ops_by_time ON ops (status, timestamp_ms, seq);
CREATE INDEX IF NOT EXISTS ops_by_entity ON ops (entity_type, entity_id, seq);
CREATE INDEX IF NOT EXISTS ops_by_batch ON ops (batch_id) WHERE batch_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS entities (
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    data TEXT NOT NULL,
    version INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    PRIMARY KEY (entity_type, entity_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sequences (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
-- Keyed by entity, so an acknowledgement settles its entity's rows with
-- one seek; looked up by name through the second index.
CREATE TABLE IF NOT EXISTS released_names (
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (entity_type, entity_id, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS released_names_by_name ON released_names (entity_type, name);
";

/// An acknowledged operation (`mark_batch_completed` deletes it while it is
/// syncing) settles the names its entity gave up at its version or before:
/// the server now has that version or a newer one. A trigger, so that no
/// path that completes an operation can forget it; it fires only for the
/// types with a unique name (`EntityType::unique_name`), so the others pay
/// nothing. It rests on one rule the schema cannot state: nothing else
/// deletes a syncing operation (`remove` refuses to; merges and discards
/// take pending or failed ones; `clear` empties `released_names` too).
static RELEASED_NAMES_SETTLED: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let types: Vec<String> = EntityType::ALL
        .into_iter()
        .filter(|t| t.unique_name())
        .map(|t| format!("'{}'", t.as_str()))
        .collect();
    format!(
        "CREATE TRIGGER IF NOT EXISTS released_names_settled AFTER DELETE ON ops \
         WHEN old.status = 'syncing' AND old.entity_type IN ({}) \
         BEGIN DELETE FROM released_names WHERE entity_type = old.entity_type \
         AND entity_id = old.entity_id AND version <= old.version; END;",
        types.join(", ")
    )
});

/// `SELECT <every op column> FROM ops <rest>` as one literal: a hot read
/// formats no string per call (the text is the statement cache's key).
/// `op_from_row` reads the columns in this order.
macro_rules! select_ops {
    ($rest:literal) => {
        concat!(
            "SELECT id, entity_type, entity_id, kind, data, version, timestamp_ms, status, \
             retry_count, max_retries, last_error, last_attempt_ms, created_at_ms, batch_id, \
             quarantined, seq FROM ops ",
            $rest
        )
    };
}

/// The queue on one SQLite connection.
pub(super) struct SqliteQueue {
    conn: rusqlite::Connection,
}

fn sql(context: &'static str) -> impl FnOnce(rusqlite::Error) -> QueueError {
    move |source| QueueError::Sqlite { context, source }
}

/// Reads one `ops` row selected with `select_ops!`.
/// A text column holding a value this build does not know (column `i`).
fn unknown(i: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        i,
        rusqlite::types::Type::Text,
        format!("unknown {what}").into(),
    )
}

fn op_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SyncOperation> {
    let t: String = row.get(1)?;
    let kind: String = row.get(3)?;
    let data: String = row.get(4)?;
    let status: String = row.get(7)?;
    Ok(SyncOperation {
        id: row.get(0)?,
        entity_type: EntityType::parse(&t).ok_or_else(|| unknown(1, "entity type"))?,
        entity_id: row.get(2)?,
        kind: OpKind::parse(&kind).ok_or_else(|| unknown(3, "kind"))?,
        data: serde_json::from_str(&data).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, e.into())
        })?,
        version: row.get(5)?,
        timestamp_ms: row.get(6)?,
        status: OpStatus::parse(&status).ok_or_else(|| unknown(7, "status"))?,
        retry_count: row.get(8)?,
        max_retries: row.get(9)?,
        last_error: row.get(10)?,
        last_attempt_ms: row.get(11)?,
        created_at_ms: row.get(12)?,
        batch_id: row.get(13)?,
        quarantined: row.get::<_, i64>(14)? != 0,
        seq: row.get(15)?,
    })
}

/// For each type (in `EntityType::ALL` order), whether it has a pending
/// operation, ready or not: one index seek per type, in one statement.
static ANY_PENDING_PER_TYPE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let probes = EntityType::ALL.map(|t| {
        format!(
            "EXISTS (SELECT 1 FROM ops INDEXED BY ops_pending_by_type \
             WHERE status = 'pending' AND entity_type = '{}')",
            t.as_str()
        )
    });
    format!("SELECT {}", probes.join(", "))
});

/// The id and kind (as stored) of the operation an edit may merge into.
type Mergeable = (String, String);

/// `value` as compact JSON text, the same text as its `Display` (what
/// `to_string()` gives), written straight into a buffer: `Display` goes
/// through a formatter adapter and cost more than twice as much per edit.
/// Serializing a `Value` cannot fail; the fallback is only there so that
/// nothing here can panic.
fn json_text(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| value.to_string())
}

/// Executes a statement through the connection's statement cache.
fn exec<P: rusqlite::Params>(
    conn: &rusqlite::Connection,
    q: &str,
    params: P,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(q).and_then(|mut st| st.execute(params))
}

/// Reads one row through the connection's statement cache (a plain
/// `Connection::query_row` compiles its SQL on every call).
fn query_row<T, P: rusqlite::Params>(
    conn: &rusqlite::Connection,
    q: &str,
    params: P,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached(q)
        .and_then(|mut st| st.query_row(params, f))
}

/// A transaction whose BEGIN, COMMIT and ROLLBACK go through the statement
/// cache: rusqlite's `Transaction` compiles them on every call (2.5% of a
/// simulation's instructions under callgrind). Dropped without `commit`, it
/// rolls back (an error half way leaves nothing behind).
struct Tx<'c> {
    conn: &'c rusqlite::Connection,
    open: bool,
}

impl<'c> Tx<'c> {
    fn begin(conn: &'c rusqlite::Connection) -> rusqlite::Result<Tx<'c>> {
        exec(conn, "BEGIN", [])?;
        Ok(Tx { conn, open: true })
    }

    fn commit(mut self) -> rusqlite::Result<()> {
        exec(self.conn, "COMMIT", [])?;
        self.open = false;
        Ok(())
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            // Nothing to report to: the caller is already returning the
            // error that left the transaction open. A failed ROLLBACK leaves
            // SQLite's own automatic rollback.
            let _ = exec(self.conn, "ROLLBACK", []);
        }
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = rusqlite::Connection;
    fn deref(&self) -> &rusqlite::Connection {
        self.conn
    }
}

impl SqliteQueue {
    /// Deletes every operation, local entity and sequence, in one
    /// transaction (the app's sign-out). The schema and the connection stay,
    /// and the queue then behaves exactly as a fresh one: `seq` is the rowid
    /// and starts again at 1 in an empty table, and no answer depends on
    /// where rows sit in pages (`tests/queue_model.rs` holds this).
    pub(super) fn clear(&mut self) -> Result<(), QueueError> {
        let tx = Tx::begin(&self.conn).map_err(sql("clear"))?;
        for q in [
            "DELETE FROM ops",
            "DELETE FROM entities",
            "DELETE FROM sequences",
            "DELETE FROM released_names",
        ] {
            exec(&tx, q, []).map_err(sql("clear"))?;
        }
        tx.commit().map_err(sql("clear"))
    }

    pub(super) fn into_connection(self) -> rusqlite::Connection {
        self.conn
    }

    /// Sets up `conn` as a queue: creates the schema of a new database,
    /// refuses a foreign or corrupt one (naming it by `name`).
    pub(super) fn init(conn: rusqlite::Connection, name: &Path) -> Result<SqliteQueue, QueueError> {
        let corrupt = |detail: String| QueueError::Corrupt {
            path: name.to_path_buf(),
            detail,
        };
        // Reading the header is the first access: a non-SQLite file fails
        // here ("file is not a database").
        let app_id: i32 = conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(|e| corrupt(e.to_string()))?;
        let user_version: i32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| corrupt(e.to_string()))?;
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(|e| corrupt(e.to_string()))?;
        if app_id == 0 && tables == 0 {
            // A new database: ours to set up.
            conn.execute_batch(&format!(
                "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION};"
            ))
            .map_err(|e| corrupt(e.to_string()))?;
        } else if app_id != APPLICATION_ID {
            return Err(corrupt(format!(
                "application_id is {app_id:#x}, not a sync queue ({APPLICATION_ID:#x}); {tables} foreign schema objects"
            )));
        } else if user_version != SCHEMA_VERSION {
            return Err(corrupt(format!(
                "schema version {user_version}, this build reads {SCHEMA_VERSION}"
            )));
        }
        conn.execute_batch(SCHEMA)
            .and_then(|()| conn.execute_batch(&RELEASED_NAMES_SETTLED))
            .map_err(|e| corrupt(e.to_string()))?;
        let ok: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| corrupt(e.to_string()))?;
        if ok != "ok" {
            return Err(corrupt(ok));
        }
        // Every hot statement goes through the statement cache. SQLite (3.47+,
        // bundled with STAT4) marks a statement whose plan could depend on a
        // bound value, `LIMIT ?` included, and recompiles it on every rebind;
        // the query planner stability guarantee turns that off, so a cached
        // statement stays compiled (it was 30% of a simulation's time). Our
        // plans are pinned with INDEXED BY anyway.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )
        .map_err(|e| corrupt(e.to_string()))?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(SqliteQueue { conn })
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
        let tx = Tx::begin(&self.conn).map_err(sql("begin enqueue"))?;
        let data = json_text(&op.data);
        let existing = Self::find_mergeable(&tx, &op, policy)?;
        let out = Self::enqueue_tx(
            &tx, op, &data, op_id, version, now_ms, policy, existing, keep_batch,
        )?;
        tx.commit().map_err(sql("commit enqueue"))?;
        Ok(out)
    }

    /// The id and kind of the newest mergeable operation of `op`'s entity
    /// (at most one exists under PendingOrFailed; under PendingOnly the
    /// newest pending one).
    fn find_mergeable(
        tx: &rusqlite::Connection,
        op: &NewOperation,
        policy: MergePolicy,
    ) -> Result<Option<Mergeable>, QueueError> {
        let find = match policy {
            MergePolicy::PendingOnly => {
                "SELECT id, kind FROM ops WHERE entity_type = ?1 AND entity_id = ?2 \
                 AND status = 'pending' ORDER BY seq DESC LIMIT 1"
            }
            MergePolicy::PendingOrFailed => {
                "SELECT id, kind FROM ops WHERE entity_type = ?1 AND entity_id = ?2 \
                 AND status IN ('pending', 'failed') ORDER BY seq DESC LIMIT 1"
            }
        };
        query_row(
            tx,
            find,
            rusqlite::params![op.entity_type.as_str(), op.entity_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(sql("find mergeable"))
    }

    /// `find_mergeable` and `local_version` in one statement (the write path
    /// runs both for every edit; a statement's fixed cost is a fair share of
    /// such small ones). The row of `max(seq)` is the newest: SQLite takes a
    /// bare column of a `max()` aggregate from the row holding the maximum,
    /// and an aggregate without GROUP BY yields one row even when nothing
    /// matches (then the id and kind are NULL).
    fn local_version_and_mergeable(
        tx: &rusqlite::Connection,
        op: &NewOperation,
        policy: MergePolicy,
    ) -> Result<(Option<i64>, Option<Mergeable>), QueueError> {
        let find = match policy {
            MergePolicy::PendingOnly => {
                "SELECT (SELECT version FROM entities WHERE entity_type = ?1 AND entity_id = ?2), \
                 max(seq), id, kind FROM ops WHERE entity_type = ?1 AND entity_id = ?2 \
                 AND status = 'pending'"
            }
            MergePolicy::PendingOrFailed => {
                "SELECT (SELECT version FROM entities WHERE entity_type = ?1 AND entity_id = ?2), \
                 max(seq), id, kind FROM ops WHERE entity_type = ?1 AND entity_id = ?2 \
                 AND status IN ('pending', 'failed')"
            }
        };
        query_row(
            tx,
            find,
            rusqlite::params![op.entity_type.as_str(), op.entity_id],
            |r| {
                let id: Option<String> = r.get(2)?;
                let kind: Option<String> = r.get(3)?;
                Ok((r.get(0)?, id.zip(kind)))
            },
        )
        .map_err(sql("read local version and mergeable"))
    }

    /// `data` is `op.data` as JSON text (the caller's, so that a local write
    /// and its enqueue serialize it once); `existing` is what
    /// `find_mergeable` said; `keep_batch` is the planted bug's switch
    /// (always false outside simulation builds).
    #[allow(clippy::too_many_arguments)]
    fn enqueue_tx(
        tx: &rusqlite::Connection,
        op: NewOperation,
        data: &str,
        op_id: &str,
        version: i64,
        now_ms: i64,
        policy: MergePolicy,
        existing: Option<Mergeable>,
        keep_batch: bool,
    ) -> Result<EnqueueOutcome, QueueError> {
        // `seq` is the rowid: left out, SQLite gives the row one more than
        // the largest seq, the same number a merge moves its row to.
        let insert = |tx: &rusqlite::Connection, id: &str| -> Result<(), QueueError> {
            exec(
                tx,
                "INSERT INTO ops (id, entity_type, entity_id, kind, data, version, timestamp_ms, \
                 status, retry_count, max_retries, last_error, last_attempt_ms, created_at_ms, \
                 batch_id, quarantined, ready_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', 0, ?8, NULL, NULL, ?7, NULL, 0, ?9)",
                rusqlite::params![
                    id,
                    op.entity_type.as_str(),
                    op.entity_id,
                    op.kind.as_str(),
                    data,
                    version,
                    now_ms,
                    DEFAULT_MAX_RETRIES,
                    app_ready_at_ms(0, None),
                ],
            )
            .map_err(sql("insert op"))?;
            Ok(())
        };
        let Some((old_id, old_kind)) = existing else {
            insert(tx, op_id)?;
            return Ok(EnqueueOutcome::Inserted {
                op_id: op_id.to_string(),
            });
        };
        let old_kind = OpKind::parse(&old_kind).unwrap_or(OpKind::Update);
        match merge_outcome(old_kind, op.kind, policy) {
            MergeOutcome::Merge(kind) => {
                // Keeps id and created-at; new data, version and timestamp
                // (back of the queue); ready at once; a revived failed or
                // quarantined operation is pending again; its old batch id
                // is forgotten (this is a new request's content).
                let kept_batch: Option<String> = if keep_batch {
                    query_row(
                        tx,
                        "SELECT batch_id FROM ops WHERE id = ?1",
                        [&old_id],
                        |r| r.get(0),
                    )
                    .map_err(sql("planted: read batch id"))?
                } else {
                    None
                };
                exec(
                    tx,
                    "UPDATE ops SET kind = ?2, data = ?3, version = ?4, timestamp_ms = ?5, \
                     seq = (SELECT MAX(seq) + 1 FROM ops), \
                     status = 'pending', retry_count = 0, last_error = NULL, last_attempt_ms = NULL, \
                     batch_id = NULL, quarantined = 0, ready_at_ms = ?6 WHERE id = ?1",
                    rusqlite::params![
                        old_id,
                        kind.as_str(),
                        data,
                        version,
                        now_ms,
                        app_ready_at_ms(0, None)
                    ],
                )
                .map_err(sql("merge op"))?;
                if let Some(batch) = kept_batch {
                    exec(
                        tx,
                        "UPDATE ops SET batch_id = ?2 WHERE id = ?1",
                        [&old_id, &batch],
                    )
                    .map_err(sql("planted: keep batch id"))?;
                }
                Ok(EnqueueOutcome::Merged {
                    op_id: old_id,
                    kind,
                })
            }
            MergeOutcome::RemoveBoth => {
                exec(tx, "DELETE FROM ops WHERE id = ?1", [&old_id]).map_err(sql("cancel op"))?;
                Ok(EnqueueOutcome::Cancelled {
                    removed_op_id: old_id,
                })
            }
            MergeOutcome::Replace => {
                exec(tx, "DELETE FROM ops WHERE id = ?1", [&old_id]).map_err(sql("replace op"))?;
                insert(tx, op_id)?;
                Ok(EnqueueOutcome::Replaced {
                    removed_op_id: old_id,
                    op_id: op_id.to_string(),
                })
            }
        }
    }

    /// The local version of `op`'s entity, if it has one.
    fn local_version(
        tx: &rusqlite::Connection,
        op: &NewOperation,
    ) -> Result<Option<i64>, QueueError> {
        query_row(
            tx,
            "SELECT version FROM entities WHERE entity_type = ?1 AND entity_id = ?2",
            rusqlite::params![op.entity_type.as_str(), op.entity_id],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql("read local version"))
    }

    /// `data` is `op.data` as JSON text; a delete stores `null`. `prev` is
    /// the entity's local version as read in this transaction.
    ///
    /// A new entity starts at version 1, an existing one (deleted included:
    /// versions are never reused) goes one up. Read, then write: an
    /// `UPSERT ... RETURNING` was 40% dearer per call under callgrind
    /// (SQLite stages RETURNING rows in an ephemeral table).
    fn write_local_tx(
        tx: &rusqlite::Connection,
        op: &NewOperation,
        data: &str,
        prev: Option<i64>,
    ) -> Result<i64, QueueError> {
        let deleted = op.kind.is_delete();
        let data = if deleted { "null" } else { data };
        let version = prev.unwrap_or(0) + 1;
        // The read said whether the row exists: a plain UPDATE or INSERT,
        // not an UPSERT, which first tries the insert.
        let write = if prev.is_some() {
            "UPDATE entities SET data = ?3, version = ?4, deleted = ?5 \
             WHERE entity_type = ?1 AND entity_id = ?2"
        } else {
            "INSERT INTO entities (entity_type, entity_id, data, version, deleted) \
             VALUES (?1, ?2, ?3, ?4, ?5)"
        };
        if prev.is_some() && op.entity_type.unique_name() {
            Self::record_release(tx, op, version)?;
        }
        exec(
            tx,
            write,
            rusqlite::params![
                op.entity_type.as_str(),
                op.entity_id,
                data,
                version,
                deleted
            ],
        )
        .map_err(sql("write local entity"))?;
        Ok(version)
    }

    /// Before an existing entity of a `unique_name` type is overwritten:
    /// if the edit gives up its name (a delete, or a new name), records the
    /// name as released at `version`, the version whose arrival on the
    /// server frees it. A name given up twice keeps the later version.
    fn record_release(
        tx: &rusqlite::Connection,
        op: &NewOperation,
        version: i64,
    ) -> Result<(), QueueError> {
        // Only a JSON string is a name: `json_extract` alone gives a number
        // as an integer, which then failed to read as text and made every
        // later write of the entity fail ("read local name").
        let old: Option<String> = query_row(
            tx,
            "SELECT CASE WHEN json_type(data, '$.name') = 'text' \
             THEN json_extract(data, '$.name') END FROM entities \
             WHERE entity_type = ?1 AND entity_id = ?2",
            rusqlite::params![op.entity_type.as_str(), op.entity_id],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql("read local name"))?
        .flatten();
        let Some(old) = old else {
            return Ok(());
        };
        let kept =
            !op.kind.is_delete() && op.data.get("name").and_then(Value::as_str) == Some(&old);
        if kept {
            return Ok(());
        }
        exec(
            tx,
            "INSERT INTO released_names (entity_type, entity_id, name, version) \
             VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (entity_type, entity_id, name) DO UPDATE SET version = excluded.version",
            rusqlite::params![op.entity_type.as_str(), op.entity_id, old, version],
        )
        .map_err(sql("record released name"))?;
        Ok(())
    }

    /// `write_and_enqueue` inside the caller's transaction.
    fn write_and_enqueue_tx(
        tx: &rusqlite::Connection,
        op: NewOperation,
        op_id: &str,
        now_ms: i64,
        policy: MergePolicy,
        keep_batch: bool,
    ) -> Result<Written, QueueError> {
        // Both reads first: the local write does not touch `ops`.
        let (prev, existing) = Self::local_version_and_mergeable(tx, &op, policy)?;
        let data = json_text(&op.data);
        let version = Self::write_local_tx(tx, &op, &data, prev)?;
        let outcome = Self::enqueue_tx(
            tx, op, &data, op_id, version, now_ms, policy, existing, keep_batch,
        )?;
        Ok(Written { outcome, version })
    }

    pub(super) fn write_and_enqueue(
        &mut self,
        op: NewOperation,
        op_id: &str,
        now_ms: i64,
        policy: MergePolicy,
        keep_batch: bool,
    ) -> Result<Written, QueueError> {
        let tx = Tx::begin(&self.conn).map_err(sql("begin write"))?;
        let written = Self::write_and_enqueue_tx(&tx, op, op_id, now_ms, policy, keep_batch)?;
        tx.commit().map_err(sql("commit write"))?;
        Ok(written)
    }

    /// One commit instead of one per edit keeps a 10,000-edit import cheap
    /// (each page is journaled once).
    pub(super) fn write_and_enqueue_all(
        &mut self,
        edits: Vec<(NewOperation, String)>,
        now_ms: i64,
        policy: MergePolicy,
        keep_batch: bool,
    ) -> Result<Vec<Written>, QueueError> {
        let tx = Tx::begin(&self.conn).map_err(sql("begin write"))?;
        let mut out = Vec::with_capacity(edits.len());
        for (op, op_id) in edits {
            out.push(Self::write_and_enqueue_tx(
                &tx, op, &op_id, now_ms, policy, keep_batch,
            )?);
        }
        tx.commit().map_err(sql("commit write"))?;
        Ok(out)
    }

    pub(super) fn write_local(&mut self, op: &NewOperation) -> Result<i64, QueueError> {
        let tx = Tx::begin(&self.conn).map_err(sql("begin local write"))?;
        let prev = Self::local_version(&tx, op)?;
        let v = Self::write_local_tx(&tx, op, &json_text(&op.data), prev)?;
        tx.commit().map_err(sql("commit local write"))?;
        Ok(v)
    }

    fn entity_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<LocalEntity> {
        let t: String = row.get(0)?;
        let data: String = row.get(2)?;
        Ok(LocalEntity {
            entity_type: EntityType::parse(&t).ok_or_else(|| unknown(0, "entity type"))?,
            entity_id: row.get(1)?,
            data: serde_json::from_str(&data).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, e.into())
            })?,
            version: row.get(3)?,
            deleted: row.get::<_, i64>(4)? != 0,
        })
    }

    pub(super) fn local_entity(
        &self,
        entity_type: EntityType,
        entity_id: &str,
    ) -> Result<Option<LocalEntity>, QueueError> {
        query_row(
            &self.conn,
            "SELECT entity_type, entity_id, data, version, deleted FROM entities \
                 WHERE entity_type = ?1 AND entity_id = ?2",
            rusqlite::params![entity_type.as_str(), entity_id],
            Self::entity_from_row,
        )
        .optional()
        .map_err(sql("read local entity"))
    }

    /// Every local entity, sorted by (type, id), deleted ones included.
    pub(super) fn local_entities(&self) -> Result<Vec<LocalEntity>, QueueError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT entity_type, entity_id, data, version, deleted FROM entities \
                 ORDER BY entity_type, entity_id",
            )
            .map_err(sql("list local entities"))?;
        let rows = stmt
            .query_map([], Self::entity_from_row)
            .map_err(sql("list local entities"))?;
        let mut out: Vec<LocalEntity> = rows
            .collect::<Result<_, _>>()
            .map_err(sql("list local entities"))?;
        // Sort by the enum's order, not the text's.
        out.sort_by(|a, b| (a.entity_type, &a.entity_id).cmp(&(b.entity_type, &b.entity_id)));
        Ok(out)
    }

    /// Runs `query`, a `select_ops!` statement.
    fn query_ops(
        &self,
        query: &str,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<SyncOperation>, QueueError> {
        let mut stmt = self.conn.prepare_cached(query).map_err(sql("query ops"))?;
        let rows = stmt
            .query_map(params, op_from_row)
            .map_err(sql("query ops"))?;
        rows.collect::<Result<_, _>>().map_err(sql("read ops"))
    }

    pub(super) fn get(&self, op_id: &str) -> Result<Option<SyncOperation>, QueueError> {
        Ok(self
            .query_ops(select_ops!("WHERE id = ?1"), &[&op_id])?
            .pop())
    }

    /// Every operation, oldest first (tests and reports).
    pub(super) fn all(&self) -> Result<Vec<SyncOperation>, QueueError> {
        self.query_ops(select_ops!("ORDER BY timestamp_ms, seq"), &[])
    }

    /// Up to `limit` ready pending operations, oldest timestamp first.
    ///
    /// Walks pending operations in timestamp order and skips the ones in
    /// backoff; the walk is bounded by the pending count, and by `limit`
    /// ready hits.
    pub(super) fn get_pending(
        &self,
        limit: usize,
        now_ms: i64,
    ) -> Result<Vec<SyncOperation>, QueueError> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.query_ops(
            select_ops!(
                "INDEXED BY ops_by_time WHERE status = 'pending' AND ready_at_ms <= ?1 \
                 ORDER BY timestamp_ms, seq LIMIT ?2"
            ),
            &[&now_ms, &limit],
        )
    }

    /// Whether any pending operation is ready (`get_pending(1, now)` without
    /// reading the operation).
    pub(super) fn any_ready(&self, now_ms: i64) -> Result<bool, QueueError> {
        query_row(
            &self.conn,
            "SELECT EXISTS (SELECT 1 FROM ops INDEXED BY ops_by_time \
             WHERE status = 'pending' AND ready_at_ms <= ?1)",
            [now_ms],
            |r| r.get(0),
        )
        .map_err(sql("any ready"))
    }

    /// The plan's `getPendingBatched`: ready pending operations grouped by
    /// type, oldest first within a type, at most `max_per_type` each.
    pub(super) fn get_pending_batched(
        &self,
        select: BatchSelect,
        now_ms: i64,
    ) -> Result<BTreeMap<EntityType, Vec<SyncOperation>>, QueueError> {
        let mut out = BTreeMap::new();
        if select.max_per_type == 0 {
            return Ok(out);
        }
        let single = select.single_flight;
        // Most passes find most types with nothing pending: one probe for
        // all of them is cheaper than one statement per type (which was 1.5%
        // of a simulation's instructions), and never reads a row.
        let any_pending = query_row(&self.conn, &ANY_PENDING_PER_TYPE, [], |r| {
            let mut any = [false; EntityType::ALL.len()];
            for (i, a) in any.iter_mut().enumerate() {
                *a = r.get(i)?;
            }
            Ok(any)
        })
        .map_err(sql("any pending per type"))?;
        for (t, any) in EntityType::ALL.into_iter().zip(any_pending) {
            if !any {
                continue;
            }
            // Single flight: skip operations whose entity has one syncing;
            // the Rust side keeps the oldest per entity. Bound: the SQL
            // LIMIT caps rows read per type; with single flight a type may
            // need a second, larger read when many rows repeat an entity.
            let mut limit = select.max_per_type;
            let mut picked: Vec<SyncOperation> = Vec::new();
            for _attempt in 0..8 {
                let query = if single {
                    select_ops!(
                        "INDEXED BY ops_pending_by_type WHERE status = 'pending' \
                         AND entity_type = ?1 AND ready_at_ms <= ?2 \
                         AND NOT EXISTS (SELECT 1 FROM ops o2 WHERE o2.entity_type = ops.entity_type \
                         AND o2.entity_id = ops.entity_id AND o2.status = 'syncing') \
                         ORDER BY timestamp_ms, seq LIMIT ?3"
                    )
                } else {
                    select_ops!(
                        "INDEXED BY ops_pending_by_type WHERE status = 'pending' \
                         AND entity_type = ?1 AND ready_at_ms <= ?2 \
                         ORDER BY timestamp_ms, seq LIMIT ?3"
                    )
                };
                let rows = self.query_ops(query, &[&t.as_str(), &now_ms, &(limit as i64)])?;
                let exhausted = rows.len() < limit;
                picked.clear();
                let mut seen = std::collections::BTreeSet::new();
                for op in rows {
                    if single && !seen.insert(op.entity_id.clone()) {
                        continue;
                    }
                    picked.push(op);
                    if picked.len() == select.max_per_type {
                        break;
                    }
                }
                if picked.len() == select.max_per_type || exhausted {
                    break;
                }
                limit = limit.saturating_mul(4);
            }
            if !picked.is_empty() {
                out.insert(t, picked);
            }
        }
        Ok(out)
    }

    /// Runs `update` (an `UPDATE ops ...` whose last parameter is the id,
    /// after `extra`) for each id, in one transaction, through one cached
    /// statement (cost: O(ids)).
    fn update_ids(
        &mut self,
        context: &'static str,
        update: &str,
        op_ids: &[String],
        extra: &[&dyn rusqlite::ToSql],
    ) -> Result<u64, QueueError> {
        let tx = Tx::begin(&self.conn).map_err(sql(context))?;
        let mut n = 0u64;
        {
            let mut st = tx.prepare_cached(update).map_err(sql(context))?;
            let mut params: Vec<&dyn rusqlite::ToSql> = extra.to_vec();
            params.push(&"");
            // An id listed twice is still one operation, updated once.
            let unique: std::collections::BTreeSet<&String> = op_ids.iter().collect();
            for id in unique {
                let last = params.len() - 1;
                params[last] = id;
                n += st.execute(params.as_slice()).map_err(sql(context))? as u64;
            }
        }
        tx.commit().map_err(sql(context))?;
        Ok(n)
    }

    /// Marks pending operations syncing (records the attempt time and the
    /// batch id), atomically. Ids not pending are left alone.
    pub(super) fn mark_batch_syncing(
        &mut self,
        op_ids: &[String],
        now_ms: i64,
        batch_id: Option<&str>,
    ) -> Result<(), QueueError> {
        self.update_ids(
            "mark syncing",
            "UPDATE ops SET status = 'syncing', last_attempt_ms = ?1, \
             batch_id = COALESCE(?2, batch_id) WHERE status = 'pending' AND id = ?3",
            op_ids,
            &[&now_ms, &batch_id],
        )?;
        Ok(())
    }

    /// `mark_batch_syncing` as a compare-and-set: marks each of `ops`
    /// syncing only if its row is still pending and holds the content it
    /// was read with, in one transaction, and says per operation whether it
    /// did. The test is the row's `seq`: a merge always moves its row to a
    /// new one (see [`SyncOperation::seq`]), and a cancel or replace removes
    /// the id. A caller that gets `true` may send its copy's `kind`, `data`
    /// and `version` without reading the row again. (Its bookkeeping fields,
    /// such as `last_error`, are still as read.) An operation listed twice
    /// is marked once. Cost: one rowid lookup per operation.
    pub(super) fn mark_batch_syncing_unchanged(
        &mut self,
        ops: &[SyncOperation],
        now_ms: i64,
        batch_id: Option<&str>,
    ) -> Result<Vec<bool>, QueueError> {
        let tx = Tx::begin(&self.conn).map_err(sql("mark syncing unchanged"))?;
        let mut marked = Vec::with_capacity(ops.len());
        {
            let mut st = tx
                .prepare_cached(
                    "UPDATE ops SET status = 'syncing', last_attempt_ms = ?1, \
                     batch_id = COALESCE(?2, batch_id) \
                     WHERE seq = ?3 AND id = ?4 AND status = 'pending'",
                )
                .map_err(sql("mark syncing unchanged"))?;
            for op in ops {
                let n = st
                    .execute(rusqlite::params![now_ms, batch_id, op.seq, op.id])
                    .map_err(sql("mark syncing unchanged"))?;
                marked.push(n == 1);
            }
        }
        tx.commit().map_err(sql("mark syncing unchanged"))?;
        Ok(marked)
    }

    /// Deletes the given operations if they are still syncing, atomically.
    /// An acknowledged operation also settles the names its entity gave up
    /// at its version or before (trigger `released_names_settled`).
    pub(super) fn mark_batch_completed(&mut self, op_ids: &[String]) -> Result<(), QueueError> {
        let tx = Tx::begin(&self.conn).map_err(sql("mark completed"))?;
        {
            let mut st = tx
                .prepare_cached("DELETE FROM ops WHERE status = 'syncing' AND id = ?1")
                .map_err(sql("mark completed"))?;
            for id in op_ids {
                st.execute([id]).map_err(sql("mark completed"))?;
            }
        }
        tx.commit().map_err(sql("mark completed"))
    }

    /// Failure with penalty: retry count + 1, last error and attempt set;
    /// back to pending, or `failed` when the count reaches max retries.
    /// With `retry_forever`, never `failed`. `batch` says whether the
    /// operations keep their batch id.
    pub(super) fn mark_batch_failed(
        &mut self,
        op_ids: &[String],
        error: &str,
        now_ms: i64,
        retry_forever: bool,
        batch: BatchIdAfter,
    ) -> Result<(), QueueError> {
        let forever = i64::from(retry_forever);
        let forget = batch == BatchIdAfter::Forget;
        // ready_at: the app's backoff for the new count (1 s * 2^(n-1),
        // capped), computed in SQL so the batch is one statement.
        self.update_ids(
            "mark failed",
            "UPDATE ops SET retry_count = retry_count + 1, last_error = ?1, last_attempt_ms = ?2, \
             status = CASE WHEN ?3 = 0 AND retry_count + 1 >= max_retries THEN 'failed' ELSE 'pending' END, \
             ready_at_ms = ?2 + MIN(1000 * (1 << MIN(retry_count, 20)), ?4), \
             batch_id = CASE WHEN ?5 THEN NULL ELSE batch_id END \
             WHERE status IN ('syncing', 'pending') AND id = ?6",
            op_ids,
            &[&error, &now_ms, &forever, &crate::model::BACKOFF_CAP_MS, &forget],
        )?;
        Ok(())
    }

    /// Abort or auth error: back to pending with retry count unchanged and
    /// the attempt time set (the 2 s rule). `batch` says whether the
    /// operations keep their batch id (an abort's outcome is unknown: keep
    /// it, unless the batch is being split into new requests).
    pub(super) fn mark_batch_aborted(
        &mut self,
        op_ids: &[String],
        error: &str,
        now_ms: i64,
        batch: BatchIdAfter,
    ) -> Result<(), QueueError> {
        let forget = batch == BatchIdAfter::Forget;
        // ready_at follows app_ready_at_ms: 2 s after the attempt when the
        // count is 0, else the backoff of the current count.
        self.update_ids(
            "mark aborted",
            "UPDATE ops SET status = 'pending', last_error = ?1, last_attempt_ms = ?2, \
             ready_at_ms = ?2 + CASE WHEN retry_count = 0 THEN ?3 \
             ELSE MIN(1000 * (1 << MIN(retry_count - 1, 20)), ?4) END, \
             batch_id = CASE WHEN ?5 THEN NULL ELSE batch_id END \
             WHERE status IN ('syncing', 'pending') AND id = ?6",
            op_ids,
            &[
                &error,
                &now_ms,
                &crate::model::ABORT_RETRY_DELAY_MS,
                &crate::model::BACKOFF_CAP_MS,
                &forget,
            ],
        )?;
        Ok(())
    }

    /// Hardened: a permanent error on this single operation.
    pub(super) fn mark_quarantined(&mut self, op_id: &str, error: &str) -> Result<(), QueueError> {
        exec(
            &self.conn,
            "UPDATE ops SET status = 'failed', quarantined = 1, last_error = ?2, batch_id = NULL \
                 WHERE id = ?1",
            rusqlite::params![op_id, error],
        )
        .map_err(sql("quarantine"))?;
        Ok(())
    }

    /// Run at engine start: every syncing operation back to pending, retry
    /// count and last attempt unchanged. Returns how many.
    pub(super) fn reset_stale_syncing(&mut self) -> Result<u64, QueueError> {
        // ready_at is left as it was derived from the unchanged count and
        // attempt: mark_batch_syncing does not change it.
        Ok(exec(
            &self.conn,
            "UPDATE ops SET status = 'pending', ready_at_ms = CASE \
                 WHEN last_attempt_ms IS NULL THEN ?1 \
                 WHEN retry_count = 0 THEN last_attempt_ms + ?2 \
                 ELSE last_attempt_ms + MIN(1000 * (1 << MIN(retry_count - 1, 20)), ?3) END \
                 WHERE status = 'syncing'",
            rusqlite::params![
                i64::MIN,
                crate::model::ABORT_RETRY_DELAY_MS,
                crate::model::BACKOFF_CAP_MS
            ],
        )
        .map_err(sql("reset stale syncing"))? as u64)
    }

    /// "Retry failed": failed (and quarantined) back to pending, count 0,
    /// and its batch id forgotten. An operation given up on keeps its last
    /// batch id, but its batch-mates may have committed under that id since;
    /// re-sent under it, it would be answered as a replay and never written.
    pub(super) fn retry_failed(&mut self) -> Result<u64, QueueError> {
        Ok(exec(
            &self.conn,
            "UPDATE ops SET status = 'pending', retry_count = 0, quarantined = 0, \
                 last_attempt_ms = NULL, batch_id = NULL, ready_at_ms = ?1 WHERE status = 'failed'",
            [i64::MIN],
        )
        .map_err(sql("retry failed"))? as u64)
    }

    /// Every pending operation ready later than `latest_ms` is made ready
    /// at `latest_ms`; returns how many (`sync_now`, `cap_waits`).
    pub(super) fn ready_by(
        &mut self,
        latest_ms: i64,
        context: &'static str,
    ) -> Result<u64, QueueError> {
        Ok(exec(
            &self.conn,
            "UPDATE ops SET ready_at_ms = ?1 WHERE status = 'pending' AND ready_at_ms > ?1",
            [latest_ms],
        )
        .map_err(sql(context))? as u64)
    }

    /// Deletes failed operations.
    pub(super) fn discard_failed(&mut self) -> Result<u64, QueueError> {
        Ok(
            exec(&self.conn, "DELETE FROM ops WHERE status = 'failed'", [])
                .map_err(sql("discard failed"))? as u64,
        )
    }

    pub(super) fn stats(&self, now_ms: i64) -> Result<QueueStats, QueueError> {
        let mut stats = QueueStats::default();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT status, count(*), SUM(quarantined), MIN(created_at_ms) FROM ops GROUP BY status",
            )
            .map_err(sql("stats"))?;
        let mut rows = stmt.query([]).map_err(sql("stats"))?;
        while let Some(r) = rows.next().map_err(sql("stats"))? {
            let status: String = r.get(0).map_err(sql("stats"))?;
            let n: i64 = r.get(1).map_err(sql("stats"))?;
            let q: i64 = r.get(2).map_err(sql("stats"))?;
            let oldest: Option<i64> = r.get(3).map_err(sql("stats"))?;
            match status.as_str() {
                "pending" => {
                    stats.pending = n as u64;
                    stats.oldest_pending_age_ms = oldest.map(|t| now_ms - t);
                }
                "syncing" => stats.syncing = n as u64,
                _ => {
                    stats.failed = n as u64;
                    stats.quarantined = q as u64;
                }
            }
        }
        Ok(stats)
    }

    /// Operations per status: (pending, syncing, failed). Cheaper than
    /// `stats`, which the simulator cannot afford after every pass: the
    /// total is SQLite's `count(*)` of a whole index, which adds up cell
    /// counts page by page instead of visiting rows, and only the few
    /// syncing and failed rows are walked; pending is the rest. (Walking
    /// every row was 4% of a 10,000-operation run.)
    pub(super) fn status_counts(&self) -> Result<(u64, u64, u64), QueueError> {
        // Two equality ranges, not `status IN (...)`: an IN list made SQLite
        // build an ephemeral table per call, dearer than the counting itself
        // on small queues.
        let (total, syncing, failed): (i64, i64, i64) = query_row(
            &self.conn,
            "SELECT (SELECT count(*) FROM ops), \
             (SELECT count(*) FROM ops INDEXED BY ops_by_time WHERE status = 'syncing'), \
             (SELECT count(*) FROM ops INDEXED BY ops_by_time WHERE status = 'failed')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(sql("status counts"))?;
        let pending = (total - syncing - failed).max(0) as u64;
        Ok((pending, syncing as u64, failed as u64))
    }

    /// Earliest time a pending operation becomes ready, if any is waiting.
    pub(super) fn next_ready_at_ms(&self) -> Result<Option<i64>, QueueError> {
        query_row(
            &self.conn,
            "SELECT MIN(ready_at_ms) FROM ops WHERE status = 'pending'",
            [],
            |r| r.get(0),
        )
        .map_err(sql("next ready"))
    }

    /// Number of operations not yet completed (pending + syncing + failed).
    pub(super) fn len(&self) -> Result<u64, QueueError> {
        query_row(&self.conn, "SELECT count(*) FROM ops", [], |r| {
            r.get::<_, i64>(0)
        })
        .map(|n| n as u64)
        .map_err(sql("count"))
    }

    /// The id and kind of every queued operation (any status) of this
    /// entity, oldest first. Dependency checks only ask what is queued, so
    /// the data is neither read nor parsed (that was 5% of a 10,000-operation
    /// run).
    pub(super) fn queued_for_entity(
        &self,
        entity_type: EntityType,
        entity_id: &str,
    ) -> Result<Vec<(String, OpKind)>, QueueError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, kind FROM ops WHERE entity_type = ?1 AND entity_id = ?2 ORDER BY seq",
            )
            .map_err(sql("queued for entity"))?;
        let rows = stmt
            .query_map(rusqlite::params![entity_type.as_str(), entity_id], |r| {
                let kind: String = r.get(1)?;
                let kind = OpKind::parse(&kind).ok_or_else(|| unknown(1, "kind"))?;
                Ok((r.get(0)?, kind))
            })
            .map_err(sql("queued for entity"))?;
        rows.collect::<Result<_, _>>()
            .map_err(sql("queued for entity"))
    }

    /// Where the device holds a newer version of this operation's entity
    /// than the operation carries, in one read; `None` when the operation
    /// is gone.
    pub(super) fn newer_version(&self, op_id: &str) -> Result<Option<NewerVersion>, QueueError> {
        query_row(
            &self.conn,
            "SELECT EXISTS (SELECT 1 FROM ops o2 WHERE o2.entity_type = ops.entity_type \
             AND o2.entity_id = ops.entity_id AND o2.id != ops.id AND o2.version > ops.version), \
             EXISTS (SELECT 1 FROM entities e WHERE e.entity_type = ops.entity_type \
             AND e.entity_id = ops.entity_id AND e.version > ops.version) \
             FROM ops WHERE id = ?1",
            [op_id],
            |r| {
                Ok(NewerVersion {
                    queued: r.get(0)?,
                    local: r.get(1)?,
                })
            },
        )
        .optional()
        .map_err(sql("newer version"))
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
    pub(super) fn name_releasers(
        &self,
        entity_type: EntityType,
        name: &str,
        entity_id: &str,
    ) -> Result<Vec<String>, QueueError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT r.entity_id FROM released_names r \
                 WHERE r.entity_type = ?1 AND r.name = ?2 AND r.entity_id != ?3 \
                 AND EXISTS (SELECT 1 FROM ops o WHERE o.entity_type = r.entity_type \
                 AND o.entity_id = r.entity_id AND o.status IN ('pending', 'syncing')) \
                 ORDER BY r.entity_id",
            )
            .map_err(sql("name releasers"))?;
        let rows = stmt
            .query_map(
                rusqlite::params![entity_type.as_str(), name, entity_id],
                |r| r.get(0),
            )
            .map_err(sql("name releasers"))?;
        rows.collect::<Result<_, _>>()
            .map_err(sql("name releasers"))
    }

    /// An operation's retry count; `None` when it is gone.
    pub(super) fn retry_count(&self, op_id: &str) -> Result<Option<u32>, QueueError> {
        query_row(
            &self.conn,
            "SELECT retry_count FROM ops WHERE id = ?1",
            [op_id],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql("retry count"))
    }

    /// Deletes one operation that is not in flight (hardened: an
    /// operation superseded by a newer one of the same entity, completed
    /// locally). A `syncing` one is left alone and `false` returned: its
    /// request's outcome decides it, and only `mark_batch_completed`
    /// deletes a syncing operation, which is what the trigger
    /// `released_names_settled` takes for an acknowledgement. (The engine
    /// removes only operations it has just read as pending or failed; a
    /// check in `remove` found no syncing one in 300 seeds of each
    /// scenario.)
    pub(super) fn remove(&mut self, op_id: &str) -> Result<bool, QueueError> {
        Ok(exec(
            &self.conn,
            "DELETE FROM ops WHERE id = ?1 AND status != 'syncing'",
            [op_id],
        )
        .map_err(sql("remove op"))?
            > 0)
    }

    /// A persistent counter (e.g. for batch ids): returns the next value.
    ///
    /// Update, then read, in one transaction: an UPSERT with `RETURNING`
    /// cost twice as much (SQLite stages returned rows in an ephemeral
    /// table), and this runs once per bulk call.
    pub(super) fn next_sequence(&mut self, name: &str) -> Result<i64, QueueError> {
        let tx = Tx::begin(&self.conn).map_err(sql("next sequence"))?;
        let bumped = exec(
            &tx,
            "UPDATE sequences SET value = value + 1 WHERE name = ?1",
            [name],
        )
        .map_err(sql("next sequence"))?;
        if bumped == 0 {
            exec(
                &tx,
                "INSERT INTO sequences (name, value) VALUES (?1, 1)",
                [name],
            )
            .map_err(sql("next sequence"))?;
        }
        let value = query_row(
            &tx,
            "SELECT value FROM sequences WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .map_err(sql("next sequence"))?;
        tx.commit().map_err(sql("next sequence"))?;
        Ok(value)
    }

    /// Hardened exactly-once: the oldest ready pending batch that was sent
    /// with an id and whose outcome is unknown (an abort kept its id), with
    /// all its pending operations, so it can be re-sent under the same id.
    pub(super) fn unresolved_batch(
        &self,
        now_ms: i64,
    ) -> Result<Option<(String, Vec<SyncOperation>)>, QueueError> {
        // Through the partial index of rows with a batch id (the ones in
        // flight or unresolved, a few batches' worth): left to itself SQLite
        // walked every pending row in time order, O(backlog) per sync pass
        // (4% of a 10,000-operation run). The oldest is picked here rather
        // than by ORDER BY, which built a sorter on every pass for a handful
        // of rows (or none).
        let mut oldest: Option<((i64, i64), String)> = None;
        {
            let mut st = self
                .conn
                .prepare_cached(
                    "SELECT timestamp_ms, seq, batch_id FROM ops INDEXED BY ops_by_batch \
                     WHERE batch_id IS NOT NULL AND status = 'pending' AND ready_at_ms <= ?1",
                )
                .map_err(sql("unresolved batch"))?;
            let mut rows = st.query([now_ms]).map_err(sql("unresolved batch"))?;
            while let Some(r) = rows.next().map_err(sql("unresolved batch"))? {
                let key: (i64, i64) = (
                    r.get(0).map_err(sql("unresolved batch"))?,
                    r.get(1).map_err(sql("unresolved batch"))?,
                );
                if oldest.as_ref().is_none_or(|(k, _)| key < *k) {
                    oldest = Some((key, r.get(2).map_err(sql("unresolved batch"))?));
                }
            }
        }
        let Some((_, batch)) = oldest else {
            return Ok(None);
        };
        let ops = self.query_ops(
            select_ops!("WHERE batch_id = ?1 AND status = 'pending' ORDER BY timestamp_ms, seq"),
            &[&batch],
        )?;
        Ok(Some((batch, ops)))
    }

    /// Forgets the batch id of these operations (their next send is a new
    /// request).
    pub(super) fn clear_batch_id(&mut self, op_ids: &[String]) -> Result<(), QueueError> {
        self.update_ids(
            "clear batch id",
            "UPDATE ops SET batch_id = NULL WHERE id = ?1",
            op_ids,
            &[],
        )?;
        Ok(())
    }

    /// Overrides when these pending operations become ready (hardened
    /// jittered backoff): each (id, time) pair, in one transaction.
    pub(super) fn set_ready_at(&mut self, ready: &[(String, i64)]) -> Result<(), QueueError> {
        let tx = Tx::begin(&self.conn).map_err(sql("set ready at"))?;
        for (id, at) in ready {
            exec(
                &tx,
                "UPDATE ops SET ready_at_ms = ?1 WHERE status = 'pending' AND id = ?2",
                rusqlite::params![at, id],
            )
            .map_err(sql("set ready at"))?;
        }
        tx.commit().map_err(sql("set ready at"))
    }

    /// Whether this operation is pending, ready at `now_ms`, and its entity
    /// has no operation in flight (so it may join a batch).
    pub(super) fn is_ready(&self, op_id: &str, now_ms: i64) -> Result<bool, QueueError> {
        query_row(
            &self.conn,
            "SELECT EXISTS (SELECT 1 FROM ops WHERE id = ?1 AND status = 'pending' \
             AND ready_at_ms <= ?2 AND NOT EXISTS (SELECT 1 FROM ops o2 \
             WHERE o2.entity_type = ops.entity_type AND o2.entity_id = ops.entity_id \
             AND o2.status = 'syncing'))",
            rusqlite::params![op_id, now_ms],
            |r| r.get(0),
        )
        .map_err(sql("is ready"))
    }
}
