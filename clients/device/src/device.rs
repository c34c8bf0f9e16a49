//! The simulated hardware: a door lock with its door, a dimmable light, and a thermometer.
//!
//! Commands: `LOCK`, `UNLOCK`, `OPEN_DOOR` (unlocks if needed and opens the door),
//! `LIGHT_ON` (optional `args.brightness`, 1 to 100), `LIGHT_OFF`. Anything else is answered
//! with status `error` and changes nothing.

use rand::Rng;
use serde::Serialize;
use serde_json::{json, Value};

/// How a command ended, as sent in the `CommandResult`'s `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandStatus {
    /// Executed.
    Ok,
    /// Understood as a command but not executed: unknown name or bad arguments.
    Error,
    /// Not executed because the envelope failed verification.
    Rejected,
}

/// What executing a command did.
impl CommandStatus {
    /// The wire spelling, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Rejected => "rejected",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: CommandStatus,
    pub result: Value,
    /// Whether the device's state changed (worth a `state` report right away).
    pub changed: bool,
}

impl Outcome {
    fn ok(result: Value, changed: bool) -> Self {
        Self {
            status: CommandStatus::Ok,
            result,
            changed,
        }
    }

    fn error(message: impl Into<String>) -> Self {
        Self {
            status: CommandStatus::Error,
            result: json!({ "error": message.into() }),
            changed: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LockState {
    Locked,
    Unlocked,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SimulatedDevice {
    lock: LockState,
    door_openings: u64,
    light_on: bool,
    brightness: u8,
    temperature: f64,
}

impl Default for SimulatedDevice {
    /// Locked, light off at full brightness, 21 °C: how a door should be found.
    fn default() -> Self {
        Self {
            lock: LockState::Locked,
            door_openings: 0,
            light_on: false,
            brightness: 100,
            temperature: 21.0,
        }
    }
}

/// The commands the device understands.
pub const COMMANDS: [&str; 5] = ["LOCK", "UNLOCK", "OPEN_DOOR", "LIGHT_ON", "LIGHT_OFF"];

impl SimulatedDevice {
    pub fn lock_state(&self) -> LockState {
        self.lock
    }

    pub fn light_on(&self) -> bool {
        self.light_on
    }

    pub fn door_openings(&self) -> u64 {
        self.door_openings
    }

    /// Executes `command` with `args` (`null` when absent).
    pub fn execute(&mut self, command: &str, args: &Value) -> Outcome {
        match command {
            "LOCK" => {
                let changed = self.lock != LockState::Locked;
                self.lock = LockState::Locked;
                Outcome::ok(json!({ "lock": self.lock }), changed)
            }
            "UNLOCK" => {
                let changed = self.lock != LockState::Unlocked;
                self.lock = LockState::Unlocked;
                Outcome::ok(json!({ "lock": self.lock }), changed)
            }
            "OPEN_DOOR" => {
                self.lock = LockState::Unlocked;
                self.door_openings += 1;
                Outcome::ok(
                    json!({ "door": "opened", "lock": self.lock, "doorOpenings": self.door_openings }),
                    true,
                )
            }
            "LIGHT_ON" => {
                let brightness = match brightness(args) {
                    Ok(level) => level.unwrap_or(self.brightness),
                    Err(message) => return Outcome::error(message),
                };
                let changed = !self.light_on || self.brightness != brightness;
                self.light_on = true;
                self.brightness = brightness;
                Outcome::ok(json!({ "light": "on", "brightness": brightness }), changed)
            }
            "LIGHT_OFF" => {
                let changed = self.light_on;
                self.light_on = false;
                Outcome::ok(json!({ "light": "off" }), changed)
            }
            other => Outcome::error(format!(
                "unknown command '{}'; this device understands {}",
                printable(other),
                COMMANDS.join(", ")
            )),
        }
    }

    /// The `data` of a `state` telemetry report.
    pub fn state(&self) -> Value {
        json!({
            "lock": self.lock,
            "light": if self.light_on { "on" } else { "off" },
            "brightness": self.brightness,
            "doorOpenings": self.door_openings,
        })
    }

    /// A new thermometer reading: a small random walk kept within 15..30 °C, one decimal.
    pub fn read_temperature(&mut self, rng: &mut impl Rng) -> f64 {
        let step: f64 = rng.random_range(-0.3..=0.3);
        self.temperature = (self.temperature + step).clamp(15.0, 30.0);
        (self.temperature * 10.0).round() / 10.0
    }
}

/// `args.brightness` when present: an integer from 1 to 100.
fn brightness(args: &Value) -> Result<Option<u8>, &'static str> {
    const INVALID: &str = "args.brightness must be an integer from 1 to 100";
    match args {
        Value::Null => Ok(None),
        Value::Object(map) => match map.get("brightness") {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_u64()
                .filter(|level| (1..=100).contains(level))
                .and_then(|level| u8::try_from(level).ok())
                .map(Some)
                .ok_or(INVALID),
        },
        _ => Err("args must be an object"),
    }
}

/// A command name as echoed back: at most 64 characters, control characters replaced.
fn printable(name: &str) -> String {
    name.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn lock_and_door() {
        let mut device = SimulatedDevice::default();
        assert_eq!(device.lock_state(), LockState::Locked);
        let open = device.execute("OPEN_DOOR", &Value::Null);
        assert_eq!(open.status, CommandStatus::Ok);
        assert_eq!(
            open.result,
            json!({"door": "opened", "lock": "unlocked", "doorOpenings": 1})
        );
        assert!(open.changed);
        let lock = device.execute("LOCK", &Value::Null);
        assert_eq!(lock.result, json!({"lock": "locked"}));
        assert!(lock.changed);
        assert!(!device.execute("LOCK", &Value::Null).changed);
        assert!(device.execute("UNLOCK", &Value::Null).changed);
        assert_eq!(device.state()["doorOpenings"], 1);
    }

    #[test]
    fn light_with_and_without_brightness() {
        let mut device = SimulatedDevice::default();
        let on = device.execute("LIGHT_ON", &json!({"brightness": 40}));
        assert_eq!(on.result, json!({"light": "on", "brightness": 40}));
        assert!(device.light_on());
        let again = device.execute("LIGHT_ON", &Value::Null);
        assert_eq!(again.result["brightness"], 40);
        assert!(!again.changed);
        for bad in [
            json!({"brightness": 0}),
            json!({"brightness": 101}),
            json!({"brightness": "x"}),
            json!([1]),
        ] {
            let outcome = device.execute("LIGHT_ON", &bad);
            assert_eq!(outcome.status, CommandStatus::Error, "{bad}");
            assert!(!outcome.changed);
        }
        assert_eq!(
            device.execute("LIGHT_OFF", &Value::Null).result,
            json!({"light": "off"})
        );
        assert_eq!(device.state()["light"], "off");
    }

    #[test]
    fn unknown_commands_are_errors_and_change_nothing() {
        let mut device = SimulatedDevice::default();
        let before = device.clone();
        let outcome = device.execute("SELF_DESTRUCT\n", &Value::Null);
        assert_eq!(outcome.status, CommandStatus::Error);
        assert!(outcome.result["error"]
            .as_str()
            .unwrap()
            .starts_with("unknown command 'SELF_DESTRUCT?'"));
        assert_eq!(device, before);
        // Names are case-sensitive, as the contract spells them.
        assert_eq!(
            device.execute("lock", &Value::Null).status,
            CommandStatus::Error
        );
    }

    #[test]
    fn status_names_match_the_wire() {
        for status in [
            CommandStatus::Ok,
            CommandStatus::Error,
            CommandStatus::Rejected,
        ] {
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                json!(status.as_str())
            );
        }
    }

    #[test]
    fn temperature_stays_plausible() {
        let mut device = SimulatedDevice::default();
        let mut rng = StdRng::seed_from_u64(9);
        for _ in 0..10_000 {
            let t = device.read_temperature(&mut rng);
            assert!((15.0..=30.0).contains(&t));
        }
    }
}
