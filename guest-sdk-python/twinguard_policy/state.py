"""Per-device state that survives across messages, scoped by the host to the current
message's device and to this policy, and bounded by the policy's `state-bytes` limit (a write
past it stores nothing and raises `StateError`). Only during `evaluate`.

    seen = (state.get_json("seen") or 0) + 1
    try:
        state.set_json("seen", seen)
    except StateError as err:
        log.warn("cannot count messages: %s" % err)

Policy-wide state (one namespace for all devices) is in `global_state`.
"""

import json

from componentize_py_types import Err
from wit_world.imports import host
from wit_world.imports import types as _wit

from .errors import StateError


def _error(e, global_=False):
    t = type(e)
    if t is _wit.StateError_OverLimit:
        return StateError("global-over-limit" if global_ else "over-limit", e.value)
    if t is _wit.StateError_TooManyDevices:
        return StateError("too-many-devices", e.value)
    return StateError("no-message")


def _encode(value):
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as err:
        raise StateError("encode", detail=str(err)) from None


def _decode(raw):
    if raw is None:
        return None
    try:
        return json.loads(bytes(raw))
    except ValueError:
        return None


def get(key):
    """The bytes stored under `key` for the current device, or `None`."""
    raw = host.state_get(key)
    return None if raw is None else bytes(raw)


def set(key, value):  # noqa: A001 - the module's verb
    """Stores `value` (bytes) under `key` for the current device; raises `StateError`."""
    try:
        host.state_set(key, bytes(value))
    except Err as e:
        raise _error(e.value) from None


def delete(key):
    host.state_delete(key)


def get_json(key, default=None):
    """The value under `key` decoded from JSON; `default` when absent or undecodable."""
    v = _decode(host.state_get(key))
    return default if v is None else v


def set_json(key, value):
    """Stores `value` under `key` encoded as (compact) JSON; raises `StateError`."""
    set(key, _encode(value))
