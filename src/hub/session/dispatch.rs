//! What the session does with each message: decoding, dispatch to the hub's methods with
//! every check before a method runs, and the completion of the methods that ran.

use super::streams::pump_stream;
use super::{reply, Finished, Session, Slot};
use crate::connection::CloseReason;
use crate::connection::Connection;
use crate::hub::call::Call;
use crate::hub::method::{Handler, HubError, Method};
use crate::hub::Hub;
use crate::metrics::{Metrics, Outcome, OTHER_METHOD};
use crate::protocol::{CompletionResult, HubMessage, HubProtocol, ProtocolError};
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::Instant;

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
                        let text = match self.hub.method(&target) {
                            None => unknown_method(&target),
                            Some(method) => HubError::Binding(detail.to_string())
                                .completion_text(method.spec.name, self.limits.detailed_errors),
                        };
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
                let id = invocation_id.filter(|id| !id.is_empty());
                self.invoke(id, target, arguments, stream_ids, false).await
            }
            HubMessage::StreamInvocation {
                invocation_id,
                target,
                arguments,
                stream_ids,
                ..
            } => {
                self.invoke(Some(invocation_id), target, arguments, stream_ids, true)
                    .await
            }
            HubMessage::StreamItem {
                invocation_id,
                item,
                ..
            } => {
                if let Some(upload) = self.uploads.get(&invocation_id) {
                    // Waiting here slows only this client, whose own method drains the stream;
                    // a method that stops draining must not keep a closing connection alive.
                    let sent = tokio::select! {
                        sent = upload.send(item) => sent.is_ok(),
                        _ = self.connection.closed() => {
                            return self.connection.close_reason().cloned();
                        }
                    };
                    if !sent {
                        self.uploads.remove(&invocation_id);
                    }
                }
                None
            }
            HubMessage::Completion { invocation_id, .. } => {
                // Ends a client-to-server stream: dropping the sender ends the method's receiver.
                self.uploads.remove(&invocation_id);
                None
            }
            HubMessage::CancelInvocation { invocation_id, .. } => {
                if let Some(cancel) = self.streams.get(&invocation_id) {
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

    async fn reply(&self, invocation_id: &str, result: CompletionResult) {
        reply(&self.connection, self.protocol, invocation_id, result).await;
    }

    async fn invoke(
        &mut self,
        invocation_id: Option<String>,
        target: String,
        arguments: Vec<Value>,
        stream_ids: Vec<String>,
        stream_response: bool,
    ) -> Option<CloseReason> {
        // A call that arrives after the token expired is never dispatched.
        if self.limits.expiry_deadline(&self.connection) <= Instant::now() {
            return Some(CloseReason::Expired);
        }
        let hub = self.hub.clone();
        let metrics = hub.services.metrics.clone();
        let Some(method) = hub.method(&target) else {
            metrics.invocation(&hub.name, OTHER_METHOD, Outcome::Invalid);
            if let Some(id) = &invocation_id {
                self.reply(id, CompletionResult::Error(unknown_method(&target)))
                    .await;
            }
            return None;
        };
        let target = method.spec.name;
        if let Err(text) = self.check_call(
            method,
            &invocation_id,
            &arguments,
            &stream_ids,
            stream_response,
        ) {
            let refused = !method
                .spec
                .access
                .allows(&self.connection.principal().roles);
            let outcome = if refused {
                Outcome::Refused
            } else {
                Outcome::Invalid
            };
            metrics.invocation(&hub.name, target, outcome);
            if let Some(id) = &invocation_id {
                self.reply(id, CompletionResult::Error(text)).await;
            }
            return None;
        }
        let arguments = if method.spec.signed {
            match self.open_envelope(&hub, target, arguments).await {
                Ok(arguments) => arguments,
                Err(text) => {
                    metrics.invocation(&hub.name, target, Outcome::EnvelopeRejected);
                    if let Some(id) = &invocation_id {
                        self.reply(id, CompletionResult::Error(text)).await;
                    }
                    return None;
                }
            }
        } else {
            arguments
        };
        let call = Call::new(self.connection.clone(), hub.lifetime.clone());
        let connection = self.connection.clone();
        let protocol = self.protocol;
        let detailed = self.limits.detailed_errors;
        if let Some(id) = &invocation_id {
            self.active_ids.insert(id.clone());
        }
        match &method.handler {
            Handler::Unary(handler) => {
                let future = handler(call, arguments);
                self.parallel += 1;
                self.tasks.spawn_local(complete(
                    future,
                    connection,
                    protocol,
                    invocation_id,
                    target,
                    detailed,
                    Slot::Parallel,
                    metrics,
                ));
            }
            Handler::ServerStream(handler) => {
                let id = invocation_id?;
                let cancel = call.cancel.child_token();
                let call = Call {
                    cancel: cancel.clone(),
                    ..call
                };
                let stream = handler(call, arguments);
                self.streams.insert(id.clone(), cancel.clone());
                self.open_streams += 1;
                self.tasks.spawn_local(async move {
                    let started = Instant::now();
                    let end = match stream {
                        Ok(stream) => {
                            pump_stream(
                                &connection,
                                protocol,
                                &id,
                                stream,
                                &cancel,
                                target,
                                detailed,
                            )
                            .await
                        }
                        Err(err) => CompletionResult::Error(err.completion_text(target, detailed)),
                    };
                    record_end(&metrics, &connection.hub, target, started, &end);
                    reply(&connection, protocol, &id, end).await;
                    Finished {
                        invocation_id: Some(id),
                        counted: Slot::Stream,
                        stream_ids: Vec::new(),
                    }
                });
            }
            Handler::Upload { handler, .. } => {
                let mut receivers = Vec::with_capacity(stream_ids.len());
                let mut registered = Vec::with_capacity(stream_ids.len());
                for stream_id in stream_ids {
                    let (tx, rx) = mpsc::channel(self.limits.upload_buffer);
                    let registration = self.uploads.insert(stream_id.clone(), tx);
                    registered.push((stream_id, registration));
                    receivers.push(rx);
                }
                let future = handler(call, arguments, receivers);
                self.open_streams += 1;
                self.tasks.spawn_local(async move {
                    let mut finished = complete(
                        future,
                        connection,
                        protocol,
                        invocation_id,
                        target,
                        detailed,
                        Slot::Stream,
                        metrics,
                    )
                    .await;
                    finished.stream_ids = registered;
                    finished
                });
            }
        }
        None
    }

    /// Verifies the envelope of a signed method before it runs; the method then receives the
    /// verified command as its single argument. `Err` is the completion text.
    async fn open_envelope(
        &self,
        hub: &Hub,
        target: &str,
        arguments: Vec<Value>,
    ) -> Result<Vec<Value>, String> {
        let rejected = |code: &'static str| {
            hub.services.metrics.envelope_rejected(code);
            if code == "nonce_quota_exceeded" {
                hub.services.metrics.rate_limited("nonces");
            }
            format!("Failed to invoke '{target}': envelope rejected ({code})")
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

    /// Every check before a method runs; `Err` is the completion text. The texts are ASP.NET
    /// Core's; the order is too, except that ASP.NET Core binds the arguments first (in its
    /// protocol reader) and Signet checks the caller's roles first, so that a caller without
    /// them learns nothing about a method's parameters.
    fn check_call(
        &self,
        method: &Method,
        invocation_id: &Option<String>,
        arguments: &[Value],
        stream_ids: &[String],
        stream_response: bool,
    ) -> Result<(), String> {
        let target = method.spec.name;
        let principal = self.connection.principal();
        if !method.spec.access.allows(&principal.roles) {
            return Err(format!(
                "Failed to invoke '{target}' because user is unauthorized"
            ));
        }
        if method.is_stream_response() && !stream_response {
            return Err(format!(
                "The client attempted to invoke the streaming '{target}' method with a non-streaming invocation."
            ));
        }
        if !method.is_stream_response() && stream_response {
            return Err(format!(
                "The client attempted to invoke the non-streaming '{target}' method with a streaming invocation."
            ));
        }
        if let Some(id) = invocation_id {
            if self.active_ids.contains(id) {
                return Err(format!("Invocation ID '{id}' is already in use."));
            }
        }
        let detailed = self.limits.detailed_errors;
        if stream_ids.len() != method.upload_streams() {
            let err = HubError::hub(format!(
                "Client sent {} stream(s), Hub method expects {}.",
                stream_ids.len(),
                method.upload_streams()
            ));
            return Err(err.completion_text(target, detailed));
        }
        if stream_ids.iter().any(|id| self.uploads.contains(id)) {
            return Err(
                HubError::hub("A stream id is already in use.").completion_text(target, detailed)
            );
        }
        if (method.is_stream_response() || !stream_ids.is_empty())
            && self.open_streams >= self.limits.max_streams
        {
            return Err(HubError::hub(format!(
                "A connection may have at most {} streams open at once.",
                self.limits.max_streams
            ))
            .completion_text(target, detailed));
        }
        let params = method.spec.params;
        if arguments.len() != params.len() {
            let err = HubError::Binding(format!(
                "Invocation provides {} argument(s) but target expects {}.",
                arguments.len(),
                params.len()
            ));
            return Err(err.completion_text(target, detailed));
        }
        if let Some((index, param)) = params
            .iter()
            .zip(arguments)
            .enumerate()
            .find_map(|(i, (param, value))| (!param.accepts(value)).then_some((i, param)))
        {
            let err = HubError::Binding(format!(
                "Error binding arguments. Make sure that the types of the provided values match \
                 the types of the hub method being invoked. Argument {index} must be {}.",
                param.name()
            ));
            return Err(err.completion_text(target, detailed));
        }
        Ok(())
    }
}

/// Awaits a method and answers the caller (when it asked for an answer).
// What a finished invocation needs; a struct for them would only be unpacked again here.
#[allow(clippy::too_many_arguments)]
async fn complete(
    method: futures_util::future::LocalBoxFuture<'static, crate::hub::MethodResult>,
    connection: Arc<Connection>,
    protocol: HubProtocol,
    invocation_id: Option<String>,
    target: &'static str,
    detailed: bool,
    counted: Slot,
    metrics: Metrics,
) -> Finished {
    let started = Instant::now();
    let result = method.await;
    let completion = match result {
        Ok(None) => CompletionResult::Void,
        Ok(Some(value)) => CompletionResult::Result(value),
        Err(err) => CompletionResult::Error(err.completion_text(target, detailed)),
    };
    record_end(&metrics, &connection.hub, target, started, &completion);
    if let Some(id) = &invocation_id {
        reply(&connection, protocol, id, completion).await;
    }
    Finished {
        invocation_id,
        counted,
        stream_ids: Vec::new(),
    }
}

/// Counts a method that ran, with how long it took.
fn record_end(
    metrics: &Metrics,
    hub: &str,
    target: &'static str,
    started: Instant,
    end: &CompletionResult,
) {
    let outcome = match end {
        CompletionResult::Error(_) => Outcome::Error,
        _ => Outcome::Ok,
    };
    metrics.invocation(hub, target, outcome);
    metrics.invocation_time(hub, target, started.elapsed());
}

/// ASP.NET Core finds the method while binding the arguments, so an unknown one is a binding
/// failure with a HubException, whose text is shown even without detailed errors.
fn unknown_method(target: &str) -> String {
    format!("Failed to invoke '{target}' due to an error on the server. HubException: Method does not exist.")
}

fn protocol_close(err: ProtocolError) -> CloseReason {
    match err {
        ProtocolError::MessageTooLarge { .. } => CloseReason::MessageTooLarge,
        other => CloseReason::ProtocolError(other.to_string()),
    }
}
