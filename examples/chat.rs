//! A chat server on Signet: one hub, `chat`, with rooms.
//!
//! Clients connect to `/hubs/chat` with a token (Signet's own login, `POST /api/auth/login`,
//! or one from the configured issuer) and call:
//!
//! - `JoinRoom(room)`, `LeaveRoom(room)`: the calling connection enters or leaves a room;
//! - `SendToRoom(room, text)`: `Message({room, from, text})` to every connection in the room;
//! - `SendToAll(text)`: `Message({room: null, from, text})` to every connection;
//! - `SendToUser(sub, text)`: `Message({room: null, from, text, private: true})` to every
//!   connection of that user;
//! - `Announce(text)` (role `admin` only): `Announcement(text)` to every connection.
//!
//! Everyone else is told `UserJoined(sub)` when a connection opens and `UserLeft(sub)` when it
//! ends.
//!
//! Run it with `cargo run --example chat [config.toml]`; the configuration is Signet's
//! (`config.toml`, `SIGNET__SECTION__KEY` variables), see the README.

use serde_json::{json, Value};
use signet::{bind, Call, HubBuilder, HubError, MethodResult, MethodSpec, Param, Server};
use std::path::PathBuf;

/// Longest room name: the room is a group name every node keeps, so the hub bounds it.
const MAX_ROOM_CHARS: usize = 64;

/// The chat hub's methods and hooks, declared on the builder the server made.
pub fn chat_hub(hub: HubBuilder) -> HubBuilder {
    hub.method(MethodSpec::new("JoinRoom", &[Param::String]), join_room)
        .method(MethodSpec::new("LeaveRoom", &[Param::String]), leave_room)
        .method(
            MethodSpec::new("SendToRoom", &[Param::String, Param::String]),
            send_to_room,
        )
        .method(MethodSpec::new("SendToAll", &[Param::String]), send_to_all)
        .method(
            MethodSpec::new("SendToUser", &[Param::String, Param::String]),
            send_to_user,
        )
        .method(
            MethodSpec::new("Announce", &[Param::String]).roles(&["admin"]),
            announce,
        )
        .on_connected(|call| presence(call, "UserJoined"))
        .on_disconnected(|call| presence(call, "UserLeft"))
}

/// A room name the client chose, checked before it becomes a group.
fn room(name: String) -> Result<String, HubError> {
    if name.is_empty() || name.chars().count() > MAX_ROOM_CHARS {
        return Err(HubError::hub(format!(
            "a room name is 1 to {MAX_ROOM_CHARS} characters"
        )));
    }
    Ok(name)
}

async fn join_room(call: Call, args: Vec<Value>) -> MethodResult {
    let (name,): (String,) = bind(args)?;
    let room = room(name)?;
    // Refused (a HubException for the caller) past `[hub] max_groups_per_connection`.
    call.clients
        .add_to_group(call.connection_id(), &room)
        .await
        .map_err(|err| HubError::hub(err.to_string()))?;
    Ok(None)
}

async fn leave_room(call: Call, args: Vec<Value>) -> MethodResult {
    let (name,): (String,) = bind(args)?;
    let room = room(name)?;
    call.clients
        .remove_from_group(call.connection_id(), &room)
        .await
        .map_err(HubError::internal)?;
    Ok(None)
}

async fn send_to_room(call: Call, args: Vec<Value>) -> MethodResult {
    let (name, text): (String, String) = bind(args)?;
    let room = room(name)?;
    let message = json!({ "room": room, "from": call.principal.sub, "text": text });
    call.clients
        .group(&room, "Message", vec![message])
        .await
        .map_err(HubError::internal)?;
    Ok(None)
}

async fn send_to_all(call: Call, args: Vec<Value>) -> MethodResult {
    let (text,): (String,) = bind(args)?;
    let message = json!({ "room": null, "from": call.principal.sub, "text": text });
    call.clients
        .all("Message", vec![message])
        .await
        .map_err(HubError::internal)?;
    Ok(None)
}

async fn send_to_user(call: Call, args: Vec<Value>) -> MethodResult {
    let (to, text): (String, String) = bind(args)?;
    let message = json!({
        "room": null,
        "from": call.principal.sub,
        "text": text,
        "private": true,
    });
    call.clients
        .user(&to, "Message", vec![message])
        .await
        .map_err(HubError::internal)?;
    Ok(None)
}

async fn announce(call: Call, args: Vec<Value>) -> MethodResult {
    let (text,): (String,) = bind(args)?;
    call.clients
        .all("Announcement", vec![Value::String(text)])
        .await
        .map_err(HubError::internal)?;
    Ok(None)
}

/// Tells every other connection of the hub that this one's user came or went.
async fn presence(call: Call, target: &'static str) {
    let others = [call.connection_id().to_string()];
    let sub = Value::String(call.principal.sub.clone());
    if let Err(err) = call.clients.all_except(target, vec![sub], &others).await {
        tracing::warn!(error = %err, target, "presence not sent");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The configuration file named on the command line, if any; `SIGNET__...` variables win.
    let path = std::env::args_os().nth(1).map(PathBuf::from);
    let settings = signet::settings::load(path.as_deref(), std::env::vars())?;
    signet::init_logging(&settings)?;
    Server::new(settings).hub("chat", chat_hub).run()?;
    Ok(())
}
