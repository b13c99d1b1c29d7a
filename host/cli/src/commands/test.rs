//! `twinguard test [PATH…]`: run test cases against a policy (or a whole config with chains)
//! and report every case, with what differed; exit 1 when one fails.
//!
//! A test file (`*.test.toml`) names what it tests and holds its cases; the step fields are
//! those of a self-test line (`twinguard_core::cases`), written as TOML:
//!
//! ```toml
//! [policy]                      # one policy; a [[policy]] entry of a config
//! path = "target/wasm32-wasip2/release/door_hours.wasm"
//! config = { zone = "Europe/Berlin" }
//!
//! [[case]]
//! name = "a badge at two doors within a minute"
//! [[case.step]]
//! device = "door-1"
//! topic = "site/door-1/badge"
//! payload = { badge = "B-17" }
//! received_at = "2026-03-29T07:00:00Z"
//! expect = "allow"
//! [[case.step]]
//! device = "door-2"
//! topic = "site/door-2/badge"
//! payload = { badge = "B-17" }
//! after = "30s"
//! expect = { action = "quarantine", alerts = ["badge-at-two-doors"] }
//! ```
//!
//! `config-file = "twinguard.toml"` tests a whole config (chains, routes, registry) instead of
//! `[policy]`; `cases = "more.ndjson"` adds the cases of an NDJSON file.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::{json, Value};
use twinguard::cases::{self, Case, Mismatch};
use twinguard::{Config, Runtime};

/// Arguments of `test`.
#[derive(clap::Args)]
pub struct Args {
    /// Test files (`*.test.toml`), NDJSON case files (with `--policy` or `--config`),
    /// components (`*.wasm`: the self-tests they ship) or folders (every `*.test.toml` in
    /// them, `target/` and hidden folders aside). The current folder when none is given.
    paths: Vec<PathBuf>,
    /// Test this component instead of the one each test file's `[policy]` names: a port of
    /// the same policy to another language runs the same cases.
    #[arg(long, value_name = "WASM")]
    policy: Option<PathBuf>,
    /// A runtime config (chains, routes, registry) for NDJSON case files.
    #[arg(long, value_name = "TOML")]
    config: Option<PathBuf>,
    /// `text` for people, `json` (one object) or `junit` (XML) for CI.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Text,
    Json,
    Junit,
}

/// A `*.test.toml` file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct TestFile {
    /// One policy: a `[[policy]]` entry of a config (path, name, config, limits, ...).
    policy: Option<toml::Table>,
    /// Or a whole runtime config.
    config_file: Option<PathBuf>,
    /// Engine settings for `[policy]` (large components need larger compile limits).
    engine: Option<toml::Table>,
    /// More cases, from an NDJSON file.
    cases: Option<PathBuf>,
    #[serde(default)]
    case: Vec<CaseTable>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseTable {
    name: String,
    /// The policy's settings for this case.
    config: Option<toml::Table>,
    #[serde(default)]
    step: Vec<toml::Table>,
}

/// What one test source (file, case file or component) is run against.
struct Subject {
    /// For the report: the policy or config tested.
    what: String,
    config: Config,
    /// Whether per-case settings apply (one policy), and to which policy.
    single: Option<String>,
}

struct StepReport {
    label: String,
    action: String,
    mismatches: Vec<Mismatch>,
}

struct CaseReport {
    name: String,
    steps: Vec<StepReport>,
    /// The case could not run (its settings refused, ...).
    error: Option<String>,
}

impl CaseReport {
    fn passed(&self) -> bool {
        self.error.is_none() && self.steps.iter().all(|s| s.mismatches.is_empty())
    }
}

struct FileReport {
    path: PathBuf,
    what: String,
    /// The file or its subject could not be read or loaded.
    error: Option<String>,
    cases: Vec<CaseReport>,
}

