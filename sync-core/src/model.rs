//! The operation model of `reference/app-behavior.md`: entity types and their
//! id rules, operation kinds and statuses, and the validation that rejects an
//! invalid operation at enqueue.
//!
//! Times are milliseconds on the device clock (`i64`, epoch based). The
//! library never reads a clock itself: callers pass `now_ms`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// The ten entity types the app syncs.
///
/// Declaration order is the hardened engine's parent-first priority (the
/// app's later fix): players; then teams, seasons, tournaments, personnel;
/// then settings and the warmup plan; then games; then rosters and
/// adjustments. `Ord` follows it, so a `BTreeMap<EntityType, _>` iterates
/// parents before children.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EntityType {
    Player,
    Team,
    Season,
    Tournament,
    Personnel,
    Settings,
    WarmupPlan,
    Game,
    TeamRoster,
    PlayerAdjustment,
}

impl EntityType {
    /// All types in priority order.
    pub const ALL: [EntityType; 10] = [
        EntityType::Player,
        EntityType::Team,
        EntityType::Season,
        EntityType::Tournament,
        EntityType::Personnel,
        EntityType::Settings,
        EntityType::WarmupPlan,
        EntityType::Game,
        EntityType::TeamRoster,
        EntityType::PlayerAdjustment,
    ];

    /// The name the app uses (`SyncEntityType`), also the queue's column value.
    pub fn as_str(self) -> &'static str {
        match self {
            EntityType::Player => "player",
            EntityType::Team => "team",
            EntityType::Season => "season",
            EntityType::Tournament => "tournament",
            EntityType::Personnel => "personnel",
            EntityType::Settings => "settings",
            EntityType::WarmupPlan => "warmupPlan",
            EntityType::Game => "game",
            EntityType::TeamRoster => "teamRoster",
            EntityType::PlayerAdjustment => "playerAdjustment",
        }
    }

    /// Parses [`EntityType::as_str`]'s output.
    pub fn parse(s: &str) -> Option<EntityType> {
        EntityType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Stable small integer (the declaration index), used as a compact key.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Priority tier of the app's later parent-first sort (lower first).
    pub fn priority(self) -> u8 {
        match self {
            EntityType::Player => 0,
            EntityType::Team
            | EntityType::Season
            | EntityType::Tournament
            | EntityType::Personnel => 1,
            EntityType::Settings | EntityType::WarmupPlan => 2,
            EntityType::Game => 3,
            EntityType::TeamRoster | EntityType::PlayerAdjustment => 4,
        }
    }

    /// The fixed entity id of the singleton types, if any.
    pub fn fixed_id(self) -> Option<&'static str> {
        match self {
            EntityType::Settings => Some("app"),
            EntityType::WarmupPlan => Some("default"),
            _ => None,
        }
    }

    /// Whether this type travels in `bulk_sync_entities` under the plan.
    /// Games never do: they keep `save_game_with_relations`.
    pub fn is_bulk(self) -> bool {
        self != EntityType::Game
    }

    /// Whether the server holds this type's `name` unique per user (the
    /// schema's only uniqueness across entities of a bulk type: personnel).
    /// A member that takes a name another one gave up locally must not
    /// reach the server before that one's delete or rename does.
    pub fn unique_name(self) -> bool {
        self == EntityType::Personnel
    }
}

impl fmt::Display for EntityType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Create, update or delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OpKind {
    Create,
    Update,
    Delete,
}

impl OpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Create => "create",
            OpKind::Update => "update",
            OpKind::Delete => "delete",
        }
    }

    pub fn parse(s: &str) -> Option<OpKind> {
        [OpKind::Create, OpKind::Update, OpKind::Delete]
            .into_iter()
            .find(|k| k.as_str() == s)
    }

    pub fn is_delete(self) -> bool {
        self == OpKind::Delete
    }
}

/// Queue status of an operation. A completed operation is deleted, not kept.
///
/// `Failed` covers both the app's "failed after max retries" and the hardened
/// engine's quarantine (a permanent error on a single operation); the
/// difference is [`SyncOperation::quarantined`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OpStatus {
    Pending,
    Syncing,
    Failed,
}

impl OpStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OpStatus::Pending => "pending",
            OpStatus::Syncing => "syncing",
            OpStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<OpStatus> {
        [OpStatus::Pending, OpStatus::Syncing, OpStatus::Failed]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// `max retries`, stamped on every operation at enqueue (the app's value).
pub const DEFAULT_MAX_RETRIES: u32 = 10;

/// An edit the app asks to sync: what `enqueue` takes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewOperation {
    pub entity_type: EntityType,
    pub entity_id: String,
    pub kind: OpKind,
    /// Full entity snapshot in the server's row shape (snake_case columns,
    /// no `user_id`). `Value::Null` is allowed for deletes, except a
    /// `playerAdjustment` delete, whose data must carry `player_id`.
    pub data: Value,
}

