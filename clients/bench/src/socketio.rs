//! A minimal Socket.IO client, so the peers that speak Socket.IO (socketioxide, Node's
//! `socket.io`) run the same scenarios as Signet. Only what the scenarios need: the WebSocket
//! transport opened directly (`GET /socket.io/?EIO=4&transport=websocket`, no polling first),
//! the default namespace, text packets, events with acknowledgements.
//!
//! Engine.IO v4 puts one packet in each WebSocket frame: a type digit, then data. The server
//! opens with `0{"sid":..,"pingInterval":..}`, pings with `2` and expects `3` back (in v4 the
//! server pings, not the client), and a `4` carries a Socket.IO v5 packet: a type digit
//! (`0` connect, `1` disconnect, `2` event, `3` ack, `4` connect error), then the namespace and
//! a comma unless it is `/`, then the ack id, then the JSON data. So `40` connects to `/`,
//! `421["echo",{..}]` is the event `echo` asking for ack 1 and `431[{..}]` answers it.

use crate::client::{tcp_connect, upgrade, ClientError, Endpoint};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::net::IpAddr;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

/// The path every Socket.IO server answers on by default.
pub const PATH: &str = "/socket.io/";
/// Engine.IO v4 over WebSocket from the first request.
const QUERY: &str = "EIO=4&transport=websocket";

/// A decoding error: the frame is not an Engine.IO v4 / Socket.IO v5 text packet we know.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("socket.io packet: {0}")]
pub struct CodecError(String);

/// One Engine.IO packet (one WebSocket text frame).
#[derive(Debug, Clone, PartialEq)]
pub enum EnginePacket {
    /// `0{...}`: the handshake, with the session id and ping timing.
    Open(Value),
    Close,
    Ping,
    Pong,
    Noop,
    Message(SocketPacket),
}

/// One Socket.IO packet, carried in an Engine.IO message.
#[derive(Debug, Clone, PartialEq)]
pub struct SocketPacket {
    pub kind: PacketKind,
    /// `/` when the packet names none.
    pub namespace: String,
    pub ack_id: Option<u64>,
    pub data: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    Connect,
    Disconnect,
    Event,
    Ack,
    ConnectError,
}

impl PacketKind {
    fn digit(self) -> char {
        match self {
            Self::Connect => '0',
            Self::Disconnect => '1',
            Self::Event => '2',
            Self::Ack => '3',
            Self::ConnectError => '4',
        }
    }

    fn from_digit(digit: u8) -> Result<Self, CodecError> {
        Ok(match digit {
            b'0' => Self::Connect,
            b'1' => Self::Disconnect,
            b'2' => Self::Event,
            b'3' => Self::Ack,
            b'4' => Self::ConnectError,
            b'5' | b'6' => return Err(CodecError("binary packets are not supported".into())),
            other => {
                return Err(CodecError(format!(
                    "unknown packet type {:?}",
                    other as char
                )))
            }
        })
    }
}

/// Decodes one text frame.
pub fn decode(frame: &str) -> Result<EnginePacket, CodecError> {
    let Some(&kind) = frame.as_bytes().first() else {
        return Err(CodecError("empty frame".into()));
    };
    // Not a char boundary when the first byte is not ASCII: that frame is refused below.
    let rest = frame.get(1..).unwrap_or_default();
    Ok(match kind {
        b'0' => EnginePacket::Open(
            serde_json::from_str(rest).map_err(|e| CodecError(format!("open packet: {e}")))?,
        ),
        b'1' => EnginePacket::Close,
        b'2' => EnginePacket::Ping,
        b'3' => EnginePacket::Pong,
        b'6' => EnginePacket::Noop,
        b'4' => EnginePacket::Message(decode_socket(rest)?),
        other => {
            return Err(CodecError(format!(
                "unknown engine.io packet type {:?}",
                other as char
            )))
        }
    })
}

