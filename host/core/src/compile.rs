//! What the host agrees to compile: a module's structure is checked with `wasmparser` before
//! Cranelift sees it.
//!
//! Compiling is work the host does on a guest's behalf, and Cranelift's memory and time are not
//! linear in every shape of code: one crafted 153 KB function (~50,000 locals, ~10,000
//! sequential branches) made it allocate until the process aborted at 6.5 GB. No limit that
//! runs *during* compilation can stop that from inside the process, so the shapes that make it
//! blow up are refused first, by [`CompileLimits`] (`[engine]` keys, defaults far above what
//! any policy compiled by rustc, componentize-py or jco carries):
//!
//! | key | default | bounds |
//! |---|---|---|
//! | `max-code-bytes` | 64 MiB | all function bodies of all core modules of a component |
//! | `max-function-bytes` | 4 MiB | one function body |
//! | `max-function-locals` | 50,000 | the locals one function declares |
//! | `max-function-weight` | 20,000,000 | locals × branch targets of one function, the product SSA construction's cost follows |
//!
//! The shipped policies peak at 18 KB per function, 55 locals and a weight under 10⁵. A
//! refusal names the limit, the function's index and the figure.

use wasmparser::{Operator, Parser, Payload};

use crate::error::LoadError;

/// Bounds on the structure of a module the host compiles (the `[engine]` table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompileLimits {
    /// Bytes of code (function bodies) in the whole component.
    pub max_code_bytes: u64,
    /// Bytes of one function body.
    pub max_function_bytes: u64,
    /// Locals one function declares.
    pub max_function_locals: u64,
    /// Locals × branch targets of one function.
    pub max_function_weight: u64,
}

impl Default for CompileLimits {
    fn default() -> Self {
        Self {
            max_code_bytes: 64 << 20,
            max_function_bytes: 4 << 20,
            max_function_locals: 50_000,
            max_function_weight: 20_000_000,
        }
    }
}

/// Checks `bytes` (a component or core module) against `limits`, walking nested core modules.
/// Malformed input passes: the compiler rejects it with a better message.
pub(crate) fn check(bytes: &[u8], limits: &CompileLimits) -> Result<(), LoadError> {
    let refuse = |limit: &'static str, detail: String| LoadError::TooComplex { limit, detail };
    let mut code_bytes = 0_u64;
    let mut function = 0_u64;
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(Payload::CodeSectionEntry(body)) = payload else {
            continue;
        };
        function += 1;
        let range = body.range();
        let size = range.end - range.start;
        code_bytes += size;
        if code_bytes > limits.max_code_bytes {
            return Err(refuse(
                "max-code-bytes",
                format!("more than {} bytes of code", limits.max_code_bytes),
            ));
        }
        if size > limits.max_function_bytes {
            return Err(refuse(
                "max-function-bytes",
                format!("function #{function} is {size} bytes"),
            ));
        }
        let mut locals = 0_u64;
        if let Ok(reader) = body.get_locals_reader() {
            for local in reader.into_iter().flatten() {
                locals = locals.saturating_add(u64::from(local.0));
            }
        }
        if locals > limits.max_function_locals {
            return Err(refuse(
                "max-function-locals",
                format!("function #{function} declares {locals} locals"),
            ));
        }
        let mut targets = 0_u64;
        if let Ok(ops) = body.get_operators_reader() {
            for op in ops.into_iter().flatten() {
                targets += match op {
                    Operator::Br { .. }
                    | Operator::BrIf { .. }
                    | Operator::If { .. }
                    | Operator::Loop { .. }
                    | Operator::Block { .. }
                    | Operator::BrOnNull { .. }
                    | Operator::BrOnNonNull { .. } => 1,
                    Operator::BrTable { targets } => u64::from(targets.len()) + 1,
                    _ => 0,
                };
            }
        }
        let weight = locals.saturating_mul(targets);
        if weight > limits.max_function_weight {
            return Err(refuse(
                "max-function-weight",
                format!(
                    "function #{function}: {locals} locals × {targets} branch targets = {weight}"
                ),
            ));
        }
    }
    Ok(())
}
