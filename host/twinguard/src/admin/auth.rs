//! Who may call the admin API, and what a caller who keeps guessing gets.
//!
//! - Client certificates must carry the clientAuth extended key usage. The WebPKI check alone
//!   accepts a certificate with no extended key usage at all for any purpose, so the API's
//!   own server certificate (README's recipe gives it none) would pass as an operator's.
//! - Two roles: the operator token may change things; the reader token (`read-token-file`)
//!   may only look (status, policies, a shadow's counts without its samples).
//! - Wrong tokens are counted per peer address: the first few are logged one by one, then the
//!   peer is refused (429) for a time that doubles with each further failure, up to five
//!   minutes, with one log line per lock. Guessing drops from tens of thousands of tries a
//!   second to a handful a minute, and the log stays bounded.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// What an authenticated caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Everything.
    Operator,
    /// Reads that carry no payload.
    Reader,
}

/// The WebPKI client check, plus: the end-entity certificate must name clientAuth.
#[derive(Debug)]
pub(super) struct ClientAuthOnly(pub(super) Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for ClientAuthOnly {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.0.verify_client_cert(end_entity, intermediates, now)?;
        if names_client_auth(end_entity) {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::InvalidPurpose,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Whether the certificate's extended key usage lists clientAuth (absent counts as no).
fn names_client_auth(cert: &CertificateDer<'_>) -> bool {
    match x509_parser::parse_x509_certificate(cert.as_ref()) {
        Ok((_, cert)) => matches!(
            cert.extended_key_usage(),
            Ok(Some(eku)) if eku.value.client_auth
        ),
        Err(_) => false,
    }
}

/// Failures before a peer is locked out.
const FREE_FAILURES: u32 = 5;
/// The longest lock.
const MAX_LOCK: Duration = Duration::from_secs(300);
/// A peer with no failure for this long starts afresh.
const FORGET: Duration = Duration::from_secs(600);
/// Peers tracked at most; past it the longest quiet one is forgotten.
const PEERS: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Strikes {
    failures: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// Failed authentications per peer address.
#[derive(Debug, Default)]
pub(super) struct Throttle {
    peers: Mutex<HashMap<IpAddr, Strikes>>,
}

/// A refusal because the peer failed too often; the time left is its `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Locked(pub(super) Duration);

impl fmt::Display for Locked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "too many failed authentications from this address; try again in {} s",
            self.0.as_secs().max(1)
        )
    }
}

impl Throttle {
    /// Whether `peer` is locked out now.
    pub(super) fn locked(&self, peer: IpAddr) -> Option<Locked> {
        let now = Instant::now();
        let peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        peers
            .get(&peer)
            .and_then(|s| s.locked_until)
            .filter(|until| *until > now)
            .map(|until| Locked(until - now))
    }

    /// Counts a failure by `peer` (`what` says which, for the log); returns the lock it earned.
    pub(super) fn failed(&self, peer: IpAddr, what: &str) -> Option<Locked> {
        let now = Instant::now();
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        if peers.len() >= PEERS && !peers.contains_key(&peer) {
            peers.retain(|_, s| now.duration_since(s.last) < FORGET);
            if peers.len() >= PEERS {
                if let Some(quietest) = peers.iter().min_by_key(|(_, s)| s.last).map(|(p, _)| *p) {
                    peers.remove(&quietest);
                }
            }
        }
        let s = peers.entry(peer).or_insert(Strikes {
            failures: 0,
            last: now,
            locked_until: None,
        });
        if now.duration_since(s.last) >= FORGET {
            s.failures = 0;
        }
        s.failures = s.failures.saturating_add(1);
        s.last = now;
        if s.failures <= FREE_FAILURES {
            tracing::warn!(%peer, failures = s.failures, "admin API: authentication failed: {what}");
            return None;
        }
        let doublings = (s.failures - FREE_FAILURES - 1).min(16);
        let lock = Duration::from_secs(1u64 << doublings).min(MAX_LOCK);
        s.locked_until = Some(now + lock);
        tracing::warn!(
            %peer,
            failures = s.failures,
            "admin API: authentication failed: {what}; {} failures in a row, refusing this \
             address for {} s",
            s.failures,
            lock.as_secs()
        );
        Some(Locked(lock))
    }

    /// A successful authentication clears `peer`'s record.
    pub(super) fn succeeded(&self, peer: IpAddr) {
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        peers.remove(&peer);
    }
}

/// Log lines for a streak of events of one kind: the first few, then one per doubling, so a
/// flood of failed handshakes leaves a few dozen lines rather than millions.
pub(super) fn worth_logging(count: u64) -> bool {
    count <= FREE_FAILURES as u64 || count.is_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_locked_after_the_free_failures_and_the_lock_doubles() {
        let t = Throttle::default();
        let peer: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        for _ in 0..FREE_FAILURES {
            assert_eq!(t.failed(peer, "wrong token"), None);
        }
        assert!(t.locked(peer).is_none());
        assert_eq!(
            t.failed(peer, "wrong token"),
            Some(Locked(Duration::from_secs(1)))
        );
        assert!(t.locked(peer).is_some());
        assert_eq!(
            t.failed(peer, "wrong token"),
            Some(Locked(Duration::from_secs(2)))
        );
        assert!(t.locked(other).is_none(), "another address is not held");
        for _ in 0..40 {
            t.failed(peer, "wrong token");
        }
        assert_eq!(t.failed(peer, "wrong token"), Some(Locked(MAX_LOCK)));
        t.succeeded(peer);
        assert!(t.locked(peer).is_none());
    }

    #[test]
    fn the_table_of_peers_stays_bounded() {
        let t = Throttle::default();
        for i in 0..(PEERS as u32 + 100) {
            t.failed(IpAddr::from(i.to_be_bytes()), "wrong token");
        }
        assert_eq!(t.peers.lock().unwrap().len(), PEERS);
    }

    #[test]
    fn streaks_are_logged_sparsely() {
        let logged = (1..=1_000_000u64).filter(|n| worth_logging(*n)).count();
        assert!(logged < 30, "{logged}");
        assert!(worth_logging(1) && worth_logging(5) && !worth_logging(6) && worth_logging(8));
    }
}