impl FileReport {
    fn failed(&self) -> usize {
        usize::from(self.error.is_some()) + self.cases.iter().filter(|c| !c.passed()).count()
    }
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.paths.clone()
    };
    let mut sources = Vec::new();
    for path in &paths {
        if path.is_dir() {
            let before = sources.len();
            find_tests(path, &mut sources)
                .with_context(|| format!("cannot list test files in {}", path.display()))?;
            if sources.len() == before {
                bail!(
                    "no *.test.toml file in {} (give test files, NDJSON case files or \
                     components as arguments)",
                    path.display()
                );
            }
        } else if path.exists() {
            sources.push(path.clone());
        } else {
            bail!("{}: no such file or folder", path.display());
        }
    }
    let reports: Vec<FileReport> = sources.iter().map(|p| run_source(p, args)).collect();
    let mut out = crate::Out::stdout();
    match args.format {
        Format::Text => write!(out, "{}", text_report(&reports))?,
        Format::Json => writeln!(out, "{}", json_report(&reports))?,
        Format::Junit => write!(out, "{}", junit_report(&reports))?,
    }
    out.flush()?;
    let failed: usize = reports.iter().map(FileReport::failed).sum();
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn find_tests(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            if !name.starts_with('.') && name != "target" && name != "node_modules" {
                find_tests(&path, out)?;
            }
        } else if name.ends_with(".test.toml") {
            out.push(path);
        }
    }
    Ok(())
}

fn run_source(path: &Path, args: &Args) -> FileReport {
    let mut report = FileReport {
        path: path.to_path_buf(),
        what: String::new(),
        error: None,
        cases: Vec::new(),
    };
    match load_source(path, args) {
        Ok((subject, cases)) => {
            report.what = subject.what.clone();
            match Runtime::new(subject.config.clone()) {
                Ok(runtime) => {
                    report.cases = cases
                        .iter()
                        .map(|case| run_case(&runtime, &subject, case))
                        .collect();
                }
                Err(e) => report.error = Some(twinguard::error_chain(&e)),
            }
        }
        Err(e) => report.error = Some(format!("{e:#}")),
    }
    report
}

fn run_case(runtime: &Runtime, subject: &Subject, case: &Case) -> CaseReport {
    let mut report = CaseReport {
        name: case.name.clone(),
        steps: Vec::new(),
        error: None,
    };
    let mut config = subject.config.clone();
    if let Some(settings) = &case.config {
        let Some(policy) = config
            .policies
            .iter_mut()
            .find(|p| Some(&p.name) == subject.single.as_ref())
        else {
            report.error = Some(
                "the case names settings (config), which apply to one policy: test it with \
                 [policy], not config-file"
                    .into(),
            );
            return report;
        };
        policy.config = settings
            .iter()
            .map(|(k, v)| (k.clone(), twinguard::ConfigValue::Text(v.clone())))
            .collect();
    }
    // A fresh deployment per case: new instances, no state, no last values.
    if let Err(e) = runtime.reset(&config) {
        report.error = Some(twinguard::error_chain(&e));
        return report;
    }
    report.steps = cases::run(case, |m| runtime.evaluate(m))
        .into_iter()
        .map(|r| StepReport {
            label: r.label,
            action: r.outcome.action.name().to_owned(),
            mismatches: r.mismatches,
        })
        .collect();
    report
}

/// The subject and cases of one source.
fn load_source(path: &Path, args: &Args) -> Result<(Subject, Vec<Case>)> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    if name.ends_with(".wasm") {
        return shipped_cases(path);
    }
    if name.ends_with(".ndjson") {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let cases = cases::from_ndjson(&text)?;
        let subject = match (&args.policy, &args.config) {
            (Some(wasm), None) => {
                one_policy(policy_table(wasm, &stem(path)), None, Path::new("."))?
            }
            (None, Some(config)) => whole_config(config)?,
            _ => bail!(
                "an NDJSON case file needs what it tests: --policy <component.wasm> or \
                 --config <config.toml>"
            ),
        };
        return Ok((subject, cases));
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: TestFile =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let subject = match (file.policy, &file.config_file, &args.policy) {
        (Some(_), Some(_), _) => bail!("give [policy] or config-file, not both"),
        (Some(mut table), None, over) => {
            table
                .entry("name")
                .or_insert_with(|| toml::Value::String(stem(path)));
            if let Some(wasm) = over {
                // Relative to where the command runs, as every other argument.
                let wasm = std::path::absolute(wasm)?;
                table.insert(
                    "path".into(),
                    toml::Value::String(wasm.display().to_string()),
                );
            }
            one_policy(table, file.engine, dir)?
        }
        (None, Some(_), Some(_)) => {
            bail!("--policy replaces a [policy]; this file tests a config-file")
        }
        (None, Some(config), None) => whole_config(&dir.join(config))?,
        (None, None, _) => bail!("say what it tests: a [policy] table or config-file = \"...\""),
    };
    let mut all = Vec::new();
    if let Some(more) = &file.cases {
        let more = dir.join(more);
        let text = std::fs::read_to_string(&more)
            .with_context(|| format!("cannot read cases = {}", more.display()))?;
        all.extend(cases::from_ndjson(&text).with_context(|| more.display().to_string())?);
    }
    for case in file.case {
        all.push(toml_case(case)?);
    }
    if all.is_empty() {
        bail!("no case: add [[case]] tables (or cases = \"file.ndjson\")");
    }
    Ok((subject, all))
}

