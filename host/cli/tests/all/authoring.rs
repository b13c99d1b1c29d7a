//! What a policy author runs: `twinguard test` on test files, case files and components;
//! `check` running the self-tests a module ships; `eval` refusing expectations it would not
//! check; `twinguard new` making a project that builds, checks and passes its tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use twinguard_fixtures as fixtures;

fn twinguard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_twinguard"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A test file for pii-redact with one passing and one wrong expectation.
fn pii_test_file(dir: &Path) -> PathBuf {
    let file = dir.join("pii.test.toml");
    std::fs::write(
        &file,
        format!(
            r#"[policy]
path = {:?}
config = {{ remove = "/owner/email", mask = "/owner/name", alert-on-redact = true }}

[[case]]
name = "right"
[[case.step]]
device = "t1"
topic = "plant/t1/status"
payload = {{ temp = 21.5, owner = {{ name = "Ada", email = "ada@example.com" }} }}
expect = {{ verdict = "redact", action = "alert", alerts = ["pii-redacted"], payload = {{ temp = 21.5, owner = {{ name = "***" }} }} }}

[[case]]
name = "wrong on purpose"
[[case.step]]
device = "t1"
topic = "plant/t1/status"
payload = {{ temp = 21.5, owner = {{ name = "Ada" }} }}
expect = {{ action = "allow", payload = {{ temp = 21.5, owner = {{ name = "Ada" }} }} }}
"#,
            fixtures::wasm("pii-redact").display().to_string()
        ),
    )
    .unwrap();
    file
}

