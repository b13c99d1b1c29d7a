#!/usr/bin/env python3
"""Writes messages.ndjson, the agreement set: the same messages go through the Rust and the
Python pii-redact (agree.sh). Topics pick the policy instance (see rust.toml): fields/,
quiet/, detect/, remove/, some/, chain/. Base64 payloads carry what JSON cannot (malformed
JSON or CBOR, bytes that are not UTF-8, hand-made CBOR). Run it after changing a message."""

import base64
import json
import os

lines = []


def msg(topic, payload=None, ct=None, raw=None, device="dev-1"):
    line = {"device_id": device, "topic": topic}
    if ct:
        line["content_type"] = ct
    if raw is not None:
        line["payload_base64"] = base64.b64encode(raw).decode()
    else:
        line["payload"] = payload
    lines.append(json.dumps(line, ensure_ascii=False, separators=(",", ":")))


def cbor_text(s):
    b = s.encode()
    assert len(b) < 24
    return bytes([0x60 + len(b)]) + b


OWNER = {"temp": 21.5, "owner": {"name": "Ada", "email": "ada@example.com"}}
BADGE = {"event": "open", "badge": {"id": 4711, "holder": "Grace Hopper"}}

# --- Listed fields (alert-on-redact on): present, absent, nested, arrays, escapes.
for t in ("fields/a", "quiet/a"):
    msg(t, OWNER)
    msg(t, {"temp": 21.7})
    msg(t, {"owner": {"email": None, "name": ["x", {"y": 1}]}, "readings": [1, 2, 3]})
    msg(t, {"owner": "not an object", "badge": {"holder": ""}})
    msg(t, BADGE, ct="cbor")
    msg(t, {"readings": [{"v": 1}, {"v": 2}], "contacts": ["a@x.example", "b"]})
    msg(t, ["owner", {"email": "x"}])
    msg(t, "just a string")
    msg(t, 42)
    msg(t, {})
    msg(t, "running", ct="text")
    msg(t, raw=b"\x00\x01\xff binary", ct="binary")
    msg(t, raw=b'{"owner": {"email": "a@b.example"', ct="json")  # malformed JSON
    msg(t, raw=b'{"owner": "\xff\xfe"}', ct="json")  # not UTF-8
    msg(t, raw=b"\xa1\x65owner\xa1\x65email", ct="cbor")  # truncated CBOR
    msg(t, raw=b"\xa1\x01\x02", ct="cbor")  # integer map key
msg("fields/esc", {"a/b": "slash", "c~d": "tilde", "a": {"b": "not me"}, "c": {"d": 1}})
msg("fields/esc", {"contacts": [{"email": "x@y.example"}, "second"], "badge": {"holder": None}})
msg("fields/dup", raw=b'{"owner": {"email": "a@b.example", "email": "c@d.example"}}', ct="json")

