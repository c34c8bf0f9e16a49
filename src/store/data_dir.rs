//! The data directory holds the database and generated secrets, so nobody but its owner may
//! list or enter it: mode 0700, whether Signet creates it or finds it.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` (and missing parents) with mode 0700; an existing `dir` that group or others
/// may use is set to 0700, with a warning naming the mode it had.
pub fn ensure_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        tracing::warn!(
            path = %dir.display(),
            was = %format!("{mode:o}"),
            "the data directory was open to group or others; its mode is now 0700"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(dir: &Path) -> u32 {
        std::fs::metadata(dir).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_or_open_directory_ends_up_0700() {
        let root = tempfile::tempdir().unwrap();
        let fresh = root.path().join("a/b");
        ensure_private_dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        let open = root.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&open).unwrap();
        assert_eq!(mode(&open), 0o700);
    }
}