#[test]
fn a_wrong_expectation_fails_the_run_with_a_diff_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let file = pii_test_file(dir.path());
    let out = twinguard().arg("test").arg(&file).output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("ok    right (1 step)"), "{t}");
    assert!(t.contains("FAIL  wrong on purpose"), "{t}");
    assert!(t.contains("action: expected allow, got alert"), "{t}");
    // The payload as a line diff: what the case expects and what the policy forwarded.
    assert!(t.contains("-     \"name\": \"Ada\""), "{t}");
    assert!(t.contains("+     \"name\": \"***\""), "{t}");
    assert!(t.contains("2 cases: 1 passed, 1 failed"), "{t}");

    let out = twinguard()
        .args(["test", "--format", "json"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["passed"].as_u64(), v["failed"].as_u64()),
        (Some(1), Some(1))
    );
    let wrong = &v["files"][0]["cases"][1];
    assert_eq!(wrong["passed"], false);
    let whats: Vec<_> = wrong["steps"][0]["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["what"].as_str().unwrap())
        .collect();
    assert_eq!(whats, ["action", "payload"]);

    let out = twinguard()
        .args(["test", "--format", "junit"])
        .arg(&file)
        .output()
        .unwrap();
    let xml = String::from_utf8_lossy(&out.stdout);
    assert!(
        xml.contains(r#"<testsuites name="twinguard" tests="2" failures="1">"#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<testcase classname="#) && xml.contains(r#"name="right"/>"#),
        "{xml}"
    );
    assert!(
        xml.contains("<failure message=\"step 1: action: expected allow, got alert\">"),
        "{xml}"
    );

    // Mended, the same file passes.
    let fixed = std::fs::read_to_string(&file).unwrap().replace(
        r#"action = "allow", payload = { temp = 21.5, owner = { name = "Ada" } }"#,
        r#"action = "alert", payload = { temp = 21.5, owner = { name = "***" } }"#,
    );
    std::fs::write(&file, fixed).unwrap();
    let out = twinguard().arg("test").arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

/// The door-hours example: opening hours across both daylight-saving changes of 2026 in
/// Europe/Berlin, and one badge at two doors within a minute (policy-wide state).
#[test]
fn the_door_hours_example_passes_its_tests() {
    let example = fixtures::workspace().join("examples/door-hours");
    let out = twinguard()
        .arg("test")
        .arg("--policy")
        .arg(fixtures::wasm("door-hours"))
        .arg(&example)
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("ok    opening hours follow Berlin into summer time"),
        "{t}"
    );
    assert!(
        t.contains("ok    one badge at two doors within a minute (4 steps)"),
        "{t}"
    );
    assert!(t.contains("6 cases: 6 passed, 0 failed"), "{t}");
}

/// Cases never share state: a badge at door-1 in one case and at door-2 ten seconds later in
/// the next would be a clone if state leaked, and is not. The same two steps in one case are.
#[test]
fn each_case_starts_on_fresh_state_and_its_steps_share_it() {
    let dir = tempfile::tempdir().unwrap();
    let step = |door: &str, at: &str, expect: &str| {
        format!(
            "[[case.step]]\ndevice = \"{door}\"\ntopic = \"site/{door}/badge\"\n\
             payload = {{ badge = \"B-1\" }}\nreceived_at = \"{at}\"\nexpect = {expect}\n"
        )
    };
    let file = dir.path().join("door-hours.test.toml");
    std::fs::write(
        &file,
        format!(
            "[policy]\npath = {:?}\nconfig = {{ zone = \"UTC\" }}\n\
             [[case]]\nname = \"first\"\n{}\
             [[case]]\nname = \"second\"\n{}\
             [[case]]\nname = \"both\"\n{}{}",
            fixtures::wasm("door-hours").display().to_string(),
            step("door-1", "2026-06-01T08:00:00Z", "\"allow\""),
            step("door-2", "2026-06-01T08:00:10Z", "\"allow\""),
            step("door-1", "2026-06-01T08:00:00Z", "\"allow\""),
            step(
                "door-2",
                "2026-06-01T08:00:10Z",
                "{ alerts = [\"badge-at-two-doors\"] }"
            ),
        ),
    )
    .unwrap();
    let out = twinguard().arg("test").arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

/// NDJSON case files test a whole config: a chain, with each policy's verdict checked.
#[test]
fn case_files_test_a_chain_and_need_to_know_what_they_test() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("twinguard.toml");
    std::fs::write(
        &config,
        format!(
            "[[policy]]\nname = \"pii\"\npath = {:?}\n[policy.config]\nremove = \"/email\"\n\
             [[policy]]\nname = \"schema\"\npath = {:?}\n[policy.config]\nrequired = \"/t:number\"\n\
             [[route]]\nfilter = \"plant/#\"\nchain = [\"pii\", \"schema\"]\n",
            fixtures::wasm("pii-redact").display().to_string(),
            fixtures::wasm("schema-guard").display().to_string(),
        ),
    )
    .unwrap();
    let cases = dir.path().join("chain.ndjson");
    std::fs::write(
        &cases,
        concat!(
            r#"{"device":"d","topic":"plant/d","payload":{"t":1,"email":"a@b.c"},"expect":{"action":"redact","verdicts":{"pii":"redact","schema":"allow"},"payload":{"t":1}}}"#,
            "\n",
            r#"{"device":"d","topic":"plant/d","payload":{"t":"x"},"expect":{"action":"quarantine","quarantined_by":"schema","verdicts":{"pii":"allow","schema":"quarantine"}}}"#,
            "\n",
            r#"{"device":"d","topic":"other/d","payload":{"t":1},"expect":{"action":"quarantine","verdicts":{"pii":"not run"},"quarantined_by":"the host (no route)"}}"#,
            "\n"
        ),
    )
    .unwrap();
    let out = twinguard()
        .arg("test")
        .arg("--config")
        .arg(&config)
        .arg(&cases)
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("3 cases: 3 passed, 0 failed"), "{t}");

    let out = twinguard().arg("test").arg(&cases).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("an NDJSON case file needs what it tests: --policy"),
        "{}",
        text(&out)
    );
}

