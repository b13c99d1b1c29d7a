//! Signed policy modules: ed25519 detached signatures, trusted keys, and the check the runtime
//! makes before it compiles anything.
//!
//! # Files
//!
//! Every file is two lines of text: a header naming its kind and the key id, then the base64
//! (standard alphabet, with padding) of the raw bytes.
//!
//! | file | header | second line |
//! |---|---|---|
//! | secret key (`ops.key`, mode 0600) | `twinguard-ed25519-secret-key <key-id>` | the 32-byte seed |
//! | public key (`ops.pub`) | `twinguard-ed25519-public-key <key-id>` | the 32-byte public key |
//! | signature (`module.wasm.sig`) | `twinguard-ed25519-signature <key-id>` | the 64-byte signature |
//!
//! The signature is a plain ed25519 (RFC 8032) signature over the module's bytes, exactly as
//! they are on disk. The key id is the first 8 bytes of the SHA-256 of the public key, in hex:
//! it only names the key in files and errors; verification never trusts it.
//!
//! # When
//!
//! A policy's signature is checked on the bytes that will be compiled, after they are read
//! and before any compilation (or cache lookup), on [`Runtime::new`](crate::Runtime::new) and
//! on every [`Runtime::reload`](crate::Runtime::reload). The trusted keys are read again from
//! their files on each of those, so rotating a key is an edit of the config and a reload.
//!
//! - No `trusted-keys`: signatures are not checked.
//! - `trusted-keys`, `require-signatures = false`: a module with a `.sig` file must verify
//!   with one of the keys; a module without one loads.
//! - `require-signatures = true`: every module must carry a signature that verifies.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use serde::Deserialize;
use sha2::{Digest, Sha256};

const SECRET_HEADER: &str = "twinguard-ed25519-secret-key";
const PUBLIC_HEADER: &str = "twinguard-ed25519-public-key";
const SIGNATURE_HEADER: &str = "twinguard-ed25519-signature";

/// The `[signing]` section of the configuration.
///
/// ```toml
/// [signing]
/// trusted-keys = ["keys/ops.pub"]   # relative to the config file
/// require-signatures = true
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct SigningConfig {
    /// Public key files (`.pub`) whose signatures are accepted.
    pub trusted_keys: Vec<PathBuf>,
    /// Refuse every module that has no valid signature by a trusted key.
    pub require_signatures: bool,
}

impl SigningConfig {
    /// Checks the section on its own (the key files are read when policies load).
    pub fn validate(&self) -> Result<(), crate::Invalid> {
        self.check().map_err(crate::Invalid::from)
    }

    fn check(&self) -> Result<(), String> {
        if self.require_signatures && self.trusted_keys.is_empty() {
            return Err(
                "signing.require-signatures is on but signing.trusted-keys names no key".into(),
            );
        }
        Ok(())
    }
}

/// Why a key, a signature or a signed module was refused. Each names the file at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SigningError {
    /// The module has no signature file and signatures are required.
    #[error(
        "unsigned: no signature file {} (signing.require-signatures is on)",
        sig.display()
    )]
    Unsigned {
        /// Where the signature was looked for.
        sig: PathBuf,
    },
    /// The signature names a key that is not trusted, and no trusted key verifies it.
    #[error(
        "signed by key {key}, which is not a trusted key (signature {}; trusted: {trusted})",
        sig.display()
    )]
    UntrustedKey {
        /// The signature file.
        sig: PathBuf,
        /// The key id the signature file names.
        key: String,
        /// The trusted key ids and their files.
        trusted: String,
    },
    /// The signature was made by a trusted key but not over these bytes: the module or its
    /// signature changed after signing.
    #[error(
        "signature {} does not match the module: it was changed after signing \
         (or the signature is not key {key}'s, {})",
        sig.display(),
        key_file.display()
    )]
    Mismatch {
        /// The signature file.
        sig: PathBuf,
        /// The key id the signature names.
        key: String,
        /// The trusted key file with that id.
        key_file: PathBuf,
    },
    /// A key or signature file is not in the expected format.
    #[error("{}: not a valid {what}: {detail}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What it should be, e.g. `public key`.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// A key or signature file could not be read or written.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was tried, e.g. `read public key`.
        action: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The system's random number generator failed while generating a key.
    #[error("the system random number generator failed")]
    Random,
}

