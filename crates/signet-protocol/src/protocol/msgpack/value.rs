//! MessagePack values read into and written from [`serde_json::Value`].
//!
//! A hand-written codec rather than an intermediate `rmpv::Value` tree: values
//! go straight into the hub's model, every read is bounds-checked against the
//! slice (never a panic, never an allocation larger than the input can fill),
//! and writes to a `Vec` cannot fail.
//!
//! Mapping, MessagePack to JSON:
//! - nil, bool, str, array: the JSON equivalents. A str inside a payload value that is not
//!   valid UTF-8 reads as `null` and marks the reader ([`Reader::invalid_utf8`]), so that the
//!   message it is in can fail alone (a binding failure); elsewhere it is an error.
//! - int/uint of any width: a JSON integer (`i64` or `u64`).
//! - float32/float64: a JSON number; NaN and ±infinity have no JSON form and
//!   become `null`, which is what the JSON client sends for them (`JSON.stringify`).
//! - bin: a binary value of the model ([`crate::protocol::typed`]), written back as bin to
//!   MessagePack clients and as base64 to JSON clients. JSON strings are always str.
//! - map: a JSON object. String keys are kept; integer and float keys become their
//!   decimal text, as JavaScript turns number keys into property names; any other
//!   key type is rejected. A repeated key keeps its last value.
//! - ext -1 (timestamp, all three widths): a timestamp value of the model, written back as a
//!   timestamp to MessagePack clients (the smallest width that holds it, as `@msgpack/msgpack`
//!   writes) and to JSON clients as `Date.toISOString()` text, `2024-01-02T03:04:05.678Z`.
//!   Years outside 0000..=9999, which that text cannot hold, are rejected.
//! - any other extension type: rejected with [`ProtocolError::UnsupportedExtension`].
//!
//! JSON to MessagePack uses the smallest encoding of each integer, str and
//! container length (as `@msgpack/msgpack` does) and float64 for non-integers.

use serde_json::{Map, Number, Value};

use crate::protocol::error::ProtocolError;
use crate::protocol::typed::{self, Typed};

/// Deepest array/map nesting accepted inside one message, the same bound
/// serde_json applies to JSON input.
pub(crate) const MAX_DEPTH: usize = 128;

const TIMESTAMP_EXT: i8 = -1;

/// A MessagePack integer, which may not fit `i64` (uint64) or `u64` (negative).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Integer {
    Unsigned(u64),
    Signed(i64),
}

impl Integer {
    pub(crate) fn as_i64(self) -> Option<i64> {
        match self {
            Self::Unsigned(n) => i64::try_from(n).ok(),
            Self::Signed(n) => Some(n),
        }
    }

    pub(crate) fn as_u64(self) -> Option<u64> {
        match self {
            Self::Unsigned(n) => Some(n),
            Self::Signed(n) => u64::try_from(n).ok(),
        }
    }
}

fn truncated() -> ProtocolError {
    ProtocolError::InvalidMessagePack("unexpected end of data")
}

