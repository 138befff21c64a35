//! The progress bars of `segment`: one over the cases of a cohort, one for
//! the current stage (a spinner with its elapsed time, or, during zoom-in, a
//! bar over the category's windows with an ETA). Invisible unless
//! [`super::log::init`] turned them on.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use segvol::pipeline::progress::Progress as Step;

use super::log::bars;

pub struct Bars {
    cases: Option<ProgressBar>,
    stage: ProgressBar,
}

fn style(template: &str) -> ProgressStyle {
    // The templates are constants; a bad one is a bug caught by any run.
    ProgressStyle::with_template(template)
        .expect("valid progress template")
        .progress_chars("=> ")
}

impl Bars {
    /// Bars for `cases` cases (the cases bar only when there are several).
    pub fn new(cases: usize) -> Self {
        let cases = (cases > 1).then(|| {
            let b = bars().add(ProgressBar::new(cases as u64));
            b.set_style(style(
                "cases [{bar:30}] {pos}/{len} {msg} ({elapsed}, ETA {eta})",
            ));
            b
        });
        let stage = bars().add(ProgressBar::new_spinner());
        stage.enable_steady_tick(Duration::from_millis(200));
        Bars { cases, stage }
    }

    /// A stage without a count: a spinner named `name`.
    pub fn stage(&self, name: &str) {
        self.stage.set_style(style("{spinner} {msg} ({elapsed})"));
        self.stage.reset();
        self.stage.set_length(0);
        self.stage.set_message(name.to_string());
    }

    /// The pipeline's own steps: zoom-in counts its windows.
    pub fn pipeline(&self, step: Step) {
        match step {
            Step::ZoomOut { .. } => self.stage(&step.to_string()),
            Step::ZoomIn {
                category,
                categories,
                windows,
            } => {
                self.stage.set_style(style(
                    "{msg} [{bar:30}] {pos}/{len} windows ({elapsed}, ETA {eta})",
                ));
                self.stage.reset();
                self.stage.set_length(windows as u64);
                self.stage
                    .set_message(format!("zoom-in {}/{categories}", category + 1));
            }
            Step::Window { done, .. } => self.stage.set_position(done as u64),
        }
    }

    /// The case bar's label (the case being computed).
    pub fn case(&self, name: &str) {
        if let Some(c) = &self.cases {
            c.set_message(name.to_string());
        }
    }

    /// One more case finished (done, skipped or failed).
    pub fn case_done(&self) {
        if let Some(c) = &self.cases {
            c.inc(1);
        }
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        self.stage.finish_and_clear();
        if let Some(c) = &self.cases {
            c.finish_and_clear();
        }
    }
}
