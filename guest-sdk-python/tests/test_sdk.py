"""Unit tests of the Python SDK; the walk, pointer and config cases are the Rust SDK's."""

import unittest

import _env

_env.setup()

from twinguard_policy import (  # noqa: E402
    Config,
    ConfigError,
    Decision,
    Edit,
    PolicyError,
    Severity,
    WalkError,
    declare,
    pointer,
    rustchar,
    text,
    walk,
)
from twinguard_policy.walk import utf8_error  # noqa: E402


def strings_of(ct, payload, skip=()):
    seen = []
    walk.strings(ct, payload, list(skip), lambda p, t: seen.append((p, t)))
    return seen


def members_of(ct, payload, enter=()):
    seen = []

    def visit(p):
        seen.append(p)
        return p in enter

    walk.members(ct, payload, visit)
    return seen


class Log(walk.Visitor):
    def __init__(self):
        self.log = []

    def member(self, pointer):
        self.log.append("m " + pointer)
        return pointer != "/no"

    def element(self, pointer):
        self.log.append("e " + pointer)
        return pointer != "/a/1"

    def string(self, pointer, text):
        self.log.append("s %s=%s" % (pointer, text))


CBOR_DOC = b"".join(
    [
        b"\xa7\x63seq\x01",
        b"\x61t\xfb\x40\x35\x80\x00\x00\x00\x00\x00",
        b"\x63raw\x42\x01\x02",
        b"\x64o/w~\xa1\x64mail\x66a@b.io",
        b"\x64list\x9f\x61x\xc1\x61y\xa1\x61k\x01\xff",
        b"\x61s\x7f\x62ab\x62cd\xff",
        b"\x63tag\xc1\xa1\x61x\x02",
    ]
)


