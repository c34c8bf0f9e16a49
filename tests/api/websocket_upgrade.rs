//! The WebSocket upgrade on the raw socket: the server writes the 101 and owns the stream from
//! there (src/transport/websocket/upgrade.rs). Upgrades it refuses are answered as any request
//! and the connection closed; frames the client sends right behind its request are read; a
//! message larger than a read arrives whole. Spoken by hand over TCP, so the bytes on the wire
//! are the test's to choose (the official client's conformance suites cover the rest).

use crate::helpers::{spawn_app_with, user_token, TestApp};
use crate::ws_client::PROMPT;
use actix_http::ws::{Codec, Frame, Message};
use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder};

const RS: char = '\u{1e}';

/// A WebSocket upgrade request for `path`, with `token` as the bearer if any.
fn upgrade_request(app: &TestApp, path: &str, token: Option<&str>) -> Vec<u8> {
    let auth = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n",
        app.address
    )
    .into_bytes()
}

/// Client frames (masked) carrying `records` as one text message.
fn text_frame(records: &[Value]) -> BytesMut {
    let text: String = records.iter().map(|r| format!("{r}{RS}")).collect();
    let mut out = BytesMut::new();
    Codec::new()
        .client_mode()
        .encode(Message::Text(text.into()), &mut out)
        .expect("encodes");
    out
}

/// An HTTP answer read off a raw socket.
struct RawAnswer {
    status: u16,
    head: String,
    body: Bytes,
}

/// Reads the answer to a refused upgrade: the server closes the connection after it (a
/// timeout here means it did not).
async fn read_refusal(stream: &mut TcpStream) -> RawAnswer {
    let mut raw = Vec::new();
    tokio::time::timeout(PROMPT, stream.read_to_end(&mut raw))
        .await
        .expect("the server closes the connection after its answer")
        .expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head[9..12].parse().expect("a status code");
    RawAnswer {
        status,
        head,
        body: Bytes::copy_from_slice(&raw[split + 4..]),
    }
}

/// A hub socket opened by hand: the 101 read, frames decoded as a client does.
struct HandSocket {
    stream: TcpStream,
    codec: Codec,
    buf: BytesMut,
}

impl HandSocket {
    /// Sends `first` (the upgrade request, possibly with frames behind it) and reads the 101.
    async fn open(app: &TestApp, first: &[u8]) -> Self {
        let mut stream = TcpStream::connect(app.address).await.expect("connects");
        stream.write_all(first).await.expect("request sent");
        let mut buf = BytesMut::new();
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let read = tokio::time::timeout(PROMPT, stream.read_buf(&mut buf))
                .await
                .expect("the upgrade answered in time")
                .expect("read");
            assert!(read > 0, "closed before the upgrade was answered: {buf:?}");
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let _ = buf.split_to(end + 4);
        Self {
            stream,
            codec: Codec::new().client_mode().max_size(1 << 20),
            buf,
        }
    }

    async fn send(&mut self, frames: &[u8]) {
        self.stream.write_all(frames).await.expect("frames sent");
    }

    /// The records of the server's next text message.
    async fn records(&mut self) -> Vec<Value> {
        loop {
            match self.codec.decode(&mut self.buf).expect("a valid frame") {
                Some(Frame::Text(text)) => {
                    return std::str::from_utf8(&text)
                        .expect("utf-8")
                        .split(RS)
                        .filter(|r| !r.is_empty())
                        .map(|r| serde_json::from_str(r).expect("a JSON record"))
                        .collect()
                }
                Some(Frame::Ping(_) | Frame::Pong(_)) => continue,
                Some(other) => panic!("unexpected frame {other:?}"),
                None => {}
            }
            let read = tokio::time::timeout(PROMPT, self.stream.read_buf(&mut self.buf))
                .await
                .expect("a frame in time")
                .expect("read");
            assert!(read > 0, "the server closed the socket");
        }
    }

