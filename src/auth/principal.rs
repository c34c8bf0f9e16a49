//! Token claims and the authenticated principal built from them.

use serde::{Deserialize, Deserializer, Serialize};

/// The claims Signet reads from an access token. Roles may arrive as `role`, `roles` or the .NET
/// role claim URI, each a string or an array of strings; they are merged.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenClaims {
    pub sub: String,
    pub exp: i64,
    #[serde(default)]
    pub jti: Option<String>,
    #[serde(default)]
    pub sid: Option<String>,
    #[serde(default)]
    pub iat: Option<i64>,
    /// Owner user id, on device tokens.
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    role: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    roles: Vec<String>,
    /// The .NET role claim type, used by tokens minted with ASP.NET Core's `ClaimTypes.Role`.
    #[serde(
        default,
        rename = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
    )]
    #[serde(deserialize_with = "one_or_many")]
    dotnet_role: Vec<String>,
}

fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(deserializer)? {
        None => Vec::new(),
        Some(OneOrMany::One(role)) => vec![role],
        Some(OneOrMany::Many(roles)) => roles,
    })
}

/// Who is on the other end of a request or connection, as proven by a verified token.
/// Serializable both ways: a cluster node forwards the principal it verified (never the
/// token) to the node that owns the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Principal {
    /// The subject: a user's id, `device:<id>` for a device.
    pub sub: String,
    /// Roles, merged from the `role`, `roles` and .NET role claims.
    pub roles: Vec<String>,
    /// The token's id, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The login session, on tokens Signet issues.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// A device's owner (a user's `sub`), on device tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// A display name, when the token carries one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Issued-at, Unix seconds (absent on some external tokens).
    pub issued_at: Option<i64>,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
    /// `kid` of the key that verified the token.
    pub kid: String,
}

impl Principal {
    pub(crate) fn from_claims(claims: TokenClaims, kid: &str) -> Self {
        let mut roles = claims.role;
        for role in claims.roles.into_iter().chain(claims.dotnet_role) {
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        Self {
            sub: claims.sub,
            roles,
            jti: claims.jti,
            sid: claims.sid,
            owner: claims.owner,
            name: claims.name,
            issued_at: claims.iat,
            expires_at: claims.exp,
            kid: kid.to_string(),
        }
    }

    /// Whether the token grants `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// The id message keys are derived from: the login session (`sid`), or the token's `jti`
    /// when it has none (external issuers). `None` when the token has neither.
    pub fn message_session(&self) -> Option<&str> {
        self.sid.as_deref().or(self.jti.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOTNET_ROLE_CLAIM: &str = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role";

    #[test]
    fn roles_merge_from_every_claim_form() {
        let claims: TokenClaims = serde_json::from_value(serde_json::json!({
            "sub": "u1", "exp": 10,
            "role": "user",
            "roles": ["admin", "user"],
            DOTNET_ROLE_CLAIM: "device",
        }))
        .unwrap();
        let principal = Principal::from_claims(claims, "k");
        assert_eq!(principal.roles, vec!["user", "admin", "device"]);
    }
}
