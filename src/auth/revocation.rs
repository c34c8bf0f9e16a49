//! Revocation: which verified tokens must still be refused, consulted by
//! [`super::Authenticator`] on every request and hub connection.
//!
//! Four kinds of record, each kept only as long as a token it refuses can still be valid:
//! - a denied `jti` (logout), until the token's `exp` (plus leeway);
//! - a revoked session (`sid`), until every access token of that session has expired;
//! - a per-subject cut-off: tokens of `sub`, or owned by `sub` (device tokens carry their owner
//!   user in `owner`), issued before `not_before` are refused (admin revocation, password change,
//!   user removal, device re-key and, with `not_before = i64::MAX`, device removal).
//!
//! Every revocation is also published as a [`RevocationEvent`] so that live connections can be
//! closed. Lookups are in memory (moka, dashmap) and never touch the database; the records are
//! persisted through [`crate::store::RevocationLog`] and reloaded at start-up.
//!
//! Other nodes' revocations arrive through feeds ([`FeedSource`]): a shared PostgreSQL store's
//! notifications, and the cluster's backplane, to which this node's own records are handed on
//! ([`RevocationRelay`]). While any feed is lost, checks fail closed.

use super::issue::unix_now;
use super::Principal;
use crate::store::{
    FeedEvent, RevocationLog, RevocationRecord, RevocationSnapshot, StoreError, SubjectCutoff,
};
use async_trait::async_trait;
use dashmap::DashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// The longest lifetime an access token Signet issues can have (the maximum of
/// `jwt.access_token_lifetime_minutes`): records about Signet's own tokens are kept this long.
pub const MAX_ACCESS_TOKEN_LIFETIME_SECS: i64 = 1440 * 60;

/// Why tokens were revoked: one name ([`RevocationCause::as_str`]) for logs, events and the
/// store's session records (`revoked_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RevocationCause {
    /// The user logged out.
    Logout,
    /// A refresh token was presented a second time: its session is ended.
    RefreshTokenReused,
    /// A new login ended the user's oldest session (`identity.max_sessions_per_user`).
    SessionLimit,
    /// An administrator revoked everything the user holds.
    AdminRevoked,
    /// The user's password was changed.
    PasswordChanged,
    /// The user was removed.
    UserRemoved,
    /// The device was removed.
    DeviceRemoved,
    /// The device's key was replaced.
    DeviceRekeyed,
    /// Recorded by another node, arriving through a feed (or reloaded after it was lost): the
    /// record says what is revoked, not why. Live connections close with the same texts.
    Recorded,
}

impl RevocationCause {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::RefreshTokenReused => "refresh_token_reused",
            Self::SessionLimit => "session_limit",
            Self::AdminRevoked => "admin_revoked",
            Self::PasswordChanged => "password_changed",
            Self::UserRemoved => "user_removed",
            Self::DeviceRemoved => "device_removed",
            Self::DeviceRekeyed => "device_rekeyed",
            Self::Recorded => "recorded",
        }
    }
}

impl std::fmt::Display for RevocationCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A revocation that happened, for whoever holds live connections.
///
/// Use [`RevocationEvent::affects`] as a cheap filter over connections, then
/// [`RevocationStore::check`] (or [`super::Authenticator::check_revocation`]) as the verdict: a
/// re-keyed device's event matches its connections, but a token issued after the re-key passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationEvent {
    /// One access token (by `jti`) is revoked.
    Jti { jti: String, cause: RevocationCause },
    /// Every access token of a session (`sid`) is revoked.
    Session { sid: String, cause: RevocationCause },
    /// Tokens of `sub`, or owned by `sub`, issued before `before` (Unix seconds) are revoked.
    UserBefore {
        sub: String,
        before: i64,
        cause: RevocationCause,
    },
    /// A device (`sub = "device:<id>"`) was removed or re-keyed.
    Device { sub: String, cause: RevocationCause },
}

