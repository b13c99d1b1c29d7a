//! The admin API over real TLS: who may call it (mutual TLS, bearer token), and what push,
//! rollback, remove and route changes do to a running runtime and to its config file.

use twinguard_fixtures as fixtures;
use twinguard_fixtures::broker;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use broker::Pki;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use twinguard::admin::{AdminConfig, AdminServer};
use twinguard::lifecycle::Lifecycle;
use twinguard::{Action, Config, ContentType, Message, Runtime};
use twinguard_cli::client::{self, ClientConfig};

/// A runtime with its admin API on a free loopback port.
struct Api {
    rt: tokio::runtime::Runtime,
    url: String,
    config: PathBuf,
    runtime: Runtime,
}

const CONFIG: &str = r#"# the operator's own comment, which every change must keep
[[policy]]
name = "p"
path = "{allow}"
[policy.config]
remove = "/secret"

[[route]]
filter = "x/#"
chain = ["p"]
"#;

fn start(dir: &Path, pki: &Pki, client_ca: Option<&Path>, token: Option<&str>) -> Api {
    start_with(dir, pki, client_ca, token, None)
}

/// [`start`] with the flood limits (and TLS files) of `limits`.
fn start_with(
    dir: &Path,
    pki: &Pki,
    client_ca: Option<&Path>,
    token: Option<&str>,
    limits: Option<AdminConfig>,
) -> Api {
    let config = dir.join("twinguard.toml");
    if !config.exists() {
        let text = CONFIG.replace(
            "{allow}",
            &fixtures::wasm("allow-all").display().to_string(),
        );
        std::fs::write(&config, text).unwrap();
    }
    let runtime = Runtime::new(Config::from_file(&config).unwrap()).unwrap();
    let lifecycle = Lifecycle::new(runtime.clone(), &config, dir.join("state"), 3).unwrap();
    let token_file = token.map(|t| {
        let p = dir.join("admin.token");
        std::fs::write(&p, format!("{t}\n")).unwrap();
        p
    });
    let admin = AdminConfig {
        listen: "127.0.0.1:0".into(),
        client_ca: client_ca.map(Path::to_path_buf),
        token_file,
        state_dir: dir.join("state"),
        keep_versions: 3,
        ..limits
            .unwrap_or_else(|| AdminConfig::new(pki.server_cert.clone(), pki.server_key.clone()))
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt
        .block_on(AdminServer::bind(&admin, Arc::new(lifecycle)))
        .unwrap();
    let url = format!("https://127.0.0.1:{}", server.local_addr().unwrap().port());
    rt.spawn(server.serve(std::future::pending()));
    Api {
        rt,
        url,
        config,
        runtime,
    }
}

impl Api {
    fn client(&self, pki: &Pki, with_cert: bool, token: Option<&str>) -> ClientConfig {
        ClientConfig {
            url: self.url.clone(),
            ca: pki.ca.clone(),
            cert: with_cert.then(|| pki.client_cert.clone()),
            key: with_cert.then(|| pki.client_key.clone()),
            token: token.map(str::to_owned),
        }
    }

    fn call(
        &self,
        client: &ClientConfig,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Value), String> {
        self.rt
            .block_on(client::request(client, method, path, body, &[]))
    }

    /// [`Api::call`] with a reason to take enforcement off a route.
    fn call_waived(
        &self,
        client: &ClientConfig,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let waiver = [(
            "x-twinguard-remove-enforcement",
            "maintenance window CHG-1234".to_owned(),
        )];
        self.rt
            .block_on(client::request(client, method, path, body, &waiver))
            .unwrap()
    }

    /// What the running runtime does to `{"secret":1,"a":2}` on `topic`.
    fn judge(&self, topic: &str) -> (Action, Value) {
        let outcome = self.runtime.evaluate(&Message::new(
            "d1",
            topic,
            ContentType::Json,
            br#"{"secret":1,"a":2}"#.to_vec(),
        ));
        let payload = serde_json::from_slice(&outcome.payload).unwrap_or(Value::Null);
        (outcome.action, payload)
    }

    /// p's shadow report once the candidate has seen (compared or skipped) `n` messages, or
    /// the last one after a generous wait.
    fn shadow_report(&self, client: &ClientConfig, n: u64) -> Value {
        let mut report = Value::Null;
        for _ in 0..500 {
            report = self
                .call(client, Method::GET, "/v1/policies/p/candidate", Vec::new())
                .unwrap()
                .1;
            let seen =
                report["compared"].as_u64().unwrap_or(0) + report["skipped"].as_u64().unwrap_or(0);
            if seen >= n {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        report
    }

    fn generation(&self) -> u64 {
        self.runtime.policy_set().generation()
    }
}

fn digest(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn mutual_tls_refuses_callers_without_a_certificate_or_from_another_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let api = start(dir.path(), &pki, Some(&pki.ca), None);

    let (status, list) = api
        .call(
            &api.client(&pki, true, None),
            Method::GET,
            "/v1/policies",
            Vec::new(),
        )
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list[0]["name"], "p");
    assert_eq!(list[0]["version"], digest(&fixtures::wasm("allow-all")));

    // No client certificate: the handshake (or the first read after it, with TLS 1.3) fails.
    let err = api
        .call(
            &api.client(&pki, false, None),
            Method::GET,
            "/v1/policies",
            Vec::new(),
        )
        .unwrap_err();
    assert!(err.contains(&api.url), "{err}");

    // A certificate from the right CA issued for something else (here the server's own, with
    // no clientAuth extended key usage) is no operator credential.
    let server_as_client = ClientConfig {
        cert: Some(pki.server_cert.clone()),
        key: Some(pki.server_key.clone()),
        ..api.client(&pki, true, None)
    };
    let err = api
        .call(&server_as_client, Method::GET, "/v1/policies", Vec::new())
        .unwrap_err();
    assert!(err.contains(&api.url), "{err}");

    // A server that trusts another CA refuses the same certificate.
    let other = tempfile::tempdir().unwrap();
    let strict = start(other.path(), &pki, Some(&pki.other_ca), None);
    let err = strict
        .call(
            &strict.client(&pki, true, None),
            Method::GET,
            "/v1/policies",
            Vec::new(),
        )
        .unwrap_err();
    assert!(err.contains(&strict.url), "{err}");
}

#[test]
fn a_bearer_token_is_required_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let token = "s3cret-token-of-32-characters-ok";
    let api = start(dir.path(), &pki, None, Some(token));
    for given in [
        None,
        Some("wrong-token-of-the-same-length!!"),
        Some("short"),
    ] {
        let (status, body) = api
            .call(
                &api.client(&pki, false, given),
                Method::GET,
                "/v1/status",
                Vec::new(),
            )
            .unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{given:?}: {body}");
        assert!(body["error"].as_str().unwrap().contains("bearer token"));
    }
    let (status, body) = api
        .call(
            &api.client(&pki, false, Some(token)),
            Method::GET,
            "/v1/status",
            Vec::new(),
        )
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["generation"], 1);

    // Refused configurations: open, or a token too short to be one.
    let mut open = AdminConfig {
        listen: "127.0.0.1:0".into(),
        state_dir: dir.path().join("s"),
        keep_versions: 3,
        ..AdminConfig::new(pki.server_cert.clone(), pki.server_key)
    };
    assert!(open.validate().unwrap_err().contains("refuses to run open"));
    std::fs::write(dir.path().join("short.token"), "abc\n").unwrap();
    open.token_file = Some(dir.path().join("short.token"));
    let lifecycle =
        Lifecycle::new(api.runtime.clone(), &api.config, dir.path().join("s"), 3).unwrap();
    let err = api
        .rt
        .block_on(AdminServer::bind(&open, Arc::new(lifecycle)))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("short.token") && err.contains("at least 16"),
        "{err}"
    );
}

