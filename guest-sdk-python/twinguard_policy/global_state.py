"""Policy-wide state: one namespace for every device (correlations across devices), bounded
by the policy's `global-state-bytes` limit. Several workers may run the policy at once: a
read-modify-write goes through `update`, which swaps only if nobody changed the value in
between, and retries.

    total = global_state.update("total", lambda old: (old or 0) + 1, json_=True)
"""

from componentize_py_types import Err
from wit_world.imports import host

from .errors import StateError
from .state import _decode, _encode, _error

#: Swaps `update` attempts before it raises `StateError("contended")`.
MAX_ATTEMPTS = 100


def get(key):
    raw = host.global_get(key)
    return None if raw is None else bytes(raw)


def set(key, value):  # noqa: A001
    try:
        host.global_set(key, bytes(value))
    except Err as e:
        raise _error(e.value, True) from None


def delete(key):
    host.global_delete(key)


def swap(key, expected, new):
    """Replaces the value under `key` with `new` (`None` removes it) only if it still holds
    `expected` (`None`: absent); `True` when replaced."""
    try:
        return host.global_swap(
            key,
            None if expected is None else bytes(expected),
            None if new is None else bytes(new),
        )
    except Err as e:
        raise _error(e.value, True) from None


def update(key, fn, json_=False):
    """Stores `fn(old)` atomically, retrying when another worker changed the value in between;
    returns what was stored. With `json_`, `fn` sees and returns JSON values. `fn` may run
    several times: no side effects."""
    for _ in range(MAX_ATTEMPTS):
        raw = get(key)
        if json_:
            new_value = fn(_decode(raw))
            new = None if new_value is None else _encode(new_value)
        else:
            new_value = new = fn(raw)
        if swap(key, raw, new):
            return new_value
    raise StateError("contended", MAX_ATTEMPTS)


def get_json(key, default=None):
    v = _decode(host.global_get(key))
    return default if v is None else v


def set_json(key, value):
    set(key, _encode(value))
