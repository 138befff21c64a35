//! Finding the official weights when the user names none: the Hugging Face
//! cache (`$HF_HUB_CACHE`, `$HF_HOME/hub`, or `~/.cache/huggingface/hub`),
//! downloading `BAAI/SegVol` once with `hf-hub` when it is missing. The
//! environment is read as `huggingface_hub` reads it: `HF_ENDPOINT` (a mirror),
//! `HF_HUB_OFFLINE` (never download) and `HF_TOKEN` (else the token file
//! `huggingface-cli login` leaves next to the cache) too.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub const REPO: &str = "BAAI/SegVol";
/// The HF model repo's weights and the files that travel with them.
pub const WEIGHTS_FILE: &str = "pytorch_model.bin";
pub const SIDE_FILES: [&str; 2] = ["config.json", "tokenizer.json"];

/// The hub cache folder, as `huggingface_hub` resolves it.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    cache_dir_from(var("HF_HUB_CACHE"), var("HF_HOME"), var("HOME"))
}

/// The cache folder from `HF_HUB_CACHE`, `HF_HOME` and `HOME`, in that
/// order of precedence.
pub fn cache_dir_from(
    hub_cache: Option<std::ffi::OsString>,
    hf_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    if let Some(d) = hub_cache {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = hf_home {
        return Some(PathBuf::from(d).join("hub"));
    }
    home.map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
}

/// `HF_HUB_OFFLINE` as `huggingface_hub` reads it: "1", "true", "yes" or
/// "on" (any case) mean offline.
pub fn offline_from(value: Option<&str>) -> bool {
    value.is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// Whether this process may not download (`HF_HUB_OFFLINE`).
pub fn offline() -> bool {
    offline_from(std::env::var("HF_HUB_OFFLINE").ok().as_deref())
}

/// The hub's address: `HF_ENDPOINT` (a mirror) without a trailing slash, or
/// `None` for the default.
pub fn endpoint_from(value: Option<&str>) -> Option<String> {
    value
        .map(|v| v.trim().trim_end_matches('/').to_string())
        .filter(|v| !v.is_empty())
}

/// A snapshot folder of the repo that already holds the weights.
pub fn cached_snapshot(cache: &Path) -> Option<PathBuf> {
    let repo = cache.join(format!("models--{}", REPO.replace('/', "--")));
    // refs/main names the snapshot the last download resolved.
    if let Ok(rev) = std::fs::read_to_string(repo.join("refs/main")) {
        let snap = repo.join("snapshots").join(rev.trim());
        if snap.join(WEIGHTS_FILE).is_file() {
            return Some(snap);
        }
    }
    let mut snaps: Vec<PathBuf> = std::fs::read_dir(repo.join("snapshots"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    snaps.sort();
    snaps.into_iter().find(|s| s.join(WEIGHTS_FILE).is_file())
}

/// The folder holding the official checkpoint, downloading it on first use.
/// `progress` gets one line per file; the download draws hf-hub's progress
/// bar on stderr when it is a terminal.
pub fn official_weights(progress: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    official_weights_with(progress, true)
}

/// [`official_weights`], with hf-hub's download bar on or off (off for a
/// quiet command line).
pub fn official_weights_with(progress: &mut dyn FnMut(&str), bar: bool) -> Result<PathBuf> {
    let cache = cache_dir().ok_or_else(|| {
        Error::Invalid(
            "no HOME or HF_HOME to find the Hugging Face cache; pass --weights PATH".into(),
        )
    })?;
    if let Some(s) = cached_snapshot(&cache) {
        return Ok(s);
    }
    if offline() {
        return Err(Error::Invalid(format!(
            "HF_HUB_OFFLINE is set and {REPO} is not in the Hugging Face cache ({}); pass --weights PATH",
            cache.display()
        )));
    }
    download(&cache, progress, bar)
}

#[cfg(not(feature = "hub"))]
fn download(_cache: &Path, _progress: &mut dyn FnMut(&str), _bar: bool) -> Result<PathBuf> {
    Err(Error::Invalid(format!(
        "{REPO} is not in the Hugging Face cache and this build cannot download it (cargo feature `hub` is off); pass --weights PATH"
    )))
}

#[cfg(feature = "hub")]
fn download(cache: &Path, progress: &mut dyn FnMut(&str), bar: bool) -> Result<PathBuf> {
    progress(&format!(
        "downloading {REPO} ({WEIGHTS_FILE}, 724 MB) into {}",
        cache.display()
    ));
    // From the cache, not `ApiBuilder::new()`: the token file is then the
    // one beside this cache (`$HF_HOME/token`), not the default home's.
    let mut builder =
        hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(cache.to_path_buf()))
            .with_progress(bar);
    if let Some(t) = std::env::var("HF_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        builder = builder.with_token(Some(t.trim().to_string()));
    }
    if let Some(e) = endpoint_from(std::env::var("HF_ENDPOINT").ok().as_deref()) {
        progress(&format!("from HF_ENDPOINT {e}"));
        builder = builder.with_endpoint(e);
    }
    let api = builder.build().map_err(|e| {
        Error::Invalid(format!(
            "cannot set up the Hugging Face download: {e}; pass --weights PATH"
        ))
    })?;
    let repo = api.model(REPO.to_string());
    let weights = repo.get(WEIGHTS_FILE).map_err(|e| {
        Error::Invalid(format!(
            "cannot download {REPO}/{WEIGHTS_FILE} ({e}). Offline? Download it elsewhere (or SegVol_v1.pth from the GitHub README) and pass --weights PATH"
        ))
    })?;
    for f in SIDE_FILES {
        // Optional: the builtin tokenizer and default config stand in.
        if let Err(e) = repo.get(f) {
            progress(&format!(
                "note: {REPO}/{f} not downloaded ({e}); using the built-in default"
            ));
        }
    }
    weights
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| Error::Invalid("downloaded weights have no folder".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_environment_as_huggingface_hub_does() {
        for v in ["1", "true", "YES", " on "] {
            assert!(offline_from(Some(v)), "{v}");
        }
        for v in ["0", "false", "", "no"] {
            assert!(!offline_from(Some(v)), "{v}");
        }
        assert!(!offline_from(None));
        assert_eq!(
            endpoint_from(Some("https://hf-mirror.example/ ")),
            Some("https://hf-mirror.example".into())
        );
        assert_eq!(endpoint_from(Some("  ")), None);
        assert_eq!(endpoint_from(None), None);
    }

    #[test]
    fn the_cache_folder_follows_hf_hub_cache_then_hf_home_then_home() {
        let os = |s: &str| Some(std::ffi::OsString::from(s));
        assert_eq!(
            cache_dir_from(os("/c"), os("/h"), os("/home/u")),
            Some(PathBuf::from("/c"))
        );
        assert_eq!(
            cache_dir_from(None, os("/data/hf"), os("/home/u")),
            Some(PathBuf::from("/data/hf/hub"))
        );
        assert_eq!(
            cache_dir_from(None, None, os("/home/u")),
            Some(PathBuf::from("/home/u/.cache/huggingface/hub"))
        );
        assert_eq!(cache_dir_from(None, None, None), None);
    }

    #[test]
    fn finds_a_cached_snapshot() {
        let root = std::env::temp_dir().join(format!("segvol-hub-{}", std::process::id()));
        let repo = root.join("models--BAAI--SegVol");
        let snap = repo.join("snapshots/abc123");
        std::fs::create_dir_all(&snap).unwrap();
        assert_eq!(cached_snapshot(&root), None);
        std::fs::write(snap.join(WEIGHTS_FILE), b"x").unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123\n").unwrap();
        assert_eq!(cached_snapshot(&root), Some(snap));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
