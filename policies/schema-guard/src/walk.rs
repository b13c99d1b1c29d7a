//! Visits the object members of a JSON or CBOR payload with their JSON Pointers, for `strict`.
//!
//! Hand-written walkers (after pii-redact's) instead of serde_json or a CBOR crate: they build no
//! document tree and keep one pointer buffer for the whole walk. The walk enters the root object
//! and every member the visitor asks for; array elements are never visited (a declared array
//! accepts its contents), and everything not entered is read over without a visit.
//!
//! The host has already parsed the payload for the chain, so a payload that does not parse here
//! is rare; it is an error all the same, and the policy fails closed on it.

use std::borrow::Cow;

/// Nesting deeper than this is refused (the guest's stack is small; serde_json, which the host
/// parses with, stops at 128 too).
const MAX_DEPTH: usize = 128;

/// What the visitor says of a member: enter it (visit its members, if it is an object) or not.
pub type Visit<'v> = dyn FnMut(&str) -> bool + 'v;

/// Calls `visit(pointer)` for every member of the root object of the JSON document `payload`,
/// in document order, and for the members of every member object `visit` returned `true` for.
pub fn json(payload: &[u8], visit: &mut Visit<'_>) -> Result<(), String> {
    let text =
        std::str::from_utf8(payload).map_err(|e| format!("the JSON payload is not UTF-8: {e}"))?;
    let mut walker = Json {
        s: text,
        b: payload,
        i: 0,
        pointer: String::new(),
        depth: 0,
    };
    walker.value(true, visit)?;
    walker.ws();
    if walker.i != payload.len() {
        return Err(walker.error("trailing characters"));
    }
    Ok(())
}

/// As [`json`], for a CBOR data item. Map keys must be text, as the host requires.
pub fn cbor(payload: &[u8], visit: &mut Visit<'_>) -> Result<(), String> {
    let mut walker = Cbor {
        b: payload,
        i: 0,
        pointer: String::new(),
        depth: 0,
    };
    walker.item(true, visit)?;
    if walker.i != payload.len() {
        return Err(format!("trailing bytes at offset {}", walker.i));
    }
    Ok(())
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

struct Json<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    pointer: String,
    depth: usize,
}

impl<'a> Json<'a> {
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

    /// A value; `enter`: an object's members are visited.
    fn value(&mut self, enter: bool, visit: &mut Visit<'_>) -> Result<(), String> {
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
                        let len = self.pointer.len();
                        let child = enter && {
                            push_token(&mut self.pointer, &key);
                            visit(&self.pointer)
                        };
                        self.value(child, visit)?;
                        self.pointer.truncate(len);
                        if !self.next_or_close(b'}')? {
                            break;
                        }
                    }
                }
                self.depth -= 1;
            }
            Some(b'[') => {
                self.open()?;
                self.ws();
                if self.b.get(self.i) == Some(&b']') {
                    self.i += 1;
                } else {
                    loop {
                        // Elements are never visited.
                        self.value(false, visit)?;
                        if !self.next_or_close(b']')? {
                            break;
                        }
                    }
                }
                self.depth -= 1;
            }
            Some(b'"') => {
                self.i += 1;
                self.string()?;
            }
            Some(_) => {
                // A number, `true`, `false` or `null`.
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

    fn open(&mut self) -> Result<(), String> {
        self.i += 1;
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(&format!("nested deeper than {MAX_DEPTH}")));
        }
        Ok(())
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

struct Cbor<'a> {
    b: &'a [u8],
    i: usize,
    pointer: String,
    depth: usize,
}

/// The argument of a CBOR head: a count or length, or indefinite (`None`).
type Arg = Option<u64>;

impl<'a> Cbor<'a> {
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

