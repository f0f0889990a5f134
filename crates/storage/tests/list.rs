//! Listings with a delimiter, page by page, against a listing computed
//! directly from the keys: common prefixes roll up whatever the page size,
//! a rolled-up prefix is never returned twice nor split across pages, and a
//! prefix whose only keys are delete markers does not appear.
#![allow(clippy::unwrap_used)]

mod common;

use common::{TENANT, fixture};
use nuage_meta::{Checksums, WriteCondition};
use nuage_storage::{ListQuery, ObjectAttributes, Storage, VersionListQuery};
use std::collections::BTreeSet;

async fn put(storage: &Storage, key: &str) {
    let body = key.as_bytes().to_vec();
    let pieces = vec![Ok::<_, std::io::Error>(bytes::Bytes::from(body.clone()))];
    let staged = storage
        .stage(
            "bkt",
            key,
            futures::stream::iter(pieces),
            Some(body.len() as u64),
            1 << 20,
            &[],
        )
        .await
        .unwrap();
    storage
        .put_object(
            "bkt",
            key,
            staged,
            ObjectAttributes::default(),
            Checksums::default(),
            WriteCondition::None,
        )
        .await
        .unwrap();
}

/// What S3 lists: the visible keys under `prefix`, those with `delimiter`
/// past the prefix rolled up into their common prefix, in byte order.
fn expected(visible: &BTreeSet<String>, prefix: &str, delimiter: &str) -> Vec<String> {
    let mut out = BTreeSet::new();
    for key in visible.iter().filter(|k| k.starts_with(prefix)) {
        let rest = &key[prefix.len()..];
        match rest.find(delimiter) {
            Some(i) => out.insert(format!("{prefix}{}{delimiter}", &rest[..i])),
            None => out.insert(key.clone()),
        };
    }
    out.into_iter().collect()
}

/// Every entry (keys and common prefixes, merged in order) over all pages.
async fn list_all(
    storage: &Storage,
    prefix: &str,
    delimiter: &str,
    max_keys: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut after = None;
    for _ in 0..10_000 {
        let page = storage
            .list_objects(
                "bkt",
                &ListQuery {
                    prefix: prefix.into(),
                    delimiter: Some(delimiter.into()),
                    after: after.clone(),
                    max_keys,
                },
            )
            .await
            .unwrap();
        assert!(
            page.objects.len() + page.common_prefixes.len() <= max_keys,
            "a page holds at most max-keys entries"
        );
        let mut entries: Vec<String> = page.objects.iter().map(|o| o.key.clone()).collect();
        entries.extend(page.common_prefixes.iter().cloned());
        entries.sort();
        out.extend(entries);
        if !page.truncated {
            return out;
        }
        after = page.next_after.clone();
        assert!(after.is_some(), "a truncated page says where to go on");
    }
    panic!("the listing did not end");
}

/// The same through ListObjectVersions: versions' keys (deduplicated) and
/// common prefixes.
async fn list_versions_all(
    storage: &Storage,
    prefix: &str,
    delimiter: &str,
    max_keys: usize,
) -> Vec<String> {
    let mut out = BTreeSet::new();
    let mut seen_prefixes = BTreeSet::new();
    let (mut key_marker, mut version_id_marker) = (None, None);
    for _ in 0..10_000 {
        let page = storage
            .list_object_versions(
                "bkt",
                &VersionListQuery {
                    prefix: prefix.into(),
                    delimiter: Some(delimiter.into()),
                    key_marker: key_marker.clone(),
                    version_id_marker: version_id_marker.clone(),
                    max_keys,
                },
            )
            .await
            .unwrap();
        for cp in &page.common_prefixes {
            assert!(seen_prefixes.insert(cp.clone()), "{cp} listed twice");
        }
        out.extend(page.versions.iter().map(|v| v.key.clone()));
        if !page.truncated {
            out.extend(seen_prefixes);
            return out.into_iter().collect();
        }
        key_marker = page.next_key_marker.clone();
        version_id_marker = page.next_version_id_marker.clone();
    }
    panic!("the listing did not end");
}

#[tokio::test]
async fn delimited_listings_match_the_keys_at_every_page_size() {
    let f = fixture();
    f.storage.create_bucket("bkt", None, TENANT).await.unwrap();
    f.storage.set_versioning("bkt", true).await.unwrap();
    let mut visible = BTreeSet::new();
    let mut all = BTreeSet::new();
    // Directories of different sizes (1 to 9 keys), nested ones, plain keys
    // between them, and a directory whose only key is deleted.
    for d in 0..12u32 {
        for k in 0..=(d % 9) {
            visible.insert(format!("dir{d:02}/file{k}"));
        }
        if d % 3 == 0 {
            visible.insert(format!("dir{d:02}/sub/deep{d}"));
        }
        visible.insert(format!("plain{d:02}"));
    }
    visible.insert("photos/2026/a.jpg".into());
    for key in &visible {
        put(&f.storage, key).await;
        all.insert(key.clone());
    }
    put(&f.storage, "ghost/only").await;
    f.storage
        .delete_object("bkt", "ghost/only", None)
        .await
        .unwrap();
    all.insert("ghost/only".into());

    for prefix in ["", "dir03/", "photos/", "dir"] {
        let want = expected(&visible, prefix, "/");
        for max_keys in [1, 2, 3, 5, 1000] {
            let got = list_all(&f.storage, prefix, "/", max_keys).await;
            assert_eq!(got, want, "prefix {prefix:?} max-keys {max_keys}");
        }
        // Versions: the deleted key's versions are listed (a delete marker is
        // a version), so its prefix appears there.
        let want_versions = expected(&all, prefix, "/");
        for max_keys in [1, 2, 7, 1000] {
            let got = list_versions_all(&f.storage, prefix, "/", max_keys).await;
            assert_eq!(
                got, want_versions,
                "versions, prefix {prefix:?} max-keys {max_keys}"
            );
        }
    }
}
