//! The programs in `examples/` as a library user writes them: each example's hub, compiled
//! here from the example file itself, is served through the public API (`signet::Server`) on
//! port 0 and driven by the official `@microsoft/signalr` client over every transport and
//! protocol (`tests/conformance/examples/*.mjs`).

use crate::conformance::{node_test, NodeRun};
use crate::helpers::{jwt_payload, spawn_server, test_settings, TestApp};
use std::time::Duration;

#[allow(dead_code)] // the example's `main`: these tests start its hub, not the process
#[path = "../../examples/chat.rs"]
mod chat;

#[allow(dead_code)]
#[path = "../../examples/signed.rs"]
mod signed;

/// Each script runs its scenarios over four transport and protocol combinations in seconds;
/// this only stops a hung run.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(120);

/// Runs `tests/conformance/examples/{script}` against `app`, with `env` besides the URL and
/// the test secret; fails with node's report when a scenario fails.
async fn drive(app: &TestApp, script: &str, env: &[(&str, &str)]) {
    let mut command = node_test(&app.url(""), 30_000);
    command.arg(format!("tests/conformance/examples/{script}"));
    for (name, value) in env {
        command.env(name, value);
    }
    let status = NodeRun::start(command)
        .wait(
            &format!("the official clients of {script}"),
            SCRIPT_DEADLINE,
        )
        .await;
    assert!(
        status.success(),
        "the official SignalR clients failed against the example ({status}); node's report is above"
    );
}

#[actix_web::test]
async fn chat_example_rooms_reach_their_members_and_nobody_else() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let settings = test_settings(data_dir.path(), &[]);
    let server = signet::Server::new(settings.clone()).hub("chat", chat::chat_hub);
    let app = spawn_server(server, settings, data_dir).await;
    drive(&app, "chat.mjs", &[]).await;
    // The application chose its hubs: the built-in home hub is not among them.
    let negotiate = app
        .client
        .post(app.url("/hubs/home/negotiate?negotiateVersion=1"))
        .send()
        .await
        .expect("negotiate answered");
    assert_eq!(negotiate.status().as_u16(), 404);
}

#[actix_web::test]
async fn signed_example_runs_only_on_a_valid_fresh_envelope() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let settings = test_settings(data_dir.path(), &[]);
    let server = signet::Server::new(settings.clone()).hub("payments", signed::payments_hub);
    let app = spawn_server(server, settings, data_dir).await;
    // Signet's identity API comes with the server: the login answer carries the session's
    // message key, which signs the envelopes.
    let session = app.user_session("payer").await;
    let token = session["accessToken"].as_str().expect("access token");
    let key = session["messageKey"].as_str().expect("message key");
    let sub = jwt_payload(token)["sub"].as_str().expect("sub").to_string();
    drive(
        &app,
        "signed.mjs",
        &[
            ("SIGNET_ACCESS_TOKEN", token),
            ("SIGNET_MESSAGE_KEY", key),
            ("SIGNET_SUB", &sub),
        ],
    )
    .await;
}

#[actix_web::test]
async fn a_server_refuses_a_bad_or_twice_registered_hub_name() {
    for (names, expected) in [
        (&["chat", "chat"][..], "hub `chat` is registered twice"),
        (&["bad/name"][..], "hub name `bad/name`"),
        (&[""][..], "hub name ``"),
    ] {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let settings = test_settings(data_dir.path(), &[]);
        let mut server = signet::Server::new(settings);
        for name in names {
            server = server.hub(name, chat::chat_hub);
        }
        let err = match server.build().await {
            Ok(_) => panic!("{names:?} were accepted"),
            Err(err) => err.to_string(),
        };
        assert!(err.contains(expected), "{names:?}: {err}");
    }
}
