//! Graceful shutdown: the trigger (what SIGTERM and SIGINT do) stops the listener and ends
//! `run_until_stopped` within the shutdown timeout.

use crate::helpers::test_settings;
use signet::Application;
use std::time::Duration;

#[actix_web::test]
async fn shutdown_stops_accepting_and_ends_the_server() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let settings = test_settings(
        data_dir.path(),
        &[("SIGNET__SERVER__SHUTDOWN_TIMEOUT_SECS", "2")],
    );
    let app = Application::build(settings).await.expect("server builds");
    let address = app.address();
    let trigger = app.shutdown_trigger();
    let server = actix_web::rt::spawn(app.run_until_stopped());
    let health = awc::Client::default()
        .get(format!("http://{address}/healthz"))
        .send()
        .await
        .expect("the server answers before shutdown");
    assert_eq!(health.status().as_u16(), 200);

    trigger.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stops within the shutdown timeout");
    ended.expect("the server task").expect("a clean stop");
    assert!(
        std::net::TcpStream::connect(address).is_err(),
        "the listener is closed after shutdown"
    );
}
