//! `segvol serve`: loads the model once on the chosen device and runs the
//! HTTP server (`src/serve/`).

use std::sync::Arc;
use std::time::Duration;

use segvol::api::{Engine, Options};
use segvol::backend::Backend;
use segvol::error::{Error, Result};
use segvol::pipeline::memory::parse_size;

use super::common::{dispatch, resolve_weights, zoom_options, BackendTask, Progress};
use super::ServeArgs;
use crate::serve::model::EngineModel;
use crate::serve::sessions::StoreLimits;
use crate::serve::ServeConfig;

pub fn run(args: ServeArgs) -> Result<()> {
    let size = |flag: &str, v: &str| -> Result<usize> {
        match parse_size(v) {
            Ok(Some(b)) => Ok(b.min(usize::MAX as u64) as usize),
            Ok(None) => Ok(usize::MAX),
            Err(_) => Err(Error::Invalid(format!(
                "{flag} {v:?}: expected a size such as 512M or 2G, or \"unlimited\""
            ))),
        }
    };
    if args.max_sessions == 0 {
        return Err(Error::Invalid("--max-sessions must be at least 1".into()));
    }
    let config = ServeConfig {
        host: args.host.clone(),
        port: args.port,
        token: args.token.clone().filter(|t| !t.is_empty()),
        max_upload: size("--max-upload", &args.max_upload)?,
        limits: StoreLimits {
            max_sessions: args.max_sessions,
            embedding_budget: size("--session-memory", &args.session_memory)?,
            idle: Duration::from_secs(args.idle_timeout.max(1)),
        },
    };
    let progress = Progress::new();
    let weights = resolve_weights(args.engine.weights.as_deref(), &progress)?;
    let opts = Options {
        zoom: zoom_options(&args.engine),
        probabilities: false,
    };
    let engine = args.engine.clone();
    dispatch(
        &engine,
        Task {
            config,
            weights,
            opts,
        },
    )
}

struct Task {
    config: ServeConfig,
    weights: std::path::PathBuf,
    opts: Options,
}

impl BackendTask for Task {
    type Output = ();

    fn run<B: Backend>(self, backend: B) -> Result<()> {
        crate::serve::log(&format!("loading {}", self.weights.display()));
        let engine = Engine::load(backend, &self.weights)?;
        let model = Arc::new(EngineModel::new(engine, self.opts));
        crate::serve::run(self.config, model)
    }
}
