//! Walking a JSON or CBOR payload with JSON Pointers, for a policy that must look at every field
//! rather than the few it can name ([`Message::field`](crate::Message::field) covers those).
//!
//! Hand-written, allocation-light readers instead of serde_json or a CBOR crate, so a policy
//! carries no parser of its own: they build no document tree, borrow strings without escapes
//! straight from the payload, and keep one pointer buffer (RFC 6901 escaped) for the whole walk.
//! A [`Visitor`] decides, member by member and element by element, which subtrees are entered;
//! the rest is read over without a call. [`strings`] (every string value, with skip pointers)
//! and [`members`] (object members only, entered on request) cover the usual cases.
//!
//! The host has already parsed the payload for the chain, so a payload that does not parse here
//! is rare (nesting past 128 levels, say); it is an error all the same, and a policy should fail
//! closed on it.
//!
//! ```
//! use twinguard_guest::{walk, ContentType};
//!
//! let doc = br#"{"owner": {"mail": "a@b.io"}, "tags": ["x"], "debug": {"note": "y"}}"#;
//! let mut seen = Vec::new();
//! walk::strings(ContentType::Json, doc, &["/debug".to_owned()], |pointer, text| {
//!     seen.push(format!("{pointer}={text}"));
//! })?;
//! assert_eq!(seen, ["/owner/mail=a@b.io", "/tags/0=x"]);
//! # Ok::<(), String>(())
//! ```

use std::borrow::Cow;

use crate::ContentType;

/// Nesting deeper than this is refused (the guest's stack is small; serde_json, which the host
/// parses with, stops at 128 too).
const MAX_DEPTH: usize = 128;

/// What a walk reports, and where it goes: only the subtrees a visitor enters cost calls.
///
/// The root is always entered. Pointers are RFC 6901 (`~` as `~0`, `/` as `~1`) and borrowed from
/// the walk's one buffer: copy one to keep it.
pub trait Visitor {
    /// An object member (a text-keyed map entry in CBOR) of an entered value; `true` enters it,
    /// so its members, elements or string value are reported too.
    fn member(&mut self, pointer: &str) -> bool {
        let _ = pointer;
        true
    }

    /// An array element of an entered value; `true` enters it.
    fn element(&mut self, pointer: &str) -> bool {
        let _ = pointer;
        true
    }

    /// A string value (member names are not values) that was entered.
    fn string(&mut self, pointer: &str, text: &str) {
        let _ = (pointer, text);
    }
}

/// Walks `payload` as CBOR when `content_type` says so and as JSON otherwise, in document order.
/// CBOR map keys must be text, as the host requires.
pub fn visit(
    content_type: ContentType,
    payload: &[u8],
    visitor: &mut dyn Visitor,
) -> Result<(), String> {
    match content_type {
        ContentType::Cbor => cbor(payload, visitor),
        _ => json(payload, visitor),
    }
}

/// Calls `visit(pointer, text)` for every string value of `payload`, except those at or under a
/// pointer in `skip` (fields redacted anyway, or never worth scanning): what a scan of every
/// field for sensitive text needs.
pub fn strings(
    content_type: ContentType,
    payload: &[u8],
    skip: &[String],
    visit: impl FnMut(&str, &str),
) -> Result<(), String> {
    struct Strings<'s, F> {
        skip: &'s [String],
        visit: F,
    }
    impl<F: FnMut(&str, &str)> Visitor for Strings<'_, F> {
        fn member(&mut self, pointer: &str) -> bool {
            !self.skip.iter().any(|s| s == pointer)
        }
        fn element(&mut self, pointer: &str) -> bool {
            self.member(pointer)
        }
        fn string(&mut self, pointer: &str, text: &str) {
            (self.visit)(pointer, text);
        }
    }
    self::visit(content_type, payload, &mut Strings { skip, visit })
}

