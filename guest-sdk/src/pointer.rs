//! Checking JSON Pointers (RFC 6901) taken from the configuration.
//!
//! A bad pointer in the configuration should fail the policy's load, with the key named, rather
//! than fail every field lookup afterwards. [`Config::pointer`](crate::Config::pointer) and
//! [`Config::pointers`](crate::Config::pointers) read and check pointers from a config key; these
//! functions check one pointer.
//!
//! ```
//! use twinguard_guest::pointer;
//!
//! assert!(pointer::check_field("/owner/email").is_ok());
//! assert!(pointer::check_field("/a~1b/c~0d").is_ok()); // member "a/b", then "c~d"
//! assert!(pointer::check_field("owner/email").unwrap_err().contains("start with '/'"));
//! assert!(pointer::check_field("/a~2").unwrap_err().contains("'~'"));
//! assert!(pointer::check_field("").unwrap_err().contains("empty pointer"));
//! assert!(pointer::check("").is_ok()); // the whole document
//! ```

/// Checks `pointer` against RFC 6901: empty (the whole document), or `/` followed by reference
/// tokens in which every `~` is followed by `0` (for `~`) or `1` (for `/`). The error says what
/// is wrong and quotes the pointer.
pub fn check(pointer: &str) -> Result<(), String> {
    if pointer.is_empty() {
        return Ok(());
    }
    if !pointer.starts_with('/') {
        return Err(format!(
            "{pointer:?} is not a JSON Pointer: it must start with '/' (e.g. \"/{pointer}\")"
        ));
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!(
                "{pointer:?} is not a JSON Pointer: '~' must be followed by 0 ('~') or 1 ('/')"
            ));
        }
    }
    Ok(())
}

/// [`check`], refusing the empty pointer too: it names the whole document, which is no field to
/// read, require or redact (and, in a comma-separated list, is usually a stray comma).
pub fn check_field(pointer: &str) -> Result<(), String> {
    if pointer.is_empty() {
        return Err(EMPTY.to_owned());
    }
    check(pointer)
}

/// The error for the empty pointer where a field is expected.
pub(crate) const EMPTY: &str = "the empty pointer \"\" names the whole document, not a field";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6901() {
        for ok in ["", "/", "/a", "/a/0", "/~0", "/~1", "/a~0b~1c", "//", "/ "] {
            assert_eq!(check(ok), Ok(()), "{ok:?}");
        }
        for (bad, why) in [
            ("a", "start with '/'"),
            ("#/a", "start with '/'"),
            ("/~", "'~'"),
            ("/~2", "'~'"),
            ("/a~/b", "'~'"),
        ] {
            let err = check(bad).unwrap_err();
            assert!(
                err.contains(why) && err.contains(&format!("{bad:?}")),
                "{err}"
            );
        }
    }

    #[test]
    fn a_field_is_not_the_whole_document() {
        assert_eq!(check_field("/a"), Ok(()));
        assert_eq!(
            check_field("").unwrap_err(),
            "the empty pointer \"\" names the whole document, not a field"
        );
        assert!(check_field("a").is_err());
    }
}
