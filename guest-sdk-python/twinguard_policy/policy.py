"""The policy class and its export as the component's `handler`.

    from twinguard_policy import Policy, Decision, export

    class MaxTemperature(Policy):
        def init(self, config):
            config.check_keys(["max-celsius"])
            self.max = config.float("max-celsius", 80.0)
            declare.field("/temperature")

        def evaluate(self, msg):
            t = msg.f64("/temperature")
            if t is not None and t > self.max:
                return Decision.alert(Severity.HIGH, "value-spike", "%s °C" % t)
            return Decision.allow()

    Handler = export(MaxTemperature)   # the name componentize-py looks for

The host calls `init` once per instance with the configured key-values: the SDK makes a new
object of the class, calls its `init(config)` with the declarations open, and keeps the object
for `evaluate` when `init` returns (whatever it returns; raise `PolicyError` to refuse the
configuration). What `init` declared becomes the manifest. Then `evaluate(msg)` runs for one
or many messages; keep per-device memory in `state`, not on `self` (the host may use a fresh
instance per message, or one for many).
"""

import os
import sys
import traceback

from . import config as _config
from . import declare as _declare
from .decision import Decision
from .errors import PolicyError


class Policy:
    """Subclass it: `init(config)` (optional) checks the configuration and declares what the
    policy reads; `evaluate(msg)` returns a `Decision`."""

    def init(self, config):
        pass

    def evaluate(self, msg):
        raise NotImplementedError("a Policy implements evaluate(msg)")


_policy = None


def _manifest_to_wit(m):
    from wit_world.imports import types as wit  # only in a component (once per init)

    envelope = wit.Envelope(0)
    if m.envelope & _declare.Envelope.DEVICE_ID:
        envelope |= wit.Envelope.DEVICE_ID
    if m.envelope & _declare.Envelope.TOPIC:
        envelope |= wit.Envelope.TOPIC
    metrics = [
        wit.Metric(
            name,
            wit.MetricKind.COUNTER if kind == "counter" else wit.MetricKind.HISTOGRAM,
            unit,
            description,
        )
        for name, kind, unit, description in m.metrics
    ]
    return wit.Manifest(list(m.fields), envelope, list(m.keep_last), metrics)


def run_init(cls, entries):
    """`init` as the host runs it: returns the manifest, or raises `PolicyError`."""
    global _policy
    _policy = None
    config = _config._replace(_config.Config(entries))
    _declare._begin()
    ok = False
    try:
        policy = cls()
        policy.init(config)
        ok = True
    except PolicyError:
        raise
    except Exception as err:
        # A bug rather than a refusal: fail the load, naming it, with the traceback in the
        # host log.
        traceback.print_exc(file=sys.stderr)
        raise PolicyError("%s.init raised %s: %s" % (cls.__name__, type(err).__name__, err))
    finally:
        manifest = _declare._finish(ok)
    _policy = policy
    return manifest


def run_evaluate(cls, message):
    """`evaluate` as the host runs it, on an SDK `Message`."""
    if _policy is None:
        return Decision.quarantine("%s: evaluate called before a successful init" % cls.__name__)
    decision = _policy.evaluate(message)
    if not isinstance(decision, Decision):
        raise TypeError(
            "%s.evaluate returned %r, not a Decision" % (cls.__name__, type(decision).__name__)
        )
    return decision


def _trap(err):
    """Ends the call on an exception from `evaluate` as a Rust panic does: the traceback to the
    host log, then a last line in a panic's shape (`panicked at app.py:83:` and the exception),
    which the host quotes in the fault (`guest said: ...`), then a trap."""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = "?"
    if tb is not None:
        name = tb.tb_frame.f_code.co_filename
        # componentize-py mounts each path entry as /0, /1, ...
        parts = name.split("/")
        if len(parts) > 2 and parts[0] == "" and parts[1].isdigit():
            name = "/".join(parts[2:])
        where = "%s:%d" % (name, tb.tb_lineno)
    try:
        traceback.print_exception(err, file=sys.stderr)
        message = "".join(traceback.format_exception_only(err)).strip().replace("\n", " ")
        sys.stderr.write("thread 'python' panicked at %s:\n%s\n" % (where, message))
        sys.stderr.flush()
    finally:
        os.abort()


def export(cls):
    """The `Handler` class that componentize-py exports for the policy class `cls`: assign it
    to `Handler` in the app module."""
    from componentize_py_types import Err
    from wit_world import exports

    from .message import Message

    class Handler(exports.Handler):
        def init(self, config):
            try:
                return _manifest_to_wit(run_init(cls, config))
            except PolicyError as err:
                raise Err(str(err)) from None

        def evaluate(self, message):
            try:
                policy = _policy
                if policy is None:
                    return run_evaluate(cls, Message(message)).to_wit()
                decision = policy.evaluate(Message(message))
                if type(decision) is not Decision and not isinstance(decision, Decision):
                    raise TypeError(
                        "%s.evaluate returned %r, not a Decision"
                        % (cls.__name__, type(decision).__name__)
                    )
                return decision.to_wit()
            except Exception as err:
                _trap(err)

    Handler.__qualname__ = Handler.__name__ = "Handler"
    Handler.policy = cls
    return Handler
