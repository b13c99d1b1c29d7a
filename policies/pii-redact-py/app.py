"""pii-redact in Python: GDPR field redaction, a port of policies/pii-redact (Rust) with the
same configuration keys, manifest, verdicts, alerts and redaction edits. See README.md.

Build: scripts/build-python-policy.sh policies/pii-redact-py target/pii_redact_py.wasm
"""

from functools import cmp_to_key

import detect
from twinguard_policy import Decision, FieldError, Policy, PolicyError, Severity, WalkError
from twinguard_policy import declare, export, walk
from twinguard_policy.rustchar import debug_str
from twinguard_policy.text import clipped

KNOWN_KEYS = [
    "remove",
    "mask",
    "mask-with",
    "alert-on-redact",
    "quarantine-unstructured",
    "detect",
    "names",
    "detect-action",
    "detect-skip",
]

#: How many fields a `pii-detected` alert names; the rest are counted.
MAX_NAMED = 16


class Detect:
    """The `detect*` settings."""

    def __init__(self, config, remove, mask):
        entries = config.list("detect")
        kinds = []
        for entry in entries:
            if entry not in detect.CONFIG_NAMES:
                raise PolicyError(
                    "config `detect`: unknown detector %s; expected a comma-separated list of "
                    "`email`, `phone`, `iban`, `card`, `names`" % debug_str(entry)
                )
            kinds.append(detect.CONFIG_NAMES.index(entry))
        names = config.list("names")
        if any(not n for n in names):
            raise PolicyError("config `names`: an empty name (check for a stray comma)")
        if detect.NAME in kinds and not names:
            raise PolicyError(
                'config `detect` lists `names` but `names` is not set (e.g. names = "Ada '
                'Lovelace,Grace Hopper")'
            )
        if detect.NAME not in kinds and names:
            raise PolicyError("config `names` is set but `detect` does not list `names`")
        action = config.get("detect-action")
        if action is None or action == "mask":
            self.remove = False
        elif action == "remove":
            self.remove = True
        else:
            raise PolicyError(
                "config `detect-action`: invalid value %s: expected `mask` or `remove`"
                % debug_str(action)
            )
        # Never scanned: `detect-skip`, and the `remove` and `mask` pointers (redacted anyway).
        self.skip = config.pointers("detect-skip") + remove + mask
        self.detectors = detect.Detectors(kinds, names)

    def scan(self, content_type, payload, mask_with):
        """Every string value where personal data was found, in document order, as
        `(pointer, kinds, masked)`; raises `WalkError` when the payload cannot be walked."""
        found = []
        find = self.detectors.find
        remove = self.remove

        def visit(pointer, text):
            spans = find(text)
            if not spans:
                return
            kinds = sorted({s[2] for s in spans})
            masked = "" if remove else detect.mask(text, spans, mask_with)
            found.append((pointer, kinds, masked))

        walk.strings(content_type, payload, self.skip, visit)
        return found

    def detail(self, found):
        """The `pii-detected` alert's detail: every field and the kinds found, never the data."""
        fields = [
            "%s (%s)" % (clipped(pointer), ", ".join(detect.KIND_NAMES[k] for k in kinds))
            for pointer, kinds, _ in found[:MAX_NAMED]
        ]
        detail = "personal data %s at %s" % (
            "removed" if self.remove else "masked",
            "; ".join(fields),
        )
        if len(found) > MAX_NAMED:
            detail += "; and %d more fields" % (len(found) - MAX_NAMED)
        return detail


