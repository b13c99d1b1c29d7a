//! Bad components and bad configs are refused with errors that name the file and the cause.

use twinguard::{Config, Error, LoadError, Runtime};
use twinguard_tests::{config, substitute, wasm};

fn load_error(path: &std::path::Path) -> Error {
    let toml = format!(
        "[[policy]]\nname = \"x\"\npath = \"{}\"\n[[route]]\nfilter = \"#\"\nchain = [\"x\"]\n",
        path.display()
    );
    match Runtime::new(Config::from_toml(&toml, ".").unwrap()) {
        Ok(_) => panic!("{} was accepted", path.display()),
        Err(e) => e,
    }
}

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn garbage_is_not_webassembly() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "garbage.wasm", b"definitely not wasm");
    let e = load_error(&path);
    assert!(
        matches!(
            e,
            Error::Load {
                cause: LoadError::NotWasm,
                ..
            }
        ),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains("\"x\"") && text.contains("garbage.wasm") && text.contains("not WebAssembly"),
        "{text}"
    );
}

#[test]
fn core_module_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "core.wasm", b"\0asm\x01\0\0\0");
    let e = load_error(&path);
    assert!(
        matches!(
            e,
            Error::Load {
                cause: LoadError::CoreModule,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn truncated_component_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(wasm("allow-all")).unwrap();
    let path = write(&dir, "cut.wasm", &bytes[..bytes.len() / 2]);
    let e = load_error(&path);
    assert!(
        matches!(
            e,
            Error::Load {
                cause: LoadError::Compile(_),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(format!("{:#}", anyhow::Error::from(e)).contains("cut.wasm"));
}

#[test]
fn a_component_built_for_contract_0_1_is_refused_naming_both_versions_and_the_fix() {
    let e = load_error(&wasm("wrong-version"));
    let text = e.to_string();
    assert!(
        matches!(
            e,
            Error::Load {
                cause: LoadError::WrongVersion { .. },
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        text.contains("built for twinguard:policy@0.1.0")
            && text.contains("speaks twinguard:policy@0.2.0")
            && text.contains("rebuild the policy with twinguard-guest 0.2"),
        "{text}"
    );
}

#[test]
fn component_of_another_world_is_refused() {
    let e = load_error(&wasm("wrong-world"));
    assert!(
        matches!(
            e,
            Error::Load {
                cause: LoadError::WrongWorld { .. },
                ..
            }
        ),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains("exports no twinguard:policy/handler") && text.contains("next"),
        "{text}"
    );
}

#[test]
fn missing_file_names_the_policy_and_path() {
    let e = load_error(std::path::Path::new("/nonexistent/p.wasm"));
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("/nonexistent/p.wasm"));
}

#[test]
fn init_refusal_fails_the_load_with_the_policys_message() {
    let toml = substitute(&twinguard_tests::hostile("fail-init", ""));
    let e = Runtime::new(Config::from_toml(&toml, ".").unwrap())
        .err()
        .expect("refused");
    assert!(
        matches!(e, Error::Load { cause: LoadError::Init(ref m), .. } if m.contains("hostile init refused")),
        "{e:?}"
    );
    let toml = substitute(&twinguard_tests::hostile("no-such-mode", ""));
    let e = Runtime::new(Config::from_toml(&toml, ".").unwrap())
        .err()
        .expect("refused");
    assert!(e.to_string().contains("no-such-mode"), "{e}");
}

#[test]
fn pii_redact_refuses_bad_config_at_load() {
    for (cfg, needle) in [
        ("remove = \"owner\"", "owner"),
        ("remove = \"\"\nmask = \"\"", "remove"),
        ("remove = \"/a\"\ncolour = \"red\"", "colour"),
    ] {
        let toml = substitute(&format!(
            "[[policy]]\nname = \"pii\"\npath = \"@pii-redact\"\n[policy.config]\n{cfg}\n"
        ));
        let e = Runtime::new(Config::from_toml(&toml, ".").unwrap())
            .err()
            .expect("refused");
        assert!(
            matches!(
                e,
                Error::Load {
                    cause: LoadError::Init(_),
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains(needle), "{e}");
    }
}

#[test]
fn initial_memory_above_the_cap_is_refused_at_load() {
    let toml = twinguard_tests::hostile("allow", "[policy.limits]\nmemory-bytes = 65536");
    let e = Runtime::new(config(&toml)).err().expect("refused");
    assert!(e.to_string().contains("memory"), "{e}");
}

#[test]
fn check_reports_the_contract_and_digest() {
    let rt = Runtime::new(Config::default()).unwrap();
    let info = rt.check_component(wasm("pii-redact")).unwrap();
    assert_eq!(info.wit_version, "0.2.0");
    assert!(
        info.exports
            .iter()
            .any(|e| e == "twinguard:policy/handler@0.2.0"),
        "{:?}",
        info.exports
    );
    assert!(
        info.imports
            .iter()
            .any(|e| e == "twinguard:policy/host@0.2.0"),
        "{:?}",
        info.imports
    );
    assert_eq!(info.digest.len(), 64);
    assert!(rt.check_component(wasm("wrong-version")).is_err());
}

/// A crafted function that would make Cranelift allocate gigabytes is refused by structure
/// before anything compiles it, by `check` and by load alike, naming the limit.
#[test]
fn a_compile_bomb_is_refused_before_compiling() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.wasm");
    std::fs::write(&bomb, twinguard_tests::compile_bomb(50_000, 10_000)).unwrap();
    let rt = Runtime::new(Config::default()).unwrap();
    let e = rt.check_component(&bomb).unwrap_err().to_string();
    assert!(
        e.contains("refused before compiling") && e.contains("max-function-weight"),
        "{e}"
    );
    assert!(e.contains("50000 locals × 10000 branch targets"), "{e}");
    assert_eq!(rt.compilations(), 0, "nothing was compiled");

    let toml = format!(
        "[[policy]]\nname = \"bomb\"\npath = {:?}\n[[route]]\nfilter = \"#\"\nchain = [\"bomb\"]\n",
        bomb.display().to_string()
    );
    let e = Runtime::new(Config::from_toml(&toml, ".").unwrap())
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("policy \"bomb\"") && e.contains("max-function-weight"),
        "{e}"
    );

    // Each limit is a setting; a tighter one names itself.
    let tight = Config::from_toml("[engine]\nmax-function-locals = 100\n", ".").unwrap();
    let e = Runtime::new(tight)
        .unwrap()
        .check_component(&bomb)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("max-function-locals") && e.contains("declares 50000 locals"),
        "{e}"
    );
    // A small function of the same shape compiles (and then fails the world check).
    let small = dir.path().join("small.wasm");
    std::fs::write(&small, twinguard_tests::compile_bomb(10, 10)).unwrap();
    let e = rt.check_component(&small).unwrap_err().to_string();
    assert!(!e.contains("refused before compiling"), "{e}");
}

/// `check` runs the validation a load runs before `init`: a component of the right contract
/// version whose `evaluate` has another signature is refused by both.
#[test]
fn check_refuses_what_load_refuses_a_wrong_evaluate_signature() {
    let module = wasm("wrong-signature");
    let rt = Runtime::new(Config::default()).unwrap();
    let checked = rt.check_component(&module).unwrap_err().to_string();
    assert!(
        checked.contains("type mismatch with parameters"),
        "{checked}"
    );
    let loaded = load_error(&module).to_string();
    assert!(loaded.contains("type mismatch with parameters"), "{loaded}");
}

/// `[engine] profiler = "perf-map"` tells Linux `perf` where each policy's compiled functions
/// lie (the process's `/tmp/perf-<pid>.map`); an unknown profiler is refused, naming the
/// choices.
#[test]
fn the_perf_map_profiler_names_the_policies_compiled_functions() {
    let e = Config::from_toml("[engine]\nprofiler = \"vtune\"\n", ".")
        .unwrap_err()
        .to_string();
    assert!(e.contains("vtune") && e.contains("perf-map"), "{e}");
    let map = std::path::PathBuf::from(format!("/tmp/perf-{}.map", std::process::id()));
    // A map left by an earlier process with this pid would pass for this one's.
    let _ = std::fs::remove_file(&map);
    let toml = format!(
        "[engine]\nprofiler = \"perf-map\"\n[[policy]]\nname = \"a\"\npath = {:?}\n\
         [[route]]\nfilter = \"#\"\nchain = [\"a\"]\n",
        wasm("allow-all").display().to_string()
    );
    let rt = Runtime::new(Config::from_toml(&toml, ".").unwrap()).unwrap();
    let text = std::fs::read_to_string(&map).unwrap_or_default();
    let _ = std::fs::remove_file(&map);
    drop(rt);
    // Each line is `<start> <size> <name>`; the guest's code is named after its module.
    let named = text
        .lines()
        .filter(|line| {
            line.split(' ')
                .nth(2)
                .is_some_and(|n| n.starts_with("wasm["))
        })
        .count();
    assert!(
        named > 10,
        "{} lines in {}:\n{text:.2000}",
        text.lines().count(),
        map.display()
    );
}
