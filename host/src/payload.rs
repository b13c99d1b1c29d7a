//! TEMPORARY STUB until the real module lands (lazy lookups + redaction).
#![allow(dead_code, missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Cbor,
}
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Null,
    Bool(bool),
    Integer(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    Array(u32),
    Object(u32),
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldError {
    Unstructured,
    Malformed(String),
    BadPointer(String),
}
pub struct Document {
    format: Option<Format>,
    bytes: Vec<u8>,
}
impl Document {
    pub fn new(format: Option<Format>, bytes: Vec<u8>) -> Self {
        Self { format, bytes }
    }
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    pub fn format(&self) -> Option<Format> {
        self.format
    }
    pub fn field(&mut self, _pointer: &str) -> Result<Option<FieldValue>, FieldError> {
        Err(FieldError::Unstructured)
    }
    pub fn replace(&mut self, bytes: Vec<u8>) {
        self.bytes = bytes;
    }
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditAction {
    Remove,
    Mask(String),
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub pointer: String,
    pub action: EditAction,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedactError {
    Malformed(String),
    BadPointer(String),
    WholeDocument,
    NonTextKey,
}
impl std::fmt::Display for RedactError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}
pub fn redact(
    _format: Format,
    _bytes: &[u8],
    _edits: &[Edit],
) -> Result<Option<Vec<u8>>, RedactError> {
    Ok(None)
}
