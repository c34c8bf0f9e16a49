//! The real `signet-device` binary against a scripted stand-in for the server: the device-token
//! endpoint, negotiate and a `/hubs/home` WebSocket speaking the JSON hub protocol through the
//! library's own codecs. The stand-in signs `Command`s and checks what the device sends exactly
//! as the contract of issue 7 says the server does, so these tests pin the device's side of it
//! without depending on the server's home-hub methods. The server's
//! `tests/client_binaries/device.rs` runs the same story against the real server.

mod support;

/// The device binary [`support::DeviceProcess`] starts: this package's own.
fn device_command() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_signet-device"))
}

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};
use signet_protocol::envelope::{
    derive_message_key, unix_now_ms, EnvelopeBuilder, EnvelopeLimits, EnvelopeVerifier,
    InMemoryNonceStore, MessageKey,
};
use signet_protocol::protocol::handshake::{HandshakeDecoder, SUCCESS_RESPONSE};
use signet_protocol::protocol::{CompletionResult, HubMessage, HubProtocol, JsonDecoder};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::DeviceProcess;
use tokio::sync::mpsc;

const MASTER: &[u8] = b"fake hub envelope master key, 32+ bytes long";
const DEVICE_ID: &str = "fAkEdEvIcEiD0123456789";
const DEVICE_KEY: &str = "fake-device-key-0123456789-abcdefghijklmnopq";
const HUB: &str = "/hubs/home";
const WAIT: Duration = Duration::from_secs(15);

/// What the stand-in saw.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    Exchanged {
        session: String,
    },
    Connected {
        session: String,
    },
    Invoked {
        session: String,
        target: String,
        argument: Value,
    },
    Refreshed {
        session: String,
    },
    /// `RefreshToken` arrived while refusals are on; the test answers it.
    RefreshHeld {
        invocation_id: String,
    },
    Disconnected,
}

enum ToDevice {
    Message(HubMessage),
    Close {
        error: String,
        allow_reconnect: bool,
    },
}

struct FakeState {
    revoked: bool,
    /// Leave `RefreshToken` unanswered and report it, for the test to refuse.
    hold_refresh: bool,
    token_lifetime_secs: u64,
    /// Access token -> the session its message key is derived from.
    sessions: HashMap<String, String>,
    issued: u64,
    connection: Option<mpsc::UnboundedSender<ToDevice>>,
}

struct Fake {
    state: Mutex<FakeState>,
    events: mpsc::UnboundedSender<Event>,
}

impl Fake {
    fn session_of(&self, req: &HttpRequest) -> Option<String> {
        let header = req.headers().get("Authorization")?.to_str().ok()?;
        let token = header.strip_prefix("Bearer ")?;
        self.state.lock().unwrap().sessions.get(token).cloned()
    }
}

struct FakeHub {
    url: String,
    fake: web::Data<Fake>,
    events: mpsc::UnboundedReceiver<Event>,
}

fn key(session: &str) -> MessageKey {
    derive_message_key(MASTER, session)
}

impl FakeHub {
    async fn start(token_lifetime_secs: u64) -> Self {
        let (events_tx, events) = mpsc::unbounded_channel();
        let fake = web::Data::new(Fake {
            state: Mutex::new(FakeState {
                revoked: false,
                hold_refresh: false,
                token_lifetime_secs,
                sessions: HashMap::new(),
                issued: 0,
                connection: None,
            }),
            events: events_tx,
        });
        let data = fake.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/api/auth/device-token", web::post().to(device_token))
                .route("/hubs/home/negotiate", web::post().to(negotiate))
                .route("/hubs/home", web::get().to(hub))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap();
        let address = server.addrs()[0];
        actix_rt::spawn(server.run());
        Self {
            url: format!("http://{address}"),
            fake,
            events,
        }
    }

