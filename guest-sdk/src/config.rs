//! The policy's configuration: the key-values given to [`Policy::init`](crate::Policy::init).
//!
//! The SDK keeps the configuration of the last `init` call, so the free functions of this module
//! ([`get`], [`parse`], [`all`]) work anywhere in the policy, including from `evaluate`. Before
//! the first `init` the configuration is empty.
//!
//! ```
//! use twinguard_guest::Config;
//!
//! let config: Config = [("max-celsius", "85.5"), ("unit", "C")].into_iter().collect();
//! assert_eq!(config.get("unit"), Some("C"));
//! assert_eq!(config.parse::<f64>("max-celsius"), Ok(Some(85.5)));
//! assert_eq!(config.parse::<f64>("absent"), Ok(None));
//! assert_eq!(
//!     config.parse::<u32>("max-celsius").unwrap_err(),
//!     "config `max-celsius`: invalid value \"85.5\": invalid digit found in string",
//! );
//! assert!(config.check_keys(&["max-celsius"]).is_err());
//! ```
//!
//! Beside plain values, [`Config`] reads JSON Pointers ([`Config::pointer`],
//! [`Config::pointers`]) and per-metric keys ([`Config::metric_keys`], see
//! [`metric`](crate::metric)), checked when the policy loads and with errors that name the key,
//! and `alert | quarantine` choices ([`Config::action`]).

use std::cell::RefCell;
use std::fmt::Display;
use std::rc::Rc;
use std::str::FromStr;

use crate::metric::{known_list, MetricKey};
use crate::pointer;

thread_local! {
    // Wasm guests are single-threaded: this is one slot per instance.
    static CURRENT: RefCell<Rc<Config>> = RefCell::new(Rc::new(Config::default()));
}

/// Key-values configured for a policy, in the order the host gave them.
///
/// When a key appears more than once, the last value wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    entries: Vec<(String, String)>,
}

impl Config {
    /// The value of `key`, if configured.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Parses the value of `key` with [`FromStr`]: `Ok(None)` when the key is absent, and an
    /// error naming the key and the bad value when it does not parse.
    pub fn parse<T>(&self, key: &str) -> Result<Option<T>, String>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.get(key)
            .map(|value| parse_value(key, value))
            .transpose()
    }

    /// Refuses keys outside `known`, with an error naming the first unknown key and listing the
    /// known ones. Catches typos such as `mask_with` for `mask-with`, which would otherwise be
    /// silently ignored.
    pub fn check_keys(&self, known: &[&str]) -> Result<(), String> {
        match self.keys().find(|key| !known.contains(key)) {
            None => Ok(()),
            Some(key) => Err(unknown_key(key, known)),
        }
    }

    /// [`check_keys`](Self::check_keys) for a policy configured per metric: keys starting with
    /// `/` are metric keys (see [`metric_keys`](Self::metric_keys)), every other key must be in
    /// `known`.
    pub fn check_keys_beside_metrics(&self, known: &[&str]) -> Result<(), String> {
        match self
            .keys()
            .find(|key| !key.starts_with('/') && !known.contains(key))
        {
            None => Ok(()),
            Some(key) => Err(format!(
                "{}, and metric JSON Pointers starting with `/`",
                unknown_key(key, known)
            )),
        }
    }

    /// The metric keys: every key starting with `/`, which names a field by JSON Pointer, each
    /// once, in the order the keys first appear, with the key's (last) value. Every pointer is
    /// checked ([`pointer::check`]); the error names the key. The values are options to parse
    /// with [`MetricKey::options`].
    pub fn metric_keys(&self) -> Result<Vec<MetricKey<'_>>, String> {
        let mut metrics: Vec<MetricKey<'_>> = Vec::new();
        for (key, _) in self.iter() {
            if !key.starts_with('/') || metrics.iter().any(|m| m.pointer == key) {
                continue;
            }
            pointer::check(key).map_err(|why| format!("config `{key}`: {why}"))?;
            metrics.push(MetricKey {
                pointer: key,
                value: self.get(key).unwrap_or_default(),
            });
        }
        Ok(metrics)
    }

    /// The JSON Pointer under `key`, checked with [`pointer::check_field`] (so neither malformed
    /// nor empty): `Ok(None)` when the key is absent, an error naming the key when the pointer is
    /// bad.
    ///
    /// ```
    /// # use twinguard_guest::Config;
    /// let config: Config = [("seq", "/hdr/n"), ("ts", "hdr/ts")].into_iter().collect();
    /// assert_eq!(config.pointer("seq"), Ok(Some("/hdr/n")));
    /// assert_eq!(config.pointer("absent"), Ok(None));
    /// assert!(config.pointer("ts").unwrap_err().starts_with("config `ts`: \"hdr/ts\" is not"));
    /// ```
    pub fn pointer(&self, key: &str) -> Result<Option<&str>, String> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        pointer::check_field(value).map_err(|why| format!("config `{key}`: {why}"))?;
        Ok(Some(value))
    }

    /// The comma-separated JSON Pointers under `key`, white space trimmed, each checked with
    /// [`pointer::check_field`], repeats dropped (the first one kept); none when the key is
    /// absent. An empty entry (a stray comma, or an empty value) is refused, like every bad
    /// pointer, with an error naming the key.
    ///
    /// ```
    /// # use twinguard_guest::Config;
    /// let config: Config = [
    ///     ("remove", "/owner/email, /badge/holder,/owner/email"),
    ///     ("mask", "/a,"),
    /// ]
    /// .into_iter()
    /// .collect();
    /// assert_eq!(config.pointers("remove").unwrap(), ["/owner/email", "/badge/holder"]);
    /// assert!(config.pointers("absent").unwrap().is_empty());
    /// let err = config.pointers("mask").unwrap_err();
    /// assert!(err.starts_with("config `mask`: the empty pointer") && err.contains("stray comma"));
    /// ```
    pub fn pointers(&self, key: &str) -> Result<Vec<String>, String> {
        let Some(list) = self.get(key) else {
            return Ok(Vec::new());
        };
        let mut pointers: Vec<String> = Vec::new();
        for entry in list.split(',').map(str::trim) {
            if entry.is_empty() {
                return Err(format!(
                    "config `{key}`: {} (check for a stray comma)",
                    pointer::EMPTY
                ));
            }
            pointer::check_field(entry).map_err(|why| format!("config `{key}`: {why}"))?;
            if !pointers.iter().any(|p| p == entry) {
                pointers.push(entry.to_owned());
            }
        }
        Ok(pointers)
    }

    /// The [`Action`] under `key`, `default` when the key is absent. The values are `alert` and
    /// `quarantine`, in lower case; any other is refused with an error naming the key, the value
    /// and the allowed values.
    ///
    /// ```
    /// use twinguard_guest::config::{Action, Config};
    ///
    /// let config: Config = [("on-stuck", "quarantine"), ("on-unknown", "drop")].into_iter().collect();
    /// assert_eq!(config.action("on-stuck", Action::Alert), Ok(Action::Quarantine));
    /// assert_eq!(config.action("absent", Action::Alert), Ok(Action::Alert));
    /// assert_eq!(
    ///     config.action("on-unknown", Action::Quarantine).unwrap_err(),
    ///     "config `on-unknown`: invalid value \"drop\": expected `alert` or `quarantine`",
    /// );
    /// ```
    pub fn action(&self, key: &str, default: Action) -> Result<Action, String> {
        Ok(self.parse(key)?.unwrap_or(default))
    }

    /// The entries, in the order the host gave them.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The keys, in the order the host gave them.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl From<Vec<(String, String)>> for Config {
    fn from(entries: Vec<(String, String)>) -> Self {
        Self { entries }
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Config {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self {
            entries: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

/// What a policy does with a message that breaks a rule whose handling the operator chooses, such
/// as `on-stuck = "alert"`. Read it with [`Config::action`]; it also parses with [`FromStr`], so
/// [`Config::parse`] and [`parse`] take it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// `alert`: forward the message and raise an alert.
    Alert,
    /// `quarantine`: hold the message for review.
    Quarantine,
}

impl Action {
    /// The configuration value: `alert` or `quarantine`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Alert => "alert",
            Self::Quarantine => "quarantine",
        }
    }
}

