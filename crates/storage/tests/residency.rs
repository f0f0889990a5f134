//! The storage service places every new blob under its bucket's residency
//! policy: the service over the replicated store (`nuage-cluster`) and four
//! real storage nodes served in-process over mutual TLS, in sites fr-1 and
//! fr-2 (France), de-1 (Germany) and us-1 (United States), each in a Tokio
//! runtime of its own so that a test can kill one outright. The metadata and
//! the location index are in one embedded store.
//!
//! Bucket `factures` carries its own policy (France only, 2 replicas on 2
//! sites); bucket `europe` carries none and follows its tenant's (EU, 2
//! replicas on 2 sites), read through a [`ResidencySource`]. The cluster's
//! default policy (for a write that names none) is United States only, so a
//! write that lost its bucket's policy on the way would land on `us-1`.
//! Residency is checked on the nodes' disks, not through the API.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use bytes::Bytes;
use futures::{FutureExt as _, TryStreamExt as _};
use nuage_cluster::{ClusterBlobStore, ClusterConfig};
use nuage_meta::MetaStore;
use nuage_meta::embedded::EmbeddedMetaStore;
use nuage_placement::ResidencyPolicy;
use nuage_storage::{
    ChecksumAlgorithm, Checksums, CompletedPart, ListQuery, ObjectAttributes, Protection, Region,
    ResidencySource, Storage, StorageConfig, StorageError, VersionRecord, WriteCondition,
};
use nuage_testsupport::nodes::{TestNode, TestNodes};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const MIB: u64 = 1024 * 1024;
const TENANT: &str = "111122223333";
const FR_BUCKET: &str = "factures";
const EU_BUCKET: &str = "europe";
const FR_NODES: [&str; 2] = ["fr-1-n1", "fr-2-n1"];

const FR_POLICY: &str = r#"{"allowed_countries":["FR"],"durability":{"replicas":2},"min_sites":2}"#;
const EU_POLICY: &str =
    r#"{"allowed_jurisdictions":["EU"],"durability":{"replicas":2},"min_sites":2}"#;
const US_POLICY: &str = r#"{"allowed_countries":["US"],"durability":{"replicas":1}}"#;

/// The tenants' policies, as the identity service would answer them.
struct TenantPolicies(BTreeMap<String, String>);

impl ResidencySource for TenantPolicies {
    fn tenant_policy<'a>(
        &'a self,
        tenant: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Option<String>, String>> {
        async move { Ok(self.0.get(tenant).cloned()) }.boxed()
    }
}

struct Fixture {
    nodes: TestNodes,
    cluster: ClusterBlobStore,
    storage: Storage,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// Four nodes, the cluster store (node states polled once), the storage
    /// service over it, and the two buckets.
    async fn start() -> Self {
        let nodes = TestNodes::start("residency-test", |_| None).await;
        let topology = Arc::clone(&nodes.topology);
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(EmbeddedMetaStore::open(&dir.path().join("meta.redb")).unwrap());
        let mut config = ClusterConfig::new(
            topology,
            nodes.gateway_material(),
            ResidencyPolicy::from_json(US_POLICY).unwrap(),
        );
        config.idle_timeout = Duration::from_secs(10);
        let cluster = ClusterBlobStore::new(
            config,
            Arc::clone(&meta) as Arc<dyn nuage_meta::DocumentStore>,
        )
        .unwrap();
        assert_eq!(cluster.poll_nodes().await, []);

        let root = nuage_crypto::RootKeyFile::open_or_create(&dir.path().join("root.key")).unwrap();
        let keys = nuage_kms::KeyService::new(
            Arc::clone(&meta) as Arc<dyn nuage_meta::DocumentStore>,
            root,
        );
        let storage = Storage::new(
            Arc::clone(&meta) as Arc<dyn MetaStore>,
            Arc::new(cluster.clone()) as Arc<dyn nuage_blob::BlobStore>,
            Arc::new(nuage_base::SystemClock),
            keys,
            StorageConfig {
                regions: vec![Region {
                    name: "eu-west".into(),
                    country: "FR".into(),
                }],
                default_region_aliases: Vec::new(),
            },
        )
        .with_residency(Arc::new(TenantPolicies(BTreeMap::from([(
            TENANT.to_owned(),
            EU_POLICY.to_owned(),
        )]))));
        for bucket in [FR_BUCKET, EU_BUCKET] {
            storage.create_bucket(bucket, None, TENANT).await.unwrap();
        }
        storage
            .set_bucket_residency_policy(FR_BUCKET, Some(FR_POLICY.to_owned()))
            .await
            .unwrap();
        Self {
            nodes,
            cluster,
            storage,
            _dir: dir,
        }
    }