impl RevocationEvent {
    pub fn cause(&self) -> RevocationCause {
        match self {
            Self::Jti { cause, .. }
            | Self::Session { cause, .. }
            | Self::UserBefore { cause, .. }
            | Self::Device { cause, .. } => *cause,
        }
    }

    /// Whether this event may revoke `principal`'s token.
    pub fn affects(&self, principal: &Principal) -> bool {
        match self {
            Self::Jti { jti, .. } => principal.jti.as_deref() == Some(jti),
            Self::Session { sid, .. } => principal.sid.as_deref() == Some(sid),
            Self::UserBefore { sub, before, .. } => {
                let owned = principal.sub == *sub || principal.owner.as_deref() == Some(sub);
                owned && principal.issued_at.is_none_or(|iat| iat < *before)
            }
            Self::Device { sub, .. } => principal.sub == *sub,
        }
    }
}

/// Why a verified token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Revoked {
    #[error("the token was revoked")]
    Token,
    #[error("the token's session was revoked")]
    Session,
    #[error("the subject's tokens issued before a cut-off are revoked")]
    Subject,
}

/// The verdict on a verified token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationState {
    Valid,
    Revoked(Revoked),
}

/// The revocation records could not be consulted (a shared store down, for example). Callers
/// fail closed: the token is refused, the connection refused or closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the revocation store is unavailable: {0}")]
pub struct StoreUnavailable(pub String);

impl From<StoreError> for StoreUnavailable {
    fn from(err: StoreError) -> Self {
        Self(err.to_string())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    /// The revocation is in force in memory but could not be persisted.
    #[error("the revocation could not be persisted: {0}")]
    Persist(#[from] StoreError),
}

/// Where revocations are recorded and checked. Object safe: held as `Arc<dyn RevocationStore>`.
#[async_trait]
pub trait RevocationStore: Send + Sync + std::fmt::Debug {
    /// Whether something revokes `principal`'s token; [`StoreUnavailable`] when that cannot
    /// be known.
    async fn check(&self, principal: &Principal) -> Result<RevocationState, StoreUnavailable>;
    /// Denies the token `jti` until `expires_at`.
    async fn deny_token(
        &self,
        jti: &str,
        expires_at: i64,
        cause: RevocationCause,
    ) -> Result<(), RevocationError>;
    /// Revokes every access token of session `sid`; the record is kept at least until `until`.
    async fn revoke_session(
        &self,
        sid: &str,
        until: i64,
        cause: RevocationCause,
    ) -> Result<(), RevocationError>;
    /// Revokes tokens of user `sub` (and of devices it owns) issued before `before`.
    async fn revoke_user_before(
        &self,
        sub: &str,
        before: i64,
        cause: RevocationCause,
    ) -> Result<(), RevocationError>;
    /// Revokes a device's tokens issued before `before` (the device was re-keyed); `None`
    /// revokes all (the device was removed).
    async fn revoke_device(&self, sub: &str, before: Option<i64>) -> Result<(), RevocationError>;
    /// The cut-off for `sub`: a token issued to it must have `iat >= not_before`.
    async fn not_before(&self, sub: &str) -> Option<i64>;
    /// Revocations from now on. A receiver that lags gets `RecvError::Lagged`, after which it
    /// must re-check every connection.
    fn subscribe(&self) -> broadcast::Receiver<RevocationEvent>;
    /// Whether every revocation recorded anywhere can be known here; while not, [`Self::check`]
    /// answers [`StoreUnavailable`] for tokens not known to be revoked (`/readyz` says so).
    fn in_sync(&self) -> bool {
        true
    }
}

/// Where revocations recorded by other nodes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedSource {
    /// The shared store's notifications (PostgreSQL `LISTEN/NOTIFY`).
    Store,
    /// The cluster's backplane (Redis pub/sub, with the records kept in Redis to reload).
    Cluster,
}

impl FeedSource {
    fn bit(self) -> u8 {
        match self {
            Self::Store => 1,
            Self::Cluster => 2,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Store => "the revocation feed of the shared store",
            Self::Cluster => "the cluster's revocation channel",
        }
    }
}

/// Hands this node's own revocation records on to other nodes (the cluster's backplane).
/// Quick and non-blocking: it queues; records arriving from feeds are not handed on again.
pub trait RevocationRelay: Send + Sync {
    fn relay(&self, record: RevocationRecord);
}

/// Keeps an entry until the Unix time it holds (plus a second, so `exp == now` is covered).
struct UntilUnixTime;

impl moka::Expiry<String, i64> for UntilUnixTime {
    fn expire_after_create(&self, _: &String, until: &i64, _: Instant) -> Option<Duration> {
        let remaining = until.saturating_sub(unix_now()).max(0) as u64;
        Some(Duration::from_secs(remaining.saturating_add(1)))
    }

