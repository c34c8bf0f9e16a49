//! A hub with a signed method: `payments`, whose `Pay` runs only on a signed envelope.
//!
//! A method declared `.signed()` takes one argument, an envelope (docs/envelope.md): the
//! command as JSON text, signed with the caller's session message key (given with the login
//! answer), bound to the hub path and the method name, short-lived and accepted once. The
//! server verifies it before the handler runs; the handler receives the verified command.
//! A stolen token alone cannot pay, and a captured envelope cannot be replayed, sent later or
//! sent to another method.
//!
//! - `Pay(envelope)` (roles `user`, `admin`): the envelope's command is
//!   `{"to": "<sub>", "amountCents": <integer>}`; answers `{"paid", "to", "by"}` and tells the
//!   payee `Paid({from, amountCents})`.
//!
//! Run it with `cargo run --example signed [config.toml]`.

use serde::Deserialize;
use serde_json::{json, Value};
use signet::{Call, HubBuilder, HubError, MethodResult, MethodSpec, Param, Server};
use std::path::PathBuf;

const PAYERS: &[&str] = &["user", "admin"];

/// Largest amount one payment may move: a rule of this application.
const MAX_AMOUNT_CENTS: u64 = 1_000_000;

/// The signed command of `Pay`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Payment {
    to: String,
    amount_cents: u64,
}

/// The payments hub: `Pay` is declared signed, so the server verifies the envelope (its
/// signature with the caller's session key, hub path, method, lifetime and nonce) first.
pub fn payments_hub(hub: HubBuilder) -> HubBuilder {
    hub.method(
        MethodSpec::new("Pay", &[Param::Object])
            .roles(PAYERS)
            .signed(),
        pay,
    )
}

async fn pay(call: Call, args: Vec<Value>) -> MethodResult {
    // The verified command, parsed from the envelope's signed `message`.
    let command = args.into_iter().next().unwrap_or(Value::Null);
    let payment: Payment = serde_json::from_value(command)
        .map_err(|err| HubError::hub(format!("invalid payment: {err}")))?;
    if payment.amount_cents == 0 || payment.amount_cents > MAX_AMOUNT_CENTS {
        return Err(HubError::hub(format!(
            "amountCents must be 1 to {MAX_AMOUNT_CENTS}"
        )));
    }
    let by = call.principal.sub.clone();
    call.clients
        .user(
            &payment.to,
            "Paid",
            vec![json!({ "from": by, "amountCents": payment.amount_cents })],
        )
        .await
        .map_err(HubError::internal)?;
    Ok(Some(json!({
        "paid": payment.amount_cents,
        "to": payment.to,
        "by": by,
    })))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The configuration file named on the command line, if any; `SIGNET__...` variables win.
    let path = std::env::args_os().nth(1).map(PathBuf::from);
    let settings = signet::settings::load(path.as_deref(), std::env::vars())?;
    signet::init_logging(&settings)?;
    Server::new(settings).hub("payments", payments_hub).run()?;
    Ok(())
}
