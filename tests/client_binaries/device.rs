//! The real `signet-device` binary against the real Signet server, started in-process on port 0:
//! provisioned through the identity API, connected to `/hubs/home` with its device token.

use crate::cluster_harness::SignetCluster;
use crate::support::proxy::Proxy;
use crate::support::test_ca::TestCa;
use crate::support::DeviceProcess;
use crate::Test;
use serde_json::{json, Value};
use signet::identity::{Passwords, UserAdmin};
use signet::protocol::{CompletionResult, HubMessage};
use signet::settings;
use signet::store::Store;
use signet::Application;
use signet_device::config::ServerUrl;
use signet_device::hub::{HubConnection, HubReceiver, HubSender, Incoming};
use signet_protocol::envelope::{EnvelopeBuilder, MessageKey};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);
const JWT_SECRET: &str = "device-test-secret-0123456789-abcdefghijklmnopqrstuvwxyz";
const USER_PASSWORD: &str = "correct horse battery staple";

struct Server {
    url: String,
    address: std::net::SocketAddr,
    data_dir: tempfile::TempDir,
    client: awc::Client,
    settings: settings::Settings,
    store: Arc<dyn Store>,
}

async fn start_server() -> Server {
    start_server_with(None).await
}

async fn start_server_with(tls: Option<&TestCa>) -> Server {
    start_server_tls(tls, false).await
}

/// A server over HTTPS with `tls`'s certificate when given, requiring client certificates
/// from the same CA with `mutual`.
async fn start_server_tls(tls: Option<&TestCa>, mutual: bool) -> Server {
    let data_dir = tempfile::tempdir().unwrap();
    let mut env = vec![
        ("SIGNET__SERVER__LISTEN", "127.0.0.1:0".to_string()),
        (
            "SIGNET__SERVER__DATA_DIR",
            data_dir.path().display().to_string(),
        ),
        ("SIGNET__SERVER__WORKERS", "1".to_string()),
        ("SIGNET__JWT__SECRET", JWT_SECRET.to_string()),
        // Cheap argon2 so the admin login is quick; the defaults are the secure ones.
        (
            "SIGNET__IDENTITY__PASSWORD_HASH_MEMORY_KIB",
            "64".to_string(),
        ),
        (
            "SIGNET__IDENTITY__PASSWORD_HASH_ITERATIONS",
            "1".to_string(),
        ),
    ];
    if let Some(tls) = tls {
        env.push((
            "SIGNET__TLS__CERT_FILE",
            tls.cert_file.display().to_string(),
        ));
        env.push(("SIGNET__TLS__KEY_FILE", tls.key_file.display().to_string()));
        if mutual {
            env.push((
                "SIGNET__TLS__CLIENT_CA_FILE",
                tls.ca_file.display().to_string(),
            ));
        }
    }
    let env = env.into_iter().map(|(k, v)| (k.to_string(), v));
    let settings = settings::load_from_str("", std::path::Path::new("test"), env).unwrap();
    let app = Application::build(settings.clone()).await.unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", app.address());
    let address = app.address();
    let store = app.state().store.clone();
    actix_rt::spawn(app.run_until_stopped());
    Server {
        url,
        address,
        data_dir,
        client: tls.map_or_else(awc::Client::default, TestCa::http_client),
        settings,
        store,
    }
}

