//! The hub's limits and timers over a raw WebSocket: message size, keep-alive, client timeout,
//! slow consumers and graceful shutdown, each with small configured values so the tests stay
//! fast, and each checking that the other connections keep working.

use crate::helpers::{claims, kid_of, now, sign_hs, user_token, TEST_SECRET};
use crate::ws_client::*;
use awc::ws::CloseCode;
use jsonwebtoken::Algorithm;
use serde_json::json;
use signet::connection::CloseReason;
use std::time::{Duration, Instant};

const PING_EVERY: Duration = Duration::from_millis(400);

const TOO_LARGE: &str =
    "Connection closed with an error. The message exceeded the maximum message size.";

/// An Echo record whose JSON is exactly `len` bytes, separator excluded.
fn echo_record_of_len(id: &str, len: usize) -> String {
    let empty = json!({"type": 1, "invocationId": id, "target": "Echo", "arguments": [""]});
    let padding = len - empty.to_string().len();
    let record = json!({"type": 1, "invocationId": id, "target": "Echo", "arguments": ["x".repeat(padding)]})
        .to_string();
    assert_eq!(record.len(), len);
    record
}

async fn assert_closed_as_too_large(client: &mut RawClient, what: &str) {
    let ending = client.expect_close(PROMPT).await;
    assert_eq!(
        ending.close_message,
        Some(json!({"type": CLOSE, "error": TOO_LARGE})),
        "{what}"
    );
    assert_eq!(ending.code, Some(CloseCode::Size), "{what}");
    assert!(ending.records.is_empty(), "{what}: {:?}", ending.records);
}

#[actix_web::test]
async fn a_message_over_the_size_limit_closes_the_connection_with_an_error() {
    let server = spawn_hub(&[("SIGNET__HUB__MAX_MESSAGE_BYTES", "1024")]).await;
    let mut other = server.open(&user_token("other")).await;

    // Exactly at the limit is fine.
    let mut client = server.open(&user_token("big")).await;
    client
        .send_text(format!("{}{RS}", echo_record_of_len("1", 1024)))
        .await;
    let echoed = client.completion("1").await;
    assert!(
        echoed["result"].as_str().is_some_and(|s| s.len() > 900),
        "{echoed}"
    );

    // One byte over, in one frame with its separator.
    client
        .send_text(format!("{}{RS}", echo_record_of_len("2", 1025)))
        .await;
    assert_closed_as_too_large(&mut client, "one frame").await;

    // An unterminated record that grows past the limit over several frames.
    let mut client = server.open(&user_token("big")).await;
    let record = echo_record_of_len("3", 2000);
    client.send_text(&record[..900]).await;
    client.send_text(&record[900..]).await;
    assert_closed_as_too_large(&mut client, "several frames").await;

    // A single frame larger than the transport accepts at all.
    let mut client = server.open(&user_token("big")).await;
    client.send_text("x".repeat(200 * 1024)).await;
    assert_closed_as_too_large(&mut client, "a huge frame").await;

    other.assert_echo("after oversized messages").await;
    server.wait_for_connections(1).await;
    server.assert_healthy().await;
}

#[actix_web::test]
async fn keep_alive_pings_arrive_while_idle() {
    let server = spawn_hub(&[
        ("SIGNET__HUB__KEEP_ALIVE_INTERVAL_SECS", "1"),
        ("SIGNET__HUB__CLIENT_TIMEOUT_SECS", "5"),
    ])
    .await;
    let mut client = server.open(&user_token("idle")).await;
    let started = Instant::now();
    assert_eq!(
        client.next_record(Duration::from_secs(2)).await,
        json!({"type": PING})
    );
    assert_eq!(
        client.next_record(Duration::from_secs(2)).await,
        json!({"type": PING})
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1800) && waited < Duration::from_millis(4500),
        "two pings took {waited:?}"
    );
    client.assert_echo("between pings").await;
    server.assert_healthy().await;
}

