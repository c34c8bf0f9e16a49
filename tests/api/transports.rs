//! What every transport shares: negotiate's list of transports and stateful reconnect, the
//! `[transports]` settings, and stateful reconnect on the wire: a dropped WebSocket resumed
//! with the same `id` (Sequence, replay, duplicates skipped, Acks), replaced by a newer socket,
//! or removed after the disconnect timeout.

use crate::helpers::{eventually, spawn_app, spawn_app_with, TestApp};
use crate::transport_client::{
    connection_token, negotiate, poll, send, token, EventStream, HUB, JSON_HANDSHAKE, PROMPT,
};
use awc::ws::{Frame, Message};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;

#[actix_web::test]
async fn negotiate_offers_every_transport_with_its_transfer_formats() {
    let app = spawn_app().await;
    let negotiated = negotiate(&app, &token("alice", &["user"], 600), "").await;
    assert_eq!(negotiated.status, 200);
    let body = negotiated.json();
    assert_eq!(
        body["availableTransports"],
        json!([
            {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]},
            {"transport": "ServerSentEvents", "transferFormats": ["Text"]},
            {"transport": "LongPolling", "transferFormats": ["Text", "Binary"]},
        ])
    );
    assert!(body.get("useStatefulReconnect").is_none(), "not asked for");
    let stateful = negotiate(
        &app,
        &token("alice", &["user"], 600),
        "&useStatefulReconnect=true",
    )
    .await;
    assert_eq!(stateful.json()["useStatefulReconnect"], true);
}

#[actix_web::test]
async fn disabled_transports_are_neither_offered_nor_served() {
    let app = spawn_app_with(&[
        ("SIGNET__TRANSPORTS__SERVER_SENT_EVENTS", "false"),
        ("SIGNET__TRANSPORTS__LONG_POLLING", "false"),
        ("SIGNET__TRANSPORTS__STATEFUL_RECONNECT", "false"),
    ])
    .await;
    let alice = token("alice", &["user"], 600);
    let negotiated = negotiate(&app, &alice, "&useStatefulReconnect=true").await;
    let body = negotiated.json();
    assert_eq!(
        body["availableTransports"],
        json!([{"transport": "WebSockets", "transferFormats": ["Text", "Binary"]}])
    );
    assert!(
        body.get("useStatefulReconnect").is_none(),
        "stateful reconnect is off"
    );
    let id = body["connectionToken"].as_str().unwrap();
    let refused = poll(&app, Some(id), &alice).await;
    assert_eq!(refused.status, 404);
    assert_eq!(refused.json()["error"], "transport_disabled");
    assert_eq!(EventStream::open(&app, Some(id), &alice).await.status, 404);

    let app = spawn_app_with(&[("SIGNET__TRANSPORTS__WEBSOCKETS", "false")]).await;
    let offered = negotiate(&app, &alice, "").await.json()["availableTransports"].clone();
    assert_eq!(offered.as_array().map(Vec::len), Some(2));
    let skip_negotiation = app
        .client
        .ws(app.url(HUB))
        .bearer_auth(&alice)
        .connect()
        .await;
    assert!(
        matches!(skip_negotiation, Err(awc::error::WsClientError::InvalidResponseStatus(s)) if s == 404)
    );
}