/// The file name without `.test.toml` (or its extension): a policy's default name.
fn stem(path: &Path) -> String {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let name = name
        .strip_suffix(".test.toml")
        .or_else(|| name.rsplit_once('.').map(|(s, _)| s))
        .unwrap_or(&name);
    name.to_owned()
}

fn policy_table(wasm: &Path, name: &str) -> toml::Table {
    let mut t = toml::Table::new();
    t.insert("name".into(), toml::Value::String(name.into()));
    t.insert(
        "path".into(),
        toml::Value::String(wasm.display().to_string()),
    );
    t
}

fn one_policy(policy: toml::Table, engine: Option<toml::Table>, dir: &Path) -> Result<Subject> {
    let name = policy
        .get("name")
        .and_then(toml::Value::as_str)
        .unwrap_or("policy")
        .to_owned();
    let path = policy
        .get("path")
        .and_then(toml::Value::as_str)
        .map(str::to_owned)
        .context("[policy] needs path = \"<component.wasm>\"")?;
    let mut doc = toml::Table::new();
    doc.insert(
        "policy".into(),
        toml::Value::Array(vec![toml::Value::Table(policy)]),
    );
    let mut route = toml::Table::new();
    route.insert("filter".into(), toml::Value::String("#".into()));
    route.insert(
        "chain".into(),
        toml::Value::Array(vec![toml::Value::String(name.clone())]),
    );
    doc.insert(
        "route".into(),
        toml::Value::Array(vec![toml::Value::Table(route)]),
    );
    if let Some(engine) = engine {
        doc.insert("engine".into(), toml::Value::Table(engine));
    }
    let config = Config::from_toml(&toml::to_string(&doc)?, dir)
        .map_err(|e| anyhow::anyhow!("{}", twinguard::error_chain(&e)))?;
    Ok(Subject {
        what: format!("policy {name} ({path})"),
        config,
        single: Some(name),
    })
}

fn whole_config(path: &Path) -> Result<Subject> {
    let config = twinguard::FileConfig::from_file(path)
        .map_err(|e| anyhow::anyhow!("{}", twinguard::error_chain(&e)))?
        .runtime;
    Ok(Subject {
        what: format!("config {}", path.display()),
        config,
        single: None,
    })
}

/// A component's own self-tests, run as `check` runs them (each case's settings, or none).
/// The cases are read from its bytes: the runtime that runs them compiles it, once.
fn shipped_cases(path: &Path) -> Result<(Subject, Vec<Case>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = cases::shipped(&bytes)
        .with_context(|| format!("{} ships no self-tests", path.display()))?;
    let cases = cases::from_ndjson(&text)?;
    let mut policy = policy_table(&std::path::absolute(path)?, &stem(path));
    // Settings of its own would fail a module whose init needs some; each case names its own.
    policy.insert("config".into(), toml::Value::Table(toml::Table::new()));
    let mut subject = one_policy(policy, None, Path::new("."))?;
    subject.what = format!("the self-tests {} ships", path.display());
    Ok((subject, cases))
}

/// TOML to JSON; a TOML date-time becomes its RFC 3339 text (what `received_at` reads).
fn to_json(v: toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => json!(i),
        toml::Value::Float(f) => json!(f),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.into_iter().map(to_json).collect()),
        toml::Value::Table(t) => {
            Value::Object(t.into_iter().map(|(k, v)| (k, to_json(v))).collect())
        }
    }
}

/// Whether a TOML value holds a float JSON cannot carry (NaN, an infinity).
fn holds_non_finite(v: &toml::Value) -> bool {
    match v {
        toml::Value::Float(f) => !f.is_finite(),
        toml::Value::Array(a) => a.iter().any(holds_non_finite),
        toml::Value::Table(t) => t.values().any(holds_non_finite),
        _ => false,
    }
}

