//! TEMPORARY stub (replaced by the model branch).
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sync_core::payload::BulkSyncPayload;
use sync_core::remote::GameSave;
use sync_core::EntityType;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserId(pub String);
impl UserId {
    pub fn from_index(u: u32) -> Self {
        UserId(format!("{u}"))
    }
}
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Effect {
    pub entity_type: EntityType,
    pub entity_id: String,
}
pub struct DbError {
    pub sqlstate: String,
    pub message: String,
}
pub struct BulkOutcome {
    pub result: Value,
    pub replayed: bool,
    pub effects: Vec<Effect>,
}
pub struct GameOutcome {
    pub version: i64,
    pub effects: Vec<Effect>,
}
#[derive(Debug, Default)]
pub struct ServerModel;
impl ServerModel {
    pub fn new() -> Self {
        ServerModel
    }
    pub fn bulk_sync_entities(
        &mut self,
        _a: Option<UserId>,
        _p: &BulkSyncPayload,
    ) -> Result<BulkOutcome, DbError> {
        todo!()
    }
    pub fn save_game_with_relations(
        &mut self,
        _a: Option<UserId>,
        _p: &GameSave,
    ) -> Result<GameOutcome, DbError> {
        todo!()
    }
    pub fn set_team_roster(
        &mut self,
        _a: Option<UserId>,
        _t: &str,
        _r: &[Value],
        _v: Option<i64>,
    ) -> Result<Vec<Effect>, DbError> {
        todo!()
    }
    pub fn upsert_entity(
        &mut self,
        _a: Option<UserId>,
        _t: EntityType,
        _d: &Value,
        _v: Option<i64>,
    ) -> Result<Vec<Effect>, DbError> {
        todo!()
    }
    pub fn delete_entity(
        &mut self,
        _a: Option<UserId>,
        _t: EntityType,
        _id: &str,
        _v: Option<i64>,
    ) -> Result<Vec<Effect>, DbError> {
        todo!()
    }
}
impl ServerModel {
    pub fn rows(&self, _u: &UserId) -> std::collections::BTreeMap<String, Vec<Value>> {
        todo!()
    }
}
