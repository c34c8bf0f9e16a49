//! Reading settings from the defaults, a TOML file and the environment.

use super::Settings;
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// Prefix of environment overrides: `SIGNET__SERVER__LISTEN` sets `server.listen`.
const ENV_PREFIX: &str = "SIGNET__";

/// Keys whose values are secrets: they may come from the environment or a file, never from
/// the TOML file itself, which is meant to be committed.
const ENV_ONLY_KEYS: [(&str, &str); 2] = [("jwt", "secret"), ("envelope", "secret")];

/// Why the configuration was refused: each names the file or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The configuration file.
        path: PathBuf,
        /// What the file system answered.
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("configuration file {path} is not valid TOML: {message}")]
    Syntax {
        /// The configuration file.
        path: PathBuf,
        /// The parser's account, with the line.
        message: String,
    },
    /// A key is unknown, of the wrong type, or breaks a rule.
    #[error("configuration key `{key}`: {rule}")]
    Invalid {
        /// The key, `section.name` (`upstream[0].url` in an array of tables).
        key: String,
        /// The rule it breaks.
        rule: String,
    },
    /// A secret could not be resolved (a file missing, too short, too open).
    #[error("secret `{key}`: {message}")]
    Secret {
        /// The secret's key.
        key: String,
        /// What is wrong with it (never its value).
        message: String,
    },
}

impl SettingsError {
    pub(crate) fn invalid(key: impl Into<String>, rule: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            rule: rule.into(),
        }
    }
}

/// Loads settings from `path` (when given) and the environment, then validates them.
pub fn load(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, SettingsError> {
    let text = match path {
        Some(path) => std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_path_buf(),
            source,
        })?,
        None => String::new(),
    };
    load_from_str(&text, path.unwrap_or(Path::new("<defaults>")), env)
}

