//! What several benches share: the ~1 KB telemetry document they judge.

/// A ~1 KB JSON document: `head` (its first members, e.g. `"seq":1,`), then 36 readings, a
/// status and an owner whose name pii-redact masks.
pub fn telemetry(head: &str) -> Vec<u8> {
    use std::fmt::Write as _;
    let mut doc = format!(r#"{{{head}"readings":{{"#);
    for s in 0..36 {
        let _ = write!(doc, r#""sensor_{s:02}":{:.2},"#, 20.0 + f64::from(s) * 0.37);
    }
    doc.push_str(r#""status":"running"},"owner":{"name":"Ada Lovelace","badge":4711}}"#);
    doc.into_bytes()
}
