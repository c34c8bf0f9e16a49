//! The envelope's wire format and its signing input.
//!
//! ```text
//! {"issuedAt": 1700000000000, "expiry": 1700000030000, "nonce": "<base64url>",
//!  "message": "<command as JSON text>", "signature": "<base64url, no padding>"}
//! ```
//!
//! The signature is HMAC-SHA256 over
//! `"signet-envelope-v1\n" + hubPath + "\n" + target + "\n" + issuedAt + "\n" + expiry + "\n" + nonce + "\n" + message`.
//! Every field but `message` is newline-free (decimal numbers, base64url, hub paths, method
//! names), and `message` comes last, so the joined text splits back into its fields one way only.

use super::key::MessageKey;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::Mac;
use rand::{Rng, RngCore};
use serde_json::{Map, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// First line of every signing input; a later format changes it so old signatures stop verifying.
pub const SIGNING_DOMAIN: &str = "signet-envelope-v1";
pub const NONCE_MIN_BYTES: usize = 16;
pub const NONCE_MAX_BYTES: usize = 64;
pub const SIGNATURE_BYTES: usize = 32;
/// Timestamps above 2^53 - 1 are refused: a JavaScript client could not hold them exactly, and
/// the decimal text it signs would then differ from the one the server rebuilds.
pub const MAX_TIMESTAMP_MS: u64 = (1 << 53) - 1;

// Unpadded base64url lengths of the byte limits above; checked before decoding so that a huge
// string is refused without being scanned.
const NONCE_MIN_CHARS: usize = 22;
const NONCE_MAX_CHARS: usize = 86;
const SIGNATURE_CHARS: usize = 43;

const FIELD_ISSUED_AT: &str = "issuedAt";
const FIELD_EXPIRY: &str = "expiry";
const FIELD_NONCE: &str = "nonce";
const FIELD_MESSAGE: &str = "message";
const FIELD_SIGNATURE: &str = "signature";
const FIELD_COUNT: usize = 5;

/// Why an envelope was refused as `malformed`. The detail is for logs; the client sees only the
/// code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MalformedReason {
    #[error("envelope is not a JSON object")]
    NotAnObject,
    #[error("envelope field `{0}` is missing")]
    MissingField(&'static str),
    #[error("envelope field `{0}` has the wrong JSON type")]
    WrongType(&'static str),
    #[error("envelope has a field outside the signed five")]
    UnknownField,
    #[error("envelope field `{0}` is above 2^53 - 1")]
    TimestampTooLarge(&'static str),
    #[error("nonce is not base64url without padding")]
    NonceEncoding,
    #[error("nonce must decode to {NONCE_MIN_BYTES}..={NONCE_MAX_BYTES} bytes")]
    NonceLength,
    #[error("signature is not base64url without padding")]
    SignatureEncoding,
    #[error("signature must decode to exactly {SIGNATURE_BYTES} bytes")]
    SignatureLength,
    #[error("expiry is not after issuedAt")]
    NonPositiveLifetime,
    #[error("message is longer than the configured maximum")]
    MessageTooLarge,
    #[error("message is not JSON text")]
    MessageNotJson,
    #[error("hub path or target contains a newline and cannot be signed unambiguously")]
    UnsignableBinding,
}

/// An envelope whose shape has been checked but whose signature, times and nonce have not.
///
/// Borrows its strings from the JSON value it was parsed from; only the signature is decoded,
/// into an inline array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub issued_at: u64,
    pub expiry: u64,
    pub nonce: &'a str,
    pub message: &'a str,
    pub signature: [u8; SIGNATURE_BYTES],
}

impl<'a> Envelope<'a> {
    /// Checks field presence, JSON types and the fixed sizes of nonce and signature.
    ///
    /// Fields other than the five are refused: nothing outside the signature may ride along
    /// looking authenticated. Lifetime and message size depend on configuration and are checked
    /// by the verifier.
    pub fn parse(value: &'a Value) -> Result<Self, MalformedReason> {
        let object = value.as_object().ok_or(MalformedReason::NotAnObject)?;
        if object.len() > FIELD_COUNT {
            return Err(MalformedReason::UnknownField);
        }
        let issued_at = timestamp_field(object, FIELD_ISSUED_AT)?;
        let expiry = timestamp_field(object, FIELD_EXPIRY)?;
        let nonce = string_field(object, FIELD_NONCE)?;
        let message = string_field(object, FIELD_MESSAGE)?;
        let signature_text = string_field(object, FIELD_SIGNATURE)?;
        // Five fields present and at most five in total: none can be unknown.

        check_nonce(nonce)?;
        let signature = decode_signature(signature_text)?;
        Ok(Self {
            issued_at,
            expiry,
            nonce,
            message,
            signature,
        })
    }

    /// The signing input of this envelope when sent to `target` on `hub_path`.
    pub fn signing_input<'s>(&'s self, hub_path: &'s str, target: &'s str) -> SigningInput<'s> {
        SigningInput {
            hub_path,
            target,
            issued_at: self.issued_at,
            expiry: self.expiry,
            nonce: self.nonce,
            message: self.message,
        }
    }
}