/// An operation as stored in the queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncOperation {
    /// Client-generated id; a merge keeps it.
    pub id: String,
    pub entity_type: EntityType,
    pub entity_id: String,
    pub kind: OpKind,
    pub data: Value,
    /// The local entity version this operation carries (see
    /// [`crate::queue::SyncQueue::write_and_enqueue`]); a merge takes the
    /// newer one. Only the hardened preset sends it to the server.
    pub version: i64,
    /// Device clock at enqueue (or at the last merge): queue order and the
    /// app's last-write-wins key.
    pub timestamp_ms: i64,
    pub status: OpStatus,
    pub retry_count: u32,
    pub max_retries: u32,
    pub last_error: Option<String>,
    pub last_attempt_ms: Option<i64>,
    pub created_at_ms: i64,
    /// Batch this operation was last sent in (hardened exactly-once replay).
    pub batch_id: Option<String>,
    /// Set when the hardened engine isolated this operation as a bad record:
    /// status is `Failed` and `last_error` holds the server's error.
    pub quarantined: bool,
    /// Its place in the queue (the row's SQLite rowid), which breaks
    /// timestamp ties. A merge moves the operation to the back, past every
    /// other row, so `seq` changes whenever `kind`, `data` or `version` do:
    /// the same `id` and `seq` mean the same content (the compare-and-set of
    /// [`crate::queue::SyncQueue::mark_batch_syncing_unchanged`]).
    pub seq: i64,
}

/// Why an operation cannot be enqueued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvalidOperation {
    /// Settings cannot be deleted (the executor rejects it as invalid data).
    SettingsDelete,
    /// A `playerAdjustment` delete whose data lacks `player_id`.
    AdjustmentDeleteWithoutPlayer { entity_id: String },
    /// A singleton type used with an id other than its fixed one.
    WrongFixedId {
        entity_type: EntityType,
        expected: &'static str,
        got: String,
    },
    /// Empty entity id.
    EmptyEntityId { entity_type: EntityType },
    /// A create or update whose data is not a JSON object (a roster: array).
    DataShape {
        entity_type: EntityType,
        entity_id: String,
        expected: &'static str,
    },
}

impl fmt::Display for InvalidOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidOperation::SettingsDelete => {
                f.write_str("invalid operation: settings cannot be deleted")
            }
            InvalidOperation::AdjustmentDeleteWithoutPlayer { entity_id } => write!(
                f,
                "invalid operation: playerAdjustment delete {entity_id} carries no player_id"
            ),
            InvalidOperation::WrongFixedId {
                entity_type,
                expected,
                got,
            } => write!(
                f,
                "invalid operation: {entity_type} id must be {expected:?}, got {got:?}"
            ),
            InvalidOperation::EmptyEntityId { entity_type } => {
                write!(f, "invalid operation: empty {entity_type} id")
            }
            InvalidOperation::DataShape {
                entity_type,
                entity_id,
                expected,
            } => write!(
                f,
                "invalid operation: {entity_type} {entity_id} data must be {expected}"
            ),
        }
    }
}

impl std::error::Error for InvalidOperation {}

impl NewOperation {
    /// The app's rules for a valid operation (app-behavior.md, "Entities and
    /// their keys").
    pub fn validate(&self) -> Result<(), InvalidOperation> {
        if self.entity_id.is_empty() {
            return Err(InvalidOperation::EmptyEntityId {
                entity_type: self.entity_type,
            });
        }
        if let Some(expected) = self.entity_type.fixed_id() {
            if self.entity_id != expected {
                return Err(InvalidOperation::WrongFixedId {
                    entity_type: self.entity_type,
                    expected,
                    got: self.entity_id.clone(),
                });
            }
        }
        match (self.entity_type, self.kind) {
            (EntityType::Settings, OpKind::Delete) => Err(InvalidOperation::SettingsDelete),
            (EntityType::PlayerAdjustment, OpKind::Delete) => {
                let has_player = self
                    .data
                    .get("player_id")
                    .and_then(Value::as_str)
                    .is_some_and(|p| !p.is_empty());
                if has_player {
                    Ok(())
                } else {
                    Err(InvalidOperation::AdjustmentDeleteWithoutPlayer {
                        entity_id: self.entity_id.clone(),
                    })
                }
            }
            (_, OpKind::Delete) => Ok(()),
            (EntityType::TeamRoster, _) => {
                if self.data.is_array() {
                    Ok(())
                } else {
                    Err(self.shape_error("a JSON array of roster rows"))
                }
            }
            (_, _) => {
                if self.data.is_object() {
                    Ok(())
                } else {
                    Err(self.shape_error("a JSON object"))
                }
            }
        }
    }

    fn shape_error(&self, expected: &'static str) -> InvalidOperation {
        InvalidOperation::DataShape {
            entity_type: self.entity_type,
            entity_id: self.entity_id.clone(),
            expected,
        }
    }
}