fn decode_socket(packet: &str) -> Result<SocketPacket, CodecError> {
    let kind = PacketKind::from_digit(
        *packet
            .as_bytes()
            .first()
            .ok_or_else(|| CodecError("empty socket.io packet".into()))?,
    )?;
    let mut rest = &packet[1..];
    let mut namespace = "/".to_string();
    if rest.starts_with('/') {
        let end = rest.find(',').unwrap_or(rest.len());
        namespace = rest[..end].to_string();
        rest = rest.get(end + 1..).unwrap_or("");
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let ack_id = if digits > 0 {
        Some(
            rest[..digits]
                .parse()
                .map_err(|_| CodecError("ack id out of range".into()))?,
        )
    } else {
        None
    };
    rest = &rest[digits..];
    let data = if rest.is_empty() {
        None
    } else {
        Some(serde_json::from_str(rest).map_err(|e| CodecError(format!("packet data: {e}")))?)
    };
    Ok(SocketPacket {
        kind,
        namespace,
        ack_id,
        data,
    })
}

/// Encodes a Socket.IO packet to the default namespace as an Engine.IO message frame.
pub fn encode(kind: PacketKind, ack_id: Option<u64>, data: Option<&Value>) -> String {
    let mut out = String::with_capacity(64);
    out.push('4');
    out.push(kind.digit());
    if let Some(id) = ack_id {
        out.push_str(&id.to_string());
    }
    if let Some(data) = data {
        out.push_str(&data.to_string());
    }
    out
}

/// `42<id>["name", args...]`: the event `name`, asking for acknowledgement `ack_id`.
pub fn encode_event(name: &str, args: &[Value], ack_id: Option<u64>) -> String {
    let mut array = Vec::with_capacity(args.len() + 1);
    array.push(Value::String(name.to_string()));
    array.extend_from_slice(args);
    encode(PacketKind::Event, ack_id, Some(&Value::Array(array)))
}

/// What the server sent that a scenario cares about.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Event { name: String, args: Vec<Value> },
    Ack { id: u64, args: Vec<Value> },
}

/// A Socket.IO connection to the default namespace.
pub struct SocketIoClient {
    ws: WebSocketStream<TcpStream>,
}

impl SocketIoClient {
    /// Opens the WebSocket, reads the Engine.IO open packet, connects to `/` and waits for the
    /// server's connect packet.
    pub async fn connect(endpoint: &Endpoint, source: IpAddr) -> Result<Self, ClientError> {
        let stream = tcp_connect(endpoint, source).await?;
        let ws = upgrade(stream, endpoint, Some(QUERY.to_string()), None).await?;
        let mut client = Self { ws };
        match client.next_packet().await? {
            EnginePacket::Open(_) => {}
            other => {
                return Err(ClientError::Handshake(format!(
                    "expected the open packet, got {other:?}"
                )))
            }
        }
        client
            .send_text(encode(PacketKind::Connect, None, None))
            .await?;
        loop {
            match client.next_packet().await? {
                EnginePacket::Message(packet) if packet.kind == PacketKind::Connect => {
                    return Ok(client)
                }
                EnginePacket::Message(packet) if packet.kind == PacketKind::ConnectError => {
                    return Err(ClientError::Handshake(format!("{:?}", packet.data)))
                }
                _ => {}
            }
        }
    }

    async fn send_text(&mut self, frame: String) -> Result<(), ClientError> {
        self.ws.send(Message::Text(Utf8Bytes::from(frame))).await?;
        Ok(())
    }

