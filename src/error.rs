//! The crate's one error type. Library code returns [`Result`]; every variant names the
//! thing (file, flag, tensor, shader, adapter) that was wrong and what was expected.

use std::path::PathBuf;

/// Everything that can go wrong in finegrain.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The stop-on-signal handlers could not be installed.
    #[error("signal handling: {message}")]
    Signal { message: String },

    /// No usable GPU adapter (not even a software one).
    #[error(
        "no GPU adapter found ({detail}).\n  Without a GPU, finegrain runs on Mesa's software \
         Vulkan driver, lavapipe. WGPU_BACKEND (vulkan, metal, dx12, gl) or FINEGRAIN_ADAPTER \
         (part of an adapter name) choose among the adapters there are."
    )]
    NoAdapter { detail: String },

    /// The only adapter found is a software OpenGL one (llvmpipe) and GL was not asked for.
    #[error(
        "the only GPU adapter found is {adapter}, a software OpenGL rasteriser, which \
         finegrain does not use unless asked to: without a GPU, finegrain runs on (and is \
         tested on) Mesa's software Vulkan driver, lavapipe.\n  To use OpenGL anyway, ask \
         for it: WGPU_BACKEND=gl (or GL in GpuOptions::backends)."
    )]
    SoftwareGl { adapter: String },

    /// The adapter refused to create a device.
    #[error("could not create a device on adapter `{adapter}`: {message}")]
    RequestDevice { adapter: String, message: String },

    /// A WGSL shader failed to parse or validate.
    #[error("shader `{shader}` is invalid:\n{message}")]
    Shader { shader: String, message: String },

    /// A wgpu validation or out-of-memory error, or a failed map/poll.
    #[error("GPU error in {context}: {message}")]
    Gpu { context: String, message: String },

    /// A tensor has the wrong shape or element type: `context` names who checked it (a
    /// launcher and the tensor's role in it, e.g. `batchnorm_forward_train gamma`),
    /// `tensor` is its label, `expected` says what was needed (`shape [3]`, `at least 30
    /// elements`, `U32 elements`).
    #[error("{context}: tensor `{tensor}` needs {expected}, found shape {found:?} ({dtype})")]
    ShapeMismatch {
        context: String,
        tensor: String,
        expected: String,
        found: Vec<usize>,
        dtype: String,
    },

    /// A configuration value, argument or input is out of range: `setting` names what (a
    /// field, flag or role: `batch`, `lr`, `tensor`, `dispatch`, ...), `subject` which one
    /// when there are many (a tensor's name, a file), `message` what is wrong and what was
    /// expected.
    #[error(
        "invalid {setting}{}: {message}",
        subject.as_ref().map(|s| format!(" {s}")).unwrap_or_default()
    )]
    Invalid {
        setting: &'static str,
        subject: Option<String>,
        message: String,
    },

    /// The GPU device was lost (driver reset, GPU removed or hung, device destroyed). Nothing
    /// more can run on it; a run's last checkpoint is intact, and a new process can resume
    /// from it.
    #[error(
        "the GPU device was lost while {context}: {reason}. Nothing more can run on it; the \
         last checkpoint written is intact"
    )]
    DeviceLost { context: String, reason: String },

    /// A network does not fit the adapter (a buffer over its binding limit, or out of memory).
    #[error("{what} does not fit this GPU: {detail}")]
    DoesNotFit { what: String, detail: String },

    /// A tensor is too large for one storage binding on this adapter.
    #[error(
        "tensor `{tensor}` needs {bytes} bytes, more than this adapter's storage binding limit of \
         {limit} bytes; use a smaller batch or input size"
    )]
    TooLarge {
        tensor: String,
        bytes: u64,
        limit: u64,
    },

    /// An I/O error on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file exists but its contents are not what was expected.
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },

    /// A file could not be had from the Hugging Face Hub ([`crate::hub::fetch`]).
    #[error(
        "`{}` of {} (revision {}) from {endpoint}: {problem}: {detail}",
        file.file, file.repo, file.revision
    )]
    Hub {
        /// The repository, file and revision asked for.
        file: Box<crate::hub::id::HubFile>,
        /// The Hub's address.
        endpoint: String,
        problem: crate::hub::id::HubProblem,
        detail: String,
    },

    /// Training diverged: the loss of optimizer step `step` (at learning rate `lr`) was
    /// not finite for `images` of its `of` images.
    #[error(
        "training diverged: non-finite loss at step {step} ({images} of {of} images; learning \
         rate {lr:.3e}). Lower the learning rate or check the data; the last good checkpoint is \
         kept."
    )]
    NonFinite {
        step: u64,
        lr: f32,
        images: usize,
        of: usize,
    },

    /// A checkpoint was not written because the network holds a non-finite value (training
    /// diverged): `tensor` names it, `problem` says what is wrong with it. The previous
    /// checkpoint at `path` is kept.
    #[error(
        "not saving {}: {problem} (training diverged); the previous checkpoint is kept",
        path.display()
    )]
    NotSaved {
        path: PathBuf,
        tensor: String,
        problem: String,
    },

    /// A run's output folder holds another run's files (`files`, among
    /// [`RUN_FILES`](crate::train::RUN_FILES); `checkpoint` is its checkpoint, if it
    /// has one), which this run would replace: a fresh run, or one resumed from another
    /// checkpoint, without [`RunOptions::overwrite`](crate::train::RunOptions::overwrite).
    #[error(
        "{} holds another run ({}): a run does not replace another's files. Resume that run \
         from its checkpoint, choose another folder, or ask to overwrite it",
        dir.display(),
        files.join(", ")
    )]
    RunExists {
        dir: PathBuf,
        checkpoint: Option<PathBuf>,
        files: Vec<String>,
    },

    /// Another live run is writing to a run's output folder (it holds the folder's lock).
    #[error(
        "{} is in use by another run: {holder} holds its lock ({}); wait for that run to end \
         or choose another folder",
        dir.display(),
        dir.join(crate::train::lockholder::LOCK_FILE).display()
    )]
    RunLocked {
        dir: PathBuf,
        holder: crate::train::lockholder::LockHolder,
    },
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::Invalid`] of a setting.
    pub fn invalid(setting: &'static str, message: impl Into<String>) -> Self {
        Error::Invalid {
            setting,
            subject: None,
            message: message.into(),
        }
    }

    /// Shorthand for [`Error::Invalid`] of one `subject` of a kind (a tensor, a file).
    pub fn invalid_in(
        setting: &'static str,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Invalid {
            setting,
            subject: Some(subject.into()),
            message: message.into(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Shorthand for [`Error::Format`].
    pub fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            message: message.into(),
        }
    }
}
