//! Property tests of the payload builder (`build_chunks`): every operation
//! lands in exactly one chunk, no chunk exceeds the per-type limit, an
//! entity's operations keep their order across chunks (so a delete that
//! follows an upsert is never sent before it), singletons never share a
//! chunk, and with `parents_first` no child precedes its parent.

use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use sync_core::model::{EntityType, OpKind, OpStatus, SyncOperation};
use sync_core::payload::{build_chunks, parents_of, BulkSyncPayload, ChunkOptions};

fn op(i: usize, t: EntityType, id: String, kind: OpKind, data: Value) -> SyncOperation {
    SyncOperation {
        id: format!("op{i:04}"),
        entity_type: t,
        entity_id: id,
        kind,
        data,
        version: i as i64 + 1,
        timestamp_ms: i as i64,
        status: OpStatus::Pending,
        retry_count: 0,
        max_retries: 10,
        last_error: None,
        last_attempt_ms: None,
        created_at_ms: i as i64,
        batch_id: None,
        quarantined: false,
        seq: i as i64 + 1,
    }
}

/// Operations over a small id pool so entities repeat.
fn ops_strategy(unique: bool) -> impl Strategy<Value = Vec<SyncOperation>> {
    let one = (0usize..10, 0u8..6, 0u8..3, 0u8..6);
    prop::collection::vec(one, 0..160).prop_map(move |raw| {
        let mut out: Vec<SyncOperation> = Vec::new();
        for (i, (ti, idn, kind, parent)) in raw.into_iter().enumerate() {
            let t = EntityType::ALL[ti];
            let id = match t.fixed_id() {
                Some(f) => f.to_string(),
                None => format!("{}{idn}", t.as_str()),
            };
            if unique && out.iter().any(|o| o.entity_type == t && o.entity_id == id) {
                continue;
            }
            let kind = match (t, kind) {
                (EntityType::Settings, _) | (_, 0) => OpKind::Create,
                (_, 1) => OpKind::Update,
                _ => OpKind::Delete,
            };
            let data = match (t, kind) {
                (EntityType::PlayerAdjustment, OpKind::Delete) => json!({"player_id": "p"}),
                (_, OpKind::Delete) => Value::Null,
                (EntityType::TeamRoster, _) => json!([{"player_id": "p1"}]),
                (EntityType::Game, _) => {
                    json!({"game": {"id": id, "team_id": format!("team{parent}")}})
                }
                (EntityType::PlayerAdjustment, _) => json!({
                    "id": id, "player_id": "p",
                    "season_id": format!("season{parent}"),
                    "team_id": format!("team{}", (parent + 1) % 6),
                }),
                _ => json!({"id": id}),
            };
            out.push(op(i, t, id, kind, data));
        }
        out
    })
}

fn placements(chunks: &[sync_core::payload::Chunk]) -> BTreeMap<String, usize> {
    let mut at = BTreeMap::new();
    for (i, c) in chunks.iter().enumerate() {
        for id in &c.op_ids {
            assert!(at.insert(id.clone(), i).is_none(), "{id} placed twice");
        }
    }
    at
}

fn check_common(ops: &[SyncOperation], chunks: &[sync_core::payload::Chunk], max: usize) {
    let at = placements(chunks);
    let bulk: Vec<&SyncOperation> = ops.iter().filter(|o| o.entity_type.is_bulk()).collect();
    assert_eq!(at.len(), bulk.len(), "every non-game op exactly once");
    assert!(ops
        .iter()
        .filter(|o| !o.entity_type.is_bulk())
        .all(|o| !at.contains_key(&o.id)));
    for c in chunks {
        let mut per_type: BTreeMap<EntityType, usize> = BTreeMap::new();
        for id in &c.op_ids {
            let o = ops.iter().find(|o| &o.id == id).unwrap();
            *per_type.entry(o.entity_type).or_default() += 1;
        }
        assert!(per_type.values().all(|n| *n <= max), "per-type limit");
        assert_eq!(c.payload.op_count(), c.op_ids.len());
        // Singletons and rosters: at most one per chunk per entity.
        for t in [EntityType::Settings, EntityType::WarmupPlan] {
            assert!(per_type.get(&t).copied().unwrap_or(0) <= 1);
        }
    }
    // Each entity's operations keep their queue order across chunks.
    for a in &bulk {
        for b in &bulk {
            if a.entity_type == b.entity_type
                && a.entity_id == b.entity_id
                && a.timestamp_ms < b.timestamp_ms
            {
                assert!(at[&a.id] <= at[&b.id], "{} after {}", a.id, b.id);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn plan_chunking(ops in ops_strategy(false), max in 1usize..60) {
        let chunks = build_chunks(&ops, ChunkOptions { max_per_type: max, ..ChunkOptions::default() });
        check_common(&ops, &chunks, max);
    }

    #[test]
    fn hardened_chunking(ops in ops_strategy(true), max in 1usize..60, max_ops in 1usize..80) {
        let opts = ChunkOptions { max_per_type: max, max_ops, with_versions: true, one_per_entity: true, parents_first: true };
        let chunks = build_chunks(&ops, opts);
        check_common(&ops, &chunks, max);
        // No chunk over the bound on all types together.
        for c in &chunks {
            prop_assert!(c.op_ids.len() <= max_ops, "{} operations in a chunk, bound {max_ops}", c.op_ids.len());
        }
        let at = placements(&chunks);
        for o in ops.iter().filter(|o| o.entity_type.is_bulk()) {
            // No child before its parent.
            for parent in parents_of(o) {
                for p in ops.iter().filter(|p| (p.entity_type, p.entity_id.clone()) == parent && !p.kind.is_delete()) {
                    prop_assert!(at[&p.id] <= at[&o.id], "child {} before parent {}", o.id, p.id);
                }
            }
            // A team's delete never before its roster's delete.
            if o.entity_type == EntityType::Team && o.kind.is_delete() {
                for r in ops.iter().filter(|r| r.entity_type == EntityType::TeamRoster && r.entity_id == o.entity_id && r.kind.is_delete()) {
                    prop_assert!(at[&r.id] <= at[&o.id]);
                }
            }
        }
        // Versions travel for every operation.
        for c in &chunks {
            prop_assert_eq!(c.payload.versions.len(), c.op_ids.len());
        }
    }
}

#[test]
fn plan_payload_serializes_as_the_plan_types_it() {
    let ops = vec![
        op(
            0,
            EntityType::Player,
            "p1".into(),
            OpKind::Create,
            json!({"id": "p1"}),
        ),
        op(
            1,
            EntityType::Team,
            "t1".into(),
            OpKind::Delete,
            Value::Null,
        ),
        op(
            2,
            EntityType::TeamRoster,
            "t2".into(),
            OpKind::Update,
            json!([{"player_id": "p1"}]),
        ),
        op(
            3,
            EntityType::WarmupPlan,
            "default".into(),
            OpKind::Delete,
            Value::Null,
        ),
    ];
    let chunks = build_chunks(&ops, ChunkOptions::default());
    assert_eq!(chunks.len(), 1);
    let v = serde_json::to_value(&chunks[0].payload).unwrap();
    assert_eq!(
        v,
        json!({
            "players": [{"id": "p1"}],
            "teamRosters": [{"teamId": "t2", "roster": [{"player_id": "p1"}]}],
            "deleteTeamIds": ["t1"],
            "deleteWarmupPlan": true,
        })
    );
    // No hardened field leaks into the plan's payload.
    let back: BulkSyncPayload = serde_json::from_value(v).unwrap();
    assert_eq!(back, chunks[0].payload);
    assert!(back.batch_id.is_none() && back.versions.is_empty());
}
