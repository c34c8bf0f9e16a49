//! Connecting the way a SignalR client does, cheaply enough to hold tens of thousands at once.
//!
//! A hub connection is: a TCP connection from one of several loopback source addresses (each
//! has its own ~28,000 ephemeral ports, so one address would cap a run near that), `POST
//! {hub}/negotiate?negotiateVersion=1` with the bearer token, the WebSocket upgrade with the
//! returned `connectionToken` on the same keep-alive connection, then the SignalR handshake.
//! Messages are encoded and decoded with Signet's own codecs (`signet_protocol::protocol`).
//!
//! A raw connection (the baseline server) is only the TCP connection and the upgrade.

use crate::socketio::SocketIoClient;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::Value;
use signet_protocol::protocol::handshake::{self, HandshakeResponseDecoder};
use signet_protocol::protocol::{CompletionResult, HubMessage, HubMessageDecoder, HubProtocol};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

/// Largest hub message the generator accepts from the server.
const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Largest negotiate response head the generator reads.
const MAX_HEAD_BYTES: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("negotiate answered {status}: {body}")]
    Negotiate { status: u16, body: String },
    #[error("unexpected response: {0}")]
    BadResponse(String),
    #[error("websocket: {0}")]
    WebSocket(#[from] tungstenite::Error),
    #[error("handshake refused: {0}")]
    Handshake(String),
    #[error("protocol: {0}")]
    Protocol(#[from] signet_protocol::protocol::ProtocolError),
    #[error("the server closed the connection{}", .0.as_deref().map(|e| format!(": {e}")).unwrap_or_default())]
    Closed(Option<String>),
    #[error("the server answered: {0}")]
    Refused(String),
    #[error("timed out")]
    Timeout,
}

/// Where a server listens and the path of the hub (or the baseline's `/ws`).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `host:port` for the `Host` header and the WebSocket URL.
    pub authority: String,
    pub path: String,
}

impl Endpoint {
    /// `url` is `http://host:port` (a path after it is ignored); `path` is e.g. `/hubs/home`.
    pub fn new(url: &str, path: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("ws://"))
            .ok_or_else(|| format!("`{url}`: only http:// (or ws://) URLs are supported"))?;
        let authority = rest.split('/').next().unwrap_or(rest).to_string();
        let addr = authority
            .to_socket_addrs()
            .map_err(|e| format!("`{authority}`: {e}"))?
            .next()
            .ok_or_else(|| format!("`{authority}` resolves to no address"))?;
        Ok(Self {
            addr,
            authority,
            path: path.to_string(),
        })
    }
}

/// Loopback source addresses, 127.0.0.1 up to 127.0.0.`count`, used round robin.
#[derive(Debug, Clone)]
pub struct SourceAddrs(Vec<IpAddr>);

impl SourceAddrs {
    pub fn loopback(count: u8) -> Self {
        Self(
            (1..=count.max(1))
                .map(|last| IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
                .collect(),
        )
    }

    pub fn for_index(&self, index: usize) -> IpAddr {
        self.0[index % self.0.len()]
    }
}

fn ws_config() -> WebSocketConfig {
    // tungstenite allocates its read buffer eagerly (128 KiB by default): far too much for tens
    // of thousands of connections. Writes go out at once; every send is flushed anyway.
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_MESSAGE_BYTES))
}

