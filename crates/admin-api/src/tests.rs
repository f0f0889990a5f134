//! The admin API against real services on a temporary embedded store.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use super::*;
use nuage_base::SystemClock;
use nuage_kms::NewKey;
use nuage_storage::{Checksums, ObjectAttributes, Region, StorageConfig, WriteCondition};
use serde_json::{Value, json};
use std::sync::Arc;

const TOKEN: &str = "nuop_test_token_0123456789";

struct Fixture {
    api: AdminApi,
    storage: Storage,
    keys: CustomerKeys,
    meta: Arc<nuage_meta::embedded::EmbeddedMetaStore>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let meta = Arc::new(
        nuage_meta::embedded::EmbeddedMetaStore::open(&dir.path().join("meta.redb")).unwrap(),
    );
    let blobs =
        Arc::new(nuage_blob::local::LocalBlobStore::open(&dir.path().join("blobs")).unwrap());
    let clock: Arc<dyn nuage_base::Clock> = Arc::new(SystemClock);
    let iam = Iam::new(
        Arc::clone(&meta) as Arc<dyn nuage_meta::DocumentStore>,
        Arc::clone(&clock),
    );
    let root = nuage_crypto::RootKeyFile::open_or_create(&dir.path().join("root.key")).unwrap();
    let keys = nuage_kms::KeyService::new(
        Arc::clone(&meta) as Arc<dyn nuage_meta::DocumentStore>,
        root,
    );
    let customer_keys = CustomerKeys::new(keys.clone(), Arc::clone(&clock), "fr-par");
    let storage = Storage::new(
        Arc::clone(&meta) as Arc<dyn nuage_meta::MetaStore>,
        blobs,
        clock,
        keys,
        StorageConfig {
            regions: vec![Region {
                name: "fr-par".into(),
                country: "FR".into(),
            }],
            default_region_aliases: Vec::new(),
        },
    )
    .with_customer_keys(customer_keys.clone());
    Fixture {
        api: AdminApi::new(iam, storage.clone(), customer_keys.clone(), TOKEN.into()),
        storage,
        keys: customer_keys,
        meta,
        _dir: dir,
    }
}

impl Fixture {
    async fn call_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (path, query) = path
            .split_once('?')
            .map_or((path, None), |(p, q)| (p, Some(q)));
        let mut headers = HeaderMap::new();
        if let Some(token) = token {
            headers.insert(
                http::header::AUTHORIZATION,
                format!("Bearer {token}").parse().unwrap(),
            );
        }
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let full = format!("/_nuage/admin/v1{path}");
        let response = self
            .api
            .handle_parts(&method, &full, query, &headers, &body)
            .await;
        let status = response.status().as_u16();
        let value = if response.body().is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(response.body()).unwrap()
        };
        (status, value)
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_with(method, path, Some(TOKEN), body).await
    }

    async fn tenant(&self, name: &str) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                "/tenants",
                Some(json!({"name": name, "legal_country": "FR", "billing_contact": "ops@example.org"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    async fn put(&self, bucket: &str, key: &str, data: &'static [u8]) {
        let stream = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(data))]);
        let staged = self
            .storage
            .stage(bucket, key, stream, Some(data.len() as u64), 1 << 20, &[])
            .await
            .unwrap();
        self.storage
            .put_object(
                bucket,
                key,
                staged,
                ObjectAttributes::default(),
                Checksums::default(),
                WriteCondition::None,
            )
            .await
            .unwrap();
    }

    /// A versioned bucket with two versions of one key, a delete marker on
    /// another, and an upload in progress.
    async fn fill_bucket(&self, bucket: &str, owner: &str) {
        self.storage
            .create_bucket(bucket, None, owner)
            .await
            .unwrap();
        self.storage.set_versioning(bucket, true).await.unwrap();
        self.put(bucket, "a", b"one").await;
        self.put(bucket, "a", b"two").await;
        self.put(bucket, "b", b"three").await;
        self.storage.delete_object(bucket, "b", None).await.unwrap();
        self.storage
            .create_upload(
                bucket,
                "c",
                ObjectAttributes::default(),
                None,
                None,
                nuage_storage::Protection::Tenant,
            )
            .await
            .unwrap();
    }

    async fn version_count(&self, bucket: &str) -> usize {
        let query = nuage_storage::VersionListQuery {
            max_keys: 1000,
            ..Default::default()
        };
        self.storage
            .list_object_versions(bucket, &query)
            .await
            .unwrap()
            .versions
            .len()
    }

    async fn upload_count(&self, bucket: &str) -> usize {
        self.storage
            .list_uploads(bucket, "", None, None, 1000)
            .await
            .unwrap()
            .uploads
            .len()
    }
}

