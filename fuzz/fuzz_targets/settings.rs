//! The settings loader: TOML text, then (after a NUL byte) `KEY=VALUE` environment lines, loaded
//! and validated as at start-up. Any input is either settings or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signet::settings::load_from_str;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let (toml, env) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(toml) = std::str::from_utf8(toml) else {
        return;
    };
    let env: Vec<(String, String)> = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (format!("SIGNET__{k}"), v.to_string()))
        .collect();
    if let Err(error) = load_from_str(toml, Path::new("fuzz.toml"), env) {
        let _ = error.to_string();
    }
});
