//! `segvol`: the command line over the segvol library.

mod cli;
#[cfg(feature = "serve")]
mod serve;

use clap::error::ErrorKind;
use clap::Parser;

fn main() {
    let args = match cli::Cli::try_parse() {
        Ok(a) => a,
        Err(e) => usage_error(e),
    };
    cli::log::init(args.verbose, args.quiet);
    // Outputs are written through registered temporary files; SIGINT and
    // SIGTERM remove them and exit 130.
    if let Err(e) = segvol::tempfiles::install_interrupt_handler() {
        tracing::warn!("{e}");
    }
    if let Err(e) = cli::run(args) {
        eprintln!("segvol: error: {}", cli::one_line(&e.to_string()));
        std::process::exit(1);
    }
}

/// Help and version print as clap formats them; a usage error becomes one
/// `segvol: error:` line (a batch log keeps one line per failed file), with
/// clap's usual exit status.
fn usage_error(e: clap::Error) -> ! {
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit()
    }
    let text = e.render().to_string();
    let kept: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with("Usage:")
                && !l.starts_with("For more information")
                && !l.starts_with("tip:")
        })
        .collect();
    let msg = kept.join(" ");
    eprintln!(
        "segvol: error: {}",
        msg.strip_prefix("error: ").unwrap_or(&msg)
    );
    std::process::exit(e.exit_code())
}
