//! Raw requests to the hub transports, for the tests of Server-Sent Events, long polling and
//! stateful reconnect: what the official clients send, with the status codes and headers they
//! hide. JSON records end with the record separator; MessagePack frames are length-prefixed.

use crate::helpers::{claims, kid_of, now, sign_hs, TestApp, TEST_SECRET};
use awc::http::header::{HeaderMap, ACCEPT};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use std::time::Duration;

pub const HUB: &str = "/hubs/home";

/// How long a test waits for something the server should do promptly.
pub const PROMPT: Duration = Duration::from_secs(5);

/// The JSON handshake request.
pub const JSON_HANDSHAKE: &[u8] = b"{\"protocol\":\"json\",\"version\":1}\x1e";
/// The MessagePack handshake request (the handshake itself is always JSON text).
pub const MSGPACK_HANDSHAKE: &[u8] = b"{\"protocol\":\"messagepack\",\"version\":1}\x1e";
/// The successful handshake response.
pub const HANDSHAKE_OK: &[u8] = b"{}\x1e";

/// A token for `sub` with `roles` that expires `ttl_secs` from now.
pub fn token(sub: &str, roles: &[&str], ttl_secs: i64) -> String {
    token_expiring_at(sub, roles, now() + ttl_secs)
}

/// A token for `sub` with `roles` whose `exp` claim is `exp` (Unix seconds).
pub fn token_expiring_at(sub: &str, roles: &[&str], exp: i64) -> String {
    let mut claims = claims(sub);
    claims["roles"] = json!(roles);
    claims["exp"] = json!(exp);
    sign_hs(
        TEST_SECRET,
        Some(&kid_of(TEST_SECRET)),
        Algorithm::HS256,
        &claims,
    )
}

/// A JSON invocation record expecting a completion.
pub fn invocation(id: &str, target: &str, arguments: Value) -> Vec<u8> {
    let mut record = json!({
        "type": 1, "invocationId": id, "target": target, "arguments": arguments,
    })
    .to_string()
    .into_bytes();
    record.push(0x1e);
    record
}

/// The JSON records in `bytes`.
pub fn records(bytes: &[u8]) -> Vec<Value> {
    bytes
        .split(|&b| b == 0x1e)
        .filter(|r| !r.is_empty())
        .map(|r| serde_json::from_slice(r).expect("a JSON record"))
        .collect()
}

/// `value` as a length-prefixed MessagePack frame.
pub fn msgpack_frame(value: &rmpv::Value) -> Vec<u8> {
    let mut body = Vec::new();
    rmpv::encode::write_value(&mut body, value).expect("encodes");
    let mut frame = Vec::new();
    let mut len = body.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            frame.push(byte);
            break;
        }
        frame.push(byte | 0x80);
    }
    frame.extend_from_slice(&body);
    frame
}

/// The MessagePack messages in `bytes`.
pub fn msgpack_messages(mut bytes: &[u8]) -> Vec<rmpv::Value> {
    let mut messages = Vec::new();
    while !bytes.is_empty() {
        let (mut len, mut shift, mut prefix) = (0usize, 0, 0);
        loop {
            let byte = bytes[prefix];
            len |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            prefix += 1;
            if byte & 0x80 == 0 {
                break;
            }
        }
        let mut body = &bytes[prefix..prefix + len];
        messages.push(rmpv::decode::read_value(&mut body).expect("a MessagePack message"));
        bytes = &bytes[prefix + len..];
    }
    messages
}

/// An answer: status, headers and the whole body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Asserts the no-cache headers of a long-poll answer.
    pub fn assert_no_cache(&self) {
        assert_eq!(
            self.header("cache-control"),
            "no-cache, no-store",
            "{self:?}"
        );
        assert_eq!(self.header("pragma"), "no-cache", "{self:?}");
        assert_eq!(self.header("expires"), "Thu, 01 Jan 1970 00:00:00 GMT");
    }
}