pub(crate) async fn tcp_connect(endpoint: &Endpoint, source: IpAddr) -> std::io::Result<TcpStream> {
    let socket = match endpoint.addr {
        SocketAddr::V4(_) => {
            let socket = TcpSocket::new_v4()?;
            if endpoint.addr.ip().is_loopback() {
                socket.bind(SocketAddr::new(source, 0))?;
            }
            socket
        }
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    let stream = socket.connect(endpoint.addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One HTTP/1.1 request on `stream` and its response (status and body), leaving the connection
/// open: negotiate is followed by the upgrade on the same connection, as keep-alive allows.
async fn http_exchange(
    stream: &mut TcpStream,
    authority: &str,
    method: &str,
    target: &str,
    bearer: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, Vec<u8>), ClientError> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!("{method} {target} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(token) = bearer {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let head_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(ClientError::Closed(None));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(ClientError::BadResponse("response head too large".into()));
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| ClientError::BadResponse("no status line".into()))?;
    let header = |wanted: &str| {
        head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case(wanted)
                .then(|| value.trim().to_ascii_lowercase())
        })
    };
    // Some servers (aiohttp, under the aiosignalr peer) answer negotiate in chunks.
    if header("transfer-encoding").is_some_and(|value| value.contains("chunked")) {
        let mut body = buf.split_off(head_end);
        loop {
            if let Some(decoded) = dechunk(&body)? {
                return Ok((status, decoded));
            }
            if body.len() > MAX_HEAD_BYTES {
                return Err(ClientError::BadResponse("response body too large".into()));
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(ClientError::Closed(None));
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    let length = header("content-length")
        .and_then(|value| value.parse::<usize>().ok())
        .unwrap_or(0);
    if length > MAX_HEAD_BYTES {
        return Err(ClientError::BadResponse("response body too large".into()));
    }
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(ClientError::Closed(None));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok((status, buf[head_end..head_end + length].to_vec()))
}

/// The body of a chunked response once all of it (up to the last, empty chunk and the blank
/// line after it) is in `data`; `None` while more is needed.
fn dechunk(data: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
    let bad = |what: &str| ClientError::BadResponse(format!("chunked body: {what}"));
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(line_end) = data[at..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&data[at..at + line_end]).map_err(|_| bad("size line"))?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("size"))?;
        if size > MAX_HEAD_BYTES {
            return Err(bad("chunk too large"));
        }
        at += line_end + 2;
        if size == 0 {
            // No trailers are expected: the blank line ends the body.
            return Ok(data[at..].starts_with(b"\r\n").then_some(body));
        }
        if data.len() < at + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&data[at..at + size]);
        at += size + 2;
    }
}

/// `POST {path}/negotiate?negotiateVersion=1` on `stream`; returns the connection token.
async fn negotiate(
    stream: &mut TcpStream,
    endpoint: &Endpoint,
    token: &str,
) -> Result<String, ClientError> {
    let target = format!("{}/negotiate?negotiateVersion=1", endpoint.path);
    let (status, body) = http_exchange(
        stream,
        &endpoint.authority,
        "POST",
        &target,
        Some(token),
        None,
    )
    .await?;
    if status != 200 {
        return Err(ClientError::Negotiate {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    #[derive(Deserialize)]
    struct Negotiated {
        #[serde(rename = "connectionToken")]
        connection_token: String,
    }
    let negotiated: Negotiated = serde_json::from_slice(&body)
        .map_err(|e| ClientError::BadResponse(format!("negotiate body: {e}")))?;
    Ok(negotiated.connection_token)
}

/// A JSON request to the REST API (`/api/...`) on a connection of its own; returns the status
/// and the body as JSON (`null` when empty or not JSON).
pub async fn api_request(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, Value), ClientError> {
    let mut stream = tcp_connect(endpoint, IpAddr::V4(Ipv4Addr::LOCALHOST)).await?;
    let (status, body) =
        http_exchange(&mut stream, &endpoint.authority, method, path, bearer, body).await?;
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

pub(crate) async fn upgrade(
    stream: TcpStream,
    endpoint: &Endpoint,
    query: Option<String>,
    bearer: Option<&str>,
) -> Result<WebSocketStream<TcpStream>, ClientError> {
    let url = match query {
        Some(query) => format!("ws://{}{}?{query}", endpoint.authority, endpoint.path),
        None => format!("ws://{}{}", endpoint.authority, endpoint.path),
    };
    let mut request = url.into_client_request()?;
    if let Some(token) = bearer {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| ClientError::BadResponse("token is not a header value".into()))?;
        request.headers_mut().insert(header::AUTHORIZATION, value);
    }
    let (ws, _response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config())).await?;
    Ok(ws)
}

/// A SignalR hub connection after a successful handshake.
pub struct HubClient {
    ws: WebSocketStream<TcpStream>,
    protocol: HubProtocol,
    decoder: HubMessageDecoder,
}

/// The payload of the next text or binary frame (other frames skipped); a Close frame or the
/// end of the stream is [`ClientError::Closed`].
async fn next_payload(ws: &mut WebSocketStream<TcpStream>) -> Result<Bytes, ClientError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(Bytes::from(text)),
            Some(Ok(Message::Binary(bytes))) => return Ok(bytes),
            Some(Ok(Message::Close(_))) | None => return Err(ClientError::Closed(None)),
            Some(Ok(_)) => {}
            Some(Err(err)) => return Err(err.into()),
        }
    }
}

