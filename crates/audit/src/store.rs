//! Durable storage of one tenant's audit log: entries and stored tree hashes.
//!
//! [`LogStore`] is the small interface the log service needs (append a batch,
//! read entries, read hashes, keep the last signed checkpoint); [`FileStore`] is
//! the embedded implementation, a directory holding:
//!
//! - `entries` — `"NUAGEAL1"`, then one record per entry: length (u32 LE),
//!   CRC32C of length and bytes (u32 LE), the entry's canonical bytes. This file
//!   is the truth; everything else can be rebuilt from it.
//! - `entries.idx` — the byte offset of each record (u64 LE), so that reads seek.
//! - `hashes` — `tlog_tiles`' stored hashes, 32 bytes each, at offset
//!   32 × stored hash index.
//! - `checkpoint`, `pruned` — the last signed checkpoint and pruning marker
//!   (each replaced atomically by rename).
//!
//! An append writes the records and fsyncs `entries`, then writes and fsyncs the
//! index and hashes, and only then returns; a new file's directory is fsynced
//! too. Reopening after a crash keeps every complete, checksummed record, cuts a
//! torn last record, and rebuilds what the index and hashes lack. A bad record
//! *followed* by more data is not a torn write but damage: opening then fails
//! rather than silently dropping acknowledged entries. Blocking: callers run these
//! methods on tokio's blocking pool. This module never decides what is logged.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use nuage_base::limits::{
    AUDIT_CHECKPOINT_BYTES_MAX, AUDIT_ENTRY_BYTES_MAX, AUDIT_READ_ENTRIES_MAX,
    AUDIT_RECOVERY_OFFSETS_MAX,
};
use tlog_tiles::{HASH_SIZE, Hash, stored_hash_count};

use crate::AuditError;
use crate::tree::StoreHashes;

/// Storage of one log: an append-only sequence of entries and their stored hashes.
///
/// Implementations are blocking (the log calls them on tokio's blocking pool) and
/// must make an `append` durable before returning `Ok`. The log guarantees one
/// appender at a time; reads may run concurrently with an append and must only
/// see entries of a completed append.
pub trait LogStore: Send + Sync + 'static {
    /// Number of entries durably stored.
    fn size(&self) -> u64;
    /// Appends `entries` (canonical bytes) and the stored hashes they add,
    /// `hashes` (as `tlog_tiles::stored_hashes` returned them, in order), durably.
    ///
    /// # Errors
    /// Any storage failure; after one, the store may refuse further appends.
    fn append(&self, entries: &[Vec<u8>], hashes: &[Hash]) -> Result<(), AuditError>;
    /// Entries `start..end` (at most `AUDIT_READ_ENTRIES_MAX`), each checked.
    ///
    /// # Errors
    /// Out of range, I/O, or a record that fails its checksum.
    fn read_entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, AuditError>;
    /// The stored hashes at these stored hash indexes.
    ///
    /// # Errors
    /// An index not stored yet, or I/O.
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, AuditError>;
    /// The last signed note of this kind, if one was ever stored.
    ///
    /// # Errors
    /// I/O.
    fn load_note(&self, kind: NoteKind) -> Result<Option<Vec<u8>>, AuditError>;
    /// Durably replaces the last signed note of this kind.
    ///
    /// # Errors
    /// I/O.
    fn store_note(&self, kind: NoteKind, note: &[u8]) -> Result<(), AuditError>;
}

/// The signed notes a log keeps beside its entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    /// The last signed checkpoint.
    Checkpoint,
    /// The last signed pruning marker (see [`crate::prune`]).
    Pruned,
    /// The last checkpoint witnesses cosigned: its note with the verified
    /// cosignature lines appended (see [`crate::witness`]).
    Cosigned,
}

impl NoteKind {
    /// The file name a directory-backed store keeps it in.
    #[must_use]
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Checkpoint => "checkpoint",
            Self::Pruned => "pruned",
            Self::Cosigned => "checkpoint.cosigned",
        }
    }
}

const MAGIC: &[u8; 8] = b"NUAGEAL1";
const HEADER_BYTES: u64 = MAGIC.len() as u64;
/// Length and checksum before each record's bytes.
const RECORD_HEADER_BYTES: u64 = 8;
const HASH_BYTES: u64 = HASH_SIZE as u64;