    /// The next event, skipping those `wanted` rejects.
    async fn wait_for(&mut self, mut wanted: impl FnMut(&Event) -> bool) -> Event {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .expect("the expected event in time")
                .expect("events channel open");
            if wanted(&event) {
                return event;
            }
        }
    }

    async fn connected(&mut self) -> String {
        match self
            .wait_for(|e| matches!(e, Event::Connected { .. }))
            .await
        {
            Event::Connected { session } => session,
            _ => unreachable!(),
        }
    }

    /// The next invocation of `target`: its session and its argument.
    async fn invoked(&mut self, target: &str) -> (String, Value) {
        match self
            .wait_for(|e| matches!(e, Event::Invoked { target: t, .. } if t == target))
            .await
        {
            Event::Invoked {
                session, argument, ..
            } => (session, argument),
            _ => unreachable!(),
        }
    }

    fn to_device(&self, message: ToDevice) {
        let state = self.fake.state.lock().unwrap();
        let connection = state.connection.as_ref().expect("a connected device");
        let _ = connection.send(message);
    }

    /// `Command(envelope)`, as the server sends it: non-blocking.
    fn command(&self, envelope: Value) {
        self.to_device(ToDevice::Message(HubMessage::invocation(
            "Command",
            vec![envelope],
        )));
    }

    fn close(&self, error: &str, allow_reconnect: bool) {
        self.to_device(ToDevice::Close {
            error: error.into(),
            allow_reconnect,
        });
    }

    fn revoke(&self) {
        self.fake.state.lock().unwrap().revoked = true;
    }

    fn issued_tokens(&self) -> Vec<String> {
        let state = self.fake.state.lock().unwrap();
        state.sessions.keys().cloned().collect()
    }
}

async fn device_token(fake: web::Data<Fake>, body: web::Json<Value>) -> HttpResponse {
    let mut state = fake.state.lock().unwrap();
    if state.revoked || body["deviceId"] != DEVICE_ID || body["deviceKey"] != DEVICE_KEY {
        return HttpResponse::Unauthorized()
            .json(json!({"error": "invalid_device_credentials", "message": "no"}));
    }
    state.issued += 1;
    let session = format!("session-{}", state.issued);
    let token = format!("access-token-{}-{}", state.issued, "x".repeat(40));
    state.sessions.insert(token.clone(), session.clone());
    let _ = fake.events.send(Event::Exchanged {
        session: session.clone(),
    });
    HttpResponse::Ok().json(json!({
        "accessToken": token,
        "expiresIn": state.token_lifetime_secs,
        "messageKey": key(&session).to_base64url(),
    }))
}

async fn negotiate(fake: web::Data<Fake>, req: HttpRequest) -> HttpResponse {
    if fake.session_of(&req).is_none() {
        return HttpResponse::Unauthorized().finish();
    }
    HttpResponse::Ok().json(json!({
        "negotiateVersion": 1,
        "connectionId": "public-id",
        "connectionToken": "secret+token/with=odd&chars",
        "availableTransports": [{"transport": "WebSockets", "transferFormats": ["Text", "Binary"]}],
    }))
}

async fn hub(
    fake: web::Data<Fake>,
    req: HttpRequest,
    body: web::Payload,
) -> actix_web::Result<HttpResponse> {
    let Some(session) = fake.session_of(&req) else {
        return Ok(HttpResponse::Unauthorized().finish());
    };
    // Without negotiation there is no connection token; with it, it travels percent-encoded.
    let query = req.query_string();
    if !query.is_empty() && query != "id=secret%2Btoken%2Fwith%3Dodd%26chars" {
        return Ok(HttpResponse::NotFound().finish());
    }
    let (response, ws, stream) = actix_ws::handle(&req, body)?;
    actix_rt::spawn(serve(fake, session, ws, stream));
    Ok(response)
}

