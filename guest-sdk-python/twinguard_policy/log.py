"""Writing to the host log, attributed to this policy (lines are truncated and rate-limited by
the host). `print` also reaches the host log, as WASI stdout, without a level."""

from wit_world.imports import host
from wit_world.imports import types as _wit


def trace(text):
    host.log(_wit.Level.TRACE, text)


def debug(text):
    host.log(_wit.Level.DEBUG, text)


def info(text):
    host.log(_wit.Level.INFO, text)


def warn(text):
    host.log(_wit.Level.WARN, text)


def error(text):
    host.log(_wit.Level.ERROR, text)
