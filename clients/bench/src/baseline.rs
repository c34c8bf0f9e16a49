//! The baseline: the least a WebSocket server on Signet's stack (actix-web, actix-ws) can do,
//! with no SignalR protocol, no authentication and no negotiate, so that the same load generator
//! measures the cost of everything Signet adds as a ratio.
//!
//! `GET /ws` upgrades. Every data frame a client sends is echoed back to it, except a frame whose
//! payload starts with `!`, which goes to every connection (the sender included). Fan-out follows
//! Signet's design so the ratio isolates the protocol: each connection has a bounded queue drained
//! by its own writer task, a broadcast shares one buffer and never waits (`try_send`), and a
//! connection whose queue is full is closed.

use actix_web::dev::Server;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_ws::Message;
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc;

/// Frames queued per connection, as Signet's `hub.outbound_queue_messages` default.
const QUEUE_FRAMES: usize = 1024;
/// Largest frame accepted, as Signet's (4 × `hub.max_message_bytes`).
const MAX_FRAME_BYTES: usize = 128 * 1024;
/// The first byte of a frame to broadcast.
pub const BROADCAST_MARKER: u8 = b'!';

#[derive(Clone)]
enum Frame {
    Text(bytestring::ByteString),
    Binary(Bytes),
}

#[derive(Default)]
struct Connections {
    next_id: AtomicU64,
    queues: RwLock<HashMap<u64, mpsc::Sender<Frame>>>,
}

impl Connections {
    fn add(&self, queue: mpsc::Sender<Frame>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut queues) = self.queues.write() {
            queues.insert(id, queue);
        }
        id
    }

    fn remove(&self, id: u64) {
        if let Ok(mut queues) = self.queues.write() {
            queues.remove(&id);
        }
    }

    /// Queues `frame` on every connection without waiting; a full queue drops that connection's
    /// sender, which ends its writer and so the connection.
    fn broadcast(&self, frame: &Frame) {
        let mut full = Vec::new();
        if let Ok(queues) = self.queues.read() {
            for (id, queue) in queues.iter() {
                if let Err(mpsc::error::TrySendError::Full(_)) = queue.try_send(frame.clone()) {
                    full.push(*id);
                }
            }
        }
        for id in full {
            self.remove(id);
        }
    }
}

/// Binds the baseline server on `listen` (port 0 allowed) with `workers` threads; returns the
/// bound address and the server to run on an actix system.
pub fn bind(listen: SocketAddr, workers: usize) -> std::io::Result<(SocketAddr, Server)> {
    let listener = TcpListener::bind(listen)?;
    let address = listener.local_addr()?;
    let connections = web::Data::new(Connections::default());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(connections.clone())
            .route("/ws", web::get().to(websocket))
    })
    .workers(workers.max(1))
    // As Signet: small frames written back to back must not wait for delayed ACKs.
    .tcp_nodelay(true)
    .max_connections(1_000_000)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok((address, server))
}

async fn websocket(
    req: HttpRequest,
    body: web::Payload,
    connections: web::Data<Connections>,
) -> actix_web::Result<HttpResponse> {
    let (response, session, stream) = actix_ws::handle(&req, body)?;
    let (queue, mut queued) = mpsc::channel::<Frame>(QUEUE_FRAMES);
    let id = connections.add(queue);
    let mut writer = session.clone();
    actix_web::rt::spawn(async move {
        while let Some(frame) = queued.recv().await {
            let sent = match frame {
                Frame::Text(text) => writer.text(text).await,
                Frame::Binary(bytes) => writer.binary(bytes).await,
            };
            if sent.is_err() {
                break;
            }
        }
        let _ = writer.close(None).await;
    });
    let connections = Arc::clone(&connections.into_inner());
    let mut session = session;
    let mut stream = stream.max_frame_size(MAX_FRAME_BYTES);
    actix_web::rt::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            let echoed = match message {
                Message::Text(text) if text.as_bytes().first() == Some(&BROADCAST_MARKER) => {
                    connections.broadcast(&Frame::Text(text));
                    Ok(())
                }
                Message::Binary(bytes) if bytes.first() == Some(&BROADCAST_MARKER) => {
                    connections.broadcast(&Frame::Binary(bytes));
                    Ok(())
                }
                Message::Text(text) => session.text(text).await,
                Message::Binary(bytes) => session.binary(bytes).await,
                Message::Ping(bytes) => session.pong(&bytes).await,
                Message::Close(_) => break,
                _ => Ok(()),
            };
            if echoed.is_err() {
                break;
            }
        }
        connections.remove(id);
    });
    Ok(response)
}
