//! Long polling and its `POST` sends: status codes, headers, polls replacing each other,
//! `DELETE`, the poll and disconnect timeouts, MessagePack, and authentication on every request.

use crate::helpers::{eventually, spawn_app, spawn_app_with, wait_until_expired, TestApp};
use crate::transport_client::{
    connection_token, delete, invocation, long_polling_connection, msgpack_frame, msgpack_messages,
    poll, records, send, start_poll, token, token_expiring_at, EventStream, JSON_HANDSHAKE,
    MSGPACK_HANDSHAKE, PROMPT,
};
use serde_json::json;
use signet::connection::CloseReason;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Starts a poll in the background and waits until the server has attached it to the
/// connection (the order of polls is what the tests are about).
async fn pending_poll(
    app: &TestApp,
    id: &str,
    bearer: &str,
) -> actix_web::rt::task::JoinHandle<crate::transport_client::Reply> {
    let connection = app.connection(id).expect("the connection is registered");
    let polls = connection.attachments();
    let pending = actix_web::rt::spawn(start_poll(app, Some(id), bearer));
    eventually(PROMPT, "the poll to reach the server", || {
        connection.attachments() > polls
    })
    .await;
    pending
}

/// The connection still answers an invocation.
async fn assert_still_open(app: &TestApp, id: &str, bearer: &str) {
    let echo = invocation("open?", "Echo", json!(["yes"]));
    assert_eq!(send(app, Some(id), bearer, &echo).await.status, 200);
    let answer = poll(app, Some(id), bearer).await;
    assert_eq!(records(&answer.body)[0]["result"], "yes", "{answer:?}");
}

#[actix_web::test]
async fn the_first_poll_answers_at_once_and_later_polls_carry_messages() {
    let app = spawn_app().await;
    let alice = token("alice", &["user"], 600);
    let id = connection_token(&app, &alice).await;

    let started = Instant::now();
    let first = poll(&app, Some(&id), &alice).await;
    assert_eq!(first.status, 200);
    assert!(first.body.is_empty());
    assert!(started.elapsed() < Duration::from_secs(2));
    first.assert_no_cache();

    assert_eq!(
        send(&app, Some(&id), &alice, JSON_HANDSHAKE).await.status,
        200
    );
    let handshake = poll(&app, Some(&id), &alice).await;
    assert_eq!(&handshake.body[..], b"{}\x1e");
    handshake.assert_no_cache();
    assert_eq!(handshake.header("content-type"), "application/octet-stream");

    // A poll waits for the message the send causes.
    let pending = pending_poll(&app, &id, &alice).await;
    let echo = invocation("1", "Echo", json!(["hello"]));
    assert_eq!(send(&app, Some(&id), &alice, &echo).await.status, 200);
    let answer = pending.await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(
        records(&answer.body),
        vec![json!({"type": 3, "invocationId": "1", "result": "hello"})]
    );
}

#[actix_web::test]
async fn a_poll_with_nothing_to_send_answers_empty_after_the_poll_timeout() {
    let app = spawn_app_with(&[("SIGNET__TRANSPORTS__POLL_TIMEOUT_SECS", "1")]).await;
    let alice = token("alice", &["user"], 600);
    let id = long_polling_connection(&app, &alice, JSON_HANDSHAKE).await;
    let started = Instant::now();
    let idle = poll(&app, Some(&id), &alice).await;
    assert_eq!((idle.status, idle.body.len()), (200, 0));
    assert!(started.elapsed() >= Duration::from_millis(900));
    idle.assert_no_cache();
    // The connection carries on.
    assert_eq!(
        send(
            &app,
            Some(&id),
            &alice,
            &invocation("1", "Echo", json!([1]))
        )
        .await
        .status,
        200
    );
    assert_eq!(
        records(&poll(&app, Some(&id), &alice).await.body)[0]["result"],
        1
    );
}