    fn expire_after_update(
        &self,
        key: &String,
        until: &i64,
        at: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, until, at)
    }
}

#[derive(Debug, Clone, Copy)]
struct Cutoff {
    not_before: i64,
    forget_after: Option<i64>,
}

/// The in-process [`RevocationStore`]: in-memory sets, persisted through a [`RevocationLog`].
///
/// The maps are not capacity-bounded on purpose: evicting an entry would un-revoke a token.
/// They are bounded by time instead, each entry living only as long as a token it refuses.
pub struct InProcessRevocations {
    log: Arc<dyn RevocationLog>,
    denied: moka::sync::Cache<String, i64>,
    sessions: moka::sync::Cache<String, i64>,
    cutoffs: DashMap<String, Cutoff>,
    events: broadcast::Sender<RevocationEvent>,
    leeway_secs: i64,
    /// The [`FeedSource`] bits of the feeds lost now ([`Self::follow_feed`]); always 0 for a
    /// node that shares nothing.
    feeds_lost: AtomicU8,
    /// The [`FeedSource`] bits whose loss fails closed: every feed, but one that only repeats
    /// what another failing-closed feed carries ([`Self::redundant_feed`]).
    relied_on: AtomicU8,
    /// Where this node's own records go besides the log (set once, on a cluster node).
    relay: OnceLock<Arc<dyn RevocationRelay>>,
}

impl std::fmt::Debug for InProcessRevocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessRevocations")
            .field("denied", &self.denied.entry_count())
            .field("sessions", &self.sessions.entry_count())
            .field("cutoffs", &self.cutoffs.len())
            .finish()
    }
}

fn cache() -> moka::sync::Cache<String, i64> {
    moka::sync::Cache::builder()
        .expire_after(UntilUnixTime)
        .build()
}

impl InProcessRevocations {
    /// Loads the records still in force from `log`. `leeway_secs` is the verifier's clock
    /// leeway (a token stays valid that long past its `exp`); `event_capacity` bounds the
    /// event channel.
    pub async fn load(
        log: Arc<dyn RevocationLog>,
        leeway_secs: u64,
        event_capacity: usize,
    ) -> Result<Self, StoreError> {
        let snapshot = log.load_revocations(unix_now()).await?;
        let (events, _) = broadcast::channel(event_capacity.max(1));
        let revocations = Self {
            log,
            denied: cache(),
            sessions: cache(),
            cutoffs: DashMap::new(),
            events,
            leeway_secs: i64::try_from(leeway_secs).unwrap_or(i64::MAX),
            feeds_lost: AtomicU8::new(0),
            relied_on: AtomicU8::new(FeedSource::Store.bit() | FeedSource::Cluster.bit()),
            relay: OnceLock::new(),
        };
        for record in snapshot.into_records() {
            revocations.insert_record(record);
        }
        tracing::info!(
            denied_tokens = revocations.denied.entry_count(),
            revoked_sessions = revocations.sessions.entry_count(),
            cutoffs = revocations.cutoffs.len(),
            "revocations loaded"
        );
        Ok(revocations)
    }

    /// Hands every revocation recorded here from now on to `relay` too (once; a second relay
    /// is ignored).
    pub fn relay_to(&self, relay: Arc<dyn RevocationRelay>) {
        let _ = self.relay.set(relay);
    }

