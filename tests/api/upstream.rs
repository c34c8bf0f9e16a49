//! Upstream calls (`[[upstream]]`) against a real HTTP backend this test starts: an actix-web
//! server that verifies each request's signature with the README's recipe, records what it
//! received and answers by method name. A real Signet server forwards to it, called by a real
//! WebSocket client.

use crate::helpers::{
    claims, eventually, kid_of, sign_hs, spawn_server, test_settings, user_token, TEST_SECRET,
};
use crate::user_limits::{message_key, signed, ENVELOPE_SECRET};
use crate::ws_client::*;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use hmac::{Hmac, Mac};
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use sha2::Sha256;
use signet::settings::{load_from_str, Settings};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

/// The key Signet signs with and the backend verifies with.
const UPSTREAM_KEY: &str = "upstream-signing-key-0123456789-abcdefghijklmnop";
/// A key the backend does not know.
const WRONG_KEY: &str = "not-the-backend-s-key-0123456789-abcdefghijklmnop";
/// Answers larger than the forwarding upstream reads.
const MAX_RESPONSE_BYTES: usize = 4096;
/// How long the backend takes for `Slow`: far past its upstream's 200 ms timeout.
const SLOW: Duration = Duration::from_secs(5);

/// One request the backend received: its headers and JSON body, and whether it verified.
#[derive(Debug, Clone)]
struct Received {
    headers: Vec<(String, String)>,
    body: Value,
    verified: bool,
    /// The client's address: the same for requests over one kept-alive connection.
    peer: Option<SocketAddr>,
}

#[derive(Default)]
struct Recorded(Mutex<Vec<Received>>);