/// Like [`load`], from TOML text already in memory; `origin` names it in errors.
pub fn load_from_str(
    text: &str,
    origin: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, SettingsError> {
    let file: Table = toml::from_str(text).map_err(|e| SettingsError::Syntax {
        path: origin.to_path_buf(),
        message: e.message().to_string(),
    })?;
    for (section, key) in ENV_ONLY_KEYS {
        let in_file = file
            .get(section)
            .and_then(Value::as_table)
            .is_some_and(|t| t.contains_key(key));
        if in_file {
            return Err(SettingsError::invalid(
                format!("{section}.{key}"),
                format!(
                    "must not be set in the configuration file; use SIGNET__{}__{} or {section}.secret_file",
                    section.to_uppercase(),
                    key.to_uppercase()
                ),
            ));
        }
    }

    let mut merged = match Value::try_from(Settings::default()) {
        Ok(Value::Table(table)) => table,
        _ => Table::new(),
    };
    merge(&mut merged, file);
    for (name, value) in env {
        if let Some(path) = name.strip_prefix(ENV_PREFIX) {
            apply_env(&mut merged, &name, path, &value)?;
        }
    }

    let settings: Settings =
        serde_path_to_error::deserialize(Value::Table(merged)).map_err(|e| {
            let key = e.path().to_string();
            let rule = e.into_inner().to_string();
            SettingsError::Invalid { key, rule }
        })?;
    settings.validate()?;
    Ok(settings)
}

/// Deep-merges `over` into `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut Table, over: Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(base_table)), Value::Table(over_table)) => {
                merge(base_table, over_table)
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Sets the key named by an environment variable, typed like the value it replaces, so that
/// `SIGNET__JWT__ISSUER=123` stays a string while `SIGNET__JWT__LEEWAY_SECS=5` is a number.
fn apply_env(root: &mut Table, var: &str, path: &str, raw: &str) -> Result<(), SettingsError> {
    let segments: Vec<String> = path.split("__").map(str::to_lowercase).collect();
    let key_name = segments.join(".");
    if segments.len() < 2 || segments.iter().any(String::is_empty) {
        return Err(SettingsError::invalid(
            var,
            "environment overrides are named SIGNET__<SECTION>__<KEY>",
        ));
    }
    let (last, parents) = segments.split_last().unwrap_or((&segments[0], &[]));
    let mut table = root;
    for segment in parents {
        let entry = table
            .entry(segment.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        table = match entry {
            Value::Table(t) => t,
            _ => return Err(SettingsError::invalid(&key_name, "is not a section")),
        };
    }
    let typed =
        match table.get(last) {
            Some(Value::Integer(_)) => {
                raw.trim().parse::<i64>().map(Value::Integer).map_err(|_| {
                    SettingsError::invalid(&key_name, format!("{var} must be an integer"))
                })?
            }
            Some(Value::Float(_)) => raw.trim().parse::<f64>().map(Value::Float).map_err(|_| {
                SettingsError::invalid(&key_name, format!("{var} must be a number"))
            })?,
            Some(Value::Boolean(_)) => match raw.trim() {
                "true" => Value::Boolean(true),
                "false" => Value::Boolean(false),
                _ => {
                    return Err(SettingsError::invalid(
                        &key_name,
                        format!("{var} must be true or false"),
                    ))
                }
            },
            Some(Value::Array(_)) => parse_env_array(raw).ok_or_else(|| {
                SettingsError::invalid(
                    &key_name,
                    format!("{var} must be a TOML array or a comma-separated list"),
                )
            })?,
            Some(Value::Table(_)) => {
                return Err(SettingsError::invalid(
                    &key_name,
                    "is a section; set its keys one by one",
                ))
            }
            _ => Value::String(raw.to_string()),
        };
    table.insert(last.clone(), typed);
    Ok(())
}

fn parse_env_array(raw: &str) -> Option<Value> {
    let trimmed = raw.trim();
    if trimmed.starts_with('[') {
        let table: Table = toml::from_str(&format!("v = {trimmed}")).ok()?;
        return table.get("v").cloned();
    }
    let items = trimmed
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| Value::String(s.to_string()))
        .collect();
    Some(Value::Array(items))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn key_of(err: SettingsError) -> String {
        match err {
            SettingsError::Invalid { key, .. } => key,
            other => panic!("expected an invalid key, got {other}"),
        }
    }

    #[test]
    fn defaults_are_valid() {
        let settings = load_from_str("", Path::new("t"), env(&[])).expect("defaults");
        assert_eq!(settings.jwt.access_token_lifetime_minutes, 15);
    }

    #[test]
    fn environment_overrides_file_and_keeps_types() {
        let file = "[server]\nlisten = \"127.0.0.1:1\"\n[jwt]\nissuer = \"file\"\n";
        let settings = load_from_str(
            file,
            Path::new("t"),
            env(&[
                ("SIGNET__SERVER__LISTEN", "127.0.0.1:9000"),
                ("SIGNET__JWT__ISSUER", "123"),
                ("SIGNET__JWT__LEEWAY_SECS", "7"),
                (
                    "SIGNET__SERVER__ALLOWED_ORIGINS",
                    "https://a.example, https://b.example",
                ),
                ("OTHER", "ignored"),
            ]),
        )
        .expect("valid");
        assert_eq!(settings.server.listen.port(), 9000);
        assert_eq!(settings.jwt.issuer, "123");
        assert_eq!(settings.jwt.leeway_secs, 7);
        assert_eq!(settings.server.allowed_origins.len(), 2);
    }

    #[test]
    fn unknown_keys_are_rejected_in_file_and_environment() {
        let err = load_from_str("[jwt]\nisuer = \"x\"\n", Path::new("t"), env(&[])).unwrap_err();
        assert!(err.to_string().contains("isuer"), "{err}");
        let err = load_from_str(
            "",
            Path::new("t"),
            env(&[("SIGNET__SERVR__LISTEN", "127.0.0.1:1")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("servr"), "{err}");
    }

    #[test]
    fn secrets_in_the_file_are_refused() {
        let err = load_from_str("[jwt]\nsecret = \"x\"\n", Path::new("t"), env(&[])).unwrap_err();
        assert_eq!(key_of(err), "jwt.secret");
    }

    #[test]
    fn bad_integer_from_environment_names_the_key() {
        let err = load_from_str(
            "",
            Path::new("t"),
            env(&[("SIGNET__JWT__LEEWAY_SECS", "soon")]),
        )
        .unwrap_err();
        assert_eq!(key_of(err), "jwt.leeway_secs");
    }
}