/// A test file that does not say what it tests, names an unknown field or expects an unknown
/// verdict is an error naming the problem, and a failure of the run.
#[test]
fn malformed_test_files_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = fixtures::wasm("allow-all").display().to_string();
    let step = "[[case.step]]\ndevice = \"d\"\ntopic = \"t\"\npayload = {}\n";
    for (body, want) in [
        (format!("[[case]]\nname = \"c\"\n{step}expect = \"allow\"\n"), "say what it tests"),
        (
            format!("[policy]\npath = {wasm:?}\n[[case]]\nname = \"c\"\n{step}expect = \"allowed\"\n"),
            "case \"c\", step 1: expect: verdict \"allowed\" is not allow",
        ),
        (
            format!("[policy]\npath = {wasm:?}\n[[case]]\nname = \"c\"\n{step}expct = \"allow\"\n"),
            "unknown field `expct`",
        ),
        (
            format!("[policy]\npath = {wasm:?}\n[[case]]\nname = \"c\"\n{step}"),
            "no step has \"expect\"",
        ),
        (format!("[policy]\npath = {wasm:?}\n"), "no case"),
        (
            format!(
                "[policy]\npath = {wasm:?}\n[[case]]\nname = \"c\"\n[[case.step]]\ndevice = \"d\"\n\
                 topic = \"t\"\npayload = {{ t = nan }}\nexpect = \"allow\"\n"
            ),
            "case \"c\", step 1: payload holds NaN or an infinity, which JSON cannot carry",
        ),
        (
            format!("[policy]\npath = \"missing.wasm\"\n[[case]]\nname = \"c\"\n{step}expect = \"allow\"\n"),
            "missing.wasm",
        ),
    ] {
        let file = dir.path().join("bad.test.toml");
        std::fs::write(&file, body).unwrap();
        let out = twinguard().arg("test").arg(&file).output().unwrap();
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{want}: {t}");
        assert!(t.contains("ERROR") && t.contains(want), "{want}: {t}");
    }
    let empty = tempfile::tempdir().unwrap();
    let out = twinguard().arg("test").arg(empty.path()).output().unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no *.test.toml file in"),
        "{}",
        text(&out)
    );
}

/// `check` runs the self-tests a module ships and fails when one fails; `test` on the
/// component reports each of them.
#[test]
fn check_and_test_run_the_self_tests_a_module_ships() {
    let dir = tempfile::tempdir().unwrap();
    let allow = fixtures::wasm("allow-all");
    let cases = concat!(
        r#"{"device":"d","topic":"t","payload":{},"expect":"allow"}"#,
        "\n",
        r#"{"case":"held","device":"d","topic":"t","payload":{},"expect":"quarantine"}"#,
        "\n"
    );
    let bad = fixtures::with_selftest(&allow, cases, &dir.path().join("bad.wasm"));
    let out = twinguard().arg("check").arg(&bad).output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("selftest:  FAILED")
            && t.contains("case \"held\": verdict: expected quarantine, got allow"),
        "{t}"
    );
    assert!(!t.lines().any(|l| l == "ok"), "{t}");
    let out = twinguard()
        .args(["check", "--json"])
        .arg(&bad)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);

    // The module cannot load at all, so `test` reports the load.
    let out = twinguard().arg("test").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("self-test failed"), "{}", text(&out));

    let good = fixtures::with_selftest(
        &allow,
        &cases.replace("\"quarantine\"", "\"allow\""),
        &dir.path().join("good.wasm"),
    );
    let out = twinguard().arg("check").arg(&good).output().unwrap();
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("selftest:  2 steps passed"),
        "{t}"
    );
    let out = twinguard().arg("test").arg(&good).output().unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("ok    line 1 (1 step)") && t.contains("ok    held (1 step)"),
        "{t}"
    );
}

/// An expectation eval would not check is refused on its line, never silently ignored.
#[test]
fn eval_refuses_expectations_rather_than_ignore_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("twinguard.toml");
    std::fs::write(
        &config,
        format!(
            "[[policy]]\nname = \"allow\"\npath = {:?}\n[[route]]\nfilter = \"#\"\nchain = [\"allow\"]\n",
            fixtures::wasm("allow-all").display().to_string()
        ),
    )
    .unwrap();
    let input = dir.path().join("in.ndjson");
    std::fs::write(
        &input,
        concat!(
            r#"{"device":"d","topic":"t","payload":{},"expect":"quarantine"}"#,
            "\n",
            r#"{"device":"d","topic":"t","payload":{}}"#,
            "\n"
        ),
    )
    .unwrap();
    let out = twinguard()
        .arg("eval")
        .arg("--config")
        .arg(&config)
        .arg("--input")
        .arg(&input)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let error = lines[0]["error"].as_str().unwrap();
    assert!(
        error.contains("expect belongs to test cases") && error.contains("twinguard test"),
        "{error}"
    );
    assert_eq!(lines[1]["action"], "allow");
}