class WalkTest(unittest.TestCase):
    def test_json_strings_with_their_pointers(self):
        doc = rb""" {"seq": 1, "ts": 1764000000123, "ok": true, "n": null, "t": -2.5e3,
            "note": "a\"b\\c\u00e9\ud83d\ude00", "a/b~c": "x",
            "list": [ "p", {"k": ["q"]}, [], {} ], "key-only": {"k": 1}} """
        want = [("/note", 'a"b\\cé😀'), ("/a~1b~0c", "x"), ("/list/0", "p"), ("/list/1/k/0", "q")]
        self.assertEqual(strings_of("json", doc), want)
        self.assertEqual(
            strings_of("json", doc, ["/list/1", "/note"]), [("/a~1b~0c", "x"), ("/list/0", "p")]
        )
        self.assertEqual(strings_of("json", b'"top"'), [("", "top")])
        # The walker's own reader (past the bracket count that sends a payload to it) agrees.
        slow = doc + b" " * 0
        seen = []
        walk._Json(slow, walk._Strings([], lambda p, t: seen.append((p, t)))).run()
        self.assertEqual(seen, want)

    def test_json_members_with_their_pointers(self):
        doc = rb""" {"seq": 1, "ok": true, "n": null, "t": -2.5e3,
            "note": "a\"b", "a/b~c": {"x": 1}, "list": [{"k": 1}, [], {}],
            "m": {"t\u00e9": {"deep": 1}, "s": "x"}, "e\/": {}} """
        self.assertEqual(
            members_of("json", doc),
            ["/seq", "/ok", "/n", "/t", "/note", "/a~1b~0c", "/list", "/m", "/e~1"],
        )
        self.assertEqual(
            members_of("json", doc, ["/a~1b~0c", "/m", "/m/té", "/list", "/seq"]),
            ["/seq", "/ok", "/n", "/t", "/note", "/a~1b~0c", "/a~1b~0c/x", "/list", "/m",
             "/m/té", "/m/té/deep", "/m/s", "/e~1"],
        )
        self.assertEqual(members_of("json", b'"top"'), [])

    def test_a_visitor_chooses_what_it_enters(self):
        want = ["m /a", "e /a/0", "s /a/0=x", "e /a/1", "e /a/2", "m /a/2/k", "s /a/2/k=z", "m /no"]
        log = Log()
        walk.visit("json", b'{"a": ["x", ["y"], {"k": "z"}], "no": {"k": "w"}}', log)
        self.assertEqual(log.log, want)
        log = Log()
        walk.visit("cbor", b"\xa2\x61a\x83\x61x\x81\x61y\xa1\x61k\x61z\x62no\xa1\x61k\x61w", log)
        self.assertEqual(log.log, want)

    def test_malformed_json_is_an_error(self):
        for bad in [b"{", b'{"a" 1}', b"[1,]", b'"abc', b'{"a": "\\x"}', b'"\\ud800"',
                    b'{"\\ud800": 1}', b"{} x", b"", b"\xff"]:
            with self.assertRaises(WalkError, msg=bad):
                strings_of("json", bad)
            with self.assertRaises(WalkError, msg=bad):
                members_of("json", bad)
        deep = b"[" * 200 + b"]" * 200
        with self.assertRaises(WalkError) as err:
            strings_of("json", deep)
        self.assertEqual(str(err.exception), "nested deeper than 128 at byte 129")

    def test_json_errors_say_where(self):
        for bad, why in [
            (b"{", "expected `\"` at byte 1"),
            (b'{"a" 1}', "expected `:` at byte 5"),
            (b"[1,]", "expected a value at byte 3"),
            (b'"abc', "unterminated string at byte 4"),
            (b'{"a": "\\x"}', "bad escape at byte 9"),
            (b'"\\ud800"', "lone surrogate at byte 7"),
            (b'"\\udc00"', "bad \\u escape at byte 7"),
            (b'"\\u12"', "short \\u escape at byte 3"),
            (b'"\\u12x"', "bad \\u escape at byte 3"),
            (b'"\\u00\xc3\xa9"', "bad \\u escape at byte 3"),
            (b'"\\u000\xc3\xa9"', "short \\u escape at byte 3"),
            (b"{} x", "trailing characters at byte 3"),
            (b"", "unexpected end at byte 0"),
            (b"\xff", "the JSON payload is not UTF-8: invalid utf-8 sequence of 1 bytes from index 0"),
            (b'"\xe2\x82', "the JSON payload is not UTF-8: incomplete utf-8 byte sequence from index 1"),
            (b"[1 2]", "expected `,` or `]` at byte 3"),
        ]:
            with self.assertRaises(WalkError, msg=bad) as err:
                strings_of("json", bad)
            self.assertEqual(str(err.exception), why)
        # `u32::from_str_radix` takes a leading `+`.
        self.assertEqual(strings_of("json", b'"\\u+0e9"'), [("", "\u00e9")])

    def test_cbor_strings_and_members_with_their_pointers(self):
        self.assertEqual(
            strings_of("cbor", CBOR_DOC),
            [("/o~1w~0/mail", "a@b.io"), ("/list/0", "x"), ("/list/1", "y"), ("/s", "abcd")],
        )
        self.assertEqual(
            strings_of("cbor", CBOR_DOC, ["/o~1w~0"]),
            [("/list/0", "x"), ("/list/1", "y"), ("/s", "abcd")],
        )
        self.assertEqual(
            members_of("cbor", CBOR_DOC),
            ["/seq", "/t", "/raw", "/o~1w~0", "/list", "/s", "/tag"],
        )
        self.assertEqual(
            members_of("cbor", CBOR_DOC, ["/o~1w~0", "/list", "/tag"]),
            ["/seq", "/t", "/raw", "/o~1w~0", "/o~1w~0/mail", "/list", "/s", "/tag", "/tag/x"],
        )

    def test_malformed_cbor_is_an_error(self):
        for bad, why in [
            (b"\xa1\x01\x61x", "map key is not text at offset 2"),
            (b"\x78\xff", "length 255 past the end at offset 2"),
            (b"\x61x\x00", "trailing bytes at offset 2"),
            (b"\xa0\x00", "trailing bytes at offset 1"),
            (b"", "unexpected end at offset 0"),
            (b"\x1c", "bad head 0x1c at offset 0"),
            (b"\xff", "unexpected break at offset 0"),
            (b"\x62\xc3\x28", "text string is not UTF-8: invalid utf-8 sequence of 1 bytes from index 0"),
            (b"\x5f\x61a\xff", "bad byte chunk at offset 2"),
            (b"\x7f\x41a\xff", "bad text chunk at offset 2"),
        ]:
            with self.assertRaises(WalkError, msg=bad) as err:
                strings_of("cbor", bad)
            self.assertEqual(str(err.exception), why)
        with self.assertRaises(WalkError) as err:
            strings_of("cbor", b"\x81" * 200 + b"\x00")
        self.assertEqual(str(err.exception), "nested deeper than 128")

    def test_utf8_errors_are_rusts(self):
        for data, want in [
            (b"ok", None),
            (b"a\xc3", "incomplete utf-8 byte sequence from index 1"),
            (b"\xe2\x82x", "invalid utf-8 sequence of 2 bytes from index 0"),
            (b"\xed\xa0\x80", "invalid utf-8 sequence of 1 bytes from index 0"),
            (b"\xf0\x90\x80", "incomplete utf-8 byte sequence from index 0"),
            (b"\xf0\x90\x80x", "invalid utf-8 sequence of 3 bytes from index 0"),
            (b"\xf4\x90\x80\x80", "invalid utf-8 sequence of 1 bytes from index 0"),
            (b"\xc0\x80", "invalid utf-8 sequence of 1 bytes from index 0"),
        ]:
            self.assertEqual(utf8_error(data), want, data)


