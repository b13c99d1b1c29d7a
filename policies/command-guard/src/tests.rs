use super::*;
use crate::settings::Origin;
use twinguard_guest::declare;

fn settings(pairs: &[(&str, &str)]) -> Result<Settings, String> {
    declare::capture(|| Settings::parse(&pairs.iter().copied().collect())).0
}

#[test]
fn declares_the_five_fields_it_reads() {
    let (parsed, manifest) = declare::capture(|| {
        Settings::parse(&[("value-field", "/sp/value")].iter().copied().collect())
    });
    assert!(parsed.is_ok());
    assert_eq!(
        manifest.fields,
        [
            "/command",
            "/target",
            "/sp/value",
            "/issued_by",
            "/approved_by"
        ]
    );
}

#[test]
fn refuses_what_it_cannot_use_naming_the_key() {
    for (pairs, needle) in [
        (vec![("max-per-minute", "0")], "max-per-minute"),
        (vec![("max-per-minute", "x")], "max-per-minute"),
        (vec![("unbounded", "maybe")], "unbounded"),
        (
            vec![("bounds.setpoint_c", "min=9,max=1")],
            "bounds.setpoint_c",
        ),
        (vec![("bounds.", "min=1")], "bounds."),
        (vec![("window.open", "6-22")], "window.open"),
        (vec![("utc-offset", "+01:00")], "utc-offset"),
        (
            vec![("utc-offset", "1h"), ("window.open", "06:00-22:00")],
            "utc-offset",
        ),
        (vec![("command-field", "command")], "command-field"),
        (vec![("comands", "set")], "comands"),
    ] {
        let err = settings(&pairs).unwrap_err();
        assert!(err.contains(needle), "{pairs:?}: {err}");
    }
}

#[test]
fn allowed_commands_come_from_the_registry_then_the_class_then_the_default() {
    let s = settings(&[("commands", "status"), ("commands.hvac", "set, mode")]).unwrap();
    assert_eq!(
        s.allowed(Some("set;open close"), "hvac"),
        ["set", "open", "close"]
    );
    assert_eq!(s.allowed(None, "hvac"), ["set", "mode"]);
    assert_eq!(s.allowed(None, "meter"), ["status"]);
    // An empty registry attribute is a device that takes no command.
    assert!(s.allowed(Some(""), "hvac").is_empty());
    assert!(settings(&[]).unwrap().allowed(None, "hvac").is_empty());
}

#[test]
fn bounds_come_from_the_registry_before_the_settings() {
    let s = settings(&[("bounds.setpoint_c", "min=10,max=20")]).unwrap();
    let registry = |name: &str| match name {
        "setpoint_c.min" => Some("16"),
        "setpoint_c.max" => Some(" 28 "),
        "setpoint_c.max-step" => Some(""),
        _ => None,
    };
    let (bound, origin) = Bound::resolve("setpoint_c", registry, &s.bounds)
        .unwrap()
        .unwrap();
    assert_eq!(
        (bound.min, bound.max, bound.max_step),
        (Some(16.0), Some(28.0), None)
    );
    assert_eq!(origin, Origin::Registry);
    let (bound, origin) = Bound::resolve("setpoint_c", |_| None, &s.bounds)
        .unwrap()
        .unwrap();
    assert_eq!(
        (bound.min, bound.max, origin),
        (Some(10.0), Some(20.0), Origin::Setting)
    );
    assert_eq!(Bound::resolve("limit_kw", |_| None, &s.bounds), Ok(None));
    let broken = |name: &str| (name == "setpoint_c.max").then_some("hot");
    assert!(Bound::resolve("setpoint_c", broken, &s.bounds)
        .unwrap_err()
        .contains("setpoint_c.max"));
    let inverted = |name: &str| match name {
        "setpoint_c.min" => Some("30"),
        "setpoint_c.max" => Some("20"),
        _ => None,
    };
    assert!(Bound::resolve("setpoint_c", inverted, &s.bounds).is_err());
}

#[test]
fn the_clock_of_a_window_is_the_configured_offset() {
    let s = settings(&[("utc-offset", "+01:00"), ("window.open", "06:00-22:00")]).unwrap();
    // 2026-11-25T05:30:00Z is 06:30 at +01:00.
    let ms = 1_764_048_600_000;
    assert_eq!(s.minute_of_day(ms), 6 * 60 + 30);
    let west = settings(&[("utc-offset", "-05:00"), ("window.open", "06:00-22:00")]).unwrap();
    assert_eq!(west.minute_of_day(ms), 30);
}

#[test]
fn state_records_round_trip_and_refuse_garbage() {
    let bucket = Bucket {
        tokens: 2.5,
        last_ms: 7,
    };
    assert_eq!(state::decode::<Bucket>(&state::encode(&bucket)), Ok(bucket));
    let broken = Bucket {
        tokens: f64::NAN,
        last_ms: 7,
    };
    assert!(state::decode::<Bucket>(&state::encode(&broken)).is_err());
    let last = LastValue(21.5);
    assert_eq!(state::decode::<LastValue>(&state::encode(&last)), Ok(last));
}