fn timestamp_field(
    object: &Map<String, Value>,
    name: &'static str,
) -> Result<u64, MalformedReason> {
    let value = object
        .get(name)
        .ok_or(MalformedReason::MissingField(name))?;
    // as_u64 is None for negatives and for any number written with a fraction or exponent.
    let number = value.as_u64().ok_or(MalformedReason::WrongType(name))?;
    if number > MAX_TIMESTAMP_MS {
        return Err(MalformedReason::TimestampTooLarge(name));
    }
    Ok(number)
}

fn string_field<'a>(
    object: &'a Map<String, Value>,
    name: &'static str,
) -> Result<&'a str, MalformedReason> {
    object
        .get(name)
        .ok_or(MalformedReason::MissingField(name))?
        .as_str()
        .ok_or(MalformedReason::WrongType(name))
}

fn check_nonce(nonce: &str) -> Result<(), MalformedReason> {
    if !(NONCE_MIN_CHARS..=NONCE_MAX_CHARS).contains(&nonce.len()) {
        return Err(MalformedReason::NonceLength);
    }
    let mut bytes = [0u8; NONCE_MAX_BYTES];
    // The engine refuses padding and non-zero trailing bits, so each byte string has exactly one
    // accepted spelling and the nonce store can key on the text.
    let decoded = URL_SAFE_NO_PAD
        .decode_slice(nonce, &mut bytes)
        .map_err(|_| MalformedReason::NonceEncoding)?;
    if !(NONCE_MIN_BYTES..=NONCE_MAX_BYTES).contains(&decoded) {
        return Err(MalformedReason::NonceLength);
    }
    Ok(())
}

fn decode_signature(text: &str) -> Result<[u8; SIGNATURE_BYTES], MalformedReason> {
    if text.len() != SIGNATURE_CHARS {
        return Err(MalformedReason::SignatureLength);
    }
    let mut bytes = [0u8; SIGNATURE_BYTES];
    let decoded = URL_SAFE_NO_PAD
        .decode_slice(text, &mut bytes)
        .map_err(|_| MalformedReason::SignatureEncoding)?;
    if decoded != SIGNATURE_BYTES {
        return Err(MalformedReason::SignatureLength);
    }
    Ok(bytes)
}

/// The fields a signature covers. Fed to the MAC piece by piece, so signing and verifying
/// never build the joined text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigningInput<'a> {
    pub hub_path: &'a str,
    pub target: &'a str,
    pub issued_at: u64,
    pub expiry: u64,
    pub nonce: &'a str,
    pub message: &'a str,
}

