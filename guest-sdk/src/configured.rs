//! Policies whose `init` returns their parsed settings: see [`Configured`].

use std::any::{type_name, Any};
use std::cell::RefCell;
use std::marker::PhantomData;

use crate::{Config, Decision, Message, Policy};

thread_local! {
    // The settings of the last successful `init`. Wasm guests are single-threaded and export one
    // policy, so this is one slot per instance; `Any` because a static cannot be generic.
    static SETTINGS: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// A policy that parses its configuration once, in [`init`](Self::init), and judges messages
/// with the result, in [`evaluate`](Self::evaluate). Export it with
/// [`export_configured!`](crate::export_configured).
///
/// Most policies need this: the configuration is text, and parsing it on every message would be
/// slow (and could fail there, far from the operator's edit). With [`Policy`] a policy keeps the
/// parsed settings in a `thread_local` itself and must decide what `evaluate` does without them;
/// here the SDK keeps them, and fails closed (quarantines the message, naming the type) should
/// the host ever call `evaluate` before a successful `init`.
///
/// ```no_run
/// use twinguard_guest::{export_configured, Config, Configured, Decision, Message, Severity};
///
/// /// Flags temperatures over a configured bound.
/// struct MaxTemperature {
///     pointer: String,
///     max: f64,
/// }
///
/// impl Configured for MaxTemperature {
///     fn init(config: &Config) -> Result<Self, String> {
///         config.check_keys(&["field", "max-celsius"])?;
///         Ok(Self {
///             pointer: config.pointer("field")?.unwrap_or("/temperature").to_owned(),
///             max: config.parse("max-celsius")?.unwrap_or(80.0),
///         })
///     }
///
///     fn evaluate(&self, msg: &Message) -> Decision {
///         match msg.f64(&self.pointer) {
///             Some(celsius) if celsius > self.max => Decision::alert(
///                 Severity::High,
///                 "value-spike",
///                 format!("{} = {celsius} °C is over {} °C", self.pointer, self.max),
///             ),
///             _ => Decision::allow(),
///         }
///     }
/// }
///
/// export_configured!(MaxTemperature);
/// ```
///
/// The settings live as long as the instance, like any static; per-device memory still belongs
/// in [`state`](crate::state).
pub trait Configured: Sized + 'static {
    /// Checks and parses the configuration into the settings `evaluate` receives. Called once
    /// per instance before any message; the key-values also stay readable through
    /// [`config::get`](crate::config::get) and friends. An `Err` fails the policy's load with
    /// that text as the cause, so name the key and the bad value.
    fn init(config: &Config) -> Result<Self, String>;

    /// Decides what happens to one message, with the settings `init` returned.
    fn evaluate(&self, msg: &Message) -> Decision;
}

/// The [`Policy`] of a [`Configured`] type: [`init`](Policy::init) stores the settings
/// [`Configured::init`] returns, [`evaluate`](Policy::evaluate) lends them to
/// [`Configured::evaluate`]. [`export_configured!`](crate::export_configured) exports it, and
/// [`export_policy!`](crate::export_policy) takes it too:
///
/// ```no_run
/// # use twinguard_guest::{export_policy, Config, Configured, ConfiguredPolicy, Decision, Message};
/// # struct Settings;
/// # impl Configured for Settings {
/// #     fn init(_config: &Config) -> Result<Self, String> { Ok(Self) }
/// #     fn evaluate(&self, _msg: &Message) -> Decision { Decision::allow() }
/// # }
/// export_policy!(ConfiguredPolicy<Settings>);
/// ```
pub struct ConfiguredPolicy<C>(PhantomData<fn() -> C>);

impl<C: Configured> Policy for ConfiguredPolicy<C> {
    fn init(config: &Config) -> Result<(), String> {
        // A failed init leaves no settings behind: `evaluate` must not judge with the old ones.
        SETTINGS.set(None);
        let settings = C::init(config)?;
        SETTINGS.set(Some(Box::new(settings)));
        Ok(())
    }

