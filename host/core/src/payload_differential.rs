//! Randomized differential tests: the lazy lookups against serde_json / cbor4ii full parses.
//! The module's own tests (in payload/tests.rs) are the fixed cases; these are the randomized ones.

use crate::payload::{redact, Document, Edit, EditAction, FieldError, FieldValue, Format};
use cbor4ii::core::enc::Encode;
use serde_json::Value as Jv;

use crate::convert::to_cbor;

/// Whether some object of a JSON text that serde_json parses has a key twice, and whether the
/// root does. serde_json keeps the last copy silently; a lookup through (or of) such an object
/// is refused, so the reference verdict is serde_json's and this.
fn duplicate_keys(bytes: &[u8]) -> (bool, bool) {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    #[derive(Default)]
    struct Dups {
        any: bool,
        root: bool,
        depth: usize,
    }
    impl<'de> DeserializeSeed<'de> for &mut Dups {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for &mut Dups {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            self.depth += 1;
            while seq.next_element_seed(&mut *self)?.is_some() {}
            self.depth -= 1;
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            let root = self.depth == 0;
            self.depth += 1;
            while let Some(key) = map.next_key::<String>()? {
                if !seen.insert(key) {
                    self.any = true;
                    self.root |= root;
                }
                map.next_value_seed(&mut *self)?;
            }
            self.depth -= 1;
            Ok(())
        }
    }
    let mut dups = Dups::default();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let ok = (&mut dups).deserialize(&mut de).is_ok();
    (ok && dups.any, ok && dups.root)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const KEYS: &[&str] = &[
    "a",
    "b",
    "k",
    "a/b",
    "m~n",
    "é",
    "",
    "\"q\"",
    "long-key-name-1",
    "x\\y",
    "\u{1F600}",
];

fn gen_text(r: &mut Rng) -> String {
    let mut s = String::new();
    for _ in 0..r.below(12) {
        s.push_str(r.pick(&[
            "a",
            "Z",
            " ",
            "é",
            "\u{1F600}",
            "\"",
            "\\",
            "/",
            "\n",
            "\u{1}",
            "~",
            "0123456789",
        ]));
    }
    s
}

fn gen_json(r: &mut Rng, depth: u32) -> Jv {
    match r.below(if depth > 3 { 6 } else { 9 }) {
        0 => Jv::Null,
        1 => Jv::Bool(r.below(2) == 0),
        2 => Jv::from(r.next() as i64 >> r.below(64)),
        3 => Jv::from(r.next() >> r.below(64)),
        // Short decimals: serde_json (without float_roundtrip) rounds long ones off by an ulp.
        4 => Jv::from(f64::from(r.next() as i32 >> 8) / 64.0),
        5 => Jv::String(gen_text(r)),
        6 | 7 => Jv::Object(
            (0..r.below(6))
                .map(|_| (r.pick(KEYS).to_owned(), gen_json(r, depth + 1)))
                .collect(),
        ),
        _ => Jv::Array((0..r.below(6)).map(|_| gen_json(r, depth + 1)).collect()),
    }
}

/// Writes JSON with random whitespace, random escapes, and duplicate keys now and then.
fn write_json(r: &mut Rng, v: &Jv, out: &mut String) {
    let ws = |r: &mut Rng, out: &mut String| {
        if r.below(4) == 0 {
            out.push_str(r.pick(&[" ", "\n", "\t ", "\r\n  "]));
        }
    };
    let string = |r: &mut Rng, s: &str, out: &mut String| {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c if r.below(5) == 0 => {
                    let mut buf = [0u16; 2];
                    for unit in c.encode_utf16(&mut buf) {
                        out.push_str(&format!("\\u{:04X}", unit));
                    }
                }
                '/' if r.below(2) == 0 => out.push_str("\\/"),
                c => out.push(c),
            }
        }
        out.push('"');
    };
    ws(r, out);
    match v {
        Jv::Object(m) => {
            out.push('{');
            let mut first = true;
            for (k, x) in m {
                if r.below(8) == 0 {
                    // A duplicate before the real one: the payload must be refused.
                    if !first {
                        out.push(',');
                    }
                    string(r, k, out);
                    out.push(':');
                    out.push_str("\"shadowed\"");
                    first = false;
                }
                if !first {
                    out.push(',');
                }
                ws(r, out);
                string(r, k, out);
                ws(r, out);
                out.push(':');
                write_json(r, x, out);
                first = false;
            }
            ws(r, out);
            out.push('}');
        }
        Jv::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(r, x, out);
            }
            out.push(']');
        }
        Jv::String(s) => string(r, s, out),
        other => out.push_str(&other.to_string()),
    }
    ws(r, out);
}

