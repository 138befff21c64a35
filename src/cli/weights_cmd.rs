//! `segvol inspect | convert | synth-weights`.

use std::path::Path;

use segvol::error::{Error, Result};
use segvol::weights::inspect::InspectReport;
use segvol::weights::write::{convert_to_safetensors, write_synth_safetensors};
use segvol::weights::Checkpoint;
use segvol::ModelConfig;

pub fn inspect(weights: &Path) -> Result<()> {
    let report = InspectReport::open(weights)?;
    println!("{report}");
    if report.is_ok() {
        Ok(())
    } else {
        Err(Error::NotSegVol(format!(
            "{} failed the checkpoint check (problems listed above)",
            weights.display()
        )))
    }
}

pub fn convert(weights: &Path, output: &Path) -> Result<()> {
    let ck = Checkpoint::open(weights)?;
    convert_to_safetensors(&ck, output)?;
    tracing::info!("wrote {} ({} tensors)", output.display(), ck.len());
    Ok(())
}

pub fn synth(config: &str, output: &Path) -> Result<()> {
    let cfg = ModelConfig::named(config)?;
    write_synth_safetensors(&cfg, output)?;
    tracing::info!(
        "wrote {} (synthetic {config} weights: meaningless masks, for tests and benchmarks)",
        output.display()
    );
    Ok(())
}
