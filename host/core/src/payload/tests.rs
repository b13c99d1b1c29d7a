//! Unit tests of field lookups and redaction, on hand-written payloads; the differential tests
//! against serde_json and cbor4ii are in `payload_differential.rs`.

use super::*;
use cbor4ii::core::dec::Decode;
use cbor4ii::core::enc::Encode;
use cbor4ii::core::utils::{BufWriter, SliceReader};
use cbor4ii::core::Value as Cv;
use serde_json::Value as JsonValue;

fn json(text: &str) -> Document {
    Document::new(Some(Format::Json), text.as_bytes().to_vec())
}

fn cbor(value: &Cv) -> Document {
    Document::new(Some(Format::Cbor), cbor_bytes(value))
}

fn cbor_bytes(value: &Cv) -> Vec<u8> {
    let mut writer = BufWriter::new(Vec::new());
    value.encode(&mut writer).unwrap();
    writer.into_inner()
}

fn cbor_value(bytes: &[u8]) -> Cv {
    Cv::decode(&mut SliceReader::new(bytes)).unwrap()
}

fn get(doc: &mut Document, pointer: &str) -> Option<FieldValue> {
    doc.field(pointer)
        .unwrap_or_else(|e| panic!("lookup of {pointer:?} failed: {e}"))
}

fn text(s: &str) -> FieldValue {
    FieldValue::Text(s.to_owned())
}

fn t(s: &str) -> Cv {
    Cv::Text(s.to_owned())
}

fn malformed(result: Result<Option<FieldValue>, FieldError>) -> String {
    match result {
        Err(FieldError::Malformed(why)) => why,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

fn edit(pointer: &str, action: EditAction) -> Edit {
    Edit {
        pointer: pointer.to_owned(),
        action,
    }
}

#[test]
fn document_redaction_agrees_with_redact_with_and_without_an_index() {
    let input = br#"{"a":{"b":1,"c":"x"},"l":[1,2,3],"s":"t\u00e9"}"#;
    let cases: [&[Edit]; 4] = [
        &[remove("/a/b")],
        &[mask("/a", "***"), remove("/l/1")],
        &[remove("/missing")],
        &[mask("/s", "\"q\""), remove("/l/0"), remove("/l/0")],
    ];
    for edits in cases {
        let expected = redact(Format::Json, input, edits).unwrap();
        for looked_up in [false, true] {
            let mut doc = Document::new(Some(Format::Json), input.to_vec());
            if looked_up {
                assert!(get(&mut doc, "/l/2").is_some());
            }
            let changed = doc.redact(edits).unwrap();
            assert_eq!(changed, expected.is_some(), "{edits:?}");
            let bytes = expected.clone().unwrap_or_else(|| input.to_vec());
            assert_eq!(
                doc.bytes(),
                &bytes[..],
                "{edits:?}, looked up first: {looked_up}"
            );
            // The index of the old payload is gone: lookups see the redacted one.
            let mut fresh = Document::new(Some(Format::Json), bytes.clone());
            for pointer in ["/a", "/a/b", "/l/0", "/l/1", "/s"] {
                assert_eq!(
                    get(&mut doc, pointer),
                    get(&mut fresh, pointer),
                    "{pointer}"
                );
            }
        }
    }
    // A lookup that found the payload malformed does not make redaction succeed.
    let mut doc = Document::new(Some(Format::Json), b"{\"a\":".to_vec());
    assert!(doc.field("/a").is_err());
    assert!(matches!(
        doc.redact(&[remove("/a")]),
        Err(RedactError::Malformed(_))
    ));
    // Pointers are checked even when the index exists.
    let mut doc = Document::new(Some(Format::Json), b"{\"a\":1}".to_vec());
    assert!(get(&mut doc, "/a").is_some());
    assert_eq!(doc.redact(&[remove("")]), Err(RedactError::WholeDocument));
    assert!(matches!(
        doc.redact(&[remove("a")]),
        Err(RedactError::BadPointer(_))
    ));
    // Text and binary payloads have nothing to redact.
    let mut doc = Document::new(None, b"hello".to_vec());
    assert_eq!(doc.redact(&[remove("/a")]), Ok(false));
}

fn remove(pointer: &str) -> Edit {
    edit(pointer, EditAction::Remove)
}

fn mask(pointer: &str, with: &str) -> Edit {
    edit(pointer, EditAction::Mask(with.to_owned()))
}

fn redacted_json(input: &str, edits: &[Edit]) -> Option<String> {
    redact(Format::Json, input.as_bytes(), edits)
        .unwrap()
        .map(|out| String::from_utf8(out).unwrap())
}

const TELEMETRY: &str = r#"{
        "device": "sensor-7",
        "seq": 42,
        "temp": 21.5,
        "ok": true,
        "error": null,
        "gps": {"lat": 48.85, "lon": 2.35, "fix": {"sats": 9}},
        "readings": [10, 11, {"peak": 12}],
        "empty": {},
        "none": []
    }"#;

#[test]
fn json_every_kind_and_depth() {
    let mut doc = json(TELEMETRY);
    assert_eq!(get(&mut doc, "/device"), Some(text("sensor-7")));
    assert_eq!(get(&mut doc, "/seq"), Some(FieldValue::Integer(42)));
    assert_eq!(get(&mut doc, "/temp"), Some(FieldValue::Float(21.5)));
    assert_eq!(get(&mut doc, "/ok"), Some(FieldValue::Bool(true)));
    assert_eq!(get(&mut doc, "/error"), Some(FieldValue::Null));
    assert_eq!(get(&mut doc, "/gps/lat"), Some(FieldValue::Float(48.85)));
    assert_eq!(get(&mut doc, "/gps/fix/sats"), Some(FieldValue::Integer(9)));
    assert_eq!(get(&mut doc, "/readings/1"), Some(FieldValue::Integer(11)));
    assert_eq!(
        get(&mut doc, "/readings/2/peak"),
        Some(FieldValue::Integer(12))
    );
    assert_eq!(get(&mut doc, ""), Some(FieldValue::Object(9)));
    assert_eq!(get(&mut doc, "/gps"), Some(FieldValue::Object(3)));
    assert_eq!(get(&mut doc, "/readings"), Some(FieldValue::Array(3)));
    assert_eq!(get(&mut doc, "/empty"), Some(FieldValue::Object(0)));
    assert_eq!(get(&mut doc, "/none"), Some(FieldValue::Array(0)));
    // Memoized nested indexes give the same answers the second time.
    assert_eq!(get(&mut doc, "/gps/fix/sats"), Some(FieldValue::Integer(9)));
    assert_eq!(get(&mut doc, "/gps/lon"), Some(FieldValue::Float(2.35)));
}

#[test]
fn json_root_of_any_kind() {
    assert_eq!(get(&mut json(" [1, 2] "), ""), Some(FieldValue::Array(2)));
    assert_eq!(
        get(&mut json("[1, [2, 3]]"), "/1/0"),
        Some(FieldValue::Integer(2))
    );
    assert_eq!(get(&mut json("\"hi\""), ""), Some(text("hi")));
    assert_eq!(get(&mut json(" 7 "), ""), Some(FieldValue::Integer(7)));
    assert_eq!(get(&mut json("null"), ""), Some(FieldValue::Null));
    assert_eq!(get(&mut json("false"), ""), Some(FieldValue::Bool(false)));
    assert_eq!(get(&mut json("7"), "/x"), None);
}

#[test]
fn json_numbers() {
    let mut doc = json(
        r#"{"max": 9223372036854775807, "min": -9223372036854775808,
                "big": 9223372036854775808, "small": -9223372036854775809,
                "exp": 1e3, "frac": -0.25, "zero": 0}"#,
    );
    assert_eq!(get(&mut doc, "/max"), Some(FieldValue::Integer(i64::MAX)));
    assert_eq!(get(&mut doc, "/min"), Some(FieldValue::Integer(i64::MIN)));
    assert_eq!(
        get(&mut doc, "/big"),
        Some(FieldValue::Float(9_223_372_036_854_775_808.0))
    );
    assert_eq!(
        get(&mut doc, "/small"),
        Some(FieldValue::Float(-9_223_372_036_854_775_809.0))
    );
    assert_eq!(get(&mut doc, "/exp"), Some(FieldValue::Float(1000.0)));
    assert_eq!(get(&mut doc, "/frac"), Some(FieldValue::Float(-0.25)));
    assert_eq!(get(&mut doc, "/zero"), Some(FieldValue::Integer(0)));
    // Like serde_json, a number beyond f64 is an error, with its position, and it makes the
    // whole payload malformed (see lookups_and_redaction_agree_on_what_is_malformed).
    let mut doc = json("{\"ok\": 1,\n \"huge\": 1e400}");
    let why = malformed(doc.field("/ok"));
    assert!(
        why.contains("number out of range at line 2 column"),
        "{why}"
    );
}

