//! Turning what a user asks for (names, boxes and clicks in the CT's frame)
//! into categories for the zoom-out-zoom-in pipeline.
//!
//! Pairing rule: there are as many categories as the larger of the number
//! of texts and of boxes (one, for points alone). Texts and boxes pair up in
//! order; a single text goes with every box ("kidney" with a box around
//! each kidney). Points belong to a single category and cannot be mixed
//! with several.

use super::preprocess::Preprocessed;
use super::prompt_frames::{Frame, FrameMap, UserBox, UserPoint};
use super::zoom::CategoryPrompt;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::io::nifti::CtVolume;
use crate::model::{SegVol, TextEmbedder};

/// A segmentation request in the user's terms.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// Category names for the text prompt (`"liver"`).
    pub texts: Vec<String>,
    /// Box prompts, corners in `frame`.
    pub boxes: Vec<UserBox>,
    /// Point prompts (clicks), in `frame`; a single category only.
    pub points: Vec<UserPoint>,
    /// The frame of every coordinate (default: voxel indices).
    pub frame: Option<Frame>,
    /// Output names of the categories (defaults: the texts, else box1, ...).
    pub labels: Vec<String>,
}

/// One category ready for the pipeline.
#[derive(Clone, Debug)]
pub struct Category {
    /// Output name (the label, the text, or box1, ..., points).
    pub name: String,
    /// Its prompts in the zoom-out frame.
    pub prompt: CategoryPrompt,
}

impl Request {
    /// A request for one category named by text (`"liver"`).
    pub fn text(name: impl Into<String>) -> Self {
        Request {
            texts: vec![name.into()],
            ..Default::default()
        }
    }

    /// Adds a text prompt (one category per text, paired with boxes in order).
    pub fn with_text(mut self, name: impl Into<String>) -> Self {
        self.texts.push(name.into());
        self
    }

    /// Adds a box, corners `(i0, j0, k0, i1, j1, k1)` in the request's frame.
    pub fn with_box(mut self, corners: [f64; 6]) -> Self {
        self.boxes.push(UserBox::new(corners));
        self
    }

    /// Adds a positive (`true`) or negative click at `(i, j, k)` in the
    /// request's frame.
    pub fn with_point(mut self, at: [f64; 3], positive: bool) -> Self {
        self.points.push(UserPoint::new(at, positive));
        self
    }

    /// Sets the frame of the coordinates (default: voxel indices).
    pub fn in_frame(mut self, frame: Frame) -> Self {
        self.frame = Some(frame);
        self
    }

    /// How many categories the request makes, or why it is inconsistent.
    pub fn category_count(&self) -> Result<usize> {
        let (t, b, p) = (self.texts.len(), self.boxes.len(), self.points.len());
        if t == 0 && b == 0 && p == 0 {
            return Err(Error::prompt(
                "(none)",
                "SegVol needs at least one prompt: --text, --box or --point",
            ));
        }
        if t > 1 && b > 0 && t != b {
            return Err(Error::prompt(format!("{b} boxes"), format!("cannot pair with {t} texts: give one box per text, one text for all boxes, or no boxes")));
        }
        let k = t.max(b).max(1);
        if p > 0 && k > 1 {
            return Err(Error::prompt(format!("--point {}", self.points[0].text), format!("points need a single category, but the request makes {k}; run one command per clicked object")));
        }
        if !self.labels.is_empty() && self.labels.len() != k {
            return Err(Error::Invalid(format!(
                "--labels names {} categories, the prompts make {k}",
                self.labels.len()
            )));
        }
        Ok(k)
    }

    /// Category names, prompts mapped to the zoom-out frame, texts embedded.
    pub fn categories<B: Backend>(
        &self,
        ct: &CtVolume,
        pre: &Preprocessed,
        model: &SegVol<B>,
        texts: &mut TextEmbedder,
    ) -> Result<Vec<Category>> {
        let k = self.category_count()?;
        let w2v = |p: [f64; 3]| ct.world_to_voxel(p);
        let fm = FrameMap {
            dims: pre.dims,
            crop_start: pre.crop_start,
            crop_end: pre.crop_end,
            zoom: pre.zoom_out_dims,
            world_to_voxel: Some(&w2v),
        };
        let frame = self.frame.unwrap_or(Frame::Voxel);
        let points = self
            .points
            .iter()
            .map(|p| fm.point(p, frame))
            .collect::<Result<Vec<_>>>()?;
        let mut out = Vec::with_capacity(k);
        for i in 0..k {
            let text_name = match self.texts.len() {
                0 => None,
                1 => Some(self.texts[0].clone()),
                _ => Some(self.texts[i].clone()),
            };
            let bbox = match self.boxes.len() {
                0 => None,
                _ => Some(fm.bbox(&self.boxes[i.min(self.boxes.len() - 1)], frame)?),
            };
            let text = text_name
                .as_deref()
                .map(|n| texts.embed(model, n))
                .transpose()?;
            let name = match (self.labels.get(i), &text_name) {
                (Some(l), _) => l.clone(),
                (None, Some(t)) if self.texts.len() > 1 || self.boxes.len() <= 1 => t.clone(),
                (None, Some(t)) => format!("{t} {}", i + 1),
                (None, None) if bbox.is_some() => format!("box{}", i + 1),
                (None, None) => "points".to_string(),
            };
            out.push(Category {
                name,
                prompt: CategoryPrompt {
                    text,
                    bbox,
                    points: points.clone(),
                },
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(t: usize, b: usize, p: usize) -> Request {
        Request {
            texts: (0..t).map(|i| format!("organ{i}")).collect(),
            boxes: (0..b)
                .map(|_| UserBox::new([0.0, 0.0, 0.0, 1.0, 1.0, 1.0]))
                .collect(),
            points: (0..p).map(|_| UserPoint::new([1.0; 3], true)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn pairing_rules() {
        assert!(req(0, 0, 0).category_count().is_err());
        assert_eq!(req(3, 0, 0).category_count().unwrap(), 3);
        assert_eq!(req(1, 2, 0).category_count().unwrap(), 2);
        assert_eq!(req(2, 2, 0).category_count().unwrap(), 2);
        assert!(req(2, 3, 0).category_count().is_err());
        assert_eq!(req(1, 1, 3).category_count().unwrap(), 1);
        assert_eq!(req(0, 0, 2).category_count().unwrap(), 1);
        assert!(req(2, 0, 1)
            .category_count()
            .unwrap_err()
            .to_string()
            .contains("single category"));
        let mut r = req(2, 0, 0);
        r.labels = vec!["a".into()];
        assert!(r.category_count().is_err());
    }
}