class PiiRedact(Policy):
    """Removes or masks configured fields, and with `detect` personal data found by pattern."""

    def init(self, config):
        config.check_keys(KNOWN_KEYS)
        # Comma-separated JSON Pointers; the empty pointer names the whole document, which
        # cannot be redacted.
        self.remove = config.pointers("remove")
        self.mask = config.pointers("mask")
        if "remove" not in config and "mask" not in config and "detect" not in config:
            raise PolicyError(
                "nothing to redact: set `remove` and/or `mask` to comma-separated JSON Pointers "
                '(e.g. remove = "/owner/email"), or `detect` to find personal data by pattern '
                '(e.g. detect = "email,phone")'
            )
        for p in self.remove:
            if p in self.mask:
                raise PolicyError("pointer %s is in both `remove` and `mask`; keep it in one" % (
                    debug_str(p)
                ))
        # Read on every message: handed over with it. Detection reads the whole payload
        # (`msg.payload`) instead, so it declares nothing.
        declare.fields(self.remove + self.mask)
        if "detect" in config:
            self.detect = Detect(config, self.remove, self.mask)
        else:
            for key in ("names", "detect-action", "detect-skip"):
                if key in config:
                    raise PolicyError(
                        'config `%s` has no effect without `detect` (e.g. detect = "email,phone")'
                        % key
                    )
            self.detect = None
        self.mask_with = config.get("mask-with", "***")
        self.alert_on_redact = config.bool("alert-on-redact", False)
        self.quarantine_unstructured = config.bool("quarantine-unstructured", False)

    def evaluate(self, msg):
        content_type = msg.content_type
        if not content_type.structured:
            if self.quarantine_unstructured:
                return Decision.quarantine(
                    "pii-redact: a %s payload has no fields and cannot be redacted "
                    "(quarantine-unstructured = true)" % content_type
                )
            return Decision.allow()

        edits = []  # (pointer, mask text or None to remove)
        removed = []
        masked = []
        for pointer in self.remove:
            try:
                if msg.field(pointer) is not None:
                    edits.append((pointer, None))
                    removed.append(pointer)
            except FieldError as err:
                return Decision.quarantine(_lookup_failed(pointer, err))
        for pointer in self.mask:
            try:
                if msg.field(pointer) is not None:
                    edits.append((pointer, self.mask_with))
                    masked.append(pointer)
            except FieldError as err:
                return Decision.quarantine(_lookup_failed(pointer, err))

        found = []
        if self.detect is not None:
            try:
                found = self.detect.scan(content_type, msg.payload, self.mask_with)
            except WalkError as why:
                return Decision.quarantine(
                    "pii-redact: cannot scan the payload for personal data: %s" % clipped(str(why))
                )
        for pointer, kinds, _ in found:
            if not pointer:
                # The payload is one string: the empty pointer cannot be redacted (fail closed).
                return Decision.quarantine(
                    "pii-redact: the payload is a single string with personal data (%s); the "
                    "whole document cannot be redacted"
                    % ", ".join(detect.KIND_NAMES[k] for k in kinds)
                )
        if found:
            remove = self.detect.remove
            edits.extend((pointer, None if remove else text) for pointer, _, text in found)
            # Every pointer names the field in the payload as received, and the host applies
            # the edits in order: applied from the end of the document backwards, no edit moves
            # a field a later one names.
            edits = sort_from_the_end(edits)

        if not edits:
            return Decision.allow()
        decision = Decision.redact()
        for pointer, text in edits:
            if text is None:
                decision.remove(pointer)
            else:
                decision.mask(pointer, text)
        if found:
            decision.with_alert(Severity.MEDIUM, "pii-detected", self.detect.detail(found))
        if self.alert_on_redact and (removed or masked):
            detail = []
            if removed:
                detail.append("removed " + ", ".join(removed))
            if masked:
                detail.append("masked " + ", ".join(masked))
            decision.with_alert(Severity.LOW, "pii-redacted", "; ".join(detail))
        return decision


def _lookup_failed(pointer, err):
    # A payload the host cannot parse is an error, not "absent": it might carry the very data
    # this policy exists to strip, so the message is quarantined (fail closed).
    if err.kind == "malformed":
        return "pii-redact: cannot check %s for personal data: %s" % (pointer, err)
    return "pii-redact: lookup of %s failed: %s" % (pointer, err)


def _u64(token):
    """Rust's `token.parse::<u64>()`, or `None`."""
    digits = token[1:] if token[:1] == "+" else token
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    n = int(digits)
    return n if n < 1 << 64 else None


def _tokens(pointer):
    return [(t, _u64(t)) for t in pointer.split("/")[1:]]


def _order(at, bt):
    """`document_order` on pointers split by `_tokens`: -1, 0 or 1."""
    for (x, xn), (y, yn) in zip(at, bt):
        if xn is not None and yn is not None:
            if xn != yn:
                return -1 if xn < yn else 1
        elif x != y:
            return -1 if x < y else 1
    if len(at) != len(bt):
        return -1 if len(at) < len(bt) else 1
    return 0


def document_order(a, b):
    """Compares two JSON Pointers by where their fields are in a document: token by token,
    array indices as numbers, a field before the fields inside it; member names as text."""
    return _order(_tokens(a), _tokens(b))


def sort_from_the_end(edits):
    """`edits.sort_by(|a, b| document_order(&b.pointer, &a.pointer))` as Rust runs it: up to 20
    elements an insertion sort (as std's stable sort does; the comparison is not transitive
    for member names such as `2`, `10` and `1a`, so the algorithm is what fixes the order),
    beyond that a stable merge sort."""
    keyed = [(_tokens(e[0]), e) for e in edits]
    if len(keyed) <= 20:
        for i in range(1, len(keyed)):
            item = keyed[i]
            j = i
            # is_less(item, prev): document_order(prev, item) == Less.
            while j > 0 and _order(keyed[j - 1][0], item[0]) < 0:
                keyed[j] = keyed[j - 1]
                j -= 1
            keyed[j] = item
    else:
        keyed.sort(key=cmp_to_key(lambda a, b: _order(b[0], a[0])))
    return [e for _, e in keyed]


Handler = export(PiiRedact)