impl Recorded {
    fn all(&self) -> Vec<Received> {
        self.0.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The calls of `method` received so far.
    fn calls(&self, method: &str) -> Vec<Received> {
        let all = self.all();
        all.into_iter()
            .filter(|r| r.body["method"] == method)
            .collect()
    }

    fn events(&self, event: &str) -> Vec<Received> {
        let all = self.all();
        all.into_iter()
            .filter(|r| r.body["event"] == event)
            .collect()
    }
}

/// The backend's check, exactly as the README tells a backend to do it.
fn verify(request: &HttpRequest, body: &[u8]) -> bool {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (Some(timestamp), Some(signature)) =
        (header("X-Signet-Timestamp"), header("X-Signet-Signature"))
    else {
        return false;
    };
    let Ok(sent_at) = timestamp.parse::<i64>() else {
        return false;
    };
    if (crate::helpers::now() - sent_at).abs() > 300 {
        return false;
    }
    let Some(hex) = signature.strip_prefix("v1=") else {
        return false;
    };
    let expected: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect();
    let Some(expected) = expected else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(UPSTREAM_KEY.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

async fn backend(
    request: HttpRequest,
    body: web::Bytes,
    recorded: web::Data<Recorded>,
) -> HttpResponse {
    let verified = verify(&request, &body);
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let headers = request
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    recorded.0.lock().unwrap().push(Received {
        headers,
        body: parsed.clone(),
        verified,
        peer: request.peer_addr(),
    });
    if !verified {
        return HttpResponse::Unauthorized().body("bad signature");
    }
    answer(&parsed).await
}

/// What the backend answers, by the method called.
async fn answer(call: &Value) -> HttpResponse {
    match call["method"].as_str().unwrap_or_default() {
        "Refuse" => HttpResponse::Ok().json(json!({"error": "Out of stock: widget"})),
        "Crash" => HttpResponse::InternalServerError().body("boom"),
        "Huge" => HttpResponse::Ok().json(json!({"result": "x".repeat(2 * MAX_RESPONSE_BYTES)})),
        "Garbage" => HttpResponse::Ok().body("<html>not json</html>"),
        "Slow" => {
            tokio::time::sleep(SLOW).await;
            HttpResponse::Ok().json(json!({"result": "too late"}))
        }
        "Nothing" => HttpResponse::Ok().json(json!({})),
        // A backend slow to take a connection's events.
        _ if call["event"].is_string() && call["user"]["sub"] == "slowpoke" => {
            tokio::time::sleep(SLOW).await;
            HttpResponse::Ok().finish()
        }
        // Quote, Order, AdminReport, Wrong, events: what the backend was given.
        _ => HttpResponse::Ok().json(json!({
            "result": {"arguments": call["arguments"], "sub": call["user"]["sub"]}
        })),
    }
}

/// The backend, listening on a free port until the test ends.
struct TestBackend {
    address: SocketAddr,
    recorded: web::Data<Recorded>,
    server: actix_web::dev::ServerHandle,
}

impl TestBackend {
    fn start() -> Self {
        let recorded = web::Data::new(Recorded::default());
        let data = recorded.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(backend))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .expect("backend binds");
        let address = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            address,
            recorded,
            server: handle,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/signet", self.address)
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        drop(self.server.stop(false));
    }
}

/// The `[[upstream]]` tables of these tests: most methods on one upstream; `Slow` on one with a
/// 200 ms timeout; `Wrong` signed with a key the backend does not know; `Held` on one that
/// takes a single call at a time.
fn upstream_toml(url: &str, key: &str, wrong_key: &str) -> String {
    format!(
        r#"
[[upstream]]
hub = "home"
url = "{url}"
secret_file = "{key}"
timeout_ms = 10000
max_response_bytes = {MAX_RESPONSE_BYTES}
events = ["connected", "disconnected"]
methods = [
  "Quote", "Refuse", "Crash", "Huge", "Garbage", "Nothing",
  {{ name = "AdminReport", roles = ["admin"] }},
  {{ name = "Order", signed = true }},
]

[[upstream]]
hub = "home"
url = "{url}"
secret_file = "{key}"
timeout_ms = 200
methods = ["Slow"]

[[upstream]]
hub = "home"
url = "{url}"
secret_file = "{wrong_key}"
methods = ["Wrong"]
"#
    )
}

/// A Signet server forwarding to `backend`, with the envelope secret the signed tests use.
async fn spawn_forwarding(backend: &TestBackend) -> HubServer {
    spawn_forwarding_with(backend, &[]).await
}

/// [`spawn_forwarding`] with more settings.
async fn spawn_forwarding_with(backend: &TestBackend, extra_env: &[(&str, &str)]) -> HubServer {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let key = data_dir.path().join("upstream.key");
    let wrong_key = data_dir.path().join("wrong.key");
    write_key(&key, UPSTREAM_KEY);
    write_key(&wrong_key, WRONG_KEY);
    let mut env = vec![("SIGNET__ENVELOPE__SECRET", ENVELOPE_SECRET)];
    env.extend_from_slice(extra_env);
    let mut settings = test_settings(data_dir.path(), &env);
    settings.upstream = upstream_settings(&upstream_toml(
        &backend.url(),
        &key.display().to_string(),
        &wrong_key.display().to_string(),
    ))
    .upstream;
    spawn_hub_with(settings, data_dir).await
}

/// A key file as an operator writes one: mode 0600, ending with a newline (not part of the key).
fn write_key(path: &std::path::Path, key: &str) {
    signet::settings::write_private_file(path, key).expect("key written");
}

/// Settings parsed and validated from TOML, as the server loads its file.
fn upstream_settings(toml: &str) -> Settings {
    load_from_str(toml, std::path::Path::new("upstream.toml"), Vec::new()).expect("valid")
}

fn token_with_roles(sub: &str, roles: &[&str]) -> String {
    let mut claims = claims(sub);
    claims["roles"] = json!(roles);
    sign_hs(
        TEST_SECRET,
        Some(&kid_of(TEST_SECRET)),
        Algorithm::HS256,
        &claims,
    )
}

#[actix_web::test]
async fn a_forwarded_call_carries_the_principal_and_arguments_signed_and_returns_the_result() {
    let backend = TestBackend::start();
    let server = spawn_forwarding(&backend).await;
    let token = token_with_roles("alice", &["user"]);
    let mut client = server.open(&token).await;

    let completion = client
        .call("1", "Quote", json!(["widget", 3, {"rush": true}]))
        .await;
    assert_eq!(
        completion["result"],
        json!({"arguments": ["widget", 3, {"rush": true}], "sub": "alice"}),
        "{completion}"
    );
    let calls = backend.recorded.calls("Quote");
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert!(
        call.verified,
        "the signature verifies with the documented recipe"
    );
    assert_eq!(call.body["hub"], "home");
    assert_eq!(call.body["signed"], false);
    assert_eq!(call.body["invocationId"], "1");
    assert_eq!(call.body["user"]["roles"], json!(["user"]));
    assert!(call.body["connectionId"]
        .as_str()
        .is_some_and(|id| !id.is_empty()));
    // A backend answering `{}` completes the call without a result.
    let void = client.call("2", "Nothing", json!([])).await;
    assert!(
        void.get("result").is_none() && void.get("error").is_none(),
        "{void}"
    );
    // Requests reuse kept-alive connections: one each for the calls and the concurrent
    // connected event, at most, however many requests there were.
    for id in ["3", "4", "5"] {
        client.call(id, "Nothing", json!([])).await;
    }
    let all = backend.recorded.all();
    let peers: std::collections::HashSet<_> = all.iter().map(|r| r.peer).collect();
    assert!(all.len() >= 5 && peers.len() <= 2, "{peers:?}");

    // The client's token reaches the backend nowhere: not in a header, not in a body.
    let signature = token.rsplit('.').next().unwrap();
    for received in backend.recorded.all() {
        let seen = format!("{:?} {}", received.headers, received.body);
        assert!(!seen.contains(signature), "the token leaked: {seen}");
        assert!(!seen.to_lowercase().contains("bearer"), "{seen}");
    }
    server.assert_healthy().await;
}

#[actix_web::test]
async fn backend_failures_become_clear_completion_errors() {
    let backend = TestBackend::start();
    let server = spawn_forwarding(&backend).await;
    let mut client = server.open(&user_token("bob")).await;
    let hub_error = |text: &str, method: &str| {
        format!(
            "An unexpected error occurred invoking '{method}' on the server. HubException: {text}"
        )
    };
    let cases = [
        ("Refuse", "Out of stock: widget".to_string()),
        ("Crash", "Upstream 'Crash' failed (HTTP 500).".to_string()),
        (
            "Huge",
            format!("Upstream 'Huge' answered more than {MAX_RESPONSE_BYTES} bytes."),
        ),
        (
            "Garbage",
            "Upstream 'Garbage' gave an invalid answer.".to_string(),
        ),
        ("Slow", "Upstream 'Slow' timed out.".to_string()),
    ];
    for (i, (method, text)) in cases.iter().enumerate() {
        let error = client.call_error(&i.to_string(), method, json!([])).await;
        assert_eq!(error, hub_error(text, method));
        assert_eq!(backend.recorded.calls(method).len(), 1, "{method}");
    }
    // The server counts each outcome.
    let metrics = server.state.metrics.render();
    for outcome in ["error", "http_error", "oversize", "invalid", "timeout"] {
        let series = format!("outcome=\"{outcome}\"");
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("signet_upstream_calls") && l.contains(&series)),
            "no {outcome} in {metrics}"
        );
    }
    client.assert_echo("still served").await;
    server.assert_healthy().await;
}