    /// Counts `source` as lost until its first [`FeedEvent::InSync`], quietly: a feed that is
    /// being set up (the cluster's, before Redis confirms the subscription).
    pub fn await_feed(&self, source: FeedSource) {
        self.feeds_lost.fetch_or(source.bit(), Ordering::AcqRel);
    }

    /// `source` carries nothing another feed does not (the cluster's channel beside a shared
    /// store's feed, where every node writes its records first): its loss is logged but does
    /// not refuse tokens, so a Redis outage does not stop authentication where PostgreSQL
    /// still tells every revocation.
    pub fn redundant_feed(&self, source: FeedSource) {
        self.relied_on.fetch_and(!source.bit(), Ordering::AcqRel);
    }

    /// The bits of the feeds lost now whose loss fails closed.
    fn lost_relied_on(&self) -> u8 {
        self.feeds_lost.load(Ordering::Acquire) & self.relied_on.load(Ordering::Acquire)
    }

    /// Every record in force in this node's own log (pruning the expired), to hand on again.
    pub async fn logged(&self) -> Result<RevocationSnapshot, StoreError> {
        self.log.load_revocations(unix_now()).await
    }

    /// Follows a feed of other nodes' revocations ([`FeedEvent`]): a record written (by another
    /// node) is in force here at once and published to live connections, not written again.
    /// From [`FeedEvent::Lost`] until that source's next [`FeedEvent::InSync`], records written
    /// elsewhere may be missing, so [`RevocationStore::check`] answers [`StoreUnavailable`] for
    /// every token it does not know to be revoked (fail closed).
    pub fn follow_feed(&self, source: FeedSource, event: FeedEvent) {
        match event {
            FeedEvent::Record(record) => {
                let event = self.insert_record(record);
                self.publish(event);
            }
            FeedEvent::Lost => {
                self.feeds_lost.fetch_or(source.bit(), Ordering::AcqRel);
                if self.relied_on.load(Ordering::Acquire) & source.bit() != 0 {
                    tracing::warn!(
                        feed = source.describe(),
                        "revocations of other nodes cannot reach this node: tokens are refused \
                         (503 store_unavailable) until the feed is back"
                    );
                } else {
                    tracing::warn!(
                        feed = source.describe(),
                        "revocations of other nodes arrive through the shared store's feed alone \
                         until this feed is back"
                    );
                }
            }
            FeedEvent::InSync(snapshot) => {
                // In force before they are published, and published once checks answer again,
                // so a live connection they name is re-checked against all of them.
                let events: Vec<_> = snapshot
                    .into_records()
                    .map(|record| self.insert_record(record))
                    .collect();
                let was = self.feeds_lost.fetch_and(!source.bit(), Ordering::AcqRel);
                if was & source.bit() != 0 {
                    tracing::info!(
                        feed = source.describe(),
                        reloaded = events.len(),
                        "revocations of other nodes reach this node again"
                    );
                }
                for event in events {
                    self.publish(event);
                }
            }
        }
    }

    /// Hands a record made here to the relay, if any.
    fn relay(&self, record: RevocationRecord) {
        if let Some(relay) = self.relay.get() {
            relay.relay(record);
        }
    }

    /// Puts a recorded revocation in force in memory; returns the event that announces it.
    fn insert_record(&self, record: RevocationRecord) -> RevocationEvent {
        let cause = RevocationCause::Recorded;
        match record {
            RevocationRecord::DeniedToken { jti, expires_at } => {
                self.denied.insert(jti.clone(), expires_at);
                RevocationEvent::Jti { jti, cause }
            }
            RevocationRecord::RevokedSession { sid, forget_after } => {
                self.sessions.insert(sid.clone(), forget_after);
                RevocationEvent::Session { sid, cause }
            }
            RevocationRecord::Cutoff(cutoff) => {
                self.raise_cutoff(&cutoff.sub, cutoff.not_before, cutoff.forget_after);
                if cutoff.sub.starts_with("device:") {
                    RevocationEvent::Device {
                        sub: cutoff.sub,
                        cause,
                    }
                } else {
                    RevocationEvent::UserBefore {
                        sub: cutoff.sub,
                        before: cutoff.not_before,
                        cause,
                    }
                }
            }
        }
    }

