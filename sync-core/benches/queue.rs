//! Queue benchmarks (criterion):
//! - `enqueue`: write_and_enqueue into an in-memory queue (target: at least
//!   50,000 operations/s), and write_and_enqueue_all (an import of 1,000
//!   edits in one transaction);
//! - `batch_cycle/N`: one `get_pending_batched(50)` + `mark_batch_syncing` +
//!   `mark_batch_completed` at a backlog of N operations, kept constant by an
//!   untimed refill (target: the 100k cycle costs at most 1.5x the 1k one).
//!
//! Run: `cargo bench -p sync-core --bench queue`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::json;
use std::hint::black_box;
use std::time::{Duration, Instant};
use sync_core::model::{EntityType, MergePolicy, NewOperation, OpKind};
use sync_core::queue::BatchSelect;
use sync_core::SyncQueue;

/// Bulk types round-robin, so a batch takes 50 of each of nine types.
const TYPES: [EntityType; 6] = [
    EntityType::Player,
    EntityType::Team,
    EntityType::Season,
    EntityType::Tournament,
    EntityType::Personnel,
    EntityType::PlayerAdjustment,
];

fn op(n: u64) -> NewOperation {
    let t = TYPES[(n % TYPES.len() as u64) as usize];
    let id = format!("{}_{n}", t.as_str());
    NewOperation {
        entity_type: t,
        entity_id: id.clone(),
        kind: OpKind::Create,
        data: json!({"id": id, "name": "bench", "player_id": "p", "jersey_number": 7}),
    }
}

fn enqueue(c: &mut Criterion) {
    let mut g = c.benchmark_group("enqueue");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(3));
    let mut q = SyncQueue::open_in_memory().unwrap();
    let mut n = 0u64;
    g.bench_function("write_and_enqueue", |b| {
        b.iter(|| {
            n += 1;
            q.write_and_enqueue(op(n), &format!("op{n}"), n as i64, MergePolicy::PendingOnly)
                .unwrap();
        })
    });
    // An import of 1,000 edits in one transaction, per edit.
    g.throughput(Throughput::Elements(1_000));
    g.bench_function("write_and_enqueue_all/1000", |b| {
        b.iter(|| {
            let edits: Vec<(NewOperation, String)> = (0..1_000)
                .map(|_| {
                    n += 1;
                    (op(n), format!("op{n}"))
                })
                .collect();
            q.write_and_enqueue_all(edits, n as i64, MergePolicy::PendingOnly)
                .unwrap();
        })
    });
    g.finish();
}

fn batch_cycle(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch_cycle");
    g.measurement_time(Duration::from_secs(3));
    g.sample_size(30);
    for backlog in [1_000u64, 10_000, 100_000] {
        let mut q = SyncQueue::open_in_memory().unwrap();
        let mut n = 0u64;
        for _ in 0..backlog {
            n += 1;
            q.enqueue(op(n), &format!("op{n}"), 1, 0, MergePolicy::PendingOnly)
                .unwrap();
        }
        g.bench_with_input(BenchmarkId::from_parameter(backlog), &backlog, |b, _| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let batch = q
                        .get_pending_batched(
                            BatchSelect {
                                max_per_type: 50,
                                single_flight: false,
                            },
                            1,
                        )
                        .unwrap();
                    let ids: Vec<String> = batch.into_values().flatten().map(|o| o.id).collect();
                    q.mark_batch_syncing(&ids, 1, None).unwrap();
                    q.mark_batch_completed(&ids).unwrap();
                    timed += start.elapsed();
                    black_box(&ids);
                    // Untimed refill keeps the backlog constant.
                    for _ in 0..ids.len() {
                        n += 1;
                        q.enqueue(op(n), &format!("op{n}"), 1, 0, MergePolicy::PendingOnly)
                            .unwrap();
                    }
                }
                timed
            })
        });
    }
    g.finish();
}

criterion_group!(benches, enqueue, batch_cycle);
criterion_main!(benches);
