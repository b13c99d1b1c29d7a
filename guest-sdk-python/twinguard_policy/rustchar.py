"""Rust's `char` and `str` text rules, for ports of Rust policies that must answer exactly as
the original: `char::is_alphanumeric`, `char::is_whitespace`, `char::to_lowercase`,
`str::to_lowercase` (with its final sigma), `str::trim`, `str::split_whitespace` and the
`{:?}` quoting of a `str`.

CPython's own `str.isalnum`, `str.isspace`, `str.strip`, `str.lower` and `repr` follow other
Unicode properties (and another Unicode version): `'\\x1c'.isspace()` is true in Python and
`'\\x1c'.is_whitespace()` false in Rust, for one. The tables are generated from the Rust
toolchain the repository pins (tools/gen_rustchar.rs), so they match the Rust policies built
with it.
"""

from bisect import bisect_right

from . import _rustchar_tables as _t

UNICODE_VERSION = _t.UNICODE_VERSION

#: `{code point: lowercase}` where `char::to_lowercase` changes a character; a table for
#: `str.translate`.
LOWERCASE = _t.LOWERCASE

_ALNUM = _t.ALPHANUMERIC
_WS = frozenset(
    chr(c) for s, e in zip(_t.WHITESPACE[0::2], _t.WHITESPACE[1::2]) for c in range(s, e + 1)
)
_WS_STR = "".join(sorted(_WS))
_CASED = _t.CASED
_IGNORABLE = _t.CASE_IGNORABLE
_ESCAPED = _t.DEBUG_ESCAPED
_ASCII_ALNUM = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _in(table, cp):
    i = bisect_right(table, cp)
    return i % 2 == 1 or (i > 0 and table[i - 1] == cp)


def is_alphanumeric(c):
    """`char::is_alphanumeric`: Unicode `Alphabetic` or `Numeric` (Nd, Nl, No)."""
    if c < "\x80":
        return c in _ASCII_ALNUM
    return _in(_ALNUM, ord(c))


def is_whitespace(c):
    """`char::is_whitespace`: Unicode `White_Space`."""
    return c in _WS


def char_lower(c):
    """`char::to_lowercase`, as a string (one to three characters)."""
    return LOWERCASE.get(ord(c), c)


def lower_chars(text):
    """Every character of `text` through `char::to_lowercase` (no final-sigma rule)."""
    return text.translate(LOWERCASE)


def _ignorable_then_cased(chars):
    for c in chars:
        cp = ord(c)
        if _in(_IGNORABLE, cp):
            continue
        return _in(_CASED, cp)
    return False


def str_lower(text):
    """`str::to_lowercase`: `char::to_lowercase` of every character, except that a capital
    sigma at the end of a word becomes `ς` (Unicode's `Final_Sigma`)."""
    if "\u03a3" not in text:
        return text.translate(LOWERCASE)
    out = []
    for i, c in enumerate(text):
        if c == "\u03a3":
            final = _ignorable_then_cased(reversed(text[:i])) and not _ignorable_then_cased(
                text[i + 1 :]
            )
            out.append("\u03c2" if final else "\u03c3")
        else:
            out.append(LOWERCASE.get(ord(c), c))
    return "".join(out)


def trim(text):
    """`str::trim`: white space (`char::is_whitespace`) off both ends."""
    return text.strip(_WS_STR)


def split_whitespace(text):
    """`str::split_whitespace`: the non-empty pieces between runs of white space."""
    out = []
    word = []
    for c in text:
        if c in _WS:
            if word:
                out.append("".join(word))
                word = []
        else:
            word.append(c)
    if word:
        out.append("".join(word))
    return out


_SIMPLE_ESCAPES = {"\0": "\\0", "\t": "\\t", "\r": "\\r", "\n": "\\n", "\\": "\\\\", '"': '\\"'}


def debug_str(text):
    """`format!("{:?}", text)` for a `str`: in double quotes, with `\\"`, `\\\\`, `\\n`, `\\r`,
    `\\t`, `\\0` and `\\u{...}` for the characters Rust does not print as they are."""
    out = ['"']
    for c in text:
        esc = _SIMPLE_ESCAPES.get(c)
        if esc is not None:
            out.append(esc)
        elif (" " <= c < "\x7f") or not _in(_ESCAPED, ord(c)):
            out.append(c)
        else:
            out.append("\\u{%x}" % ord(c))
    out.append('"')
    return "".join(out)
