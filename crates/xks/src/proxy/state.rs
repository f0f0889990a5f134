//! The proxy's key state file (`keys.json` in its directory): for each
//! external key id, whether it is enabled and which key access
//! justifications (`nuageAccessReason`) it accepts.
//!
//! The file is the proxy's list of served keys: a key in the token but not
//! in the file is not found, so other objects on a shared token are never
//! reachable through XKS. It is written whole and atomically (a temporary
//! file, fsynced, renamed over the old one, then the directory fsynced) by
//! the CLI under an advisory lock, and the running proxy notices a new file
//! by its identity (device, inode, length, modification time) on each
//! request, so `key disable` takes effect on the very next request with no
//! restart. A file that cannot be read or parsed fails every key operation
//! closed (`InternalException`) rather than falling back to anything.

use crate::wire;
use nuage_base::limits::{XKS_KEYS_MAX, XKS_STATE_FILE_BYTES_MAX};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// The reasons a new key accepts: the tenant's own accesses only.
pub const DEFAULT_ALLOWED_REASONS: [&str; 1] = ["CUSTOMER_INITIATED_ACCESS"];
/// The file format's version.
const FORMAT_VERSION: u32 = 1;

/// One key's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyState {
    /// A disabled key answers `metadata` (status `DISABLED`) and refuses
    /// `encrypt` and `decrypt` with `InvalidStateException`.
    pub enabled: bool,
    /// Wire names of the access reasons this key accepts.
    pub allowed_reasons: Vec<String>,
}

impl Default for KeyState {
    fn default() -> Self {
        Self {
            enabled: true,
            allowed_reasons: DEFAULT_ALLOWED_REASONS.map(str::to_owned).to_vec(),
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyStates {
    pub version: u32,
    pub keys: BTreeMap<String, KeyState>,
}

impl Default for KeyStates {
    fn default() -> Self {
        Self {
            version: FORMAT_VERSION,
            keys: BTreeMap::new(),
        }
    }
}

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
}

impl StateError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}

impl KeyStates {
    /// Reads the file; an absent file is an empty list.
    ///
    /// # Errors
    /// An unreadable, oversized or invalid file.
    pub fn load(path: &Path) -> Result<Self, StateError> {
        match std::fs::File::open(path) {
            Ok(file) => Self::read(path, file),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(error) => Err(StateError::io(path, error)),
        }
    }

    fn read(path: &Path, file: std::fs::File) -> Result<Self, StateError> {
        let mut text = String::new();
        // One byte more than allowed, to tell "at the limit" from "over".
        file.take(XKS_STATE_FILE_BYTES_MAX + 1)
            .read_to_string(&mut text)
            .map_err(|e| StateError::io(path, e))?;
        let invalid = |detail: String| StateError::Invalid {
            path: path.to_owned(),
            detail,
        };
        if text.len() as u64 > XKS_STATE_FILE_BYTES_MAX {
            return Err(invalid(format!(
                "larger than {XKS_STATE_FILE_BYTES_MAX} bytes"
            )));
        }
        let states: Self = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        states.validate().map_err(invalid)?;
        Ok(states)
    }

