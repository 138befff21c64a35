//! Reading multipart bodies: the MONAI Label client sends every upload as
//! `multipart/form-data` (with the boundary `----------lImIt_of_THE_fIle_eW_$`
//! from its own encoder, or `requests`' for sessions).

use axum::body::Bytes;
use axum::extract::multipart::{Multipart, MultipartError, MultipartRejection};

use crate::serve::error::ApiError;

/// One uploaded file part.
pub struct FilePart {
    pub field: String,
    /// The file name as sent (only its last component is ever used).
    pub filename: String,
    pub bytes: Bytes,
}

/// A parsed form: text fields and file parts, in the order sent.
#[derive(Default)]
pub struct Form {
    pub fields: Vec<(String, String)>,
    pub files: Vec<FilePart>,
}

impl Form {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first file part named `name`.
    pub fn file(&self, name: &str) -> Option<&FilePart> {
        self.files.iter().find(|f| f.field == name)
    }
}

/// Reads the whole form. The body cap (`--max-upload`) is enforced while
/// reading (413); a malformed or truncated body is a 400.
pub async fn read_form(mp: Result<Multipart, MultipartRejection>) -> Result<Form, ApiError> {
    let mut mp = mp.map_err(|e| {
        ApiError::new(
            e.status(),
            format!("expected a multipart/form-data body: {}", e.body_text()),
        )
    })?;
    let mut form = Form::default();
    while let Some(field) = mp.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or("").to_string();
        let filename = field.file_name().map(str::to_string);
        let bytes = field.bytes().await.map_err(multipart_error)?;
        match filename {
            Some(filename) => form.files.push(FilePart {
                field: name,
                filename,
                bytes,
            }),
            None => {
                let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
                    ApiError::bad_request(format!("form field {name:?} is not UTF-8 text"))
                })?;
                form.fields.push((name, text));
            }
        }
    }
    Ok(form)
}

fn multipart_error(e: MultipartError) -> ApiError {
    let status = e.status();
    if status.is_server_error() {
        // The body stream failed: the client stopped sending or sent less
        // than it declared. That is the request's fault, not the server's.
        return ApiError::bad_request(format!(
            "multipart body could not be read to its end (truncated upload?): {}",
            e.body_text()
        ));
    }
    ApiError::new(status, format!("multipart body: {}", e.body_text()))
}

/// The last path component of a client-given file name, restricted to
/// plain characters (it names the image in replies, never a file on disk).
pub fn base_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let clean: String = last
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(128)
        .collect();
    if clean.is_empty() {
        "image.nii.gz".into()
    } else {
        clean
    }
}
