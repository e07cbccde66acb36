//! `fleetbench`: the program is [`fleetbench_coordinator::cli`], so that the
//! end-to-end tests can build the same program as a binary of their own.

fn main() -> std::process::ExitCode {
    fleetbench_coordinator::cli::main()
}
