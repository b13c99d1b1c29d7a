//! The demo's default configuration: the shipped policy pack wired for the simulated plant.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The pack's components, by file name in the policy folder.
pub const PACK: &[&str] = &[
    "identity_guard",
    "schema_guard",
    "replay_guard",
    "rate_guard",
    "range_guard",
    "anomaly_guard",
    "pii_redact",
    "command_guard",
];

/// Where the pack is looked for when `--policy-dir` is not given: `$TWINGUARD_POLICY_DIR`,
/// then the cargo output next to this binary (`target/release/../wasm32-wasip2/release`), then
/// `target/wasm32-wasip2/release` under the current folder.
pub fn policy_dir(given: Option<&Path>) -> Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dir) = given {
        candidates.push(dir.to_path_buf());
    } else {
        if let Some(dir) = std::env::var_os("TWINGUARD_POLICY_DIR") {
            candidates.push(PathBuf::from(dir));
        }
        if let Some(target) = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf))
        {
            candidates.push(target.join("wasm32-wasip2/release"));
        }
        candidates.push(PathBuf::from("target/wasm32-wasip2/release"));
    }
    for dir in &candidates {
        if PACK.iter().all(|p| dir.join(format!("{p}.wasm")).is_file()) {
            return Ok(dir.clone());
        }
    }
    let looked: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
    let first = &candidates[0];
    let missing: Vec<String> = PACK
        .iter()
        .filter(|p| !first.join(format!("{p}.wasm")).is_file())
        .map(|p| format!("{p}.wasm"))
        .collect();
    bail!(
        "the policy pack is not built: {} missing in {} (also looked in: {}).\n\
         Build it with: cargo build --release --target wasm32-wasip2 {}\n\
         or run scripts/demo.sh, which builds everything and runs the demo",
        missing.join(", "),
        first.display(),
        looked.join(", "),
        PACK.iter()
            .map(|p| format!("-p {}", p.replace('_', "-")))
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// What the default configuration needs to know of the simulated plant.
pub struct Plant<'a> {
    /// The registry file (`docs/registry.md`) the simulator wrote.
    pub registry: &'a Path,
    /// The device classes it lists.
    pub classes: &'a [&'a str],
    /// The people whose names the pii detector looks for (the plant's staff list).
    pub names: &'a [String],
}

/// The fields each class's telemetry must carry. The schema is strict: a field the class does
/// not declare is an alert (undeclared data is how personal data and exfiltration get in).
fn schema(class: &str) -> Option<String> {
    let own = match class {
        "climate-sensor" => "/metrics/temperature_c:number,/metrics/humidity_pct:number",
        "vibration-sensor" => "/metrics/rms_mm_s:number,/metrics/peak_g:number",
        "power-meter" => "/metrics/power_kw:number,/metrics/voltage_v:number",
        "badge-reader" => "/event:string,/badge:object,/metrics/door_open:integer",
        _ => return None,
    };
    Some(format!(
        "/device:string,/seq:integer,/ts:integer,/kind:string,{own}"
    ))
}

