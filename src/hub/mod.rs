//! The hub layer: a registry of declared methods per hub, the per-connection session that runs
//! the protocol (handshake, dispatch, keep-alive, timeouts), and the lifetime manager through
//! which every send to other connections goes.

mod builtin;
mod call;
mod lifetime;
mod method;
mod session;

pub use call::{Call, Clients};
pub use lifetime::{
    first_listed, BackplaneError, ConnectedUser, ConnectionInfo, HubLifetimeManager,
    InProcessLifetimeManager, LifetimeError,
};
pub use method::{
    bind, Access, Handler, HubError, InternalError, Method, MethodResult, MethodSpec, Param,
    UploadStream,
};
pub use session::{run_session, OpenUploads, SessionLimits};

use crate::auth::Authenticator;
use crate::connection::ConnectionRegistry;
use crate::envelope::EnvelopeService;
use futures_util::future::LocalBoxFuture;
use futures_util::stream::LocalBoxStream;
use futures_util::Stream;
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

/// Runs when a connection completes its handshake or ends (device presence, for example).
pub type LifecycleHook = Arc<dyn Fn(Call) -> LocalBoxFuture<'static, ()> + Send + Sync>;

/// One hub: its path and its methods, found case-insensitively as ASP.NET Core does.
pub struct Hub {
    pub name: Arc<str>,
    pub path: String,
    methods: HashMap<String, Method>,
    pub lifetime: Arc<dyn HubLifetimeManager>,
    pub services: HubServices,
    on_connected: Option<LifecycleHook>,
    on_disconnected: Option<LifecycleHook>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("name", &self.name)
            .field("methods", &self.methods.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Hub {
    pub fn method(&self, name: &str) -> Option<&Method> {
        self.methods.get(&name.to_ascii_lowercase())
    }

    /// The declared methods, for documentation and diagnostics.
    pub fn methods(&self) -> impl Iterator<Item = &MethodSpec> {
        self.methods.values().map(|m| &m.spec)
    }

    pub(crate) fn on_connected(&self) -> Option<&LifecycleHook> {
        self.on_connected.as_ref()
    }

    pub(crate) fn on_disconnected(&self) -> Option<&LifecycleHook> {
        self.on_disconnected.as_ref()
    }
}

/// The services every hub gets, whatever its application: token verification and the
/// connection registry (for in-band refresh and for closing a user's connections).
#[derive(Clone)]
pub struct HubServices {
    pub auth: Authenticator,
    pub connections: Arc<ConnectionRegistry>,
    /// Verifies the envelopes of methods declared `signed`, before they run.
    pub envelopes: Arc<EnvelopeService>,
    pub metrics: crate::metrics::Metrics,
    /// Client-to-server streams open across sessions (a diagnostic gauge).
    pub open_uploads: Arc<OpenUploads>,
}

/// Declares a hub's methods; each registration names its access rules beside its handler.
///
/// The server makes one per registered hub ([`crate::Server::hub`]), with the methods every
/// hub has (`RefreshToken`, in-band token refresh); the application adds its own. Arguments
/// are checked against the declared [`Param`]s before a handler runs; [`bind`] turns them into
/// typed values.
///
/// ```
/// use futures_util::stream;
/// use signet::{bind, HubBuilder, HubError, MethodSpec, Param};
///
/// fn numbers(hub: HubBuilder) -> HubBuilder {
///     hub
///         // One result.
///         .method(MethodSpec::new("Add", &[Param::Number, Param::Number]), |_, args| async move {
///             let (a, b): (f64, f64) = bind(args)?;
///             Ok(Some((a + b).into()))
///         })
///         // Items streamed to the caller, until done or cancelled.
///         .stream(MethodSpec::new("Count", &[Param::Integer]), |_, args| {
///             let (n,): (u64,) = bind(args)?;
///             Ok(stream::iter((0..n).map(|i| Ok(i.into()))))
///         })
///         // Fed by one client-to-server stream.
///         .upload(MethodSpec::new("Sum", &[]), 1, |_, _, mut streams| async move {
///             let mut items = streams.pop().ok_or_else(|| HubError::hub("a stream is required"))?;
///             let mut sum = 0.0;
///             while let Some(item) = items.recv().await {
///                 sum += item.as_f64().ok_or_else(|| HubError::hub("numbers only"))?;
///             }
///             Ok(Some(sum.into()))
///         })
///         // Only admins; connection events.
///         .method(MethodSpec::new("Reset", &[]).roles(&["admin"]), |_, _| async { Ok(None) })
///         .on_connected(|call| async move { tracing::info!(sub = %call.principal.sub, "joined") })
/// }
/// ```
pub struct HubBuilder {
    hub: Hub,
}

impl HubBuilder {
    /// A hub served at `/hubs/{name}`, with the built-in methods every hub has
    /// (`RefreshToken`). The server makes it ([`crate::Server::hub`]): internal, not stable API.
    #[doc(hidden)]
    pub fn new(name: &str, lifetime: Arc<dyn HubLifetimeManager>, services: &HubServices) -> Self {
        let builder = Self {
            hub: Hub {
                name: Arc::from(name),
                path: format!("/hubs/{name}"),
                methods: HashMap::new(),
                lifetime,
                services: services.clone(),
                on_connected: None,
                on_disconnected: None,
            },
        };
        builtin::register(builder, services)
    }

    fn add(mut self, spec: MethodSpec, handler: Handler) -> Self {
        let key = spec.name.to_ascii_lowercase();
        let previous = self.hub.methods.insert(key, Method { spec, handler });
        debug_assert!(
            previous.is_none(),
            "hub method {} declared twice",
            spec.name
        );
        self
    }

    /// A method returning one result (`Ok(None)` for a void method).
    pub fn method<F, Fut>(self, spec: MethodSpec, handler: F) -> Self
    where
        F: Fn(Call, Vec<Value>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = MethodResult> + 'static,
    {
        self.add(
            spec,
            Handler::Unary(Arc::new(move |call, args| Box::pin(handler(call, args)))),
        )
    }

    /// A server-to-client streaming method.
    pub fn stream<F, S>(self, spec: MethodSpec, handler: F) -> Self
    where
        F: Fn(Call, Vec<Value>) -> Result<S, HubError> + Send + Sync + 'static,
        S: Stream<Item = Result<Value, HubError>> + 'static,
    {
        self.add(
            spec,
            Handler::ServerStream(Arc::new(move |call, args| {
                handler(call, args).map(|s| Box::pin(s) as LocalBoxStream<'static, _>)
            })),
        )
    }

    /// A method fed by `streams` client-to-server streams.
    pub fn upload<F, Fut>(self, spec: MethodSpec, streams: usize, handler: F) -> Self
    where
        F: Fn(Call, Vec<Value>, Vec<UploadStream>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = MethodResult> + 'static,
    {
        self.add(
            spec,
            Handler::Upload {
                streams,
                handler: Arc::new(move |call, args, uploads| {
                    Box::pin(handler(call, args, uploads))
                }),
            },
        )
    }

    /// Whether the hub already has a method of this name (case-insensitively, as calls find it).
    pub fn declares(&self, name: &str) -> bool {
        self.hub.methods.contains_key(&name.to_ascii_lowercase())
    }

    /// Runs `hook` when a connection completes its handshake, after the hooks added before it.
    pub fn on_connected<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Call) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let hook: LifecycleHook = Arc::new(move |call| Box::pin(hook(call)));
        self.hub.on_connected = Some(chain(self.hub.on_connected.take(), hook));
        self
    }

    /// Runs `hook` when a connection ends, after the hooks added before it.
    pub fn on_disconnected<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Call) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let hook: LifecycleHook = Arc::new(move |call| Box::pin(hook(call)));
        self.hub.on_disconnected = Some(chain(self.hub.on_disconnected.take(), hook));
        self
    }

    /// The finished hub: the server calls it once the application's setup returns.
    #[doc(hidden)]
    pub fn build(self) -> Arc<Hub> {
        Arc::new(self.hub)
    }
}

/// `first` (if any), then `then`.
fn chain(first: Option<LifecycleHook>, then: LifecycleHook) -> LifecycleHook {
    match first {
        None => then,
        Some(first) => Arc::new(move |call: Call| {
            let (first, then) = (first.clone(), then.clone());
            Box::pin(async move {
                first(call.clone()).await;
                then(call).await;
            })
        }),
    }
}

/// Every hub the server serves, by name.
#[derive(Debug, Default, Clone)]
pub struct HubCatalog {
    hubs: HashMap<String, Arc<Hub>>,
}

impl HubCatalog {
    pub fn with(mut self, hub: Arc<Hub>) -> Self {
        self.hubs.insert(hub.name.to_string(), hub);
        self
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Hub>> {
        self.hubs.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Hub>> {
        self.hubs.values()
    }
}