/// A key id: the first 8 bytes of the SHA-256 of the public key, shown as hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyId([u8; 8]);

impl KeyId {
    fn of(public: &[u8; 32]) -> Self {
        let digest = Sha256::digest(public);
        let mut id = [0; 8];
        id.copy_from_slice(&digest[..8]);
        Self(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// A signing key (keep it secret: it is what makes a module trusted).
pub struct SecretKey {
    seed: [u8; 32],
    pair: Ed25519KeyPair,
    id: KeyId,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.id)
    }
}

impl SecretKey {
    /// A new key from the operating system's random number generator.
    pub fn generate() -> Result<Self, SigningError> {
        let mut seed = [0; 32];
        SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| SigningError::Random)?;
        Self::from_seed(seed).ok_or(SigningError::Random)
    }

    fn from_seed(seed: [u8; 32]) -> Option<Self> {
        // Any 32 bytes are a valid ed25519 seed; ring only refuses a wrong length.
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed).ok()?;
        let id = KeyId::of(&public_bytes(&pair));
        Some(Self { seed, pair, id })
    }

    /// Reads a secret key file (see the [module docs](self) for the format).
    pub fn from_file(path: &Path) -> Result<Self, SigningError> {
        let text = read_text(path, "read secret key")?;
        let (id, seed) = parse::<32>(&text, SECRET_HEADER, path, "secret key")?;
        let key = Self::from_seed(seed).ok_or_else(|| malformed(path, "secret key", "bad seed"))?;
        check_id(path, "secret key", &id, key.id)?;
        Ok(key)
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The public half, to hand to the hosts that verify.
    pub fn public_key(&self) -> PublicKey {
        let bytes = public_bytes(&self.pair);
        PublicKey { bytes, id: self.id }
    }

    /// Signs a module's bytes.
    pub fn sign(&self, module: &[u8]) -> Signature {
        let mut bytes = [0; 64];
        bytes.copy_from_slice(self.pair.sign(module).as_ref());
        Signature {
            bytes,
            key: self.id,
        }
    }

    /// Writes the key file with mode 0600 (owner only); refuses to replace an existing file.
    pub fn write_new(&self, path: &Path) -> Result<(), SigningError> {
        let text = render(SECRET_HEADER, self.id, &self.seed);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let io = |source| SigningError::Io {
            action: "write secret key".into(),
            path: path.to_path_buf(),
            source,
        };
        let mut file = options.open(path).map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)
    }
}

fn public_bytes(pair: &Ed25519KeyPair) -> [u8; 32] {
    let mut bytes = [0; 32];
    // An ed25519 public key is always 32 bytes.
    bytes.copy_from_slice(pair.public_key().as_ref());
    bytes
}

/// A public key: verifies signatures made by its secret key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    bytes: [u8; 32],
    id: KeyId,
}

impl PublicKey {
    /// Reads a public key file (see the [module docs](self) for the format).
    pub fn from_file(path: &Path) -> Result<Self, SigningError> {
        let text = read_text(path, "read public key")?;
        if text.starts_with(SECRET_HEADER) {
            return Err(malformed(
                path,
                "public key",
                "this is a secret key; give the .pub file beside it",
            ));
        }
        let (id, bytes) = parse::<32>(&text, PUBLIC_HEADER, path, "public key")?;
        let key = Self {
            bytes,
            id: KeyId::of(&bytes),
        };
        check_id(path, "public key", &id, key.id)?;
        Ok(key)
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The key file's text.
    pub fn to_text(&self) -> String {
        render(PUBLIC_HEADER, self.id, &self.bytes)
    }

    fn verifies(&self, module: &[u8], signature: &Signature) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.bytes)
            .verify(module, &signature.bytes)
            .is_ok()
    }
}