#[actix_web::test]
async fn a_newer_poll_ends_the_older_one_with_204() {
    let app = spawn_app().await;
    let alice = token("alice", &["user"], 600);
    let id = long_polling_connection(&app, &alice, JSON_HANDSHAKE).await;

    let older = pending_poll(&app, &id, &alice).await;
    let newer = pending_poll(&app, &id, &alice).await;
    let ended = older.await.unwrap();
    assert_eq!(ended.status, 204);
    ended.assert_no_cache();

    // The newer poll took over the connection.
    send(
        &app,
        Some(&id),
        &alice,
        &invocation("7", "Echo", json!(["x"])),
    )
    .await;
    let answer = newer.await.unwrap();
    assert_eq!(
        (
            answer.status,
            records(&answer.body)[0]["invocationId"].clone()
        ),
        (200, json!("7"))
    );
}

#[actix_web::test]
async fn delete_ends_the_connection_and_the_pending_poll_gets_204() {
    let app = spawn_app().await;
    let alice = token("alice", &["user"], 600);
    let id = long_polling_connection(&app, &alice, JSON_HANDSHAKE).await;
    let pending = pending_poll(&app, &id, &alice).await;

    let deleted = delete(&app, Some(&id), &alice).await;
    assert_eq!(deleted.status, 202);
    deleted.assert_no_cache();
    assert_eq!(pending.await.unwrap().status, 204);

    // The connection is gone.
    assert_eq!(poll(&app, Some(&id), &alice).await.status, 404);
    assert_eq!(
        send(&app, Some(&id), &alice, b"{\"type\":6}\x1e")
            .await
            .status,
        404
    );
    assert_eq!(delete(&app, Some(&id), &alice).await.status, 404);
}

#[actix_web::test]
async fn a_client_that_stops_polling_is_removed_after_the_disconnect_timeout() {
    let app = spawn_app_with(&[("SIGNET__TRANSPORTS__DISCONNECT_TIMEOUT_SECS", "1")]).await;
    let alice = token("alice", &["user"], 600);
    let id = long_polling_connection(&app, &alice, JSON_HANDSHAKE).await;
    // Polling promptly keeps it: each poll restarts the clock. This is about real elapsed
    // time (the server's disconnect timer runs on its own threads' wall clock): 3 x 500 ms
    // between polls outlive the 1 s timeout.
    for _ in 0..3 {
        actix_web::rt::time::sleep(Duration::from_millis(500)).await;
        let pending = pending_poll(&app, &id, &alice).await;
        send(
            &app,
            Some(&id),
            &alice,
            &invocation("1", "Echo", json!([1])),
        )
        .await;
        assert_eq!(pending.await.unwrap().status, 200);
    }
    // Then the client vanishes.
    let vanished = Instant::now();
    app.wait_until_gone(&id, PROMPT).await;
    assert!(
        vanished.elapsed() >= Duration::from_millis(500),
        "removed before the disconnect timeout: {:?}",
        vanished.elapsed()
    );
    let gone = poll(&app, Some(&id), &alice).await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.json()["error"], "unknown_connection");
    gone.assert_no_cache();
    assert_eq!(
        send(&app, Some(&id), &alice, JSON_HANDSHAKE).await.status,
        404
    );
}

#[actix_web::test]
async fn messagepack_travels_as_binary_over_long_polling() {
    let app = spawn_app().await;
    let alice = token("alice", &["user"], 600);
    let id = long_polling_connection(&app, &alice, MSGPACK_HANDSHAKE).await;
    use rmpv::Value as V;
    let echo = msgpack_frame(&V::Array(vec![
        V::from(1),
        V::Map(vec![]),
        V::from("1"),
        V::from("Echo"),
        V::Array(vec![V::Binary(vec![0, 1, 0xff])]),
    ]));
    assert_eq!(send(&app, Some(&id), &alice, &echo).await.status, 200);
    let answer = poll(&app, Some(&id), &alice).await;
    assert_eq!(answer.status, 200);
    let messages = msgpack_messages(&answer.body);
    // [Completion, headers, invocation id, result kind 3 (a result), result]
    assert_eq!(messages.len(), 1);
    let completion = messages[0].as_array().expect("an array");
    assert_eq!(completion[0], V::from(3));
    assert_eq!(completion[2], V::from("1"));
    assert_eq!(completion[3], V::from(3));
}