/// A TOML payload as CBOR, as the JSON route would encode it (datetimes as text), floats kept.
fn toml_to_cbor(v: &toml::Value) -> cbor4ii::core::Value {
    use cbor4ii::core::Value as Cbor;
    match v {
        toml::Value::String(s) => Cbor::Text(s.clone()),
        toml::Value::Integer(i) => Cbor::Integer((*i).into()),
        toml::Value::Float(f) => Cbor::Float(*f),
        toml::Value::Boolean(b) => Cbor::Bool(*b),
        toml::Value::Datetime(d) => Cbor::Text(d.to_string()),
        toml::Value::Array(a) => Cbor::Array(a.iter().map(toml_to_cbor).collect()),
        toml::Value::Table(t) => Cbor::Map(
            t.iter()
                .map(|(k, v)| (Cbor::Text(k.clone()), toml_to_cbor(v)))
                .collect(),
        ),
    }
}

/// A step's `payload` holding NaN or an infinity: CBOR bytes (as `payload_base64`) when the
/// step is CBOR; otherwise an error, since JSON would silently turn it into `null`.
fn non_finite_payload(step: &mut toml::Table) -> std::result::Result<(), String> {
    let Some(payload) = step.get("payload").filter(|p| holds_non_finite(p)) else {
        return Ok(());
    };
    if step.get("content_type").and_then(toml::Value::as_str) != Some("cbor") {
        return Err(
            "payload holds NaN or an infinity, which JSON cannot carry: give \
                    content_type = \"cbor\" (or the bytes as payload_base64)"
                .into(),
        );
    }
    let mut writer = cbor4ii::core::utils::BufWriter::new(Vec::new());
    cbor4ii::core::enc::Encode::encode(&toml_to_cbor(payload), &mut writer)
        .map_err(|e| format!("payload: {e}"))?;
    let b64 = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        writer.into_inner(),
    );
    step.remove("payload");
    step.insert("payload_base64".into(), toml::Value::String(b64));
    Ok(())
}

fn toml_case(case: CaseTable) -> Result<Case> {
    if case.step.is_empty() {
        bail!("case {:?}: no [[case.step]]", case.name);
    }
    let mut steps = Vec::with_capacity(case.step.len());
    for (i, mut step) in case.step.into_iter().enumerate() {
        let label = format!("step {}", i + 1);
        non_finite_payload(&mut step)
            .map_err(|e| anyhow::anyhow!("case {:?}, {label}: {e}", case.name))?;
        let mut value = to_json(toml::Value::Table(step));
        if let (0, Some(config), Value::Object(o)) = (i, &case.config, &mut value) {
            if o.contains_key("config") {
                bail!(
                    "case {:?}: config on the case and on its first step",
                    case.name
                );
            }
            o.insert("config".into(), to_json(toml::Value::Table(config.clone())));
        }
        for field in ["case"] {
            if value.get(field).is_some() {
                bail!(
                    "case {:?}, {label}: {field} is the [[case]]'s name here",
                    case.name
                );
            }
        }
        let parsed = twinguard::input::parse_value(value)
            .map_err(|e| anyhow::anyhow!("case {:?}, {label}: {e}", case.name))?;
        steps.push((label, parsed));
    }
    Case::new(case.name, steps).map_err(anyhow::Error::msg)
}

/// Expected and got, one line each; JSON documents as an indented line diff.
fn describe_mismatch(m: &Mismatch, out: &mut String) {
    let (Ok(want), Ok(got)) = (
        serde_json::from_str::<Value>(&m.expected),
        serde_json::from_str::<Value>(&m.got),
    ) else {
        let _ = writeln!(out, "      {m}");
        return;
    };
    if !(want.is_object() || want.is_array()) {
        let _ = writeln!(out, "      {m}");
        return;
    }
    let _ = writeln!(out, "      {} differs (- expected, + got):", m.what);
    let want = serde_json::to_string_pretty(&want).unwrap_or_default();
    let got = serde_json::to_string_pretty(&got).unwrap_or_default();
    let diff = similar::TextDiff::from_lines(&want, &got);
    for change in diff.iter_all_changes() {
        let sign = match change.tag() {
            similar::ChangeTag::Delete => '-',
            similar::ChangeTag::Insert => '+',
            similar::ChangeTag::Equal => ' ',
        };
        let _ = write!(out, "        {sign} {change}");
        if change.missing_newline() {
            out.push('\n');
        }
    }
}

