"""The exceptions of the SDK."""


class PolicyError(Exception):
    """Raised from `init`: the policy refuses its configuration, and the load fails with this
    text as the cause (name the key and the bad value). The SDK's own checks raise it too."""


class ConfigError(PolicyError):
    """A configuration value the policy cannot use; the text names the key."""


class FieldError(Exception):
    """Why a field could not be looked up. `kind` is `unstructured` (text or binary payload),
    `malformed` (the payload does not parse; `detail` says where) or `bad-pointer`."""

    def __init__(self, kind, detail=""):
        super().__init__(kind, detail)
        self.kind = kind
        self.detail = detail

    def __str__(self):
        if self.kind == "unstructured":
            return "the payload is text or binary: it has no fields"
        if self.kind == "malformed":
            return "the payload is malformed: " + self.detail
        return "bad JSON Pointer: " + self.detail

    def __repr__(self):
        return "FieldError(%r, %r)" % (self.kind, self.detail)

    def __eq__(self, other):
        return isinstance(other, FieldError) and (self.kind, self.detail) == (
            other.kind,
            other.detail,
        )

    __hash__ = None


class StateError(Exception):
    """Why state could not be stored. `kind`: `over-limit`, `global-over-limit`,
    `too-many-devices` (`limit` is the figure), `encode`, `no-message` or `contended`."""

    def __init__(self, kind, limit=0, detail=""):
        super().__init__(kind, limit, detail)
        self.kind = kind
        self.limit = limit
        self.detail = detail

    def __str__(self):
        k = self.kind
        if k == "over-limit":
            return "over the limit of %d bytes of state for this device and policy" % self.limit
        if k == "global-over-limit":
            return "over the limit of %d bytes of policy-wide state for this policy" % self.limit
        if k == "too-many-devices":
            return "this policy already keeps state for its limit of %d devices" % self.limit
        if k == "encode":
            return "the value cannot be encoded as JSON: " + self.detail
        if k == "no-message":
            return "state is only reachable while evaluating a message"
        return "policy-wide state changed under %d updates in a row; nothing was stored" % (
            self.limit
        )


class WalkError(Exception):
    """The payload could not be walked (it does not parse, or nests deeper than 128); the text
    says where."""