/// The embedded, file-backed [`LogStore`].
pub struct FileStore {
    dir: PathBuf,
    entries: File,
    index: File,
    hashes: File,
    /// Committed entries; published after the fsyncs of an append.
    size: AtomicU64,
    /// Set after any failed write: the files' state is then unknown.
    failed: AtomicBool,
    /// Where the next record goes; held across an append so appends never interleave.
    writer: Mutex<u64>,
}

/// What reading one record found.
enum Record {
    /// A complete record whose checksum matches.
    Good(Vec<u8>),
    /// Nothing more: the offset is the file's end.
    End,
    /// A record cut short or garbled; `reaches_end` when nothing follows it.
    Bad { reason: String, reaches_end: bool },
}

impl FileStore {
    /// Opens (creating if needed) the log in `dir`, recovering from a crash.
    ///
    /// # Errors
    /// I/O, a directory another store holds, or damaged data (see the module docs).
    pub fn open(dir: &Path) -> Result<Self, AuditError> {
        std::fs::create_dir_all(dir).map_err(|e| AuditError::io("create log directory", e))?;
        let mut created = false;
        let entries = open_file(dir, "entries", &mut created)?;
        // One store per directory: two writers would interleave records.
        entries.try_lock().map_err(|error| match error {
            std::fs::TryLockError::WouldBlock => AuditError::AlreadyOpen(dir.to_path_buf()),
            std::fs::TryLockError::Error(e) => AuditError::io("lock entries", e),
        })?;
        let index = open_file(dir, "entries.idx", &mut created)?;
        let hashes = open_file(dir, "hashes", &mut created)?;
        if created {
            sync_dir(dir)?;
        }
        let store = Self {
            dir: dir.to_path_buf(),
            entries,
            index,
            hashes,
            size: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            writer: Mutex::new(HEADER_BYTES),
        };
        store.recover()?;
        Ok(store)
    }

    /// Brings the three files back to one consistent, complete state.
    fn recover(&self) -> Result<(), AuditError> {
        let entries_len = file_len(&self.entries, "entries")?;
        if entries_len < HEADER_BYTES {
            // Only a crash while creating the file leaves it this short.
            let mut head = vec![0; usize::try_from(entries_len).unwrap_or(0)];
            read_at(&self.entries, &mut head, 0, "entries header")?;
            if !MAGIC.starts_with(&head) {
                return Err(AuditError::Corrupt(
                    "entries file has a foreign header".into(),
                ));
            }
            write_at(&self.entries, MAGIC, 0, "entries header")?;
            sync(&self.entries, "entries")?;
        } else {
            let mut head = [0u8; 8];
            read_at(&self.entries, &mut head, 0, "entries header")?;
            if &head != MAGIC {
                return Err(AuditError::Corrupt(
                    "entries file has a foreign header".into(),
                ));
            }
        }
        let entries_len = file_len(&self.entries, "entries")?;

        // Trust the index as far as its last offset points at a good record;
        // otherwise rebuild it from the start.
        // Records past a usable index were never acknowledged (the index is
        // written after the entries' fsync and before the append returns), so a
        // bad one there is a torn write to cut, even with bytes after it (a torn
        // batch). Without a usable index, only a bad record at the very end is
        // taken for a torn write.
        let index_len = file_len(&self.index, "entries.idx")?;
        let indexed = index_len / 8;
        let mut index_usable = index_len == 0;
        let (mut count, mut position) = (0u64, HEADER_BYTES);
        if indexed > 0 {
            let last = read_u64(&self.index, (indexed - 1) * 8)?;
            if let (true, Record::Good(bytes)) = (
                last >= HEADER_BYTES,
                read_record(&self.entries, last, entries_len)?,
            ) {
                count = indexed;
                position = last + RECORD_HEADER_BYTES + bytes.len() as u64;
                index_usable = true;
            } else {
                tracing::warn!(dir = %self.dir.display(), "audit index disagrees with entries; rebuilding it");
            }
        }

        // Scan forward for records the index lacks, writing their offsets out in
        // bounded batches.
        let mut pending: Vec<u8> = Vec::new();
        let mut pending_from = count;
        loop {
            match read_record(&self.entries, position, entries_len)? {
                Record::Good(bytes) => {
                    pending.extend_from_slice(&position.to_le_bytes());
                    position += RECORD_HEADER_BYTES + bytes.len() as u64;
                    count += 1;
                    if pending.len() >= AUDIT_RECOVERY_OFFSETS_MAX * 8 {
                        write_at(&self.index, &pending, pending_from * 8, "entries.idx")?;
                        pending.clear();
                        pending_from = count;
                    }
                }
                Record::End => break,
                Record::Bad {
                    reason,
                    reaches_end,
                } if index_usable || reaches_end => {
                    tracing::warn!(dir = %self.dir.display(), offset = position, %reason, "cutting a torn audit record");
                    self.entries
                        .set_len(position)
                        .map_err(|e| AuditError::io("truncate torn record", e))?;
                    sync(&self.entries, "entries")?;
                    break;
                }
                Record::Bad { reason, .. } => {
                    return Err(AuditError::Corrupt(format!(
                        "record at offset {position} of {}: {reason}",
                        self.dir.join("entries").display()
                    )));
                }
            }
        }
        write_at(&self.index, &pending, pending_from * 8, "entries.idx")?;
        self.index
            .set_len(count * 8)
            .map_err(|e| AuditError::io("truncate entries.idx", e))?;
        sync(&self.index, "entries.idx")?;

        // Hashes: keep whole records' worth, recompute the rest from the entries.
        let have = file_len(&self.hashes, "hashes")? / HASH_BYTES;
        let mut hashed = count;
        while hashed > 0 && stored_hash_count(hashed) > have {
            hashed -= 1;
        }
        self.hashes
            .set_len(stored_hash_count(hashed) * HASH_BYTES)
            .map_err(|e| AuditError::io("truncate hashes", e))?;
        self.size.store(hashed, Ordering::Release);
        while hashed < count {
            let end = count.min(hashed + AUDIT_READ_ENTRIES_MAX);
            for (offset, bytes) in (hashed..end).zip(self.read_entries_unchecked(hashed, end)?) {
                let reader = StoreHashes::new(self);
                let stored = reader.finish(tlog_tiles::stored_hashes(offset, &bytes, &reader))?;
                write_at(
                    &self.hashes,
                    &hash_bytes(&stored),
                    stored_hash_count(offset) * HASH_BYTES,
                    "hashes",
                )?;
                // Later records' hashes read these, so publish record by record.
                self.size.store(offset + 1, Ordering::Release);
            }
            hashed = end;
        }
        sync(&self.hashes, "hashes")?;
        self.size.store(count, Ordering::Release);
        *self.lock_writer()? = position;
        Ok(())
    }

