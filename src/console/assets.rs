//! The console's files, compiled into the binary. The client modules come from `clients/js`, the
//! same files the Node tests and other pages use.

use sha2::{Digest, Sha256};
use std::sync::OnceLock;

pub struct Asset {
    pub body: &'static [u8],
    pub content_type: &'static str,
    etag: OnceLock<String>,
}

impl Asset {
    const fn new(body: &'static [u8], content_type: &'static str) -> Self {
        Self {
            body,
            content_type,
            etag: OnceLock::new(),
        }
    }

    /// A strong validator: the start of the body's SHA-256, quoted.
    pub fn etag(&self) -> &str {
        self.etag.get_or_init(|| {
            let digest = Sha256::digest(self.body);
            let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
            format!("\"{hex}\"")
        })
    }
}

const HTML: &str = "text/html; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

pub static INDEX: Asset = Asset::new(include_bytes!("assets/index.html"), HTML);

static CONSOLE: [(&str, Asset); 4] = [
    (
        "admin.js",
        Asset::new(include_bytes!("assets/admin.js"), JAVASCRIPT),
    ),
    (
        "console.js",
        Asset::new(include_bytes!("assets/console.js"), JAVASCRIPT),
    ),
    (
        "console.css",
        Asset::new(include_bytes!("assets/console.css"), CSS),
    ),
    (
        "icon.svg",
        Asset::new(include_bytes!("assets/icon.svg"), SVG),
    ),
];

static CLIENT: [(&str, Asset); 3] = [
    (
        "signet.js",
        Asset::new(include_bytes!("../../clients/js/signet.js"), JAVASCRIPT),
    ),
    (
        "hub-protocol.js",
        Asset::new(
            include_bytes!("../../clients/js/hub-protocol.js"),
            JAVASCRIPT,
        ),
    ),
    (
        "envelope.js",
        Asset::new(include_bytes!("../../clients/js/envelope.js"), JAVASCRIPT),
    ),
];

fn find(table: &'static [(&str, Asset)], name: &str) -> Option<&'static Asset> {
    table
        .iter()
        .find(|(file, _)| *file == name)
        .map(|(_, asset)| asset)
}

/// A file under `/console/`.
pub fn console_file(name: &str) -> Option<&'static Asset> {
    find(&CONSOLE, name)
}

/// A client module under `/js/`.
pub fn client_file(name: &str) -> Option<&'static Asset> {
    find(&CLIENT, name)
}
