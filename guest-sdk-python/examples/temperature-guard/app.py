"""An example Python policy: flags temperatures over a configured bound, strips the owner's
e-mail address, counts spikes per device (state) and over all devices (policy-wide state).

    scripts/build-python-policy.sh guest-sdk-python/examples/temperature-guard temperature_guard.wasm
"""

from twinguard_policy import Decision, Envelope, Policy, Severity, StateError
from twinguard_policy import declare, export, global_state, log, state
from twinguard_policy.text import f64, quoted


class TemperatureGuard(Policy):
    def init(self, config):
        config.check_keys(["max-celsius", "field"])
        # Refuse a bad bound when the policy loads, not on the first message.
        self.max = config.float("max-celsius", 80.0)
        self.pointer = config.pointer("field", "/temperature")
        # Read on every message: handed over with it, no host call.
        self.temperature = declare.field(self.pointer)
        declare.envelope(Envelope.DEVICE_ID)
        self.spikes = declare.counter("spikes", "1", "readings over the bound")

    def evaluate(self, msg):
        decision = Decision.redact().remove("/owner/email")
        value = msg.get(self.temperature)  # a Value, or None when absent
        celsius = None if value is None else value.as_f64()
        if celsius is None or celsius <= self.max:
            return decision
        spikes = state.get_json("spikes", 0) + 1
        try:
            state.set_json("spikes", spikes)
        except StateError as err:
            # The count is a convenience: the alert matters more than remembering it.
            log.warn("spike count not stored: %s" % err)
        total = global_state.update("total", lambda old: (old or 0) + 1, json_=True)
        self.spikes.add(1)
        site = msg.device.attribute("site") if msg.device else None
        return decision.with_alert(
            Severity.HIGH,
            "value-spike",
            "%s reported %s °C (max %s °C), spike #%d of %d%s"
            % (quoted(msg.device_id), f64(celsius), f64(self.max), spikes, total,
               " at " + quoted(site) if site else ""),
        )


Handler = export(TemperatureGuard)
