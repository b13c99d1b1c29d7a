//! Per-policy limits, isolation modes, fault actions, and the typed causes of a fault.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// The resources one policy may spend on one message. Every field has a default, so a
/// configuration only names what it changes.
///
/// ```
/// use twinguard_core::Limits;
/// let tight = Limits { fuel: 1_000_000, ..Limits::default() };
/// assert_eq!(tight.memory_bytes, Limits::default().memory_bytes);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Limits {
    /// Wasmtime fuel per message (about 10 units per nanosecond of guest work here).
    /// Exhausting it is [`Fault::Fuel`].
    pub fuel: u64,
    /// Deadline per message in milliseconds of the CPU time the policy's thread spends (guest
    /// code and the host calls it makes), checked at every epoch tick (1 ms by default) once a
    /// call has lasted one. A loaded machine does not count against it; a wall-clock backstop
    /// of ten times the deadline (at least 1 s) stops a call whose thread is starved. Missing
    /// either is [`Fault::Deadline`].
    pub deadline_ms: u64,
    /// Cap on the policy's linear memory in bytes. Growing past it is [`Fault::Memory`].
    pub memory_bytes: u64,
    /// Bytes of state the policy may keep per device, charged at what an entry really costs
    /// the host: key plus value plus 96 bytes. `state-set` past it returns an error to the
    /// guest; it is not a fault. A policy's state is bounded by `state-bytes × state-devices`.
    pub state_bytes: u64,
    /// Devices the policy may keep state for. `state-set` for one more device returns an error
    /// to the guest, so a flood of made-up device ids cannot exhaust the host's memory.
    pub state_devices: u64,
    /// Bytes of policy-wide state (`global-set`, one namespace for all devices), charged as
    /// `state-bytes` is. A write past it returns an error to the guest; it is not a fault.
    pub global_state_bytes: u64,
    /// Cap on the size of the decision a policy returns (reasons, alert texts, redaction
    /// pointers). Exceeding it is [`Fault::DecisionTooLarge`].
    pub decision_bytes: u64,
    /// Redaction edits one decision may carry. The host applies them after the guest's call,
    /// outside fuel and the deadline, at a cost that grows with edits × payload size: more
    /// is a [`Fault::BadDecision`].
    pub redact_edits: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // ~1 ms of guest work: two orders of magnitude above a JSON-reading policy.
            fuel: 10_000_000,
            deadline_ms: 50,
            memory_bytes: 16 << 20,
            state_bytes: 64 << 10,
            state_devices: 100_000,
            global_state_bytes: 1 << 20,
            decision_bytes: 64 << 10,
            redact_edits: 256,
        }
    }
}

/// wasmtime's own bound on one crossing's copy (its default hostcall fuel).
const COPY_BYTES_MAX: u64 = 128 << 20;

impl Limits {
    /// The deadline as a [`Duration`].
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    /// Bytes the host may copy out of the policy in one crossing: a host call's arguments,
    /// the decision `evaluate` returns, the manifest `init` returns. Past it the call is a
    /// [`Fault::HostCall`].
    ///
    /// Three times `memory_bytes` (at most 128 MiB, wasmtime's default): the host's copy of a
    /// value is at most three times the bytes it takes in the policy's memory (a string's
    /// 8-byte pointer and length becomes a 24-byte `String`), so whatever a policy can hold
    /// fits. Only a value whose strings or lists point at the same bytes again and again needs
    /// more: a 1 MiB string named by 100,000 alerts would be 100 GB on the host.
    ///
    /// ```
    /// let limits = twinguard_core::Limits { memory_bytes: 1 << 20, ..Default::default() };
    /// assert_eq!(limits.copy_bytes(), 3 << 20);
    /// ```
    pub fn copy_bytes(&self) -> u64 {
        self.memory_bytes.saturating_mul(3).min(COPY_BYTES_MAX)
    }
}

