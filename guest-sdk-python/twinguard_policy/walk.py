"""Walking a JSON or CBOR payload with JSON Pointers, for a policy that must look at every
field rather than the few it can name (a port of the Rust SDK's `walk`, with the same order,
pointers and error texts).

    walk.strings(msg.content_type, msg.payload, ["/debug"], lambda pointer, text: ...)

A payload that does not parse (or nests deeper than 128) raises `WalkError`; a policy should
fail closed on it.

JSON is read by CPython's `json` (in C) when that is sure to read it as the walker would (no
`\\u` escape of a surrogate, no more than 128 brackets), and by the walker's own reader
otherwise, which gives the errors their text: the same strings, pointers and order either way,
at a fraction of the interpreter's work.
"""

import json as _json
import re

from .errors import WalkError
from .pointer import token as _token

#: Nesting deeper than this is refused (serde_json, which the host parses with, stops at 128).
MAX_DEPTH = 128


class Visitor:
    """What a walk reports: override what you need. The root is always entered."""

    def member(self, pointer):
        """An object member (a text-keyed CBOR map entry) of an entered value; `True` enters
        it."""
        return True

    def element(self, pointer):
        """An array element of an entered value; `True` enters it."""
        return True

    def string(self, pointer, text):
        """A string value (member names are not values) that was entered."""


def visit(content_type, payload, visitor):
    """Walks `payload` as CBOR when `content_type` says so (`"cbor"` or `ContentType.CBOR`)
    and as JSON otherwise, in document order."""
    payload = bytes(payload)
    if str(content_type) == "cbor":
        _Cbor(payload, visitor).run()
    else:
        doc = _fast_json(payload)
        if doc is _SLOW:
            _Json(payload, visitor).run()
        else:
            _tree(doc, "", visitor.member, visitor.element, visitor.string)


class _Strings(Visitor):
    __slots__ = ("skip", "fn")

    def __init__(self, skip, fn):
        self.skip = frozenset(skip)
        self.fn = fn

    def member(self, pointer):
        return pointer not in self.skip

    element = member

    def string(self, pointer, text):
        self.fn(pointer, text)


def strings(content_type, payload, skip, fn):
    """Calls `fn(pointer, text)` for every string value of `payload`, except those at or under
    a pointer in `skip`."""
    payload = bytes(payload)
    if str(content_type) != "cbor":
        doc = _fast_json(payload)
        if doc is not _SLOW:
            skip = frozenset(skip)
            t = type(doc)
            if t is str:
                fn("", doc)
            elif t is _Obj or t is list:
                _strings_tree(doc, "", skip, fn)
            return
    visit(content_type, payload, _Strings(skip, fn))


class _Members(Visitor):
    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn

    def member(self, pointer):
        return self.fn(pointer)

    def element(self, pointer):
        return False


def members(content_type, payload, fn):
    """Calls `fn(pointer)` for every member of the root object, and for the members of every
    member object `fn` returned `True` for. Array elements are never visited."""
    visit(content_type, payload, _Members(fn))


def utf8_error(data):
    """Rust's `Utf8Error` text for bytes that are not UTF-8 (`None` when they are)."""
    n = len(data)
    i = 0
    while i < n:
        first = data[i]
        if first < 0x80:
            i += 1
            continue
        if 0xC2 <= first <= 0xDF:
            width = 2
        elif 0xE0 <= first <= 0xEF:
            width = 3
        elif 0xF0 <= first <= 0xF4:
            width = 4
        else:
            return "invalid utf-8 sequence of 1 bytes from index %d" % i
        if i + 1 >= n:
            return "incomplete utf-8 byte sequence from index %d" % i
        second = data[i + 1]
        if width == 2:
            ok = 0x80 <= second <= 0xBF
        elif width == 3:
            ok = (
                (first == 0xE0 and 0xA0 <= second <= 0xBF)
                or (0xE1 <= first <= 0xEC and 0x80 <= second <= 0xBF)
                or (first == 0xED and 0x80 <= second <= 0x9F)
                or (0xEE <= first <= 0xEF and 0x80 <= second <= 0xBF)
            )
        else:
            ok = (
                (first == 0xF0 and 0x90 <= second <= 0xBF)
                or (0xF1 <= first <= 0xF3 and 0x80 <= second <= 0xBF)
                or (first == 0xF4 and 0x80 <= second <= 0x8F)
            )
        if not ok:
            return "invalid utf-8 sequence of 1 bytes from index %d" % i
        for k in range(2, width):
            if i + k >= n:
                return "incomplete utf-8 byte sequence from index %d" % i
            if not 0x80 <= data[i + k] <= 0xBF:
                return "invalid utf-8 sequence of %d bytes from index %d" % (k, i)
        i += width
    return None


