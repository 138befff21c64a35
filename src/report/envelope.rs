//! The JSON envelope every command's summary (`segment`, `eval`, `bench`)
//! starts with, so one reader handles all of them:
//!
//! ```json
//! {
//!   "schema_version": 1,
//!   "command": "segment",
//!   "engine": {"name": "segvol", "version": "0.1.0"},
//!   "device": "cpu (16 threads, f32)",
//!   "host": {"cpu_model": "AMD EPYC 7R13 Processor", "cpus": 16, "os": "linux", "arch": "x86_64"},
//!   ...the command's own fields...
//! }
//! ```
//!
//! `schema_version` changes when a field is renamed or removed or changes
//! meaning; added fields keep it. `docs/OUTPUTS.md` describes each body.

use serde_json::{json, Map, Value};

/// The version of the summary layout (the envelope and the bodies).
pub const SCHEMA_VERSION: u32 = 1;

/// The envelope's keys; a body must not use them.
pub const ENVELOPE_KEYS: [&str; 5] = ["schema_version", "command", "engine", "device", "host"];

/// The CPU's model name: /proc/cpuinfo's `model name` (x86) or `Model` /
/// `Hardware` (Arm boards); `None` where the system does not say.
pub fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    ["model name", "Model", "Hardware", "cpu model"]
        .iter()
        .find_map(|key| {
            info.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == *key && !v.trim().is_empty()).then(|| v.trim().to_string())
            })
        })
}

/// The envelope for `command` run on `device` (the backend's description).
pub fn envelope(command: &str, device: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("schema_version".into(), json!(SCHEMA_VERSION));
    m.insert("command".into(), json!(command));
    m.insert(
        "engine".into(),
        json!({"name": "segvol", "version": env!("CARGO_PKG_VERSION")}),
    );
    m.insert("device".into(), json!(device));
    m.insert(
        "host".into(),
        json!({
            "cpu_model": cpu_model(),
            "cpus": std::thread::available_parallelism().map(|n| n.get()).ok(),
            "os": std::env::consts::OS,
            "arch": std::env::consts::ARCH,
        }),
    );
    m
}

/// The envelope followed by `body`'s fields (an object). A body field that
/// reuses an envelope key is a programming error and panics in debug builds;
/// in release builds the envelope's value wins.
pub fn wrap(command: &str, device: &str, body: Value) -> Value {
    let mut m = envelope(command, device);
    if let Value::Object(b) = body {
        for (k, v) in b {
            debug_assert!(
                !ENVELOPE_KEYS.contains(&k.as_str()),
                "body key {k} clashes with the envelope"
            );
            m.entry(k).or_insert(v);
        }
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_comes_first_and_keeps_the_body() {
        let v = wrap("eval", "cpu (2 threads, f32)", json!({"classes": [1, 2]}));
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 6);
        assert_eq!(v["schema_version"], SCHEMA_VERSION);
        assert_eq!(v["command"], "eval");
        assert_eq!(v["engine"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["device"], "cpu (2 threads, f32)");
        assert_eq!(v["classes"], json!([1, 2]));
        assert!(v["host"]["os"].is_string());
        if std::path::Path::new("/proc/cpuinfo").exists() && cfg!(target_arch = "x86_64") {
            assert!(v["host"]["cpu_model"].is_string());
        }
    }
}
