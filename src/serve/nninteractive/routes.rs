//! The HTTP endpoints of the nnInteractive v2 remote protocol, as
//! `nnInteractiveRemoteInferenceSession` (nninteractive-client 2.6) calls
//! them: a lease from `/claim` rides in `X-Lease-Token` on every later call
//! (410 when unknown or expired), arrays travel as NNIA bodies with JSON in
//! `X-Meta`, and predictions answer with the changed bbox in `X-Meta` and
//! the new mask inside it as the body.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::nnia;
use super::state::{BadRequest, NnState, Prompt, Reply};
use crate::serve::error::ApiError;
use crate::serve::sessions::{SessionData, SessionSlot};
use crate::serve::AppState;

const PROTOCOL: &str = "nninteractive";
const LEASE_HEADER: &str = "x-lease-token";
const META_HEADER: &str = "x-meta";
/// The protocol version implemented (the client's, which reads it as the
/// server's `inference_session_version`).
const PROTOCOL_VERSION: &str = "2.6.0";
/// Decoded uploads may be at most this many bytes...
const MAX_DECODED: usize = 4 << 30;
/// ...and at most this many times their compressed size (but 64 MiB is
/// always allowed): a few header bytes may claim any shape, and Blosc2
/// stores a run of zeros in 32 bytes, so the body size alone bounds nothing.
const MAX_RATIO: usize = 256;

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/claim", post(claim))
        .route("/release", post(release))
        .route("/heartbeat", post(heartbeat))
        .route("/lease_status", get(lease_status))
        .route("/capabilities", get(capabilities))
        .route("/set_image", post(set_image))
        .route("/set_target_buffer", post(set_target_buffer))
        .route("/set_do_autozoom", post(set_do_autozoom))
        .route("/reset_interactions", post(reset_interactions))
        .route("/predict", post(predict))
        .route("/add_point_interaction", post(add::<PointReq>))
        .route("/add_bbox_interaction", post(add::<BboxReq>))
        .route("/add_text_interaction", post(add::<TextReq>))
        .route("/add_scribble_interaction", post(unsupported_scribble))
        .route("/add_lasso_interaction", post(unsupported_lasso))
        .route(
            "/add_initial_seg_interaction",
            post(unsupported_initial_seg),
        )
        .route("/undo", post(unsupported_undo))
        .with_state(state)
}

fn gone(msg: &str) -> ApiError {
    ApiError::new(StatusCode::GONE, msg)
}

impl From<BadRequest> for ApiError {
    fn from(e: BadRequest) -> Self {
        ApiError::bad_request(e.0)
    }
}

/// The caller's session: 410 when the lease is missing, unknown, released
/// or expired (the client then reports "session expired").
fn lease(state: &AppState, headers: &HeaderMap) -> Result<std::sync::Arc<SessionSlot>, ApiError> {
    let token = headers
        .get(LEASE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| gone("lease token missing (X-Lease-Token): call /claim first"))?;
    state
        .sessions
        .get(PROTOCOL, token)
        .map_err(|_| gone("lease expired or unknown: claim a new session"))
}

/// Runs `f` on the session and its protocol state, in blocking work; with
/// `model`, under the model permit (anything that may run the network).
async fn with_session<T, F>(
    state: &AppState,
    headers: &HeaderMap,
    model: bool,
    f: F,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&mut dyn crate::serve::model::Interactive, &mut NnState) -> Result<T, ApiError>
        + Send
        + 'static,
{
    let slot = lease(state, headers)?;
    let id = slot.id.clone();
    let work = move || {
        let mut guard = slot.lock();
        let data: &mut SessionData = &mut guard;
        let st = data
            .extra
            .downcast_mut::<NnState>()
            .ok_or_else(|| ApiError::internal("session state of another protocol"))?;
        st.last_active = Instant::now();
        f(data.session.as_mut(), st)
    };
    if model {
        state.run_model(Some(id), move |_| work()).await
    } else {
        state.run_blocking(work).await
    }
}

fn json_body<T: for<'de> Deserialize<'de>>(body: &[u8], what: &str) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}" as &[u8]
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("{what}: bad JSON body: {e}")))
}

fn meta_header(headers: &HeaderMap) -> Result<Value, ApiError> {
    match headers.get(META_HEADER) {
        None => Ok(json!({})),
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| ApiError::bad_request("X-Meta is not ASCII"))?;
            serde_json::from_str(s).map_err(|e| ApiError::bad_request(format!("bad X-Meta: {e}")))
        }
    }
}

fn idle_seconds(state: &AppState) -> f64 {
    state.sessions.limits.idle.as_secs_f64()
}