/// bin and timestamps come back as bin and timestamps; a str that is not UTF-8 fails its own
/// invocation and the connection goes on.
#[actix_web::test]
async fn messagepack_keeps_binary_and_timestamps_and_refuses_bad_utf8_per_call() {
    let app = spawn_app().await;
    let alice = token("alice", &["user"], 600);
    let id = long_polling_connection(&app, &alice, MSGPACK_HANDSHAKE).await;
    use rmpv::Value as V;
    let invocation = |id: &str, argument: V| {
        msgpack_frame(&V::Array(vec![
            V::from(1),
            V::Map(vec![]),
            V::from(id),
            V::from("Echo"),
            V::Array(vec![argument]),
        ]))
    };
    // `new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 678))` as @msgpack/msgpack writes it.
    let date = V::Ext(-1, vec![0xa1, 0xa5, 0xd6, 0x00, 0x65, 0x93, 0x7d, 0x25]);
    let bytes = V::Binary(vec![0, 1, 0xff]);
    let nested = V::Map(vec![
        (V::from("bytes"), bytes.clone()),
        (V::from("when"), date.clone()),
    ]);
    // rmpv writes a str that is not UTF-8 as bin, so that one is written by hand:
    // [1, {}, "4", "Echo", ["\xc3\x28"]].
    let not_utf8 = [
        14, 0x95, 1, 0x80, 0xa1, b'4', 0xa4, b'E', b'c', b'h', b'o', 0x91, 0xa2, 0xc3, 0x28,
    ];
    let mut body = Vec::new();
    for (id, argument) in [
        ("1", bytes.clone()),
        ("2", date.clone()),
        ("3", nested.clone()),
    ] {
        body.extend(invocation(id, argument));
    }
    body.extend(not_utf8);
    body.extend(invocation("5", V::from("still here")));
    assert_eq!(send(&app, Some(&id), &alice, &body).await.status, 200);
    let mut completions = Vec::new();
    while completions.len() < 5 {
        let answer = poll(&app, Some(&id), &alice).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        completions.extend(msgpack_messages(&answer.body));
    }
    // The calls run side by side (the failed one is answered at once): sort by invocation id.
    completions.sort_by_key(|c| c[2].as_str().map(str::to_string));
    // [Completion, headers, invocation id, result kind, result or error]
    let result = |id: &str, value: V| {
        V::Array(vec![
            V::from(3),
            V::Map(vec![]),
            V::from(id),
            V::from(3),
            value,
        ])
    };
    assert_eq!(completions[0], result("1", bytes));
    assert_eq!(completions[1], result("2", date));
    assert_eq!(completions[2], result("3", nested));
    assert_eq!(
        completions[3],
        V::Array(vec![
            V::from(3),
            V::Map(vec![]),
            V::from("4"),
            V::from(1),
            V::from("Failed to invoke 'Echo' due to an error on the server."),
        ])
    );
    assert_eq!(completions[4], result("5", V::from("still here")));
}

#[actix_web::test]
async fn requests_without_id_or_for_unknown_connections_are_refused() {
    let app = spawn_app().await;
    let alice = token("alice", &["user"], 600);
    for reply in [
        poll(&app, None, &alice).await,
        send(&app, None, &alice, JSON_HANDSHAKE).await,
        delete(&app, None, &alice).await,
    ] {
        assert_eq!(reply.status, 400, "{reply:?}");
        assert_eq!(reply.json()["error"], "missing_connection_id");
    }
    for reply in [
        poll(&app, Some("no-such-connection"), &alice).await,
        send(&app, Some("no-such-connection"), &alice, JSON_HANDSHAKE).await,
        delete(&app, Some("no-such-connection"), &alice).await,
    ] {
        assert_eq!(reply.status, 404, "{reply:?}");
    }
    // Unauthenticated requests never reach the connection.
    let id = long_polling_connection(&app, &alice, JSON_HANDSHAKE).await;
    assert_eq!(poll(&app, Some(&id), "not-a-token").await.status, 401);
    assert_eq!(
        send(&app, Some(&id), "not-a-token", JSON_HANDSHAKE)
            .await
            .status,
        401
    );
    assert_still_open(&app, &id, &alice).await;
}

