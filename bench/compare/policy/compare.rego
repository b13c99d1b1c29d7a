# The compare benchmark's policy in Rego (regorus). Input: {device, topic, payload}; data:
# {"inventory": {"<device id>": true, ...}}. Evaluated: data.twinguard.compare.result.
package twinguard.compare

import rego.v1

pii_keys := {"owner_email", "owner_name", "operator_phone"}

# 1. The topic's device segment must name the device, and the device must be known.
topic_matches if split(input.topic, "/")[1] == input.device

quarantine if not topic_matches

quarantine if not data.inventory[input.device]

# 2. temp_c and kw, when present, must be numbers within bounds.
quarantine if not is_object(input.payload)

quarantine if {
	x := input.payload.temp_c
	not within(x, -40, 150)
}

quarantine if {
	x := input.payload.kw
	not within(x, 0, 400)
}

within(x, lo, hi) if {
	is_number(x)
	x >= lo
	x <= hi
}

# 3. The PII keys present at the top level (whatever their value, null included).
redact contains key if {
	some key in pii_keys
	_ = input.payload[key]
}

result := {"action": "quarantine"} if {
	quarantine
} else := {"action": "redact", "keys": sort(redact)} if {
	count(redact) > 0
} else := {"action": "allow"}
