//! SAM's prompt encoder as SegVol uses it in 3-D (docs/REFERENCE.md §2.3: the
//! sparse normalisation and the dense PE's component order). It works on a handful of tokens, so it runs on the host in f32,
//! following PyTorch's operation order.
//!
//! Two quirks are reproduced on purpose because the weights depend on them:
//! sparse (point/box) coordinates `(d, h, w)` are normalised by
//! `(H, D, W)` of the input, and the dense grid feeds `(h, d, w)`
//! grid-relative positions to the random-Fourier embedding.

use super::loader::Loader;
use crate::backend::Backend;
use crate::config::ModelConfig;
use crate::error::{Error, Result};

/// Labels of point prompts.
pub const LABEL_PAD: f32 = -1.0;
pub const LABEL_NEG: f32 = 0.0;
pub const LABEL_POS: f32 = 1.0;

/// One prompt's geometric part, in the network's input frame (voxel indices
/// `(d, h, w)` of the `spatial_size` volume).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GeomPrompt {
    /// `[d0, h0, w0, d1, h1, w1]`, max corner inclusive.
    pub bbox: Option<[f32; 6]>,
    /// `((d, h, w), label)` with label 1 positive, 0 negative, -1 padding.
    pub points: Vec<([f32; 3], f32)>,
}

impl GeomPrompt {
    /// Sparse tokens this prompt makes: its points, a padding point when
    /// there are points but no box, and two box corners.
    pub fn token_count(&self) -> usize {
        let pad = usize::from(!self.points.is_empty() && self.bbox.is_none());
        self.points.len() + pad + if self.bbox.is_some() { 2 } else { 0 }
    }
}

pub struct PromptEncoder {
    cfg: ModelConfig,
    /// `[3, C/2]`, a buffer of the checkpoint (not regenerated).
    gauss: Vec<f32>,
    /// neg, pos, box-min, box-max.
    point_embeddings: [Vec<f32>; 4],
    not_a_point: Vec<f32>,
    no_mask: Vec<f32>,
}

impl PromptEncoder {
    pub fn load<B: Backend>(ld: &Loader<'_, B>, cfg: &ModelConfig) -> Result<Self> {
        let c = cfg.hidden_size;
        let p = "prompt_encoder";
        let pe = |i: usize| ld.host(&format!("{p}.point_embeddings.{i}.weight"), &[1, c]);
        Ok(PromptEncoder {
            cfg: cfg.clone(),
            gauss: ld.host(
                &format!("{p}.pe_layer.positional_encoding_gaussian_matrix"),
                &[3, c / 2],
            )?,
            point_embeddings: [pe(0)?, pe(1)?, pe(2)?, pe(3)?],
            not_a_point: ld.host(&format!("{p}.not_a_point_embed.weight"), &[1, c])?,
            no_mask: ld.host(&format!("{p}.no_mask_embed.weight"), &[1, c])?,
        })
    }

    /// `PositionEmbeddingRandom._pe_encoding` of one coordinate already
    /// normalised "to [0, 1]": `[sin(2π·u), cos(2π·u)]`, `u = (2c − 1)·G`.
    fn pe_encoding(&self, c: [f32; 3], out: &mut [f32]) {
        let half = self.cfg.hidden_size / 2;
        let c = c.map(|v| 2.0 * v - 1.0);
        // `2 * np.pi * coords`: the Python float becomes an f32 scalar.
        let two_pi = (2.0 * std::f64::consts::PI) as f32;
        for j in 0..half {
            let u = c[0] * self.gauss[j]
                + c[1] * self.gauss[half + j]
                + c[2] * self.gauss[2 * half + j];
            let a = two_pi * u;
            out[j] = (a as f64).sin() as f32;
            out[half + j] = (a as f64).cos() as f32;
        }
    }

    /// `forward_with_coords` for coordinates that already carry the +0.5.
    fn sparse_pe(&self, p: [f32; 3], out: &mut [f32]) {
        let [d, h, w] = self.cfg.spatial_size.map(|v| v as f32);
        // The SAM-2D leftover: component 0 (d) over H, component 1 (h) over D.
        self.pe_encoding([p[0] / h, p[1] / d, p[2] / w], out);
    }

    /// `get_dense_pe()` as `[N, C]`, token-major over the (d, h, w) grid.
    pub fn dense_pe(&self) -> Vec<f32> {
        let c = self.cfg.hidden_size;
        let [gd, gh, gw] = self.cfg.grid();
        let mut out = vec![0f32; gd * gh * gw * c];
        for a in 0..gd {
            for b in 0..gh {
                for cc in 0..gw {
                    let t = (a * gh + b) * gw + cc;
                    let coord = [
                        (b as f32 + 0.5) / gh as f32,
                        (a as f32 + 0.5) / gd as f32,
                        (cc as f32 + 0.5) / gw as f32,
                    ];
                    self.pe_encoding(coord, &mut out[t * c..(t + 1) * c]);
                }
            }
        }
        out
    }

    /// The dense prompt embedding: `no_mask_embed`, broadcast over the grid
    /// by the caller.
    pub fn no_mask_embed(&self) -> &[f32] {
        &self.no_mask
    }

    /// The sparse tokens `[Ns, C]` of one prompt: points (plus a padding
    /// point when there is no box), box corners, then the text embedding.
    pub fn sparse(&self, g: &GeomPrompt, text: Option<&[f32]>) -> Result<Vec<f32>> {
        let c = self.cfg.hidden_size;
        let mut out = Vec::new();
        let mut tok = vec![0f32; c];
        if !g.points.is_empty() {
            let mut pts: Vec<([f32; 3], f32)> = g
                .points
                .iter()
                .map(|(p, l)| (p.map(|v| v + 0.5), *l))
                .collect();
            if g.bbox.is_none() {
                // Appended after the +0.5: the padding point sits at 0.
                pts.push(([0.0; 3], LABEL_PAD));
            }
            for (p, label) in pts {
                self.sparse_pe(p, &mut tok);
                if label == LABEL_PAD {
                    tok.copy_from_slice(&self.not_a_point);
                } else if label == LABEL_NEG {
                    tok.iter_mut()
                        .zip(&self.point_embeddings[0])
                        .for_each(|(t, e)| *t += e);
                } else if label == LABEL_POS {
                    tok.iter_mut()
                        .zip(&self.point_embeddings[1])
                        .for_each(|(t, e)| *t += e);
                }
                out.extend_from_slice(&tok);
            }
        }
        if let Some(b) = g.bbox {
            for (corner, emb) in [(0usize, 2usize), (1, 3)] {
                let p = [
                    b[corner * 3] + 0.5,
                    b[corner * 3 + 1] + 0.5,
                    b[corner * 3 + 2] + 0.5,
                ];
                self.sparse_pe(p, &mut tok);
                tok.iter_mut()
                    .zip(&self.point_embeddings[emb])
                    .for_each(|(t, e)| *t += e);
                out.extend_from_slice(&tok);
            }
        }
        if let Some(t) = text {
            if t.len() != c {
                return Err(Error::shape(format!(
                    "text embedding of {} values, expected {c}",
                    t.len()
                )));
            }
            out.extend_from_slice(t);
        }
        if out.is_empty() {
            return Err(Error::prompt(
                "(none)",
                "SegVol needs at least one prompt: a text, a box or a point",
            ));
        }
        Ok(out)
    }
}
