//! Shared by the AFL++ targets: each writes the fuzzer's bytes to a file of its own (in
//! /dev/shm where it exists), runs one of finegrain's readers on it, and turns what would be
//! a silent failure into a crash that AFL++ records: an error that does not name the file.
//! Panics, hangs and aborts are crashes by themselves.

use std::path::{Path, PathBuf};

/// A per-process scratch folder.
pub fn scratch() -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let d = base.join(format!("finegrain-afl-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("scratch folder");
    d
}

/// Write `data` to `path`, then run `read` on it: any error must name `path`.
pub fn check<T>(path: &Path, data: &[u8], read: impl FnOnce(&Path) -> finegrain::Result<T>) {
    std::fs::write(path, data).expect("scratch file");
    if let Err(e) = read(path) {
        let msg = e.to_string();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        assert!(msg.contains(name), "error does not name {}: {msg}", path.display());
    }
}
