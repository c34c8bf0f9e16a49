//! The command line: flags, turning them into a [`Config`], logging, and the exit status.

use crate::config::{self, Config, ConfigError, ServerUrl};
use crate::runner::{self, Exit};
use clap::{Parser, ValueEnum};
use signet::settings::{LogFormat, LogSettings};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// A simulated home-hub device (a door lock and a light) for a Signet server.
///
/// Exchanges its device id and key for an access token, connects to the home hub over
/// WebSockets, executes the signed commands it receives after verifying their signature,
/// freshness and uniqueness, answers each with a signed result, and reports its state on an
/// interval. Reconnects with backoff and renews its token before it expires.
///
/// Exit status: 0 stopped by SIGINT/SIGTERM; 1 the server ended the connection and does not
/// allow reconnecting, or refused the handshake; 2 bad flags; 3 the server refused the device
/// key (wrong key, device removed or re-keyed, owner revoked).
#[derive(Debug, Parser)]
#[command(name = "signet-device", version)]
pub struct Cli {
    /// Base URL of the Signet server, e.g. http://127.0.0.1:8080
    #[arg(long, env = "SIGNET_SERVER", value_name = "URL")]
    pub server: String,

    /// The device id shown when the device was created (POST /api/devices). Ids are base64url
    /// and may start with `-`, which must not be read as a flag.
    #[arg(
        long,
        env = "SIGNET_DEVICE_ID",
        value_name = "ID",
        allow_hyphen_values = true
    )]
    pub device_id: String,

    /// The device key. On the command line it is visible to other local users in the process
    /// list: prefer --device-key-file or the SIGNET_DEVICE_KEY environment variable
    #[arg(
        long,
        env = "SIGNET_DEVICE_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub device_key: Option<String>,

    /// A file holding the device key (surrounding white space is ignored; keep it mode 0600)
    #[arg(long, value_name = "PATH")]
    pub device_key_file: Option<PathBuf>,

    /// A label for this device in logs and telemetry (default: the device id)
    #[arg(long, allow_hyphen_values = true)]
    pub name: Option<String>,

    /// How often to report telemetry (`state` and `temperature`), e.g. 30s, 2m, 500ms
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = config::parse_duration)]
    pub telemetry_interval: Duration,

    /// The hub to connect to
    #[arg(long, default_value = "/hubs/home", value_name = "PATH")]
    pub hub_path: String,

    /// Open the WebSocket directly instead of negotiating first
    #[arg(long)]
    pub skip_negotiation: bool,

    /// How often to send a keep-alive Ping
    #[arg(long, default_value = "15s", value_name = "DURATION", value_parser = config::parse_duration)]
    pub keep_alive: Duration,

    /// Reconnect when nothing arrives from the server for this long (the server pings every 15 s)
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = config::parse_duration)]
    pub server_timeout: Duration,

    /// The longest wait between reconnection attempts
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = config::parse_duration)]
    pub max_backoff: Duration,

    /// Allow plain http:// to a host other than this machine (the device key and tokens then
    /// cross the network unencrypted)
    #[arg(long)]
    pub allow_insecure_http: bool,

    /// Log format
    #[arg(long, value_enum, default_value = "human")]
    pub log_format: LogFormatArg,

    /// A tracing filter such as `info` or `signet_device=debug`; RUST_LOG wins when set
    #[arg(long, default_value = "info", value_name = "FILTER")]
    pub log_level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    Human,
    Json,
}

impl Cli {
    /// Checks every flag and resolves the device key.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let server = ServerUrl::parse(&self.server, self.allow_insecure_http)?;
        let device_id = config::check_device_id(&self.device_id)?;
        let device_key = config::resolve_device_key(
            self.device_key.as_deref(),
            self.device_key_file.as_deref(),
        )?;
        let hub_path = config::check_hub_path(&self.hub_path)?;
        let second = Duration::from_secs(1);
        let hour = Duration::from_secs(3600);
        let telemetry_interval = config::check_range(
            "--telemetry-interval",
            self.telemetry_interval,
            Duration::from_millis(100),
            Duration::from_secs(24 * 3600),
        )?;
        let keep_alive = config::check_range("--keep-alive", self.keep_alive, second, hour)?;
        let server_timeout =
            config::check_range("--server-timeout", self.server_timeout, second, hour)?;
        if server_timeout <= keep_alive {
            return Err(ConfigError::Timing {
                flag: "--server-timeout",
                reason: "must be longer than --keep-alive".into(),
            });
        }
        let max_backoff = config::check_range("--max-backoff", self.max_backoff, second, hour)?;
        let name = self.name.unwrap_or_else(|| device_id.clone());
        Ok(Config {
            server,
            hub_path,
            device_id,
            device_key,
            name,
            telemetry_interval,
            keep_alive,
            server_timeout,
            max_backoff,
            skip_negotiation: self.skip_negotiation,
        })
    }
}

/// Runs the device to its end and turns the outcome into the process exit status.
pub fn run(cli: Cli) -> ExitCode {
    let log = LogSettings {
        format: match cli.log_format {
            LogFormatArg::Human => LogFormat::Human,
            LogFormatArg::Json => LogFormat::Json,
        },
        level: cli.log_level.clone(),
    };
    // Logs go to stderr; the same set-up as the server's, which also caps the HTTP client's
    // trace output (it would print request heads, and so the Authorization header).
    signet::telemetry::init(&log, std::io::stderr, false);
    let config = match cli.into_config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("signet-device: {error}");
            return ExitCode::from(2);
        }
    };
    let exit = actix_rt::System::new().block_on(runner::run(config));
    match exit {
        Exit::Stopped => ExitCode::SUCCESS,
        // The last log line says why (on stderr, in the chosen log format).
        Exit::Fatal(message) => {
            tracing::error!(exit = 1, "{message}");
            ExitCode::from(1)
        }
        Exit::CredentialsRejected => {
            tracing::error!(
                exit = 3,
                "the server refused the device key (401): the key is wrong, or the device was \
                 removed or re-keyed, or an administrator revoked its owner (which ends the \
                 keys of all their devices); give it a new key (rotate-key) and provision it again"
            );
            ExitCode::from(3)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::Parser;

    #[test]
    fn a_device_id_starting_with_a_dash_is_a_value_not_a_flag() {
        let cli = Cli::try_parse_from([
            "signet-device",
            "--server",
            "http://127.0.0.1:8080",
            "--device-id",
            "-r7x9qc5SfClwhLG6xh-xA",
        ])
        .expect("parses");
        assert_eq!(cli.device_id, "-r7x9qc5SfClwhLG6xh-xA");
    }
}