class PointerAndConfigTest(unittest.TestCase):
    def test_rfc_6901(self):
        for ok in ["", "/", "/a", "/a/0", "/~0", "/~1", "/a~0b~1c", "//", "/ "]:
            self.assertIsNone(pointer.check(ok), ok)
        for bad, why in [("a", "start with '/'"), ("#/a", "start with '/'"), ("/~", "'~'"),
                         ("/~2", "'~'"), ("/a~/b", "'~'")]:
            err = pointer.check(bad)
            self.assertIn(why, err)
            self.assertIn(rustchar.debug_str(bad), err)
        self.assertEqual(
            pointer.check_field(""), 'the empty pointer "" names the whole document, not a field'
        )
        self.assertEqual(pointer.join("a/b", 0, "c~"), "/a~1b/0/c~0")

    def test_config(self):
        config = Config([("max-celsius", "85.5"), ("unit", "C"), ("a", "1"), ("a", "2")])
        self.assertEqual(config.get("unit"), "C")
        self.assertEqual(config.get("a"), "2")
        self.assertEqual(config.float("max-celsius"), 85.5)
        self.assertIsNone(config.float("absent"))
        with self.assertRaises(ConfigError) as err:
            config.int("max-celsius", bits=32, signed=False)
        self.assertEqual(
            str(err.exception),
            'config `max-celsius`: invalid value "85.5": invalid digit found in string',
        )
        with self.assertRaises(ConfigError) as err:
            Config([("mask_with", "x")]).check_keys(["mask", "mask-with"])
        self.assertEqual(
            str(err.exception), "unknown config key `mask_with`; known keys: `mask`, `mask-with`"
        )
        config = Config([("remove", "/owner/email, /badge/holder,/owner/email"), ("mask", "/a,")])
        self.assertEqual(config.pointers("remove"), ["/owner/email", "/badge/holder"])
        self.assertEqual(config.pointers("absent"), [])
        with self.assertRaises(ConfigError) as err:
            config.pointers("mask")
        self.assertTrue(str(err.exception).startswith("config `mask`: the empty pointer"))
        config = Config([("on-stuck", "quarantine"), ("on-unknown", "drop"), ("b", "yes")])
        self.assertEqual(config.action("on-stuck", "alert"), "quarantine")
        self.assertEqual(config.action("absent", "alert"), "alert")
        with self.assertRaises(ConfigError) as err:
            config.action("on-unknown", "quarantine")
        self.assertEqual(
            str(err.exception),
            'config `on-unknown`: invalid value "drop": expected `alert` or `quarantine`',
        )
        with self.assertRaises(ConfigError) as err:
            config.bool("b")
        self.assertIn("provided string was not `true` or `false`", str(err.exception))
        for value, why in [("", "cannot parse integer from empty string"),
                           ("-", "invalid digit found in string"),
                           ("+", "invalid digit found in string"),
                           ("9223372036854775808", "number too large to fit in target type"),
                           ("-9223372036854775809", "number too small to fit in target type"),
                           (" 1", "invalid digit found in string"), ("1_000", "invalid digit found in string")]:
            with self.assertRaises(ConfigError, msg=value) as err:
                Config([("n", value)]).int("n")
            self.assertTrue(str(err.exception).endswith(why), (value, str(err.exception)))
        self.assertEqual(Config([("n", "+7")]).int("n"), 7)
        self.assertEqual(Config([("f", "1e3")]).float("f"), 1000.0)
        self.assertEqual(Config([("f", "-inf")]).float("f"), float("-inf"))
        for bad in ["1_0", " 1", "0x10", "infinit", ""]:
            with self.assertRaises(ConfigError, msg=bad):
                Config([("f", bad)]).float("f")