# --- Detection, masking (every detector), listed fields beside it.
DETECT = [
    {"seq": 1, "temp": 20.5, "maintainer": "ops.lead@plant.example"},
    {"note": "call Ada Lovelace at +49 170 1234567"},
    {"pay": "IBAN DE89 3704 0044 0532 0130 00", "order": "4111111111111112"},
    {"seq": 184467, "ts": "1764000000123", "fw": "2.14.1",
     "id": "550e8400-e29b-41d4-a716-446655440000", "date": "2026-11-25"},
    {"owner": {"email": "ada@example.com", "name": "Ada Lovelace"},
     "badge": {"holder": "Grace Hopper", "id": 7}, "device": {"contact": "x@y.example"},
     "ts": "grace hopper wrote +1 (555) 123-4567"},
    {"log": [{"msg": "call Ada Lovelace at +49 170 1234567"}, "ok",
             ["nested a@b.example", {"deep": ["GRACE\tHOPPER at 0049 170 1234567"]}]],
     "ops.lead@plant.example": "key, not value"},
    {"card": "card 4111 1111 1111 1111 exp 12/29", "amex": "378282246310005",
     "mc": "5500-0000-0000-0004", "bad": "4111 1111 1111 1121", "imei": "352099001761481",
     "jcb": "3530111333300000", "maestro": "6011111111111117", "mc2": "2221000000000009"},
    {"phones": ["+491701234567", "+44 20 7946 0018.", "+49 (0)170 1234567",
                "0049 170 1234567", "tel 0170 1234567", "030/12345678", "(030) 1234 5678",
                "01 23 45 67 89", "555-123-4567", "(555) 123-4567", "1-555-123-4567"]},
    {"not_phones": ["01701234567", "+21.5", "+1234567", "0.5 0170", "123-456-7890",
                    "555-123-45678", "555-123.4567", "12.30.2026", "2026-11-25",
                    "(0170 1234567", "ID0170 1234567", "0170 1234567:12", "192.168.100.200",
                    "00-11-22-33-44-55", "05.12.2026 10:30", "lat 52.520008 lon 13.404954"]},
    {"ibans": ["DE89370400440532013000", "GB82 WEST 1234 5698 7654 32",
               "NL91ABNA0417164300", "DE88370400440532013000", "DE89 3704 0044 0532 0130 01",
               "XDE89370400440532013000", "AB12 frame", "DE00 0000 0000 0000 0000 00"]},
    {"names": ["ZOË was here", "Zoë2", "zoë", "Ada  Lovelace, Grace Hopper", "Ada Lovelaces",
               "AdaLovelace", "xAda Lovelace", "müller und MÜLLER", "Müllers",
               "ΟΔΥΣΣΕΥΣ", "οδυσσευς", "οδυσσευσ", "Ada\u00a0Lovelace", "Ada\u2003\u2003Lovelace"]},
    {"mixed": "Zoë, ada@example.com, 4111111111111111@cards.example and +49 170 1234567."},
    {"overlap": "a@x.example b@y.example", "e": "mail Ada.L+iot@mail.example.co.uk."},
    {"unicode": "é ada@exämple.com ü", "emoji": "😀 +49 170 1234567 😀",
     "rtl": "\u202ecall 0170 1234567", "nul": "x\u0000ada@example.com"},
    {"a": {"b": {"c": {"d": {"e": ["deep ada@example.com"]}}}}},
    ["a@x.example", "ok", {"k": "Grace Hopper"}],
    "single string ada@example.com",
    "single string without data",
    {"ts": "ada@example.com", "device": {"id": "Ada Lovelace"}, "tsx": "ada@example.com"},
    {"esc": "a\"b\\c ada@example.com \u00e9", "ctl": "\b\f\n\r\t +49 170 1234567"},
    {"": "empty key ada@example.com", "a/b": "x@y.example", "c~d": "Grace Hopper"},
    {"numbers": [1, -2.5e3, 1764000000123, True, False, None], "s": "4111111111111111"},
]
for p in DETECT:
    msg("detect/a", p)
    msg("remove/a", p)
    msg("some/a", p)
msg("detect/cbor", {"who": {"mail": "a@b.io"}, "list": ["x", "Ada Lovelace"], "n": 1.5},
    ct="cbor")
msg("remove/cbor", {"who": {"mail": "a@b.io"}, "list": ["x", "ada@example.com", "ok"]},
    ct="cbor")
