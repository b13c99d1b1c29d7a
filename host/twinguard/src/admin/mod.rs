//! The admin API: list policies and versions, push a module, roll back, remove, change routes
//! and reload, over HTTPS (rustls) with JSON answers. Every change goes through
//! [`Lifecycle`]: built and validated before it is activated.
//!
//! Callers are authenticated by a client certificate from `client-ca` with the clientAuth
//! extended key usage (mutual TLS, checked in the handshake) and/or a bearer token from
//! `token-file`; each one configured is required, and at least one must be. A second token,
//! `read-token-file`, gives the reader role: the `GET` endpoints only, and a shadow's diff
//! without its sample payloads. Wrong tokens are throttled per peer address (the `auth` module).
//! It listens on loopback unless told otherwise, and warns when told to listen everywhere.
//!
//! | method and path | what |
//! |---|---|
//! | `GET /v1/status` | generation, counters, last refusal (reader too) |
//! | `GET /v1/policies` | every policy: name, version, file, kept versions (reader too) |
//! | `PUT /v1/policies/{name}` | body: the component; header `x-twinguard-signature`: its `.sig` file, base64 |
//! | `POST /v1/policies/{name}/rollback` | back to the previous version |
//! | `DELETE /v1/policies/{name}` | remove it, and from every chain (a chain it sat in needs header `x-twinguard-remove-enforcement: <reason>`) |
//! | `PUT /v1/routes` | body: `[{"filter": "…", "class": "…", "chain": ["…"]}]` (filter, class or both); taking a policy off a route or dropping a route needs header `x-twinguard-remove-enforcement: <reason>` |
//! | `POST /v1/policies/{name}/breaker/reset` | body: empty (every held device and the policy-wide breaker) or `{"device": "…"}` |
//! | `POST /v1/reload` | reload the config file from disk |
//! | `PUT /v1/policies/{name}/candidate` | body: a component to shadow the active version with |
//! | `GET /v1/policies/{name}/candidate` | the shadow's diff: counts by verdict pair, samples (reader too, without samples) |
//! | `POST /v1/policies/{name}/candidate/promote` | make the candidate the active version |
//! | `DELETE /v1/policies/{name}/candidate` | discard it (returns the last diff) |

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body as _;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::lifecycle::{Lifecycle, LifecycleError};
use crate::listener::Guarded;

mod auth;
use auth::{Role, Throttle};

/// Largest request body: a component of up to 32 MiB.
const MAX_BODY: usize = 32 << 20;

/// The `[admin]` table.
///
/// ```toml
/// [admin]
/// listen = "127.0.0.1:9443"
/// cert = "admin.pem"
/// key = "admin.key"
/// client-ca = "operators-ca.pem"   # mutual TLS
/// token-file = "admin.token"       # and/or a bearer token
/// read-token-file = "reader.token"  # optional: a token that may only read
/// state-dir = "twinguard-state"
/// keep-versions = 5
/// # Against floods (defaults shown):
/// max-connections = 64
/// handshake-timeout-ms = 10000
/// request-timeout-ms = 60000
/// max-uploads = 4
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AdminConfig {
    /// Address and port (default `127.0.0.1:9443`: loopback only).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// PEM certificate chain of the API's server certificate.
    pub cert: PathBuf,
    /// PEM private key of `cert`.
    pub key: PathBuf,
    /// PEM CA(s) whose client certificates may call (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// A file whose first line is the bearer token callers must send.
    pub token_file: Option<PathBuf>,
    /// A file whose first line is a second token, for the reader role: status, the policy
    /// list and a shadow's counts, never a payload or a change. Needs `token-file`.
    #[serde(default)]
    pub read_token_file: Option<PathBuf>,
    /// Where pushed modules and version histories are kept (default `twinguard-state`).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Versions kept per policy for rollback (default 5).
    #[serde(default = "default_keep")]
    pub keep_versions: usize,
    /// Connections open at once (default 64). Past it new connections wait in the kernel's
    /// backlog: a flood of idle connections cannot use up the process's descriptors.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Time a caller has to complete the TLS handshake (default 10 s).
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// Time a caller has to send a request's headers, and then its body (default 60 s each);
    /// a connection idle that long between requests is closed.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Request bodies (module uploads, up to 32 MiB each) read at once (default 4); another
    /// upload meanwhile gets 503.
    #[serde(default = "default_max_uploads")]
    pub max_uploads: usize,
}