#[actix_web::test]
async fn a_backend_refuses_a_request_signed_with_another_key() {
    let backend = TestBackend::start();
    let server = spawn_forwarding(&backend).await;
    let mut client = server.open(&user_token("carol")).await;
    let error = client.call_error("1", "Wrong", json!(["x"])).await;
    assert_eq!(
        error,
        "An unexpected error occurred invoking 'Wrong' on the server. HubException: Upstream 'Wrong' failed (HTTP 401)."
    );
    let calls = backend.recorded.calls("Wrong");
    assert_eq!(calls.len(), 1);
    assert!(
        !calls[0].verified,
        "the backend's check caught the wrong key"
    );
    // The same backend verifies the upstream signing with its key.
    client.call("2", "Quote", json!([])).await;
    assert!(backend.recorded.calls("Quote")[0].verified);
}

#[actix_web::test]
async fn a_role_gate_refuses_before_anything_reaches_the_backend() {
    let backend = TestBackend::start();
    let server = spawn_forwarding(&backend).await;
    let mut user = server.open(&user_token("dave")).await;
    assert_eq!(
        user.call_error("1", "AdminReport", json!([])).await,
        "Failed to invoke 'AdminReport' because user is unauthorized"
    );
    assert!(backend.recorded.calls("AdminReport").is_empty());
    let mut admin = server.open(&admin_token("erin")).await;
    let completion = admin.call("2", "AdminReport", json!(["q3"])).await;
    assert_eq!(completion["result"]["sub"], "erin", "{completion}");
    assert_eq!(backend.recorded.calls("AdminReport").len(), 1);
}

