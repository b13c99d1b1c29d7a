//! Per-metric configuration: a key that names a payload field by JSON Pointer, with a value of
//! comma-separated `name=value` options for that field.
//!
//! ```toml
//! "/metrics/temperature_c" = "min=-40, max=85, max-step=5"
//! "/metrics/humidity_pct"  = "max=100"
//! on-stuck = "alert"        # a global key beside the metric keys
//! ```
//!
//! [`Config::check_keys_beside_metrics`](crate::Config::check_keys_beside_metrics) refuses
//! unknown global keys, [`Config::metric_keys`](crate::Config::metric_keys) lists the metric keys
//! with their pointers checked, and [`MetricKey::options`] splits a value into options, refusing
//! unknown, repeated and malformed ones. Every error names the key (and the option), so an
//! operator can find the typo:
//!
//! ```
//! use twinguard_guest::Config;
//!
//! let config: Config = [("/t", "min=-40, max=85"), ("on-stuck", "alert")].into_iter().collect();
//! config.check_keys_beside_metrics(&["on-stuck"]).unwrap();
//! let metrics = config.metric_keys().unwrap();
//! assert_eq!(metrics[0].pointer, "/t");
//! let options = metrics[0].options(&["min", "max"]).unwrap();
//! assert_eq!((options[1].name, options[1].finite()), ("max", Ok(85.0)));
//!
//! let config: Config = [("/t", "min=-40,mni=0")].into_iter().collect();
//! let err = config.metric_keys().unwrap()[0].options(&["min", "max"]).unwrap_err();
//! assert_eq!(err, "config `/t`: unknown option `mni`; known options: `min`, `max`");
//! ```

use std::fmt::Display;
use std::str::FromStr;

/// A key naming a metric by JSON Pointer, and its value (the options), from
/// [`Config::metric_keys`](crate::Config::metric_keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricKey<'a> {
    /// The key: a checked JSON Pointer, never empty.
    pub pointer: &'a str,
    /// The key's value, as configured.
    pub value: &'a str,
}

impl<'a> MetricKey<'a> {
    /// Whether the value is empty or white space: no option at all. Check it before
    /// [`options`](Self::options) where that has a meaning of its own (such as "use the global
    /// defaults").
    pub fn is_blank(&self) -> bool {
        self.value.trim().is_empty()
    }

    /// The value's comma-separated `name=value` options, white space around names and values
    /// trimmed, in the order written. Refuses, naming the key: a blank value (no option), an
    /// empty option (a stray comma), an option without `=`, an option given twice, and a name
    /// outside `known` (listing the known ones). The values are the caller's to parse, with
    /// [`MetricOption::parse`] or [`MetricOption::finite`].
    pub fn options(&self, known: &[&str]) -> Result<Vec<MetricOption<'a>>, String> {
        let key = self.pointer;
        let list = self.value;
        if self.is_blank() {
            return Err(format!(
                "config `{key}`: no option: set at least one of {}",
                known_list(known)
            ));
        }
        let mut options: Vec<MetricOption<'a>> = Vec::new();
        for item in list.split(',').map(str::trim) {
            if item.is_empty() {
                return Err(format!(
                    "config `{key}`: empty option in {list:?} (check for a stray comma); \
                     options are `name=value`"
                ));
            }
            let Some((name, value)) = item.split_once('=') else {
                return Err(format!(
                    "config `{key}`: option {item:?} is not `name=value`; known options: {}",
                    known_list(known)
                ));
            };
            let (name, value) = (name.trim(), value.trim());
            if options.iter().any(|option| option.name == name) {
                return Err(format!("config `{key}`: option `{name}` given twice"));
            }
            if !known.contains(&name) {
                return Err(format!(
                    "config `{key}`: unknown option `{name}`; known options: {}",
                    known_list(known)
                ));
            }
            options.push(MetricOption { key, name, value });
        }
        Ok(options)
    }
}

/// One `name=value` option of a [`MetricKey`], with the key it came from so that errors can
/// name both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricOption<'a> {
    /// The metric key (its JSON Pointer).
    pub key: &'a str,
    /// The option's name, trimmed.
    pub name: &'a str,
    /// The option's value, trimmed.
    pub value: &'a str,
}

impl MetricOption<'_> {
    /// The error for an unacceptable value: it names the key, the option and the value, then
    /// says `why`.
    ///
    /// ```
    /// # use twinguard_guest::metric::MetricOption;
    /// let option = MetricOption { key: "/t", name: "max-step", value: "0" };
    /// assert_eq!(
    ///     option.invalid("must be greater than 0"),
    ///     "config `/t`: option `max-step`: invalid value \"0\": must be greater than 0",
    /// );
    /// ```
    pub fn invalid(&self, why: impl Display) -> String {
        format!(
            "config `{}`: option `{}`: invalid value {:?}: {why}",
            self.key, self.name, self.value
        )
    }

    /// Parses the value with [`FromStr`]; the error is [`invalid`](Self::invalid) with the
    /// parser's reason.
    pub fn parse<T>(&self) -> Result<T, String>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.value.parse().map_err(|err| self.invalid(err))
    }

    /// Parses the value with [`finite`]; the error is [`invalid`](Self::invalid).
    pub fn finite(&self) -> Result<f64, String> {
        finite(self.value).map_err(|why| self.invalid(why))
    }
}

