//! `fleetbench-agent`, built by this package so that its end-to-end tests run
//! the program of this very checkout (Cargo builds a package's binaries
//! before its integration tests). The name differs from the shipped binary's
//! so that the two outputs do not collide in the target directory.

fn main() -> std::process::ExitCode {
    fleetbench_agent::cli::main()
}