/// The test files shipped beside the pack's policies pass against them: the cases a port to
/// another language is held to.
#[test]
fn the_pack_test_files_pass() {
    for policy in ["pii-redact", "schema-guard"] {
        let out = twinguard()
            .arg("test")
            .arg("--policy")
            .arg(fixtures::wasm(policy))
            .arg(fixtures::workspace().join("policies").join(policy))
            .output()
            .unwrap();
        let t = text(&out);
        assert!(out.status.success(), "{policy}: {t}");
        assert!(t.contains(" passed, 0 failed"), "{policy}: {t}");
    }
}

/// `twinguard new door-hours` with `args` in `dir`: the project's folder. A second run never
/// writes over it.
fn new_project(dir: &Path, args: &[&str]) -> PathBuf {
    let new = || {
        twinguard()
            .args(["new", "door-hours", "--dir"])
            .arg(dir)
            .args(args)
            .output()
            .unwrap()
    };
    let out = new();
    assert!(out.status.success(), "{}", text(&out));
    let again = new();
    assert!(!again.status.success());
    assert!(text(&again).contains("already exists"), "{}", text(&again));
    dir.join("door-hours")
}

/// A built project `check`s and passes the test file it came with; with `edit` made to that
/// file, the run fails and says each of `wants`.
fn passes_then_fails(project: &Path, wasm: &str, edit: (&str, &str), wants: &[&str]) {
    let out = twinguard()
        .arg("check")
        .arg(project.join(wasm))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let test = || {
        twinguard()
            .arg("test")
            .current_dir(project)
            .output()
            .unwrap()
    };
    let out = test();
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("3 cases: 3 passed, 0 failed"),
        "{t}"
    );

    let file = project.join("door-hours.test.toml");
    let original = std::fs::read_to_string(&file).unwrap();
    assert!(original.contains(edit.0), "{original}");
    std::fs::write(&file, original.replace(edit.0, edit.1)).unwrap();
    let out = test();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    for want in wants {
        assert!(t.contains(want), "{want}: {t}");
    }
}

/// A port built by `script` from `src` into `dir` passes the Rust policy's test file, and its
/// agreement script (run with `env`, the port as `port_env`) prints each of `wants`. Returns
/// the component.
fn port_agrees(
    dir: &Path,
    script: &str,
    src: &str,
    rust_policy: &str,
    port_env: &str,
    env: &[(&str, PathBuf)],
    wants: &[&str],
) -> PathBuf {
    let root = fixtures::workspace();
    let wasm = dir.join("port.wasm");
    let build = Command::new(root.join("scripts").join(script))
        .arg(root.join(src))
        .arg(&wasm)
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", text(&build));
    let out = twinguard()
        .arg("test")
        .arg("--policy")
        .arg(&wasm)
        .arg(root.join("policies").join(rust_policy))
        .output()
        .unwrap();
    let t = text(&out);
    assert!(
        out.status.success() && t.contains(" passed, 0 failed"),
        "{t}"
    );

    let agree = Command::new(root.join(src).join("agree.sh"))
        .env("TWINGUARD", env!("CARGO_BIN_EXE_twinguard"))
        .env(port_env, &wasm)
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .output()
        .unwrap();
    let t = text(&agree);
    assert!(agree.status.success(), "{t}");
    for want in wants {
        assert!(t.contains(want), "{want}: {t}");
    }
    wasm
}

/// A tool a language's build needs, installed by `script` (which `scripts/test.sh` runs): a
/// missing tool fails the test, naming the script, never skips it.
fn tool(path: &str, script: &str) -> PathBuf {
    let tool = fixtures::workspace().join(path);
    assert!(
        tool.exists(),
        "{} is missing: run scripts/{script} (scripts/test.sh does)",
        tool.display()
    );
    tool
}

