//! The zoom-out-zoom-in pipeline around the network: preprocessing, prompt
//! mapping, the global pass, the ROI, sliding windows and paste-back.

pub mod memory;
pub mod output;
pub mod preprocess;
pub mod progress;
pub mod prompt_frames;
pub mod prompt_maps;
pub mod request;
pub mod sampling;
pub mod windows;
pub mod zoom;

/// The reference's foreground test `sigmoid(logit) > 0.5`, evaluated in f32
/// as PyTorch does: logits in (0, ~1e-7] round to exactly 0.5 and are
/// background, so this is not quite `logit > 0`.
#[inline]
pub fn is_foreground(logit: f32) -> bool {
    1.0 / (1.0 + (-logit).exp()) > 0.5
}

#[cfg(test)]
mod tests {
    #[test]
    fn foreground_rule_is_the_f32_sigmoid() {
        assert!(super::is_foreground(1e-3));
        assert!(!super::is_foreground(0.0));
        assert!(!super::is_foreground(1e-9));
        assert!(!super::is_foreground(-1e-3));
        assert!(!super::is_foreground(f32::NAN));
        assert!(super::is_foreground(100.0));
    }
}
