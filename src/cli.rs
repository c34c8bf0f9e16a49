//! The `signet` command line. `main` only calls [`run`].
//!
//! [`run`] is the one public item, for an application whose binary is the `signet` command
//! (`signet serve`, `user add`, `apikey create`, `token mint`, ...) with its own allocator or
//! set-up around it:
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     signet::cli::run()
//! }
//! ```

use crate::auth::KeyRing;
use crate::identity::{ApiKeys, IdentityError, Passwords, UserAdmin};
use crate::settings::{self, new_random_secret, ResolvedSecrets, Settings};
use crate::startup::Application;
use clap::{Args, Parser, Subcommand};
use std::io::Read;
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
    /// Configuration file (TOML). Environment variables SIGNET__SECTION__KEY override it.
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
    /// A first look: the server with a demo user, an admin and two simulated devices, on a
    /// temporary data directory removed on exit. Prints the random passwords once.
    Demo(DemoArgs),
    /// Apply pending schema migrations to the configured store (`[store] url`, or the SQLite
    /// file in the data directory) and exit. `serve` applies them too; this is for operators
    /// who want that step on its own.
    Migrate(ConfigArg),
    /// The identity store itself.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Manage users in the configured store.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage the publish API's keys in the configured store.
    Apikey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ApiKeyCommand {
    /// Create a key and print it (shown this once; only its hash is stored).
    Create {
        #[command(flatten)]
        config: ConfigArg,
        /// What the key is for (1 to 64 characters).
        #[arg(long)]
        name: String,
        /// `hub:<hub|*>:<action|*>`, the action one of send, groups, disconnect, presence;
        /// repeat for several.
        #[arg(long = "scope", value_name = "SCOPE", required = true)]
        scopes: Vec<String>,
    },
    /// List keys: id, name, scopes, creation time, revocation time.
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Revoke a key by id: refused from now on, by every node sharing the store.
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        id: String,
    },
}

