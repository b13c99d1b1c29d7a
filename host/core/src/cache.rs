//! The precompiled cache: compiled components kept on disk, so a restart, a reload or a
//! rollback of a module already seen does not compile it again.
//!
//! One file per module and engine: `<cache-dir>/<key>.cwasm`, where the key is the SHA-256 of
//! an engine fingerprint and the module's SHA-256. The fingerprint covers the wasmtime version
//! and every engine setting that shapes compiled code (wasmtime's
//! `Engine::precompile_compatibility_hash`), the target CPU's features, and this format's
//! version, so an entry of another engine never even has the right name.
//!
//! An entry is a header of ours followed by `Component::serialize`'s output:
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `twgcwasm` |
//! | 4 | format version, little endian (2) |
//! | 32 | the key (must equal the file's expected key) |
//! | 8 | body length, little endian |
//! | 32 | HMAC-SHA256 of the key, the length and the body, under this host's cache key |
//!
//! Entries are written to a temporary file and renamed into place, so a reader sees a whole
//! entry or none. On load every header field and the body's digest are checked before
//! wasmtime sees a byte; an entry that fails (corrupt, truncated, foreign, another key) is
//! logged, deleted and rebuilt from source, never loaded. A failure to write the cache is
//! logged and otherwise ignored: the cache only ever saves time.
//!
//! Trust: wasmtime runs a deserialized artifact's machine code as it is. Each entry is
//! therefore authenticated with a key of this host's (`[engine] cache-key-file`, default
//! `<cache-dir>/cache.key`: 32 random bytes made on first use, mode 0600). An entry swapped
//! in from another module, another host or another cache, or edited in place, fails the check
//! and is rebuilt; a forger would need the key. Kept inside the cache directory the key stops
//! copied and swapped entries; against someone who can write that directory (and so replace
//! the key too), keep the key file elsewhere, readable by twinguard only. A world-writable
//! directory is refused either way.
//!
//! Why not wasmtime's own cache (`wasmtime-cache`, `Config::cache`): it keys entries by the
//! module and engine too, but it is a crate of its own with a config file format, compression
//! and a background cleanup worker, and it cannot tell us whether an entry was hit (which
//! [`CacheStats`] and the benchmarks report), nor refuse a world-writable folder. What we need
//! is small: one file per (engine, module), written atomically, checked by SHA-256 before
//! wasmtime sees it. The one `unsafe` of the host (`Component::deserialize`, below) is the price
//! of any precompiled cache, wasmtime's included; its safety argument is written beside it.

use std::hash::Hasher;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

const MAGIC: &[u8; 8] = b"twgcwasm";
/// 2: the body's SHA-256 became an HMAC under the host's cache key.
const FORMAT: u32 = 2;
/// The cache key's file name inside the cache directory, when no other is configured.
pub(crate) const KEY_FILE: &str = "cache.key";
const HEADER_LEN: usize = 8 + 4 + 32 + 8 + 32;

/// What the cache did since the runtime started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Components loaded from the cache.
    pub hits: u64,
    /// Components compiled from source (no entry, an entry refused, or the cache unusable).
    pub compiled: u64,
    /// Entries refused (corrupt, truncated, foreign, another key) and deleted.
    pub refused: u64,
    /// Entries written.
    pub written: u64,
    /// Entries that could not be written (the load went on without).
    pub write_failures: u64,
}

/// The on-disk cache of one engine.
pub(crate) struct Cache {
    dir: PathBuf,
    fingerprint: [u8; 32],
    /// Authenticates entries; `None` (and the cache unusable) when it could not be read.
    mac: Option<ring::hmac::Key>,
    /// False when the directory is not safe to load code from (world-writable).
    usable: bool,
    hits: AtomicU64,
    compiled: AtomicU64,
    refused: AtomicU64,
    written: AtomicU64,
    write_failures: AtomicU64,
}

