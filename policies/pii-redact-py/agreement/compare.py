#!/usr/bin/env python3
"""Compares two `twinguard eval` outputs line by line: the outcomes (action, payload,
redaction, alerts, reason, the verdict of every step and the kind of a fault) must be the
same. Left out: the components' versions (digests), fuel and time, and what a trap says
beyond being a trap (a Rust panic and a Python exception word it differently). Exits 1 on
any difference, printing each.

    compare.py RUST.ndjson PYTHON.ndjson [MESSAGES.ndjson] [--stats]

With --stats, prints fuel and microseconds per step for both (median, mean, max).
"""

import json
import re
import statistics
import sys



def normalize(line, versions):
    out = json.loads(line)
    text = json.dumps(out)
    for v in versions:
        text = text.replace(v, "<version>").replace(v[:12], "<version>")
    out = json.loads(text)

    def untrap(s):
        return re.sub(r"trap: wasm trap: .*", "trap: <trap>", s, flags=re.S)

    if "reason" in out:
        out["reason"] = untrap(out["reason"])
    for a in out.get("alerts", []):
        a["detail"] = untrap(a["detail"])
        a.pop("version", None)
    steps = []
    for t in out.get("trace", []):
        step = {"policy": t["policy"], "verdict": t["verdict"]}
        if "fault" in t:
            step["fault"] = t["fault"]["kind"]
            if t["fault"]["kind"] != "trap":
                step["fault_detail"] = t["fault"]["detail"]
        steps.append(step)
    out["trace"] = steps
    return out


def versions_of(lines):
    vs = set()
    for line in lines:
        for t in json.loads(line).get("trace", []):
            vs.add(t["version"])
    return vs


def stats(label, lines):
    fuel, micros = [], []
    for line in lines:
        for t in json.loads(line).get("trace", []):
            fuel.append(t["fuel_used"])
            micros.append(t["micros"])
    if not fuel:
        return
    print(
        "%-7s %4d steps  fuel median %9d mean %9d max %9d   micros median %8.1f mean %8.1f max %8.1f"
        % (
            label,
            len(fuel),
            statistics.median(fuel),
            statistics.mean(fuel),
            max(fuel),
            statistics.median(micros),
            statistics.mean(micros),
            max(micros),
        )
    )


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(args[0], encoding="utf-8") as f:
        left = f.read().splitlines()
    with open(args[1], encoding="utf-8") as f:
        right = f.read().splitlines()
    messages = []
    if len(args) > 2:
        with open(args[2], encoding="utf-8") as f:
            messages = f.read().splitlines()
    if "--stats" in sys.argv:
        stats("rust", left)
        stats("python", right)
    vl, vr = versions_of(left), versions_of(right)
    diffs = 0
    if len(left) != len(right):
        print("different numbers of outcomes: %d and %d" % (len(left), len(right)))
        diffs += 1
    for i, (a, b) in enumerate(zip(left, right)):
        na, nb = normalize(a, vl), normalize(b, vr)
        if na != nb:
            diffs += 1
            print("--- line %d differs" % (i + 1))
            if i < len(messages):
                print("message: %s" % messages[i][:600])
            for key in sorted(set(na) | set(nb)):
                if na.get(key) != nb.get(key):
                    print("  %s:\n    rust:   %s\n    python: %s" % (
                        key, json.dumps(na.get(key), ensure_ascii=False)[:1500],
                        json.dumps(nb.get(key), ensure_ascii=False)[:1500]))
    n = min(len(left), len(right))
    print("%d outcomes compared: %d agree, %d differ" % (n, n - diffs if diffs <= n else 0, diffs))
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
