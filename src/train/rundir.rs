//! Where a run writes, and how runs keep out of each other's way (`RunDir`).
//!
//! A run never replaces files it did not write itself unless asked to:
//!
//! - [`OutDir::New`] (the default, inside `runs/`) gives every fresh run a folder of its own,
//!   `run-1`, `run-2`, ...: one more than the highest number already there, made with
//!   `create_dir`, so two runs started at the same moment never share one;
//! - [`OutDir::At`] names a folder: refused when it holds another run's files
//!   ([`RUN_FILES`]) unless the run was asked to overwrite them
//!   ([`RunOptions::overwrite`](super::RunOptions::overwrite)); a run resumed from the
//!   folder's own `last.safetensors` continues there;
//! - a lock file, [`LOCK_FILE`], keeps a second run out of a folder while a run writes to
//!   it. It is an advisory lock of the operating system (`flock` on unix, `LockFileEx` on
//!   Windows), which dies with its process: a lock left by a killed run is recognised and
//!   taken over. The file records who holds it ([`LockHolder`]), so a refused run can name
//!   the other process.

pub use super::lockholder::{LockHolder, LOCK_FILE};
use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The checkpoint a run writes in its folder.
pub const CHECKPOINT_FILE: &str = "last.safetensors";

/// The files a run writes in its folder: a folder holding any of them holds a run.
pub const RUN_FILES: [&str; 3] = [CHECKPOINT_FILE, "metrics.csv", "metrics.png"];

/// The name of [`OutDir::New`]'s folders: `run-` and a number.
pub(crate) const NEW_FOLDER_PREFIX: &str = "run-";

/// Where a run writes its checkpoint (`last.safetensors`), `metrics.csv` and `metrics.png`.
///
/// Converts from a path (`"runs/mine".into()`): [`OutDir::At`] that folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutDir {
    /// A new folder inside this one, made for this run alone: `run-1`, `run-2`, ... (one
    /// more than the highest number there). A run resumed from a folder's
    /// `last.safetensors` continues in that folder instead.
    New(PathBuf),
    /// This folder, made if missing. A folder that holds another run's files is refused
    /// unless the run may overwrite them; a run resumed from the folder's own
    /// `last.safetensors` continues there.
    At(PathBuf),
}

impl Default for OutDir {
    /// A new folder inside `runs/`.
    fn default() -> Self {
        OutDir::New(PathBuf::from("runs"))
    }
}

impl From<PathBuf> for OutDir {
    fn from(p: PathBuf) -> Self {
        OutDir::At(p)
    }
}

impl From<&Path> for OutDir {
    fn from(p: &Path) -> Self {
        OutDir::At(p.to_path_buf())
    }
}

impl From<&PathBuf> for OutDir {
    fn from(p: &PathBuf) -> Self {
        OutDir::At(p.clone())
    }
}

impl From<&str> for OutDir {
    fn from(p: &str) -> Self {
        OutDir::At(PathBuf::from(p))
    }
}

impl From<String> for OutDir {
    fn from(p: String) -> Self {
        OutDir::At(PathBuf::from(p))
    }
}

/// The folder of a run, held for the run's life: made or checked by [`RunDir::open`],
/// locked against other runs until dropped.
#[derive(Debug)]
pub(crate) struct RunDir {
    path: PathBuf,
    lock: Option<RunLock>,
    /// This run made the folder (removed on drop if the run wrote nothing).
    created: bool,
    /// The run continues the one whose files are in the folder (resumed from its checkpoint).
    continues: bool,
    /// Files of the run being overwritten, removed once this run writes its first checkpoint
    /// (which replaces the old one).
    replaced: Vec<PathBuf>,
    notes: Vec<String>,
}