class TextTest(unittest.TestCase):
    def test_rust_debug_quoting(self):
        self.assertEqual(rustchar.debug_str('a"b\n'), r'"a\"b\n"')
        self.assertEqual(rustchar.debug_str("\u202eevil\x07\x00'é"), '"\\u{202e}evil\\u{7}\\0\'é"')
        self.assertEqual(rustchar.debug_str("\u0301x"), '"\\u{301}x"')
        self.assertEqual(text.quoted("temp-0007"), '"temp-0007"')
        long = "é" * 100
        self.assertEqual(text.quoted(long), rustchar.debug_str("é" * 80) + "... (200 bytes)")
        self.assertEqual(text.clipped("ü" * 400), "ü" * 320 + "...")
        self.assertEqual(text.clipped("ü" * 320), "ü" * 320)
        for s, want in [("ada.lovelace@example.com", 'a string (24 characters, "…@…")'),
                        ("Ada Lovelace", 'a string (12 characters, "A…")'),
                        ("abc", 'a string (3 characters, "…")'),
                        ("x", 'a string (1 character, "…")'),
                        ("\u202eevil", 'a string (5 characters, "\\u{202e}…")'),
                        ("", "an empty string")]:
            self.assertEqual(text.described(s), want)

    def test_rust_f64_display(self):
        for x, want in [(90.0, "90"), (21.5, "21.5"), (-0.0, "-0"), (1e21, "1000000000000000000000"),
                        (1e-7, "0.0000001"), (1.5e-7, "0.00000015"), (123456789.125, "123456789.125"),
                        (float("nan"), "NaN"), (float("-inf"), "-inf"), (0.1 + 0.2, "0.30000000000000004"),
                        (5e-324, "0." + "0" * 323 + "5"), (1.7976931348623157e308, "17976931348623157" + "0" * 292)]:
            self.assertEqual(text.f64(x), want, x)

    def test_rust_char_rules(self):
        self.assertTrue(rustchar.is_alphanumeric("é"))
        self.assertTrue(rustchar.is_alphanumeric("Ⅻ"))  # Nl
        self.assertTrue(rustchar.is_alphanumeric("\u0345"))  # Other_Alphabetic, not a letter
        self.assertFalse(rustchar.is_alphanumeric("_"))
        self.assertFalse(rustchar.is_whitespace("\x1c"))  # Python's isspace says yes
        self.assertTrue(rustchar.is_whitespace("\u2003"))
        self.assertEqual(rustchar.trim("\x1c a \u00a0"), "\x1c a")
        self.assertEqual(rustchar.split_whitespace(" Ada \u2003 Lovelace\x1c "), ["Ada", "Lovelace\x1c"])
        self.assertEqual(rustchar.str_lower("ΟΔΥΣΣΕΥΣ"), "οδυσσευς")
        self.assertEqual(rustchar.str_lower("Σ"), "σ")
        self.assertEqual(rustchar.str_lower("AΣ."), "aς.")
        self.assertEqual(rustchar.char_lower("İ"), "i\u0307")
        self.assertEqual(rustchar.lower_chars("ZOË"), "zoë")


class DecisionTest(unittest.TestCase):
    def test_edits_and_alerts(self):
        d = Decision.redact().remove("/owner/email").mask("/owner/name", "***")
        d.with_alert(Severity.LOW, "pii-redacted", "x")
        self.assertEqual(d.kind, "redact")
        self.assertEqual(d.edits, [Edit("/owner/email"), Edit("/owner/name", "***")])
        self.assertEqual(len(d.alerts), 1)
        d = Decision.alert(Severity.HIGH, "value-spike", "120").remove("/raw")
        self.assertEqual(d.kind, "redact")
        self.assertEqual(d.alerts[0].code, "value-spike")
        d = Decision.quarantine("spoofed").remove("/raw")
        self.assertEqual((d.kind, d.reason, d.edits), ("quarantine", "spoofed", []))
        w = Decision.redact().to_wit()
        self.assertEqual(type(w.verdict).__name__, "Verdict_Allow")
        w = Decision.allow().with_alert(Severity.CRITICAL, "c", "d").to_wit()
        self.assertEqual(w.alerts[0].severity.name, "CRITICAL")

    def test_declarations_only_in_init(self):
        with self.assertRaises(PolicyError) as err:
            declare.field("/a")
        self.assertIn('declare.field("/a") outside init', str(err.exception))

        def init():
            declare.envelope(declare.Envelope.DEVICE_ID)
            a = declare.field("/a")
            b = declare.field("/b")
            self.assertEqual((a, declare.field("/a"), b), (0, 0, 1))
            declare.counter("hits", "1", "")
            with self.assertRaises(PolicyError):
                declare.histogram("hits")
            with self.assertRaises(PolicyError):
                declare.counter("Bad Name")
            for i in range(2, 64):
                declare.field("/f%d" % i)
            with self.assertRaises(PolicyError) as err:
                declare.field("/one-too-many")
            self.assertEqual(str(err.exception), 'cannot declare field "/one-too-many": at most 64')
            return "ok"

        result, manifest = declare.capture(init)
        self.assertEqual(result, "ok")
        self.assertEqual(manifest.fields[:2], ["/a", "/b"])
        self.assertEqual(manifest.envelope, declare.Envelope.DEVICE_ID)
        self.assertEqual([m[0] for m in manifest.metrics], ["hits"])


if __name__ == "__main__":
    unittest.main()
