//! What a negotiate or connect request's URL and headers are parsed into: query parameters
//! (the token, connection id, `negotiateVersion`), the request log's redaction of them, and the
//! client address behind a trusted proxy (`X-Forwarded-For`, RFC 7239 `Forwarded`).
//!
//! Invariant: a parameter the server would read as `access_token` or `id` is always redacted
//! in the log line.
#![no_main]

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use signet::auth::query_param;
use signet::http::request_log::redacted_target;
use signet::http::ClientAddresses;
use signet::settings::{ForwardedHeader, ServerSettings};
use std::net::{IpAddr, Ipv4Addr};

const PATH: &str = "/hubs/home/negotiate";

fn check_query(query: &str) {
    for name in [
        "access_token",
        "id",
        "negotiateVersion",
        "useStatefulReconnect",
    ] {
        let _ = query_param(query, name);
    }
    let logged = redacted_target(PATH, query);
    if query.is_empty() {
        assert_eq!(logged, PATH);
        return;
    }
    let pieces = logged
        .strip_prefix(PATH)
        .and_then(|rest| rest.strip_prefix('?'))
        .expect("the path is kept");
    let logged_pieces: Vec<&str> = pieces.split('&').collect();
    let sent_pieces: Vec<&str> = query.split('&').collect();
    assert_eq!(logged_pieces.len(), sent_pieces.len(), "pieces kept");
    for (sent, logged) in sent_pieces.iter().zip(&logged_pieces) {
        // What the query parser makes of this piece on its own.
        let Some(value) = query_param(sent, "access_token").or_else(|| query_param(sent, "id"))
        else {
            continue;
        };
        assert!(
            logged.ends_with("=[redacted]"),
            "secret {value:?} from {sent:?} logged as {logged:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    // Query first, then headers, separated by a NUL byte.
    let (query, headers) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    if let Ok(query) = std::str::from_utf8(query) {
        check_query(query);
    }

    let mut map = HeaderMap::new();
    for line in headers.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(&line[colon + 1..]),
        ) else {
            continue;
        };
        map.append(name, value);
    }
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    for header in [ForwardedHeader::XForwardedFor, ForwardedHeader::Forwarded] {
        let settings = ServerSettings {
            trusted_proxies: vec!["127.0.0.0/8".parse().expect("network")],
            forwarded_header: header,
            ..ServerSettings::default()
        };
        let _ = ClientAddresses::new(&settings).client_of(peer, &map);
    }
});
