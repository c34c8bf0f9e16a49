//! The JSON hub protocol over a raw WebSocket, edge cases first: what the server answers to a
//! broken handshake or a broken record, and that a bad client never hurts the others. Every
//! test keeps a well-behaved connection open across the bad one and checks it still answers.

use crate::helpers::user_token;
use crate::ws_client::*;
use awc::ws::CloseCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const UNEXPECTED_HANDSHAKE_ERROR: &str =
    "An unexpected error occurred during connection handshake.";

/// Sends `request` as the handshake and returns the error the server answered; the server
/// then closes the socket without a hub Close message (there is no protocol yet).
async fn refused_handshake(server: &HubServer, request: &str) -> String {
    let mut client = server
        .connect("", Some(&user_token("bad")), None)
        .await
        .expect("upgrade accepted");
    client.send_text(request).await;
    let answer = client.next_record(PROMPT).await;
    let ending = client.expect_close(PROMPT).await;
    assert!(
        ending.records.is_empty(),
        "after {request:?}: {:?}",
        ending.records
    );
    assert!(
        ending.close_message.is_none(),
        "after {request:?}: {ending:?}"
    );
    answer["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{request:?} answered {answer}"))
        .to_string()
}

#[actix_web::test]
async fn malformed_handshakes_get_the_signalr_error_and_a_close() {
    let server = spawn_hub(&[]).await;
    let mut other = server.open(&user_token("other")).await;
    for request in [
        "hello\u{1e}",
        "not json at all}\u{1e}",
        "[\"json\",1]\u{1e}",
        "\"json\"\u{1e}",
        "{\"protocol\":\"json\"}\u{1e}",
        "{\"version\":1}\u{1e}",
        "{}\u{1e}",
        "{\"protocol\":1,\"version\":1}\u{1e}",
        "{\"protocol\":\"json\",\"version\":\"1\"}\u{1e}",
        "{\"protocol\":\"json\",\"version\":1\u{1e}",
        "\u{1e}",
    ] {
        assert_eq!(
            refused_handshake(&server, request).await,
            UNEXPECTED_HANDSHAKE_ERROR,
            "{request:?}"
        );
    }
    other.assert_echo("after malformed handshakes").await;
    server.assert_healthy().await;
}

#[actix_web::test]
async fn an_unsupported_protocol_is_refused_by_name() {
    let server = spawn_hub(&[]).await;
    let mut other = server.open(&user_token("other")).await;
    let error = refused_handshake(&server, "{\"protocol\":\"xml\",\"version\":1}\u{1e}").await;
    assert_eq!(error, "The protocol 'xml' is not supported.");
    other.assert_echo("after xml").await;
    server.assert_healthy().await;
}

#[actix_web::test]
async fn an_unsupported_version_is_refused() {
    let server = spawn_hub(&[]).await;
    let mut other = server.open(&user_token("other")).await;
    for version in [3, 99] {
        let request = format!("{{\"protocol\":\"json\",\"version\":{version}}}\u{1e}");
        assert_eq!(
            refused_handshake(&server, &request).await,
            format!("The server does not support version {version} of the 'json' protocol.")
        );
    }
    other.assert_echo("after versions").await;
    server.assert_healthy().await;
}

#[actix_web::test]
async fn an_invocation_before_the_handshake_is_a_malformed_handshake() {
    let server = spawn_hub(&[]).await;
    let mut other = server.open(&user_token("other")).await;
    let invocation = json!({"type": 1, "invocationId": "1", "target": "Echo", "arguments": ["x"]});
    let error = refused_handshake(&server, &format!("{invocation}{RS}")).await;
    assert_eq!(error, UNEXPECTED_HANDSHAKE_ERROR);
    other.assert_echo("after an early invocation").await;
    server.assert_healthy().await;
}

