//! One user must not starve the rest: each per-user cap refuses only the user at it, with a clear
//! error, while another user's requests keep working. And client-to-server streams are freed
//! when their invocation ends, however it ends.

use crate::helpers::{each_store, jwt_payload, user_token, Backend, TEST_PASSWORD};
use crate::ws_client::*;
use serde_json::{json, Value};
use signet::identity::{Passwords, UserAdmin};
use signet_protocol::envelope::{derive_message_key, EnvelopeBuilder, MessageKey};

pub(crate) const ENVELOPE_SECRET: &str = "envelope-master-key-for-user-limits-0123456789";

pub(crate) async fn post(
    server: &HubServer,
    path: &str,
    bearer: Option<&str>,
    body: Value,
) -> HttpAnswer {
    let mut req = server.http.post(server.url(path));
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    let mut res = req.send_json(&body).await.expect("request sent");
    let bytes = res.body().await.expect("body");
    HttpAnswer {
        status: res.status().as_u16(),
        headers: res.headers().clone(),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// The message key of a token: derived from its `sid`, or its `jti` without one.
pub(crate) fn message_key(token: &str) -> MessageKey {
    let claims = jwt_payload(token);
    let session = claims["sid"]
        .as_str()
        .or(claims["jti"].as_str())
        .expect("a session id");
    derive_message_key(ENVELOPE_SECRET.as_bytes(), session)
}

/// A signed call of `target` carrying `message`.
pub(crate) fn signed(key: &MessageKey, target: &str, message: &Value) -> Value {
    json!([EnvelopeBuilder::new(key, "/hubs/home", target).build(&message.to_string())])
}

/// A local user, logged in: its access token.
pub(crate) async fn login(server: &HubServer, username: &str) -> String {
    let passwords = Passwords::new(&server.state.settings.identity)
        .await
        .unwrap();
    UserAdmin::new(server.state.store.clone(), passwords)
        .add(username, &["user".to_string()], TEST_PASSWORD)
        .await
        .expect("user created");
    let answer = post(
        server,
        "/api/auth/login",
        None,
        json!({"username": username, "password": TEST_PASSWORD}),
    )
    .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.body["accessToken"].as_str().unwrap().to_string()
}

/// A device of `owner_token`'s user: its id and a device token.
pub(crate) async fn device(server: &HubServer, owner_token: &str, name: &str) -> (String, String) {
    let made = post(
        server,
        "/api/devices",
        Some(owner_token),
        json!({"name": name}),
    )
    .await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    let id = made.body["deviceId"].as_str().unwrap().to_string();
    let exchanged = post(
        server,
        "/api/auth/device-token",
        None,
        json!({"deviceId": id, "deviceKey": made.body["deviceKey"]}),
    )
    .await;
    assert_eq!(exchanged.status, 200, "{:?}", exchanged.body);
    let token = exchanged.body["accessToken"].as_str().unwrap().to_string();
    (id, token)
}

/// `signet_rate_limited_total{limit="<limit>"}` of `server`, as exposed.
fn rate_limited(server: &HubServer, limit: &str) -> String {
    let series = format!("signet_rate_limited_total{{limit=\"{limit}\"}} ");
    server
        .state
        .metrics
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(&series).map(str::to_string))
        .unwrap_or_default()
}

#[actix_web::test]
async fn a_user_at_the_connection_cap_is_refused_and_another_still_connects() {
    let server = spawn_hub(&[("SIGNET__HUB__MAX_CONNECTIONS_PER_USER", "3")]).await;
    let greedy = user_token("greedy");
    // Negotiated-but-unconnected connections count as much as connected ones.
    for _ in 0..2 {
        let answer = server
            .negotiate("?negotiateVersion=1", Some(&greedy), None)
            .await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
    }
    let mut connected = server.open(&greedy).await;

    let refused = server
        .negotiate("?negotiateVersion=1", Some(&greedy), None)
        .await;
    assert_eq!(refused.status, 429, "{:?}", refused.body);
    assert_eq!(refused.body["error"], "too_many_user_connections");
    assert!(
        refused.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("3 connections")),
        "{:?}",
        refused.body
    );
    let upgrade = server.connect("", Some(&greedy), None).await;
    assert_eq!(upgrade.err(), Some(429), "a direct WebSocket counts too");
    assert_eq!(rate_limited(&server, "user_connections"), "2");

    // Everyone else is unaffected.
    let other = user_token("modest");
    let answer = server
        .negotiate("?negotiateVersion=1", Some(&other), None)
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let mut modest = server.open(&other).await;
    modest.assert_echo("not starved").await;
    connected.assert_echo("still connected").await;

    // A closed connection gives its slot back.
    connected.close().await;
    server.wait_for_connections(4).await;
    let answer = server
        .negotiate("?negotiateVersion=1", Some(&greedy), None)
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    server.assert_healthy().await;
}