impl Server {
    async fn request(&self, method: &str, path: &str, bearer: &str, body: Value) -> (u16, Value) {
        let url = format!("{}{path}", self.url);
        let request = match method {
            "POST" => self.client.post(url),
            "DELETE" => self.client.delete(url),
            _ => self.client.get(url),
        };
        let mut response = request.bearer_auth(bearer).send_json(&body).await.unwrap();
        let bytes = response.body().await.unwrap();
        (
            response.status().as_u16(),
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Logs in as the `admin` generated on first start: `{accessToken, messageKey, ...}`.
    async fn admin_session(&self) -> Value {
        let password =
            std::fs::read_to_string(self.data_dir.path().join("initial-admin-password")).unwrap();
        let body = json!({"username": "admin", "password": password.trim()});
        let (status, session) = self.request("POST", "/api/auth/login", "", body).await;
        assert_eq!(status, 200, "{session}");
        session
    }

    /// Creates a user with role `user`, as `signet user add` does, and logs in:
    /// `{accessToken, messageKey, ...}`.
    async fn user_session(&self, username: &str) -> Value {
        let passwords = Passwords::new(&self.settings.identity).await.unwrap();
        UserAdmin::new(self.store.clone(), passwords)
            .add(username, &["user".to_string()], USER_PASSWORD)
            .await
            .unwrap();
        let body = json!({"username": username, "password": USER_PASSWORD});
        let (status, session) = self.request("POST", "/api/auth/login", "", body).await;
        assert_eq!(status, 200, "{session}");
        session
    }

    /// `POST /api/devices`: the new device's id and key.
    async fn provision(&self, owner_token: &str, name: &str) -> (String, String) {
        let (status, device) = self
            .request("POST", "/api/devices", owner_token, json!({ "name": name }))
            .await;
        assert_eq!(status, 201, "{device}");
        (
            device["deviceId"].as_str().unwrap().to_string(),
            device["deviceKey"].as_str().unwrap().to_string(),
        )
    }

    /// A hub client for a person, built on the device crate's own connection code.
    async fn hub_client(&self, token: &str) -> HubClient {
        let server = ServerUrl::parse(&self.url, false).unwrap();
        let (_, receiver, sender) =
            HubConnection::connect(&self.client, &server, "/hubs/home", token, false)
                .await
                .unwrap();
        HubClient {
            receiver,
            sender,
            invocations: Vec::new(),
        }
    }
}

struct HubClient {
    receiver: HubReceiver,
    sender: HubSender,
    /// Server-to-client invocations seen while waiting for completions: (target, arguments).
    invocations: Vec<(String, Vec<Value>)>,
}

impl HubClient {
    /// Invokes `target` and waits for its completion.
    async fn call(&mut self, target: &str, arguments: Vec<Value>) -> CompletionResult {
        let id = self.sender.invoke(target, arguments).await.unwrap();
        loop {
            match self.next_message().await {
                HubMessage::Completion {
                    invocation_id,
                    result,
                    ..
                } if invocation_id == id => return result,
                _ => continue,
            }
        }
    }

    /// The arguments of the next server-to-client invocation of `target`.
    async fn invoked(&mut self, target: &str) -> Vec<Value> {
        if let Some(index) = self.invocations.iter().position(|(t, _)| t == target) {
            return self.invocations.remove(index).1;
        }
        loop {
            self.next_message().await;
            if let Some(index) = self.invocations.iter().position(|(t, _)| t == target) {
                return self.invocations.remove(index).1;
            }
        }
    }

    async fn next_message(&mut self) -> HubMessage {
        loop {
            let incoming = tokio::time::timeout(WAIT, self.receiver.next())
                .await
                .expect("a hub message in time")
                .unwrap();
            match incoming {
                Incoming::Message(HubMessage::Invocation {
                    target, arguments, ..
                }) => {
                    self.invocations.push((target.clone(), arguments.clone()));
                    return HubMessage::invocation(target, arguments);
                }
                Incoming::Message(message) => return message,
                Incoming::SocketPing(payload) => self.sender.pong(payload).await.unwrap(),
                Incoming::Closed => panic!("the server closed the test client's connection"),
            }
        }
    }

    /// Calls `DisconnectUser(sub)` until it closes a connection, which shows that `sub` was
    /// connected: the device was online.
    async fn kick_when_online(&mut self, sub: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match self.call("DisconnectUser", vec![json!(sub)]).await {
                CompletionResult::Result(closed) if closed == json!(1) => return,
                CompletionResult::Result(_) => {}
                other => panic!("DisconnectUser failed: {other:?}"),
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{sub} never came online"
            );
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn start_device(server: &Server, id: &str, key: &str) -> DeviceProcess {
    start_device_at(&server.url, id, key)
}

fn start_device_at(server: &str, id: &str, key: &str) -> DeviceProcess {
    DeviceProcess::start(server, id, key, &["--telemetry-interval", "1s"])
}

async fn a_provisioned_device_comes_online_and_obeys_an_admin_kick() {
    let server = start_server().await;
    let admin = server.admin_session().await;
    let admin_token = admin["accessToken"].as_str().unwrap();
    let (id, key) = server.provision(admin_token, "front door").await;
    let mut device = start_device(&server, &id, &key);

    // Kick only once the device is connected: a kick between its negotiate and its socket
    // closes the negotiated connection, the socket then gets 404 and the device simply retries.
    device.wait_for_log("connected to the hub", WAIT).await;
    let mut client = server.hub_client(admin_token).await;
    client.kick_when_online(&format!("device:{id}")).await;

    // Kicked: `allowReconnect: false`, the key still works, so exit 1 with the server's reason.
    let status = device.wait_exit(WAIT).await;
    assert_eq!(status.code(), Some(1), "{}", device.log());
    assert!(
        device.log().contains("Disconnected by an administrator"),
        "{}",
        device.log()
    );
    device.assert_log_free_of(&[&key]);
}

async fn a_removed_device_exits_3() {
    let server = start_server().await;
    let admin = server.admin_session().await;
    let admin_token = admin["accessToken"].as_str().unwrap();
    let (id, key) = server.provision(admin_token, "back door").await;
    let mut device = start_device(&server, &id, &key);
    device.wait_for_log("connected to the hub", WAIT).await;
    let (status, body) = server
        .request(
            "DELETE",
            &format!("/api/devices/{id}"),
            admin_token,
            Value::Null,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    // A close that forbids reconnecting: the server's own on removal, if it closes the device's
    // connection itself, else an admin kick. Either way the device tries its key and gets 401.
    let mut client = server.hub_client(admin_token).await;
    let kicked = client
        .call("DisconnectUser", vec![json!(format!("device:{id}"))])
        .await;
    assert!(
        matches!(&kicked, CompletionResult::Result(n) if *n == json!(0) || *n == json!(1)),
        "{kicked:?}"
    );
    let status = device.wait_exit(WAIT).await;
    assert_eq!(status.code(), Some(3), "{}", device.log());
    assert!(device.log().contains("refused the device key"));
}

/// Signs a `SendCommand` as the user's session does.
fn send_command(key: &MessageKey, device_id: &str, command: &str) -> Value {
    let message = json!({"deviceId": device_id, "command": command, "args": null});
    EnvelopeBuilder::new(key, "/hubs/home", "SendCommand").build(&message.to_string())
}

async fn a_user_opens_the_door_through_the_real_device() {
    let server = start_server().await;
    let url = server.url.clone();
    opens_the_door(&server, &url).await;
}

/// The home flows across nodes: alice on the first node of the cluster harness (three
/// `signet serve` processes on one Redis and one PostgreSQL), her real device on the second.
async fn a_user_on_one_node_opens_the_door_of_a_real_device_on_another() {
    let redis = crate::redis_server::shared();
    let prefix = crate::redis_server::prefix("home");
    let cluster = SignetCluster::start(3, &redis.url(), &prefix, &[]).await;
    let (settings, store) = cluster.settings_and_store().await;
    let user_node = &cluster.nodes[0];
    let server = Server {
        url: user_node.url(""),
        address: user_node.address,
        data_dir: tempfile::tempdir().unwrap(),
        client: awc::Client::default(),
        settings,
        store,
    };
    opens_the_door(&server, &cluster.nodes[1].url("")).await;
}

/// `server`'s new user alice provisions a door whose real device connects to `device_server`
/// (the same server, or another node): she sees it online, opens the door, gets the device's
/// result and its telemetry, and an unknown command is answered with an error.
async fn opens_the_door(server: &Server, device_server: &str) {
    let alice = server.user_session("alice").await;
    let alice_token = alice["accessToken"].as_str().unwrap();
    let alice_key = MessageKey::from_base64url(alice["messageKey"].as_str().unwrap()).unwrap();
    let (id, key) = server.provision(alice_token, "front door").await;
    let mut client = server.hub_client(alice_token).await;
    let device = start_device_at(device_server, &id, &key);

    // Online: the owner is told, and the device is listed as online (at once on one node; a
    // node learns another's presence within a quarter second).
    wait_online(&mut client, &id).await;
    let online = json!([{"deviceId": id, "name": "front door", "online": true}]);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let listed = client.call("ListDevices", vec![]).await;
        if listed == CompletionResult::Result(online.clone()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{listed:?}");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }

    let sent = client
        .call(
            "SendCommand",
            vec![send_command(&alice_key, &id, "OPEN_DOOR")],
        )
        .await;
    let CompletionResult::Result(sent) = sent else {
        panic!("SendCommand: {sent:?}");
    };
    let command_id = sent["commandId"].as_str().unwrap().to_string();

    // The device verified the server's envelope, acted, and its signed result reached alice.
    let result = loop {
        let arguments = client.invoked("CommandResult").await;
        if arguments[0]["commandId"] == json!(command_id) {
            break arguments[0].clone();
        }
    };
    assert_eq!(
        result,
        json!({"commandId": command_id, "deviceId": id, "status": "ok",
               "result": {"door": "opened", "lock": "unlocked", "doorOpenings": 1}})
    );

    // Its signed telemetry reaches the owner too, and shows the door unlocked.
    loop {
        let arguments = client.invoked("Telemetry").await;
        let report = &arguments[0];
        if report["deviceId"] == json!(id)
            && report["kind"] == "state"
            && report["data"]["lock"] == "unlocked"
        {
            break;
        }
    }

    // An unknown command is answered with an error, and the device stays up.
    let sent = client
        .call("SendCommand", vec![send_command(&alice_key, &id, "DANCE")])
        .await;
    let CompletionResult::Result(sent) = sent else {
        panic!("SendCommand: {sent:?}");
    };
    let result = loop {
        let arguments = client.invoked("CommandResult").await;
        if arguments[0]["commandId"] == sent["commandId"] {
            break arguments[0].clone();
        }
    };
    assert_eq!(result["status"], "error", "{result}");

    let log = device.log();
    assert!(!log.contains("refused an invocation"), "{log}");
    device.assert_log_free_of(&[&key, alice_token]);
}

/// The end-to-end scenario with the official JavaScript client on the user's side: the
/// user sends OPEN_DOOR, the real device verifies and executes it, and the user receives the
/// device's result.
async fn the_official_js_client_opens_the_door_of_a_real_device() {
    let conformance = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    assert!(
        conformance.join("node_modules/@microsoft/signalr").is_dir(),
        "run `npm ci --prefix tests/conformance` (./scripts/test.sh does it)"
    );
    let server = start_server().await;
    let owner = server.user_session("door-owner").await;
    let token = owner["accessToken"].as_str().unwrap();
    let (id, key) = server.provision(token, "front door").await;
    let device = start_device(&server, &id, &key);

    let mut user = std::process::Command::new("node");
    user.arg(conformance.join("e2e/open-door.mjs"))
        .env("SIGNET_URL", &server.url)
        .env("SIGNET_ACCESS_TOKEN", token)
        .env("SIGNET_MESSAGE_KEY", owner["messageKey"].as_str().unwrap())
        .env("SIGNET_DEVICE_ID", &id);
    // The server runs on this test's runtime: wait for node on another thread.
    let user = tokio::task::spawn_blocking(move || user.output());
    let output = tokio::time::timeout(WAIT * 2, user)
        .await
        .expect("the JS client finished in time")
        .expect("the waiting thread")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "node failed: {}\n{stdout}\ndevice log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        device.log()
    );
    let result: Value = serde_json::from_str(stdout.trim()).expect("the result as JSON");
    assert_eq!(result["deviceId"], json!(id));
    assert_eq!(result["status"], json!("ok"), "{result}");
    device.assert_log_free_of(&[&key, token]);
}

/// Sends `command` to the device as `key`'s user; returns its `commandId`.
async fn command_id_of(
    client: &mut HubClient,
    key: &MessageKey,
    device: &str,
    command: &str,
) -> String {
    let sent = client
        .call("SendCommand", vec![send_command(key, device, command)])
        .await;
    let CompletionResult::Result(sent) = sent else {
        panic!("SendCommand: {sent:?}");
    };
    sent["commandId"].as_str().unwrap().to_string()
}

/// The next `CommandResult` the user receives, within `WAIT`.
async fn next_result(client: &mut HubClient) -> Value {
    let arguments = tokio::time::timeout(WAIT, client.invoked("CommandResult"))
        .await
        .expect("a CommandResult in time");
    arguments[0].clone()
}

/// Waits until the user is told the device is online.
async fn wait_online(client: &mut HubClient, id: &str) {
    loop {
        let status = client.invoked("DeviceStatus").await;
        if status[0] == json!({"deviceId": id, "online": true}) {
            return;
        }
    }
}

async fn the_device_works_over_https_and_wss_with_a_private_ca() {
    let ca = TestCa::new();
    let server = start_server_with(Some(&ca)).await;
    let alice = server.user_session("alice").await;
    let alice_token = alice["accessToken"].as_str().unwrap();
    let alice_key = MessageKey::from_base64url(alice["messageKey"].as_str().unwrap()).unwrap();
    let (id, key) = server.provision(alice_token, "front door").await;
    let mut client = server.hub_client(alice_token).await;
    let ca_file = ca.ca_file.display().to_string();
    let device = DeviceProcess::start(&server.url, &id, &key, &["--ca-file", &ca_file]);
    wait_online(&mut client, &id).await;

    let command_id = command_id_of(&mut client, &alice_key, &id, "OPEN_DOOR").await;
    let result = next_result(&mut client).await;
    assert_eq!(result["commandId"], json!(command_id));
    assert_eq!(result["status"], "ok", "{result}");
    device.assert_log_free_of(&[&key, alice_token]);
}

async fn the_device_presents_its_client_certificate_to_a_mutual_tls_server() {
    let ca = TestCa::new();
    let server = start_server_tls(Some(&ca), true).await;
    let admin = server.admin_session().await;
    let admin_token = admin["accessToken"].as_str().unwrap();
    let (id, key) = server.provision(admin_token, "garage").await;
    let ca_file = ca.ca_file.display().to_string();
    let cert = ca.client_cert_file.display().to_string();
    let client_key = ca.client_key_file.display().to_string();

    let without = DeviceProcess::start(&server.url, &id, &key, &["--ca-file", &ca_file]);
    without
        .wait_for_log("cannot obtain an access token", WAIT)
        .await;
    drop(without);

    let mut device = DeviceProcess::start(
        &server.url,
        &id,
        &key,
        &[
            "--ca-file",
            &ca_file,
            "--client-cert",
            &cert,
            "--client-key",
            &client_key,
        ],
    );
    device.wait_for_log("connected to the hub", WAIT).await;
    // The certificate does not replace the token: the device is who its token says.
    let mut client = server.hub_client(admin_token).await;
    client.kick_when_online(&format!("device:{id}")).await;
    assert_eq!(
        device.wait_exit(WAIT).await.code(),
        Some(1),
        "{}",
        device.log()
    );
}

async fn without_the_ca_the_device_names_the_host_and_the_certificate_problem() {
    let ca = TestCa::new();
    let server = start_server_with(Some(&ca)).await;
    let admin = server.admin_session().await;
    let (id, key) = server
        .provision(admin["accessToken"].as_str().unwrap(), "door")
        .await;
    let device = DeviceProcess::start(&server.url, &id, &key, &[]);
    device
        .wait_for_log("the TLS certificate of 127.0.0.1 is not trusted", WAIT)
        .await;
    assert!(device.log().contains("UnknownIssuer"), "{}", device.log());
    device.assert_log_free_of(&[&key]);
}

async fn plain_http_to_another_host_is_refused_and_a_config_file_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("device.toml");
    std::fs::write(
        &file,
        "server = \"http://signet.example\"\ndevice_id = \"door-1\"\n",
    )
    .unwrap();
    let out = crate::device_command()
        .args(["--config", file.to_str().unwrap()])
        .env("SIGNET_DEVICE_KEY", "k")
        .env_remove("SIGNET_SERVER")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--allow-insecure-http"), "{stderr}");
}

/// Commands accepted while the actuator is busy are answered in order, and results computed
/// while the connection is down reach the user after the device reconnects, each once.
async fn results_computed_during_an_outage_are_delivered_in_order_after_reconnecting() {
    let server = start_server().await;
    let proxy = Proxy::start(server.address).await;
    let alice = server.user_session("alice").await;
    let alice_token = alice["accessToken"].as_str().unwrap();
    let alice_key = MessageKey::from_base64url(alice["messageKey"].as_str().unwrap()).unwrap();
    let (id, key) = server.provision(alice_token, "front door").await;
    let mut client = server.hub_client(alice_token).await;
    let device = DeviceProcess::start(
        &format!("http://{}", proxy.address),
        &id,
        &key,
        &["--actuation-time", "1500ms", "--max-backoff", "1s"],
    );
    wait_online(&mut client, &id).await;

    let first = command_id_of(&mut client, &alice_key, &id, "LIGHT_ON").await;
    let second = command_id_of(&mut client, &alice_key, &id, "OPEN_DOOR").await;
    while device.log().matches("accepted a verified command").count() < 2 {
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    // Both were accepted, neither finished: the link goes down for longer than both take.
    proxy.cut(Duration::from_secs(4));

    let results = [
        next_result(&mut client).await,
        next_result(&mut client).await,
    ];
    assert_eq!(results[0]["commandId"], json!(first), "{results:?}");
    assert_eq!(results[1]["commandId"], json!(second), "{results:?}");
    assert!(results.iter().all(|r| r["status"] == "ok"), "{results:?}");
    let log = device.log();
    assert!(log.contains("connection lost"), "{log}");
    assert!(
        log.contains("sending results left from the last connection"),
        "{log}"
    );
    assert_eq!(
        log.matches("executed a verified command").count(),
        2,
        "{log}"
    );
}

pub const TESTS: &[Test] = crate::actix_tests!(
    a_provisioned_device_comes_online_and_obeys_an_admin_kick,
    a_removed_device_exits_3,
    a_user_opens_the_door_through_the_real_device,
    a_user_on_one_node_opens_the_door_of_a_real_device_on_another,
    the_official_js_client_opens_the_door_of_a_real_device,
    the_device_works_over_https_and_wss_with_a_private_ca,
    the_device_presents_its_client_certificate_to_a_mutual_tls_server,
    without_the_ca_the_device_names_the_host_and_the_certificate_problem,
    plain_http_to_another_host_is_refused_and_a_config_file_is_read,
    results_computed_during_an_outage_are_delivered_in_order_after_reconnecting,
);