#[actix_web::test]
async fn another_users_token_on_a_poll_is_refused_and_closes_the_connection() {
    let app = spawn_app().await;
    let alice = token("alice", &["user"], 600);
    let id = long_polling_connection(&app, &alice, JSON_HANDSHAKE).await;
    let mallory = token("mallory", &["user"], 600);
    let refused = poll(&app, Some(&id), &mallory).await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["error"], "user_mismatch");
    assert_eq!(
        poll(&app, Some(&id), &alice).await.status,
        404,
        "the connection was closed"
    );
}

#[actix_web::test]
async fn another_users_token_on_a_send_is_refused_and_closes_the_connection() {
    let app = spawn_app().await;
    let alice = token("alice", &["user"], 600);
    let id = long_polling_connection(&app, &alice, JSON_HANDSHAKE).await;
    let mallory = token("mallory", &["admin"], 600);
    let forged = invocation("1", "BroadcastMessage", json!(["hi from mallory"]));
    let refused = send(&app, Some(&id), &mallory, &forged).await;
    assert_eq!(refused.status, 403);
    assert_eq!(send(&app, Some(&id), &alice, &forged).await.status, 404);
}

#[actix_web::test]
async fn a_later_token_of_the_same_user_extends_the_connection() {
    let app = spawn_app().await;
    let short = token("alice", &["user"], 120);
    let id = long_polling_connection(&app, &short, JSON_HANDSHAKE).await;
    let whoami = |n: &str| invocation(n, "Whoami", json!([]));

    let long = token("alice", &["user"], 3600);
    let long_exp = crate::helpers::now() + 3600;
    assert_eq!(send(&app, Some(&id), &long, &whoami("1")).await.status, 200);
    let me = &records(&poll(&app, Some(&id), &long).await.body)[0]["result"];
    assert!(
        (me["expiresAt"].as_i64().unwrap() - long_exp).abs() <= 2,
        "{me}"
    );

    // An older token does not shorten it again.
    assert_eq!(
        send(&app, Some(&id), &short, &whoami("2")).await.status,
        200
    );
    let me = &records(&poll(&app, Some(&id), &short).await.body)[0]["result"];
    assert!(
        (me["expiresAt"].as_i64().unwrap() - long_exp).abs() <= 2,
        "{me}"
    );
}

#[actix_web::test]
async fn a_concurrent_send_on_the_same_connection_gets_409() {
    let app = spawn_app().await;
    let alice = token("alice", &["user"], 600);
    let id = long_polling_connection(&app, &alice, JSON_HANDSHAKE).await;

    // A send whose body is still arriving, written by hand so the test decides when.
    let record = invocation("1", "Echo", json!(["slow"]));
    let (head, tail) = record.split_at(10);
    let mut slow = std::net::TcpStream::connect(app.address).expect("connects");
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        slow,
        "POST /hubs/home?id={id} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {alice}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        app.address,
        record.len()
    )
    .unwrap();
    slow.write_all(head).unwrap();
    let connection = app.connection(&id).expect("registered");
    eventually(PROMPT, "the slow send to reach the session", || {
        connection.is_posting()
    })
    .await;

    let concurrent = send(
        &app,
        Some(&id),
        &alice,
        &invocation("2", "Echo", json!(["fast"])),
    )
    .await;
    assert_eq!(concurrent.status, 409);
    assert_eq!(concurrent.json()["error"], "transport_in_use");

    slow.write_all(tail).unwrap();
    let mut answer = String::new();
    slow.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The connection remains open and got the slow send only.
    let answer = poll(&app, Some(&id), &alice).await;
    assert_eq!(
        records(&answer.body),
        vec![json!({"type": 3, "invocationId": "1", "result": "slow"})]
    );
}

