//! Revocation is linearizable with whatever races it: a refresh, a device-token exchange or a
//! connection that is under way while an administrator revokes a user (or an owner re-keys a
//! device) either completes before the revocation, and is then refused by it, or after it, and
//! then fails. Each test runs many trials concurrently against one real server and counts the
//! tokens and connections that survive: there must be none.

use crate::helpers::*;
use crate::ws_client::{admin_token, spawn_hub, HubServer, PROMPT};
use futures_util::future::join_all;
use serde_json::json;
use signet::connection::{admit, Connection};
use signet::identity::{Passwords, UserAdmin};
use std::time::Duration;

/// Trials that run at once: enough to race, few enough for SQLite's single writer.
const BATCH: usize = 20;

/// Concurrent tasks per trial that keep asking for tokens while the revocation happens.
const RACERS: usize = 4;

/// A spread of delays (ms) so the revocation lands at different points of the racers' loops:
/// real time on purpose, as the races are between the server's threads.
fn delay(trial: usize) -> Duration {
    Duration::from_millis((trial * 7 % 23) as u64 + 2)
}

fn racing_app_env() -> Vec<(&'static str, &'static str)> {
    vec![
        // Two workers, so the revocation and the racers run in parallel, as in production.
        ("SIGNET__SERVER__WORKERS", "2"),
        ("SIGNET__IDENTITY__MAX_CONCURRENT_PASSWORD_HASHES", "64"),
        ("SIGNET__IDENTITY__PASSWORD_HASH_WAIT_MS", "30000"),
        // PostgreSQL: enough connections that the racers wait for the race, not the pool.
        ("SIGNET__STORE__MAX_CONNECTIONS", "12"),
    ]
}

/// Trials per racing test: fewer on PostgreSQL, where every statement is a round trip to the
/// shared test cluster and the race is the database's anyway.
fn trials(store: Backend) -> usize {
    match store {
        Backend::Sqlite => 100,
        Backend::Postgres => 40,
    }
}

async fn revoke(app: &TestApp, admin: &str, username: &str) {
    let answer = app
        .post(
            &format!("/api/admin/users/{username}/revoke"),
            Some(admin),
            &json!({}),
        )
        .await;
    assert_eq!(answer.status, 204, "{answer:?}");
}

/// Every token in `issued` must be refused now.
async fn assert_all_refused(app: &TestApp, issued: &[String], what: &str) {
    let mut survivors = 0;
    for token in issued {
        if app.me(Some(token)).await.0 != 401 {
            survivors += 1;
        }
    }
    assert_eq!(
        survivors,
        0,
        "{survivors} of {} {what} outlived the revocation",
        issued.len()
    );
}

/// Refreshes along one session's chain until the server refuses; returns the access tokens.
async fn keep_refreshing(app: &TestApp, mut refresh_token: String) -> Vec<String> {
    let mut issued = Vec::new();
    loop {
        let answer = app.refresh(&refresh_token).await;
        if answer.status != 200 {
            assert_eq!(
                (answer.status, answer.error()),
                (401, "invalid_refresh_token"),
                "{answer:?}"
            );
            return issued;
        }
        issued.push(answer.str("accessToken"));
        refresh_token = answer.str("refreshToken");
    }
}

async fn refresh_trial(app: &TestApp, admin: &str, trial: usize) -> Vec<String> {
    let username = format!("refresher{trial}");
    app.create_user(&username, &["user"], TEST_PASSWORD).await;
    let mut chains = Vec::new();
    for _ in 0..RACERS {
        let login = app.login(&username, TEST_PASSWORD).await;
        assert_eq!(login.status, 200, "{login:?}");
        chains.push(login.str("refreshToken"));
    }
    let racers = join_all(chains.into_iter().map(|t| keep_refreshing(app, t)));
    let revocation = async {
        tokio::time::sleep(delay(trial)).await;
        revoke(app, admin, &username).await;
    };
    let (issued, ()) = futures_util::join!(racers, revocation);
    issued.concat()
}

/// Runs `trials` trials, `BATCH` at a time, and gathers the tokens each one was issued.
async fn in_batches<F, Fut>(trials: usize, trial: F) -> Vec<String>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Vec<String>>,
{
    let mut issued = Vec::new();
    let numbers: Vec<usize> = (0..trials).collect();
    for batch in numbers.chunks(BATCH) {
        let tokens = join_all(batch.iter().map(|&t| trial(t))).await;
        issued.extend(tokens.into_iter().flatten());
    }
    issued
}