#[actix_web::test]
async fn a_silent_client_is_closed_after_the_client_timeout_and_a_pinging_one_is_not() {
    let server = spawn_hub(&[
        ("SIGNET__HUB__KEEP_ALIVE_INTERVAL_SECS", "1"),
        ("SIGNET__HUB__CLIENT_TIMEOUT_SECS", "2"),
    ])
    .await;
    let pinging = server
        .open(&user_token("pinging"))
        .await
        .keep_pinging(PING_EVERY);
    let mut silent = server.open(&user_token("silent")).await;
    let started = Instant::now();
    let ending = silent.expect_close(Duration::from_secs(5)).await;
    let waited = started.elapsed();
    assert_eq!(
        ending.close_message,
        Some(json!({
            "type": CLOSE,
            "error": "Connection closed: no message from the client within the client timeout",
            "allowReconnect": true,
        }))
    );
    assert!(
        ending.records.iter().all(|r| r["type"] == PING),
        "{:?}",
        ending.records
    );
    assert!(
        waited >= Duration::from_millis(1800) && waited < Duration::from_millis(4500),
        "closed after {waited:?}"
    );
    // The pinging client outlived the timeout and still answers. A real wait: the client
    // timeout runs on the server's wall clock (its own threads), and this margin puts the
    // pinging client surely past the deadline it would have had without its pings.
    actix_web::rt::time::sleep(Duration::from_millis(800)).await;
    let mut pinging = pinging.stop().await;
    pinging.assert_echo("after the timeout").await;
    server.wait_for_connections(1).await;
    server.assert_healthy().await;
}

/// Server-side sockets of `server` in the ESTABLISHED state (Linux: `/proc/net/tcp`).
#[cfg(target_os = "linux")]
fn established_sockets(server: &HubServer) -> usize {
    let local = format!(":{:04X}", server.address.port());
    std::fs::read_to_string("/proc/net/tcp")
        .expect("/proc/net/tcp")
        .lines()
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3 && fields[1].ends_with(&local) && fields[3] == "01"
        })
        .count()
}

