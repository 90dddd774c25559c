//! The server node's statement time follows 017: a call is charged for its
//! payload only when it applies it. A replay answers from the record once
//! it holds its batch's claim, so it ends by the later of its own arrival
//! and the commit of the call that applied the batch, not an apply's time
//! after it. Charging a replay as an apply once made `abort-cascade`'s
//! re-sends time out like their originals (see ARCHITECTURE, "One running
//! call per batch id").

use sim::history::{Event, ServerResult};
use sim::scenario::Scenario;
use sim::server::Change;
use sim::world::run;
use std::collections::BTreeMap;
use sync_core::Preset;

/// The base statement time of every call (world.rs `serve`).
const BASE_MS: i64 = 2;

#[test]
fn a_replay_takes_no_statement_time_of_its_own() {
    let s = Scenario::embedded("abort-cascade").expect("embedded scenario");
    let (params, config) = s.setup(Preset::Hardened, None);
    let mut replays = 0;
    for seed in 1..=4 {
        let out = run(&params, seed, config.clone(), false);
        let plan = &out.plan;
        // req_id -> (sent at, batch id, bytes)
        let mut invokes: BTreeMap<u64, (i64, &str, u64)> = BTreeMap::new();
        // (user, batch id) -> when a call under it applied and committed
        let mut applied: BTreeMap<(u32, &str), i64> = BTreeMap::new();
        for e in &out.history {
            match e {
                Event::Invoke {
                    t_ms,
                    req_id,
                    batch_id: Some(batch),
                    bytes,
                    ..
                } => {
                    invokes.insert(*req_id, (*t_ms, batch.as_str(), *bytes));
                }
                Event::Server {
                    t_ms,
                    user,
                    req_id,
                    result: ServerResult::Committed { effects },
                    ..
                } => {
                    let Some(&(sent_ms, batch, bytes)) = invokes.get(req_id) else {
                        continue;
                    };
                    let replayed =
                        !effects.is_empty() && effects.iter().all(|e| e.change == Change::Replayed);
                    if !replayed {
                        applied.entry((*user, batch)).or_insert(*t_ms);
                        continue;
                    }
                    replays += 1;
                    let applied_ms = *applied.get(&(*user, batch)).unwrap_or_else(|| {
                        panic!("seed {seed}: #{req_id} replayed {batch}, which nothing applied")
                    });
                    // The latest the request can have arrived.
                    let arrived_ms_max =
                        sent_ms + plan.latency_ms.1 + bytes as i64 / plan.bandwidth_bytes_per_ms;
                    let due_ms = arrived_ms_max.max(applied_ms) + BASE_MS;
                    assert!(
                        *t_ms <= due_ms,
                        "seed {seed}: replay #{req_id} of {batch} answered at {t_ms} ms, \
                         due by {due_ms} ms (sent at {sent_ms}, applied at {applied_ms})"
                    );
                }
                _ => {}
            }
        }
    }
    assert!(
        replays > 0,
        "no replay in four seeds: the test checked nothing"
    );
}