impl SigningInput<'_> {
    /// Whether the joined text can be split back into these fields. Hub paths and method names
    /// never contain newlines; one that does would let two different calls share a signature.
    pub fn is_unambiguous(&self) -> bool {
        !self.hub_path.contains('\n') && !self.target.contains('\n')
    }

    /// Writes the joined signing input into `buf`, replacing its contents. For tests, logs of
    /// test vectors and implementers comparing bytes; signing itself does not need it.
    pub fn write_to(&self, buf: &mut Vec<u8>) {
        buf.clear();
        self.feed(|part| buf.extend_from_slice(part));
    }

    /// HMAC-SHA256 of the signing input under `key`.
    pub fn mac(&self, key: &MessageKey) -> [u8; SIGNATURE_BYTES] {
        let mut mac = key.mac();
        self.feed(|part| mac.update(part));
        mac.finalize().into_bytes().into()
    }

    /// Checks `signature` against the signing input in constant time (`verify_slice` compares
    /// with `subtle`), so the time taken says nothing about how many bytes matched.
    pub fn verify(&self, key: &MessageKey, signature: &[u8; SIGNATURE_BYTES]) -> bool {
        let mut mac = key.mac();
        self.feed(|part| mac.update(part));
        mac.verify_slice(signature).is_ok()
    }

    fn feed(&self, mut sink: impl FnMut(&[u8])) {
        let mut issued_at = [0u8; 20];
        let mut expiry = [0u8; 20];
        sink(SIGNING_DOMAIN.as_bytes());
        sink(b"\n");
        sink(self.hub_path.as_bytes());
        sink(b"\n");
        sink(self.target.as_bytes());
        sink(b"\n");
        sink(decimal(self.issued_at, &mut issued_at));
        sink(b"\n");
        sink(decimal(self.expiry, &mut expiry));
        sink(b"\n");
        sink(self.nonce.as_bytes());
        sink(b"\n");
        sink(self.message.as_bytes());
    }
}

/// Writes `n` in decimal at the end of `buf` (20 digits hold any u64) and returns the digits.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        // n % 10 < 10, so the cast cannot truncate.
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[start..]
}

/// The base64url signature of an envelope, for the server signing envelopes it forwards to
/// devices. `hub_path` and `target` must not contain newlines.
pub fn sign(
    key: &MessageKey,
    hub_path: &str,
    target: &str,
    issued_at: u64,
    expiry: u64,
    nonce: &str,
    message: &str,
) -> String {
    let input = SigningInput {
        hub_path,
        target,
        issued_at,
        expiry,
        nonce,
        message,
    };
    URL_SAFE_NO_PAD.encode(input.mac(key))
}

/// Milliseconds since the Unix epoch by the system clock; 0 if the clock is before 1970.
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Lifetime of envelopes made by [`EnvelopeBuilder`] unless set: half the verifier's default
/// maximum, leaving room for clock skew and transit.
pub const DEFAULT_BUILD_LIFETIME: Duration = Duration::from_secs(30);

/// Makes fresh signed envelopes: a random nonce, `issuedAt` now and `expiry` one lifetime later.
///
/// ```
/// use signet_protocol::envelope::{derive_message_key, EnvelopeBuilder};
/// let key = derive_message_key(b"master key bytes", "session-1");
/// let envelope = EnvelopeBuilder::new(&key, "/hubs/home", "CommandResult")
///     .build(r#"{"device":"lamp-1","ok":true}"#);
/// assert!(envelope["signature"].is_string());
/// ```
#[derive(Debug, Clone)]
pub struct EnvelopeBuilder<'a> {
    key: &'a MessageKey,
    hub_path: &'a str,
    target: &'a str,
    lifetime: Duration,
    issued_at: Option<u64>,
}

impl<'a> EnvelopeBuilder<'a> {
    pub fn new(key: &'a MessageKey, hub_path: &'a str, target: &'a str) -> Self {
        Self {
            key,
            hub_path,
            target,
            lifetime: DEFAULT_BUILD_LIFETIME,
            issued_at: None,
        }
    }

    /// Time between `issuedAt` and `expiry`; keep it within the receiver's maximum lifetime.
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Issue time in Unix ms instead of the system clock, for tests and replays of recorded time.
    pub fn issued_at(mut self, unix_ms: u64) -> Self {
        self.issued_at = Some(unix_ms);
        self
    }