/// A detached signature of one module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    bytes: [u8; 64],
    key: KeyId,
}

impl Signature {
    /// Reads a signature file (see the [module docs](self) for the format).
    pub fn from_file(path: &Path) -> Result<Self, SigningError> {
        let text = read_text(path, "read signature")?;
        Self::parse(&text, path)
    }

    fn parse(text: &str, path: &Path) -> Result<Self, SigningError> {
        let (id, bytes) = parse::<64>(text, SIGNATURE_HEADER, path, "signature")?;
        let key = parse_id(&id).ok_or_else(|| {
            malformed(
                path,
                "signature",
                format!("key id {id:?} is not 16 hex digits"),
            )
        })?;
        Ok(Self { bytes, key })
    }

    /// The id of the key that made it (as the file says; not trusted).
    pub fn key(&self) -> KeyId {
        self.key
    }

    /// The signature file's text.
    pub fn to_text(&self) -> String {
        render(SIGNATURE_HEADER, self.key, &self.bytes)
    }
}

/// Where a module's signature lives: `<module>.sig` beside it (`pii.wasm` → `pii.wasm.sig`).
pub fn signature_path(module: &Path) -> PathBuf {
    let mut name = module.as_os_str().to_os_string();
    name.push(".sig");
    PathBuf::from(name)
}

/// What a successful check found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verified {
    /// Signed by this trusted key.
    Signed {
        /// The key's id.
        key: KeyId,
        /// The key's file.
        key_file: PathBuf,
    },
    /// No signature file, and none required.
    Unsigned,
    /// No trusted keys are configured: nothing was checked.
    NotChecked,
}

/// The trusted keys and the policy on unsigned modules: what the runtime checks every module
/// against before compiling it.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    keys: Vec<(PathBuf, PublicKey)>,
    required: bool,
}

impl Trust {
    /// Trust these keys; `required` refuses unsigned modules.
    pub fn new(keys: Vec<(PathBuf, PublicKey)>, required: bool) -> Self {
        Self { keys, required }
    }

    /// Reads every key file the `[signing]` section names.
    pub fn from_config(config: &SigningConfig) -> Result<Self, SigningError> {
        let keys = config
            .trusted_keys
            .iter()
            .map(|p| Ok((p.clone(), PublicKey::from_file(p)?)))
            .collect::<Result<_, SigningError>>()?;
        Ok(Self::new(keys, config.require_signatures))
    }

    /// Checks `module` (the file at `path`, already read) against its signature file.
    pub fn verify(&self, path: &Path, module: &[u8]) -> Result<Verified, SigningError> {
        if self.keys.is_empty() && !self.required {
            return Ok(Verified::NotChecked);
        }
        let sig_path = signature_path(path);
        let text = match std::fs::read_to_string(&sig_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if self.required {
                    return Err(SigningError::Unsigned { sig: sig_path });
                }
                tracing::debug!(module = %path.display(), "no signature; none required");
                return Ok(Verified::Unsigned);
            }
            Err(source) => {
                return Err(SigningError::Io {
                    action: "read signature".into(),
                    path: sig_path,
                    source,
                })
            }
        };
        let signature = Signature::parse(&text, &sig_path)?;
        // The id in the file is only a hint: any trusted key that verifies is accepted.
        if let Some((file, key)) = self
            .keys
            .iter()
            .find(|(_, k)| k.verifies(module, &signature))
        {
            return Ok(Verified::Signed {
                key: key.id,
                key_file: file.clone(),
            });
        }
        let named = self.keys.iter().find(|(_, k)| k.id == signature.key);
        Err(match named {
            Some((file, _)) => SigningError::Mismatch {
                sig: sig_path,
                key: signature.key.to_string(),
                key_file: file.clone(),
            },
            None => SigningError::UntrustedKey {
                sig: sig_path,
                key: signature.key.to_string(),
                trusted: self.describe_keys(),
            },
        })
    }

    fn describe_keys(&self) -> String {
        if self.keys.is_empty() {
            return "none".into();
        }
        let list: Vec<String> = self
            .keys
            .iter()
            .map(|(file, key)| format!("{} ({})", key.id, file.display()))
            .collect();
        list.join(", ")
    }
}

