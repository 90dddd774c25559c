//! The queue on disk: durable across reopen, and a corrupt or foreign file
//! is an error that names the file, never a panic.

use serde_json::json;
use std::path::PathBuf;
use sync_core::model::{EntityType, MergePolicy, NewOperation, OpKind};
use sync_core::queue::QueueError;
use sync_core::SyncQueue;

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sync-core-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn player(id: &str) -> NewOperation {
    NewOperation {
        entity_type: EntityType::Player,
        entity_id: id.into(),
        kind: OpKind::Create,
        data: json!({"id": id, "name": "n"}),
    }
}

#[test]
fn survives_reopen() {
    let path = temp("durable.db");
    let _ = std::fs::remove_file(&path);
    {
        let mut q = SyncQueue::open(&path).unwrap();
        q.write_and_enqueue(player("p1"), "op1", 5, MergePolicy::PendingOnly)
            .unwrap();
        q.mark_batch_syncing(&["op1".into()], 6, Some("b1"))
            .unwrap();
    }
    let mut q = SyncQueue::open(&path).unwrap();
    assert_eq!(q.reset_stale_syncing().unwrap(), 1);
    let op = q.get("op1").unwrap().unwrap();
    assert_eq!(op.batch_id.as_deref(), Some("b1"));
    assert_eq!(op.last_attempt_ms, Some(6));
    assert_eq!(
        q.local_entity(EntityType::Player, "p1")
            .unwrap()
            .unwrap()
            .version,
        1
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn garbage_file_names_the_file() {
    let path = temp("garbage.db");
    std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
    match SyncQueue::open(&path) {
        Err(e @ QueueError::Corrupt { .. }) => {
            assert!(e.to_string().contains("garbage.db"), "{e}");
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a garbage file opened as a queue"),
    }
    let _ = std::fs::remove_file(&path);
}

#[test]
fn foreign_database_is_refused() {
    let path = temp("foreign.db");
    let _ = std::fs::remove_file(&path);
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL);")
            .unwrap();
    }
    let err = SyncQueue::open(&path)
        .err()
        .expect("foreign schema refused");
    assert!(matches!(err, QueueError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("foreign.db"), "{err}");
    // The foreign file is left as it was.
    let c = rusqlite::Connection::open(&path).unwrap();
    let n: i64 = c
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'ops'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 0);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn invalid_operations_write_nothing() {
    let mut q = SyncQueue::open_in_memory().unwrap();
    let bad = NewOperation {
        entity_type: EntityType::Settings,
        entity_id: "app".into(),
        kind: OpKind::Delete,
        data: json!(null),
    };
    let err = q
        .write_and_enqueue(bad, "op1", 1, MergePolicy::PendingOnly)
        .unwrap_err();
    assert!(matches!(err, QueueError::Invalid(_)), "{err}");
    assert!(q.is_empty().unwrap());
    assert!(q.local_entities().unwrap().is_empty());
}
