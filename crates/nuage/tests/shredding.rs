//! Crypto-shredding through the real binary.
//!
//! 1. Objects stored under a KMS key whose deletion comes due are unreadable
//!    for good, with a message naming the key and its deletion date; the
//!    tenant's `ListShreddedKeys` reports the key; and once the server has
//!    restarted, no byte of the key's wrapped material is left anywhere in
//!    the data directory (it rewrites the metadata store at start).
//! 2. Deleting a tenant destroys its tenant key and its KMS keys: blobs
//!    copied aside before the deletion cannot be decrypted with what the data
//!    directory still holds once `nuage compact` has run (which refuses while
//!    the server runs).
//!
//! The tests never compact the store themselves: the server and the command
//! must.
//!
//! The waiting period of a key deletion is 7 days at least. The server is
//! restarted with `NUAGE_TEST_KEY_CLOCK_AHEAD_DAYS=8`, which (in debug builds
//! only, see `crates/nuage/src/debug_clock.rs`) runs the key service's clock
//! 8 days ahead while signatures keep the real time.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]
mod common;

use aws_sdk_s3::types::ServerSideEncryption;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::Server;
use common::audit::{admin_json, tenant_with_administrator};
use common::kms::kms_call_as;
use nuage_meta::DocumentStore as _;
use nuage_meta::MetaStore as _;
use serde_json::{Value, json};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

const KEY_CLOCK_AHEAD_DAYS_VAR: &str = "NUAGE_TEST_KEY_CLOCK_AHEAD_DAYS";

/// [`kms_call_as`] by the default administrator; must succeed.
#[track_caller]
fn kms_ok(server: &Server, operation: &str, body: &Value) -> Value {
    let creds = &server.credentials;
    let (status, body) = kms_call_as(
        server,
        (&creds.access_key_id, &creds.secret_access_key),
        operation,
        body,
    );
    assert_eq!(status, 200, "{operation}: {body}");
    body
}

/// Every regular file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out
}

/// The files under `dir` that hold `needle` anywhere in their bytes.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|path| {
            let bytes = std::fs::read(path).unwrap();
            bytes.windows(needle.len()).any(|w| w == needle)
        })
        .collect()
}

/// `nuage compact --data-dir DIR`: its exit status and what it printed.
fn nuage_compact(data_dir: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nuage"))
        .arg("compact")
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), printed)
}

/// The forms of `bytes` that could be found in the data directory: raw, and
/// base64 as JSON documents hold them.
fn forms(bytes: &[u8]) -> [Vec<u8>; 2] {
    [bytes.to_vec(), BASE64.encode(bytes).into_bytes()]
}

/// Opens the (closed) metadata store of `data_dir`.
fn meta(data_dir: &Path) -> nuage_meta::embedded::EmbeddedMetaStore {
    nuage_meta::embedded::EmbeddedMetaStore::open(&data_dir.join("meta.redb")).unwrap()
}

/// The wrapped material versions of a KMS key as stored.
async fn stored_materials(data_dir: &Path, tenant: &str, key_id: &str) -> Vec<Vec<u8>> {
    let doc = meta(data_dir)
        .get_document("kms.key", &format!("{tenant}/{key_id}"))
        .await
        .unwrap()
        .unwrap();
    let key: nuage_kms::KmsKey = serde_json::from_slice(&doc.value).unwrap();
    key.materials.into_iter().map(|m| m.wrapped).collect()
}

fn start_ahead(data_dir: &Path, days: &str) -> Server {
    Server::start_in_with_env(
        data_dir,
        &[],
        &[(KEY_CLOCK_AHEAD_DAYS_VAR, OsStr::new(days))],
    )
}