async fn refreshes_racing_an_admin_revoke_leave_no_valid_token(store: Backend) {
    let app = spawn_app_on(store, &racing_app_env()).await;
    let admin = app.admin_token().await;
    let trials = trials(store);
    let issued = in_batches(trials, |t| refresh_trial(&app, &admin, t)).await;
    assert!(
        issued.len() >= trials,
        "the refreshers hardly ran: {}",
        issued.len()
    );
    assert_all_refused(&app, &issued, "refreshed access tokens").await;
}

/// Trades `device_key` for tokens until the server refuses it (or a bound, so a key that
/// outlives its revocation fails the test rather than hangs it); returns the tokens.
async fn keep_exchanging(app: &TestApp, device_id: &str, device_key: &str) -> Vec<String> {
    let mut issued = Vec::new();
    while issued.len() < 500 {
        let answer = app
            .post(
                "/api/auth/device-token",
                None,
                &json!({"deviceId": device_id, "deviceKey": device_key}),
            )
            .await;
        if answer.status != 200 {
            assert_eq!(
                (answer.status, answer.error()),
                (401, "invalid_device_credentials"),
                "{answer:?}"
            );
            return issued;
        }
        issued.push(answer.str("accessToken"));
    }
    issued
}

/// A user with one device: (owner's access token, device id, device key).
async fn owner_with_device(app: &TestApp, username: &str) -> (String, String, String) {
    app.create_user(username, &["user"], TEST_PASSWORD).await;
    let login = app.login(username, TEST_PASSWORD).await;
    assert_eq!(login.status, 200, "{login:?}");
    let access = login.str("accessToken");
    let device = app
        .post("/api/devices", Some(&access), &json!({"name": "racer"}))
        .await;
    assert_eq!(device.status, 201, "{device:?}");
    (access, device.str("deviceId"), device.str("deviceKey"))
}

async fn exchange_works(app: &TestApp, device_id: &str, device_key: &str) -> bool {
    let answer = app
        .post(
            "/api/auth/device-token",
            None,
            &json!({"deviceId": device_id, "deviceKey": device_key}),
        )
        .await;
    answer.status == 200 && app.me(Some(&answer.str("accessToken"))).await.0 == 200
}

async fn rekey_trial(app: &TestApp, trial: usize) -> Vec<String> {
    let (owner, device_id, old_key) = owner_with_device(app, &format!("rekeyer{trial}")).await;
    let racers = join_all((0..RACERS).map(|_| keep_exchanging(app, &device_id, &old_key)));
    let rekey = async {
        tokio::time::sleep(delay(trial)).await;
        let answer = app
            .post(
                &format!("/api/devices/{device_id}/rotate-key"),
                Some(&owner),
                &json!({}),
            )
            .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.str("deviceKey")
    };
    let (issued, new_key) = futures_util::join!(racers, rekey);
    assert!(exchange_works(app, &device_id, &new_key).await);
    issued.concat()
}

#[actix_web::test]
async fn device_exchanges_racing_a_rekey_leave_no_valid_token() {
    let app = spawn_app_with(&racing_app_env()).await;
    let issued = in_batches(100, |t| rekey_trial(&app, t)).await;
    assert!(
        issued.len() >= 100,
        "the exchangers hardly ran: {}",
        issued.len()
    );
    assert_all_refused(&app, &issued, "device tokens of the old key").await;
}

/// Issue 16 item 2 under the same race: an owner's revoke also makes their devices' keys
/// unusable, and the owner, once logged in again, gives the device a new key that works.
async fn owner_revoke_trial(app: &TestApp, admin: &str, trial: usize) -> Vec<String> {
    let username = format!("owner{trial}");
    let (_, device_id, old_key) = owner_with_device(app, &username).await;
    let racers = join_all((0..RACERS).map(|_| keep_exchanging(app, &device_id, &old_key)));
    let revocation = async {
        tokio::time::sleep(delay(trial)).await;
        revoke(app, admin, &username).await;
    };
    let (issued, ()) = futures_util::join!(racers, revocation);
    assert!(!exchange_works(app, &device_id, &old_key).await);
    let login = app.login(&username, TEST_PASSWORD).await;
    assert_eq!(login.status, 200, "{login:?}");
    let rotated = app
        .post(
            &format!("/api/devices/{device_id}/rotate-key"),
            Some(&login.str("accessToken")),
            &json!({}),
        )
        .await;
    assert_eq!(rotated.status, 200, "{rotated:?}");
    assert!(exchange_works(app, &device_id, &rotated.str("deviceKey")).await);
    assert!(!exchange_works(app, &device_id, &old_key).await);
    issued.concat()
}