impl RunDir {
    /// The folder for a fresh run (`resume` is `None`) or for a run resumed from the
    /// checkpoint `resume`, made and locked: see [`OutDir`]. `overwrite` lets the run replace
    /// the files of another run in an [`OutDir::At`] folder (they stay until this run writes
    /// its first checkpoint; a live run's folder is refused all the same).
    ///
    /// Errors: [`Error::RunExists`] for a folder holding another run's files,
    /// [`Error::RunLocked`] for a folder a live run is writing to, [`Error::Io`] naming the
    /// folder that could not be made or read.
    pub fn open(out: &OutDir, resume: Option<&Path>, overwrite: bool) -> Result<RunDir> {
        // A resumed run continues in its checkpoint's folder unless told otherwise.
        let own_folder = resume
            .filter(|ck| ck.file_name() == Some(std::ffi::OsStr::new(CHECKPOINT_FILE)))
            .map(|ck| match ck.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            });
        let (path, created) = match (out, own_folder) {
            (OutDir::New(_), Some(dir)) => (dir, false),
            (OutDir::New(root), None) => (new_folder(root)?, true),
            (OutDir::At(dir), _) => {
                let existed = dir.is_dir();
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                (dir.clone(), !existed)
            }
        };
        let mut run_dir = RunDir {
            path,
            lock: None,
            created,
            continues: false,
            replaced: Vec::new(),
            notes: Vec::new(),
        };
        let (lock, note) = RunLock::acquire(&run_dir.path)?;
        run_dir.lock = Some(lock);
        run_dir.notes.extend(note);
        let found = run_files(&run_dir.path)?;
        if found.is_empty() {
            return Ok(run_dir);
        }
        let checkpoint = run_dir.path.join(CHECKPOINT_FILE);
        if resume.is_some_and(|ck| same_file(ck, &checkpoint)) {
            run_dir.continues = true;
            return Ok(run_dir);
        }
        if !overwrite {
            return Err(Error::RunExists {
                dir: run_dir.path.clone(),
                checkpoint: checkpoint.is_file().then_some(checkpoint),
                files: found,
            });
        }
        run_dir.notes.push(format!(
            "overwriting the run in {} ({}): its files are replaced once this run writes its \
             first checkpoint",
            run_dir.path.display(),
            found.join(", ")
        ));
        run_dir.replaced = found
            .iter()
            .filter(|f| *f != CHECKPOINT_FILE)
            .map(|f| run_dir.path.join(f))
            .collect();
        Ok(run_dir)
    }

    /// What a rank other than 0 of a data-parallel run holds: no lock, nothing made or
    /// written. Its path is the resumed checkpoint's folder or the configured one (rank 0
    /// chooses the run's `run-N`; the other ranks do not learn it).
    pub(crate) fn follower(out: &OutDir, resume: Option<&Path>) -> RunDir {
        let path = match (resume.and_then(|ck| ck.parent()), out) {
            (Some(dir), OutDir::New(_)) => dir.to_path_buf(),
            (_, OutDir::New(root)) | (_, OutDir::At(root)) => root.clone(),
        };
        RunDir {
            path,
            lock: None,
            created: false,
            continues: false,
            replaced: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The checkpoint the run writes: `last.safetensors` in the folder.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.path.join(CHECKPOINT_FILE)
    }

    /// Whether the run continues the one whose files are in the folder (resumed from the
    /// folder's own checkpoint), so its `metrics.csv` is the run's own.
    pub fn continues(&self) -> bool {
        self.continues
    }

    /// Notes for the user from opening the folder (a stale lock taken over, a run being
    /// overwritten); each is returned once.
    pub(crate) fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    /// The run has written its first checkpoint: the other files of the run it overwrites
    /// (`metrics.csv`, `metrics.png`) go now, so the folder never mixes two runs' files.
    pub(crate) fn checkpoint_written(&mut self) -> Result<()> {
        for f in std::mem::take(&mut self.replaced) {
            match std::fs::remove_file(&f) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(&f, e));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        drop(self.lock.take());
        if self.created {
            // Only succeeds on an empty folder: a run that failed before writing anything
            // leaves no folder behind.
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}

/// The [`RUN_FILES`] in `dir`.
fn run_files(dir: &Path) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for f in RUN_FILES {
        match std::fs::symlink_metadata(dir.join(f)) {
            Ok(_) => found.push(f.to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(dir.join(f), e)),
        }
    }
    Ok(found)
}

/// Whether `a` and `b` name the same existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The number of a folder named `run-N` (digits only), else `None`.
pub(crate) fn run_number(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(NEW_FOLDER_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Make a new `run-N` folder in `root` (made if missing): one more than the highest number
/// there, or the next free one when another run takes that at the same moment.
pub(crate) fn new_folder(root: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    let mut highest = 0;
    for e in std::fs::read_dir(root).map_err(|e| Error::io(root, e))? {
        let e = e.map_err(|e| Error::io(root, e))?;
        if let Some(n) = e.file_name().to_str().and_then(run_number) {
            highest = highest.max(n);
        }
    }
    let mut n = highest.saturating_add(1);
    for _ in 0..1000 {
        let dir = root.join(format!("{NEW_FOLDER_PREFIX}{n}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n = n.saturating_add(1),
            Err(e) => return Err(Error::io(&dir, e)),
        }
    }
    Err(Error::io(
        root,
        std::io::Error::other(format!(
            "no free {NEW_FOLDER_PREFIX}N folder after 1000 tries from {NEW_FOLDER_PREFIX}{}",
            highest.saturating_add(1)
        )),
    ))
}

/// A run folder's lock: [`LOCK_FILE`], locked by the operating system and holding this
/// process's [`LockHolder`] record; released (and the file removed) on drop.
#[derive(Debug)]
struct RunLock {
    /// Held open for the run's life: closing it releases the lock.
    #[cfg_attr(unix, allow(dead_code))]
    file: File,
    /// Removed on release (unix).
    #[cfg_attr(not(unix), allow(dead_code))]
    path: PathBuf,
}

impl RunLock {
    /// Lock `dir`, or fail with [`Error::RunLocked`] naming the process that holds it. A lock
    /// file that nobody holds but that records a process was left by a run that ended
    /// without releasing it: it is taken over, with a note saying so.
    fn acquire(dir: &Path) -> Result<(RunLock, Option<String>)> {
        let path = dir.join(LOCK_FILE);
        let mut warning = None;
        // A few tries: a run releasing the lock removes the file between our open and lock.
        for _ in 0..20 {
            let mut file = match OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
            {
                Ok(f) => f,
                // The folder was removed by a run that made it and ended: make it again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                    continue;
                }
                Err(e) => return Err(Error::io(&path, e)),
            };
            match sys::try_lock(&file) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(Error::RunLocked {
                        dir: dir.to_path_buf(),
                        holder: read_holder(&path),
                    })
                }
                Err(e) => {
                    warning = Some(format!(
                        "warning: {} cannot be locked ({e}): nothing keeps another run out of \
                         {} while this one writes there",
                        path.display(),
                        dir.display()
                    ));
                }
            }
            if !sys::still_named(&file, &path) {
                continue;
            }
            let mut previous = String::new();
            let _ = file.read_to_string(&mut previous);
            let record = serde_json::to_string(&LockHolder::this_process())
                .map_err(|e| Error::io(&path, std::io::Error::other(e)))?;
            file.set_len(0)
                .and_then(|()| file.rewind())
                .and_then(|()| file.write_all(record.as_bytes()))
                .and_then(|()| file.flush())
                .map_err(|e| Error::io(&path, e))?;
            let lock = RunLock { file, path };
            let note = match serde_json::from_str::<LockHolder>(previous.trim()) {
                Ok(h) if warning.is_none() && h.pid.is_some() => Some(format!(
                    "{}: took over the lock left by {h}, which ended without releasing it \
                     (killed or crashed)",
                    dir.display()
                )),
                _ => warning,
            };
            return Ok((lock, note));
        }
        Err(Error::io(
            &path,
            std::io::Error::other("the lock file kept changing while it was being locked"),
        ))
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Removed while still locked, so the next run finds no file (a file found unlocked
        // but holding a record is a killed run's). Where an open file cannot always be
        // removed (Windows), emptied instead.
        #[cfg(unix)]
        let _ = std::fs::remove_file(&self.path);
        #[cfg(not(unix))]
        let _ = self.file.set_len(0);
        // Closing the file (dropping it) releases the lock.
    }
}

/// The record in a lock file someone else holds; it may be being written this very moment,
/// so an empty or partial one is read again a few times.
fn read_holder(path: &Path) -> LockHolder {
    for i in 0..5 {
        if i > 0 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if let Ok(h) = std::fs::read_to_string(path)
            .map_err(|_| ())
            .and_then(|s| serde_json::from_str::<LockHolder>(s.trim()).map_err(|_| ()))
        {
            return h;
        }
    }
    LockHolder::default()
}

#[cfg(any(unix, windows))]
mod sys {
    use std::fs::File;
    use std::path::Path;

    /// Try to take the exclusive lock: `Ok(false)` when another open file holds it.
    pub fn try_lock(file: &File) -> std::io::Result<bool> {
        match fs4::FileExt::try_lock(file) {
            Ok(()) => Ok(true),
            Err(fs4::TryLockError::WouldBlock) => Ok(false),
            Err(fs4::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Whether `path` still names `file` (a run releasing its lock removes the file: a lock
    /// taken on the removed file locks nothing).
    #[cfg(unix)]
    pub fn still_named(file: &File, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }

    /// The file is never removed where it is not unix.
    #[cfg(not(unix))]
    pub fn still_named(_file: &File, path: &Path) -> bool {
        path.exists()
    }
}

/// No file locks on this target (a browser has no file system to write runs to anyway).
#[cfg(not(any(unix, windows)))]
mod sys {
    use std::fs::File;
    use std::path::Path;

    pub fn try_lock(_file: &File) -> std::io::Result<bool> {
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }

    pub fn still_named(_file: &File, path: &Path) -> bool {
        path.exists()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn run_numbers_are_digits_after_the_prefix() {
        assert_eq!(run_number("run-1"), Some(1));
        assert_eq!(run_number("run-0042"), Some(42));
        for bad in [
            "run-", "run-+1", "run--1", "run-1a", "run 1", "default", "Run-1",
        ] {
            assert_eq!(run_number(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_lock_holder_names_its_process() {
        let h = LockHolder {
            pid: Some(1234),
            host: Some("box".into()),
            started: Some(1_700_000_000),
            command: vec!["train".into(), "--out".into(), "runs/x".into()],
        };
        assert_eq!(
            h.to_string(),
            "process 1234 on box, started 2023-11-14T22:13:20Z, running `train --out runs/x`"
        );
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<LockHolder>(&json).unwrap(), h);
        assert!(LockHolder::default().to_string().contains("not recorded"));
    }

    #[test]
    fn new_folders_are_numbered_and_never_shared() {
        let root = tmp();
        std::fs::create_dir(root.path().join("run-7")).unwrap();
        std::fs::create_dir(root.path().join("default")).unwrap();
        let a = RunDir::open(&OutDir::New(root.path().into()), None, false).unwrap();
        assert_eq!(
            a.path(),
            root.path().join("run-8"),
            "after the highest number"
        );
        assert!(a.path().join(LOCK_FILE).is_file(), "locked while alive");
        // Started together, runs get folders of their own.
        let dirs: Vec<RunDir> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| RunDir::open(&OutDir::New(root.path().into()), None, false)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().unwrap())
                .collect()
        });
        let mut paths: Vec<_> = dirs.iter().map(|d| d.path().to_path_buf()).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), 8, "{paths:?}");
        assert!(!paths.contains(&a.path().to_path_buf()));
        // A run that wrote nothing leaves no folder behind; one that did keeps it.
        std::fs::write(a.path().join("metrics.csv"), "x").unwrap();
        drop(dirs);
        drop(a);
        assert_eq!(names(root.path()), ["default", "run-7", "run-8"]);
        assert_eq!(names(&root.path().join("run-8")), ["metrics.csv"]);
    }

    #[test]
    fn a_folder_holding_another_run_is_refused_unless_overwriting() {
        let root = tmp();
        let dir = root.path().join("a");
        let at = OutDir::from(&dir);
        drop(RunDir::open(&at, None, false).unwrap());
        assert!(!dir.exists(), "nothing written: the folder it made is gone");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        drop(RunDir::open(&at, None, false).expect("other files are no run"));
        std::fs::write(dir.join(CHECKPOINT_FILE), "ck").unwrap();
        std::fs::write(dir.join("metrics.csv"), "m").unwrap();
        match RunDir::open(&at, None, false) {
            Err(Error::RunExists {
                dir: d,
                checkpoint,
                files,
            }) => {
                assert_eq!(d, dir);
                assert_eq!(checkpoint, Some(dir.join(CHECKPOINT_FILE)));
                assert_eq!(files, [CHECKPOINT_FILE, "metrics.csv"]);
            }
            other => panic!("{other:?}"),
        }
        let e = RunDir::open(&at, None, false).unwrap_err().to_string();
        assert!(e.contains(&dir.display().to_string()), "{e}");
        // Resuming from another checkpoint would replace it too.
        let other = root.path().join("b");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join(CHECKPOINT_FILE), "ck2").unwrap();
        assert!(matches!(
            RunDir::open(&at, Some(&other.join(CHECKPOINT_FILE)), false),
            Err(Error::RunExists { .. })
        ));
        // Resuming from its own checkpoint continues, there or by default.
        let own = dir.join(CHECKPOINT_FILE);
        let d = RunDir::open(&at, Some(&own), false).unwrap();
        assert!(d.continues());
        drop(d);
        let d = RunDir::open(&OutDir::default(), Some(&own), false).unwrap();
        assert_eq!(d.path(), dir);
        assert!(d.continues());
        drop(d);
        assert_eq!(std::fs::read(&own).unwrap(), b"ck", "untouched");
        // Overwriting: the old files stay until the first checkpoint, then the rest go.
        let mut d = RunDir::open(&at, None, true).unwrap();
        assert!(!d.continues());
        assert!(d.take_notes().iter().any(|n| n.contains("overwriting")));
        assert!(dir.join("metrics.csv").exists());
        std::fs::write(dir.join(CHECKPOINT_FILE), "new").unwrap();
        d.checkpoint_written().unwrap();
        drop(d);
        assert_eq!(names(&dir), [CHECKPOINT_FILE, "notes.txt"]);
    }

    #[test]
    fn a_held_lock_refuses_a_second_run_and_names_the_process() {
        let root = tmp();
        let at = OutDir::from(root.path());
        let first = RunDir::open(&at, None, false).unwrap();
        for overwrite in [false, true] {
            match RunDir::open(&at, None, overwrite) {
                Err(Error::RunLocked { dir, holder }) => {
                    assert_eq!(dir, root.path());
                    assert_eq!(holder.pid, Some(std::process::id()));
                    assert!(!holder.command.is_empty());
                    let e = Error::RunLocked { dir, holder }.to_string();
                    assert!(
                        e.contains(&format!("process {}", std::process::id())),
                        "{e}"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        drop(first);
        assert!(
            !root.path().join(LOCK_FILE).exists(),
            "released and removed"
        );
        let mut again = RunDir::open(&at, None, false).unwrap();
        assert!(
            again.take_notes().is_empty(),
            "a released lock is no stale one"
        );
    }

    #[test]
    fn a_lock_left_by_a_killed_run_is_taken_over() {
        let root = tmp();
        let stale = LockHolder {
            pid: Some(4_000_000),
            host: Some("gone".into()),
            started: Some(1_700_000_000),
            command: vec!["train".into()],
        };
        let lock = root.path().join(LOCK_FILE);
        std::fs::write(&lock, serde_json::to_string(&stale).unwrap()).unwrap();
        let mut d = RunDir::open(&OutDir::from(root.path()), None, false).unwrap();
        let notes = d.take_notes();
        assert!(
            notes.len() == 1
                && notes[0].contains("process 4000000")
                && notes[0].contains("took over"),
            "{notes:?}"
        );
        let now: LockHolder =
            serde_json::from_str(&std::fs::read_to_string(&lock).unwrap()).unwrap();
        assert_eq!(
            now.pid,
            Some(std::process::id()),
            "the record is this run's now"
        );
    }
}
