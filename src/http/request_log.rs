//! One log line per request, with secrets in the query string redacted: `access_token`
//! (a JWT) and `id` (the SignalR connection token, which lets its holder use the connection).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use std::borrow::Cow;
use std::time::Instant;

/// Query parameters whose values never reach a log line.
const SECRET_QUERY_PARAMS: [&str; 2] = ["access_token", "id"];

pub async fn log_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
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

/// `path?query` with the values of secret parameters replaced by `[redacted]`.
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
        let name = pair.split('=').next().unwrap_or(pair);
        if SECRET_QUERY_PARAMS
            .iter()
            .any(|secret| name.eq_ignore_ascii_case(secret))
        {
            out.push_str(name);
            out.push_str("=[redacted]");
        } else {
            out.push_str(pair);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::redacted_target;

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
}