async fn claim(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let data = SessionData::new(state.model.new_session(), NnState::default());
    let slot = state.sessions.insert(PROTOCOL, None, data)?;
    Ok(Json(json!({
        "lease_token": slot.id,
        "idle_timeout_seconds": idle_seconds(&state),
        // No separate liveness reaping: the idle timeout alone frees a
        // session, so the client need not heartbeat (0 turns its thread off).
        "liveness_timeout_seconds": 0.0,
        "max_sessions": state.sessions.limits.max_sessions,
    })))
}

async fn release(State(state): State<AppState>, headers: HeaderMap) -> Json<Value> {
    if let Some(t) = headers.get(LEASE_HEADER).and_then(|v| v.to_str().ok()) {
        state.sessions.remove(PROTOCOL, t);
    }
    // Idempotent, as the client expects.
    Json(json!({"released": true}))
}

fn remaining(state: &AppState, st: &NnState) -> f64 {
    (idle_seconds(state) - st.last_active.elapsed().as_secs_f64()).max(0.0)
}

/// Liveness only; it does not count as activity for `remaining_seconds`.
/// (The session store's own idle clock does count it.)
async fn heartbeat(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let slot = lease(&state, &headers)?;
    let st = state.clone();
    state
        .run_blocking(move || {
            let mut g = slot.lock();
            let nn = g
                .extra
                .downcast_mut::<NnState>()
                .ok_or_else(|| ApiError::internal("session state"))?;
            Ok(Json(json!({"remaining_seconds": remaining(&st, nn)})))
        })
        .await
}

async fn lease_status(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let slot = lease(&state, &headers)?;
    let st = state.clone();
    state
        .run_blocking(move || {
            let mut g = slot.lock();
            let nn = g
                .extra
                .downcast_mut::<NnState>()
                .ok_or_else(|| ApiError::internal("session state"))?;
            Ok(Json(json!({
                "remaining_seconds": remaining(&st, nn),
                "idle_timeout_seconds": idle_seconds(&st),
            })))
        })
        .await
}

async fn capabilities() -> Json<Value> {
    Json(json!({
        "supported_interactions": {
            "points": true,
            "bbox2d": true,
            "bbox3d": true,
            "scribble": false,
            "lasso": false,
        },
        // SegVol takes prompts, not interaction channels.
        "channel_mapping": {},
        "num_interaction_channels": 0,
        "supports_initial_label": false,
        "supports_zero_shot_label_refinement": false,
        "preferred_scribble_thickness": [2, 2, 2],
        "interaction_decay": null,
        "patch_size": null,
        // SegVol always zooms out then in; it cannot be turned off.
        "do_autozoom": true,
        "inference_session_version": PROTOCOL_VERSION,
        "license": "SegVol (BAAI/SegVol): see the served weights' model card",
        "supports_undo": false,
        "segvol": {
            "version": env!("CARGO_PKG_VERSION"),
            "text_interaction": "/add_text_interaction",
            "negative_bbox": false,
            "categories": segvol::vocabulary::categories(),
        },
    }))
}

async fn set_image(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let meta = meta_header(&headers)?;
    let spacing = meta
        .get("image_properties")
        .and_then(|p| p.get("spacing"))
        .and_then(|s| serde_json::from_value::<[f64; 3]>(s.clone()).ok())
        .filter(|s| s.iter().all(|v| v.is_finite() && *v > 0.0));
    let limit = MAX_DECODED.min(body.len().saturating_mul(MAX_RATIO).max(64 << 20));
    let shape = with_session(&state, &headers, false, move |sess, st| {
        let img = nnia::unpack(&body, limit).map_err(|e| ApiError::bad_request(e.0))?;
        drop(body);
        Ok(st.set_image(sess, img, spacing)?)
    })
    .await?;
    Ok(Json(json!({"original_image_shape": shape})))
}

#[derive(Deserialize)]
struct TargetBuffer {
    shape: Vec<i64>,
    dtype: String,
}

