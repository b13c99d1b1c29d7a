#!/usr/bin/env python3
"""Writes N random messages (NDJSON) for agree.sh --fuzz: strings built from fragments the
detectors react to (digits and separators, `@`, dots, IBAN and card shapes, the configured
names in other cases and spacing, non-ASCII text), in random documents (nested objects and
arrays, member names with `/` and `~`, JSON and CBOR), and now and then a payload cut short
or with a byte changed.

    fuzz.py SEED N > fuzz.ndjson
"""

import base64
import json
import random
import sys

FRAGMENTS = [
    "ada@example.com", "a.b+c@x-y.example.org", "@", ".", "-", "_", "+", "(", ")", "/", " ",
    "  ", ",", ":", "x@y", "foo@bar.b", "@home.example", "user@.example", "ops.lead@plant.example",
    "+49 170 1234567", "0170 1234567", "(030) 1234 5678", "555-123-4567", "1-555-123-4567",
    "0049 170 1234567", "+1 (555) 123-4567", "01 23 45 67 89", "030/12345678", "+49 (0)170",
    "4111 1111 1111 1111", "4111111111111111", "378282246310005", "5500-0000-0000-0004",
    "4111111111111112", "352099001761481", "1764000000123", "2026-11-25", "05.12.2026",
    "192.168.1.10", "00-11-22-33-44-55", "21.5", "2.14.1", "0.000123456789",
    "DE89 3704 0044 0532 0130 00", "DE89370400440532013000", "GB82 WEST 1234 5698 7654 32",
    "NL91ABNA0417164300", "DE00 0000", "AB12", "Ada Lovelace", "ada  LOVELACE", "Grace Hopper",
    "GRACE\tHOPPER", "grace hopperx", "Zoë", "ZOË", "zoë2", "MÜLLER", "müller", "ΟΔΥΣΣΕΥΣ",
    "οδυσσευς", "İstanbul", "ß", "é", "😀", "\u00a0", "\u2003", "\u200b", "\u0301", "\n", "\t",
    "0", "1", "7", "12", "123", "1234", "99999", "00", "x", "abc", "word", "sensor@plant",
]
DIGITS = "0123456789"


def text(r):
    parts = []
    for _ in range(r.randint(0, 8)):
        k = r.random()
        if k < 0.6:
            parts.append(r.choice(FRAGMENTS))
        elif k < 0.85:
            parts.append("".join(r.choice(DIGITS + " -./()+") for _ in range(r.randint(1, 20))))
        else:
            parts.append("".join(r.choice("aAzZ09@.-_ +éΣ") for _ in range(r.randint(1, 6))))
    return "".join(parts)


def key(r):
    return r.choice(["owner", "email", "name", "a", "b", "a/b", "c~d", "0", "1", "10", "2",
                     "1a", "", "note", "log", "ts", "device", "x y", text(r)[:10]])


def value(r, depth):
    k = r.random()
    if depth > 4 or k < 0.45:
        return text(r)
    if k < 0.55:
        return r.choice([1, -2.5, 1764000000123, True, False, None, 0.1])
    if k < 0.8:
        return {key(r): value(r, depth + 1) for _ in range(r.randint(0, 5))}
    return [value(r, depth + 1) for _ in range(r.randint(0, 5))]


def main():
    seed, n = int(sys.argv[1]), int(sys.argv[2])
    r = random.Random(seed)
    topics = ["fields", "quiet", "detect", "remove", "some", "chain"]
    for i in range(n):
        topic = "%s/fuzz" % r.choice(topics)
        doc = value(r, 0)
        if doc is None:
            doc = 0
        if r.random() < 0.5:
            doc = {"owner": {"email": text(r), "name": value(r, 3)}, "badge": {"holder": text(r)},
                   "contacts": [text(r), text(r)], "data": doc}
        ct = "cbor" if r.random() < 0.2 else "json"
        line = {"device_id": "fuzz-%d" % (i % 7), "topic": topic, "content_type": ct}
        if ct == "json" and r.random() < 0.1:
            raw = json.dumps(doc, ensure_ascii=r.random() < 0.5).encode()
            if raw and r.random() < 0.5:
                raw = raw[: r.randint(0, len(raw))]
            elif raw:
                j = r.randrange(len(raw))
                raw = raw[:j] + bytes([r.randrange(256)]) + raw[j + 1 :]
            line["payload_base64"] = base64.b64encode(raw).decode()
        else:
            line["payload"] = doc
        print(json.dumps(line, ensure_ascii=False))


if __name__ == "__main__":
    main()