    /// Signs `message` exactly as given and returns the envelope as JSON.
    pub fn build(&self, message: &str) -> Value {
        let issued_at = self.issued_at.unwrap_or_else(unix_now_ms);
        let lifetime_ms = u64::try_from(self.lifetime.as_millis()).unwrap_or(u64::MAX);
        let expiry = issued_at.saturating_add(lifetime_ms);
        let nonce = random_nonce();
        let signature = sign(
            self.key,
            self.hub_path,
            self.target,
            issued_at,
            expiry,
            &nonce,
            message,
        );
        serde_json::json!({
            FIELD_ISSUED_AT: issued_at,
            FIELD_EXPIRY: expiry,
            FIELD_NONCE: nonce,
            FIELD_MESSAGE: message,
            FIELD_SIGNATURE: signature,
        })
    }
}

/// 16 to 32 bytes from the thread-local CSPRNG, base64url without padding.
fn random_nonce() -> String {
    let mut rng = rand::rng();
    let len = rng.random_range(NONCE_MIN_BYTES..=32);
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes[..len]);
    URL_SAFE_NO_PAD.encode(&bytes[..len])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::derive_message_key;
    use serde_json::json;

    fn valid() -> Value {
        json!({
            "issuedAt": 1_700_000_000_000u64,
            "expiry": 1_700_000_030_000u64,
            "nonce": "AAAAAAAAAAAAAAAAAAAAAA",
            "message": "{}",
            "signature": URL_SAFE_NO_PAD.encode([7u8; 32]),
        })
    }

    fn with(field: &str, value: Value) -> Value {
        let mut envelope = valid();
        envelope[field] = value;
        envelope
    }

    #[test]
    fn parses_a_well_formed_envelope() {
        let value = valid();
        let envelope = Envelope::parse(&value).unwrap();
        assert_eq!(envelope.issued_at, 1_700_000_000_000);
        assert_eq!(envelope.expiry, 1_700_000_030_000);
        assert_eq!(envelope.nonce, "AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(envelope.message, "{}");
        assert_eq!(envelope.signature, [7u8; 32]);
    }

    #[test]
    fn refuses_wrong_shapes() {
        let cases = [
            (json!([]), MalformedReason::NotAnObject),
            (
                with("issuedAt", json!(-1)),
                MalformedReason::WrongType("issuedAt"),
            ),
            (
                with("issuedAt", json!(1.5)),
                MalformedReason::WrongType("issuedAt"),
            ),
            (
                with("expiry", json!("1")),
                MalformedReason::WrongType("expiry"),
            ),
            (
                with("expiry", json!(1u64 << 53)),
                MalformedReason::TimestampTooLarge("expiry"),
            ),
            (
                with("message", json!({})),
                MalformedReason::WrongType("message"),
            ),
            (with("extra", json!(1)), MalformedReason::UnknownField),
            (with("nonce", json!("AAAA")), MalformedReason::NonceLength),
            (
                with("nonce", json!("AAAAAAAAAAAAAAAAAAAAAA==")),
                MalformedReason::NonceEncoding,
            ),
            (
                with("nonce", json!("AAAAAAAAAAAAAAAAAAAA+/")),
                MalformedReason::NonceEncoding,
            ),
            (
                with("nonce", json!("A".repeat(87))),
                MalformedReason::NonceLength,
            ),
            (
                with("signature", json!(URL_SAFE_NO_PAD.encode([7u8; 31]))),
                MalformedReason::SignatureLength,
            ),
            (
                with(
                    "signature",
                    json!(format!("{}=", URL_SAFE_NO_PAD.encode([7u8; 32]))),
                ),
                MalformedReason::SignatureLength,
            ),
        ];
        for (value, reason) in cases {
            assert_eq!(Envelope::parse(&value).unwrap_err(), reason, "{value}");
        }
        let mut missing = valid();
        missing.as_object_mut().unwrap().remove("nonce");
        assert_eq!(
            Envelope::parse(&missing).unwrap_err(),
            MalformedReason::MissingField("nonce")
        );
        // Five fields, one of them unknown: reported as the missing one it displaced.
        missing["other"] = json!(1);
        assert_eq!(
            Envelope::parse(&missing).unwrap_err(),
            MalformedReason::MissingField("nonce")
        );
    }

    #[test]
    fn accepts_nonces_at_both_size_limits() {
        for len in [NONCE_MIN_BYTES, NONCE_MAX_BYTES] {
            let value = with("nonce", json!(URL_SAFE_NO_PAD.encode(vec![1u8; len])));
            assert!(Envelope::parse(&value).is_ok(), "{len} bytes");
        }
        let short = with("nonce", json!(URL_SAFE_NO_PAD.encode([1u8; 15])));
        assert_eq!(
            Envelope::parse(&short).unwrap_err(),
            MalformedReason::NonceLength
        );
        let long = with("nonce", json!(URL_SAFE_NO_PAD.encode([1u8; 65])));
        assert_eq!(
            Envelope::parse(&long).unwrap_err(),
            MalformedReason::NonceLength
        );
    }

    #[test]
    fn signing_input_joins_fields_with_newlines() {
        let input = SigningInput {
            hub_path: "/hubs/home",
            target: "SendCommand",
            issued_at: 0,
            expiry: u64::MAX,
            nonce: "bm9uY2U",
            message: "line one\nline two",
        };
        let mut buf = b"left over".to_vec();
        input.write_to(&mut buf);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "signet-envelope-v1\n/hubs/home\nSendCommand\n0\n18446744073709551615\nbm9uY2U\nline one\nline two"
        );
    }

    #[test]
    fn incremental_mac_equals_mac_of_joined_text() {
        let key = derive_message_key(b"master", "s");
        let input = SigningInput {
            hub_path: "/hubs/home",
            target: "SendCommand",
            issued_at: 1_700_000_000_000,
            expiry: 1_700_000_030_000,
            nonce: "AAAAAAAAAAAAAAAAAAAAAA",
            message: "{\"a\":1}",
        };
        let mut joined = Vec::new();
        input.write_to(&mut joined);
        let mut mac = key.mac();
        mac.update(&joined);
        let expected: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(input.mac(&key), expected);
        assert!(input.verify(&key, &expected));
    }

    #[test]
    fn builder_makes_a_parseable_envelope_that_verifies() {
        let key = derive_message_key(b"master", "s");
        let value = EnvelopeBuilder::new(&key, "/hubs/home", "CommandResult")
            .lifetime(Duration::from_secs(10))
            .issued_at(1_000)
            .build("{\"ok\":true}");
        let envelope = Envelope::parse(&value).unwrap();
        assert_eq!(envelope.issued_at, 1_000);
        assert_eq!(envelope.expiry, 11_000);
        assert_eq!(envelope.message, "{\"ok\":true}");
        let input = envelope.signing_input("/hubs/home", "CommandResult");
        assert!(input.verify(&key, &envelope.signature));
    }

    #[test]
    fn builder_nonces_are_random_and_in_range() {
        let key = derive_message_key(b"master", "s");
        let builder = EnvelopeBuilder::new(&key, "/hubs/home", "CommandResult");
        let a = builder.build("{}");
        let b = builder.build("{}");
        assert_ne!(a["nonce"], b["nonce"]);
        for _ in 0..50 {
            let value = builder.build("{}");
            let nonce = value["nonce"].as_str().unwrap();
            let len = URL_SAFE_NO_PAD.decode(nonce).unwrap().len();
            assert!((NONCE_MIN_BYTES..=32).contains(&len));
        }
    }

    #[test]
    fn decimal_formats_edges() {
        let mut buf = [0u8; 20];
        assert_eq!(decimal(0, &mut buf), b"0");
        assert_eq!(decimal(10, &mut buf), b"10");
        assert_eq!(decimal(u64::MAX, &mut buf), u64::MAX.to_string().as_bytes());
    }
}
