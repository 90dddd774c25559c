#[cfg(not(madsim))]
compile_error!("sim must be built with `--cfg madsim` (see .cargo/config.toml)");

pub mod checker;
pub mod history;
pub mod metrics;
pub mod nemesis;
pub mod scenario;
pub mod server;
pub mod views;
pub mod workload;
pub mod world;
