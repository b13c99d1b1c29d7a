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

use std::cell::RefCell;
use std::fmt::Display;
use std::rc::Rc;
use std::str::FromStr;

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
            Some(key) => Err(format!(
                "unknown config key `{key}`; known keys: {}",
                known
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
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
    fn unknown_keys_are_named() {
        let config: Config = [("mask_with", "x")].into_iter().collect();
        assert_eq!(
            config.check_keys(&["mask", "mask-with"]).unwrap_err(),
            "unknown config key `mask_with`; known keys: `mask`, `mask-with`"
        );
    }
}
