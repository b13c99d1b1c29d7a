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

#[test]
fn config_errors_name_the_value_too() {
    for (pairs, needle) in [
        (vec![("max-per-minute", "0.5")], "0.5"),
        (vec![("unbounded", "maybe")], "maybe"),
        (vec![("bounds.setpoint_c", "min=9,max=1")], "min=9,max=1"),
        (vec![("bounds.setpoint_c", "low=1")], "low"),
        (vec![("window.open", "06:00-25:00")], "06:00-25:00"),
        (
            vec![("utc-offset", "+15:00"), ("window.open", "06:00-22:00")],
            "+15:00",
        ),
        (vec![("approver-field", "/a/~2")], "/a/~2"),
    ] {
        let err = settings(&pairs).unwrap_err();
        assert!(err.contains(needle), "{pairs:?}: {err}");
    }
}

#[test]
fn a_key_given_twice_counts_once_with_its_last_value() {
    let config: twinguard_guest::Config = [
        ("window.open", "06:00-07:00"),
        ("commands.hvac", "set"),
        ("window.open", "22:00-06:00"),
        ("commands.hvac", "open"),
        ("bounds.setpoint_c", "max=5"),
        ("bounds.setpoint_c", "max=30"),
    ]
    .into_iter()
    .collect();
    let s = declare::capture(|| Settings::parse(&config)).0.unwrap();
    assert_eq!(s.windows.len(), 1);
    assert_eq!(s.windows[0].to_string(), "22:00-06:00");
    assert_eq!(s.allowed(None, "hvac"), ["open"]);
    assert_eq!(s.bounds.len(), 1);
    assert_eq!(s.bounds[0].1.max, Some(30.0));
}

#[test]
fn defaults() {
    let s = settings(&[]).unwrap();
    assert!((s.max_per_minute - 6.0).abs() < f64::EPSILON);
    assert!(!s.unbounded_allowed);
    assert!(s.windows.is_empty() && s.two_person.is_empty() && s.bounds.is_empty());
    assert_eq!(s.offset_minutes, 0);
    let s = settings(&[("unbounded", "allow"), ("two-person", "firmware, open")]).unwrap();
    assert!(s.unbounded_allowed);
    assert_eq!(s.two_person, ["firmware", "open"]);
}

#[test]
fn the_bucket_bursts_refills_and_ignores_a_clock_going_back() {
    // max-per-minute = 6: six at once, then one every 10 s.
    let mut bucket = None;
    for i in 0..6 {
        let (b, flooding) = Bucket::take(bucket, 1_000, 6.0);
        assert!(!flooding, "command {i}");
        bucket = Some(b);
    }
    let (b, flooding) = Bucket::take(bucket, 1_000, 6.0);
    assert!(flooding, "the seventh at once");
    // A flood takes no token: the bucket is as empty as before.
    assert!(b.tokens.abs() < 1e-9);
    // 9.9 s later: not yet a whole token.
    let (b, flooding) = Bucket::take(Some(b), 10_900, 6.0);
    assert!(flooding);
    // 10 s after the burst: one token, taken.
    let (b, flooding) = Bucket::take(Some(b), 11_000, 6.0);
    assert!(!flooding);
    assert!(b.tokens.abs() < 1e-9 && b.last_ms == 11_000);
    // The clock goes back 10 s: no refill, and the latest time is kept.
    let (b, flooding) = Bucket::take(Some(b), 1_000, 6.0);
    assert!(flooding);
    assert_eq!(b.last_ms, 11_000);
    // Back to now + 5 s: half a token, measured from the latest time, not the earlier one.
    let (b, flooding) = Bucket::take(Some(b), 16_000, 6.0);
    assert!(flooding && (b.tokens - 0.5).abs() < 1e-9);
    // A long pause refills to the burst, no further.
    let (b, _) = Bucket::take(Some(b), 16_000 + 86_400_000, 6.0);
    assert!((b.tokens - 5.0).abs() < 1e-9, "{b:?}");
}

#[test]
fn the_first_value_has_no_step_and_later_ones_are_measured_from_the_last() {
    assert_eq!(step_over(None, 28.0, 3.0), None);
    assert_eq!(step_over(Some(21.0), 24.0, 3.0), None);
    assert_eq!(step_over(Some(21.0), 18.0, 3.0), None);
    assert_eq!(step_over(Some(21.0), 24.5, 3.0), Some((21.0, 3.5)));
    assert_eq!(step_over(Some(21.0), 17.0, 3.0), Some((21.0, 4.0)));
}

#[test]
fn registry_bounds_may_give_any_subset_and_replace_the_setting_whole() {
    let s = settings(&[("bounds.setpoint_c", "min=10,max=20,max-step=1")]).unwrap();
    let only_step = |name: &str| (name == "setpoint_c.max-step").then_some("2");
    let (bound, origin) = Bound::resolve("setpoint_c", only_step, &s.bounds)
        .unwrap()
        .unwrap();
    // Not merged with the setting's min and max.
    assert_eq!(
        (bound.min, bound.max, bound.max_step, origin),
        (None, None, Some(2.0), Origin::Registry)
    );
    // Another target's attributes are not this one's.
    let other = |name: &str| (name == "limit_kw.max").then_some("400");
    assert_eq!(
        Bound::resolve("setpoint_c", other, &s.bounds)
            .unwrap()
            .map(|(_, o)| o),
        Some(Origin::Setting)
    );
    assert_eq!(
        Origin::Registry.to_string(),
        "bounds from the device registry"
    );
}

#[test]
fn holds_describe_what_the_twin_wrote_instead_of_quoting_it() {
    let s = settings(&[("two-person", "firmware")]).unwrap();
    let mail = "ada.lovelace@example.com";
    let holds = [
        (
            s.unapproved("firmware", "hvac-1", mail, ""),
            "command-guard: command \"firmware\" to device \"hvac-1\" needs a second person's \
             approval at /approved_by (issued by a string (24 characters, \"…@…\"), approved by \
             nobody)",
        ),
        (
            s.unapproved("firmware", "hvac-1", mail, mail),
            "command-guard: command \"firmware\" to device \"hvac-1\" needs a second person's \
             approval at /approved_by (issued by a string (24 characters, \"…@…\"), approved by \
             the issuer)",
        ),
        (
            not_allowed(mail, "meter-1", "power-meter", &[]),
            "command-guard: command a string (24 characters, \"…@…\") is not allowed for device \
             \"meter-1\" (class \"power-meter\"; allowed: none)",
        ),
        (
            unknown_device(mail, "ghost-9"),
            "command-guard: command a string (24 characters, \"…@…\") for device \"ghost-9\" \
             which the device registry does not know",
        ),
    ];
    for (hold, expected) in holds {
        for secret in ["ada.lovelace", "example.com"] {
            assert!(!hold.reason.contains(secret), "{}", hold.reason);
        }
        assert_eq!(hold.reason, expected);
    }
    let hold = s.unapproved("firmware", "hvac-1", "", "");
    assert!(
        hold.reason
            .ends_with("(issued by nobody, approved by nobody)"),
        "{}",
        hold.reason
    );
}