/// Numbers temporary files, process-wide: two runtimes of one process may share a cache folder.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Feeds `Hash` output into SHA-256, so the fingerprint is stable (unlike `DefaultHasher`,
/// whose algorithm may change between Rust releases).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        // Only `write` is used; the digest is taken from the inner hasher.
        0
    }
}

/// What the engine's compiled code depends on.
fn fingerprint(engine: &Engine) -> [u8; 32] {
    let mut h = ShaHasher(Sha256::new());
    h.write(b"twinguard compile cache\0");
    h.write(&FORMAT.to_le_bytes());
    h.write(env!("CARGO_PKG_VERSION").as_bytes());
    // Covers the wasmtime version, compiler target and flags, tunables and wasm features.
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
    h.0.finalize().into()
}

/// Why an entry was not loaded.
enum Lookup {
    Hit(Component),
    Miss,
    Refused(String),
}

impl Cache {
    /// The cache in `dir` for `engine`, its entries authenticated with the key in `key_file`
    /// (default `dir/cache.key`, made if missing). Creates the directory (mode 0700) if need
    /// be; never fails: an unusable directory or key is logged, and loads go on without the
    /// cache.
    pub(crate) fn open(dir: &Path, key_file: Option<&Path>, engine: &Engine) -> Self {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        if let Err(e) = builder.create(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "compile cache: cannot create the directory; compiling without it");
        }
        let usable = match world_writable(dir) {
            Some(true) => {
                tracing::warn!(dir = %dir.display(), "compile cache: the directory is writable by everyone, so its entries cannot be trusted; compiling without it");
                false
            }
            _ => true,
        };
        let key_file = key_file.map_or_else(|| dir.join(KEY_FILE), Path::to_path_buf);
        let mac = match load_or_make_key(&key_file) {
            Ok(key) => Some(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key)),
            Err(e) => {
                tracing::warn!(file = %key_file.display(), error = %e, "compile cache: no usable cache key; compiling without the cache");
                None
            }
        };
        Self {
            dir: dir.to_path_buf(),
            fingerprint: fingerprint(engine),
            usable,
            mac,
            hits: AtomicU64::new(0),
            compiled: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            written: AtomicU64::new(0),
            write_failures: AtomicU64::new(0),
        }
    }

    /// The counters so far.
    pub(crate) fn stats(&self) -> CacheStats {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            hits: n(&self.hits),
            compiled: n(&self.compiled),
            refused: n(&self.refused),
            written: n(&self.written),
            write_failures: n(&self.write_failures),
        }
    }

    fn key(&self, digest: &[u8; 32]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.fingerprint);
        h.update(digest);
        h.finalize().into()
    }

    /// The entry file of a module with this SHA-256.
    pub(crate) fn entry_path(&self, digest: &[u8; 32]) -> PathBuf {
        self.dir
            .join(format!("{}.cwasm", hex::encode(self.key(digest))))
    }

    /// The component of `bytes` (whose SHA-256 is `digest`): from the cache when a sound
    /// entry is there, else compiled and stored.
    pub(crate) fn component(
        &self,
        engine: &Engine,
        digest: &[u8; 32],
        bytes: &[u8],
    ) -> wasmtime::Result<Component> {
        let key = self.key(digest);
        let path = self.entry_path(digest);
        if let (true, Some(mac)) = (self.usable, &self.mac) {
            match read_entry(&path, &key, mac, engine) {
                Lookup::Hit(component) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(file = %path.display(), "compile cache: hit");
                    return Ok(component);
                }
                Lookup::Miss => {}
                Lookup::Refused(reason) => {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(file = %path.display(), %reason, "compile cache: entry refused; deleting it and compiling from source");
                    if let Err(e) = std::fs::remove_file(&path) {
                        if e.kind() != std::io::ErrorKind::NotFound {
                            tracing::warn!(file = %path.display(), error = %e, "compile cache: cannot delete the refused entry");
                        }
                    }
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        if self.usable {
            // Without a key nothing can be written that a later load would trust.
            let written = match &self.mac {
                Some(mac) => self.write_entry(&path, &key, mac, &component),
                None => Err("no cache key".to_owned()),
            };
            match written {
                Ok(()) => {
                    self.written.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.write_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(file = %path.display(), error = %e, "compile cache: cannot write the entry; going on without it");
                }
            }
        }
        Ok(component)
    }

    fn write_entry(
        &self,
        path: &Path,
        key: &[u8; 32],
        mac: &ring::hmac::Key,
        component: &Component,
    ) -> Result<(), String> {
        let body = component.serialize().map_err(|e| format!("{e:#}"))?;
        let entry = seal(key, mac, &body);
        // A name of its own per writer, so two loads of the same module never share a file.
        let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let temp = self.dir.join(format!(
            ".{}.{}.{seq}.tmp",
            hex::encode(key),
            std::process::id()
        ));
        let written = std::fs::File::create(&temp)
            .and_then(|mut f| f.write_all(&entry))
            .and_then(|()| std::fs::rename(&temp, path));
        written.map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            e.to_string()
        })
    }
}

