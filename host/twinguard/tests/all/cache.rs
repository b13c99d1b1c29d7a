//! The precompiled cache: a second load comes from the cache; a corrupt, truncated, foreign
//! or misplaced entry is refused, deleted and rebuilt, and the policy still judges right; a
//! cache that cannot be written never fails a load.

use std::path::PathBuf;

use twinguard::{CacheStats, Config, Runtime};

use twinguard_fixtures::policy_files::{assert_redacts, entries, Folder};

const CACHED: &str = "[engine]\ncache-dir = \"cache\"\n";

fn stats(runtime: &Runtime) -> CacheStats {
    runtime.cache_stats().expect("the cache is configured")
}

/// A folder whose cache holds the sound entry of pii.wasm; returns the entry's path.
fn warmed() -> (Folder, PathBuf) {
    let folder = Folder::new();
    let runtime = Runtime::from_config_file(folder.config("pii.wasm", CACHED)).unwrap();
    assert_eq!(stats(&runtime).written, 1);
    let found = entries(&folder.path("cache"));
    assert_eq!(found.len(), 1, "{found:?}");
    (folder, found[0].clone())
}

#[test]
fn the_cache_dir_is_relative_to_the_config_and_off_by_default() {
    let folder = Folder::new();
    let config = Config::from_file(folder.config("pii.wasm", CACHED)).unwrap();
    assert_eq!(config.engine.cache_dir, Some(folder.path("cache")));
    let config = Config::from_file(folder.config("pii.wasm", "")).unwrap();
    assert_eq!(config.engine.cache_dir, None);
    assert!(Runtime::new(config).unwrap().cache_stats().is_none());
}

#[test]
fn a_second_load_comes_from_the_cache() {
    let folder = Folder::new();
    let path = folder.config("pii.wasm", CACHED);
    let runtime = Runtime::from_config_file(&path).unwrap();
    let first = stats(&runtime);
    assert_eq!((first.hits, first.compiled, first.written), (0, 1, 1));
    assert_redacts(&runtime);

    // A reload of the same module takes the active generation's compiled component: the
    // cache is not even asked, and nothing is compiled.
    runtime.reload(&Config::from_file(&path).unwrap()).unwrap();
    let second = stats(&runtime);
    assert_eq!((second.hits, second.compiled), (0, 1), "{second:?}");
    assert_eq!(runtime.compilations(), 1);
    assert_redacts(&runtime);

    // A restart: a new engine with the same settings finds it too.
    let restarted = Runtime::from_config_file(&path).unwrap();
    let third = stats(&restarted);
    assert_eq!((third.hits, third.compiled, third.refused), (1, 0, 0));
    assert_redacts(&restarted);
}

/// Loads with the entry damaged by `damage`: it must be refused (never loaded), compiled
/// again, rewritten sound, and the policy must judge right.
fn refused_and_rebuilt(what: &str, damage: impl FnOnce(&mut Vec<u8>)) {
    let (folder, entry) = warmed();
    let sound = std::fs::read(&entry).unwrap();
    let mut bytes = sound.clone();
    damage(&mut bytes);
    assert_ne!(bytes, sound, "{what}: the damage changed nothing");
    std::fs::write(&entry, &bytes).unwrap();

    let runtime = Runtime::from_config_file(folder.config("pii.wasm", CACHED)).unwrap();
    let s = stats(&runtime);
    assert_eq!(
        (s.hits, s.refused, s.compiled, s.written),
        (0, 1, 1, 1),
        "{what}: {s:?}"
    );
    assert_redacts(&runtime);
    // Rebuilt: the same name again, now loadable.
    assert_eq!(entries(&folder.path("cache")), vec![entry], "{what}");
    let again = Runtime::from_config_file(folder.config("pii.wasm", CACHED)).unwrap();
    assert_eq!(stats(&again).hits, 1, "{what}");
}