#[tokio::test]
async fn a_deleted_kms_key_shreds_its_objects_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path();
    let mut server = Server::start_in(data_dir, &[]);
    let created = kms_ok(
        &server,
        "CreateKey",
        &json!({"Description": "invoices 2026"}),
    );
    let key_id = created["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();
    let key_arn = created["KeyMetadata"]["Arn"].as_str().unwrap().to_owned();
    let tenant = key_arn.split(':').nth(4).unwrap().to_owned();
    kms_ok(&server, "RotateKeyOnDemand", &json!({"KeyId": key_id}));

    let s3 = server.client();
    let bucket = "shredded";
    s3.create_bucket().bucket(bucket).send().await.unwrap();
    let secret = common::random_bytes(200_000, 7);
    for object in ["invoice-1", "invoice-2"] {
        s3.put_object()
            .bucket(bucket)
            .key(object)
            .server_side_encryption(ServerSideEncryption::AwsKms)
            .ssekms_key_id(&key_arn)
            .body(secret.clone().into())
            .send()
            .await
            .unwrap();
    }
    let plain = common::random_bytes(10_000, 8);
    s3.put_object()
        .bucket(bucket)
        .key("plain")
        .body(plain.clone().into())
        .send()
        .await
        .unwrap();
    assert_eq!(common::get_bytes(&s3, bucket, "invoice-1").await, secret);
    let scheduled = kms_ok(
        &server,
        "ScheduleKeyDeletion",
        &json!({"KeyId": key_id, "PendingWindowInDays": 7}),
    );
    let deletion_date = scheduled["DeletionDate"].as_f64().unwrap();

    // What must disappear: the key's wrapped materials, as stored. The scan
    // below finds them while they exist (so its silence later means
    // something).
    server.stop();
    let materials = stored_materials(data_dir, &tenant, &key_id).await;
    assert_eq!(materials.len(), 2);
    for material in &materials {
        let [_, base64] = forms(material);
        assert_eq!(
            files_holding(data_dir, &base64),
            [data_dir.join("meta.redb")]
        );
    }

    // Eight days later, for the key service.
    let mut server = start_ahead(data_dir, "8");
    let s3 = server.client();
    for object in ["invoice-1", "invoice-2"] {
        let (code, status, message) =
            common::failure_with_message(s3.get_object().bucket(bucket).key(object).send().await);
        assert_eq!((code.as_str(), status), ("KMS.NotFoundException", 400));
        // S3 finds the key gone when it authorizes the read, before any
        // unwrap: the key service's words, naming the key and the date.
        assert!(
            message.contains("every object and ciphertext encrypted under it is crypto-shredded"),
            "{message}"
        );
        assert!(message.contains(&key_arn), "{message}");
        assert!(message.contains("was deleted on 20"), "{message}");
    }
    let (code, status, message) = common::failure_with_message(
        s3.copy_object()
            .bucket(bucket)
            .key("copy")
            .copy_source(format!("{bucket}/invoice-2"))
            .send()
            .await,
    );
    assert_eq!((code.as_str(), status), ("KMS.NotFoundException", 400));
    assert!(message.contains("crypto-shredded"), "{message}");
    // HEAD decrypts nothing under the KMS key (as in AWS, it needs no KMS
    // permission): it still describes the object.
    let head = s3
        .head_object()
        .bucket(bucket)
        .key("invoice-1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.server_side_encryption(),
        Some(&ServerSideEncryption::AwsKms)
    );
    // Other objects are untouched.
    assert_eq!(common::get_bytes(&s3, bucket, "plain").await, plain);

    // The tenant's report.
    let listed = kms_ok(&server, "ListShreddedKeys", &json!({}));
    assert_eq!(listed["Truncated"], false);
    let entries = listed["ShreddedKeys"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{listed}");
    let entry = &entries[0];
    assert_eq!(entry["KeyId"], key_id.as_str());
    assert_eq!(entry["KeyArn"], key_arn.as_str());
    assert_eq!(entry["Description"], "invoices 2026");
    assert_eq!(entry["MaterialVersionsDestroyed"], 2);
    assert_eq!(entry["Origin"], "AWS_KMS");
    assert!((entry["ScheduledDeletionDate"].as_f64().unwrap() - deletion_date).abs() < 0.01);
    assert!(entry["DeletionDate"].as_f64().unwrap() >= deletion_date);
    let creds = &server.credentials;
    let (status, described) = kms_call_as(
        &server,
        (&creds.access_key_id, &creds.secret_access_key),
        "DescribeKey",
        &json!({"KeyId": key_id}),
    );
    assert_eq!(
        (status, described["__type"].as_str()),
        (400, Some("NotFoundException"))
    );

    // Nothing that holds the material remains. Live documents first; then
    // every byte of every file, once the server has restarted.
    server.stop();
    let store = meta(data_dir);
    for namespace in [
        "kms.key",
        "kms.alias",
        "kms.shredded-key",
        "kms.shredded-order",
    ] {
        for doc in store
            .scan_documents(namespace, "", None, 10_000)
            .await
            .unwrap()
        {
            for material in &materials {
                for form in forms(material) {
                    assert!(
                        !doc.value.windows(form.len()).any(|w| w == form),
                        "{namespace}/{}",
                        doc.key
                    );
                }
            }
        }
    }
    drop(store);
    // redb leaves the deleted record's pages as they were (observed, not
    // asserted: a later write may happen to reuse them).
    let stale_before_restart = materials
        .iter()
        .flat_map(|m| forms(m))
        .any(|form| !files_holding(data_dir, &form).is_empty());
    eprintln!(
        "shredding: stale copies of the material in freed pages before the restart: \
         {stale_before_restart}"
    );
    // The restart rewrites the store (the deletion asked for it, in its own
    // transaction); the server runs on the rewritten one, the key still
    // gone, the rest intact.
    let meta_path = data_dir.join("meta.redb");
    assert!(
        nuage_meta::embedded::EmbeddedMetaStore::deleted_documents_pending(&meta_path).unwrap()
    );
    let mut server = start_ahead(data_dir, "8");
    let listed = kms_ok(&server, "ListShreddedKeys", &json!({}));
    assert_eq!(listed["ShreddedKeys"][0]["KeyId"], key_id.as_str());
    assert_eq!(
        common::get_bytes(&server.client(), bucket, "plain").await,
        plain
    );
    server.stop();
    assert!(
        !nuage_meta::embedded::EmbeddedMetaStore::deleted_documents_pending(&meta_path).unwrap()
    );
    for material in &materials {
        for form in forms(material) {
            assert_eq!(files_holding(data_dir, &form), Vec::<PathBuf>::new());
        }
    }
    assert!(!data_dir.join("meta.redb.rewrite").exists());
}

/// Tries to unwrap an SSE-S3 object's data key with the tenant key the data
/// directory holds (through the root key file, as the server would).
async fn open_with_what_remains(
    data_dir: &Path,
    tenant: &str,
    wrapped: &[u8],
    binding: &[u8],
) -> bool {
    let store = std::sync::Arc::new(meta(data_dir));
    let root = nuage_crypto::RootKeyFile::open_or_create(&data_dir.join("root.key")).unwrap();
    let keys = nuage_kms::KeyService::new(store, root);
    keys.open_data_key(
        tenant,
        wrapped,
        binding,
        nuage_kms::AccessReason::CustomerInitiatedAccess,
    )
    .await
    .is_ok()
}

#[tokio::test]
async fn deleting_a_tenant_shreds_its_keys_so_copied_blobs_stay_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path();
    let mut server = Server::start_in(data_dir, &[]);
    let (tenant, acme) = tenant_with_administrator(&server, "acme", "alice");
    let s3 = server.client_with(|b| {
        b.credentials_provider(aws_credential_types::Credentials::new(
            &acme.0, &acme.1, None, None, "acme",
        ))
    });
    let (status, created) = kms_call_as(&server, (&acme.0, &acme.1), "CreateKey", &json!({}));
    assert_eq!(status, 200, "{created}");
    let kms_key_id = created["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();
    let kms_key_arn = created["KeyMetadata"]["Arn"].as_str().unwrap().to_owned();
    let bucket = "acme-data";
    s3.create_bucket().bucket(bucket).send().await.unwrap();
    let data = common::random_bytes(100_000, 9);
    s3.put_object()
        .bucket(bucket)
        .key("sse-s3")
        .body(data.clone().into())
        .send()
        .await
        .unwrap();
    s3.put_object()
        .bucket(bucket)
        .key("sse-kms")
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .ssekms_key_id(&kms_key_arn)
        .body(data.clone().into())
        .send()
        .await
        .unwrap();
    // The default tenant, which must lose nothing.
    let mine = server.client();
    mine.create_bucket()
        .bucket("default-data")
        .send()
        .await
        .unwrap();
    mine.put_object()
        .bucket("default-data")
        .key("kept")
        .body(data.clone().into())
        .send()
        .await
        .unwrap();

    // A "backup" of the tenant's blobs, and what the records say about them
    // (taken with the server stopped: the store has one writer).
    server.stop();
    let store = meta(data_dir);
    let record = store
        .get_version(bucket, "sse-s3", None)
        .await
        .unwrap()
        .unwrap();
    let bucket_record = store.get_bucket(bucket).await.unwrap().unwrap();
    let tenant_key = store
        .get_document("kms.tenant-key", &tenant)
        .await
        .unwrap()
        .unwrap()
        .value;
    drop(store);
    let materials = stored_materials(data_dir, &tenant, &kms_key_id).await;
    let backup = tempfile::tempdir().unwrap();
    let mut sealed = Vec::new();
    for segment in &record.segments {
        let blob = files(&data_dir.join("blobs"))
            .into_iter()
            .find(|p| p.file_name() == Some(OsStr::new(&segment.blob_id)))
            .unwrap();
        std::fs::copy(&blob, backup.path().join(&segment.blob_id)).unwrap();
        let wrapped = BASE64
            .decode(segment.sealed_key.as_deref().unwrap())
            .unwrap();
        let binding = nuage_crypto::Binding {
            tenant: &tenant,
            bucket,
            key: "sse-s3",
            blob: &segment.blob_id,
            region: &bucket_record.region,
        }
        .encode();
        sealed.push((wrapped, binding));
    }
    assert!(!sealed.is_empty());
    // The attempt is a real one: today, what the data directory holds opens
    // the data keys of the copied blobs.
    for (wrapped, binding) in &sealed {
        assert!(open_with_what_remains(data_dir, &tenant, wrapped, binding).await);
    }

    let mut server = Server::start_in(data_dir, &[]);
    let deleted = admin_json(&server, &["tenant", "delete", "acme", "--purge"]);
    assert_eq!(deleted["purged"]["buckets"], 1, "{deleted}");
    assert_eq!(
        deleted["shredded"],
        json!({"tenant_key": true, "kms_keys": 1, "kms_material_versions": 1, "external_key_stores": 0})
    );
    // The CLI's table form says it too (a tenant that never stored data has
    // no tenant key to destroy).
    admin_json(&server, &["tenant", "create", "bare", "--country", "FR"]);
    let out = Command::new(env!("CARGO_BIN_EXE_nuage"))
        .arg("admin")
        .args(["--endpoint", &server.endpoint])
        .arg("--data-dir")
        .arg(&server.data_dir)
        .args(["tenant", "delete", "bare"])
        .env_remove("NUAGE_OPERATOR_TOKEN")
        .output()
        .unwrap();
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{printed}");
    assert!(
        printed.contains(
            "crypto-shredded no tenant key (it had stored no data), 0 KMS key(s) with 0 material \
             version(s), 0 external key store(s)"
        ),
        "{printed}"
    );
    // The default tenant still reads its data.
    assert_eq!(
        common::get_bytes(&server.client(), "default-data", "kept").await,
        data
    );
    // The command does not touch a store a server is running on.
    let (ok, printed) = nuage_compact(data_dir);
    assert!(!ok, "{printed}");
    assert!(printed.contains("stop it first"), "{printed}");
    server.stop();

    // The tenant key document is gone; with what remains, the copied blobs'
    // data keys do not open (a key service would make a new tenant key for
    // the id, which opens nothing of the old one's).
    let store = meta(data_dir);
    assert!(
        store
            .get_document("kms.tenant-key", &tenant)
            .await
            .unwrap()
            .is_none()
    );
    drop(store);
    let (ok, printed) = nuage_compact(data_dir);
    assert!(ok, "{printed}");
    assert!(printed.contains("live entries"), "{printed}");
    for (wrapped, binding) in &sealed {
        assert!(!open_with_what_remains(data_dir, &tenant, wrapped, binding).await);
    }
    // And no byte of the old tenant key or of the KMS key's material is
    // left in any file (the copies in the backup are ciphertext only).
    for secret in std::iter::once(&tenant_key).chain(&materials) {
        for form in forms(secret) {
            assert_eq!(files_holding(data_dir, &form), Vec::<PathBuf>::new());
            assert_eq!(files_holding(backup.path(), &form), Vec::<PathBuf>::new());
        }
    }
}
