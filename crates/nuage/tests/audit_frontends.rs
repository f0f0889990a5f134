//! The S3, KMS and admin front ends' audit entries, through the real binary
//! driven by the AWS SDK, the aws CLI and `nuage admin`: each kind of request
//! (allowed, denied by default, denied by an explicit statement, presigned,
//! anonymous, using an SSE-KMS key, a KMS operation, an operator action) is
//! in the tenant's log with the right fields, read back through the real
//! `nuage audit pull` and `search`, and the pulled log verifies. The admin
//! OpenAPI document's access approval operations are the routes the server
//! serves.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]
mod common;

use base64::Engine as _;
use common::Server;
use common::audit::{admin_json, audit, pull_verified, search, tenant_of, user_with_key};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Pulls the tenant's log into `dir` (verifying it) as the administrator.
#[track_caller]
fn pull(server: &Server, dir: &Path) {
    pull_verified(server, dir);
}

/// The one entry matching `args` (fails listing what matched otherwise).
#[track_caller]
fn one(dir: &Path, args: &[&str]) -> Value {
    let found = search(dir, args);
    assert_eq!(found.len(), 1, "{args:?} matched {found:#?}");
    found.into_iter().next().unwrap()
}

fn sdk_as(server: &Server, (key, secret): (&str, &str)) -> aws_sdk_s3::Client {
    let creds = aws_credential_types::Credentials::new(key, secret, None, None, "test");
    server.client_with(|b| b.credentials_provider(creds))
}

