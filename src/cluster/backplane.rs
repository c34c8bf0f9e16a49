//! The cluster as an application's hub sees it: [`Backplane`], keys and channels of the hub's
//! own in the cluster's Redis, atomic scripts over those keys, and publish/subscribe between
//! the nodes.
//!
//! A narrow wrapper on purpose: the `redis` crate's types (connections, values, scripts) stay
//! out of the stable API, so Signet can move to another major version of the client, or
//! change how it holds its connections, without breaking an application. What a hub needs of
//! shared state is atomic operations on a few keys (a Lua script is exactly that) and a way to
//! reach the other nodes (a publish, with Signet's sequence numbers and gap counts).

use super::wire::{Frame, Origin};
use super::{Cluster, Subscriber};
use crate::hub::BackplaneError;
use bytes::Bytes;
use std::fmt;
use std::sync::Arc;

/// The cluster's shared state for one hub, from [`crate::HubContext::backplane`] (`None` on a
/// single node): keys and channels of the hub's own in the cluster's Redis
/// (`{channel_prefix}:{hub}:app:{name}`), [`BackplaneScript`]s run atomically on its keys,
/// and messages published to every other node.
///
/// Scripts fail with [`BackplaneError`] while Redis is unreachable; a publish fails only when
/// the node's outbox is full (it is sent in order once Redis answers, or lost, as pub/sub is
/// at most once: sequence gaps are counted in `signet_cluster_gaps`).
///
/// ```no_run
/// use signet::{BackplaneScript, HubBuilder, HubContext};
/// use std::sync::LazyLock;
///
/// /// Counts visits across every node: KEYS[1] the counter; answers the new count.
/// static VISIT: LazyLock<BackplaneScript> =
///     LazyLock::new(|| BackplaneScript::new("return redis.call('INCR', KEYS[1])"));
///
/// fn setup(hub: HubBuilder, context: &HubContext<'_>) -> HubBuilder {
///     if let Some(backplane) = context.backplane() {
///         // What other nodes publish on `news`, handed over on the node's receiving task.
///         backplane.subscribe("news", |message| {
///             println!("another node says {}", String::from_utf8_lossy(message));
///         });
///         let shared = backplane.clone();
///         return hub.method(signet::MethodSpec::new("Visit", &[]), move |_, _| {
///             let backplane = shared.clone();
///             async move {
///                 let count = backplane
///                     .script(&VISIT)
///                     .key("visits")
///                     .run()
///                     .await
///                     .map_err(signet::HubError::internal)?;
///                 backplane
///                     .publish("news", b"visited".to_vec())
///                     .map_err(signet::HubError::internal)?;
///                 Ok(count.as_integer().map(serde_json::Value::from))
///             }
///         });
///     }
///     hub
/// }
/// ```
#[derive(Clone)]
pub struct Backplane {
    cluster: Arc<Cluster>,
    /// `{channel_prefix}:{hub}:app`.
    namespace: String,
}

impl fmt::Debug for Backplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backplane")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Backplane {
    /// The backplane of hub `hub` on `cluster`.
    pub(crate) fn new(cluster: Arc<Cluster>, hub: &str) -> Self {
        let namespace = cluster.key(&format!("{hub}:app"));
        Self { cluster, namespace }
    }

    /// The full Redis name of the hub's key or channel `name`:
    /// `{channel_prefix}:{hub}:app:{name}`. [`ScriptCall::key`] applies it itself; a script
    /// that builds key names from an argument (`ARGV[1] .. id`) gets its prefix from here.
    pub fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.namespace)
    }

    /// A call of `script`, to which keys and arguments are added before it [runs](ScriptCall::run).
    pub fn script<'a>(&'a self, script: &'a BackplaneScript) -> ScriptCall<'a> {
        ScriptCall {
            backplane: self,
            invocation: script.0.prepare_invoke(),
        }
    }

    /// Hands `message` to every other node's handler of the hub's channel `channel` (this
    /// node's own handler does not receive it). `Ok` once queued: a publish cannot know who
    /// received it. Fails when the node's outbox is full.
    pub fn publish(
        &self,
        channel: &str,
        message: impl Into<Vec<u8>>,
    ) -> Result<(), BackplaneError> {
        let body = Bytes::from(message.into());
        self.cluster
            .send(self.key(channel), Frame::Application(body))
    }

    /// Routes what other nodes [publish](Self::publish) on the hub's channel `channel` to
    /// `on_message`, from now on and after every reconnection (a channel has one handler: a
    /// second subscription replaces the first). The handler runs on the task that receives
    /// every backplane message of the node, in order: quick work only (hand the message to a
    /// bounded channel, a `tokio::sync::broadcast`, ...). The node is ready (`/readyz`) once
    /// Redis confirmed the subscription.
    pub fn subscribe<F>(&self, channel: &str, on_message: F)
    where
        F: Fn(&[u8]) + Send + Sync + 'static,
    {
        self.cluster
            .subscribe(self.key(channel), Arc::new(Handler(on_message)));
    }
}

/// Hands an application channel's messages to its handler.
struct Handler<F>(F);

#[async_trait::async_trait]
impl<F> Subscriber for Handler<F>
where
    F: Fn(&[u8]) + Send + Sync + 'static,
{
    async fn receive(&self, channel: &str, _origin: Origin, frame: Frame) {
        match frame {
            Frame::Application(body) => (self.0)(&body),
            _ => {
                tracing::warn!(%channel, "ignoring a backplane frame that is not an application's")
            }
        }
    }
}

/// A Lua script run atomically on the hub's keys ([`Backplane::script`]), as Redis runs
/// `EVAL`: sent by its SHA-1 digest, and loaded first when Redis does not know it yet. Make
/// each script once (a `static` with [`std::sync::LazyLock`]) and call it many times.
pub struct BackplaneScript(redis::Script);

