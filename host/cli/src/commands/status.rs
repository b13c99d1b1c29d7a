//! `twinguard status`: the live counters of a running `serve` (or Mosquitto plugin), read
//! from its telemetry listener (`/readyz` and `/metrics`) as an operator would at a terminal.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use serde_json::{json, Value};

/// Arguments of `status`.
#[derive(clap::Args)]
pub struct Args {
    /// The config file of the running `serve`: its `[telemetry] listen` is where to ask.
    #[arg(long, conflicts_with = "url")]
    config: Option<PathBuf>,
    /// The telemetry listener, e.g. `http://127.0.0.1:9464` (instead of `--config`).
    #[arg(long)]
    url: Option<String>,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    json: bool,
}

/// One sample of the exposition: its labels and value.
type Samples = Vec<(BTreeMap<String, String>, f64)>;

pub fn run(args: &Args) -> Result<ExitCode> {
    let url = match (&args.url, &args.config) {
        (Some(u), _) => u.trim_end_matches('/').to_owned(),
        (None, Some(c)) => {
            let file = twinguard::FileConfig::from_file(c)?;
            let Some(t) = file.telemetry else {
                bail!(
                    "{}: no [telemetry] table: serve has no metrics listener to ask (add \
                     [telemetry] listen = \"127.0.0.1:9464\" and restart it)",
                    c.display()
                );
            };
            if t.listen.ends_with(":0") {
                bail!(
                    "{}: [telemetry] listen = {:?} picks a port at start; give it with --url",
                    c.display(),
                    t.listen
                );
            }
            format!("http://{}", t.listen)
        }
        (None, None) => bail!("say where serve listens: --config F or --url http://HOST:PORT"),
    };
    let authority = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: the telemetry listener speaks http:// only"))?
        .to_owned();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (ready, metrics) = rt.block_on(async {
        let ready = get(&authority, "/readyz").await?;
        let metrics = get(&authority, "/metrics").await?;
        anyhow::Ok((ready, metrics))
    })?;
    if metrics.0 != 200 {
        bail!("{url}/metrics answered {}: {}", metrics.0, metrics.1.trim());
    }
    let families = parse(&metrics.1);
    let report = summarise(&url, ready.0 == 200, ready.1.trim(), &families);
    let mut out = crate::Out::stdout();
    if args.json {
        writeln!(out, "{report}")?;
    } else {
        print(&mut out, &report)?;
    }
    out.flush()?;
    Ok(if ready.0 == 200 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

async fn get(authority: &str, path: &str) -> Result<(u16, String)> {
    let at = |what: &str| format!("http://{authority}{path}: {what}");
    let tcp = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::net::TcpStream::connect(authority),
    )
    .await
    .map_err(|_| anyhow::anyhow!(at("no answer within 10 s")))?
    .with_context(|| at("cannot connect (is serve running with a [telemetry] table?)"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .with_context(|| at("HTTP handshake"))?;
    tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .body(Empty::<Bytes>::new())
        .with_context(|| at("request"))?;
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        sender.send_request(request),
    )
    .await
    .map_err(|_| anyhow::anyhow!(at("no answer within 30 s")))?
    .with_context(|| at("request"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .with_context(|| at("reading the answer"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The Prometheus text exposition, by metric name.
fn parse(text: &str) -> BTreeMap<String, Samples> {
    let mut families: BTreeMap<String, Samples> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some((s, v)) => (s.trim(), v),
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, labels(rest.strip_suffix('}').unwrap_or(rest))),
            None => (series, BTreeMap::new()),
        };
        families
            .entry(name.to_owned())
            .or_default()
            .push((labels, value));
    }
    families
}

/// `a="x",b="y\"z"` → {a: x, b: y"z}.
fn labels(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => {}
                },
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').trim().to_owned(), value);
        rest = &after[end..];
    }
    out
}

fn get_one(f: &BTreeMap<String, Samples>, name: &str) -> Option<f64> {
    f.get(name).and_then(|s| s.first()).map(|(_, v)| *v)
}

/// Sums the samples of `name` by the value of `by`, for those matching `filter`.
fn by_label(
    f: &BTreeMap<String, Samples>,
    name: &str,
    group: &str,
    by: &str,
) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut out: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for (labels, v) in f.get(name).into_iter().flatten() {
        let g = labels.get(group).cloned().unwrap_or_default();
        let k = labels.get(by).cloned().unwrap_or_default();
        *out.entry(g).or_default().entry(k).or_default() += v;
    }
    out
}

fn summarise(url: &str, ready: bool, why: &str, f: &BTreeMap<String, Samples>) -> Value {
    let gateways: Vec<Value> = by_label(
        f,
        "twinguard_gateway_messages_total",
        "twinguard_gateway",
        "twinguard_stage",
    )
    .into_iter()
    .map(|(name, stages)| {
        let pick = |metric: &str| {
            f.get(metric)
                .into_iter()
                .flatten()
                .find(|(l, _)| l.get("twinguard_gateway") == Some(&name))
                .map(|(_, v)| *v)
        };
        json!({
            "name": name,
            "connected": pick("twinguard_gateway_connected") == Some(1.0),
            "connections": pick("twinguard_gateway_connections_total"),
            "writes": pick("twinguard_gateway_writes_total"),
            "packets_sent": pick("twinguard_gateway_packets_sent_total"),
            "messages": stages,
        })
    })
    .collect();
    let routes = by_label(
        f,
        "twinguard_messages_total",
        "twinguard_route",
        "twinguard_action",
    );
    let verdicts = by_label(
        f,
        "twinguard_policy_evaluations_total",
        "twinguard_policy_name",
        "twinguard_verdict",
    );
    let faults = by_label(
        f,
        "twinguard_policy_faults_total",
        "twinguard_policy_name",
        "error_type",
    );
    let open = by_label(
        f,
        "twinguard_policy_breaker_open",
        "twinguard_policy_name",
        "twinguard_policy_version",
    );
    let policies: Vec<Value> = verdicts
        .iter()
        .map(|(name, v)| {
            json!({
                "name": name,
                "verdicts": v,
                "faults": faults.get(name),
                "breaker_open": open.get(name).is_some_and(|o| o.values().any(|x| *x > 0.0)),
            })
        })
        .collect();
    json!({
        "url": url,
        "ready": ready,
        "readiness": why,
        "generation": get_one(f, "twinguard_generation"),
        "policies_loaded": get_one(f, "twinguard_policies"),
        "gateways": gateways,
        "routes": routes,
        "policies": policies,
        "quarantine": {
            "held": get_one(f, "twinguard_quarantine_held"),
            "oldest_age_seconds": get_one(f, "twinguard_quarantine_oldest_age_seconds"),
        },
    })
}

fn print(out: &mut crate::Out, r: &Value) -> Result<()> {
    let n = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.0}"));
    writeln!(
        out,
        "{}: {}",
        r["url"].as_str().unwrap_or_default(),
        if r["ready"] == true {
            "ready".to_owned()
        } else {
            format!(
                "NOT READY ({})",
                r["readiness"].as_str().unwrap_or_default()
            )
        }
    )?;
    writeln!(
        out,
        "generation {}, {} policies",
        n(&r["generation"]),
        n(&r["policies_loaded"])
    )?;
    for g in r["gateways"].as_array().into_iter().flatten() {
        let m = &g["messages"];
        writeln!(
            out,
            "gateway {}: {} ({} connections); received {}, forwarded {}, quarantined {}, refused {}, store failed {}; {} packets sent in {} writes",
            g["name"],
            if g["connected"] == true { "connected" } else { "NOT CONNECTED" },
            n(&g["connections"]),
            n(&m["received"]),
            n(&m["forwarded"]),
            n(&m["quarantined"]),
            n(&m["refused"]),
            n(&m["store_failed"]),
            n(&g["packets_sent"]),
            n(&g["writes"]),
        )?;
    }
    for (route, a) in r["routes"].as_object().into_iter().flatten() {
        writeln!(
            out,
            "route {route}: allow {}, redact {}, alert {}, quarantine {}",
            n(&a["allow"]),
            n(&a["redact"]),
            n(&a["alert"]),
            n(&a["quarantine"])
        )?;
    }
    writeln!(
        out,
        "{:<20} {:>9} {:>9} {:>9} {:>11} {:>9}  breaker",
        "POLICY", "ALLOW", "REDACT", "ALERT", "QUARANTINE", "FAULT"
    )?;
    for p in r["policies"].as_array().into_iter().flatten() {
        let v = &p["verdicts"];
        writeln!(
            out,
            "{:<20} {:>9} {:>9} {:>9} {:>11} {:>9}  {}",
            p["name"].as_str().unwrap_or_default(),
            n(&v["allow"]),
            n(&v["redact"]),
            n(&v["alert"]),
            n(&v["quarantine"]),
            n(&v["fault"]),
            if p["breaker_open"] == true {
                "OPEN"
            } else {
                "closed"
            }
        )?;
    }
    let q = &r["quarantine"];
    writeln!(
        out,
        "quarantine: {} held, oldest {} s",
        n(&q["held"]),
        n(&q["oldest_age_seconds"])
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_with_quotes_commas_and_escapes() {
        let l = labels(r##"a="x",b="y\"z,w",c="#""##);
        assert_eq!(l["a"], "x");
        assert_eq!(l["b"], "y\"z,w");
        assert_eq!(l["c"], "#");
    }

    #[test]
    fn exposition_lines_become_samples_by_name() {
        let f =
            parse("# HELP x y\n# TYPE x counter\nx_total{k=\"v\"} 3\nx_total{k=\"w\"} 4\ng 1.5\n");
        assert_eq!(f["x_total"].len(), 2);
        assert_eq!(get_one(&f, "g"), Some(1.5));
        let by = by_label(&f, "x_total", "none", "k");
        assert_eq!(by[""]["v"] + by[""]["w"], 7.0);
    }
}
