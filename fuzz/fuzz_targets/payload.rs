//! The payload index and redaction, JSON and CBOR: no panic, no hang, and one definition of
//! well-formed. Whatever a lookup can read, a redaction can rewrite, and the other way round
//! (a payload unreadable to a policy yet forwarded by the redaction of another field is the
//! disagreement issue 19 found); a redaction's output is itself well-formed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twinguard_core::fuzzing::{
    redact, Document, Edit, EditAction, FieldError, Format, RedactError,
};

/// Pointers worth trying on any payload: the root, common names, array indices, escapes.
const POINTERS: &[&str] = &[
    "",
    "/a",
    "/0",
    "/a/b",
    "/a/0",
    "/owner/email",
    "/~0/~1",
    "/-",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    let format = if selector & 1 == 0 {
        Format::Json
    } else {
        Format::Cbor
    };
    let pointer = POINTERS[usize::from(selector >> 1) % POINTERS.len()];

    let mut doc = Document::new(Some(format), payload.to_vec());
    let _ = doc.field("");
    let _ = doc.field(pointer);

    // The same field, absent from any payload here, looked up and edited: both only make the
    // payload be read (a duplicate key elsewhere is refused only where a lookup or edit goes).
    const ABSENT: &str = "/\u{1}fuzz-absent";
    let lookup = Document::new(Some(format), payload.to_vec()).field(ABSENT);
    let lookup_malformed = matches!(lookup, Err(FieldError::Malformed(_)));
    let absent = Edit {
        pointer: ABSENT.into(),
        action: EditAction::Remove,
    };
    let redaction = redact(format, payload, &[absent]);
    let redact_malformed = matches!(redaction, Err(RedactError::Malformed(_)));
    assert_eq!(
        lookup_malformed, redact_malformed,
        "lookups and redaction disagree on whether the payload is well-formed: {lookup:?} vs {redaction:?}"
    );

    if pointer.is_empty() || lookup_malformed {
        return;
    }
    for action in [EditAction::Remove, EditAction::Mask("***".into())] {
        let edit = Edit {
            pointer: pointer.into(),
            action,
        };
        if let Ok(Some(out)) = redact(format, payload, &[edit]) {
            // What goes to the twin must read back.
            if let Err(FieldError::Malformed(why)) = Document::new(Some(format), out).field(ABSENT)
            {
                panic!("a redaction produced a malformed payload: {why}");
            }
        }
    }
});
