//! The `tracing` set-up every Signet program shares (feature `logging`): a human or JSON format,
//! a level filter, and the caps on library targets that would otherwise log secrets or noise.
//! The server adds its audit sink beside this; the device uses [`init`] as it is.

use serde::{Deserialize, Serialize};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

/// Targets capped whatever the configured level, because at `trace` they print request heads
/// (and so `Authorization` headers and tokens in query strings).
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

/// The log output: lines in `format` on `writer`, filtered by [`filter`]`(level)`.
pub fn log_layer<S, W>(
    format: LogFormat,
    level: &str,
    writer: W,
    ansi: bool,
) -> impl Layer<S> + Send + Sync + 'static
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let log = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(writer);
    let log = match format {
        LogFormat::Human => log.boxed(),
        LogFormat::Json => log.json().flatten_event(true).boxed(),
    };
    log.with_filter(filter(level))
}

/// Installs [`log_layer`] as the global subscriber. Returns false if one was installed already.
pub fn init<W>(format: LogFormat, level: &str, writer: W, ansi: bool) -> bool
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::registry()
        .with(log_layer(format, level, writer, ansi))
        .try_init()
        .is_ok()
}
