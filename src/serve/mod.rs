//! `segvol serve`: one process holds the model and serves viewers over HTTP.
//!
//! The server is a surface on top of the library (`segvol::api`), in the
//! binary like the CLI, behind the `serve` cargo feature (axum + tokio).
//!
//! # How the pieces fit (for protocol authors)
//!
//! - **Model** ([`model::Model`]): the engine loaded once, with its backend
//!   type erased. `segvol serve` picks CPU or CUDA at start as `segvol
//!   segment` does and wraps the engine in `Arc<dyn Model>`; nothing else in
//!   the server is generic over the backend. `model.new_session()` gives a
//!   `Box<dyn Interactive>` (set_image, add_point, add_box, add_text,
//!   set_prompts, reset, mask), the library's `api::Session`.
//! - **State** ([`AppState`], cheap to clone): `state.model`, `state.config`,
//!   `state.sessions` (the [`sessions::SessionStore`]).
//! - **Blocking work**: handlers never run model or volume work on the async
//!   threads. [`AppState::run_model`] runs a closure on the blocking pool
//!   after taking the single model permit (model calls run one at a time:
//!   one model, many sessions; the CPU backend uses every core per call and
//!   the CUDA backend is one device), then applies the memory budget.
//!   [`AppState::run_blocking`] runs model-free heavy work (decoding an
//!   upload, encoding a result) without the permit. Lock a session
//!   ([`sessions::SessionSlot::lock`]) inside these closures, never across
//!   an `.await`.
//! - **Sessions**: `state.sessions.insert(protocol, id, SessionData::new(
//!   session, extra))`, `get(protocol, id)` (404 when unknown, and a
//!   protocol only sees its own sessions), `remove`, with `extra` the
//!   protocol's per-session state. One memory budget and idle expiry cover
//!   all protocols; see [`sessions`].
//! - **Errors**: return [`error::ApiError`] (one-line reason, `{"detail"}`
//!   body); `segvol::Error` converts into it (400 for bad data).
//! - **Routes**: a protocol module exposes `pub fn routes(state: AppState) ->
//!   axum::Router` (its state already applied) and is merged in [`router`].
//!   The token check (401) and the upload cap (413) are layers over the
//!   merged router, so every route gets them; read bodies through axum's
//!   extractors (`Bytes`, `Json`, `Multipart`), which enforce the cap.
//!   `/healthz` belongs to the core and is shared by every protocol; a
//!   route registered twice makes axum panic at start, so protocols leave it
//!   out. After removing sessions, call [`AppState::released`] so their
//!   memory goes back to the OS.
//!
//! # Security
//! Binds 127.0.0.1 unless `--host` says otherwise. With `--token T` every
//! route but `/auth/` and `/auth/token` (which only tell the MONAI Label
//! client how to log in) needs `Authorization: Bearer T` (any scheme word is
//! accepted) or `X-Token: T`; 401 otherwise. Session ids are 128-bit random.

pub mod error;
pub mod model;
pub mod monai;
pub mod nninteractive;
pub mod nrrd;
pub mod sessions;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::sync::Semaphore;

use error::ApiError;
use model::Model;
use sessions::{SessionStore, StoreLimits};

/// The server's settings (from `segvol serve`'s flags).
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub host: String,
    pub port: u16,
    /// Required on every call when set.
    pub token: Option<String>,
    /// Largest request body in bytes (413 above).
    pub max_upload: usize,
    pub limits: StoreLimits,
}

/// Shared by every handler; clones share one model, store and permit.
#[derive(Clone)]
pub struct AppState {
    pub model: Arc<dyn Model>,
    pub config: Arc<ServeConfig>,
    pub sessions: Arc<SessionStore>,
    model_permit: Arc<Semaphore>,
}

impl AppState {
    pub fn new(model: Arc<dyn Model>, config: ServeConfig) -> Self {
        let sessions = Arc::new(SessionStore::new(config.limits.clone()));
        AppState {
            model,
            config: Arc::new(config),
            sessions,
            model_permit: Arc::new(Semaphore::new(1)),
        }
    }

