//! Pretrained backbones from the Hugging Face Hub, without Python.
//!
//! timm publishes torchvision's ImageNet weights on the Hub as safetensors under
//! torchvision's tensor names (`timm/resnet50.tv_in1k`, `timm/resnet18.tv_in1k`,
//! `timm/resnet34.tv_in1k`), which [`load_torchvision`](crate::checkpoint::load_torchvision)
//! reads as they are. [`fetch`] downloads such a file through the `hf-hub` crate into the
//! standard Hugging Face cache (the one Python's `huggingface_hub` uses), with a progress
//! bar, checks it against the checksum the Hub gives for it, and on later calls takes it
//! from the cache without touching the network.
//!
//! [`HubOptions::from_env`] honours the Hub's usual variables:
//!
//! | variable | meaning | default |
//! | --- | --- | --- |
//! | `HF_HOME` | the cache is `$HF_HOME/hub` (the token `$HF_HOME/token`) | `~/.cache/huggingface` |
//! | `HF_ENDPOINT` | the Hub's address | `https://huggingface.co` |
//! | `HF_HUB_OFFLINE` | `1`: the cache only, never the network | off |
//! | `HF_TOKEN` | access token for gated or private repositories | the token file, if any |
//!
//! The weights expect torchvision's ImageNet preprocessing: RGB, scaled to [0, 1],
//! normalised by the ImageNet mean (0.485, 0.456, 0.406) and standard deviation (0.229,
//! 0.224, 0.225); for evaluation the shorter side resized to `size * 256 / 224` and the
//! centre `size x size` cropped. That is what the [`Recipe`](crate::recipe::Recipe) uses
//! for photos, and what a checkpoint records for inference.

pub(crate) mod id;
use crate::error::{Error, Result};
pub use id::{HubFile, HubProblem, DEFAULT_FILE};
use std::path::PathBuf;
use std::str::FromStr;

/// The Hub's address when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// A name part of a Hub id: letters, digits, `-`, `_` and `.`, not starting with `.`.
fn hub_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl FromStr for HubFile {
    type Err = Error;

    /// `owner/name`, `owner/name/path/in/repo.safetensors`, each optionally with
    /// `@revision`; a leading `hf://` is allowed.
    fn from_str(s: &str) -> Result<HubFile> {
        let bad = |why: &str| {
            Error::invalid(
                "Hugging Face Hub id",
                format!("`{s}`: {why} (expected owner/name[/file.safetensors][@revision])"),
            )
        };
        let body = s.strip_prefix("hf://").unwrap_or(s);
        let (body, revision) = match body.rsplit_once('@') {
            Some((b, r)) if hub_name(r) => (b, r.to_string()),
            Some(_) => return Err(bad("the revision after `@` is not a name")),
            None => (body, "main".to_string()),
        };
        let parts: Vec<&str> = body.split('/').collect();
        if parts.len() < 2 || !hub_name(parts[0]) || !hub_name(parts[1]) {
            return Err(bad("not an owner/name pair"));
        }
        let file = if parts.len() == 2 {
            DEFAULT_FILE.to_string()
        } else {
            if !parts[2..].iter().all(|p| hub_name(p)) {
                return Err(bad("the file path has an empty or invalid part"));
            }
            parts[2..].join("/")
        };
        Ok(HubFile {
            repo: format!("{}/{}", parts[0], parts[1]),
            file,
            revision,
        })
    }
}

/// torchvision's ImageNet weights for a backbone preset, as timm publishes them on the Hub
/// (`timm/resnet50.tv_in1k` for `resnet50`); `None` for presets with no such weights
/// (`tiny`, `small`).
pub fn imagenet_weights(model: &str) -> Option<HubFile> {
    match model {
        "resnet18" | "resnet34" | "resnet50" => {
            Some(HubFile::new(format!("timm/{model}.tv_in1k"), DEFAULT_FILE))
        }
        _ => None,
    }
}

