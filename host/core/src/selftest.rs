//! Self-tests a module ships: test cases in NDJSON (see [`crate::cases`]: the `eval` input
//! format plus `expect`, and optionally `case`, `after` and `config`) in a custom section named
//! `twinguard-selftest`, anywhere in the component (the guest SDK's `selftest!` puts it in the
//! core module). Before a generation is activated, every case runs on a fresh instance with
//! state of its own, its steps in order, so the cases never touch live per-device state; one
//! outcome other than the expected refuses the module, naming the case and step.

use crate::cases;
use crate::error::{Error, LoadError};
use crate::policy::{LoadContext, Policy, PolicySpec};
use crate::runtime::{evaluate_in, PolicySet};
use std::path::Path;

/// The custom section's name.
pub const SECTION: &str = "twinguard-selftest";

/// Steps a module may ship: each runs at every load, so a flood of them would make a load (and
/// a reload) as slow as its author likes.
pub const MAX_CASES: usize = 256;
/// Fuel all cases together may use, in multiples of the policy's per-message fuel limit: a
/// deterministic bound on the time self-tests take (~100 ms of guest work at the default).
pub const FUEL_BUDGET: u64 = 100;

/// The cases a module ships, as text (see [`crate::cases::shipped`]): every `twinguard-selftest` section, in order. `None`
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

/// Runs a loaded module's cases, each on a probe of it; returns how many steps passed, or the
/// first failure as a load error.
pub(crate) fn run(ctx: &LoadContext<'_>, policy: &Policy, text: &str) -> Result<usize, Error> {
    run_on(policy.spec(), |config| policy.probe(ctx, config), text)
}

/// Links a component on disk (compiling it once) and runs the cases it ships, without loading
/// it with a config of its own (`twinguard check`): each case's probe starts from the linked
/// component. The outer error: the component itself is refused; the inner one: a case failed;
/// `Ok(None)` when it ships none.
pub(crate) fn run_unconfigured(
    ctx: &LoadContext<'_>,
    path: &Path,
    limits: crate::Limits,
) -> Result<(crate::ComponentInfo, Result<Option<usize>, Error>), Error> {
    let (pre, info, _) = crate::policy::link(ctx, None, path)?;
    let Some(text) = info.selftest.clone() else {
        return Ok((info, Ok(None)));
    };
    let defaults = crate::config::Defaults::default();
    let spec = PolicySpec {
        name: path
            .file_stem()
            .map_or_else(|| "policy".into(), |s| s.to_string_lossy().into_owned()),
        path: path.to_path_buf(),
        config: Vec::new(),
        limits,
        isolation: crate::Isolation::Reuse,
        on_fault: crate::OnFault::Quarantine,
        breaker: crate::breaker::BreakerSettings {
            threshold: defaults.breaker_threshold,
            rate: defaults.breaker_rate,
            cooldown_ms: defaults.breaker_cooldown_ms,
        },
    };
    let digest: std::sync::Arc<str> = info.digest.as_str().into();
    let passed = run_on(
        &spec,
        |config| {
            let mut spec = spec.clone();
            spec.config = config;
            Policy::from_pre(
                ctx,
                spec,
                std::sync::Arc::default(),
                pre.clone(),
                digest.clone(),
                info.size,
                None,
            )
        },
        &text,
    )
    .map(Some);
    Ok((info, passed))
}

fn run_on(
    spec: &PolicySpec,
    probe: impl Fn(Vec<(String, String)>) -> Result<Policy, Error>,
    text: &str,
) -> Result<usize, Error> {
    let fail = |detail: String| Error::Load {
        policy: spec.name.clone(),
        path: spec.path.clone(),
        cause: LoadError::SelfTest(detail),
    };
    let steps = text.lines().filter(|l| !l.trim().is_empty()).count();
    if steps > MAX_CASES {
        return Err(fail(format!(
            "the module ships {steps} steps; at most {MAX_CASES} run at load"
        )));
    }
    let cases = cases::from_ndjson(text).map_err(|e| fail(e.to_string()))?;
    let budget = spec.limits.fuel.saturating_mul(FUEL_BUDGET);
    let mut fuel = 0_u64;
    let mut passed = 0;
    for case in &cases {
        let config = case.config.clone().unwrap_or_else(|| spec.config.clone());
        // An instance and state of its own per case, dropped when the case ends.
        let probe = probe(config)
            .map_err(|e| fail(format!("case {:?}: the probe instance: {e}", case.name)))?;
        let set = PolicySet::alone(probe, 0, crate::Unrouted::default());
        let mut over = None;
        let results = cases::run(case, |message| {
            let outcome = evaluate_in(&set, message);
            fuel = fuel.saturating_add(outcome.trace.iter().map(|t| t.fuel_used).sum());
            if fuel > budget && over.is_none() {
                over = Some(fuel);
            }
            outcome
        });
        if let Some(fuel) = over {
            return Err(fail(format!(
                "case {:?}: the cases used {fuel} fuel units, over their budget of {budget} \
                 ({FUEL_BUDGET} messages' worth)",
                case.name
            )));
        }
        for r in results {
            if let Some(m) = r.mismatches.first() {
                let at = if case.steps.len() == 1 {
                    format!("case {:?}", case.name)
                } else {
                    format!("case {:?}, {}", case.name, r.label)
                };
                return Err(fail(format!("{at}: {m}")));
            }
            passed += 1;
        }
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
