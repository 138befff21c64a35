//! The server's error reply: a status and a one-line reason, sent as
//! `{"detail": "..."}` (the shape FastAPI servers such as MONAI Label and
//! nnInteractive's use, so their clients show the reason).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An HTTP error with a one-line message.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub msg: String,
}

impl ApiError {
    pub fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        ApiError {
            status,
            msg: one_line(&msg.into()),
        }
    }
    /// 400: the request is malformed (bad JSON, missing part, bad prompt).
    pub fn bad_request(msg: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, msg)
    }
    /// 404: no such session, image or model.
    pub fn not_found(msg: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, msg)
    }
    /// 413: the body is over `--max-upload` (axum's extractors send their
    /// own 413; this is for protocols that count bytes themselves).
    #[allow(dead_code)]
    pub fn too_large(msg: impl Into<String>) -> Self {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, msg)
    }
    /// 503: the server is full (`--max-sessions`).
    pub fn unavailable(msg: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, msg)
    }
    /// 500: a failure on the server's side (a worker panicked, I/O).
    pub fn internal(msg: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, msg)
    }
}

/// Library errors are about the request's data (a bad NIfTI, a prompt
/// outside the volume, a box that holds nothing): 400, except failures of
/// the machine (I/O, CUDA, memory), which are 500.
impl From<segvol::Error> for ApiError {
    fn from(e: segvol::Error) -> Self {
        use segvol::Error as E;
        let status = match &e {
            E::Io { .. } | E::Cuda(_) | E::Shape(_) => StatusCode::INTERNAL_SERVER_ERROR,
            E::Memory(_) => StatusCode::INSUFFICIENT_STORAGE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.to_string())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.msg)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({ "detail": self.msg }))).into_response()
    }
}

/// Keeps a reason on one line when it quotes text holding newlines.
pub use crate::cli::one_line;
