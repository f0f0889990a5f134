//! What the storage integration tests share: a service over a temporary
//! embedded store, with handles on its stores for tampering.
#![allow(dead_code, clippy::unwrap_used, clippy::missing_panics_doc)]

use nuage_meta::MetaStore;
use nuage_storage::{Region, Storage, StorageConfig};
use std::path::Path;
use std::sync::Arc;

pub const TENANT: &str = "111122223333";
pub const OTHER_TENANT: &str = "444455556666";

pub struct Fixture {
    pub storage: Storage,
    pub meta: Arc<nuage_meta::embedded::EmbeddedMetaStore>,
    pub blobs: Arc<nuage_blob::local::LocalBlobStore>,
    pub keys: nuage_kms::KeyService,
    pub _dir: tempfile::TempDir,
    pub dir: std::path::PathBuf,
}

pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let meta =
        Arc::new(nuage_meta::embedded::EmbeddedMetaStore::open(&path.join("meta.redb")).unwrap());
    let blobs = Arc::new(nuage_blob::local::LocalBlobStore::open(&path.join("blobs")).unwrap());
    let clock: Arc<dyn nuage_base::Clock> = Arc::new(nuage_base::SystemClock);
    let root = nuage_crypto::RootKeyFile::open_or_create(&path.join("root.key")).unwrap();
    let keys = nuage_kms::KeyService::new(
        Arc::clone(&meta) as Arc<dyn nuage_meta::DocumentStore>,
        root,
    );
    let storage = Storage::new(
        Arc::clone(&meta) as Arc<dyn MetaStore>,
        Arc::clone(&blobs) as Arc<dyn nuage_blob::BlobStore>,
        clock,
        keys.clone(),
        StorageConfig {
            regions: vec![Region {
                name: "fr-par".into(),
                country: "FR".into(),
            }],
            default_region_aliases: Vec::new(),
        },
    );
    Fixture {
        storage,
        meta,
        blobs,
        keys,
        _dir: dir,
        dir: path,
    }
}

/// Blob files on disk (`blobs/xx/<id>`).
pub fn blob_files(dir: &Path) -> usize {
    fn walk(dir: &Path, count: &mut usize) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                walk(&entry.path(), count);
            } else {
                *count += 1;
            }
        }
    }
    let mut count = 0;
    walk(&dir.join("blobs"), &mut count);
    count
}

/// Bytes that differ from chunk to chunk, so a misplaced chunk shows.
pub fn data(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i / 65_536) as u8)
        .collect()
}
