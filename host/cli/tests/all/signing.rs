//! Signed modules: the runtime refuses unsigned, wrongly signed and tampered modules (on
//! `Runtime::new` and on `reload`, before compiling them), and `twinguard policy
//! keygen|sign|verify` make and check the files it reads.

use std::path::Path;
use std::process::{Command, Output};

use twinguard::signing::{signature_path, SecretKey, SigningError};
use twinguard::{Error, LoadError, Runtime};

use twinguard_fixtures::policy_files::{assert_redacts, Folder};

const REQUIRED: &str = "[signing]\ntrusted-keys = [\"keys/ops.pub\"]\nrequire-signatures = true\n";
const OPTIONAL: &str = "[signing]\ntrusted-keys = [\"keys/ops.pub\"]\n";

/// A folder with the `ops` key pair in `keys/`.
fn folder() -> (Folder, SecretKey) {
    let folder = Folder::new();
    std::fs::create_dir(folder.path("keys")).unwrap();
    let key = SecretKey::generate().unwrap();
    key.write_new(&folder.path("keys/ops.key")).unwrap();
    std::fs::write(folder.path("keys/ops.pub"), key.public_key().to_text()).unwrap();
    (folder, key)
}

fn sign(key: &SecretKey, module: &Path) {
    let bytes = std::fs::read(module).unwrap();
    std::fs::write(signature_path(module), key.sign(&bytes).to_text()).unwrap();
}

/// Loads `module` (in `folder`) with `signing` in the config; it must be refused for its
/// signature, by an error naming the policy, the module and its signature file.
fn refused(folder: &Folder, module: &str, signing: &str) -> SigningError {
    let config = folder.config(module, signing);
    let Err(err) = Runtime::from_config_file(config) else {
        panic!("{module} was loaded");
    };
    let text = err.to_string();
    let sig = format!("{module}.sig");
    assert!(
        text.contains("policy \"pii\"") && text.contains(module) && text.contains(&sig),
        "the error does not name the policy, {module} and {sig}: {text}"
    );
    match err {
        Error::Load {
            cause: LoadError::Signature(e),
            ..
        } => *e,
        other => panic!("refused for another reason: {other}"),
    }
}

#[test]
fn a_signed_module_loads() {
    let (folder, key) = folder();
    sign(&key, &folder.module());
    let runtime = Runtime::from_config_file(folder.config("pii.wasm", REQUIRED)).unwrap();
    assert_redacts(&runtime);
}

#[test]
fn a_tampered_module_is_refused() {
    let (folder, key) = folder();
    sign(&key, &folder.module());
    // The signature of the original, beside a copy with one byte changed.
    let copy = folder.tampered_copy("copy.wasm");
    std::fs::copy(signature_path(&folder.module()), signature_path(&copy)).unwrap();
    let e = refused(&folder, "copy.wasm", REQUIRED);
    assert!(matches!(e, SigningError::Mismatch { .. }), "{e}");
    assert!(e.to_string().contains("changed after signing"), "{e}");
    // Verified even when signatures are not required: a present signature must hold.
    let e = refused(&folder, "copy.wasm", OPTIONAL);
    assert!(matches!(e, SigningError::Mismatch { .. }), "{e}");
}

