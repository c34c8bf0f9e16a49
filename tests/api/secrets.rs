//! A generated secret is stored with mode 0600 and reused on the next start.

use crate::helpers::*;
use jsonwebtoken::Algorithm;
use std::os::unix::fs::PermissionsExt;

#[actix_web::test]
async fn a_generated_secret_persists_across_restarts_with_mode_0600() {
    let data_dir = tempfile::tempdir().unwrap();
    let path = data_dir.path().join("state");
    let env: Vec<(String, String)> = vec![
        ("SIGNET__SERVER__LISTEN".into(), "127.0.0.1:0".into()),
        (
            "SIGNET__SERVER__DATA_DIR".into(),
            path.display().to_string(),
        ),
        ("SIGNET__SERVER__WORKERS".into(), "1".into()),
    ];
    let settings = signet::settings::load_from_str("", std::path::Path::new("t"), env).unwrap();
    let first = signet::Application::build(settings.clone()).await.unwrap();
    for name in ["jwt.secret", "envelope.secret"] {
        let meta = std::fs::metadata(path.join(name)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
    }
    let dir_mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
    let secret = std::fs::read_to_string(path.join("jwt.secret")).unwrap();
    let envelope = std::fs::read_to_string(path.join("envelope.secret")).unwrap();
    assert!(secret.trim().len() >= 64);
    assert_ne!(secret, envelope, "each secret is generated on its own");
    drop(first);

    let second = spawn_with_settings(settings, data_dir).await;
    assert!(second.data_dir.path().join("state/jwt.secret").exists());
    assert_eq!(
        std::fs::read_to_string(path.join("jwt.secret")).unwrap(),
        secret
    );
    // A token signed with the stored secret verifies on the restarted server.
    let token = sign_hs(secret.trim(), None, Algorithm::HS256, &claims("restart"));
    assert_eq!(second.me(Some(&token)).await.0, 200);
}