#[test]
fn transport_settings_are_validated() {
    let load = |env: &[(&str, &str)]| {
        signet::settings::load_from_str(
            "",
            std::path::Path::new("test"),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    };
    let defaults = load(&[]).expect("defaults are valid").transports;
    assert_eq!(defaults.poll_timeout_secs, 90);
    assert_eq!(defaults.disconnect_timeout_secs, 15);
    assert_eq!(defaults.stateful_reconnect_buffer_bytes, 100_000);
    assert!(defaults.websockets && defaults.server_sent_events && defaults.long_polling);
    for (key, env) in [
        (
            "transports.poll_timeout_secs",
            "SIGNET__TRANSPORTS__POLL_TIMEOUT_SECS",
        ),
        (
            "transports.disconnect_timeout_secs",
            "SIGNET__TRANSPORTS__DISCONNECT_TIMEOUT_SECS",
        ),
        (
            "transports.stateful_reconnect_buffer_bytes",
            "SIGNET__TRANSPORTS__STATEFUL_RECONNECT_BUFFER_BYTES",
        ),
    ] {
        let err = load(&[(env, "0")])
            .expect_err("zero is refused")
            .to_string();
        assert!(
            err.contains(key) && err.contains("greater than zero"),
            "{err}"
        );
    }
    let none = load(&[
        ("SIGNET__TRANSPORTS__WEBSOCKETS", "false"),
        ("SIGNET__TRANSPORTS__SERVER_SENT_EVENTS", "false"),
        ("SIGNET__TRANSPORTS__LONG_POLLING", "false"),
    ]);
    assert!(none
        .expect_err("no transport")
        .to_string()
        .contains("at least one"));
}

/// A raw WebSocket speaking JSON records.
struct Socket<F> {
    framed: F,
}

type WsError = awc::error::WsProtocolError;

async fn open_socket(
    app: &TestApp,
    id: &str,
    bearer: &str,
) -> Result<
    Socket<
        impl futures_util::Sink<Message, Error = WsError>
            + futures_util::Stream<Item = Result<Frame, WsError>>
            + Unpin,
    >,
    u16,
> {
    match app
        .client
        .ws(app.url(&format!("{HUB}?id={id}")))
        .bearer_auth(bearer)
        .connect()
        .await
    {
        Ok((_, framed)) => Ok(Socket { framed }),
        Err(awc::error::WsClientError::InvalidResponseStatus(status)) => Err(status.as_u16()),
        Err(err) => panic!("websocket connect failed: {err}"),
    }
}

impl<F> Socket<F>
where
    F: futures_util::Sink<Message, Error = WsError>
        + futures_util::Stream<Item = Result<Frame, WsError>>
        + Unpin,
{
    async fn send(&mut self, records: &[Value]) {
        let mut text = String::new();
        for record in records {
            text.push_str(&record.to_string());
            text.push('\u{1e}');
        }
        self.framed
            .send(Message::Text(text.into()))
            .await
            .expect("sent");
    }

    /// The next records from the server; `None` once the socket ended.
    async fn next(&mut self) -> Option<Vec<Value>> {
        loop {
            let frame = tokio::time::timeout(PROMPT, self.framed.next())
                .await
                .expect("a frame in time");
            match frame {
                Some(Ok(Frame::Text(bytes))) => {
                    return Some(crate::transport_client::records(&bytes))
                }
                Some(Ok(Frame::Ping(_) | Frame::Pong(_))) => continue,
                Some(Ok(Frame::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(other)) => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Records until one satisfies `until` (included), skipping the server's Acks.
    async fn until(&mut self, until: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut seen = Vec::new();
        while !seen.last().is_some_and(&until) {
            let records = self.next().await.expect("the socket stays open");
            seen.extend(records.into_iter().filter(|r| r["type"] != 8));
        }
        seen
    }
}

fn echo(id: &str, value: &str) -> Value {
    json!({"type": 1, "invocationId": id, "target": "Echo", "arguments": [value]})
}

fn completion_of(id: &'static str) -> impl Fn(&Value) -> bool {
    move |r: &Value| r["type"] == 3 && r["invocationId"] == id
}

/// Negotiates with stateful reconnect and completes a version 2 handshake over a WebSocket.
async fn stateful_socket(
    app: &TestApp,
    bearer: &str,
) -> (
    String,
    Socket<
        impl futures_util::Sink<Message, Error = WsError>
            + futures_util::Stream<Item = Result<Frame, WsError>>
            + Unpin,
    >,
) {
    let negotiated = negotiate(app, bearer, "&useStatefulReconnect=true").await;
    let id = negotiated.json()["connectionToken"]
        .as_str()
        .unwrap()
        .to_string();
    let mut socket = open_socket(app, &id, bearer).await.expect("connects");
    socket
        .send(&[json!({"protocol": "json", "version": 2})])
        .await;
    assert_eq!(socket.next().await, Some(vec![json!({})]));
    (id, socket)
}

#[actix_web::test]
async fn a_dropped_websocket_resumes_with_the_same_id_and_nothing_is_lost_or_repeated() {
    let app = spawn_app_with(&[("SIGNET__TRANSPORTS__DISCONNECT_TIMEOUT_SECS", "2")]).await;
    let alice = token("alice", &["user"], 600);
    let (id, mut socket) = stateful_socket(&app, &alice).await;
    socket.send(&[echo("1", "one")]).await;
    socket.until(completion_of("1")).await;
    // The network drops the socket: no close frame.
    drop(socket);

    let mut socket = open_socket(&app, &id, &alice).await.expect("resumes");
    // The server starts over from the first message the client has not acknowledged.
    let resumed = socket.until(completion_of("1")).await;
    assert_eq!(
        resumed,
        vec![
            json!({"type": 9, "sequenceId": 1}),
            json!({"type": 3, "invocationId": "1", "result": "one"}),
        ]
    );
    // The client does the same: it resends its message 1 (the server got it; no Ack told the
    // client so), then sends message 2, and acknowledges the server's message 1.
    socket
        .send(&[
            json!({"type": 9, "sequenceId": 1}),
            echo("1", "one"),
            echo("2", "two"),
            json!({"type": 8, "sequenceId": 1}),
        ])
        .await;
    let answered = socket.until(completion_of("2")).await;
    assert_eq!(
        answered,
        vec![json!({"type": 3, "invocationId": "2", "result": "two"})],
        "the resent message 1 was recognised as a duplicate"
    );
    // The server acknowledges what it received, once a second.
    let mut acked = None;
    for _ in 0..5 {
        let records = socket.next().await.expect("open");
        if let Some(ack) = records.iter().find(|r| r["type"] == 8) {
            acked = Some(ack.clone());
            break;
        }
    }
    assert_eq!(acked, Some(json!({"type": 8, "sequenceId": 2})));

    // Acknowledged messages are not replayed on the next resume.
    socket.send(&[json!({"type": 8, "sequenceId": 2})]).await;
    let connection = app.connection(&id).expect("registered");
    eventually(PROMPT, "the Ack to empty the replay buffer", || {
        connection.replay().map(|r| r.buffered_bytes()) == Some(0)
    })
    .await;
    drop(socket);
    let mut socket = open_socket(&app, &id, &alice).await.expect("resumes again");
    assert_eq!(
        socket.next().await,
        Some(vec![json!({"type": 9, "sequenceId": 3})])
    );
    drop(socket);

    // A client that does not come back within the disconnect timeout finds it gone.
    app.wait_until_gone(&id, Duration::from_secs(10)).await;
    assert_eq!(open_socket(&app, &id, &alice).await.err(), Some(404));
}

#[actix_web::test]
async fn under_stateful_reconnect_a_new_socket_replaces_the_attached_one() {
    let app = spawn_app().await;
    let alice = token("alice", &["user"], 600);
    let (id, mut old) = stateful_socket(&app, &alice).await;
    old.send(&[echo("1", "one")]).await;
    old.until(completion_of("1")).await;

    let mut new = open_socket(&app, &id, &alice).await.expect("replaces");
    assert_eq!(old.next().await, None, "the old socket is dropped");
    let resumed = new.until(completion_of("1")).await;
    assert_eq!(resumed[0], json!({"type": 9, "sequenceId": 1}));
    // Another user cannot take it over.
    let mallory = token("mallory", &["user"], 600);
    assert_eq!(open_socket(&app, &id, &mallory).await.err(), Some(403));
}

#[actix_web::test]
async fn without_stateful_reconnect_a_second_socket_gets_409_and_a_drop_ends_the_connection() {
    let app = spawn_app().await;
    let alice = token("alice", &["user"], 600);
    let id = connection_token(&app, &alice).await;
    let mut socket = open_socket(&app, &id, &alice).await.expect("connects");
    socket
        .send(&[json!({"protocol": "json", "version": 1})])
        .await;
    assert_eq!(socket.next().await, Some(vec![json!({})]));
    assert_eq!(open_socket(&app, &id, &alice).await.err(), Some(409));
    let post = send(&app, Some(&id), &alice, JSON_HANDSHAKE).await;
    assert_eq!(post.status, 405, "sends go over the socket");

    drop(socket);
    app.wait_until_gone(&id, PROMPT).await;
    assert_eq!(open_socket(&app, &id, &alice).await.err(), Some(404));
}

#[actix_web::test]
async fn a_version_1_handshake_gets_no_stateful_reconnect() {
    let app = spawn_app().await;
    let alice = token("alice", &["user"], 600);
    let negotiated = negotiate(&app, &alice, "&useStatefulReconnect=true").await;
    let id = negotiated.json()["connectionToken"]
        .as_str()
        .unwrap()
        .to_string();
    let mut socket = open_socket(&app, &id, &alice).await.expect("connects");
    // Clients that fall back to version 1 cannot speak Ack and Sequence.
    socket
        .send(&[json!({"protocol": "json", "version": 1})])
        .await;
    assert_eq!(socket.next().await, Some(vec![json!({})]));
    drop(socket);
    app.wait_until_gone(&id, PROMPT).await;
    assert_eq!(open_socket(&app, &id, &alice).await.err(), Some(404));
}