#[track_caller]
fn assert_actor(entry: &Value, kind: &str, arn: &str, auth: &str, key: &str) {
    assert_eq!(entry["actor"]["kind"], kind, "{entry}");
    assert_eq!(entry["actor"]["id"], arn, "{entry}");
    assert_eq!(entry["actor"]["auth"], auth, "{entry}");
    assert_eq!(entry["actor"]["access_key_id"], key, "{entry}");
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_kms_and_admin_requests_are_in_the_tenants_log() {
    let server = Server::start();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let admin_key = server.credentials.access_key_id.clone();
    let tenant = tenant_of(&server, home);
    let admin_arn = format!("arn:aws:iam::{tenant}:user/admin");
    let bucket = common::bucket_name("audit-fe");
    let object_arn = |key: &str| format!("arn:aws:s3:::{bucket}/{key}");
    let s3 = server.client();

    // Allowed S3 requests through the SDK.
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    s3.put_object()
        .bucket(&bucket)
        .key("doc.txt")
        .body(b"hello".to_vec().into())
        .send()
        .await
        .unwrap();
    common::get_bytes(&s3, &bucket, "doc.txt").await;
    s3.list_objects_v2().bucket(&bucket).send().await.unwrap();
    s3.put_object()
        .bucket(&bucket)
        .key("gone.txt")
        .body(b"x".to_vec().into())
        .send()
        .await
        .unwrap();
    s3.delete_object()
        .bucket(&bucket)
        .key("gone.txt")
        .send()
        .await
        .unwrap();
    s3.put_object()
        .bucket(&bucket)
        .key("secret.txt")
        .body(b"s".to_vec().into())
        .send()
        .await
        .unwrap();

    // bob has no policy: a default deny.
    let bob = user_with_key(&server, home, "bob");
    let denied = sdk_as(&server, (&bob.0, &bob.1))
        .get_object()
        .bucket(&bucket)
        .key("doc.txt")
        .send()
        .await;
    assert!(denied.is_err());
    // carol may read everything but `secret*`, which a Deny statement refuses.
    let carol = user_with_key(&server, home, "carol");
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[
            {{"Sid":"ReadAll","Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::{bucket}/*"}},
            {{"Sid":"DenySecret","Effect":"Deny","Action":"s3:GetObject","Resource":"arn:aws:s3:::{bucket}/secret*"}}]}}"#
    );
    common::aws_ok(
        &server,
        home,
        &[
            "iam",
            "put-user-policy",
            "--user-name",
            "carol",
            "--policy-name",
            "read-but-secret",
            "--policy-document",
            &policy,
        ],
    );
    let carol_s3 = sdk_as(&server, (&carol.0, &carol.1));
    assert!(
        carol_s3
            .get_object()
            .bucket(&bucket)
            .key("secret.txt")
            .send()
            .await
            .is_err()
    );

    // A presigned GET (the aws CLI presigns, a raw client fetches).
    let url = common::aws_ok(
        &server,
        home,
        &["s3", "presign", &format!("s3://{bucket}/doc.txt")],
    );
    let path = url.strip_prefix(&server.endpoint).unwrap();
    let (status, _, body) = common::raw_request(&server.endpoint, "GET", path, &[]);
    assert_eq!((status, body.as_slice()), (200, b"hello".as_slice()));
    // An anonymous GET on the tenant's bucket: refused, logged as the owner's.
    let (status, _, _) =
        common::raw_request(&server.endpoint, "GET", &format!("/{bucket}/doc.txt"), &[]);
    assert_eq!(status, 403);

    // SSE-KMS: an object under a customer key, read back.
    let key_arn = common::aws_ok(
        &server,
        home,
        &["kms", "create-key", "--query", "KeyMetadata.Arn"],
    );
    common::aws_ok(
        &server,
        home,
        &[
            "s3api",
            "put-object",
            "--bucket",
            &bucket,
            "--key",
            "kms.txt",
            "--server-side-encryption",
            "aws:kms",
            "--ssekms-key-id",
            &key_arn,
        ],
    );
    let out_file = home.join("kms-out.txt");
    common::aws_ok(
        &server,
        home,
        &[
            "s3api",
            "get-object",
            "--bucket",
            &bucket,
            "--key",
            "kms.txt",
            out_file.to_str().unwrap(),
        ],
    );

    // KMS: an allowed encrypt, and bob's denied decrypt of its ciphertext.
    let plain = home.join("plain.bin");
    std::fs::write(&plain, b"attack at dawn").unwrap();
    let blob = common::aws_ok(
        &server,
        home,
        &[
            "kms",
            "encrypt",
            "--key-id",
            &key_arn,
            "--plaintext",
            &format!("fileb://{}", plain.display()),
            "--query",
            "CiphertextBlob",
        ],
    );
    let cipher = home.join("cipher.bin");
    std::fs::write(
        &cipher,
        base64::engine::general_purpose::STANDARD
            .decode(blob)
            .unwrap(),
    )
    .unwrap();
    let out = common::aws_as(
        &server,
        home,
        (&bob.0, &bob.1),
        &[
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &format!("fileb://{}", cipher.display()),
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("AccessDenied"));

    // The operator creates a user in the tenant through `nuage admin`.
    let out = Command::new(env!("CARGO_BIN_EXE_nuage"))
        .args(["admin", "--endpoint", &server.endpoint, "--data-dir"])
        .arg(&server.data_dir)
        .args(["user", "create", "--tenant", &tenant, "dave"])
        .env_remove("NUAGE_OPERATOR_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().join("log");
    pull(&server, &dir);

    // The allowed PUT, with every field.
    let put = one(
        &dir,
        &[
            "--action",
            "s3:PutObject",
            "--resource",
            &object_arn("doc.txt"),
        ],
    );
    assert_eq!(put["tenant"], tenant.as_str());
    assert_actor(&put, "tenant_user", &admin_arn, "sigv4_header", &admin_key);
    assert_eq!(put["decision"]["effect"], "allow");
    assert!(put["decision"]["policy"].is_string(), "{put}");
    assert_eq!(put["status"], 200);
    assert_eq!(put["source"], "127.0.0.1");
    assert_eq!(put["request_id"].as_str().map(str::len), Some(16));
    // An SSE-S3 write wraps its data key under the tenant's key.
    assert_eq!(
        put["key"],
        format!("arn:nuage:kms::{tenant}:tenant-key").as_str()
    );
    assert_eq!(put["justification"], "CUSTOMER_INITIATED_ACCESS");
    // GET (SDK then presigned), list, delete, create.
    let gets = search(
        &dir,
        &[
            "--action",
            "s3:GetObject",
            "--resource",
            &object_arn("doc.txt"),
        ],
    );
    let allowed: Vec<&Value> = gets
        .iter()
        .filter(|e| e["decision"]["effect"] == "allow")
        .collect();
    assert_eq!(allowed.len(), 2, "{gets:#?}");
    assert_eq!(allowed[0]["actor"]["auth"], "sigv4_header");
    assert_eq!(allowed[1]["actor"]["auth"], "presigned_url");
    assert_eq!(allowed[1]["actor"]["access_key_id"], admin_key.as_str());
    assert_eq!(allowed[1]["status"], 200);
    let list = one(&dir, &["--action", "s3:ListBucket"]);
    assert_eq!(list["resource"], format!("arn:aws:s3:::{bucket}").as_str());
    assert_eq!(list["decision"]["effect"], "allow");
    let delete = one(&dir, &["--action", "s3:DeleteObject"]);
    assert_eq!(delete["resource"], object_arn("gone.txt").as_str());
    assert_eq!(delete["status"], 204);
    assert_eq!(one(&dir, &["--action", "s3:CreateBucket"])["status"], 200);

    // bob's default deny: no policy.
    let entry = one(&dir, &["--actor", "user/bob", "--action", "s3:GetObject"]);
    assert_eq!(entry["decision"]["effect"], "deny");
    assert!(entry["decision"].get("policy").is_none(), "{entry}");
    assert_eq!(entry["resource"], object_arn("doc.txt").as_str());
    assert_eq!(entry["status"], 403);
    assert_eq!(entry["actor"]["access_key_id"], bob.0.as_str());
    // carol's explicit deny: the policy and its statement.
    let entry = one(&dir, &["--actor", "user/carol", "--action", "s3:GetObject"]);
    assert_eq!(entry["decision"]["effect"], "deny");
    assert_eq!(entry["decision"]["statement"], "DenySecret");
    assert!(
        entry["decision"]["policy"]
            .as_str()
            .is_some_and(|p| p.contains("read-but-secret")),
        "{entry}"
    );
    assert_eq!(entry["resource"], object_arn("secret.txt").as_str());
    // The anonymous GET, in the bucket owner's log.
    let anonymous: Vec<Value> = gets
        .iter()
        .filter(|e| e["actor"]["kind"] == "anonymous")
        .cloned()
        .collect();
    assert_eq!(anonymous.len(), 1, "{gets:#?}");
    assert_eq!(anonymous[0]["actor"]["auth"], "none");
    assert!(anonymous[0]["actor"].get("id").is_none());
    assert_eq!(anonymous[0]["decision"]["effect"], "deny");
    assert_eq!(anonymous[0]["status"], 403);
    assert_eq!(anonymous[0]["tenant"], tenant.as_str());
    // The SSE-KMS GET names the KMS key and the justification.
    let entry = one(
        &dir,
        &[
            "--action",
            "s3:GetObject",
            "--resource",
            &object_arn("kms.txt"),
        ],
    );
    assert_eq!(entry["key"], key_arn.as_str());
    assert_eq!(entry["justification"], "CUSTOMER_INITIATED_ACCESS");
    assert_eq!(entry["status"], 200);

    // KMS: the encrypt names its key and justification; bob's decrypt is
    // denied on the key's ARN, and used no key.
    let entry = one(&dir, &["--action", "kms:Encrypt"]);
    assert_actor(
        &entry,
        "tenant_user",
        &admin_arn,
        "sigv4_header",
        &admin_key,
    );
    assert_eq!(entry["resource"], key_arn.as_str());
    assert_eq!(entry["key"], key_arn.as_str());
    assert_eq!(entry["justification"], "CUSTOMER_INITIATED_ACCESS");
    assert_eq!(entry["decision"]["effect"], "allow");
    assert_eq!(entry["status"], 200);
    let entry = one(&dir, &["--action", "kms:Decrypt"]);
    assert_eq!(
        entry["actor"]["id"],
        format!("arn:aws:iam::{tenant}:user/bob").as_str()
    );
    assert_eq!(entry["resource"], key_arn.as_str());
    assert_eq!(entry["decision"]["effect"], "deny");
    assert!(entry.get("key").is_none(), "{entry}");
    assert_eq!(entry["status"], 400);
    assert_eq!(one(&dir, &["--action", "kms:CreateKey"])["status"], 200);

    // The operator's action, in the tenant's log; no token in it.
    let entry = one(&dir, &["--action", "admin:CreateUser"]);
    assert_eq!(entry["actor"]["kind"], "operator");
    assert_eq!(entry["actor"]["auth"], "bearer_token");
    assert!(entry["actor"].get("access_key_id").is_none());
    assert_eq!(entry["tenant"], tenant.as_str());
    assert_eq!(entry["status"], 201);
    let credentials =
        std::fs::read_to_string(server.data_dir.join("operator-credentials.toml")).unwrap();
    let token = credentials
        .lines()
        .find_map(|l| l.strip_prefix("token = "))
        .map(|t| t.trim().trim_matches('"').to_owned())
        .unwrap();
    assert!(token.len() > 16);
    assert!(
        !search(&dir, &[])
            .iter()
            .any(|e| e.to_string().contains(&token)),
        "the operator token is in the log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cross_tenant_request_is_in_the_owners_and_the_callers_log() {
    let server = Server::start();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let owner = tenant_of(&server, home);
    // Another tenant, its administrator and her key, made by the operator.
    let other = admin_json(
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
    let other = other["id"].as_str().unwrap().to_owned();
    admin_json(
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
    let key = admin_json(
        &server,
        &["key", "create", "--tenant", "acme", "--user", "alice"],
    );
    let alice = (
        key["access_key_id"].as_str().unwrap().to_owned(),
        key["secret_access_key"].as_str().unwrap().to_owned(),
    );
    let alice_arn = format!("arn:aws:iam::{other}:user/alice");
    // The owner's bucket grants alice reads.
    let bucket = common::bucket_name("audit-x");
    let s3 = server.client();
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    s3.put_object()
        .bucket(&bucket)
        .key("shared.txt")
        .body(b"shared".to_vec().into())
        .send()
        .await
        .unwrap();
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"ShareWithAcme","Effect":"Allow","Principal":{{"AWS":"{alice_arn}"}},"Action":"s3:GetObject","Resource":"arn:aws:s3:::{bucket}/*"}}]}}"#
    );
    s3.put_bucket_policy()
        .bucket(&bucket)
        .policy(policy)
        .send()
        .await
        .unwrap();
    let alice_s3 = sdk_as(&server, (&alice.0, &alice.1));
    let got = alice_s3
        .get_object()
        .bucket(&bucket)
        .key("shared.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().as_ref(),
        b"shared"
    );

    // The owner's log and alice's tenant's log both hold the read.
    let owner_dir = tempfile::tempdir().unwrap();
    let owner_dir = owner_dir.path().join("log");
    pull(&server, &owner_dir);
    let other_dir = tempfile::tempdir().unwrap();
    let other_dir = other_dir.path().join("log");
    let out = audit(
        Some((&alice.0, &alice.1)),
        &[
            "pull",
            "--endpoint",
            &server.endpoint,
            "--dir",
            other_dir.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (dir, tenant) in [(&owner_dir, &owner), (&other_dir, &other)] {
        let entry = one(dir, &["--actor", "user/alice", "--action", "s3:GetObject"]);
        assert_eq!(entry["tenant"], tenant.as_str());
        assert_eq!(entry["actor"]["id"], alice_arn.as_str());
        assert_eq!(
            entry["resource"],
            format!("arn:aws:s3:::{bucket}/shared.txt").as_str()
        );
        assert_eq!(entry["decision"]["effect"], "allow");
        assert_eq!(entry["status"], 200);
        assert!(entry["key"].is_string(), "{entry}");
    }
    // The operator's actions on acme are in acme's log only.
    let created = one(&other_dir, &["--action", "admin:CreateTenant"]);
    assert_eq!(created["actor"]["kind"], "operator");
    assert_eq!(
        created["resource"],
        format!("arn:aws:iam::{other}:root").as_str()
    );
    let key_created = one(&other_dir, &["--action", "admin:CreateKey"]);
    assert_eq!(
        key_created["resource"],
        format!("arn:aws:iam::{other}:user/alice").as_str()
    );
    assert!(search(&owner_dir, &["--action", "admin:*"]).is_empty());
}

/// What logging adds to an S3 request: an anonymous GET on a bucket that
/// does not exist (names no tenant: not logged) against the same GET on an
/// existing bucket (refused, logged durably), then SDK GET/PUT of 4 KiB
/// (logged). Measures this machine, prints figures, asserts nothing about time.
///
/// `cargo test -p nuage --test audit_frontends -- --ignored --nocapture s3_audit_latency`
#[tokio::test(flavor = "multi_thread")]
#[ignore = "measurement"]
async fn s3_audit_latency() {
    const REQUESTS: usize = 300;
    let server = Server::start();
    let bucket = common::bucket_name("audit-lat");
    let s3 = server.client();
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let body = common::random_bytes(4096, 7);
    s3.put_object()
        .bucket(&bucket)
        .key("k")
        .body(body.clone().into())
        .send()
        .await
        .unwrap();
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        v[((v.len() - 1) as f64 * p) as usize]
    };
    let raw = |path: String, expected: u16| -> Vec<f64> {
        (0..REQUESTS)
            .map(|_| {
                let start = std::time::Instant::now();
                let (status, _, _) = common::raw_request(&server.endpoint, "GET", &path, &[]);
                assert_eq!(status, expected);
                start.elapsed().as_secs_f64() * 1e6
            })
            .collect()
    };
    let mut unlogged = raw("/no-such-bucket-audit/k".to_owned(), 403);
    let mut logged = raw(format!("/{bucket}/k"), 403);
    let (u50, l50) = (pct(&mut unlogged, 0.5), pct(&mut logged, 0.5));
    println!(
        "anonymous GET, {REQUESTS} each: not logged p50 {u50:.0} µs p99 {:.0} µs; logged p50 {l50:.0} µs p99 {:.0} µs; added p50 {:.0} µs",
        pct(&mut unlogged, 0.99),
        pct(&mut logged, 0.99),
        l50 - u50
    );
    let mut gets = Vec::new();
    let mut puts = Vec::new();
    for _ in 0..REQUESTS {
        let start = std::time::Instant::now();
        s3.put_object()
            .bucket(&bucket)
            .key("k")
            .body(body.clone().into())
            .send()
            .await
            .unwrap();
        puts.push(start.elapsed().as_secs_f64() * 1e6);
        let start = std::time::Instant::now();
        common::get_bytes(&s3, &bucket, "k").await;
        gets.push(start.elapsed().as_secs_f64() * 1e6);
    }
    println!(
        "SDK, 4 KiB, {REQUESTS} each (all logged): GET p50 {:.0} µs p99 {:.0} µs; PUT p50 {:.0} µs p99 {:.0} µs",
        pct(&mut gets, 0.5),
        pct(&mut gets, 0.99),
        pct(&mut puts, 0.5),
        pct(&mut puts, 0.99)
    );
}

