//! Telemetry: `ReportTelemetry(envelope)` with message `{kind, data}`, signed like every other
//! message the device sends.

use crate::device::SimulatedDevice;
use serde_json::{json, Value};
use signet_protocol::envelope::{EnvelopeBuilder, MessageKey};

/// The hub method telemetry is reported to.
pub const TELEMETRY_TARGET: &str = "ReportTelemetry";

/// One report.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryReport {
    pub kind: &'static str,
    pub data: Value,
}

impl TelemetryReport {
    /// `state`: the lock, the light and the door counter, with the device's local label.
    pub fn state(device: &SimulatedDevice, name: &str) -> Self {
        let mut data = device.state();
        data["name"] = json!(name);
        Self {
            kind: "state",
            data,
        }
    }

    /// `temperature`: a reading in degrees Celsius.
    pub fn temperature(celsius: f64) -> Self {
        Self {
            kind: "temperature",
            data: json!({ "celsius": celsius }),
        }
    }

    /// The message as JSON text, exactly what is signed.
    pub fn message(&self) -> String {
        json!({ "kind": self.kind, "data": self.data }).to_string()
    }

    /// The `ReportTelemetry` envelope, signed with `key` for `hub_path`.
    pub fn seal(&self, key: &MessageKey, hub_path: &str) -> Value {
        EnvelopeBuilder::new(key, hub_path, TELEMETRY_TARGET).build(&self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signet_protocol::envelope::{
        derive_message_key, unix_now_ms, EnvelopeLimits, EnvelopeVerifier, InMemoryNonceStore,
    };
    use std::sync::Arc;

    #[tokio::test]
    async fn reports_are_signed_for_report_telemetry() {
        let key = derive_message_key(b"master", "device-session");
        let report = TelemetryReport::state(&SimulatedDevice::default(), "front door");
        let sealed = report.seal(&key, "/hubs/home");
        let verifier = EnvelopeVerifier::new(
            EnvelopeLimits::default(),
            Arc::new(InMemoryNonceStore::new(10)),
        );
        let verified = verifier
            .verify(
                &sealed,
                &key,
                "/hubs/home",
                TELEMETRY_TARGET,
                "s",
                unix_now_ms(),
            )
            .await
            .unwrap();
        assert_eq!(verified.command()["kind"], "state");
        assert_eq!(verified.command()["data"]["lock"], "locked");
        assert_eq!(verified.command()["data"]["name"], "front door");
        let text = TelemetryReport::temperature(21.5).message();
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({"kind": "temperature", "data": {"celsius": 21.5}})
        );
    }
}