/// A cursor over one message body.
///
/// Typed reads return `Ok(None)` without consuming anything when the next value
/// has another type, so callers can name the property in their error.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
    invalid_utf8: bool,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            position: 0,
            invalid_utf8: false,
        }
    }

    /// Whether a payload value read so far held a str that is not valid UTF-8.
    pub(crate) fn invalid_utf8(&self) -> bool {
        self.invalid_utf8
    }

    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.position)
    }

    fn peek(&self) -> Result<u8, ProtocolError> {
        self.bytes.get(self.position).copied().ok_or_else(truncated)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], ProtocolError> {
        let end = self.position.checked_add(len).ok_or_else(truncated)?;
        let slice = self.bytes.get(self.position..end).ok_or_else(truncated)?;
        self.position = end;
        Ok(slice)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.take_array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, ProtocolError> {
        Ok(u16::from_be_bytes(self.take_array()?))
    }

    fn u32(&mut self) -> Result<u32, ProtocolError> {
        Ok(u32::from_be_bytes(self.take_array()?))
    }

    fn u64(&mut self) -> Result<u64, ProtocolError> {
        Ok(u64::from_be_bytes(self.take_array()?))
    }

    /// A length of a str/bin/ext/array/map; `usize` is at least 32 bits on every target Signet builds for.
    fn len32(&mut self) -> Result<usize, ProtocolError> {
        usize::try_from(self.u32()?)
            .map_err(|_| ProtocolError::InvalidMessagePack("length does not fit in memory"))
    }

    /// Consumes a nil if one is next.
    pub(crate) fn nil(&mut self) -> Result<bool, ProtocolError> {
        if self.peek()? == 0xc0 {
            self.position += 1;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    pub(crate) fn bool(&mut self) -> Result<Option<bool>, ProtocolError> {
        let value = match self.peek()? {
            0xc2 => false,
            0xc3 => true,
            _ => return Ok(None),
        };
        self.position += 1;
        Ok(Some(value))
    }

    pub(crate) fn integer(&mut self) -> Result<Option<Integer>, ProtocolError> {
        let marker = self.peek()?;
        let value = match marker {
            0x00..=0x7f => Integer::Unsigned(u64::from(marker)),
            0xe0..=0xff => Integer::Signed(i64::from(marker as i8)),
            0xcc..=0xd3 => {
                self.position += 1;
                return Ok(Some(match marker {
                    0xcc => Integer::Unsigned(u64::from(self.u8()?)),
                    0xcd => Integer::Unsigned(u64::from(self.u16()?)),
                    0xce => Integer::Unsigned(u64::from(self.u32()?)),
                    0xcf => Integer::Unsigned(self.u64()?),
                    0xd0 => Integer::Signed(i64::from(self.u8()? as i8)),
                    0xd1 => Integer::Signed(i64::from(self.u16()? as i16)),
                    0xd2 => Integer::Signed(i64::from(self.u32()? as i32)),
                    _ => Integer::Signed(self.u64()? as i64),
                }));
            }
            _ => return Ok(None),
        };
        self.position += 1;
        Ok(Some(value))
    }

    pub(crate) fn str(&mut self) -> Result<Option<&'a str>, ProtocolError> {
        match self.str_bytes()? {
            Some(bytes) => std::str::from_utf8(bytes)
                .map(Some)
                .map_err(|_| ProtocolError::InvalidMessagePack("string is not valid UTF-8")),
            None => Ok(None),
        }
    }

    /// A str's bytes, not yet checked to be UTF-8.
    fn str_bytes(&mut self) -> Result<Option<&'a [u8]>, ProtocolError> {
        let marker = self.peek()?;
        if !matches!(marker, 0xa0..=0xbf | 0xd9..=0xdb) {
            return Ok(None);
        }
        self.position += 1;
        let len = match marker {
            0xd9 => usize::from(self.u8()?),
            0xda => usize::from(self.u16()?),
            0xdb => self.len32()?,
            _ => usize::from(marker & 0x1f),
        };
        self.take(len).map(Some)
    }

    /// A payload str; one that is not UTF-8 marks the reader and reads as `None`.
    fn payload_str(&mut self, bytes: &[u8]) -> Option<String> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Some(text.to_owned()),
            Err(_) => {
                self.invalid_utf8 = true;
                None
            }
        }
    }

    pub(crate) fn array_len(&mut self) -> Result<Option<usize>, ProtocolError> {
        let marker = self.peek()?;
        Ok(Some(match marker {
            0x90..=0x9f => {
                self.position += 1;
                usize::from(marker & 0x0f)
            }
            0xdc => {
                self.position += 1;
                usize::from(self.u16()?)
            }
            0xdd => {
                self.position += 1;
                self.len32()?
            }
            _ => return Ok(None),
        }))
    }

    pub(crate) fn map_len(&mut self) -> Result<Option<usize>, ProtocolError> {
        let marker = self.peek()?;
        Ok(Some(match marker {
            0x80..=0x8f => {
                self.position += 1;
                usize::from(marker & 0x0f)
            }
            0xde => {
                self.position += 1;
                usize::from(self.u16()?)
            }
            0xdf => {
                self.position += 1;
                self.len32()?
            }
            _ => return Ok(None),
        }))
    }

    /// Reads any value; `depth` counts the containers already entered.
    pub(crate) fn value(&mut self, depth: usize) -> Result<Value, ProtocolError> {
        if let Some(integer) = self.integer()? {
            return Ok(match integer {
                Integer::Unsigned(n) => Value::from(n),
                Integer::Signed(n) => Value::from(n),
            });
        }
        if let Some(bytes) = self.str_bytes()? {
            return Ok(self.payload_str(bytes).map_or(Value::Null, Value::String));
        }
        if let Some(len) = self.array_len()? {
            let depth = nested(depth)?;
            // Every element takes at least one byte, so the input bounds the allocation.
            let mut items = Vec::with_capacity(len.min(self.remaining()));
            for _ in 0..len {
                items.push(self.value(depth)?);
            }
            return Ok(Value::Array(items));
        }
        if let Some(len) = self.map_len()? {
            let depth = nested(depth)?;
            let mut object = Map::new();
            for _ in 0..len {
                let key = self.map_key()?;
                let value = self.value(depth)?;
                object.insert(key, value);
            }
            return Ok(Value::Object(object));
        }
        let marker = self.u8()?;
        match marker {
            0xc0 => Ok(Value::Null),
            0xc2 => Ok(Value::Bool(false)),
            0xc3 => Ok(Value::Bool(true)),
            0xca => Ok(float(f64::from(f32::from_be_bytes(self.take_array()?)))),
            0xcb => Ok(float(f64::from_be_bytes(self.take_array()?))),
            0xc4..=0xc6 => {
                let len = match marker {
                    0xc4 => usize::from(self.u8()?),
                    0xc5 => usize::from(self.u16()?),
                    _ => self.len32()?,
                };
                Ok(typed::binary(self.take(len)?))
            }
            0xc7..=0xc9 | 0xd4..=0xd8 => {
                let len = match marker {
                    0xc7 => usize::from(self.u8()?),
                    0xc8 => usize::from(self.u16()?),
                    0xc9 => self.len32()?,
                    // fixext 1, 2, 4, 8, 16
                    _ => 1 << (marker - 0xd4),
                };
                let ext_type = self.u8()? as i8;
                let data = self.take(len)?;
                if ext_type == TIMESTAMP_EXT {
                    timestamp(data)
                } else {
                    Err(ProtocolError::UnsupportedExtension(ext_type))
                }
            }
            // 0xc1 is the one marker MessagePack never uses.
            _ => Err(ProtocolError::InvalidMessagePack("reserved marker 0xc1")),
        }
    }

    fn map_key(&mut self) -> Result<String, ProtocolError> {
        if let Some(bytes) = self.str_bytes()? {
            // The message fails as a whole when a key is not UTF-8, so its text does not matter.
            return Ok(self.payload_str(bytes).unwrap_or_default());
        }
        if let Some(integer) = self.integer()? {
            return Ok(match integer {
                Integer::Unsigned(n) => n.to_string(),
                Integer::Signed(n) => n.to_string(),
            });
        }
        let float = match self.peek()? {
            0xca => {
                self.position += 1;
                f64::from(f32::from_be_bytes(self.take_array()?))
            }
            0xcb => {
                self.position += 1;
                f64::from_be_bytes(self.take_array()?)
            }
            _ => {
                return Err(ProtocolError::InvalidMessagePack(
                    "map keys must be strings or numbers",
                ))
            }
        };
        Number::from_f64(float)
            .map(|n| n.to_string())
            .ok_or(ProtocolError::InvalidMessagePack(
                "map key is not a finite number",
            ))
    }
}

