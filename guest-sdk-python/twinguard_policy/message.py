"""The device message under evaluation, and its typed fields."""

from componentize_py_types import Err, Ok
from wit_world.imports import host
from wit_world.imports import types as wit

from . import declare
from .errors import FieldError
from .text import described


class ContentType:
    """How the payload bytes are encoded: `ContentType.JSON`, `CBOR`, `TEXT` or `BINARY`;
    `str()` gives `json`, `cbor`, `text` or `binary`. (Plain objects rather than an `Enum`,
    whose member lookups run Python code on every message.)"""

    __slots__ = ("value", "structured")

    def __init__(self, value, structured):
        self.value = value
        #: Whether the payload has fields (JSON or CBOR): lookups and redactions apply.
        self.structured = structured

    def __str__(self):
        return self.value

    def __repr__(self):
        return "ContentType.%s" % self.value.upper()


ContentType.JSON = ContentType("json", True)
ContentType.CBOR = ContentType("cbor", True)
ContentType.TEXT = ContentType("text", False)
ContentType.BINARY = ContentType("binary", False)

_CONTENT_TYPES = {
    id(wit.ContentType.JSON): ContentType.JSON,
    id(wit.ContentType.CBOR): ContentType.CBOR,
    id(wit.ContentType.TEXT): ContentType.TEXT,
    id(wit.ContentType.BINARY): ContentType.BINARY,
}


class Value:
    """A typed field of the message. `kind` is `null`, `boolean`, `integer`, `float`,
    `string`, `byte string`, `array` or `object`; `value` is the Python value (`None`, a
    `bool`, `int`, `float`, `str` or `bytes`; for an array or object, its number of elements
    or members)."""

    __slots__ = ("kind", "value")

    def __init__(self, kind, value=None):
        self.kind = kind
        self.value = value

    def __repr__(self):
        return "Value(%r, %r)" % (self.kind, self.value)

    def __eq__(self, other):
        return isinstance(other, Value) and (self.kind, self.value) == (other.kind, other.value)

    __hash__ = None

    def as_f64(self):
        """The number, integers converted; `None` for other types."""
        if self.kind == "integer" or self.kind == "float":
            return float(self.value)
        return None

    def as_i64(self):
        return self.value if self.kind == "integer" else None

    def as_str(self):
        return self.value if self.kind == "string" else None

    def as_bool(self):
        return self.value if self.kind == "boolean" else None

    @property
    def is_null(self):
        return self.kind == "null"

    def describe(self):
        """Its kind and size, never what it holds (for reasons and alert details)."""
        k = self.kind
        if k == "null":
            return "null"
        if k in ("boolean", "float"):
            return "a " + k
        if k == "integer":
            digits = len(str(abs(self.value)))
            return "an integer (%d digit%s)" % (digits, "" if digits == 1 else "s")
        if k == "string":
            return described(self.value)
        if k == "byte string":
            return "a byte string (%d bytes)" % len(self.value)
        if k == "array":
            return "an array (%d elements)" % self.value
        return "an object (%d members)" % self.value


_NULL = Value("null")


def value_from_wit(v):
    """A `Value` from the contract's variant (`None` stays `None`: absent)."""
    if v is None:
        return None
    t = type(v)
    if t is wit.Value_Text:
        return Value("string", v.value)
    if t is wit.Value_Integer:
        return Value("integer", v.value)
    if t is wit.Value_Float:
        return Value("float", v.value)
    if t is wit.Value_Boolean:
        return Value("boolean", v.value)
    if t is wit.Value_Null:
        return _NULL
    if t is wit.Value_Array:
        return Value("array", v.value)
    if t is wit.Value_Object:
        return Value("object", v.value)
    return Value("byte string", bytes(v.value))


def field_error_from_wit(e):
    t = type(e)
    if t is wit.FieldError_Unstructured:
        return FieldError("unstructured")
    if t is wit.FieldError_Malformed:
        return FieldError("malformed", e.value)
    return FieldError("bad-pointer", e.value)


