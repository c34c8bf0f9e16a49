//! Users as operators manage them (the `signet user` commands and the first-start admin):
//! the rules for names, roles and passwords, and the operations themselves.

use super::password::{Passwords, MAX_PASSWORD_BYTES, MIN_PASSWORD_CHARS};
use super::IdentityError;
use crate::auth::issue::{random_id, unix_now};
use crate::auth::RevocationCause;
use crate::store::{Store, StoreError, SubjectCutoff, User};
use base64::Engine;
use rand::RngCore;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Longest username, in characters. A format rule of the API (the same on every server, so
/// clients can check it), not a setting.
pub const MAX_USERNAME_CHARS: usize = 64;
/// The role device tokens carry; never given to a user.
pub const DEVICE_ROLE: &str = "device";
pub const ADMIN_ROLE: &str = "admin";
pub const USER_ROLE: &str = "user";
/// Where the first start writes the generated admin password, inside the data directory.
pub const INITIAL_ADMIN_PASSWORD_FILE: &str = "initial-admin-password";
pub const INITIAL_ADMIN: &str = "admin";

/// Usernames are compared in lower case, so `Admin` and `admin` are one user.
pub fn normalize_username(name: &str) -> String {
    name.trim().to_lowercase()
}

/// ASCII letters, digits and `.`, `_`, `-`, `@`; 1 to 64 characters (after normalizing).
pub fn is_valid_username(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_USERNAME_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

fn check_username(name: &str) -> Result<String, IdentityError> {
    let name = normalize_username(name);
    if is_valid_username(&name) {
        Ok(name)
    } else {
        Err(IdentityError::invalid(
            "username",
            "1 to 64 characters: letters, digits, `.`, `_`, `-`, `@`",
        ))
    }
}

/// Roles are lower-case words (`[a-z][a-z0-9_-]*`, at most 32); `device` is reserved.
pub fn check_roles(roles: &[String]) -> Result<Vec<String>, IdentityError> {
    let mut out: Vec<String> = Vec::new();
    for role in roles {
        let role = role.trim().to_lowercase();
        let well_formed = role.len() <= 32
            && role.starts_with(|c: char| c.is_ascii_lowercase())
            && role
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !well_formed {
            return Err(IdentityError::invalid(
                "role",
                format!("`{role}` is not a role name ([a-z][a-z0-9_-]*, at most 32)"),
            ));
        }
        if role == DEVICE_ROLE {
            return Err(IdentityError::invalid(
                "role",
                "`device` is reserved for device tokens",
            ));
        }
        if !out.contains(&role) {
            out.push(role);
        }
    }
    if out.is_empty() {
        out.push(USER_ROLE.to_string());
    }
    Ok(out)
}

pub fn check_new_password(password: &str) -> Result<(), IdentityError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(IdentityError::invalid(
            "password",
            format!("at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(IdentityError::invalid(
            "password",
            format!("at most {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// User management for operators. Takes effect in the database at once; a server that is
/// running learns of the cut-offs written here (password change, removal) at its next start,
/// while refresh tokens stop working immediately.
#[derive(Debug, Clone)]
pub struct UserAdmin {
    store: Arc<dyn Store>,
    passwords: Passwords,
}

impl UserAdmin {
    pub fn new(store: Arc<dyn Store>, passwords: Passwords) -> Self {
        Self { store, passwords }
    }

    pub async fn add(
        &self,
        username: &str,
        roles: &[String],
        password: &str,
    ) -> Result<User, IdentityError> {
        let username = check_username(username)?;
        let roles = check_roles(roles)?;
        check_new_password(password)?;
        let hash = self.passwords.hash(password).await?;
        let user = User {
            id: random_id(),
            username,
            roles,
            created_at: unix_now(),
        };
        match self.store.create_user(&user, &hash).await {
            Ok(()) => Ok(user),
            Err(StoreError::UsernameTaken) => Err(IdentityError::UsernameTaken),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn list(&self) -> Result<Vec<User>, IdentityError> {
        Ok(self.store.list_users().await?)
    }

    /// Sets a new password and ends the user's sessions: tokens issued before now are refused.
    pub async fn set_password(
        &self,
        username: &str,
        password: &str,
    ) -> Result<User, IdentityError> {
        check_new_password(password)?;
        let user = self.find(username).await?;
        let hash = self.passwords.hash(password).await?;
        self.store.set_password(&user.id, &hash).await?;
        self.end_sessions(&user, RevocationCause::PasswordChanged)
            .await?;
        Ok(user)
    }

    /// Removes the user with their devices and sessions; their tokens are refused.
    pub async fn remove(&self, username: &str) -> Result<User, IdentityError> {
        let user = self.find(username).await?;
        self.end_sessions(&user, RevocationCause::UserRemoved)
            .await?;
        self.store.delete_user(&user.id).await?;
        Ok(user)
    }

    async fn find(&self, username: &str) -> Result<User, IdentityError> {
        let username = normalize_username(username);
        self.store
            .user_by_name(&username)
            .await?
            .map(|c| c.user)
            .ok_or(IdentityError::UserNotFound)
    }

    async fn end_sessions(&self, user: &User, cause: RevocationCause) -> Result<(), IdentityError> {
        let now = unix_now();
        self.store
            .record_cutoff(&SubjectCutoff {
                sub: user.id.clone(),
                not_before: now + 1,
                forget_after: None,
            })
            .await?;
        self.store
            .revoke_user_sessions(&user.id, cause.as_str(), now)
            .await?;
        Ok(())
    }

    /// On a first start (no users at all) creates `admin` with a random password written to
    /// `data_dir/initial-admin-password` (mode 0600). Returns that file's path when it did.
    pub async fn bootstrap_admin(&self, data_dir: &Path) -> Result<Option<PathBuf>, IdentityError> {
        if self.store.count_users().await? > 0 {
            return Ok(None);
        }
        let password = initial_password();
        let path = data_dir.join(INITIAL_ADMIN_PASSWORD_FILE);
        // Written before the user exists: a failure here leaves no admin nobody can log in as.
        write_private(&path, &password)
            .map_err(|e| IdentityError::Setup(format!("cannot write {}: {e}", path.display())))?;
        match self
            .add(INITIAL_ADMIN, &[ADMIN_ROLE.to_string()], &password)
            .await
        {
            Ok(_) => Ok(Some(path)),
            // Another process created it at the same moment.
            Err(IdentityError::UsernameTaken) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// 24 random bytes, base64url: 192 bits an operator can paste. Never with a leading `-`, which
/// every command line it is pasted into (`signet-bench --password -x…`) would read as a flag.
fn initial_password() -> String {
    loop {
        let mut bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        let password = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        if !password.starts_with('-') {
            return password;
        }
    }
}

/// Replaces `path` with `text`, mode 0600 from the start.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    crate::settings::write_private_file(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_passwords_never_read_as_a_flag() {
        // A leading '-' comes up once in 64 draws; 2,000 draws would all but surely show one.
        for _ in 0..2000 {
            let password = initial_password();
            assert!(!password.starts_with('-'), "{password}");
            assert_eq!(password.len(), 32);
        }
    }

    #[test]
    fn usernames_normalize_and_validate() {
        assert_eq!(normalize_username(" Alice "), "alice");
        assert!(is_valid_username("alice.b-c_d@home"));
        assert!(!is_valid_username(""));
        assert!(!is_valid_username("a b"));
        assert!(!is_valid_username("ünï"));
        assert!(!is_valid_username(&"a".repeat(65)));
    }

    #[test]
    fn roles_validate_default_and_dedupe() {
        assert_eq!(check_roles(&[]).unwrap(), vec!["user"]);
        let roles = check_roles(&["Admin".into(), "user".into(), "admin".into()]).unwrap();
        assert_eq!(roles, vec!["admin", "user"]);
        assert!(check_roles(&["device".into()]).is_err());
        assert!(check_roles(&["1x".into()]).is_err());
        assert!(check_roles(&["a b".into()]).is_err());
    }
}
