//! `signet demo`: a working home at once, for a first look at the console. The server runs on a
//! fresh data directory in the system's temporary directory (removed on exit) with two users,
//! `admin` and `demo`, whose random passwords are printed once on standard output (never through
//! the log), and two simulated devices owned by `demo`, each a real `signet-device` process.
//!
//! Nothing here is special to the server: the users, devices and keys are made through the same
//! identity service the API uses, and the devices connect like any other.

use crate::auth::issue::random_id;
use crate::identity::{IdentityError, Passwords, UserAdmin};
use crate::settings::Settings;
use crate::startup::{Application, StartupError};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The devices of the demo home: name shown in the console.
const DEMO_DEVICES: &[&str] = &["Front door", "Living room light"];
const DEMO_USER: &str = "demo";
const DEMO_ADMIN: &str = "admin";
/// The device binary's name, looked for next to the running `signet`.
const DEVICE_BINARY: &str = "signet-device";

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub listen: SocketAddr,
    /// `signet-device` to run; next to the current executable when `None`.
    pub device_binary: Option<PathBuf>,
    pub telemetry_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot prepare the demo's data directory: {0}")]
    DataDir(std::io::Error),
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error("demo set-up: {0}")]
    Identity(#[from] IdentityError),
    #[error("demo set-up: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("the server stopped with an error: {0}")]
    Serve(std::io::Error),
}

/// The running demo's children; they are killed and the data removed however the demo ends.
struct DemoHome {
    data_dir: PathBuf,
    devices: Arc<Mutex<Vec<Child>>>,
}

impl DemoHome {
    fn stop_devices(devices: &Mutex<Vec<Child>>) {
        let mut devices = devices
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for child in devices.iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        devices.clear();
    }
}

impl Drop for DemoHome {
    fn drop(&mut self) {
        Self::stop_devices(&self.devices);
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Runs the demo until SIGINT or SIGTERM. `settings` come from the usual sources; the listen
/// address and data directory are replaced.
pub async fn run(mut settings: Settings, options: DemoOptions) -> Result<(), DemoError> {
    let data_dir = std::env::temp_dir().join(format!("signet-demo-{}", random_id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&data_dir)
        .map_err(DemoError::DataDir)?;
    let home = DemoHome {
        data_dir: data_dir.clone(),
        devices: Arc::new(Mutex::new(Vec::new())),
    };
    settings.server.data_dir = data_dir.clone();
    settings.server.listen = options.listen;

    // Users first, so the server's first start finds them and creates no `admin` of its own.
    let admin_password = random_id();
    let demo_password = random_id();
    add_demo_users(&settings, &admin_password, &demo_password).await?;

    let app = Application::build(settings).await?;
    let url = format!("http://{}", app.address());
    let binary = options
        .device_binary
        .clone()
        .or_else(|| {
            std::env::current_exe()
                .ok()
                .map(|exe| exe.with_file_name(DEVICE_BINARY))
        })
        .filter(|path| path.is_file());
    let started = start_devices(
        &app,
        &home,
        &url,
        &demo_password,
        binary.as_deref(),
        &options,
    )
    .await?;

    print_banner(&url, &admin_password, &demo_password, &data_dir);
    if binary.is_none() {
        println!(
            "  The simulated devices are not running: `{DEVICE_BINARY}` was not found next to \
             this program. Build it with `cargo build -p signet-device` (or pass --device-bin)."
        );
    } else {
        println!("  Simulated devices running: {}.", started.join(", "));
    }
    println!("  Press Ctrl-C to stop; the demo's data is deleted then.\n");
    let _ = std::io::stdout().flush();

    // The devices go first when the demo is stopped, so they do not try to reconnect to a
    // server that is shutting down.
    let devices = home.devices.clone();
    actix_web::rt::spawn(async move {
        stop_signal().await;
        DemoHome::stop_devices(&devices);
    });
    let result = app.run_until_stopped().await.map_err(DemoError::Serve);
    drop(home);
    result
}

/// The demo's admin and user, written to the store before the server first starts.
async fn add_demo_users(
    settings: &Settings,
    admin_password: &str,
    demo_password: &str,
) -> Result<(), DemoError> {
    let store = crate::store::open(settings).await?.store;
    let users = UserAdmin::new(
        store,
        Passwords::new(&settings.identity)
            .await
            .map_err(IdentityError::from)?,
    );
    users
        .add(DEMO_ADMIN, &["admin".to_string()], admin_password)
        .await?;
    users
        .add(DEMO_USER, &["user".to_string()], demo_password)
        .await?;
    Ok(())
}

/// Creates the demo user's devices (their keys in the data directory) and, when `binary` was
/// found, starts a simulated device process for each. Returns the names of those started.
async fn start_devices(
    app: &Application,
    home: &DemoHome,
    url: &str,
    demo_password: &str,
    binary: Option<&Path>,
    options: &DemoOptions,
) -> Result<Vec<&'static str>, DemoError> {
    let state = app.state();
    let tokens = state.identity.login(DEMO_USER, demo_password, None).await?;
    let principal = state
        .auth
        .authenticate(&tokens.access_token)
        .await
        .map_err(|e| IdentityError::Setup(format!("the demo user's token: {e}")))?;
    let mut started = Vec::new();
    for name in DEMO_DEVICES {
        let created = state.identity.create_device(&principal, name, None).await?;
        let key_file = home.data_dir.join(format!("{}.key", created.device.id));
        crate::settings::write_private_file(&key_file, &created.device_key)
            .map_err(DemoError::DataDir)?;
        let Some(binary) = binary else { continue };
        match spawn_device(binary, url, &created.device.id, &key_file, name, options) {
            Ok(child) => {
                home.devices
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push(child);
                started.push(*name);
            }
            Err(err) => eprintln!("warning: cannot start {}: {err}", binary.display()),
        }
    }
    Ok(started)
}

/// Resolves on SIGINT or SIGTERM (the server listens for them too, and shuts down).
async fn stop_signal() {
    let interrupt = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = interrupt => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _ = interrupt.await;
        }
    }
}

fn spawn_device(
    binary: &Path,
    url: &str,
    device_id: &str,
    key_file: &Path,
    name: &str,
    options: &DemoOptions,
) -> std::io::Result<Child> {
    let interval = format!("{}ms", options.telemetry_interval.as_millis());
    Command::new(binary)
        .args(["--server", url, "--device-id", device_id, "--name", name])
        .arg("--device-key-file")
        .arg(key_file)
        .args(["--telemetry-interval", &interval, "--log-level", "warn"])
        .stdin(Stdio::null())
        .spawn()
}

/// The one place the demo's passwords appear: this process's standard output.
fn print_banner(url: &str, admin_password: &str, demo_password: &str, data_dir: &Path) {
    println!();
    println!("  Signet demo: open {url}/ in a browser.");
    println!();
    println!("    user   {DEMO_USER:<6} password {demo_password}   (owns the demo devices)");
    println!("    admin  {DEMO_ADMIN:<6} password {admin_password}");
    println!();
    println!(
        "  Random passwords for this run only; the data lives in {} until the demo stops.",
        data_dir.display()
    );
}
