//! How a hub method is declared: its name, parameters, kind, who may call it and whether it
//! needs a signed envelope, next to the handler that implements it.

use super::Call;
use futures_util::future::LocalBoxFuture;
use futures_util::stream::LocalBoxStream;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Any authenticated principal.
    Authenticated,
    /// Principals holding at least one of these roles.
    Roles(&'static [&'static str]),
}

impl Access {
    /// Whether a principal with `roles` may call.
    pub fn allows(&self, roles: &[String]) -> bool {
        match self {
            Self::Authenticated => true,
            Self::Roles(allowed) => roles.iter().any(|r| allowed.contains(&r.as_str())),
        }
    }
}

/// The JSON type a parameter must have; checked before the handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// Any JSON value, `null` included.
    Any,
    /// A string.
    String,
    /// Any number.
    Number,
    /// A number without a fractional part (`1.0` from a JavaScript client is not one).
    Integer,
    /// `true` or `false`.
    Bool,
    /// A JSON object (a signed envelope, for a `signed` method).
    Object,
    /// A JSON array.
    Array,
}

impl Param {
    /// Whether `value` is of this type.
    pub fn accepts(&self, value: &Value) -> bool {
        match self {
            Self::Any => true,
            Self::String => value.is_string(),
            Self::Number => value.is_number(),
            Self::Integer => value.is_i64() || value.is_u64(),
            Self::Bool => value.is_boolean(),
            Self::Object => value.is_object(),
            Self::Array => value.is_array(),
        }
    }

    /// The type in words, for the binding error a client sees.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Any => "any value",
            Self::String => "a string",
            Self::Number => "a number",
            Self::Integer => "an integer",
            Self::Bool => "a boolean",
            Self::Object => "an object",
            Self::Array => "an array",
        }
    }
}

/// The declaration of one hub method.
#[derive(Debug, Clone, Copy)]
pub struct MethodSpec {
    /// The name clients invoke (matched case-insensitively) and envelopes are signed for.
    pub name: &'static str,
    /// The arguments' types, in order; a call with other arguments is refused before the
    /// handler runs.
    pub params: &'static [Param],
    /// Who may call it.
    pub access: Access,
    /// The single argument must be a signed envelope, verified before the handler runs.
    pub signed: bool,
    /// Instead of `params`: any JSON arguments, at most this many (a method whose handler
    /// passes them on, as an upstream method does).
    pub any_arguments: Option<usize>,
}

impl MethodSpec {
    /// A method any authenticated principal may call, with these parameters.
    pub const fn new(name: &'static str, params: &'static [Param]) -> Self {
        Self {
            name,
            params,
            access: Access::Authenticated,
            signed: false,
            any_arguments: None,
        }
    }

    /// Accepts any JSON arguments, at most `max` of them, in place of typed parameters.
    pub const fn any_arguments(mut self, max: usize) -> Self {
        self.any_arguments = Some(max);
        self
    }

    /// Only principals holding at least one of `roles` may call it; others are refused before
    /// the handler runs.
    pub const fn roles(mut self, roles: &'static [&'static str]) -> Self {
        self.access = Access::Roles(roles);
        self
    }

    /// The single argument must be a signed envelope (docs/envelope.md) made with the
    /// caller's session message key for this hub and method; the server verifies it
    /// (signature, lifetime, nonce never seen) before the handler runs, and the handler gets
    /// the verified command (the envelope's `message`, parsed) as its argument. Declare the
    /// parameter as [`Param::Object`].
    ///
    /// ```
    /// use signet::{HubBuilder, MethodSpec, Param};
    ///
    /// fn doors(hub: HubBuilder) -> HubBuilder {
    ///     hub.method(
    ///         MethodSpec::new("Unlock", &[Param::Object]).roles(&["user"]).signed(),
    ///         |call, args| async move {
    ///             // `args[0]` is the verified command, e.g. `{"door": "front"}`.
    ///             tracing::info!(sub = %call.principal.sub, command = %args[0], "unlock");
    ///             Ok(None)
    ///         },
    ///     )
    /// }
    /// ```
    pub const fn signed(mut self) -> Self {
        self.signed = true;
        self
    }
}

