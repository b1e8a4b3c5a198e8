//! The drctl binary: parse, run, exit with the contract's code. Everything else lives in the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(drctl::run(drctl::cli::Cli::parse()))
}