/// Result of the app's merge table for (existing, new) on one entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeOutcome {
    /// Keep the existing operation (id, created-at) with this kind, the new
    /// data and timestamp, retry count 0 and no last attempt.
    Merge(OpKind),
    /// create + delete: both vanish (the server never saw the entity).
    RemoveBoth,
    /// delete + anything: the new operation replaces the existing one.
    Replace,
}

/// The app's merge table (app-behavior.md, "Enqueue").
pub fn merge_kinds(existing: OpKind, new: OpKind) -> MergeOutcome {
    use OpKind::*;
    match (existing, new) {
        (Delete, _) => MergeOutcome::Replace,
        (Create, Delete) => MergeOutcome::RemoveBoth,
        (Create, _) => MergeOutcome::Merge(Create),
        (Update, Delete) => MergeOutcome::Merge(Delete),
        (Update, _) => MergeOutcome::Merge(Update),
    }
}

/// Which existing operations a new edit may merge into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MergePolicy {
    /// At plan time: only a `pending` operation; a `syncing` or `failed` one
    /// is skipped and the edit becomes a second operation.
    PendingOnly,
    /// The app's later fix (hardened): also merge into `failed` operations
    /// (which revives them as pending), so at most one non-syncing operation
    /// exists per entity. And create + delete never cancels (the create may
    /// be a re-create of an entity the server has, or may have committed
    /// behind an abort): it becomes a delete.
    PendingOrFailed,
}

/// Readiness and backoff of the app, exactly (app-behavior.md, "Readiness and
/// backoff"): never attempted: ready now; retry count 0 but attempted (an
/// abort): 2 s after the last attempt; otherwise `min(1 s * 2^(retries-1),
/// 300 s)` after the last attempt.
pub fn app_ready_at_ms(retry_count: u32, last_attempt_ms: Option<i64>) -> i64 {
    match last_attempt_ms {
        None => i64::MIN,
        Some(t) if retry_count == 0 => t + ABORT_RETRY_DELAY_MS,
        Some(t) => t + app_backoff_ms(retry_count),
    }
}

/// Wait after an abort or auth error (no retry penalty).
pub const ABORT_RETRY_DELAY_MS: i64 = 2_000;
/// Cap of the app's exponential backoff.
pub const BACKOFF_CAP_MS: i64 = 300_000;

/// `min(1 s * 2^(retries-1), 300 s)` for `retries >= 1`.
pub fn app_backoff_ms(retry_count: u32) -> i64 {
    let exp = retry_count.saturating_sub(1).min(20);
    (1_000i64 << exp).min(BACKOFF_CAP_MS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn backoff_matches_the_app() {
        let waits: Vec<i64> = (1..=10).map(app_backoff_ms).collect();
        assert_eq!(
            waits,
            vec![1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000, 300_000]
        );
        assert_eq!(app_ready_at_ms(0, None), i64::MIN);
        assert_eq!(app_ready_at_ms(0, Some(10)), 2_010);
        assert_eq!(app_ready_at_ms(3, Some(10)), 4_010);
    }

    #[test]
    fn merge_table_matches_the_app() {
        use OpKind::*;
        assert_eq!(merge_kinds(Create, Update), MergeOutcome::Merge(Create));
        assert_eq!(merge_kinds(Create, Delete), MergeOutcome::RemoveBoth);
        assert_eq!(merge_kinds(Update, Update), MergeOutcome::Merge(Update));
        assert_eq!(merge_kinds(Update, Delete), MergeOutcome::Merge(Delete));
        assert_eq!(merge_kinds(Delete, Create), MergeOutcome::Replace);
        assert_eq!(merge_kinds(Delete, Delete), MergeOutcome::Replace);
    }

    #[test]
    fn invalid_operations_are_typed() {
        let op = |t, id: &str, k, d| NewOperation {
            entity_type: t,
            entity_id: id.into(),
            kind: k,
            data: d,
        };
        assert_eq!(
            op(EntityType::Settings, "app", OpKind::Delete, Value::Null).validate(),
            Err(InvalidOperation::SettingsDelete)
        );
        assert!(matches!(
            op(
                EntityType::PlayerAdjustment,
                "a1",
                OpKind::Delete,
                json!({})
            )
            .validate(),
            Err(InvalidOperation::AdjustmentDeleteWithoutPlayer { .. })
        ));
        assert!(op(
            EntityType::PlayerAdjustment,
            "a1",
            OpKind::Delete,
            json!({"player_id": "p1"})
        )
        .validate()
        .is_ok());
        assert!(matches!(
            op(EntityType::WarmupPlan, "x", OpKind::Update, json!({})).validate(),
            Err(InvalidOperation::WrongFixedId { .. })
        ));
        assert!(matches!(
            op(EntityType::TeamRoster, "t1", OpKind::Update, json!({})).validate(),
            Err(InvalidOperation::DataShape { .. })
        ));
        for t in EntityType::ALL {
            assert_eq!(EntityType::parse(t.as_str()), Some(t));
        }
    }
}
