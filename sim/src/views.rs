//! Views that make the device's local entities and the server's rows
//! comparable: both sides are mapped to one canonical JSON shape per entity
//! (row columns as the server holds them, children sorted by id, server-only
//! columns such as a game's version dropped).

use crate::server::{ServerModel, UserId};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use sync_core::queue::LocalEntity;
use sync_core::EntityType;

/// The table that holds an entity type's rows.
pub fn table_of(t: EntityType) -> &'static str {
    match t {
        EntityType::Player => "players",
        EntityType::Team => "teams",
        EntityType::Season => "seasons",
        EntityType::Tournament => "tournaments",
        EntityType::Personnel => "personnel",
        EntityType::Settings => "user_settings",
        EntityType::WarmupPlan => "warmup_plans",
        EntityType::Game => "games",
        EntityType::TeamRoster => "team_players",
        EntityType::PlayerAdjustment => "player_adjustments",
    }
}

const GAME_CHILDREN: [(&str, &str); 3] = [
    ("players", "game_players"),
    ("events", "game_events"),
    ("assessments", "player_assessments"),
];

/// One user's server rows, indexed for lookups by entity.
pub struct ServerSnapshot {
    tables: BTreeMap<String, Vec<Value>>,
    /// (table, key column value) -> row indexes.
    index: BTreeMap<(String, String), Vec<usize>>,
}

fn str_col<'a>(row: &'a Value, col: &str) -> &'a str {
    row.get(col).and_then(Value::as_str).unwrap_or("")
}

fn without(row: &Value, cols: &[&str]) -> Value {
    let mut m: Map<String, Value> = row.as_object().cloned().unwrap_or_default();
    for c in cols {
        m.remove(*c);
    }
    Value::Object(m)
}

fn sorted_by_id(mut rows: Vec<Value>) -> Value {
    rows.sort_by(|a, b| str_col(a, "id").cmp(str_col(b, "id")));
    Value::Array(rows)
}

impl ServerSnapshot {
    pub fn new(server: &ServerModel, user: &UserId) -> ServerSnapshot {
        let tables = server.rows(user);
        let mut index: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
        for (table, rows) in &tables {
            // Children are found by their parent's id; everything else by id.
            let col = match table.as_str() {
                "team_players" => "team_id",
                "game_players" | "game_events" | "player_assessments" | "game_tactical_data" => {
                    "game_id"
                }
                _ => "id",
            };
            for (i, row) in rows.iter().enumerate() {
                index
                    .entry((table.clone(), str_col(row, col).to_string()))
                    .or_default()
                    .push(i);
            }
        }
        ServerSnapshot { tables, index }
    }

    fn find(&self, table: &str, key: &str) -> Vec<&Value> {
        self.index
            .get(&(table.to_string(), key.to_string()))
            .map(|ix| ix.iter().map(|i| &self.tables[table][*i]).collect())
            .unwrap_or_default()
    }

    fn singleton(&self, table: &str) -> Option<&Value> {
        self.tables.get(table).and_then(|rows| rows.first())
    }

    /// Every (table, id) the user holds (children by their own id).
    pub fn row_ids(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (table, rows) in &self.tables {
            for row in rows {
                let id = match table.as_str() {
                    "user_settings" => "app".to_string(),
                    "warmup_plans" => "default".to_string(),
                    "game_tactical_data" => str_col(row, "game_id").to_string(),
                    _ => str_col(row, "id").to_string(),
                };
                out.push((table.clone(), id));
            }
        }
        out
    }

    /// The server's view of one entity in canonical shape, `None` if absent.
    pub fn entity(&self, t: EntityType, id: &str) -> Option<Value> {
        match t {
            EntityType::Settings => self
                .singleton("user_settings")
                .map(|r| r["settings"].clone()),
            EntityType::WarmupPlan => self.singleton("warmup_plans").map(|r| r["plan"].clone()),
            EntityType::TeamRoster => {
                let rows: Vec<Value> = self
                    .find("team_players", id)
                    .into_iter()
                    .map(|r| without(r, &["id", "team_id"]))
                    .collect();
                if rows.is_empty() {
                    None
                } else {
                    Some(roster_canonical(rows))
                }
            }
            EntityType::Game => {
                let game = self.find("games", id).into_iter().next()?;
                let mut m = Map::new();
                m.insert("game".into(), without(game, &["version"]));
                for (key, table) in GAME_CHILDREN {
                    let rows = self
                        .find(table, id)
                        .into_iter()
                        .map(|r| without(r, &["game_id"]))
                        .collect();
                    m.insert(key.into(), sorted_by_id(rows));
                }
                let tactical = self
                    .find("game_tactical_data", id)
                    .into_iter()
                    .next()
                    .map(|r| r["data"].clone())
                    .unwrap_or(Value::Null);
                m.insert("tactical".into(), tactical);
                Some(Value::Object(m))
            }
            _ => self.find(table_of(t), id).into_iter().next().cloned(),
        }
    }

    /// Server-side link columns of a game or adjustment row.
    pub fn row(&self, t: EntityType, id: &str) -> Option<&Value> {
        self.find(table_of(t), id).into_iter().next()
    }
}

fn roster_canonical(mut rows: Vec<Value>) -> Value {
    rows.sort_by(|a, b| str_col(a, "player_id").cmp(str_col(b, "player_id")));
    Value::Array(rows)
}

/// What the server should hold for a local entity, in canonical shape:
/// `None` for a deleted entity or an empty roster.
pub fn expected(local: &LocalEntity) -> Option<Value> {
    if local.deleted {
        return None;
    }
    let d = &local.data;
    match local.entity_type {
        EntityType::TeamRoster => {
            let rows = d.as_array().cloned().unwrap_or_default();
            if rows.is_empty() {
                None
            } else {
                Some(roster_canonical(rows))
            }
        }
        EntityType::Game => {
            let mut m = Map::new();
            m.insert("game".into(), d["game"].clone());
            for (key, _) in GAME_CHILDREN {
                let rows = d[key].as_array().cloned().unwrap_or_default();
                m.insert(key.into(), sorted_by_id(rows));
            }
            m.insert("tactical".into(), d["tactical"].clone());
            Some(Value::Object(m))
        }
        // `user_id` is not content: the server sets the owner from
        // `auth.uid()` whatever a client writes (tenant_isolation checks
        // ownership).
        _ if d.get("user_id").is_some() => Some(without(d, &["user_id"])),
        _ => Some(d.clone()),
    }
}

/// What one server effect did, for the checkers.
pub fn effect_view(e: &crate::server::Effect) -> (EntityType, String, crate::checker::EffectKind) {
    use crate::checker::EffectKind;
    use crate::server::Change;
    let kind = match &e.change {
        Change::Upsert => EffectKind::Applied { delete: false },
        Change::Delete { .. } => EffectKind::Applied { delete: true },
        Change::SkippedStale { .. } => EffectKind::Stale,
        Change::Replayed => EffectKind::Replayed,
        Change::LinkNulled { column } => EffectKind::LinkNulled {
            column: column.clone(),
        },
    };
    (e.entity_type, e.entity_id.clone(), kind)
}
