//! The audit log: security-relevant events as JSON lines with a stable schema (documented in
//! the README, "Audit log").
//!
//! Code records an audit event as a `tracing` event with target `audit` and an `event` field
//! naming it; [`AuditLayer`] takes every such event out of the ordinary log output and writes
//! it as one JSON object per line, either on the log stream or to a file rotated by size.
//! Fields are what the call site recorded (`outcome`, `sub`, `client`, `connection`...); the
//! call sites never pass a token, and name a connection by its log id.

use crate::settings::{AuditOutput, AuditSettings};
use serde_json::{Map, Value};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// The `tracing` target of audit events.
pub const TARGET: &str = "audit";

/// Where the JSON lines go.
enum Sink<W> {
    Log(W),
    File(Mutex<RotatingFile>),
}

/// Writes audit events as JSON lines; see the module documentation.
pub struct AuditLayer<W> {
    sink: Sink<W>,
}

impl<W> AuditLayer<W> {
    /// Audit lines on the log stream `writer`.
    pub fn to_log(writer: W) -> Self {
        Self {
            sink: Sink::Log(writer),
        }
    }

    /// Audit lines as `settings` say: on `writer` (the log stream) or in the audit file.
    pub fn new(settings: &AuditSettings, data_dir: &Path, writer: W) -> std::io::Result<Self> {
        Ok(match settings.output {
            AuditOutput::Log => Self::to_log(writer),
            AuditOutput::File => {
                if settings.file.is_none() {
                    // The default file is in the data directory, which must stay private.
                    crate::store::ensure_private_dir(data_dir)?;
                }
                Self {
                    sink: Sink::File(Mutex::new(RotatingFile::open(
                        settings.file_path(data_dir),
                        settings.max_file_bytes,
                        settings.max_files,
                    )?)),
                }
            }
        })
    }
}

impl<S, W> Layer<S> for AuditLayer<W>
where
    S: Subscriber,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != TARGET {
            return;
        }
        let mut line = render(event);
        line.push('\n');
        match &self.sink {
            Sink::Log(writer) => {
                let _ = writer.make_writer().write_all(line.as_bytes());
            }
            Sink::File(file) => {
                if let Ok(mut file) = file.lock() {
                    if let Err(err) = file.write_line(line.as_bytes()) {
                        // Not through tracing: this layer is part of it.
                        eprintln!("signet: cannot write the audit file: {err}");
                    }
                }
            }
        }
    }
}

/// `{"ts":..,"target":"audit","event":..,<fields>..,"message":..}`.
fn render(event: &Event<'_>) -> String {
    let mut fields = Fields(Map::new());
    event.record(&mut fields);
    let mut out = Map::new();
    out.insert("ts".into(), Value::String(rfc3339_now()));
    out.insert("target".into(), Value::String(TARGET.into()));
    let mut fields = fields.0;
    if let Some(name) = fields.remove("event") {
        out.insert("event".into(), name);
    }
    out.extend(fields);
    Value::Object(out).to_string()
}

struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.into()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::Bool(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
}

/// The current UTC time as `2026-01-02T03:04:05.678Z`.
fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(now.as_secs() as i64, now.subsec_millis())
}

fn rfc3339(secs: i64, millis: u32) -> String {
    format!(
        "{}.{millis:03}Z",
        crate::protocol::typed::utc_date_time(secs)
    )
}

/// An append-only file (mode 0600) that is renamed to `<file>.1` (shifting older ones up to
/// `<file>.<max_files>`, the oldest deleted) before a line would take it past `max_bytes`.
struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    max_files: u32,
}

impl RotatingFile {
    fn open(path: PathBuf, max_bytes: u64, max_files: u32) -> std::io::Result<Self> {
        let file = Self::open_append(&path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path,
            file,
            size,
            max_bytes,
            max_files,
        })
    }

    fn open_append(path: &Path) -> std::io::Result<File> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let _ = std::fs::remove_file(self.rotated(self.max_files));
        for n in (1..self.max_files).rev() {
            let from = self.rotated(n);
            if from.exists() {
                std::fs::rename(&from, self.rotated(n + 1))?;
            }
        }
        std::fs::rename(&self.path, self.rotated(1))?;
        self.file = Self::open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_timestamps() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(1_798_761_599, 999), "2026-12-31T23:59:59.999Z");
    }

    #[test]
    fn rotates_by_size_and_keeps_max_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("audit.log");
        let mut file = RotatingFile::open(path.clone(), 25, 2).expect("opens");
        for i in 0..5 {
            file.write_line(format!("{{\"line\":{i}}}\n").as_bytes())
                .expect("writes");
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        // 11 bytes a line, two lines a file.
        assert_eq!(read(&path), "{\"line\":4}\n");
        assert_eq!(read(&file.rotated(1)), "{\"line\":2}\n{\"line\":3}\n");
        assert_eq!(read(&file.rotated(2)), "{\"line\":0}\n{\"line\":1}\n");
        assert!(!file.rotated(3).exists());
        for _ in 0..2 {
            file.write_line(b"{\"line\":9}\n").expect("writes");
        }
        assert_eq!(read(&file.rotated(2)), "{\"line\":2}\n{\"line\":3}\n");
    }
}
