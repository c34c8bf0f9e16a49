//! The backplane's message format, version 1: what one node publishes for others.
//!
//! ```text
//! version u8 (1) | kind u8 | sender node (str) | sender epoch u64 | sequence u64 | body
//! str = u32 length (big-endian) + UTF-8; bytes = u32 length + bytes; list = u32 count + items
//! ```
//! The epoch is random per process, so a node that restarts under the same id starts a new
//! sequence instead of looking like a gap. Sequences count per channel (every node's channel
//! and each node's own), so a receiver sees every number of the channels it listens to.
//! Hub payloads travel encoded for both protocols, as the sender's encoder framed them.
//! Revocation records: `kind u8 (0 token, 1 session, 2 cut-off) | name (str) | until i64`, and
//! for a cut-off `not_before i64 | forgotten u8 (0 never, 1 at until)`.
//! A `Forwarded` answer ends with its headers, `u32 count + (name str, value str)...`, after its
//! body: a node that predates them reads the frame without them, and an answer from such a node
//! (nothing after the body) reads as one without headers.

use crate::store::{RevocationRecord, SubjectCutoff};
use bytes::{BufMut, Bytes, BytesMut};

pub const VERSION: u8 = 1;

/// Who published a frame, and where it stands in that sender's sequence on its channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub node: String,
    pub epoch: u64,
    pub sequence: u64,
}

/// A hub message, framed for JSON and for MessagePack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub json: Bytes,
    pub msgpack: Bytes,
}

/// How a group change or a disconnect went on the node that applied it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    UnknownConnection,
    TooManyGroups(u32),
}

