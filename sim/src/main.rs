//! `sim`: see `sim --help` and README.md.

#[cfg(not(madsim))]
compile_error!("sim must be built with `--cfg madsim` (see .cargo/config.toml)");

fn main() {
    std::process::exit(sim::cli::main());
}
