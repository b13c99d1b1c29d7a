"""Detectors of personal data in a string: e-mail addresses, phone numbers, IBANs, payment
card numbers and configured names. A line-by-line port of policies/pii-redact/src/detect.rs:
the same matchers, the same order, the same checks.

Positions are character indices (Rust's are byte offsets): every check but the names
detector's is on ASCII characters, and a non-ASCII character fails each of them as each of
its UTF-8 bytes does, so the matches are the same characters. Regular expressions only find
where a matcher may start; the matcher then runs as in Rust.
"""

import re

from twinguard_policy.rustchar import char_lower, is_alphanumeric, is_whitespace, lower_chars
from twinguard_policy.rustchar import split_whitespace, str_lower

# Kinds, in the order the detectors run: on overlapping matches the first one wins.
EMAIL, IBAN, CARD, PHONE, NAME = range(5)
ALL = (EMAIL, IBAN, CARD, PHONE, NAME)
#: The name used in alerts.
KIND_NAMES = ("email", "iban", "card", "phone", "name")
#: The name used in `detect`.
CONFIG_NAMES = ("email", "iban", "card", "phone", "names")

_DIGITS = frozenset("0123456789")
_UPPER = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ALNUM = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
# What may not come before a match: a word or a longer number.
_NOT_BEFORE = _ALNUM | frozenset("./-+_,")

# Where each matcher may start: the characters it starts on, not inside a word or a longer
# number (`starts_token`), and only where the run it reads holds enough digits for a match
# (13 for a card, 8 for a phone number; a run with fewer is read over whole in Rust too, so
# no later start inside it is missed).
_NOT_AFTER = r"(?<![A-Za-z0-9./+_,\-])"
_IBAN_START = r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}"
# Card runs: digit groups separated by one space or dash.
_CARD_START = _NOT_AFTER + r"(?=[0-9](?:[ \-]?[0-9]){12})[0-9]"
# Phone runs: a first separator of `(` or two characters with a parenthesis, then digit
# groups separated by one of ` -./()` or two with a parenthesis.
_PHONE_SEP = r"(?:[ \-./()]|[()][ \-./()]|[ \-./][()])"
_PHONE_START = (
    _NOT_AFTER
    + r"(?=\+?(?:\(|[()][ \-./()]|[ \-./][()])?[0-9](?:%s?[0-9]){7})(?:[0-9+]|\((?=[0-9]))"
    % _PHONE_SEP
)
_STARTS = {
    EMAIL: "@",
    IBAN: _IBAN_START,
    CARD: _CARD_START,
    PHONE: _PHONE_START,
}
_IBAN_START = re.compile(_IBAN_START)
_CARD_START = re.compile(_CARD_START)
_PHONE_START = re.compile(_PHONE_START)
# The start of any of several detectors, for each choice of them, compiled when the module is
# imported: componentize-py imports it while it builds the component, so the compiled
# patterns are in the component's snapshot, and `init` compiles nothing (CPython's regex
# compiler is Python code, a few million units of fuel per pattern).
_ANY_START = {}
for _mask in range(1, 16):
    _kinds = tuple(k for k in (EMAIL, IBAN, CARD, PHONE) if _mask & (1 << k))
    _ANY_START[_kinds] = re.compile("|".join(_STARTS[k] for k in _kinds)).search
del _mask, _kinds


class Detectors:
    """The detectors a configuration enabled, with the names to look for."""

    def __init__(self, kinds, names):
        self.kinds = sorted(set(kinds))
        # Each name as its lower-cased words.
        self.names = [w for w in ([str_lower(x) for x in split_whitespace(n)] for n in names) if w]
        by_kind = {EMAIL: emails, IBAN: ibans, CARD: cards, PHONE: phones, NAME: self._names}
        self._run = [by_kind[k] for k in self.kinds]
        # Where any detector but `names` may start, in one search: most strings have none.
        self._may_start = _ANY_START.get(tuple(k for k in self.kinds if k != NAME))
        if NAME in self.kinds and self.names:
            self._firsts = [name[0] for name in self.names]
        else:
            self._firsts = None

    def _names(self, text):
        return names(text, self.names)

    def find(self, text):
        """Every match in `text` as `(start, end, kind)`, sorted by position, none overlapping
        another: on overlapping matches the first found wins."""
        may = self._may_start
        if may is None or may(text) is None:
            firsts = self._firsts
            if firsts is None:
                return ()
            lowered = lower_chars(text)
            for first in firsts:
                if first in lowered:
                    break
            else:
                return ()
        spans = []
        for detector in self._run:
            for span in detector(text) or ():
                start, end = span[0], span[1]
                # Against every match kept so far, this detector's own included: two e-mail
                # matches may share characters (`a@b.cc@d.ee`).
                for s in spans:
                    if s[0] < end and start < s[1]:
                        break
                else:
                    spans.append(span)
        if not spans:
            return ()
        if len(spans) > 1:
            # No two spans start at the same place: sorting the tuples sorts by start.
            spans.sort()
        return spans


