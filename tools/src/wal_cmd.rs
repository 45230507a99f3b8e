//! `synod wal inspect DIR` and `synod wal verify DIR`: parse, call
//! `synod_wal::inspect`, print; `inspect` decodes each record with the
//! engine's codec (decode.rs). No WAL logic lives here.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use synod_wal::inspect::{inspect_dir, DirReport, SegmentReport};
use synod_wal::scan::SegmentEnd;
use synod_wal::WalError;

mod decode;

/// Offline commands on a WAL directory; they never write to it.
#[derive(Debug, clap::Subcommand)]
pub enum WalCommand {
    /// List every frame: position, kind, length, offset, checksum status,
    /// and what it records (promise, commit point, or accepted slot with
    /// its ballot and commands).
    Inspect {
        /// The WAL directory.
        dir: PathBuf,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check every frame. Exit 0 if clean, 1 at the first bad offset (torn
    /// tail or corruption), 2 if the directory is not a WAL or unreadable.
    Verify {
        /// The WAL directory.
        dir: PathBuf,
    },
}

/// Runs one `synod wal` command.
pub fn run(cmd: WalCommand) -> ExitCode {
    // Output piped into `head` ends like any Unix tool's when the reader
    // goes, instead of a panic on the broken pipe. Only here: these
    // commands write to nothing but stdout and stderr (a server's sockets
    // must not kill it on a closed connection).
    // SAFETY: setting a signal's disposition to its default is sound; no
    // handler runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match cmd {
        WalCommand::Inspect { dir, json } => inspect(&dir, json),
        WalCommand::Verify { dir } => verify(&dir),
    }
}

fn inspect(dir: &Path, json: bool) -> ExitCode {
    let report = match inspect_dir(dir) {
        Ok(report) => report,
        Err(e) => return not_a_wal(&e),
    };
    if !json {
        println!(
            "{:>12} {:>6} {:>10} {:>12}  {:<8} {:<28} record",
            "position", "kind", "length", "offset", "checksum", "segment"
        );
    }
    for segment in &report.segments {
        print_segment(segment, json);
    }
    if let Some(e) = &report.error {
        print_problem(&problem_of(e), json);
    }
    exit_code(&report)
}

fn print_segment(segment: &SegmentReport, json: bool) {
    let name = segment
        .path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let file = std::fs::File::open(&segment.path);
    for f in &segment.frames {
        let record = match &file {
            Ok(file) => decode::read_record(file, f),
            Err(error) => decode::Record::Undecodable(error.to_string()),
        };
        if json {
            let line = serde_json::json!({
                "position": f.position.0,
                "kind": f.kind,
                "length": f.body_len,
                "segment": name,
                "offset": f.offset_bytes,
                "checksum_ok": true,
                "record": record.json(),
            });
            println!("{line}");
        } else {
            println!(
                "{:>12} {:>6} {:>10} {:>12}  {:<8} {name:<28} {}",
                f.position.0,
                f.kind,
                f.body_len,
                f.offset_bytes,
                "ok",
                record.text()
            );
        }
    }
    if let Some(problem) = torn_problem(segment) {
        print_problem(&problem, json);
    }
}

/// The first bad offset of a directory, as printed.
struct Problem {
    path: String,
    offset_bytes: Option<u64>,
    kind: &'static str,
    reason: String,
}

fn torn_problem(segment: &SegmentReport) -> Option<Problem> {
    match &segment.end {
        SegmentEnd::Clean => None,
        SegmentEnd::Torn {
            offset_bytes,
            bytes,
            reason,
        } => Some(Problem {
            path: segment.path.display().to_string(),
            offset_bytes: Some(*offset_bytes),
            kind: "torn tail",
            reason: format!("{reason}; {bytes} bytes would be truncated when the WAL is opened"),
        }),
    }
}

fn problem_of(e: &WalError) -> Problem {
    match e {
        WalError::Corrupt {
            path,
            offset_bytes,
            reason,
        } => Problem {
            path: path.display().to_string(),
            offset_bytes: Some(*offset_bytes),
            kind: "corrupt",
            reason: format!("{reason}; the WAL refuses to open"),
        },
        other => Problem {
            path: String::new(),
            offset_bytes: None,
            kind: "error",
            reason: other.to_string(),
        },
    }
}

fn print_problem(p: &Problem, json: bool) {
    if json {
        let offset = p
            .offset_bytes
            .map_or_else(|| "null".to_string(), |o| o.to_string());
        println!(
            r#"{{"segment":{},"offset":{offset},"checksum_ok":false,"problem":{},"reason":{}}}"#,
            json_string(&p.path),
            json_string(p.kind),
            json_string(&p.reason)
        );
    } else {
        match p.offset_bytes {
            Some(offset) => println!(
                "{}: {} at byte offset {offset}: {}",
                p.path, p.kind, p.reason
            ),
            None => println!("{}: {}", p.kind, p.reason),
        }
    }
}

fn verify(dir: &Path) -> ExitCode {
    let report = match inspect_dir(dir) {
        Ok(report) => report,
        Err(e) => return not_a_wal(&e),
    };
    let first_problem = report
        .segments
        .iter()
        .find_map(torn_problem)
        .or_else(|| report.error.as_ref().map(problem_of));
    match first_problem {
        Some(p) => {
            print_problem(&p, false);
            ExitCode::from(1)
        }
        None => {
            let frames: usize = report.segments.iter().map(|s| s.frames.len()).sum();
            println!(
                "{}: clean, {} segments, {frames} frames",
                dir.display(),
                report.segments.len()
            );
            ExitCode::SUCCESS
        }
    }
}

fn exit_code(report: &DirReport) -> ExitCode {
    let torn = report.segments.iter().any(|s| s.end != SegmentEnd::Clean);
    if report.error.is_some() || torn {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn not_a_wal(e: &WalError) -> ExitCode {
    eprintln!("{e}");
    ExitCode::from(2)
}

/// A JSON string literal (paths and messages are the only strings printed).
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