fn nested(depth: usize) -> Result<usize, ProtocolError> {
    if depth >= MAX_DEPTH {
        Err(ProtocolError::TooDeep { limit: MAX_DEPTH })
    } else {
        Ok(depth + 1)
    }
}

fn float(value: f64) -> Value {
    Number::from_f64(value).map_or(Value::Null, Value::Number)
}

/// Decodes the timestamp extension (msgpack spec, "Timestamp extension type").
fn timestamp(data: &[u8]) -> Result<Value, ProtocolError> {
    let invalid = || ProtocolError::InvalidMessagePack("invalid timestamp");
    let (seconds, nanos) = match data.len() {
        4 => {
            let seconds = u32::from_be_bytes(data.try_into().map_err(|_| invalid())?);
            (i64::from(seconds), 0)
        }
        8 => {
            let packed = u64::from_be_bytes(data.try_into().map_err(|_| invalid())?);
            // 30 bits of nanoseconds above 34 bits of seconds; both fit their targets.
            ((packed & 0x3_ffff_ffff) as i64, (packed >> 34) as u32)
        }
        12 => {
            let (nanos, seconds) = data.split_at(4);
            (
                i64::from_be_bytes(seconds.try_into().map_err(|_| invalid())?),
                u32::from_be_bytes(nanos.try_into().map_err(|_| invalid())?),
            )
        }
        _ => return Err(invalid()),
    };
    typed::timestamp(seconds, nanos).ok_or(ProtocolError::InvalidMessagePack(
        "timestamp outside years 0000 to 9999",
    ))
}

