//! Messages and progress bars on stderr. Messages are `tracing` events (the
//! library's too), printed by a subscriber set up here from `-v` / `-q`;
//! bars are indicatif's, drawn only when stderr is a terminal and `-q` is
//! off. Both share one `MultiProgress`, so a message printed while bars are
//! drawn appears above them instead of tearing them.

use std::fmt;
use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

use indicatif::{MultiProgress, ProgressDrawTarget};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

static BARS: OnceLock<MultiProgress> = OnceLock::new();

/// The bars' container; hidden until [`init`] says they may be drawn.
pub fn bars() -> &'static MultiProgress {
    BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::hidden()))
}

/// Sets the message level (`-q`: warnings and errors; default: progress
/// lines; `-v`: the pipeline's stages; `-vv`: every window) and turns the
/// bars on when they can be seen.
pub fn init(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => Level::WARN,
        (false, 0) => Level::INFO,
        (false, 1) => Level::DEBUG,
        _ => Level::TRACE,
    };
    if !quiet && std::io::stderr().is_terminal() {
        bars().set_draw_target(ProgressDrawTarget::stderr());
    }
    // A second init (tests calling in-process) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(AboveBars)
        .event_format(Plain)
        .try_init();
}

/// Formats an event as the CLI's lines always read: `segvol: warning: …`,
/// `segvol: error: …`, plain text for progress, `debug:` for detail.
struct Plain;

impl<S, N> FormatEvent<S, N> for Plain
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        match *event.metadata().level() {
            Level::ERROR => write!(w, "segvol: error: ")?,
            Level::WARN => write!(w, "segvol: warning: ")?,
            Level::INFO => {}
            Level::DEBUG => write!(w, "debug: ")?,
            Level::TRACE => write!(w, "trace: ")?,
        }
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// A writer per event that prints its line with the bars suspended.
struct AboveBars;

struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            // Nothing sensible to do when stderr itself fails.
            bars().suspend(|| {
                let _ = std::io::stderr().lock().write_all(&self.0);
            });
        }
    }
}

impl<'a> MakeWriter<'a> for AboveBars {
    type Writer = Line;
    fn make_writer(&'a self) -> Line {
        Line(Vec::with_capacity(128))
    }
}
