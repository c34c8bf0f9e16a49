//! What the session does with each message: decoding, dispatch to the hub's methods after every
//! check a call must pass ([`Invocations::check`]), and the completion of the methods that ran.

use super::refusal::CallRefusal;
use super::streams::{pump_stream, OpenUploads, Uploads};
use super::{reply, Session};
use crate::connection::{CloseReason, Connection};
use crate::hub::call::Call;
use crate::hub::method::{Handler, HubError, Method, MethodResult, UploadStream};
use crate::hub::Hub;
use crate::metrics::{Metrics, Outcome, OTHER_METHOD};
use crate::protocol::{CompletionResult, HubMessage, HubProtocol, ProtocolError};
use futures_util::future::LocalBoxFuture;
use futures_util::stream::LocalBoxStream;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A call as the client sent it (`Invocation` or `StreamInvocation`).
#[derive(Debug)]
pub(super) struct Request {
    pub invocation_id: Option<String>,
    pub target: String,
    pub arguments: Vec<Value>,
    pub stream_ids: Vec<String>,
    /// A `StreamInvocation`: the caller expects a server-to-client stream.
    pub stream_response: bool,
}

/// What an invocation task reports when it ends.
pub(super) struct Finished {
    invocation_id: Option<String>,
    counted: Slot,
    /// The client-to-server streams the invocation took: they end with it, whichever way it
    /// ended (result, error, a bad item), so a client that never completes them leaks nothing.
    stream_ids: Vec<(String, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// A plain invocation: counts against `max_parallel_invocations`.
    Parallel,
    /// A streaming invocation or upload: counts against `max_streams`.
    Stream,
}

/// The session's running invocations and open streams: what the checks before a call look at,
/// and what a finished invocation frees.
pub(super) struct Invocations {
    /// Invocation ids of running invocations (a reused id is refused).
    active_ids: HashSet<String>,
    /// Server-to-client streams, cancelled by `CancelInvocation`.
    pub streams: HashMap<String, CancellationToken>,
    /// Client-to-server streams by stream id.
    pub uploads: Uploads,
    /// Plain invocations running, against `max_parallel_invocations`.
    pub parallel: usize,
    /// Streaming invocations and uploads running, against `max_streams`.
    open_streams: usize,
}

impl Invocations {
    pub fn new(open_uploads: Arc<OpenUploads>) -> Self {
        Self {
            active_ids: HashSet::new(),
            streams: HashMap::new(),
            uploads: Uploads::new(open_uploads),
            parallel: 0,
            open_streams: 0,
        }
    }

    /// Every check before a method runs, in ASP.NET Core's order, except that ASP.NET Core
    /// binds the arguments first (in its protocol reader) and Signet checks the caller's roles
    /// first, so that a caller without them learns nothing about a method's parameters.
    pub fn check(
        &self,
        method: &Method,
        roles: &[String],
        request: &Request,
        max_streams: usize,
    ) -> Result<(), CallRefusal> {
        if !method.spec.access.allows(roles) {
            return Err(CallRefusal::Unauthorized);
        }
        match (method.is_stream_response(), request.stream_response) {
            (true, false) => return Err(CallRefusal::StreamingMethodInvoked),
            (false, true) => return Err(CallRefusal::PlainMethodStreamed),
            _ => {}
        }
        if let Some(id) = &request.invocation_id {
            if self.active_ids.contains(id) {
                return Err(CallRefusal::InvocationIdInUse(id.clone()));
            }
        }
        self.check_streams(method, &request.stream_ids, max_streams)?;
        check_arguments(method, &request.arguments)
    }

    fn check_streams(
        &self,
        method: &Method,
        stream_ids: &[String],
        max_streams: usize,
    ) -> Result<(), CallRefusal> {
        if stream_ids.len() != method.upload_streams() {
            return Err(CallRefusal::StreamCount {
                sent: stream_ids.len(),
                expected: method.upload_streams(),
            });
        }
        if stream_ids.iter().any(|id| self.uploads.contains(id)) {
            return Err(CallRefusal::StreamIdInUse);
        }
        if (method.is_stream_response() || !stream_ids.is_empty())
            && self.open_streams >= max_streams
        {
            return Err(CallRefusal::TooManyStreams { max: max_streams });
        }
        Ok(())
    }