/// Calls `visit(pointer)` for every member of the root object of `payload`, and for the members
/// of every member object `visit` returned `true` for: what a check for undeclared fields needs.
/// Array elements are never visited (a declared array accepts its contents).
pub fn members(
    content_type: ContentType,
    payload: &[u8],
    visit: impl FnMut(&str) -> bool,
) -> Result<(), String> {
    struct Members<F>(F);
    impl<F: FnMut(&str) -> bool> Visitor for Members<F> {
        fn member(&mut self, pointer: &str) -> bool {
            (self.0)(pointer)
        }
        fn element(&mut self, _: &str) -> bool {
            false
        }
    }
    self::visit(content_type, payload, &mut Members(visit))
}

fn json(payload: &[u8], visitor: &mut dyn Visitor) -> Result<(), String> {
    let text =
        std::str::from_utf8(payload).map_err(|e| format!("the JSON payload is not UTF-8: {e}"))?;
    let mut reader = Json {
        s: text,
        b: payload,
        i: 0,
        path: Path::new(visitor),
    };
    reader.value(true)?;
    reader.ws();
    if reader.i != payload.len() {
        return Err(reader.error("trailing characters"));
    }
    Ok(())
}

fn cbor(payload: &[u8], visitor: &mut dyn Visitor) -> Result<(), String> {
    let mut reader = Cbor {
        b: payload,
        i: 0,
        path: Path::new(visitor),
    };
    reader.item(true)?;
    if reader.i != payload.len() {
        return Err(format!("trailing bytes at offset {}", reader.i));
    }
    Ok(())
}

/// What both readers share: the pointer buffer, the depth and the visitor.
struct Path<'v> {
    pointer: String,
    depth: usize,
    visitor: &'v mut dyn Visitor,
}

impl<'v> Path<'v> {
    fn new(visitor: &'v mut dyn Visitor) -> Self {
        Self {
            pointer: String::new(),
            depth: 0,
            visitor,
        }
    }

    /// Into an object or array: refused past [`MAX_DEPTH`].
    fn open(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH}"));
        }
        Ok(())
    }

    fn close(&mut self) {
        self.depth -= 1;
    }

    /// To the member `key` of a value (`entered` or not): whether the member is entered, and the
    /// pointer's length to [`back`](Self::back) to after it.
    fn member(&mut self, entered: bool, key: &str) -> (bool, usize) {
        let len = self.pointer.len();
        let enter = entered && {
            push_token(&mut self.pointer, key);
            self.visitor.member(&self.pointer)
        };
        (enter, len)
    }

    /// As [`member`](Self::member), to the element `index` of an array.
    fn element(&mut self, entered: bool, index: u64) -> (bool, usize) {
        let len = self.pointer.len();
        let enter = entered && {
            use std::fmt::Write;
            // Writing to a String cannot fail.
            let _ = write!(self.pointer, "/{index}");
            self.visitor.element(&self.pointer)
        };
        (enter, len)
    }

    fn back(&mut self, len: usize) {
        self.pointer.truncate(len);
    }

    fn string(&mut self, entered: bool, text: &str) {
        if entered {
            self.visitor.string(&self.pointer, text);
        }
    }
}

/// Appends one RFC 6901 reference token: `~` as `~0`, `/` as `~1`.
fn push_token(pointer: &mut String, token: &str) {
    pointer.push('/');
    for c in token.chars() {
        match c {
            '~' => pointer.push_str("~0"),
            '/' => pointer.push_str("~1"),
            c => pointer.push(c),
        }
    }
}

struct Json<'a, 'v> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    path: Path<'v>,
}

