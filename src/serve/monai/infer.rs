//! `POST /infer/{model}?image=ID[&session_id=S][&output=image|json|all]`
//! and the reply the client parses: a multipart form with the part `params`
//! (JSON) and the file part `image` (the label map), or one of them alone
//! with `output=json` / `output=image`.

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use segvol::api::Segmentation;
use segvol::io::nifti::{read_ct_bytes, CtVolume};
use segvol::pipeline::prompt_frames::Frame;
use segvol::pipeline::request::Request;
use segvol::vocabulary;

use super::form::{base_name, read_form};
use super::params::{self, Format};
use super::{MonaiImage, IMAGES, MODEL_AUTO, MODEL_INTERACTIVE, SESSIONS};
use crate::serve::error::ApiError;
use crate::serve::sessions::{SessionData, SessionSlot};
use crate::serve::AppState;

#[derive(Deserialize)]
pub struct InferQuery {
    image: Option<String>,
    session_id: Option<String>,
    output: Option<String>,
}

/// Where the request's image is: a stored image or session, or a file sent
/// with the request (segmented once, not kept).
enum Source {
    Stored(Arc<SessionSlot>),
    Upload { name: String, bytes: Vec<u8> },
}

/// A finished label map and what the reply says about it.
struct Outcome {
    labels: Vec<u8>,
    like: Arc<CtVolume>,
    label_names: Map<String, Value>,
    voxels: Vec<usize>,
    /// Seconds in the library call itself (what an in-process caller pays).
    segment_s: f64,
}

pub async fn infer(
    State(st): State<AppState>,
    Path(model): Path<String>,
    query: Result<Query<InferQuery>, axum::extract::rejection::QueryRejection>,
    mp: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let t0 = Instant::now();
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if model != MODEL_AUTO && model != MODEL_INTERACTIVE {
        return Err(ApiError::not_found(format!(
            "model {:?} not found: this server has {MODEL_AUTO} and {MODEL_INTERACTIVE}",
            model.chars().take(64).collect::<String>()
        )));
    }
    let output = match q.output.as_deref() {
        None | Some("") | Some("all") => Output::All,
        Some("image") => Output::Image,
        Some("json") => Output::Json,
        Some(o) => {
            return Err(ApiError::bad_request(format!(
                "output {:?}: supported are image, json and all",
                o.chars().take(32).collect::<String>()
            )))
        }
    };
    let form = read_form(mp).await?;
    let p = params::parse(form.field("params"))?;
    let format = params::format(&p)?;
    let source = source(&st, &q, &form)?;

    let outcome = if model == MODEL_AUTO {
        let names = params::segmentation_labels(&p, &vocabulary::categories())?;
        run_auto(&st, source, names).await?
    } else {
        let prompts = params::interactive(&p)?;
        run_interactive(&st, source, prompts).await?
    };
    let infer_s = t0.elapsed().as_secs_f64();

    let stem = format!("segvol_{}", st.sessions.new_id());
    let Outcome {
        labels,
        like,
        label_names,
        voxels,
        segment_s,
    } = outcome;
    // output=json sends no file, so none is encoded.
    let (bytes, filename) = if matches!(output, Output::Json) {
        (Vec::new(), String::new())
    } else {
        st.run_blocking(move || encode(&like, &labels, format, &stem))
            .await?
    };
    let reply = json!({
        "label_names": label_names,
        "voxels": voxels,
        "result_extension": format.extension(),
        "latencies": {
            "segment": segment_s,
            "infer": infer_s,
            "total": t0.elapsed().as_secs_f64(),
        },
    });
    Ok(match output {
        Output::Json => Json(reply).into_response(),
        Output::Image => (
            [
                (header::CONTENT_TYPE, format.mime().to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{filename}\""),
                ),
            ],
            bytes,
        )
            .into_response(),
        Output::All => {
            let boundary = format!("segvol-{}", st.sessions.new_id());
            multipart_reply(&reply, &filename, format.mime(), &bytes, &boundary)
        }
    })
}

enum Output {
    All,
    Image,
    Json,
}

fn source(st: &AppState, q: &InferQuery, form: &super::form::Form) -> Result<Source, ApiError> {
    if let Some(sid) = q.session_id.as_deref().filter(|s| !s.is_empty()) {
        return Ok(Source::Stored(st.sessions.get(SESSIONS, sid)?));
    }
    let image = q.image.as_deref().filter(|s| !s.is_empty());
    if let Some(id) = image {
        if let Ok(slot) = st.sessions.get(IMAGES, id) {
            return Ok(Source::Stored(slot));
        }
    }
    if let Some(f) = form.file("file") {
        return Ok(Source::Upload {
            name: base_name(&f.filename),
            bytes: f.bytes.to_vec(),
        });
    }
    Err(match image {
        Some(id) => ApiError::not_found(format!(
            "image {:?} not found: upload it first (PUT /datastore/?image=ID)",
            id.chars().take(64).collect::<String>()
        )),
        None => ApiError::bad_request("no image: give ?image=ID, ?session_id=S or a file part"),
    })
}

