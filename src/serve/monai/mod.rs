//! The MONAI Label subset that 3D Slicer's MONAILabel extension (and
//! `monailabel.client.MONAILabelClient`) calls: `/info/`, `/auth/`,
//! `/datastore/`, `/session/`, `/infer/{model}`.
//!
//! Two models: `segvol` (type "segmentation": the named categories, or
//! every category of the vocabulary, as one label map) and
//! `segvol_interactive` (type "deepgrow", 3D: `label` as the text prompt when
//! it names a category, `foreground` / `background` clicks and a `roi` box
//! in the image's voxel indices).
//!
//! An uploaded image (`PUT /datastore/?image=ID`) and a MONAI Label session
//! (`PUT /session/`) are both server sessions: the image is preprocessed
//! once and the interactive model keeps its embeddings between clicks, so a
//! click costs decoder passes. Each `segvol_interactive` request carries the
//! whole prompt set (the extension resends all clicks), which replaces the
//! session's prompts. Results are `segvol segment`'s for the same prompts.

mod form;
mod infer;
mod params;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Form as UrlForm, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use segvol::io::nifti::{read_ct_bytes, CtVolume};
use segvol::vocabulary;

use super::error::ApiError;
use super::sessions::{SessionData, SessionSlot};
use super::AppState;
use form::{base_name, read_form};

/// Session-store protocol names: uploaded images and MONAI Label sessions
/// live in separate id spaces.
const IMAGES: &str = "monai.image";
const SESSIONS: &str = "monai.session";

/// The model names in `/info/` and `/infer/{model}`.
pub const MODEL_AUTO: &str = "segvol";
pub const MODEL_INTERACTIVE: &str = "segvol_interactive";

/// What a MONAI Label image or session keeps besides the segmentation
/// session: the upload (for the `segvol` model, which reads the full CT
/// again) and the CT's header and geometry (for the results).
pub struct MonaiImage {
    pub name: String,
    pub file: Arc<Vec<u8>>,
    /// The CT without its voxels.
    pub like: Arc<CtVolume>,
}

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/info/", get(info))
        .route("/info", get(info))
        .route("/auth/", get(auth))
        .route("/auth", get(auth))
        .route("/auth/token", post(auth_token))
        // Reached only with a valid token (the token layer answers 401).
        .route("/auth/token/valid", get(|| async { Json(json!({})) }))
        .route("/datastore/", put(upload_image).delete(remove_image))
        .route("/datastore", put(upload_image).delete(remove_image))
        .route("/session/", put(create_session))
        .route("/session", put(create_session))
        .route("/session/{id}", get(get_session).delete(remove_session))
        .route("/infer/{model}", post(infer::infer))
        .with_state(state)
}

async fn info(State(st): State<AppState>) -> Json<Value> {
    let labels = vocabulary::categories();
    let numbered: serde_json::Map<String, Value> = labels
        .iter()
        .enumerate()
        .map(|(i, n)| (n.to_string(), json!(i + 1)))
        .collect();
    let images = st.sessions.ids(IMAGES).len();
    Json(json!({
        "name": "segvol",
        "description": "SegVol 3D CT segmentation (text, box and point prompts) served by segvol",
        "version": env!("CARGO_PKG_VERSION"),
        "labels": labels,
        "models": {
            MODEL_AUTO: {
                "type": "segmentation",
                "labels": numbered,
                "dimension": 3,
                "description": "Segments the named categories (params.labels), by default every category, as one label map",
                "config": {},
            },
            MODEL_INTERACTIVE: {
                "type": "deepgrow",
                "labels": labels,
                "dimension": 3,
                "description": "Interactive: label (a category name) as text prompt, foreground/background clicks and a roi box, in voxel indices",
                "config": {},
            },
        },
        "trainers": {},
        "strategies": {},
        "scoring": {},
        "train_stats": {},
        "datastore": {"total": images, "completed": 0},
    }))
}

/// 404 when no token is set (the client then sends no credentials);
/// otherwise the client logs in through `/auth/token`.
async fn auth(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    if st.config.token.is_none() {
        return Err(ApiError::not_found("authentication is off"));
    }
    Ok(Json(json!({"enabled": true, "client_id": "segvol"})))
}

#[derive(Deserialize)]
struct Login {
    password: Option<String>,
}

/// The MONAI Label client's login: the password is the server's token
/// (any user name), and the token is handed back as the bearer token.
async fn auth_token(
    State(st): State<AppState>,
    login: Result<UrlForm<Login>, axum::extract::rejection::FormRejection>,
) -> Result<Json<Value>, ApiError> {
    let Some(want) = st.config.token.as_deref() else {
        return Err(ApiError::not_found("authentication is off"));
    };
    let UrlForm(login) = login.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let given = login.password.unwrap_or_default();
    if !super::constant_time_eq(given.as_bytes(), want.as_bytes()) {
        return Err(ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "wrong password (it is the server's --token)",
        ));
    }
    Ok(Json(json!({"access_token": want, "token_type": "bearer"})))
}

#[derive(Deserialize)]
struct ImageQuery {
    image: Option<String>,
    id: Option<String>,
}

/// Image ids are the client's names; they are kept short and printable.
fn check_id(id: &str) -> Result<String, ApiError> {
    let id = id.trim();
    if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "image id: expected 1 to 256 printable characters",
        ));
    }
    Ok(id.to_string())
}