/// The access approval operations the served OpenAPI document lists are the
/// ones the server routes: each, filled in, reaches the access API (the
/// operator's with its token, the tenant's refused for want of a signature,
/// which it checks after routing), and shapes it does not list do not.
#[test]
fn the_openapi_document_lists_the_access_approval_routes() {
    let server = Server::start();
    let (status, _, body) = common::raw_request(
        &server.endpoint,
        "GET",
        "/_nuage/admin/v1/openapi.json",
        &[],
    );
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_slice(&body).unwrap();
    let credentials =
        std::fs::read_to_string(server.data_dir.join("operator-credentials.toml")).unwrap();
    let token = credentials
        .lines()
        .find_map(|l| l.strip_prefix("token = "))
        .map(|t| t.trim().trim_matches('"').to_owned())
        .unwrap();
    let bearer = format!("Bearer {token}");
    let default_server = doc["servers"][0]["url"].as_str().unwrap();
    // The router's own 404, distinct from "no such access request".
    let unrouted = |status: u16, body: &[u8]| {
        status == 404 && String::from_utf8_lossy(body).contains("no such access approval resource")
    };
    let mut probed = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let base = item["servers"][0]["url"].as_str().unwrap_or(default_server);
        let full = format!("{base}{path}");
        let operator = full.starts_with("/_nuage/admin/v1/access-requests");
        if !operator && !full.starts_with("/_nuage/access/v1/") {
            continue;
        }
        for (method, _) in item.as_object().unwrap() {
            if method == "servers" || method == "parameters" {
                continue;
            }
            let method = method.to_ascii_uppercase();
            let target = full.replace("{id}", "000000000000-NOSUCHREQUEST000");
            let target = if operator && method == "GET" && !path.contains("{id}") {
                format!("{target}?tenant=default")
            } else {
                target
            };
            let mut headers = vec![("Content-Length", "0")];
            if operator {
                headers.push(("Authorization", bearer.as_str()));
            }
            let (status, _, body) =
                common::raw_request(&server.endpoint, &method, &target, &headers);
            assert!(
                !unrouted(status, &body),
                "{method} {target} is documented but not routed"
            );
            if !operator {
                assert_eq!(
                    status,
                    403,
                    "{method} {target}: {}",
                    String::from_utf8_lossy(&body)
                );
                assert!(String::from_utf8_lossy(&body).contains("MissingAuthentication"));
            }
            probed.push(format!("{method} {full}"));
        }
    }
    assert_eq!(probed.len(), 9, "{probed:#?}");
    // What the document does not list is not routed: the probe can tell.
    for (method, path) in [
        ("DELETE", "/_nuage/admin/v1/access-requests/x"),
        ("POST", "/_nuage/admin/v1/access-requests/x/approve"),
        ("POST", "/_nuage/access/v1/requests/x/credentials"),
        ("DELETE", "/_nuage/access/v1/requests/x"),
    ] {
        let (status, _, body) = common::raw_request(
            &server.endpoint,
            method,
            path,
            &[("Content-Length", "0"), ("Authorization", bearer.as_str())],
        );
        assert!(unrouted(status, &body), "{method} {path}: {status}");
    }
}
