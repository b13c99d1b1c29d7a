"""pii-redact-py's unit tests: the Rust policy's (policies/pii-redact/src/{lib,detect}.rs),
case for case. The agreement set (../agree.sh) checks the whole component against the Rust
one under the host."""

import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "guest-sdk-python", "tests"))
import _env  # noqa: E402

_env.setup()
sys.path.insert(0, os.path.dirname(HERE))

import detect  # noqa: E402
from app import Detect, PiiRedact, document_order, sort_from_the_end  # noqa: E402
from detect import ALL, CARD, EMAIL, IBAN, NAME, PHONE, Detectors, mask  # noqa: E402
from twinguard_policy import Config, PolicyError, declare  # noqa: E402


def found(kind, text):
    spans = Detectors([kind], ["Ada Lovelace", "Grace Hopper", "Zoë"]).find(text)
    return [text[s:e] for s, e, _ in spans]


TELEMETRY = [
    "1764000000123", "1764000000123456789", "1764000000", "184467", "000000012345",
    "0000123456", "21.5", "-3.25", "0.000123456789", "1013.25 hPa", "2.14.1", "v2.14.1-rc.3",
    "fw 10.2.3.4567", "00:1A:2B:3C:4D:5E", "00-11-22-33-44-55", "00:11:22:33:44:55",
    "550e8400-e29b-41d4-a716-446655440000", "01234567-1234-5678-1234-567812345678",
    "2026-11-25", "2026-11-25T10:00:00.123Z", "2026-11-25 10:00:00", "05.12.2026 10:30",
    "05/12/2026", "192.168.100.200", "010.001.002.003", "press-07", "c-12", "sensor@plant",
    "fw@2.14.1", "plant/press-07/telemetry", "error 0x1F at 0170", "35 209900 176148 1",
    "352099001761481", "4111111111111112", "1111 1111 1111 1111", "DE00 0000 0000 0000 0000 00",
    "AB12 frame", "running", "lat 52.520008 lon 13.404954", "serial SN-2024-000123-0456",
]


