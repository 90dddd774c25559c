//! `BulkSyncPayload`: the argument of `bulk_sync_entities`, exactly as the
//! plan defines it (per-type arrays, settings, warmup plan, rosters,
//! adjustments, delete lists), and the builder that chunks queued operations
//! into payloads.
//!
//! The hardened preset adds two optional fields, `batch_id` and `versions`;
//! both are omitted from the JSON when unset, so the plan's payload stays
//! the plan's.
//!
//! Ordering lives on the server: `bulk_sync_entities` applies upserts in
//! parent-first order and then deletes, children's before parents'. The
//! builder therefore only has to decide which operations share a chunk.

use crate::model::{EntityType, OpKind, SyncOperation};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The plan's default and maximum operations per entity type in one call.
pub const DEFAULT_MAX_PER_TYPE: usize = 50;

/// `bulk_sync_entities` refuses a call that carries more operations than
/// this, all types together (017: 54000 "payload too large"). The plan
/// stays under it only while nine bulk types times 50 is 450; the hardened
/// engine never forms a larger call, whatever its size per type.
pub const MAX_OPS_PER_CALL: usize = 500;

/// One roster in `teamRosters`: `set_team_roster(team_id, roster)` semantics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TeamRosterPayload {
    pub team_id: String,
    pub roster: Vec<Value>,
}

/// Hardened: the local version of one entity in the payload.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntityVersion {
    pub entity_type: EntityType,
    pub id: String,
    pub version: i64,
}

/// The plan's `BulkSyncPayload` (PR 3 "New Types" plus section 4's delete
/// lists). Games are never in it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BulkSyncPayload {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub players: Vec<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub teams: Vec<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub seasons: Vec<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tournaments: Vec<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub personnel: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_plan: Option<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub team_rosters: Vec<TeamRosterPayload>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub player_adjustments: Vec<Value>,

    // Deletes (processed after all upserts).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub delete_player_ids: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub delete_team_ids: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub delete_season_ids: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub delete_tournament_ids: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub delete_personnel_ids: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub delete_warmup_plan: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub delete_player_adjustment_ids: Vec<String>,

    // Hardened additions.
    /// Client-chosen id of this batch; the server records it in the same
    /// transaction and answers a replay with the stored result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    /// Local version of every entity in the payload; the server ignores a
    /// write or delete that is not newer than what it holds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<EntityVersion>,
}

impl BulkSyncPayload {
    /// Number of entity operations (upserts + deletes) the payload carries.
    pub fn op_count(&self) -> usize {
        self.players.len()
            + self.teams.len()
            + self.seasons.len()
            + self.tournaments.len()
            + self.personnel.len()
            + usize::from(self.settings.is_some())
            + usize::from(self.warmup_plan.is_some())
            + self.team_rosters.len()
            + self.player_adjustments.len()
            + self.delete_ids_len()
    }

    fn delete_ids_len(&self) -> usize {
        self.delete_player_ids.len()
            + self.delete_team_ids.len()
            + self.delete_season_ids.len()
            + self.delete_tournament_ids.len()
            + self.delete_personnel_ids.len()
            + usize::from(self.delete_warmup_plan)
            + self.delete_player_adjustment_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.op_count() == 0
    }

    /// Serialized size in bytes (what travels on the wire).
    pub fn wire_bytes(&self) -> usize {
        serde_json::to_vec(self).map(|v| v.len()).unwrap_or(0)
    }

    /// The upsert array for a bulk type (not settings, warmup plan, rosters).
    pub fn upserts_mut(&mut self, t: EntityType) -> Option<&mut Vec<Value>> {
        match t {
            EntityType::Player => Some(&mut self.players),
            EntityType::Team => Some(&mut self.teams),
            EntityType::Season => Some(&mut self.seasons),
            EntityType::Tournament => Some(&mut self.tournaments),
            EntityType::Personnel => Some(&mut self.personnel),
            EntityType::PlayerAdjustment => Some(&mut self.player_adjustments),
            _ => None,
        }
    }

    /// The delete list for a type that has one.
    pub fn delete_ids_mut(&mut self, t: EntityType) -> Option<&mut Vec<String>> {
        match t {
            EntityType::Player => Some(&mut self.delete_player_ids),
            EntityType::Team => Some(&mut self.delete_team_ids),
            EntityType::Season => Some(&mut self.delete_season_ids),
            EntityType::Tournament => Some(&mut self.delete_tournament_ids),
            EntityType::Personnel => Some(&mut self.delete_personnel_ids),
            EntityType::PlayerAdjustment => Some(&mut self.delete_player_adjustment_ids),
            _ => None,
        }
    }