fn text_report(reports: &[FileReport]) -> String {
    let mut out = String::new();
    let (mut passed, mut failed) = (0, 0);
    for r in reports {
        let _ = writeln!(
            out,
            "{} ({})",
            r.path.display(),
            if r.what.is_empty() { "?" } else { &r.what }
        );
        if let Some(e) = &r.error {
            failed += 1;
            let _ = writeln!(out, "  ERROR {e}");
        }
        for c in &r.cases {
            if c.passed() {
                passed += 1;
                let steps = c.steps.len();
                let _ = writeln!(
                    out,
                    "  ok    {} ({steps} step{})",
                    c.name,
                    if steps == 1 { "" } else { "s" }
                );
                continue;
            }
            failed += 1;
            let _ = writeln!(out, "  FAIL  {}", c.name);
            if let Some(e) = &c.error {
                let _ = writeln!(out, "      {e}");
            }
            for s in c.steps.iter().filter(|s| !s.mismatches.is_empty()) {
                let _ = writeln!(out, "    {} ({})", s.label, s.action);
                for m in &s.mismatches {
                    describe_mismatch(m, &mut out);
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "{} case{}: {passed} passed, {failed} failed",
        passed + failed,
        if passed + failed == 1 { "" } else { "s" }
    );
    out
}

fn mismatch_json(m: &Mismatch) -> Value {
    json!({ "what": m.what, "expected": m.expected, "got": m.got })
}

fn json_report(reports: &[FileReport]) -> Value {
    let files: Vec<Value> = reports
        .iter()
        .map(|r| {
            json!({
                "file": r.path,
                "subject": r.what,
                "error": r.error,
                "cases": r.cases.iter().map(|c| json!({
                    "name": c.name,
                    "passed": c.passed(),
                    "error": c.error,
                    "steps": c.steps.iter().map(|s| json!({
                        "label": s.label,
                        "action": s.action,
                        "passed": s.mismatches.is_empty(),
                        "mismatches": s.mismatches.iter().map(mismatch_json).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let failed: usize = reports.iter().map(FileReport::failed).sum();
    let total: usize = reports
        .iter()
        .map(|r| r.cases.len() + usize::from(r.error.is_some()))
        .sum();
    json!({ "passed": total - failed, "failed": failed, "files": files })
}

fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 has no way to write most control characters: a space stands in.
            c if c.is_control() && !matches!(c, '\n' | '\t') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn junit_report(reports: &[FileReport]) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let total: usize = reports
        .iter()
        .map(|r| r.cases.len() + usize::from(r.error.is_some()))
        .sum();
    let failed: usize = reports.iter().map(FileReport::failed).sum();
    let _ = writeln!(
        out,
        "<testsuites name=\"twinguard\" tests=\"{total}\" failures=\"{failed}\">"
    );
    for r in reports {
        let file = xml(&r.path.display().to_string());
        let tests = r.cases.len() + usize::from(r.error.is_some());
        let _ = writeln!(
            out,
            "  <testsuite name=\"{file}\" tests=\"{tests}\" failures=\"{}\">",
            r.failed()
        );
        if let Some(e) = &r.error {
            let _ = writeln!(
                out,
                "    <testcase classname=\"{file}\" name=\"load\"><error message=\"{}\"/></testcase>",
                xml(e)
            );
        }
        for c in &r.cases {
            let name = xml(&c.name);
            if c.passed() {
                let _ = writeln!(out, "    <testcase classname=\"{file}\" name=\"{name}\"/>");
                continue;
            }
            let mut detail = String::new();
            if let Some(e) = &c.error {
                let _ = writeln!(detail, "{e}");
            }
            for s in &c.steps {
                for m in &s.mismatches {
                    let _ = writeln!(detail, "{}: {m}", s.label);
                }
            }
            let first = detail.lines().next().unwrap_or_default().to_owned();
            let _ = writeln!(
                out,
                "    <testcase classname=\"{file}\" name=\"{name}\"><failure message=\"{}\">{}</failure></testcase>",
                xml(&first),
                xml(&detail)
            );
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}
