//! The `signet` command line. `main` only calls [`run`].

use crate::auth::{AccessClaims, KeyRing};
use crate::settings::{self, new_random_secret, ResolvedSecrets, Settings};
use crate::startup::Application;
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// The configuration file used when `--config` is not given. If it does not exist, the
/// built-in defaults apply.
const DEFAULT_CONFIG: &str = "config.toml";

#[derive(Debug, Parser)]
#[command(
    name = "signet",
    version,
    about = "A SignalR-compatible, authenticated real-time hub server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct ConfigArg {
    /// Configuration file (TOML). Environment variables SIGNET__<SECTION>__<KEY> override it.
    #[arg(long, short, value_name = "PATH")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(ConfigArg),
    /// Validate the configuration and print the effective values, secrets masked.
    CheckConfig(ConfigArg),
    /// Print a new random secret (64 random bytes, base64url) for SIGNET__JWT__SECRET and friends.
    Keygen,
    /// Token operations for development and operations.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Print an access token signed with the configured current key.
    Mint {
        #[command(flatten)]
        config: ConfigArg,
        /// Subject (`sub` claim).
        #[arg(long)]
        sub: String,
        /// Role; repeat for several.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Lifetime, e.g. `90s`, `15m`, `2h`, `1d`.
        #[arg(long, default_value = "15m", value_parser = parse_duration)]
        ttl: Duration,
    },
}

/// Parses `90s`, `15m`, `2h`, `1d` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 30s, 15m, 2h or 1d"))?;
    let seconds = match unit {
        "" | "s" => value,
        "m" => value.saturating_mul(60),
        "h" => value.saturating_mul(3600),
        "d" => value.saturating_mul(86_400),
        _ => return Err(format!("unknown unit `{unit}`; use s, m, h or d")),
    };
    if seconds == 0 {
        return Err("the duration must be greater than zero".into());
    }
    Ok(Duration::from_secs(seconds))
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(config) => serve(&config),
        Command::CheckConfig(config) => check_config(&config),
        Command::Keygen => {
            println!("{}", new_random_secret());
            ExitCode::SUCCESS
        }
        Command::Token {
            command:
                TokenCommand::Mint {
                    config,
                    sub,
                    roles,
                    ttl,
                },
        } => mint(&config, sub, roles, ttl),
    }
}

/// Loads and validates settings; on failure prints the error and returns the exit code.
fn load_settings(arg: &ConfigArg) -> Result<Settings, ExitCode> {
    let path = match &arg.config {
        Some(path) => Some(path.as_path()),
        None if Path::new(DEFAULT_CONFIG).exists() => Some(Path::new(DEFAULT_CONFIG)),
        None => None,
    };
    settings::load(path, std::env::vars()).map_err(|err| {
        eprintln!("error: {err}");
        ExitCode::from(2)
    })
}

fn serve(arg: &ConfigArg) -> ExitCode {
    let settings = match load_settings(arg) {
        Ok(s) => s,
        Err(code) => return code,
    };
    use std::io::IsTerminal;
    let ansi = std::io::stdout().is_terminal();
    crate::telemetry::init(&settings.log, std::io::stdout, ansi);
    let result = actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings).await?;
        app.run_until_stopped()
            .await
            .map_err(|e| crate::startup::StartupError::Bind {
                addr: ([0, 0, 0, 0], 0).into(),
                source: e,
            })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "signet stopped");
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(arg: &ConfigArg) -> ExitCode {
    let settings = match load_settings(arg) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let secrets = match ResolvedSecrets::inspect(&settings) {
        Ok(s) => s,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    if secrets.jwt_source != crate::settings::SecretSource::WouldGenerate(Default::default()) {
        if let Err(err) = KeyRing::new(&settings.jwt, &secrets) {
            // An empty placeholder secret cannot fail here; only configured keys are checked.
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    }
    match toml::to_string_pretty(&settings) {
        Ok(text) => {
            println!("# configuration is valid; secrets are masked\n{text}");
            println!("# jwt secret: {}", secrets.jwt_source);
            println!("# envelope secret: {}", secrets.envelope_source);
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: cannot print the configuration: {err}");
            ExitCode::FAILURE
        }
    }
}

fn mint(arg: &ConfigArg, sub: String, roles: Vec<String>, ttl: Duration) -> ExitCode {
    let settings = match load_settings(arg) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let result = ResolvedSecrets::resolve(&settings)
        .map_err(|e| e.to_string())
        .and_then(|secrets| KeyRing::new(&settings.jwt, &secrets).map_err(|e| e.to_string()))
        .and_then(|ring| {
            ring.issue(&AccessClaims::new(&ring, sub, roles, ttl))
                .map_err(|e| e.to_string())
        });
    match result {
        Ok(issued) => {
            println!("{}", issued.token);
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("0m").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("").is_err());
    }
}
