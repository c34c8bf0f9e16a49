//! Logging set-up: `tracing` with a human or JSON format chosen in configuration, and the audit
//! log (`audit`) beside it: audit events leave the ordinary output for their own
//! JSON-lines sink.
//!
//! Tokens never reach a log line: request paths are logged through
//! [`crate::http::request_log`], which redacts them, and library internals that could print
//! raw request heads (actix's HTTP codec at trace level) are capped at `debug`. Errors any
//! client can cause (malformed HTTP requests) are not logged at the default levels.

use crate::audit::AuditLayer;
use crate::settings::LogSettings;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Logging to standard output as `signet serve` does: the `[log]` format and level, audit
/// events (`[audit]`) on standard output or in their own rotated file, colours on a terminal.
/// Returns `Ok(false)` if a global subscriber was installed already (it is kept), an error if
/// the audit file cannot be opened.
pub fn init_logging(settings: &crate::settings::Settings) -> std::io::Result<bool> {
    use std::io::IsTerminal;
    let ansi = std::io::stdout().is_terminal();
    let audit = AuditLayer::new(&settings.audit, &settings.server.data_dir, std::io::stdout)?;
    Ok(init_with_audit(&settings.log, audit, std::io::stdout, ansi))
}

/// Installs the global subscriber writing to `writer`, audit events as JSON lines on the same
/// writer. Returns false if one was installed already (tests start many servers in one process).
/// For the integration tests that capture the log (`tests/logging.rs`) only.
#[cfg(feature = "internals")]
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
    let log = signet_protocol::logging::log_layer(settings.format, &settings.level, writer, ansi);
    let not_audit =
        tracing_subscriber::filter::filter_fn(|meta| meta.target() != crate::audit::TARGET);
    let only_audit =
        tracing_subscriber::filter::filter_fn(|meta| meta.target() == crate::audit::TARGET);
    tracing_subscriber::registry()
        .with(log.with_filter(not_audit))
        .with(audit.with_filter(only_audit))
        .try_init()
        .is_ok()
}