impl FromStr for Action {
    type Err = String;

    /// Case-sensitive, like every other value: `Alert` is refused rather than guessed at.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "alert" => Ok(Self::Alert),
            "quarantine" => Ok(Self::Quarantine),
            _ => Err("expected `alert` or `quarantine`".to_owned()),
        }
    }
}

impl Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The value of `key` in the current configuration, if configured.
pub fn get(key: &str) -> Option<String> {
    CURRENT.with_borrow(|config| config.get(key).map(str::to_owned))
}

/// Parses the value of `key` in the current configuration; see [`Config::parse`].
pub fn parse<T>(key: &str) -> Result<Option<T>, String>
where
    T: FromStr,
    T::Err: Display,
{
    CURRENT.with_borrow(|config| config.parse(key))
}

/// All entries of the current configuration, in the order the host gave them.
pub fn all() -> Vec<(String, String)> {
    CURRENT.with_borrow(|config| config.entries.clone())
}

/// Makes `config` the current configuration and returns it.
pub(crate) fn replace(config: Config) -> Rc<Config> {
    let config = Rc::new(config);
    CURRENT.set(Rc::clone(&config));
    config
}

fn unknown_key(key: &str, known: &[&str]) -> String {
    format!(
        "unknown config key `{key}`; known keys: {}",
        known_list(known)
    )
}

fn parse_value<T>(key: &str, value: &str) -> Result<T, String>
where
    T: FromStr,
    T::Err: Display,
{
    value
        .parse()
        .map_err(|err| format!("config `{key}`: invalid value {value:?}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_value_wins() {
        let config: Config = [("a", "1"), ("a", "2")].into_iter().collect();
        assert_eq!(config.get("a"), Some("2"));
    }

    #[test]
    fn free_functions_read_the_replaced_config() {
        assert_eq!(get("k"), None);
        replace([("k", "7")].into_iter().collect());
        assert_eq!(get("k").as_deref(), Some("7"));
        assert_eq!(parse::<u8>("k"), Ok(Some(7)));
        replace(Config::default());
        assert_eq!(get("k"), None);
        assert!(all().is_empty());
    }

    #[test]
    fn actions_parse_in_lower_case_only() {
        let config: Config = [("a", "alert"), ("q", "quarantine"), ("x", "Alert")]
            .into_iter()
            .collect();
        assert_eq!(config.action("a", Action::Quarantine), Ok(Action::Alert));
        assert_eq!(config.action("q", Action::Alert), Ok(Action::Quarantine));
        assert_eq!(
            config.action("none", Action::Quarantine),
            Ok(Action::Quarantine)
        );
        assert_eq!(
            config.action("x", Action::Alert).unwrap_err(),
            "config `x`: invalid value \"Alert\": expected `alert` or `quarantine`"
        );
        for action in [Action::Alert, Action::Quarantine] {
            assert_eq!(action.to_string().parse(), Ok(action));
        }
    }

    #[test]
    fn unknown_keys_are_named() {
        let config: Config = [("mask_with", "x")].into_iter().collect();
        assert_eq!(
            config.check_keys(&["mask", "mask-with"]).unwrap_err(),
            "unknown config key `mask_with`; known keys: `mask`, `mask-with`"
        );
    }
}