async fn reply(request: awc::ClientRequest, body: Option<Bytes>) -> Reply {
    let sent = match body {
        Some(body) => request.send_body(body).await,
        None => request.send().await,
    };
    let response = sent.expect("request sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .timeout(Duration::from_secs(30))
        .body()
        .limit(4 << 20)
        .await
        .expect("body");
    Reply {
        status,
        headers,
        body,
    }
}

/// The hub URL with `id` when given.
fn hub_url(app: &TestApp, id: Option<&str>) -> String {
    match id {
        Some(id) => app.url(&format!("{HUB}?id={id}")),
        None => app.url(HUB),
    }
}

/// `POST /hubs/home/negotiate?negotiateVersion=1` plus `query`.
pub async fn negotiate(app: &TestApp, bearer: &str, query: &str) -> Reply {
    let url = app.url(&format!("{HUB}/negotiate?negotiateVersion=1{query}"));
    reply(app.client.post(url).bearer_auth(bearer), None).await
}

/// Negotiates and returns the connection token.
pub async fn connection_token(app: &TestApp, bearer: &str) -> String {
    let negotiated = negotiate(app, bearer, "").await;
    assert_eq!(negotiated.status, 200, "{negotiated:?}");
    negotiated.json()["connectionToken"]
        .as_str()
        .expect("connectionToken")
        .to_string()
}

/// A long poll: `GET /hubs/home?id=`.
pub async fn poll(app: &TestApp, id: Option<&str>, bearer: &str) -> Reply {
    start_poll(app, id, bearer).await
}

/// A long poll as a future that owns everything, to run beside other requests.
pub fn start_poll(
    app: &TestApp,
    id: Option<&str>,
    bearer: &str,
) -> impl std::future::Future<Output = Reply> + 'static {
    let request = app
        .client
        .get(hub_url(app, id))
        .bearer_auth(bearer)
        .timeout(Duration::from_secs(30));
    reply(request, None)
}

/// A send: `POST /hubs/home?id=` with `body`.
pub async fn send(app: &TestApp, id: Option<&str>, bearer: &str, body: &[u8]) -> Reply {
    let request = app.client.post(hub_url(app, id)).bearer_auth(bearer);
    reply(request, Some(Bytes::copy_from_slice(body))).await
}

/// `DELETE /hubs/home?id=`.
pub async fn delete(app: &TestApp, id: Option<&str>, bearer: &str) -> Reply {
    reply(
        app.client.delete(hub_url(app, id)).bearer_auth(bearer),
        None,
    )
    .await
}

/// Negotiates a long-polling connection, makes its first poll and completes the handshake;
/// returns the connection token.
pub async fn long_polling_connection(app: &TestApp, bearer: &str, handshake: &[u8]) -> String {
    let id = connection_token(app, bearer).await;
    let first = poll(app, Some(&id), bearer).await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(send(app, Some(&id), bearer, handshake).await.status, 200);
    let answer = poll(app, Some(&id), bearer).await;
    assert_eq!((answer.status, &answer.body[..]), (200, HANDSHAKE_OK));
    id
}

/// An open Server-Sent Events response, read event by event.
pub struct EventStream {
    pub status: u16,
    pub headers: HeaderMap,
    body: futures_util::stream::LocalBoxStream<'static, Result<Bytes, awc::error::PayloadError>>,
    buffer: BytesMut,
}

impl EventStream {
    /// `GET /hubs/home?id=` with `Accept: text/event-stream`.
    pub async fn open(app: &TestApp, id: Option<&str>, bearer: &str) -> Self {
        let response = app
            .client
            .get(hub_url(app, id))
            .bearer_auth(bearer)
            .insert_header((ACCEPT, "text/event-stream"))
            .send()
            .await
            .expect("request sent");
        Self {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.boxed_local(),
            buffer: BytesMut::new(),
        }
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The next `len` raw bytes of the stream.
    pub async fn read_exact(&mut self, len: usize) -> Bytes {
        while self.buffer.len() < len {
            let chunk = tokio::time::timeout(PROMPT, self.body.next())
                .await
                .expect("the stream to go on")
                .expect("the stream not to end")
                .expect("the stream not to fail");
            self.buffer.extend_from_slice(&chunk);
        }
        self.buffer.split_to(len).freeze()
    }

    /// The next event, raw (its `data:` lines and the blank line ending it); `None` once the
    /// stream ended.
    pub async fn next_event(&mut self) -> Option<String> {
        loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                let event = self.buffer.split_to(end + 4);
                return Some(String::from_utf8(event.to_vec()).expect("UTF-8 event"));
            }
            match tokio::time::timeout(PROMPT, self.body.next())
                .await
                .expect("an event or the end of the stream")
            {
                Some(chunk) => self
                    .buffer
                    .extend_from_slice(&chunk.expect("the stream not to fail")),
                None => return None,
            }
        }
    }

    /// The data of the next event: its `data:` lines joined with `\n`.
    pub async fn next_data(&mut self) -> Option<String> {
        let event = self.next_event().await?;
        let lines: Vec<&str> = event
            .trim_end_matches("\r\n")
            .split("\r\n")
            .map(|line| line.strip_prefix("data: ").expect("a data line"))
            .collect();
        Some(lines.join("\n"))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