    fn publish(&self, event: RevocationEvent) {
        // No subscriber yet is fine: nothing is connected that could be affected.
        let _ = self.events.send(event);
    }

    /// Sets a cut-off in memory, never moving an existing one earlier.
    fn raise_cutoff(&self, sub: &str, not_before: i64, forget_after: Option<i64>) -> Cutoff {
        let mut entry = self.cutoffs.entry(sub.to_string()).or_insert(Cutoff {
            not_before,
            forget_after,
        });
        entry.not_before = entry.not_before.max(not_before);
        entry.forget_after = match (entry.forget_after, forget_after) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        *entry
    }

    async fn persist_cutoff(&self, sub: &str, cutoff: Cutoff) -> Result<(), RevocationError> {
        let cutoff = SubjectCutoff {
            sub: sub.to_string(),
            not_before: cutoff.not_before,
            forget_after: cutoff.forget_after,
        };
        let persisted = self.log.record_cutoff(&cutoff).await;
        // Handed on after the log has it, so a node rewriting its whole log includes it.
        self.relay(RevocationRecord::Cutoff(cutoff));
        Ok(persisted?)
    }

    fn cutoff_refuses(&self, sub: &str, issued_at: Option<i64>) -> bool {
        self.cutoffs.get(sub).is_some_and(|cutoff| {
            // A token without `iat` cannot prove it came after the cut-off: refused.
            issued_at.is_none_or(|iat| iat < cutoff.not_before)
        })
    }
}

#[async_trait]
impl RevocationStore for InProcessRevocations {
    /// In memory. Unavailable only while the feed of a shared store is lost, and then only
    /// for tokens not known to be revoked: one atomic load per check.
    async fn check(&self, principal: &Principal) -> Result<RevocationState, StoreUnavailable> {
        let revoked = |why| Ok(RevocationState::Revoked(why));
        if let Some(jti) = &principal.jti {
            if self.denied.contains_key(jti) {
                return revoked(Revoked::Token);
            }
        }
        if let Some(sid) = &principal.sid {
            if self.sessions.contains_key(sid) {
                return revoked(Revoked::Session);
            }
        }
        let owner = principal.owner.as_deref();
        if self.cutoff_refuses(&principal.sub, principal.issued_at)
            || owner.is_some_and(|owner| self.cutoff_refuses(owner, principal.issued_at))
        {
            return revoked(Revoked::Subject);
        }
        let lost = self.lost_relied_on();
        if lost != 0 {
            let feed = if lost & FeedSource::Store.bit() != 0 {
                FeedSource::Store
            } else {
                FeedSource::Cluster
            };
            return Err(StoreUnavailable(format!("{} is lost", feed.describe())));
        }
        Ok(RevocationState::Valid)
    }

    async fn deny_token(
        &self,
        jti: &str,
        expires_at: i64,
        cause: RevocationCause,
    ) -> Result<(), RevocationError> {
        let until = expires_at.saturating_add(self.leeway_secs);
        self.denied.insert(jti.to_string(), until);
        self.publish(RevocationEvent::Jti {
            jti: jti.to_string(),
            cause,
        });
        let persisted = self.log.record_denied_token(jti, until).await;
        self.relay(RevocationRecord::DeniedToken {
            jti: jti.to_string(),
            expires_at: until,
        });
        Ok(persisted?)
    }

