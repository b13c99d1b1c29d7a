#!/usr/bin/env python3
"""Loads the Rust and the Python pii-redact with every configuration of bad-configs.ndjson
(one JSON object of config key-values a line; most are refused, a few are accepted) and
checks that both refuse the same ones with the same text, or both load.

    configs.py TWINGUARD RUST.wasm PYTHON.wasm WORKDIR [PYTHON_LIMITS_TOML]
"""

import json
import os
import subprocess
import sys


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(v, ensure_ascii=False)


def load(twinguard, wasm, config, workdir, extra):
    path = os.path.join(workdir, "config.toml")
    lines = [extra, "[[policy]]", 'name = "pii"', "path = %s" % json.dumps(wasm), "[policy.config]"]
    lines += ["%s = %s" % (json.dumps(k), toml_value(v)) for k, v in config.items()]
    lines += ["[[route]]", 'filter = "#"', 'chain = ["pii"]', ""]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    empty = os.path.join(workdir, "empty.ndjson")
    open(empty, "w").close()
    run = subprocess.run(
        [twinguard, "eval", "--config", path, "--input", empty],
        capture_output=True,
        text=True,
    )
    text = run.stderr.strip().replace(wasm, "<component>")
    return run.returncode, text


def main():
    twinguard, rust, python, workdir = sys.argv[1:5]
    extra = sys.argv[5] if len(sys.argv) > 5 else ""
    here = os.path.dirname(os.path.abspath(__file__))
    diffs = 0
    n = 0
    with open(os.path.join(here, "bad-configs.ndjson"), encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            n += 1
            config = json.loads(line)
            a = load(twinguard, rust, config, workdir, "")
            b = load(twinguard, python, config, workdir, extra)
            if a != b:
                diffs += 1
                print("--- config %s\n  rust:   %r\n  python: %r" % (line.strip(), a, b))
    print("%d configurations loaded: %d agree, %d differ" % (n, n - diffs, diffs))
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