// Writers. Lengths above u32::MAX cannot be expressed; they are saturated here
// because any such value makes the body exceed the 2 GiB frame limit, which the
// message encoder checks before returning the bytes.

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

pub(crate) fn write_nil(out: &mut Vec<u8>) {
    out.push(0xc0);
}

pub(crate) fn write_bool(out: &mut Vec<u8>, value: bool) {
    out.push(if value { 0xc3 } else { 0xc2 });
}

pub(crate) fn write_uint(out: &mut Vec<u8>, value: u64) {
    if value < 0x80 {
        out.push(value as u8);
    } else if let Ok(v) = u8::try_from(value) {
        out.extend_from_slice(&[0xcc, v]);
    } else if let Ok(v) = u16::try_from(value) {
        out.push(0xcd);
        out.extend_from_slice(&v.to_be_bytes());
    } else if let Ok(v) = u32::try_from(value) {
        out.push(0xce);
        out.extend_from_slice(&v.to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&value.to_be_bytes());
    }
}

pub(crate) fn write_int(out: &mut Vec<u8>, value: i64) {
    if let Ok(unsigned) = u64::try_from(value) {
        write_uint(out, unsigned);
    } else if value >= -32 {
        out.push(value as u8);
    } else if let Ok(v) = i8::try_from(value) {
        out.extend_from_slice(&[0xd0, v as u8]);
    } else if let Ok(v) = i16::try_from(value) {
        out.push(0xd1);
        out.extend_from_slice(&v.to_be_bytes());
    } else if let Ok(v) = i32::try_from(value) {
        out.push(0xd2);
        out.extend_from_slice(&v.to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&value.to_be_bytes());
    }
}

fn write_f64(out: &mut Vec<u8>, value: f64) {
    out.push(0xcb);
    out.extend_from_slice(&value.to_be_bytes());
}

pub(crate) fn write_str(out: &mut Vec<u8>, text: &str) {
    let len = len_u32(text.len());
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else if let Ok(l) = u8::try_from(len) {
        out.extend_from_slice(&[0xd9, l]);
    } else if let Ok(l) = u16::try_from(len) {
        out.push(0xda);
        out.extend_from_slice(&l.to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&len.to_be_bytes());
    }
    out.extend_from_slice(text.as_bytes());
}