#[test]
fn push_rollback_remove_and_routes_change_what_the_runtime_does() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let api = start(dir.path(), &pki, Some(&pki.ca), None);
    let c = api.client(&pki, true, None);
    let allow = digest(&fixtures::wasm("allow-all"));
    let pii_path = fixtures::wasm("pii-redact");
    let pii = digest(&pii_path);

    assert_eq!(api.judge("x/1"), (Action::Allow, json!({"secret":1,"a":2})));

    // Push: pii-redact becomes version 2 of "p", with the config the file gives "p".
    let (status, change) = api
        .call(
            &c,
            Method::PUT,
            "/v1/policies/p",
            std::fs::read(&pii_path).unwrap(),
        )
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{change}");
    assert_eq!(change["version"], pii);
    assert_eq!(change["generation"], api.generation());
    assert_eq!(api.judge("x/1"), (Action::Redact, json!({"a":2})));
    let text = std::fs::read_to_string(&api.config).unwrap();
    assert!(text.contains("the operator's own comment"), "{text}");
    assert!(text.contains(&format!("{pii}.wasm")), "{text}");

    // A bad module changes nothing: not the generation, not the file, not the behaviour.
    let before = (api.generation(), std::fs::read(&api.config).unwrap());
    for bad in [
        b"not a component".to_vec(),
        std::fs::read(fixtures::wasm("wrong-version")).unwrap(),
    ] {
        let (status, body) = api.call(&c, Method::PUT, "/v1/policies/p", bad).unwrap();
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("not activated"),
            "{body}"
        );
    }
    assert_eq!(
        (api.generation(), std::fs::read(&api.config).unwrap()),
        before
    );
    assert_eq!(api.judge("x/1"), (Action::Redact, json!({"a":2})));
    let (_, status) = api.call(&c, Method::GET, "/v1/status", Vec::new()).unwrap();
    assert_eq!(status["refused"], 2, "{status}");

    // Rollback: exactly the version before, then nothing older is kept.
    let (status, change) = api
        .call(&c, Method::POST, "/v1/policies/p/rollback", Vec::new())
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{change}");
    assert_eq!(change["version"], allow);
    assert_eq!(api.judge("x/1"), (Action::Allow, json!({"secret":1,"a":2})));
    let (status, body) = api
        .call(&c, Method::POST, "/v1/policies/p/rollback", Vec::new())
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Routes: x/… is no longer routed (quarantined by default), y/… is. Dropping x/#'s
    // route takes its policy off it: refused unless a reason is given, and nothing changes.
    let routes = br#"[{"filter":"y/#","chain":["p"]}]"#;
    let before = std::fs::read(&api.config).unwrap();
    let (status, body) = api
        .call(&c, Method::PUT, "/v1/routes", routes.to_vec())
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("route \"x/#\" dropped") && message.contains("remove-enforcement"),
        "{body}"
    );
    assert_eq!(std::fs::read(&api.config).unwrap(), before);
    assert_eq!(api.judge("x/1").0, Action::Allow);
    let (status, body) = api.call_waived(&c, Method::PUT, "/v1/routes", routes.to_vec());
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(matches!(api.judge("x/1").0, Action::Quarantine { .. }));
    assert_eq!(api.judge("y/1").0, Action::Allow);
    for (bad, want) in [
        (
            &br#"[{"filter":"y/#","chain":["nope"]}]"#[..],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (&br#"{"filter":"y/#"}"#[..], StatusCode::BAD_REQUEST),
        (
            &br#"[{"filter":"y/#","klass":"meter","chain":["p"]}]"#[..],
            StatusCode::BAD_REQUEST,
        ),
        // A class route is read, and refused here: this config has no [registry].
        (
            &br#"[{"class":"meter","chain":["p"]}]"#[..],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        // Each takes p off y/#: given a reason, what is wrong with it is what answers.
        let (status, body) = api.call_waived(&c, Method::PUT, "/v1/routes", bad.to_vec());
        assert_eq!(status, want, "{body}");
    }

    // A restart from the file comes back to the same set.
    let restarted = Runtime::new(Config::from_file(&api.config).unwrap()).unwrap();
    assert_eq!(restarted.policy_set().policies()[0].version(), allow);

    // Remove: it sits in a chain, so without a reason it is refused as removing enforcement;
    // with one, still refused while it is a route's whole chain (the route would forward
    // everything unjudged), naming the route; the set is unchanged.
    let (status, body) = api
        .call(&c, Method::DELETE, "/v1/policies/p", Vec::new())
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = api.call_waived(&c, Method::DELETE, "/v1/policies/p", Vec::new());
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("route #1 (\"y/#\") has an empty chain"),
        "{body}"
    );
    assert_eq!(api.runtime.policy_set().policies().len(), 1);
    // With the route gone first, the removal goes through; y/… is now unrouted (quarantined).
    let (status, body) = api
        .call(&c, Method::PUT, "/v1/routes", b"[]".to_vec())
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = api.call_waived(&c, Method::PUT, "/v1/routes", b"[]".to_vec());
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api
        .call(&c, Method::DELETE, "/v1/policies/p", Vec::new())
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(api.runtime.policy_set().policies().is_empty());
    assert!(matches!(api.judge("y/1").0, Action::Quarantine { .. }));
    let (status, _) = api
        .call(&c, Method::DELETE, "/v1/policies/p", Vec::new())
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api
        .call(&c, Method::GET, "/v1/nothing", Vec::new())
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api
        .call(&c, Method::PUT, "/v1/policies/..%2Fetc", b"x".to_vec())
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[test]
fn a_reader_token_only_reads_and_samples_show_what_the_chain_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    // The active version of p redacts /secret; the candidate lets everything through.
    std::fs::write(
        dir.path().join("twinguard.toml"),
        CONFIG.replace(
            "{allow}",
            &fixtures::wasm("pii-redact").display().to_string(),
        ),
    )
    .unwrap();
    let operator = "operator-token-0123456789abcdef";
    let reader = "reader-token-0123456789abcdef!!";
    std::fs::write(dir.path().join("reader.token"), format!("{reader}\n")).unwrap();
    let limits = AdminConfig {
        read_token_file: Some(dir.path().join("reader.token")),
        ..AdminConfig::new(pki.server_cert.clone(), pki.server_key.clone())
    };
    let api = start_with(dir.path(), &pki, None, Some(operator), Some(limits));
    let op = api.client(&pki, false, Some(operator));
    let rd = api.client(&pki, false, Some(reader));

    let (status, report) = api
        .call(
            &op,
            Method::PUT,
            "/v1/policies/p/candidate",
            std::fs::read(fixtures::wasm("allow-all")).unwrap(),
        )
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{report}");
    for _ in 0..40 {
        assert_eq!(api.judge("x/1"), (Action::Redact, json!({"a":2})));
    }
    let report = api.shadow_report(&op, 40);
    assert!(report["differed"].as_u64().unwrap() > 0, "{report}");
    // The sample is the payload as the active chain forwarded it: /secret is gone.
    let sample = report["samples"][0]["payload"].as_str().unwrap();
    assert!(
        sample.contains("\"a\":2") && !sample.contains("secret"),
        "{report}"
    );

    // The reader sees the counts, never a sample, and changes nothing.
    let (status, seen) = api
        .call(&rd, Method::GET, "/v1/policies/p/candidate", Vec::new())
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert!(seen["differed"].as_u64().unwrap() > 0, "{seen}");
    assert_eq!(seen["samples"], json!([]), "{seen}");
    for (method, path) in [(Method::GET, "/v1/status"), (Method::GET, "/v1/policies")] {
        let (status, body) = api.call(&rd, method, path, Vec::new()).unwrap();
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    let generation = api.generation();
    for (method, path, body) in [
        (Method::PUT, "/v1/routes", b"[]".to_vec()),
        (Method::POST, "/v1/reload", Vec::new()),
        (Method::DELETE, "/v1/policies/p/candidate", Vec::new()),
        (Method::PUT, "/v1/policies/p", b"\0asm".to_vec()),
    ] {
        let (status, answer) = api.call(&rd, method.clone(), path, body).unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("may only read"),
            "{answer}"
        );
    }
    assert_eq!(api.generation(), generation);
    assert_eq!(
        api.call(&op, Method::GET, "/v1/policies/p/candidate", Vec::new())
            .unwrap()
            .0,
        StatusCode::OK,
        "the candidate is still there"
    );

    // Guessing: five wrong tokens are answered 401, the sixth locks this address out for a
    // second, during which even the right token gets 429 with Retry-After.
    let guess = api.client(&pki, false, Some("guess-guess-guess-guess-guess-00"));
    for _ in 0..5 {
        let (status, _) = api
            .call(&guess, Method::GET, "/v1/status", Vec::new())
            .unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, body) = api
        .call(&guess, Method::GET, "/v1/status", Vec::new())
        .unwrap();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("too many failed authentications"),
        "{body}"
    );
    let (status, _) = api
        .call(&op, Method::GET, "/v1/status", Vec::new())
        .unwrap();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    let (status, body) = api
        .call(&op, Method::GET, "/v1/status", Vec::new())
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[test]
fn a_shadow_candidate_is_compared_on_live_traffic_then_promoted_or_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let api = start(dir.path(), &pki, Some(&pki.ca), None);
    let c = api.client(&pki, true, None);
    let pii_path = fixtures::wasm("pii-redact");
    let pii = digest(&pii_path);

    let (status, report) = api
        .call(
            &c,
            Method::PUT,
            "/v1/policies/p/candidate",
            std::fs::read(&pii_path).unwrap(),
        )
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["candidate_version"], pii);
    let generation = api.generation();

    // Live traffic: the active version decides; the candidate only records.
    for _ in 0..40 {
        assert_eq!(api.judge("x/1"), (Action::Allow, json!({"secret":1,"a":2})));
    }
    // Not routed to p: nothing to compare.
    for _ in 0..5 {
        api.judge("elsewhere/1");
    }
    let report = api.shadow_report(&c, 40);
    let compared = report["compared"].as_u64().unwrap();
    assert_eq!(
        compared + report["skipped"].as_u64().unwrap(),
        40,
        "{report}"
    );
    assert!(compared > 0, "{report}");
    assert_eq!(report["differed"], compared, "{report}");
    assert_eq!(report["pairs"]["allow -> redact"], compared, "{report}");
    assert_eq!(report["samples"][0]["topic"], "x/1", "{report}");
    assert_eq!(api.generation(), generation, "shadowing activates nothing");

    // Promote: the candidate becomes the active version; the shadow ends.
    let (status, change) = api
        .call(
            &c,
            Method::POST,
            "/v1/policies/p/candidate/promote",
            Vec::new(),
        )
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{change}");
    assert_eq!(change["version"], pii);
    assert_eq!(api.judge("x/1"), (Action::Redact, json!({"a":2})));
    let (status, _) = api
        .call(&c, Method::GET, "/v1/policies/p/candidate", Vec::new())
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Discard: nothing changes.
    let allow = std::fs::read(fixtures::wasm("allow-all")).unwrap();
    let (status, _) = api
        .call(&c, Method::PUT, "/v1/policies/p/candidate", allow)
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let (status, last) = api
        .call(&c, Method::DELETE, "/v1/policies/p/candidate", Vec::new())
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{last}");
    assert_eq!(api.judge("x/1"), (Action::Redact, json!({"a":2})));
    // A candidate for a policy that does not exist, or that does not build, is refused.
    let (status, body) = api
        .call(
            &c,
            Method::PUT,
            "/v1/policies/nope/candidate",
            b"x".to_vec(),
        )
        .unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = api
        .call(
            &c,
            Method::PUT,
            "/v1/policies/p/candidate",
            b"garbage".to_vec(),
        )
        .unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

