//! The SignalR client side of one hub connection over WebSockets: negotiate (or not), the
//! upgrade with `Authorization: Bearer`, the JSON handshake, then hub messages in text frames.
//!
//! Encoding and decoding are the server's own codecs from `signet_protocol::protocol`; this module
//! only moves their bytes over the socket, answers WebSocket pings, and numbers invocations.

use crate::config::ServerUrl;
use actix_http::ws::Item;
use awc::error::WsClientError;
use awc::ws::{self, Frame};
use awc::BoxedSocket;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use serde_json::Value;
use signet_protocol::protocol::handshake;
use signet_protocol::protocol::{
    HandshakeResponseDecoder, HubMessage, HubMessageDecoder, HubProtocol, ProtocolError,
};
use std::time::Duration;

type Framed = actix_codec::Framed<BoxedSocket, ws::Codec>;

/// Largest hub message accepted from the server, and largest WebSocket frame.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// How long the server has to answer the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// The protocol version asked for: 1, without stateful reconnect, which the device does not use.
const PROTOCOL_VERSION: i32 = 1;

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// 401 from negotiate or the upgrade: the token is expired or revoked.
    #[error("the server refused the access token (401)")]
    Unauthorized,
    /// Another HTTP status from negotiate or the upgrade.
    #[error("the server answered {0}")]
    Status(u16),
    /// The server refused the handshake; it will refuse it again, whatever the retry.
    #[error("the server refused the handshake: {0}")]
    HandshakeRefused(String),
    /// The network, a timeout, or an answer that is not SignalR.
    #[error("{0}")]
    Transport(String),
}

/// Why an open connection failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("WebSocket error: {0}")]
    Socket(String),
    #[error("the server broke the hub protocol: {0}")]
    Protocol(#[from] ProtocolError),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Negotiation {
    connection_token: Option<String>,
    connection_id: Option<String>,
    #[serde(default)]
    available_transports: Vec<AvailableTransport>,
    /// Set by servers that redirect clients elsewhere (Azure SignalR); not supported.
    url: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct AvailableTransport {
    transport: String,
}

/// Opens hub connections. After the handshake a connection is split into its
/// [`HubReceiver`] and [`HubSender`], so the session loop can wait on one while using the other.
pub struct HubConnection;

/// What the receiving half delivers.
#[derive(Debug)]
pub enum Incoming {
    Message(HubMessage),
    /// A WebSocket-level ping, to be answered with [`HubSender::pong`].
    SocketPing(bytes::Bytes),
    /// The server closed the WebSocket.
    Closed,
}

/// The receiving half: frames in, hub messages out, through the server's JSON decoder.
pub struct HubReceiver {
    stream: SplitStream<Framed>,
    decoder: HubMessageDecoder,
}

/// The sending half: hub messages out, with invocation ids.
pub struct HubSender {
    sink: SplitSink<Framed, ws::Message>,
    out: Vec<u8>,
    next_invocation_id: u64,
}

impl HubConnection {
    /// Opens `hub_path` on `server` with `access_token`: negotiate unless `skip_negotiation`,
    /// the WebSocket upgrade, then the JSON handshake. Returns the public connection id (when
    /// negotiated) and the two halves.
    pub async fn connect(
        client: &awc::Client,
        server: &ServerUrl,
        hub_path: &str,
        access_token: &str,
        skip_negotiation: bool,
    ) -> Result<(Option<String>, HubReceiver, HubSender), ConnectError> {
        let hub_url = server.join(hub_path);
        let (url, connection_id) = if skip_negotiation {
            (hub_url, None)
        } else {
            let negotiation = negotiate(client, &hub_url, access_token).await?;
            let token = negotiation
                .connection_token
                .or_else(|| negotiation.connection_id.clone())
                .ok_or_else(|| {
                    ConnectError::Transport("negotiate returned no connection token".into())
                })?;
            (
                format!("{hub_url}?id={}", query_escape(&token)),
                negotiation.connection_id,
            )
        };
        let (_, mut framed) = client
            .ws(url)
            .bearer_auth(access_token)
            .max_frame_size(MAX_MESSAGE_BYTES)
            .connect()
            .await
            .map_err(|error| match error {
                WsClientError::InvalidResponseStatus(status) if status.as_u16() == 401 => {
                    ConnectError::Unauthorized
                }
                WsClientError::InvalidResponseStatus(status) => {
                    ConnectError::Status(status.as_u16())
                }
                other => ConnectError::Transport(crate::tls::explain_connect_error(
                    server.host(),
                    &other,
                )),
            })?;
        let mut decoder = HubProtocol::Json.decoder(MAX_MESSAGE_BYTES);
        tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            perform_handshake(&mut framed, &mut decoder),
        )
        .await
        .map_err(|_| ConnectError::Transport("no handshake response in time".into()))??;
        let (sink, stream) = framed.split();
        Ok((
            connection_id,
            HubReceiver { stream, decoder },
            HubSender {
                sink,
                out: Vec::new(),
                next_invocation_id: 1,
            },
        ))
    }
}