    fn lock_writer(&self) -> Result<std::sync::MutexGuard<'_, u64>, AuditError> {
        self.writer
            .lock()
            .map_err(|_| AuditError::Failed("an earlier append panicked".into()))
    }

    /// Reads records `start..end` below the published size or during recovery.
    fn read_entries_unchecked(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, AuditError> {
        if start >= end {
            return Ok(Vec::new());
        }
        let count = end - start;
        let mut offsets = vec![0u8; usize::try_from(count * 8).unwrap_or(0)];
        read_at(&self.index, &mut offsets, start * 8, "entries.idx")?;
        let entries_len = file_len(&self.entries, "entries")?;
        let mut out = Vec::with_capacity(offsets.len() / 8);
        for chunk in offsets.chunks_exact(8) {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(chunk);
            let offset = u64::from_le_bytes(raw);
            match read_record(&self.entries, offset, entries_len)? {
                Record::Good(bytes) => out.push(bytes),
                _ => {
                    return Err(AuditError::Corrupt(format!(
                        "record at offset {offset} fails its checksum"
                    )));
                }
            }
        }
        Ok(out)
    }
}

impl LogStore for FileStore {
    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn append(&self, entries: &[Vec<u8>], hashes: &[Hash]) -> Result<(), AuditError> {
        let mut position = self.lock_writer()?;
        if self.failed.load(Ordering::Acquire) {
            return Err(AuditError::Failed("an earlier write failed".into()));
        }
        let size = self.size();
        let count = entries.len() as u64;
        if stored_hash_count(size + count) - stored_hash_count(size) != hashes.len() as u64 {
            return Err(AuditError::Tree(
                "stored hashes do not match the entries".into(),
            ));
        }
        let mut records = Vec::new();
        let mut offsets = Vec::with_capacity(entries.len() * 8);
        let mut next = *position;
        for bytes in entries {
            if bytes.len() > AUDIT_ENTRY_BYTES_MAX {
                return Err(AuditError::EntryTooLarge {
                    bytes: bytes.len(),
                    max: AUDIT_ENTRY_BYTES_MAX,
                });
            }
            offsets.extend_from_slice(&next.to_le_bytes());
            let length = u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes();
            let crc = crc32c::crc32c_append(crc32c::crc32c(&length), bytes);
            records.extend_from_slice(&length);
            records.extend_from_slice(&crc.to_le_bytes());
            records.extend_from_slice(bytes);
            next += RECORD_HEADER_BYTES + bytes.len() as u64;
        }
        let result = (|| {
            // The entries first: once they are durable, a crash loses nothing,
            // because the index and hashes are rebuilt from them.
            write_at(&self.entries, &records, *position, "entries")?;
            sync(&self.entries, "entries")?;
            write_at(&self.index, &offsets, size * 8, "entries.idx")?;
            write_at(
                &self.hashes,
                &hash_bytes(hashes),
                stored_hash_count(size) * HASH_BYTES,
                "hashes",
            )?;
            sync(&self.index, "entries.idx")?;
            sync(&self.hashes, "hashes")
        })();
        if let Err(error) = result {
            // After a failed write or fsync the page cache may or may not hold
            // the data; retrying could acknowledge entries that are not on disk.
            self.failed.store(true, Ordering::Release);
            return Err(error);
        }
        *position = next;
        self.size.store(size + count, Ordering::Release);
        Ok(())
    }