impl AdminConfig {
    /// The defaults for everything but the address, the TLS material and the credentials:
    /// for embedders and tests that build the table in code.
    ///
    /// ```
    /// let admin = twinguard::admin::AdminConfig::new("admin.pem", "admin.key");
    /// assert_eq!(admin.max_connections, 64);
    /// ```
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            listen: default_listen(),
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
            token_file: None,
            read_token_file: None,
            state_dir: default_state_dir(),
            keep_versions: default_keep(),
            max_connections: default_max_connections(),
            handshake_timeout_ms: default_handshake_timeout_ms(),
            request_timeout_ms: default_request_timeout_ms(),
            max_uploads: default_max_uploads(),
        }
    }
}

fn default_max_connections() -> usize {
    64
}

fn default_handshake_timeout_ms() -> u64 {
    10_000
}

fn default_request_timeout_ms() -> u64 {
    60_000
}

fn default_max_uploads() -> usize {
    4
}

fn default_listen() -> String {
    "127.0.0.1:9443".into()
}

fn default_state_dir() -> PathBuf {
    "twinguard-state".into()
}

fn default_keep() -> usize {
    5
}

impl AdminConfig {
    /// Checks what can be checked without files; the error names the key.
    pub fn validate(&self) -> Result<(), crate::Invalid> {
        self.check().map_err(crate::Invalid::from)
    }

    fn check(&self) -> Result<(), String> {
        self.listen
            .parse::<SocketAddr>()
            .map_err(|e| format!("admin.listen {:?}: {e} (e.g. 127.0.0.1:9443)", self.listen))?;
        if self.client_ca.is_none() && self.token_file.is_none() {
            return Err(
                "admin: set client-ca (mutual TLS) and/or token-file (bearer token): the API \
                 refuses to run open"
                    .into(),
            );
        }
        if self.read_token_file.is_some() && self.token_file.is_none() {
            return Err(
                "admin.read-token-file needs token-file too: with certificates alone every \
                 caller is an operator, so a reader token would grant nothing less"
                    .into(),
            );
        }
        for (key, value) in [
            ("max-connections", self.max_connections as u64),
            ("handshake-timeout-ms", self.handshake_timeout_ms),
            ("request-timeout-ms", self.request_timeout_ms),
            ("max-uploads", self.max_uploads as u64),
        ] {
            if value == 0 {
                return Err(format!("admin.{key} must be at least 1"));
            }
        }
        if self.keep_versions < 2 {
            return Err(
                "admin.keep-versions must be at least 2 (the current and one to roll back to)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Why the admin API could not start.
#[derive(Debug, thiserror::Error)]
#[error("admin API: {0}")]
pub struct AdminError(String);

/// A bound admin API, ready to serve.
pub struct AdminServer {
    listener: Guarded,
    acceptor: TlsAcceptor,
    gate: Arc<Gate>,
    lifecycle: Arc<Lifecycle>,
    handshake_timeout: Duration,
    request_timeout: Duration,
    uploads: Arc<Semaphore>,
}

/// The tokens and the failures counted against them.
struct Gate {
    operator: Option<String>,
    reader: Option<String>,
    throttle: Throttle,
    /// Refused TLS handshakes so far, for sparse logging.
    refused_handshakes: AtomicU64,
}

impl Gate {
    /// The caller's role, from its `Authorization` header (mutual TLS, when configured, was
    /// checked in the handshake); an answer when it has none.
    #[allow(clippy::result_large_err)] // the error is the answer, built once on a refusal
    fn admit(
        &self,
        peer: IpAddr,
        header: Option<&hyper::header::HeaderValue>,
    ) -> Result<Role, Answer> {
        let Some(operator) = &self.operator else {
            return Ok(Role::Operator);
        };
        if let Some(locked) = self.throttle.locked(peer) {
            return Err(too_many(locked));
        }
        let given = header
            .and_then(|v| v.to_str().ok())
            // The scheme is case-insensitive (RFC 7235).
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, given)| given.trim());
        // Both compared in full whichever matches, so timing tells nothing about either.
        let is_operator = same(given.as_bytes(), operator.as_bytes());
        let is_reader = self
            .reader
            .as_ref()
            .is_some_and(|r| same(given.as_bytes(), r.as_bytes()));
        if is_operator || is_reader {
            self.throttle.succeeded(peer);
            return Ok(if is_operator {
                Role::Operator
            } else {
                Role::Reader
            });
        }
        let what = if header.is_none() {
            "no Authorization header"
        } else {
            "wrong bearer token"
        };
        Err(match self.throttle.failed(peer, what) {
            Some(locked) => too_many(locked),
            None => error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token (Authorization: Bearer …)",
            ),
        })
    }
}

fn too_many(locked: auth::Locked) -> Answer {
    let mut answer = error(StatusCode::TOO_MANY_REQUESTS, locked);
    answer.headers_mut().insert(
        hyper::header::RETRY_AFTER,
        hyper::header::HeaderValue::from(locked.0.as_secs().max(1)),
    );
    answer
}

fn read_token(path: &std::path::Path, key: &str) -> Result<String, AdminError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| AdminError(format!("admin.{key} {}: {e}", path.display())))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.len() < 16 {
        return Err(AdminError(format!(
            "admin.{key} {}: the token must be at least 16 characters",
            path.display()
        )));
    }
    Ok(token)
}