#[test]
fn json_strings_with_escapes() {
    let mut doc = json(r#"{"s": "a\"b\\c\/d\n\u00e9\ud83d\ude00", "plain": "héllo"}"#);
    assert_eq!(get(&mut doc, "/s"), Some(text("a\"b\\c/d\né😀")));
    assert_eq!(get(&mut doc, "/plain"), Some(text("héllo")));
}

#[test]
fn json_escaped_keys() {
    let mut doc =
        json(r#"{"a/b": 1, "m~n": 2, "\u0041BC": 3, "q\"k": 4, "x\/y": 5, "": 6, "é": 7}"#);
    assert_eq!(get(&mut doc, "/a~1b"), Some(FieldValue::Integer(1)));
    assert_eq!(get(&mut doc, "/m~0n"), Some(FieldValue::Integer(2)));
    assert_eq!(get(&mut doc, "/ABC"), Some(FieldValue::Integer(3)));
    assert_eq!(get(&mut doc, "/q\"k"), Some(FieldValue::Integer(4)));
    assert_eq!(get(&mut doc, "/x~1y"), Some(FieldValue::Integer(5)));
    assert_eq!(get(&mut doc, "/"), Some(FieldValue::Integer(6)));
    assert_eq!(get(&mut doc, "/é"), Some(FieldValue::Integer(7)));
    // "~01" is "~" then "1", not "/".
    assert_eq!(
        get(&mut json(r#"{"~1": 8}"#), "/~01"),
        Some(FieldValue::Integer(8))
    );
    assert_eq!(get(&mut doc, "/\\u0041BC"), None);
}

#[test]
fn json_absent_fields() {
    let mut doc = json(TELEMETRY);
    assert_eq!(get(&mut doc, "/nope"), None);
    assert_eq!(get(&mut doc, "/gps/alt"), None);
    assert_eq!(get(&mut doc, "/readings/3"), None);
    assert_eq!(get(&mut doc, "/readings/01"), None);
    assert_eq!(get(&mut doc, "/readings/-"), None);
    assert_eq!(get(&mut doc, "/readings/+1"), None);
    assert_eq!(get(&mut doc, "/readings/99999999999999999999999"), None);
    assert_eq!(get(&mut doc, "/gps/0"), None);
    // Through scalars: a number, a string, null.
    assert_eq!(get(&mut doc, "/seq/0"), None);
    assert_eq!(get(&mut doc, "/device/x"), None);
    assert_eq!(get(&mut doc, "/error/x"), None);
    assert_eq!(get(&mut doc, "/readings/0/x"), None);
    assert_eq!(get(&mut doc, "/Device"), None);
    assert_eq!(get(&mut doc, "/device/"), None);
}

/// The error a lookup of `pointer` must get on a payload with a duplicated key.
fn refused_as_duplicate(doc: &mut Document, pointer: &str, key: &str) {
    match doc.field(pointer) {
        Err(FieldError::Malformed(m)) => {
            assert!(m.contains(&format!("duplicate key {key:?}")), "{m}");
        }
        other => panic!("{pointer}: {other:?}"),
    }
}

#[test]
fn json_lookups_through_a_duplicated_key_are_malformed() {
    // An escape spells the same key: still a duplicate.
    let mut doc = json(r#"{"a": 1, "b": 2, "\u0061": 4}"#);
    refused_as_duplicate(&mut doc, "/a", "a");
    // The whole object is refused too; a field beside the duplicate is not.
    refused_as_duplicate(&mut doc, "", "a");
    assert_eq!(get(&mut doc, "/b"), Some(FieldValue::Integer(2)));
    // The decoy: a checked, redacted or absent-looking field in one copy, the data in the other.
    let mut decoy = json(r#"{"owner": {"email": "a@b.example"}, "owner": {}}"#);
    refused_as_duplicate(&mut decoy, "/owner/email", "owner");
    refused_as_duplicate(&mut decoy, "/owner", "owner");
    let mut deep = json(r#"{"x": [{"k": 1, "k": 2}]}"#);
    assert_eq!(get(&mut deep, "/x"), Some(FieldValue::Array(1)));
    refused_as_duplicate(&mut deep, "/x/0", "k");
    refused_as_duplicate(&mut deep, "/x/0/k", "k");
    // Distinct keys that share their length and end bytes, many of them: fine, and fast.
    let many: Vec<String> = (0..20_000).map(|i| format!("\"k{i:05}k\": {i}")).collect();
    let mut big = json(&format!("{{{}}}", many.join(",")));
    assert_eq!(get(&mut big, ""), Some(FieldValue::Object(20_000)));
    let mut big_dup = json(&format!("{{{},\"k00007k\": 0}}", many.join(",")));
    assert_eq!(get(&mut big_dup, "/k00001k"), Some(FieldValue::Integer(1)));
    refused_as_duplicate(&mut big_dup, "/k00007k", "k00007k");
    refused_as_duplicate(&mut big_dup, "", "k00007k");
}

#[test]
fn duplicate_keys_are_found_in_objects_of_every_size() {
    // Each size on both sides of the ways the check works (pairs, hash tables of two sizes,
    // sorting); the copy at the start, middle or end, spelt plainly or with an escape.
    for n in [2, 3, 31, 32, 33, 100, 255, 256, 257, 400] {
        let keys: Vec<String> = (0..n).map(|i| format!("key{i}")).collect();
        let members = |keys: &[String]| {
            keys.iter()
                .enumerate()
                .map(|(i, k)| format!("\"{k}\":{i}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut distinct = json(&format!("{{{}}}", members(&keys)));
        let want = Some(FieldValue::Object(u32::try_from(n).unwrap()));
        assert_eq!(get(&mut distinct, ""), want, "{n} distinct keys");
        for (a, b) in [(0, 1), (0, n - 1), (n / 2, n - 1), (n - 2, n - 1)] {
            if a == b {
                continue;
            }
            let mut twice = keys.clone();
            twice[b] = keys[a].replacen('k', "\\u006b", 1);
            let mut doc = json(&format!("{{{}}}", members(&twice)));
            refused_as_duplicate(&mut doc, "", &keys[a]);
        }
    }
}

#[test]
fn json_malformed_payloads_say_where() {
    let cases = [
        ("{\"a\": 1,}", "key must be a string at line 1 column 9"),
        (
            "{\n  \"a\": 1\n  \"b\": 2\n}",
            "expected ',' or '}' at line 3 column 3",
        ),
        ("[1, 2", "EOF while parsing a list at line 1 column 6"),
        ("", "EOF while parsing a value at line 1 column 1"),
        ("{\"a\": tru}", "expected value at line 1 column 7"),
        ("{\"a\": 01}", "expected ',' or '}' at line 1 column 8"),
        ("{\"a\": 1.}", "invalid number at line 1 column 9"),
        ("{\"a\": \"x\u{1}\"}", "control character"),
        ("{\"a\": \"\\x\"}", "invalid escape at line 1 column 9"),
        ("{\"a\": \"\\ud800\"}", "unexpected end of hex escape"),
        ("{\"a\": \"\\udc00\"}", "lone trailing surrogate"),
        ("{} {}", "trailing characters at line 1 column 4"),
        ("{\"a\" 1}", "expected ':' at line 1 column 6"),
        ("\u{feff}{}", "expected value at line 1 column 1"),
    ];
    for (input, expected) in cases {
        let mut doc = json(input);
        let why = malformed(doc.field("/a"));
        assert!(why.starts_with("JSON: "), "{input:?}: {why}");
        assert!(why.contains(expected), "{input:?}: {why}");
        // Remembered: the same answer again, for any pointer.
        assert_eq!(malformed(doc.field("")), why);
        // serde_json refuses them too.
        assert!(
            serde_json::from_str::<JsonValue>(input).is_err(),
            "{input:?}"
        );
    }
    let mut doc = Document::new(Some(Format::Json), b"{\"a\": \"\xff\"}".to_vec());
    let why = malformed(doc.field("/a"));
    assert!(why.contains("invalid UTF-8 at line 1 column 8"), "{why}");
    let error = doc.field("/a").unwrap_err();
    assert!(
        error.to_string().starts_with("malformed payload: JSON: "),
        "{error}"
    );
}

#[test]
fn json_validity_agrees_with_serde_json() {
    let corpus = [
        "{}",
        "[]",
        "[[]]",
        "{\"a\":[{}]}",
        "0",
        "-0",
        "-",
        "1.5e+3",
        "1E-2",
        ".5",
        "1.e2",
        "[1,]",
        "[,1]",
        "{,}",
        "{\"a\":}",
        "{\"a\"}",
        "{1:2}",
        "[\"\\u12\"]",
        "\"\\uD83D\\uDE00\"",
        "\"\\uDE00\\uD83D\"",
        "\"\\uD83Dx\"",
        "[true false]",
        "nul",
        "[1] x",
        " \t\r\n[] \n",
        "\"abc",
        "[\"a\",\"b\"",
        "{\"a\":1}}",
        "[-01]",
        "[1e]",
        "[--1]",
        "\"\\/\"",
        "[1,2]]",
    ];
    for input in corpus {
        let ours = json(input).field("").is_ok();
        let theirs = serde_json::from_str::<JsonValue>(input).is_ok();
        assert_eq!(ours, theirs, "{input:?}");
    }
}

#[test]
fn digit_runs_of_every_length_end_where_serde_json_ends_them() {
    // The scanner reads digits eight at a time: every run length up to 20, in the integer,
    // fraction and exponent parts, followed by every byte, must be valid where serde_json
    // finds it valid (a run read as ending early or late is not), and integers read the same.
    for len in 1..=20 {
        let run: String = (0..len)
            .map(|i| char::from(b'0' + (i % 9 + 1) as u8))
            .collect();
        for stop in 0..=255u8 {
            for shape in [format!("[{run}"), format!("[1.{run}"), format!("[1e{run}")] {
                let mut input = shape.into_bytes();
                input.push(stop);
                input.extend_from_slice(b"]");
                let shown = String::from_utf8_lossy(&input).into_owned();
                let ours = Document::new(Some(Format::Json), input.clone()).field("/0");
                let theirs = serde_json::from_slice::<JsonValue>(&input);
                assert_eq!(ours.is_ok(), theirs.is_ok(), "{shown:?}");
                if let (Ok(Some(FieldValue::Integer(a))), Ok(v)) = (&ours, &theirs) {
                    assert_eq!(Some(*a), v[0].as_i64(), "{shown:?}");
                }
            }
        }
    }
}

#[test]
fn bad_pointers() {
    let mut doc = json(TELEMETRY);
    for (pointer, expected) in [
        ("abc", "pointer \"abc\" is not an RFC 6901 JSON Pointer: it must be empty or start with '/'"),
        ("/a~2b", "the '~' at byte 2 must be followed by '0' or '1' (an escaped '~' or '/'), not '2'"),
        ("/a~", "the '~' at byte 2 must be followed by '0' or '1' (an escaped '~' or '/'), not the end of the pointer"),
        ("/ok/~é", "not 'é'"),
    ] {
        match doc.field(pointer) {
            Err(FieldError::BadPointer(why)) => assert!(why.contains(expected), "{why}"),
            other => panic!("{pointer:?}: {other:?}"),
        }
    }
    let error = doc.field("x").unwrap_err();
    assert_eq!(
        error.to_string(),
        "field pointer \"x\" is not an RFC 6901 JSON Pointer: it must be empty or start with '/'"
    );
    // A huge pointer is cut short in the message.
    let long = "x".repeat(10_000);
    let why = doc.field(&long).unwrap_err().to_string();
    assert!(why.len() < 400 && why.contains("(10000 bytes)"), "{why}");
    // The pointer is checked before the payload is parsed.
    let mut broken = json("{");
    assert!(matches!(broken.field("a"), Err(FieldError::BadPointer(_))));
}

#[test]
fn text_and_binary_have_no_fields() {
    let mut doc = Document::new(None, b"{\"a\": 1}".to_vec());
    assert_eq!(doc.field("/a"), Err(FieldError::Unstructured));
    assert_eq!(doc.field(""), Err(FieldError::Unstructured));
    assert_eq!(doc.field("bad"), Err(FieldError::Unstructured));
    assert_eq!(doc.format(), None);
    assert_eq!(doc.bytes(), b"{\"a\": 1}");
    assert_eq!(
        FieldError::Unstructured.to_string(),
        "the payload is text or binary: it has no fields"
    );
}

#[test]
fn replace_drops_the_cache() {
    let mut doc = json(r#"{"a": {"b": 1}, "c": 2}"#);
    assert_eq!(get(&mut doc, "/a/b"), Some(FieldValue::Integer(1)));
    doc.replace(br#"{"c": 3, "a": {"x": 0, "b": "masked"}}"#.to_vec());
    assert_eq!(get(&mut doc, "/a/b"), Some(text("masked")));
    assert_eq!(get(&mut doc, "/c"), Some(FieldValue::Integer(3)));
    assert_eq!(doc.format(), Some(Format::Json));
    doc.replace(b"{".to_vec());
    assert!(matches!(doc.field("/c"), Err(FieldError::Malformed(_))));
    doc.replace(b"{\"c\": 4}".to_vec());
    assert_eq!(get(&mut doc, "/c"), Some(FieldValue::Integer(4)));
}

#[test]
fn json_depth_limit_matches_serde_json() {
    let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let ok = nested(MAX_DEPTH);
    assert!(serde_json::from_str::<JsonValue>(&ok).is_ok());
    let mut doc = json(&ok);
    let deepest = "/0".repeat(MAX_DEPTH - 1);
    assert_eq!(get(&mut doc, &deepest), Some(FieldValue::Array(0)));
    assert_eq!(get(&mut doc, &format!("{deepest}/0")), None);
    let too_deep = nested(MAX_DEPTH + 1);
    assert!(serde_json::from_str::<JsonValue>(&too_deep).is_err());
    let why = malformed(json(&too_deep).field(""));
    assert!(why.contains("recursion limit exceeded"), "{why}");
    // The limit holds inside objects too.
    let objects = format!(
        "{}1{}",
        "{\"a\":".repeat(MAX_DEPTH + 1),
        "}".repeat(MAX_DEPTH + 1)
    );
    assert!(malformed(json(&objects).field("/a")).contains("recursion limit exceeded"));
}

#[test]
fn hostile_nesting_does_not_overflow_the_stack() {
    let open = "[".repeat(100_000);
    let balanced = format!("{open}{}", "]".repeat(100_000));
    let objects = "{\"a\":".repeat(100_000);
    for input in [&open, &balanced, &objects] {
        let why = malformed(json(input).field("/0/0"));
        assert!(why.contains("recursion limit exceeded"), "{why}");
        let error = redact(Format::Json, input.as_bytes(), &[remove("/0")]).unwrap_err();
        assert!(matches!(error, RedactError::Malformed(_)), "{error:?}");
    }
    let depth_error = |bytes: Vec<u8>| {
        let why = malformed(Document::new(Some(Format::Cbor), bytes.clone()).field("/0"));
        assert!(why.contains("nesting deeper than 127 levels"), "{why}");
        let error = redact(Format::Cbor, &bytes, &[remove("/0")]).unwrap_err();
        assert!(
            matches!(&error, RedactError::Malformed(why) if why.contains("nesting deeper")),
            "{error:?}"
        );
    };
    // Arrays of one element, indefinite arrays, maps, tags: 100 000 deep, with or without
    // an end.
    let mut arrays = vec![0x81; 100_000];
    arrays.push(0x00);
    depth_error(arrays);
    depth_error(vec![0x9f; 100_000]);
    depth_error([0xa1, 0x61, b'a'].repeat(100_000));
    let mut tags = vec![0xc1; 100_000];
    tags.push(0x00);
    depth_error(tags);
}

#[test]
fn cbor_every_kind() {
    let value = Cv::Map(vec![
        (t("device"), t("sensor-7")),
        (t("seq"), Cv::Integer(42)),
        (t("neg"), Cv::Integer(-5)),
        (t("max"), Cv::Integer(i64::MAX.into())),
        (t("min"), Cv::Integer(i64::MIN.into())),
        (t("big"), Cv::Integer(u64::MAX.into())),
        (t("small"), Cv::Integer(-1 - i128::from(u64::MAX))),
        (t("temp"), Cv::Float(21.5)),
        (t("ok"), Cv::Bool(true)),
        (t("error"), Cv::Null),
        (t("raw"), Cv::Bytes(vec![1, 2, 3])),
        (t("when"), Cv::Tag(1, Box::new(Cv::Integer(1_700_000_000)))),
        (
            t("gps"),
            Cv::Map(vec![
                (t("lat"), Cv::Float(48.85)),
                (t("fix"), Cv::Map(vec![(t("sats"), Cv::Integer(9))])),
            ]),
        ),
        (
            t("readings"),
            Cv::Array(vec![
                Cv::Integer(10),
                Cv::Map(vec![(t("peak"), Cv::Integer(12))]),
            ]),
        ),
        (
            t("tagged"),
            Cv::Tag(55799, Box::new(Cv::Map(vec![(t("in"), Cv::Bool(false))]))),
        ),
    ]);
    let mut doc = cbor(&value);
    assert_eq!(get(&mut doc, ""), Some(FieldValue::Object(15)));
    assert_eq!(get(&mut doc, "/device"), Some(text("sensor-7")));
    assert_eq!(get(&mut doc, "/seq"), Some(FieldValue::Integer(42)));
    assert_eq!(get(&mut doc, "/neg"), Some(FieldValue::Integer(-5)));
    assert_eq!(get(&mut doc, "/max"), Some(FieldValue::Integer(i64::MAX)));
    assert_eq!(get(&mut doc, "/min"), Some(FieldValue::Integer(i64::MIN)));
    assert_eq!(
        get(&mut doc, "/big"),
        Some(FieldValue::Float(u64::MAX as f64))
    );
    assert_eq!(
        get(&mut doc, "/small"),
        Some(FieldValue::Float(-(u64::MAX as f64) - 1.0))
    );
    assert_eq!(get(&mut doc, "/temp"), Some(FieldValue::Float(21.5)));
    assert_eq!(get(&mut doc, "/ok"), Some(FieldValue::Bool(true)));
    assert_eq!(get(&mut doc, "/error"), Some(FieldValue::Null));
    assert_eq!(
        get(&mut doc, "/raw"),
        Some(FieldValue::Bytes(vec![1, 2, 3]))
    );
    assert_eq!(
        get(&mut doc, "/when"),
        Some(FieldValue::Integer(1_700_000_000))
    );
    assert_eq!(get(&mut doc, "/gps"), Some(FieldValue::Object(2)));
    assert_eq!(get(&mut doc, "/gps/lat"), Some(FieldValue::Float(48.85)));
    assert_eq!(get(&mut doc, "/gps/fix/sats"), Some(FieldValue::Integer(9)));
    assert_eq!(get(&mut doc, "/readings"), Some(FieldValue::Array(2)));
    assert_eq!(get(&mut doc, "/readings/0"), Some(FieldValue::Integer(10)));
    assert_eq!(
        get(&mut doc, "/readings/1/peak"),
        Some(FieldValue::Integer(12))
    );
    assert_eq!(get(&mut doc, "/tagged"), Some(FieldValue::Object(1)));
    assert_eq!(get(&mut doc, "/tagged/in"), Some(FieldValue::Bool(false)));
    // Absent, and through scalars.
    assert_eq!(get(&mut doc, "/nope"), None);
    assert_eq!(get(&mut doc, "/readings/2"), None);
    assert_eq!(get(&mut doc, "/readings/01"), None);
    assert_eq!(get(&mut doc, "/readings/-"), None);
    assert_eq!(get(&mut doc, "/seq/0"), None);
    assert_eq!(get(&mut doc, "/device/x"), None);
    assert_eq!(get(&mut doc, "/raw/0"), None);
    assert_eq!(get(&mut doc, "/when/x"), None);
}

#[test]
fn cbor_encodings_cbor4ii_does_not_produce() {
    // {"h": 1.5 as f16, "f": 0.25 as f32, "u": undefined, "i": indefinite array [1, 2],
    //  (_ "k", "ey"): indefinite text key, "s": (_ "ab", "c"), "b": (_ h'01', h'02'),
    //  1: "int key", "m": indefinite map {"x": 7}}
    let bytes = [
        0xbf, // map, indefinite
        0x61, b'h', 0xf9, 0x3e, 0x00, //
        0x61, b'f', 0xfa, 0x3e, 0x80, 0x00, 0x00, //
        0x61, b'u', 0xf7, //
        0x61, b'i', 0x9f, 0x01, 0x02, 0xff, //
        0x7f, 0x61, b'k', 0x62, b'e', b'y', 0xff, 0x18, 0x2a, //
        0x61, b's', 0x7f, 0x62, b'a', b'b', 0x61, b'c', 0xff, //
        0x61, b'b', 0x5f, 0x41, 0x01, 0x41, 0x02, 0xff, //
        0x01, 0x67, b'i', b'n', b't', b' ', b'k', b'e', b'y', //
        0x61, b'm', 0xbf, 0x61, b'x', 0x07, 0xff, //
        0xff,
    ];
    let mut doc = Document::new(Some(Format::Cbor), bytes.to_vec());
    assert_eq!(get(&mut doc, "/h"), Some(FieldValue::Float(1.5)));
    assert_eq!(get(&mut doc, "/f"), Some(FieldValue::Float(0.25)));
    assert_eq!(get(&mut doc, "/u"), Some(FieldValue::Null));
    assert_eq!(get(&mut doc, "/i"), Some(FieldValue::Array(2)));
    assert_eq!(get(&mut doc, "/i/1"), Some(FieldValue::Integer(2)));
    assert_eq!(get(&mut doc, "/key"), Some(FieldValue::Integer(42)));
    assert_eq!(get(&mut doc, "/s"), Some(text("abc")));
    assert_eq!(get(&mut doc, "/b"), Some(FieldValue::Bytes(vec![1, 2])));
    assert_eq!(get(&mut doc, "/m/x"), Some(FieldValue::Integer(7)));
    // The integer key counts as a member, but no pointer names it.
    assert_eq!(get(&mut doc, ""), Some(FieldValue::Object(9)));
    assert_eq!(get(&mut doc, "/1"), None);
    // Half floats beyond the normal range.
    for (half, expected) in [
        ([0x00, 0x01], 5.960_464_477_539_063e-8),
        ([0x7b, 0xff], 65504.0),
        ([0xc4, 0x00], -4.0),
        ([0x7c, 0x00], f64::INFINITY),
    ] {
        let mut doc = Document::new(Some(Format::Cbor), vec![0xf9, half[0], half[1]]);
        assert_eq!(get(&mut doc, ""), Some(FieldValue::Float(expected)));
    }
    let mut nan = Document::new(Some(Format::Cbor), vec![0xf9, 0x7e, 0x00]);
    assert!(matches!(get(&mut nan, ""), Some(FieldValue::Float(f)) if f.is_nan()));
}

#[test]
fn cbor_escaped_pointers_and_duplicates() {
    let value = Cv::Map(vec![
        (t("a/b"), Cv::Integer(1)),
        (t("m~n"), Cv::Integer(2)),
        (t("d"), Cv::Integer(3)),
    ]);
    let mut doc = cbor(&value);
    assert_eq!(get(&mut doc, "/a~1b"), Some(FieldValue::Integer(1)));
    assert_eq!(get(&mut doc, "/m~0n"), Some(FieldValue::Integer(2)));
    assert_eq!(get(&mut doc, ""), Some(FieldValue::Object(3)));
    let decoy = Cv::Map(vec![
        (
            t("owner"),
            Cv::Map(vec![(t("email"), Cv::Text("a@b.example".into()))]),
        ),
        (t("owner"), Cv::Map(vec![])),
    ]);
    refused_as_duplicate(&mut cbor(&decoy), "/owner/email", "owner");
    let numbers = Cv::Map(vec![(Cv::Integer(1), t("x")), (Cv::Integer(1), t("y"))]);
    assert!(matches!(
        cbor(&numbers).field(""),
        Err(FieldError::Malformed(m)) if m.contains("non-text key")
    ));
    // A byte-string key is told apart by its encoding: h'61' is encoded 0x41 0x61, the bytes
    // of the text key "Aa". The same bytes, two keys, not one twice.
    let text_and_bytes = Cv::Map(vec![
        (t("Aa"), Cv::Integer(1)),
        (Cv::Bytes(b"a".to_vec()), Cv::Integer(2)),
    ]);
    assert_eq!(
        cbor(&text_and_bytes).field(""),
        Ok(Some(FieldValue::Object(2)))
    );
}

#[test]
fn cbor_malformed_payloads_say_where() {
    let cases: [(&[u8], &str); 10] = [
        (&[0xa1, 0x61, b'a'], "unexpected end of input at byte 3"),
        (&[0x82, 0x01], "unexpected end of input at byte 2"),
        (
            &[0x1c],
            "reserved additional information (28 to 30) at byte 0",
        ),
        (
            &[0x01, 0x02],
            "trailing bytes after the top-level item at byte 1",
        ),
        (&[0x81, 0xff], "unexpected break at byte 1"),
        (
            &[0x62, 0xff, 0xfe],
            "invalid UTF-8 in a text string at byte 0",
        ),
        (
            &[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            "string longer than the input at byte 0",
        ),
        (
            &[0x5f, 0x61, b'a', 0xff],
            "invalid chunk in an indefinite-length string at byte 1",
        ),
        (
            &[0xbf, 0x61, b'a', 0xff],
            "map key without a value at byte 3",
        ),
        (&[0xf8, 0x10], "invalid two-byte simple value at byte 0"),
    ];
    for (input, expected) in cases {
        let mut doc = Document::new(Some(Format::Cbor), input.to_vec());
        let why = malformed(doc.field("/a"));
        assert_eq!(why, format!("CBOR: {expected}"), "{input:x?}");
        assert_eq!(malformed(doc.field("")), why);
        let redacted = redact(Format::Cbor, input, &[remove("/a")]);
        assert!(
            matches!(redacted, Err(RedactError::Malformed(_))),
            "{input:x?}: {redacted:?}"
        );
    }
    // An array claiming 2^64 - 1 elements only costs what the input holds.
    let huge = [0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    let why = malformed(Document::new(Some(Format::Cbor), huge.to_vec()).field(""));
    assert!(why.contains("unexpected end of input"), "{why}");
    let why = malformed(Document::new(Some(Format::Cbor), vec![0xf0]).field(""));
    assert!(why.contains("unsupported simple value"), "{why}");
}

#[test]
fn redact_json_members_elements_nested() {
    let input = r#"{"id": "s-1", "owner": {"name": "Ann", "email": "a@x.io", "phone": "123"},
                        "readings": [1, 2, 3, 4], "z": 0}"#;
    assert_eq!(
        redacted_json(
            input,
            &[mask("/owner/email", "***"), remove("/owner/phone")]
        )
        .unwrap(),
        r#"{"id":"s-1","owner":{"name":"Ann","email":"***"},"readings":[1,2,3,4],"z":0}"#
    );
    // Removing a member keeps the order of the others.
    assert_eq!(
        redacted_json(input, &[remove("/id")]).unwrap(),
        r#"{"owner":{"name":"Ann","email":"a@x.io","phone":"123"},"readings":[1,2,3,4],"z":0}"#
    );
    // Elements shift: the second edit sees the array the first one left.
    assert_eq!(
        redacted_json(
            input,
            &[
                remove("/readings/0"),
                remove("/readings/0"),
                mask("/readings/1", "x")
            ]
        )
        .unwrap(),
        r#"{"id":"s-1","owner":{"name":"Ann","email":"a@x.io","phone":"123"},"readings":[3,"x"],"z":0}"#
    );
    // Mask replaces containers whole.
    assert_eq!(
        redacted_json(input, &[mask("/owner", "-"), mask("/readings", "-")]).unwrap(),
        r#"{"id":"s-1","owner":"-","readings":"-","z":0}"#
    );
    assert_eq!(
        redacted_json("[1, [2, 3]]", &[remove("/1/0")]).unwrap(),
        "[1,[3]]"
    );
    assert_eq!(
        redacted_json(r#"{"a/b": {"~": 1}}"#, &[mask("/a~1b/~0", "m")]).unwrap(),
        r#"{"a/b":{"~":"m"}}"#
    );
    // An edit of a duplicated key is refused, with or without an index; one beside it is not.
    let dup = br#"{"k": 1, "a": 2, "k": 3}"#;
    for mask_too in [false, true] {
        let edits = if mask_too {
            vec![mask("/k", "m")]
        } else {
            vec![remove("/k")]
        };
        assert!(matches!(
            redact(Format::Json, dup, &edits),
            Err(RedactError::Malformed(m)) if m.contains("duplicate key \"k\"")
        ));
        let mut doc = Document::new(Some(Format::Json), dup.to_vec());
        assert_eq!(get(&mut doc, "/a"), Some(FieldValue::Integer(2)));
        assert!(matches!(doc.redact(&edits), Err(RedactError::Malformed(_))));
    }
    assert_eq!(
        redacted_json(r#"{"k": 1, "a": 2, "k": 3}"#, &[remove("/a")]).unwrap(),
        r#"{"k":1,"k":3}"#
    );
}

#[test]
fn redact_json_nothing_matched() {
    let input = r#"{"a": {"b": [1]}, "s": "x"}"#;
    for pointer in [
        "/nope", "/a/c", "/a/b/1", "/a/b/01", "/a/b/-", "/s/0", "/a/b/0/x", "/a/0",
    ] {
        assert_eq!(redacted_json(input, &[remove(pointer)]), None, "{pointer}");
        assert_eq!(
            redacted_json(input, &[mask(pointer, "m")]),
            None,
            "{pointer}"
        );
    }
    assert_eq!(redact(Format::Json, input.as_bytes(), &[]), Ok(None));
    // One edit matching is enough for new bytes.
    assert_eq!(
        redacted_json(input, &[remove("/nope"), remove("/s")]).unwrap(),
        r#"{"a":{"b":[1]}}"#
    );
}

#[test]
fn redact_errors() {
    let input = br#"{"a": 1}"#;
    assert_eq!(
        redact(Format::Json, input, &[remove("")]),
        Err(RedactError::WholeDocument)
    );
    assert_eq!(
        redact(Format::Cbor, &[0xa0], &[mask("", "x")]),
        Err(RedactError::WholeDocument)
    );
    let error = redact(Format::Json, input, &[remove("/a"), remove("abc")]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "redaction pointer \"abc\" is not an RFC 6901 JSON Pointer: it must be empty or start with '/'"
    );
    let error = redact(Format::Json, input, &[remove("/a~")]).unwrap_err();
    assert!(
        matches!(&error, RedactError::BadPointer(why) if why.contains("\"/a~\"")),
        "{error:?}"
    );
    // Pointers are checked before the payload.
    assert!(matches!(
        redact(Format::Json, b"{", &[remove("x")]),
        Err(RedactError::BadPointer(_))
    ));
    let error = redact(Format::Json, b"{\"a\": 1,}", &[remove("/a")]).unwrap_err();
    assert!(
        matches!(&error, RedactError::Malformed(why) if why.contains("line 1 column 9")),
        "{error:?}"
    );
    assert!(error
        .to_string()
        .starts_with("cannot redact a malformed payload: JSON: "));
    assert!(RedactError::WholeDocument
        .to_string()
        .contains("whole document"));
}

#[test]
fn redact_json_output_is_compact_and_reparses() {
    let input = "{\n  \"b\": 1,\n  \"a\": [ 1.5 , true, null ],\n  \"c\": \"\\u00e9\" \n}";
    let out = redacted_json(input, &[mask("/b", "x\"y\\z\n\u{1}")]).unwrap();
    assert_eq!(
        out,
        r#"{"b":"x\"y\\z\n\u0001","a":[1.5,true,null],"c":"\u00e9"}"#
    );
    let mut doc = json(&out);
    assert_eq!(get(&mut doc, "/a/0"), Some(FieldValue::Float(1.5)));
    assert_eq!(get(&mut doc, "/b"), Some(text("x\"y\\z\n\u{1}")));
    assert_eq!(get(&mut doc, "/c"), Some(text("é")));
}

#[test]
fn redact_json_copies_untouched_containers_of_a_compact_payload_whole() {
    // Compact: the sibling container is copied as written (its escaped key included); the
    // containers on the edit's path are written piece by piece.
    let input = r#"{"keep":{"k\u0041":[1,{"x":"\u00e9"}]},"on":{"path":{"drop":1,"stay":2.50}}}"#;
    assert_eq!(
        redacted_json(input, &[remove("/on/path/drop")]).unwrap(),
        r#"{"keep":{"k\u0041":[1,{"x":"\u00e9"}]},"on":{"path":{"stay":2.50}}}"#
    );
    // Whitespace anywhere inside: every container is written compact, keys unescaped.
    let spaced = r#"{"keep":{"k\u0041":[1, {"x":"\u00e9"}]},"on":{"path":{"drop":1,"stay":2.50}}}"#;
    assert_eq!(
        redacted_json(spaced, &[remove("/on/path/drop")]).unwrap(),
        r#"{"keep":{"kA":[1,{"x":"\u00e9"}]},"on":{"path":{"stay":2.50}}}"#
    );
    // Whitespace around the root only: still compact inside.
    let around = format!("\n\t {input} \r\n");
    assert_eq!(
        redacted_json(&around, &[mask("/keep/k\u{41}/1/x", "m")]).unwrap(),
        r#"{"keep":{"kA":[1,{"x":"m"}]},"on":{"path":{"drop":1,"stay":2.50}}}"#
    );
}

#[test]
fn redact_json_leaves_the_rest_verbatim() {
    // Numbers serde_json would re-format or round, escapes it would rewrite: untouched.
    let input = r#"{"big": 123456789012345678901234567890, "f": 8337637642.049805,
                        "z": -0, "e": 1E+2, "s": "\u00e9\/", "k\u0041": 1, "drop": 0}"#;
    assert_eq!(
        redacted_json(input, &[remove("/drop")]).unwrap(),
        r#"{"big":123456789012345678901234567890,"f":8337637642.049805,"z":-0,"e":1E+2,"s":"\u00e9\/","kA":1}"#
    );
    // Nothing inside a masked value any more.
    assert_eq!(
        redacted_json(r#"{"a": {"b": 1}}"#, &[mask("/a", "m"), remove("/a/b")]).unwrap(),
        r#"{"a":"m"}"#
    );
    // A removed then re-masked index names the element that moved into its place.
    assert_eq!(
        redacted_json(
            "[[0], [1], [2]]",
            &[remove("/0"), mask("/0", "m"), remove("/1/0")]
        )
        .unwrap(),
        r#"["m",[]]"#
    );
    // The last mask of a field wins; a removal after a mask removes it.
    assert_eq!(
        redacted_json(
            r#"{"a": 1, "b": 2, "c": 3}"#,
            &[
                mask("/a", "first"),
                mask("/a", "second"),
                mask("/b", "m"),
                remove("/b")
            ]
        )
        .unwrap(),
        r#"{"a":"second","c":3}"#
    );
}

#[test]
fn redact_cbor_round_trip() {
    let value = Cv::Map(vec![
        (t("id"), t("s-1")),
        (
            t("owner"),
            Cv::Map(vec![(t("email"), t("a@x.io")), (t("phone"), t("123"))]),
        ),
        (
            t("readings"),
            Cv::Array(vec![Cv::Integer(1), Cv::Integer(-2), Cv::Integer(3)]),
        ),
        (t("when"), Cv::Tag(1, Box::new(Cv::Integer(1_700_000_000)))),
        (t("raw"), Cv::Bytes(vec![0; 30])),
        (t("big"), Cv::Integer(u64::MAX.into())),
        (t("f"), Cv::Float(0.1)),
        (t("n"), Cv::Null),
    ]);
    let bytes = cbor_bytes(&value);
    let out = redact(
        Format::Cbor,
        &bytes,
        &[
            mask("/owner/email", "***"),
            remove("/owner/phone"),
            remove("/readings/0"),
            mask("/when", "?"),
        ],
    )
    .unwrap()
    .unwrap();
    let expected = Cv::Map(vec![
        (t("id"), t("s-1")),
        (t("owner"), Cv::Map(vec![(t("email"), t("***"))])),
        (
            t("readings"),
            Cv::Array(vec![Cv::Integer(-2), Cv::Integer(3)]),
        ),
        (t("when"), t("?")),
        (t("raw"), Cv::Bytes(vec![0; 30])),
        (t("big"), Cv::Integer(u64::MAX.into())),
        (t("f"), Cv::Float(0.1)),
        (t("n"), Cv::Null),
    ]);
    assert_eq!(cbor_value(&out), expected);
    // Nothing else changed: re-encoding the expected value gives the same bytes.
    assert_eq!(out, cbor_bytes(&expected));
    // Lookups work on the result.
    let mut doc = Document::new(Some(Format::Cbor), out);
    assert_eq!(get(&mut doc, "/owner/email"), Some(text("***")));
    assert_eq!(get(&mut doc, "/readings/0"), Some(FieldValue::Integer(-2)));
    // Tags stay where they were; a root array works too.
    let tagged = cbor_bytes(&Cv::Tag(55799, Box::new(Cv::Array(vec![t("a"), t("b")]))));
    let out = redact(Format::Cbor, &tagged, &[remove("/0")])
        .unwrap()
        .unwrap();
    assert_eq!(
        cbor_value(&out),
        Cv::Tag(55799, Box::new(Cv::Array(vec![t("b")])))
    );
    // Lookups go through the root's tag, and see the redacted payload after `replace`.
    let mut doc = Document::new(Some(Format::Cbor), tagged);
    assert_eq!(get(&mut doc, ""), Some(FieldValue::Array(2)));
    assert_eq!(get(&mut doc, "/1"), Some(text("b")));
    doc.replace(out);
    assert_eq!(get(&mut doc, ""), Some(FieldValue::Array(1)));
    assert_eq!(get(&mut doc, "/0"), Some(text("b")));
}

#[test]
fn redact_cbor_definite_output_and_widths_kept() {
    // {_ "h": 1.5 as f16, "s": (_ "a", "b"), "l": [_ 1, 2], "x": 0}
    let input = [
        0xbf, 0x61, b'h', 0xf9, 0x3e, 0x00, 0x61, b's', 0x7f, 0x61, b'a', 0x61, b'b', 0xff, 0x61,
        b'l', 0x9f, 0x01, 0x02, 0xff, 0x61, b'x', 0x00, 0xff,
    ];
    let out = redact(Format::Cbor, &input, &[remove("/x")])
        .unwrap()
        .unwrap();
    let expected = [
        0xa3, 0x61, b'h', 0xf9, 0x3e, 0x00, 0x61, b's', 0x62, b'a', b'b', 0x61, b'l', 0x82, 0x01,
        0x02,
    ];
    assert_eq!(out, expected);
}

#[test]
fn redact_cbor_nothing_matched_and_keys() {
    let bytes = cbor_bytes(&Cv::Map(vec![
        (t("a"), Cv::Array(vec![Cv::Integer(1)])),
        (t("s"), t("x")),
    ]));
    for pointer in ["/nope", "/a/1", "/a/01", "/a/-", "/s/0", "/a/0/x"] {
        assert_eq!(
            redact(Format::Cbor, &bytes, &[remove(pointer)]),
            Ok(None),
            "{pointer}"
        );
        assert_eq!(
            redact(Format::Cbor, &bytes, &[mask(pointer, "m")]),
            Ok(None),
            "{pointer}"
        );
    }
    // A non-text key makes re-encoding impossible, unless nothing has to be re-encoded or
    // the edit removed it.
    let mixed = cbor_bytes(&Cv::Map(vec![
        (t("a"), Cv::Integer(1)),
        (t("m"), Cv::Map(vec![(Cv::Integer(1), t("one"))])),
    ]));
    assert_eq!(
        redact(Format::Cbor, &mixed, &[remove("/a")]),
        Err(RedactError::NonTextKey)
    );
    assert_eq!(redact(Format::Cbor, &mixed, &[remove("/x")]), Ok(None));
    let out = redact(Format::Cbor, &mixed, &[mask("/m", "gone")])
        .unwrap()
        .unwrap();
    assert_eq!(
        cbor_value(&out),
        Cv::Map(vec![(t("a"), Cv::Integer(1)), (t("m"), t("gone"))])
    );
    assert!(RedactError::NonTextKey
        .to_string()
        .contains("not a text string"));
    // An edit of a duplicated key is refused, as a lookup of it is: no copy slips past.
    let dup = cbor_bytes(&Cv::Map(vec![
        (t("k"), Cv::Integer(1)),
        (t("a"), Cv::Integer(2)),
        (t("k"), Cv::Integer(3)),
    ]));
    for edits in [&[mask("/k", "m")][..], &[remove("/k")][..]] {
        assert!(matches!(
            redact(Format::Cbor, &dup, edits),
            Err(RedactError::Malformed(m)) if m.contains("duplicate key \"k\"")
        ));
    }
    assert!(redact(Format::Cbor, &dup, &[remove("/a")])
        .unwrap()
        .is_some());
}

#[test]
fn redaction_of_a_hundred_thousand_look_alike_keys_is_linear() {
    // Keys of one length with the same first and last byte: what made the old pairwise
    // duplicate check quadratic (seconds for 40,000 keys in release).
    let n = 100_000;
    let members: Vec<String> = (0..n).map(|i| format!("\"k{i:06}k\":{i}")).collect();
    let text = format!("{{{}}}", members.join(","));
    assert!(text.len() > 1_000_000);
    let out = redact(Format::Json, text.as_bytes(), &[remove("/k000042k")])
        .unwrap()
        .unwrap();
    assert_eq!(out.len(), text.len() - "\"k000042k\":42,".len());
    let value = Cv::Map(
        (0..n)
            .map(|i| (t(&format!("k{i:06}k")), Cv::Integer(i)))
            .collect(),
    );
    let bytes = cbor_bytes(&value);
    let out = redact(Format::Cbor, &bytes, &[mask("/k000042k", "m")])
        .unwrap()
        .unwrap();
    assert!(out.len() < bytes.len() + 8);
    let mut doc = Document::new(Some(Format::Cbor), bytes);
    assert_eq!(
        get(&mut doc, ""),
        Some(FieldValue::Object(u32::try_from(n).unwrap()))
    );
}

/// One definition of well-formed (issue 19, finding 13): what a lookup refuses, a redaction
/// refuses too, and the other way round, so a payload cannot be unreadable to a policy yet
/// forwarded by the redaction of another field.
#[test]
fn lookups_and_redaction_agree_on_what_is_malformed() {
    let long_integer = format!("[{}]", "9".repeat(400));
    for text in [
        "[1e400]",
        r#"{"a":1e400,"b":1}"#,
        r#"{"a":-1.5E+999,"b":1}"#,
        long_integer.as_str(),
    ] {
        let mut doc = json(text);
        let why = malformed(doc.field("/b"));
        assert!(why.contains("number out of range"), "{text}: {why}");
        assert!(
            matches!(
                redact(Format::Json, text.as_bytes(), &[remove("/b")]),
                Err(RedactError::Malformed(_))
            ),
            "{text}"
        );
        assert!(serde_json::from_str::<JsonValue>(text).is_err(), "{text}");
    }
    // Large but finite numbers stay numbers.
    let mut doc = json(r#"{"a":1.7e308,"b":-1e-400}"#);
    assert_eq!(get(&mut doc, "/a"), Some(FieldValue::Float(1.7e308)));
    assert_eq!(get(&mut doc, "/b"), Some(FieldValue::Float(-0.0)));

    // A tag with indefinite length is not well-formed CBOR: refused by both.
    for bytes in [&[0xdf, 0x02][..], &[0xa1, 0x61, b'a', 0xdf, 0x02][..]] {
        let mut doc = Document::new(Some(Format::Cbor), bytes.to_vec());
        let why = malformed(doc.field("/a"));
        assert!(why.contains("indefinite length on a tag"), "{why}");
        assert!(matches!(
            redact(Format::Cbor, bytes, &[remove("/a")]),
            Err(RedactError::Malformed(_))
        ));
    }
}

#[test]
fn minus_zero_is_the_float_minus_zero_as_serde_json_reads_it() {
    let mut doc = json(r#"{"a":-0,"b":0}"#);
    match get(&mut doc, "/a") {
        Some(FieldValue::Float(f)) => assert!(f == 0.0 && f.is_sign_negative()),
        other => panic!("{other:?}"),
    }
    assert_eq!(get(&mut doc, "/b"), Some(FieldValue::Integer(0)));
    let theirs: JsonValue = serde_json::from_str(r#"{"a":-0}"#).unwrap();
    assert!(theirs["a"].is_f64());
}

#[test]
fn keys_alike_at_both_ends_are_told_apart() {
    // Keys of one length that differ only in their middle bytes (a comparison that looks at the
    // ends first must go on), an escaped key, and a duplicate among look-alikes.
    let keys: Vec<String> = (0..40).map(|i| format!("prefix__{i:04}__suffix")).collect();
    let body: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| format!("\"{k}\":{i}"))
        .collect();
    let text = format!(
        "{{{},\"s\\u0061me\":1,\"short\":{{\"k9\":9}}}}",
        body.join(",")
    );
    let mut doc = json(&text);
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(
            get(&mut doc, &format!("/{k}")),
            Some(FieldValue::Integer(i as i64))
        );
    }
    assert_eq!(get(&mut doc, "/prefix__9999__suffix"), None);
    assert_eq!(get(&mut doc, "/same"), Some(FieldValue::Integer(1)));
    assert_eq!(get(&mut doc, "/short/k9"), Some(FieldValue::Integer(9)));
    let pointers: Vec<Pointer> = ["/prefix__0007__suffix", "/prefix__0031__suffix", "/same"]
        .iter()
        .map(|p| Pointer::parse(p).unwrap())
        .collect();
    let set = PointerSet::new(&pointers);
    let mut seen = vec![None; 3];
    doc.get_all(&set, |i, result| {
        seen[i] = Some(result.map(|v| v.map(FieldRef::into_owned)).unwrap());
    });
    assert_eq!(
        seen,
        vec![
            Some(Some(FieldValue::Integer(7))),
            Some(Some(FieldValue::Integer(31))),
            Some(Some(FieldValue::Integer(1)))
        ]
    );
    let twice = format!("{{\"prefix__0001__suffix\":1,{}}}", body.join(","));
    let why = malformed(json(&twice).field("/prefix__0001__suffix"));
    assert!(why.contains("duplicate key"), "{why}");
    assert_eq!(
        get(&mut json(&twice), "/prefix__0002__suffix"),
        Some(FieldValue::Integer(2))
    );
}