#[tokio::test]
async fn requests_without_the_operator_token_are_refused() {
    let f = fixture();
    for token in [
        None,
        Some("wrong"),
        Some(""),
        Some("nuop_test_token_012345678"),
    ] {
        let (status, body) = f.call_with(Method::GET, "/tenants", token, None).await;
        assert_eq!(status, 401, "{token:?}");
        assert_eq!(body["error"]["code"], "Unauthorized");
    }
    // Even an unknown path answers 401, not 404, without the token.
    let (status, _) = f.call_with(Method::GET, "/secrets", None, None).await;
    assert_eq!(status, 401);
    let (status, _) = f.call(Method::GET, "/tenants", None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_empty_operator_token_opens_nothing() {
    let mut f = fixture();
    f.api.operator_token = String::new();
    let (status, _) = f.call_with(Method::GET, "/tenants", Some(""), None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_openapi_document_is_public() {
    let f = fixture();
    let (status, body) = f.call_with(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["openapi"], "3.0.3");
}

#[tokio::test]
async fn tenants_are_created_shown_suspended_and_resumed() {
    let f = fixture();
    let id = f.tenant("acme").await;
    assert_eq!(id.len(), 12);
    let (status, body) = f.call(Method::GET, "/tenants/acme", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["status"], "Active");
    assert_eq!(body["legal_country"], "FR");
    assert_eq!(body["bucket_count"], 0);
    let (status, body) = f
        .call(Method::POST, &format!("/tenants/{id}/suspend"), None)
        .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("Suspended")));
    let (status, body) = f.call(Method::POST, "/tenants/acme/resume", None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("Active")));
    let (status, body) = f.call(Method::GET, "/tenants", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["tenants"].as_array().unwrap().len(), 1);

    let (status, body) = f
        .call(
            Method::POST,
            "/tenants",
            Some(json!({"name": "acme", "legal_country": "FR"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("EntityAlreadyExists"))
    );
    let (status, body) = f.call(Method::GET, "/tenants/nobody", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("NoSuchEntity"))
    );
}

#[tokio::test]
async fn the_tenant_public_access_block_is_set_and_shown() {
    let f = fixture();
    let id = f.tenant("acme").await;
    let off = json!({"block_public_policy": false, "restrict_public_buckets": false});
    let (status, body) = f
        .call(Method::GET, "/tenants/acme/public-access-block", None)
        .await;
    assert_eq!((status, &body), (200, &off));
    let (_, tenant) = f.call(Method::GET, "/tenants/acme", None).await;
    assert_eq!(tenant["public_access_block"], off);

    let on = json!({"block_public_policy": true, "restrict_public_buckets": false});
    let (status, body) = f
        .call(
            Method::PUT,
            &format!("/tenants/{id}/public-access-block"),
            Some(on.clone()),
        )
        .await;
    assert_eq!((status, &body), (200, &on));
    let (status, body) = f
        .call(Method::GET, "/tenants/acme/public-access-block", None)
        .await;
    assert_eq!((status, &body), (200, &on));
    let (_, tenant) = f.call(Method::GET, &format!("/tenants/{id}"), None).await;
    assert_eq!(tenant["public_access_block"], on);
    let (_, list) = f.call(Method::GET, "/tenants", None).await;
    assert_eq!(list["tenants"][0]["public_access_block"], on);

    let both = json!({"block_public_policy": true, "restrict_public_buckets": true});
    let (status, body) = f
        .call(
            Method::PUT,
            "/tenants/acme/public-access-block",
            Some(both.clone()),
        )
        .await;
    assert_eq!((status, &body), (200, &both));
    let (status, body) = f
        .call(
            Method::PUT,
            "/tenants/acme/public-access-block",
            Some(off.clone()),
        )
        .await;
    assert_eq!((status, &body), (200, &off));
}

#[tokio::test]
async fn a_bad_public_access_block_is_400_and_changes_nothing() {
    let f = fixture();
    f.tenant("acme").await;
    let on = json!({"block_public_policy": true, "restrict_public_buckets": true});
    assert_eq!(
        f.call(
            Method::PUT,
            "/tenants/acme/public-access-block",
            Some(on.clone())
        )
        .await
        .0,
        200
    );
    for body in [
        None,
        Some(json!({})),
        Some(json!({"block_public_policy": false})),
        Some(json!({"block_public_policy": "false", "restrict_public_buckets": false})),
        Some(json!({"block_public_policy": 0, "restrict_public_buckets": false})),
        Some(json!({"block_public_policy": false, "restrict_public_buckets": null})),
        Some(json!({
            "block_public_policy": false,
            "restrict_public_buckets": false,
            "block_public_acls": true
        })),
        Some(json!([false, false])),
    ] {
        let (status, response) = f
            .call(
                Method::PUT,
                "/tenants/acme/public-access-block",
                body.clone(),
            )
            .await;
        assert_eq!(status, 400, "{body:?}: {response}");
        assert_eq!(response["error"]["code"], "InvalidInput", "{response}");
        let message = response["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("block_public_policy") && message.contains("restrict_public_buckets"),
            "{message}"
        );
    }
    let (_, body) = f
        .call(Method::GET, "/tenants/acme/public-access-block", None)
        .await;
    assert_eq!(body, on);
}

#[tokio::test]
async fn the_public_access_block_of_an_unknown_tenant_is_404_and_needs_the_token() {
    let f = fixture();
    f.tenant("acme").await;
    let off = json!({"block_public_policy": false, "restrict_public_buckets": false});
    let (status, body) = f
        .call(Method::GET, "/tenants/nobody/public-access-block", None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("NoSuchEntity"))
    );
    let (status, body) = f
        .call(
            Method::PUT,
            "/tenants/nobody/public-access-block",
            Some(off.clone()),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("NoSuchEntity"))
    );
    for (method, body) in [(Method::GET, None), (Method::PUT, Some(off.clone()))] {
        let (status, response) = f
            .call_with(method, "/tenants/acme/public-access-block", None, body)
            .await;
        assert_eq!(
            (status, response["error"]["code"].as_str()),
            (401, Some("Unauthorized"))
        );
    }
    let on = json!({"block_public_policy": true, "restrict_public_buckets": true});
    let (status, _) = f
        .call_with(
            Method::PUT,
            "/tenants/acme/public-access-block",
            Some("wrong"),
            Some(on),
        )
        .await;
    assert_eq!(status, 401);
    let (_, body) = f
        .call(Method::GET, "/tenants/acme/public-access-block", None)
        .await;
    assert_eq!(body, off);
    let (status, _) = f
        .call(Method::POST, "/tenants/acme/public-access-block", None)
        .await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn malformed_requests_are_400() {
    let f = fixture();
    for body in [
        None,
        Some(json!({"name": "x"})),
        Some(json!({"name": "x", "legal_country": "France"})),
        Some(json!({"name": "x", "legal_country": "FR", "country": "FR"})),
        Some(json!({"name": "bad name", "legal_country": "FR"})),
        Some(json!(["not", "an", "object"])),
    ] {
        let (status, response) = f.call(Method::POST, "/tenants", body.clone()).await;
        assert_eq!(status, 400, "{body:?}: {response}");
        assert!(
            response["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
}

#[tokio::test]
async fn oversized_bodies_are_refused_before_parsing() {
    let f = fixture();
    let big = "x".repeat(limits::ADMIN_REQUEST_BODY_BYTES_MAX + 1);
    let request = http::Request::builder()
        .method(Method::POST)
        .uri("/_nuage/admin/v1/tenants")
        .header(http::header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(http_body_util::Full::new(Bytes::from(big)))
        .unwrap();
    let response = f.api.handle(request).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // And a normal body through the same streaming path works.
    let request = http::Request::builder()
        .method(Method::POST)
        .uri("/_nuage/admin/v1/tenants")
        .header(http::header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(http_body_util::Full::new(Bytes::from(
            r#"{"name":"streamed","legal_country":"DE"}"#,
        )))
        .unwrap();
    assert_eq!(f.api.handle(request).await.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn users_and_keys_are_managed_and_secrets_shown_once() {
    let f = fixture();
    let id = f.tenant("acme").await;
    let (status, user) = f
        .call(
            Method::POST,
            "/tenants/acme/users",
            Some(json!({"name": "alice", "administrator": true})),
        )
        .await;
    assert_eq!(status, 201, "{user}");
    assert_eq!(user["inline_policies"], json!([ADMINISTRATOR_POLICY_NAME]));
    assert_eq!(user["arn"], format!("arn:aws:iam::{id}:user/alice"));
    let (status, plain) = f
        .call(
            Method::POST,
            &format!("/tenants/{id}/users"),
            Some(json!({"name": "bob"})),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(plain["inline_policies"], json!([]));
    let (_, users) = f.call(Method::GET, "/tenants/acme/users", None).await;
    assert_eq!(users["users"].as_array().unwrap().len(), 2);

    let (status, key) = f
        .call(Method::POST, "/tenants/acme/users/alice/keys", None)
        .await;
    assert_eq!(status, 201, "{key}");
    let key_id = key["access_key_id"].as_str().unwrap().to_owned();
    assert!(
        key["secret_access_key"]
            .as_str()
            .is_some_and(|s| s.len() >= 40)
    );
    assert_eq!(key["status"], "Active");
    let (status, listed) = f
        .call(Method::GET, "/tenants/acme/users/alice/keys", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed["access_keys"][0]["access_key_id"], key_id.as_str());
    assert!(!listed.to_string().contains("secret"), "{listed}");

    let path = format!("/tenants/acme/users/alice/keys/{key_id}");
    let (status, updated) = f
        .call(Method::PATCH, &path, Some(json!({"status": "Inactive"})))
        .await;
    assert_eq!(
        (status, updated["status"].as_str()),
        (200, Some("Inactive"))
    );
    let (status, _) = f
        .call(Method::PATCH, &path, Some(json!({"status": "Paused"})))
        .await;
    assert_eq!(status, 400);
    // Another user's path does not reach alice's key.
    let (status, _) = f
        .call(
            Method::DELETE,
            &format!("/tenants/acme/users/bob/keys/{key_id}"),
            None,
        )
        .await;
    assert_eq!(status, 404);

    // Two keys per user, as in AWS.
    assert_eq!(
        f.call(Method::POST, "/tenants/acme/users/alice/keys", None)
            .await
            .0,
        201
    );
    let (status, body) = f
        .call(Method::POST, "/tenants/acme/users/alice/keys", None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("LimitExceeded"))
    );

    assert_eq!(f.call(Method::DELETE, &path, None).await.0, 204);
    assert_eq!(f.call(Method::DELETE, &path, None).await.0, 404);

    // Deleting a user takes its remaining key and policy with it.
    assert_eq!(
        f.call(Method::DELETE, "/tenants/acme/users/alice", None)
            .await
            .0,
        204
    );
    assert_eq!(
        f.call(Method::GET, "/tenants/acme/users/alice", None)
            .await
            .0,
        404
    );
    assert_eq!(
        f.call(Method::GET, "/tenants/acme/users/alice/keys", None)
            .await
            .0,
        404
    );
    let (status, _) = f
        .call(
            Method::POST,
            "/tenants/nobody/users",
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_tenant_with_buckets_is_deleted_only_with_purge() {
    let f = fixture();
    let doomed = f.tenant("doomed").await;
    let other = f.tenant("other").await;
    f.fill_bucket("doomed-data", &doomed).await;
    f.fill_bucket("doomed-more", &doomed).await;
    f.fill_bucket("other-data", &other).await;
    // A bucket from before tenancy (no owner) is nobody's to purge.
    f.storage.create_bucket("legacy", None, "").await.unwrap();
    assert_eq!(
        f.call(
            Method::POST,
            "/tenants/doomed/users",
            Some(json!({"name": "u"}))
        )
        .await
        .0,
        201
    );
    assert_eq!(
        f.call(Method::POST, "/tenants/doomed/users/u/keys", None)
            .await
            .0,
        201
    );

    let (status, body) = f.call(Method::DELETE, "/tenants/doomed", None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "DeleteConflict");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("2 bucket") && message.contains("purge"),
        "{message}"
    );
    assert_eq!(f.version_count("doomed-data").await, 4);

    let (status, body) = f
        .call(Method::DELETE, "/tenants/doomed?purge=true", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["purged"],
        json!({"buckets": 2, "object_versions": 8, "uploads": 2})
    );
    // Its objects were written under its tenant key: shredded after the purge.
    assert_eq!(body["shredded"]["tenant_key"], true);
    assert_eq!(body["shredded"]["kms_keys"], 0);
    assert_eq!(f.call(Method::GET, "/tenants/doomed", None).await.0, 404);
    assert_eq!(
        f.call(Method::GET, &format!("/tenants/{doomed}/users"), None)
            .await
            .0,
        404
    );
    let names: Vec<String> = f
        .storage
        .list_buckets()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(names, ["legacy", "other-data"]);
    // The other tenant's data is untouched, down to its delete marker and upload.
    assert_eq!(f.version_count("other-data").await, 4);
    assert_eq!(f.upload_count("other-data").await, 1);
    let (_, body) = f.call(Method::GET, "/tenants/other", None).await;
    assert_eq!(
        (body["status"].as_str(), body["bucket_count"].as_u64()),
        (Some("Active"), Some(1))
    );
}

#[tokio::test]
async fn a_tenant_without_buckets_is_deleted_without_purge() {
    let f = fixture();
    f.tenant("empty").await;
    let (status, body) = f.call(Method::DELETE, "/tenants/empty", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["purged"], Value::Null);
    assert_eq!(
        body["shredded"],
        json!({"tenant_key": false, "kms_keys": 0, "kms_material_versions": 0, "external_key_stores": 0})
    );
    assert_eq!(body["tenant"]["name"], "empty");
    assert_eq!(f.call(Method::DELETE, "/tenants/empty", None).await.0, 404);
}

#[test]
fn the_administrator_policy_is_a_valid_identity_policy() {
    nuage_iam::check_policy_document(ADMINISTRATOR_POLICY, nuage_iam::PolicyKind::Identity)
        .unwrap();
}

/// The stored wrapped tenant key of `tenant` (namespace `kms.tenant-key`,
/// see `docs/kms.md`), if any.
async fn tenant_key_document(f: &Fixture, tenant: &str) -> Option<Vec<u8>> {
    use nuage_meta::DocumentStore as _;
    f.meta
        .get_document("kms.tenant-key", tenant)
        .await
        .unwrap()
        .map(|d| d.value)
}

#[tokio::test]
async fn deleting_a_tenant_shreds_its_tenant_key_and_kms_keys() {
    let f = fixture();
    let doomed = f.tenant("doomed").await;
    let other = f.tenant("other").await;
    // SSE-S3 data under the tenant key, and KMS keys in every state.
    let service = f.keys.key_service().clone();
    let (_, wrapped) = service.new_data_key(&doomed, b"blob").await.unwrap();
    let enabled = f.keys.create_key(&doomed, NewKey::default()).await.unwrap();
    f.keys
        .rotate_on_demand(&doomed, &enabled.key_id)
        .await
        .unwrap();
    let pending = f.keys.create_key(&doomed, NewKey::default()).await.unwrap();
    f.keys
        .schedule_deletion(&doomed, &pending.key_id, Some(7))
        .await
        .unwrap();
    let theirs = f.keys.create_key(&other, NewKey::default()).await.unwrap();
    let (_, their_wrapped) = service.new_data_key(&other, b"blob").await.unwrap();
    assert!(tenant_key_document(&f, &doomed).await.is_some());

    // No buckets: deleted without purge, and shredded all the same.
    let (status, body) = f.call(Method::DELETE, "/tenants/doomed", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["shredded"],
        json!({"tenant_key": true, "kms_keys": 2, "kms_material_versions": 3, "external_key_stores": 0})
    );
    assert_eq!(f.call(Method::GET, "/tenants/doomed", None).await.0, 404);
    assert!(tenant_key_document(&f, &doomed).await.is_none());
    for key in [&enabled, &pending] {
        assert!(matches!(
            f.keys.key(&doomed, &key.key_id).await,
            Err(nuage_kms::KmsError::NotFound(_))
        ));
    }
    // What was wrapped under the old tenant key opens no more (a new key
    // would be made for the id on use; it is not the old one).
    assert!(
        service
            .open_data_key(
                &doomed,
                &wrapped,
                b"blob",
                nuage_kms::AccessReason::CustomerInitiatedAccess
            )
            .await
            .is_err()
    );
    // The other tenant keeps everything.
    f.keys.key(&other, &theirs.key_id).await.unwrap();
    service
        .open_data_key(
            &other,
            &their_wrapped,
            b"blob",
            nuage_kms::AccessReason::CustomerInitiatedAccess,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn residency_policies_are_checked_stored_and_narrowed() {
    let f = fixture();
    let acme = f.tenant("acme").await;
    let other = f.tenant("other").await;
    f.storage
        .create_bucket("photos", None, &acme)
        .await
        .unwrap();
    f.storage
        .create_bucket("theirs", None, &other)
        .await
        .unwrap();

    // No policy: null, and the bucket has none in force either.
    let (status, body) = f.call(Method::GET, "/tenants/acme/residency", None).await;
    assert_eq!((status, &body["policy"]), (200, &Value::Null), "{body}");
    let (status, body) = f
        .call(Method::GET, "/tenants/acme/buckets/photos/residency", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["effective_source"], "none");

    // Not a policy: 400 with the parser's reason; nothing stored.
    let (status, body) = f
        .call(
            Method::PUT,
            "/tenants/acme/residency",
            Some(json!({"durability": {"replicas": 1}})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "InvalidResidencyPolicy");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("allowed_countries"),
        "{body}"
    );

    let france =
        json!({"allowed_countries": ["FR"], "durability": {"replicas": 3}, "min_sites": 2});
    let (status, body) = f
        .call(Method::PUT, "/tenants/acme/residency", Some(france.clone()))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tenant"], acme.as_str());
    assert_eq!(body["policy"]["min_sites"], 2);

    // A bucket policy must narrow it: fewer replicas widen the durability rule.
    let (status, body) = f
        .call(
            Method::PUT,
            "/tenants/acme/buckets/photos/residency",
            Some(json!({"allowed_countries": ["FR"], "durability": {"replicas": 1}})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "PolicyNotNarrower");
    assert_eq!(body["error"]["rule"], "durability", "{body}");
    // Another tenant's bucket is not found through this tenant.
    let (status, body) = f
        .call(
            Method::PUT,
            "/tenants/acme/buckets/theirs/residency",
            Some(france.clone()),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "NoSuchBucket");

    let narrower = json!({"allowed_countries": ["FR"], "required_qualifications": ["secnumcloud"], "durability": {"replicas": 3}, "min_sites": 3});
    let (status, body) = f
        .call(
            Method::PUT,
            "/tenants/acme/buckets/photos/residency",
            Some(narrower),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["effective_source"], "bucket");
    assert_eq!(body["effective"]["min_sites"], 3);
    assert!(body.get("feasibility").is_none(), "no topology: {body}");
    assert!(
        f.storage
            .bucket("photos")
            .await
            .unwrap()
            .residency_policy
            .unwrap()
            .contains("secnumcloud")
    );

    // A tenant policy the bucket's would no longer narrow is refused.
    let (status, body) = f
        .call(
            Method::PUT,
            "/tenants/acme/residency",
            Some(json!({"allowed_countries": ["DE"], "durability": {"replicas": 3}})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "ResidencyConflict");
    assert_eq!(body["error"]["buckets"], json!(["photos"]));

    // Cleared: 204, and the tenant's applies again.
    let (status, _) = f
        .call(
            Method::DELETE,
            "/tenants/acme/buckets/photos/residency",
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (_, body) = f
        .call(Method::GET, "/tenants/acme/buckets/photos/residency", None)
        .await;
    assert_eq!(body["effective_source"], "tenant", "{body}");
    assert_eq!(
        body["effective"]["allowed_countries"],
        json!(["FR"]),
        "{body}"
    );
    assert_eq!(body["effective"]["min_sites"], 2, "{body}");
}

#[test]
fn bucket_residency_is_logged_on_the_bucket() {
    let endpoint = Endpoint::PutBucketResidency {
        tenant: "acme".into(),
        bucket: "photos".into(),
    };
    assert_eq!(
        audit::target(&endpoint),
        Some(("acme", "PutBucketResidency", None))
    );
}

/// What a cluster endpoint asked the server's cluster for: the admin API
/// resolves the bucket and its effective policy, the cluster does the rest.
#[derive(Default)]
struct RecordingCluster {
    asked: std::sync::Mutex<Vec<String>>,
}

impl ClusterAdmin for RecordingCluster {
    fn nodes(&self) -> futures::future::BoxFuture<'_, ClusterAnswer> {
        Box::pin(async { Ok(json!({"nodes": []})) })
    }
    fn node<'a>(&'a self, node: &'a str) -> futures::future::BoxFuture<'a, ClusterAnswer> {
        Box::pin(async move {
            if node == "fr-1" {
                Ok(json!({"node": node}))
            } else {
                Err(ClusterAdminError::UnknownNode(node.to_owned()))
            }
        })
    }
    fn set_draining<'a>(
        &'a self,
        node: &'a str,
        draining: bool,
    ) -> futures::future::BoxFuture<'a, ClusterAnswer> {
        self.asked
            .lock()
            .unwrap()
            .push(format!("drain {node} {draining}"));
        Box::pin(async move { Ok(json!({"node": node, "draining": draining})) })
    }
    fn repair(&self) -> futures::future::BoxFuture<'_, ClusterAnswer> {
        Box::pin(async {
            Err(ClusterAdminError::Conflict(
                "repair runs on another gateway".into(),
            ))
        })
    }
    fn scrub(&self) -> futures::future::BoxFuture<'_, ClusterAnswer> {
        Box::pin(async { Ok(json!({"bad": 0})) })
    }
    fn compliance<'a>(
        &'a self,
        bucket: &'a str,
        policy: Option<&'a nuage_placement::ResidencyPolicy>,
    ) -> futures::future::BoxFuture<'a, ClusterAnswer> {
        self.asked.lock().unwrap().push(format!(
            "compliance {bucket} {}",
            policy.map_or(
                "default".to_owned(),
                nuage_placement::ResidencyPolicy::to_json
            )
        ));
        Box::pin(async move { Ok(json!({"bucket": bucket, "compliant": true})) })
    }
}

#[tokio::test]
async fn cluster_endpoints_need_a_cluster_and_resolve_the_effective_policy() {
    let mut f = fixture();
    let acme = f.tenant("acme").await;
    f.storage
        .create_bucket("photos", None, &acme)
        .await
        .unwrap();
    // A server on its own disk: 409 NotACluster, for every cluster endpoint.
    for (method, path) in [
        (Method::GET, "/cluster/nodes"),
        (Method::PUT, "/cluster/nodes/fr-1/drain"),
        (Method::POST, "/cluster/scrub"),
        (
            Method::GET,
            "/tenants/acme/buckets/photos/residency/compliance",
        ),
    ] {
        let (status, body) = f.call(method.clone(), path, None).await;
        assert_eq!(status, 409, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "NotACluster", "{body}");
    }
    let cluster = Arc::new(RecordingCluster::default());
    f.api = f.api.clone().with_cluster(cluster.clone());
    let (status, body) = f.call(Method::GET, "/cluster/nodes/de-9", None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("NoSuchNode"))
    );
    let (status, body) = f.call(Method::POST, "/cluster/repair", None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("ClusterConflict"))
    );
    let (status, body) = f
        .call(Method::DELETE, "/cluster/nodes/fr-1/drain", None)
        .await;
    assert_eq!((status, &body["draining"]), (200, &json!(false)), "{body}");
    let (status, _) = f
        .call(Method::POST, "/cluster/nodes/fr-1/drain", None)
        .await;
    assert_eq!(status, 405);

    // No policy anywhere: the cluster's default; then the tenant's; then the bucket's own.
    let path = "/tenants/acme/buckets/photos/residency/compliance";
    let (status, body) = f.call(Method::GET, path, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["policy_source"], &body["tenant"], &body["policy"]),
        (&json!("default"), &json!(acme), &Value::Null)
    );
    let eu = json!({"allowed_jurisdictions": ["EU"], "durability": {"replicas": 2}});
    let fr = json!({"allowed_countries": ["FR"], "durability": {"replicas": 2}});
    let (status, body) = f
        .call(Method::PUT, "/tenants/acme/residency", Some(eu))
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = f.call(Method::GET, path, None).await;
    assert_eq!(body["policy_source"], "tenant", "{body}");
    let (status, body) = f
        .call(
            Method::PUT,
            "/tenants/acme/buckets/photos/residency",
            Some(fr),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = f.call(Method::GET, path, None).await;
    assert_eq!(body["policy_source"], "bucket", "{body}");
    assert_eq!(body["policy"]["allowed_countries"], json!(["FR"]), "{body}");
    let (status, _) = f
        .call(
            Method::GET,
            "/tenants/acme/buckets/nope/residency/compliance",
            None,
        )
        .await;
    assert_eq!(status, 404);
    let asked = cluster.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 4, "{asked:?}");
    assert_eq!(asked[0], "drain fr-1 false");
    assert_eq!(asked[1], "compliance photos default");
    assert!(asked[2].contains("\"EU\""), "{asked:?}");
    assert!(asked[3].contains("\"FR\""), "{asked:?}");
}