def mask(text, spans, mask_with):
    """`text` with every span replaced by `mask_with`."""
    out = []
    at = 0
    for start, end, _ in spans:
        if start < at:
            # Rust's `&text[at..span.start]` panics here (two e-mail matches share
            # characters, as in `a@b.io@c.io`): trap as the Rust policy does.
            raise IndexError("slice index starts at %d but ends at %d" % (at, start))
        out.append(text[at:start])
        out.append(mask_with)
        at = end
    out.append(text[at:])
    return "".join(out)


# The runs an e-mail matcher reads: a local part (read backwards from the `@`), a domain.
_LOCAL_RUN = re.compile(r"[A-Za-z0-9._%+\-]*")
_DOMAIN_RUN = re.compile(r"[A-Za-z0-9.\-]*")
# Two or more labels of 1 to 63 letters, digits and `-`, none starting or ending with `-`, the
# last of two or more letters (on a run of `_DOMAIN_RUN` characters).
_VALID_DOMAIN = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)


def emails(t):
    """`local@domain.tld`: a local part of letters, digits and `._%+-`, at least two domain
    labels, and a top-level domain of two or more letters."""
    at = t.find("@")
    if at == -1:
        return None
    out = []
    n = len(t)
    backwards = t[::-1]
    local_run = _LOCAL_RUN.match
    domain_run = _DOMAIN_RUN.match
    valid = _VALID_DOMAIN.fullmatch
    while at != -1:
        start = at - (local_run(backwards, n - at).end() - (n - at))
        if t[start] == ".":
            while start < at and t[start] == ".":
                start += 1
        if not (start == at or t[at - 1] == "."):
            end = domain_run(t, at + 1).end()
            # A sentence may end right after the address.
            while end > at + 1 and t[end - 1] in ".-":
                end -= 1
            if valid(t, at + 1, end):
                out.append((start, end, EMAIL))
        at = t.find("@", at + 1)
    return out


def _ends_number(t, at):
    if at >= len(t):
        return True
    c = t[at]
    if c in _ALNUM or c == ":" or c == "_":
        return False
    if c == "." or c == ",":
        return not (at + 1 < len(t) and t[at + 1] in _DIGITS)
    return True


def ibans(t):
    """Two capital letters, two check digits, then letters and digits, in one piece or in
    groups separated by single spaces; 15 to 34 characters, mod 97 = 1. The longest valid
    prefix ending at a group boundary wins."""
    search = _IBAN_START.search
    m = search(t)
    if m is None:
        return None
    out = []
    n = len(t)
    i = 0
    while i + 4 <= n:
        m = search(t, i)
        if m is None:
            break
        i = m.start()
        compact = []
        ends = []
        j = i
        while True:
            while j < n and t[j] in _ALNUM and len(compact) <= 34:
                compact.append(t[j].upper())
                j += 1
            ends.append((j, len(compact)))
            if len(compact) > 34 or j + 1 >= n or t[j] != " ":
                break
            if t[j + 1] not in _ALNUM:
                break
            j += 1
        found = None
        for end, k in reversed(ends):
            if 15 <= k <= 34 and not (end < n and t[end] in _ALNUM) and _iban_checksum(compact[:k]):
                found = end
                break
        if found is not None:
            out.append((i, found, IBAN))
            i = found
        else:
            i += 1
    return out


def _iban_checksum(iban):
    rem = 0
    for c in iban[4:] + iban[:4]:
        if c in _DIGITS:
            rem = (rem * 10 + ord(c) - 48) % 97
        elif c in _UPPER:
            rem = (rem * 100 + ord(c) - 65 + 10) % 97
        else:
            return False
    return rem == 1