/// A generated document, and its text as written (whitespace, escapes and sometimes a key
/// twice, as `write_json` chooses).
fn gen_written(r: &mut Rng) -> (Jv, String) {
    let v = gen_json(r, 0);
    let mut text = String::new();
    write_json(r, &v, &mut text);
    (v, text)
}

fn escape_token(t: &str) -> String {
    t.replace('~', "~0").replace('/', "~1")
}

fn expected_json(v: &Jv) -> FieldValue {
    match v {
        Jv::Null => FieldValue::Null,
        Jv::Bool(b) => FieldValue::Bool(*b),
        Jv::Number(n) => match n.as_i64() {
            Some(i) if !n.is_f64() => FieldValue::Integer(i),
            _ => FieldValue::Float(n.as_f64().unwrap()),
        },
        Jv::String(s) => FieldValue::Text(s.clone()),
        Jv::Array(a) => FieldValue::Array(a.len() as u32),
        Jv::Object(m) => FieldValue::Object(m.len() as u32),
    }
}

/// Every path of `v`, with the value serde_json has there.
fn paths<'a>(v: &'a Jv, prefix: String, out: &mut Vec<(String, &'a Jv)>) {
    out.push((prefix.clone(), v));
    match v {
        Jv::Object(m) => m
            .iter()
            .for_each(|(k, x)| paths(x, format!("{prefix}/{}", escape_token(k)), out)),
        Jv::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, x)| paths(x, format!("{prefix}/{i}"), out)),
        _ => {}
    }
}

#[test]
fn json_lookups_match_serde_json() {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut duplicated = 0;
    for _ in 0..3000 {
        let (_, text) = gen_written(&mut r);
        let parsed: Jv = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        let mut doc = Document::new(Some(Format::Json), text.clone().into_bytes());
        let (dup, _) = duplicate_keys(text.as_bytes());
        let mut all = Vec::new();
        paths(&parsed, String::new(), &mut all);
        for (pointer, value) in all {
            match doc.field(&pointer) {
                // A path through no duplicated key finds what serde_json finds.
                Ok(found) => assert_eq!(found, Some(expected_json(value)), "{pointer} in {text}"),
                Err(FieldError::Malformed(m)) if dup && m.contains("duplicate key") => {
                    duplicated += 1;
                }
                Err(e) => panic!("{pointer} in {text}: {e}"),
            }
        }
    }
    // The generator writes a duplicate now and then: lookups through one were checked too.
    assert!(duplicated > 100, "{duplicated}");
}

/// Pointers that find nothing, or fail, in a document whose paths are `all`: keys it lacks, a
/// token past a scalar, array tokens that are not indexes or are out of range.
fn absent_pointers(r: &mut Rng, all: &[(String, &Jv)]) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..8 {
        let (base, _) = &all[r.below(all.len() as u64) as usize];
        let token = r.pick(&[
            "zz",
            "a",
            "0",
            "01",
            "-",
            "7",
            "m~0n",
            "a~1b",
            "",
            "long-key-name-2",
        ]);
        out.push(format!("{base}/{token}"));
    }
    out
}