#[actix_web::test]
async fn a_client_that_never_reads_is_disconnected_and_never_slows_the_broadcaster() {
    let server = spawn_hub(&[
        ("SIGNET__HUB__OUTBOUND_QUEUE_MESSAGES", "8"),
        ("SIGNET__HUB__MAX_MESSAGE_BYTES", "65536"),
        ("SIGNET__HUB__KEEP_ALIVE_INTERVAL_SECS", "1"),
        // Also the TCP_USER_TIMEOUT that drops the socket of a client that never reads; with
        // margin so the kernel does not abort the slow sockets before their queues fill, even
        // on a busy machine.
        ("SIGNET__HUB__CLIENT_TIMEOUT_SECS", "10"),
    ])
    .await;
    let mut admin = server.open(&admin_token("root")).await;
    // Two clients stop reading; they keep pinging, so only their queues can end them.
    let never = server
        .open(&user_token("never"))
        .await
        .keep_pinging(PING_EVERY);
    let late = server
        .open(&user_token("late"))
        .await
        .keep_pinging(PING_EVERY);
    server.wait_for_connections(3).await;
    let of = |sub: &str| {
        server
            .state
            .connections
            .all()
            .into_iter()
            .find(|c| c.principal().sub == sub)
            .expect("connected")
    };
    let (never_conn, late_conn) = (of("never"), of("late"));

    // Broadcasts of 60 KiB (just under the message limit, so that few are needed) fill the
    // socket buffers, then the transport's, then the queues, well within the client timeout.
    // Each is followed by an Echo of the same text from the same client: the same round trip
    // without the fan-out, measured under whatever load the machine has at that moment, so
    // the slowest of them says what a call may take now.
    let text = "s".repeat(60 * 1024);
    let (mut slowest, mut reference) = (Duration::ZERO, Duration::ZERO);
    let mut sent = 0;
    while !(never_conn.is_closed() && late_conn.is_closed()) {
        assert!(sent < 2000, "the slow clients were never disconnected");
        let id = sent.to_string();
        let call = Instant::now();
        let completion = admin.call(&id, "BroadcastMessage", json!([text])).await;
        slowest = slowest.max(call.elapsed());
        assert_eq!(completion, json!({"type": COMPLETION, "invocationId": id}));
        sent += 1;

        let id = format!("echo-{sent}");
        let call = Instant::now();
        let echoed = admin.call(&id, "Echo", json!([text])).await;
        reference = reference.max(call.elapsed());
        assert_eq!(echoed["result"].as_str(), Some(text.as_str()));
    }
    // A broadcast that waited for a slow client would stand out against the echoes by that
    // wait (until the client's socket is dropped: 10 s); one that did not is an ordinary call.
    println!("{sent} broadcasts: the slowest took {slowest:?}, the slowest echo {reference:?}");
    assert!(
        slowest < 3 * reference + Duration::from_secs(1),
        "a broadcast waited for a slow client: {slowest:?} (echoes: {reference:?})"
    );
    for conn in [&never_conn, &late_conn] {
        assert_eq!(conn.close_reason(), Some(&CloseReason::SlowConsumer));
    }
    // Both are counted as slow consumers once their sessions end.
    crate::helpers::eventually(PROMPT, "the slow consumers to be counted", || {
        server
            .state
            .metrics
            .render()
            .contains("\nsignet_slow_consumers_total 2\n")
    })
    .await;
    // The late reader finds its backlog (less than everything), read at once
    // (before its stalled socket could be dropped), and then the Close reason.
    let mut late = late.stop().await;
    let ending = late.expect_close(PROMPT).await;
    assert_eq!(
        ending.close_message,
        Some(json!({
            "type": CLOSE,
            "error": "Connection closed: the client did not keep up with its messages",
            "allowReconnect": true,
        }))
    );
    let received = ending
        .records
        .iter()
        .filter(|r| r["type"] == INVOCATION)
        .count();
    assert!(received < sent, "received {received} of {sent} broadcasts");

    server.wait_for_connections(1).await;
    assert_eq!(
        admin.call("n", "GetConnectedUsersCount", json!([])).await["result"],
        1
    );
    admin.assert_echo("after the slow clients").await;

    // The client that never reads cannot keep its socket: it goes within the client timeout.
    #[cfg(target_os = "linux")]
    {
        let admin = admin.keep_pinging(PING_EVERY);
        crate::helpers::eventually(
            Duration::from_secs(15),
            "the server to let go of the slow client's socket",
            || established_sockets(&server) <= 1,
        )
        .await;
        admin.stop().await.assert_echo("after the sockets").await;
    }
    drop(never);
    server.assert_healthy().await;
}

#[actix_web::test]
async fn shutdown_closes_every_connection_with_allow_reconnect_and_the_server_ends() {
    let server = spawn_hub(&[("SIGNET__SERVER__SHUTDOWN_TIMEOUT_SECS", "3")]).await;
    let mut idle = server.open(&user_token("idle")).await;
    let mut streaming = server.open(&user_token("streaming")).await;
    streaming
        .send_record(
            json!({"type": 4, "invocationId": "c", "target": "Counter", "arguments": [1000, 50]}),
        )
        .await;
    assert_eq!(streaming.next_message(PROMPT).await["item"], 0);
    let mut before_handshake = server
        .connect("", Some(&user_token("early")), None)
        .await
        .unwrap();
    let negotiated = server
        .negotiate("?negotiateVersion=1", Some(&user_token("negotiated")), None)
        .await;
    assert_eq!(negotiated.status, 200);
    server.wait_for_connections(4).await;

    let started = Instant::now();
    server.trigger.cancel();
    let shutting_down =
        json!({"type": CLOSE, "error": "Server is shutting down.", "allowReconnect": true});
    for client in [&mut idle, &mut streaming] {
        let ending = client.expect_close(PROMPT).await;
        assert_eq!(ending.close_message, Some(shutting_down.clone()));
        assert_eq!(ending.code, Some(CloseCode::Away));
        assert!(
            ending.records.iter().all(|r| r["type"] == STREAM_ITEM),
            "{:?}",
            ending.records
        );
    }
    // Before its handshake a connection has no protocol to send a Close message in.
    let ending = before_handshake.expect_close(PROMPT).await;
    assert!(
        ending.close_message.is_none() && ending.records.is_empty(),
        "{ending:?}"
    );
    assert_eq!(ending.code, Some(CloseCode::Away));

    let ended = tokio::time::timeout(Duration::from_secs(4), server.serving)
        .await
        .expect("the server ended within the shutdown timeout");
    ended
        .expect("the server task did not panic")
        .expect("the server stopped cleanly");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.state.connections.len(), 0);
    assert!(
        std::net::TcpStream::connect(server.address).is_err(),
        "still accepting"
    );
    assert_eq!(server_panics(), 0);
}

