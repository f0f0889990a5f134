//! The embedded store forgets deleted documents: after a rewrite, no byte of
//! a deleted document is left anywhere in the file (freed pages, the tail),
//! and everything live is still there.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use nuage_meta::embedded::EmbeddedMetaStore;
use nuage_meta::{DocumentStore as _, DocumentWrite, Expect};
use std::path::Path;

/// A value no other bytes of the file can hold by chance.
fn distinctive(label: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..200_u32 {
        out.extend_from_slice(format!("{label}-{i:04}|").as_bytes());
    }
    out
}

fn holds(path: &Path, needle: &[u8]) -> bool {
    std::fs::read(path)
        .unwrap()
        .windows(needle.len())
        .any(|w| w == needle)
}

fn put(namespace: &str, key: &str, value: Vec<u8>) -> DocumentWrite {
    DocumentWrite {
        namespace: namespace.into(),
        key: key.into(),
        expect: Expect::Any,
        value: Some(value),
    }
}

fn delete(namespace: &str, key: &str) -> DocumentWrite {
    DocumentWrite {
        namespace: namespace.into(),
        key: key.into(),
        expect: Expect::Any,
        value: None,
    }
}

#[tokio::test]
async fn a_rewrite_leaves_no_byte_of_a_deleted_document_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    let secret = distinctive("SHRED-ME");
    let kept = distinctive("KEEP-ME");
    {
        let store = EmbeddedMetaStore::open(&path).unwrap();
        // Neighbours on the same and later pages, written in many
        // transactions, so the file has history around the secret.
        for i in 0..200 {
            store
                .commit_documents(vec![put("filler", &format!("{i:04}"), vec![b'x'; 300])])
                .await
                .unwrap();
        }
        store
            .commit_documents(vec![
                put("kms.key", "tenant/secret", secret.clone()),
                put("kms.key", "tenant/kept", kept.clone()),
            ])
            .await
            .unwrap();
        // An overwrite leaves an earlier version of a document behind too.
        store
            .commit_documents(vec![put("kms.key", "tenant/kept", kept.clone())])
            .await
            .unwrap();
    }
    // The scan sees the secret while it exists, so its silence later means
    // something.
    assert!(holds(&path, &secret));
    assert!(!EmbeddedMetaStore::deleted_documents_pending(&path).unwrap());
    assert_eq!(EmbeddedMetaStore::forget_deleted(&path).unwrap(), None);

    {
        let store = EmbeddedMetaStore::open(&path).unwrap();
        store
            .commit_documents(vec![delete("kms.key", "tenant/secret")])
            .await
            .unwrap();
        // Deleting what does not exist promises nothing new, and breaks
        // nothing.
        store
            .commit_documents(vec![delete("kms.key", "tenant/never")])
            .await
            .unwrap();
    }
    // The deletion itself leaves the bytes in freed pages (redb does not
    // overwrite them): this is what the rewrite is for.
    eprintln!(
        "rewrite: secret still in the file after its deletion: {}",
        holds(&path, &secret)
    );
    assert!(EmbeddedMetaStore::deleted_documents_pending(&path).unwrap());

    let rewrite = EmbeddedMetaStore::forget_deleted(&path).unwrap().unwrap();
    eprintln!("rewrite: {rewrite:?}");
    assert!(rewrite.entries >= 201, "{rewrite:?}");
    assert_eq!(
        rewrite.file_bytes_after,
        std::fs::metadata(&path).unwrap().len()
    );
    // Every byte of the file, its tail included.
    assert!(!holds(&path, &secret));
    assert!(holds(&path, &kept));
    // No staged copy is left beside it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["meta.redb"]);
    // The promise is kept: nothing pending, the next start does nothing.
    assert!(!EmbeddedMetaStore::deleted_documents_pending(&path).unwrap());
    assert_eq!(EmbeddedMetaStore::forget_deleted(&path).unwrap(), None);

    // Everything live is there, with its revision.
    let store = EmbeddedMetaStore::open(&path).unwrap();
    assert!(
        store
            .get_document("kms.key", "tenant/secret")
            .await
            .unwrap()
            .is_none()
    );
    let doc = store
        .get_document("kms.key", "tenant/kept")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((doc.revision, doc.value), (2, kept));
    let filler = store
        .scan_documents("filler", "", None, 1000)
        .await
        .unwrap();
    assert_eq!(filler.len(), 200);
}

#[tokio::test]
async fn a_rewrite_refuses_while_the_store_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    let store = EmbeddedMetaStore::open(&path).unwrap();
    store
        .commit_documents(vec![put("a", "b", b"c".to_vec())])
        .await
        .unwrap();
    store
        .commit_documents(vec![delete("a", "b")])
        .await
        .unwrap();
    let before = std::fs::read(&path).unwrap();
    let error = EmbeddedMetaStore::rewrite(&path).unwrap_err().to_string();
    assert!(error.contains("in use by another process"), "{error}");
    let error = EmbeddedMetaStore::forget_deleted(&path)
        .unwrap_err()
        .to_string();
    assert!(error.contains("in use by another process"), "{error}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    drop(store);
    assert!(EmbeddedMetaStore::forget_deleted(&path).unwrap().is_some());
}

#[test]
fn a_leftover_staged_file_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    drop(EmbeddedMetaStore::open(&path).unwrap());
    // A crash mid-rewrite leaves a partial new file; the old one is intact.
    std::fs::write(dir.path().join("meta.redb.rewrite"), b"partial").unwrap();
    EmbeddedMetaStore::rewrite(&path).unwrap();
    assert!(!dir.path().join("meta.redb.rewrite").exists());
    drop(EmbeddedMetaStore::open(&path).unwrap());
}
