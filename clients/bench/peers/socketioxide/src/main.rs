//! socketioxide as a peer of Signet in `signet-bench`: the Socket.IO events the generator's
//! scenarios send, with socketioxide's default configuration (Engine.IO v4, Socket.IO v5,
//! WebSocket and polling transports, ping every 25 s) on tokio's default multi-thread runtime
//! (one worker per core, as Signet's `server.workers`).
//!
//! - `echo`: acknowledges with its argument (Signet's `Echo`).
//! - `broadcast`: re-emits its argument as `message` to every socket of the namespace, the sender
//!   included, then acknowledges (Signet's `BroadcastMessage` -> `SystemMessage`).
//!
//! `signet-peer-socketioxide [ADDRESS]` listens on ADDRESS (default 127.0.0.1:0) and prints
//! `listening on IP:PORT` as its first line, which is how `signet-bench --peer` learns the port.

use serde_json::Value;
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide::SocketIo;
use std::io::Write;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_string());
    let (layer, io) = SocketIo::new_layer();
    let everyone = io.clone();
    io.ns("/", move |socket: SocketRef| {
        let everyone = everyone.clone();
        async move {
            socket.on("echo", |Data::<Value>(data), ack: AckSender| async move {
                let _ = ack.send(&data);
            });
            socket.on(
                "broadcast",
                move |Data::<Value>(data), ack: AckSender| async move {
                    // A socket whose buffer is full is skipped by socketioxide; the generator
                    // counts the deliveries that arrive.
                    let _ = everyone.emit("message", &data).await;
                    let _ = ack.send(&());
                },
            );
        }
    });
    let app = axum::Router::new().layer(layer);
    let listener = tokio::net::TcpListener::bind(&address).await?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {}", listener.local_addr()?)?;
    stdout.flush()?;
    axum::serve(listener, app).await
}