/// Where and how [`fetch`] gets files.
#[derive(Clone, Debug, PartialEq)]
pub struct HubOptions {
    /// The Hub's address, e.g. `https://huggingface.co` (no trailing `/`).
    pub endpoint: String,
    /// The Hub cache folder (`$HF_HOME/hub`).
    pub cache_dir: PathBuf,
    /// The cache only: a file not in it is an error, and nothing is downloaded.
    pub offline: bool,
    /// Show a progress bar while downloading.
    pub progress: bool,
    /// Access token (gated or private repositories).
    pub token: Option<String>,
}

/// Whether an environment flag such as `HF_HUB_OFFLINE` is on (`1`, `true`, `yes`, `on`).
#[cfg(not(target_arch = "wasm32"))]
fn env_flag(value: Option<String>) -> bool {
    value.is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

impl HubOptions {
    /// From `HF_HOME`, `HF_ENDPOINT`, `HF_HUB_OFFLINE` and `HF_TOKEN` (see the module
    /// docs), with a progress bar.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_env() -> HubOptions {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let cache = hf_hub::Cache::from_env();
        HubOptions {
            endpoint: var("HF_ENDPOINT")
                .map(|e| e.trim_end_matches('/').to_string())
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()),
            cache_dir: cache.path().clone(),
            offline: env_flag(var("HF_HUB_OFFLINE")),
            progress: true,
            token: var("HF_TOKEN").or_else(|| cache.token()),
        }
    }

    /// In a browser build: nothing to read, and [`fetch`] refuses.
    #[cfg(target_arch = "wasm32")]
    pub fn from_env() -> HubOptions {
        HubOptions::new(DEFAULT_ENDPOINT, PathBuf::new())
    }

    /// `endpoint` with the cache in `cache_dir`, online, no progress bar, no token: what
    /// tests use.
    pub fn new(endpoint: impl Into<String>, cache_dir: impl Into<PathBuf>) -> HubOptions {
        HubOptions {
            endpoint: endpoint.into().trim_end_matches('/').to_string(),
            cache_dir: cache_dir.into(),
            offline: false,
            progress: false,
            token: None,
        }
    }
}

fn hub_error(file: &HubFile, opts: &HubOptions, problem: HubProblem, detail: String) -> Error {
    Error::Hub {
        file: Box::new(file.clone()),
        endpoint: opts.endpoint.clone(),
        problem,
        detail,
    }
}

/// The local path of `file`: from the cache when it is there (no network), else downloaded
/// into it; checked against the Hub's SHA-256 either way. (Not in a browser build.)
#[cfg(not(target_arch = "wasm32"))]
pub fn fetch(file: &HubFile, opts: &HubOptions) -> Result<PathBuf> {
    use hf_hub::{Cache, Repo, RepoType};
    let repo = Repo::with_revision(file.repo.clone(), RepoType::Model, file.revision.clone());
    let cache = Cache::new(opts.cache_dir.clone());
    if let Some(path) = cache.repo(repo.clone()).get(&file.file) {
        verify(file, opts, &path)?;
        return Ok(path);
    }
    if opts.offline {
        return Err(hub_error(
            file,
            opts,
            HubProblem::OfflineNotCached,
            format!("the cache is {}", opts.cache_dir.display()),
        ));
    }
    std::fs::create_dir_all(&opts.cache_dir).map_err(|e| {
        hub_error(
            file,
            opts,
            HubProblem::Cache,
            format!("{}: {e}", opts.cache_dir.display()),
        )
    })?;
    let api = hf_hub::api::sync::ApiBuilder::from_cache(cache)
        .with_endpoint(opts.endpoint.clone())
        .with_progress(opts.progress)
        .with_token(opts.token.clone())
        .with_retries(2)
        .build()
        .map_err(|e| hub_error(file, opts, HubProblem::Unreachable, e.to_string()))?;
    let path = api
        .repo(repo)
        .download(&file.file)
        .map_err(|e| classify(file, opts, e))?;
    verify(file, opts, &path)?;
    Ok(path)
}

/// In a browser build there is no Hub download: the page loads a checkpoint instead.
#[cfg(target_arch = "wasm32")]
pub fn fetch(file: &HubFile, opts: &HubOptions) -> Result<PathBuf> {
    Err(hub_error(
        file,
        opts,
        HubProblem::Unreachable,
        "not available in a browser build".into(),
    ))
}

