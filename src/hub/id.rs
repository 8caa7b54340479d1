//! The names of Hub files and why one could not be had: data of [`crate::Error::Hub`],
//! apart from the fetching (the parent module), so that the error type does not depend on it.

use std::fmt;

/// The file a Hub id names when it names no file.
pub const DEFAULT_FILE: &str = "model.safetensors";

/// One file of one repository on the Hub: `owner/name` (the file `model.safetensors`),
/// or `owner/name/file.safetensors`, optionally `@revision` at the end.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HubFile {
    /// `owner/name`, e.g. `timm/resnet50.tv_in1k`.
    pub repo: String,
    /// The file in the repository, e.g. `model.safetensors`.
    pub file: String,
    /// A branch, tag or commit (`main` by default).
    pub revision: String,
}

impl HubFile {
    /// `file` of `repo` at `main`.
    pub fn new(repo: impl Into<String>, file: impl Into<String>) -> HubFile {
        HubFile {
            repo: repo.into(),
            file: file.into(),
            revision: "main".into(),
        }
    }
}

impl fmt::Display for HubFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repo)?;
        if self.file != DEFAULT_FILE {
            write!(f, "/{}", self.file)?;
        }
        if self.revision != "main" {
            write!(f, "@{}", self.revision)?;
        }
        Ok(())
    }
}

/// Why a file could not be had from the Hub ([`crate::Error::Hub`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HubProblem {
    /// Offline mode, and the file is not in the cache.
    OfflineNotCached,
    /// The Hub has no such repository (or it is private or gated and no token gave access).
    RepoNotFound,
    /// The repository exists but has no such file or revision.
    FileNotFound,
    /// The Hub could not be reached, or the transfer failed.
    Unreachable,
    /// The downloaded or cached file does not match the Hub's checksum.
    Corrupt,
    /// The cache folder could not be written.
    Cache,
}

impl fmt::Display for HubProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HubProblem::OfflineNotCached => "offline (HF_HUB_OFFLINE) and not in the cache",
            HubProblem::RepoNotFound => "no such repository (or it is private or gated)",
            HubProblem::FileNotFound => "the repository has no such file or revision",
            HubProblem::Unreachable => "the Hub could not be reached",
            HubProblem::Corrupt => "the file does not match the Hub's checksum",
            HubProblem::Cache => "the cache could not be written",
        })
    }
}