class _Obj(list):
    """A JSON object as `json` reads it here: its members in order, repeats kept."""

    __slots__ = ()


_SLOW = object()
_DECODE = _json.JSONDecoder(object_pairs_hook=_Obj).decode
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _fast_json(b):
    """The document as `json` reads it, or `_SLOW` when the walker's reader must read it: what
    `json` refuses (the reader says why, or reads what `json` does not take, such as `01`),
    a surrogate escape (`json` takes a lone one, the reader refuses it) and more brackets than
    the nesting limit (`json` has none)."""
    if b.count(b"[") + b.count(b"{") > MAX_DEPTH or _SURROGATE_ESCAPE.search(b):
        return _SLOW
    try:
        return _DECODE(b.decode("utf-8"))
    except Exception:  # ValueError, RecursionError, UnicodeDecodeError
        return _SLOW


def _tree(v, ptr, member, element, string):
    t = type(v)
    if t is str:
        string(ptr, v)
    elif t is _Obj:
        for k, x in v:
            child = ptr + "/" + (k if "~" not in k and "/" not in k else _token(k))
            if member(child):
                _tree(x, child, member, element, string)
    elif t is list:
        for i, x in enumerate(v):
            child = ptr + "/" + str(i)
            if element(child):
                _tree(x, child, member, element, string)


def _strings_tree(v, ptr, skip, fn):
    # `strings`' visitor has no other effect than entering what `skip` does not name: members
    # and elements that hold no string need no pointer.
    if type(v) is _Obj:
        for k, x in v:
            t = type(x)
            if t is str or t is _Obj or t is list:
                child = ptr + "/" + (k if "~" not in k and "/" not in k else _token(k))
                if child not in skip:
                    if t is str:
                        fn(child, x)
                    else:
                        _strings_tree(x, child, skip, fn)
    else:
        i = 0
        for x in v:
            t = type(x)
            if t is str or t is _Obj or t is list:
                child = ptr + "/" + str(i)
                if child not in skip:
                    if t is str:
                        fn(child, x)
                    else:
                        _strings_tree(x, child, skip, fn)
            i += 1


_WS = re.compile(rb"[ \t\n\r]*")
_SCALAR = re.compile(rb"[A-Za-z0-9+\-.]*")
_PLAIN = re.compile(rb'[^"\\]*')
_HEX = frozenset(b"0123456789abcdefABCDEF")


