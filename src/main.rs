//! `segvol`: the command line over the segvol library.

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    if let Err(e) = cli::run(args) {
        eprintln!("segvol: error: {e}");
        std::process::exit(1);
    }
}