/// An entry: the header (its code covering key, length and body), then the body.
fn seal(key: &[u8; 32], mac: &ring::hmac::Key, body: &[u8]) -> Vec<u8> {
    let len = (body.len() as u64).to_le_bytes();
    let mut entry = Vec::with_capacity(HEADER_LEN + body.len());
    entry.extend_from_slice(MAGIC);
    entry.extend_from_slice(&FORMAT.to_le_bytes());
    entry.extend_from_slice(key);
    entry.extend_from_slice(&len);
    entry.extend_from_slice(code(mac, key, &len, body).as_ref());
    entry.extend_from_slice(body);
    entry
}

fn code(mac: &ring::hmac::Key, key: &[u8; 32], len: &[u8], body: &[u8]) -> ring::hmac::Tag {
    let mut ctx = ring::hmac::Context::with_key(mac);
    ctx.update(key);
    ctx.update(len);
    ctx.update(body);
    ctx.sign()
}

/// The host's cache key from `path`: 64 hex digits. Made (32 random bytes, mode 0600) when
/// the file does not exist; two processes making it at once agree on the first one written.
fn load_or_make_key(path: &Path) -> Result<[u8; 32], String> {
    let parse = |text: &str| -> Result<[u8; 32], String> {
        let mut key = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut key)
            .map_err(|e| format!("not 64 hex digits ({e}); delete it to have a new key made"))?;
        Ok(key)
    };
    match std::fs::read_to_string(path) {
        Ok(text) => return parse(&text),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.to_string()),
        Err(_) => {}
    }
    let mut key = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
        .map_err(|_| "the system's random source failed".to_owned())?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(format!("{}\n", hex::encode(key)).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| e.to_string())?;
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            parse(&std::fs::read_to_string(path).map_err(|e| e.to_string())?)
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Reads and checks an entry; only a sound one reaches wasmtime.
fn read_entry(path: &Path, key: &[u8; 32], mac: &ring::hmac::Key, engine: &Engine) -> Lookup {
    let data = match std::fs::read(path) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Miss,
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return Lookup::Miss,
        Err(e) => return Lookup::Refused(format!("cannot read it: {e}")),
    };
    let body = match check_entry(&data, key, mac) {
        Ok(body) => body,
        Err(reason) => return Lookup::Refused(reason),
    };
    match deserialize(engine, body) {
        Ok(component) => Lookup::Hit(component),
        Err(e) => Lookup::Refused(format!("wasmtime refused it: {e:#}")),
    }
}

