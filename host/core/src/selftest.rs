//! Self-tests a module ships: NDJSON cases (the `eval` input format plus `expect`, and an
//! optional per-case `config`) in a custom section named `twinguard-selftest`, anywhere in the
//! component (the guest SDK's `selftest!` puts it in the core module). Before a generation is
//! activated, every case runs on a fresh instance with state of its own, so the cases never
//! touch live per-device state; one verdict other than the expected refuses the module.

use crate::error::{Error, LoadError};
use crate::input;
use crate::policy::{LoadContext, Policy};
use crate::runtime::{evaluate_in, PolicySet};

/// The custom section's name.
pub const SECTION: &str = "twinguard-selftest";

/// Cases a module may ship: each runs at every load, so a flood of them would make a load (and
/// a reload) as slow as its author likes.
pub const MAX_CASES: usize = 256;
/// Distinct per-case configs: each needs a probe instance of its own, alive until the cases end.
pub const MAX_CONFIGS: usize = 8;
/// Fuel all cases together may use, in multiples of the policy's per-message fuel limit: a
/// deterministic bound on the time self-tests take (~100 ms of guest work at the default).
pub const FUEL_BUDGET: u64 = 100;

/// The cases a module ships, as text: every `twinguard-selftest` section, in order. `None`
/// when there is none, or when the binary cannot be parsed (compilation reports that).
pub(crate) fn cases_in(bytes: &[u8]) -> Option<String> {
    let mut text = String::new();
    // `parse_all` descends into nested core modules and components, where the guest SDK's
    // `selftest!` puts its section (the core module of a component).
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        if let wasmparser::Payload::CustomSection(section) = payload.ok()? {
            if section.name() == SECTION {
                text.push_str(&String::from_utf8_lossy(section.data()));
                if !text.ends_with('\n') {
                    text.push('\n');
                }
            }
        }
    }
    (!text.is_empty()).then_some(text)
}

/// Runs a module's cases; returns how many passed, or the first failure as a load error.
pub(crate) fn run(ctx: &LoadContext<'_>, policy: &Policy, text: &str) -> Result<usize, Error> {
    let spec = policy.spec();
    let fail = |detail: String| Error::Load {
        policy: spec.name.clone(),
        path: spec.path.clone(),
        cause: LoadError::SelfTest(detail),
    };
    let cases = text.lines().filter(|l| !l.trim().is_empty()).count();
    if cases > MAX_CASES {
        return Err(fail(format!(
            "the module ships {cases} cases; at most {MAX_CASES} run at load"
        )));
    }
    let budget = spec.limits.fuel.saturating_mul(FUEL_BUDGET);
    let mut fuel = 0_u64;
    // One probe instance per distinct config, each with fresh state.
    let mut probes: Vec<(Vec<(String, String)>, PolicySet)> = Vec::new();
    let mut passed = 0;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let case = input::parse_line(line).map_err(|e| fail(format!("case {line_no}: {e}")))?;
        let Some(expect) = case.expect else {
            return Err(fail(format!(
                "case {line_no}: no \"expect\" (allow, redact, quarantine, alert or fault)"
            )));
        };
        if !["allow", "redact", "quarantine", "alert", "fault"].contains(&expect.as_str()) {
            return Err(fail(format!(
                "case {line_no}: expect {expect:?} is not allow, redact, quarantine, alert or fault"
            )));
        }
        let config = case.config.unwrap_or_else(|| spec.config.clone());
        let index = match probes.iter().position(|(c, _)| *c == config) {
            Some(i) => i,
            None if probes.len() >= MAX_CONFIGS => {
                return Err(fail(format!(
                    "case {line_no}: more than {MAX_CONFIGS} distinct configs (each needs an \
                     instance of its own)"
                )));
            }
            None => {
                let probe = policy
                    .probe(ctx, config.clone())
                    .map_err(|e| fail(format!("case {line_no}: the probe instance: {e}")))?;
                probes.push((
                    config,
                    PolicySet::alone(probe, 0, crate::Unrouted::default()),
                ));
                probes.len() - 1
            }
        };
        let outcome = evaluate_in(&probes[index].1, &case.message);
        fuel = fuel.saturating_add(outcome.trace.iter().map(|t| t.fuel_used).sum());
        if fuel > budget {
            return Err(fail(format!(
                "case {line_no}: the cases used {fuel} fuel units, over their budget of {budget} \
                 ({FUEL_BUDGET} messages' worth)"
            )));
        }
        let got = outcome.trace.first().map_or("none", |t| t.verdict.name());
        if got != expect {
            let why = match &outcome.action {
                crate::Action::Quarantine { reason, .. } => format!(" ({reason})"),
                _ => String::new(),
            };
            return Err(fail(format!(
                "case {line_no}: expected {expect}, got {got}{why}"
            )));
        }
        passed += 1;
    }
    Ok(passed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A custom section as the binary format writes it.
    pub(crate) fn section(name: &str, payload: &[u8]) -> Vec<u8> {
        let mut body = vec![u8::try_from(name.len()).unwrap()];
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(payload);
        let mut out = vec![0, u8::try_from(body.len()).unwrap()];
        out.extend(body);
        out
    }

    #[test]
    fn finds_sections_in_nested_modules_and_ignores_others() {
        let mut module = b"\0asm\x01\0\0\0".to_vec();
        module.extend(section("other", b"x"));
        module.extend(section(SECTION, b"{\"a\":1}"));
        let mut component = b"\0asm\x0d\0\x01\0".to_vec();
        component.push(1);
        component.push(u8::try_from(module.len()).unwrap());
        component.extend(&module);
        component.extend(section(SECTION, b"{\"b\":2}\n"));
        assert_eq!(cases_in(&component).unwrap(), "{\"a\":1}\n{\"b\":2}\n");
        assert_eq!(cases_in(b"\0asm\x01\0\0\0"), None);
        // Truncated: a section claims more bytes than there are.
        let mut broken = b"\0asm\x01\0\0\0".to_vec();
        broken.extend([0, 50, 1]);
        assert_eq!(cases_in(&broken), None);
        assert_eq!(cases_in(b"garbage"), None);
    }
}
