//! Secrets: the resolution of each secret from the environment, a file, or a value generated on
//! first start and kept in the data directory. The wrapper that cannot be printed, [`Secret`],
//! is `signet-protocol`'s (the device and the load generator hold secrets too).

use super::{Settings, SettingsError, MIN_SECRET_BYTES};
use base64::Engine;
use rand::RngCore;
pub use signet_protocol::secret::Secret;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where a secret came from, for the start-up log and `check-config` (never the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A `SIGNET__...` environment variable.
    Environment,
    /// The file the configuration names.
    File(PathBuf),
    /// Generated on an earlier start and read back from the data directory.
    Stored(PathBuf),
    /// Generated on this start.
    Generated(PathBuf),
    /// Not configured; `serve` would generate it here.
    WouldGenerate(PathBuf),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Environment => write!(f, "environment"),
            Self::File(p) => write!(f, "file {}", p.display()),
            Self::Stored(p) => write!(f, "generated earlier, stored at {}", p.display()),
            Self::Generated(p) => write!(f, "generated now, stored at {}", p.display()),
            Self::WouldGenerate(p) => {
                write!(f, "not set; generated at {} on first start", p.display())
            }
        }
    }
}

/// Every secret the server needs, resolved once at start-up: internal, not stable API.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct ResolvedSecrets {
    pub jwt: Secret,
    pub jwt_source: SecretSource,
    pub jwt_previous: Vec<Secret>,
    pub envelope: Secret,
    pub envelope_source: SecretSource,
    /// The signing key of each `[[upstream]]`, in order.
    pub upstream: Vec<Secret>,
}

/// File names of generated secrets inside the data directory.
pub const JWT_SECRET_FILE: &str = "jwt.secret";
pub const ENVELOPE_SECRET_FILE: &str = "envelope.secret";

/// Random bytes in a generated secret.
const GENERATED_SECRET_BYTES: usize = 64;

impl ResolvedSecrets {
    /// Resolves every secret, generating and storing missing ones in the data directory.
    pub fn resolve(settings: &Settings) -> Result<Self, SettingsError> {
        Self::resolve_with(settings, true)
    }

    /// Resolves what is configured without writing anything; missing secrets are reported as
    /// [`SecretSource::WouldGenerate`] with an empty placeholder.
    pub fn inspect(settings: &Settings) -> Result<Self, SettingsError> {
        Self::resolve_with(settings, false)
    }

    fn resolve_with(settings: &Settings, generate: bool) -> Result<Self, SettingsError> {
        let data_dir = &settings.server.data_dir;
        let (jwt, jwt_source) = resolve_one(
            "jwt",
            settings.jwt.secret.as_ref(),
            settings.jwt.secret_file.as_deref(),
            &data_dir.join(JWT_SECRET_FILE),
            generate,
        )?;
        let (envelope, envelope_source) = resolve_one(
            "envelope",
            settings.envelope.secret.as_ref(),
            settings.envelope.secret_file.as_deref(),
            &data_dir.join(ENVELOPE_SECRET_FILE),
            generate,
        )?;
        let jwt_previous = settings
            .jwt
            .previous_secret_files
            .iter()
            .enumerate()
            .map(|(i, path)| read_secret_file(&format!("jwt.previous_secret_files[{i}]"), path))
            .collect::<Result<_, _>>()?;
        let upstream = settings
            .upstream
            .iter()
            .enumerate()
            .map(|(i, upstream)| {
                read_secret_file(&format!("upstream[{i}].secret_file"), &upstream.secret_file)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            jwt,
            jwt_source,
            jwt_previous,
            envelope,
            envelope_source,
            upstream,
        })
    }
}

fn resolve_one(
    section: &str,
    from_env: Option<&Secret>,
    file: Option<&Path>,
    generated_path: &Path,
    generate: bool,
) -> Result<(Secret, SecretSource), SettingsError> {
    if let Some(secret) = from_env {
        return Ok((secret.clone(), SecretSource::Environment));
    }
    if let Some(path) = file {
        let secret = read_secret_file(&format!("{section}.secret_file"), path)?;
        return Ok((secret, SecretSource::File(path.to_path_buf())));
    }
    let key = format!("{section}.secret");
    if generated_path.exists() {
        let secret = read_secret_file(&key, generated_path)?;
        return Ok((secret, SecretSource::Stored(generated_path.to_path_buf())));
    }
    if !generate {
        return Ok((
            Secret::new(Vec::new()),
            SecretSource::WouldGenerate(generated_path.to_path_buf()),
        ));
    }
    match generate_secret_file(generated_path) {
        Ok(secret) => {
            tracing::info!(
                secret = %key,
                path = %generated_path.display(),
                "generated a new random secret and stored it with mode 0600"
            );
            Ok((
                secret,
                SecretSource::Generated(generated_path.to_path_buf()),
            ))
        }
        // Another process started at the same moment and won the race: use its secret.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let secret = read_secret_file(&key, generated_path)?;
            Ok((secret, SecretSource::Stored(generated_path.to_path_buf())))
        }
        Err(e) => Err(SettingsError::Secret {
            key,
            message: format!(
                "cannot store a generated secret at {}: {e}",
                generated_path.display()
            ),
        }),
    }
}

fn read_secret_file(key: &str, path: &Path) -> Result<Secret, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|e| SettingsError::Secret {
        key: key.to_string(),
        message: format!("cannot read {}: {e}", path.display()),
    })?;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                secret = %key,
                path = %path.display(),
                "secret file is readable by group or others; chmod 600 it"
            );
        }
    }
    let secret = Secret::from_text(&text);
    if secret.len() < MIN_SECRET_BYTES {
        return Err(SettingsError::Secret {
            key: key.to_string(),
            message: format!("{} must hold at least 32 bytes", path.display()),
        });
    }
    Ok(secret)
}

/// Writes 64 random bytes, base64url-encoded, to a new file with mode 0600.
fn generate_secret_file(path: &Path) -> std::io::Result<Secret> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let text = new_random_secret();
    write_private_file(path, &text)?;
    Ok(Secret::from_text(&text))
}

/// Creates `path` with mode 0600 from the start (never readable by others, not even briefly)
/// and writes `text` and a newline. Fails if the file exists.
pub fn write_private_file(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// A new secret: 64 random bytes as base64url text (the text itself is the key).
pub fn new_random_secret() -> String {
    let mut bytes = [0u8; GENERATED_SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
