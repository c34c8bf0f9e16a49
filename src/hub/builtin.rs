//! Methods every hub has, whatever its application.

use super::{bind, Call, HubBuilder, HubError, HubServices, MethodResult, MethodSpec, Param};
use serde_json::{json, Value};

pub(super) fn register(builder: HubBuilder, services: &HubServices) -> HubBuilder {
    let services = services.clone();
    builder.method(
        MethodSpec::new("RefreshToken", &[Param::String]),
        move |call, args| refresh_token(services.clone(), call, args),
    )
}

/// `RefreshToken(token)`: moves the connection onto a fresh token of the same principal, so it
/// stays open past the old token's expiry. Its expiry and roles become the new token's. A
/// refusal reads `<code>: <text>`, the `error` and `message` `POST /hubs/{hub}/refresh` answers.
async fn refresh_token(services: HubServices, call: Call, args: Vec<Value>) -> MethodResult {
    let (token,): (String,) = bind(args)?;
    let lifetime = crate::connection::refresh(
        &services.auth,
        &services.connections,
        Some(call.connection.as_ref()),
        &token,
        "hub",
    )
    .await
    .map_err(|err| HubError::hub(format!("{}: {err}", err.code())))?;
    Ok(Some(json!({ "tokenLifetimeSeconds": lifetime })))
}