impl AdminServer {
    /// Reads the TLS material and the tokens, and binds the address.
    pub async fn bind(config: &AdminConfig, lifecycle: Arc<Lifecycle>) -> Result<Self, AdminError> {
        config.validate().map_err(|e| AdminError(e.into()))?;
        let tls = server_tls(config).map_err(AdminError)?;
        let operator = match &config.token_file {
            Some(path) => Some(read_token(path, "token-file")?),
            None => None,
        };
        let reader = match &config.read_token_file {
            Some(path) => Some(read_token(path, "read-token-file")?),
            None => None,
        };
        if reader.is_some() && reader == operator {
            return Err(AdminError(
                "admin.read-token-file holds the operator's token: give the reader a token of \
                 its own"
                    .into(),
            ));
        }
        let listener = TcpListener::bind(&config.listen)
            .await
            .map_err(|e| AdminError(format!("admin.listen {}: {e}", config.listen)))?;
        if let Ok(addr) = listener.local_addr() {
            if addr.ip().is_unspecified() {
                tracing::warn!(
                    "admin API: listening on {addr}, every interface: anyone who can reach this \
                     host may try its credentials; prefer loopback or one management address \
                     (admin.listen)"
                );
            }
        }
        Ok(Self {
            listener: Guarded::new(listener, config.max_connections, "admin API"),
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            gate: Arc::new(Gate {
                operator,
                reader,
                throttle: Throttle::default(),
                refused_handshakes: AtomicU64::new(0),
            }),
            lifecycle,
            handshake_timeout: Duration::from_millis(config.handshake_timeout_ms),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            uploads: Arc::new(Semaphore::new(config.max_uploads.max(1))),
        })
    }

    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves. A connection that fails (handshake, protocol) is
    /// logged and dropped; it never stops the server. A caller that does not finish its
    /// handshake, headers or body in time is dropped, and past `max-connections` new ones wait.
    pub async fn serve(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer, slot) = tokio::select! {
                () = &mut shutdown => return,
                accepted = self.listener.accept() => accepted,
            };
            let acceptor = self.acceptor.clone();
            let lifecycle = Arc::clone(&self.lifecycle);
            let gate = Arc::clone(&self.gate);
            let uploads = Arc::clone(&self.uploads);
            let (handshake_timeout, request_timeout) =
                (self.handshake_timeout, self.request_timeout);
            tokio::spawn(async move {
                let _slot = slot;
                let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await
                {
                    Ok(Ok(t)) => t,
                    Ok(Err(e)) => {
                        let n = gate.refused_handshakes.fetch_add(1, Ordering::Relaxed) + 1;
                        if auth::worth_logging(n) {
                            tracing::warn!(%peer, refused = n, "admin API: TLS handshake refused: {e}");
                        }
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "admin API: TLS handshake not done in {handshake_timeout:?}; closed");
                        return;
                    }
                };
                let service = hyper::service::service_fn(move |req| {
                    let lifecycle = Arc::clone(&lifecycle);
                    let gate = Arc::clone(&gate);
                    let uploads = Arc::clone(&uploads);
                    async move {
                        let limits = Limits {
                            uploads: &uploads,
                            body_timeout: request_timeout,
                        };
                        let answer = match gate
                            .admit(peer.ip(), req.headers().get(hyper::header::AUTHORIZATION))
                        {
                            Ok(role) => handle(req, &lifecycle, role, limits).await,
                            Err(refusal) => refusal,
                        };
                        Ok::<_, Infallible>(answer)
                    }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(request_timeout)
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await
                {
                    tracing::debug!(%peer, "admin API: connection: {e}");
                }
            });
        }
    }
}