    /// Frees what an ended invocation held.
    pub fn finished(&mut self, finished: Finished) {
        if let Some(id) = &finished.invocation_id {
            self.active_ids.remove(id);
            self.streams.remove(id);
        }
        for (stream_id, registration) in &finished.stream_ids {
            self.uploads.remove_registered(stream_id, *registration);
        }
        match finished.counted {
            Slot::Parallel => self.parallel = self.parallel.saturating_sub(1),
            Slot::Stream => self.open_streams = self.open_streams.saturating_sub(1),
        }
    }

    /// Opens a channel for each of an upload's client-to-server streams; returns the receivers
    /// for the method and the registrations its [`Finished`] frees.
    fn open_uploads(
        &mut self,
        stream_ids: Vec<String>,
        buffer: usize,
    ) -> (Vec<UploadStream>, Vec<(String, u64)>) {
        let mut receivers = Vec::with_capacity(stream_ids.len());
        let mut registered = Vec::with_capacity(stream_ids.len());
        for stream_id in stream_ids {
            let (tx, rx) = mpsc::channel(buffer);
            let registration = self.uploads.insert(stream_id.clone(), tx);
            registered.push((stream_id, registration));
            receivers.push(UploadStream::new(rx));
        }
        (receivers, registered)
    }
}

/// The arguments bind to the method's parameters: as many, each of its type (or, for a
/// method taking any arguments, no more than it accepts).
fn check_arguments(method: &Method, arguments: &[Value]) -> Result<(), CallRefusal> {
    if let Some(max) = method.spec.any_arguments {
        if arguments.len() > max {
            return Err(CallRefusal::TooManyArguments {
                sent: arguments.len(),
                max,
            });
        }
        return Ok(());
    }
    let params = method.spec.params;
    if arguments.len() != params.len() {
        return Err(CallRefusal::ArgumentCount {
            sent: arguments.len(),
            expected: params.len(),
        });
    }
    match params
        .iter()
        .zip(arguments)
        .position(|(param, value)| !param.accepts(value))
    {
        Some(index) => Err(CallRefusal::ArgumentType {
            index,
            expected: params[index].name(),
        }),
        None => Ok(()),
    }
}

impl Session {
    pub(super) async fn on_bytes(&mut self, bytes: &[u8]) -> Option<CloseReason> {
        if bytes.is_empty() {
            return None;
        }
        if let Err(err) = self.decoder.feed(bytes) {
            return Some(protocol_close(err));
        }
        self.received_counters.1.inc_by(bytes.len() as u64);
        while let Some(next) = self.decoder.next_message() {
            match next {
                Ok(message) => {
                    self.received_counters.0.inc();
                    self.hub.services.metrics.message_received();
                    if let Some(received) = &mut self.received {
                        let is_sequence = matches!(message, HubMessage::Sequence { .. });
                        if !received.accept(message.is_trackable(), is_sequence) {
                            continue;
                        }
                    }
                    if let Some(reason) = self.on_message(message).await {
                        return Some(reason);
                    }
                }
                Err(ProtocolError::UnknownMessageType(kind)) => {
                    tracing::debug!(connection = %self.connection.log_id(), kind, "ignoring a message of unknown type");
                }
                Err(ProtocolError::InvocationBinding {
                    invocation_id,
                    target,
                    detail,
                }) => {
                    // Still an invocation the client counted, as ASP.NET Core's binding
                    // failure message is.
                    if let Some(received) = &mut self.received {
                        if !received.accept(true, false) {
                            continue;
                        }
                    }
                    if let Some(id) = invocation_id {
                        let (name, refusal) = match self.hub.method(&target) {
                            None => (target.as_str(), CallRefusal::UnknownMethod),
                            Some(method) => (
                                method.spec.name,
                                CallRefusal::Unbindable(detail.to_string()),
                            ),
                        };
                        let text = refusal.completion_text(name, self.limits.detailed_errors);
                        self.reply(&id, CompletionResult::Error(text)).await;
                    }
                }
                Err(err) => return Some(protocol_close(err)),
            }
        }
        None
    }

