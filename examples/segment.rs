//! The library API end to end: load a checkpoint, preprocess a CT, segment
//! one category, and re-prompt with the volume resident.
//!
//! cargo run --release --example segment -- WEIGHTS CT.nii.gz NAME

use std::sync::Arc;

use segvol::backend::cpu::CpuBackend;
use segvol::model::{ClipTokenizer, SegVol, TextEmbedder};
use segvol::pipeline::is_foreground;
use segvol::pipeline::preprocess::preprocess_ct;
use segvol::pipeline::zoom::{CategoryPrompt, Segmenter, ZoomOptions};
use segvol::weights::{check, Checkpoint};

fn main() -> segvol::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: segment WEIGHTS CT.nii.gz NAME");
        std::process::exit(2);
    }
    let ckpt = Checkpoint::open(&args[1])?;
    let cfg = check::detect_config(&ckpt)?;
    let model = SegVol::load(CpuBackend::new(), Arc::new(ckpt), cfg)?;
    let mut texts = TextEmbedder::new(ClipTokenizer::builtin()?);

    let ct = segvol::io::nifti::read_ct(args[2].as_ref())?;
    let pre = preprocess_ct(&ct, model.config().spatial_size)?;
    let cat = CategoryPrompt {
        text: Some(texts.embed(&model, &args[3])?),
        ..Default::default()
    };

    let mut seg = Segmenter::new(&model, ZoomOptions::default());
    let first = seg.segment(&pre, std::slice::from_ref(&cat), &mut |m| eprintln!("{m}"))?;
    let voxels = first[0]
        .logits
        .iter()
        .filter(|&&v| is_foreground(v))
        .count();
    println!("{}: {voxels} voxels in the cropped frame", args[3]);

    // A second prompt on the same volume reuses the cached embeddings.
    let again = seg.segment(&pre, std::slice::from_ref(&cat), &mut |_| {})?;
    assert_eq!(again[0].logits, first[0].logits);
    println!(
        "windows encoded {}, reused {}",
        seg.timings.windows_encoded, seg.timings.windows_reused
    );
    Ok(())
}