class _Json:
    __slots__ = ("b", "n", "i", "depth", "visitor", "member", "element", "string_fn")

    def __init__(self, b, visitor):
        self.b = b
        self.n = len(b)
        self.i = 0
        self.depth = 0
        self.visitor = visitor
        self.member = visitor.member
        self.element = visitor.element
        self.string_fn = visitor.string

    def error(self, what):
        return WalkError("%s at byte %d" % (what, self.i))

    def run(self):
        try:
            self.b.decode("utf-8")
        except UnicodeDecodeError:
            raise WalkError("the JSON payload is not UTF-8: " + utf8_error(self.b)) from None
        self.value(True, "")
        self.i = _WS.match(self.b, self.i).end()
        if self.i != self.n:
            raise self.error("trailing characters")

    def value(self, entered, ptr):
        b = self.b
        i = self.i = _WS.match(b, self.i).end()
        if i >= self.n:
            raise self.error("unexpected end")
        c = b[i]
        if c == 0x7B:  # {
            self.open()
            self.i = _WS.match(b, self.i).end()
            if self.i < self.n and b[self.i] == 0x7D:
                self.i += 1
            else:
                while True:
                    self.expect(0x22)
                    key = self.string()
                    self.expect(0x3A)
                    if entered:
                        child = ptr + "/" + _token(key)
                        self.value(self.member(child), child)
                    else:
                        self.value(False, ptr)
                    if not self.next_or_close(0x7D):
                        break
            self.depth -= 1
        elif c == 0x5B:  # [
            self.open()
            self.i = _WS.match(b, self.i).end()
            if self.i < self.n and b[self.i] == 0x5D:
                self.i += 1
            else:
                index = 0
                while True:
                    if entered:
                        child = "%s/%d" % (ptr, index)
                        self.value(self.element(child), child)
                    else:
                        self.value(False, ptr)
                    index += 1
                    if not self.next_or_close(0x5D):
                        break
            self.depth -= 1
        elif c == 0x22:  # "
            self.i = i + 1
            text = self.string()
            if entered:
                self.string_fn(ptr, text)
        else:
            end = _SCALAR.match(b, i).end()
            if end == i:
                raise self.error("expected a value")
            self.i = end

    def open(self):
        self.i += 1
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error("nested deeper than %d" % MAX_DEPTH)

    def expect(self, c):
        self.i = _WS.match(self.b, self.i).end()
        if self.i < self.n and self.b[self.i] == c:
            self.i += 1
        else:
            raise self.error("expected `%s`" % chr(c))

    def next_or_close(self, close):
        self.i = _WS.match(self.b, self.i).end()
        c = self.b[self.i] if self.i < self.n else None
        if c == 0x2C:
            self.i += 1
            return True
        if c == close:
            self.i += 1
            return False
        raise self.error("expected `,` or `%s`" % chr(close))

    def string(self):
        b = self.b
        start = self.i
        j = _PLAIN.match(b, start).end()
        if j >= self.n:
            self.i = self.n
            raise self.error("unterminated string")
        if b[j] == 0x22:
            self.i = j + 1
            return b[start:j].decode("utf-8")
        out = [b[start:j].decode("utf-8")]
        self.i = j
        while True:
            i = self.i
            if i >= self.n:
                raise self.error("unterminated string")
            c = b[i]
            if c == 0x22:
                self.i = i + 1
                return "".join(out)
            if c == 0x5C:
                escaped = b[i + 1] if i + 1 < self.n else None
                self.i = i + 2
                if escaped == 0x22:
                    out.append('"')
                elif escaped == 0x5C:
                    out.append("\\")
                elif escaped == 0x2F:
                    out.append("/")
                elif escaped == 0x62:
                    out.append("\b")
                elif escaped == 0x66:
                    out.append("\f")
                elif escaped == 0x6E:
                    out.append("\n")
                elif escaped == 0x72:
                    out.append("\r")
                elif escaped == 0x74:
                    out.append("\t")
                elif escaped == 0x75:
                    out.append(self.unicode())
                else:
                    raise self.error("bad escape")
            else:
                j = _PLAIN.match(b, i).end()
                out.append(b[i:j].decode("utf-8"))
                self.i = j

    def unicode(self):
        high = self.hex4()
        if 0xD800 <= high < 0xDC00:
            if self.b[self.i : self.i + 2] != b"\\u":
                raise self.error("lone surrogate")
            self.i += 2
            low = self.hex4()
            if not 0xDC00 <= low < 0xE000:
                raise self.error("lone surrogate")
            code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
        else:
            code = high
        if 0xD800 <= code < 0xE000:
            raise self.error("bad \\u escape")
        return chr(code)

    def hex4(self):
        i = self.i
        end = i + 4
        # Rust's `str::get(i..i + 4)`: `None` past the end or off a character boundary.
        if end > self.n or (end < self.n and 0x80 <= self.b[end] <= 0xBF):
            raise self.error("short \\u escape")
        digits = self.b[i:end]
        # `u32::from_str_radix(_, 16)`: an optional `+`, then hex digits.
        if digits[0] == 0x2B:
            digits = digits[1:]
        if not all(d in _HEX for d in digits):
            raise self.error("bad \\u escape")
        self.i = end
        return int(digits, 16)