/// The `segvol` model: the categories as one label map, as `segvol segment
/// --text A --text B ...` gives it.
async fn run_auto(st: &AppState, source: Source, names: Vec<String>) -> Result<Outcome, ApiError> {
    let session = match &source {
        Source::Stored(slot) => Some(slot.id.clone()),
        Source::Upload { .. } => None,
    };
    // Off the async threads: the session's lock may be held by a model call.
    let ct = st
        .run_blocking(move || {
            let (name, bytes) = match source {
                Source::Stored(slot) => {
                    let mut d = slot.lock();
                    let m = d
                        .extra_mut::<MonaiImage>()
                        .ok_or_else(|| ApiError::internal("stored image without its file"))?;
                    (m.name.clone(), m.file.clone())
                }
                Source::Upload { name, bytes } => (name, Arc::new(bytes)),
            };
            Ok(read_ct_bytes(FsPath::new(&name), &bytes)?)
        })
        .await?;
    let req = Request {
        texts: names.clone(),
        frame: Some(Frame::Voxel),
        ..Request::default()
    };
    st.run_model(session, move |model| {
        let t = Instant::now();
        let seg = model.segment(&ct, &req)?;
        let spent = t.elapsed().as_secs_f64();
        let mut like = ct;
        like.data = Vec::new();
        Ok(outcome(&seg, Arc::new(like), &names, spent))
    })
    .await
}

/// The `segvol_interactive` model: the request's prompts replace the
/// session's, and the session's embeddings are reused.
async fn run_interactive(
    st: &AppState,
    source: Source,
    prompts: params::Interactive,
) -> Result<Outcome, ApiError> {
    let names = vec![prompts.name.clone()];
    match source {
        Source::Stored(slot) => {
            let id = slot.id.clone();
            let store = st.sessions.clone();
            st.run_model(Some(id), move |_| {
                let mut d = slot.lock();
                let out = prompt_session(&mut d, &prompts, &names)?;
                store.touch(&slot);
                Ok(out)
            })
            .await
        }
        Source::Upload { name, bytes } => {
            let data = super::open_image(st, name, bytes).await?;
            st.run_model(None, move |_| {
                let mut data = data;
                prompt_session(&mut data, &prompts, &names)
            })
            .await
        }
    }
}

/// Sets a session's prompts (stored or just uploaded) and reads back the
/// mask with the image's header, timing the library call alone.
fn prompt_session(
    data: &mut SessionData,
    prompts: &params::Interactive,
    names: &[String],
) -> Result<Outcome, ApiError> {
    let SessionData { session, extra } = data;
    let like = extra
        .downcast_ref::<MonaiImage>()
        .map(|m| m.like.clone())
        .ok_or_else(|| ApiError::internal("image without its header"))?;
    let t = Instant::now();
    let seg = session.set_prompts(prompts.text.as_deref(), prompts.corners, &prompts.points)?;
    Ok(outcome(seg, like, names, t.elapsed().as_secs_f64()))
}

fn outcome(seg: &Segmentation, like: Arc<CtVolume>, names: &[String], segment_s: f64) -> Outcome {
    // At most 255 categories (checked with the params), so labels fit u8.
    let labels = seg.labels.iter().map(|&v| v as u8).collect();
    let label_names = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), json!(i + 1)))
        .collect();
    Outcome {
        labels,
        like,
        label_names,
        voxels: seg.categories.iter().map(|c| c.voxels).collect(),
        segment_s,
    }
}

/// The label map as file bytes: NIfTI through the library's writer (the
/// bytes `segvol segment` writes), or NRRD.
fn encode(
    like: &CtVolume,
    labels: &[u8],
    format: Format,
    stem: &str,
) -> Result<(Vec<u8>, String), ApiError> {
    let filename = format!("{stem}{}", format.extension());
    if format == Format::Nrrd {
        let bytes = crate::serve::nrrd::encode_label_map(like, labels)
            .map_err(|e| ApiError::internal(format!("encoding the result: {e}")))?;
        return Ok((bytes, filename));
    }
    // Encoded in memory: no file in a shared temp folder that two requests
    // for one image could both be writing.
    let bytes = segvol::io::write::label_map_bytes(
        FsPath::new(&filename),
        like,
        labels,
        format == Format::NiftiGz,
    )?;
    Ok((bytes, filename))
}

/// The reply MONAI Label's server sends (a `requests_toolbelt`
/// MultipartEncoder form): part `params` (JSON) and file part `image`.
/// `boundary` is random, so it cannot occur in the file by design.
fn multipart_reply(
    params: &Value,
    filename: &str,
    mime: &str,
    file: &[u8],
    boundary: &str,
) -> Response {
    let mut body = Vec::with_capacity(file.len() + 512);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"params\"\r\nContent-Type: application/json\r\n\r\n{params}\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{filename}\"\r\nContent-Type: {mime}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (
        [(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )],
        body,
    )
        .into_response()
}