    /// Adds one queued non-game operation. Returns false (and adds nothing)
    /// for a game, which never travels in a bulk call.
    pub fn push(&mut self, op: &SyncOperation, with_version: bool) -> bool {
        let t = op.entity_type;
        match (t, op.kind) {
            (EntityType::Game, _) => return false,
            (EntityType::Settings, _) => self.settings = Some(op.data.clone()),
            (EntityType::WarmupPlan, OpKind::Delete) => self.delete_warmup_plan = true,
            (EntityType::WarmupPlan, _) => self.warmup_plan = Some(op.data.clone()),
            (EntityType::TeamRoster, kind) => self.team_rosters.push(TeamRosterPayload {
                team_id: op.entity_id.clone(),
                // A roster delete sets an empty roster.
                roster: if kind.is_delete() {
                    Vec::new()
                } else {
                    op.data.as_array().cloned().unwrap_or_default()
                },
            }),
            (_, OpKind::Delete) => self
                .delete_ids_mut(t)
                .expect("every remaining bulk type has a delete list")
                .push(op.entity_id.clone()),
            (_, _) => self
                .upserts_mut(t)
                .expect("every remaining bulk type has an upsert array")
                .push(op.data.clone()),
        }
        if with_version {
            self.versions.push(EntityVersion {
                entity_type: t,
                id: op.entity_id.clone(),
                version: op.version,
            });
        }
        true
    }
}

/// How [`build_chunks`] cuts operations into payloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkOptions {
    /// At most this many operations of one entity type per chunk (plan: 50).
    pub max_per_type: usize,
    /// Hardened: attach per-entity versions.
    pub with_versions: bool,
    /// At most this many operations in a chunk, all types together
    /// (hardened: `MAX_OPS_PER_CALL`; the plan sets no such bound).
    pub max_ops: usize,
    /// Hardened: at most one operation per entity in a chunk (a second one
    /// waits for a later chunk, so the server sees them in order).
    pub one_per_entity: bool,
    /// Hardened: a child's upsert never lands in an earlier chunk than its
    /// parent's upsert, and a team's delete never in an earlier chunk than
    /// the delete of its roster. Requires `one_per_entity` (with at most one
    /// operation per entity, reordering across entities is safe).
    pub parents_first: bool,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        ChunkOptions {
            max_per_type: DEFAULT_MAX_PER_TYPE,
            max_ops: usize::MAX,
            with_versions: false,
            one_per_entity: false,
            parents_first: false,
        }
    }
}

/// One payload and the queued operations it carries, in payload order.
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    pub payload: BulkSyncPayload,
    pub op_ids: Vec<String>,
}

/// The order `bulk_sync_entities` applies operations in: upserts parents
/// first, then deletes children first. A stable sort by this key keeps each
/// type's queue order.
pub fn server_order_key(op: &SyncOperation) -> (u8, u8) {
    if op.kind.is_delete() {
        (1, u8::MAX - op.entity_type.priority())
    } else {
        (0, op.entity_type.priority())
    }
}

/// The parents an operation needs on the server first: (type, id). A
/// roster's parent is its team, for a delete too (a roster delete sets an
/// empty roster, which needs the team); a game's and an adjustment's are the
/// season, tournament and team they name. Other deletes need no parents.
pub fn parents_of(op: &SyncOperation) -> Vec<(EntityType, String)> {
    if op.entity_type == EntityType::TeamRoster {
        return vec![(EntityType::Team, op.entity_id.clone())];
    }
    if op.kind.is_delete() {
        return Vec::new();
    }
    row_parents(op.entity_type, &op.data)
}

/// The season, tournament and team a game's or adjustment's data names, in
/// that order; nothing for other types.
pub fn row_parents(entity_type: EntityType, data: &Value) -> Vec<(EntityType, String)> {
    let row = match entity_type {
        EntityType::Game => data.get("game").unwrap_or(&Value::Null),
        EntityType::PlayerAdjustment => data,
        _ => return Vec::new(),
    };
    [
        ("season_id", EntityType::Season),
        ("tournament_id", EntityType::Tournament),
        ("team_id", EntityType::Team),
    ]
    .into_iter()
    .filter_map(|(col, t)| {
        row.get(col)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(|s| (t, s.to_string()))
    })
    .collect()
}

