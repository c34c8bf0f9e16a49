//! A raw SignalR JSON client over `awc`'s WebSocket client, for the edge cases the official
//! clients never produce (garbage handshakes, split records, binary frames in JSON mode), and a
//! test server that keeps its state, shutdown trigger and task so tests can look inside.

use crate::helpers::{claims, kid_of, postgres_env, sign_hs, test_settings, Backend, TEST_SECRET};
use awc::ws::{CloseCode, Codec, Frame, Message};
use awc::BoxedSocket;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use signet::startup::AppState;
use signet::Application;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

type Framed = actix_codec::Framed<BoxedSocket, Codec>;

/// The SignalR record separator.
pub const RS: char = '\u{1e}';

/// How long a test waits for something the server should send promptly.
pub const PROMPT: Duration = Duration::from_secs(5);

/// Message types of the hub protocol.
pub const INVOCATION: u64 = 1;
pub const STREAM_ITEM: u64 = 2;
pub const COMPLETION: u64 = 3;
pub const PING: u64 = 6;
pub const CLOSE: u64 = 7;

static SERVER_PANICS: AtomicUsize = AtomicUsize::new(0);
static PANIC_HOOK: Once = Once::new();

/// Counts panics on the server's threads (actix workers and acceptor), so a test can assert
/// that whatever it sent, the server did not panic. Test-thread panics are not counted.
fn install_panic_counter() {
    PANIC_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let on_server = std::thread::current()
                .name()
                .is_some_and(|name| name.starts_with("actix-server"));
            if on_server {
                SERVER_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

/// Panics seen on any test server's threads since the test binary started.
pub fn server_panics() -> usize {
    SERVER_PANICS.load(Ordering::SeqCst)
}

/// A running test server with its shared state, shutdown trigger and serving task.
pub struct HubServer {
    pub address: SocketAddr,
    pub state: AppState,
    pub trigger: CancellationToken,
    pub serving: tokio::task::JoinHandle<std::io::Result<()>>,
    pub http: awc::Client,
    _data_dir: tempfile::TempDir,
}

/// Starts a server like `spawn_app_with`, keeping what hub tests look at.
pub async fn spawn_hub(extra_env: &[(&str, &str)]) -> HubServer {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let settings = test_settings(data_dir.path(), extra_env);
    spawn_hub_with(settings, data_dir).await
}

/// Starts a server with `settings` (made with [`test_settings`] on `data_dir`, then adjusted).
pub async fn spawn_hub_with(
    settings: signet::settings::Settings,
    data_dir: tempfile::TempDir,
) -> HubServer {
    install_panic_counter();
    let app = Application::build(settings).await.expect("server builds");
    let address = app.address();
    let state = app.state().clone();
    let trigger = app.shutdown_trigger();
    let serving = actix_web::rt::spawn(app.run_until_stopped());
    HubServer {
        address,
        state,
        trigger,
        serving,
        http: awc::Client::default(),
        _data_dir: data_dir,
    }
}

/// [`spawn_hub`] on `backend`.
pub async fn spawn_hub_on(backend: Backend, extra_env: &[(&str, &str)]) -> HubServer {
    match backend {
        Backend::Sqlite => spawn_hub(extra_env).await,
        Backend::Postgres => {
            let url = crate::postgres::fresh_database().await;
            spawn_hub(&postgres_env(&url, extra_env)).await
        }
    }
}

/// A valid token whose principal holds the `admin` role.
pub fn admin_token(sub: &str) -> String {
    let mut c = claims(sub);
    c["roles"] = json!(["admin"]);
    sign_hs(
        TEST_SECRET,
        Some(&kid_of(TEST_SECRET)),
        Algorithm::HS256,
        &c,
    )
}

/// What an HTTP request came back with.
pub struct HttpAnswer {
    pub status: u16,
    pub headers: awc::http::header::HeaderMap,
    pub body: Value,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl HubServer {
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.address, path_and_query)
    }

    /// `POST /hubs/home/negotiate` with the given query, token and origin.
    pub async fn negotiate(
        &self,
        query: &str,
        token: Option<&str>,
        origin: Option<&str>,
    ) -> HttpAnswer {
        let mut req = self
            .http
            .post(self.url(&format!("/hubs/home/negotiate{query}")));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(origin) = origin {
            req = req.insert_header(("Origin", origin));
        }
        let mut res = req.send().await.expect("negotiate sent");
        let body = res.body().await.expect("negotiate body");
        HttpAnswer {
            status: res.status().as_u16(),
            headers: res.headers().clone(),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        }
    }

    /// A WebSocket to `/hubs/home{query}`; `Err(status)` when the upgrade is refused.
    pub async fn connect(
        &self,
        query: &str,
        token: Option<&str>,
        origin: Option<&str>,
    ) -> Result<RawClient, u16> {
        connect_at(&self.url(&format!("/hubs/home{query}")), token, origin).await
    }

    /// A connection (skipNegotiation) that completed the JSON handshake.
    pub async fn open(&self, token: &str) -> RawClient {
        open_at(&self.url("/hubs/home"), token).await
    }

    /// Connections the server holds (negotiated or connected).
    pub fn connection_count(&self) -> usize {
        self.state.connections.len()
    }

    /// Waits until the server holds `n` connections, failing after `PROMPT`.
    pub async fn wait_for_connections(&self, n: usize) {
        let what = format!("the server to hold {n} connections");
        crate::helpers::eventually(PROMPT, &what, || self.connection_count() == n).await;
    }

    /// Waits until the server's revocation task has applied an event to its connections.
    pub async fn wait_until_a_revocation_is_applied(&self) {
        crate::helpers::eventually(PROMPT, "a revocation event to be applied", || {
            self.state
                .metrics
                .render()
                .contains("signet_revocations_applied_total{")
        })
        .await;
    }

    /// The server still serves: nothing panicked and a new connection's Echo answers.
    pub async fn assert_healthy(&self) {
        assert_eq!(server_panics(), 0, "a server thread panicked");
        let mut fresh = self.open(&crate::helpers::user_token("healthy")).await;
        fresh.assert_echo("still alive").await;
        fresh.close().await;
    }
}

/// A WebSocket to the hub at `url` (a server, or a balancer in front of several);
/// `Err(status)` when the upgrade is refused.
pub async fn connect_at(
    url: &str,
    token: Option<&str>,
    origin: Option<&str>,
) -> Result<RawClient, u16> {
    let mut req = awc::Client::new().ws(url).max_frame_size(64 * 1024 * 1024);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(origin) = origin {
        req = req.origin(origin);
    }
    match req.connect().await {
        Ok((_, io)) => Ok(RawClient::from_socket(io)),
        Err(awc::error::WsClientError::InvalidResponseStatus(status)) => Err(status.as_u16()),
        Err(err) => panic!("websocket connect failed: {err}"),
    }
}

/// A connection to the hub at `url` (skipNegotiation) that completed the JSON handshake.
pub async fn open_at(url: &str, token: &str) -> RawClient {
    let mut client = connect_at(url, Some(token), None)
        .await
        .expect("websocket upgrade accepted");
    client.handshake().await;
    client
}

/// What the server sent, in order.
#[derive(Debug)]
pub enum Event {
    /// One JSON record (separator removed).
    Record(Value),
    /// A binary frame.
    Binary(Bytes),
    /// A WebSocket Close frame, with its code.
    Closed(Option<CloseCode>),
    /// The socket ended without a Close frame.
    Ended,
}

/// How a connection ended: the hub Close message (if any) and the WebSocket close code.
#[derive(Debug)]
pub struct Ending {
    pub close_message: Option<Value>,
    pub code: Option<CloseCode>,
    /// Every other record received before the end.
    pub records: Vec<Value>,
}

/// A client handed to a background task that pings for it; [`Pinger::stop`] gives it back.
pub struct Pinger {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<RawClient>,
}

impl Pinger {
    pub async fn stop(self) -> RawClient {
        let _ = self.stop.send(());
        self.task.await.expect("the pinger ran")
    }
}

/// A raw WebSocket client that speaks JSON hub records by hand.
pub struct RawClient {
    io: Framed,
    /// Text of a record not yet terminated by a separator.
    partial: Vec<u8>,
    records: VecDeque<Value>,
}

impl RawClient {
    /// A client over a WebSocket opened elsewhere (over TLS, say).
    pub fn from_socket(io: Framed) -> Self {
        Self {
            io,
            partial: Vec::new(),
            records: VecDeque::new(),
        }
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        let text: String = text.into();
        self.io
            .send(Message::Text(text.into()))
            .await
            .expect("text frame sent");
    }

    pub async fn send_binary(&mut self, bytes: impl Into<Bytes>) {
        self.io
            .send(Message::Binary(bytes.into()))
            .await
            .expect("binary frame sent");
    }

    /// Sends one record: the JSON of `value` and the separator, in one text frame.
    pub async fn send_record(&mut self, value: Value) {
        self.send_text(format!("{value}{RS}")).await;
    }

    pub async fn invoke(&mut self, id: &str, target: &str, arguments: Value) {
        self.send_record(
            json!({"type": 1, "invocationId": id, "target": target, "arguments": arguments}),
        )
        .await;
    }

    /// Starts a server-to-client stream (a `StreamInvocation`).
    pub async fn invoke_stream(&mut self, id: &str, target: &str, arguments: Value) {
        self.send_record(
            json!({"type": 4, "invocationId": id, "target": target, "arguments": arguments}),
        )
        .await;
    }

    /// Sends the JSON handshake and expects `{}`.
    pub async fn handshake(&mut self) {
        self.send_text(format!(r#"{{"protocol":"json","version":1}}{RS}"#))
            .await;
        let answer = self.next_record(PROMPT).await;
        assert_eq!(answer, json!({}), "handshake answer");
    }

    /// The next thing the server sends, failing after `wait`.
    pub async fn next_event(&mut self, wait: Duration) -> Event {
        if let Some(record) = self.records.pop_front() {
            return Event::Record(record);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.io.next())
                .await
                .unwrap_or_else(|_| panic!("nothing from the server within {wait:?}"));
            match frame {
                None => return Event::Ended,
                Some(Err(err)) => panic!("websocket read failed: {err}"),
                Some(Ok(Frame::Text(bytes))) => {
                    self.split_records(&bytes);
                    if let Some(record) = self.records.pop_front() {
                        return Event::Record(record);
                    }
                }
                Some(Ok(Frame::Binary(bytes))) => return Event::Binary(bytes),
                Some(Ok(Frame::Close(reason))) => return Event::Closed(reason.map(|r| r.code)),
                Some(Ok(Frame::Ping(_) | Frame::Pong(_))) => {}
                Some(Ok(Frame::Continuation(_))) => panic!("the server sent a fragmented frame"),
            }
        }
    }

    fn split_records(&mut self, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|&b| b == RS as u8) {
            self.partial.extend_from_slice(&bytes[..end]);
            bytes = &bytes[end + 1..];
            let record = std::mem::take(&mut self.partial);
            let value = serde_json::from_slice(&record).unwrap_or_else(|e| {
                panic!(
                    "the server sent a record that is not JSON ({e}): {}",
                    String::from_utf8_lossy(&record)
                )
            });
            self.records.push_back(value);
        }
        self.partial.extend_from_slice(bytes);
    }

    /// The next record, pings included.
    pub async fn next_record(&mut self, wait: Duration) -> Value {
        match self.next_event(wait).await {
            Event::Record(record) => record,
            other => panic!("expected a record, got {other:?}"),
        }
    }

    /// The next record that is not a Ping.
    pub async fn next_message(&mut self, wait: Duration) -> Value {
        loop {
            let record = self.next_record(wait).await;
            if record["type"] != PING {
                return record;
            }
        }
    }

    /// The Completion of `id`, skipping pings, stream items and server invocations.
    pub async fn completion(&mut self, id: &str) -> Value {
        loop {
            let message = self.next_message(PROMPT).await;
            if message["type"] == COMPLETION && message["invocationId"] == id {
                return message;
            }
            assert_ne!(
                message["type"], CLOSE,
                "closed while waiting for {id}: {message}"
            );
        }
    }

    /// Invokes `target` and returns its Completion.
    pub async fn call(&mut self, id: &str, target: &str, arguments: Value) -> Value {
        self.invoke(id, target, arguments).await;
        self.completion(id).await
    }

    /// The error text of a call that must fail.
    pub async fn call_error(&mut self, id: &str, target: &str, arguments: Value) -> String {
        let completion = self.call(id, target, arguments).await;
        assert!(completion.get("result").is_none(), "{completion}");
        completion["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error in {completion}"))
            .to_string()
    }

    /// `Echo(value)` answers with `value`.
    pub async fn assert_echo(&mut self, value: &str) {
        let id = format!("echo-{value}");
        let completion = self.call(&id, "Echo", json!([value])).await;
        assert_eq!(
            completion,
            json!({"type": COMPLETION, "invocationId": id, "result": value})
        );
    }

    /// Reads until the server closes the socket; fails if that takes longer than `wait`.
    pub async fn expect_close(&mut self, wait: Duration) -> Ending {
        let mut ending = Ending {
            close_message: None,
            code: None,
            records: Vec::new(),
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Event::Record(record) if record["type"] == CLOSE => {
                    assert!(ending.close_message.is_none(), "two Close messages");
                    ending.close_message = Some(record);
                }
                Event::Record(record) => ending.records.push(record),
                Event::Binary(bytes) => panic!("a binary frame in JSON mode: {bytes:?}"),
                Event::Closed(code) => {
                    ending.code = code;
                    return ending;
                }
                Event::Ended => return ending,
            }
        }
    }

    /// Nothing but pings arrives within `wait`, and the socket stays open.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(record) = self.records.pop_front() {
            panic!("unexpected record {record}");
        }
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(frame) = tokio::time::timeout_at(deadline, self.io.next()).await {
            match frame {
                Some(Ok(Frame::Text(bytes))) => {
                    self.split_records(&bytes);
                    while let Some(record) = self.records.pop_front() {
                        assert_eq!(record["type"], PING, "unexpected record {record}");
                    }
                }
                Some(Ok(Frame::Ping(_) | Frame::Pong(_))) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Sends a Ping every `every` (and reads nothing) until stopped, so the client timeout
    /// never fires for this connection while a test looks elsewhere.
    pub fn keep_pinging(mut self, every: Duration) -> Pinger {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = actix_web::rt::spawn(async move {
            loop {
                // A socket the server dropped ends the pinging; the owner sees why when it reads.
                let ping = Message::Text(format!("{{\"type\":6}}{RS}").into());
                if self.io.send(ping).await.is_err() {
                    return self;
                }
                // The cadence of a client's pings, not a wait for the server.
                tokio::select! {
                    _ = &mut stopped => return self,
                    _ = actix_web::rt::time::sleep(every) => {}
                }
            }
        });
        Pinger { stop, task }
    }

    /// Sends a WebSocket Ping frame (not the hub protocol's Ping message) and waits for the Pong
    /// with the same payload; hub records arriving meanwhile are kept for the next reads.
    pub async fn ping_for_pong(&mut self, payload: &'static [u8], wait: Duration) {
        self.io
            .send(Message::Ping(Bytes::from_static(payload)))
            .await
            .expect("ping frame sent");
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.io.next())
                .await
                .unwrap_or_else(|_| panic!("no Pong for a WebSocket Ping within {wait:?}"));
            match frame {
                Some(Ok(Frame::Pong(echoed))) if echoed == payload => return,
                Some(Ok(Frame::Text(bytes))) => self.split_records(&bytes),
                Some(Ok(Frame::Pong(_) | Frame::Ping(_))) => {}
                other => panic!("the socket ended while waiting for a Pong: {other:?}"),
            }
        }
    }

    /// Closes the socket as a well-behaved client does.
    pub async fn close(mut self) {
        let _ = self.io.send(Message::Close(None)).await;
    }

    /// Sends a close frame and waits (at most `wait`) for the server's answer to it.
    pub async fn close_and_wait(&mut self, wait: Duration) -> Ending {
        let _ = self.io.send(Message::Close(None)).await;
        self.expect_close(wait).await
    }
}