    async fn on_message(&mut self, message: HubMessage) -> Option<CloseReason> {
        match message {
            HubMessage::Invocation {
                invocation_id,
                target,
                arguments,
                stream_ids,
                ..
            } => {
                let request = Request {
                    invocation_id: invocation_id.filter(|id| !id.is_empty()),
                    target,
                    arguments,
                    stream_ids,
                    stream_response: false,
                };
                self.invoke(request).await
            }
            HubMessage::StreamInvocation {
                invocation_id,
                target,
                arguments,
                stream_ids,
                ..
            } => {
                let request = Request {
                    invocation_id: Some(invocation_id),
                    target,
                    arguments,
                    stream_ids,
                    stream_response: true,
                };
                self.invoke(request).await
            }
            HubMessage::StreamItem {
                invocation_id,
                item,
                ..
            } => self.on_stream_item(invocation_id, item).await,
            HubMessage::Completion { invocation_id, .. } => {
                // Ends a client-to-server stream: dropping the sender ends the method's receiver.
                self.running.uploads.remove(&invocation_id);
                None
            }
            HubMessage::CancelInvocation { invocation_id, .. } => {
                if let Some(cancel) = self.running.streams.get(&invocation_id) {
                    cancel.cancel();
                }
                None
            }
            HubMessage::Ping => None,
            HubMessage::Close { error, .. } => {
                if let Some(error) = error {
                    tracing::debug!(connection = %self.connection.log_id(), %error, "client closed with an error");
                }
                Some(CloseReason::ClientClosed)
            }
            HubMessage::Ack { sequence_id } => {
                self.connection.acknowledge(sequence_id);
                None
            }
            HubMessage::Sequence { sequence_id } => match &mut self.received {
                Some(received) => received
                    .reset(sequence_id)
                    .err()
                    .map(|err| CloseReason::ProtocolError(err.to_string())),
                None => None,
            },
        }
    }

    /// An item of a client-to-server stream, for the upload method reading it.
    async fn on_stream_item(&mut self, stream_id: String, item: Value) -> Option<CloseReason> {
        if let Some(upload) = self.running.uploads.get(&stream_id) {
            // Waiting here slows only this client, whose own method drains the stream; a
            // method that stops draining must not keep a closing connection alive.
            let sent = tokio::select! {
                sent = upload.send(item) => sent.is_ok(),
                _ = self.connection.closed() => {
                    return self.connection.close_reason().cloned();
                }
            };
            if !sent {
                self.running.uploads.remove(&stream_id);
            }
        }
        None
    }

    async fn reply(&self, invocation_id: &str, result: CompletionResult) {
        reply(&self.connection, self.protocol, invocation_id, result).await;
    }

    /// Checks a call and starts its method, or answers the refusal.
    async fn invoke(&mut self, request: Request) -> Option<CloseReason> {
        // A call that arrives after the token expired is never dispatched.
        if self.limits.expired(&self.connection) {
            return Some(CloseReason::Expired);
        }
        let hub = self.hub.clone();
        let Some(method) = hub.method(&request.target) else {
            let id = request.invocation_id.as_deref();
            self.refuse(
                id,
                &request.target,
                OTHER_METHOD,
                CallRefusal::UnknownMethod,
            )
            .await;
            return None;
        };
        let target = method.spec.name;
        let roles = &self.connection.principal().roles;
        let checked = self
            .running
            .check(method, roles, &request, self.limits.max_streams);
        let arguments = match checked {
            Ok(()) if method.spec.signed => {
                self.open_envelope(&hub, target, request.arguments).await
            }
            Ok(()) => Ok(request.arguments),
            Err(refusal) => Err(refusal),
        };
        match arguments {
            Ok(arguments) => {
                let request = Request {
                    arguments,
                    ..request
                };
                self.start(method, request).await;
            }
            Err(refusal) => {
                let id = request.invocation_id.as_deref();
                self.refuse(id, target, target, refusal).await;
            }
        }
        None
    }

    /// Counts a refused call and answers it (when the caller asked for an answer).
    async fn refuse(
        &self,
        invocation_id: Option<&str>,
        target: &str,
        method_label: &'static str,
        refusal: CallRefusal,
    ) {
        let metrics = &self.hub.services.metrics;
        metrics.invocation(&self.hub.name, method_label, refusal.outcome());
        if let Some(id) = invocation_id {
            let text = refusal.completion_text(target, self.limits.detailed_errors);
            self.reply(id, CompletionResult::Error(text)).await;
        }
    }

