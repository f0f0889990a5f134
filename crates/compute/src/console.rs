//! The serial console log of one instance, bounded on disk.
//!
//! Bytes are appended to `console.log`; when the file reaches
//! `CONSOLE_LOG_FILE_BYTES_MAX` it is rewritten to its last
//! `CONSOLE_OUTPUT_BYTES_MAX` bytes (through a temporary file and a rename),
//! so the file never holds more than twice what GetConsoleOutput returns.
//! Only the instance's console reader writes it; anyone may read the tail.
//! File writes are blocking: the async reader hands each batch to
//! `append_off_runtime`, which runs it on tokio's blocking pool, one batch at
//! a time per console (the reader waits meanwhile, so QEMU's chardev holds
//! the guest's further output: the buffering is bounded by one batch).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{ComputeError, Result};
use crate::limits::{CONSOLE_LOG_FILE_BYTES_MAX, CONSOLE_OUTPUT_BYTES_MAX};

pub struct ConsoleLog {
    path: PathBuf,
    file: File,
    len_bytes: u64,
}

impl ConsoleLog {
    pub fn open(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(ComputeError::io(path))?;
        let len_bytes = file.metadata().map_err(ComputeError::io(path))?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            len_bytes,
        })
    }

    pub fn append(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .map_err(ComputeError::io(&self.path))?;
        self.len_bytes += bytes.len() as u64;
        if self.len_bytes >= CONSOLE_LOG_FILE_BYTES_MAX {
            let tail = read_tail(&self.path)?;
            let tmp = self.path.with_extension("log.tmp");
            std::fs::write(&tmp, &tail).map_err(ComputeError::io(&tmp))?;
            std::fs::rename(&tmp, &self.path).map_err(ComputeError::io(&self.path))?;
            *self = Self::open(&self.path)?;
        }
        Ok(())
    }
}

impl ConsoleLog {
    /// `append`, on the blocking pool: returns the log for the next batch.
    pub async fn append_off_runtime(mut self, bytes: Vec<u8>) -> Result<Self> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || self.append(&bytes).map(|()| self))
            .await
            .map_err(|e| ComputeError::Io {
                path,
                source: std::io::Error::other(format!("console writer: {e}")),
            })?
    }
}

/// The last `CONSOLE_OUTPUT_BYTES_MAX` bytes of a console log (empty if none).
pub fn read_tail(path: &Path) -> Result<Vec<u8>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ComputeError::Io {
                path: path.to_path_buf(),
                source: e,
            });
        }
    };
    let len = file.metadata().map_err(ComputeError::io(path))?.len();
    let start = len.saturating_sub(CONSOLE_OUTPUT_BYTES_MAX);
    file.seek(SeekFrom::Start(start))
        .map_err(ComputeError::io(path))?;
    let mut tail = Vec::new();
    file.take(CONSOLE_OUTPUT_BYTES_MAX)
        .read_to_end(&mut tail)
        .map_err(ComputeError::io(path))?;
    Ok(tail)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn log_stays_bounded_and_keeps_the_latest_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut log = ConsoleLog::open(&path).unwrap();
        for i in 0..100_000u32 {
            log.append(format!("line {i}\n").as_bytes()).unwrap();
        }
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size <= CONSOLE_LOG_FILE_BYTES_MAX, "{size}");
        let tail = read_tail(&path).unwrap();
        assert_eq!(tail.len() as u64, CONSOLE_OUTPUT_BYTES_MAX);
        assert!(String::from_utf8_lossy(&tail).ends_with("line 99999\n"));
    }

    #[tokio::test]
    async fn appends_off_the_runtime_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut log = ConsoleLog::open(&path).unwrap();
        for i in 0..1000u32 {
            log = log
                .append_off_runtime(format!("{i}\n").into_bytes())
                .await
                .unwrap();
        }
        let text = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
        let expected: String = (0..1000u32).map(|i| format!("{i}\n")).collect();
        assert_eq!(text, expected);
    }
}