impl BackplaneScript {
    /// A script of Lua source `code`, which reads its keys as `KEYS[i]` and its arguments as
    /// `ARGV[i]` (strings; `tonumber` them).
    ///
    /// ```
    /// let take = signet::BackplaneScript::new("return redis.call('GETDEL', KEYS[1])");
    /// # drop(take);
    /// ```
    pub fn new(code: &str) -> Self {
        Self(redis::Script::new(code))
    }
}

impl fmt::Debug for BackplaneScript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BackplaneScript")
            .field(&self.0.get_hash())
            .finish()
    }
}

/// One call of a [`BackplaneScript`]: its keys (`KEYS`, in the hub's namespace) and arguments
/// (`ARGV`), in the order they are added.
pub struct ScriptCall<'a> {
    backplane: &'a Backplane,
    invocation: redis::ScriptInvocation<'a>,
}

impl fmt::Debug for ScriptCall<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptCall").finish_non_exhaustive()
    }
}

impl ScriptCall<'_> {
    /// Adds the hub's key `name` (as [`Backplane::key`] names it) to `KEYS`.
    pub fn key(mut self, name: &str) -> Self {
        self.invocation.key(self.backplane.key(name));
        self
    }

    /// Adds `value`, as text, to `ARGV`.
    pub fn arg(mut self, value: impl fmt::Display) -> Self {
        self.invocation.arg(value.to_string());
        self
    }

    /// Runs the script; its answer as Redis converts Lua's (a number is an integer, a string
    /// data, a table an array, `false` nil).
    pub async fn run(self) -> Result<BackplaneValue, BackplaneError> {
        let mut commands = self.backplane.cluster.commands();
        let value: redis::Value = self
            .invocation
            .invoke_async(&mut commands)
            .await
            .map_err(|err| BackplaneError(err.to_string()))?;
        Ok(BackplaneValue::from(value))
    }
}

/// What a [`BackplaneScript`] answered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackplaneValue {
    /// Lua `false` or `nil`, or a missing value.
    Nil,
    /// A Lua number (truncated to an integer, as Redis does) or `true` (1).
    Integer(i64),
    /// A Lua string, or a value Redis answered as text (a status, a double).
    Data(Vec<u8>),
    /// A Lua table (its array part), or a map's keys and values in turn.
    Array(Vec<BackplaneValue>),
}

impl BackplaneValue {
    /// The integer, if this is one.
    ///
    /// ```
    /// use signet::BackplaneValue;
    /// assert_eq!(BackplaneValue::Integer(2).as_integer(), Some(2));
    /// assert_eq!(BackplaneValue::Nil.as_integer(), None);
    /// ```
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Self::Integer(n) => Some(*n),
            _ => None,
        }
    }

    /// The data as UTF-8 text, if this is data and it is text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Data(data) => std::str::from_utf8(data).ok(),
            _ => None,
        }
    }

    /// The items, if this is an array.
    ///
    /// ```
    /// use signet::BackplaneValue;
    /// let pair = BackplaneValue::Array(vec![
    ///     BackplaneValue::Data(b"lamp".to_vec()),
    ///     BackplaneValue::Data(b"alice".to_vec()),
    /// ]);
    /// let items = pair.as_array().unwrap_or_default();
    /// assert_eq!(items.iter().map(|i| i.as_str()).collect::<Vec<_>>(), [Some("lamp"), Some("alice")]);
    /// ```
    pub fn as_array(&self) -> Option<&[BackplaneValue]> {
        match self {
            Self::Array(items) => Some(items),
            _ => None,
        }
    }

    /// Whether this is nil.
    pub fn is_nil(&self) -> bool {
        matches!(self, Self::Nil)
    }
}

impl From<redis::Value> for BackplaneValue {
    fn from(value: redis::Value) -> Self {
        use redis::Value as V;
        match value {
            V::Nil => Self::Nil,
            V::Int(n) => Self::Integer(n),
            V::Boolean(b) => Self::Integer(i64::from(b)),
            V::BulkString(data) => Self::Data(data),
            V::SimpleString(text) => Self::Data(text.into_bytes()),
            V::Okay => Self::Data(b"OK".to_vec()),
            V::Double(x) => Self::Data(x.to_string().into_bytes()),
            V::VerbatimString { text, .. } => Self::Data(text.into_bytes()),
            V::Array(items) | V::Set(items) => {
                Self::Array(items.into_iter().map(Self::from).collect())
            }
            V::Map(pairs) => Self::Array(
                pairs
                    .into_iter()
                    .flat_map(|(k, v)| [Self::from(k), Self::from(v)])
                    .collect(),
            ),
            V::Attribute { data, .. } => Self::from(*data),
            _ => Self::Nil,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_answers_become_backplane_values() {
        use redis::Value as V;
        assert_eq!(BackplaneValue::from(V::Int(3)), BackplaneValue::Integer(3));
        assert_eq!(BackplaneValue::from(V::Boolean(true)).as_integer(), Some(1));
        assert!(BackplaneValue::from(V::Nil).is_nil());
        assert_eq!(
            BackplaneValue::from(V::Array(vec![
                V::BulkString(b"d1".to_vec()),
                V::SimpleString("alice".into()),
            ])),
            BackplaneValue::Array(vec![
                BackplaneValue::Data(b"d1".to_vec()),
                BackplaneValue::Data(b"alice".to_vec()),
            ])
        );
        assert_eq!(
            BackplaneValue::from(V::Map(vec![(V::BulkString(b"k".to_vec()), V::Int(1))])),
            BackplaneValue::Array(vec![
                BackplaneValue::Data(b"k".to_vec()),
                BackplaneValue::Integer(1)
            ])
        );
    }
}
