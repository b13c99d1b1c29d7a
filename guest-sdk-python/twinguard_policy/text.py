"""Device-supplied text in reasons and alert details (the Rust SDK's `text` module).

Device ids, topics, payload strings and the host's parser errors come from devices you do not
control: written into a decision as they are, a long one could take it past the host's
`decision-bytes` limit. These helpers cut such text short. A payload value is better
`described` than quoted: reasons and alerts leave past every redacting policy of the chain.
"""

from .rustchar import debug_str

#: Characters `quoted` keeps.
QUOTED_MAX_CHARS = 80
#: Characters `clipped` keeps.
CLIPPED_MAX_CHARS = 320
#: The shortest string whose first character `described` shows.
DESCRIBED_MIN_SHOWN = 4


def quoted(text):
    """Quoted as Rust's `{:?}` does, cut to 80 characters and followed by `... (N bytes)` when
    cut: for ids, topics and names."""
    if len(text) <= QUOTED_MAX_CHARS:
        return debug_str(text)
    return "%s... (%d bytes)" % (debug_str(text[:QUOTED_MAX_CHARS]), len(text.encode("utf-8")))


def clipped(text):
    """Text as it is, cut to 320 characters and followed by `...` when cut: for longer, already
    readable text such as a parser error from the host."""
    if len(text) <= CLIPPED_MAX_CHARS:
        return text
    return text[:CLIPPED_MAX_CHARS] + "..."


def described(text):
    """A payload string described, never quoted: its length in characters and its first
    character (`…@…` when it holds an `@`; `…` alone under four characters)."""
    if not text:
        return "an empty string"
    chars = len(text)
    if "@" in text:
        masked = "…@…"
    elif chars >= DESCRIBED_MIN_SHOWN:
        masked = text[0] + "…"
    else:
        masked = "…"
    plural = "" if chars == 1 else "s"
    return "a string (%d character%s, %s)" % (chars, plural, debug_str(masked))


def f64(x):
    """A number as Rust's `{}` writes an `f64`: the shortest digits that read back the same,
    never an exponent, no `.0` on a whole number (`90`, `0.0000001`, `NaN`, `inf`), where
    Python's `str` writes `90.0`, `1e-07` and `nan`."""
    x = float(x)
    if x != x:
        return "NaN"
    if x == float("inf"):
        return "inf"
    if x == float("-inf"):
        return "-inf"
    r = repr(x)
    sign = ""
    if r[0] == "-":
        sign, r = "-", r[1:]
    if "e" in r:
        mantissa, exponent = r.split("e")
        whole, _, fraction = mantissa.partition(".")
        digits = whole + fraction
        point = len(whole) + int(exponent)
        if point <= 0:
            r = "0." + "0" * -point + digits
        elif point >= len(digits):
            r = digits + "0" * (point - len(digits))
        else:
            r = digits[:point] + "." + digits[point:]
    if r.endswith(".0"):
        r = r[:-2]
    return sign + r