/// Why a remote disconnect closes connections (the reasons other nodes can be asked for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disconnect {
    Kicked,
    Revoked(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Every connection of the hub but the excluded ones.
    All {
        excluded: Vec<String>,
        payload: Payload,
    },
    User {
        sub: String,
        payload: Payload,
    },
    Groups {
        groups: Vec<String>,
        payload: Payload,
    },
    /// To one connection of the node whose channel carries it.
    Connection {
        id: String,
        payload: Payload,
    },
    /// Add (or remove) a connection of the receiving node to a group; answered with `Reply`.
    GroupChange {
        request: u64,
        add: bool,
        connection: String,
        group: String,
    },
    /// Close every connection of `sub` on the receiving node; answered with `Reply`.
    DisconnectUser {
        request: u64,
        sub: String,
        reason: Disconnect,
    },
    /// The answer to a request, on the requester's channel; `count` is how many connections
    /// a disconnect closed.
    Reply {
        request: u64,
        outcome: Outcome,
        count: u64,
    },
    /// A message an application's hub published on one of its own channels
    /// ([`super::Backplane::publish`]): bytes only the hub reads. (Kind 8, the home hub's
    /// telemetry before it went through [`super::Backplane`], is retired.)
    Application(Bytes),
    /// Revocation records made on the sender, for every node to put in force (on the
    /// cluster's revocation channel).
    Revocations(Vec<RevocationRecord>),
    /// A request on a connection the receiving node owns, made to another node: `kind` is a
    /// [`super::forward::ForwardKind`] code, `principal` the JSON of who the requesting node
    /// authenticated (never their token); answered with `Forwarded`.
    Forward {
        request: u64,
        kind: u8,
        hub: String,
        token: String,
        principal: String,
        body: Bytes,
    },
    /// The answer to a `Forward`, on the requester's forwarding channel: an HTTP answer to
    /// write (with the few headers that travel, see [`super::forward::CARRIED_HEADERS`]), or
    /// (by its content type) a connection handed over or moved.
    Forwarded {
        request: u64,
        status: u16,
        content_type: String,
        body: Bytes,
        headers: Vec<(String, String)>,
    },
    /// One event of a WebSocket tunnelled between the node holding the socket and the node
    /// holding its connection (see [`super::tunnel`]), on the receiver's forwarding channel:
    /// `tunnel` is the id the socket's node gave it, `to_owner` says which end it is for,
    /// `event` a [`super::tunnel::TunnelEvent`] code.
    Tunnel {
        tunnel: u64,
        to_owner: bool,
        event: u8,
        body: Bytes,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("unsupported backplane message version {0}")]
    Version(u8),
    #[error("truncated backplane message")]
    Truncated,
    #[error("invalid backplane message: {0}")]
    Invalid(&'static str),
}

pub fn encode(origin: &Origin, frame: &Frame) -> Bytes {
    let mut out = BytesMut::with_capacity(64 + payload_len(frame));
    out.put_u8(VERSION);
    out.put_u8(kind(frame));
    put_str(&mut out, &origin.node);
    out.put_u64(origin.epoch);
    out.put_u64(origin.sequence);
    match frame {
        Frame::All { excluded, payload } => {
            put_list(&mut out, excluded);
            put_payload(&mut out, payload);
        }
        Frame::User { sub, payload } => {
            put_str(&mut out, sub);
            put_payload(&mut out, payload);
        }
        Frame::Groups { groups, payload } => {
            put_list(&mut out, groups);
            put_payload(&mut out, payload);
        }
        Frame::Connection { id, payload } => {
            put_str(&mut out, id);
            put_payload(&mut out, payload);
        }
        Frame::GroupChange {
            request,
            add,
            connection,
            group,
        } => {
            out.put_u64(*request);
            out.put_u8(u8::from(*add));
            put_str(&mut out, connection);
            put_str(&mut out, group);
        }
        Frame::DisconnectUser {
            request,
            sub,
            reason,
        } => {
            out.put_u64(*request);
            put_str(&mut out, sub);
            match reason {
                Disconnect::Kicked => out.put_u8(0),
                Disconnect::Revoked(why) => {
                    out.put_u8(1);
                    put_str(&mut out, why);
                }
            }
        }
        Frame::Reply {
            request,
            outcome,
            count,
        } => {
            out.put_u64(*request);
            match outcome {
                Outcome::Done => out.put_u8(0),
                Outcome::UnknownConnection => out.put_u8(1),
                Outcome::TooManyGroups(n) => {
                    out.put_u8(2);
                    out.put_u32(*n);
                }
            }
            out.put_u64(*count);
        }
        Frame::Application(body) => put_bytes(&mut out, body),
        Frame::Revocations(records) => {
            out.put_u32(u32::try_from(records.len()).unwrap_or(u32::MAX));
            for record in records {
                put_record(&mut out, record);
            }
        }
        Frame::Forward {
            request,
            kind,
            hub,
            token,
            principal,
            body,
        } => {
            out.put_u64(*request);
            out.put_u8(*kind);
            put_str(&mut out, hub);
            put_str(&mut out, token);
            put_str(&mut out, principal);
            put_bytes(&mut out, body);
        }
        Frame::Forwarded {
            request,
            status,
            content_type,
            body,
            headers,
        } => {
            out.put_u64(*request);
            out.put_u16(*status);
            put_str(&mut out, content_type);
            put_bytes(&mut out, body);
            out.put_u32(u32::try_from(headers.len()).unwrap_or(u32::MAX));
            for (name, value) in headers {
                put_str(&mut out, name);
                put_str(&mut out, value);
            }
        }
        Frame::Tunnel {
            tunnel,
            to_owner,
            event,
            body,
        } => {
            out.put_u64(*tunnel);
            out.put_u8(u8::from(*to_owner));
            out.put_u8(*event);
            put_bytes(&mut out, body);
        }
    }
    out.freeze()
}

pub fn decode(bytes: Bytes) -> Result<(Origin, Frame), WireError> {
    let mut r = Reader(bytes);
    let version = r.u8()?;
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    let kind = r.u8()?;
    let origin = Origin {
        node: r.str()?,
        epoch: r.u64()?,
        sequence: r.u64()?,
    };
    let frame = match kind {
        1 => Frame::All {
            excluded: r.list()?,
            payload: r.payload()?,
        },
        2 => Frame::User {
            sub: r.str()?,
            payload: r.payload()?,
        },
        3 => Frame::Groups {
            groups: r.list()?,
            payload: r.payload()?,
        },
        4 => Frame::Connection {
            id: r.str()?,
            payload: r.payload()?,
        },
        5 => Frame::GroupChange {
            request: r.u64()?,
            add: r.u8()? != 0,
            connection: r.str()?,
            group: r.str()?,
        },
        6 => Frame::DisconnectUser {
            request: r.u64()?,
            sub: r.str()?,
            reason: match r.u8()? {
                0 => Disconnect::Kicked,
                1 => Disconnect::Revoked(r.str()?),
                _ => return Err(WireError::Invalid("disconnect reason")),
            },
        },
        7 => Frame::Reply {
            request: r.u64()?,
            outcome: match r.u8()? {
                0 => Outcome::Done,
                1 => Outcome::UnknownConnection,
                2 => Outcome::TooManyGroups(r.u32()?),
                _ => return Err(WireError::Invalid("reply outcome")),
            },
            count: r.u64()?,
        },
        9 => Frame::Revocations(r.records()?),
        10 => Frame::Forward {
            request: r.u64()?,
            kind: r.u8()?,
            hub: r.str()?,
            token: r.str()?,
            principal: r.str()?,
            body: r.bytes()?,
        },
        11 => Frame::Forwarded {
            request: r.u64()?,
            status: r.u16()?,
            content_type: r.str()?,
            body: r.bytes()?,
            headers: r.headers()?,
        },
        12 => Frame::Tunnel {
            tunnel: r.u64()?,
            to_owner: r.u8()? != 0,
            event: r.u8()?,
            body: r.bytes()?,
        },
        13 => Frame::Application(r.bytes()?),
        _ => return Err(WireError::Invalid("kind")),
    };
    Ok((origin, frame))
}

fn kind(frame: &Frame) -> u8 {
    match frame {
        Frame::All { .. } => 1,
        Frame::User { .. } => 2,
        Frame::Groups { .. } => 3,
        Frame::Connection { .. } => 4,
        Frame::GroupChange { .. } => 5,
        Frame::DisconnectUser { .. } => 6,
        Frame::Reply { .. } => 7,
        Frame::Revocations(_) => 9,
        Frame::Forward { .. } => 10,
        Frame::Forwarded { .. } => 11,
        Frame::Tunnel { .. } => 12,
        Frame::Application(_) => 13,
    }
}

fn payload_len(frame: &Frame) -> usize {
    match frame {
        Frame::All { payload, .. }
        | Frame::User { payload, .. }
        | Frame::Groups { payload, .. }
        | Frame::Connection { payload, .. } => payload.json.len() + payload.msgpack.len(),
        Frame::Application(body) => body.len(),
        Frame::Forward { body, .. }
        | Frame::Forwarded { body, .. }
        | Frame::Tunnel { body, .. } => body.len(),
        _ => 0,
    }
}

fn put_bytes(out: &mut BytesMut, bytes: &[u8]) {
    out.put_u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
    out.put_slice(bytes);
}

fn put_str(out: &mut BytesMut, text: &str) {
    put_bytes(out, text.as_bytes());
}

fn put_list(out: &mut BytesMut, items: &[String]) {
    out.put_u32(u32::try_from(items.len()).unwrap_or(u32::MAX));
    for item in items {
        put_str(out, item);
    }
}

fn put_record(out: &mut BytesMut, record: &RevocationRecord) {
    match record {
        RevocationRecord::DeniedToken { jti, expires_at } => {
            out.put_u8(0);
            put_str(out, jti);
            out.put_i64(*expires_at);
        }
        RevocationRecord::RevokedSession { sid, forget_after } => {
            out.put_u8(1);
            put_str(out, sid);
            out.put_i64(*forget_after);
        }
        RevocationRecord::Cutoff(cutoff) => {
            out.put_u8(2);
            put_str(out, &cutoff.sub);
            out.put_i64(cutoff.forget_after.unwrap_or(0));
            out.put_i64(cutoff.not_before);
            out.put_u8(u8::from(cutoff.forget_after.is_some()));
        }
    }
}

fn put_payload(out: &mut BytesMut, payload: &Payload) {
    put_bytes(out, &payload.json);
    put_bytes(out, &payload.msgpack);
}

struct Reader(Bytes);

impl Reader {
    fn take(&mut self, n: usize) -> Result<Bytes, WireError> {
        if self.0.len() < n {
            return Err(WireError::Truncated);
        }
        Ok(self.0.split_to(n))
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        let b = self.take(8)?;
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&b);
        Ok(u64::from_be_bytes(raw))
    }

    fn bytes(&mut self) -> Result<Bytes, WireError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn str(&mut self) -> Result<String, WireError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| WireError::Invalid("UTF-8"))
    }

    fn list(&mut self) -> Result<Vec<String>, WireError> {
        let n = self.u32()? as usize;
        // Each item takes at least its 4-byte length: a count the bytes cannot hold is a lie.
        if n > self.0.len() / 4 {
            return Err(WireError::Truncated);
        }
        (0..n).map(|_| self.str()).collect()
    }

    /// A `Forwarded` answer's headers: none when the frame ends here (an older node's).
    fn headers(&mut self) -> Result<Vec<(String, String)>, WireError> {
        if self.0.is_empty() {
            return Ok(Vec::new());
        }
        let n = self.u32()? as usize;
        // Each header takes at least its two 4-byte lengths: a count the bytes cannot hold is a lie.
        if n > self.0.len() / 8 {
            return Err(WireError::Truncated);
        }
        (0..n).map(|_| Ok((self.str()?, self.str()?))).collect()
    }

    fn i64(&mut self) -> Result<i64, WireError> {
        Ok(self.u64()? as i64)
    }

    fn records(&mut self) -> Result<Vec<RevocationRecord>, WireError> {
        let n = self.u32()? as usize;
        // Each record takes at least 13 bytes: a count the bytes cannot hold is a lie.
        if n > self.0.len() / 13 {
            return Err(WireError::Truncated);
        }
        (0..n).map(|_| self.record()).collect()
    }

    fn record(&mut self) -> Result<RevocationRecord, WireError> {
        let kind = self.u8()?;
        let name = self.str()?;
        let until = self.i64()?;
        Ok(match kind {
            0 => RevocationRecord::DeniedToken {
                jti: name,
                expires_at: until,
            },
            1 => RevocationRecord::RevokedSession {
                sid: name,
                forget_after: until,
            },
            2 => RevocationRecord::Cutoff(SubjectCutoff {
                sub: name,
                not_before: self.i64()?,
                forget_after: match self.u8()? {
                    0 => None,
                    1 => Some(until),
                    _ => return Err(WireError::Invalid("cut-off expiry")),
                },
            }),
            _ => return Err(WireError::Invalid("revocation kind")),
        })
    }

    fn payload(&mut self) -> Result<Payload, WireError> {
        Ok(Payload {
            json: self.bytes()?,
            msgpack: self.bytes()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload() -> Payload {
        Payload {
            json: Bytes::from_static(b"{\"type\":1}\x1e"),
            msgpack: Bytes::from_static(&[3, 0x91, 1]),
        }
    }

    #[test]
    fn every_frame_round_trips_and_damage_is_refused() {
        let origin = Origin {
            node: "node-a".into(),
            epoch: 7,
            sequence: 42,
        };
        let frames = [
            Frame::All {
                excluded: vec!["a.1".into(), "a.2".into()],
                payload: payload(),
            },
            Frame::User {
                sub: "alice".into(),
                payload: payload(),
            },
            Frame::Groups {
                groups: vec!["g".into()],
                payload: payload(),
            },
            Frame::Connection {
                id: "b.x".into(),
                payload: payload(),
            },
            Frame::GroupChange {
                request: 9,
                add: true,
                connection: "b.x".into(),
                group: "kitchen".into(),
            },
            Frame::DisconnectUser {
                request: 10,
                sub: "bob".into(),
                reason: Disconnect::Revoked("logout".into()),
            },
            Frame::Reply {
                request: 11,
                outcome: Outcome::TooManyGroups(64),
                count: 3,
            },
            Frame::Application(Bytes::from_static(b"{\"owner\":\"alice\"}")),
            Frame::Revocations(vec![
                RevocationRecord::DeniedToken {
                    jti: "j".into(),
                    expires_at: 1_700_000_000,
                },
                RevocationRecord::RevokedSession {
                    sid: "s".into(),
                    forget_after: 1_700_000_001,
                },
                RevocationRecord::Cutoff(SubjectCutoff {
                    sub: "device:d".into(),
                    not_before: i64::MAX,
                    forget_after: Some(1_700_000_002),
                }),
                RevocationRecord::Cutoff(SubjectCutoff {
                    sub: "u".into(),
                    not_before: 1_600_000_000,
                    forget_after: None,
                }),
            ]),
            Frame::Forward {
                request: 12,
                kind: 2,
                hub: "home".into(),
                token: "a.t".into(),
                principal: "{\"sub\":\"alice\"}".into(),
                body: Bytes::from_static(b"{}\x1e"),
            },
            Frame::Forwarded {
                request: 12,
                status: 401,
                content_type: "application/json".into(),
                body: Bytes::from_static(b"{}"),
                headers: vec![("www-authenticate".into(), "Bearer realm=\"signet\"".into())],
            },
            Frame::Tunnel {
                tunnel: 7,
                to_owner: true,
                event: 1,
                body: Bytes::from_static(b"{}\x1e"),
            },
        ];
        for frame in frames {
            let bytes = encode(&origin, &frame);
            assert_eq!(decode(bytes.clone()), Ok((origin.clone(), frame.clone())));
            // Where an answer's headers begin, the cut frame is an older node's: no headers.
            let older = match &frame {
                Frame::Forwarded { headers, .. } => {
                    let tail: usize = headers.iter().map(|(n, v)| 8 + n.len() + v.len()).sum();
                    let cut = bytes.len() - 4 - tail;
                    let mut without = frame.clone();
                    if let Frame::Forwarded { headers, .. } = &mut without {
                        headers.clear();
                    }
                    assert_eq!(decode(bytes.slice(..cut)), Ok((origin.clone(), without)));
                    Some(cut)
                }
                _ => None,
            };
            for cut in (0..bytes.len()).filter(|cut| Some(*cut) != older) {
                assert!(
                    decode(bytes.slice(..cut)).is_err(),
                    "{frame:?} cut at {cut}"
                );
            }
        }
        let mut future = encode(
            &origin,
            &Frame::User {
                sub: "a".into(),
                payload: payload(),
            },
        )
        .to_vec();
        future[0] = 2;
        assert_eq!(
            decode(Bytes::from(future.clone())),
            Err(WireError::Version(2))
        );
        // A kind this node does not know (a newer node's) is refused, not misread.
        future[0] = VERSION;
        future[1] = 200;
        assert_eq!(decode(Bytes::from(future)), Err(WireError::Invalid("kind")));
    }
}