#[actix_web::test]
async fn a_signed_method_is_forwarded_only_after_its_envelope_passed() {
    let backend = TestBackend::start();
    let server = spawn_forwarding(&backend).await;
    let token = user_token("frank");
    let key = message_key(&token);
    let mut client = server.open(&token).await;

    let mut forged = signed(&key, "Order", &json!({"item": "widget"}));
    forged[0]["message"] = json!("{\"item\":\"gold\"}");
    assert_eq!(
        client.call_error("1", "Order", forged).await,
        "Failed to invoke 'Order': envelope rejected (bad_signature)"
    );
    assert_eq!(
        client
            .call_error("2", "Order", json!(["not an envelope"]))
            .await,
        "Failed to invoke 'Order' due to an error on the server."
    );
    assert!(
        backend.recorded.calls("Order").is_empty(),
        "a bad envelope never reaches it"
    );

    let envelope = signed(&key, "Order", &json!({"item": "widget"}));
    let completion = client.call("3", "Order", envelope.clone()).await;
    assert_eq!(
        completion["result"]["arguments"],
        json!([{"item": "widget"}]),
        "the backend gets the verified command: {completion}"
    );
    let calls = backend.recorded.calls("Order");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].body["signed"], true);
    // A replay is refused by the envelope check, again before the backend.
    assert_eq!(
        client.call_error("4", "Order", envelope).await,
        "Failed to invoke 'Order': envelope rejected (replayed_nonce)"
    );
    assert_eq!(backend.recorded.calls("Order").len(), 1);
}

#[actix_web::test]
async fn connect_and_disconnect_events_reach_the_backend() {
    let backend = TestBackend::start();
    let server = spawn_forwarding(&backend).await;
    let client = server.open(&user_token("grace")).await;
    let recorded = backend.recorded.clone();
    eventually(PROMPT, "the connected event", || {
        !recorded.events("connected").is_empty()
    })
    .await;
    let connected = &backend.recorded.events("connected")[0];
    assert!(connected.verified);
    assert_eq!(connected.body["user"]["sub"], "grace");
    assert_eq!(connected.body["hub"], "home");
    let connection_id = connected.body["connectionId"].clone();
    client.close().await;
    eventually(PROMPT, "the disconnected event", || {
        !recorded.events("disconnected").is_empty()
    })
    .await;
    let disconnected = &backend.recorded.events("disconnected")[0];
    assert_eq!(disconnected.body["connectionId"], connection_id);
    assert!(disconnected.verified);
}

#[actix_web::test]
async fn a_slow_backend_never_holds_up_a_connection_s_events() {
    let backend = TestBackend::start();
    let server = spawn_forwarding(&backend).await;
    let started = std::time::Instant::now();
    let mut client = server.open(&user_token("slowpoke")).await;
    client.assert_echo("not waiting for the backend").await;
    client.close().await;
    let recorded = backend.recorded.clone();
    eventually(PROMPT, "both events at the backend", || {
        !recorded.events("disconnected").is_empty()
    })
    .await;
    // Both events were posted while the backend still sat on the first one.
    assert!(started.elapsed() < SLOW, "{:?}", started.elapsed());
    assert_eq!(backend.recorded.events("connected").len(), 1);
}

