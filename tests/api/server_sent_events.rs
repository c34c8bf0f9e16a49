//! Server-Sent Events and their `POST` sends: the documented headers, the opening comment, one
//! `data:` line per payload line, status codes, MessagePack refused by the handshake, and
//! authentication on every request.

use crate::helpers::spawn_app;
use crate::transport_client::{
    connection_token, invocation, poll, records, send, token, EventStream, JSON_HANDSHAKE,
    MSGPACK_HANDSHAKE,
};
use serde_json::json;

#[actix_web::test]
async fn an_event_stream_carries_the_connections_messages_as_data_lines() {
    let app = spawn_app().await;
    let alice = token("alice", &["user"], 600);
    let id = connection_token(&app, &alice).await;
    let mut events = EventStream::open(&app, Some(&id), &alice).await;
    assert_eq!(events.status, 200);
    assert_eq!(events.header("content-type"), "text/event-stream");
    assert_eq!(events.header("cache-control"), "no-cache, no-store");
    assert_eq!(events.header("pragma"), "no-cache");
    assert_eq!(events.header("content-encoding"), "identity");
    assert_eq!(
        &events.read_exact(3).await[..],
        b":\r\n",
        "the opening comment"
    );

    assert_eq!(
        send(&app, Some(&id), &alice, JSON_HANDSHAKE).await.status,
        200
    );
    assert_eq!(
        events.next_event().await.as_deref(),
        Some("data: {}\u{1e}\r\n\r\n")
    );
    // JSON escapes line breaks inside strings, so a message is one data line (the formatter's
    // unit tests cover payloads with raw line breaks).
    let echo = invocation("1", "Echo", json!(["line one\nline two"]));
    assert_eq!(send(&app, Some(&id), &alice, &echo).await.status, 200);
    let data = events.next_data().await.expect("an event");
    assert_eq!(
        records(data.as_bytes()),
        vec![json!({"type": 3, "invocationId": "1", "result": "line one\nline two"})]
    );
}

#[actix_web::test]
async fn one_send_can_carry_the_handshake_and_a_multi_line_record() {
    let app = spawn_app().await;
    let alice = token("alice", &["user"], 600);
    let id = connection_token(&app, &alice).await;
    let mut events = EventStream::open(&app, Some(&id), &alice).await;
    events.read_exact(3).await;
    // The handshake and an invocation in one send, the invocation pretty-printed over lines.
    let mut body = JSON_HANDSHAKE.to_vec();
    body.extend_from_slice(
        b"{\n  \"type\": 1,\n  \"invocationId\": \"9\",\n  \"target\": \"Echo\",\n  \"arguments\": [2]\n}\x1e",
    );
    assert_eq!(send(&app, Some(&id), &alice, &body).await.status, 200);
    let mut received = Vec::new();
    while received.len() < 2 {
        let data = events.next_data().await.expect("an event");
        received.extend(
            data.split('\u{1e}')
                .filter(|r| !r.is_empty())
                .map(str::to_string),
        );
    }
    assert_eq!(received[0], "{}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&received[1]).unwrap(),
        json!({"type": 3, "invocationId": "9", "result": 2})
    );
}

#[actix_web::test]
async fn messagepack_over_server_sent_events_gets_the_handshake_error() {
    let app = spawn_app().await;
    let alice = token("alice", &["user"], 600);
    let id = connection_token(&app, &alice).await;
    let mut events = EventStream::open(&app, Some(&id), &alice).await;
    events.read_exact(3).await;
    assert_eq!(
        send(&app, Some(&id), &alice, MSGPACK_HANDSHAKE)
            .await
            .status,
        200
    );
    assert_eq!(
        events.next_data().await.as_deref(),
        Some(
            "{\"error\":\"Cannot use the 'messagepack' protocol on the current transport. \
             The transport does not support 'Binary' transfer format.\"}\u{1e}"
        )
    );
    assert_eq!(events.next_event().await, None, "the stream ends");
    let after = send(&app, Some(&id), &alice, JSON_HANDSHAKE).await;
    assert_eq!(after.status, 404, "the connection is closed");
}