#[test]
fn a_module_signed_by_an_untrusted_key_is_refused() {
    let (folder, _) = folder();
    let stranger = SecretKey::generate().unwrap();
    sign(&stranger, &folder.module());
    let e = refused(&folder, "pii.wasm", REQUIRED);
    assert!(matches!(e, SigningError::UntrustedKey { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains(&stranger.id().to_string()), "{text}");
    assert!(
        text.contains("ops.pub"),
        "the trusted keys are listed: {text}"
    );
}

#[test]
fn an_unsigned_module_is_refused_only_when_signatures_are_required() {
    let (folder, _) = folder();
    let e = refused(&folder, "pii.wasm", REQUIRED);
    assert!(matches!(e, SigningError::Unsigned { .. }), "{e}");
    assert!(e.to_string().contains("require-signatures"), "{e}");

    let runtime = Runtime::from_config_file(folder.config("pii.wasm", OPTIONAL)).unwrap();
    assert_redacts(&runtime);
}

#[test]
fn a_malformed_signature_file_is_refused() {
    let (folder, _) = folder();
    let sig = signature_path(&folder.module());
    for text in [
        "",
        "not a signature\n",
        "twinguard-ed25519-signature 0011223344556677\nAAAA\n",
    ] {
        std::fs::write(&sig, text).unwrap();
        let e = refused(&folder, "pii.wasm", OPTIONAL);
        assert!(matches!(e, SigningError::Malformed { .. }), "{text:?}: {e}");
    }
}

#[test]
fn a_malformed_or_missing_key_file_is_refused_naming_it() {
    let (folder, key) = folder();
    sign(&key, &folder.module());
    let pubkey = folder.path("keys/ops.pub");
    let good = std::fs::read_to_string(&pubkey).unwrap();
    let bad_cases = [
        good.replace("public-key", "publik-key"),
        good.lines().next().unwrap().to_string(),
        format!("{}\nAAAA\n", good.lines().next().unwrap()),
    ];
    for text in bad_cases {
        std::fs::write(&pubkey, &text).unwrap();
        let config = folder.config("pii.wasm", REQUIRED);
        match Runtime::from_config_file(&config) {
            Err(Error::Signing(e @ SigningError::Malformed { .. })) => {
                assert!(e.to_string().contains("ops.pub"), "{e}");
            }
            Err(other) => panic!("{text:?}: refused for another reason: {other}"),
            Ok(_) => panic!("{text:?}: loaded with a malformed key file"),
        }
    }
    std::fs::remove_file(&pubkey).unwrap();
    match Runtime::from_config_file(folder.config("pii.wasm", REQUIRED)) {
        Err(Error::Signing(e @ SigningError::Io { .. })) => {
            assert!(e.to_string().contains("ops.pub"), "{e}");
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("loaded without its trusted key file"),
    }
}

#[test]
fn requiring_signatures_without_keys_is_a_config_error() {
    let folder = Folder::new();
    let config = folder.config("pii.wasm", "[signing]\nrequire-signatures = true\n");
    let e = Runtime::from_config_file(config).err().expect("refused");
    assert!(matches!(e, Error::Config { .. }), "{e}");
    assert!(e.to_string().contains("trusted-keys"), "{e}");
}

#[test]
fn reload_refuses_a_bad_signature_and_keeps_the_old_generation() {
    let (folder, key) = folder();
    sign(&key, &folder.module());
    let good = twinguard::Config::from_file(folder.config("pii.wasm", REQUIRED)).unwrap();
    let runtime = Runtime::new(good.clone()).unwrap();
    assert_eq!(runtime.policy_set().generation(), 1);

    let copy = folder.tampered_copy("copy.wasm");
    std::fs::copy(signature_path(&folder.module()), signature_path(&copy)).unwrap();
    let tampered = twinguard::Config::from_file(folder.config("copy.wasm", REQUIRED)).unwrap();
    let e = runtime.reload(&tampered).unwrap_err();
    assert!(
        matches!(&e, Error::Load { cause: LoadError::Signature(s), .. }
            if matches!(**s, SigningError::Mismatch { .. })),
        "{e}"
    );
    assert_eq!(runtime.policy_set().generation(), 1);
    assert_redacts(&runtime);

    // Unsigned after all: refused the same way.
    std::fs::remove_file(signature_path(&copy)).unwrap();
    assert!(runtime.reload(&tampered).is_err());
    assert_eq!(runtime.policy_set().generation(), 1);

    assert_eq!(runtime.reload(&good).unwrap(), 2);
    assert_redacts(&runtime);
}

#[test]
fn a_refused_module_is_never_compiled() {
    let (folder, key) = folder();
    sign(&key, &folder.module());
    let extra = format!("[engine]\ncache-dir = \"cache\"\n{REQUIRED}");
    let good = twinguard::Config::from_file(folder.config("pii.wasm", &extra)).unwrap();
    let runtime = Runtime::new(good).unwrap();
    let compiled = runtime.cache_stats().unwrap().compiled;
    assert_eq!(compiled, 1);

    let stranger = SecretKey::generate().unwrap();
    let copy = folder.path("copy.wasm");
    std::fs::copy(folder.module(), &copy).unwrap();
    // A valid module (it would compile), signed by the wrong key.
    sign(&stranger, &copy);
    let bad = twinguard::Config::from_file(folder.config("copy.wasm", &extra)).unwrap();
    assert!(runtime.reload(&bad).is_err());
    let stats = runtime.cache_stats().unwrap();
    assert_eq!((stats.compiled, stats.hits), (1, 0), "{stats:?}");
}

// The command line.

fn twinguard(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_twinguard"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn cli_keygen_sign_verify() {
    let folder = Folder::new();
    let dir = folder.dir.path();
    let out = twinguard(dir, &["policy", "keygen", "--out", "keys/ops"]);
    assert!(out.status.success(), "{}", text(&out));
    let secret = SecretKey::from_file(&folder.path("keys/ops.key")).unwrap();
    assert!(
        text(&out).contains(&secret.id().to_string()),
        "{}",
        text(&out)
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(folder.path("keys/ops.key")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    // Never replaces a key.
    let out = twinguard(dir, &["policy", "keygen", "--out", "keys/ops"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("exists"), "{}", text(&out));

    let out = twinguard(
        dir,
        &["policy", "sign", "--key", "keys/ops.key", "pii.wasm"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(folder.path("pii.wasm.sig").exists());

    let out = twinguard(
        dir,
        &["policy", "verify", "--key", "keys/ops.pub", "pii.wasm"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).starts_with("ok: pii.wasm is signed by key"),
        "{}",
        text(&out)
    );

    // What the CLI signed, the runtime accepts.
    let runtime = Runtime::from_config_file(folder.config("pii.wasm", REQUIRED)).unwrap();
    assert_redacts(&runtime);

    // Tampered.
    let copy = folder.tampered_copy("copy.wasm");
    std::fs::copy(folder.path("pii.wasm.sig"), signature_path(&copy)).unwrap();
    let out = twinguard(
        dir,
        &["policy", "verify", "--key", "keys/ops.pub", "copy.wasm"],
    );
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("copy.wasm.sig") && said.contains("changed after signing"),
        "{said}"
    );

    // Another key.
    let out = twinguard(dir, &["policy", "keygen", "--out", "other"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = twinguard(dir, &["policy", "verify", "--key", "other.pub", "pii.wasm"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("not a trusted key"), "{}", text(&out));
    // Either of two keys will do.
    let args = [
        "policy",
        "verify",
        "--key",
        "other.pub",
        "--key",
        "keys/ops.pub",
        "pii.wasm",
    ];
    assert!(twinguard(dir, &args).status.success());

    // Unsigned.
    std::fs::remove_file(folder.path("pii.wasm.sig")).unwrap();
    let out = twinguard(
        dir,
        &["policy", "verify", "--key", "keys/ops.pub", "pii.wasm"],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("unsigned"), "{}", text(&out));

    // A secret key where a public one belongs.
    let out = twinguard(
        dir,
        &["policy", "verify", "--key", "keys/ops.key", "pii.wasm"],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("ops.key: not a valid public key"),
        "{}",
        text(&out)
    );
}

/// Every file under `dir`, with its bytes.
fn snapshot(dir: &Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

#[test]
fn a_refused_push_changes_no_file() {
    use twinguard::lifecycle::Lifecycle;
    let (folder, key) = folder();
    sign(&key, &folder.module());
    let config = folder.config("pii.wasm", REQUIRED);
    let runtime = Runtime::from_config_file(&config).unwrap();
    let lifecycle = Lifecycle::new(runtime.clone(), &config, folder.path("state"), 3).unwrap();
    let bytes = std::fs::read(folder.module()).unwrap();
    let signature = key.sign(&bytes).to_text().into_bytes();
    // A signed push: the active module now lives in the state folder, with its signature.
    lifecycle.push("pii", &bytes, Some(&signature)).unwrap();
    let before = snapshot(folder.dir.path());

    // The same bytes again without a signature, then with another module's signature, then
    // other bytes unsigned: each refused, and every file as it was.
    let other = key.sign(b"other bytes").to_text().into_bytes();
    let mut tampered = bytes.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 1;
    for (module, sig) in [
        (&bytes, None),
        (&bytes, Some(&other[..])),
        (&tampered, None),
    ] {
        let err = lifecycle.push("pii", module, sig).unwrap_err();
        assert!(
            twinguard::error_chain(&err).contains("signature"),
            "{}",
            twinguard::error_chain(&err)
        );
        assert_eq!(
            snapshot(folder.dir.path()),
            before,
            "a refused push left a trace"
        );
    }
    // Enforcement still works as before: a restart loads, a signed push goes through.
    assert_redacts(&Runtime::from_config_file(&config).unwrap());
    lifecycle.push("pii", &bytes, Some(&signature)).unwrap();
    assert_redacts(&runtime);
}
