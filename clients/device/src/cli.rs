//! The command line: flags, turning them into a [`Config`], logging, and the exit status.

use crate::config::{self, Config, ConfigError, ServerUrl};
use crate::runner::{self, Exit};
use crate::tls::{self, TlsOptions};
use clap::{Parser, ValueEnum};
use serde::Deserialize;
use signet_protocol::logging::{self, LogFormat};
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
    /// A TOML file with any of the settings below (keys named like the flags, with `_` for
    /// `-`, e.g. `server`, `device_key_file`, `ca_file`); flags and environment variables
    /// override it. The device key itself never goes in it: use `device_key_file`
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Base URL of the Signet server, e.g. https://home.example.com
    #[arg(long, env = "SIGNET_SERVER", value_name = "URL")]
    pub server: Option<String>,

    /// The device id shown when the device was created (POST /api/devices). Ids are base64url
    /// and may start with `-`, which must not be read as a flag.
    #[arg(
        long,
        env = "SIGNET_DEVICE_ID",
        value_name = "ID",
        allow_hyphen_values = true
    )]
    pub device_id: Option<String>,

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
    /// [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
    pub telemetry_interval: Option<Duration>,

    /// The hub to connect to [default: /hubs/home]
    #[arg(long, value_name = "PATH")]
    pub hub_path: Option<String>,

    /// Open the WebSocket directly instead of negotiating first
    #[arg(long)]
    pub skip_negotiation: bool,

    /// How often to send a keep-alive Ping [default: 15s]
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
    pub keep_alive: Option<Duration>,

    /// Reconnect when nothing arrives from the server for this long (the server pings every
    /// 15 s) [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
    pub server_timeout: Option<Duration>,

    /// The longest wait between reconnection attempts [default: 60s]
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
    pub max_backoff: Option<Duration>,

    /// Allow plain http:// to a host other than this machine (the device key and tokens then
    /// cross the network unencrypted)
    #[arg(long)]
    pub allow_insecure_http: bool,

    /// PEM CA certificate(s) to trust for the server's certificate, besides the bundled public
    /// roots (for a private CA or a self-signed server)
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,

    /// PEM client certificate chain, for a server that requires mutual TLS (with --client-key)
    #[arg(long, value_name = "PATH")]
    pub client_cert: Option<PathBuf>,

    /// PEM private key of --client-cert
    #[arg(long, value_name = "PATH")]
    pub client_key: Option<PathBuf>,

    /// How long the simulated actuator takes per command; commands arriving meanwhile wait
    /// their turn and are answered in order [default: 0s]
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
    pub actuation_time: Option<Duration>,

    /// Results not delivered this long after their command arrived are dropped (the server
    /// has given up on the command by then) [default: 60s]
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
    pub result_timeout: Option<Duration>,

    /// Log format [default: human]
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormatArg>,

    /// A tracing filter such as `info` or `signet_device=debug`; RUST_LOG wins when set
    /// [default: info]
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormatArg {
    Human,
    Json,
}

/// `--config`: the same settings as the flags, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    server: Option<String>,
    device_id: Option<String>,
    device_key_file: Option<PathBuf>,
    name: Option<String>,
    telemetry_interval: Option<String>,
    hub_path: Option<String>,
    skip_negotiation: Option<bool>,
    keep_alive: Option<String>,
    server_timeout: Option<String>,
    max_backoff: Option<String>,
    allow_insecure_http: Option<bool>,
    ca_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    actuation_time: Option<String>,
    result_timeout: Option<String>,
    log_format: Option<LogFormatArg>,
    log_level: Option<String>,
}

impl Cli {
    /// Fills what the command line left unset from `--config`, flags winning.
    pub fn merge_config_file(mut self) -> Result<Self, ConfigError> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let fail = |reason: String| ConfigError::File {
            path: path.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
        let file: FileConfig = toml::from_str(&text).map_err(|e| fail(e.message().to_string()))?;
        let duration = |key: &str,
                        value: Option<String>|
         -> Result<Option<Duration>, ConfigError> {
            value
                .map(|text| config::parse_duration(&text).map_err(|e| fail(format!("{key}: {e}"))))
                .transpose()
        };
        self.server = self.server.or(file.server);
        self.device_id = self.device_id.or(file.device_id);
        // Only when no key was given another way: two key sources are refused later.
        if self.device_key.is_none() {
            self.device_key_file = self.device_key_file.or(file.device_key_file);
        }
        self.name = self.name.or(file.name);
        self.telemetry_interval = self
            .telemetry_interval
            .or(duration("telemetry_interval", file.telemetry_interval)?);
        self.hub_path = self.hub_path.or(file.hub_path);
        self.skip_negotiation |= file.skip_negotiation.unwrap_or(false);
        self.keep_alive = self.keep_alive.or(duration("keep_alive", file.keep_alive)?);
        self.server_timeout = self
            .server_timeout
            .or(duration("server_timeout", file.server_timeout)?);
        self.max_backoff = self
            .max_backoff
            .or(duration("max_backoff", file.max_backoff)?);
        self.allow_insecure_http |= file.allow_insecure_http.unwrap_or(false);
        self.ca_file = self.ca_file.or(file.ca_file);
        if self.client_cert.is_none() && self.client_key.is_none() {
            self.client_cert = file.client_cert;
            self.client_key = file.client_key;
        }
        self.actuation_time = self
            .actuation_time
            .or(duration("actuation_time", file.actuation_time)?);
        self.result_timeout = self
            .result_timeout
            .or(duration("result_timeout", file.result_timeout)?);
        self.log_format = self.log_format.or(file.log_format);
        self.log_level = self.log_level.or(file.log_level);
        Ok(self)
    }

