//! Log lines to stderr, filtered by `RUST_LOG` (default `info`), as text or
//! JSON lines (`--log-format`); an insecure node marks every line, and so
//! does the test-only build that acknowledges before fsync (in JSON, with
//! one warning line at the start instead). Lines stderr does not take are
//! dropped, never a panic.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

struct Prefixed<F> {
    prefix: &'static str,
    inner: F,
}

impl<S, N, F> FormatEvent<S, N> for Prefixed<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writer.write_str(self.prefix)?;
        self.inner.format_event(ctx, writer, event)
    }
}

/// How log lines look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event.
    Text,
    /// One JSON object per event: timestamp, level, target, fields.
    Json,
}

/// Installs the global subscriber; `default` is the level when `RUST_LOG`
/// is unset.
pub fn init(insecure: bool, default: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let prefix = match (insecure, cfg!(feature = "unsafe-ack-before-fsync")) {
        (true, true) => "[UNSAFE TEST BUILD: acknowledges before fsync, loses data] [INSECURE: no cluster secret] ",
        (false, true) => "[UNSAFE TEST BUILD: acknowledges before fsync, loses data] ",
        (true, false) => "[INSECURE: no cluster secret] ",
        (false, false) => "",
    };
    // A line that cannot be written (stderr a pipe its reader closed) is
    // dropped: reporting that failure would go to the same stderr, and
    // `eprintln!` panics there, which would take down whichever thread
    // logged, a core of a node among them.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    match format {
        LogFormat::Text => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let format = Prefixed {
                prefix,
                inner: tracing_subscriber::fmt::format().with_ansi(ansi),
            };
            builder.event_format(format).init();
        }
        LogFormat::Json => {
            builder.json().flatten_event(true).with_ansi(false).init();
            // A JSON line cannot carry the prefix; the same words go out
            // once, as an event of their own, at the start.
            let warning = prefix.trim();
            if !warning.is_empty() {
                tracing::warn!(warning, "this node is not safe for production");
            }
        }
    }
}

/// Writes `line` to stderr like `eprintln!`, but a stderr that is gone
/// (its reader closed the pipe) drops it instead of panicking: a node's
/// last words must not turn a clean exit status into a crash.
pub fn say(line: fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}
