//! MessagePack's binary and timestamp values inside the hub's `serde_json::Value` model.
//!
//! The hub sees every argument and result as a `serde_json::Value`, which has no bytes and no
//! dates. So that a MessagePack client gets back what it sent (a `Uint8Array` as bin, a `Date`
//! as a timestamp) while a JSON client gets what ASP.NET Core writes for them (base64 and an
//! ISO 8601 string), the MessagePack reader stores them as a one-entry object under a reserved
//! key, and each encoder turns that object back into its own form:
//!
//! | value | in the model | MessagePack out | JSON out |
//! |---|---|---|---|
//! | bin | `{"\u0000signet:bin": "<base64>"}` | bin | `"<base64>"` |
//! | ext -1 | `{"\u0000signet:timestamp": [seconds, nanos]}` | timestamp (smallest width) | `"2024-01-02T03:04:05.678Z"` |
//!
//! The keys start with U+0000, which no real object key of a client uses; a JSON client that
//! sends such an object anyway is treated as having sent that binary or timestamp. Hub methods
//! that take a string, number or object reject these values like any other type mismatch; a
//! method taking any value (`Echo`) passes them through untouched.

use base64::Engine as _;
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;

const BINARY_KEY: &str = "\u{0}signet:bin";
const TIMESTAMP_KEY: &str = "\u{0}signet:timestamp";

/// A typed MessagePack value found in the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Typed {
    Binary(Vec<u8>),
    /// Unix time: whole seconds and nanoseconds (below one second).
    Timestamp {
        seconds: i64,
        nanos: u32,
    },
}

/// A MessagePack bin value in the model.
pub fn binary(bytes: &[u8]) -> Value {
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    Value::Object(
        [(BINARY_KEY.to_string(), Value::String(text))]
            .into_iter()
            .collect(),
    )
}

/// A MessagePack timestamp in the model; `None` when it has no ISO 8601 form (years outside
/// 0000..=9999, nanoseconds of a second or more), which JSON clients could not be sent.
pub fn timestamp(seconds: i64, nanos: u32) -> Option<Value> {
    format_iso8601(seconds, nanos)?;
    Some(Value::Object(
        [(
            TIMESTAMP_KEY.to_string(),
            serde_json::json!([seconds, nanos]),
        )]
        .into_iter()
        .collect(),
    ))
}

/// The typed value `value` stands for, if it is one.
pub fn typed(value: &Value) -> Option<Typed> {
    let object = value.as_object().filter(|object| object.len() == 1)?;
    let (key, inner) = object.iter().next()?;
    match key.as_str() {
        BINARY_KEY => base64::engine::general_purpose::STANDARD
            .decode(inner.as_str()?)
            .ok()
            .map(Typed::Binary),
        TIMESTAMP_KEY => {
            let [seconds, nanos] = inner.as_array()?.as_slice() else {
                return None;
            };
            let seconds = seconds.as_i64()?;
            let nanos = u32::try_from(nanos.as_u64()?).ok()?;
            format_iso8601(seconds, nanos)?;
            Some(Typed::Timestamp { seconds, nanos })
        }
        _ => None,
    }
}

/// What a JSON client is sent for a typed value: base64 for bytes (standard alphabet, padded,
/// as .NET writes `byte[]`), `Date.toISOString()` text for a timestamp.
fn json_text(value: &Value) -> Option<String> {
    match typed(value)? {
        Typed::Binary(bytes) => Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
        Typed::Timestamp { seconds, nanos } => format_iso8601(seconds, nanos),
    }
}

/// Serializes a model value for JSON clients, typed values as their JSON text.
pub struct JsonPayload<'a>(pub &'a Value);

impl Serialize for JsonPayload<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&JsonPayload(item))?;
                }
                seq.end()
            }
            Value::Object(object) => {
                if let Some(text) = json_text(self.0) {
                    return serializer.serialize_str(&text);
                }
                let mut map = serializer.serialize_map(Some(object.len()))?;
                for (key, item) in object {
                    map.serialize_entry(key, &JsonPayload(item))?;
                }
                map.end()
            }
            scalar => scalar.serialize(serializer),
        }
    }
}

/// Serializes a list of model values for JSON clients.
pub struct JsonPayloads<'a>(pub &'a [Value]);

impl Serialize for JsonPayloads<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for item in self.0 {
            seq.serialize_element(&JsonPayload(item))?;
        }
        seq.end()
    }
}

