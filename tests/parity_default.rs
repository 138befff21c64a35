//! Parity with the reference on the default config and a real CT (the
//! "default_realct" fixture): encoder tokens, text embedding, dense PE
//! samples, sparse tokens, decoder queries and logits for the box, text and
//! box+text prompts. The walk is `common::walks::default_realct`, which
//! `tests/cuda_e2e.rs` runs on the GPU.

mod common;

use common::walks;
use segvol::backend::cpu::CpuBackend;

#[test]
fn parity_default_realct() {
    let m = walks::default_model(CpuBackend::new());
    let Some(walk) = walks::default_realct(&m) else {
        return;
    };
    walks::check_f32(&walk, "");
}