    /// Creates bucket `name` of the tenant with a residency policy of its own.
    async fn bucket_with_policy(&self, name: &str, policy: &str) {
        self.storage
            .create_bucket(name, None, TENANT)
            .await
            .unwrap();
        self.storage
            .set_bucket_residency_policy(name, Some(policy.to_owned()))
            .await
            .unwrap();
    }

    /// The nodes holding a file of `blob_id`, by scanning every disk.
    fn holders(&self, blob_id: &str) -> Vec<&str> {
        self.nodes
            .nodes
            .iter()
            .filter(|(_, n)| n.holds(blob_id))
            .map(|(id, _)| id.as_str())
            .collect()
    }

    /// Every file of the nodes outside France.
    fn files_outside_france(&self) -> BTreeSet<PathBuf> {
        self.nodes
            .nodes
            .values()
            .filter(|n| n.country != "FR")
            .flat_map(TestNode::files)
            .collect()
    }

    /// Asserts that `blob_id` has its two replicas on the French nodes and
    /// no file anywhere else.
    fn assert_in_france(&self, blob_id: &str, what: &str) {
        assert_eq!(self.holders(blob_id), FR_NODES, "{what}: blob {blob_id}");
    }
}

/// Bytes that differ from chunk to chunk, so a misplaced chunk shows.
fn data(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i / 65_536) as u8 ^ seed)
        .collect()
}

fn body(bytes: &[u8]) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    // Several chunks, as a client's body arrives.
    let chunks: Vec<Result<Bytes, std::io::Error>> = bytes
        .chunks(MIB as usize)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(chunks)
}

async fn put(
    storage: &Storage,
    bucket: &str,
    key: &str,
    bytes: &[u8],
) -> Result<VersionRecord, StorageError> {
    let staged = storage
        .stage(
            bucket,
            key,
            body(bytes),
            Some(bytes.len() as u64),
            1 << 30,
            &[ChecksumAlgorithm::Crc32],
        )
        .await?;
    let checksums = staged.digests.checksums.clone();
    storage
        .put_object(
            bucket,
            key,
            staged,
            ObjectAttributes::default(),
            checksums,
            WriteCondition::None,
        )
        .await
}

/// A multipart upload of `key` in `bucket`, under the tenant's keys.
async fn new_upload(storage: &Storage, bucket: &str, key: &str) -> nuage_meta::UploadRecord {
    storage
        .create_upload(
            bucket,
            key,
            ObjectAttributes::default(),
            None,
            None,
            Protection::Tenant,
        )
        .await
        .unwrap()
}

/// CopyObject as the S3 front end does it: shares the source's blobs when
/// the service allows, else rewrites them for the destination.
async fn copy(
    storage: &Storage,
    source: &VersionRecord,
    bucket: &str,
    key: &str,
) -> Result<VersionRecord, StorageError> {
    if let Some(shared) = storage
        .share_copy(source, None, bucket, key, Protection::Tenant)
        .await?
    {
        return storage
            .put_copy(
                shared,
                ObjectAttributes::default(),
                source.checksums.clone(),
                WriteCondition::None,
            )
            .await;
    }
    let staged = storage
        .stage_copy(
            source,
            None,
            0,
            source.size,
            bucket,
            key,
            Protection::Tenant,
        )
        .await?;
    let checksums = staged.digests.checksums.clone();
    storage
        .put_object(
            bucket,
            key,
            staged,
            ObjectAttributes::default(),
            checksums,
            WriteCondition::None,
        )
        .await
}