    fn read_entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, AuditError> {
        let size = self.size();
        if start > end || end > size || end - start > AUDIT_READ_ENTRIES_MAX {
            return Err(AuditError::OutOfRange(format!(
                "entries {start}..{end} of a log of {size}"
            )));
        }
        self.read_entries_unchecked(start, end)
    }

    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, AuditError> {
        let stored = stored_hash_count(self.size());
        indexes
            .iter()
            .map(|&index| {
                if index >= stored {
                    return Err(AuditError::OutOfRange(format!(
                        "stored hash {index} of {stored}"
                    )));
                }
                let mut hash = [0u8; HASH_SIZE];
                read_at(&self.hashes, &mut hash, index * HASH_BYTES, "hashes")?;
                Ok(Hash(hash))
            })
            .collect()
    }

    fn load_note(&self, kind: NoteKind) -> Result<Option<Vec<u8>>, AuditError> {
        read_small_file(&self.dir.join(kind.file_name()), AUDIT_CHECKPOINT_BYTES_MAX)
    }

    fn store_note(&self, kind: NoteKind, note: &[u8]) -> Result<(), AuditError> {
        write_file_atomically(&self.dir.join(kind.file_name()), note)
    }
}

/// Reads a whole small file, or `None` when it does not exist.
pub(crate) fn read_small_file(path: &Path, max: usize) -> Result<Option<Vec<u8>>, AuditError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AuditError::io(format!("open {}", path.display()), e)),
    };
    let what = path.display().to_string();
    let len = file_len(&file, &what)?;
    if len > max as u64 {
        return Err(AuditError::Corrupt(format!(
            "{} is {len} bytes, more than {max}",
            path.display()
        )));
    }
    let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(0)];
    read_at(&file, &mut bytes, 0, &what)?;
    Ok(Some(bytes))
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new file.
pub(crate) fn write_file_atomically(path: &Path, bytes: &[u8]) -> Result<(), AuditError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let temporary = path.with_extension("tmp");
    let mut file = File::create(&temporary)
        .map_err(|e| AuditError::io(format!("create {}", temporary.display()), e))?;
    file.write_all(bytes)
        .map_err(|e| AuditError::io(format!("write {}", temporary.display()), e))?;
    sync(&file, &temporary.display().to_string())?;
    std::fs::rename(&temporary, path)
        .map_err(|e| AuditError::io(format!("rename to {}", path.display()), e))?;
    sync_dir(parent)
}

fn open_file(dir: &Path, name: &str, created: &mut bool) -> Result<File, AuditError> {
    let path = dir.join(name);
    *created |= !path.exists();
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| AuditError::io(format!("open {}", path.display()), e))
}

fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AuditError::io(format!("fsync directory {}", dir.display()), e))
}

fn sync(file: &File, what: &str) -> Result<(), AuditError> {
    file.sync_data()
        .map_err(|e| AuditError::io(format!("fsync {what}"), e))
}