#[actix_web::test]
async fn a_session_over_its_nonce_quota_is_refused_and_other_users_sign_on() {
    let server = spawn_hub(&[
        ("SIGNET__ENVELOPE__SECRET", ENVELOPE_SECRET),
        ("SIGNET__ENVELOPE__MAX_NONCES_PER_SESSION", "5"),
    ])
    .await;
    let greedy_token = user_token("nonce-greedy");
    let greedy_key = message_key(&greedy_token);
    let mut greedy = server.open(&greedy_token).await;
    for i in 0..5 {
        let completion = greedy
            .call(
                &format!("g{i}"),
                "EchoSigned",
                signed(&greedy_key, "EchoSigned", &json!({"n": i})),
            )
            .await;
        assert_eq!(completion["result"], json!({"n": i}), "{completion}");
    }
    let error = greedy
        .call_error(
            "g5",
            "EchoSigned",
            signed(&greedy_key, "EchoSigned", &json!({"n": 5})),
        )
        .await;
    assert_eq!(
        error,
        "Failed to invoke 'EchoSigned': envelope rejected (nonce_quota_exceeded)"
    );
    assert_eq!(rate_limited(&server, "nonces"), "1");

    let other_token = user_token("nonce-modest");
    let other_key = message_key(&other_token);
    let mut other = server.open(&other_token).await;
    let completion = other
        .call(
            "o1",
            "EchoSigned",
            signed(&other_key, "EchoSigned", &json!("still signing")),
        )
        .await;
    assert_eq!(completion["result"], json!("still signing"), "{completion}");
    // The refused user keeps its connection.
    greedy.assert_echo("still open").await;
    server.assert_healthy().await;
}

/// Sends a command to `device_id`; the completion.
pub(crate) async fn send_command(
    client: &mut RawClient,
    key: &MessageKey,
    id: &str,
    device_id: &str,
) -> Value {
    client
        .call(
            id,
            "SendCommand",
            signed(
                key,
                "SendCommand",
                &json!({"deviceId": device_id, "command": "toggle"}),
            ),
        )
        .await
}

const TOO_MANY_PENDING: &str =
    "An unexpected error occurred invoking 'SendCommand' on the server. \
     HubException: you have too many commands waiting for results; wait for some to be answered";

async fn a_user_at_the_pending_command_cap_is_refused_and_another_still_sends(store: Backend) {
    let server = spawn_hub_on(
        store,
        &[
            ("SIGNET__ENVELOPE__SECRET", ENVELOPE_SECRET),
            ("SIGNET__HOME__MAX_PENDING_COMMANDS_PER_USER", "3"),
        ],
    )
    .await;
    let alice_token = login(&server, "alice").await;
    let alice_key = message_key(&alice_token);
    let (alice_device, alice_device_token) = device(&server, &alice_token, "silent lamp").await;
    let bob_token = login(&server, "bob").await;
    let bob_key = message_key(&bob_token);
    let (bob_device, bob_device_token) = device(&server, &bob_token, "kettle").await;

    let mut lamp = server.open(&alice_device_token).await;
    let mut kettle = server.open(&bob_device_token).await;
    let mut alice = server.open(&alice_token).await;
    let mut bob = server.open(&bob_token).await;

    // Alice's device never answers: three commands wait, the fourth is refused.
    for i in 0..3 {
        let sent = send_command(&mut alice, &alice_key, &format!("a{i}"), &alice_device).await;
        assert!(sent["result"]["commandId"].is_string(), "{sent}");
    }
    let refused = send_command(&mut alice, &alice_key, "a3", &alice_device).await;
    assert_eq!(refused["error"], TOO_MANY_PENDING, "{refused}");
    assert_eq!(rate_limited(&server, "user_pending_commands"), "1");

    // Bob is not affected.
    let sent = send_command(&mut bob, &bob_key, "b0", &bob_device).await;
    assert!(sent["result"]["commandId"].is_string(), "{sent}");
    let forwarded = kettle.next_message(PROMPT).await;
    assert_eq!(forwarded["target"], "Command", "{forwarded}");

    // A result frees exactly one slot, at once (the count is exact).
    let command = lamp.next_message(PROMPT).await;
    assert_eq!(command["target"], "Command", "{command}");
    let inner: Value =
        serde_json::from_str(command["arguments"][0]["message"].as_str().unwrap()).unwrap();
    let lamp_key = message_key(&alice_device_token);
    let result = json!({"commandId": inner["commandId"], "status": "ok"});
    lamp.call(
        "r0",
        "CommandResult",
        signed(&lamp_key, "CommandResult", &result),
    )
    .await;
    let sent = send_command(&mut alice, &alice_key, "a4", &alice_device).await;
    assert!(sent["result"]["commandId"].is_string(), "{sent}");
    let refused = send_command(&mut alice, &alice_key, "a5", &alice_device).await;
    assert_eq!(refused["error"], TOO_MANY_PENDING, "{refused}");

    // The device going offline frees its commands' slots.
    lamp.close().await;
    server.wait_for_connections(3).await;
    let mut lamp = server.open(&alice_device_token).await;
    for i in 0..3 {
        let sent = send_command(&mut alice, &alice_key, &format!("c{i}"), &alice_device).await;
        assert!(sent["result"]["commandId"].is_string(), "{sent}");
    }
    let command = lamp.next_message(PROMPT).await;
    assert_eq!(command["target"], "Command", "{command}");
    bob.assert_echo("bob fine").await;
    server.assert_healthy().await;
}

