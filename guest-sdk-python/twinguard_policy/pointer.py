"""JSON Pointers (RFC 6901): checking those taken from the configuration, and building them."""

from .rustchar import debug_str

#: The error for the empty pointer where a field is expected.
EMPTY = 'the empty pointer "" names the whole document, not a field'


def check(pointer):
    """`None` when `pointer` is RFC 6901 (empty, the whole document, or `/` then tokens whose
    every `~` is followed by `0` or `1`); otherwise the reason, quoting the pointer."""
    if not pointer:
        return None
    if not pointer.startswith("/"):
        return "%s is not a JSON Pointer: it must start with '/' (e.g. \"/%s\")" % (
            debug_str(pointer),
            pointer,
        )
    i = pointer.find("~")
    while i != -1:
        if pointer[i + 1 : i + 2] not in ("0", "1"):
            return (
                "%s is not a JSON Pointer: '~' must be followed by 0 ('~') or 1 ('/')"
                % debug_str(pointer)
            )
        i = pointer.find("~", i + 2)
    return None


def check_field(pointer):
    """As `check`, refusing the empty pointer too (the whole document is no field)."""
    if not pointer:
        return EMPTY
    return check(pointer)


def token(name):
    """One reference token: `~` as `~0`, `/` as `~1`."""
    if "~" in name or "/" in name:
        return name.replace("~", "~0").replace("/", "~1")
    return name


def join(*names):
    """The pointer to a field by its member names and array indices: `join("a/b", 0)` is
    `/a~1b/0`."""
    return "".join("/" + token(str(n)) for n in names)