/// The [`HubProblem`] behind an `hf-hub` error.
#[cfg(not(target_arch = "wasm32"))]
fn classify(file: &HubFile, opts: &HubOptions, e: hf_hub::api::sync::ApiError) -> Error {
    use hf_hub::api::sync::ApiError;
    let status = |e: &ApiError| match e {
        ApiError::RequestError(r) => match r.as_ref() {
            ureq::Error::Status(code, resp) => Some((*code, resp.header("x-error-code"))),
            ureq::Error::Transport(_) => None,
        }
        .map(|(c, x)| (c, x.map(str::to_string))),
        _ => None,
    };
    let problem = match (&e, status(&e)) {
        (_, Some((_, Some(code)))) if code == "RepoNotFound" || code == "GatedRepo" => {
            HubProblem::RepoNotFound
        }
        (_, Some((_, Some(code)))) if code == "EntryNotFound" || code == "RevisionNotFound" => {
            HubProblem::FileNotFound
        }
        (_, Some((401 | 403, _))) => HubProblem::RepoNotFound,
        (_, Some((404, _))) => HubProblem::FileNotFound,
        (ApiError::IoError(_) | ApiError::LockAcquisition(_), _) => HubProblem::Cache,
        _ => HubProblem::Unreachable,
    };
    hub_error(file, opts, problem, e.to_string())
}

/// Check a cached file against the checksum its blob is named by: the cache stores each
/// file once as `blobs/<etag>`, and the Hub's etag of a large (LFS) file is its SHA-256.
/// A file that does not match is removed from the cache, so the next fetch downloads it
/// again.
#[cfg(not(target_arch = "wasm32"))]
fn verify(file: &HubFile, opts: &HubOptions, path: &std::path::Path) -> Result<()> {
    use sha2::{Digest, Sha256};
    let blob = std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
    let etag = blob
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    if etag.len() != 64 || !etag.bytes().all(|b| b.is_ascii_hexdigit()) {
        // A small file kept in git (its etag is a git object id), or a cache without
        // symbolic links: nothing to compare with.
        log::info!(
            "{}: no SHA-256 from the Hub to check it against",
            path.display()
        );
        return Ok(());
    }
    let mut f = std::fs::File::open(&blob).map_err(|e| Error::io(&blob, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io(&blob, e))?;
    let got: String = h
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    if got.eq_ignore_ascii_case(&etag) {
        return Ok(());
    }
    // Remove the bad copy and the name that points at it, so that nothing uses it again.
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(&blob);
    Err(hub_error(
        file,
        opts,
        HubProblem::Corrupt,
        format!("SHA-256 {got}, the Hub says {etag}; the copy was removed from the cache"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_parse_with_and_without_file_and_revision() {
        let f: HubFile = "timm/resnet50.tv_in1k".parse().unwrap();
        assert_eq!(
            f,
            HubFile::new("timm/resnet50.tv_in1k", "model.safetensors")
        );
        assert_eq!(f.to_string(), "timm/resnet50.tv_in1k");
        let f: HubFile = "hf://me/nets/sub/w.safetensors@v2".parse().unwrap();
        assert_eq!(
            (f.repo.as_str(), f.file.as_str(), f.revision.as_str()),
            ("me/nets", "sub/w.safetensors", "v2")
        );
        assert_eq!(f.to_string(), "me/nets/sub/w.safetensors@v2");
        for bad in [
            "resnet50",
            "/abs/path",
            "a//b",
            "../x/y",
            "a/b@",
            "a b/c",
            "",
        ] {
            assert!(bad.parse::<HubFile>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn imagenet_weights_exist_for_the_resnets_only() {
        assert_eq!(
            imagenet_weights("resnet50").unwrap().repo,
            "timm/resnet50.tv_in1k"
        );
        assert!(imagenet_weights("resnet18").is_some());
        assert!(imagenet_weights("tiny").is_none());
        assert!(imagenet_weights("small").is_none());
    }

    #[test]
    #[cfg(not(target_arch = "wasm32"))]
    fn offline_flag_values() {
        for (v, on) in [("1", true), ("TRUE", true), ("yes", true), ("0", false)] {
            assert_eq!(env_flag(Some(v.into())), on, "{v}");
        }
        assert!(!env_flag(None));
    }
}