class Device:
    """A device's registry entry."""

    __slots__ = ("class_", "attributes")

    def __init__(self, class_, attributes):
        self.class_ = class_
        self.attributes = attributes

    def attribute(self, name):
        for n, v in self.attributes:
            if n == name:
                return v
        return None


_UNSET = object()


class Message:
    """One device message. Envelope parts not declared are fetched from the host on first
    use; declared fields come with the message, others are looked up by the host."""

    def __init__(self, inner):
        self._inner = inner
        self._payload = None
        self._device_id = inner.device_id
        self._topic = inner.topic
        self._attributes = None
        self._device = _UNSET
        self._last = inner.last
        fields = inner.fields
        if isinstance(fields, Ok):
            self._fields = fields.value
            self._error = None
        else:
            self._fields = None
            self._error = field_error_from_wit(fields.value)

    @property
    def device_id(self):
        if self._device_id is None:
            self._device_id = host.device_id()
        return self._device_id

    @property
    def topic(self):
        if self._topic is None:
            self._topic = host.topic()
        return self._topic

    @property
    def topic_segments(self):
        return self.topic.split("/")

    @property
    def content_type(self):
        return _CONTENT_TYPES[id(self._inner.content_type)]

    @property
    def payload_len(self):
        return self._inner.payload_len

    @property
    def received_at_ms(self):
        return self._inner.received_at_ms

    @property
    def seed(self):
        return self._inner.seed

    @property
    def payload(self):
        """The payload bytes (copied from the host on first use). Prefer `field`: the host
        has parsed the payload already."""
        if self._payload is None:
            self._payload = bytes(host.payload())
        return self._payload

    @property
    def payload_str(self):
        try:
            return self.payload.decode("utf-8")
        except UnicodeDecodeError:
            return None

    @property
    def attributes(self):
        if self._attributes is None:
            self._attributes = list(host.attributes())
        return self._attributes

    def attribute(self, name):
        for n, v in self.attributes:
            if n == name:
                return v
        return None

    @property
    def device(self):
        """The registry entry (`Device`), or `None` when the host does not know the device."""
        if self._device is _UNSET:
            d = host.device_entry()
            self._device = None if d is None else Device(d.class_, list(d.attributes))
        return self._device

    def get(self, field):
        """A declared field by its handle: a `Value`, or `None` when absent. Raises
        `FieldError` as `field` does."""
        if self._error is not None:
            raise self._error
        if field >= len(self._fields):
            raise FieldError(
                "bad-pointer",
                "field handle #%d names no field declared by this instance's init" % field,
            )
        return value_from_wit(self._fields[field])

    def last(self, last):
        """A `keep_last` field's value in the device's last forwarded message, or `None`."""
        if last < len(self._last):
            return value_from_wit(self._last[last])
        return None

    def field(self, pointer):
        """The field at a JSON Pointer: a `Value`, or `None` when absent. Raises `FieldError`
        when the payload is text or binary, does not parse, or the pointer is bad."""
        i = declare.position(pointer)
        if i is not None:
            return self.get(i)
        try:
            return value_from_wit(host.field(pointer))
        except Err as e:
            raise field_error_from_wit(e.value) from None

    def _try(self, pointer):
        try:
            return self.field(pointer)
        except FieldError:
            return None

    def f64(self, pointer):
        """The field as a number (integers converted); `None` when absent, another type or an
        error."""
        v = self._try(pointer)
        return None if v is None else v.as_f64()

    def i64(self, pointer):
        v = self._try(pointer)
        return None if v is None else v.as_i64()

    def str(self, pointer):
        v = self._try(pointer)
        return None if v is None else v.as_str()

    def bool(self, pointer):
        v = self._try(pointer)
        return None if v is None else v.as_bool()

    def has(self, pointer):
        """Whether the field is present (`null` included); errors count as absent."""
        return self._try(pointer) is not None

    def __repr__(self):
        return "Message(content_type=%s, payload_len=%d)" % (self.content_type, self.payload_len)