    /// An item; `enter`: a map's members are visited.
    fn item(&mut self, enter: bool, visit: &mut Visit<'_>) -> Result<(), String> {
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
                self.text(arg)?;
            }
            4 | 5 => {
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err(format!("nested deeper than {MAX_DEPTH}"));
                }
                let mut seen = 0u64;
                while self.more(arg, seen) {
                    if major == 4 {
                        // Elements are never visited.
                        self.item(false, visit)?;
                    } else {
                        let key = match self.head()? {
                            (3, key) => self.text(key)?,
                            _ => return Err(format!("map key is not text at offset {}", self.i)),
                        };
                        let len = self.pointer.len();
                        let child = enter && {
                            push_token(&mut self.pointer, &key);
                            visit(&self.pointer)
                        };
                        self.item(child, visit)?;
                        self.pointer.truncate(len);
                    }
                    seen += 1;
                }
                self.depth -= 1;
            }
            // A tag: the tagged item is the value.
            _ => self.item(enter, visit)?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Walk = fn(&[u8], &mut Visit<'_>) -> Result<(), String>;

    /// The members visited, entering those `enter` names.
    fn members(walk: Walk, payload: &[u8], enter: &[&str]) -> Result<Vec<String>, String> {
        let mut seen = Vec::new();
        walk(payload, &mut |p| {
            seen.push(p.to_owned());
            enter.contains(&p)
        })?;
        Ok(seen)
    }

    #[test]
    fn json_members_with_their_pointers() {
        let doc = br#" {"seq": 1, "ok": true, "n": null, "t": -2.5e3,
            "note": "a\"b", "a/b~c": {"x": 1}, "list": [{"k": 1}, [], {}],
            "m": {"t\u00e9": {"deep": 1}, "s": "x"}, "e\/": {}} "#;
        assert_eq!(
            members(json, doc, &[]).unwrap(),
            ["/seq", "/ok", "/n", "/t", "/note", "/a~1b~0c", "/list", "/m", "/e~1"]
        );
        assert_eq!(
            members(json, doc, &["/a~1b~0c", "/m", "/m/té", "/list", "/seq"]).unwrap(),
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
        assert!(members(json, br#""top""#, &[]).unwrap().is_empty());
    }

    #[test]
    fn malformed_json_is_an_error() {
        for bad in [
            &b"{"[..],
            b"{\"a\" 1}",
            b"[1,]",
            b"{\"a\": \"\\x\"}",
            b"{\"\\ud800\": 1}",
            b"{} x",
            b"",
        ] {
            assert!(
                members(json, bad, &[]).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(members(json, deep.as_bytes(), &[])
            .unwrap_err()
            .contains("deeper"));
    }

    #[test]
    fn cbor_members_with_their_pointers() {
        // {"seq": 1, "t": 21.5 (f64), "raw": h'0102', "o/w~": {"mail": "a@b.io"},
        //  "list": [_ {"k": 1}], "s": (_ "ab" "cd"), "tag": 1({"x": 2})}
        let mut doc = vec![0xa7];
        doc.extend(b"\x63seq\x01");
        doc.extend(b"\x61t\xfb\x40\x35\x80\x00\x00\x00\x00\x00");
        doc.extend(b"\x63raw\x42\x01\x02");
        doc.extend(b"\x64o/w~\xa1\x64mail\x66a@b.io");
        doc.extend(b"\x64list\x9f\xa1\x61k\x01\xff");
        doc.extend(b"\x61s\x7f\x62ab\x62cd\xff");
        doc.extend(b"\x63tag\xc1\xa1\x61x\x02");
        assert_eq!(
            members(cbor, &doc, &[]).unwrap(),
            ["/seq", "/t", "/raw", "/o~1w~0", "/list", "/s", "/tag"]
        );
        assert_eq!(
            members(cbor, &doc, &["/o~1w~0", "/list", "/tag"]).unwrap(),
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
        // An integer map key, a length past the end, a trailing byte, nothing.
        for bad in [&b"\xa1\x01\x61x"[..], b"\x78\xff", b"\xa0\x00", b""] {
            assert!(members(cbor, bad, &[]).is_err(), "{bad:?}");
        }
    }
}