#[test]
fn a_flipped_byte_in_the_body_is_refused() {
    // In the machine code: wasmtime's own checks do not cover it (the body is an ELF file whose
    // .text starts 4 KiB in), so only the entry's SHA-256 can catch this one.
    refused_and_rebuilt("code", |b| b[84 + 0x1100] ^= 0x40);
    // In the ELF section headers at the end.
    refused_and_rebuilt("tail", |b| {
        let i = b.len() - 100;
        b[i] ^= 0x40;
    });
}

#[test]
fn a_flipped_byte_in_the_header_is_refused() {
    // Byte 60 lies in the body's SHA-256; byte 48 in its length.
    refused_and_rebuilt("digest", |b| b[60] ^= 0x01);
    refused_and_rebuilt("length", |b| b[48] ^= 0x01);
}

#[test]
fn a_truncated_entry_is_refused() {
    refused_and_rebuilt("truncated", |b| b.truncate(b.len() / 2));
    refused_and_rebuilt("empty", Vec::clear);
}

#[test]
fn garbage_is_refused() {
    refused_and_rebuilt("garbage", |b| {
        *b = (0..b.len()).map(|i| (i * 31 % 251) as u8).collect();
    });
}

#[test]
fn an_entry_of_another_module_is_refused() {
    // A sound entry, but of allow-all, put where pii.wasm's entry belongs.
    let other = Folder::new();
    std::fs::copy(
        twinguard_fixtures::wasm("allow-all"),
        other.path("allow.wasm"),
    )
    .unwrap();
    let text = format!(
        "{CACHED}[[policy]]\nname = \"pass\"\npath = \"allow.wasm\"\n\
         [[route]]\nfilter = \"#\"\nchain = [\"pass\"]\n"
    );
    let config = other.path("other.toml");
    std::fs::write(&config, text).unwrap();
    Runtime::from_config_file(&config).unwrap();
    let foreign = std::fs::read(&entries(&other.path("cache"))[0]).unwrap();
    refused_and_rebuilt("another module's entry", |b| *b = foreign);
}

#[test]
fn a_cache_that_cannot_be_written_does_not_fail_a_load() {
    let folder = Folder::new();
    // A file where the folder should be: nothing can be created in it, even by root.
    std::fs::write(folder.path("cache"), b"not a folder").unwrap();
    for _ in 0..2 {
        let runtime = Runtime::from_config_file(folder.config("pii.wasm", CACHED)).unwrap();
        let s = stats(&runtime);
        assert_eq!((s.hits, s.compiled, s.written), (0, 1, 0), "{s:?}");
        assert_eq!(s.write_failures, 1, "{s:?}");
        assert_redacts(&runtime);
    }

    // A read-only folder (for a user other than root, who may write anyway).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let dir = folder.path("readonly");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o500)).unwrap();
        let extra = "[engine]\ncache-dir = \"readonly\"\n";
        let runtime = Runtime::from_config_file(folder.config("pii.wasm", extra)).unwrap();
        let s = stats(&runtime);
        assert_eq!(s.compiled, 1, "{s:?}");
        assert_eq!(s.written + s.write_failures, 1, "{s:?}");
        assert_redacts(&runtime);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
}

#[test]
fn runtimes_sharing_a_cache_folder_leave_one_sound_entry() {
    let folder = Folder::new();
    let path = folder.config("pii.wasm", CACHED);
    std::thread::scope(|s| {
        let loads: Vec<_> = (0..4)
            .map(|_| s.spawn(|| Runtime::from_config_file(&path).map(|r| assert_redacts(&r))))
            .collect();
        for load in loads {
            load.join().expect("no panic").expect("loads");
        }
    });
    let mut names: Vec<String> = std::fs::read_dir(folder.path("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // One key, made by whichever runtime came first, and one entry (whatever their order: an
    // entry's name is a digest, which may sort before or after the key's).
    names.sort_by_key(|n| n != "cache.key");
    assert_eq!(
        (names.len(), names[0].as_str(), names[1].ends_with(".cwasm")),
        (2, "cache.key", true),
        "one entry and no temporary file left: {names:?}"
    );
    let runtime = Runtime::from_config_file(&path).unwrap();
    let s = stats(&runtime);
    assert_eq!((s.hits, s.refused, s.compiled), (1, 0, 0), "{s:?}");
}