fn componentize_py() -> PathBuf {
    tool("target/tools/python/bin/componentize-py", "python-tools.sh")
}

fn componentize_js() -> PathBuf {
    tool(
        "target/tools/js/node_modules/.bin/componentize-js",
        "js-tools.sh",
    )
}

/// `twinguard new` in a folder outside the repository: the project builds against the SDK,
/// `check`s, and passes the test file it comes with; a wrong expectation then fails it.
#[test]
fn a_new_rust_project_builds_checks_and_passes_its_tests() {
    let dir = tempfile::tempdir().unwrap();
    let sdk = fixtures::workspace().join("guest-sdk");
    let sdk = sdk.to_str().unwrap();
    let project = new_project(dir.path(), &["--sdk", sdk]);
    // The build shares a target folder across runs (the SDK and wit-bindgen compile once),
    // reached through the project's own `target`, so the paths the project names hold.
    let shared = fixtures::workspace().join("target/new-project");
    std::fs::create_dir_all(&shared).unwrap();
    std::os::unix::fs::symlink(&shared, project.join("target")).unwrap();
    // As the author runs them: rustup's proxies, which pick the toolchain from the project's
    // folder. Not `$CARGO` or the toolchain this test runs on (`RUSTUP_TOOLCHAIN`): with them
    // a project without its own `rust-toolchain.toml` built here and failed for an author
    // whose default toolchain was older than the SDK takes or lacked the target.
    let as_author = |program: &str, args: &[&str]| {
        let mut cmd = Command::new(program);
        cmd.args(args).current_dir(&project);
        // What cargo and rustup set for this test (`CARGO`, `RUSTUP_TOOLCHAIN`, flags, the
        // target folder); the homes say where the toolchains are, as in the author's shell.
        for (key, _) in std::env::vars_os() {
            let Some(key) = key.to_str() else { continue };
            let ours = key.starts_with("CARGO") || key.starts_with("RUST");
            if ours && !matches!(key, "CARGO_HOME" | "RUSTUP_HOME" | "RUST_BACKTRACE") {
                cmd.env_remove(key);
            }
        }
        cmd.output().unwrap()
    };
    let toolchain = std::fs::read_to_string(project.join("rust-toolchain.toml")).unwrap();
    assert!(
        toolchain.contains("wasm32-wasip2"),
        "the project names the target it builds for: {toolchain}"
    );
    let install = as_author("rustup", &["toolchain", "install"]);
    assert!(install.status.success(), "{}", text(&install));
    let build = as_author("cargo", &["build", "--release"]);
    assert!(build.status.success(), "{}", text(&build));
    passes_then_fails(
        &project,
        "target/wasm32-wasip2/release/door_hours.wasm",
        (
            "payload = { temp_c = 71.5 }",
            "payload = { temp_c = 171.5 }",
        ),
        &["FAIL  a reading within bounds passes"],
    );
}

/// `twinguard new --lang python`: the project carries the SDK and the contract, builds with
/// componentize-py, `check`s and passes its test file; a wrong case then fails it.
#[test]
fn a_new_python_project_builds_checks_and_passes_its_tests() {
    let tool = componentize_py();
    let dir = tempfile::tempdir().unwrap();
    let project = new_project(dir.path(), &["--lang", "python"]);
    assert!(project.join("wit/policy.wit").is_file());
    assert!(project.join("twinguard_policy/__init__.py").is_file());
    let build = Command::new(project.join("build.sh"))
        .env("COMPONENTIZE_PY", &tool)
        .current_dir(&project)
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", text(&build));
    passes_then_fails(
        &project,
        "build/door_hours.wasm",
        (
            "reason = \"/temp_c = 95 is over 80\"",
            "reason = \"/temp_c = 95 is over 90\"",
        ),
        &["reason: expected to contain \"/temp_c = 95 is over 90\""],
    );
}