/// `Date.toISOString()` text for a Unix time (nine fraction digits when the nanoseconds are not
/// whole milliseconds); `None` outside years 0000..=9999 or for nanoseconds of a second or more.
fn format_iso8601(seconds: i64, nanos: u32) -> Option<String> {
    const FIRST: i64 = -62_167_219_200; // 0000-01-01T00:00:00Z
    const LAST: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    if !(FIRST..=LAST).contains(&seconds) || nanos >= 1_000_000_000 {
        return None;
    }
    let date_time = utc_date_time(seconds);
    Some(if nanos.is_multiple_of(1_000_000) {
        format!("{date_time}.{:03}Z", nanos / 1_000_000)
    } else {
        format!("{date_time}.{nanos:09}Z")
    })
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC, proleptic Gregorian) for Unix seconds, without fraction or zone:
/// the one civil-date conversion the crate has (timestamps here, the audit log, the CLI).
pub fn utc_date_time(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    // Civil date from a day count (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms").
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let (hour, minute, second) = (
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60,
    );
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn as_json(value: &Value) -> String {
        serde_json::to_string(&JsonPayload(value)).expect("serializes")
    }

    #[test]
    fn typed_values_are_recognised() {
        assert_eq!(
            typed(&binary(&[0, 1, 255])),
            Some(Typed::Binary(vec![0, 1, 255]))
        );
        assert_eq!(typed(&binary(&[])), Some(Typed::Binary(Vec::new())));
        let when = timestamp(1_704_164_645, 678_000_000).expect("in range");
        assert_eq!(
            typed(&when),
            Some(Typed::Timestamp {
                seconds: 1_704_164_645,
                nanos: 678_000_000
            })
        );
        // Ordinary objects, and reserved keys with the wrong content, are not typed values.
        for plain in [
            json!({"a": 1}),
            json!({"\u{0}signet:bin": "not base64!"}),
            json!({"\u{0}signet:bin": "AQI=", "other": 1}),
            json!({"\u{0}signet:timestamp": [1, 1_000_000_000]}),
            json!({"\u{0}signet:timestamp": "2024-01-02T03:04:05.678Z"}),
            json!("AQI="),
        ] {
            assert_eq!(typed(&plain), None, "{plain}");
        }
    }

    #[test]
    fn json_clients_get_base64_and_iso_strings() {
        let value = json!({
            "bytes": binary(&[1, 2, 3]),
            "when": timestamp(1_704_164_645, 678_000_000),
            "list": [binary(&[1, 2]), timestamp(0, 1), null, "text"],
            "plain": {"\u{0}signet:bin": "not base64!"},
        });
        let text = as_json(&value);
        let back: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(
            back,
            json!({
                "bytes": "AQID",
                "when": "2024-01-02T03:04:05.678Z",
                "list": ["AQI=", "1970-01-01T00:00:00.000000001Z", null, "text"],
                "plain": {"\u{0}signet:bin": "not base64!"},
            })
        );
        // Untyped values serialize exactly as serde_json writes them.
        let plain = json!({"a": [1, 2.5, -3, "x\u{1e}", {"b": null, "c": true}]});
        assert_eq!(as_json(&plain), plain.to_string());
    }

    #[test]
    fn timestamps_without_an_iso_form_are_refused() {
        assert_eq!(timestamp(253_402_300_800, 0), None);
        assert_eq!(timestamp(0, 1_000_000_000), None);
        assert!(timestamp(-62_167_219_200, 0).is_some());
    }

    #[test]
    fn iso_8601_text() {
        assert_eq!(
            format_iso8601(951_782_400, 1).as_deref(),
            Some("2000-02-29T00:00:00.000000001Z")
        );
        assert_eq!(
            format_iso8601(-62_167_219_200, 0).as_deref(),
            Some("0000-01-01T00:00:00.000Z")
        );
        assert_eq!(
            format_iso8601(253_402_300_799, 999_000_000).as_deref(),
            Some("9999-12-31T23:59:59.999Z")
        );
        assert_eq!(
            format_iso8601(-1, 999_000_000).as_deref(),
            Some("1969-12-31T23:59:59.999Z")
        );
        assert_eq!(format_iso8601(253_402_300_800, 0), None);
        assert_eq!(format_iso8601(0, 1_000_000_000), None);
    }
}