#[actix_web::test]
async fn a_missing_handshake_is_canceled_after_the_handshake_timeout() {
    let server = spawn_hub(&[("SIGNET__HUB__HANDSHAKE_TIMEOUT_SECS", "1")]).await;
    let mut other = server.open(&user_token("other")).await;
    // One client sends nothing, one sends half a handshake (no separator).
    let mut silent = server
        .connect("", Some(&user_token("silent")), None)
        .await
        .unwrap();
    let mut half = server
        .connect("", Some(&user_token("half")), None)
        .await
        .unwrap();
    half.send_text("{\"protocol\":\"json\",").await;
    let started = Instant::now();
    for client in [&mut silent, &mut half] {
        let answer = client.next_record(Duration::from_secs(4)).await;
        assert_eq!(answer, json!({"error": "Handshake was canceled."}));
        let ending = client.expect_close(PROMPT).await;
        assert!(
            ending.close_message.is_none() && ending.records.is_empty(),
            "{ending:?}"
        );
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    // The established connection is not subject to the handshake timeout.
    other.assert_echo("after handshake timeouts").await;
    server.wait_for_connections(1).await;
    server.assert_healthy().await;
}

#[actix_web::test]
async fn a_handshake_split_across_frames_and_followed_by_messages_works() {
    let server = spawn_hub(&[]).await;
    let mut client = server
        .connect("", Some(&user_token("split")), None)
        .await
        .unwrap();
    client.send_text("{\"protocol\":").await;
    client.send_text("\"json\",\"version\":2}").await;
    // The separator, then a first invocation, in the same frame as the end of the handshake.
    let invocation =
        json!({"type": 1, "invocationId": "1", "target": "Echo", "arguments": ["first"]});
    client.send_text(format!("{RS}{invocation}{RS}")).await;
    assert_eq!(client.next_record(PROMPT).await, json!({}));
    assert_eq!(
        client.completion("1").await,
        json!({"type": COMPLETION, "invocationId": "1", "result": "first"})
    );
    server.assert_healthy().await;
}

#[actix_web::test]
async fn malformed_json_after_the_handshake_closes_with_a_protocol_error() {
    let server = spawn_hub(&[]).await;
    let mut other = server.open(&user_token("other")).await;
    let deep = format!(
        "{{\"type\":1,\"target\":\"Echo\",\"arguments\":[{}{}]}}{RS}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    for record in [
        deep.as_str(),
        "{\"type\":1,\u{1e}",
        "not json\u{1e}",
        "{\"type\":\"one\"}\u{1e}",
        "{\"target\":\"Echo\"}\u{1e}",
        "{\"type\":1,\"invocationId\":\"1\",\"arguments\":[]}\u{1e}",
        "{\"type\":1,\"invocationId\":\"1\",\"target\":\"Echo\",\"arguments\":{}}\u{1e}",
    ] {
        let mut client = server.open(&user_token("bad")).await;
        client.send_text(record).await;
        let ending = client.expect_close(PROMPT).await;
        let close = ending
            .close_message
            .unwrap_or_else(|| panic!("no Close after {record:?}"));
        assert_eq!(close["type"], CLOSE);
        let error = close["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with("Connection closed with an error."),
            "{record:?}: {close}"
        );
        assert_ne!(close["allowReconnect"], true, "{record:?}: {close}");
        assert_eq!(ending.code, Some(CloseCode::Protocol), "{record:?}");
        assert!(
            ending.records.is_empty(),
            "{record:?}: {:?}",
            ending.records
        );
    }
    other.assert_echo("after malformed records").await;
    server.assert_healthy().await;
}

#[actix_web::test]
async fn an_unknown_message_type_is_ignored_and_the_connection_stays() {
    let server = spawn_hub(&[]).await;
    let mut client = server.open(&user_token("alice")).await;
    client
        .send_text(format!(
            "{{\"type\":99,\"whatever\":[1,2]}}{RS}{{\"type\":42}}{RS}"
        ))
        .await;
    client.assert_echo("after unknown types").await;
    server.assert_healthy().await;
}

#[actix_web::test]
async fn a_binary_frame_in_json_mode_closes_with_a_protocol_error() {
    let server = spawn_hub(&[]).await;
    let mut other = server.open(&user_token("other")).await;
    let mut client = server.open(&user_token("bad")).await;
    let invocation = json!({"type": 1, "invocationId": "1", "target": "Echo", "arguments": ["x"]});
    client
        .send_binary(format!("{invocation}{RS}").into_bytes())
        .await;
    let ending = client.expect_close(PROMPT).await;
    let close = ending.close_message.expect("a Close message");
    let error = close["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("Connection closed with an error."),
        "{close}"
    );
    assert_eq!(ending.code, Some(CloseCode::Protocol));
    assert!(
        ending.records.is_empty(),
        "the invocation ran: {:?}",
        ending.records
    );
    other.assert_echo("after a binary frame").await;
    server.assert_healthy().await;
}

#[actix_web::test]
async fn a_reused_invocation_id_is_refused_while_the_first_runs() {
    let server = spawn_hub(&[]).await;
    let mut client = server.open(&user_token("alice")).await;
    client
        .send_record(
            json!({"type": 4, "invocationId": "dup", "target": "Counter", "arguments": [3, 300]}),
        )
        .await;
    let first = client.next_message(PROMPT).await;
    assert_eq!(
        first,
        json!({"type": STREAM_ITEM, "invocationId": "dup", "item": 0})
    );

    // A plain invocation and a stream invocation with the id still in use.
    assert_eq!(
        client.call_error("dup", "Echo", json!(["again"])).await,
        "Invocation ID 'dup' is already in use."
    );
    client
        .send_record(
            json!({"type": 4, "invocationId": "dup", "target": "Counter", "arguments": [1, 0]}),
        )
        .await;
    assert_eq!(
        client.completion("dup").await["error"],
        "Invocation ID 'dup' is already in use."
    );

    // The first stream is untouched: its remaining items, then its completion.
    let mut items = Vec::new();
    let end = loop {
        let message = client.next_message(PROMPT).await;
        match message["type"].as_u64() {
            Some(STREAM_ITEM) => items.push(message["item"].clone()),
            _ => break message,
        }
    };
    assert_eq!(items, vec![json!(1), json!(2)]);
    assert_eq!(end, json!({"type": COMPLETION, "invocationId": "dup"}));

    // Once it ended, the id is free again.
    assert_eq!(
        client.call("dup", "Echo", json!(["free"])).await["result"],
        "free"
    );
    server.assert_healthy().await;
}

#[actix_web::test]
async fn a_record_split_across_frames_is_reassembled() {
    let server = spawn_hub(&[]).await;
    let mut client = server.open(&user_token("alice")).await;
    let record = format!(
        "{}{RS}",
        json!({"type": 1, "invocationId": "s1", "target": "Echo", "arguments": ["split in three"]})
    );
    let (head, rest) = record.split_at(10);
    let (middle, tail) = rest.split_at(rest.len() - 1);
    client.send_text(head).await;
    client.send_text(middle).await;
    client.expect_silence(Duration::from_millis(200)).await;
    client.send_text(tail).await; // only the separator
    assert_eq!(client.completion("s1").await["result"], "split in three");

    // A frame that ends one record and starts the next.
    let a = json!({"type": 1, "invocationId": "a", "target": "Echo", "arguments": ["a"]});
    let b =
        json!({"type": 1, "invocationId": "b", "target": "Echo", "arguments": ["b"]}).to_string();
    let (b_head, b_tail) = b.split_at(b.len() / 2);
    client.send_text(format!("{a}{RS}{b_head}")).await;
    assert_eq!(client.completion("a").await["result"], "a");
    client.send_text(format!("{b_tail}{RS}")).await;
    assert_eq!(client.completion("b").await["result"], "b");
    server.assert_healthy().await;
}

#[actix_web::test]
async fn several_records_in_one_frame_are_all_answered_in_order() {
    let server = spawn_hub(&[]).await;
    let mut client = server.open(&user_token("alice")).await;
    let frame: String = (1..=5)
        .map(|i| {
            let record = json!({"type": 1, "invocationId": i.to_string(), "target": "Echo", "arguments": [i]});
            format!("{record}{RS}")
        })
        // A Ping and a non-blocking invocation (no id) among them.
        .chain([
            format!("{{\"type\":6}}{RS}"),
            format!("{}{RS}", json!({"type": 1, "target": "Echo", "arguments": ["no id"]})),
        ])
        .collect();
    client.send_text(frame).await;
    for i in 1..=5 {
        assert_eq!(
            client.next_message(PROMPT).await,
            json!({"type": COMPLETION, "invocationId": i.to_string(), "result": i})
        );
    }
    client.expect_silence(Duration::from_millis(200)).await;
    client.assert_echo("after a batch").await;
    server.assert_healthy().await;
}

#[actix_web::test]
async fn an_unknown_method_gets_the_signalr_error() {
    let server = spawn_hub(&[]).await;
    let mut client = server.open(&user_token("alice")).await;
    assert_eq!(
        client.call_error("1", "Nope", json!([])).await,
        "Failed to invoke 'Nope' due to an error on the server. HubException: Method does not exist."
    );
    // Method names are case-insensitive, as in ASP.NET Core.
    assert_eq!(
        client.call("2", "echo", json!(["lower"])).await["result"],
        "lower"
    );
    // Without an id, nothing answers and the connection stays.
    client
        .send_record(json!({"type": 1, "target": "Nope", "arguments": []}))
        .await;
    client.expect_silence(Duration::from_millis(200)).await;
    client.assert_echo("after unknown methods").await;
    server.assert_healthy().await;
}

#[actix_web::test]
async fn wrong_argument_counts_and_types_get_the_binding_error() {
    let server = spawn_hub(&[]).await;
    let mut client = server.open(&user_token("alice")).await;
    let mut admin = server.open(&admin_token("root")).await;
    let binding =
        |target: &str| format!("Failed to invoke '{target}' due to an error on the server.");
    assert_eq!(
        client.call_error("1", "Echo", json!([])).await,
        binding("Echo")
    );
    assert_eq!(
        client.call_error("2", "Echo", json!([1, 2])).await,
        binding("Echo")
    );
    assert_eq!(
        client.call_error("3", "Whoami", json!(["x"])).await,
        binding("Whoami")
    );
    assert_eq!(
        admin.call_error("4", "BroadcastMessage", json!([42])).await,
        binding("BroadcastMessage")
    );
    for arguments in [json!(["3", 0]), json!([1.5, 0]), json!([-1, 0]), json!([3])] {
        admin
            .send_record(json!({"type": 4, "invocationId": "5", "target": "Counter", "arguments": arguments}))
            .await;
        assert_eq!(
            admin.completion("5").await,
            json!({"type": COMPLETION, "invocationId": "5", "error": binding("Counter")}),
            "{arguments}"
        );
    }
    client.assert_echo("after binding errors").await;
    admin.assert_echo("after binding errors").await;
    server.assert_healthy().await;
}

#[actix_web::test]
async fn detailed_errors_add_the_binding_detail() {
    let server = spawn_hub(&[("SIGNET__HUB__DETAILED_ERRORS", "true")]).await;
    let mut client = server.open(&user_token("alice")).await;
    assert_eq!(
        client.call_error("1", "Echo", json!([])).await,
        "Failed to invoke 'Echo' due to an error on the server. InvalidDataException: \
         Invocation provides 0 argument(s) but target expects 1."
    );
    // ASP.NET Core's binding sentence, then which argument was wrong.
    assert_eq!(
        client.call_error("2", "RefreshToken", json!([42])).await,
        "Failed to invoke 'RefreshToken' due to an error on the server. InvalidDataException: \
         Error binding arguments. Make sure that the types of the provided values match the types \
         of the hub method being invoked. Argument 0 must be a string."
    );
    // A HubException is shown whether or not details are on.
    assert_eq!(
        client.call_error("3", "Nope", json!([])).await,
        "Failed to invoke 'Nope' due to an error on the server. HubException: Method does not exist."
    );
    server.assert_healthy().await;
}

#[actix_web::test]
async fn streaming_and_non_streaming_mismatches_get_the_signalr_texts() {
    let server = spawn_hub(&[]).await;
    let mut client = server.open(&user_token("alice")).await;
    assert_eq!(
        client.call_error("1", "Counter", json!([1, 0])).await,
        "The client attempted to invoke the streaming 'Counter' method with a non-streaming invocation."
    );
    client
        .send_record(json!({"type": 4, "invocationId": "2", "target": "Echo", "arguments": ["x"]}))
        .await;
    assert_eq!(
        client.completion("2").await["error"],
        "The client attempted to invoke the non-streaming 'Echo' method with a streaming invocation."
    );
    client.assert_echo("after mismatches").await;
    server.assert_healthy().await;
}

#[actix_web::test]
async fn a_non_admin_broadcast_is_unauthorized_and_the_connection_stays() {
    let server = spawn_hub(&[]).await;
    let mut user = server.open(&user_token("mallory")).await;
    let mut listener = server.open(&user_token("listener")).await;
    for target in ["BroadcastMessage", "GetConnectedUsersCount"] {
        let arguments: Value = if target == "BroadcastMessage" {
            json!(["hi"])
        } else {
            json!([])
        };
        assert_eq!(
            user.call_error("1", target, arguments).await,
            format!("Failed to invoke '{target}' because user is unauthorized")
        );
    }
    // Nothing was broadcast.
    listener.expect_silence(Duration::from_millis(200)).await;
    user.assert_echo("after unauthorized").await;
    // The role check comes before argument binding: no hint about the parameters.
    assert_eq!(
        user.call_error("2", "BroadcastMessage", json!([])).await,
        "Failed to invoke 'BroadcastMessage' because user is unauthorized"
    );
    server.assert_healthy().await;
}

#[actix_web::test]
async fn a_close_message_from_the_client_ends_the_connection_cleanly() {
    let server = spawn_hub(&[]).await;
    let mut other = server.open(&user_token("other")).await;
    let mut client = server.open(&user_token("leaving")).await;
    server.wait_for_connections(2).await;
    client.send_record(json!({"type": 7, "error": "bye"})).await;
    let ending = client.expect_close(PROMPT).await;
    assert!(ending.close_message.is_none(), "{ending:?}");
    server.wait_for_connections(1).await;
    other.assert_echo("after a client close").await;
    server.assert_healthy().await;
}

#[actix_web::test]
async fn websocket_pings_get_a_pong_with_their_payload() {
    let server = spawn_hub(&[]).await;
    let mut client = server.open(&user_token("pinger")).await;
    client.ping_for_pong(b"are you there", PROMPT).await;
    // An empty payload is a Ping too.
    client.ping_for_pong(b"", PROMPT).await;
    client.assert_echo("after pings").await;
}

#[actix_web::test]
async fn a_busy_hub_still_answers_websocket_pings() {
    let server = spawn_hub(&[]).await;
    let mut client = server.open(&user_token("busy")).await;
    // A stream in progress and a burst of calls the client does not read answers to: the
    // session is working through them when the Ping arrives behind them on the socket.
    client
        .invoke_stream("stream", "Counter", json!([50, 20]))
        .await;
    for i in 0..200 {
        client
            .invoke(&format!("burst-{i}"), "Echo", json!([i]))
            .await;
    }
    let sent = Instant::now();
    client.ping_for_pong(b"busy?", PROMPT).await;
    println!("pong after {:?} behind 200 calls", sent.elapsed());
    for i in 0..200 {
        let completion = client.completion(&format!("burst-{i}")).await;
        assert_eq!(completion["result"], i);
    }
    server.assert_healthy().await;
}