/// Decodes an upload and prepares a session on it (model-free work).
async fn open_image(st: &AppState, name: String, bytes: Vec<u8>) -> Result<SessionData, ApiError> {
    let model = st.model.clone();
    st.run_blocking(move || {
        let mut ct = read_ct_bytes(std::path::Path::new(&name), &bytes)?;
        let data = std::mem::take(&mut ct.data);
        let like = Arc::new(ct.clone());
        ct.data = data;
        let mut session = model.new_session();
        session.set_image(ct)?;
        Ok(SessionData::new(
            session,
            MonaiImage {
                name,
                file: Arc::new(bytes),
                like,
            },
        ))
    })
    .await
}

/// `PUT /datastore/?image=ID`: multipart `params` + `file` (a NIfTI).
async fn upload_image(
    State(st): State<AppState>,
    Query(q): Query<ImageQuery>,
    mp: Result<Multipart, MultipartRejection>,
) -> Result<Json<Value>, ApiError> {
    let form = read_form(mp).await?;
    params::parse(form.field("params"))?;
    let file = form
        .file("file")
        .ok_or_else(|| ApiError::bad_request("no file part named \"file\" in the form"))?;
    let name = base_name(&file.filename);
    let id = match q.image.as_deref().filter(|s| !s.trim().is_empty()) {
        Some(id) => check_id(id)?,
        None => name
            .trim_end_matches(".gz")
            .trim_end_matches(".nii")
            .to_string(),
    };
    let data = open_image(&st, name, file.bytes.to_vec()).await?;
    st.sessions.insert(IMAGES, Some(id.clone()), data)?;
    Ok(Json(json!({ "image": id })))
}

/// `DELETE /datastore/?id=ID`: forgets an uploaded image.
async fn remove_image(
    State(st): State<AppState>,
    Query(q): Query<ImageQuery>,
) -> Result<Json<Value>, ApiError> {
    let id =
        q.id.or(q.image)
            .ok_or_else(|| ApiError::bad_request("give the image id as ?id=ID"))?;
    st.sessions
        .remove(IMAGES, &id)
        .ok_or_else(|| ApiError::not_found(format!("image {:?} not found", cut(&id))))?;
    st.released();
    Ok(Json(json!({})))
}

/// `PUT /session/`: one NIfTI file (form part `files`, as the client's
/// `requests` upload names it, or `file`) becomes a session.
async fn create_session(
    State(st): State<AppState>,
    mp: Result<Multipart, MultipartRejection>,
) -> Result<Json<Value>, ApiError> {
    let form = read_form(mp).await?;
    let file = match form.files.as_slice() {
        [one] => one,
        [] => return Err(ApiError::bad_request("no image file in the form")),
        _ => {
            return Err(ApiError::bad_request(
                "one NIfTI file expected (DICOM series are not supported)",
            ))
        }
    };
    let name = base_name(&file.filename);
    let data = open_image(&st, name, file.bytes.to_vec()).await?;
    let slot = st.sessions.insert(SESSIONS, None, data)?;
    let info = info_of(&st, slot.clone()).await?;
    Ok(Json(json!({
        "session_id": slot.id,
        "session_info": info,
    })))
}

/// [`session_info`] off the async threads: the session's lock may be held
/// by a model call for seconds.
async fn info_of(st: &AppState, slot: Arc<SessionSlot>) -> Result<Value, ApiError> {
    let st2 = st.clone();
    st.run_blocking(move || Ok(session_info(&st2, &slot))).await
}

fn session_info(st: &AppState, slot: &SessionSlot) -> Value {
    let mut d = slot.lock();
    let name = d
        .extra_mut::<MonaiImage>()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    json!({
        "name": slot.id,
        "path": "",
        "image": name,
        "meta": {},
        "create_ts": slot.created_unix,
        "last_access_ts": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        "expiry": st.config.limits.idle.as_secs(),
    })
}

#[derive(Deserialize)]
struct SessionQuery {
    #[serde(default)]
    image: bool,
}

/// `GET /session/{id}`: the session's info, or with `?image=true` the image
/// as uploaded.
async fn get_session(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<SessionQuery>,
) -> Result<Response, ApiError> {
    let slot = st.sessions.get(SESSIONS, &id)?;
    if q.image {
        let (name, file) = st
            .run_blocking(move || {
                let mut d = slot.lock();
                let m = d
                    .extra_mut::<MonaiImage>()
                    .ok_or_else(|| ApiError::internal("session without an image"))?;
                Ok((m.name.clone(), m.file.clone()))
            })
            .await?;
        return Ok((
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{name}\""),
                ),
            ],
            Body::from(file.as_ref().clone()),
        )
            .into_response());
    }
    Ok(Json(info_of(&st, slot).await?).into_response())
}

/// `DELETE /session/{id}`: frees the session.
async fn remove_session(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let slot = st
        .sessions
        .remove(SESSIONS, &id)
        .ok_or_else(|| ApiError::not_found(format!("session {:?} not found", cut(&id))))?;
    let info = info_of(&st, slot.clone()).await?;
    // A request still running on the session keeps it alive until it ends;
    // the heap is trimmed once this handler's reference is gone.
    drop(slot);
    st.released();
    Ok(Json(info))
}

fn cut(s: &str) -> String {
    s.chars().take(64).collect()
}