/// What one request may take of the server.
#[derive(Clone, Copy)]
struct Limits<'a> {
    /// Bodies being read, at most `max-uploads`.
    uploads: &'a Arc<Semaphore>,
    /// Time to read the body.
    body_timeout: Duration,
}

fn server_tls(c: &AdminConfig) -> Result<rustls::ServerConfig, String> {
    let chain = CertificateDer::pem_file_iter(&c.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("admin.cert {}: {e}", c.cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "admin.cert {}: no certificate in it",
            c.cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&c.key)
        .map_err(|e| format!("admin.key {}: {e}", c.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("admin TLS: {e}"))?;
    let builder = match &c.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("admin.client-ca {}: {e}", ca.display()))?
            {
                let cert = cert.map_err(|e| format!("admin.client-ca {}: {e}", ca.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("admin.client-ca {}: {e}", ca.display()))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "admin.client-ca {}: no certificate in it",
                    ca.display()
                ));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("admin.client-ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(Arc::new(auth::ClientAuthOnly(verifier)))
        }
        None => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("admin.cert/key: {e}"))
}

type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, body: &serde_json::Value) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Answer {
    answer(status, &json!({ "error": message.to_string() }))
}

/// Compares without an early exit, so the time taken does not tell how much of a guess was
/// right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn handle(
    req: Request<Incoming>,
    lifecycle: &Arc<Lifecycle>,
    role: Role,
    limits: Limits<'_>,
) -> Answer {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let signature = req
        .headers()
        .get("x-twinguard-signature")
        .map(|v| v.as_bytes().to_vec());
    let waiver = req
        .headers()
        .get("x-twinguard-remove-enforcement")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    // An upload holds up to 32 MiB while it is read: only `max-uploads` at once, each within
    // the request timeout. A request without a body takes no slot.
    let _upload = if req.body().is_end_stream() {
        None
    } else {
        match Arc::clone(limits.uploads).try_acquire_owned() {
            Ok(slot) => Some(slot),
            Err(_) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many uploads in progress (admin.max-uploads); try again",
                )
            }
        }
    };
    let read = Limited::new(req.into_body(), MAX_BODY).collect();
    let body = match tokio::time::timeout(limits.body_timeout, read).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body: {e} (at most {MAX_BODY} bytes)"),
            )
        }
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "request body not received within {:?} (admin.request-timeout-ms)",
                    limits.body_timeout
                ),
            )
        }
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if role == Role::Reader && method != Method::GET {
        return error(
            StatusCode::FORBIDDEN,
            format!(
                "{method} {path}: the reader token (admin.read-token-file) may only read; \
                 changes need the operator token"
            ),
        );
    }
    let l = Arc::clone(lifecycle);
    let op = match (&method, segments.as_slice()) {
        (&Method::GET, ["v1", "status"]) => {
            let set = lifecycle.runtime().policy_set();
            let stats = lifecycle.stats();
            return answer(
                StatusCode::OK,
                &json!({
                    "generation": set.generation(),
                    "policies": set.policies().len(),
                    "activated": stats.activated.load(std::sync::atomic::Ordering::Relaxed),
                    "refused": stats.refused.load(std::sync::atomic::Ordering::Relaxed),
                    "last_error": stats.last_error(),
                    // Only the breakers that are not clean: what an operator must look at.
                    "breakers": lifecycle
                        .list()
                        .into_iter()
                        .filter(|p| p.breaker.open || !p.breaker.held_devices.is_empty())
                        .map(|p| json!({
                            "policy": p.name,
                            "open": p.breaker.open,
                            "held_devices": p.breaker.held_devices.len(),
                        }))
                        .collect::<Vec<_>>(),
                }),
            );
        }
        (&Method::GET, ["v1", "policies"]) => {
            return answer(StatusCode::OK, &json!(lifecycle.list()));
        }
        (&Method::PUT, ["v1", "policies", name]) => {
            let signature = match decode_signature(signature) {
                Ok(s) => s,
                Err(e) => return e,
            };
            let name = (*name).to_owned();
            Box::new(move || l.push(&name, &body, signature.as_deref()))
                as Box<dyn FnOnce() -> Result<_, LifecycleError> + Send>
        }
        (&Method::POST, ["v1", "policies", name, "rollback"]) => {
            let name = (*name).to_owned();
            Box::new(move || l.rollback(&name))
        }
        (&Method::POST, ["v1", "policies", name, "breaker", "reset"]) => {
            #[derive(Deserialize, Default)]
            #[serde(deny_unknown_fields)]
            struct ResetBody {
                device: Option<String>,
            }
            let reset: ResetBody = if body.is_empty() {
                ResetBody::default()
            } else {
                match serde_json::from_slice(&body) {
                    Ok(r) => r,
                    Err(e) => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            format!("breaker reset: expected {{}} or {{\"device\": \"…\"}}: {e}"),
                        )
                    }
                }
            };
            let name = (*name).to_owned();
            Box::new(move || l.reset_breaker(&name, reset.device.as_deref()))
        }
        (&Method::DELETE, ["v1", "policies", name]) => {
            let name = (*name).to_owned();
            Box::new(move || l.remove(&name, waiver.as_deref()))
        }
        (&Method::PUT, ["v1", "routes"]) => {
            // The config file's own route type: `filter`, `class`, `chain`, unknown keys refused.
            let routes: Vec<crate::RouteConfig> = match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "routes: expected [{{\"filter\": \"…\", \"class\": \"…\", \"chain\": \
                             [\"…\"]}}] (filter, class or both): {e}"
                        ),
                    )
                }
            };
            Box::new(move || l.set_routes(&routes, waiver.as_deref()))
        }
        (&Method::POST, ["v1", "reload"]) => Box::new(move || l.reload_from_disk()),
        (&Method::PUT, ["v1", "policies", name, "candidate"]) => {
            let signature = match decode_signature(signature) {
                Ok(s) => s,
                Err(e) => return e,
            };
            let name = (*name).to_owned();
            return report(move || l.shadow(&name, &body, signature.as_deref())).await;
        }
        (&Method::GET, ["v1", "policies", name, "candidate"]) => {
            let name = (*name).to_owned();
            // Samples carry payloads (redacted as the chain forwards them, but still device
            // data): the reader sees the counts only.
            let keep_samples = role == Role::Operator;
            return report(move || {
                let mut r = l.shadow_report(&name)?;
                if !keep_samples {
                    r.samples.clear();
                }
                Ok(r)
            })
            .await;
        }
        (&Method::DELETE, ["v1", "policies", name, "candidate"]) => {
            let name = (*name).to_owned();
            return report(move || l.discard(&name)).await;
        }
        (&Method::POST, ["v1", "policies", name, "candidate", "promote"]) => {
            let name = (*name).to_owned();
            Box::new(move || l.promote(&name))
        }
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                format!("no such endpoint: {method} {path} (see GET /v1/policies)"),
            )
        }
    };
    report(op).await
}