/// Parses a finite number. `inf` and `NaN` parse as `f64` but, as a bound or a parameter, would
/// silently disable a check (every comparison with NaN is false), so they are refused.
pub fn finite(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        Ok(_) => Err("must be a finite number".to_owned()),
        Err(err) => Err(err.to_string()),
    }
}

/// `a`, `b` as "`a`, `b`".
pub(crate) fn known_list(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    const KNOWN: &[&str] = &["min", "max", "max-step"];

    fn options(value: &str) -> Result<Vec<(String, String)>, String> {
        let key = MetricKey {
            pointer: "/m",
            value,
        };
        let options = key.options(KNOWN)?;
        Ok(options
            .iter()
            .map(|o| (o.name.to_owned(), o.value.to_owned()))
            .collect())
    }

    #[test]
    fn options_are_trimmed_and_ordered() {
        assert_eq!(
            options(" max = 85 ,min=-40").unwrap(),
            [
                ("max".to_owned(), "85".to_owned()),
                ("min".to_owned(), "-40".to_owned())
            ]
        );
        // Everything after the first `=` is the value, for the caller to refuse.
        assert_eq!(options("min=1=2").unwrap()[0].1, "1=2");
    }

    #[test]
    fn refusals_name_the_key_and_the_option() {
        for (value, needles) in [
            ("", &["`/m`", "no option", "`min`, `max`, `max-step`"][..]),
            ("  ", &["`/m`", "no option"]),
            ("min=1,", &["`/m`", "stray comma", "\"min=1,\""]),
            (",min=1", &["`/m`", "stray comma"]),
            ("min", &["`/m`", "\"min\"", "name=value", "`max-step`"]),
            ("min=1, min =2", &["`/m`", "`min`", "twice"]),
            (
                "maxstep=3",
                &["`/m`", "unknown option `maxstep`", "`max-step`"],
            ),
            ("=3", &["`/m`", "unknown option ``"]),
        ] {
            let err = options(value).unwrap_err();
            for needle in needles {
                assert!(err.contains(needle), "{value:?}: {err:?} lacks {needle}");
            }
        }
    }

    #[test]
    fn values_parse_with_the_option_named() {
        let option = |value| MetricOption {
            key: "/m",
            name: "min",
            value,
        };
        assert_eq!(option("-40").finite(), Ok(-40.0));
        assert_eq!(option("7").parse::<u32>(), Ok(7));
        assert_eq!(
            option("inf").finite().unwrap_err(),
            "config `/m`: option `min`: invalid value \"inf\": must be a finite number"
        );
        assert_eq!(
            option("NaN").finite().unwrap_err(),
            "config `/m`: option `min`: invalid value \"NaN\": must be a finite number"
        );
        let err = option("cold").finite().unwrap_err();
        assert!(err.starts_with("config `/m`: option `min`: invalid value \"cold\": "));
        let err = option("2.5").parse::<u32>().unwrap_err();
        assert!(
            err.contains("\"2.5\"") && err.contains("invalid digit"),
            "{err}"
        );
    }

    #[test]
    fn metric_keys_once_each_with_the_last_value() {
        let config: Config = [
            ("/b", "max=1"),
            ("on-stuck", "alert"),
            ("/a", ""),
            ("/b", "max=2"),
        ]
        .into_iter()
        .collect();
        let keys = config.metric_keys().unwrap();
        assert_eq!(
            keys,
            [
                MetricKey {
                    pointer: "/b",
                    value: "max=2"
                },
                MetricKey {
                    pointer: "/a",
                    value: ""
                },
            ]
        );
        assert!(keys[1].is_blank());
        let config: Config = [("/a~2", "min=1")].into_iter().collect();
        let err = config.metric_keys().unwrap_err();
        assert!(err.contains("`/a~2`") && err.contains("'~'"), "{err}");
        assert_eq!(Config::default().metric_keys(), Ok(Vec::new()));
    }

    #[test]
    fn global_keys_beside_metrics() {
        let config: Config = [("/m", "min=0"), ("on-stuck", "alert")]
            .into_iter()
            .collect();
        assert_eq!(config.check_keys_beside_metrics(&["on-stuck"]), Ok(()));
        let config: Config = [("/m", "min=0"), ("on_stuck", "alert")]
            .into_iter()
            .collect();
        assert_eq!(
            config.check_keys_beside_metrics(&["on-stuck"]).unwrap_err(),
            "unknown config key `on_stuck`; known keys: `on-stuck`, and metric JSON Pointers \
             starting with `/`"
        );
    }
}
