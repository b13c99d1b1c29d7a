//! The host's error type: every variant names what is wrong and where.

use std::path::PathBuf;

/// A boxed error from a dependency (wasmtime's errors are `anyhow::Error`s, which do not
/// implement `std::error::Error` themselves).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of building or changing a [`Runtime`](crate::Runtime). Evaluating a message never
/// returns an error: a policy's failure on a message is a [`Fault`](crate::Fault) recorded in
/// the [`Outcome`](crate::Outcome).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid; `origin` is the file (or `<inline>`), `message` says
    /// which key or entry and why.
    #[error("invalid config {origin}: {message}")]
    Config {
        /// The config file, or `<inline>` for configuration given as a string.
        origin: String,
        /// What is wrong, naming the key or entry.
        message: String,
    },
    /// A file could not be read.
    #[error("cannot read {what} {}", path.display())]
    Io {
        /// What the file is, e.g. `config` or `policy "pii"`.
        what: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A policy component could not be loaded.
    // The message carries the cause and its own causes once; not also as `source`, or
    // `{:#}` (the CLI's format) would print them twice.
    #[error("policy {policy:?} ({}): {}", path.display(), chain(cause))]
    Load {
        /// The policy's configured name.
        policy: String,
        /// The component file.
        path: PathBuf,
        /// Why it was refused.
        cause: LoadError,
    },
    /// The WebAssembly engine could not be set up with the configured settings.
    #[error("cannot create the WebAssembly engine")]
    Engine(#[source] BoxError),
    /// A trusted key named by `[signing]` could not be read or is malformed.
    #[error(transparent)]
    Signing(crate::signing::SigningError),
}

/// Why a component was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file does not start with the WebAssembly magic bytes.
    #[error("not WebAssembly (no \\0asm header)")]
    NotWasm,
    /// The file is a core WebAssembly module, not a component.
    #[error(
        "a core WebAssembly module, not a component (build the policy for wasm32-wasip2, \
         whose linker emits components)"
    )]
    CoreModule,
    /// The component targets another major version of the contract.
    #[error(
        "built for twinguard:policy@{found}, but this host speaks twinguard:policy@{expected}{}",
        rebuild_hint(found)
    )]
    WrongVersion {
        /// The version the component was built against.
        found: String,
        /// The version this host implements.
        expected: &'static str,
    },
    /// The component does not implement the `twinguard:policy/policy` world, or imports
    /// something the host does not provide.
    #[error("does not fit the twinguard:policy@{expected} world: {detail}")]
    WrongWorld {
        /// What is missing or extra.
        detail: String,
        /// The version this host implements.
        expected: &'static str,
    },
    /// Compilation failed (malformed or invalid WebAssembly).
    #[error("invalid component")]
    Compile(#[source] BoxError),
    /// The module's structure is over a compile limit (`[engine]`, see
    /// [`CompileLimits`](crate::CompileLimits)); nothing was compiled.
    #[error("refused before compiling: {detail} (over [engine] {limit})")]
    TooComplex {
        /// The `[engine]` key of the limit.
        limit: &'static str,
        /// What is over it, naming the function.
        detail: String,
    },
    /// Instantiation failed (e.g. its initial memory exceeds the policy's memory cap).
    #[error("instantiation failed")]
    Instantiate(#[source] BoxError),
    /// The policy's `init` refused its configuration.
    #[error("init refused the configuration: {0}")]
    Init(String),
    /// `init` faulted (trap, fuel, deadline, memory).
    #[error("init faulted: {0}")]
    InitFault(crate::Fault),
    /// A self-test case the module ships gave another verdict than it expects, or is
    /// malformed.
    #[error("self-test failed: {0}")]
    SelfTest(String),
    /// The module's signature is missing, untrusted or does not match (checked before any
    /// compilation).
    #[error(transparent)]
    Signature(Box<crate::signing::SigningError>),
}

/// What is wrong with a setting, an entry or an input line: the message names it (key, entry,
/// field or line) and says why. Returned by checks that have nothing else to carry.
///
/// ```
/// let e = twinguard_core::Invalid::new("route #2: empty chain");
/// assert!(e.contains("route #2"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(String);

impl Invalid {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl std::ops::Deref for Invalid {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<String> for Invalid {
    fn from(message: String) -> Self {
        Self(message)
    }
}

impl From<Invalid> for String {
    fn from(e: Invalid) -> Self {
        e.0
    }
}

/// An error and its causes, `: `-separated, each once (a cause some error already repeats
/// in its own message is not printed again).
///
/// ```
/// let e = std::io::Error::other("disk full");
/// assert_eq!(twinguard_core::error_chain(&e), "disk full");
/// ```
pub fn chain(e: &dyn std::error::Error) -> String {
    let causes = std::iter::successors(e.source(), |c| c.source());
    causes.fold(e.to_string(), |text, c| match c.to_string() {
        s if text.ends_with(&s) => text,
        s => format!("{text}: {s}"),
    })
}

pub(crate) fn boxed(e: wasmtime::Error) -> BoxError {
    e.into()
}

/// What to do about a component built against an older contract.
fn rebuild_hint(found: &str) -> &'static str {
    if found.starts_with("0.1.") {
        "; rebuild the policy with twinguard-guest 0.2 (in `init`, declare the fields it reads; \
         see docs/contract.md, \"From 0.1 to 0.2\")"
    } else {
        ""
    }
}