#[actix_web::test]
async fn streams_beyond_the_limit_are_refused_until_one_is_cancelled() {
    let server = spawn_hub(&[("SIGNET__HUB__MAX_STREAMS_PER_CONNECTION", "2")]).await;
    let mut client = server.open(&user_token("streamer")).await;
    for id in ["a", "b"] {
        client
            .send_record(json!({"type": 4, "invocationId": id, "target": "Counter", "arguments": [100, 1000]}))
            .await;
        assert_eq!(
            client.next_message(PROMPT).await,
            json!({"type": STREAM_ITEM, "invocationId": id, "item": 0})
        );
    }
    client
        .send_record(
            json!({"type": 4, "invocationId": "c", "target": "Counter", "arguments": [1, 0]}),
        )
        .await;
    assert_eq!(
        client.completion("c").await["error"],
        "An unexpected error occurred invoking 'Counter' on the server. HubException: \
         A connection may have at most 2 streams open at once."
    );
    // Plain invocations are not streams.
    client.assert_echo("beside two streams").await;

    // Cancelling one completes it and frees its slot.
    client
        .send_record(json!({"type": 5, "invocationId": "a"}))
        .await;
    assert_eq!(
        client.completion("a").await,
        json!({"type": COMPLETION, "invocationId": "a"})
    );
    client
        .send_record(
            json!({"type": 4, "invocationId": "d", "target": "Counter", "arguments": [2, 0]}),
        )
        .await;
    let mut seen = Vec::new();
    loop {
        let message = client.next_message(PROMPT).await;
        if message["invocationId"] == "d" {
            seen.push(message.clone());
        }
        if message["type"] == COMPLETION {
            break;
        }
    }
    assert_eq!(
        seen,
        vec![
            json!({"type": STREAM_ITEM, "invocationId": "d", "item": 0}),
            json!({"type": STREAM_ITEM, "invocationId": "d", "item": 1}),
            json!({"type": COMPLETION, "invocationId": "d"}),
        ]
    );
    server.assert_healthy().await;
}

#[actix_web::test]
async fn a_connection_ends_when_its_token_expires() {
    let server = spawn_hub(&[]).await;
    let mut short = claims("short");
    short["exp"] = json!(now() + 2);
    let short = sign_hs(
        TEST_SECRET,
        Some(&kid_of(TEST_SECRET)),
        Algorithm::HS256,
        &short,
    );
    let mut other = server.open(&user_token("other")).await;
    let mut client = server.open(&short).await;
    client.assert_echo("before expiry").await;
    let ending = client.expect_close(Duration::from_secs(4)).await;
    assert_eq!(
        ending.close_message,
        Some(json!({"type": CLOSE, "error": "Authentication expired", "allowReconnect": true}))
    );
    other.assert_echo("after another's expiry").await;
    server.wait_for_connections(1).await;
    server.assert_healthy().await;
}