impl HubClient {
    /// Negotiates (unless `skip_negotiation`), upgrades and completes the handshake.
    pub async fn connect(
        endpoint: &Endpoint,
        source: IpAddr,
        token: &str,
        protocol: HubProtocol,
        skip_negotiation: bool,
    ) -> Result<Self, ClientError> {
        let mut stream = tcp_connect(endpoint, source).await?;
        let query = if skip_negotiation {
            None
        } else {
            Some(format!(
                "id={}",
                negotiate(&mut stream, endpoint, token).await?
            ))
        };
        let mut ws = upgrade(stream, endpoint, query, Some(token)).await?;
        // The handshake request is always JSON text, whatever the protocol.
        let mut request = Vec::new();
        handshake::encode_request(protocol, 1, &mut request);
        let request = Utf8Bytes::try_from(request)
            .map_err(|_| ClientError::BadResponse("handshake request is not UTF-8".into()))?;
        ws.send(Message::Text(request)).await?;
        let mut response = HandshakeResponseDecoder::new(MAX_MESSAGE_BYTES);
        loop {
            let answered = response.feed(&next_payload(&mut ws).await?);
            let Some(answer) = answered.map_err(|e| ClientError::Handshake(e.to_string()))? else {
                continue;
            };
            if let Some(error) = answer.error {
                return Err(ClientError::Handshake(error));
            }
            let mut decoder = protocol.decoder(MAX_MESSAGE_BYTES);
            if !answer.remaining.is_empty() {
                decoder.feed(&answer.remaining)?;
            }
            return Ok(Self {
                ws,
                protocol,
                decoder,
            });
        }
    }

    pub async fn send(&mut self, message: &HubMessage) -> Result<(), ClientError> {
        let mut out = Vec::with_capacity(128);
        self.protocol.encode(message, &mut out)?;
        let frame = match self.protocol {
            HubProtocol::Json => Message::Text(
                Utf8Bytes::try_from(out)
                    .map_err(|_| ClientError::BadResponse("encoder wrote non-UTF-8".into()))?,
            ),
            HubProtocol::MessagePack => Message::Binary(Bytes::from(out)),
        };
        self.ws.send(frame).await?;
        Ok(())
    }

    /// JSON only: sends `record` (one or more JSON hub messages, each ending in the record
    /// separator) as one text frame, as it is. For scenarios that write their few messages
    /// themselves instead of building a [`HubMessage`] for each.
    pub async fn send_json(&mut self, record: String) -> Result<(), ClientError> {
        if self.protocol != HubProtocol::Json {
            return Err(ClientError::BadResponse(
                "send_json on a MessagePack connection".into(),
            ));
        }
        self.ws.send(Message::Text(Utf8Bytes::from(record))).await?;
        Ok(())
    }

    /// The next message from the server, skipping Pings; a Close message is an error.
    pub async fn recv(&mut self) -> Result<HubMessage, ClientError> {
        loop {
            if let Some(next) = self.decoder.next_message() {
                match next? {
                    HubMessage::Ping => continue,
                    HubMessage::Close { error, .. } => return Err(ClientError::Closed(error)),
                    message => return Ok(message),
                }
            }
            let payload = next_payload(&mut self.ws).await?;
            self.decoder.feed(&payload)?;
        }
    }

    /// JSON only: the next record from the server as it came (separator excluded), handed to
    /// `read`, which decodes only what its scenario expects and decides what is an error; the
    /// framing and size checks are [`HubClient::recv`]'s. Cheaper than a [`HubMessage`], whose
    /// arguments are a tree of allocated values: what the broadcast receivers use.
    pub async fn recv_json<T>(
        &mut self,
        read: impl Fn(&[u8]) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        loop {
            let HubMessageDecoder::Json(decoder) = &mut self.decoder else {
                return Err(ClientError::BadResponse(
                    "recv_json on a MessagePack connection".into(),
                ));
            };
            if let Some(record) = decoder.next_record() {
                return read(record?);
            }
            let payload = next_payload(&mut self.ws).await?;
            self.decoder.feed(&payload)?;
        }
    }

    pub fn protocol(&self) -> HubProtocol {
        self.protocol
    }

