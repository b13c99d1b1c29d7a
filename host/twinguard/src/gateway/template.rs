//! Topic templates: `devices/{device}/telemetry` matches `devices/press-7/telemetry` and
//! captures `device = press-7`; an output template `twin/{device}/telemetry` fills it back in.

use std::fmt;

/// A parsed topic template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    levels: Vec<Level>,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    /// `{name}`: one whole level.
    Var(String),
}

/// Values captured from a topic, by variable name.
pub type Captures = Vec<(String, String)>;

impl Template {
    /// Parses a template: `/`-separated levels, each a literal or a whole-level `{name}`.
    /// MQTT wildcards have no place in a template (they belong to the input filter).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("empty template".into());
        }
        let mut levels = Vec::new();
        for level in text.split('/') {
            if let Some(name) = level.strip_prefix('{').and_then(|l| l.strip_suffix('}')) {
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(format!("bad variable {level:?} in template {text:?}: use {{name}} with letters, digits, '_' or '-'"));
                }
                // Twice in an input it would capture two levels under one name, and which
                // one a route or the device id then sees is anyone's guess.
                if levels
                    .iter()
                    .any(|l| matches!(l, Level::Var(v) if v == name))
                {
                    return Err(format!(
                        "variable {level:?} appears twice in template {text:?}: each variable names one level"
                    ));
                }
                levels.push(Level::Var(name.to_owned()));
            } else if level.contains(['{', '}', '+', '#']) {
                return Err(format!(
                    "level {level:?} of template {text:?}: a variable must be a whole level ({{name}}), and + or # belong in the input filter"
                ));
            } else {
                levels.push(Level::Literal(level.to_owned()));
            }
        }
        Ok(Self {
            levels,
            text: text.to_owned(),
        })
    }

    /// The variables the template captures, in order.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.levels.iter().filter_map(|l| match l {
            Level::Var(v) => Some(v.as_str()),
            Level::Literal(_) => None,
        })
    }

    /// The captures of `topic`, or `None` when it does not fit the template.
    pub fn capture(&self, topic: &str) -> Option<Captures> {
        let mut out = Vec::new();
        let mut parts = topic.split('/');
        for level in &self.levels {
            let part = parts.next()?;
            match level {
                Level::Literal(l) if l == part => {}
                Level::Literal(_) => return None,
                Level::Var(_) if part.is_empty() => return None,
                Level::Var(name) => out.push((name.clone(), part.to_owned())),
            }
        }
        parts.next().is_none().then_some(out)
    }

    /// The template with its variables filled from `captures`; `None` if one is missing.
    pub fn fill(&self, captures: &Captures) -> Option<String> {
        let mut out = String::with_capacity(self.text.len() + 16);
        for (i, level) in self.levels.iter().enumerate() {
            if i > 0 {
                out.push('/');
            }
            match level {
                Level::Literal(l) => out.push_str(l),
                Level::Var(name) => {
                    let (_, value) = captures.iter().find(|(n, _)| n == name)?;
                    out.push_str(value);
                }
            }
        }
        Some(out)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The topic a shared subscription delivers: `$share/<group>/<filter>` → `<filter>`.
pub fn strip_share(filter: &str) -> &str {
    filter
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
        .map_or(filter, |(_, f)| f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_and_fills() {
        let input = Template::parse("devices/{device}/telemetry").unwrap();
        let output = Template::parse("twin/{device}/telemetry").unwrap();
        let caps = input.capture("devices/press-7/telemetry").unwrap();
        assert_eq!(caps, vec![("device".to_owned(), "press-7".to_owned())]);
        assert_eq!(output.fill(&caps).unwrap(), "twin/press-7/telemetry");
        assert!(input.capture("devices/press-7/status").is_none());
        assert!(input.capture("devices/press-7/telemetry/extra").is_none());
        assert!(input.capture("devices//telemetry").is_none());
        assert!(input.capture("devices").is_none());
        let other = Template::parse("twin/{site}/{device}").unwrap();
        assert!(other.fill(&caps).is_none());
    }

    #[test]
    fn refusals_name_the_level() {
        for (t, want) in [
            ("", "empty"),
            ("devices/+/telemetry", "input filter"),
            ("devices/dev{id}/x", "whole level"),
            ("devices/{}/x", "bad variable"),
            ("devices/{a b}/x", "bad variable"),
            ("{x}/{x}", "appears twice"),
            ("devices/{device}/{kind}/{device}", "appears twice"),
        ] {
            let err = Template::parse(t).unwrap_err();
            assert!(err.contains(want), "{t}: {err}");
        }
    }

    #[test]
    fn shared_subscriptions_deliver_plain_topics() {
        assert_eq!(
            strip_share("$share/gw/devices/+/telemetry"),
            "devices/+/telemetry"
        );
        assert_eq!(strip_share("devices/+/telemetry"), "devices/+/telemetry");
        assert_eq!(strip_share("$share/gw"), "$share/gw");
    }
}
