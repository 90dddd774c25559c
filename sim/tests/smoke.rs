use sim::nemesis::FaultParams;
use sim::workload::WorkloadParams;
use sim::world::{run_checked, WorldParams};
use sync_core::engine::{EngineConfig, Preset};

fn params() -> WorldParams {
    WorldParams {
        workload: WorkloadParams {
            users: 1,
            edits: 120,
            think_time_ms: (50, 2000),
            initial_backlog: 0,
            type_weights: [5, 2, 1, 1, 1, 1, 1, 1, 1, 1],
            kind_weights: [5, 4, 1],
            bad_records: 1,
            delete_recreate: 1,
            children_first: false,
        },
        faults: FaultParams {
            swarm: true,
            fault_phase_ms: 600_000,
            latency_ms: (5, 80),
            bandwidth_bytes_per_ms: 2000,
            server_ms_per_op: 1.0,
            statement_timeout_ms: 8000,
            request_loss: 0.05,
            response_loss: 0.05,
            offline_windows: 1,
            offline_duration_ms: (30_000, 120_000),
            silent_drop_windows: 1,
            silent_drop_duration_ms: (5_000, 30_000),
            kills: 2,
            restart_delay_ms: (500, 10_000),
            token_expiries: 1,
            refresh_after_ms: (10_000, 60_000),
            server_error_bursts: 1,
            server_error_duration_ms: (5_000, 30_000),
            server_error_status: 503,
        },
        quiesce_budget_ms: 3_600_000,
        request_timeout_ms: 90_000,
        interval_ms: 30_000,
        local_write_ms: 3,
    }
}

#[test]
fn smoke() {
    for preset in Preset::ALL {
        for seed in 0..3 {
            let r = run_checked(&params(), seed, EngineConfig::preset(preset), false);
            println!("{preset:?} seed {seed}: {:?}", r.metrics.requests);
            for v in &r.verdicts {
                if !v.ok {
                    println!("  {} x{}: {}", v.checker, v.violations, v.detail);
                }
            }
        }
    }
}

#[test]
#[ignore]
fn trace_one() {
    let seed: u64 = std::env::var("SEED").unwrap().parse().unwrap();
    let preset = Preset::parse(&std::env::var("PRESET").unwrap()).unwrap();
    let r = run_checked(&params(), seed, EngineConfig::preset(preset), true);
    for v in &r.verdicts {
        println!("{} ok={} {}", v.checker, v.ok, v.detail);
    }
}

#[test]
#[ignore]
fn sweep_env() {
    let n: u64 = std::env::var("SEEDS").unwrap().parse().unwrap();
    let preset = Preset::parse(&std::env::var("PRESET").unwrap()).unwrap();
    let mut bad = std::collections::BTreeMap::<&str, Vec<u64>>::new();
    for seed in 0..n {
        let r = run_checked(&params(), seed, EngineConfig::preset(preset), false);
        for v in &r.verdicts {
            if !v.ok {
                let e = bad.entry(v.checker).or_default();
                if e.len() < 3 {
                    println!("seed {seed} {}: {}", v.checker, v.detail);
                }
                e.push(seed);
            }
        }
    }
    for (k, v) in &bad {
        println!("{k}: {} seeds", v.len());
    }
}

#[test]
#[ignore]
fn trace_scenario() {
    let seed: u64 = std::env::var("SEED").unwrap().parse().unwrap();
    let preset = Preset::parse(&std::env::var("PRESET").unwrap()).unwrap();
    let s = sim::scenario::Scenario::embedded(&std::env::var("SCENARIO").unwrap()).unwrap();
    let r = run_checked(&s.world_params(), seed, s.engine_config(preset), true);
    for v in &r.verdicts {
        println!("{} ok={} {}", v.checker, v.ok, v.detail);
    }
}

#[test]
#[ignore]
fn time_phases() {
    let s = sim::scenario::Scenario::embedded("large-backlog").unwrap();
    let p = s.world_params();
    let t = std::time::Instant::now();
    let e = sim::workload::generate(&p.workload, 1);
    println!("generate {} edits: {:?}", e.len(), t.elapsed());
    let t = std::time::Instant::now();
    let out = sim::world::run(&p, 1, s.engine_config(Preset::Hardened), false);
    println!("run: {:?} history {}", t.elapsed(), out.history.len());
    let t = std::time::Instant::now();
    let v = sim::checker::check_all(&out);
    println!("check: {:?} {}", t.elapsed(), v.len());
    let t = std::time::Instant::now();
    let m = sim::metrics::compute(&out);
    println!("metrics: {:?} {}", t.elapsed(), m.requests);
}
