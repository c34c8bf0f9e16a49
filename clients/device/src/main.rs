//! The `signet-device` binary: parses the command line and hands over to the library.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    signet_device::cli::run(signet_device::cli::Cli::parse())
}