    /// Checks the version, the number of keys and every key id.
    ///
    /// # Errors
    /// A sentence saying what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.version != FORMAT_VERSION {
            return Err(format!(
                "format version {} (this proxy reads {FORMAT_VERSION})",
                self.version
            ));
        }
        if self.keys.len() > XKS_KEYS_MAX {
            return Err(format!("more than {XKS_KEYS_MAX} keys"));
        }
        for id in self.keys.keys() {
            wire::check_key_id(id).map_err(|why| format!("key `{id}`: {why}"))?;
        }
        Ok(())
    }

    /// Writes the file atomically: readers see the old file or the new one,
    /// never a mix, and after a crash the same.
    ///
    /// # Errors
    /// An invalid state, or any I/O failure.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        self.validate().map_err(|detail| StateError::Invalid {
            path: path.to_owned(),
            detail,
        })?;
        let mut text = serde_json::to_string_pretty(self).map_err(|e| StateError::Invalid {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
        text.push('\n');
        let directory = path.parent().unwrap_or(Path::new("."));
        let temporary = path.with_extension("json.tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(|e| StateError::io(&temporary, e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| StateError::io(&temporary, e))?;
        drop(file);
        std::fs::rename(&temporary, path).map_err(|e| StateError::io(path, e))?;
        std::fs::File::open(directory)
            .and_then(|d| d.sync_all())
            .map_err(|e| StateError::io(directory, e))
    }

    /// Read-modify-write under an exclusive lock on `PATH.lock`, so two CLI
    /// commands at once cannot lose each other's change. The proxy only
    /// reads, and needs no lock: it sees whole files.
    ///
    /// # Errors
    /// What `change` returns, or any failure to read, lock or write.
    pub fn update<T, E>(path: &Path, change: impl FnOnce(&mut Self) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StateError>,
    {
        let lock_path = path.with_extension("json.lock");
        let lock = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| StateError::io(&lock_path, e))?;
        lock.lock().map_err(|e| StateError::io(&lock_path, e))?;
        let mut states = Self::load(path)?;
        let result = change(&mut states)?;
        states.save(path)?;
        // The lock is released when `lock` is dropped (closed).
        Ok(result)
    }
}

/// What identifies one version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    device: u64,
    inode: u64,
    length: u64,
    modified_ns: i64,
}

/// The running proxy's view of the file, reread when it changes.
#[derive(Debug)]
pub(crate) struct StateWatcher {
    path: PathBuf,
    cached: Mutex<Option<(Option<Stamp>, Arc<KeyStates>)>>,
}

impl StateWatcher {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            cached: Mutex::new(None),
        }
    }

    /// The current states: one `stat` per call, a reread only when the file
    /// is another one than last time. Blocking (file system calls).
    pub(crate) fn current(&self) -> Result<Arc<KeyStates>, StateError> {
        let stamp = match std::fs::metadata(&self.path) {
            Ok(m) => Some(Stamp {
                device: m.dev(),
                inode: m.ino(),
                length: m.len(),
                modified_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(StateError::io(&self.path, error)),
        };
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((seen, states)) = cached.as_ref()
            && *seen == stamp
        {
            return Ok(Arc::clone(states));
        }
        let states = Arc::new(KeyStates::load(&self.path)?);
        *cached = Some((stamp, Arc::clone(&states)));
        Ok(states)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn saved_states_read_back_and_changes_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        assert_eq!(KeyStates::load(&path).unwrap(), KeyStates::default());
        let watcher = StateWatcher::new(path.clone());
        assert!(watcher.current().unwrap().keys.is_empty());
        KeyStates::update(&path, |s| {
            s.keys.insert("k1".into(), KeyState::default());
            Ok::<_, StateError>(())
        })
        .unwrap();
        let seen = watcher.current().unwrap();
        assert_eq!(seen.keys["k1"], KeyState::default());
        assert_eq!(
            seen.keys["k1"].allowed_reasons,
            ["CUSTOMER_INITIATED_ACCESS"]
        );
        // Same length, new file: still seen (another inode).
        KeyStates::update(&path, |s| {
            s.keys.get_mut("k1").unwrap().enabled = false;
            Ok::<_, StateError>(())
        })
        .unwrap();
        assert!(!watcher.current().unwrap().keys["k1"].enabled);
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn invalid_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        for bad in [
            "not json",
            r#"{"version":2,"keys":{}}"#,
            r#"{"version":1,"keys":{"a/b":{"enabled":true,"allowedReasons":[]}}}"#,
            r#"{"version":1,"keys":{"k":{"enabled":true,"allowedReasons":[],"x":1}}}"#,
        ] {
            std::fs::write(&path, bad).unwrap();
            assert!(KeyStates::load(&path).is_err(), "{bad}");
            assert!(StateWatcher::new(path.clone()).current().is_err(), "{bad}");
        }
    }
}