/// The default configuration for the plant: routes by class from its registry, rate limits
/// from each device's reporting period, setpoint bounds and allowed commands from the
/// registry.
pub fn config(dir: &Path, plant: &Plant<'_>) -> String {
    let path = |name: &str| toml_string(&dir.join(format!("{name}.wasm")).display().to_string());
    let mut t = String::new();
    // `write!` to a String cannot fail.
    let _ = write!(
        t,
        r#"# twinguard demo: the shipped policy pack on the simulated plant (docs/simulator.md).
# Print it with `twinguard demo --print-config`, edit it, run it with `--config`.
# Generated from the plant's device registry: one route per device class, no device listed.

[defaults]
unrouted = "quarantine"

# Every device of the plant, its class and attributes; a device not listed is held back.
[registry]
path = {registry}
unknown = "quarantine"

# Spoofing: the topic and the payload must name the authenticated device, which the registry
# must know.
[[policy]]
name = "identity"
path = {identity}
[policy.config]
topic-segment = 1
payload-field = "/device"
inventory = "registry"

# Replayed, stale and future messages, counters that restart.
[[policy]]
name = "replay"
path = {replay}
[policy.config]
max-age-ms = 30000
max-future-ms = 5000

# Bursts alert, floods are held back: limits from each device's reporting period
# (registry attribute period-s); door readers, which report events, get the fixed limits.
[[policy]]
name = "rate"
path = {rate}
[policy.config]
period-attribute = "period-s"
tolerance = 1.5
hard-tolerance = 5
rate = 0.1
burst = 5
hard-rate = 1.0
hard-burst = 20

# Physical ranges, impossible steps, stuck sensors.
[[policy]]
name = "range"
path = {range}
[policy.config]
"/metrics/temperature_c" = "min=-20,max=60,max-step=3,stuck-after=4"
"/metrics/humidity_pct" = "min=0,max=100,max-step=8"
"/metrics/rms_mm_s" = "min=0,max=50,max-step=2,stuck-after=4"
"/metrics/peak_g" = "min=0,max=16,max-step=1"
"/metrics/power_kw" = "min=-5,max=400,max-step=25,stuck-after=4"
"/metrics/voltage_v" = "min=180,max=260,max-step=10"

# Slow drift and unusual values, per device and metric.
[[policy]]
name = "anomaly"
path = {anomaly}
[policy.config]
alpha = 0.2
var-alpha = 0.01
warmup = 30
alert-z = 6
quarantine-z = 12
cusum-k = 0.75
cusum-h = 10
"/metrics/temperature_c" = ""
"/metrics/rms_mm_s" = ""
"/metrics/power_kw" = ""

# Personal data: a sensor has no business carrying any. A known field is removed; any string
# field holding an e-mail address, a phone number or a staff member's name is masked. Each
# finding is an alert.
[[policy]]
name = "pii-telemetry"
path = {pii}
[policy.config]
remove = "/operator"
alert-on-redact = true
detect = "email,phone,names"
names = {names}
detect-skip = "/device,/kind"

# A badge event's holder is removed routinely (no alert).
[[policy]]
name = "pii-access"
path = {pii}
[policy.config]
remove = "/badge/holder,/badge/email"

# The command path: what the twin may tell a device. Allowed commands and setpoint bounds
# come from the registry (attributes commands, setpoint_c.min, ...).
[[policy]]
name = "commands"
path = {commands}
[policy.config]
max-per-minute = 6

[[route]]
filter = "twin/+/commands"
chain = ["commands"]
"#,
        registry = toml_string(&plant.registry.display().to_string()),
        identity = path("identity_guard"),
        replay = path("replay_guard"),
        rate = path("rate_guard"),
        range = path("range_guard"),
        anomaly = path("anomaly_guard"),
        pii = path("pii_redact"),
        commands = path("command_guard"),
        names = toml_string(&plant.names.join(",")),
    );
    for class in plant.classes {
        let Some(required) = schema(class) else {
            continue;
        };
        let access = *class == "badge-reader";
        let _ = write!(
            t,
            r#"
# Malformed, oversized and undeclared payloads of a {class}.
[[policy]]
name = "schema-{class}"
path = {schema}
[policy.config]
content-types = "{types}"
max-bytes = 4096
required = "{required}"
strict = "alert"
"#,
            schema = path("schema_guard"),
            types = if access { "json" } else { "json,cbor" },
        );
        let chain = if access {
            format!(r#""identity", "schema-{class}", "replay", "rate", "pii-access""#)
        } else {
            format!(
                r#""identity", "schema-{class}", "replay", "rate", "range", "anomaly", "pii-telemetry""#
            )
        };
        let _ = write!(
            t,
            r#"
[[route]]
class = "{class}"
chain = [{chain}]
"#
        );
    }
    t
}

fn toml_string(s: &str) -> String {
    // A TOML basic string has JSON's escapes.
    serde_json::Value::String(s.to_owned()).to_string()
}
