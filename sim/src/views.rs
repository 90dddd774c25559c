//! TEMPORARY stub.
use crate::checker::EffectKind;
use crate::server::{Effect, ServerModel, UserId};
use serde_json::Value;
use sync_core::EntityType;
pub fn effect_view(e: &Effect) -> (EntityType, String, EffectKind) {
    (e.entity_type, e.entity_id.clone(), EffectKind::Replayed)
}
pub fn entity_view(_s: &ServerModel, _u: &UserId, _t: EntityType, _id: &str) -> Option<Value> {
    None
}
pub fn local_view(_t: EntityType, d: &Value) -> Value {
    d.clone()
}
pub fn row_ids(_s: &ServerModel, _u: &UserId) -> Vec<(String, String)> {
    vec![]
}