    /// Invokes `target` and waits for its completion, ignoring other messages meanwhile.
    pub async fn invoke(
        &mut self,
        invocation_id: &str,
        target: &str,
        arguments: Vec<Value>,
    ) -> Result<CompletionResult, ClientError> {
        self.send(&HubMessage::Invocation {
            headers: Default::default(),
            invocation_id: Some(invocation_id.to_string()),
            target: target.to_string(),
            arguments,
            stream_ids: Vec::new(),
        })
        .await?;
        loop {
            if let HubMessage::Completion {
                invocation_id: id,
                result,
                ..
            } = self.recv().await?
            {
                if id == invocation_id {
                    return Ok(result);
                }
            }
        }
    }

    /// The keep-alive a SignalR client sends every 15 seconds.
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        self.send(&HubMessage::Ping).await
    }

    /// Sends `payload` as one frame as it is, valid or not (the soak's garbage).
    pub async fn send_raw(&mut self, payload: Vec<u8>, text: bool) -> Result<(), ClientError> {
        let frame = match Utf8Bytes::try_from(payload.clone()) {
            Ok(text_frame) if text => Message::Text(text_frame),
            _ => Message::Binary(Bytes::from(payload)),
        };
        self.ws.send(frame).await?;
        Ok(())
    }

    pub async fn close(mut self) {
        let _ = self.send(&HubMessage::close(None, false)).await;
        let _ = self.ws.close(None).await;
    }
}

/// A plain WebSocket connection to the baseline server.
pub struct RawClient {
    ws: WebSocketStream<TcpStream>,
    binary: bool,
}

impl RawClient {
    pub async fn connect(
        endpoint: &Endpoint,
        source: IpAddr,
        binary: bool,
    ) -> Result<Self, ClientError> {
        let stream = tcp_connect(endpoint, source).await?;
        let ws = upgrade(stream, endpoint, None, None).await?;
        Ok(Self { ws, binary })
    }

    pub async fn send(&mut self, payload: Vec<u8>) -> Result<(), ClientError> {
        let frame = if self.binary {
            Message::Binary(Bytes::from(payload))
        } else {
            Message::Text(
                Utf8Bytes::try_from(payload)
                    .map_err(|_| ClientError::BadResponse("payload is not UTF-8".into()))?,
            )
        };
        self.ws.send(frame).await?;
        Ok(())
    }

    /// The payload of the next data frame.
    pub async fn recv(&mut self) -> Result<Bytes, ClientError> {
        next_payload(&mut self.ws).await
    }

    pub async fn ping(&mut self) -> Result<(), ClientError> {
        self.ws.send(Message::Ping(Bytes::new())).await?;
        Ok(())
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Any kind of connection, so a scenario is written once for Signet, the baseline and the peers.
pub enum Client {
    /// SignalR: Signet, or a SignalR peer.
    Hub(HubClient),
    /// Plain WebSocket frames: the baseline.
    Raw(RawClient),
    /// Socket.IO: the Socket.IO peers.
    SocketIo(SocketIoClient),
}

impl Client {
    /// Waits for the next message and drops it; for connections that only stay open.
    pub async fn drain_one(&mut self) -> Result<(), ClientError> {
        match self {
            Self::Hub(hub) => hub.recv().await.map(drop),
            Self::Raw(raw) => raw.recv().await.map(drop),
            Self::SocketIo(socket) => socket.recv().await.map(drop),
        }
    }

    pub async fn keep_alive(&mut self) -> Result<(), ClientError> {
        match self {
            Self::Hub(hub) => hub.ping().await,
            Self::Raw(raw) => raw.ping().await,
            // Engine.IO v4 servers ping and the client answers (while reading): nothing to send.
            Self::SocketIo(_) => Ok(()),
        }
    }

    pub async fn close(self) {
        match self {
            Self::Hub(hub) => hub.close().await,
            Self::Raw(raw) => raw.close().await,
            Self::SocketIo(socket) => socket.close().await,
        }
    }
}

/// Runs `future` with a time bound, so no load loop waits forever on a stuck server.
pub async fn bounded<T>(
    limit: Duration,
    future: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or(Err(ClientError::Timeout))
}

#[cfg(test)]
mod tests {
    use super::dechunk;

    #[test]
    fn a_chunked_body_is_read_whole_or_waited_for() {
        let whole = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        assert_eq!(
            dechunk(whole).ok().flatten().as_deref(),
            Some(&b"hello, world"[..])
        );
        for cut in 0..whole.len() {
            assert!(matches!(dechunk(&whole[..cut]), Ok(None)), "cut at {cut}");
        }
        assert!(dechunk(b"zz\r\n").is_err());
    }
}