async fn an_owner_revoke_racing_device_exchanges_ends_the_keys_and_every_token(store: Backend) {
    let app = spawn_app_on(store, &racing_app_env()).await;
    let admin = app.admin_token().await;
    let issued = in_batches(trials(store), |t| owner_revoke_trial(&app, &admin, t)).await;
    assert_all_refused(&app, &issued, "device tokens").await;
}

/// Connections the server holds open whose token is revoked.
async fn open_revoked_connections(server: &HubServer) -> usize {
    let mut open = 0;
    for connection in server.state.connections.all() {
        if !connection.is_closed()
            && server
                .state
                .auth
                .check_revocation(&connection.principal())
                .await
                .is_err()
        {
            open += 1;
        }
    }
    open
}

#[actix_web::test]
async fn connections_opened_during_a_revoke_do_not_outlive_it() {
    let server = spawn_hub(&[("SIGNET__SERVER__WORKERS", "2")]).await;
    let passwords = Passwords::new(&server.state.settings.identity)
        .await
        .unwrap();
    let users = UserAdmin::new(server.state.store.clone(), passwords);
    let admin = admin_token("root");
    let admin = admin.as_str();
    let server = &server;
    let trials: Vec<usize> = (0..300).collect();
    for batch in trials.chunks(30) {
        let mut tokens = Vec::new();
        for &trial in batch {
            let user = users
                .add(
                    &format!("connector{trial}"),
                    &["user".to_string()],
                    TEST_PASSWORD,
                )
                .await
                .unwrap();
            tokens.push((trial, user_token(&user.id)));
        }
        join_all(tokens.iter().map(|(trial, token)| async move {
            let negotiates = join_all(
                (0..RACERS).map(|_| server.negotiate("?negotiateVersion=1", Some(token), None)),
            );
            let revocation = async {
                tokio::time::sleep(delay(*trial) / 4).await;
                let mut res = server
                    .http
                    .post(server.url(&format!("/api/admin/users/connector{trial}/revoke")))
                    .bearer_auth(admin)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status().as_u16(), 204, "{:?}", res.body().await);
            };
            let (answers, ()) = futures_util::join!(negotiates, revocation);
            for answer in answers {
                assert!(matches!(answer.status, 200 | 401), "{}", answer.status);
            }
        }))
        .await;
    }
    // Revocation reaches live connections through an event task: give it its moment.
    let deadline = tokio::time::Instant::now() + PROMPT;
    let mut open = open_revoked_connections(server).await;
    while open > 0 && tokio::time::Instant::now() < deadline {
        // Paces a poll of the (async) check, not a fixed wait.
        tokio::time::sleep(Duration::from_millis(50)).await;
        open = open_revoked_connections(server).await;
    }
    assert_eq!(open, 0, "connections with revoked tokens are still open");
}

/// The step the race above needs luck to hit, made deterministic: a connection authenticated
/// before a revocation, whose event has been applied, joins the registry afterwards (as a slow
/// negotiate would). The check after the insert closes it; nothing else would.
#[actix_web::test]
async fn a_connection_registered_after_its_revocation_is_closed_at_admission() {
    let server = spawn_hub(&[]).await;
    let passwords = Passwords::new(&server.state.settings.identity)
        .await
        .unwrap();
    let user = UserAdmin::new(server.state.store.clone(), passwords)
        .add("latecomer", &["user".to_string()], TEST_PASSWORD)
        .await
        .unwrap();
    let principal = server
        .state
        .auth
        .authenticate(&user_token(&user.id))
        .await
        .expect("valid before the revoke");
    let mut res = server
        .http
        .post(server.url("/api/admin/users/latecomer/revoke"))
        .bearer_auth(admin_token("root"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 204, "{:?}", res.body().await);
    server.wait_until_a_revocation_is_applied().await;
    let late = Connection::new(
        "late-id".into(),
        "late-token".into(),
        "home".into(),
        principal,
        8,
        &server.state.shutdown,
    );
    server.state.connections.insert(late.clone()).unwrap();
    assert!(
        !late.is_closed(),
        "nothing else closes it once the event has passed"
    );
    assert!(!admit(&server.state.auth, &late).await);
    assert!(late.is_closed());
    server.state.connections.remove(&late.token);
}

each_store!(
    refreshes_racing_an_admin_revoke_leave_no_valid_token,
    an_owner_revoke_racing_device_exchanges_ends_the_keys_and_every_token,
);