    /// Runs model work on the blocking pool, one call at a time, then keeps
    /// the sessions' embeddings within the budget (`session`, the one this
    /// call used, is freed last). A panic in `work` becomes a 500; the
    /// server keeps running. The work finishes even when the client has
    /// gone (its result is then dropped).
    pub async fn run_model<T, F>(&self, session: Option<String>, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Model) -> Result<T, ApiError> + Send + 'static,
    {
        let permit = self
            .model_permit
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::internal("the model worker is shut down"))?;
        let model = self.model.clone();
        let store = self.sessions.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let out = work(model.as_ref());
            drop(permit);
            store.enforce_budget(session.as_deref());
            out
        })
        .await;
        joined.unwrap_or_else(|e| Err(panicked(e)))
    }

    /// Runs model-free heavy work (decoding, encoding, preprocessing) on the
    /// blocking pool; a panic becomes a 500.
    pub async fn run_blocking<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    {
        tokio::task::spawn_blocking(work)
            .await
            .unwrap_or_else(|e| Err(panicked(e)))
    }
}

impl AppState {
    /// Call after removing sessions: hands the freed heap back to the OS
    /// (see [`trim_heap`]) on the blocking pool, without waiting for it.
    pub fn released(&self) {
        tokio::task::spawn_blocking(trim_heap);
    }
}

/// Returns freed heap pages to the OS. glibc keeps memory freed in its
/// per-thread arenas (requests run on several blocking threads) mapped, so
/// without this a released session's memory would stay in the process's
/// RSS; `malloc_trim` releases it from every arena.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::os::raw::c_int;
        }
        // SAFETY: malloc_trim only walks glibc's own arenas under their
        // locks; it takes no pointers from us.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// A log line on stderr. Not `eprintln!`, which panics when stderr is a
/// closed pipe (the server outliving whatever read its log).
pub fn log(msg: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "segvol serve: {msg}");
}

fn panicked(e: tokio::task::JoinError) -> ApiError {
    log(&format!("a request's worker failed: {e}"));
    ApiError::internal("internal error while processing the request (logged by the server)")
}

/// All routes, with the token check and the upload cap over them.
/// Protocols are merged here.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .with_state(state.clone())
        // Protocols: one .merge(<protocol>::routes(state.clone())) each.
        .merge(monai::routes(state.clone()))
        .merge(nninteractive::routes(state.clone()))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(DefaultBodyLimit::max(state.config.max_upload))
}

async fn healthz(State(state): State<AppState>) -> Json<serde_json::Value> {
    let stats = state.sessions.stats();
    Json(serde_json::json!({
        "status": "ok",
        "device": state.model.device(),
        "sessions": stats.sessions,
        "embedding_bytes": stats.embedding_bytes,
        "image_bytes": stats.image_bytes,
    }))
}

/// The paths a client may call before it has a token.
fn open_path(path: &str) -> bool {
    matches!(path, "/auth/" | "/auth" | "/auth/token")
}

async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(want) = state.config.token.as_deref() {
        if !open_path(req.uri().path()) && !token_ok(req.headers(), want) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong token (send Authorization: Bearer <token>)",
            )
            .into_response();
        }
    }
    next.run(req).await
}

fn token_ok(h: &HeaderMap, want: &str) -> bool {
    let given = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split_once(' ').map_or(v, |(_, t)| t).trim())
        .or_else(|| h.get("x-token").and_then(|v| v.to_str().ok()));
    given.is_some_and(|g| constant_time_eq(g.as_bytes(), want.as_bytes()))
}

/// Compares without an early exit, so timing does not reveal the prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves until the process is stopped. Prints `segvol serve: listening on
/// http://ADDR` once bound (tests read the port from it with `--port 0`).
pub fn run(config: ServeConfig, model: Arc<dyn Model>) -> segvol::Result<()> {
    // Blocking threads are capped: model calls run one at a time anyway, and
    // each extra thread is one more malloc arena holding freed memory.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()
        .map_err(|e| segvol::Error::Invalid(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(async move {
        let addr = format!("{}:{}", config.host, config.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| segvol::Error::Invalid(format!("cannot listen on {addr}: {e}")))?;
        let local: SocketAddr = listener
            .local_addr()
            .map_err(|e| segvol::Error::Invalid(format!("{addr}: {e}")))?;
        let state = AppState::new(model, config);
        spawn_expiry(state.sessions.clone());
        log(&format!(
            "listening on http://{local} (device {})",
            state.model.device()
        ));
        axum::serve(listener, router(state))
            .await
            .map_err(|e| segvol::Error::Invalid(format!("server stopped: {e}")))
    })
}

/// Expires idle sessions in the background, a few times per idle period.
fn spawn_expiry(store: Arc<SessionStore>) {
    let every = (store.limits.idle / 4).clamp(Duration::from_millis(200), Duration::from_secs(30));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let gone = store.expire_idle();
            if gone > 0 {
                log(&format!("{gone} idle session(s) expired"));
                tokio::task::spawn_blocking(trim_heap);
            }
        }
    });
}