/// GET: the object as stored, read back through the cluster and decrypted.
async fn get(storage: &Storage, bucket: &str, key: &str) -> Vec<u8> {
    let record = storage.head_object(bucket, key, None).await.unwrap();
    let chunks: Vec<Bytes> = storage
        .read_object(&record, None, 0, record.size)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    chunks.concat()
}

fn blobs_of(record: &VersionRecord) -> Vec<String> {
    record.segments.iter().map(|s| s.blob_id.clone()).collect()
}

async fn keys(storage: &Storage, bucket: &str) -> Vec<String> {
    let page = storage
        .list_objects(
            bucket,
            &ListQuery {
                prefix: String::new(),
                delimiter: None,
                after: None,
                max_keys: 1000,
            },
        )
        .await
        .unwrap();
    page.objects.into_iter().map(|o| o.key).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_of_a_french_bucket_stays_in_france() {
    let f = Fixture::start().await;
    let s = &f.storage;
    let mut french_blobs: Vec<(String, &str)> = Vec::new();

    // PUT.
    let put_bytes = data(1, 300_000);
    let object = put(s, FR_BUCKET, "facture.pdf", &put_bytes).await.unwrap();
    for blob in blobs_of(&object) {
        f.assert_in_france(&blob, "PUT");
        french_blobs.push((blob, "PUT"));
    }
    assert!(get(s, FR_BUCKET, "facture.pdf").await == put_bytes);

    // A multipart upload of three parts (5 MiB, 5 MiB, the rest).
    let upload = new_upload(s, FR_BUCKET, "archive.tar").await;
    let mp_bytes = data(2, (10 * MIB + 4321) as usize);
    let mut completed = Vec::new();
    for (i, part) in mp_bytes.chunks((5 * MIB) as usize).enumerate() {
        let number = i32::try_from(i + 1).unwrap();
        let staged = s
            .stage(
                FR_BUCKET,
                "archive.tar",
                body(part),
                Some(part.len() as u64),
                1 << 30,
                &[],
            )
            .await
            .unwrap();
        let record = s
            .put_part(
                FR_BUCKET,
                "archive.tar",
                &upload.upload_id,
                number,
                staged,
                Checksums::default(),
            )
            .await
            .unwrap();
        f.assert_in_france(&record.blob_id, "UploadPart");
        french_blobs.push((record.blob_id.clone(), "UploadPart"));
        completed.push(CompletedPart {
            part_number: record.part_number,
            etag: record.etag,
            checksums: Checksums::default(),
        });
    }
    assert_eq!(completed.len(), 3);
    let multipart = s
        .complete_upload(
            FR_BUCKET,
            "archive.tar",
            &upload.upload_id,
            &completed,
            WriteCondition::None,
            &Checksums::default(),
        )
        .await
        .unwrap();
    assert_eq!(multipart.segments.len(), 3);
    assert!(get(s, FR_BUCKET, "archive.tar").await == mp_bytes);

    // An object of the EU bucket: placed under its tenant's policy (EU),
    // which the service read through the residency source. The cluster's
    // default (US) would have put it on us-1.
    let eu_bytes = data(3, 200_000);
    let eu_object = put(s, EU_BUCKET, "rapport.pdf", &eu_bytes).await.unwrap();
    let eu_blob = blobs_of(&eu_object).remove(0);
    let holders = f.holders(&eu_blob);
    assert_eq!(holders.len(), 2, "{holders:?}");
    assert!(!holders.contains(&"us-1-n1"), "{holders:?}");

    // CopyObject from the FR bucket into the EU bucket: another effective
    // policy, so the blob is not shared but rewritten, under EU.
    let to_eu = copy(s, &object, EU_BUCKET, "facture-copie.pdf")
        .await
        .unwrap();
    let to_eu_blob = blobs_of(&to_eu).remove(0);
    assert_ne!(
        to_eu_blob,
        blobs_of(&object)[0],
        "a copy across policies shares nothing"
    );
    let holders = f.holders(&to_eu_blob);
    assert_eq!(holders.len(), 2, "{holders:?}");
    assert!(!holders.contains(&"us-1-n1"), "{holders:?}");
    assert!(get(s, EU_BUCKET, "facture-copie.pdf").await == put_bytes);

    // CopyObject from the EU bucket into the FR bucket: rewritten in France,
    // wherever the source's replicas are.
    let to_fr = copy(s, &eu_object, FR_BUCKET, "rapport.pdf").await.unwrap();
    let to_fr_blob = blobs_of(&to_fr).remove(0);
    assert_ne!(to_fr_blob, eu_blob);
    f.assert_in_france(&to_fr_blob, "CopyObject from the EU bucket");
    french_blobs.push((to_fr_blob, "CopyObject from the EU bucket"));
    assert!(get(s, FR_BUCKET, "rapport.pdf").await == eu_bytes);

    // CopyObject within the FR bucket: the same policy, so the blob is shared.
    let same = copy(s, &object, FR_BUCKET, "facture-bis.pdf")
        .await
        .unwrap();
    assert_eq!(blobs_of(&same), blobs_of(&object));
    assert!(get(s, FR_BUCKET, "facture-bis.pdf").await == put_bytes);

    // UploadPartCopy of the EU object into an upload of the FR bucket, as
    // the front end does it: a whole single-part object would share its
    // blob, but not across policies; the part is rewritten in France.
    let upload = new_upload(s, FR_BUCKET, "assemblage").await;
    let shared = s
        .share_copy(
            &eu_object,
            None,
            FR_BUCKET,
            "assemblage",
            Protection::Tenant,
        )
        .await
        .unwrap();
    assert!(
        shared.is_none(),
        "a part copied across policies is not shared"
    );
    let source_body = s
        .read_object(&eu_object, None, 0, eu_object.size)
        .await
        .unwrap();
    let staged = s
        .stage_under(
            FR_BUCKET,
            "assemblage",
            source_body,
            Some(eu_object.size),
            1 << 30,
            &[],
            Protection::Tenant,
        )
        .await
        .unwrap();
    let part = s
        .put_part(
            FR_BUCKET,
            "assemblage",
            &upload.upload_id,
            1,
            staged,
            Checksums::default(),
        )
        .await
        .unwrap();
    assert_ne!(part.blob_id, eu_blob);
    f.assert_in_france(&part.blob_id, "UploadPartCopy");
    french_blobs.push((part.blob_id.clone(), "UploadPartCopy"));
    s.complete_upload(
        FR_BUCKET,
        "assemblage",
        &upload.upload_id,
        &[CompletedPart {
            part_number: 1,
            etag: part.etag,
            checksums: Checksums::default(),
        }],
        WriteCondition::None,
        &Checksums::default(),
    )
    .await
    .unwrap();
    assert!(get(s, FR_BUCKET, "assemblage").await == eu_bytes);

    // Every disk, at the end: each blob of the FR bucket on both French
    // nodes and nowhere else; nothing at all on the US node (every write
    // named a policy); on the German node, only blobs of the EU bucket.
    assert_eq!(french_blobs.len(), 6);
    for (blob, what) in &french_blobs {
        f.assert_in_france(blob, what);
    }
    assert!(
        f.nodes.nodes["us-1-n1"].files().is_empty(),
        "{:?}",
        f.nodes.nodes["us-1-n1"].files()
    );
    let eu_blobs = [eu_blob, to_eu_blob];
    for file in f.nodes.nodes["de-1-n1"].files() {
        let name = file.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(
            eu_blobs.iter().any(|b| name.starts_with(b.as_str())),
            "de-1 holds {name}, not a blob of the EU bucket"
        );
    }
    assert_eq!(
        keys(s, FR_BUCKET).await,
        [
            "archive.tar",
            "assemblage",
            "facture-bis.pdf",
            "facture.pdf",
            "rapport.pdf"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_french_nodes_down_nothing_is_written_anywhere() {
    let mut f = Fixture::start().await;
    let before = put(&f.storage, FR_BUCKET, "avant.pdf", &data(4, 100_000))
        .await
        .unwrap();
    // A source that stays readable with France down: in a bucket whose
    // policy keeps it in Germany.
    f.bucket_with_policy(
        "deutschland",
        r#"{"allowed_countries":["DE"],"durability":{"replicas":1}}"#,
    )
    .await;
    let de_object = put(&f.storage, "deutschland", "bericht.pdf", &data(5, 100_000))
        .await
        .unwrap();
    assert_eq!(f.holders(&blobs_of(&de_object)[0]), ["de-1-n1"]);
    let upload = new_upload(&f.storage, FR_BUCKET, "archive.tar").await;

    // A policy the topology can never meet: refused, permanently.
    f.bucket_with_policy(
        "italia",
        r#"{"allowed_countries":["IT"],"durability":{"replicas":1}}"#,
    )
    .await;
    match put(&f.storage, "italia", "x", b"ciao").await {
        Err(StorageError::PlacementRefused {
            message,
            permanent,
            full,
        }) => {
            assert!(permanent, "{message}");
            assert!(!full, "{message}");
            assert!(message.contains("IT"), "{message}");
        }
        other => panic!("expected a placement refusal, got {other:?}"),
    }
    assert!(keys(&f.storage, "italia").await.is_empty());

    for node in FR_NODES {
        f.nodes.nodes.get_mut(node).unwrap().kill();
    }
    let down: Vec<String> = f
        .cluster
        .poll_nodes()
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(down, FR_NODES);
    let outside = f.files_outside_france();

    // PUT: refused, for now (the nodes may come back).
    let refused = put(&f.storage, FR_BUCKET, "nouvelle.pdf", &data(6, 300_000)).await;
    let Err(StorageError::PlacementRefused {
        message,
        permanent,
        full,
    }) = refused
    else {
        panic!("expected a placement refusal, got {refused:?}");
    };
    println!("PUT refused: {message}");
    assert!(!permanent && !full, "{message}");
    assert!(message.contains("FR"), "{message}");
    assert!(matches!(
        f.storage.head_object(FR_BUCKET, "nouvelle.pdf", None).await,
        Err(StorageError::NoSuchKey)
    ));

    // A multipart part: refused, no part recorded.
    let part = data(7, (5 * MIB) as usize);
    let refused = f
        .storage
        .stage(
            FR_BUCKET,
            "archive.tar",
            body(&part),
            Some(part.len() as u64),
            1 << 30,
            &[],
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(StorageError::PlacementRefused {
                permanent: false,
                ..
            })
        ),
        "{refused:?}"
    );
    let parts = f
        .storage
        .list_parts(FR_BUCKET, "archive.tar", &upload.upload_id, 0, 1000)
        .await
        .unwrap();
    assert!(parts.parts.is_empty(), "{:?}", parts.parts);

    // A copy from the German bucket (its source readable): refused before
    // any byte is written.
    let refused = copy(&f.storage, &de_object, FR_BUCKET, "bericht.pdf").await;
    assert!(
        matches!(
            refused,
            Err(StorageError::PlacementRefused {
                permanent: false,
                ..
            })
        ),
        "{refused:?}"
    );

    assert_eq!(keys(&f.storage, FR_BUCKET).await, ["avant.pdf"]);
    assert_eq!(blobs_of(&before).len(), 1);
    assert_eq!(
        f.files_outside_france(),
        outside,
        "a refused write left a file on a node outside France"
    );
}
