//! The admin API's HTTP client: what `twinguard policy …` sends to a running `serve`
//! (HTTP/1.1 over TLS, mutual TLS or a bearer token).

use std::path::PathBuf;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use serde_json::json;

/// How a caller reaches the admin API (what `twinguard policy …` uses).
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `https://host:port`.
    pub url: String,
    /// PEM CA that signed the API's server certificate.
    pub ca: PathBuf,
    /// PEM client certificate (mutual TLS), with `key`.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// Bearer token.
    pub token: Option<String>,
}

/// One request to the admin API: the status code and the JSON answer. Fails with a message
/// naming the URL for anything below HTTP (connection, TLS: e.g. a refused client
/// certificate).
pub async fn request(
    client: &ClientConfig,
    method: Method,
    path: &str,
    body: Vec<u8>,
    headers: &[(&str, String)],
) -> Result<(StatusCode, serde_json::Value), String> {
    let rest = client
        .url
        .strip_prefix("https://")
        .ok_or_else(|| format!("{}: the admin API speaks https:// only", client.url))?
        .trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h.to_owned(),
            p.parse::<u16>()
                .map_err(|_| format!("{}: bad port {p:?}", client.url))?,
        ),
        None => (rest.to_owned(), 443),
    };
    let tls = twinguard::tls::client_config(
        &client.ca,
        client.cert.as_deref(),
        client.key.as_deref(),
        "admin",
    )?;
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|e| format!("{}: {e}", client.url))?;
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", client.url);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| at(&e))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .map_err(|e| at(&format!("TLS: {e}")))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| at(&e))?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, host);
    if let Some(token) = &client.token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let req = req.body(Full::new(Bytes::from(body))).map_err(|e| at(&e))?;
    let resp = sender.send_request(req).await.map_err(|e| {
        // With TLS 1.3 a refused client certificate shows up here, after the handshake.
        at(&format!(
            "{e} (was the client certificate or token refused?)"
        ))
    })?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| at(&e))?
        .to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| json!({ "error": String::from_utf8_lossy(&bytes) }));
    Ok((status, value))
}