class _Run:
    """A run of digit groups with separators between them."""

    __slots__ = ("start", "end", "groups", "seps", "ends")

    def __init__(self, start):
        self.start = start
        self.end = start
        self.groups = []
        self.seps = []  # seps[k] precedes groups[k + 1]
        self.ends = []

    def all_seps(self, sep):
        return all(s == sep for s in self.seps)


def _digit_run(t, at, seps):
    """The run of digit groups starting at `at`, separated by one of `seps` (or two where one
    is a parenthesis). Ends after the last digit."""
    n = len(t)
    run = _Run(at)
    j = at
    while True:
        sep_start = j
        while j < n and t[j] in seps and j - sep_start < 2:
            j += 1
        sep = t[sep_start:j]
        ln = j - sep_start
        if ln == 0:
            sep_ok = not run.groups
        elif ln == 1:
            sep_ok = bool(run.groups) or sep == "("
        else:
            sep_ok = "(" in sep or ")" in sep
        if not sep_ok or not (j < n and t[j] in _DIGITS):
            break
        if run.groups:
            run.seps.append(sep)
        g = j
        while j < n and t[j] in _DIGITS:
            j += 1
        run.groups.append(j - g)
        run.ends.append(j)
        run.end = j
    return run


def cards(t):
    """Payment card numbers: 13 to 19 digits, in one piece or in groups separated by single
    spaces or dashes, with a known brand's prefix and length, Luhn-valid, not one digit
    repeated."""
    search = _CARD_START.search
    m = search(t)
    if m is None:
        return None
    out = []
    n = len(t)
    i = 0
    while i < n:
        m = search(t, i)
        if m is None:
            break
        i = m.start()
        run = _digit_run(t, i, " -")
        digits = []
        found = None
        for k, end in enumerate(run.ends):
            g = run.groups[k]
            digits.extend(ord(c) - 48 for c in t[end - g : end])
            if len(digits) > 19:
                break
            if 13 <= len(digits) <= 19 and _ends_number(t, end) and _card(digits):
                found = end
        if found is not None:
            out.append((i, found, CARD))
        i = max(run.end, i + 1)
    return out


def _card(digits):
    n = len(digits)

    def prefix(k):
        v = 0
        for d in digits[:k]:
            v = v * 10 + d
        return v

    first = digits[0]
    if first == 4:  # Visa.
        brand = n in (13, 16, 19)
    elif first == 2:  # Mastercard 2221-2720.
        brand = 2221 <= prefix(4) <= 2720 and n == 16
    elif first == 5:  # Mastercard 51-55, Maestro 50, 56-58.
        p = prefix(2)
        if 51 <= p <= 55:
            brand = n == 16
        elif p == 50 or 56 <= p <= 58:
            brand = n >= 13
        else:
            brand = False
    elif first == 3:  # American Express, Diners Club, JCB.
        p = prefix(2)
        if p in (34, 37):
            brand = n == 15
        elif p == 36:
            brand = n == 14
        elif p in (30, 38, 39):
            brand = 14 <= n <= 16
        elif p == 35:
            brand = 3528 <= prefix(4) <= 3589 and n >= 16
        else:
            brand = False
    elif first == 6:  # Discover, UnionPay, Maestro.
        brand = n >= 16
    else:
        brand = False
    return brand and any(d != first for d in digits) and _luhn(digits)


def _luhn(digits):
    total = 0
    for k, d in enumerate(reversed(digits)):
        if k % 2 == 1:
            total += d * 2 - 9 if d > 4 else d * 2
        else:
            total += d
    return total % 10 == 0


def phones(t):
    """Phone numbers, as whole runs of digits and separators: international (`+`, `00`),
    national with a trunk `0`, North American 3-3-4. Not plain digit strings, decimals, dates,
    versions, IPv4 or MAC addresses."""
    search = _PHONE_START.search
    m = search(t)
    if m is None:
        return None
    out = []
    n = len(t)
    i = 0
    while i < n:
        m = search(t, i)
        if m is None:
            break
        i = m.start()
        plus = t[i] == "+"
        run = _digit_run(t, i + 1 if plus else i, " -./()")
        if not run.groups:
            i += 1
            continue
        if _phone(t, run, plus) and _ends_number(t, run.end):
            out.append((i, run.end, PHONE))
        i = max(run.end, i + 1)
    return out