/// Cuts non-game operations (given oldest first) into chunks of at most
/// `max_per_type` operations per entity type, keeping each entity's
/// operations in order. Settings and the warmup plan are singletons in the
/// payload, so two operations on one of them never share a chunk; neither do
/// two roster operations on one team, nor (with `one_per_entity`) any two
/// operations on one entity. Games are skipped: they are not the bulk call's
/// business.
///
/// Bound: every operation is placed in exactly one chunk, and the number of
/// chunks is at most the number of operations.
pub fn build_chunks(ops: &[SyncOperation], opts: ChunkOptions) -> Vec<Chunk> {
    plan_chunks(ops, opts)
        .into_iter()
        .map(|members| {
            let mut chunk = Chunk {
                payload: BulkSyncPayload::default(),
                op_ids: Vec::with_capacity(members.len()),
            };
            for i in members {
                chunk.payload.push(&ops[i], opts.with_versions);
                chunk.op_ids.push(ops[i].id.clone());
            }
            chunk
        })
        .collect()
}

/// [`build_chunks`] without the payloads: each chunk as the indexes in
/// `ops` of its operations, in payload order (a caller that builds its own
/// payloads copies no data).
pub fn plan_chunks(ops: &[SyncOperation], opts: ChunkOptions) -> Vec<Vec<usize>> {
    assert!(opts.max_per_type > 0, "max_per_type must be positive");
    assert!(opts.max_ops > 0, "max_ops must be positive");
    assert!(
        !opts.parents_first || opts.one_per_entity,
        "parents_first requires one_per_entity"
    );
    let mut order: Vec<usize> = (0..ops.len())
        .filter(|&i| ops[i].entity_type.is_bulk())
        .collect();
    if opts.parents_first {
        // Upserts parents first, then deletes children first (stable, so
        // each type keeps its queue order).
        order.sort_by_key(|&i| server_order_key(&ops[i]));
    }
    // Per chunk: how many of each type, and which entities it already has.
    let mut chunks: Vec<Vec<usize>> = Vec::new();
    let mut per_type: Vec<[usize; 10]> = Vec::new();
    let mut entities: Vec<BTreeMap<(EntityType, String), ()>> = Vec::new();
    // The first chunk a later operation of an entity may go to (keeps an
    // entity's operations in order across chunks).
    let mut floor_of: BTreeMap<(EntityType, String), usize> = BTreeMap::new();
    // Chunk of each placed upsert / delete, for the parent rules.
    let mut upsert_chunk: BTreeMap<(EntityType, String), usize> = BTreeMap::new();
    let mut roster_delete_chunk: BTreeMap<String, usize> = BTreeMap::new();
    // The first chunk with room for a type (chunks before it are full).
    let mut first_open: [usize; 10] = [0; 10];

    for at in order {
        let op = &ops[at];
        let t = op.entity_type;
        let key = (t, op.entity_id.clone());
        let exclusive = opts.one_per_entity
            || matches!(
                t,
                EntityType::Settings | EntityType::WarmupPlan | EntityType::TeamRoster
            );
        let mut floor = floor_of.get(&key).copied().unwrap_or(0);
        if opts.parents_first {
            for parent in parents_of(op) {
                if let Some(c) = upsert_chunk.get(&parent) {
                    floor = floor.max(*c);
                }
            }
            if t == EntityType::Team && op.kind.is_delete() {
                if let Some(c) = roster_delete_chunk.get(&op.entity_id) {
                    floor = floor.max(*c);
                }
            }
        }
        let mut i = first_open[t.index()].max(floor);
        // Bound: i only grows and a fresh chunk always has room.
        loop {
            if i == chunks.len() {
                chunks.push(Vec::new());
                per_type.push([0; 10]);
                entities.push(BTreeMap::new());
            }
            let full =
                per_type[i][t.index()] >= opts.max_per_type || chunks[i].len() >= opts.max_ops;
            let taken = exclusive && entities[i].contains_key(&key);
            if !full && !taken {
                break;
            }
            i += 1;
        }
        per_type[i][t.index()] += 1;
        entities[i].insert(key.clone(), ());
        if per_type[i][t.index()] >= opts.max_per_type && first_open[t.index()] == i {
            first_open[t.index()] = i + 1;
        }
        chunks[i].push(at);
        if op.kind.is_delete() {
            if t == EntityType::TeamRoster {
                roster_delete_chunk.insert(op.entity_id.clone(), i);
            }
        } else {
            upsert_chunk.insert(key.clone(), i);
        }
        // Exclusive entities move to the next chunk; others may share it.
        floor_of.insert(key, if exclusive { i + 1 } else { i });
    }
    chunks
}
