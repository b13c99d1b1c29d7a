//! Detectors of personal data in a string: e-mail addresses, phone numbers, IBANs, payment card
//! numbers and configured names.
//!
//! Small hand-written matchers rather than a regex engine: each is one linear pass over the
//! bytes, and the checks that keep telemetry quiet (mod-97, Luhn, card brand lengths, the shapes
//! of dates, decimals, versions and MAC addresses) are code either way. A candidate is always
//! the whole run of characters that could belong to it, never a piece of a longer number, so a
//! millisecond timestamp or a UUID cannot yield a "phone number" from its middle digits.

use std::fmt;

/// What kind of personal data a detector found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// An e-mail address: `local@domain.tld`.
    Email,
    /// An IBAN with a valid mod-97 checksum.
    Iban,
    /// A payment card number: a known brand's prefix and length, Luhn-checked.
    Card,
    /// A phone number, international (`+`, `00`) or in a common national form.
    Phone,
    /// One of the configured names, as a whole word, in any case.
    Name,
}

impl Kind {
    /// Every kind, in the order the detectors run: on overlapping matches the first one wins.
    pub const ALL: [Self; 5] = [Self::Email, Self::Iban, Self::Card, Self::Phone, Self::Name];

    /// The name used in `detect` (`names` for [`Kind::Name`]).
    pub fn config_name(self) -> &'static str {
        match self {
            Self::Name => "names",
            other => other.as_str(),
        }
    }

    /// The name used in alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Iban => "iban",
            Self::Card => "card",
            Self::Phone => "phone",
            Self::Name => "name",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A match: the bytes `start..end` of the string are personal data of `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub kind: Kind,
}

/// The detectors a configuration enabled, with the names to look for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detectors {
    kinds: Vec<Kind>,
    /// Each name as its lower-cased words.
    names: Vec<Vec<String>>,
}

impl Detectors {
    /// Detectors of `kinds`; `names` is the comma-separated list for [`Kind::Name`].
    pub fn new(mut kinds: Vec<Kind>, names: &[&str]) -> Self {
        kinds.sort_unstable();
        kinds.dedup();
        let names = names
            .iter()
            .map(|name| name.split_whitespace().map(str::to_lowercase).collect())
            .filter(|words: &Vec<String>| !words.is_empty())
            .collect();
        Self { kinds, names }
    }

    /// Every match in `text`, sorted by position, none overlapping (an earlier detector in
    /// [`Kind::ALL`] wins over a later one).
    pub fn find(&self, text: &str) -> Vec<Span> {
        let mut spans = Vec::new();
        for &kind in &self.kinds {
            let mut found = Vec::new();
            match kind {
                Kind::Email => emails(text, &mut found),
                Kind::Iban => ibans(text, &mut found),
                Kind::Card => cards(text, &mut found),
                Kind::Phone => phones(text, &mut found),
                Kind::Name => names(text, &self.names, &mut found),
            }
            for span in found {
                // Against every match kept so far, this detector's own included: two e-mail
                // matches may share characters (`a@b.cc@d.ee`), and masking both would slice
                // backwards.
                let overlaps = spans
                    .iter()
                    .any(|s: &Span| s.start < span.end && span.start < s.end);
                if !overlaps {
                    spans.push(span);
                }
            }
        }
        spans.sort_unstable_by_key(|s| s.start);
        spans
    }
}

/// `text` with every span replaced by `mask`: the rest of a free-text field survives, and a field
/// that is wholly one match becomes the mask.
pub fn mask(text: &str, spans: &[Span], mask: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for span in spans {
        out.push_str(&text[at..span.start]);
        out.push_str(mask);
        at = span.end;
    }
    out.push_str(&text[at..]);
    out
}

fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_domain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')
}

/// `local@domain.tld`: a local part of letters, digits and `._%+-`, at least two domain labels,
/// and a top-level domain of two or more letters (so `device@plant` or `fw@2.14.1` are not).
fn emails(text: &str, out: &mut Vec<Span>) {
    let b = text.as_bytes();
    for (at, _) in text.match_indices('@') {
        let mut start = at;
        while start > 0 && is_local(b[start - 1]) {
            start -= 1;
        }
        while start < at && b[start] == b'.' {
            start += 1;
        }
        if start == at || b[at - 1] == b'.' {
            continue;
        }
        let mut end = at + 1;
        while end < b.len() && is_domain(b[end]) {
            end += 1;
        }
        // A sentence may end right after the address.
        while end > at + 1 && matches!(b[end - 1], b'.' | b'-') {
            end -= 1;
        }
        if valid_domain(&text[at + 1..end]) {
            out.push(Span {
                start,
                end,
                kind: Kind::Email,
            });
        }
    }
}

fn valid_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    let Some(tld) = labels.last() else {
        return false;
    };
    labels.len() >= 2
        && labels
            .iter()
            .all(|l| (1..=63).contains(&l.len()) && !l.starts_with('-') && !l.ends_with('-'))
        && tld.len() >= 2
        && tld.bytes().all(|c| c.is_ascii_alphabetic())
}

/// Whether a match may start after `prev`: not inside a word or a longer number.
fn starts_token(b: &[u8], at: usize) -> bool {
    at == 0 || {
        let prev = b[at - 1];
        !(prev.is_ascii_alphanumeric() || matches!(prev, b'.' | b'-' | b'/' | b'+' | b'_' | b','))
    }
}

/// Whether a numeric match may end before `at`: not followed by a letter or digit, a time
/// (`:`), or a decimal part.
fn ends_number(b: &[u8], at: usize) -> bool {
    match b.get(at) {
        None => true,
        Some(&c) if c.is_ascii_alphanumeric() || c == b':' || c == b'_' => false,
        Some(b'.' | b',') => !b.get(at + 1).is_some_and(u8::is_ascii_digit),
        Some(_) => true,
    }
}

/// The IBAN shape: two capital letters, two check digits, then letters and digits, written in
/// one piece or in groups separated by single spaces. 15 to 34 characters, mod 97 = 1. The
/// longest valid prefix ending at a group boundary wins (a word after the IBAN is not part of
/// it).
fn ibans(text: &str, out: &mut Vec<Span>) {
    let b = text.as_bytes();
    let mut i = 0;
    while i + 4 <= b.len() {
        let shaped = b[i].is_ascii_uppercase()
            && b[i + 1].is_ascii_uppercase()
            && b[i + 2].is_ascii_digit()
            && b[i + 3].is_ascii_digit();
        if !shaped || (i > 0 && b[i - 1].is_ascii_alphanumeric()) {
            i += 1;
            continue;
        }
        let mut compact = Vec::with_capacity(34);
        let mut ends = Vec::new();
        let mut j = i;
        loop {
            while j < b.len() && b[j].is_ascii_alphanumeric() && compact.len() <= 34 {
                compact.push(b[j].to_ascii_uppercase());
                j += 1;
            }
            ends.push((j, compact.len()));
            if compact.len() > 34 || j + 1 >= b.len() || b[j] != b' ' {
                break;
            }
            if !b[j + 1].is_ascii_alphanumeric() {
                break;
            }
            j += 1;
        }
        let found = ends.iter().rev().find(|&&(end, n)| {
            (15..=34).contains(&n)
                && !b.get(end).is_some_and(u8::is_ascii_alphanumeric)
                && iban_checksum(&compact[..n])
        });
        match found {
            Some(&(end, _)) => {
                out.push(Span {
                    start: i,
                    end,
                    kind: Kind::Iban,
                });
                i = end;
            }
            None => i += 1,
        }
    }
}

/// ISO 13616: the first four characters moved to the end, letters as 10..35, mod 97 = 1.
fn iban_checksum(iban: &[u8]) -> bool {
    let mut rem = 0u32;
    for &c in iban[4..].iter().chain(&iban[..4]) {
        rem = match c {
            b'0'..=b'9' => (rem * 10 + u32::from(c - b'0')) % 97,
            b'A'..=b'Z' => (rem * 100 + u32::from(c - b'A') + 10) % 97,
            _ => return false,
        };
    }
    rem == 1
}

/// A run of digit groups with separators between them, as written in text.
struct Run {
    start: usize,
    end: usize,
    /// The length of each digit group.
    groups: Vec<usize>,
    /// The separators between the groups (`seps[k]` precedes `groups[k + 1]`).
    seps: Vec<Vec<u8>>,
    /// Where each group ends.
    ends: Vec<usize>,
}

impl Run {
    fn digits(&self) -> usize {
        self.groups.iter().sum()
    }

    /// Whether every separator is the single character `sep`.
    fn all_seps(&self, sep: u8) -> bool {
        self.seps.iter().all(|s| s.as_slice() == [sep])
    }
}

/// The run of digit groups starting at `at`, separated by one of `seps` (or two where one is a
/// parenthesis: `(030) 1234`). Ends after the last digit.
fn digit_run(b: &[u8], at: usize, seps: &[u8]) -> Run {
    let mut run = Run {
        start: at,
        end: at,
        groups: Vec::new(),
        seps: Vec::new(),
        ends: Vec::new(),
    };
    let mut j = at;
    loop {
        let sep_start = j;
        while j < b.len() && seps.contains(&b[j]) && j - sep_start < 2 {
            j += 1;
        }
        let sep = &b[sep_start..j];
        let sep_ok = match sep.len() {
            0 => run.groups.is_empty(),
            1 => !run.groups.is_empty() || sep == b"(",
            _ => sep.contains(&b'(') || sep.contains(&b')'),
        };
        if !sep_ok || !b.get(j).is_some_and(u8::is_ascii_digit) {
            break;
        }
        if !run.groups.is_empty() {
            run.seps.push(sep.to_vec());
        }
        let g = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        run.groups.push(j - g);
        run.ends.push(j);
        run.end = j;
    }
    run
}

/// Payment card numbers: 13 to 19 digits, in one piece or in groups separated by single spaces
/// or dashes, with a known brand's prefix and length, a valid Luhn check digit, and not one
/// digit repeated. Timestamps (`17…`), IMEIs (15 digits, `35…`/`86…`) and zero-padded counters
/// have no brand.
fn cards(text: &str, out: &mut Vec<Span>) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() || !starts_token(b, i) {
            i += 1;
            continue;
        }
        let run = digit_run(b, i, b" -");
        let mut digits = Vec::with_capacity(19);
        let mut found = None;
        for (k, &end) in run.ends.iter().enumerate() {
            let g = run.groups[k];
            digits.extend(b[end - g..end].iter().map(|c| c - b'0'));
            if digits.len() > 19 {
                break;
            }
            // One piece, or ending at a group boundary; never a piece of a longer number.
            if (13..=19).contains(&digits.len()) && ends_number(b, end) && card(&digits) {
                found = Some(end);
            }
        }
        if let Some(end) = found {
            out.push(Span {
                start: i,
                end,
                kind: Kind::Card,
            });
        }
        i = run.end.max(i + 1);
    }
}

fn card(digits: &[u8]) -> bool {
    let n = digits.len();
    let prefix = |k: usize| {
        digits[..k]
            .iter()
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d))
    };
    let brand = match digits[0] {
        // Visa.
        4 => matches!(n, 13 | 16 | 19),
        // Mastercard (2221-2720, 51-55), Maestro (50, 56-58).
        2 => (2221..=2720).contains(&prefix(4)) && n == 16,
        5 => match prefix(2) {
            51..=55 => n == 16,
            50 | 56..=58 => n >= 13,
            _ => false,
        },
        // American Express, Diners Club, JCB.
        3 => match prefix(2) {
            34 | 37 => n == 15,
            36 => n == 14,
            30 | 38 | 39 => (14..=16).contains(&n),
            35 => (3528..=3589).contains(&prefix(4)) && n >= 16,
            _ => false,
        },
        // Discover, UnionPay, Maestro.
        6 => n >= 16,
        _ => false,
    };
    brand && digits.iter().any(|&d| d != digits[0]) && luhn(digits)
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(k, &d)| {
            let d = u32::from(d);
            if k % 2 == 1 {
                if d > 4 {
                    d * 2 - 9
                } else {
                    d * 2
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Phone numbers, as whole runs of digits and separators (space `-` `.` `/` and parentheses):
///
/// - international: `+` and 8 to 15 digits (`+49 170 1234567`, `+1 (555) 123-4567`), or `00`
///   and a country code, 10 to 17 digits with at least one separator;
/// - national with a trunk `0`: 9 to 12 digits with at least one separator (`0170 1234567`,
///   `(030) 1234 5678`, `01 23 45 67 89`);
/// - North American: 3-3-4 digits (`555-123-4567`, `(555) 123-4567`), optionally after `1`.
///
/// Not: plain digit strings (timestamps, counters, zero-padded ids), decimals (`0.000123`),
/// dates (`05.12.2026`, `2026-11-25`), versions, IPv4 and MAC addresses.
fn phones(text: &str, out: &mut Vec<Span>) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next_digit = b.get(i + 1).is_some_and(u8::is_ascii_digit);
        let opens = c.is_ascii_digit() || (c == b'(' && next_digit) || c == b'+';
        if !opens || !starts_token(b, i) {
            i += 1;
            continue;
        }
        let plus = c == b'+';
        let at = if plus { i + 1 } else { i };
        let run = digit_run(b, at, b" -./()");
        if run.groups.is_empty() {
            i += 1;
            continue;
        }
        if phone(b, &run, plus) && ends_number(b, run.end) {
            out.push(Span {
                start: i,
                end: run.end,
                kind: Kind::Phone,
            });
        }
        i = run.end.max(i + 1);
    }
}

fn phone(b: &[u8], run: &Run, plus: bool) -> bool {
    let digits = run.digits();
    let opened = run.seps.iter().flatten().filter(|&&s| s == b'(').count()
        + usize::from(b[run.start] == b'(');
    let closed = run.seps.iter().flatten().filter(|&&s| s == b')').count();
    if opened != closed {
        return false;
    }
    let first = run.start + usize::from(b[run.start] == b'(');
    let lead = |k: usize| b.get(first + k).copied().unwrap_or(b'x');
    let separated = !run.seps.is_empty();
    let groups = run.groups.as_slice();
    // A decimal (`0.000123456789`), a date, an IPv4 or a MAC address is not a phone number.
    let decimal = groups.len() == 2 && run.all_seps(b'.');
    let date = groups.len() >= 3
        && matches!(groups[..3], [2, 2, 4] | [4, 2, 2] | [1 | 2, 1 | 2, 4])
        && run.seps[0] == run.seps[1]
        && matches!(run.seps[0].as_slice(), b"." | b"-" | b"/");
    let ipv4 = groups.len() == 4 && run.all_seps(b'.') && groups.iter().all(|&g| g <= 3);
    let mac = groups.len() == 6 && groups.iter().all(|&g| g == 2) && run.all_seps(b'-');
    if decimal || date || ipv4 || mac {
        return false;
    }
    if plus {
        return lead(0) != b'0' && (8..=15).contains(&digits);
    }
    if lead(0) == b'0' {
        if lead(1) == b'0' {
            // `00` and a country code.
            return lead(2) != b'0' && separated && (10..=17).contains(&digits);
        }
        return separated && (9..=12).contains(&digits);
    }
    // North American: NXX-NXX-XXXX, one kind of separator (or `(NXX) NXX-XXXX`).
    let area = match groups {
        [3, 3, 4] => 0,
        [1, 3, 3, 4] if lead(0) == b'1' => 1,
        _ => return false,
    };
    let consistent = run.all_seps(b'-')
        || run.all_seps(b'.')
        || run.all_seps(b' ')
        || (opened == 1 && b[run.start] == b'(');
    // Area codes start with 2-9.
    !matches!(b[run.ends[area] - 3], b'0' | b'1') && consistent
}

/// Whole-word, case-insensitive matches of the configured names; the words of a name match
/// across any run of white space.
fn names(text: &str, names: &[Vec<String>], out: &mut Vec<Span>) {
    if names.is_empty() {
        return;
    }
    let word_start = |at: usize| {
        text[at..].chars().next().is_some_and(char::is_alphanumeric)
            && !text[..at]
                .chars()
                .next_back()
                .is_some_and(char::is_alphanumeric)
    };
    let mut at = 0;
    while at < text.len() {
        if word_start(at) {
            if let Some(end) = names.iter().find_map(|name| match_name(text, at, name)) {
                out.push(Span {
                    start: at,
                    end,
                    kind: Kind::Name,
                });
                at = end;
                continue;
            }
        }
        at += text[at..].chars().next().map_or(1, char::len_utf8);
    }
}

/// Where `name` (lower-cased words) ends when it starts at `at`, as whole words.
fn match_name(text: &str, at: usize, name: &[String]) -> Option<usize> {
    let mut end = at;
    for (k, word) in name.iter().enumerate() {
        if k > 0 {
            let gap = text[end..]
                .char_indices()
                .find(|(_, c)| !c.is_whitespace())
                .map_or(text.len() - end, |(i, _)| i);
            if gap == 0 {
                return None;
            }
            end += gap;
        }
        end = match_word(text, end, word)?;
    }
    let whole = !text[end..]
        .chars()
        .next()
        .is_some_and(char::is_alphanumeric);
    whole.then_some(end)
}

fn match_word(text: &str, at: usize, word: &str) -> Option<usize> {
    let mut rest = word.chars();
    for (i, c) in text[at..].char_indices() {
        for lower in c.to_lowercase() {
            if rest.next() != Some(lower) {
                return None;
            }
        }
        if rest.as_str().is_empty() {
            return Some(at + i + c.len_utf8());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(kind: Kind, names: &[&str]) -> Detectors {
        Detectors::new(vec![kind], names)
    }

    /// The matched texts.
    fn found(kind: Kind, text: &str) -> Vec<String> {
        only(kind, &["Ada Lovelace", "Grace Hopper", "Zoë"])
            .find(text)
            .iter()
            .map(|s| text[s.start..s.end].to_owned())
            .collect()
    }

    /// Values seen in real telemetry, as strings, none of them personal data.
    const TELEMETRY: &[&str] = &[
        "1764000000123",
        "1764000000123456789",
        "1764000000",
        "184467",
        "000000012345",
        "0000123456",
        "21.5",
        "-3.25",
        "0.000123456789",
        "1013.25 hPa",
        "2.14.1",
        "v2.14.1-rc.3",
        "fw 10.2.3.4567",
        "00:1A:2B:3C:4D:5E",
        "00-11-22-33-44-55",
        "00:11:22:33:44:55",
        "550e8400-e29b-41d4-a716-446655440000",
        "01234567-1234-5678-1234-567812345678",
        "2026-11-25",
        "2026-11-25T10:00:00.123Z",
        "2026-11-25 10:00:00",
        "05.12.2026 10:30",
        "05/12/2026",
        "192.168.100.200",
        "010.001.002.003",
        "press-07",
        "c-12",
        "sensor@plant",
        "fw@2.14.1",
        "plant/press-07/telemetry",
        "error 0x1F at 0170",
        "35 209900 176148 1",
        "352099001761481",
        "4111111111111112",
        "1111 1111 1111 1111",
        "DE00 0000 0000 0000 0000 00",
        "AB12 frame",
        "running",
        "lat 52.520008 lon 13.404954",
        "serial SN-2024-000123-0456",
    ];

    #[test]
    fn realistic_telemetry_is_not_personal_data() {
        let all = Detectors::new(Kind::ALL.to_vec(), &["Ada Lovelace"]);
        for text in TELEMETRY {
            assert_eq!(all.find(text), [], "{text:?}");
        }
    }

    #[test]
    fn emails() {
        assert_eq!(
            found(Kind::Email, "ops.lead@plant.example"),
            ["ops.lead@plant.example"]
        );
        assert_eq!(
            found(Kind::Email, "mail Ada.L+iot@mail.example.co.uk."),
            ["Ada.L+iot@mail.example.co.uk"]
        );
        assert_eq!(
            found(Kind::Email, "a@x.io, b_c@y-z.example"),
            ["a@x.io", "b_c@y-z.example"]
        );
        for negative in [
            "sensor@plant",
            "fw@2.14.1",
            "@home.example",
            "user@.example",
            "x@-a.example",
            "a@b.c",
            "temp @ 21.5",
        ] {
            assert_eq!(
                found(Kind::Email, negative),
                Vec::<String>::new(),
                "{negative}"
            );
        }
    }

    #[test]
    fn phones() {
        for (text, phone) in [
            ("+49 170 1234567", "+49 170 1234567"),
            ("call me at +49 170 1234567 please", "+49 170 1234567"),
            ("+491701234567", "+491701234567"),
            ("+1 (555) 123-4567", "+1 (555) 123-4567"),
            ("+44 20 7946 0018.", "+44 20 7946 0018"),
            ("+49 (0)170 1234567", "+49 (0)170 1234567"),
            ("0049 170 1234567", "0049 170 1234567"),
            ("tel 0170 1234567", "0170 1234567"),
            ("030/12345678", "030/12345678"),
            ("(030) 1234 5678", "(030) 1234 5678"),
            ("01 23 45 67 89", "01 23 45 67 89"),
            ("555-123-4567", "555-123-4567"),
            ("(555) 123-4567", "(555) 123-4567"),
            ("1-555-123-4567", "1-555-123-4567"),
        ] {
            assert_eq!(found(Kind::Phone, text), [phone], "{text}");
        }
        for negative in [
            "01701234567",
            "+21.5",
            "+1234567",
            "0.5 0170",
            "123-456-7890",
            "555-123-45678",
            "555-123.4567",
            "12.30.2026",
            "2026-11-25",
            "(0170 1234567",
            "ID0170 1234567",
            "0170 1234567:12",
        ] {
            assert_eq!(
                found(Kind::Phone, negative),
                Vec::<String>::new(),
                "{negative}"
            );
        }
    }

    #[test]
    fn ibans() {
        assert_eq!(
            found(Kind::Iban, "DE89370400440532013000"),
            ["DE89370400440532013000"]
        );
        assert_eq!(
            found(Kind::Iban, "pay to DE89 3704 0044 0532 0130 00 by Friday"),
            ["DE89 3704 0044 0532 0130 00"]
        );
        assert_eq!(
            found(Kind::Iban, "GB82 WEST 1234 5698 7654 32"),
            ["GB82 WEST 1234 5698 7654 32"]
        );
        assert_eq!(
            found(Kind::Iban, "NL91ABNA0417164300"),
            ["NL91ABNA0417164300"]
        );
        for negative in [
            "DE88370400440532013000",
            "DE89 3704 0044 0532 0130 01",
            "XDE89370400440532013000",
            "AB12 frame",
            "DE89",
        ] {
            assert_eq!(
                found(Kind::Iban, negative),
                Vec::<String>::new(),
                "{negative}"
            );
        }
    }

    #[test]
    fn cards() {
        for (text, card) in [
            ("4111111111111111", "4111111111111111"),
            ("card 4111 1111 1111 1111 exp 12/29", "4111 1111 1111 1111"),
            ("5500-0000-0000-0004", "5500-0000-0000-0004"),
            ("2221000000000009", "2221000000000009"),
            ("378282246310005", "378282246310005"),
            ("6011111111111117", "6011111111111117"),
            ("3530111333300000", "3530111333300000"),
        ] {
            assert_eq!(found(Kind::Card, text), [card], "{text}");
        }
        for negative in [
            // Luhn-invalid.
            "4111111111111112",
            "4111 1111 1111 1121",
            // One digit repeated, no brand, too short, too long, part of a longer number.
            "4444444444444444",
            "1111111111111117",
            "411111111111",
            "41111111111111111111",
            "1.4111111111111111",
            "4111111111111111.5",
            // Timestamps and an IMEI (Luhn-valid, 15 digits, no card brand of that length).
            "1764000000123",
            "1764000000123456789",
            "352099001761481",
        ] {
            assert_eq!(
                found(Kind::Card, negative),
                Vec::<String>::new(),
                "{negative}"
            );
        }
    }

    #[test]
    fn names() {
        assert_eq!(
            found(Kind::Name, "call ADA lovelace at noon"),
            ["ADA lovelace"]
        );
        assert_eq!(
            found(Kind::Name, "Ada  Lovelace, Grace Hopper"),
            ["Ada  Lovelace", "Grace Hopper"]
        );
        assert_eq!(found(Kind::Name, "ZOË was here"), ["ZOË"]);
        for negative in [
            "Ada Lovelaces",
            "AdaLovelace",
            "Ada",
            "Lovelace",
            "xAda Lovelace",
            "Zoë2",
        ] {
            assert_eq!(
                found(Kind::Name, negative),
                Vec::<String>::new(),
                "{negative}"
            );
        }
    }

    #[test]
    fn overlapping_matches_of_one_kind_mask_once() {
        // Both '@' make an address, sharing "b.cc": the first is kept, the second dropped.
        let emails = Detectors::new(vec![Kind::Email], &[]);
        let text = "a@b.cc@d.ee";
        let spans = emails.find(text);
        assert_eq!(spans.len(), 1, "{spans:?}");
        assert_eq!(mask(text, &spans, "***"), "***@d.ee");
    }

    #[test]
    fn masking_keeps_the_rest_of_free_text() {
        let all = Detectors::new(Kind::ALL.to_vec(), &["Ada Lovelace"]);
        let text = "call Ada Lovelace at +49 170 1234567 or ada@example.com";
        let spans = all.find(text);
        let kinds: Vec<Kind> = spans.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, [Kind::Name, Kind::Phone, Kind::Email]);
        assert_eq!(mask(text, &spans, "***"), "call *** at *** or ***");
        let whole = "ops.lead@plant.example";
        assert_eq!(mask(whole, &all.find(whole), "***"), "***");
    }

    #[test]
    fn the_first_detector_wins_an_overlap() {
        // The card number inside the e-mail address's local part is the address.
        let all = Detectors::new(Kind::ALL.to_vec(), &[]);
        let spans = all.find("4111111111111111@cards.example");
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].kind, Kind::Email);
    }
}