def _phone(t, run, plus):
    n = len(t)
    digits = sum(run.groups)
    starts_open = t[run.start] == "("
    opened = sum(s.count("(") for s in run.seps) + (1 if starts_open else 0)
    closed = sum(s.count(")") for s in run.seps)
    if opened != closed:
        return False
    first = run.start + (1 if starts_open else 0)

    def lead(k):
        return t[first + k] if first + k < n else "x"

    separated = bool(run.seps)
    groups = run.groups
    seps = run.seps
    decimal = len(groups) == 2 and run.all_seps(".")
    date = (
        len(groups) >= 3
        and (
            groups[:3] == [2, 2, 4]
            or groups[:3] == [4, 2, 2]
            or (groups[0] in (1, 2) and groups[1] in (1, 2) and groups[2] == 4)
        )
        and seps[0] == seps[1]
        and seps[0] in (".", "-", "/")
    )
    ipv4 = len(groups) == 4 and run.all_seps(".") and all(g <= 3 for g in groups)
    mac = len(groups) == 6 and all(g == 2 for g in groups) and run.all_seps("-")
    if decimal or date or ipv4 or mac:
        return False
    if plus:
        return lead(0) != "0" and 8 <= digits <= 15
    if lead(0) == "0":
        if lead(1) == "0":
            # `00` and a country code.
            return lead(2) != "0" and separated and 10 <= digits <= 17
        return separated and 9 <= digits <= 12
    # North American: NXX-NXX-XXXX, one kind of separator (or `(NXX) NXX-XXXX`).
    if groups == [3, 3, 4]:
        area = 0
    elif groups == [1, 3, 3, 4] and lead(0) == "1":
        area = 1
    else:
        return False
    consistent = (
        run.all_seps("-")
        or run.all_seps(".")
        or run.all_seps(" ")
        or (opened == 1 and starts_open)
    )
    # Area codes start with 2-9.
    return t[run.ends[area] - 3] not in "01" and consistent


def names(t, names_):
    """Whole-word, case-insensitive matches of the configured names; the words of a name match
    across any run of white space."""
    if not names_:
        return None
    # A match needs its first word in the text lower-cased character by character (as
    # `_match_word` compares): most strings are ruled out here, in C.
    lowered = lower_chars(t)
    firsts = None
    for name in names_:
        if name[0] in lowered:
            if firsts is None:
                firsts = []
            firsts.append(name)
    if firsts is None:
        return None
    if len(lowered) != len(t):
        # A character lower-cases to several (`İ`): no index of `lowered` is one of `t`.
        return _names_everywhere(t, firsts)
    # Rust tries every word start, left to right, each name in order, and goes on after a
    # match. Only where a name's first word starts (in `lowered`, whose indices are `t`'s) can
    # one match: try those places, in order, with every name, as Rust would.
    starts = set()
    for name in firsts:
        word = name[0]
        p = lowered.find(word)
        while p != -1:
            starts.add(p)
            p = lowered.find(word, p + 1)
    out = []
    at = 0
    for p in sorted(starts):
        if p < at or not is_alphanumeric(t[p]) or (p > 0 and is_alphanumeric(t[p - 1])):
            continue
        for name in firsts:
            end = _match_name(t, p, name)
            if end is not None:
                out.append((p, end, NAME))
                at = end
                break
    return out


def _names_everywhere(t, firsts):
    """`names` at every word start, character by character."""
    out = []
    n = len(t)
    at = 0
    prev_alnum = False
    while at < n:
        c = t[at]
        alnum = is_alphanumeric(c)
        if alnum and not prev_alnum:
            for name in firsts:
                end = _match_name(t, at, name)
                if end is not None:
                    out.append((at, end, NAME))
                    break
            else:
                end = None
            if end is not None:
                prev_alnum = is_alphanumeric(t[end - 1])
                at = end
                continue
        prev_alnum = alnum
        at += 1
    return out


def _match_name(t, at, name):
    n = len(t)
    end = at
    for k, word in enumerate(name):
        if k > 0:
            gap = 0
            while end + gap < n and is_whitespace(t[end + gap]):
                gap += 1
            if gap == 0:
                return None
            end += gap
        end = _match_word(t, end, word)
        if end is None:
            return None
    if end < n and is_alphanumeric(t[end]):
        return None
    return end


def _match_word(t, at, word):
    w = 0
    wn = len(word)
    for i in range(at, len(t)):
        for lower in char_lower(t[i]):
            if w >= wn or word[w] != lower:
                return None
            w += 1
        if w == wn:
            return i + 1
    return None