/// Checks [`Document::get_all`] against one [`Document::field`] per pointer, on `bytes`.
fn check_grouped(r: &mut Rng, format: Option<Format>, bytes: &[u8], candidates: &[String]) {
    use crate::payload::{Pointer, PointerSet};
    // Up to 40 pointers, so that some containers take more than one group; a pointer may come
    // twice.
    let n = 1 + r.below(40) as usize;
    let chosen: Vec<&String> = (0..n)
        .map(|_| &candidates[r.below(candidates.len() as u64) as usize])
        .collect();
    let pointers: Vec<Pointer> = chosen.iter().map(|p| Pointer::parse(p).unwrap()).collect();
    let set = PointerSet::new(&pointers);
    let mut grouped: Vec<Option<Result<Option<FieldValue>, FieldError>>> = vec![None; n];
    Document::new(format, bytes.to_vec()).get_all(&set, |i, result| {
        assert!(grouped[i].is_none(), "pointer {i} answered twice");
        grouped[i] = Some(result.map(|v| v.map(crate::payload::FieldRef::into_owned)));
    });
    let mut single = Document::new(format, bytes.to_vec());
    let text = String::from_utf8_lossy(bytes);
    for (i, pointer) in chosen.iter().enumerate() {
        let expected = single.field(pointer);
        assert_eq!(grouped[i], Some(expected), "{pointer} in {text}");
    }
}

#[test]
fn grouped_lookups_match_single_lookups() {
    let mut r = Rng(0x0bad_5eed_1234_5678);
    let mut twice = 0;
    for round in 0..3000 {
        let (v, text) = gen_written(&mut r);
        let parsed: Jv = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        let mut all = Vec::new();
        paths(&parsed, String::new(), &mut all);
        let mut candidates = absent_pointers(&mut r, &all);
        candidates.extend(all.iter().map(|(p, _)| p.clone()));
        twice += usize::from(duplicate_keys(text.as_bytes()).0);
        check_grouped(&mut r, Some(Format::Json), text.as_bytes(), &candidates);
        let mut w = cbor4ii::core::utils::BufWriter::new(Vec::new());
        to_cbor(&v).encode(&mut w).unwrap();
        let cbor = w.into_inner();
        check_grouped(&mut r, Some(Format::Cbor), &cbor, &candidates);
        // Malformed and unstructured payloads fail every pointer alike.
        if round % 10 == 0 {
            let cut = &text.as_bytes()[..text.len() / 2];
            check_grouped(&mut r, Some(Format::Json), cut, &candidates);
            check_grouped(&mut r, None, text.as_bytes(), &candidates);
        }
    }
    // Documents with a key twice were among them (lookups through one fail with its name).
    assert!(twice > 100, "{twice}");
}

const JSON_BYTES: &[&str] = &[
    "{", "}", "[", "]", ",", ":", "\"", "\\", "u", "0", "1", "-", ".", "e", "+", "t", "n", "f",
    " ", "\u{1}", "\u{e9}", "d8",
];

#[test]
fn json_validity_matches_serde_json_under_mutation() {
    let mut r = Rng(0x1234_5678_9abc_def1);
    let mut checked = 0;
    for _ in 0..20000 {
        let (_, text) = gen_written(&mut r);
        let mut bytes = text.into_bytes();
        for _ in 0..=r.below(3) {
            let at = r.below(bytes.len() as u64 + 1) as usize;
            match r.below(3) {
                0 if at < bytes.len() => {
                    bytes.remove(at);
                }
                1 if at < bytes.len() => {
                    bytes[at] = r.pick(JSON_BYTES).as_bytes()[0];
                }
                _ => {
                    for (i, b) in r.pick(JSON_BYTES).bytes().enumerate() {
                        bytes.insert(at + i, b);
                    }
                }
            }
        }
        let theirs = serde_json::from_slice::<Jv>(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|v| {
                // The lookup of "" returns the root: refused when the root has a key twice.
                if duplicate_keys(&bytes).1 {
                    Err("duplicate key".to_owned())
                } else {
                    Ok(v)
                }
            });
        if let Err(e) = &theirs {
            // The tape does not decode numbers until asked for one.
            if e.to_string().contains("number out of range") {
                continue;
            }
        }
        let ours = Document::new(Some(Format::Json), bytes.clone()).field("");
        assert_eq!(
            ours.is_ok(),
            theirs.is_ok(),
            "{:?}: ours {ours:?}, theirs {theirs:?}",
            String::from_utf8_lossy(&bytes)
        );
        // Redaction parses with serde_json: it must agree as well.
        let red = redact(
            Format::Json,
            &bytes,
            &[Edit {
                pointer: "/a".into(),
                action: EditAction::Remove,
            }],
        );
        // An edit through a duplicated key is refused while the rest parses: compare where
        // there is none.
        if !duplicate_keys(&bytes).0 {
            assert_eq!(red.is_ok(), theirs.is_ok());
        }
        checked += 1;
    }
    assert!(checked > 15000);
}

