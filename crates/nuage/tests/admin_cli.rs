//! The operator's path end to end: `nuage admin` (the real binary) against a
//! real server, with the AWS SDK acting as the tenant it manages.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]
mod common;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use common::Server;
use serde_json::Value;
use std::fmt::Debug;
use std::process::{Command, Output};

/// Runs `nuage admin ARGS` against `server`, taking the token from its data
/// directory unless `args` say otherwise.
fn admin(server: &Server, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nuage"))
        .arg("admin")
        .args(["--endpoint", &server.endpoint])
        .arg("--data-dir")
        .arg(&server.data_dir)
        .args(args)
        .env_remove("NUAGE_OPERATOR_TOKEN")
        .output()
        .unwrap()
}

#[track_caller]
fn admin_ok(server: &Server, args: &[&str]) -> String {
    let out = admin(server, args);
    assert!(
        out.status.success(),
        "nuage admin {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[track_caller]
fn admin_json(server: &Server, args: &[&str]) -> Value {
    let mut with_json = args.to_vec();
    with_json.push("--json");
    serde_json::from_str(&admin_ok(server, &with_json)).unwrap()
}

/// Runs a command that must fail; returns its stderr.
#[track_caller]
fn admin_err(server: &Server, args: &[&str]) -> String {
    let out = admin(server, args);
    assert!(
        !out.status.success(),
        "nuage admin {args:?} should have failed; it printed {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// The S3 error code and HTTP status of a failed SDK call.
#[track_caller]
fn s3_failure<T: Debug, E: ProvideErrorMetadata + Debug>(
    result: Result<T, SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
) -> (Option<String>, u16) {
    let err = result.expect_err("the call should have been refused");
    let status = err.raw_response().map_or(0, |r| r.status().as_u16());
    (err.code().map(str::to_owned), status)
}

fn tenant_client(server: &Server, key: &Value) -> aws_sdk_s3::Client {
    let credentials = aws_credential_types::Credentials::new(
        key["access_key_id"].as_str().unwrap(),
        key["secret_access_key"].as_str().unwrap(),
        None,
        None,
        "nuage-admin-test",
    );
    server.client_with(|b| b.credentials_provider(credentials))
}

async fn read(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    let got = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    got.body.collect().await.unwrap().into_bytes().to_vec()
}

#[tokio::test]
async fn the_operator_onboards_suspends_and_purges_a_tenant() {
    let server = Server::start();
    // Data of the default tenant, which nothing below may touch.
    let default_s3 = server.client();
    default_s3
        .create_bucket()
        .bucket("default-data")
        .send()
        .await
        .unwrap();
    default_s3
        .put_object()
        .bucket("default-data")
        .key("keep")
        .body(b"mine".to_vec().into())
        .send()
        .await
        .unwrap();

    // A tenant, its administrator and a key.
    let tenant = admin_json(
        &server,
        &[
            "tenant",
            "create",
            "acme",
            "--country",
            "fr",
            "--billing-contact",
            "ops@acme.example",
        ],
    );
    let tenant_id = tenant["id"].as_str().unwrap().to_owned();
    assert_eq!(tenant["legal_country"], "FR");
    assert_eq!(tenant["status"], "Active");
    let listed = admin_ok(&server, &["tenant", "list"]);
    assert!(listed.starts_with("ID"), "{listed}");
    assert!(
        listed.contains(&tenant_id) && listed.contains("acme") && listed.contains("default"),
        "{listed}"
    );
    let user = admin_json(
        &server,
        &[
            "user",
            "create",
            "--tenant",
            "acme",
            "alice",
            "--administrator",
        ],
    );
    assert_eq!(user["inline_policies"][0], "AdministratorAccess");
    let key = admin_json(
        &server,
        &["key", "create", "--tenant", "acme", "--user", "alice"],
    );
    let key_id = key["access_key_id"].as_str().unwrap().to_owned();
    let keys = admin_ok(
        &server,
        &["key", "list", "--tenant", "acme", "--user", "alice"],
    );
    assert!(keys.contains(&key_id) && keys.contains("Active"), "{keys}");
    assert!(
        !keys.contains(key["secret_access_key"].as_str().unwrap()),
        "{keys}"
    );

    // The tenant's administrator uses S3 with that key.
    let s3 = tenant_client(&server, &key);
    s3.create_bucket().bucket("acme-data").send().await.unwrap();
    s3.put_object()
        .bucket("acme-data")
        .key("report.txt")
        .body(b"quarterly".to_vec().into())
        .send()
        .await
        .unwrap();
    assert_eq!(read(&s3, "acme-data", "report.txt").await, b"quarterly");
    let shown = admin_ok(&server, &["tenant", "show", &tenant_id]);
    assert!(
        shown.contains("buckets:") && shown.contains("ops@acme.example"),
        "{shown}"
    );

    // A deactivated key is refused; activated again, it works.
    admin_ok(
        &server,
        &[
            "key",
            "deactivate",
            "--tenant",
            "acme",
            "--user",
            "alice",
            &key_id,
        ],
    );
    let (code, status) = s3_failure(s3.list_buckets().send().await);
    assert_eq!((code.as_deref(), status), (Some("InvalidAccessKeyId"), 403));
    let out = admin_ok(
        &server,
        &[
            "key", "activate", "--tenant", "acme", "--user", "alice", &key_id,
        ],
    );
    assert!(out.contains("Active"), "{out}");
    s3.list_buckets().send().await.unwrap();

    // Suspended, the tenant's requests fail; resumed, they work again.
    let out = admin_ok(&server, &["tenant", "suspend", "acme"]);
    assert!(out.contains("Suspended"), "{out}");
    let (code, status) = s3_failure(
        s3.get_object()
            .bucket("acme-data")
            .key("report.txt")
            .send()
            .await,
    );
    assert_eq!(status, 403, "{code:?}");
    assert!(
        matches!(code.as_deref(), Some("AllAccessDisabled" | "AccessDenied")),
        "{code:?}"
    );
    admin_ok(&server, &["tenant", "resume", &tenant_id]);
    assert_eq!(read(&s3, "acme-data", "report.txt").await, b"quarterly");

    // A second user and key, created and deleted.
    admin_ok(&server, &["user", "create", "--tenant", "acme", "bob"]);
    let bob_key = admin_json(
        &server,
        &["key", "create", "--tenant", "acme", "--user", "bob"],
    );
    let bob_key_id = bob_key["access_key_id"].as_str().unwrap();
    admin_ok(
        &server,
        &[
            "key", "delete", "--tenant", "acme", "--user", "bob", bob_key_id,
        ],
    );
    let (code, _) = s3_failure(tenant_client(&server, &bob_key).list_buckets().send().await);
    assert_eq!(code.as_deref(), Some("InvalidAccessKeyId"));
    let users = admin_ok(&server, &["user", "list", "--tenant", "acme"]);
    assert!(users.contains("alice") && users.contains("bob"), "{users}");
    admin_ok(&server, &["user", "delete", "--tenant", "acme", "bob"]);
    let users = admin_ok(&server, &["user", "list", "--tenant", "acme"]);
    assert!(!users.contains("bob"), "{users}");

    // Deleting a tenant that owns data is refused, with a reason.
    let refused = admin_err(&server, &["tenant", "delete", "acme"]);
    assert!(
        refused.contains("1 bucket") && refused.contains("purge") && refused.contains("409"),
        "{refused}"
    );
    assert_eq!(read(&s3, "acme-data", "report.txt").await, b"quarterly");

    // With --purge, the tenant and its data are gone; the default tenant's are not.
    let deleted = admin_json(&server, &["tenant", "delete", "acme", "--purge"]);
    assert_eq!(deleted["purged"]["buckets"], 1);
    assert_eq!(deleted["purged"]["object_versions"], 1);
    let missing = admin_err(&server, &["tenant", "show", "acme"]);
    assert!(
        missing.contains("does not exist") && missing.contains("404"),
        "{missing}"
    );
    let (code, _) = s3_failure(s3.list_buckets().send().await);
    assert_eq!(code.as_deref(), Some("InvalidAccessKeyId"));
    let (_, status) = s3_failure(default_s3.head_bucket().bucket("acme-data").send().await);
    assert_eq!(status, 404);
    assert_eq!(read(&default_s3, "default-data", "keep").await, b"mine");
    let buckets = default_s3.list_buckets().send().await.unwrap();
    let names: Vec<&str> = buckets.buckets().iter().filter_map(|b| b.name()).collect();
    assert_eq!(names, ["default-data"]);
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_refused_clearly() {
    let server = Server::start();
    let refused = admin_err(&server, &["tenant", "list", "--token", "nuop_wrong"]);
    assert!(
        refused.contains("refused the operator token") && refused.contains("401"),
        "{refused}"
    );
    // The environment variable takes precedence over the data directory.
    let out = Command::new(env!("CARGO_BIN_EXE_nuage"))
        .args(["admin", "tenant", "list", "--endpoint", &server.endpoint])
        .arg("--data-dir")
        .arg(&server.data_dir)
        .env("NUAGE_OPERATOR_TOKEN", "nuop_also_wrong")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    // No token anywhere.
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nuage"))
        .args(["admin", "tenant", "list", "--endpoint", &server.endpoint])
        .arg("--data-dir")
        .arg(empty.path())
        .env_remove("NUAGE_OPERATOR_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no operator token"), "{stderr}");

    // The raw API answers JSON errors, and S3 credentials are no way in.
    let (status, _, body) =
        common::raw_request(&server.endpoint, "GET", "/_nuage/admin/v1/tenants", &[]);
    assert_eq!(status, 401);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], "Unauthorized");
    let bearer = format!("Bearer {}", server.credentials.secret_access_key);
    let (status, _, _) = common::raw_request(
        &server.endpoint,
        "GET",
        "/_nuage/admin/v1/tenants",
        &[("Authorization", &bearer)],
    );
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_openapi_document_is_served() {
    let server = Server::start();
    let (status, headers, body) = common::raw_request(
        &server.endpoint,
        "GET",
        "/_nuage/admin/v1/openapi.json",
        &[],
    );
    assert_eq!(status, 200);
    assert_eq!(
        common::header(&headers, "content-type"),
        Some("application/json")
    );
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    assert!(doc["paths"]["/tenants/{tenant}"]["delete"].is_object());
}

#[tokio::test]
async fn the_cli_speaks_https_to_a_self_signed_server() {
    let temp = tempfile::tempdir().unwrap();
    let server = Server::start_in(temp.path(), &["--tls"]);
    assert!(
        server.endpoint.starts_with("https://"),
        "{}",
        server.endpoint
    );
    // The data directory's self-signed certificate is trusted.
    let listed = admin_ok(&server, &["tenant", "list"]);
    assert!(listed.contains("default"), "{listed}");
    // Without it, the certificate is refused.
    let elsewhere = tempfile::tempdir().unwrap();
    let token: toml::Value = toml::from_str(
        &std::fs::read_to_string(temp.path().join("operator-credentials.toml")).unwrap(),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nuage"))
        .args(["admin", "tenant", "list", "--endpoint", &server.endpoint])
        .arg("--data-dir")
        .arg(elsewhere.path())
        .args(["--token", token["token"].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach") && stderr.to_lowercase().contains("certificate"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_operator_blocks_public_bucket_policies_tenant_wide() {
    let server = Server::start();
    let s3 = server.client();
    let bucket = "public-site";
    s3.create_bucket().bucket(bucket).send().await.unwrap();
    s3.put_object()
        .bucket(bucket)
        .key("key")
        .body(b"hello".to_vec().into())
        .send()
        .await
        .unwrap();
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::{bucket}/*"}}]}}"#
    );
    let anonymous_get =
        || common::raw_request(&server.endpoint, "GET", &format!("/{bucket}/key"), &[]).0;
    let shown = admin_ok(&server, &["tenant", "show", "default"]);
    assert!(
        shown.contains("block public policy:") && shown.contains("restrict public buckets:"),
        "{shown}"
    );

    // Blocked: a public bucket policy is refused.
    let out = admin_ok(
        &server,
        &[
            "tenant",
            "public-access-block",
            "default",
            "--block-public-policy",
        ],
    );
    assert!(out.contains("block public policy:"), "{out}");
    let tenant = admin_json(&server, &["tenant", "show", "default"]);
    assert_eq!(
        tenant["public_access_block"],
        serde_json::json!({"block_public_policy": true, "restrict_public_buckets": false})
    );
    let (code, status) = s3_failure(
        s3.put_bucket_policy()
            .bucket(bucket)
            .policy(&policy)
            .send()
            .await,
    );
    assert_eq!((code.as_deref(), status), (Some("AccessDenied"), 403));
    assert_eq!(anonymous_get(), 403);

    // Cleared: the same policy is accepted and opens the object to everyone.
    let cleared = admin_json(&server, &["tenant", "public-access-block", "default"]);
    assert_eq!(
        cleared,
        serde_json::json!({"block_public_policy": false, "restrict_public_buckets": false})
    );
    s3.put_bucket_policy()
        .bucket(bucket)
        .policy(&policy)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous_get(), 200);

    // Restricted: the public policy grants nothing to anonymous callers any
    // more, while the owner still reads.
    let restricted = admin_json(
        &server,
        &[
            "tenant",
            "public-access-block",
            "default",
            "--restrict-public-buckets",
        ],
    );
    assert_eq!(
        restricted,
        serde_json::json!({"block_public_policy": false, "restrict_public_buckets": true})
    );
    assert_eq!(anonymous_get(), 403);
    assert_eq!(read(&s3, bucket, "key").await, b"hello");
    let shown = admin_ok(&server, &["tenant", "show", "default"]);
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("restrict public buckets:") && l.ends_with("on")),
        "{shown}"
    );
}