    /// Records until the completion of invocation `id` (included); the server may send
    /// several in one message.
    async fn until_completion(&mut self, id: &str) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            for record in self.records().await {
                let done = record["type"] == 3 && record["invocationId"] == id;
                seen.push(record);
                if done {
                    return seen;
                }
            }
        }
    }

    /// The completion of invocation `id`.
    async fn completion(&mut self, id: &str) -> Value {
        self.until_completion(id)
            .await
            .pop()
            .expect("the completion")
    }
}

fn echo(id: &str, value: &str) -> Value {
    json!({"type": 1, "invocationId": id, "target": "Echo", "arguments": [value]})
}

fn handshake() -> Value {
    json!({"protocol": "json", "version": 1})
}

#[actix_web::test]
async fn refused_upgrades_get_the_answer_of_any_request_and_the_connection_closes() {
    let app = spawn_app_with(&[]).await;
    let token = user_token("upgrade-refused");
    let cases = [
        ("/hubs/nope", Some(token.as_str()), 404, "unknown_hub"),
        ("/hubs/home", Some("not-a-token"), 401, "invalid_token"),
        ("/hubs/home", None, 401, "missing_token"),
        (
            "/hubs/home?id=unknown",
            Some(token.as_str()),
            404,
            "unknown_connection",
        ),
    ];
    for (path, bearer, status, error) in cases {
        let mut stream = TcpStream::connect(app.address).await.expect("connects");
        stream
            .write_all(&upgrade_request(&app, path, bearer))
            .await
            .expect("sent");
        let answer = read_refusal(&mut stream).await;
        assert_eq!(answer.status, status, "{path}: {}", answer.head);
        let body: Value = serde_json::from_slice(&answer.body).expect("a JSON error body");
        assert_eq!(body["error"], error, "{path}: {body}");
        let head = answer.head.to_ascii_lowercase();
        assert!(head.contains("connection: close"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", answer.body.len())),
            "{head}"
        );
    }

    // A path that is no hub answers what it answers without the upgrade headers.
    let mut stream = TcpStream::connect(app.address).await.expect("connects");
    stream
        .write_all(&upgrade_request(&app, "/healthz", None))
        .await
        .expect("sent");
    let upgraded = read_refusal(&mut stream).await;
    let mut plain = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(upgraded.status, plain.status().as_u16());
    assert_eq!(upgraded.body, plain.body().await.expect("body"));
}

#[actix_web::test]
async fn frames_sent_right_behind_the_upgrade_request_are_read() {
    let app = spawn_app_with(&[]).await;
    let token = user_token("upgrade-early");
    // The request, the handshake and an invocation in one write: the server reads them
    // together, before it has even answered the upgrade.
    let mut first = upgrade_request(&app, "/hubs/home", Some(&token));
    first.extend_from_slice(&text_frame(&[handshake()]));
    first.extend_from_slice(&text_frame(&[echo("early", "right behind")]));
    let mut socket = HandSocket::open(&app, &first).await;
    let records = socket.until_completion("early").await;
    assert_eq!(
        records[0],
        json!({}),
        "the handshake answer first: {records:?}"
    );
    let completion = records.last().expect("the completion");
    assert_eq!(completion["result"], "right behind", "{completion}");
}

#[actix_web::test]
async fn a_message_larger_than_a_read_arrives_whole_in_both_directions() {
    let app = spawn_app_with(&[("SIGNET__HUB__MAX_MESSAGE_BYTES", "262144")]).await;
    let token = user_token("upgrade-large");
    let mut socket =
        HandSocket::open(&app, &upgrade_request(&app, "/hubs/home", Some(&token))).await;
    socket.send(&text_frame(&[handshake()])).await;
    assert_eq!(socket.records().await, vec![json!({})]);

    // 200 KiB: many reads on the server (a frame header, then pieces of its payload).
    let large: String = (0..200 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let frame = text_frame(&[echo("large", &large)]);
    socket.send(&frame[..1]).await;
    for piece in frame[1..].chunks(3000) {
        socket.send(piece).await;
    }
    let completion = socket.completion("large").await;
    assert_eq!(completion["result"].as_str(), Some(large.as_str()));

    // The socket is still in step: a small message after the large one.
    socket.send(&text_frame(&[echo("after", "small")])).await;
    assert_eq!(socket.completion("after").await["result"], "small");
}