impl<'a> Json<'a, '_> {
    fn error(&self, what: &str) -> String {
        format!("{what} at byte {}", self.i)
    }

    fn ws(&mut self) {
        while self
            .b
            .get(self.i)
            .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        self.ws();
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected `{}`", char::from(c))))
        }
    }

    /// A value; `entered`: its members, elements or string are reported.
    fn value(&mut self, entered: bool) -> Result<(), String> {
        self.ws();
        match self.b.get(self.i) {
            Some(b'{') => {
                self.open()?;
                self.ws();
                if self.b.get(self.i) == Some(&b'}') {
                    self.i += 1;
                } else {
                    loop {
                        self.expect(b'"')?;
                        let key = self.string()?;
                        self.expect(b':')?;
                        let (enter, len) = self.path.member(entered, &key);
                        self.value(enter)?;
                        self.path.back(len);
                        if !self.next_or_close(b'}')? {
                            break;
                        }
                    }
                }
                self.path.close();
            }
            Some(b'[') => {
                self.open()?;
                self.ws();
                if self.b.get(self.i) == Some(&b']') {
                    self.i += 1;
                } else {
                    let mut index = 0;
                    loop {
                        let (enter, len) = self.path.element(entered, index);
                        self.value(enter)?;
                        self.path.back(len);
                        index += 1;
                        if !self.next_or_close(b']')? {
                            break;
                        }
                    }
                }
                self.path.close();
            }
            Some(b'"') => {
                self.i += 1;
                let text = self.string()?;
                self.path.string(entered, &text);
            }
            Some(_) => {
                // A number, `true`, `false` or `null`: nothing to report.
                let start = self.i;
                while self
                    .b
                    .get(self.i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
                {
                    self.i += 1;
                }
                if self.i == start {
                    return Err(self.error("expected a value"));
                }
            }
            None => return Err(self.error("unexpected end")),
        }
        Ok(())
    }

    /// Past the opening bracket, one level deeper.
    fn open(&mut self) -> Result<(), String> {
        self.i += 1;
        self.path.open().map_err(|e| self.error(&e))
    }

    /// After a member or element: `true` on `,`, `false` on the closing bracket.
    fn next_or_close(&mut self, close: u8) -> Result<bool, String> {
        self.ws();
        match self.b.get(self.i) {
            Some(b',') => {
                self.i += 1;
                Ok(true)
            }
            Some(&c) if c == close => {
                self.i += 1;
                Ok(false)
            }
            _ => Err(self.error(&format!("expected `,` or `{}`", char::from(close)))),
        }
    }

    /// The string whose opening quote was just read; borrowed when it has no escapes.
    fn string(&mut self) -> Result<Cow<'a, str>, String> {
        let start = self.i;
        loop {
            match self.b.get(self.i) {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(Cow::Borrowed(&self.s[start..self.i - 1]));
                }
                Some(b'\\') => break,
                Some(_) => self.i += 1,
                None => return Err(self.error("unterminated string")),
            }
        }
        let mut out = String::from(&self.s[start..self.i]);
        loop {
            match self.b.get(self.i) {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    let escaped = self.b.get(self.i + 1).copied();
                    self.i += 2;
                    match escaped {
                        Some(b'"') => out.push('"'),
                        Some(b'\\') => out.push('\\'),
                        Some(b'/') => out.push('/'),
                        Some(b'b') => out.push('\u{8}'),
                        Some(b'f') => out.push('\u{c}'),
                        Some(b'n') => out.push('\n'),
                        Some(b'r') => out.push('\r'),
                        Some(b't') => out.push('\t'),
                        Some(b'u') => out.push(self.unicode()?),
                        _ => return Err(self.error("bad escape")),
                    }
                }
                Some(_) => {
                    // Copy up to the next quote or backslash (both ASCII, so a char boundary).
                    let run = self.i;
                    while self.b.get(self.i).is_some_and(|&c| c != b'"' && c != b'\\') {
                        self.i += 1;
                    }
                    out.push_str(&self.s[run..self.i]);
                }
                None => return Err(self.error("unterminated string")),
            }
        }
    }

    /// The character of a `\u` escape whose `\u` was just read, surrogate pairs joined.
    fn unicode(&mut self) -> Result<char, String> {
        let high = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&high) {
            if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                return Err(self.error("lone surrogate"));
            }
            self.i += 2;
            let low = self.hex4()?;
            if !(0xDC00..0xE000).contains(&low) {
                return Err(self.error("lone surrogate"));
            }
            0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
        } else {
            high
        };
        char::from_u32(code).ok_or_else(|| self.error("bad \\u escape"))
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self
            .s
            .get(self.i..self.i + 4)
            .ok_or_else(|| self.error("short \\u escape"))?;
        let code = u32::from_str_radix(digits, 16).map_err(|_| self.error("bad \\u escape"))?;
        self.i += 4;
        Ok(code)
    }
}