    /// Runs a checked call's method: a plain method in the session as far as it gets without
    /// waiting ([`Self::run_or_spawn`]), anything else as a task of the session.
    async fn start(&mut self, method: &Method, request: Request) {
        let call = Call {
            invocation_id: request.invocation_id.clone(),
            ..Call::new(self.connection.clone(), self.hub.lifetime.clone())
        };
        let ending = Ending {
            connection: self.connection.clone(),
            protocol: self.protocol,
            target: method.spec.name,
            detailed: self.limits.detailed_errors,
            metrics: self.hub.services.metrics.clone(),
        };
        let Request {
            invocation_id,
            arguments,
            stream_ids,
            ..
        } = request;
        if let Some(id) = &invocation_id {
            self.running.active_ids.insert(id.clone());
        }
        match &method.handler {
            Handler::Unary(handler) => {
                let future = handler(call, arguments);
                self.running.parallel += 1;
                let task = ending.complete(future, invocation_id, Slot::Parallel, Vec::new());
                self.run_or_spawn(Box::pin(task)).await;
            }
            Handler::ServerStream(handler) => {
                // The check refuses a stream invocation without an id.
                let Some(id) = invocation_id else { return };
                let cancel = call.cancel.child_token();
                let call = Call {
                    cancel: cancel.clone(),
                    ..call
                };
                let stream = handler(call, arguments);
                self.running.streams.insert(id.clone(), cancel.clone());
                self.running.open_streams += 1;
                self.tasks.spawn_local(ending.stream(id, stream, cancel));
            }
            Handler::Upload { handler, .. } => {
                let buffer = self.limits.upload_buffer;
                let (receivers, registered) = self.running.open_uploads(stream_ids, buffer);
                let future = handler(call, arguments, receivers);
                self.running.open_streams += 1;
                let task = ending.complete(future, invocation_id, Slot::Stream, registered);
                self.tasks.spawn_local(task);
            }
        }
    }

    /// Polls an invocation once, here in the session, and spawns it as a task of the session
    /// only if it has to wait. Most methods answer without waiting (`Echo`, a send to a group):
    /// those then cost no task, no wake-up and no join, and their completion is queued before
    /// the session reads on. What a client sees is the same either way: the invocation counts
    /// against `max_parallel_invocations` from its start to its end, completions of parallel
    /// invocations keep their order of finishing, and one that waits (for a store, an upstream
    /// call, room in the outbound queue) carries on as a task from where it stopped, aborted
    /// with the session like any other.
    async fn run_or_spawn(&mut self, mut task: LocalBoxFuture<'static, Finished>) {
        let first = std::future::poll_fn(|cx| {
            // A method that panics ends only its invocation, as it does in a task of its own.
            let polled = std::panic::catch_unwind(AssertUnwindSafe(|| task.as_mut().poll(cx)));
            Poll::Ready(polled)
        })
        .await;
        match first {
            Ok(Poll::Ready(finished)) => self.running.finished(finished),
            Ok(Poll::Pending) => {
                self.tasks.spawn_local(task);
            }
            Err(_) => {
                tracing::error!(connection = %self.connection.log_id(), "a hub method panicked");
            }
        }
    }

    /// Verifies the envelope of a signed method before it runs; the method then receives the
    /// verified command as its single argument.
    async fn open_envelope(
        &self,
        hub: &Hub,
        target: &str,
        arguments: Vec<Value>,
    ) -> Result<Vec<Value>, CallRefusal> {
        let rejected = |code: &'static str| {
            hub.services.metrics.envelope_rejected(code);
            if code == "nonce_quota_exceeded" {
                hub.services.metrics.rate_limited("nonces");
            }
            CallRefusal::EnvelopeRejected(code)
        };
        let principal = self.connection.principal();
        let Some(session) = principal.message_session() else {
            return Err(rejected("no_message_key"));
        };
        let Some(envelope) = arguments.first() else {
            return Err(rejected("malformed"));
        };
        match hub
            .services
            .envelopes
            .open(envelope, session, &hub.path, target)
            .await
        {
            Ok(command) => Ok(vec![command]),
            Err(err) => {
                tracing::info!(
                    target: "audit",
                    event = "envelope_rejected",
                    code = err.code(),
                    sub = %principal.sub,
                    method = target,
                    connection = %self.connection.log_id(),
                    "signed envelope rejected"
                );
                Err(rejected(err.code()))
            }
        }
    }
}

/// How a running method's end is reported: to the caller on its connection, in the metrics,
/// and, for a failure inside the server, in the log.
struct Ending {
    connection: Arc<Connection>,
    protocol: HubProtocol,
    target: &'static str,
    detailed: bool,
    metrics: Metrics,
}

impl Ending {
    /// Awaits a method and answers the caller (when it asked for an answer).
    async fn complete(
        self,
        method: LocalBoxFuture<'static, MethodResult>,
        invocation_id: Option<String>,
        counted: Slot,
        stream_ids: Vec<(String, u64)>,
    ) -> Finished {
        let started = Instant::now();
        let completion = match method.await {
            Ok(None) => CompletionResult::Void,
            Ok(Some(value)) => CompletionResult::Result(value),
            Err(err) => CompletionResult::Error(self.error_text(&err)),
        };
        self.record(started, &completion);
        if let Some(id) = &invocation_id {
            reply(&self.connection, self.protocol, id, completion).await;
        }
        Finished {
            invocation_id,
            counted,
            stream_ids,
        }
    }