#[actix_web::test]
async fn status_codes_of_event_streams_and_sends() {
    let app = spawn_app().await;
    let alice = token("alice", &["user"], 600);

    let no_id = EventStream::open(&app, None, &alice).await;
    assert_eq!(no_id.status, 400);
    let unknown = EventStream::open(&app, Some("no-such-connection"), &alice).await;
    assert_eq!(unknown.status, 404);
    let anonymous = EventStream::open(&app, Some("no-such-connection"), "not-a-token").await;
    assert_eq!(anonymous.status, 401);

    let id = connection_token(&app, &alice).await;
    let mut events = EventStream::open(&app, Some(&id), &alice).await;
    assert_eq!(events.status, 200);
    events.read_exact(3).await;
    let second = EventStream::open(&app, Some(&id), &alice).await;
    assert_eq!(second.status, 409, "one event stream per connection");
    assert_eq!(send(&app, None, &alice, JSON_HANDSHAKE).await.status, 400);
    assert_eq!(
        send(&app, Some("no-such-connection"), &alice, JSON_HANDSHAKE)
            .await
            .status,
        404
    );
    let wrong_transport = poll(&app, Some(&id), &alice).await;
    assert_eq!(wrong_transport.status, 400, "a poll on an SSE connection");
    assert_eq!(wrong_transport.json()["error"], "transport_mismatch");

    // The stream is unaffected by all of this.
    assert_eq!(
        send(&app, Some(&id), &alice, JSON_HANDSHAKE).await.status,
        200
    );
    assert_eq!(events.next_data().await.as_deref(), Some("{}\u{1e}"));
}

#[actix_web::test]
async fn another_users_token_on_an_event_stream_or_send_closes_the_connection() {
    let app = spawn_app().await;
    let alice = token("alice", &["user"], 600);
    let mallory = token("mallory", &["user"], 600);

    // On the event stream request itself.
    let id = connection_token(&app, &alice).await;
    let refused = EventStream::open(&app, Some(&id), &mallory).await;
    assert_eq!(refused.status, 403);
    assert_eq!(EventStream::open(&app, Some(&id), &alice).await.status, 404);

    // On a send while alice's stream is open: the stream ends.
    let id = connection_token(&app, &alice).await;
    let mut events = EventStream::open(&app, Some(&id), &alice).await;
    events.read_exact(3).await;
    assert_eq!(
        send(&app, Some(&id), &alice, JSON_HANDSHAKE).await.status,
        200
    );
    assert_eq!(events.next_data().await.as_deref(), Some("{}\u{1e}"));
    let refused = send(
        &app,
        Some(&id),
        &mallory,
        &invocation("1", "Whoami", json!([])),
    )
    .await;
    assert_eq!(refused.status, 403);
    let close = events.next_data().await.expect("the Close message");
    assert_eq!(
        records(close.as_bytes())[0]["type"],
        7,
        "the client is told before the stream ends"
    );
    assert_eq!(events.next_event().await, None);
}

#[actix_web::test]
async fn an_expired_connection_sends_its_close_message_and_ends_the_stream() {
    let app = spawn_app().await;
    let brief = token("alice", &["user"], 2);
    let id = connection_token(&app, &brief).await;
    let mut events = EventStream::open(&app, Some(&id), &brief).await;
    events.read_exact(3).await;
    assert_eq!(
        send(&app, Some(&id), &brief, JSON_HANDSHAKE).await.status,
        200
    );
    assert_eq!(events.next_data().await.as_deref(), Some("{}\u{1e}"));
    let close = events.next_data().await.expect("the Close message");
    assert_eq!(
        records(close.as_bytes()),
        vec![json!({"type": 7, "error": "Authentication expired", "allowReconnect": true})]
    );
    assert_eq!(events.next_event().await, None);
}