/// Runs a lifecycle operation off the async threads (compiling a component takes a while)
/// and answers with its result as JSON.
async fn report<T: serde::Serialize + Send + 'static>(
    op: impl FnOnce() -> Result<T, LifecycleError> + Send + 'static,
) -> Answer {
    match tokio::task::spawn_blocking(op).await {
        Ok(Ok(value)) => answer(StatusCode::OK, &json!(value)),
        Ok(Err(e)) => {
            let status = match &e {
                LifecycleError::NotFound(_) => StatusCode::NOT_FOUND,
                LifecycleError::Invalid(_) => StatusCode::BAD_REQUEST,
                LifecycleError::Unwaived(_) => StatusCode::CONFLICT,
                LifecycleError::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                LifecycleError::Io { .. } | LifecycleError::Toml { .. } => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            };
            // The answer carries the causes too: the client is who must fix the change.
            error(status, crate::error_chain(&e))
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the change failed: {e}"),
        ),
    }
}

/// The `x-twinguard-signature` header: the module's `.sig` file, base64.
#[allow(clippy::result_large_err)] // the error is the answer, built once on a rare path
fn decode_signature(header: Option<Vec<u8>>) -> Result<Option<Vec<u8>>, Answer> {
    header
        .map(|s| base64::engine::general_purpose::STANDARD.decode(&s))
        .transpose()
        .map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("x-twinguard-signature: not base64: {e}"),
            )
        })
}
