//! `twinguard audit verify FILE…`: proves that a decision log (the active file and its rotated
//! files, in any order) is one unbroken hash chain, or names the first record that was
//! altered, removed or reordered. The format and the hash are in `docs/decision-log.md`.
//!
//! Exit codes: 0 the chain holds, 2 it is broken, 1 the files could not be read.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;
use twinguard::decision_log::{verify, VerifyError, VerifyReport};

/// Arguments of `audit`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Check that decision-log files form one unbroken hash chain; name the first broken record.
    Verify(VerifyArgs),
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// The active file and its rotated files (`<path>.<first seq>`), in any order.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

/// The exit code of a broken chain (1 is any other error, such as an unreadable file).
const BROKEN: u8 = 2;

pub fn run(args: &Args) -> Result<ExitCode> {
    match &args.command {
        Sub::Verify(v) => run_verify(v),
    }
}

fn run_verify(args: &VerifyArgs) -> Result<ExitCode> {
    let mut out = crate::Out::stdout();
    match verify(&args.files) {
        Ok(report) if args.json => {
            writeln!(out, "{}", report_json(&report))?;
        }
        Ok(report) => print_report(&mut out, &report)?,
        Err(VerifyError::Broken(b)) => {
            if args.json {
                let broken = json!({
                    "ok": false,
                    "broken": {
                        "file": b.file,
                        "line": b.line,
                        "seq": b.seq,
                        "kind": b.kind.name(),
                        "detail": b.detail,
                    },
                });
                writeln!(out, "{broken}")?;
                out.flush()?;
            }
            errln!("twinguard audit verify: chain BROKEN at {b}");
            return Ok(ExitCode::from(BROKEN));
        }
        Err(e) => return Err(e.into()),
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn report_json(r: &VerifyReport) -> serde_json::Value {
    json!({
        "ok": true,
        "records": r.records,
        "first_seq": r.first_seq,
        "last_seq": r.last_seq,
        "start_prev": r.start_prev,
        "start_verified": r.start_verified,
        "last_hash": r.last_hash,
        "lost": r.lost,
        "incomplete_tail": r.incomplete_tail.as_ref().map(|(file, offset)| json!({
            "file": file,
            "offset": offset,
        })),
        "files": r.files.iter().map(|f| json!({
            "file": f.path,
            "records": f.records,
            "first_seq": f.seqs.map(|s| s.0),
            "last_seq": f.seqs.map(|s| s.1),
        })).collect::<Vec<_>>(),
    })
}

fn print_report(out: &mut crate::Out, r: &VerifyReport) -> Result<()> {
    writeln!(
        out,
        "chain intact: {} records, seq {} to {}, in {} file(s)",
        r.records,
        r.first_seq,
        r.last_seq,
        r.files.len()
    )?;
    for f in &r.files {
        match f.seqs {
            Some((first, last)) => writeln!(
                out,
                "  {}: seq {first} to {last} ({} records)",
                f.path.display(),
                f.records
            )?,
            None => writeln!(out, "  {}: empty", f.path.display())?,
        }
    }
    if r.start_verified {
        writeln!(
            out,
            "start:     seq 0, verified (the first record of the chain)"
        )?;
    } else {
        writeln!(
            out,
            "start:     seq {} with prev {}: NOT verified (older files were deleted by \
             keep-files or not given; what came before is not covered)",
            r.first_seq, r.start_prev
        )?;
    }
    writeln!(
        out,
        "last hash: {} (keep it elsewhere: a later check that reaches it proves nothing \
         before it was cut off or rewritten)",
        r.last_hash
    )?;
    if r.lost > 0 {
        writeln!(
            out,
            "lost:      {} decision(s) could not be logged (write errors; the records after \
             them say where)",
            r.lost
        )?;
    }
    if let Some((file, offset)) = &r.incomplete_tail {
        writeln!(
            out,
            "note:      {} ends with an incomplete line at byte {offset} (a record being \
             written, or torn by a crash): not verified",
            file.display()
        )?;
    }
    Ok(())
}
