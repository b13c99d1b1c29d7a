"""What the policy reads, declared once in `init` (the contract's manifest).

- `field(pointer)`: a payload field read on every message. The host extracts every declared
  field of the chain in one pass and hands the values over with the message, so
  `msg.field(pointer)` on a declared pointer costs no call into the host (an undeclared one
  still works, one host call per lookup). Declaring changes no result, only the cost.
- `envelope(Envelope.DEVICE_ID | Envelope.TOPIC)`: envelope parts copied into every message;
  parts not declared are fetched on first use.
- `keep_last(pointer)`: a field whose value in the device's last *forwarded* message the
  policy reads (`msg.last(handle)`).
- `counter(name, unit, description)`, `histogram(...)`: metrics the policy emits.

Only while `init` runs; elsewhere every function raises `PolicyError` saying so. Every instance
must declare the same, so declare from the configuration only.
"""

import enum

from .errors import PolicyError
from .pointer import check as _check_pointer
from .rustchar import debug_str

MAX_FIELDS = 64
MAX_KEEP_LAST = 16
MAX_METRICS = 32


class Envelope(enum.IntFlag):
    """Envelope parts a policy reads on every message, combined with `|`."""

    NONE = 0
    DEVICE_ID = 1
    TOPIC = 2


class Field(int):
    """A declared field: its index among the declared fields (`msg.get(field)`)."""


class Last(int):
    """A declared `keep-last` field (`msg.last(last)`)."""


class Counter:
    """A declared counter: `add(n)`."""

    def __init__(self, index):
        self.index = index

    def add(self, n=1):
        from wit_world.imports import host

        host.counter_add(self.index, n)


class Histogram:
    """A declared histogram: `record(value)` (finite, or the host faults the policy)."""

    def __init__(self, index):
        self.index = index

    def record(self, value):
        from wit_world.imports import host

        host.histogram_record(self.index, float(value))


class Manifest:
    """What a policy declared."""

    def __init__(self):
        self.fields = []
        self.envelope = Envelope.NONE
        self.keep_last = []
        self.metrics = []  # (name, kind, unit, description); kind "counter" or "histogram"
        self.positions = {}

    def __repr__(self):
        return "Manifest(fields=%r, envelope=%r, keep_last=%r, metrics=%r)" % (
            self.fields,
            self.envelope,
            self.keep_last,
            [m[0] for m in self.metrics],
        )


_open = None  # the Manifest being declared, while init runs
_declared = Manifest()  # the manifest of the last successful init


def _with_open(what, arg=None):
    if _open is None:
        if arg is not None:
            what = what % debug_str(arg)
        raise PolicyError(
            "%s outside init: a policy declares what it reads in its init only (in a unit "
            "test, run init inside twinguard_policy.declare.capture)" % what
        )
    return _open


def _add(items, pointer, limit, what):
    if pointer in items:
        return items.index(pointer)
    if len(items) >= limit:
        raise PolicyError("cannot %s %s: at most %d" % (what, debug_str(pointer), limit))
    items.append(pointer)
    return len(items) - 1


def field(pointer):
    """Declares a payload field read on every message; the same pointer twice is one field."""
    why = _check_pointer(pointer)
    if why is not None:
        raise PolicyError(why)
    m = _with_open("declare.field(%s)", pointer)
    i = _add(m.fields, pointer, MAX_FIELDS, "declare field")
    m.positions[pointer] = i
    return Field(i)


def fields(pointers):
    """Declares several fields at once, in order."""
    return [field(p) for p in pointers]


def envelope(parts):
    """Declares the envelope parts read on every message (added to those declared before)."""
    m = _with_open("declare.envelope")
    m.envelope |= Envelope(parts)


def keep_last(pointer):
    """Declares a field whose last forwarded value for the device the policy reads."""
    why = _check_pointer(pointer)
    if why is not None:
        raise PolicyError(why)
    m = _with_open("declare.keep_last(%s)", pointer)
    return Last(_add(m.keep_last, pointer, MAX_KEEP_LAST, "keep the last value of"))


def _check_metric_name(name):
    ok = (
        len(name.encode("utf-8")) <= 64
        and name[:1].isascii()
        and "a" <= name[:1] <= "z"
        and all(("a" <= c <= "z") or ("0" <= c <= "9") or c in "_." for c in name[1:])
    )
    if not ok:
        raise PolicyError(
            "metric name %s: lower-case letters, digits, '_' and '.', starting with a letter, "
            "at most 64 characters" % debug_str(name)
        )


def _metric(name, unit, description, kind):
    _check_metric_name(name)
    m = _with_open("declaring metric %s", name)
    if any(x[0] == name for x in m.metrics):
        raise PolicyError("metric %s is declared twice" % debug_str(name))
    if len(m.metrics) >= MAX_METRICS:
        raise PolicyError(
            "cannot declare metric %s: at most %d metrics" % (debug_str(name), MAX_METRICS)
        )
    m.metrics.append((name, kind, unit, description))
    return len(m.metrics) - 1


def counter(name, unit="", description=""):
    """Declares a counter (`name`: lower-case letters, digits, `_` and `.`, starting with a
    letter, at most 64 characters, unique in the policy)."""
    return Counter(_metric(name, unit, description, "counter"))


def histogram(name, unit="", description=""):
    """Declares a histogram (named as for `counter`)."""
    return Histogram(_metric(name, unit, description, "histogram"))


def position(pointer):
    """Where `pointer` is among the declared fields, or `None`."""
    return _declared.positions.get(pointer)


def declared():
    """The manifest of the last successful `init`."""
    return _declared


def _begin():
    global _open
    _open = Manifest()


def _finish(ok):
    """Closes the declarations; after a failed init nothing stays declared."""
    global _open, _declared
    m = _open if ok and _open is not None else Manifest()
    _open = None
    _declared = m
    return m


def capture(fn, *args, **kwargs):
    """Runs `fn` with the declarations open, as the host's `init` does, and returns
    `(result, manifest)`; for unit tests. What was declared before is restored afterwards."""
    global _open
    before = _open
    _open = Manifest()
    try:
        result = fn(*args, **kwargs)
        return result, _open
    finally:
        _open = before
