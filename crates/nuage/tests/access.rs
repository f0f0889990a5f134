//! Operator access approvals through the real binary (`nuage access` and the
//! AWS SDK): the operator has no way to read a tenant's data until the tenant
//! approves; an approval yields credentials that read exactly the approved
//! prefix, for the approved time, decrypting with the approval's
//! justification; revocation and expiry end them at once; a denial yields
//! nothing; every step is in the tenant's audit log with the approval id.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]
mod common;

use aws_sdk_s3::error::ProvideErrorMetadata as _;
use common::Server;
use common::kms::kms_call;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Whose credentials a `nuage access` command runs with.
enum As<'a> {
    /// The operator: the token from the data directory, no AWS credentials.
    Operator,
    /// A tenant principal (or a session), in the AWS environment variables.
    Principal(&'a str, &'a str, Option<&'a str>),
}

fn access(server: &Server, who: &As<'_>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nuage"));
    command
        .arg("access")
        .args(["--endpoint", &server.endpoint])
        .arg("--json")
        .args(args)
        .env_remove("NUAGE_OPERATOR_TOKEN")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env("NUAGE_LOG", "warn");
    match who {
        As::Operator => {
            // The operator has no tenant credentials at all.
            command.arg("--data-dir").arg(&server.data_dir);
        }
        As::Principal(key, secret, token) => {
            // A tenant's approver has no operator token.
            command
                .arg("--data-dir")
                .arg("/nonexistent")
                .env("AWS_ACCESS_KEY_ID", key)
                .env("AWS_SECRET_ACCESS_KEY", secret)
                .env("AWS_REGION", &server.credentials.region);
            if let Some(token) = token {
                command.env("AWS_SESSION_TOKEN", token);
            }
        }
    }
    command.output().unwrap()
}