/// A method that waits (an upstream call) holds its slot of `hub.max_parallel_invocations`
/// while it waits, whereas a method that answers at once (`Echo`, run inside the session) frees
/// its slot at once: with one slot (the default) the next call waits for the slow one and the
/// completions come in order; with two, `Echo` overtakes the waiting call.
#[actix_web::test]
async fn a_waiting_method_holds_its_invocation_slot_and_an_immediate_one_does_not() {
    let backend = TestBackend::start();
    for (slots, expected) in [("1", ["1", "2", "3"]), ("2", ["2", "3", "1"])] {
        let env = [("SIGNET__HUB__MAX_PARALLEL_INVOCATIONS", slots)];
        let server = spawn_forwarding_with(&backend, &env).await;
        let mut client = server.open(&user_token("judy")).await;
        client.invoke("1", "Slow", json!([])).await;
        client.invoke("2", "Echo", json!(["second"])).await;
        client.invoke("3", "Echo", json!(["third"])).await;
        let mut order = Vec::new();
        while order.len() < 3 {
            let message = client.next_message(PROMPT).await;
            assert_eq!(message["type"], COMPLETION, "{message}");
            order.push(
                message["invocationId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        assert_eq!(order, expected, "{slots} slot(s)");
        client.assert_echo("still serving").await;
    }
}

#[actix_web::test]
async fn calls_beyond_the_concurrency_bound_are_refused_not_queued() {
    let backend = TestBackend::start();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let key = data_dir.path().join("upstream.key");
    write_key(&key, UPSTREAM_KEY);
    let mut settings = test_settings(data_dir.path(), &[]);
    settings.upstream = upstream_settings(&format!(
        "[[upstream]]\nurl = \"{}\"\nsecret_file = \"{}\"\nmax_concurrent_calls = 1\nmethods = [\"Slow\"]\n",
        backend.url(),
        key.display()
    ))
    .upstream;
    let server = spawn_hub_with(settings, data_dir).await;
    let mut first = server.open(&user_token("henry")).await;
    let mut second = server.open(&user_token("iris")).await;
    first.invoke("1", "Slow", json!([])).await;
    let recorded = backend.recorded.clone();
    eventually(PROMPT, "the first call at the backend", || {
        !recorded.calls("Slow").is_empty()
    })
    .await;
    assert_eq!(
        second.call_error("2", "Slow", json!([])).await,
        "An unexpected error occurred invoking 'Slow' on the server. HubException: Upstream 'Slow' is busy; try again later."
    );
    assert_eq!(backend.recorded.calls("Slow").len(), 1);
}

/// A library user's server: `[[upstream]]` methods join the application's hub they name, and
/// one naming a hub the application did not register (`home` included) stops start-up.
#[actix_web::test]
async fn upstream_methods_join_the_application_hub_they_name() {
    let backend = TestBackend::start();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let key = data_dir.path().join("upstream.key");
    write_key(&key, UPSTREAM_KEY);
    let table = |hub: &str| {
        format!(
            "[[upstream]]\nhub = \"{hub}\"\nurl = \"{}\"\nsecret_file = \"{}\"\nmethods = [\"Quote\"]\n",
            backend.url(),
            key.display()
        )
    };
    let kitchen = |server: signet::Server| {
        server.hub("kitchen", |hub| {
            hub.method(signet::MethodSpec::new("Local", &[]), |_, _| async {
                Ok(Some(json!("local")))
            })
        })
    };
    let mut settings = test_settings(data_dir.path(), &[]);
    settings.upstream = upstream_settings(&table("home")).upstream;
    let err = kitchen(signet::Server::new(settings)).build().await.err();
    assert_eq!(
        err.expect("refused").to_string(),
        "configuration key `upstream[0].hub`: no hub is named `home`"
    );

    let mut settings = test_settings(data_dir.path(), &[]);
    settings.upstream = upstream_settings(&table("kitchen")).upstream;
    let app = spawn_server(
        kitchen(signet::Server::new(settings.clone())),
        settings,
        data_dir,
    )
    .await;
    let token = token_with_roles("alice", &["user"]);
    let mut client = open_at(&app.url("/hubs/kitchen"), &token).await;
    assert_eq!(
        client.call("1", "Local", json!([])).await["result"],
        "local"
    );
    let completion = client.call("2", "Quote", json!(["pan"])).await;
    assert_eq!(
        completion["result"],
        json!({"arguments": ["pan"], "sub": "alice"}),
        "{completion}"
    );
    let calls = backend.recorded.calls("Quote");
    assert_eq!(calls.len(), 1);
    assert!(calls[0].verified);
    assert_eq!(calls[0].body["hub"], "kitchen");
}

#[actix_web::test]
async fn an_upstream_that_cannot_be_declared_stops_the_server_at_start_up() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let key = data_dir.path().join("upstream.key");
    write_key(&key, UPSTREAM_KEY);
    let build = |toml: String| {
        let mut settings = test_settings(data_dir.path(), &[]);
        settings.upstream = upstream_settings(&toml).upstream;
        signet::Application::build(settings)
    };
    let table = |extra: &str| {
        format!(
            "[[upstream]]\nurl = \"http://127.0.0.1:9/\"\nsecret_file = \"{}\"\n{extra}\n",
            key.display()
        )
    };
    let err = build(table("methods = [\"echo\"]"))
        .await
        .err()
        .expect("refused");
    assert_eq!(
        err.to_string(),
        "configuration key `upstream[0].methods`: `echo` is already a method of hub `home`"
    );
    let err = build(table("hub = \"kitchen\"\nmethods = [\"Quote\"]"))
        .await
        .err()
        .expect("refused");
    assert_eq!(
        err.to_string(),
        "configuration key `upstream[0].hub`: no hub is named `kitchen`"
    );
    let missing = format!(
        "[[upstream]]\nurl = \"http://127.0.0.1:9/\"\nsecret_file = \"{}\"\nmethods = [\"Quote\"]\n",
        data_dir.path().join("absent.key").display()
    );
    let err = build(missing).await.err().expect("refused");
    assert!(
        err.to_string()
            .starts_with("secret `upstream[0].secret_file`: cannot read"),
        "{err}"
    );
}

#[test]
fn invalid_upstream_tables_are_refused_with_their_key() {
    let refused = |toml: &str| {
        load_from_str(toml, std::path::Path::new("upstream.toml"), Vec::new())
            .expect_err("refused")
            .to_string()
    };
    let table = |body: &str| format!("[[upstream]]\nsecret_file = \"/k\"\n{body}\n");
    let cases = [
        (
            table("url = \"ftp://backend\"\nmethods = [\"A\"]"),
            "configuration key `upstream[0].url`: must be an http:// or https:// URL with a host",
        ),
        (
            table("url = \"http://backend\""),
            "configuration key `upstream[0].methods`: must name at least one method (or set events)",
        ),
        (
            table("url = \"http://backend\"\nmethods = [\"A\"]\ntimeout_ms = 0"),
            "configuration key `upstream[0].timeout_ms`: must be between 10 and 300000",
        ),
        (
            table("url = \"http://backend\"\nmethods = [\"has space\"]"),
            "configuration key `upstream[0].methods`: `has space`: a method name is 1 to 128 letters, digits or `_`",
        ),
        (
            format!("{}{}", table("url = \"http://a\"\nmethods = [\"A\"]"), table("url = \"http://b\"\nmethods = [\"a\"]")),
            "configuration key `upstream[1].methods`: `a` is forwarded twice on hub `home`",
        ),
        (
            "[[upstream]]\nurl = \"http://backend\"\nmethods = [\"A\"]\n".to_string(),
            "configuration key `upstream[0].secret_file`: is required (the key that signs requests)",
        ),
    ];
    for (toml, expected) in cases {
        assert_eq!(refused(&toml), expected, "{toml}");
    }
}
