//! The client's address, for throttling and audit events. It is the socket's peer, unless that
//! peer is one of `server.trusted_proxies`: then the configured forwarding header
//! (`X-Forwarded-For`, or `Forwarded` with its `for=` parameters) is read from its last entry
//! backwards, skipping entries that are themselves trusted proxies, and the first other entry is
//! the client (the address the outermost trusted proxy saw). An entry that is not an address
//! (`unknown`, an obfuscated name, garbage) ends the walk at the last trusted address. A peer
//! that is not a trusted proxy is the client whatever headers it sends.

use crate::settings::{ForwardedHeader, IpNet, ServerSettings};
use actix_web::http::header::{self, HeaderMap, HeaderName};
use actix_web::{web, HttpRequest};
use std::net::{IpAddr, SocketAddr};

/// How client addresses are found; registered as app data by `startup`.
#[derive(Debug, Clone)]
pub struct ClientAddresses {
    proxies: Vec<IpNet>,
    header: ForwardedHeader,
}

impl ClientAddresses {
    pub fn new(settings: &ServerSettings) -> Self {
        Self {
            proxies: settings.trusted_proxies.clone(),
            header: settings.forwarded_header,
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.proxies.iter().any(|net| net.contains(ip))
    }

    /// The client behind a request that arrived from `peer` with `headers`.
    pub fn client_of(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.is_trusted(client) {
            return client;
        }
        let name: HeaderName = match self.header {
            ForwardedHeader::XForwardedFor => HeaderName::from_static("x-forwarded-for"),
            ForwardedHeader::Forwarded => header::FORWARDED,
        };
        // Later header lines and later entries were added by nearer proxies.
        let values: Vec<&str> = headers
            .get_all(name)
            .map(|v| v.to_str().unwrap_or(""))
            .collect();
        for entry in values.iter().rev().flat_map(|v| v.rsplit(',')) {
            let hop = match self.header {
                ForwardedHeader::XForwardedFor => parse_node(entry),
                ForwardedHeader::Forwarded => forwarded_for(entry).and_then(parse_node),
            };
            let Some(hop) = hop else {
                return client;
            };
            client = hop.to_canonical();
            if !self.is_trusted(client) {
                return client;
            }
        }
        client
    }
}

/// The `for=` value of one `Forwarded` element (`for=192.0.2.1;proto=https`).
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim().trim_matches('"'))
    })
}

/// An address, with or without a port, IPv6 with or without brackets.
fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    text.strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .and_then(|t| t.parse::<IpAddr>().ok())
}

/// The client's address (see the module doc); `None` when the socket has no peer address.
pub fn client_addr(req: &HttpRequest) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    Some(match req.app_data::<web::Data<ClientAddresses>>() {
        Some(policy) => policy.client_of(peer, req.headers()),
        None => peer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn policy(proxies: &[&str], header: ForwardedHeader) -> ClientAddresses {
        ClientAddresses {
            proxies: proxies.iter().map(|p| p.parse().unwrap()).collect(),
            header,
        }
    }

    fn headers(name: &'static str, values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(
                HeaderName::from_static(name),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarding_headers_count_only_from_a_trusted_proxy() {
        let xff = ForwardedHeader::XForwardedFor;
        let p = policy(&["10.0.0.0/8"], xff);
        let h = headers("x-forwarded-for", &["203.0.113.9"]);
        assert_eq!(p.client_of(ip("10.1.1.1"), &h), ip("203.0.113.9"));
        assert_eq!(p.client_of(ip("198.51.100.1"), &h), ip("198.51.100.1"));
        assert_eq!(
            policy(&[], xff).client_of(ip("10.1.1.1"), &h),
            ip("10.1.1.1")
        );
    }

    #[test]
    fn the_walk_skips_trusted_hops_from_the_right() {
        let p = policy(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        // A client-supplied first entry is ignored: the nearest untrusted hop wins.
        let h = headers("x-forwarded-for", &["1.1.1.1, 203.0.113.9, 10.0.0.2"]);
        assert_eq!(p.client_of(ip("10.0.0.1"), &h), ip("203.0.113.9"));
        let h = headers(
            "x-forwarded-for",
            &["1.1.1.1", "203.0.113.9:4711, 10.0.0.2"],
        );
        assert_eq!(p.client_of(ip("10.0.0.1"), &h), ip("203.0.113.9"));
        // Only proxies: the leftmost; garbage: the last trusted hop.
        let h = headers("x-forwarded-for", &["10.0.0.7, 10.0.0.2"]);
        assert_eq!(p.client_of(ip("10.0.0.1"), &h), ip("10.0.0.7"));
        let h = headers("x-forwarded-for", &["1.1.1.1, nonsense, 10.0.0.2"]);
        assert_eq!(p.client_of(ip("10.0.0.1"), &h), ip("10.0.0.2"));
        assert_eq!(
            p.client_of(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
        // The other header is not read.
        let h = headers("forwarded", &["for=203.0.113.9"]);
        assert_eq!(p.client_of(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn forwarded_elements_give_their_for_parameter() {
        let p = policy(&["127.0.0.1", "::1"], ForwardedHeader::Forwarded);
        let h = headers(
            "forwarded",
            &["for=1.1.1.1, For=\"[2001:db8::7]:4711\";proto=https;by=x"],
        );
        assert_eq!(p.client_of(ip("::1"), &h), ip("2001:db8::7"));
        let h = headers("forwarded", &["for=unknown"]);
        assert_eq!(p.client_of(ip("::ffff:127.0.0.1"), &h), ip("127.0.0.1"));
        let h = headers("forwarded", &["proto=https"]);
        assert_eq!(p.client_of(ip("127.0.0.1"), &h), ip("127.0.0.1"));
    }
}
