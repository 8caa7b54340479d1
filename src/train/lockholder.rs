//! Who holds a run folder's lock, as the lock file records it: data of
//! [`crate::Error::RunLocked`], apart from the locking itself ([`super::rundir`]), so that
//! the error type does not depend on it.

/// The lock file in a run's folder while the run is alive.
pub const LOCK_FILE: &str = ".lock";

/// The process that holds (or held) a run folder's lock, as its lock file records it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LockHolder {
    /// Process id.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Host name, where it could be read.
    #[serde(default)]
    pub host: Option<String>,
    /// When it took the lock, in seconds since the Unix epoch.
    #[serde(default)]
    pub started: Option<u64>,
    /// Its command line.
    #[serde(default)]
    pub command: Vec<String>,
}

impl LockHolder {
    /// This process, now.
    pub fn this_process() -> LockHolder {
        LockHolder {
            pid: Some(std::process::id()),
            host: hostname(),
            started: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs()),
            command: std::env::args_os()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
        }
    }
}

impl std::fmt::Display for LockHolder {
    /// For example: process 1234 on host, started 2026-12-04T03:20:11Z, running
    /// `train --out runs/x`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "process {pid}")?,
            None => return write!(f, "a process that has not recorded itself in the lock file"),
        }
        if let Some(h) = &self.host {
            write!(f, " on {h}")?;
        }
        if let Some(s) = self.started {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(s);
            write!(f, ", started {}", humantime::format_rfc3339_seconds(at))?;
        }
        if !self.command.is_empty() {
            write!(f, ", running `{}`", self.command.join(" "))?;
        }
        Ok(())
    }
}

/// The machine's host name, where it can be read.
fn hostname() -> Option<String> {
    #[cfg(target_os = "linux")]
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            return Some(h.to_string());
        }
    }
    ["HOSTNAME", "COMPUTERNAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .map(|h| h.trim().to_string())
        .find(|h| !h.is_empty())
}