fn file_len(file: &File, what: &str) -> Result<u64, AuditError> {
    Ok(file
        .metadata()
        .map_err(|e| AuditError::io(format!("stat {what}"), e))?
        .len())
}

fn read_at(file: &File, buffer: &mut [u8], offset: u64, what: &str) -> Result<(), AuditError> {
    file.read_exact_at(buffer, offset)
        .map_err(|e| AuditError::io(format!("read {what} at {offset}"), e))
}

fn write_at(file: &File, bytes: &[u8], offset: u64, what: &str) -> Result<(), AuditError> {
    file.write_all_at(bytes, offset)
        .map_err(|e| AuditError::io(format!("write {what} at {offset}"), e))
}

fn read_u64(file: &File, offset: u64) -> Result<u64, AuditError> {
    let mut raw = [0u8; 8];
    read_at(file, &mut raw, offset, "entries.idx")?;
    Ok(u64::from_le_bytes(raw))
}

fn hash_bytes(hashes: &[Hash]) -> Vec<u8> {
    hashes.iter().flat_map(|hash| hash.0).collect()
}

/// Reads and checks the record at `offset` of an entries file `len` bytes long.
fn read_record(file: &File, offset: u64, len: u64) -> Result<Record, AuditError> {
    if offset == len {
        return Ok(Record::End);
    }
    if offset + RECORD_HEADER_BYTES > len {
        return Ok(Record::Bad {
            reason: "header cut short".into(),
            reaches_end: true,
        });
    }
    let mut header = [0u8; 8];
    read_at(file, &mut header, offset, "entries")?;
    let length_bytes = [header[0], header[1], header[2], header[3]];
    let length = u64::from(u32::from_le_bytes(length_bytes));
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let end = offset + RECORD_HEADER_BYTES + length;
    if end > len {
        return Ok(Record::Bad {
            reason: format!("length {length} runs past the end"),
            reaches_end: true,
        });
    }
    if length > AUDIT_ENTRY_BYTES_MAX as u64 {
        return Ok(Record::Bad {
            reason: format!("impossible length {length}"),
            reaches_end: end == len,
        });
    }
    let mut bytes = vec![0u8; usize::try_from(length).unwrap_or(0)];
    read_at(file, &mut bytes, offset + RECORD_HEADER_BYTES, "entries")?;
    if crc32c::crc32c_append(crc32c::crc32c(&length_bytes), &bytes) != crc {
        return Ok(Record::Bad {
            reason: "checksum mismatch".into(),
            reaches_end: end == len,
        });
    }
    Ok(Record::Good(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Frontier;

    fn append_all(store: &FileStore, leaves: &[Vec<u8>]) {
        let mut frontier = Frontier::load(store.size(), store).expect("frontier");
        let mut hashes = Vec::new();
        for (k, leaf) in leaves.iter().enumerate() {
            let n = store.size() + k as u64;
            hashes.extend(
                frontier
                    .append(n, tlog_tiles::record_hash(leaf))
                    .expect("hashes"),
            );
        }
        store.append(leaves, &hashes).expect("append");
    }

    fn leaves(range: std::ops::Range<u32>) -> Vec<Vec<u8>> {
        range.map(|i| format!("entry {i}").into_bytes()).collect()
    }

    fn root(store: &FileStore) -> Hash {
        let reader = StoreHashes::new(store);
        reader
            .finish(tlog_tiles::tree_hash(store.size(), &reader))
            .expect("root")
    }

    #[test]
    fn entries_and_hashes_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let expected_root;
        {
            let store = FileStore::open(dir.path()).expect("open");
            append_all(&store, &leaves(0..10));
            append_all(&store, &leaves(10..300));
            expected_root = root(&store);
            assert_eq!(store.read_entries(3, 5).expect("read"), leaves(3..5));
        }
        let store = FileStore::open(dir.path()).expect("reopen");
        assert_eq!(store.size(), 300);
        assert_eq!(root(&store), expected_root);
        assert_eq!(
            store.read_entries(256, 300).expect("read"),
            leaves(256..300)
        );
    }

    #[test]
    fn a_second_store_on_one_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = FileStore::open(dir.path()).expect("open");
        assert!(matches!(
            FileStore::open(dir.path()),
            Err(AuditError::AlreadyOpen(_))
        ));
    }

    #[test]
    fn torn_last_record_is_cut_and_the_rest_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let expected_root;
        {
            let store = FileStore::open(dir.path()).expect("open");
            append_all(&store, &leaves(0..5));
            expected_root = root(&store);
            append_all(&store, &leaves(5..6));
        }
        // Tear the last record halfway, as a crash mid-write would.
        let path = dir.path().join("entries");
        let len = std::fs::metadata(&path).expect("stat").len();
        let file = OpenOptions::new().write(true).open(&path).expect("open");
        file.set_len(len - 4).expect("truncate");
        drop(file);
        let store = FileStore::open(dir.path()).expect("reopen");
        assert_eq!(store.size(), 5);
        assert_eq!(root(&store), expected_root);
        assert!(
            store.read_entries(5, 6).is_err(),
            "torn entry is never served"
        );
        // The log continues cleanly after recovery.
        append_all(&store, &leaves(5..7));
        drop(store);
        let store = FileStore::open(dir.path()).expect("reopen again");
        assert_eq!(store.read_entries(0, 7).expect("read"), leaves(0..7));
    }

    #[test]
    fn garbage_last_record_with_full_length_is_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = FileStore::open(dir.path()).expect("open");
            append_all(&store, &leaves(0..3));
        }
        let path = dir.path().join("entries");
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).expect("write");
        let store = FileStore::open(dir.path()).expect("reopen");
        assert_eq!(store.size(), 2);
    }

    #[test]
    fn damage_before_the_end_is_refused_not_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = FileStore::open(dir.path()).expect("open");
            append_all(&store, &leaves(0..3));
        }
        let path = dir.path().join("entries");
        let mut bytes = std::fs::read(&path).expect("read");
        // Flip a byte of the first record's data.
        bytes[HEADER_BYTES as usize + 8] ^= 0xff;
        std::fs::write(&path, &bytes).expect("write");
        // Garble the index so that recovery must scan from the start.
        std::fs::write(dir.path().join("entries.idx"), 3u64.to_le_bytes()).expect("idx");
        assert!(matches!(
            FileStore::open(dir.path()),
            Err(AuditError::Corrupt(_))
        ));
    }

    #[test]
    fn torn_batch_with_bytes_after_the_bad_record_is_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let expected_root;
        {
            let store = FileStore::open(dir.path()).expect("open");
            append_all(&store, &leaves(0..3));
            expected_root = root(&store);
        }
        // An unacknowledged batch: a record header, then zeros where the data
        // never reached the disk, then more zeros.
        let path = dir.path().join("entries");
        let mut bytes = std::fs::read(&path).expect("read");
        bytes.extend_from_slice(&20u32.to_le_bytes());
        bytes.extend_from_slice(&[0u8; 4 + 20 + 100]);
        std::fs::write(&path, &bytes).expect("write");
        let store = FileStore::open(dir.path()).expect("reopen");
        assert_eq!(store.size(), 3);
        assert_eq!(root(&store), expected_root);
    }

    #[test]
    fn lost_index_and_hashes_are_rebuilt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let expected_root;
        {
            let store = FileStore::open(dir.path()).expect("open");
            append_all(&store, &leaves(0..40));
            expected_root = root(&store);
        }
        // A crash between the entries fsync and the index/hash writes.
        std::fs::write(dir.path().join("entries.idx"), [0u8; 8 * 3 + 5]).expect("idx");
        let hashes = std::fs::read(dir.path().join("hashes")).expect("hashes");
        std::fs::write(dir.path().join("hashes"), &hashes[..hashes.len() / 3]).expect("hashes");
        let store = FileStore::open(dir.path()).expect("reopen");
        assert_eq!(store.size(), 40);
        assert_eq!(root(&store), expected_root);
        assert_eq!(store.read_entries(0, 40).expect("read"), leaves(0..40));
    }

    #[test]
    fn bit_flip_in_a_stored_record_is_caught_on_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::open(dir.path()).expect("open");
        append_all(&store, &leaves(0..3));
        let path = dir.path().join("entries");
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[HEADER_BYTES as usize + 9] ^= 0x01;
        // Write through a separate handle, as a failing disk would.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.write_all_at(&bytes, 0))
            .expect("write");
        assert!(matches!(
            store.read_entries(0, 1),
            Err(AuditError::Corrupt(_))
        ));
    }
}
