//! One log line per request, with secrets in the query string redacted: `access_token`
//! (a JWT) and `id` (the SignalR connection token, which lets its holder use the connection).
//!
//! Parameter names are compared after the same decoding the query parser applies
//! (`form_urlencoded`: percent-escapes and `+`), so `access%5Ftoken` or `%69d`, which the
//! parser reads as `access_token` and `id`, are redacted too. Beyond what the parser honours,
//! names are also compared decoded again (double encoding), without regard to case and with
//! everything but letters and digits dropped (`id%00`, `Access-Token`), and any value
//! that decodes to something shaped like a JWT is redacted whatever its name: a client that
//! misspells a parameter still sent its secret, and redacting too much costs a reader little.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use std::borrow::Cow;
use std::time::Instant;

/// Query parameters whose values never reach a log line (`access_token` and `id`), as
/// [`normalized_name`] makes them (a test checks it).
const SECRET_PARAMS: [&str; 2] = ["accesstoken", "id"];

pub async fn log_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    // With the line filtered out (`log.level` above `info`), nothing is prepared for it: the
    // redaction allocates and parses the query, on every request.
    if !tracing::enabled!(target: "signet::http", tracing::Level::INFO) {
        return next.call(req).await;
    }
    let started = Instant::now();
    let method = req.method().clone();
    let path = redacted_target(req.path(), req.query_string()).into_owned();
    let result = next.call(req).await;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match &result {
        Ok(res) => tracing::info!(
            target: "signet::http",
            %method, path = %path, status = res.status().as_u16(), elapsed_ms, "request"
        ),
        Err(err) => tracing::info!(
            target: "signet::http",
            %method, path = %path, status = err.as_response_error().status_code().as_u16(),
            elapsed_ms, "request failed"
        ),
    }
    result
}

/// `path?query` with the values of secret parameters replaced by `[redacted]`. The names
/// are kept as sent; every other parameter is kept as sent.
pub fn redacted_target<'a>(path: &'a str, query: &str) -> Cow<'a, str> {
    if query.is_empty() {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len() + query.len() + 1);
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        if is_secret_pair(pair) {
            out.push_str(pair.split('=').next().unwrap_or(""));
            out.push_str("=[redacted]");
        } else {
            out.push_str(pair);
        }
    }
    Cow::Owned(out)
}

/// Whether one `name=value` piece of a query carries a secret, judged on what the query
/// parser makes of it.
fn is_secret_pair(pair: &str) -> bool {
    let Some((name, value)) = form_urlencoded::parse(pair.as_bytes()).next() else {
        return false;
    };
    let name = normalized_name(&name);
    SECRET_PARAMS.contains(&name.as_str()) || looks_like_jwt(&value)
}

/// A decoded parameter name decoded again while it still holds escapes (at most three more
/// times), then lower-cased with everything but letters and digits dropped, so that
/// `Access-Token` and `accessToken` compare equal to `access_token`.
fn normalized_name(decoded: &str) -> String {
    let mut name = Cow::Borrowed(decoded);
    for _ in 0..3 {
        if !name.contains('%') {
            break;
        }
        name = Cow::Owned(percent_decoded(&name));
    }
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// `text` with its percent-escapes decoded (`+` left alone: it was decoded already).
fn percent_decoded(text: &str) -> String {
    let escaped = text.replace('+', "%2B");
    form_urlencoded::parse(format!("n={escaped}").as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default()
}

/// Three non-empty base64url segments, the first a JSON object's encoding (`eyJ`).
fn looks_like_jwt(value: &str) -> bool {
    let mut segments = 0;
    for segment in value.trim().split('.') {
        if segment.is_empty()
            || !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'=')
        {
            return false;
        }
        segments += 1;
    }
    segments == 3 && value.trim().starts_with("eyJ")
}

#[cfg(test)]
mod tests {
    use super::{normalized_name, redacted_target, SECRET_PARAMS};

    #[test]
    fn the_secret_names_are_normalized_as_the_query_names_are() {
        let normalized = ["access_token", "id"].map(normalized_name);
        assert_eq!(normalized, SECRET_PARAMS.map(String::from));
    }

    #[test]
    fn secrets_are_redacted_and_the_rest_kept() {
        let out = redacted_target(
            "/hubs/home",
            "id=abc&access_token=eyJ.x.y&v=1&ACCESS_TOKEN=z",
        );
        assert_eq!(
            out,
            "/hubs/home?id=[redacted]&access_token=[redacted]&v=1&ACCESS_TOKEN=[redacted]"
        );
        assert_eq!(redacted_target("/healthz", ""), "/healthz");
    }

    #[test]
    fn names_are_compared_as_the_query_parser_decodes_them() {
        for (query, kept_name) in [
            ("access%5Ftoken=s3cret", "access%5Ftoken"),
            ("%61ccess_token=s3cret", "%61ccess_token"),
            ("%61ccess%5ftoken=s3cret", "%61ccess%5ftoken"),
            ("%69d=s3cret", "%69d"),
            ("%69%64=s3cret", "%69%64"),
            ("id+=s3cret", "id+"),
            ("+access_token=s3cret", "+access_token"),
            ("access_token==s3cret", "access_token"),
            ("%2561ccess_token=s3cret", "%2561ccess_token"),
            ("%252569d=s3cret", "%252569d"),
            ("id%00=s3cret", "id%00"),
            ("%20Access-Token=s3cret", "%20Access-Token"),
        ] {
            let out = redacted_target("/hubs/home", query);
            assert!(!out.contains("s3cret"), "{query} -> {out}");
            assert_eq!(out, format!("/hubs/home?{kept_name}=[redacted]"));
        }
        let out = redacted_target("/hubs/home", "id=a&negotiateVersion=1&id=b&x=%69d");
        assert_eq!(
            out,
            "/hubs/home?id=[redacted]&negotiateVersion=1&id=[redacted]&x=%69d"
        );
    }

    #[test]
    fn a_jwt_is_redacted_under_any_name() {
        let out = redacted_target("/hubs/home", "%2561ccess_token=eyJhbGci.eyJzdWIi.c2ln&v=1");
        assert_eq!(out, "/hubs/home?%2561ccess_token=[redacted]&v=1");
        let out = redacted_target("/x", "t=eyJhbGci%2EeyJzdWIi%2Ec2ln");
        assert_eq!(out, "/x?t=[redacted]");
        assert_eq!(redacted_target("/x", "t=eyJ.a"), "/x?t=eyJ.a");
    }
}