#[track_caller]
fn access_ok(server: &Server, who: &As<'_>, args: &[&str]) -> Value {
    let out = access(server, who, args);
    assert!(
        out.status.success(),
        "nuage access {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[track_caller]
fn access_err(server: &Server, who: &As<'_>, args: &[&str]) -> String {
    let out = access(server, who, args);
    assert!(
        !out.status.success(),
        "nuage access {args:?} should have failed, printed {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

fn admin(server: &Server) -> As<'_> {
    As::Principal(
        &server.credentials.access_key_id,
        &server.credentials.secret_access_key,
        None,
    )
}

/// `nuage access request` by the operator on the default tenant.
#[track_caller]
fn request(
    server: &Server,
    resources: &[&str],
    actions: &[&str],
    justification: &str,
    duration: &str,
) -> Value {
    let mut args = vec!["request", "--tenant", "default"];
    for r in resources {
        args.extend(["--resource", r]);
    }
    for a in actions {
        args.extend(["--action", a]);
    }
    args.extend([
        "--justification",
        justification,
        "--reason-text",
        "support ticket 4242: customer cannot read its report",
        "--duration",
        duration,
    ]);
    access_ok(server, &As::Operator, &args)
}

/// An S3 client with an approved session's credentials.
fn session_client(server: &Server, creds: &Value) -> aws_sdk_s3::Client {
    let credentials = aws_credential_types::Credentials::new(
        creds["access_key_id"].as_str().unwrap(),
        creds["secret_access_key"].as_str().unwrap(),
        Some(creds["session_token"].as_str().unwrap().to_owned()),
        None,
        "operator-session",
    );
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .endpoint_url(&server.endpoint)
        .region(aws_sdk_s3::config::Region::new(
            server.credentials.region.clone(),
        ))
        .credentials_provider(credentials)
        .force_path_style(true);
    aws_sdk_s3::Client::from_conf(config.build())
}

/// A new bucket of the default tenant, named after `test`: the tenant's
/// client and the bucket's name.
async fn tenant_bucket(server: &Server, test: &str) -> (aws_sdk_s3::Client, String) {
    let tenant_s3 = server.client();
    let bucket = common::bucket_name(test);
    tenant_s3
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    (tenant_s3, bucket)
}

/// Approves request `id` as the tenant's administrator and opens the
/// operator's session: its credentials and an S3 client with them.
fn approve_and_open(server: &Server, id: &str) -> (Value, aws_sdk_s3::Client) {
    access_ok(server, &admin(server), &["approve", id]);
    let creds = access_ok(server, &As::Operator, &["credentials", id]);
    let client = session_client(server, &creds);
    (creds, client)
}

async fn put(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, body: &[u8]) {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(body.to_vec().into())
        .send()
        .await
        .unwrap();
}

/// A GET's bytes, or its error code and message.
async fn get(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Vec<u8>, String> {
    match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(object) => Ok(object.body.collect().await.unwrap().into_bytes().to_vec()),
        Err(e) => {
            let e = e.into_service_error();
            Err(format!(
                "{}: {}",
                e.code().unwrap_or("-"),
                e.message().unwrap_or("-")
            ))
        }
    }
}

/// The tenant's whole audit log, pulled and verified with the admin's key.
fn audit_log(server: &Server, dir: &Path) -> Vec<Value> {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_nuage"))
            .arg("audit")
            .args(args)
            .env("AWS_ACCESS_KEY_ID", &server.credentials.access_key_id)
            .env(
                "AWS_SECRET_ACCESS_KEY",
                &server.credentials.secret_access_key,
            )
            .env_remove("AWS_SESSION_TOKEN")
            .env("NUAGE_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nuage audit {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let dir = dir.to_str().unwrap();
    run(&["pull", "--endpoint", &server.endpoint, "--dir", dir]);
    String::from_utf8(run(&["search", dir]))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The entries of `action` about approval `id`.
fn logged<'a>(log: &'a [Value], action: &str, id: &str) -> Vec<&'a Value> {
    log.iter()
        .filter(|e| e["action"] == action && e["approval"] == id)
        .collect()
}

#[tokio::test]
async fn approved_access_reads_exactly_the_approved_prefix_until_revoked() {
    let server = Server::start();
    let tenant_s3 = server.client();
    let bucket = common::bucket_name("access");
    let other = common::bucket_name("access-other");
    for b in [&bucket, &other] {
        tenant_s3.create_bucket().bucket(b).send().await.unwrap();
    }
    put(&tenant_s3, &bucket, "case-42/report.txt", b"the report").await;
    put(&tenant_s3, &bucket, "private/payroll.txt", b"not for you").await;
    put(&tenant_s3, &other, "case-42/report.txt", b"other bucket").await;

    // No standing access: the operator token is not an S3 credential, and
    // an unknown approval yields nothing.
    let refused = access_err(&server, &As::Operator, &["credentials", "nope"]);
    assert!(refused.contains("NotFound"), "{refused}");

    // Only data actions, a bounded duration, and a reason that is not the
    // customer's own can be asked for.
    for (args, expected) in [
        (
            vec!["--action", "iam:CreateUser", "--duration", "1h"],
            "not an s3: or kms: action",
        ),
        (
            vec!["--action", "s3:GetObject", "--duration", "9h"],
            "duration",
        ),
    ] {
        let mut all = vec![
            "request",
            "--tenant",
            "default",
            "--resource",
            "arn:aws:s3:::b/*",
            "--justification",
            "CUSTOMER_INITIATED_SUPPORT",
        ];
        all.extend(args);
        let refused = access_err(&server, &As::Operator, &all);
        assert!(refused.contains(expected), "{refused}");
    }
    let refused = access_err(
        &server,
        &As::Operator,
        &[
            "request",
            "--tenant",
            "default",
            "--resource",
            "arn:aws:s3:::b/*",
            "--action",
            "s3:GetObject",
            "--justification",
            "CUSTOMER_INITIATED_ACCESS",
            "--duration",
            "1h",
        ],
    );
    assert!(refused.contains("tenant's own access"), "{refused}");

    let prefix = format!("arn:aws:s3:::{bucket}/case-42/*");
    let asked = request(
        &server,
        &[&prefix],
        &["s3:GetObject"],
        "CUSTOMER_INITIATED_SUPPORT",
        "2h",
    );
    let id = asked["id"].as_str().unwrap().to_owned();
    assert_eq!(asked["state"], "PENDING", "{asked}");

    // Pending: no credentials.
    let refused = access_err(&server, &As::Operator, &["credentials", &id]);
    assert!(refused.contains("PENDING"), "{refused}");

    // The tenant sees it, and approves it.
    let listed = access_ok(&server, &admin(&server), &["list"]);
    let mine: Vec<&Value> = listed["access_requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["id"] == id.as_str())
        .collect();
    assert_eq!(mine.len(), 1, "{listed}");
    assert_eq!(mine[0]["justification"], "CUSTOMER_INITIATED_SUPPORT");
    assert_eq!(mine[0]["resources"], json!([prefix]));
    let approved = access_ok(&server, &admin(&server), &["approve", &id]);
    assert_eq!(approved["state"], "APPROVED", "{approved}");
    // Approving twice is a state error, not a second approval.
    let again = access_err(&server, &admin(&server), &["approve", &id]);
    assert!(again.contains("InvalidState"), "{again}");

    let creds = access_ok(&server, &As::Operator, &["credentials", &id]);
    assert_eq!(creds["approval_id"], id.as_str());
    let operator = session_client(&server, &creds);

    // Exactly the approved prefix of the approved bucket, for reading.
    assert_eq!(
        get(&operator, &bucket, "case-42/report.txt").await.unwrap(),
        b"the report"
    );
    for (b, key) in [
        (&bucket, "private/payroll.txt"),
        (&other, "case-42/report.txt"),
    ] {
        let refused = get(&operator, b, key).await.unwrap_err();
        assert!(refused.starts_with("AccessDenied"), "{b}/{key}: {refused}");
    }
    let write = operator
        .put_object()
        .bucket(&bucket)
        .key("case-42/planted.txt")
        .body(b"x".to_vec().into())
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(write.code(), Some("AccessDenied"), "{write:?}");
    let listing = operator
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(listing.code(), Some("AccessDenied"), "{listing:?}");

    // The session cannot answer access requests, its own or any other.
    let second = request(
        &server,
        &[&format!("arn:aws:s3:::{other}/*")],
        &["s3:GetObject"],
        "OPERATOR_INITIATED_REVIEW",
        "1h",
    );
    let second_id = second["id"].as_str().unwrap();
    let session = As::Principal(
        creds["access_key_id"].as_str().unwrap(),
        creds["secret_access_key"].as_str().unwrap(),
        creds["session_token"].as_str(),
    );
    let refused = access_err(&server, &session, &["approve", second_id]);
    assert!(refused.contains("AccessDenied"), "{refused}");

    // The tenant denies the second: no credentials, ever.
    let denied = access_ok(&server, &admin(&server), &["deny", second_id]);
    assert_eq!(denied["state"], "DENIED");
    let refused = access_err(&server, &As::Operator, &["credentials", second_id]);
    assert!(refused.contains("DENIED"), "{refused}");
    let refused = access_err(&server, &admin(&server), &["approve", second_id]);
    assert!(refused.contains("InvalidState"), "{refused}");

    // Revocation ends the session at once.
    let revoked = access_ok(&server, &admin(&server), &["revoke", &id]);
    assert_eq!(revoked["state"], "REVOKED");
    let refused = get(&operator, &bucket, "case-42/report.txt")
        .await
        .unwrap_err();
    assert!(refused.starts_with("ExpiredToken"), "{refused}");
    let refused = access_err(&server, &As::Operator, &["credentials", &id]);
    assert!(refused.contains("REVOKED"), "{refused}");

    // Every step is in the tenant's log, with the approval id.
    let dir = tempfile::tempdir().unwrap();
    let log = audit_log(&server, dir.path());
    let requested = logged(&log, "nuage:RequestAccess", &id);
    assert_eq!(requested.len(), 1, "{log:#?}");
    assert_eq!(requested[0]["justification"], "CUSTOMER_INITIATED_SUPPORT");
    assert_eq!(requested[0]["actor"]["kind"], "operator");
    // Approved (one entry, before it took effect), then approved again: an
    // entry before, and one saying it was not applied.
    assert_eq!(logged(&log, "nuage:ApproveAccessRequest", &id).len(), 3);
    let issued = logged(&log, "nuage:GetAccessCredentials", &id);
    let effects: Vec<&Value> = issued.iter().map(|e| &e["decision"]["effect"]).collect();
    // Refused while pending, issued once, refused after revocation.
    assert_eq!(
        effects,
        [&json!("deny"), &json!("allow"), &json!("deny")],
        "{issued:#?}"
    );
    assert_eq!(logged(&log, "nuage:RevokeAccessRequest", &id).len(), 1);
    // The revoked session's read: refused by the key check (ExpiredToken),
    // before any authorizer, and still in the log with the approval id.
    let after_revocation: Vec<&Value> = log
        .iter()
        .filter(|e| {
            e["approval"] == id.as_str()
                && e["decision"]["effect"] == "deny"
                && e["decision"]["statement"] == "ExpiredToken"
        })
        .collect();
    assert_eq!(after_revocation.len(), 1, "{log:#?}");
    assert_eq!(logged(&log, "nuage:DenyAccessRequest", second_id).len(), 1);
    let refused_approval = logged(&log, "nuage:ApproveAccessRequest", second_id);
    assert!(
        refused_approval
            .iter()
            .any(|e| e["decision"]["effect"] == "deny"
                && e["actor"]["id"].as_str().unwrap_or_default().contains(&id)),
        "the session's attempt to approve is logged as refused: {refused_approval:#?}"
    );
}

#[tokio::test]
async fn an_approval_ends_by_itself() {
    let server = Server::start();
    let (tenant_s3, bucket) = tenant_bucket(&server, "access-expiry").await;
    put(&tenant_s3, &bucket, "k", b"short-lived").await;
    // Debug builds accept a 5-second approval (release: 15 minutes).
    let asked = request(
        &server,
        &[&format!("arn:aws:s3:::{bucket}/*")],
        &["s3:GetObject"],
        "CUSTOMER_INITIATED_SUPPORT",
        "5s",
    );
    let id = asked["id"].as_str().unwrap();
    let (creds, operator) = approve_and_open(&server, id);
    assert_eq!(get(&operator, &bucket, "k").await.unwrap(), b"short-lived");
    // Wait for the end (a condition, bounded), then everything is refused.
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        match get(&operator, &bucket, "k").await {
            Err(e) => break e,
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Ok(_) => panic!("the session outlived its approval"),
        }
    };
    assert!(refused.starts_with("ExpiredToken"), "{refused}");
    let shown = access_ok(&server, &admin(&server), &["show", id]);
    assert_eq!(shown["state"], "EXPIRED");
    let refused = access_err(&server, &As::Operator, &["credentials", id]);
    assert!(refused.contains("EXPIRED"), "{refused}");
    // The attempt with the ended session (refused by s3s before Nuage's
    // authorizer) is in the tenant's log, with the approval id.
    let dir = tempfile::tempdir().unwrap();
    let log = audit_log(&server, dir.path());
    let attempts: Vec<&Value> = log
        .iter()
        .filter(|e| e["decision"]["statement"] == "ExpiredToken")
        .collect();
    assert_eq!(attempts.len(), 1, "{log:#?}");
    let attempt = attempts[0];
    assert_eq!(attempt["approval"], id, "{attempt:#}");
    assert_eq!(attempt["decision"]["effect"], "deny");
    assert_eq!(attempt["decision"]["policy"], "nuage:s3-request-checks");
    assert_eq!(attempt["actor"]["kind"], "role_session");
    assert_eq!(attempt["actor"]["access_key_id"], creds["access_key_id"]);
    assert!(
        attempt["actor"]["id"]
            .as_str()
            .unwrap()
            .ends_with(&format!("assumed-role/NuageOperatorAccess/{id}")),
        "{attempt:#}"
    );
    assert_eq!(
        attempt["resource"],
        format!("arn:aws:s3:::{bucket}/k").as_str()
    );
    // STS with the expired session: refused, and the tenant's log says who tried.
    let (status, body) = common::audit::signed_query(
        &server,
        (
            creds["access_key_id"].as_str().unwrap(),
            creds["secret_access_key"].as_str().unwrap(),
        ),
        creds["session_token"].as_str(),
        "sts",
        "Action=GetCallerIdentity&Version=2011-06-15",
        0,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("ExpiredToken"), "{body}");
    let dir = tempfile::tempdir().unwrap();
    let log = audit_log(&server, dir.path());
    let tried: Vec<&Value> = log
        .iter()
        .filter(|e| {
            e["action"] == "sts:GetCallerIdentity"
                && e["actor"]["access_key_id"] == creds["access_key_id"]
        })
        .collect();
    assert_eq!(tried.len(), 1, "{tried:#?}");
    assert_eq!(tried[0]["decision"]["effect"], "deny");
    assert_eq!(tried[0]["actor"]["kind"], "role_session");
    assert!(
        tried[0]["actor"]["id"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/NuageOperatorAccess/{id}")),
        "{:#}",
        tried[0]
    );
}

#[tokio::test]
async fn the_operator_decrypts_with_the_approvals_justification() {
    let server = Server::start();
    let (tenant_s3, bucket) = tenant_bucket(&server, "access-kms").await;
    let (status, created) = kms_call(&server, "CreateKey", &json!({}));
    assert_eq!(status, 200, "{created}");
    let key_arn = created["KeyMetadata"]["Arn"].as_str().unwrap().to_owned();
    tenant_s3
        .put_object()
        .bucket(&bucket)
        .key("case-7/kms.txt")
        .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
        .ssekms_key_id(&key_arn)
        .body(b"under a customer key".to_vec().into())
        .send()
        .await
        .unwrap();
    put(
        &tenant_s3,
        &bucket,
        "case-7/s3.txt",
        b"under the tenant key",
    )
    .await;
    let objects = format!("arn:aws:s3:::{bucket}/case-7/*");

    // Without kms:Decrypt approved, the SSE-KMS object stays closed.
    let s3_only = request(
        &server,
        &[&objects],
        &["s3:GetObject"],
        "CUSTOMER_INITIATED_SUPPORT",
        "1h",
    );
    let s3_only_id = s3_only["id"].as_str().unwrap();
    access_ok(&server, &admin(&server), &["approve", s3_only_id]);
    let creds = access_ok(&server, &As::Operator, &["credentials", s3_only_id]);
    let operator = session_client(&server, &creds);
    assert_eq!(
        get(&operator, &bucket, "case-7/s3.txt").await.unwrap(),
        b"under the tenant key"
    );
    let refused = get(&operator, &bucket, "case-7/kms.txt").await.unwrap_err();
    assert!(refused.contains("kms:Decrypt"), "{refused}");

    // Approved with the key: read, under CUSTOMER_INITIATED_SUPPORT.
    let with_key = request(
        &server,
        &[&objects, &key_arn],
        &["s3:GetObject", "kms:Decrypt"],
        "CUSTOMER_INITIATED_SUPPORT",
        "1h",
    );
    let with_key_id = with_key["id"].as_str().unwrap();
    access_ok(&server, &admin(&server), &["approve", with_key_id]);
    let creds = access_ok(&server, &As::Operator, &["credentials", with_key_id]);
    let operator = session_client(&server, &creds);
    assert_eq!(
        get(&operator, &bucket, "case-7/kms.txt").await.unwrap(),
        b"under a customer key"
    );

    // The tenant's key access justifications now exclude support: the
    // operator's reads are refused by reason, the tenant's own still work.
    let (status, put_reasons) = kms_call(
        &server,
        "PutKeyAccessReasons",
        &json!({ "AllowedReasons": ["CUSTOMER_INITIATED_ACCESS"] }),
    );
    assert_eq!(status, 200, "{put_reasons}");
    for key in ["case-7/kms.txt", "case-7/s3.txt"] {
        let refused = get(&operator, &bucket, key).await.unwrap_err();
        assert!(
            refused.starts_with("AccessDenied") && refused.contains("CUSTOMER_INITIATED_SUPPORT"),
            "{key}: {refused}"
        );
        assert!(get(&tenant_s3, &bucket, key).await.is_ok());
    }

    // A review the tenant never allowed is refused the same way.
    let (status, _) = kms_call(
        &server,
        "PutKeyAccessReasons",
        &json!({ "AllowedReasons": ["CUSTOMER_INITIATED_ACCESS", "CUSTOMER_INITIATED_SUPPORT"] }),
    );
    assert_eq!(status, 200);
    let review = request(
        &server,
        &[&objects],
        &["s3:GetObject"],
        "OPERATOR_INITIATED_REVIEW",
        "1h",
    );
    let review_id = review["id"].as_str().unwrap();
    access_ok(&server, &admin(&server), &["approve", review_id]);
    let creds = access_ok(&server, &As::Operator, &["credentials", review_id]);
    let reviewer = session_client(&server, &creds);
    let refused = get(&reviewer, &bucket, "case-7/s3.txt").await.unwrap_err();
    assert!(refused.contains("OPERATOR_INITIATED_REVIEW"), "{refused}");
}

/// Each S3 request made with an approved session carries the approval id in
/// the tenant's log (and its key uses the approval's justification).
#[tokio::test]
async fn every_use_of_an_approval_is_logged_with_its_id() {
    let server = Server::start();
    let (tenant_s3, bucket) = tenant_bucket(&server, "access-log").await;
    put(&tenant_s3, &bucket, "case-1/a.txt", b"a").await;
    put(&tenant_s3, &bucket, "other/b.txt", b"b").await;
    let asked = request(
        &server,
        &[&format!("arn:aws:s3:::{bucket}/case-1/*")],
        &["s3:GetObject"],
        "CUSTOMER_INITIATED_SUPPORT",
        "1h",
    );
    let id = asked["id"].as_str().unwrap();
    let (_, operator) = approve_and_open(&server, id);
    get(&operator, &bucket, "case-1/a.txt").await.unwrap();
    get(&operator, &bucket, "other/b.txt").await.unwrap_err();

    let dir = tempfile::tempdir().unwrap();
    let log = audit_log(&server, dir.path());
    let uses = logged(&log, "s3:GetObject", id);
    let effects: Vec<&Value> = uses.iter().map(|e| &e["decision"]["effect"]).collect();
    assert_eq!(effects, [&json!("allow"), &json!("deny")], "{log:#?}");
    assert_eq!(uses[0]["justification"], "CUSTOMER_INITIATED_SUPPORT");
    assert!(
        uses.iter()
            .all(|e| e["actor"]["id"].as_str().unwrap_or_default().contains(id)),
        "{uses:#?}"
    );
}

/// A key in the tenant's own external key store: its proxy sees the
/// approval's justification and refuses it unless the tenant allows it there.
#[tokio::test]
async fn an_external_key_store_judges_the_operators_justification() {
    use common::aws_ok;
    let premises = common::xks::XksSetup::new("access-xks");
    let credential = premises.init();
    premises.key("create", &["support-case"]);
    let proxy = premises.serve();
    let data = tempfile::tempdir().unwrap();
    let server = premises.start_trusting_server(data.path());
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let store_id = common::xks::XksSetup::create_key_store(&server, home, &proxy, &credential);
    aws_ok(
        &server,
        home,
        &[
            "kms",
            "connect-custom-key-store",
            "--custom-key-store-id",
            &store_id,
        ],
    );
    let key_arn = common::xks::XksSetup::create_external_key(
        &server,
        home,
        &store_id,
        "support-case",
        "KeyMetadata.Arn",
    );
    let (tenant_s3, bucket) = tenant_bucket(&server, "access-xks").await;
    tenant_s3
        .put_object()
        .bucket(&bucket)
        .key("case-9/held.txt")
        .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
        .ssekms_key_id(&key_arn)
        .body(b"held on the tenant's premises".to_vec().into())
        .send()
        .await
        .unwrap();

    let asked = request(
        &server,
        &[&format!("arn:aws:s3:::{bucket}/case-9/*"), &key_arn],
        &["s3:GetObject", "kms:Decrypt"],
        "CUSTOMER_INITIATED_SUPPORT",
        "1h",
    );
    let id = asked["id"].as_str().unwrap();
    let (_, operator) = approve_and_open(&server, id);

    // The proxy accepts the customer's own access only: the operator is
    // refused there, by reason, and the tenant still reads.
    premises.key("reasons", &["support-case", "CUSTOMER_INITIATED_ACCESS"]);
    let refused = get(&operator, &bucket, "case-9/held.txt")
        .await
        .unwrap_err();
    assert!(
        refused.contains("AccessDenied") && refused.contains("CUSTOMER_INITIATED_SUPPORT"),
        "{refused}"
    );
    assert!(get(&tenant_s3, &bucket, "case-9/held.txt").await.is_ok());

    // The tenant allows support on its premises: the operator reads, and the
    // proxy's own log shows the reason it was given.
    premises.key(
        "reasons",
        &[
            "support-case",
            "CUSTOMER_INITIATED_ACCESS",
            "CUSTOMER_INITIATED_SUPPORT",
        ],
    );
    assert_eq!(
        get(&operator, &bucket, "case-9/held.txt").await.unwrap(),
        b"held on the tenant's premises"
    );
    let lines = premises.audit();
    let by_reason = |reason: &str, decision: &str| {
        lines.iter().any(|l| {
            l["operation"] == "decrypt" && l["reason"] == reason && l["decision"] == decision
        })
    };
    assert!(by_reason("CUSTOMER_INITIATED_SUPPORT", "DENY"), "{lines:?}");
    assert!(
        by_reason("CUSTOMER_INITIATED_SUPPORT", "ALLOW"),
        "{lines:?}"
    );
}

/// An entry's `time` in nanoseconds since the epoch.
fn entry_unix_ns(entry: &Value) -> i64 {
    let time = time::OffsetDateTime::parse(
        entry["time"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    i64::try_from(time.unix_timestamp_nanos()).unwrap()
}

#[tokio::test]
async fn answers_are_logged_before_they_take_effect() {
    let server = Server::start();
    let asked = |resource: &str| {
        request(
            &server,
            &[resource],
            &["s3:GetObject"],
            "CUSTOMER_INITIATED_SUPPORT",
            "1h",
        )
    };
    let first = asked("arn:aws:s3:::write-ahead/a/*");
    let first_id = first["id"].as_str().unwrap();
    let second = asked("arn:aws:s3:::write-ahead/b/*");
    let second_id = second["id"].as_str().unwrap();
    access_ok(&server, &admin(&server), &["approve", first_id]);
    access_ok(&server, &admin(&server), &["revoke", first_id]);
    access_ok(&server, &admin(&server), &["deny", second_id]);
    // An answer that cannot apply: approving a denied request.
    let refused = access_err(&server, &admin(&server), &["approve", second_id]);
    assert!(refused.contains("InvalidState"), "{refused}");
    let first = access_ok(&server, &admin(&server), &["show", first_id]);
    let second = access_ok(&server, &admin(&server), &["show", second_id]);
    assert_eq!(first["state"], "REVOKED");
    assert_eq!(
        second["state"], "DENIED",
        "the refused answer changed nothing"
    );

    let dir = tempfile::tempdir().unwrap();
    let log = audit_log(&server, dir.path());
    // Each state change has exactly one entry, appended before it happened:
    // no status (there was no response yet), a time no later than the
    // change's own.
    let before = |action: &str, id: &str, changed_unix_ns: &Value| {
        let entries = logged(&log, action, id);
        assert_eq!(entries.len(), 1, "{action} {id}: {entries:#?}");
        let entry = entries[0];
        assert_eq!(entry["decision"]["effect"], "allow", "{entry}");
        assert!(
            entry.get("status").is_none(),
            "logged after the fact: {entry}"
        );
        assert!(
            entry_unix_ns(entry) <= changed_unix_ns.as_i64().unwrap(),
            "{entry} is later than the change at {changed_unix_ns}"
        );
    };
    // The request, too, is logged before it is stored (its own time is when
    // it was prepared, before either).
    let requested = logged(&log, "nuage:RequestAccess", first_id);
    assert_eq!(requested.len(), 1, "{requested:#?}");
    assert!(requested[0].get("status").is_none(), "{:#}", requested[0]);
    before(
        "nuage:ApproveAccessRequest",
        first_id,
        &first["decided_unix_ns"],
    );
    before(
        "nuage:RevokeAccessRequest",
        first_id,
        &first["revoked_unix_ns"],
    );
    before(
        "nuage:DenyAccessRequest",
        second_id,
        &second["decided_unix_ns"],
    );
    // The refused answer: logged before trying, then a second entry with the
    // same request id and the conflict's status: not applied.
    let tried = logged(&log, "nuage:ApproveAccessRequest", second_id);
    assert_eq!(tried.len(), 2, "{tried:#?}");
    assert!(tried[0].get("status").is_none(), "{:#}", tried[0]);
    assert_eq!(tried[1]["status"], 409, "{:#}", tried[1]);
    assert_eq!(tried[0]["request_id"], tried[1]["request_id"]);
    assert!(entry_unix_ns(tried[0]) > second["decided_unix_ns"].as_i64().unwrap());
}

/// The keys a listing as `s3` returns, or its error code.
async fn list(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: Option<&str>,
) -> Result<Vec<String>, String> {
    let mut call = s3.list_objects_v2().bucket(bucket);
    if let Some(prefix) = prefix {
        call = call.prefix(prefix);
    }
    match call.send().await {
        Ok(listed) => Ok(listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()),
        Err(e) => Err(e.into_service_error().code().unwrap_or("-").to_owned()),
    }
}

/// An approval of `bucket/case-42/*` lists `case-42/` and nothing else of the
/// bucket (each refusal logged as a deny); an approval of the bucket lists
/// all of it; a request with the session's key but a wrong signature is a
/// deny in the tenant's log with the approval id.
#[tokio::test]
async fn an_approved_prefix_is_all_a_session_lists() {
    let server = Server::start();
    let (tenant_s3, bucket) = tenant_bucket(&server, "access-list").await;
    for key in [
        "case-42/a.txt",
        "case-42/sub/b.txt",
        "case-420/c.txt",
        "case-4/d.txt",
        "private/payroll.txt",
    ] {
        put(&tenant_s3, &bucket, key, b"x").await;
    }
    let asked = request(
        &server,
        &[&format!("arn:aws:s3:::{bucket}/case-42/*")],
        &["s3:GetObject", "s3:ListBucket"],
        "CUSTOMER_INITIATED_SUPPORT",
        "1h",
    );
    let id = asked["id"].as_str().unwrap().to_owned();
    let (creds, operator) = approve_and_open(&server, &id);

    assert_eq!(
        list(&operator, &bucket, Some("case-42/")).await.unwrap(),
        ["case-42/a.txt", "case-42/sub/b.txt"]
    );
    assert_eq!(
        list(&operator, &bucket, Some("case-42/sub/"))
            .await
            .unwrap(),
        ["case-42/sub/b.txt"]
    );
    // ListObjects (v1) and a delimited listing, the way `aws s3 ls` lists.
    let v1 = operator
        .list_objects()
        .bucket(&bucket)
        .prefix("case-42/")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = v1.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["case-42/a.txt"]);
    let folders: Vec<&str> = v1
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!(folders, ["case-42/sub/"]);
    // Outside the prefix, a prefix that also lists `case-420/`, no prefix.
    let mut refused = 0;
    for prefix in [Some("private/"), Some("case-4"), Some(""), None] {
        assert_eq!(
            list(&operator, &bucket, prefix).await.unwrap_err(),
            "AccessDenied",
            "{prefix:?}"
        );
        refused += 1;
    }
    // Versions were not approved, whatever the prefix.
    let versions = operator
        .list_object_versions()
        .bucket(&bucket)
        .prefix("case-42/")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(versions.code(), Some("AccessDenied"));

    // The session's key with a wrong secret: refused by the signature check,
    // and in the tenant's log with the approval.
    let forged_creds = json!({
        "access_key_id": creds["access_key_id"],
        "secret_access_key": "not-the-session-secret",
        "session_token": creds["session_token"],
    });
    let forged = list(
        &session_client(&server, &forged_creds),
        &bucket,
        Some("case-42/"),
    )
    .await
    .unwrap_err();
    assert_eq!(forged, "SignatureDoesNotMatch");

    // The bucket itself approved: all of it lists.
    let whole = request(
        &server,
        &[&format!("arn:aws:s3:::{bucket}")],
        &["s3:ListBucket"],
        "OPERATOR_INITIATED_REVIEW",
        "1h",
    );
    let whole_id = whole["id"].as_str().unwrap().to_owned();
    access_ok(&server, &admin(&server), &["approve", &whole_id]);
    let creds = access_ok(&server, &As::Operator, &["credentials", &whole_id]);
    let reviewer = session_client(&server, &creds);
    assert_eq!(list(&reviewer, &bucket, None).await.unwrap().len(), 5);
    assert_eq!(
        list(&reviewer, &bucket, Some("private/")).await.unwrap(),
        ["private/payroll.txt"]
    );

    let dir = tempfile::tempdir().unwrap();
    let log = audit_log(&server, dir.path());
    let listings = logged(&log, "s3:ListBucket", &id);
    let allowed: Vec<&&Value> = listings
        .iter()
        .filter(|e| e["decision"]["effect"] == "allow")
        .collect();
    assert_eq!(allowed.len(), 3, "{listings:#?}");
    assert!(
        allowed
            .iter()
            .all(|e| e["decision"]["statement"] == "AccessApprovalS3List1"
                && e["resource"] == format!("arn:aws:s3:::{bucket}").as_str()),
        "{allowed:#?}"
    );
    let denied: Vec<&&Value> = listings
        .iter()
        .filter(|e| e["decision"]["effect"] == "deny")
        .collect();
    assert_eq!(denied.len(), refused, "{listings:#?}");
    assert!(denied.iter().all(|e| e["status"] == 403), "{denied:#?}");
    let versions = logged(&log, "s3:ListBucketVersions", &id);
    assert_eq!(versions.len(), 1, "{log:#?}");
    assert_eq!(versions[0]["decision"]["effect"], "deny");
    // The forged request: a deny by the request checks, with the approval.
    let forged: Vec<&Value> = log
        .iter()
        .filter(|e| e["decision"]["policy"] == "nuage:s3-request-checks")
        .collect();
    assert_eq!(forged.len(), 1, "{log:#?}");
    assert_eq!(forged[0]["approval"], id.as_str());
    assert_eq!(forged[0]["decision"]["effect"], "deny");
    assert_eq!(forged[0]["decision"]["statement"], "SignatureDoesNotMatch");
    assert_eq!(forged[0]["actor"]["kind"], "role_session");
    assert_eq!(
        forged[0]["actor"]["access_key_id"],
        creds_key(&forged_creds)
    );
    assert!(
        forged[0]["action"]
            .as_str()
            .unwrap()
            .starts_with("s3:GET /{bucket}?list-type"),
        "{:#}",
        forged[0]
    );
    assert_eq!(
        logged(&log, "s3:ListBucket", &whole_id)
            .iter()
            .filter(|e| e["decision"]["effect"] == "allow")
            .count(),
        2
    );
}

fn creds_key(creds: &Value) -> &str {
    creds["access_key_id"].as_str().unwrap()
}