async fn set_target_buffer(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: TargetBuffer = json_body(&body, "set_target_buffer (needs shape and dtype)")?;
    with_session(&state, &headers, false, move |_, st| {
        Ok(st.set_target_buffer(&req.shape, &req.dtype)?)
    })
    .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct Autozoom {
    do_autozoom: bool,
}

async fn set_do_autozoom(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: Autozoom = json_body(&body, "set_do_autozoom")?;
    lease(&state, &headers)?;
    if !req.do_autozoom {
        return Err(ApiError::bad_request(
            "SegVol always runs zoom-out-zoom-in; autozoom cannot be turned off",
        ));
    }
    Ok(Json(json!({})))
}

async fn reset_interactions(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    with_session(&state, &headers, false, |sess, st| {
        st.reset_interactions(sess);
        Ok(())
    })
    .await?;
    Ok(Json(json!({})))
}

/// The reply `_apply_prediction_response` parses; `segvol_model_ms` (the
/// library's share of the time, which the client ignores) lets a benchmark
/// tell the protocol's cost from the network's.
fn prediction_response(r: Reply) -> Response {
    let (mut meta, body) = match r.changed {
        Some((bbox, body)) => {
            let shape: Vec<usize> = bbox.iter().map(|b| b[1] - b[0]).collect();
            (
                json!({"ran_prediction": r.ran, "bbox": bbox, "dtype": "uint8", "shape": shape}),
                body,
            )
        }
        None => (json!({"ran_prediction": r.ran, "bbox": null}), Vec::new()),
    };
    if r.ran {
        meta["segvol_model_ms"] = json!((r.model_ms * 1000.0).round() / 1000.0);
    }
    let meta = HeaderValue::from_str(&meta.to_string()).expect("JSON of numbers is ASCII");
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (header::HeaderName::from_static(META_HEADER), meta),
        ],
        body,
    )
        .into_response()
}

#[derive(Deserialize)]
struct Flags {
    #[serde(default = "yes")]
    run_prediction: bool,
}

fn yes() -> bool {
    true
}

async fn predict(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let r = with_session(&state, &headers, true, |sess, st| Ok(st.predict(sess)?)).await?;
    Ok(prediction_response(r))
}

/// A prompt-adding request body: what it is called in errors, its flags,
/// and the prompt it makes against the session's image.
trait Interaction: for<'de> Deserialize<'de> + Send + 'static {
    const WHAT: &'static str;
    fn flags(&self) -> &Flags;
    fn prompt(&self, st: &NnState) -> Result<Prompt, BadRequest>;
}

#[derive(Deserialize)]
struct PointReq {
    coordinates: Vec<f64>,
    include_interaction: bool,
    #[serde(flatten)]
    flags: Flags,
}

impl Interaction for PointReq {
    const WHAT: &'static str = "add_point_interaction (needs coordinates, include_interaction)";
    fn flags(&self) -> &Flags {
        &self.flags
    }
    fn prompt(&self, st: &NnState) -> Result<Prompt, BadRequest> {
        st.point(&self.coordinates, self.include_interaction)
    }
}

#[derive(Deserialize)]
struct BboxReq {
    bbox_coords: Vec<Vec<f64>>,
    include_interaction: bool,
    #[serde(flatten)]
    flags: Flags,
}

impl Interaction for BboxReq {
    const WHAT: &'static str = "add_bbox_interaction (needs bbox_coords, include_interaction)";
    fn flags(&self) -> &Flags {
        &self.flags
    }
    fn prompt(&self, st: &NnState) -> Result<Prompt, BadRequest> {
        st.bbox(&self.bbox_coords, self.include_interaction)
    }
}

/// SegVol's extension: a category name as the object's text prompt
/// (replacing an earlier one), combined with the clicks and box.
#[derive(Deserialize)]
struct TextReq {
    text: String,
    #[serde(flatten)]
    flags: Flags,
}

impl Interaction for TextReq {
    const WHAT: &'static str = "add_text_interaction (needs text)";
    fn flags(&self) -> &Flags {
        &self.flags
    }
    fn prompt(&self, st: &NnState) -> Result<Prompt, BadRequest> {
        st.text(&self.text)
    }
}

/// `/add_point_interaction`, `/add_bbox_interaction`, `/add_text_interaction`:
/// the prompt is added (and predicted, unless `run_prediction` is false).
async fn add<R: Interaction>(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: R = json_body(&body, R::WHAT)?;
    let run = req.flags().run_prediction;
    let r = with_session(&state, &headers, run, move |sess, st| {
        let p = req.prompt(st)?;
        Ok(st.add(sess, p, run)?)
    })
    .await?;
    Ok(prediction_response(r))
}

fn unsupported(what: &str) -> ApiError {
    ApiError::bad_request(format!(
        "{what} is not supported by SegVol (see /capabilities): use points, boxes or text"
    ))
}

async fn unsupported_scribble() -> ApiError {
    unsupported("the scribble interaction")
}
async fn unsupported_lasso() -> ApiError {
    unsupported("the lasso interaction")
}
async fn unsupported_initial_seg() -> ApiError {
    unsupported("an initial segmentation")
}
async fn unsupported_undo() -> ApiError {
    unsupported("undo")
}