#[test]
fn cbor_lookups_and_redaction_match() {
    let mut r = Rng(0xdead_beef_cafe_f00d);
    for _ in 0..3000 {
        let v = gen_json(&mut r, 0);
        let mut w = cbor4ii::core::utils::BufWriter::new(Vec::new());
        to_cbor(&v).encode(&mut w).unwrap();
        let bytes = w.into_inner();
        let mut doc = Document::new(Some(Format::Cbor), bytes.clone());
        let mut all = Vec::new();
        paths(&v, String::new(), &mut all);
        for (pointer, value) in &all {
            assert_eq!(
                doc.field(pointer),
                Ok(Some(expected_json(value))),
                "{pointer}"
            );
        }
        // Redacting in JSON and in CBOR gives the same document.
        let (pointer, _) = &all[r.below(all.len() as u64) as usize];
        if pointer.is_empty() {
            continue;
        }
        let action = if r.below(2) == 0 {
            EditAction::Remove
        } else {
            EditAction::Mask("m".into())
        };
        let edits = [Edit {
            pointer: pointer.clone(),
            action,
        }];
        let json = redact(Format::Json, v.to_string().as_bytes(), &edits)
            .unwrap()
            .unwrap();
        let cbor = redact(Format::Cbor, &bytes, &edits).unwrap().unwrap();
        let json: Jv = serde_json::from_slice(&json).unwrap();
        let mut w = cbor4ii::core::utils::BufWriter::new(Vec::new());
        to_cbor(&json).encode(&mut w).unwrap();
        assert_eq!(cbor, w.into_inner(), "{pointer} on {v}");
        // And a CBOR truncated anywhere is malformed, never a panic.
        let cut = r.below(bytes.len() as u64) as usize;
        assert!(Document::new(Some(Format::Cbor), bytes[..cut].to_vec())
            .field("")
            .is_err());
    }
}