class _Cbor:
    __slots__ = ("b", "n", "i", "depth", "member", "element", "string_fn")

    def __init__(self, b, visitor):
        self.b = b
        self.n = len(b)
        self.i = 0
        self.depth = 0
        self.member = visitor.member
        self.element = visitor.element
        self.string_fn = visitor.string

    def run(self):
        self.item(True, "")
        if self.i != self.n:
            raise WalkError("trailing bytes at offset %d" % self.i)

    def take(self, n):
        if n <= self.n - self.i:
            self.i += n
            return self.b[self.i - n : self.i]
        raise WalkError("length %d past the end at offset %d" % (n, self.i))

    def head(self):
        if self.i >= self.n:
            raise WalkError("unexpected end at offset %d" % self.i)
        initial = self.b[self.i]
        self.i += 1
        major = initial >> 5
        info = initial & 0x1F
        if info <= 23:
            return major, info
        if info <= 27:
            return major, int.from_bytes(self.take(1 << (info - 24)), "big")
        if info == 31 and (2 <= major <= 5 or major == 7):
            return major, None
        raise WalkError("bad head 0x%02x at offset %d" % (initial, self.i - 1))

    def at_break(self):
        if self.i < self.n and self.b[self.i] == 0xFF:
            self.i += 1
            return True
        return False

    def utf8(self, raw):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise WalkError("text string is not UTF-8: " + utf8_error(raw)) from None

    def text(self, arg):
        if arg is not None:
            return self.utf8(self.take(arg))
        out = []
        while not self.at_break():
            major, n = self.head()
            if major != 3 or n is None:
                raise WalkError("bad text chunk at offset %d" % self.i)
            out.append(self.utf8(self.take(n)))
        return "".join(out)

    def more(self, count, seen):
        if count is not None:
            return seen < count
        return not self.at_break()

    def item(self, entered, ptr):
        major, arg = self.head()
        # A tag: the tagged item is the value.
        while major == 6:
            major, arg = self.head()
        if major == 0 or major == 1 or major == 7:
            if major == 7 and arg is None:
                raise WalkError("unexpected break at offset %d" % (self.i - 1))
        elif major == 2:
            if arg is not None:
                self.take(arg)
            else:
                while not self.at_break():
                    m, n = self.head()
                    if m != 2 or n is None:
                        raise WalkError("bad byte chunk at offset %d" % self.i)
                    self.take(n)
        elif major == 3:
            text = self.text(arg)
            if entered:
                self.string_fn(ptr, text)
        else:  # 4: array, 5: map
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise WalkError("nested deeper than %d" % MAX_DEPTH)
            seen = 0
            while self.more(arg, seen):
                if major == 4:
                    if entered:
                        child = "%s/%d" % (ptr, seen)
                        self.item(self.element(child), child)
                    else:
                        self.item(False, ptr)
                else:
                    m, key = self.head()
                    if m != 3:
                        raise WalkError("map key is not text at offset %d" % self.i)
                    key = self.text(key)
                    if entered:
                        child = ptr + "/" + _token(key)
                        self.item(self.member(child), child)
                    else:
                        self.item(False, ptr)
                seen += 1
            self.depth -= 1
