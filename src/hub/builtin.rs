//! Methods every hub has, whatever its application.

use super::{bind, Call, HubBuilder, HubError, HubServices, MethodResult, MethodSpec, Param};
use crate::auth::issue::unix_now;
use crate::connection::RefreshError;
use serde_json::{json, Value};

pub(super) fn register(builder: HubBuilder, services: &HubServices) -> HubBuilder {
    let services = services.clone();
    builder.method(
        MethodSpec::new("RefreshToken", &[Param::String]),
        move |call, args| refresh_token(services.clone(), call, args),
    )
}

/// `RefreshToken(token)`: moves the connection onto a fresh token of the same principal, so it
/// stays open past the old token's expiry. Its expiry and roles become the new token's.
async fn refresh_token(services: HubServices, call: Call, args: Vec<Value>) -> MethodResult {
    let (token,): (String,) = bind(args)?;
    let principal = services.auth.authenticate(&token).await.map_err(|err| {
        tracing::debug!(reason = err.code(), "in-band refresh refused");
        HubError::hub("invalid_token: the new token is not valid")
    })?;
    match services
        .connections
        .refresh(&call.connection, principal, unix_now())
    {
        Ok(_) if !crate::connection::admit(&services.auth, &call.connection).await => Err(
            HubError::hub("invalid_token: the new token was revoked; the connection is closed"),
        ),
        Ok(lifetime) => {
            tracing::info!(target: "audit", event = "token_refreshed", via = "hub", sub = %call.principal.sub, connection = %call.connection.log_id(), "connection token refreshed");
            Ok(Some(json!({ "tokenLifetimeSeconds": lifetime })))
        }
        Err(RefreshError::UserMismatch) => Err(HubError::hub(
            "user_mismatch: the new token belongs to another user",
        )),
        Err(RefreshError::Closed) => Err(HubError::hub("the connection is closed")),
    }
}
