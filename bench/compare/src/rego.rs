//! 3. The policy in Rego, evaluated by regorus.

use std::collections::BTreeMap;

use regorus::Value;

use crate::gen::Sample;
use crate::policy::{Decision, Engine, Keys};

/// The policy source.
pub const POLICY: &str = include_str!("../policy/compare.rego");
/// The rule the engine evaluates per message.
const RULE: &str = "data.twinguard.compare.result";

/// A regorus engine with the policy and the inventory loaded.
pub struct Rego {
    engine: regorus::Engine,
    key_device: Value,
    key_topic: Value,
    key_payload: Value,
    key_action: Value,
    key_keys: Value,
}

impl Rego {
    /// Loads the policy and the inventory (as `data.inventory`, an object of `id: true`).
    pub fn new(inventory: &[String]) -> Result<Self, String> {
        let mut engine = regorus::Engine::new();
        engine
            .add_policy("compare.rego".into(), POLICY.into())
            .map_err(|e| format!("rego policy: {e}"))?;
        let ids: BTreeMap<Value, Value> = inventory
            .iter()
            .map(|id| (Value::from(id.as_str()), Value::from(true)))
            .collect();
        let mut data = BTreeMap::new();
        data.insert(Value::from("inventory"), Value::from(ids));
        engine
            .add_data(Value::from(data))
            .map_err(|e| format!("rego data: {e}"))?;
        Ok(Self {
            engine,
            key_device: Value::from("device"),
            key_topic: Value::from("topic"),
            key_payload: Value::from("payload"),
            key_action: Value::from("action"),
            key_keys: Value::from("keys"),
        })
    }

    fn answer(&self, result: &Value) -> Decision {
        let Ok(object) = result.as_object() else {
            return Decision::Unexpected(format!("rego result {result}"));
        };
        let action = object
            .get(&self.key_action)
            .and_then(|a| a.as_string().ok());
        match action.map(|a| &**a) {
            Some("allow") => Decision::Allow,
            Some("quarantine") => Decision::Quarantine,
            Some("redact") => {
                let mut bits = 0;
                if let Some(Ok(keys)) = object.get(&self.key_keys).map(Value::as_array) {
                    for key in keys.iter() {
                        match key.as_string().ok().and_then(|k| Keys::bit(k)) {
                            Some(bit) => bits |= bit,
                            None => return Decision::Unexpected(format!("rego key {key}")),
                        }
                    }
                }
                Decision::Redact(Keys(bits))
            }
            _ => Decision::Unexpected(format!("rego result {result}")),
        }
    }
}

impl Engine for Rego {
    fn name(&self) -> &'static str {
        "regorus (Rego)"
    }

    fn decide(&mut self, s: &Sample) -> Decision {
        // Parsing the payload into regorus's Value is part of the measured work.
        let Ok(text) = std::str::from_utf8(&s.payload) else {
            return Decision::Quarantine;
        };
        let Ok(payload) = Value::from_json_str(text) else {
            return Decision::Quarantine;
        };
        let mut input = BTreeMap::new();
        input.insert(self.key_device.clone(), Value::from(s.device.as_str()));
        input.insert(self.key_topic.clone(), Value::from(s.topic.as_str()));
        input.insert(self.key_payload.clone(), payload);
        self.engine.set_input(Value::from(input));
        match self.engine.eval_rule(RULE.to_owned()) {
            Ok(result) => self.answer(&result),
            Err(e) => Decision::Unexpected(format!("rego: {e}")),
        }
    }
}