#[actix_web::test]
async fn upload_streams_are_freed_when_their_invocation_ends() {
    const INVOCATIONS: usize = 10_000;
    const BATCH: usize = 250;
    let server = spawn_hub(&[("SIGNET__HUB__MAX_STREAMS_PER_CONNECTION", "1000")]).await;
    let mut client = server.open(&user_token("uploader")).await;
    let open = || server.state.open_uploads.get();

    // A normal upload: items, then the client completes the stream.
    client
        .send_text(format!(
            "{}{RS}{}{RS}{}{RS}{}{RS}",
            json!({"type": 1, "invocationId": "sum", "target": "UploadSum", "arguments": [], "streamIds": ["s"]}),
            json!({"type": 2, "invocationId": "s", "item": 2}),
            json!({"type": 2, "invocationId": "s", "item": 3}),
            json!({"type": 3, "invocationId": "s"}),
        ))
        .await;
    assert_eq!(client.completion("sum").await["result"], json!(5.0));

    // Invocations that end on a bad item while the client never completes their streams: each
    // used to leave its stream id behind for the life of the connection.
    for batch in 0..INVOCATIONS / BATCH {
        let mut frame = String::new();
        for i in 0..BATCH {
            let n = batch * BATCH + i;
            let invocation = json!({
                "type": 1, "invocationId": format!("i{n}"), "target": "UploadSum",
                "arguments": [], "streamIds": [format!("stream-{n}")],
            });
            let item = json!({"type": 2, "invocationId": format!("stream-{n}"), "item": "x"});
            frame.push_str(&format!("{invocation}{RS}{item}{RS}"));
        }
        client.send_text(frame).await;
        for _ in 0..BATCH {
            let message = client.next_message(PROMPT).await;
            assert_eq!(message["type"], COMPLETION, "{message}");
            assert!(
                message["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("every streamed item must be a number")),
                "{message}"
            );
        }
    }
    // The last completions are sent before their tasks report back: wait briefly for them.
    crate::helpers::eventually(PROMPT, "the upload streams to close", || open() == 0).await;
    client.assert_echo("after uploads").await;

    // A stream id the client completed may be reused at once; the first invocation ending
    // afterwards must not end the second one's stream.
    client
        .send_text(format!(
            "{}{RS}{}{RS}{}{RS}{}{RS}{}{RS}",
            json!({"type": 1, "invocationId": "first", "target": "UploadSum", "arguments": [], "streamIds": ["r"]}),
            json!({"type": 2, "invocationId": "r", "item": 1}),
            json!({"type": 3, "invocationId": "r"}),
            json!({"type": 1, "invocationId": "second", "target": "UploadSum", "arguments": [], "streamIds": ["r"]}),
            json!({"type": 2, "invocationId": "r", "item": 10}),
        ))
        .await;
    assert_eq!(client.completion("first").await["result"], json!(1.0));
    // The session handles the first invocation's end before it reads the next frame.
    client.assert_echo("between").await;
    client
        .send_text(format!(
            "{}{RS}{}{RS}",
            json!({"type": 2, "invocationId": "r", "item": 5}),
            json!({"type": 3, "invocationId": "r"}),
        ))
        .await;
    assert_eq!(client.completion("second").await["result"], json!(15.0));

    // A stream left open by a running invocation is freed when the connection closes.
    client
        .send_record(json!({
            "type": 1, "invocationId": "pending", "target": "UploadSum",
            "arguments": [], "streamIds": ["left-open"],
        }))
        .await;
    crate::helpers::eventually(PROMPT, "one upload stream to be open", || open() == 1).await;
    client.close().await;
    server.wait_for_connections(0).await;
    assert_eq!(open(), 0);
    server.assert_healthy().await;
}

each_store!(a_user_at_the_pending_command_cap_is_refused_and_another_still_sends);