    /// Sends a server-to-client stream until it ends, fails or the caller cancels it, then
    /// completes the invocation.
    async fn stream(
        self,
        invocation_id: String,
        stream: Result<LocalBoxStream<'static, Result<Value, HubError>>, HubError>,
        cancel: CancellationToken,
    ) -> Finished {
        let started = Instant::now();
        let end = match stream {
            Ok(stream) => {
                let sent = pump_stream(
                    &self.connection,
                    self.protocol,
                    &invocation_id,
                    stream,
                    &cancel,
                )
                .await;
                match sent {
                    Ok(()) => CompletionResult::Void,
                    Err(err) => CompletionResult::Error(self.stream_error_text(&err)),
                }
            }
            Err(err) => CompletionResult::Error(self.error_text(&err)),
        };
        self.record(started, &end);
        reply(&self.connection, self.protocol, &invocation_id, end).await;
        Finished {
            invocation_id: Some(invocation_id),
            counted: Slot::Stream,
            stream_ids: Vec::new(),
        }
    }

    /// The completion text of a method's error; a failure inside the server is logged here.
    fn error_text(&self, err: &HubError) -> String {
        err.log_internal(self.target, self.connection.log_id());
        err.completion_text(self.target, self.detailed)
    }

    /// The completion text of an error in the middle of a stream, as ASP.NET Core words it.
    fn stream_error_text(&self, err: &HubError) -> String {
        err.log_internal(self.target, self.connection.log_id());
        match err {
            HubError::Hub(_) => err.completion_text(self.target, self.detailed),
            _ if self.detailed => {
                format!("An error occurred on the server while streaming results. Exception: {err}")
            }
            _ => "An error occurred on the server while streaming results.".to_string(),
        }
    }

    /// Counts a method that ran, with how long it took.
    fn record(&self, started: Instant, end: &CompletionResult) {
        let outcome = match end {
            CompletionResult::Error(_) => Outcome::Error,
            _ => Outcome::Ok,
        };
        let hub = &self.connection.hub;
        self.metrics.invocation(hub, self.target, outcome);
        self.metrics
            .invocation_time(hub, self.target, started.elapsed());
    }
}