/// The reference: serde_json's tree, edited in place.
fn reference_apply(root: &mut Jv, pointer: &str, action: &EditAction) -> bool {
    let mut tokens: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect();
    let Some(last) = tokens.pop() else {
        return false;
    };
    let index = |t: &str| -> Option<usize> {
        if t == "0"
            || (t.starts_with(|c: char| ('1'..='9').contains(&c))
                && t.bytes().all(|b| b.is_ascii_digit()))
        {
            t.parse().ok()
        } else {
            None
        }
    };
    let mut node = root;
    for t in &tokens {
        node = match node {
            Jv::Object(m) => match m.get_mut(t.as_str()) {
                Some(v) => v,
                None => return false,
            },
            Jv::Array(a) => match index(t).and_then(|i| a.get_mut(i)) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (node, action) {
        (Jv::Object(m), EditAction::Remove) => m.shift_remove(last.as_str()).is_some(),
        (Jv::Object(m), EditAction::Mask(s)) => m
            .get_mut(last.as_str())
            .map(|v| *v = Jv::String(s.clone()))
            .is_some(),
        (Jv::Array(a), EditAction::Remove) => match index(&last) {
            Some(i) if i < a.len() => {
                a.remove(i);
                true
            }
            _ => false,
        },
        (Jv::Array(a), EditAction::Mask(s)) => index(&last)
            .and_then(|i| a.get_mut(i))
            .map(|v| *v = Jv::String(s.clone()))
            .is_some(),
        _ => false,
    }
}

#[test]
fn json_redaction_matches_serde_json_reference() {
    let mut r = Rng(0x5151_abab_7777_0101);
    let mut changed = 0;
    for _ in 0..5000 {
        let (_, text) = gen_written(&mut r);
        let mut reference: Jv = serde_json::from_str(&text).unwrap();
        let mut all = Vec::new();
        paths(&reference, String::new(), &mut all);
        let mut pointers: Vec<String> = all
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| !p.is_empty())
            .collect();
        pointers.push("/nope".into());
        pointers.push("/0/0".into());
        let edits: Vec<Edit> = (0..=r.below(3))
            .map(|_| Edit {
                pointer: pointers[r.below(pointers.len() as u64) as usize].clone(),
                action: if r.below(2) == 0 {
                    EditAction::Remove
                } else {
                    EditAction::Mask(gen_text(&mut r))
                },
            })
            .collect();
        let mut any = false;
        for e in &edits {
            any |= reference_apply(&mut reference, &e.pointer, &e.action);
        }
        if duplicate_keys(text.as_bytes()).0 {
            // serde_json's reference merges copies; ours refuses an edit through one and
            // keeps the rest verbatim (the unit tests hold those cases).
            continue;
        }
        // The text as generated (whitespace here and there), and without any: an untouched
        // container of a compact payload is copied whole, of a spaced one piece by piece.
        for text in [text.clone(), strip_whitespace(&text)] {
            let ours = redact(Format::Json, text.as_bytes(), &edits).unwrap();
            match ours {
                None => assert!(!any, "{edits:?} on {text}"),
                Some(out) => {
                    assert!(any, "{edits:?} on {text}");
                    changed += 1;
                    let got: Jv = serde_json::from_slice(&out)
                        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)));
                    assert_eq!(got, reference, "{edits:?} on {text}");
                    // Member order too (serde_json's Value compares maps without order).
                    assert_eq!(got.to_string(), reference.to_string());
                    let out = std::str::from_utf8(&out).unwrap();
                    assert_eq!(strip_whitespace(out), out, "not compact");
                }
            }
        }
    }
    // About a third of the documents carry a duplicate (refused above); each other one is
    // redacted twice.
    assert!(changed > 1000, "{changed}");
}

/// `text` without the whitespace between its tokens (strings kept as they are).
fn strip_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if matches!(c, ' ' | '\n' | '\r' | '\t') {
            continue;
        }
        out.push(c);
    }
    out
}

/// Random and mutated inputs through every entry point: errors are fine, panics are not (this
/// runs with debug assertions, so integer overflow would panic too).
#[test]
fn no_panics_on_garbage() {
    let mut r = Rng(0x0bad_f00d_dead_c0de);
    let pointers = ["", "/", "/0", "/a", "/a/0/b", "/k/k/k", "/~0", "/0/0/0/0"];
    for round in 0..20000 {
        let v = gen_json(&mut r, 0);
        let mut bytes = if round % 2 == 0 {
            let mut w = cbor4ii::core::utils::BufWriter::new(Vec::new());
            to_cbor(&v).encode(&mut w).unwrap();
            w.into_inner()
        } else {
            v.to_string().into_bytes()
        };
        for _ in 0..=r.below(4) {
            let at = r.below(bytes.len() as u64 + 1) as usize;
            let byte = r.next() as u8;
            match r.below(3) {
                0 if at < bytes.len() => {
                    bytes.remove(at);
                }
                1 if at < bytes.len() => bytes[at] = byte,
                _ => bytes.insert(at, byte),
            }
        }
        if round % 7 == 0 {
            bytes = (0..r.below(40)).map(|_| r.next() as u8).collect();
        }
        for format in [Format::Cbor, Format::Json] {
            let mut doc = Document::new(Some(format), bytes.clone());
            for p in pointers {
                let _ = doc.field(p);
            }
            let edits = [
                Edit {
                    pointer: pointers[1 + r.below(7) as usize].into(),
                    action: EditAction::Remove,
                },
                Edit {
                    pointer: pointers[1 + r.below(7) as usize].into(),
                    action: EditAction::Mask("m".into()),
                },
            ];
            if let Ok(Some(out)) = redact(format, &bytes, &edits) {
                // What redaction writes parses again.
                assert!(Document::new(Some(format), out).field("").is_ok());
            }
        }
    }
}