    /// The next Engine.IO packet; answers pings on the way (the server closes a connection
    /// whose pong is late).
    async fn next_packet(&mut self) -> Result<EnginePacket, ClientError> {
        loop {
            let frame = match self.ws.next().await {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Binary(_))) => {
                    return Err(ClientError::BadResponse(
                        "binary socket.io packets are not supported".into(),
                    ))
                }
                Some(Ok(Message::Close(_))) | None => return Err(ClientError::Closed(None)),
                Some(Ok(_)) => continue,
                Some(Err(err)) => return Err(err.into()),
            };
            let packet = decode(frame.as_str()).map_err(|e| ClientError::BadResponse(e.0))?;
            match packet {
                EnginePacket::Ping => self.send_text("3".to_string()).await?,
                EnginePacket::Close => return Err(ClientError::Closed(None)),
                packet => return Ok(packet),
            }
        }
    }

    /// Emits `name(args)`, asking for acknowledgement `ack_id` when given.
    pub async fn emit(
        &mut self,
        name: &str,
        args: &[Value],
        ack_id: Option<u64>,
    ) -> Result<(), ClientError> {
        self.send_text(encode_event(name, args, ack_id)).await
    }

    /// The next event or acknowledgement; a disconnect is an error.
    pub async fn recv(&mut self) -> Result<Incoming, ClientError> {
        loop {
            let EnginePacket::Message(packet) = self.next_packet().await? else {
                continue;
            };
            let args = match packet.data {
                Some(Value::Array(args)) => args,
                Some(other) => vec![other],
                None => Vec::new(),
            };
            match packet.kind {
                PacketKind::Event => {
                    let mut args = args.into_iter();
                    let Some(Value::String(name)) = args.next() else {
                        return Err(ClientError::BadResponse("an event without a name".into()));
                    };
                    return Ok(Incoming::Event {
                        name,
                        args: args.collect(),
                    });
                }
                PacketKind::Ack => {
                    let id = packet
                        .ack_id
                        .ok_or_else(|| ClientError::BadResponse("an ack without an id".into()))?;
                    return Ok(Incoming::Ack { id, args });
                }
                PacketKind::Disconnect => return Err(ClientError::Closed(None)),
                PacketKind::ConnectError => {
                    return Err(ClientError::Refused(format!("{args:?}")));
                }
                PacketKind::Connect => {}
            }
        }
    }

    /// Emits `name(args)` with acknowledgement `id` and waits for it, ignoring other traffic.
    pub async fn call(
        &mut self,
        id: u64,
        name: &str,
        args: &[Value],
    ) -> Result<Vec<Value>, ClientError> {
        self.emit(name, args, Some(id)).await?;
        loop {
            if let Incoming::Ack { id: acked, args } = self.recv().await? {
                if acked == id {
                    return Ok(args);
                }
            }
        }
    }

    /// Leaves the namespace and closes the WebSocket.
    pub async fn close(mut self) {
        let _ = self
            .send_text(encode(PacketKind::Disconnect, None, None))
            .await;
        let _ = self.ws.close(None).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_the_engine_io_packets() {
        let open = r#"0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000}"#;
        assert_eq!(
            decode(open),
            Ok(EnginePacket::Open(json!({
                "sid": "abc", "upgrades": [], "pingInterval": 25000, "pingTimeout": 20000
            })))
        );
        assert_eq!(decode("2"), Ok(EnginePacket::Ping));
        assert_eq!(decode("3"), Ok(EnginePacket::Pong));
        assert_eq!(decode("1"), Ok(EnginePacket::Close));
        assert_eq!(decode("6"), Ok(EnginePacket::Noop));
        assert!(decode("").is_err());
        assert!(decode("9").is_err());
        assert!(decode("0{not json").is_err());
        assert!(decode("é").is_err());
    }

    /// The expected decoding of a Socket.IO packet.
    fn message(
        kind: PacketKind,
        namespace: &str,
        ack_id: Option<u64>,
        data: Option<Value>,
    ) -> Result<EnginePacket, CodecError> {
        Ok(EnginePacket::Message(SocketPacket {
            kind,
            namespace: namespace.into(),
            ack_id,
            data,
        }))
    }

    #[test]
    fn decodes_socket_io_packets_with_namespaces_ids_and_data() {
        assert_eq!(
            decode(r#"40{"sid":"xyz"}"#),
            message(PacketKind::Connect, "/", None, Some(json!({"sid": "xyz"})))
        );
        assert_eq!(
            decode(r#"4312[{"seq":12}]"#),
            message(PacketKind::Ack, "/", Some(12), Some(json!([{"seq": 12}])))
        );
        assert_eq!(
            decode(r#"42/admin,7["message","hi"]"#),
            message(
                PacketKind::Event,
                "/admin",
                Some(7),
                Some(json!(["message", "hi"]))
            )
        );
        assert_eq!(
            decode("41"),
            message(PacketKind::Disconnect, "/", None, None)
        );
        assert!(decode(r#"451-["x",{"_placeholder":true,"num":0}]"#).is_err());
        assert!(decode("4299999999999999999999999[]").is_err());
        assert!(decode("42[broken").is_err());
    }

    #[test]
    fn encodes_connect_events_and_acks_as_the_protocol_says() {
        assert_eq!(encode(PacketKind::Connect, None, None), "40");
        assert_eq!(encode(PacketKind::Disconnect, None, None), "41");
        assert_eq!(
            encode_event("echo", &[json!({"seq": 1})], Some(1)),
            r#"421["echo",{"seq":1}]"#
        );
        assert_eq!(
            encode_event("broadcast", &[json!("1 2 ")], None),
            r#"42["broadcast","1 2 "]"#
        );
        assert_eq!(encode(PacketKind::Ack, Some(5), Some(&json!([]))), "435[]");
        // What is encoded decodes back to itself.
        let frame = encode_event("echo", &[json!({"text": "hello"})], Some(99));
        let Ok(EnginePacket::Message(packet)) = decode(&frame) else {
            panic!("{frame} does not decode");
        };
        assert_eq!(packet.kind, PacketKind::Event);
        assert_eq!(packet.ack_id, Some(99));
        assert_eq!(packet.data, Some(json!(["echo", {"text": "hello"}])));
    }
}
