//! 4. The policy in Cedar (cedar-policy 4): one authorization request per message.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, PolicyId, PolicySet, Request, RestrictedExpression,
};

use crate::gen::Sample;
use crate::policy::{topic_device, Decision, Engine, Keys, Needed, Num, PII_KEYS};

/// The policy source.
pub const POLICY: &str = include_str!("../policy/compare.cedar");

/// The policy set, the inventory as entities, and what each `@redact` permit names.
pub struct Cedar {
    authorizer: Authorizer,
    policies: PolicySet,
    entities: Entities,
    device_type: EntityTypeName,
    action: EntityUid,
    resource: EntityUid,
    redacts: HashMap<PolicyId, u8>,
}

fn uid(text: &str) -> Result<EntityUid, String> {
    EntityUid::from_str(text).map_err(|e| format!("cedar uid {text}: {e}"))
}

impl Cedar {
    /// Parses the policies and builds the entity store: every inventory device is a
    /// `Device` in `Group::"inventory"`.
    pub fn new(inventory: &[String]) -> Result<Self, String> {
        let policies = PolicySet::from_str(POLICY).map_err(|e| format!("cedar policy: {e}"))?;
        let mut redacts = HashMap::new();
        for policy in policies.policies() {
            if let Some(key) = policy.annotation("redact") {
                let bit = Keys::bit(key).ok_or_else(|| format!("@redact({key:?})"))?;
                redacts.insert(policy.id().clone(), bit);
            }
        }
        let device_type =
            EntityTypeName::from_str("Device").map_err(|e| format!("cedar type: {e}"))?;
        let group = uid(r#"Group::"inventory""#)?;
        let mut entities = vec![Entity::new_no_attrs(group.clone(), HashSet::new())];
        for id in inventory {
            let device = EntityUid::from_type_name_and_id(device_type.clone(), EntityId::new(id));
            entities.push(Entity::new_no_attrs(device, HashSet::from([group.clone()])));
        }
        let entities =
            Entities::from_entities(entities, None).map_err(|e| format!("cedar entities: {e}"))?;
        Ok(Self {
            authorizer: Authorizer::new(),
            policies,
            entities,
            device_type,
            action: uid(r#"Action::"forward""#)?,
            resource: uid(r#"Stream::"telemetry""#)?,
            redacts,
        })
    }
}

/// A JSON number as a Cedar `decimal` literal (four fractional digits, about ±9.2e14).
///
/// Exact for the policy's comparisons: the value is the shortest decimal text of the f64,
/// rounded away from zero to four digits, which preserves `x <= hi` for `hi >= 0` and
/// `x >= lo` for `lo <= 0` with bounds on the 0.0001 grid (150, 400, -40, 0). Magnitudes
/// beyond Cedar's range are clamped to 9e14, outside every bound.
pub fn cedar_decimal(x: f64) -> String {
    const CLAMP: f64 = 900_000_000_000_000.0;
    let negative = x.is_sign_negative();
    if x.abs() >= CLAMP {
        let clamped = if negative {
            "-900000000000000.0"
        } else {
            "900000000000000.0"
        };
        return clamped.to_owned();
    }
    // f64's Display never uses an exponent: "21.5", "150", "0.00001".
    let text = format!("{}", x.abs());
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let mut units: i64 = int.parse::<i64>().unwrap_or(0) * 10_000;
    let kept = &frac[..frac.len().min(4)];
    if !kept.is_empty() {
        let scale = 10_i64.pow(4 - u32::try_from(kept.len()).unwrap_or(4));
        units += kept.parse::<i64>().unwrap_or(0) * scale;
    }
    if frac.len() > 4 && frac.bytes().skip(4).any(|b| b != b'0') {
        units += 1;
    }
    let sign = if negative && units != 0 { "-" } else { "" };
    format!("{sign}{}.{:04}", units / 10_000, units % 10_000)
}

fn push_num(pairs: &mut Vec<(String, RestrictedExpression)>, name: &str, value: Num) {
    match value {
        Num::Absent => {}
        Num::Number(x) => pairs.push((
            name.to_owned(),
            RestrictedExpression::new_decimal(cedar_decimal(x)),
        )),
        Num::Other => pairs.push((
            format!("{name}_invalid"),
            RestrictedExpression::new_bool(true),
        )),
    }
}

impl Engine for Cedar {
    fn name(&self) -> &'static str {
        "cedar-policy (Cedar)"
    }

    fn decide(&mut self, s: &Sample) -> Decision {
        // Cedar values have no floats and no null: the payload is parsed as in the typed native
        // version and the five keys mapped into the context.
        let Some(needed) = Needed::parse(&s.payload) else {
            return Decision::Quarantine;
        };
        let mut pairs = Vec::with_capacity(8);
        pairs.push((
            "device".to_owned(),
            RestrictedExpression::new_string(s.device.clone()),
        ));
        if let Some(segment) = topic_device(&s.topic) {
            pairs.push((
                "topic_device".to_owned(),
                RestrictedExpression::new_string(segment.to_owned()),
            ));
        }
        push_num(&mut pairs, "temp_c", needed.temp_c);
        push_num(&mut pairs, "kw", needed.kw);
        let pii = needed.pii();
        for key in PII_KEYS {
            if Keys::bit(key).is_some_and(|bit| pii.0 & bit != 0) {
                pairs.push((key.to_owned(), RestrictedExpression::new_bool(true)));
            }
        }
        let context = match Context::from_pairs(pairs) {
            Ok(context) => context,
            Err(e) => return Decision::Unexpected(format!("cedar context: {e}")),
        };
        let principal =
            EntityUid::from_type_name_and_id(self.device_type.clone(), EntityId::new(&s.device));
        let request = match Request::new(
            principal,
            self.action.clone(),
            self.resource.clone(),
            context,
            None,
        ) {
            Ok(request) => request,
            Err(e) => return Decision::Unexpected(format!("cedar request: {e}")),
        };
        let response = self
            .authorizer
            .is_authorized(&request, &self.policies, &self.entities);
        // A policy that errors is skipped by Cedar (a forbid that errors does not deny):
        // reported here so the agreement check catches it.
        if let Some(error) = response.diagnostics().errors().next() {
            return Decision::Unexpected(format!("cedar: {error}"));
        }
        match response.decision() {
            CedarDecision::Deny => Decision::Quarantine,
            CedarDecision::Allow => {
                let bits = response
                    .diagnostics()
                    .reason()
                    .filter_map(|id| self.redacts.get(id))
                    .fold(0, |acc, bit| acc | bit);
                if bits == 0 {
                    Decision::Allow
                } else {
                    Decision::Redact(Keys(bits))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::cedar_decimal;

    #[test]
    fn decimals_round_away_from_zero() {
        assert_eq!(cedar_decimal(21.5), "21.5000");
        assert_eq!(cedar_decimal(150.0), "150.0000");
        assert_eq!(cedar_decimal(-40.0), "-40.0000");
        assert_eq!(cedar_decimal(-0.0), "0.0000");
        assert_eq!(cedar_decimal(150.000_01), "150.0001");
        assert_eq!(cedar_decimal(-40.000_01), "-40.0001");
        assert_eq!(cedar_decimal(1e300), "900000000000000.0");
        assert_eq!(cedar_decimal(-1e300), "-900000000000000.0");
    }
}