/// Checks the header against the expected key and the whole against its code.
fn check_entry<'a>(
    data: &'a [u8],
    key: &[u8; 32],
    mac: &ring::hmac::Key,
) -> Result<&'a [u8], String> {
    let Some((header, body)) = data.split_at_checked(HEADER_LEN) else {
        return Err(format!(
            "{} bytes, shorter than the {HEADER_LEN}-byte header (truncated)",
            data.len()
        ));
    };
    let (magic, rest) = header.split_at(8);
    let (format, rest) = rest.split_at(4);
    let (entry_key, rest) = rest.split_at(32);
    let (len_bytes, tag) = rest.split_at(8);
    if magic != MAGIC {
        return Err("not a twinguard cache entry (bad magic)".into());
    }
    // The slices have the lengths split off above.
    let format = u32::from_le_bytes(format.try_into().unwrap_or_default());
    if format != FORMAT {
        return Err(format!("format version {format}; this host reads {FORMAT}"));
    }
    if entry_key != key {
        return Err(format!(
            "written for another module or engine (its key is {})",
            hex::encode(entry_key)
        ));
    }
    let len = u64::from_le_bytes(len_bytes.try_into().unwrap_or_default());
    if len != body.len() as u64 {
        return Err(format!(
            "the body is {} bytes but the header says {len} (truncated or appended to)",
            body.len()
        ));
    }
    let expected = code(mac, key, len_bytes, body);
    // Without an early exit, so timing does not tell how much of a forged code was right.
    let differs = expected
        .as_ref()
        .iter()
        .zip(tag)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if differs != 0 {
        return Err(
            "its authentication code does not match (corrupted, swapped in from another module \
             or cache, or written under another cache key)"
                .into(),
        );
    }
    Ok(body)
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, body: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `Component::deserialize` runs the machine code it is given, so the bytes must
    // come from wasmtime's own `Component::serialize`. These do: `check_entry` verified that
    // the entry carries this engine's and this module's key and an HMAC over key, length and
    // body under this host's secret cache key, which only `write_entry` computes, and only
    // over `serialize`'s output; world-writable directories are refused, and wasmtime checks
    // its own header (version, engine settings) on top of that.
    unsafe { Component::deserialize(engine, body) }
}

