//! Logging set-up: `tracing` with a human or JSON format chosen in configuration, and the audit
//! log ([`crate::audit`]) beside it: audit events leave the ordinary output for their own
//! JSON-lines sink.
//!
//! Tokens never reach a log line: request paths are logged through
//! [`crate::http::request_log`], which redacts them, and library internals that could print
//! raw request heads (actix's HTTP codec at trace level) are capped at `debug`. Errors any
//! client can cause (malformed HTTP requests) are not logged at the default levels.

use crate::audit::AuditLayer;
use crate::settings::{LogFormat, LogSettings};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Targets capped whatever the configured level, because at `trace` they print request heads.
const CAPPED_TARGETS: &str = "actix_http=debug,h2=info,mio=info";

/// actix's HTTP/1 dispatcher logs every malformed request (`stream error: ...`) at ERROR: any
/// client could flood the log, and an operator could not tell real errors from noise. Its
/// events are shown only when debug logging is asked for.
const DISPATCHER: &str = "actix_http::h1::dispatcher";

/// The filter for `level` (or `RUST_LOG` when set), with the caps above appended.
pub fn filter(level: &str) -> EnvFilter {
    let base = std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_string());
    let dispatcher = match EnvFilter::try_new(&base)
        .ok()
        .and_then(|f| f.max_level_hint())
    {
        Some(max) if max >= LevelFilter::DEBUG => "debug",
        _ => "off",
    };
    EnvFilter::try_new(format!("{base},{CAPPED_TARGETS},{DISPATCHER}={dispatcher}"))
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{CAPPED_TARGETS},{DISPATCHER}=off")))
}

/// Installs the global subscriber writing to `writer`, audit events as JSON lines on the same
/// writer. Returns false if one was installed already (tests start many servers in one process).
pub fn init<W>(settings: &LogSettings, writer: W, ansi: bool) -> bool
where
    W: for<'w> MakeWriter<'w> + Clone + Send + Sync + 'static,
{
    init_with_audit(settings, AuditLayer::to_log(writer.clone()), writer, ansi)
}

/// Installs the global subscriber: the log on `writer`, audit events (target `audit`) only
/// through `audit`. Returns false if one was installed already.
pub fn init_with_audit<W, A>(
    settings: &LogSettings,
    audit: AuditLayer<A>,
    writer: W,
    ansi: bool,
) -> bool
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    A: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let log = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(writer);
    let log = match settings.format {
        LogFormat::Human => log.boxed(),
        LogFormat::Json => log.json().flatten_event(true).boxed(),
    };
    let not_audit =
        tracing_subscriber::filter::filter_fn(|meta| meta.target() != crate::audit::TARGET);
    let only_audit =
        tracing_subscriber::filter::filter_fn(|meta| meta.target() == crate::audit::TARGET);
    tracing_subscriber::registry()
        .with(
            log.with_filter(filter(&settings.level))
                .with_filter(not_audit),
        )
        .with(audit.with_filter(only_audit))
        .try_init()
        .is_ok()
}