/// `twinguard new --lang js`: the project carries the SDK and the contract, builds with
/// componentize-js (its script run from another folder), `check`s and passes its test file; a
/// wrong case then fails it.
#[test]
fn a_new_javascript_project_builds_checks_and_passes_its_tests() {
    let tool = componentize_js();
    let dir = tempfile::tempdir().unwrap();
    let project = new_project(dir.path(), &["--lang", "js"]);
    assert!(project.join("wit/policy.wit").is_file());
    assert!(project.join("twinguard-policy.js").is_file());
    let build = Command::new(project.join("build.sh"))
        .env("COMPONENTIZE_JS", &tool)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", text(&build));
    passes_then_fails(
        &project,
        "build/door_hours.wasm",
        ("alerts = [\"over-max\"]", "alerts = [\"too-hot\"]"),
        &["alerts differs", "-   \"too-hot\"", "+   \"over-max\""],
    );
}

/// The Python port of pii-redact passes the Rust policy's test file, and agrees with it on
/// every message and configuration of its agreement set (`agree.sh`).
#[test]
fn the_python_port_of_pii_redact_agrees_with_the_rust_policy() {
    componentize_py();
    let dir = tempfile::tempdir().unwrap();
    let wasm = port_agrees(
        dir.path(),
        "build-python-policy.sh",
        "policies/pii-redact-py",
        "pii-redact",
        "PY_WASM",
        &[("RUST_WASM", fixtures::wasm("pii-redact"))],
        &["230 agree, 0 differ", "30 agree, 0 differ"],
    );
    let out = fresh_from_snapshot(
        dir.path(),
        &wasm,
        "mask = \"/owner/name\"",
        r#"{"device_id":"d1","topic":"t/d1","payload":{"owner":{"name":"Ada"}}}"#,
    );
    assert!(
        out.contains(r#""action":"redact""#) && !out.contains("Ada"),
        "{out}"
    );
}

/// `wasm` (a port) loaded with `isolation = "fresh"` and `config`: its fresh instances start
/// from a snapshot taken after `init` (the pre-initializer takes the component, under the
/// policy's limits, without a panic); returns what `eval` printed for `message`.
fn fresh_from_snapshot(dir: &Path, wasm: &Path, config: &str, message: &str) -> String {
    let toml = dir.join("fresh.toml");
    std::fs::write(
        &toml,
        format!(
            "[[policy]]\nname = \"p\"\npath = {:?}\nisolation = \"fresh\"\n\
             [policy.config]\n{config}\n[[route]]\nfilter = \"#\"\nchain = [\"p\"]\n",
            wasm.display().to_string()
        ),
    )
    .unwrap();
    let input = dir.join("fresh.ndjson");
    std::fs::write(&input, format!("{message}\n")).unwrap();
    let out = twinguard()
        .env("RUST_LOG", "info")
        .args(["eval", "--config"])
        .arg(&toml)
        .arg("--input")
        .arg(&input)
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("fresh instances start from a snapshot taken after init")
            && !t.contains("panicked")
            && !t.contains("no snapshot"),
        "{t}"
    );
    t
}

/// The JavaScript port of schema-guard passes the Rust policy's test file, agrees with it on
/// every message and configuration of its agreement set (`agree.sh`), and ships the Rust
/// policy's self-tests (the build script embeds selftest.ndjson).
#[test]
fn the_javascript_port_of_schema_guard_agrees_with_the_rust_policy() {
    componentize_js();
    let dir = tempfile::tempdir().unwrap();
    let wasm = port_agrees(
        dir.path(),
        "build-js-policy.sh",
        "policies/schema-guard-js",
        "schema-guard",
        "JS_WASM",
        &[("RUST_WASM", fixtures::wasm("schema-guard"))],
        &["45 messages x 5 configurations"],
    );
    let out = twinguard().arg("check").arg(&wasm).output().unwrap();
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("selftest:  6 steps passed"),
        "{t}"
    );
    let out = fresh_from_snapshot(
        dir.path(),
        &wasm,
        "required = \"/seq:integer\"",
        r#"{"device_id":"d1","topic":"t/d1","payload":{"seq":"x"}}"#,
    );
    assert!(out.contains(r#""action":"quarantine""#), "{out}");
}
