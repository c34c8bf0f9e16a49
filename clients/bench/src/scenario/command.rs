//! `command`: users sending signed commands to their devices through the hub and back
//! (`SendCommand`, `Command`, `CommandResult`). Those methods come with the device issue; until a
//! server has them this scenario asks the server and reports that it is not available there.

use super::{Outcome, Target, TargetKind, CALL_TIMEOUT};
use crate::client::{bounded, Client};
use serde_json::json;
use signet::protocol::CompletionResult;

pub async fn run(target: &Target) -> Result<Outcome, String> {
    if target.kind == TargetKind::Baseline {
        return Ok(unavailable("the baseline server has no hub methods"));
    }
    let identities = target.identities("user", 1, &["user"])?;
    let mut established = target.establish(identities).await;
    let Some((Client::Hub(mut hub), _)) = established.connections.pop() else {
        return Err(format!(
            "could not connect: {}",
            established.first_error.unwrap_or_default()
        ));
    };
    // An empty object is not a valid envelope, so a server that has the method refuses it
    // without acting on anything; one that does not have it says so.
    let probe = bounded(
        CALL_TIMEOUT,
        hub.invoke("probe", "SendCommand", vec![json!({})]),
    )
    .await;
    hub.close().await;
    match probe {
        Ok(CompletionResult::Error(text)) if text.starts_with("Unknown hub method") => Ok(
            unavailable("not available on this server: it has no SendCommand hub method (issue 7)"),
        ),
        Ok(_) => Ok(unavailable(
            "this server has SendCommand, but this load generator does not drive devices yet",
        )),
        Err(err) => Err(format!("probing SendCommand failed: {err}")),
    }
}

fn unavailable(reason: &str) -> Outcome {
    Outcome {
        figures: json!({ "available": false, "reason": reason }),
        headline: None,
        summary: format!("command: {reason}"),
    }
}