    /// Checks every flag and resolves the device key.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let server = self.server.ok_or(ConfigError::Missing("--server"))?;
        let server = ServerUrl::parse(&server, self.allow_insecure_http)?;
        let device_id = self.device_id.ok_or(ConfigError::Missing("--device-id"))?;
        let device_id = config::check_device_id(&device_id)?;
        let device_key = config::resolve_device_key(
            self.device_key.as_deref(),
            self.device_key_file.as_deref(),
        )?;
        let hub_path = config::check_hub_path(self.hub_path.as_deref().unwrap_or("/hubs/home"))?;
        let second = Duration::from_secs(1);
        let hour = Duration::from_secs(3600);
        let telemetry_interval = config::check_range(
            "--telemetry-interval",
            self.telemetry_interval.unwrap_or(Duration::from_secs(30)),
            Duration::from_millis(100),
            Duration::from_secs(24 * 3600),
        )?;
        let keep_alive = config::check_range(
            "--keep-alive",
            self.keep_alive.unwrap_or(Duration::from_secs(15)),
            second,
            hour,
        )?;
        let server_timeout = config::check_range(
            "--server-timeout",
            self.server_timeout.unwrap_or(Duration::from_secs(30)),
            second,
            hour,
        )?;
        if server_timeout <= keep_alive {
            return Err(ConfigError::Timing {
                flag: "--server-timeout",
                reason: "must be longer than --keep-alive".into(),
            });
        }
        let max_backoff = config::check_range(
            "--max-backoff",
            self.max_backoff.unwrap_or(Duration::from_secs(60)),
            second,
            hour,
        )?;
        let actuation_time = config::check_range(
            "--actuation-time",
            self.actuation_time.unwrap_or(Duration::ZERO),
            Duration::ZERO,
            Duration::from_secs(600),
        )?;
        let result_timeout = config::check_range(
            "--result-timeout",
            self.result_timeout.unwrap_or(Duration::from_secs(60)),
            second,
            hour,
        )?;
        let tls = tls::client_config(&TlsOptions {
            ca_file: self.ca_file,
            client_cert: self.client_cert,
            client_key: self.client_key,
        })?;
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
            tls,
            actuation_time,
            result_timeout,
        })
    }
}

/// Runs the device to its end and turns the outcome into the process exit status.
pub fn run(cli: Cli) -> ExitCode {
    let cli = match cli.merge_config_file() {
        Ok(cli) => cli,
        Err(error) => {
            eprintln!("signet-device: {error}");
            return ExitCode::from(2);
        }
    };
    let format = match cli.log_format.unwrap_or(LogFormatArg::Human) {
        LogFormatArg::Human => LogFormat::Human,
        LogFormatArg::Json => LogFormat::Json,
    };
    let level = cli.log_level.clone().unwrap_or_else(|| "info".into());
    // Logs go to stderr; the same set-up as the server's, which also caps the HTTP client's
    // trace output (it would print request heads, and so the Authorization header).
    logging::init(format, &level, std::io::stderr, false);
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
        assert_eq!(cli.device_id.as_deref(), Some("-r7x9qc5SfClwhLG6xh-xA"));
    }

    #[test]
    fn flags_override_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("device.toml");
        std::fs::write(
            &file,
            "server = \"https://home.example.com\"\ndevice_id = \"from-file\"\n\
             device_key_file = \"/etc/signet/key\"\nkeep_alive = \"20s\"\nlog_format = \"json\"\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "signet-device",
            "--config",
            file.to_str().unwrap(),
            "--device-id",
            "from-flag",
        ])
        .unwrap()
        .merge_config_file()
        .unwrap();
        assert_eq!(cli.server.as_deref(), Some("https://home.example.com"));
        assert_eq!(cli.device_id.as_deref(), Some("from-flag"));
        assert_eq!(cli.keep_alive, Some(std::time::Duration::from_secs(20)));
        assert_eq!(cli.log_format, Some(super::LogFormatArg::Json));
        assert_eq!(
            cli.device_key_file.as_deref(),
            Some(std::path::Path::new("/etc/signet/key"))
        );

        std::fs::write(&file, "sever = \"typo\"\n").unwrap();
        let err = Cli::try_parse_from(["signet-device", "--config", file.to_str().unwrap()])
            .unwrap()
            .merge_config_file()
            .unwrap_err();
        assert!(err.to_string().contains("sever"), "{err}");
    }
}
