//! Routes: MQTT topic filters mapped to ordered chains of policies.

use std::fmt;

/// A parsed MQTT topic filter (`+` matches one level, `#` the remaining levels).
///
/// ```
/// use twinguard_core::TopicFilter;
/// let f = TopicFilter::parse("plant/+/telemetry/#").unwrap();
/// assert!(f.matches("plant/press-1/telemetry"));
/// assert!(f.matches("plant/press-1/telemetry/temp"));
/// assert!(!f.matches("plant/press-1/status"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicFilter {
    text: String,
    levels: Vec<Level>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Exact(String),
    Single,
    Rest,
}

/// Why a topic filter is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError(&'static str);

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for FilterError {}

impl TopicFilter {
    /// `#`: every topic.
    pub(crate) fn any() -> Self {
        Self {
            text: "#".into(),
            levels: vec![Level::Rest],
        }
    }

    /// Parses a filter by the MQTT rules: `#` only as the whole last level, `+` only as a
    /// whole level, no empty filter, no NUL.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        if text.is_empty() {
            return Err(FilterError("a topic filter cannot be empty"));
        }
        if text.contains('\0') {
            return Err(FilterError("a topic filter cannot contain NUL"));
        }
        let parts: Vec<&str> = text.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let level = match *part {
                "#" if i + 1 == parts.len() => Level::Rest,
                "#" => return Err(FilterError("'#' must be the last level")),
                "+" => Level::Single,
                p if p.contains(['#', '+']) => {
                    return Err(FilterError("'+' and '#' must fill a whole level"))
                }
                p => Level::Exact(p.to_string()),
            };
            levels.push(level);
        }
        Ok(Self {
            text: text.to_string(),
            levels,
        })
    }

    /// The filter as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `topic` matches. Topics starting with `$` are not matched by a leading
    /// wildcard (MQTT 3.1.1 section 4.7.2).
    pub fn matches(&self, topic: &str) -> bool {
        if topic.starts_with('$') && !matches!(self.levels.first(), Some(Level::Exact(_))) {
            return false;
        }
        let mut parts = topic.split('/');
        for level in &self.levels {
            match level {
                Level::Rest => return true,
                Level::Single => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Level::Exact(want) => match parts.next() {
                    Some(got) if got == want => {}
                    _ => return false,
                },
            }
        }
        parts.next().is_none()
    }

    /// Whether every topic `other` matches is also matched by `self`: a route with `other`
    /// placed after one with `self` can never run.
    ///
    /// ```
    /// use twinguard_core::TopicFilter;
    /// let f = |s| TopicFilter::parse(s).unwrap();
    /// assert!(f("plant/#").covers(&f("plant/+/telemetry")));
    /// assert!(!f("plant/+/telemetry").covers(&f("plant/#")));
    /// assert!(!f("#").covers(&f("$SYS/x")));
    /// ```
    pub fn covers(&self, other: &Self) -> bool {
        // A leading wildcard never matches `$` topics; a literal `$…` first level of `other`
        // is therefore outside a filter that starts with one.
        if let (Some(Level::Rest | Level::Single), Some(Level::Exact(first))) =
            (self.levels.first(), other.levels.first())
        {
            if first.starts_with('$') {
                return false;
            }
        }
        let mut theirs = other.levels.iter();
        for level in &self.levels {
            match (level, theirs.next()) {
                (Level::Rest, _) => return true,
                (Level::Single, Some(Level::Single | Level::Exact(_))) => {}
                (Level::Exact(a), Some(Level::Exact(b))) if a == b => {}
                _ => return false,
            }
        }
        theirs.next().is_none()
    }
}

/// A route of a generation: a filter and indices into the generation's policies.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub filter: TopicFilter,
    /// The device class the route is for, if it picks by class.
    pub class: Option<String>,
    pub chain: Vec<usize>,
    /// Bound when the runtime has a meter.
    pub instruments: Option<crate::telemetry::RouteInstruments>,
}

/// The chain for `topic` from a device of `class`: the first route whose filter matches and
/// whose class, if it names one, is the device's.
pub(crate) fn route<'a>(
    routes: &'a [Route],
    topic: &str,
    class: Option<&str>,
) -> Option<&'a Route> {
    routes
        .iter()
        .find(|r| r.filter.matches(topic) && r.class.as_deref().is_none_or(|c| Some(c) == class))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        let f = |s| TopicFilter::parse(s).unwrap();
        assert!(f("#").matches("a/b/c"));
        assert!(f("a/#").matches("a"));
        assert!(f("a/#").matches("a/b"));
        assert!(!f("a/#").matches("b/a"));
        assert!(f("+/b").matches("a/b"));
        assert!(!f("+/b").matches("a/b/c"));
        assert!(f("a/+").matches("a/"));
        assert!(!f("a/+").matches("a"));
        assert!(!f("#").matches("$SYS/x"));
        assert!(!f("+/x").matches("$SYS/x"));
        assert!(f("#").covers(&f("a/b")));
        assert!(f("a/#").covers(&f("a")));
        assert!(f("a/+").covers(&f("a/b")));
        assert!(f("a/b").covers(&f("a/b")));
        assert!(!f("a/b").covers(&f("a/+")));
        assert!(!f("a/+").covers(&f("a/#")));
        assert!(!f("a/+").covers(&f("a/b/c")));
        assert!(!f("+/x").covers(&f("$SYS/x")));
        assert!(f("$SYS/#").covers(&f("$SYS/x")));
        assert!(f("$SYS/#").matches("$SYS/x"));
    }

    #[test]
    fn invalid_filters() {
        for bad in ["", "a/#/b", "a/b#", "a+/b", "a\0"] {
            assert!(TopicFilter::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn first_route_wins() {
        let routes = vec![
            Route {
                filter: TopicFilter::parse("a/special").unwrap(),
                class: None,
                chain: vec![1],
                instruments: None,
            },
            Route {
                filter: TopicFilter::parse("a/#").unwrap(),
                class: None,
                chain: vec![0],
                instruments: None,
            },
        ];
        assert_eq!(route(&routes, "a/special", None).unwrap().chain, vec![1]);
        assert_eq!(route(&routes, "a/other", None).unwrap().chain, vec![0]);
        assert!(route(&routes, "b", None).is_none());
    }
}
