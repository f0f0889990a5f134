//! The host's small JSON state files (`instance.json`, `metadata.json`):
//! written whole through a temporary file and a rename, readable by the
//! service alone, and read back with a size bound.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{ComputeError, Result};

/// Writes `bytes` as `dir/name` (mode 0600): the file is durable before it
/// replaces the old one, and the rename durable before returning, so after
/// a power loss the file is the old one or the new one, never a torn file.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(ComputeError::io(&tmp))?;
    std::io::Write::write_all(&mut file, bytes).map_err(ComputeError::io(&tmp))?;
    file.sync_all().map_err(ComputeError::io(&tmp))?;
    let path = dir.join(name);
    std::fs::rename(&tmp, &path).map_err(ComputeError::io(&path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ComputeError::io(dir))
}

/// Reads `dir/name` as JSON; `None` if there is no such file. A file over
/// `bytes_max` or not the expected JSON is `CorruptState`, `too_large`
/// saying which.
pub(crate) fn read_json<T: DeserializeOwned>(
    dir: &Path,
    name: &str,
    bytes_max: u64,
    too_large: &str,
) -> Result<Option<T>> {
    let path = dir.join(name);
    let bytes = match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ComputeError::Io { path, source: e }),
        Ok(meta) if meta.len() > bytes_max => {
            return Err(ComputeError::CorruptState {
                path,
                message: too_large.into(),
            });
        }
        Ok(_) => std::fs::read(&path).map_err(ComputeError::io(&path))?,
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ComputeError::CorruptState {
            path,
            message: e.to_string(),
        })
}
