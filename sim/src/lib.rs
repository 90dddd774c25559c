//! The simulator: a deterministic madsim world in which the plan's engine,
//! today's engine and the hardened engine sync through faults, with
//! checkers and reports. See ARCHITECTURE.md for the map.

#[cfg(not(madsim))]
compile_error!("sim must be built with `--cfg madsim` (see .cargo/config.toml)");

pub mod checker;
pub mod cli;
pub mod explore;
pub mod history;
pub mod marks;
pub mod metrics;
pub mod nemesis;
pub mod report;
pub mod scenario;
pub mod script;
pub mod server;
pub mod shrink;
pub mod study;
pub mod views;
pub mod workload;
pub mod world;
