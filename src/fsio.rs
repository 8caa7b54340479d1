//! Writing files so that a kill at any moment leaves either the previous file or the new one,
//! never half of one: every file finegrain writes (checkpoints, exports, PNGs, CSV reports,
//! IDX files) goes through `write_atomic`.
//!
//! The bytes go to a temporary file in the target's own folder (`tempfile`), which is synced
//! to disk and then renamed over the target; on unix the folder is synced too, so the rename
//! itself survives a power cut. A failed write removes its temporary file.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::Path;

/// Write `bytes` to `path` atomically (temporary file in the same folder, `sync_all`,
/// rename, folder sync on unix). The parent folder must exist (a mistyped folder is an
/// error, not a new folder); an existing file is replaced whole. New files get the usual
/// `0666 & !umask` permissions. Errors name the file (or the folder) that failed.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// `write_atomic` with the contents produced by `write` into a buffered writer.
pub(crate) fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let name = path.file_name().ok_or_else(|| {
        Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
        )
    })?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // The mode passed to open(2), so the umask still applies (tempfile's own is 0600).
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let tmp = builder.tempfile_in(dir).map_err(|e| {
        let why = format!("cannot create a file in the folder {}: {e}", dir.display());
        Error::io(path, std::io::Error::new(e.kind(), why))
    })?;
    let mut w = std::io::BufWriter::new(tmp);
    write(&mut w).map_err(|e| Error::io(path, e))?;
    #[cfg(feature = "testing")]
    if let Some(e) = fault::injected(path) {
        return Err(Error::io(path, e));
    }
    let tmp = w
        .into_inner()
        .map_err(|e| Error::io(path, e.into_error()))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    // On failure the temporary file is handed back inside the error and removed on drop.
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    sync_dir(dir)
}

/// Remove the temporary files that `write_atomic` left next to `path` when the process was
/// killed in the middle of a write (`.NAME.XXXXXX.tmp`); returns how many were removed.
/// Only call this when no other process writes `path`.
pub(crate) fn remove_stale_temporaries(path: &Path) -> Result<usize> {
    let (Some(name), Some(dir)) = (path.file_name(), path.parent()) else {
        return Ok(0);
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    let (prefix, mut removed) = (prefix.to_string_lossy().to_string(), 0);
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().to_string();
        if n.starts_with(&prefix) && n.ends_with(".tmp") && e.path().is_file() {
            std::fs::remove_file(e.path()).map_err(|err| Error::io(e.path(), err))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Injected write failures, for testing what a full disk does to a run (feature `testing`).
#[cfg(feature = "testing")]
pub mod fault {
    use std::cell::RefCell;
    use std::path::Path;

    thread_local! {
        /// (file name, writes of it to let through before failing), for this thread's
        /// writes only: other tests of the same binary, on their own threads, write as usual.
        static PLAN: RefCell<Option<(String, usize)>> = const { RefCell::new(None) };
    }

    /// Let `ok` more writes of files named `name` by this thread succeed, then fail every
    /// later one with "no space left on device" after its bytes reached the temporary file
    /// (the moment a full disk fails a write). A run writes its checkpoints and metrics on
    /// the thread that runs it.
    pub fn fail_writes_of(name: &str, ok: usize) {
        PLAN.with(|p| *p.borrow_mut() = Some((name.to_string(), ok)));
    }

    /// Stop injecting failures on this thread.
    pub fn clear() {
        PLAN.with(|p| *p.borrow_mut() = None);
    }

    pub(super) fn injected(path: &Path) -> Option<std::io::Error> {
        PLAN.with(|p| {
            let mut plan = p.borrow_mut();
            let (name, ok) = plan.as_mut()?;
            if path.file_name()? != std::ffi::OsStr::new(name.as_str()) {
                return None;
            }
            if *ok > 0 {
                *ok -= 1;
                return None;
            }
            Some(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "No space left on device (injected by fsio::fault)",
            ))
        })
    }
}

/// Make a rename inside `dir` durable (unix); a filesystem that cannot sync folders is not
/// an error.
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let d = std::fs::File::open(dir).map_err(|e| Error::io(dir, e))?;
        if let Err(e) = d.sync_all() {
            if !matches!(
                e.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::Unsupported
            ) {
                return Err(Error::io(dir, e));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Write `rows` as CSV to `path` atomically (`write_atomic`). Rows that are structs get a
/// header line from their field names; tuples and sequences (`Vec<String>`, ...) are written
/// as plain records (give a header as the first row). Fields holding a comma, quote or
/// newline are quoted. An error names the file and the row that failed.
pub fn write_csv<T: serde::Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    let mut out = csv::Writer::from_writer(Vec::new());
    for (i, row) in rows.iter().enumerate() {
        out.serialize(row).map_err(|e| {
            Error::invalid_in("CSV", path.display().to_string(), format!("row {i}: {e}"))
        })?;
    }
    let bytes = out
        .into_inner()
        .map_err(|e| Error::invalid_in("CSV", path.display().to_string(), e.to_string()))?;
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_file_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/x.bin");
        let e = write_atomic(&p, b"first").unwrap_err().to_string();
        assert!(e.contains("x.bin") && e.contains("sub"), "{e}");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second version").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second version");
        let left: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("x.bin")], "{left:?}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_ne!(mode & 0o044, 0, "mode {mode:o}: not readable by others");
        }
    }

    #[test]
    fn failed_write_keeps_the_old_file_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keep.txt");
        write_atomic(&p, b"old").unwrap();
        let e = write_atomic_with(&p, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("disk on fire"))
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("keep.txt") && e.contains("disk on fire"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // A folder where the file should be: the error names the path.
        let e = write_atomic(dir.path(), b"x").unwrap_err().to_string();
        assert!(e.contains(&dir.path().display().to_string()), "{e}");
    }

    #[test]
    fn csv_rows_get_headers_and_quoting() {
        #[derive(serde::Serialize)]
        struct Row<'a> {
            class: usize,
            name: &'a str,
            top1: f64,
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        write_csv(
            &p,
            &[
                Row {
                    class: 0,
                    name: "plain",
                    top1: 0.5,
                },
                Row {
                    class: 1,
                    name: "a, \"b\"",
                    top1: 1.0,
                },
            ],
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "class,name,top1\n0,plain,0.5\n1,\"a, \"\"b\"\"\",1.0\n"
        );
        let rows = vec![
            vec!["true\\predicted".to_string(), "x,y".into()],
            vec!["x,y".into(), "3".into()],
        ];
        write_csv(&p, &rows).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "true\\predicted,\"x,y\"\n\"x,y\",3\n"
        );
    }
}