fn read_text(path: &Path, action: &str) -> Result<String, SigningError> {
    std::fs::read_to_string(path).map_err(|source| SigningError::Io {
        action: action.into(),
        path: path.to_path_buf(),
        source,
    })
}

fn malformed(path: &Path, what: &'static str, detail: impl Into<String>) -> SigningError {
    SigningError::Malformed {
        path: path.to_path_buf(),
        what,
        detail: detail.into(),
    }
}

fn render(header: &str, id: KeyId, bytes: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    format!("{header} {id}\n{b64}\n")
}

/// Splits a two-line file into the id its header names and exactly `N` decoded bytes.
fn parse<const N: usize>(
    text: &str,
    header: &str,
    path: &Path,
    what: &'static str,
) -> Result<(String, [u8; N]), SigningError> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("");
    let Some(id) = first.strip_prefix(header).and_then(|rest| {
        let id = rest.trim();
        (rest.starts_with(' ') && !id.is_empty()).then_some(id)
    }) else {
        let shown: String = first.chars().take(60).collect();
        return Err(malformed(
            path,
            what,
            format!("the first line must be \"{header} <key-id>\", found {shown:?}"),
        ));
    };
    let Some(b64) = lines.next() else {
        return Err(malformed(path, what, "the base64 line is missing"));
    };
    if lines.next().is_some() {
        return Err(malformed(path, what, "more than two lines"));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| malformed(path, what, format!("bad base64: {e}")))?;
    let bytes: [u8; N] = decoded.as_slice().try_into().map_err(|_| {
        malformed(
            path,
            what,
            format!("{} bytes where {N} were expected", decoded.len()),
        )
    })?;
    Ok((id.to_string(), bytes))
}

fn parse_id(text: &str) -> Option<KeyId> {
    let bytes = hex::decode(text).ok()?;
    Some(KeyId(bytes.try_into().ok()?))
}