    async fn revoke_session(
        &self,
        sid: &str,
        until: i64,
        cause: RevocationCause,
    ) -> Result<(), RevocationError> {
        let until = until.saturating_add(self.leeway_secs);
        self.sessions.insert(sid.to_string(), until);
        self.publish(RevocationEvent::Session {
            sid: sid.to_string(),
            cause,
        });
        let persisted = self.log.record_revoked_session(sid, until).await;
        self.relay(RevocationRecord::RevokedSession {
            sid: sid.to_string(),
            forget_after: until,
        });
        Ok(persisted?)
    }

    async fn revoke_user_before(
        &self,
        sub: &str,
        before: i64,
        cause: RevocationCause,
    ) -> Result<(), RevocationError> {
        // Kept for good: tokens of external issuers may live longer than Signet's.
        let cutoff = self.raise_cutoff(sub, before, None);
        self.publish(RevocationEvent::UserBefore {
            sub: sub.to_string(),
            before,
            cause,
        });
        self.persist_cutoff(sub, cutoff).await
    }

    async fn revoke_device(&self, sub: &str, before: Option<i64>) -> Result<(), RevocationError> {
        let now = unix_now();
        // Only Signet issues device tokens, so the record can go once they have all expired.
        let forget_after = now
            .saturating_add(MAX_ACCESS_TOKEN_LIFETIME_SECS)
            .saturating_add(self.leeway_secs);
        let cutoff = self.raise_cutoff(sub, before.unwrap_or(i64::MAX), Some(forget_after));
        // Removed devices' records would otherwise pile up until the next restart.
        self.cutoffs
            .retain(|_, c| c.forget_after.is_none_or(|forget| forget > now));
        self.publish(RevocationEvent::Device {
            sub: sub.to_string(),
            cause: match before {
                Some(_) => RevocationCause::DeviceRekeyed,
                None => RevocationCause::DeviceRemoved,
            },
        });
        self.persist_cutoff(sub, cutoff).await
    }

    async fn not_before(&self, sub: &str) -> Option<i64> {
        self.cutoffs.get(sub).map(|c| c.not_before)
    }

    fn subscribe(&self) -> broadcast::Receiver<RevocationEvent> {
        self.events.subscribe()
    }

