//! `sim`: see `sim --help` and README.md.

#[cfg(not(madsim))]
compile_error!("sim must be built with `--cfg madsim` (see .cargo/config.toml)");

// A simulation run is allocation-heavy (SQLite pages, JSON values, madsim
// tasks) and every seed runs on a fresh thread: glibc malloc spent a fifth of
// a sweep in malloc/free and page faults; mimalloc's thread-local heaps do not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(sim::cli::main());
}
