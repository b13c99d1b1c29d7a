"""Write twinguard policies in Python (contract `twinguard:policy@0.2.0`), built into a
component with componentize-py.

    from twinguard_policy import Decision, Policy, Severity, declare, export

    class Hot(Policy):
        def init(self, config):
            config.check_keys(["max-celsius"])
            self.max = config.float("max-celsius", 80.0)
            declare.field("/temp_c")

        def evaluate(self, msg):
            t = msg.f64("/temp_c")
            if t is not None and t > self.max:
                return Decision.alert(Severity.HIGH, "value-spike", "%s °C" % t)
            return Decision.allow()

    Handler = export(Hot)

See README.md beside this package for the API, the build and the limits a Python component
needs.
"""

from . import config, declare, errors, pointer, rustchar, text, walk
from .config import Config
from .declare import Envelope
from .decision import Alert, Decision, Edit, Severity
from .errors import ConfigError, FieldError, PolicyError, StateError, WalkError
from .policy import Policy, export

try:  # The modules over the host's imports need the bindings componentize-py generates.
    from . import global_state, log, state
    from .message import ContentType, Device, Message, Value
except ImportError as _err:  # pragma: no cover - outside a component, without bindings
    if (_err.name or "").split(".")[0] not in ("wit_world", "componentize_py_types"):
        raise

__version__ = "0.2.0"

__all__ = [
    "Alert",
    "Config",
    "ConfigError",
    "ContentType",
    "Decision",
    "Device",
    "Edit",
    "Envelope",
    "FieldError",
    "Message",
    "Policy",
    "PolicyError",
    "Severity",
    "StateError",
    "Value",
    "WalkError",
    "config",
    "declare",
    "errors",
    "export",
    "global_state",
    "log",
    "pointer",
    "rustchar",
    "state",
    "text",
    "walk",
]