/// Sends the handshake request and reads the response; hub messages that arrived with it are
/// fed to `decoder`.
async fn perform_handshake(
    framed: &mut Framed,
    decoder: &mut HubMessageDecoder,
) -> Result<(), ConnectError> {
    let mut request = Vec::new();
    handshake::encode_request(HubProtocol::Json, PROTOCOL_VERSION, &mut request);
    let closed = || ConnectError::Transport("the connection closed during the handshake".into());
    framed
        .send(ws::Message::Text(
            text(request)
                .map_err(|e| ConnectError::Transport(e.to_string()))?
                .into(),
        ))
        .await
        .map_err(|error| ConnectError::Transport(error.to_string()))?;
    let mut response = HandshakeResponseDecoder::new(MAX_MESSAGE_BYTES);
    loop {
        let bytes = match framed.next().await {
            Some(Ok(frame)) => match frame {
                Frame::Text(bytes)
                | Frame::Continuation(
                    Item::FirstText(bytes) | Item::Continue(bytes) | Item::Last(bytes),
                ) => bytes,
                Frame::Ping(payload) => {
                    let _ = framed.send(ws::Message::Pong(payload)).await;
                    continue;
                }
                Frame::Pong(_) => continue,
                Frame::Close(_) => return Err(closed()),
                Frame::Binary(_) | Frame::Continuation(Item::FirstBinary(_)) => {
                    return Err(ConnectError::Transport(
                        "a binary frame during the JSON handshake".into(),
                    ))
                }
            },
            Some(Err(error)) => return Err(ConnectError::Transport(error.to_string())),
            None => return Err(closed()),
        };
        match response.feed(&bytes) {
            Ok(None) => continue,
            Ok(Some(done)) => {
                if let Some(error) = done.error {
                    return Err(ConnectError::HandshakeRefused(error));
                }
                return decoder
                    .feed(&done.remaining)
                    .map_err(|error| ConnectError::Transport(error.to_string()));
            }
            Err(error) => return Err(ConnectError::Transport(error.to_string())),
        }
    }
}

impl HubReceiver {
    /// The next hub message or socket event.
    ///
    /// Cancel-safe: a frame read is fed to the decoder before anything else can happen, and
    /// messages not yet returned wait in the decoder for the next call.
    pub async fn next(&mut self) -> Result<Incoming, LinkError> {
        loop {
            match self.decoder.next_message() {
                Some(Ok(message)) => return Ok(Incoming::Message(message)),
                // A framing failure (oversized message) leaves the stream unreadable.
                Some(Err(error)) if error.is_framing() => return Err(error.into()),
                Some(Err(error)) => {
                    tracing::warn!(%error, "skipped a hub message the device cannot read");
                    continue;
                }
                None => {}
            }
            let frame = match self.stream.next().await {
                Some(Ok(frame)) => frame,
                Some(Err(error)) => return Err(LinkError::Socket(error.to_string())),
                None => return Ok(Incoming::Closed),
            };
            match frame {
                Frame::Text(bytes)
                | Frame::Continuation(
                    Item::FirstText(bytes) | Item::Continue(bytes) | Item::Last(bytes),
                ) => self.decoder.feed(&bytes)?,
                Frame::Ping(payload) => return Ok(Incoming::SocketPing(payload)),
                Frame::Pong(_) => {}
                Frame::Close(reason) => {
                    tracing::debug!(?reason, "the server closed the WebSocket");
                    return Ok(Incoming::Closed);
                }
                Frame::Binary(_) | Frame::Continuation(Item::FirstBinary(_)) => {
                    return Err(LinkError::Protocol(ProtocolError::InvalidJson(
                        "a binary frame on a JSON connection".into(),
                    )))
                }
            }
        }
    }
}