/// `Some(true)` when anyone may write to `dir` (Unix only; `None` when unknown).
fn world_writable(dir: &Path) -> Option<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir).ok()?.permissions().mode();
        Some(mode & 0o002 != 0)
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component there is: the header of an empty one.
    const EMPTY: &[u8] = b"\0asm\x0d\x00\x01\x00";

    fn engine(fuel: bool) -> Engine {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true).consume_fuel(fuel);
        Engine::new(&config).unwrap()
    }

    fn digest(bytes: &[u8]) -> [u8; 32] {
        Sha256::digest(bytes).into()
    }

    #[test]
    fn second_load_is_a_hit_and_entries_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(true);
        let cache = Cache::open(dir.path(), None, &engine);
        let d = digest(EMPTY);
        cache.component(&engine, &d, EMPTY).unwrap();
        assert_eq!((cache.stats().compiled, cache.stats().written), (1, 1));
        cache.component(&engine, &d, EMPTY).unwrap();
        assert_eq!(cache.stats().hits, 1);

        let path = cache.entry_path(&d);
        let good = std::fs::read(&path).unwrap();
        let key = cache.key(&d);
        let mac = cache.mac.as_ref().unwrap();
        assert!(check_entry(&good, &key, mac).is_ok());
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(check_entry(&flipped, &key, mac)
            .unwrap_err()
            .contains("does not match"));
        assert!(check_entry(&good[..good.len() - 1], &key, mac)
            .unwrap_err()
            .contains("truncated"));
        assert!(check_entry(&good[..10], &key, mac)
            .unwrap_err()
            .contains("header"));
        assert!(check_entry(b"garbage garbage garbage garbage garbage garbage garbage garbage garbage garbage garbage", &key, mac)
            .unwrap_err()
            .contains("magic"));
        let mut version = good.clone();
        version[8] = 9;
        assert!(check_entry(&version, &key, mac)
            .unwrap_err()
            .contains("format version 9"));
        assert!(check_entry(&good, &cache.key(&digest(b"other")), mac)
            .unwrap_err()
            .contains("another module"));
    }

    #[test]
    fn an_entry_of_another_engine_is_refused_by_name_and_by_wasmtime() {
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs) = (engine(true), engine(false));
        assert_ne!(fingerprint(&ours), fingerprint(&theirs));
        let cache = Cache::open(dir.path(), None, &ours);
        let d = digest(EMPTY);
        // Another engine's artifact under our name and with our header and a right digest:
        // only wasmtime's own check can tell, and it must.
        let body = Component::new(&theirs, EMPTY).unwrap().serialize().unwrap();
        let key = cache.key(&d);
        let mac = cache.mac.as_ref().unwrap();
        std::fs::write(cache.entry_path(&d), seal(&key, mac, &body)).unwrap();
        assert!(
            matches!(read_entry(&cache.entry_path(&d), &key, mac, &ours), Lookup::Refused(r) if r.contains("wasmtime refused"))
        );

        cache.component(&ours, &d, EMPTY).unwrap();
        let stats = cache.stats();
        assert_eq!((stats.refused, stats.compiled, stats.hits), (1, 1, 0));
        // Rebuilt: the next load is a hit.
        cache.component(&ours, &d, EMPTY).unwrap();
        assert_eq!(cache.stats().hits, 1);
    }

    #[cfg(unix)]
    #[test]
    fn a_world_writable_directory_is_not_used() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_unused(dir.path());
    }

    /// The attack the code stops: another module's compiled code put under a signed module's
    /// name, its header rewritten to match (what a plain digest would have accepted), or an
    /// entry made with another host's key.
    #[test]
    fn a_swapped_or_foreign_entry_is_refused_and_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(true);
        let cache = Cache::open(dir.path(), None, &engine);
        let key_text = std::fs::read_to_string(dir.path().join(KEY_FILE)).unwrap();
        assert_eq!(key_text.trim().len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let signed = digest(b"the signed module");
        let other = digest(EMPTY);
        cache.component(&engine, &other, EMPTY).unwrap();
        // The forger rewrites the key field and the old format's body digest.
        let mut forged = std::fs::read(cache.entry_path(&other)).unwrap();
        forged[12..44].copy_from_slice(&cache.key(&signed));
        let body_digest = Sha256::digest(&forged[HEADER_LEN..]);
        forged[52..84].copy_from_slice(&body_digest);
        std::fs::write(cache.entry_path(&signed), &forged).unwrap();
        let mac = cache.mac.as_ref().unwrap();
        assert!(matches!(
            read_entry(&cache.entry_path(&signed), &cache.key(&signed), mac, &engine),
            Lookup::Refused(r) if r.contains("does not match")
        ));

        // Another cache (another key file) with the same engine refuses our entries.
        let elsewhere = tempfile::tempdir().unwrap();
        let key_file = elsewhere.path().join("host-b.key");
        let other_cache = Cache::open(dir.path(), Some(&key_file), &engine);
        assert!(key_file.exists());
        other_cache.component(&engine, &other, EMPTY).unwrap();
        let stats = other_cache.stats();
        assert_eq!((stats.refused, stats.compiled, stats.hits), (1, 1, 0));
        // Rebuilt under its own key: the next load is a hit there, a refusal for the first.
        other_cache.component(&engine, &other, EMPTY).unwrap();
        assert_eq!(other_cache.stats().hits, 1);
        cache.component(&engine, &other, EMPTY).unwrap();
        assert_eq!(cache.stats().refused, 1);
    }

    #[test]
    fn a_damaged_key_file_turns_the_cache_off_rather_than_trusting_entries() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE), "not hex\n").unwrap();
        assert_unused(dir.path());
    }

    /// Two loads from a cache in `dir` both compile, and nothing is written there.
    fn assert_unused(dir: &Path) {
        let engine = engine(true);
        let cache = Cache::open(dir, None, &engine);
        let d = digest(EMPTY);
        cache.component(&engine, &d, EMPTY).unwrap();
        cache.component(&engine, &d, EMPTY).unwrap();
        let stats = cache.stats();
        assert_eq!((stats.compiled, stats.hits, stats.written), (2, 0, 0));
        assert!(!cache.entry_path(&d).exists());
    }
}