    fn evaluate(msg: &Message) -> Decision {
        SETTINGS.with_borrow(|settings| {
            match settings.as_deref().and_then(|s| s.downcast_ref::<C>()) {
                Some(settings) => settings.evaluate(msg),
                // The host calls `init` first; should it not, fail closed.
                None => Decision::quarantine(format!(
                    "{}: evaluate called before a successful init",
                    type_name::<C>()
                )),
            }
        })
    }
}

/// Exports a [`Configured`] implementation as the component's `handler`: the
/// [`export_policy!`](crate::export_policy) of [`ConfiguredPolicy`].
///
/// Use it exactly once, at the root of the policy crate (a `cdylib`):
///
/// ```no_run
/// # use twinguard_guest::{export_configured, Config, Configured, Decision, Message};
/// # struct Settings;
/// # impl Configured for Settings {
/// #     fn init(_config: &Config) -> Result<Self, String> { Ok(Self) }
/// #     fn evaluate(&self, _msg: &Message) -> Decision { Decision::allow() }
/// # }
/// export_configured!(Settings);
/// ```
#[macro_export]
macro_rules! export_configured {
    ($settings:ty $(,)?) => {
        $crate::export_policy!($crate::ConfiguredPolicy<$settings>);
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::wit;
    use crate::Verdict;

    fn message(device: &str) -> Message {
        Message::from_wit(wit::Message {
            device_id: Some(device.to_owned()),
            topic: Some(format!("plant/{device}/telemetry")),
            content_type: wit::ContentType::Json,
            payload_len: 2,
            received_at_ms: 0,
            seed: 0,
            fields: Ok(Vec::new()),
            last: Vec::new(),
        })
    }

    /// Allows the configured device, quarantines the others.
    #[derive(Debug)]
    struct OnlyDevice(String);

    impl Configured for OnlyDevice {
        fn init(config: &Config) -> Result<Self, String> {
            config
                .get("device")
                .map(|device| Self(device.to_owned()))
                .ok_or_else(|| "config `device` is required".to_owned())
        }

        fn evaluate(&self, msg: &Message) -> Decision {
            if msg.device_id() == self.0 {
                Decision::allow()
            } else {
                Decision::quarantine(format!("not {}", self.0))
            }
        }
    }

    struct Other;

    impl Configured for Other {
        fn init(_config: &Config) -> Result<Self, String> {
            Ok(Self)
        }

        fn evaluate(&self, _msg: &Message) -> Decision {
            Decision::allow()
        }
    }

    type Only = ConfiguredPolicy<OnlyDevice>;

    fn reason(decision: &Decision) -> Option<&str> {
        match decision.verdict() {
            Verdict::Quarantine(reason) => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn evaluate_before_init_fails_closed_naming_the_type() {
        let decision = Only::evaluate(&message("a"));
        let reason = reason(&decision).unwrap();
        assert!(
            reason.contains("OnlyDevice")
                && reason.ends_with(": evaluate called before a successful init"),
            "{reason}"
        );
    }

    #[test]
    fn evaluate_uses_the_settings_of_init() {
        let config: Config = [("device", "a")].into_iter().collect();
        Only::init(&config).unwrap();
        assert_eq!(Only::evaluate(&message("a")), Decision::allow());
        assert_eq!(reason(&Only::evaluate(&message("b"))), Some("not a"));
        // A later init replaces the settings.
        Only::init(&[("device", "b")].into_iter().collect()).unwrap();
        assert_eq!(Only::evaluate(&message("b")), Decision::allow());
    }

    #[test]
    fn a_failed_init_drops_the_old_settings() {
        Only::init(&[("device", "a")].into_iter().collect()).unwrap();
        assert_eq!(
            Only::init(&Config::default()).unwrap_err(),
            "config `device` is required"
        );
        let decision = Only::evaluate(&message("a"));
        assert!(reason(&decision)
            .unwrap()
            .contains("before a successful init"));
    }

    #[test]
    fn settings_of_another_type_are_not_used() {
        ConfiguredPolicy::<Other>::init(&Config::default()).unwrap();
        let decision = Only::evaluate(&message("a"));
        assert!(reason(&decision)
            .unwrap()
            .contains("before a successful init"));
    }
}