/// How instances of a policy are used across messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// An instance serves many messages (fastest). Instances live in a per-policy pool; a
    /// faulted instance is discarded, never returned to it.
    #[default]
    Reuse,
    /// A fresh instance per message from the pooling allocator: nothing a policy keeps in its
    /// own memory can leak from one message to the next. Instances start from a snapshot of the
    /// memory `init` left, taken once at load; where none can be taken, each runs `init`.
    Fresh,
}

/// What happens to a message when a policy faults on it (or its circuit breaker is open).
/// In every case an alert names the policy, its version and the cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFault {
    /// Fail closed: hold the message in quarantine, stopping the chain.
    #[default]
    Quarantine,
    /// Fail open: skip the faulted policy's decision and go on with the chain.
    Allow,
}

/// Why a policy failed on a message. The message gets the policy's [`OnFault`] action.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// The policy used up its fuel; the figure is the limit in units.
    Fuel(u64),
    /// The policy ran past its wall-clock deadline (milliseconds).
    Deadline(u64),
    /// The policy tried to grow its memory past the cap: `wanted` and `cap` in bytes.
    Memory {
        /// Bytes the guest asked for.
        wanted: u64,
        /// The configured cap.
        cap: u64,
    },
    /// The guest trapped (including a Rust panic, which is `unreachable`); the text is the
    /// trap and, where the guest printed one, its panic message.
    Trap(String),
    /// The decision is malformed (e.g. a redaction pointer that is not a JSON Pointer) or
    /// cannot apply to this message (a redaction of a text or binary payload).
    BadDecision(String),
    /// The decision exceeded the `decision-bytes` limit: `size` and `limit` in bytes.
    DecisionTooLarge {
        /// Size of the decision.
        size: u64,
        /// The configured limit.
        limit: u64,
    },
    /// `init` failed for a fresh instance; the text is the policy's own message.
    Init(String),
    /// The policy could not be instantiated (e.g. the engine's instance pool is full).
    Instantiate(String),
    /// The policy's circuit breaker is open for every device after this many faults among its
    /// last 64 runs; the policy was not run.
    BreakerOpen(u32),
    /// The breaker holds this device after this many faults among its last 16 messages; the
    /// policy was not run for it (other devices are judged as usual).
    DeviceHeld(u32),
    /// The policy asked the host for something its limits cannot bound (a WASI timer, more
    /// random bytes than a call may have); the text names the call.
    HostCall(String),
}

impl Fault {
    /// A short, stable code for metrics and alerts, e.g. `fuel` or `deadline`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Fuel(_) => "fuel",
            Self::Deadline(_) => "deadline",
            Self::Memory { .. } => "memory",
            Self::Trap(_) => "trap",
            Self::BadDecision(_) => "bad-decision",
            Self::DecisionTooLarge { .. } => "decision-too-large",
            Self::Init(_) => "init",
            Self::Instantiate(_) => "instantiate",
            Self::BreakerOpen(_) => "breaker-open",
            Self::DeviceHeld(_) => "device-held",
            Self::HostCall(_) => "host-call",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fuel(limit) => write!(f, "fuel exhausted: {limit} units"),
            Self::Deadline(ms) => write!(f, "deadline exceeded: {ms} ms"),
            Self::Memory { wanted, cap } => {
                write!(
                    f,
                    "memory cap exceeded: wanted {wanted} bytes, cap {cap} bytes"
                )
            }
            Self::Trap(text) => write!(f, "trap: {text}"),
            Self::BadDecision(text) => write!(f, "bad decision: {text}"),
            Self::DecisionTooLarge { size, limit } => {
                write!(f, "decision too large: {size} bytes, limit {limit} bytes")
            }
            Self::Init(text) => write!(f, "init failed: {text}"),
            Self::Instantiate(text) => write!(f, "instantiation failed: {text}"),
            Self::BreakerOpen(n) => {
                write!(f, "circuit breaker open: {n} faults in the last 64 runs")
            }
            Self::DeviceHeld(n) => {
                write!(f, "device held: {n} faults in its last 16 messages")
            }
            Self::HostCall(text) => write!(f, "host call refused: {text}"),
        }
    }
}
