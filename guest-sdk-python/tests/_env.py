"""Puts the SDK, and the bindings componentize-py generates for wit/ (stubs outside a
component), on sys.path for the unit tests; generates the bindings on first use with the
componentize-py of scripts/python-tools.sh (target/tools/python)."""

import os
import subprocess
import sys

SDK = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(SDK)
BINDINGS = os.path.join(ROOT, "target", "tools", "python-bindings")


def setup():
    if SDK not in sys.path:
        sys.path.insert(0, SDK)
    try:
        import wit_world  # noqa: F401
        return
    except ImportError:
        pass
    marker = os.path.join(BINDINGS, "wit_world", "__init__.py")
    if not os.path.exists(marker):
        tool = os.path.join(ROOT, "target", "tools", "python", "bin", "componentize-py")
        if not os.path.exists(tool):
            raise SystemExit(
                "the unit tests need the contract's bindings: run scripts/python-tools.sh first"
            )
        subprocess.run(
            [tool, "-d", os.path.join(ROOT, "wit"), "-w", "policy", "bindings", BINDINGS],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    sys.path.insert(0, BINDINGS)
