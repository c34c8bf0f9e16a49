//! A secret that cannot be printed: `Debug` and `Serialize` show a placeholder, there is no
//! `Display`. The server's settings, the device's key and the load generator's copies of the
//! server's secrets all hold one.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Secret bytes. `Debug` and `Serialize` print a placeholder; there is no `Display`.
///
/// A secret's bytes are the UTF-8 bytes of its text (trailing white space trimmed), the same
/// convention as ASP.NET Core's `SymmetricSecurityKey(Encoding.UTF8.GetBytes(...))`, so a secret
/// shared with a .NET issuer verifies the same tokens.
#[derive(Clone)]
pub struct Secret(Box<[u8]>);

impl Secret {
    pub fn new(bytes: impl Into<Box<[u8]>>) -> Self {
        Self(bytes.into())
    }

    pub fn from_text(text: &str) -> Self {
        Self(text.trim_end().as_bytes().into())
    }

    /// The secret bytes. Named so that every use stands out in review.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

const REDACTED: &str = "[redacted]";

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(Self::from_text(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_serialize_never_show_the_value() {
        let secret = Secret::from_text("super-secret-value-that-is-long-enough");
        assert!(!format!("{secret:?}").contains("super"));
        let json = serde_json::to_string(&secret).unwrap();
        assert!(!json.contains("super"));
    }
}