fn protocol_close(err: ProtocolError) -> CloseReason {
    match err {
        ProtocolError::MessageTooLarge { .. } => CloseReason::MessageTooLarge,
        other => CloseReason::ProtocolError(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::method::{MethodSpec, Param};
    use serde_json::json;

    fn unary(spec: MethodSpec) -> Method {
        let handler: crate::hub::method::UnaryHandler =
            Arc::new(|_, _| Box::pin(async { Ok(None) }));
        Method {
            spec,
            handler: Handler::Unary(handler),
        }
    }

    fn server_stream(spec: MethodSpec) -> Method {
        let handler: crate::hub::method::StreamHandler =
            Arc::new(|_, _| Ok(Box::pin(futures_util::stream::empty())));
        Method {
            spec,
            handler: Handler::ServerStream(handler),
        }
    }

    fn upload(spec: MethodSpec, streams: usize) -> Method {
        let handler: crate::hub::method::UploadHandler =
            Arc::new(|_, _, _| Box::pin(async { Ok(None) }));
        Method {
            spec,
            handler: Handler::Upload { streams, handler },
        }
    }

    fn request(id: &str, arguments: Vec<Value>, stream_ids: &[&str], streaming: bool) -> Request {
        Request {
            invocation_id: Some(id.to_string()),
            target: "Method".into(),
            arguments,
            stream_ids: stream_ids.iter().map(|id| id.to_string()).collect(),
            stream_response: streaming,
        }
    }

    fn running() -> Invocations {
        Invocations::new(Arc::new(OpenUploads::default()))
    }

    const SEND: MethodSpec = MethodSpec::new("Send", &[Param::String, Param::Integer]);
    const USER: &[String] = &[];

    fn roles(names: &[&str]) -> Vec<String> {
        names.iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn a_caller_without_the_method_s_roles_learns_nothing_about_its_parameters() {
        let method = unary(SEND.roles(&["admin"]));
        // Wrong arguments too: the role check comes first.
        let call = request("1", vec![], &[], false);
        let user = roles(&["user"]);
        assert_eq!(
            running().check(&method, &user, &call, 4),
            Err(CallRefusal::Unauthorized)
        );
        let admin = roles(&["user", "admin"]);
        assert_eq!(
            running().check(&method, &admin, &call, 4),
            Err(CallRefusal::ArgumentCount {
                sent: 0,
                expected: 2
            })
        );
    }

    #[test]
    fn arguments_must_match_the_parameters_in_number_and_type() {
        let method = unary(SEND);
        let check = |arguments: Vec<Value>| {
            running().check(&method, USER, &request("1", arguments, &[], false), 4)
        };
        assert_eq!(check(vec!["hi".into(), 3.into()]), Ok(()));
        assert_eq!(
            check(vec!["hi".into()]),
            Err(CallRefusal::ArgumentCount {
                sent: 1,
                expected: 2
            })
        );
        assert_eq!(
            check(vec!["hi".into(), 3.5.into()]),
            Err(CallRefusal::ArgumentType {
                index: 1,
                expected: "an integer"
            })
        );
    }

    #[test]
    fn a_method_taking_any_arguments_refuses_only_too_many() {
        let method = unary(MethodSpec::new("Forward", &[]).any_arguments(2));
        let check = |arguments: Vec<Value>| {
            running().check(&method, USER, &request("1", arguments, &[], false), 4)
        };
        assert_eq!(check(vec![]), Ok(()));
        assert_eq!(check(vec!["hi".into(), json!({"a": [1]})]), Ok(()));
        assert_eq!(
            check(vec![1.into(), 2.into(), 3.into()]),
            Err(CallRefusal::TooManyArguments { sent: 3, max: 2 })
        );
    }

    #[test]
    fn a_method_is_called_the_way_it_answers() {
        let streaming = server_stream(MethodSpec::new("Counter", &[]));
        let plain = unary(MethodSpec::new("Echo", &[]));
        let invoked = request("1", vec![], &[], false);
        let streamed = request("1", vec![], &[], true);
        let check = |method: &Method, request: &Request| running().check(method, USER, request, 4);
        assert_eq!(
            check(&streaming, &invoked),
            Err(CallRefusal::StreamingMethodInvoked)
        );
        assert_eq!(
            check(&plain, &streamed),
            Err(CallRefusal::PlainMethodStreamed)
        );
        assert_eq!(check(&streaming, &streamed), Ok(()));
        assert_eq!(check(&plain, &invoked), Ok(()));
    }

    #[test]
    fn a_running_invocation_s_id_is_refused_until_it_finishes() {
        let method = unary(MethodSpec::new("Echo", &[]));
        let mut running = running();
        running.active_ids.insert("1".into());
        running.parallel = 1;
        let again = request("1", vec![], &[], false);
        assert_eq!(
            running.check(&method, USER, &again, 4),
            Err(CallRefusal::InvocationIdInUse("1".into()))
        );
        running.finished(Finished {
            invocation_id: Some("1".into()),
            counted: Slot::Parallel,
            stream_ids: Vec::new(),
        });
        assert_eq!(running.parallel, 0);
        assert_eq!(running.check(&method, USER, &again, 4), Ok(()));
    }

    #[test]
    fn uploads_need_their_streams_fresh_and_within_the_limit() {
        let method = upload(MethodSpec::new("Upload", &[]), 1);
        let mut running = running();
        let check = |running: &Invocations, id: &str, streams: &[&str]| {
            running.check(&method, USER, &request(id, vec![], streams, false), 2)
        };
        assert_eq!(
            check(&running, "1", &[]),
            Err(CallRefusal::StreamCount {
                sent: 0,
                expected: 1
            })
        );
        let (receivers, registered) = running.open_uploads(vec!["s1".into()], 4);
        running.open_streams += 1;
        assert_eq!(receivers.len(), 1);
        assert_eq!(
            check(&running, "2", &["s1"]),
            Err(CallRefusal::StreamIdInUse)
        );
        assert_eq!(check(&running, "2", &["s2"]), Ok(()));
        running.open_streams += 1;
        assert_eq!(
            check(&running, "3", &["s3"]),
            Err(CallRefusal::TooManyStreams { max: 2 })
        );
        // The upload's end frees its stream and its slot.
        running.finished(Finished {
            invocation_id: Some("1".into()),
            counted: Slot::Stream,
            stream_ids: registered,
        });
        assert!(!running.uploads.contains("s1"));
        assert_eq!(check(&running, "3", &["s1"]), Ok(()));
    }
}