#[derive(Debug, Args)]
struct DemoArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// The `signet-device` binary (default: next to this program).
    #[arg(long, value_name = "PATH")]
    device_bin: Option<PathBuf>,
    /// How often the simulated devices report telemetry, e.g. 5s.
    #[arg(long, default_value = "5s", value_parser = settings::parse_duration)]
    telemetry_interval: Duration,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user; the password is read from standard input (first line).
    Add {
        #[command(flatten)]
        config: ConfigArg,
        /// Username: letters, digits, `.`, `_`, `-`, `@` (compared in lower case).
        name: String,
        /// Role; repeat for several (default: user).
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// Read the password from standard input (required: passwords never go in arguments).
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users: name, id (the `sub` of their tokens), roles, creation time.
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Set a user's password (read from standard input) and end their sessions.
    Passwd {
        #[command(flatten)]
        config: ConfigArg,
        name: String,
        /// Read the password from standard input (required).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a user with their devices and sessions.
    Remove {
        #[command(flatten)]
        config: ConfigArg,
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Copy every user, device, session and revocation record from one store to another
    /// (for instance SQLite to PostgreSQL). Rows the target already has are kept, so running it
    /// again copies nothing new.
    Copy {
        #[command(flatten)]
        config: ConfigArg,
        /// The store to read: `sqlite://PATH` (a `signet.db` file) or `postgres://...`.
        #[arg(long, value_name = "URL")]
        from: String,
        /// The store to write: as `--from`; default: the configured store (`[store] url`
        /// with `password_file`, or the SQLite file in the data directory).
        #[arg(long, value_name = "URL")]
        to: Option<String>,
        /// Copy into a target that already holds rows.
        #[arg(long)]
        force: bool,
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
        #[arg(long, default_value = "15m", value_parser = settings::parse_duration)]
        ttl: Duration,
    },
}

/// Runs the `signet` command on this process's arguments (`--help` lists the subcommands) and
/// returns its exit status: `serve` returns when the server has shut down (SIGINT/SIGTERM),
/// the others when their work is done. It starts its own runtime: call it from a plain,
/// synchronous `main`.
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
        Command::Migrate(config) => migrate(&config),
        Command::Store {
            command:
                StoreCommand::Copy {
                    config,
                    from,
                    to,
                    force,
                },
        } => store_copy(&config, &from, to.as_deref(), force),
        Command::User { command } => user(command),
        Command::Apikey { command } => apikey(command),
        Command::Demo(args) => demo(args),
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
    if let Err(code) = init_logging(&settings) {
        return code;
    }
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

/// The log and the audit log to standard output (or the audit file), as `serve` and `demo` run.
fn init_logging(settings: &Settings) -> Result<(), ExitCode> {
    match crate::telemetry::init_logging(settings) {
        Ok(_) => Ok(()),
        Err(err) => {
            eprintln!("error: cannot open the audit file: {err}");
            Err(ExitCode::FAILURE)
        }
    }
}

fn demo(args: DemoArgs) -> ExitCode {
    let settings = match load_settings(&args.config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if let Err(code) = init_logging(&settings) {
        return code;
    }
    let options = crate::demo::DemoOptions {
        listen: args.listen,
        device_binary: args.device_bin,
        telemetry_interval: args.telemetry_interval,
    };
    let result = actix_web::rt::System::new().block_on(crate::demo::run(settings, options));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "the demo stopped");
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
    match crate::tls::ServerTls::load(&settings.tls) {
        Ok(Some(_)) => println!("# tls: certificate and key are valid and match"),
        Ok(None) => {}
        Err(err) => {
            eprintln!("error: tls: {err}");
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
            ring.issue(&ring.claims(sub, roles, ttl))
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

fn migrate(arg: &ConfigArg) -> ExitCode {
    let settings = match load_settings(arg) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match block_on(crate::store::open(&settings)) {
        Err(code) => code,
        Ok(Ok(_)) => {
            match &settings.store.url {
                Some(url) => println!("the store at {} is up to date", url.masked()),
                None => println!(
                    "the store at {} is up to date",
                    settings
                        .server
                        .data_dir
                        .join(crate::store::DATABASE_FILE)
                        .display()
                ),
            }
            ExitCode::SUCCESS
        }
        Ok(Err(err)) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn store_copy(arg: &ConfigArg, from: &str, to: Option<&str>, force: bool) -> ExitCode {
    let settings = match load_settings(arg) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let result = block_on(async {
        let source = crate::store::open_for_copy(Some(from), &settings).await?;
        let target = crate::store::open_for_copy(to, &settings).await?;
        crate::store::copy::copy_tables(source.as_ref(), target.as_ref(), force, |copied| {
            println!(
                "{:<17} {} rows read, {} new in the target",
                copied.table, copied.read, copied.written
            );
        })
        .await
    });
    match result {
        Err(code) => code,
        Ok(Ok(copied)) => {
            let read: u64 = copied.iter().map(|c| c.read).sum();
            let written: u64 = copied.iter().map(|c| c.written).sum();
            println!(
                "copied {} tables: {read} rows read, {written} new in the target",
                copied.len()
            );
            ExitCode::SUCCESS
        }
        Ok(Err(err)) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `work` on a single-threaded runtime, as the one-shot commands do.
fn block_on<T>(work: impl std::future::Future<Output = T>) -> Result<T, ExitCode> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => Ok(runtime.block_on(work)),
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            Err(ExitCode::FAILURE)
        }
    }
}

/// Reads a password: the first line of standard input, without its line ending.
fn password_from_stdin(password_stdin: bool) -> Result<String, String> {
    if !password_stdin {
        return Err("pass --password-stdin and write the password to standard input".into());
    }
    let mut text = String::new();
    std::io::stdin()
        .take(64 * 1024)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    let password = text.lines().next().unwrap_or("").to_string();
    if password.is_empty() {
        return Err("standard input held no password".into());
    }
    Ok(password)
}

fn user(command: UserCommand) -> ExitCode {
    let config = match &command {
        UserCommand::Add { config, .. }
        | UserCommand::List { config }
        | UserCommand::Passwd { config, .. }
        | UserCommand::Remove { config, .. } => config,
    };
    let settings = match load_settings(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let password = match &command {
        UserCommand::Add { password_stdin, .. } | UserCommand::Passwd { password_stdin, .. } => {
            match password_from_stdin(*password_stdin) {
                Ok(p) => Some(p),
                Err(err) => {
                    eprintln!("error: {err}");
                    return ExitCode::from(2);
                }
            }
        }
        _ => None,
    };
    let password = password.unwrap_or_default();
    let result = block_on(async {
        let store = crate::store::open(&settings).await?.store;
        let passwords = Passwords::new(&settings.identity).await?;
        let admin = UserAdmin::new(store, passwords);
        run_user_command(&admin, command, &password).await
    });
    exit_code(result)
}

/// How a one-shot store command ended: its error printed, failure; or success.
fn exit_code(result: Result<Result<(), IdentityError>, ExitCode>) -> ExitCode {
    match result {
        Err(code) => code,
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(err)) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Carries out one `signet user` command and prints what it did.
async fn run_user_command(
    admin: &UserAdmin,
    command: UserCommand,
    password: &str,
) -> Result<(), IdentityError> {
    match command {
        UserCommand::Add { name, roles, .. } => {
            let user = admin.add(&name, &roles, password).await?;
            println!(
                "created user {} (id {}) with roles {}",
                user.username,
                user.id,
                user.roles.join(",")
            );
        }
        UserCommand::List { .. } => {
            let users = admin.list().await?;
            println!("{:<24} {:<24} {:<20} created", "username", "id", "roles");
            for user in users {
                println!(
                    "{:<24} {:<24} {:<20} {}",
                    user.username,
                    user.id,
                    user.roles.join(","),
                    utc_timestamp(user.created_at)
                );
            }
        }
        UserCommand::Passwd { name, .. } => {
            let user = admin.set_password(&name, password).await?;
            println!(
                "changed the password of {}; their sessions are ended",
                user.username
            );
        }
        UserCommand::Remove { name, .. } => {
            let user = admin.remove(&name).await?;
            println!(
                "removed user {} with their devices and sessions",
                user.username
            );
        }
    }
    Ok(())
}

fn apikey(command: ApiKeyCommand) -> ExitCode {
    let config = match &command {
        ApiKeyCommand::Create { config, .. }
        | ApiKeyCommand::List { config }
        | ApiKeyCommand::Revoke { config, .. } => config,
    };
    let settings = match load_settings(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let result = block_on(async {
        let store = crate::store::open(&settings).await?.store;
        run_apikey_command(&ApiKeys::new(store), command).await
    });
    exit_code(result)
}

/// Carries out one `signet apikey` command and prints what it did.
async fn run_apikey_command(keys: &ApiKeys, command: ApiKeyCommand) -> Result<(), IdentityError> {
    match command {
        ApiKeyCommand::Create { name, scopes, .. } => {
            let created = keys.create(&name, &scopes, "cli", None).await?;
            eprintln!(
                "created API key {} ({}) with scopes {}; it is shown this once:",
                created.key.id,
                created.key.name,
                created.key.scopes.join(" ")
            );
            println!("{}", created.text);
        }
        ApiKeyCommand::List { .. } => {
            println!(
                "{:<16} {:<24} {:<21} {:<21} scopes",
                "id", "name", "created", "revoked"
            );
            for key in keys.list().await? {
                println!(
                    "{:<16} {:<24} {:<21} {:<21} {}",
                    key.id,
                    key.name,
                    utc_timestamp(key.created_at),
                    key.revoked_at
                        .map_or_else(|| "-".to_string(), utc_timestamp),
                    key.scopes.join(" ")
                );
            }
        }
        ApiKeyCommand::Revoke { id, .. } => {
            keys.revoke(&id, "cli", None).await?;
            println!("revoked API key {id}");
        }
    }
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SSZ` for Unix seconds (civil-from-days, proleptic Gregorian).
fn utc_timestamp(unix: i64) -> String {
    format!("{}Z", crate::protocol::typed::utc_date_time(unix))
}

#[cfg(test)]
mod tests {
    use super::utc_timestamp;

    #[test]
    fn timestamps_format_in_utc() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_786_000_000), "2026-08-06T07:06:40Z");
    }
}
