use clap::Parser;

fn main() -> std::process::ExitCode {
    signet_bench::cli::run(signet_bench::cli::Cli::parse())
}