impl HubSender {
    /// Sends a hub message.
    pub async fn send(&mut self, message: &HubMessage) -> Result<(), LinkError> {
        self.out.clear();
        HubProtocol::Json.encode(message, &mut self.out)?;
        let bytes = std::mem::take(&mut self.out);
        self.send_text(bytes).await
    }

    /// Calls `target` on the hub with an invocation id, so the server answers with a
    /// Completion; returns the id.
    pub async fn invoke(
        &mut self,
        target: &str,
        arguments: Vec<Value>,
    ) -> Result<String, LinkError> {
        let id = self.next_invocation_id.to_string();
        self.next_invocation_id += 1;
        self.send(&HubMessage::Invocation {
            headers: Default::default(),
            invocation_id: Some(id.clone()),
            target: target.to_string(),
            arguments,
            stream_ids: Vec::new(),
        })
        .await?;
        Ok(id)
    }

    /// A hub-level keep-alive Ping.
    pub async fn ping(&mut self) -> Result<(), LinkError> {
        self.send_text(HubProtocol::Json.ping_frame().to_vec())
            .await
    }

    /// Answers a WebSocket-level ping.
    pub async fn pong(&mut self, payload: bytes::Bytes) -> Result<(), LinkError> {
        self.sink
            .send(ws::Message::Pong(payload))
            .await
            .map_err(|error| LinkError::Socket(error.to_string()))
    }

    /// Closes the WebSocket with a normal close; errors are moot at this point.
    pub async fn close(mut self) {
        let reason = ws::CloseReason {
            code: ws::CloseCode::Normal,
            description: None,
        };
        let _ = self.sink.send(ws::Message::Close(Some(reason))).await;
        let _ = self.sink.close().await;
    }

    async fn send_text(&mut self, bytes: Vec<u8>) -> Result<(), LinkError> {
        let text = text(bytes)?;
        self.sink
            .send(ws::Message::Text(text.into()))
            .await
            .map_err(|error| LinkError::Socket(error.to_string()))
    }
}

/// The JSON protocol's output and the handshake are UTF-8 by construction; checked anyway,
/// since a text frame must be.
fn text(bytes: Vec<u8>) -> Result<String, LinkError> {
    String::from_utf8(bytes)
        .map_err(|_| LinkError::Socket("an outgoing message is not UTF-8".into()))
}

/// `POST {hub}/negotiate?negotiateVersion=1` with the bearer token.
async fn negotiate(
    client: &awc::Client,
    hub_url: &str,
    access_token: &str,
) -> Result<Negotiation, ConnectError> {
    let mut response = client
        .post(format!("{hub_url}/negotiate?negotiateVersion=1"))
        .bearer_auth(access_token)
        .send()
        .await
        .map_err(|error| ConnectError::Transport(format!("negotiate: {error}")))?;
    match response.status().as_u16() {
        200 => {}
        401 => return Err(ConnectError::Unauthorized),
        status => return Err(ConnectError::Status(status)),
    }
    let body = response
        .body()
        .limit(MAX_MESSAGE_BYTES)
        .await
        .map_err(|error| ConnectError::Transport(format!("negotiate: {error}")))?;
    let negotiation: Negotiation = serde_json::from_slice(&body)
        .map_err(|error| ConnectError::Transport(format!("negotiate answer: {error}")))?;
    if let Some(error) = negotiation.error {
        return Err(ConnectError::Transport(format!("negotiate: {error}")));
    }
    if negotiation.url.is_some() {
        return Err(ConnectError::Transport(
            "negotiate redirected to another service, which this device does not follow".into(),
        ));
    }
    if !negotiation
        .available_transports
        .iter()
        .any(|t| t.transport == "WebSockets")
    {
        return Err(ConnectError::Transport(
            "the server offers no WebSockets transport".into(),
        ));
    }
    Ok(negotiation)
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_connection_tokens() {
        assert_eq!(query_escape("AbC-_09"), "AbC-_09");
        assert_eq!(query_escape("a+b/c="), "a%2Bb%2Fc%3D");
    }
}