class DetectTest(unittest.TestCase):
    def test_realistic_telemetry_is_not_personal_data(self):
        all_ = Detectors(list(ALL), ["Ada Lovelace"])
        for text in TELEMETRY:
            self.assertEqual(list(all_.find(text)), [], text)

    def test_emails(self):
        self.assertEqual(found(EMAIL, "ops.lead@plant.example"), ["ops.lead@plant.example"])
        self.assertEqual(
            found(EMAIL, "mail Ada.L+iot@mail.example.co.uk."), ["Ada.L+iot@mail.example.co.uk"]
        )
        self.assertEqual(found(EMAIL, "a@x.io, b_c@y-z.example"), ["a@x.io", "b_c@y-z.example"])
        for negative in ["sensor@plant", "fw@2.14.1", "@home.example", "user@.example",
                         "x@-a.example", "a@b.c", "temp @ 21.5"]:
            self.assertEqual(found(EMAIL, negative), [], negative)

    def test_phones(self):
        for text, phone in [
            ("+49 170 1234567", "+49 170 1234567"),
            ("call me at +49 170 1234567 please", "+49 170 1234567"),
            ("+491701234567", "+491701234567"),
            ("+1 (555) 123-4567", "+1 (555) 123-4567"),
            ("+44 20 7946 0018.", "+44 20 7946 0018"),
            ("+49 (0)170 1234567", "+49 (0)170 1234567"),
            ("0049 170 1234567", "0049 170 1234567"),
            ("tel 0170 1234567", "0170 1234567"),
            ("030/12345678", "030/12345678"),
            ("(030) 1234 5678", "(030) 1234 5678"),
            ("01 23 45 67 89", "01 23 45 67 89"),
            ("555-123-4567", "555-123-4567"),
            ("(555) 123-4567", "(555) 123-4567"),
            ("1-555-123-4567", "1-555-123-4567"),
        ]:
            self.assertEqual(found(PHONE, text), [phone], text)
        for negative in ["01701234567", "+21.5", "+1234567", "0.5 0170", "123-456-7890",
                         "555-123-45678", "555-123.4567", "12.30.2026", "2026-11-25",
                         "(0170 1234567", "ID0170 1234567", "0170 1234567:12"]:
            self.assertEqual(found(PHONE, negative), [], negative)

    def test_ibans(self):
        self.assertEqual(found(IBAN, "DE89370400440532013000"), ["DE89370400440532013000"])
        self.assertEqual(
            found(IBAN, "pay to DE89 3704 0044 0532 0130 00 by Friday"),
            ["DE89 3704 0044 0532 0130 00"],
        )
        self.assertEqual(
            found(IBAN, "GB82 WEST 1234 5698 7654 32"), ["GB82 WEST 1234 5698 7654 32"]
        )
        self.assertEqual(found(IBAN, "NL91ABNA0417164300"), ["NL91ABNA0417164300"])
        for negative in ["DE88370400440532013000", "DE89 3704 0044 0532 0130 01",
                         "XDE89370400440532013000", "AB12 frame", "DE89"]:
            self.assertEqual(found(IBAN, negative), [], negative)

    def test_cards(self):
        for text, card in [
            ("4111111111111111", "4111111111111111"),
            ("card 4111 1111 1111 1111 exp 12/29", "4111 1111 1111 1111"),
            ("5500-0000-0000-0004", "5500-0000-0000-0004"),
            ("2221000000000009", "2221000000000009"),
            ("378282246310005", "378282246310005"),
            ("6011111111111117", "6011111111111117"),
            ("3530111333300000", "3530111333300000"),
        ]:
            self.assertEqual(found(CARD, text), [card], text)
        for negative in ["4111111111111112", "4111 1111 1111 1121", "4444444444444444",
                         "1111111111111117", "411111111111", "41111111111111111111",
                         "1.4111111111111111", "4111111111111111.5", "1764000000123",
                         "1764000000123456789", "352099001761481"]:
            self.assertEqual(found(CARD, negative), [], negative)

    def test_names(self):
        self.assertEqual(found(NAME, "call ADA lovelace at noon"), ["ADA lovelace"])
        self.assertEqual(
            found(NAME, "Ada  Lovelace, Grace Hopper"), ["Ada  Lovelace", "Grace Hopper"]
        )
        self.assertEqual(found(NAME, "ZOË was here"), ["ZOË"])
        for negative in ["Ada Lovelaces", "AdaLovelace", "Ada", "Lovelace", "xAda Lovelace",
                         "Zoë2"]:
            self.assertEqual(found(NAME, negative), [], negative)
        # A character that lower-cases to two (İ) takes the character-by-character path.
        self.assertEqual(found(NAME, "İ Zoë"), ["Zoë"])

    def test_masking_keeps_the_rest_of_free_text(self):
        all_ = Detectors(list(ALL), ["Ada Lovelace"])
        text = "call Ada Lovelace at +49 170 1234567 or ada@example.com"
        spans = all_.find(text)
        self.assertEqual([s[2] for s in spans], [NAME, PHONE, EMAIL])
        self.assertEqual(mask(text, spans, "***"), "call *** at *** or ***")
        whole = "ops.lead@plant.example"
        self.assertEqual(mask(whole, all_.find(whole), "***"), "***")

    def test_the_first_detector_wins_an_overlap(self):
        spans = Detectors(list(ALL), []).find("4111111111111111@cards.example")
        self.assertEqual(len(spans), 1)
        self.assertEqual(spans[0][2], EMAIL)

    def test_overlapping_matches_of_one_kind_mask_once(self):
        # Both '@' make an address, sharing "b.cc": the first is kept, as in Rust.
        spans = Detectors([EMAIL], []).find("a@b.cc@d.ee")
        self.assertEqual([(s, e) for s, e, _ in spans], [(0, 6)])
        self.assertEqual(mask("a@b.cc@d.ee", spans, "***"), "***@d.ee")


def declared(pairs):
    def init():
        policy = PiiRedact()
        policy.init(Config(pairs))
        return policy

    try:
        return declare.capture(init)
    except PolicyError as err:
        return err, None


def settings(pairs):
    result, _ = declared(pairs)
    if isinstance(result, PolicyError):
        raise result
    return result


