"""The policy's configuration: the key-values given to `init`, with parsers whose errors name
the key and the bad value (worded as the Rust SDK words them, so a port refuses a bad
configuration with the same text).

    def init(self, config):
        config.check_keys(["max-celsius", "field", "strict"])
        self.max = config.float("max-celsius", 80.0)
        self.pointer = config.pointer("field", "/temperature")
        self.strict = config.bool("strict", False)
"""

import re

from . import pointer as _pointer
from .errors import ConfigError
from .rustchar import debug_str, trim

_MISSING = object()


def known_list(names):
    """`` `a`, `b` ``: names as error messages list them."""
    return ", ".join("`%s`" % n for n in names)


class Config:
    """Key-values configured for a policy, in the order the host gave them; when a key appears
    more than once, the last value wins."""

    def __init__(self, entries=()):
        self.entries = [(str(k), str(v)) for k, v in entries]

    def __repr__(self):
        return "Config(%r)" % (self.entries,)

    def __len__(self):
        return len(self.entries)

    def __iter__(self):
        return iter(self.entries)

    def __contains__(self, key):
        return self.get(key) is not None

    def keys(self):
        return [k for k, _ in self.entries]

    def get(self, key, default=None):
        """The value of `key`, or `default` when it is not configured."""
        for k, v in reversed(self.entries):
            if k == key:
                return v
        return default

    def check_keys(self, known):
        """Refuses keys outside `known`, naming the first unknown key and listing the known ones
        (catches typos such as `mask_with` for `mask-with`)."""
        for key in self.keys():
            if key not in known:
                raise ConfigError(
                    "unknown config key `%s`; known keys: %s" % (key, known_list(known))
                )

    def check_keys_beside_metrics(self, known):
        """`check_keys` for a policy configured per metric: keys starting with `/` are allowed."""
        for key in self.keys():
            if not key.startswith("/") and key not in known:
                raise ConfigError(
                    "unknown config key `%s`; known keys: %s, and metric JSON Pointers "
                    "starting with `/`" % (key, known_list(known))
                )

    def parse(self, key, parser, default=None):
        """`parser(value)` for the value of `key` (`default` when absent). A `ValueError` from the
        parser is refused as `config `key`: invalid value "v": <its message>`."""
        value = self.get(key)
        if value is None:
            return default
        try:
            return parser(value)
        except ValueError as err:
            raise ConfigError(
                "config `%s`: invalid value %s: %s" % (key, debug_str(value), err)
            ) from None

    def bool(self, key, default=None):
        """`true` or `false` (exactly, as Rust's `bool::from_str`)."""
        return self.parse(key, parse_bool, default)

    def int(self, key, default=None, bits=64, signed=True):
        """An integer as Rust's `i64::from_str` (or another width and signedness) parses it."""
        return self.parse(key, lambda v: parse_int(v, bits, signed), default)

    def float(self, key, default=None):
        """A number as Rust's `f64::from_str` parses it (`inf` and `NaN` included)."""
        return self.parse(key, parse_float, default)

    def action(self, key, default):
        """`alert` or `quarantine` (lower case only)."""
        return self.parse(key, parse_action, default)

    def pointer(self, key, default=None):
        """The JSON Pointer under `key`, checked (neither malformed nor empty)."""
        value = self.get(key)
        if value is None:
            return default
        why = _pointer.check_field(value)
        if why is not None:
            raise ConfigError("config `%s`: %s" % (key, why))
        return value

    def pointers(self, key):
        """The comma-separated JSON Pointers under `key`, white space trimmed, each checked,
        repeats dropped (the first kept); `[]` when absent. An empty entry (a stray comma) is
        refused."""
        value = self.get(key)
        if value is None:
            return []
        out = []
        for entry in value.split(","):
            entry = trim(entry)
            if not entry:
                raise ConfigError(
                    "config `%s`: %s (check for a stray comma)" % (key, _pointer.EMPTY)
                )
            why = _pointer.check_field(entry)
            if why is not None:
                raise ConfigError("config `%s`: %s" % (key, why))
            if entry not in out:
                out.append(entry)
        return out

    def list(self, key):
        """The comma-separated items under `key`, trimmed (empty ones kept); `[]` when absent."""
        value = self.get(key)
        if value is None:
            return []
        return [trim(item) for item in value.split(",")]


def parse_bool(value):
    if value == "true":
        return True
    if value == "false":
        return False
    raise ValueError("provided string was not `true` or `false`")


def parse_int(value, bits=64, signed=True):
    """Rust's integer `from_str`, with its error texts."""
    if not value:
        raise ValueError("cannot parse integer from empty string")
    sign = 1
    digits = value
    if value[0] == "+" or (value[0] == "-" and signed):
        if len(value) == 1:
            raise ValueError("invalid digit found in string")
        sign = -1 if value[0] == "-" else 1
        digits = value[1:]
    if not all("0" <= c <= "9" for c in digits):
        raise ValueError("invalid digit found in string")
    n = sign * int(digits)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if n > hi:
        raise ValueError("number too large to fit in target type")
    if n < lo:
        raise ValueError("number too small to fit in target type")
    return n


_FLOAT = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?|[nN][aA][nN])"
)


def parse_float(value):
    """Rust's `f64::from_str`, with its error texts."""
    if not value:
        raise ValueError("cannot parse float from empty string")
    if not _FLOAT.fullmatch(value):
        raise ValueError("invalid float literal")
    return float(value)


def parse_action(value):
    if value in ("alert", "quarantine"):
        return value
    raise ValueError("expected `alert` or `quarantine`")


_current = Config()


def current():
    """The configuration of the last `init` (empty before the first)."""
    return _current


def _replace(config):
    global _current
    _current = config
    return config
