//! What the pipeline reports while it runs: stages and zoom-in windows, as
//! values a caller can draw (a progress bar with an ETA per window) or print
//! (`Display` gives one line). The same steps are also `tracing` events
//! (target `segvol::pipeline`), so an embedder's subscriber sees them without
//! a callback.

use std::fmt;

/// One step of [`Segmenter::segment`](super::zoom::Segmenter::segment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// The zoom-out pass (one encoder run, one decode per category) starts.
    ZoomOut {
        /// Categories segmented together.
        categories: usize,
    },
    /// Zoom-in of one category starts: `windows` sliding windows to decode.
    ZoomIn {
        /// 0-based category index.
        category: usize,
        categories: usize,
        windows: usize,
    },
    /// One more window of the current category is decoded (`done` of
    /// `windows`).
    Window {
        category: usize,
        done: usize,
        windows: usize,
    },
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Progress::ZoomOut { categories } => write!(
                f,
                "zoom-out pass ({categories} categor{})",
                if categories == 1 { "y" } else { "ies" }
            ),
            Progress::ZoomIn {
                category,
                categories,
                windows,
            } => write!(
                f,
                "zoom-in, category {}/{categories} ({windows} window{})",
                category + 1,
                if windows == 1 { "" } else { "s" }
            ),
            Progress::Window {
                category,
                done,
                windows,
            } => write!(f, "category {}: window {done}/{windows}", category + 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Progress;

    #[test]
    fn reads_as_one_line() {
        assert_eq!(
            Progress::ZoomIn {
                category: 0,
                categories: 2,
                windows: 1
            }
            .to_string(),
            "zoom-in, category 1/2 (1 window)"
        );
        assert_eq!(
            Progress::Window {
                category: 1,
                done: 3,
                windows: 8
            }
            .to_string(),
            "category 2: window 3/8"
        );
    }
}