    fn in_sync(&self) -> bool {
        self.lost_relied_on() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn principal(sub: &str, iat: i64) -> Principal {
        Principal {
            sub: sub.into(),
            roles: vec![],
            jti: Some(format!("jti-{sub}-{iat}")),
            sid: Some(format!("sid-{sub}")),
            owner: None,
            name: None,
            issued_at: Some(iat),
            expires_at: unix_now() + 600,
            kid: "k".into(),
        }
    }

    async fn revocations() -> (Arc<SqliteStore>, InProcessRevocations) {
        let store = Arc::new(SqliteStore::open_in_memory().await.unwrap());
        let revocations = InProcessRevocations::load(store.clone(), 0, 16)
            .await
            .unwrap();
        (store, revocations)
    }

    #[tokio::test]
    async fn each_kind_of_revocation_refuses_and_is_published() {
        let (_, r) = revocations().await;
        let mut events = r.subscribe();
        let now = unix_now();
        let a = principal("a", now);
        assert_eq!(r.check(&a).await, Ok(RevocationState::Valid));

        r.deny_token("jti-a-0", now + 60, RevocationCause::Logout)
            .await
            .unwrap();
        assert_eq!(
            r.check(&principal("a", 0)).await,
            Ok(RevocationState::Revoked(Revoked::Token))
        );
        assert_eq!(r.check(&a).await, Ok(RevocationState::Valid));

        r.revoke_session("sid-b", now + 60, RevocationCause::RefreshTokenReused)
            .await
            .unwrap();
        assert_eq!(
            r.check(&principal("b", now)).await,
            Ok(RevocationState::Revoked(Revoked::Session))
        );

        r.revoke_user_before("c", now, RevocationCause::AdminRevoked)
            .await
            .unwrap();
        assert_eq!(
            r.check(&principal("c", now - 1)).await,
            Ok(RevocationState::Revoked(Revoked::Subject))
        );
        assert_eq!(
            r.check(&principal("c", now)).await,
            Ok(RevocationState::Valid)
        );
        let mut device = principal("device:d", now - 1);
        device.owner = Some("c".into());
        device.sid = None;
        assert_eq!(
            r.check(&device).await,
            Ok(RevocationState::Revoked(Revoked::Subject)),
            "owned"
        );
        let mut no_iat = principal("c", now);
        no_iat.issued_at = None;
        assert_eq!(
            r.check(&no_iat).await,
            Ok(RevocationState::Revoked(Revoked::Subject)),
            "no iat"
        );

        r.revoke_device("device:e", None).await.unwrap();
        assert_eq!(
            r.check(&principal("device:e", now + 10)).await,
            Ok(RevocationState::Revoked(Revoked::Subject))
        );

        let expected = [
            RevocationEvent::Jti {
                jti: "jti-a-0".into(),
                cause: RevocationCause::Logout,
            },
            RevocationEvent::Session {
                sid: "sid-b".into(),
                cause: RevocationCause::RefreshTokenReused,
            },
            RevocationEvent::UserBefore {
                sub: "c".into(),
                before: now,
                cause: RevocationCause::AdminRevoked,
            },
            RevocationEvent::Device {
                sub: "device:e".into(),
                cause: RevocationCause::DeviceRemoved,
            },
        ];
        for want in expected {
            assert_eq!(events.recv().await.unwrap(), want);
        }
    }

    #[tokio::test]
    async fn a_cutoff_never_moves_earlier() {
        let (_, r) = revocations().await;
        r.revoke_device("device:x", Some(100)).await.unwrap();
        r.revoke_user_before("device:x", 50, RevocationCause::AdminRevoked)
            .await
            .unwrap();
        assert_eq!(r.not_before("device:x").await, Some(100));
    }

    #[tokio::test]
    async fn revocations_are_reloaded_from_the_log() {
        let (store, r) = revocations().await;
        let now = unix_now();
        r.deny_token("j", now + 60, RevocationCause::Logout)
            .await
            .unwrap();
        r.revoke_session("s", now + 60, RevocationCause::RefreshTokenReused)
            .await
            .unwrap();
        r.revoke_user_before("u", now, RevocationCause::AdminRevoked)
            .await
            .unwrap();
        let reloaded = InProcessRevocations::load(store, 0, 16).await.unwrap();
        let mut p = principal("u", now - 1);
        assert_eq!(
            reloaded.check(&p).await,
            Ok(RevocationState::Revoked(Revoked::Subject))
        );
        p.sub = "v".into();
        p.sid = Some("s".into());
        assert_eq!(
            reloaded.check(&p).await,
            Ok(RevocationState::Revoked(Revoked::Session))
        );
        p.sid = None;
        p.jti = Some("j".into());
        assert_eq!(
            reloaded.check(&p).await,
            Ok(RevocationState::Revoked(Revoked::Token))
        );
    }

    #[tokio::test]
    async fn a_lost_feed_fails_closed_until_it_is_in_sync_again() {
        let (_, r) = revocations().await;
        let now = unix_now();
        r.deny_token("jti-known-0", now + 60, RevocationCause::Logout)
            .await
            .unwrap();
        let mut events = r.subscribe();
        r.follow_feed(FeedSource::Store, FeedEvent::Lost);
        let unavailable = r.check(&principal("a", now)).await;
        assert!(unavailable.is_err(), "{unavailable:?}");
        assert_eq!(
            r.check(&principal("known", 0)).await,
            Ok(RevocationState::Revoked(Revoked::Token)),
            "what is known to be revoked stays revoked"
        );

        // Back in sync with a record written elsewhere meanwhile: in force, then published.
        let snapshot = crate::store::RevocationSnapshot {
            revoked_sessions: vec![("sid-b".into(), now + 60)],
            ..Default::default()
        };
        r.follow_feed(FeedSource::Store, FeedEvent::InSync(snapshot));
        assert_eq!(
            r.check(&principal("a", now)).await,
            Ok(RevocationState::Valid)
        );
        assert_eq!(
            r.check(&principal("b", now)).await,
            Ok(RevocationState::Revoked(Revoked::Session))
        );
        assert_eq!(
            events.recv().await.unwrap(),
            RevocationEvent::Session {
                sid: "sid-b".into(),
                cause: RevocationCause::Recorded,
            }
        );
    }

    #[tokio::test]
    async fn each_feed_counts_alone_and_own_records_are_relayed() {
        #[derive(Default)]
        struct Relayed(std::sync::Mutex<Vec<RevocationRecord>>);
        impl RevocationRelay for Relayed {
            fn relay(&self, record: RevocationRecord) {
                self.0.lock().unwrap().push(record);
            }
        }
        let (_, r) = revocations().await;
        let relayed = Arc::new(Relayed::default());
        r.relay_to(relayed.clone());
        let now = unix_now();
        r.await_feed(FeedSource::Cluster);
        r.follow_feed(FeedSource::Store, FeedEvent::Lost);
        r.follow_feed(FeedSource::Store, FeedEvent::InSync(Default::default()));
        assert!(!r.in_sync(), "the cluster's feed is still awaited");
        assert!(r.check(&principal("a", now)).await.is_err());
        r.follow_feed(FeedSource::Cluster, FeedEvent::InSync(Default::default()));
        assert_eq!(
            r.check(&principal("a", now)).await,
            Ok(RevocationState::Valid)
        );

        // Made here: relayed. Arriving from a feed: in force, not relayed again.
        r.deny_token("mine", now + 60, RevocationCause::Logout)
            .await
            .unwrap();
        a_cluster_record_is_in_force(&r, now).await;
        assert_eq!(
            *relayed.0.lock().unwrap(),
            vec![RevocationRecord::DeniedToken {
                jti: "mine".into(),
                expires_at: now + 60,
            }]
        );
    }

    /// A session revoked on another node, arriving over the cluster's feed, refuses at once.
    async fn a_cluster_record_is_in_force(r: &InProcessRevocations, now: i64) {
        let theirs = RevocationRecord::RevokedSession {
            sid: "sid-b".into(),
            forget_after: now + 60,
        };
        r.follow_feed(FeedSource::Cluster, FeedEvent::Record(theirs));
        assert_eq!(
            r.check(&principal("b", now)).await,
            Ok(RevocationState::Revoked(Revoked::Session))
        );
    }

    #[tokio::test]
    async fn a_redundant_feed_lost_does_not_refuse_tokens_but_still_brings_records() {
        let (_, r) = revocations().await;
        let now = unix_now();
        r.await_feed(FeedSource::Cluster);
        r.redundant_feed(FeedSource::Cluster);
        assert!(r.in_sync(), "the shared store's feed alone decides");
        r.follow_feed(FeedSource::Cluster, FeedEvent::Lost);
        assert_eq!(
            r.check(&principal("a", now)).await,
            Ok(RevocationState::Valid)
        );
        r.follow_feed(FeedSource::Store, FeedEvent::Lost);
        assert!(
            r.check(&principal("a", now)).await.is_err(),
            "the store's feed fails closed"
        );
        r.follow_feed(FeedSource::Store, FeedEvent::InSync(Default::default()));
        a_cluster_record_is_in_force(&r, now).await;
    }

    #[test]
    fn events_match_the_principals_they_may_revoke() {
        let mut p = principal("device:d", 10);
        p.owner = Some("u".into());
        let before = |b| RevocationEvent::UserBefore {
            sub: "u".into(),
            before: b,
            cause: RevocationCause::AdminRevoked,
        };
        assert!(before(11).affects(&p));
        assert!(!before(10).affects(&p));
        assert!(RevocationEvent::Device {
            sub: "device:d".into(),
            cause: RevocationCause::DeviceRekeyed,
        }
        .affects(&p));
        assert!(!RevocationEvent::Jti {
            jti: "other".into(),
            cause: RevocationCause::Logout,
        }
        .affects(&p));
    }
}