struct Cbor<'a, 'v> {
    b: &'a [u8],
    i: usize,
    path: Path<'v>,
}

/// The argument of a CBOR head: a count or length, or indefinite (`None`).
type Arg = Option<u64>;

impl<'a> Cbor<'a, '_> {
    fn byte(&mut self) -> Result<u8, String> {
        let b = *self
            .b
            .get(self.i)
            .ok_or_else(|| format!("unexpected end at offset {}", self.i))?;
        self.i += 1;
        Ok(b)
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        let rest = self.b.len() - self.i;
        match usize::try_from(n) {
            Ok(n) if n <= rest => {
                self.i += n;
                Ok(&self.b[self.i - n..self.i])
            }
            _ => Err(format!("length {n} past the end at offset {}", self.i)),
        }
    }

    /// A head: the major type and its argument.
    fn head(&mut self) -> Result<(u8, Arg), String> {
        let initial = self.byte()?;
        let (major, info) = (initial >> 5, initial & 0x1f);
        let arg = match info {
            0..=23 => Some(u64::from(info)),
            24..=27 => {
                let bytes = self.take(1 << (info - 24))?;
                Some(bytes.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b)))
            }
            31 if matches!(major, 2..=5 | 7) => None,
            _ => return Err(format!("bad head 0x{initial:02x} at offset {}", self.i - 1)),
        };
        Ok((major, arg))
    }

    /// Whether the next byte is the `break` of an indefinite item (consumed if so).
    fn at_break(&mut self) -> bool {
        let hit = self.b.get(self.i) == Some(&0xff);
        if hit {
            self.i += 1;
        }
        hit
    }

    /// A text string's content (major type 3) whose head gave `arg`.
    fn text(&mut self, arg: Arg) -> Result<Cow<'a, str>, String> {
        let utf8 = |bytes| {
            std::str::from_utf8(bytes).map_err(|e| format!("text string is not UTF-8: {e}"))
        };
        match arg {
            Some(n) => Ok(Cow::Borrowed(utf8(self.take(n)?)?)),
            None => {
                let mut out = String::new();
                while !self.at_break() {
                    match self.head()? {
                        (3, Some(n)) => out.push_str(utf8(self.take(n)?)?),
                        _ => return Err(format!("bad text chunk at offset {}", self.i)),
                    }
                }
                Ok(Cow::Owned(out))
            }
        }
    }

    /// Whether another element follows in a container of `count` (`None`: indefinite) after
    /// `seen` elements.
    fn more(&mut self, count: Arg, seen: u64) -> bool {
        match count {
            Some(n) => seen < n,
            None => !self.at_break(),
        }
    }

    /// An item; `entered`: its members, elements or text are reported.
    fn item(&mut self, entered: bool) -> Result<(), String> {
        let (major, arg) = self.head()?;
        match major {
            0 | 1 | 7 => {
                if major == 7 && arg.is_none() {
                    return Err(format!("unexpected break at offset {}", self.i - 1));
                }
            }
            2 => match arg {
                Some(n) => {
                    self.take(n)?;
                }
                None => {
                    while !self.at_break() {
                        match self.head()? {
                            (2, Some(n)) => {
                                self.take(n)?;
                            }
                            _ => return Err(format!("bad byte chunk at offset {}", self.i)),
                        }
                    }
                }
            },
            3 => {
                let text = self.text(arg)?;
                self.path.string(entered, &text);
            }
            4 | 5 => {
                self.path.open()?;
                let mut seen = 0u64;
                while self.more(arg, seen) {
                    let (enter, len) = if major == 4 {
                        self.path.element(entered, seen)
                    } else {
                        let key = match self.head()? {
                            (3, key) => self.text(key)?,
                            _ => return Err(format!("map key is not text at offset {}", self.i)),
                        };
                        self.path.member(entered, &key)
                    };
                    self.item(enter)?;
                    self.path.back(len);
                    seen += 1;
                }
                self.path.close();
            }
            // A tag: the tagged item is the value.
            _ => self.item(entered)?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The string values reported, skipping the subtrees at `skip`.
    fn strings_of(
        content_type: ContentType,
        payload: &[u8],
        skip: &[&str],
    ) -> Result<Vec<(String, String)>, String> {
        let skip: Vec<String> = skip.iter().map(|s| (*s).to_owned()).collect();
        let mut seen = Vec::new();
        strings(content_type, payload, &skip, |p, t| {
            seen.push((p.to_owned(), t.to_owned()));
        })?;
        Ok(seen)
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
            .collect()
    }

    /// The members visited, entering those `enter` names.
    fn members_of(
        content_type: ContentType,
        payload: &[u8],
        enter: &[&str],
    ) -> Result<Vec<String>, String> {
        let mut seen = Vec::new();
        members(content_type, payload, |p| {
            seen.push(p.to_owned());
            enter.contains(&p)
        })?;
        Ok(seen)
    }

    #[test]
    fn json_strings_with_their_pointers() {
        let doc = br#" {"seq": 1, "ts": 1764000000123, "ok": true, "n": null, "t": -2.5e3,
            "note": "a\"b\\c\u00e9\ud83d\ude00", "a/b~c": "x",
            "list": [ "p", {"k": ["q"]}, [], {} ], "key-only": {"k": 1}} "#;
        assert_eq!(
            strings_of(ContentType::Json, doc, &[]).unwrap(),
            pairs(&[
                ("/note", "a\"b\\cé😀"),
                ("/a~1b~0c", "x"),
                ("/list/0", "p"),
                ("/list/1/k/0", "q"),
            ])
        );
        assert_eq!(
            strings_of(ContentType::Json, doc, &["/list/1", "/note"]).unwrap(),
            pairs(&[("/a~1b~0c", "x"), ("/list/0", "p")])
        );
        assert_eq!(
            strings_of(ContentType::Json, br#""top""#, &[]).unwrap(),
            pairs(&[("", "top")])
        );
    }

    #[test]
    fn json_members_with_their_pointers() {
        let doc = br#" {"seq": 1, "ok": true, "n": null, "t": -2.5e3,
            "note": "a\"b", "a/b~c": {"x": 1}, "list": [{"k": 1}, [], {}],
            "m": {"t\u00e9": {"deep": 1}, "s": "x"}, "e\/": {}} "#;
        assert_eq!(
            members_of(ContentType::Json, doc, &[]).unwrap(),
            ["/seq", "/ok", "/n", "/t", "/note", "/a~1b~0c", "/list", "/m", "/e~1"]
        );
        assert_eq!(
            members_of(
                ContentType::Json,
                doc,
                &["/a~1b~0c", "/m", "/m/té", "/list", "/seq"]
            )
            .unwrap(),
            [
                "/seq",
                "/ok",
                "/n",
                "/t",
                "/note",
                "/a~1b~0c",
                "/a~1b~0c/x",
                "/list",
                "/m",
                "/m/té",
                "/m/té/deep",
                "/m/s",
                "/e~1"
            ]
        );
        // Only objects have members: a scalar root has none.
        assert!(members_of(ContentType::Json, br#""top""#, &[])
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_visitor_chooses_what_it_enters() {
        #[derive(Default)]
        struct Log(Vec<String>);
        impl Visitor for Log {
            fn member(&mut self, pointer: &str) -> bool {
                self.0.push(format!("m {pointer}"));
                pointer != "/no"
            }
            fn element(&mut self, pointer: &str) -> bool {
                self.0.push(format!("e {pointer}"));
                pointer != "/a/1"
            }
            fn string(&mut self, pointer: &str, text: &str) {
                self.0.push(format!("s {pointer}={text}"));
            }
        }
        let mut log = Log::default();
        let doc = br#"{"a": ["x", ["y"], {"k": "z"}], "no": {"k": "w"}}"#;
        visit(ContentType::Json, doc, &mut log).unwrap();
        let want = [
            "m /a",
            "e /a/0",
            "s /a/0=x",
            "e /a/1",
            "e /a/2",
            "m /a/2/k",
            "s /a/2/k=z",
            "m /no",
        ];
        assert_eq!(log.0, want);
        // The same document in CBOR reports the same.
        let doc = b"\xa2\x61a\x83\x61x\x81\x61y\xa1\x61k\x61z\x62no\xa1\x61k\x61w";
        let mut log = Log::default();
        visit(ContentType::Cbor, doc, &mut log).unwrap();
        assert_eq!(log.0, want);
    }

    #[test]
    fn malformed_json_is_an_error() {
        for bad in [
            &b"{"[..],
            b"{\"a\" 1}",
            b"[1,]",
            b"\"abc",
            b"{\"a\": \"\\x\"}",
            b"\"\\ud800\"",
            b"{\"\\ud800\": 1}",
            b"{} x",
            b"",
            b"\xff",
        ] {
            let what = String::from_utf8_lossy(bad);
            assert!(strings_of(ContentType::Json, bad, &[]).is_err(), "{what}");
            assert!(members_of(ContentType::Json, bad, &[]).is_err(), "{what}");
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        let err = strings_of(ContentType::Json, deep.as_bytes(), &[]).unwrap_err();
        assert_eq!(err, "nested deeper than 128 at byte 129");
        // Not entering a subtree does not lift the limit.
        let err = members_of(ContentType::Json, deep.as_bytes(), &[]).unwrap_err();
        assert!(err.contains("deeper"), "{err}");
    }

    #[test]
    fn cbor_strings_and_members_with_their_pointers() {
        // {"seq": 1, "t": 21.5 (f64), "raw": h'0102', "o/w~": {"mail": "a@b.io"},
        //  "list": [_ "x", 1("y"), {"k": 1}], "s": (_ "ab" "cd"), "tag": 1({"x": 2})}
        let doc = [
            &b"\xa7\x63seq\x01"[..],
            b"\x61t\xfb\x40\x35\x80\x00\x00\x00\x00\x00",
            b"\x63raw\x42\x01\x02",
            b"\x64o/w~\xa1\x64mail\x66a@b.io",
            b"\x64list\x9f\x61x\xc1\x61y\xa1\x61k\x01\xff",
            b"\x61s\x7f\x62ab\x62cd\xff",
            b"\x63tag\xc1\xa1\x61x\x02",
        ]
        .concat();
        assert_eq!(
            strings_of(ContentType::Cbor, &doc, &[]).unwrap(),
            pairs(&[
                ("/o~1w~0/mail", "a@b.io"),
                ("/list/0", "x"),
                ("/list/1", "y"),
                ("/s", "abcd"),
            ])
        );
        assert_eq!(
            strings_of(ContentType::Cbor, &doc, &["/o~1w~0"]).unwrap(),
            pairs(&[("/list/0", "x"), ("/list/1", "y"), ("/s", "abcd")])
        );
        assert_eq!(
            members_of(ContentType::Cbor, &doc, &[]).unwrap(),
            ["/seq", "/t", "/raw", "/o~1w~0", "/list", "/s", "/tag"]
        );
        // Elements, even objects in an entered array, are never visited as members.
        assert_eq!(
            members_of(ContentType::Cbor, &doc, &["/o~1w~0", "/list", "/tag"]).unwrap(),
            [
                "/seq",
                "/t",
                "/raw",
                "/o~1w~0",
                "/o~1w~0/mail",
                "/list",
                "/s",
                "/tag",
                "/tag/x"
            ]
        );
    }

    #[test]
    fn malformed_cbor_is_an_error() {
        // An integer map key, a length past the end, a trailing byte, nothing.
        for bad in [
            &b"\xa1\x01\x61x"[..],
            b"\x78\xff",
            b"\x61x\x00",
            b"\xa0\x00",
            b"",
        ] {
            assert!(strings_of(ContentType::Cbor, bad, &[]).is_err(), "{bad:?}");
            assert!(members_of(ContentType::Cbor, bad, &[]).is_err(), "{bad:?}");
        }
        let deep = [vec![0x81; 200], vec![0x00]].concat();
        let err = strings_of(ContentType::Cbor, &deep, &[]).unwrap_err();
        assert_eq!(err, "nested deeper than 128");
    }
}