/// A failure inside the server, with its cause chain (a store or lifetime-manager error).
pub type InternalError = Box<dyn std::error::Error + Send + Sync>;

/// An error a hub method reports; the dispatcher turns it into the completion text.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// Meant for the caller (ASP.NET Core's `HubException`): always shown.
    #[error("{0}")]
    Hub(String),
    /// The arguments did not bind to the method's parameters.
    #[error("{0}")]
    Binding(String),
    /// A failure inside the server: hidden from the caller unless detailed errors are on,
    /// logged with its causes where the call completes ([`HubError::log_internal`]).
    #[error("{0}")]
    Internal(#[source] InternalError),
}

impl HubError {
    /// An error for the caller, shown as ASP.NET Core shows a `HubException`.
    pub fn hub(message: impl Into<String>) -> Self {
        Self::Hub(message.into())
    }

    /// A failure inside the server, keeping `err` (and the errors behind it) for the log.
    pub fn internal(err: impl Into<InternalError>) -> Self {
        Self::Internal(err.into())
    }

    /// The completion error text for a call to `target`, worded as ASP.NET Core words it.
    pub fn completion_text(&self, target: &str, detailed: bool) -> String {
        match self {
            Self::Hub(message) => format!(
                "An unexpected error occurred invoking '{target}' on the server. HubException: {message}"
            ),
            Self::Binding(detail) if detailed => format!(
                "Failed to invoke '{target}' due to an error on the server. InvalidDataException: {detail}"
            ),
            Self::Binding(_) => format!("Failed to invoke '{target}' due to an error on the server."),
            Self::Internal(detail) if detailed => format!(
                "An unexpected error occurred invoking '{target}' on the server. Exception: {detail}"
            ),
            Self::Internal(_) => {
                format!("An unexpected error occurred invoking '{target}' on the server.")
            }
        }
    }

    /// Logs a failure inside the server at error level with its whole cause chain, since the
    /// caller sees at most its first line. Errors meant for the caller are not logged.
    pub fn log_internal(&self, target: &str, connection: &str) {
        if let Self::Internal(err) = self {
            tracing::error!(
                method = target,
                connection,
                error = %cause_chain(err.as_ref()),
                "hub method failed"
            );
        }
    }
}

/// `err` and every error behind it, outermost first, joined by `: `.
fn cause_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Binds the arguments to a typed tuple or struct, e.g. `let (text,): (String,) = bind(args)?`.
pub fn bind<T: DeserializeOwned>(arguments: Vec<Value>) -> Result<T, HubError> {
    serde_json::from_value(Value::Array(arguments)).map_err(|e| HubError::Binding(e.to_string()))
}

/// What a plain method returns: `None` completes without a result (a void method).
pub type MethodResult = Result<Option<Value>, HubError>;

/// Items of a client-to-server stream (a `Subject` the client passes to an
/// [upload method](super::HubBuilder::upload)), in order: `None` (the stream's end) once the
/// client completes the stream, or the connection ends. The server holds at most
/// `hub.stream_buffer_items` items the method has not read yet; the connection waits beyond
/// that, so a slow reader slows its client down rather than growing a queue.
///
/// Read it with [`UploadStream::recv`], or as a [`futures_util::Stream`]:
///
/// ```
/// use futures_util::StreamExt;
/// use signet::{HubBuilder, HubError, MethodSpec};
///
/// fn uploads(hub: HubBuilder) -> HubBuilder {
///     hub
///         // The longest string of one stream.
///         .upload(MethodSpec::new("Longest", &[]), 1, |_, _, mut streams| async move {
///             let mut lines = streams.pop().ok_or_else(|| HubError::hub("a stream is required"))?;
///             let mut longest = 0;
///             while let Some(line) = lines.recv().await {
///                 longest = longest.max(line.as_str().map_or(0, str::len));
///             }
///             Ok(Some(longest.into()))
///         })
///         // How many items two streams had, together.
///         .upload(MethodSpec::new("Count", &[]), 2, |_, _, streams| async move {
///             let all = futures_util::stream::select_all(streams);
///             Ok(Some(all.count().await.into()))
///         })
/// }
/// # let _ = uploads;
/// ```
#[derive(Debug)]
pub struct UploadStream(mpsc::Receiver<Value>);

