#[cfg(not(madsim))]
compile_error!("sim must be built with `--cfg madsim` (see .cargo/config.toml)");

fn main() {}