pub(crate) fn write_array_len(out: &mut Vec<u8>, len: usize) {
    let len = len_u32(len);
    if len < 16 {
        out.push(0x90 | len as u8);
    } else if let Ok(l) = u16::try_from(len) {
        out.push(0xdc);
        out.extend_from_slice(&l.to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

pub(crate) fn write_map_len(out: &mut Vec<u8>, len: usize) {
    let len = len_u32(len);
    if len < 16 {
        out.push(0x80 | len as u8);
    } else if let Ok(l) = u16::try_from(len) {
        out.push(0xde);
        out.extend_from_slice(&l.to_be_bytes());
    } else {
        out.push(0xdf);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

fn write_bin(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = len_u32(bytes.len());
    if let Ok(l) = u8::try_from(len) {
        out.extend_from_slice(&[0xc4, l]);
    } else if let Ok(l) = u16::try_from(len) {
        out.push(0xc5);
        out.extend_from_slice(&l.to_be_bytes());
    } else {
        out.push(0xc6);
        out.extend_from_slice(&len.to_be_bytes());
    }
    out.extend_from_slice(bytes);
}

/// The timestamp extension in the smallest of its three forms, as `@msgpack/msgpack` picks it.
fn write_timestamp(out: &mut Vec<u8>, seconds: i64, nanos: u32) {
    let ext = TIMESTAMP_EXT as u8;
    match u64::try_from(seconds) {
        Ok(secs) if nanos == 0 && secs <= u64::from(u32::MAX) => {
            out.extend_from_slice(&[0xd6, ext]);
            out.extend_from_slice(&(secs as u32).to_be_bytes());
        }
        Ok(secs) if secs < 1 << 34 => {
            out.extend_from_slice(&[0xd7, ext]);
            out.extend_from_slice(&((u64::from(nanos) << 34) | secs).to_be_bytes());
        }
        _ => {
            out.extend_from_slice(&[0xc7, 12, ext]);
            out.extend_from_slice(&nanos.to_be_bytes());
            out.extend_from_slice(&seconds.to_be_bytes());
        }
    }
}

pub(crate) fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => write_nil(out),
        Value::Bool(b) => write_bool(out, *b),
        Value::Number(n) => {
            if let Some(unsigned) = n.as_u64() {
                write_uint(out, unsigned);
            } else if let Some(signed) = n.as_i64() {
                write_int(out, signed);
            } else {
                // Without serde_json's arbitrary_precision every other number is an f64.
                write_f64(out, n.as_f64().unwrap_or(f64::NAN));
            }
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            write_array_len(out, items.len());
            for item in items {
                write_value(out, item);
            }
        }
        Value::Object(object) => {
            match typed::typed(value) {
                Some(Typed::Binary(bytes)) => return write_bin(out, &bytes),
                Some(Typed::Timestamp { seconds, nanos }) => {
                    return write_timestamp(out, seconds, nanos)
                }
                None => {}
            }
            write_map_len(out, object.len());
            for (key, item) in object {
                write_str(out, key);
                write_value(out, item);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    fn read(bytes: &[u8]) -> Result<Value, ProtocolError> {
        Reader::new(bytes).value(0)
    }

    fn written(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        write_value(&mut out, value);
        out
    }

    /// `@msgpack/msgpack` 2.8.0 `encode([0, 127, 128, 255, 256, 65535, 65536,
    /// 4294967295, 4294967296, -1, -32, -33, -128, -129, -32768, -32769,
    /// -2147483648, -2147483649, 0.5, "a" x 31, "b" x 32])`.
    const JS_SCALARS: &str = "dc0015007fcc80ccffcd0100cdffffce00010000ceffffffffcf0000000100000000ffe0d0dfd080d1ff7fd18000d2ffff7fffd280000000d3ffffffff7fffffffcb3fe0000000000000bf61616161616161616161616161616161616161616161616161616161616161d9206262626262626262626262626262626262626262626262626262626262626262";

    fn js_scalars_value() -> Value {
        json!([
            0,
            127,
            128,
            255,
            256,
            65535,
            65536,
            4294967295u64,
            4294967296u64,
            -1,
            -32,
            -33,
            -128,
            -129,
            -32768,
            -32769,
            -2147483648i64,
            -2147483649i64,
            0.5,
            "a".repeat(31),
            "b".repeat(32)
        ])
    }

    #[test]
    fn writes_the_same_bytes_as_the_javascript_encoder() {
        assert_eq!(written(&js_scalars_value()), hex(JS_SCALARS));
    }

    #[test]
    fn reads_what_the_javascript_encoder_writes() {
        assert_eq!(read(&hex(JS_SCALARS)), Ok(js_scalars_value()));
    }

    #[test]
    fn extreme_integers_round_trip() {
        for value in [
            json!(u64::MAX),
            json!(i64::MIN),
            json!(i64::MAX),
            json!(-31),
        ] {
            assert_eq!(read(&written(&value)), Ok(value));
        }
    }

    #[test]
    fn binary_stays_binary() {
        assert_eq!(read(&hex("c403010203")), Ok(typed::binary(&[1, 2, 3])));
        assert_eq!(read(&hex("c500020102")), Ok(typed::binary(&[1, 2])));
        assert_eq!(read(&hex("c400")), Ok(typed::binary(&[])));
        // Written back as bin8 (the smallest), whatever width it came in.
        assert_eq!(written(&typed::binary(&[1, 2])), hex("c4020102"));
        let long = vec![7; 300];
        assert_eq!(written(&typed::binary(&long))[..3], hex("c5012c")[..]);
        assert_eq!(
            read(&written(&typed::binary(&long))),
            Ok(typed::binary(&long))
        );
    }

    /// `@msgpack/msgpack` encodings of `new Date(Date.UTC(2024,0,2,3,4,5,678))`,
    /// `new Date(0)` and `new Date(-1)`: read as timestamps and written back byte for byte.
    #[test]
    fn timestamps_stay_timestamps() {
        for (bytes, seconds, nanos) in [
            ("d7ffa1a5d60065937d25", 1_704_164_645, 678_000_000),
            ("d6ff00000000", 0, 0),
            ("c70cff3b8b87c0ffffffffffffffff", -1, 999_000_000),
        ] {
            let value = typed::timestamp(seconds, nanos).expect("in range");
            assert_eq!(read(&hex(bytes)), Ok(value.clone()), "{bytes}");
            assert_eq!(written(&value), hex(bytes), "{bytes}");
        }
        // A 96-bit timestamp of a time the 64-bit form holds is read all the same.
        assert_eq!(
            read(&hex("c70cff000000000000000000000001")),
            Ok(typed::timestamp(1, 0).expect("in range"))
        );
        // Past 2106 (no 32-bit form) and past 2514 (no 64-bit form).
        for seconds in [5_000_000_000, 20_000_000_000] {
            let value = typed::timestamp(seconds, 0).expect("in range");
            assert_eq!(read(&written(&value)), Ok(value));
        }
        // ext8 announcing 12 bytes but carrying 4, and a 1-byte timestamp.
        assert!(matches!(
            read(&hex("c70cff00000000")),
            Err(ProtocolError::InvalidMessagePack(_))
        ));
        assert!(matches!(
            read(&hex("d4ff00")),
            Err(ProtocolError::InvalidMessagePack(_))
        ));
    }

    #[test]
    fn invalid_utf8_in_a_payload_marks_the_reader() {
        // ["\xc3\x28", "a"] and {"\xc3\x28": 1}
        for (bytes, expected) in [
            ("92a2c328a161", json!([null, "a"])),
            ("81a2c32801", json!({"": 1})),
        ] {
            let bytes = hex(bytes);
            let mut reader = Reader::new(&bytes);
            assert_eq!(reader.value(0), Ok(expected));
            assert!(reader.invalid_utf8());
        }
        let mut reader = Reader::new(b"\xa1a");
        assert_eq!(reader.value(0), Ok(json!("a")));
        assert!(!reader.invalid_utf8());
        // Outside payloads (targets, ids) such a str is an error.
        let bytes = hex("a2c328");
        assert_eq!(
            Reader::new(&bytes).str(),
            Err(ProtocolError::InvalidMessagePack(
                "string is not valid UTF-8"
            ))
        );
    }

    #[test]
    fn other_extensions_are_rejected() {
        assert_eq!(
            read(&hex("d40501")),
            Err(ProtocolError::UnsupportedExtension(5))
        );
    }

    #[test]
    fn map_keys() {
        // {1: "a", -2: "b", 1.5: "c", "k": "d"}
        assert_eq!(
            read(&hex("8401a161fea162cb3ff8000000000000a163a16ba164")),
            Ok(json!({"1": "a", "-2": "b", "1.5": "c", "k": "d"}))
        );
        // {nil: 1}
        assert!(matches!(
            read(&hex("81c001")),
            Err(ProtocolError::InvalidMessagePack(_))
        ));
        // {[]: 1}
        assert!(matches!(
            read(&hex("819001")),
            Err(ProtocolError::InvalidMessagePack(_))
        ));
    }

    #[test]
    fn non_finite_floats_become_null() {
        assert_eq!(read(&hex("cb7ff8000000000000")), Ok(Value::Null));
        assert_eq!(read(&hex("ca7f800000")), Ok(Value::Null));
        assert_eq!(read(&hex("ca3fc00000")), Ok(json!(1.5)));
    }

    #[test]
    fn structural_errors() {
        assert!(matches!(
            read(&[]),
            Err(ProtocolError::InvalidMessagePack(_))
        ));
        assert!(matches!(
            read(&[0xc1]),
            Err(ProtocolError::InvalidMessagePack(_))
        ));
        assert!(matches!(
            read(&hex("a3616263")[..3]),
            Err(ProtocolError::InvalidMessagePack(_))
        ));
        // A str that is not UTF-8 is not a structural error (see the test above).
        // An array claiming 2^32-1 elements in five bytes must fail, not allocate.
        assert!(matches!(
            read(&hex("ddffffffff")),
            Err(ProtocolError::InvalidMessagePack(_))
        ));
        let deep: Vec<u8> = std::iter::repeat_n(0x91, MAX_DEPTH + 1)
            .chain([0x01])
            .collect();
        assert_eq!(
            read(&deep),
            Err(ProtocolError::TooDeep { limit: MAX_DEPTH })
        );
        let ok: Vec<u8> = std::iter::repeat_n(0x91, MAX_DEPTH).chain([0x01]).collect();
        assert!(read(&ok).is_ok());
    }

    /// `rmpv` as an independent oracle: values it writes read back identically.
    #[test]
    fn agrees_with_rmpv() {
        use rmpv::Value as Mp;
        let sample = Mp::Array(vec![
            Mp::Nil,
            Mp::Boolean(true),
            Mp::from(-70_000i64),
            Mp::from(u64::MAX),
            Mp::F64(-2.25),
            Mp::String("é".repeat(200).into()),
            Mp::Map(vec![(Mp::from("k"), Mp::Array(vec![Mp::from(1); 70_000]))]),
            Mp::Binary(vec![1, 2, 3]),
            Mp::Ext(-1, vec![0, 0, 0, 1]),
        ]);
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &sample).unwrap();
        let value = read(&bytes).unwrap();
        assert_eq!(
            value,
            json!([
                null,
                true,
                -70000,
                u64::MAX,
                -2.25,
                "é".repeat(200),
                {"k": vec![1; 70_000]},
                typed::binary(&[1, 2, 3]),
                typed::timestamp(1, 0),
            ])
        );
        let back = rmpv::decode::read_value(&mut written(&value).as_slice()).unwrap();
        assert_eq!(back, sample);
    }
}
