//! Activating a policy from the precompiled cache versus compiling it from source.
//!
//! "Activation" is a whole `Runtime::reload` of a one-policy config: read the module, hash it,
//! (signature check,) get the compiled component — from source with Cranelift, or from the
//! cache after checking the entry's header and SHA-256 — link it, instantiate it, run `init`,
//! and swap the generation in. Three guests of different sizes; the cache and the policy
//! folder live under the target directory (the real disk).
//!
//! Run: `cargo bench -p twinguard --bench cache`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use twinguard::signing::{signature_path, SecretKey};
use twinguard::{Config, Runtime};

use twinguard_fixtures as fixtures;

/// Reloads timed per case (compiling is slow: fewer of those).
const FROM_CACHE: usize = 200;
const FROM_SOURCE: usize = 8;

/// guest crate, its `[policy.config]` lines.
const GUESTS: &[(&str, &str)] = &[
    ("allow-all", ""),
    ("pii-redact", "remove = \"/owner/email\""),
    ("anomaly-guard", "\"/metrics/temperature_c\" = \"\""),
];

fn config(dir: &Path, module: &str, lines: &str, extra: &str) -> Config {
    let text = format!(
        "{extra}\n[[policy]]\nname = \"p\"\npath = \"{module}\"\n[policy.config]\n{lines}\n\
         [[route]]\nfilter = \"#\"\nchain = [\"p\"]\n"
    );
    let path = dir.join("twinguard.toml");
    std::fs::write(&path, text).expect("write config");
    Config::from_file(&path).expect("config")
}

/// Minimum and median of `n` timed runs of `f`.
fn min_median(n: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    let mut samples: Vec<Duration> = (0..n)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    samples.sort();
    (samples[0], samples[n / 2])
}

/// Minimum and median of `n` timed reloads.
fn time_reloads(runtime: &Runtime, config: &Config, n: usize) -> (Duration, Duration) {
    min_median(n, || {
        runtime.reload(config).expect("reload");
    })
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-cache");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("bench folder");
    let key = SecretKey::generate().expect("key");
    std::fs::write(root.join("ops.pub"), key.public_key().to_text()).expect("public key");
    let signed = "[signing]\ntrusted-keys = [\"ops.pub\"]\nrequire-signatures = true\n";

    println!(
        "| guest | wasm | cache entry | from source (min / median) | from cache (min / median) | \
         from cache, signed (min / median) | of which entry read + SHA-256 (min / median) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (guest, lines) in GUESTS {
        let module = format!("{guest}.wasm");
        let src = fixtures::wasm(guest);
        std::fs::copy(&src, root.join(&module)).expect("copy guest");
        let bytes = std::fs::read(&src).expect("read guest");
        std::fs::write(
            signature_path(&root.join(&module)),
            key.sign(&bytes).to_text(),
        )
        .expect("signature");

        let plain = config(&root, &module, lines, "");
        let cold = Runtime::new(plain.clone()).expect("runtime");
        let source = time_reloads(&cold, &plain, FROM_SOURCE);
        drop(cold);

        let cache_dir = root.join(format!("cache-{guest}"));
        let extra = format!("[engine]\ncache-dir = \"{}\"\n", cache_dir.display());
        let cached = config(&root, &module, lines, &extra);
        let warm = Runtime::new(cached.clone()).expect("runtime");
        let hit = time_reloads(&warm, &cached, FROM_CACHE);
        let stats = warm.cache_stats().expect("cache on");
        assert_eq!(
            (stats.compiled, stats.hits),
            (1, FROM_CACHE as u64),
            "{stats:?}"
        );
        drop(warm);

        let both = config(&root, &module, lines, &format!("{extra}{signed}"));
        let warm = Runtime::new(both.clone()).expect("runtime");
        let hit_signed = time_reloads(&warm, &both, FROM_CACHE);
        drop(warm);

        let entry = std::fs::read_dir(&cache_dir)
            .expect("cache folder")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .expect("an entry");
        // The part of a hit that is the entry's check: read it whole and hash the body.
        let check = min_median(FROM_CACHE, || {
            let data = std::fs::read(&entry).expect("entry");
            std::hint::black_box(Sha256::digest(&data[84..]));
        });
        let entry_kb = std::fs::metadata(&entry).map_or(0, |m| m.len()) / 1024;
        println!(
            "| {guest} | {} KB | {entry_kb} KB | {} / {} | {} / {} | {} / {} | {} / {} |",
            bytes.len() / 1024,
            ms(source.0),
            ms(source.1),
            ms(hit.0),
            ms(hit.1),
            ms(hit_signed.0),
            ms(hit_signed.1),
            ms(check.0),
            ms(check.1),
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}