class SettingsTest(unittest.TestCase):
    def test_declares_the_fields_it_redacts(self):
        s, m = declared([("remove", "/owner/email"), ("mask", "/badge/holder,/owner/name")])
        self.assertEqual(m.fields, ["/owner/email", "/badge/holder", "/owner/name"])
        self.assertEqual(m.envelope, declare.Envelope.NONE)

    def test_defaults(self):
        s = settings([("remove", "/owner/email, /badge/holder")])
        self.assertEqual(s.remove, ["/owner/email", "/badge/holder"])
        self.assertEqual(s.mask, [])
        self.assertEqual(s.mask_with, "***")
        self.assertFalse(s.alert_on_redact)
        self.assertFalse(s.quarantine_unstructured)

    def refused(self, pairs):
        with self.assertRaises(PolicyError) as err:
            settings(pairs)
        return str(err.exception)

    def test_refusals_name_the_culprit(self):
        self.assertIn("`remove`", self.refused([]))
        err = self.refused([("remove", "/a"), ("mask_with", "x")])
        self.assertTrue("`mask_with`" in err and "`mask-with`" in err, err)
        err = self.refused([("mask", "/a,")])
        self.assertTrue("`mask`" in err and "empty pointer" in err, err)
        self.assertIn('"owner/email"', self.refused([("remove", "owner/email")]))
        self.assertIn("'~'", self.refused([("remove", "/a~2")]))
        err = self.refused([("remove", "/a"), ("alert-on-redact", "yes")])
        self.assertTrue("`alert-on-redact`" in err and '"yes"' in err, err)
        self.assertIn("both", self.refused([("remove", "/a"), ("mask", "/a")]))

    def test_detection_alone_is_enough_and_declares_nothing(self):
        s, m = declared([("detect", "email, phone,iban,card,names"), ("names", "Ada")])
        self.assertEqual(m.fields, [])
        self.assertFalse(s.detect.remove)
        self.assertEqual(s.detect.skip, [])
        self.assertIsNone(settings([("remove", "/a")]).detect)

    def test_detection_settings_refusals_name_the_culprit(self):
        err = self.refused([("detect", "email,ssn")])
        self.assertTrue("`detect`" in err and '"ssn"' in err, err)
        self.assertIn("`names` is not set", self.refused([("detect", "email,names")]))
        self.assertIn("does not list `names`", self.refused([("detect", "email"), ("names", "Ada")]))
        err = self.refused([("detect", "names"), ("names", "Ada,,Bob")])
        self.assertTrue("`names`" in err and "empty name" in err, err)
        err = self.refused([("detect", "email"), ("detect-action", "drop")])
        self.assertTrue("`detect-action`" in err and '"drop"' in err, err)
        self.assertIn("`detect-skip`", self.refused([("detect", "email"), ("detect-skip", "ts")]))
        self.assertIn("without `detect`", self.refused([("remove", "/a"), ("detect-skip", "/ts")]))

    def scan(self, d, payload, ct="json"):
        return [(p, ",".join(detect.KIND_NAMES[k] for k in kinds), m)
                for p, kinds, m in d.scan(ct, payload, "***")]

    def test_scan_finds_every_field_wherever_it_is(self):
        d = settings([("detect", "email,phone,iban,card,names"), ("names", "Ada Lovelace"),
                      ("remove", "/owner/email"), ("detect-skip", "/debug")]).detect
        payload = b"""{"seq":1,"temp":20.5,"maintainer":"ops.lead@plant.example",
               "owner":{"email":"ada@example.com"},"debug":"ada@example.com",
               "log":[{"msg":"call Ada Lovelace at +49 170 1234567"},"ok"],
               "ops.lead@plant.example":"key, not value",
               "pay":"DE89 3704 0044 0532 0130 00","card":"4111 1111 1111 1111",
               "not-card":"4111 1111 1111 1112","fw":"2.14.1","ts":"1764000000123"}"""
        self.assertEqual(self.scan(d, payload), [
            ("/maintainer", "email", "***"),
            ("/log/0/msg", "phone,name", "call *** at ***"),
            ("/pay", "iban", "***"),
            ("/card", "card", "***"),
        ])
        found_ = d.scan("json", b'{"a":"x@y.example"}', "***")
        self.assertEqual(d.detail(found_), "personal data masked at /a (email)")

    def test_scan_reads_cbor_and_refuses_what_does_not_parse(self):
        d = settings([("detect", "email"), ("detect-action", "remove")]).detect
        found_ = d.scan("cbor", b"\xa1\x63who\xa1\x64mail\x66a@b.io", "***")
        self.assertEqual([f[0] for f in found_], ["/who/mail"])
        self.assertEqual(d.detail(found_), "personal data removed at /who/mail (email)")
        with self.assertRaises(Exception):
            d.scan("json", b'{"a":', "***")

    def test_the_detail_never_carries_the_data_and_stays_short(self):
        d = settings([("detect", "email")]).detect
        doc = ("[%s]" % ",".join(['"someone@example.com"'] * 40)).encode()
        detail = d.detail(d.scan("json", doc, "***"))
        self.assertNotIn("someone", detail)
        self.assertTrue(detail.startswith("personal data masked at /0 (email); /1 (email)"))
        self.assertTrue(detail.endswith("; and 24 more fields"), detail)

    def test_edits_run_from_the_end_of_the_document(self):
        pointers = ["/a/2", "/a/10", "/b", "/a/1", "/a/1/x", "/a"]
        ordered = [e[0] for e in sort_from_the_end([(p, None) for p in pointers])]
        self.assertEqual(ordered, ["/b", "/a/10", "/a/2", "/a/1/x", "/a/1", "/a"])
        many = ["/a/%d" % i for i in range(30)] + ["/b"]
        ordered = [e[0] for e in sort_from_the_end([(p, None) for p in many])]
        self.assertEqual(ordered, ["/b"] + ["/a/%d" % i for i in reversed(range(30))])
        self.assertEqual(document_order("/+1", "/1"), 0)  # u64 parsing takes a `+`

    def test_escapes_and_options(self):
        s = settings([("mask", "/a~1b,/c~0d,/e/0"), ("mask-with", "[redacted]"),
                      ("alert-on-redact", "true"), ("quarantine-unstructured", "true")])
        self.assertEqual(s.mask, ["/a~1b", "/c~0d", "/e/0"])
        self.assertEqual(s.mask_with, "[redacted]")
        self.assertTrue(s.alert_on_redact and s.quarantine_unstructured)


if __name__ == "__main__":
    unittest.main()