/// The breaker is visible and resettable through the API: a device that keeps making a policy
/// fault shows as held in `/v1/policies` and `/v1/status`, and a reset releases it.
#[test]
fn a_held_device_shows_in_the_api_and_a_reset_releases_it() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    std::fs::write(
        dir.path().join("twinguard.toml"),
        format!(
            "[[policy]]\nname = \"p\"\npath = {:?}\nbreaker-threshold = 2\n[policy.config]\n\
             mode = \"fault-if\"\n[[route]]\nfilter = \"#\"\nchain = [\"p\"]\n",
            fixtures::wasm("hostile").display().to_string()
        ),
    )
    .unwrap();
    let api = start(dir.path(), &pki, Some(&pki.ca), None);
    let c = api.client(&pki, true, None);
    let boom = |device: &str, boom: bool| {
        api.runtime.evaluate(&Message::new(
            device,
            "plant/x",
            ContentType::Json,
            format!("{{\"boom\": {boom}}}").into_bytes(),
        ))
    };
    boom("bad", true);
    boom("bad", true);
    assert!(matches!(
        boom("bad", false).action,
        Action::Quarantine { .. }
    ));
    assert_eq!(boom("good", false).action, Action::Allow);

    let (status, list) = api
        .call(&c, Method::GET, "/v1/policies", Vec::new())
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{list}");
    let breaker = &list[0]["breaker"];
    assert_eq!(breaker["open"], false, "{list}");
    assert_eq!(breaker["held_devices"][0]["device"], "bad", "{list}");
    assert_eq!(breaker["held_devices"][0]["faults"], 2, "{list}");
    let (_, status_body) = api.call(&c, Method::GET, "/v1/status", Vec::new()).unwrap();
    assert_eq!(status_body["breakers"][0]["policy"], "p", "{status_body}");
    assert_eq!(
        status_body["breakers"][0]["held_devices"], 1,
        "{status_body}"
    );

    let reset = |path: &str, body: &str| {
        api.call(&c, Method::POST, path, body.as_bytes().to_vec())
            .unwrap()
    };
    let (status, body) = reset("/v1/policies/p/breaker/reset", r#"{"device": "nobody"}"#);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = reset("/v1/policies/nope/breaker/reset", "");
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = reset("/v1/policies/p/breaker/reset", "{\"devices\": 1}");
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = reset("/v1/policies/p/breaker/reset", r#"{"device": "bad"}"#);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(boom("bad", false).action, Action::Allow, "judged again");
    let (_, list) = api
        .call(&c, Method::GET, "/v1/policies", Vec::new())
        .unwrap();
    assert_eq!(list[0]["breaker"]["held_devices"], json!([]), "{list}");
}

#[test]
fn a_flood_of_silent_connections_leaves_the_api_answering() {
    // An attacker opens far more connections than the cap, sends five bytes of a TLS hello on
    // each and goes silent. The operator's request
    // still gets its answer: silent peers are dropped after the handshake timeout, and the cap
    // keeps them from using up the process's descriptors meanwhile.
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let token = "0123456789abcdef-flood";
    let limits = AdminConfig {
        max_connections: 8,
        // Long enough that the operator's own handshake and request never miss it on a busy
        // machine; the silent peers wait it out five at a time.
        handshake_timeout_ms: 2_000,
        request_timeout_ms: 10_000,
        max_uploads: 1,
        ..AdminConfig::new(pki.server_cert.clone(), pki.server_key.clone())
    };
    let api = start_with(dir.path(), &pki, None, Some(token), Some(limits));
    let addr = api.url.trim_start_matches("https://").to_owned();
    let silent: Vec<std::net::TcpStream> = (0..40)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
            s
        })
        .collect();
    let client = api.client(&pki, false, Some(token));
    let (status, body) = api
        .call(&client, Method::GET, "/v1/status", Vec::new())
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    // Every silent connection was closed by the server (end of stream or reset), none left
    // open to hold a descriptor.
    for mut s in silent {
        s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        let mut buf = [0u8; 64];
        // A TLS alert before the close is fine; then the end. A read that times out is a
        // connection the server kept open.
        let closed = |r: std::io::Result<usize>| match r {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        let first = s.read(&mut buf);
        let open_after_alert = matches!(first, Ok(n) if n > 0);
        assert!(
            closed(first) || (open_after_alert && closed(s.read(&mut buf))),
            "a silent connection was left open"
        );
    }
}

#[test]
fn a_change_keeps_the_configs_mode_owner_and_symlink() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    // The operator keeps the config elsewhere, 0600 (it can hold a broker password), and
    // links it in.
    let real_dir = dir.path().join("etc");
    std::fs::create_dir(&real_dir).unwrap();
    let real = real_dir.join("twinguard.toml");
    std::fs::write(
        &real,
        CONFIG.replace(
            "{allow}",
            &fixtures::wasm("allow-all").display().to_string(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = dir.path().join("twinguard.toml");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let token = "0123456789abcdef-modes";
    let api = start(dir.path(), &pki, None, Some(token));
    let c = api.client(&pki, false, Some(token));
    let (status, body) = api.call_waived(
        &c,
        Method::PUT,
        "/v1/routes",
        br#"[{"filter":"y/#","chain":["p"]}]"#.to_vec(),
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let text = std::fs::read_to_string(&real).unwrap();
    assert!(
        text.contains("y/#") && text.contains("the operator's own comment"),
        "{text}"
    );
    assert_eq!(
        std::fs::metadata(&real).unwrap().permissions().mode() & 0o777,
        0o600
    );
}