msg("remove/arr", {"contacts": ["a@x.example", "ok", "b@y.example", "c@z.example"]})
msg("remove/arr", {"a": [["x@y.example", "z@w.example"], "q@r.example"], "a2": "1"})
msg("remove/ord", {"a": [f"u{i}@x.example" for i in range(12)]})
msg("detect/many", [f"someone{i}@example.com" for i in range(40)])
msg("detect/many", {f"k{i}": f"p{i}@example.com" for i in range(17)})
msg("detect/long", {("k" * 400): "ada@example.com"})
msg("detect/text", "ada@example.com", ct="text")
msg("some/text", "DE89370400440532013000", ct="text")
msg("remove/bin", raw=b"ada@example.com", ct="binary")
# Two e-mail matches sharing characters: the Rust policy panics when it masks them (a fault,
# quarantined by the default on-fault); removing them works.
msg("detect/overlap", {"x": "a@b.cc@d.ee"})
msg("remove/overlap", {"x": "a@b.cc@d.ee"})
# Hand-made CBOR: tags, indefinite lengths, byte strings, floats, a non-text key.
cbor = b"".join([
    b"\xa7", cbor_text("seq"), b"\x01",
    cbor_text("t"), b"\xfb\x40\x35\x80\x00\x00\x00\x00\x00",
    cbor_text("raw"), b"\x42\x01\x02",
    cbor_text("o/w~"), b"\xa1", cbor_text("mail"), cbor_text("a@b.io"),
    cbor_text("list"), b"\x9f", cbor_text("x"), b"\xc1", cbor_text("Grace Hopper"),
    b"\xa1", cbor_text("k"), b"\x01\xff",
    cbor_text("s"), b"\x7f\x64ada@\x69example.io\xff",
    cbor_text("tag"), b"\xc1\xa1", cbor_text("x"), cbor_text("+49 170 1234567"),
])
for t in ("detect/cbor-raw", "remove/cbor-raw", "fields/cbor-raw"):
    msg(t, raw=cbor, ct="cbor")
# Walk errors (with detection alone no lookup comes first: the walk's own error is the reason).
BAD_JSON = [
    b"{", b'{"a" 1}', b"[1,]", b'"abc', b'{"a": "\\x"}', b'"\\ud800"', b'{"\\ud800": 1}',
    b"{} x", b"", b"\xff", b'{"a": "\xe2\x82"}', b'["ok", "\xed\xa0\x80"]', b'{"a": tru}',
    b'{"a": "\\u00e9 ada@example.com"}', b'{"a": "\\ud83d\\ude00 x@y.example"}',
    b'{"a": "\\u+0e9"}', b'{"a": "\\u00\xc3\xa9"}', b'{"a": "\\udc00"}', b'{"a": "\\u12"}',
    b'{"a": 1 "b": 2}', b'{"a": [1 2]}', b"[" * 200 + b"]" * 200, b"[" * 128 + b"]" * 128,
    b"[" * 129 + b"]" * 129, b'  {"a":"x@y.example"}  ', b'{"a":-}', b'{"a":}', b"nul",
    b'{"a": "x@y.example\\', b'{"a": "\\', b'{"a": 01, "b": "ada@example.com"}',
    b'{"a":"ada@example.com","a":"b@c.example"}',
]
for raw in BAD_JSON:
    msg("remove/bad", raw=raw, ct="json")
    msg("fields/bad", raw=raw, ct="json")
BAD_CBOR = [
    b"\xa1\x01\x61x", b"\x78\xff", b"\x61x\x00", b"\xa0\x00", b"", b"\x81" * 200 + b"\x00",
    b"\x81" * 128 + b"\x00", b"\xff", b"\x1c", b"\x3f", b"\xdf", b"\x5f\x61a\xff",
    b"\x7f\x41a\xff", b"\x62\xc3\x28", b"\xa1\x62\xe2\x82\x61x", b"\x9f\x01", b"\xbf\x61a",
    b"\xc1" * 50 + cbor_text("x@y.example"), b"\x1b\x00\x00\x00\x00\x00\x00\x00",
    b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff", b"\xf9\x3c\x00", b"\xf8",
    b"\xbf" + cbor_text("a") + cbor_text("x@y.example") + b"\xff",
]
for raw in BAD_CBOR:
    msg("remove/badc", raw=raw, ct="cbor")
    msg("some/badc", raw=raw, ct="cbor")
# Chains: the second policy sees the first one's redactions.
msg("chain/a", {"owner": {"email": "ada@example.com", "name": "Ada Lovelace"},
                "contacts": ["grace@example.com", "+49 170 1234567"], "note": "Grace Hopper"})
msg("chain/a", {"a/b": "ada@example.com", "c~d": "x", "log": "DE89370400440532013000"})
msg("unrouted/a", {"owner": {"email": "x@y.example"}})

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "messages.ndjson"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
print("%d messages" % len(lines))