fn check_id(
    path: &Path,
    what: &'static str,
    named: &str,
    actual: KeyId,
) -> Result<(), SigningError> {
    if named == actual.to_string() {
        return Ok(());
    }
    Err(malformed(
        path,
        what,
        format!("the header names key {named} but the key is {actual} (edited or damaged)"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trust(keys: &[&SecretKey], required: bool) -> Trust {
        let keys = keys
            .iter()
            .map(|k| (PathBuf::from(format!("{}.pub", k.id())), k.public_key()))
            .collect();
        Trust::new(keys, required)
    }

    #[test]
    fn sign_and_verify_round_trip_through_files() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::generate().unwrap();
        let key_path = dir.path().join("ops.key");
        key.write_new(&key_path).unwrap();
        let pub_path = dir.path().join("ops.pub");
        std::fs::write(&pub_path, key.public_key().to_text()).unwrap();

        let again = SecretKey::from_file(&key_path).unwrap();
        assert_eq!(again.id(), key.id());
        assert_eq!(PublicKey::from_file(&pub_path).unwrap(), key.public_key());

        let module = dir.path().join("m.wasm");
        std::fs::write(&module, b"\0asm module bytes").unwrap();
        let sig = again.sign(b"\0asm module bytes");
        std::fs::write(signature_path(&module), sig.to_text()).unwrap();
        assert_eq!(Signature::from_file(&signature_path(&module)).unwrap(), sig);

        let t = Trust::new(vec![(pub_path.clone(), key.public_key())], true);
        let found = t.verify(&module, b"\0asm module bytes").unwrap();
        assert_eq!(
            found,
            Verified::Signed {
                key: key.id(),
                key_file: pub_path
            }
        );
        // Refuses to overwrite a secret key.
        assert!(matches!(
            key.write_new(&key_path),
            Err(SigningError::Io { .. })
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn tampered_wrong_key_and_unsigned_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("m.wasm");
        let (ops, other) = (
            SecretKey::generate().unwrap(),
            SecretKey::generate().unwrap(),
        );
        let t = trust(&[&ops], true);

        let err = t.verify(&module, b"abc").unwrap_err();
        assert!(matches!(err, SigningError::Unsigned { .. }), "{err}");
        assert!(err.to_string().contains("m.wasm.sig"), "{err}");
        // Not required: an unsigned module passes, a present bad signature does not.
        let lax = trust(&[&ops], false);
        assert_eq!(lax.verify(&module, b"abc").unwrap(), Verified::Unsigned);

        std::fs::write(signature_path(&module), ops.sign(b"abc").to_text()).unwrap();
        assert!(matches!(
            t.verify(&module, b"abc"),
            Ok(Verified::Signed { .. })
        ));
        let err = t.verify(&module, b"abd").unwrap_err();
        assert!(matches!(err, SigningError::Mismatch { .. }), "{err}");
        assert!(lax.verify(&module, b"abd").is_err());

        std::fs::write(signature_path(&module), other.sign(b"abc").to_text()).unwrap();
        let err = t.verify(&module, b"abc").unwrap_err();
        assert!(matches!(err, SigningError::UntrustedKey { .. }), "{err}");
        assert!(err.to_string().contains(&other.id().to_string()), "{err}");
        // Trusting both keys accepts it.
        assert!(trust(&[&ops, &other], true).verify(&module, b"abc").is_ok());
        // No keys and not required: nothing is checked, not even a bad signature.
        assert_eq!(
            Trust::default().verify(&module, b"zzz").unwrap(),
            Verified::NotChecked
        );
    }

    #[test]
    fn malformed_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::generate().unwrap();
        let path = dir.path().join("k.pub");
        let good = key.public_key().to_text();
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "first line"),
            ("hello\n".into(), "first line"),
            (format!("{PUBLIC_HEADER}\nAAAA\n"), "first line"),
            (format!("{PUBLIC_HEADER} {}\n", key.id()), "missing"),
            (format!("{PUBLIC_HEADER} {}\n!!!\n", key.id()), "base64"),
            (format!("{PUBLIC_HEADER} {}\nAAAA\n", key.id()), "3 bytes"),
            (
                good.replace(&key.id().to_string(), "0011223344556677"),
                "header names key",
            ),
            (format!("{good}extra\n"), "more than two"),
            (render(SECRET_HEADER, key.id(), &key.seed), "secret key"),
        ];
        for (text, expect) in cases {
            std::fs::write(&path, &text).unwrap();
            let err = PublicKey::from_file(&path).unwrap_err();
            assert!(
                matches!(err, SigningError::Malformed { .. }),
                "{text:?}: {err}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains("k.pub") && msg.contains(expect),
                "{text:?}: {msg}"
            );
        }
        std::fs::write(&path, &good).unwrap();
        assert!(PublicKey::from_file(&path).is_ok());

        let sig = dir.path().join("m.wasm.sig");
        std::fs::write(
            &sig,
            format!("{SIGNATURE_HEADER} xyz\n{}==\n", "A".repeat(86)),
        )
        .unwrap();
        let err = Signature::from_file(&sig).unwrap_err();
        assert!(err.to_string().contains("16 hex digits"), "{err}");
        let missing = SecretKey::from_file(&dir.path().join("none.key")).unwrap_err();
        assert!(matches!(missing, SigningError::Io { .. }), "{missing}");
    }

    #[test]
    fn config_requiring_signatures_needs_a_key() {
        let config = SigningConfig {
            trusted_keys: Vec::new(),
            require_signatures: true,
        };
        assert!(config.validate().unwrap_err().contains("trusted-keys"));
        assert!(SigningConfig::default().validate().is_ok());
    }
}