#[actix_web::test]
async fn a_connection_keeps_its_transport() {
    let app = spawn_app().await;
    let alice = token("alice", &["user"], 600);
    let id = long_polling_connection(&app, &alice, JSON_HANDSHAKE).await;
    let events = EventStream::open(&app, Some(&id), &alice).await;
    assert_eq!(
        events.status, 400,
        "an event stream on a long-polling connection"
    );
    assert_still_open(&app, &id, &alice).await;
}

#[actix_web::test]
async fn an_expired_connection_tells_its_pending_poll_why() {
    let app = spawn_app().await;
    let brief = token("alice", &["user"], 2);
    let id = long_polling_connection(&app, &brief, JSON_HANDSHAKE).await;
    let pending = start_poll(&app, Some(&id), &brief);
    let answer = pending.await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        records(&answer.body),
        vec![json!({"type": 7, "error": "Authentication expired", "allowReconnect": true})]
    );
}

#[actix_web::test]
async fn a_connection_that_expires_between_polls_keeps_its_close_message_for_the_next_poll() {
    let app = spawn_app().await;
    let brief = token("alice", &["user"], 2);
    let id = long_polling_connection(&app, &brief, JSON_HANDSHAKE).await;
    let connection = app.connection(&id).expect("registered");
    eventually(Duration::from_secs(10), "the connection to expire", || {
        connection.is_closed()
    })
    .await;
    assert_eq!(connection.close_reason(), Some(&CloseReason::Expired));
    // The token has expired too: the next poll comes with a fresh one, as a refreshing
    // accessTokenFactory would give.
    let fresh = token("alice", &["user"], 600);
    let answer = poll(&app, Some(&id), &fresh).await;
    assert_eq!(answer.status, 200);
    assert_eq!(records(&answer.body)[0]["error"], "Authentication expired");
    assert_eq!(
        poll(&app, Some(&id), &fresh).await.status,
        404,
        "delivered once"
    );
}

#[actix_web::test]
async fn after_an_in_band_refresh_the_clients_first_token_still_carries_its_requests() {
    // The official clients send their negotiate-time token on every poll and send of a
    // connection; once a refresh moved the connection onto a later token, that first token
    // may expire without breaking the connection.
    let app = spawn_app().await;
    // Every short-lived token of this test expires at the same second: one wait covers them.
    // Two whole seconds at least (`exp` counts whole seconds) to open both connections and
    // refresh one before the session expiry closes them.
    let exp = crate::helpers::now() + 3;
    let first = token_expiring_at("alice", &["user"], exp);
    // Another token of the same user, expiring with the first: not the connection's own.
    let stale = {
        let mut c = crate::helpers::claims("alice");
        c["jti"] = json!("another-token-of-alice");
        c["exp"] = json!(exp);
        crate::helpers::sign_hs(
            crate::helpers::TEST_SECRET,
            None,
            jsonwebtoken::Algorithm::HS256,
            &c,
        )
    };
    let expired = token_expiring_at("mallory", &["user"], exp);
    let id = long_polling_connection(&app, &first, JSON_HANDSHAKE).await;
    let other_id = long_polling_connection(&app, &expired, JSON_HANDSHAKE).await;
    let later = token("alice", &["user"], 600);
    let refreshed = app
        .client
        .post(app.url(&format!("/hubs/home/refresh?id={id}")))
        .bearer_auth(&later)
        .send()
        .await
        .expect("refresh sent");
    assert_eq!(refreshed.status().as_u16(), 200);
    wait_until_expired(exp).await;
    assert_eq!(
        poll(&app, Some(&id), &stale).await.status,
        401,
        "an expired token the connection was not opened with"
    );
    assert_still_open(&app, &id, &first).await;

    // Expired tokens are no pass on their own: not for another user, not for a connection that
    // did not carry on past them.
    assert_eq!(
        poll(&app, Some(&id), &expired).await.status,
        401,
        "another user's expired token"
    );
    let unrefreshed = send(
        &app,
        Some(&other_id),
        &expired,
        &invocation("1", "Echo", json!([1])),
    )
    .await;
    assert_eq!(
        unrefreshed.status, 401,
        "the connection expired with its token"
    );
}