/// One device connection: the handshake, then hub messages both ways.
async fn serve(
    fake: web::Data<Fake>,
    mut session: String,
    mut ws: actix_ws::Session,
    mut stream: actix_ws::MessageStream,
) {
    let (tx, mut outbound) = mpsc::unbounded_channel();
    fake.state.lock().unwrap().connection = Some(tx);
    let mut handshake = HandshakeDecoder::new(64 * 1024);
    let mut decoder: Option<JsonDecoder> = None;
    loop {
        tokio::select! {
            inbound = stream.recv() => {
                let bytes = match inbound {
                    Some(Ok(actix_ws::Message::Text(text))) => text.as_bytes().to_vec(),
                    Some(Ok(actix_ws::Message::Ping(payload))) => {
                        let _ = ws.pong(&payload).await;
                        continue;
                    }
                    Some(Ok(actix_ws::Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                let bytes = match decoder {
                    Some(_) => bytes,
                    None => match handshake.feed(&bytes) {
                        Ok(Some(done)) => {
                            assert_eq!(done.protocol, HubProtocol::Json);
                            ws.text(String::from_utf8(SUCCESS_RESPONSE.to_vec()).unwrap()).await.unwrap();
                            let _ = fake.events.send(Event::Connected { session: session.clone() });
                            decoder = Some(JsonDecoder::new(64 * 1024));
                            done.remaining
                        }
                        Ok(None) => continue,
                        Err(error) => panic!("bad handshake from the device: {error}"),
                    },
                };
                let Some(json) = decoder.as_mut() else { continue };
                json.feed(&bytes).unwrap();
                while let Some(message) = json.next_message() {
                    let message = message.expect("the device sends valid hub messages");
                    if let Some(reply) = on_message(&fake, &mut session, message) {
                        send(&mut ws, &reply).await;
                    }
                }
            }
            out = outbound.recv() => match out {
                Some(ToDevice::Message(message)) => send(&mut ws, &message).await,
                Some(ToDevice::Close { error, allow_reconnect }) => {
                    send(&mut ws, &HubMessage::close(Some(error), allow_reconnect)).await;
                    let _ = ws.close(None).await;
                    break;
                }
                None => break,
            },
        }
    }
    let _ = fake.events.send(Event::Disconnected);
}

async fn send(ws: &mut actix_ws::Session, message: &HubMessage) {
    let bytes = HubProtocol::Json.encode_to_bytes(message).unwrap();
    let _ = ws.text(String::from_utf8(bytes.to_vec()).unwrap()).await;
}

/// Records an invocation and answers it as the server would.
fn on_message(fake: &Fake, session: &mut String, message: HubMessage) -> Option<HubMessage> {
    let HubMessage::Invocation {
        invocation_id,
        target,
        mut arguments,
        ..
    } = message
    else {
        return None;
    };
    let argument = arguments.pop().unwrap_or(Value::Null);
    if target == "RefreshToken" && fake.state.lock().unwrap().hold_refresh {
        let _ = fake.events.send(Event::RefreshHeld {
            invocation_id: invocation_id.unwrap_or_default(),
        });
        return None;
    }
    let completion = if target == "RefreshToken" {
        let token = argument.as_str().unwrap_or_default();
        let next = fake.state.lock().unwrap().sessions.get(token).cloned();
        match next {
            Some(next) => {
                *session = next.clone();
                let _ = fake.events.send(Event::Refreshed { session: next });
                CompletionResult::Result(json!({"tokenLifetimeSeconds": 60}))
            }
            None => CompletionResult::Error("invalid_token".into()),
        }
    } else {
        let _ = fake.events.send(Event::Invoked {
            session: session.clone(),
            target: target.clone(),
            argument,
        });
        CompletionResult::Void
    };
    invocation_id.map(|id| HubMessage::completion(id, completion))
}

/// Verifies an envelope from the device as the server does, and returns its message.
async fn open(envelope: &Value, session: &str, target: &str) -> Value {
    let verifier = EnvelopeVerifier::new(
        EnvelopeLimits::default(),
        Arc::new(InMemoryNonceStore::new(100)),
    );
    verifier
        .verify(envelope, &key(session), HUB, target, session, unix_now_ms())
        .await
        .unwrap_or_else(|error| panic!("{target} envelope refused: {}", error.code()))
        .into_command()
}

/// A `Command` envelope as the server signs it for the device's session.
fn command(session: &str, command_id: &str, name: &str) -> Value {
    let message = json!({"commandId": command_id, "command": name, "args": null, "from": "user-1"});
    EnvelopeBuilder::new(&key(session), HUB, "Command").build(&message.to_string())
}

fn start_device(hub: &FakeHub, extra: &[&str]) -> DeviceProcess {
    DeviceProcess::start(&hub.url, DEVICE_ID, DEVICE_KEY, extra)
}

#[actix_rt::test]
async fn executes_signed_commands_and_refuses_forged_stale_and_replayed_ones() {
    let mut hub = FakeHub::start(900).await;
    let mut device = start_device(&hub, &["--telemetry-interval", "1s"]);
    let session = hub.connected().await;

    // It reports its state as soon as it is online, signed for ReportTelemetry.
    let (from, report) = hub.invoked("ReportTelemetry").await;
    assert_eq!(from, session);
    let report = open(&report, &session, "ReportTelemetry").await;
    assert_eq!(report["kind"], "state");
    assert_eq!(report["data"]["lock"], "locked");
    assert_eq!(report["data"]["name"], "test door");

    let open_door = command(&session, "c-1", "OPEN_DOOR");
    hub.command(open_door.clone());
    let (_, result) = hub.invoked("CommandResult").await;
    assert_eq!(
        open(&result, &session, "CommandResult").await,
        json!({"commandId": "c-1", "status": "ok",
               "result": {"door": "opened", "lock": "unlocked", "doorOpenings": 1}})
    );
    let (_, report) = hub.invoked("ReportTelemetry").await;
    let report = open(&report, &session, "ReportTelemetry").await;
    assert_eq!(report["data"]["lock"], "unlocked", "{report}");

    // Replayed, tampered, signed by someone else: not executed, not answered.
    hub.command(open_door);
    let mut tampered = command(&session, "c-2", "LOCK");
    tampered["message"] = json!(
        json!({"commandId": "c-2", "command": "OPEN_DOOR", "args": null, "from": "user-1"})
            .to_string()
    );
    hub.command(tampered);
    hub.command(command("someone-elses-session", "c-3", "OPEN_DOOR"));
    // Authentic but stale: answered `rejected` so the user learns why nothing happened.
    let stale = EnvelopeBuilder::new(&key(&session), HUB, "Command")
        .issued_at(unix_now_ms() - 120_000)
        .build(&json!({"commandId": "c-4", "command": "UNLOCK"}).to_string());
    hub.command(stale);
    hub.command(command(&session, "c-5", "DANCE"));

    let (_, result) = hub.invoked("CommandResult").await;
    assert_eq!(
        open(&result, &session, "CommandResult").await,
        json!({"commandId": "c-4", "status": "rejected", "result": {"reason": "expired"}})
    );
    let (_, result) = hub.invoked("CommandResult").await;
    let result = open(&result, &session, "CommandResult").await;
    assert_eq!(result["commandId"], "c-5");
    assert_eq!(result["status"], "error");

    let log = device.log();
    for code in ["replayed_nonce", "bad_signature", "expired"] {
        assert!(log.contains(code), "log lacks {code}:\n{log}");
    }
    let mut secrets = vec![DEVICE_KEY.to_string(), key(&session).to_base64url()];
    secrets.extend(hub.issued_tokens());
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    device.assert_log_free_of(&secrets);

    device.terminate();
    let status = device.wait_exit(WAIT).await;
    assert_eq!(status.code(), Some(0), "{}", device.log());
    hub.wait_for(|e| *e == Event::Disconnected).await;
}

#[actix_rt::test]
async fn renews_its_token_on_the_open_connection() {
    // 8 s tokens: the device renews 4 s before expiry.
    let mut hub = FakeHub::start(8).await;
    let _device = start_device(&hub, &["--telemetry-interval", "1s"]);
    let first = hub.connected().await;
    let renewed = match hub
        .wait_for(|e| matches!(e, Event::Refreshed { .. } | Event::Disconnected))
        .await
    {
        Event::Refreshed { session } => session,
        other => panic!("the connection was not kept: {other:?}"),
    };
    assert_ne!(renewed, first);

    // From now on it signs with the new session's key...
    let (session, report) = hub.invoked("ReportTelemetry").await;
    assert_eq!(session, renewed);
    open(&report, &renewed, "ReportTelemetry").await;
    // ...and still accepts a command the server signed with the old key just before.
    hub.command(command(&first, "c-old", "LIGHT_ON"));
    let (_, result) = hub.invoked("CommandResult").await;
    let result = open(&result, &renewed, "CommandResult").await;
    assert_eq!(result["commandId"], "c-old");
    assert_eq!(result["status"], "ok");
    hub.command(command(&renewed, "c-new", "LIGHT_OFF"));
    let (_, result) = hub.invoked("CommandResult").await;
    assert_eq!(
        open(&result, &renewed, "CommandResult").await["commandId"],
        "c-new"
    );
}

#[actix_rt::test]
async fn obeys_close_messages_and_exits_3_once_the_device_is_revoked() {
    let mut hub = FakeHub::start(900).await;
    let mut device = start_device(&hub, &[]);
    let first = hub.connected().await;

    // A restart allows reconnecting: same token, back within the first backoff step.
    hub.close("Server is shutting down.", true);
    assert_eq!(hub.connected().await, first);

    // An expiry: the device exchanges its key again before reconnecting.
    hub.close("Authentication expired", true);
    let exchanged = match hub
        .wait_for(|e| matches!(e, Event::Exchanged { .. } | Event::Connected { .. }))
        .await
    {
        Event::Exchanged { session } => session,
        other => panic!("reconnected without a new token: {other:?}"),
    };
    assert_eq!(hub.connected().await, exchanged);

    // Removed: no reconnecting, and the key no longer works -> exit 3 with a clear message.
    hub.revoke();
    hub.close("Authentication revoked: the device was removed", false);
    let status = device.wait_exit(WAIT).await;
    assert_eq!(status.code(), Some(3), "{}", device.log());
    assert!(
        device.log().contains("refused the device key"),
        "{}",
        device.log()
    );
}

#[actix_rt::test]
async fn exits_1_when_the_server_forbids_reconnecting_and_the_key_still_works() {
    let mut hub = FakeHub::start(900).await;
    let mut device = start_device(&hub, &["--skip-negotiation"]);
    hub.connected().await;
    hub.close("Disconnected by an administrator", false);
    let status = device.wait_exit(WAIT).await;
    assert_eq!(status.code(), Some(1), "{}", device.log());
    assert!(device.log().contains("Disconnected by an administrator"));
}

#[actix_rt::test]
async fn a_wrong_key_exits_3_without_retrying() {
    let hub = FakeHub::start(900).await;
    let mut device = DeviceProcess::start(&hub.url, DEVICE_ID, "not-the-key", &[]);
    let status = device.wait_exit(WAIT).await;
    assert_eq!(status.code(), Some(3), "{}", device.log());
    device.assert_log_free_of(&["not-the-key"]);
}

#[actix_rt::test]
async fn a_refused_renewal_reconnects_with_the_new_token_and_delivers_held_results() {
    let mut hub = FakeHub::start(8).await;
    hub.fake.state.lock().unwrap().hold_refresh = true;
    let device = start_device(&hub, &["--telemetry-interval", "1s"]);
    let first = hub.connected().await;
    let invocation_id = match hub
        .wait_for(|e| matches!(e, Event::RefreshHeld { .. }))
        .await
    {
        Event::RefreshHeld { invocation_id } => invocation_id,
        _ => unreachable!(),
    };

    // While the renewal is pending a command still runs, but its signed result waits.
    hub.command(command(&first, "c-held", "UNLOCK"));
    device.wait_for_log("command_id=c-held", WAIT).await;
    hub.to_device(ToDevice::Message(HubMessage::completion(
        invocation_id,
        CompletionResult::Error("invalid_token: the new token is not valid".into()),
    )));

    // Refused: the device connects again with the new token and delivers the result there,
    // signed with the new session's key.
    let second = hub.connected().await;
    assert_ne!(second, first);
    let (session, result) = hub.invoked("CommandResult").await;
    assert_eq!(
        session, second,
        "the result was sent before the switch completed"
    );
    let result = open(&result, &second, "CommandResult").await;
    assert_eq!(result["commandId"], "c-held");
    assert_eq!(result["status"], "ok");
}
