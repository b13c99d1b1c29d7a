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
//! | 4 | format version, little endian (1) |
//! | 32 | the key (must equal the file's expected key) |
//! | 8 | body length, little endian |
//! | 32 | SHA-256 of the body |
//!
//! Entries are written to a temporary file and renamed into place, so a reader sees a whole
//! entry or none. On load every header field and the body's digest are checked before
//! wasmtime sees a byte; an entry that fails (corrupt, truncated, foreign, another key) is
//! logged, deleted and rebuilt from source, never loaded. A failure to write the cache is
//! logged and otherwise ignored: the cache only ever saves time.
//!
//! Trust: wasmtime runs a deserialized artifact's machine code as it is, so the cache
//! directory must be writable only by the operator. The digest catches damage, not an
//! attacker who can write there; a world-writable directory is refused.
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
const FORMAT: u32 = 1;
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
    /// The cache in `dir` for `engine`. Creates the directory (mode 0700) if need be; never
    /// fails: an unusable directory is logged, and loads go on without the cache.
    pub(crate) fn open(dir: &Path, engine: &Engine) -> Self {
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
        Self {
            dir: dir.to_path_buf(),
            fingerprint: fingerprint(engine),
            usable,
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
        if self.usable {
            match read_entry(&path, &key, engine) {
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
            match self.write_entry(&path, &key, &component) {
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
        component: &Component,
    ) -> Result<(), String> {
        let body = component.serialize().map_err(|e| format!("{e:#}"))?;
        let mut entry = Vec::with_capacity(HEADER_LEN + body.len());
        entry.extend_from_slice(MAGIC);
        entry.extend_from_slice(&FORMAT.to_le_bytes());
        entry.extend_from_slice(key);
        entry.extend_from_slice(&(body.len() as u64).to_le_bytes());
        entry.extend_from_slice(&Sha256::digest(&body));
        entry.extend_from_slice(&body);
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

/// Reads and checks an entry; only a sound one reaches wasmtime.
fn read_entry(path: &Path, key: &[u8; 32], engine: &Engine) -> Lookup {
    let data = match std::fs::read(path) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Miss,
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return Lookup::Miss,
        Err(e) => return Lookup::Refused(format!("cannot read it: {e}")),
    };
    let body = match check_entry(&data, key) {
        Ok(body) => body,
        Err(reason) => return Lookup::Refused(reason),
    };
    match deserialize(engine, body) {
        Ok(component) => Lookup::Hit(component),
        Err(e) => Lookup::Refused(format!("wasmtime refused it: {e:#}")),
    }
}

/// Checks the header against the expected key and the body against its digest.
fn check_entry<'a>(data: &'a [u8], key: &[u8; 32]) -> Result<&'a [u8], String> {
    let Some((header, body)) = data.split_at_checked(HEADER_LEN) else {
        return Err(format!(
            "{} bytes, shorter than the {HEADER_LEN}-byte header (truncated)",
            data.len()
        ));
    };
    let (magic, rest) = header.split_at(8);
    let (format, rest) = rest.split_at(4);
    let (entry_key, rest) = rest.split_at(32);
    let (len, digest) = rest.split_at(8);
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
    let len = u64::from_le_bytes(len.try_into().unwrap_or_default());
    if len != body.len() as u64 {
        return Err(format!(
            "the body is {} bytes but the header says {len} (truncated or appended to)",
            body.len()
        ));
    }
    if Sha256::digest(body).as_slice() != digest {
        return Err("the body's SHA-256 does not match the header (corrupted)".into());
    }
    Ok(body)
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, body: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `Component::deserialize` runs the machine code it is given, so the bytes must
    // come from wasmtime's own `Component::serialize`. These do: `check_entry` verified that
    // the entry carries this engine's and this module's key and that the body's SHA-256 is
    // the one written beside it by `write_entry`, which stores only `serialize`'s output; the
    // directory is one the operator controls (documented; world-writable ones are refused),
    // and wasmtime checks its own header (version, engine settings) on top of that.
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
        let cache = Cache::open(dir.path(), &engine);
        let d = digest(EMPTY);
        cache.component(&engine, &d, EMPTY).unwrap();
        assert_eq!((cache.stats().compiled, cache.stats().written), (1, 1));
        cache.component(&engine, &d, EMPTY).unwrap();
        assert_eq!(cache.stats().hits, 1);

        let path = cache.entry_path(&d);
        let good = std::fs::read(&path).unwrap();
        let key = cache.key(&d);
        assert!(check_entry(&good, &key).is_ok());
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(check_entry(&flipped, &key)
            .unwrap_err()
            .contains("corrupted"));
        assert!(check_entry(&good[..good.len() - 1], &key)
            .unwrap_err()
            .contains("truncated"));
        assert!(check_entry(&good[..10], &key)
            .unwrap_err()
            .contains("header"));
        assert!(check_entry(b"garbage garbage garbage garbage garbage garbage garbage garbage garbage garbage garbage", &key)
            .unwrap_err()
            .contains("magic"));
        let mut version = good.clone();
        version[8] = 9;
        assert!(check_entry(&version, &key)
            .unwrap_err()
            .contains("format version 9"));
        assert!(check_entry(&good, &cache.key(&digest(b"other")))
            .unwrap_err()
            .contains("another module"));
    }

    #[test]
    fn an_entry_of_another_engine_is_refused_by_name_and_by_wasmtime() {
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs) = (engine(true), engine(false));
        assert_ne!(fingerprint(&ours), fingerprint(&theirs));
        let cache = Cache::open(dir.path(), &ours);
        let d = digest(EMPTY);
        // Another engine's artifact under our name and with our header and a right digest:
        // only wasmtime's own check can tell, and it must.
        let body = Component::new(&theirs, EMPTY).unwrap().serialize().unwrap();
        let key = cache.key(&d);
        let mut entry = Vec::new();
        entry.extend_from_slice(MAGIC);
        entry.extend_from_slice(&FORMAT.to_le_bytes());
        entry.extend_from_slice(&key);
        entry.extend_from_slice(&(body.len() as u64).to_le_bytes());
        entry.extend_from_slice(&Sha256::digest(&body));
        entry.extend_from_slice(&body);
        std::fs::write(cache.entry_path(&d), &entry).unwrap();
        assert!(
            matches!(read_entry(&cache.entry_path(&d), &key, &ours), Lookup::Refused(r) if r.contains("wasmtime refused"))
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
        let engine = engine(true);
        let cache = Cache::open(dir.path(), &engine);
        let d = digest(EMPTY);
        cache.component(&engine, &d, EMPTY).unwrap();
        cache.component(&engine, &d, EMPTY).unwrap();
        let stats = cache.stats();
        assert_eq!((stats.compiled, stats.hits, stats.written), (2, 0, 0));
        assert!(!cache.entry_path(&d).exists());
    }
}