impl UploadStream {
    pub(crate) fn new(items: mpsc::Receiver<Value>) -> Self {
        Self(items)
    }

    /// The next item; `None` once the client completed the stream (or the connection ended).
    pub async fn recv(&mut self) -> Option<Value> {
        self.0.recv().await
    }
}

impl futures_util::Stream for UploadStream {
    type Item = Value;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Value>> {
        self.0.poll_recv(cx)
    }
}

pub type UnaryHandler =
    Arc<dyn Fn(Call, Vec<Value>) -> LocalBoxFuture<'static, MethodResult> + Send + Sync>;
pub type StreamHandler = Arc<
    dyn Fn(Call, Vec<Value>) -> Result<LocalBoxStream<'static, Result<Value, HubError>>, HubError>
        + Send
        + Sync,
>;
pub type UploadHandler = Arc<
    dyn Fn(Call, Vec<Value>, Vec<UploadStream>) -> LocalBoxFuture<'static, MethodResult>
        + Send
        + Sync,
>;

/// The three shapes of hub method.
#[derive(Clone)]
pub enum Handler {
    /// Returns one result (or none).
    Unary(UnaryHandler),
    /// Streams items to the caller (`StreamInvocation`), until done or cancelled.
    ServerStream(StreamHandler),
    /// Receives `streams` client-to-server streams (`streamIds`), then returns one result.
    Upload {
        streams: usize,
        handler: UploadHandler,
    },
}

/// A declared method with its handler.
#[derive(Clone)]
pub struct Method {
    pub spec: MethodSpec,
    pub handler: Handler,
}

impl Method {
    pub fn is_stream_response(&self) -> bool {
        matches!(self.handler, Handler::ServerStream(_))
    }

    pub fn upload_streams(&self) -> usize {
        match self.handler {
            Handler::Upload { streams, .. } => streams,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Debug, thiserror::Error)]
    #[error("the store failed")]
    struct StoreFailed(#[source] std::io::Error);

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `log` writes, at every level, as plain text.
    fn logged(log: impl FnOnce()) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let bytes = captured.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn store_failure() -> HubError {
        let io = std::io::Error::other("database is locked");
        HubError::internal(StoreFailed(io))
    }

    #[test]
    fn an_internal_error_is_logged_once_with_its_causes() {
        let log = logged(|| store_failure().log_internal("SendCommand", "conn-1"));
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(log.contains("ERROR"), "{log}");
        assert!(log.contains("hub method failed"), "{log}");
        assert!(
            log.contains("the store failed: database is locked"),
            "{log}"
        );
        assert!(
            log.contains("method=\"SendCommand\"") || log.contains("method=SendCommand"),
            "{log}"
        );
        assert!(log.contains("conn-1"), "{log}");
    }

    #[test]
    fn errors_meant_for_the_caller_are_not_logged() {
        let log = logged(|| {
            HubError::hub("no such device").log_internal("SendCommand", "conn-1");
            HubError::Binding("bad".into()).log_internal("SendCommand", "conn-1");
        });
        assert_eq!(log, "");
    }

    #[test]
    fn the_caller_sees_the_generic_text_or_only_the_outer_error() {
        let err = store_failure();
        assert_eq!(
            err.completion_text("SendCommand", false),
            "An unexpected error occurred invoking 'SendCommand' on the server."
        );
        assert_eq!(
            err.completion_text("SendCommand", true),
            "An unexpected error occurred invoking 'SendCommand' on the server. Exception: the store failed"
        );
    }
}
