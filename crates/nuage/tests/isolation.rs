//! Tenant isolation, as a matrix: two tenants, each operation of the S3
//! surface, each kind of caller (the owner's administrator, a narrowly
//! permitted user of the owner, the other tenant's administrator, anonymous,
//! a deactivated key, an expired session). Every cell is either allowed or
//! refused with the exact S3 error code and HTTP status AWS returns; nothing
//! in between. Then the policy dimension: bucket policies naming another
//! tenant or everyone, Block Public Access, an explicit Deny, and signatures
//! scoped to another service or region.
//!
//! Identities no API creates yet (a second tenant, a deactivated key, an
//! expired session) are written with the identity library straight into the
//! stopped server's metadata store; then the server starts again on it.
#![allow(clippy::unwrap_used)]

mod common;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketVersioningStatus, CompletedMultipartUpload, CompletedPart, CorsConfiguration, CorsRule,
    Delete, ObjectIdentifier, PublicAccessBlockConfiguration, Tag, Tagging,
    VersioningConfiguration,
};
use common::{Server, bucket_name, raw_request};
use nuage_iam::{Iam, KeyStatus, PolicyHolder, SESSION_DURATION_S_MAX, SessionSubject};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;

/// The first-start administrator policy (`ADMIN_POLICY` in the binary's
/// `bootstrap.rs`, which a test cannot import): everything, within the tenant.
const ADMIN_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"TenantAdministrator","Effect":"Allow","Action":"*","Resource":"*"}]}"#;

/// The content of every seeded object is its own key, so a read proves which
/// object it reached.
const SEEDED_KEYS: [&str; 5] = ["docs/x", "secret/y", "public/z", "victim/d", "victim/m"];

// ---------------------------------------------------------------- identities

/// Who makes a request. `A*` belong to tenant A (the `default` tenant, owner
/// of bucket A), `B*` to tenant B.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    /// A's `admin`: AdministratorAccess.
    AAdmin,
    /// A's `reader`: `s3:GetObject` on `A/docs/*` and nothing else.
    AReader,
    /// B's `admin`: AdministratorAccess (within B).
    BAdmin,
    /// B's `intern`: AdministratorAccess too, but never named by A's policies.
    BIntern,
    /// B's `nobody`: no policy at all.
    BNobody,
    /// No signature.
    Anonymous,
    /// A's `disabled`: AdministratorAccess, but its only key is Inactive.
    ADisabled,
    /// A's `admin` through an STS session that expired an hour ago.
    AExpired,
    /// A's `admin` through a live STS session: the control for `AExpired`.
    ASession,
}

/// The columns of the matrix, in order.
const COLUMNS: [Who; 6] = [
    Who::AAdmin,
    Who::AReader,
    Who::BAdmin,
    Who::Anonymous,
    Who::ADisabled,
    Who::AExpired,
];

struct Key {
    id: String,
    secret: String,
    token: Option<String>,
}

/// A clock two hours in the past: the only way to obtain a session that has
/// already expired, since sessions last at least 900 s.
struct PastClock;

impl nuage_base::Clock for PastClock {
    fn now_unix_ns(&self) -> i64 {
        nuage_base::SystemClock.now_unix_ns() - 2 * 3600 * 1_000_000_000
    }
}

// ---------------------------------------------------------------- outcomes

/// What a request got: success, or an S3 error.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Allowed,
    Refused { code: String, status: u16 },
}

/// What a cell expects, spelt compactly for the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum E {
    Ok,
    Err(&'static str, u16),
}

const OK: E = E::Ok;
const DENIED: E = E::Err("AccessDenied", 403);
/// AWS answers an unknown and a deactivated key alike.
const BAD_KEY: E = E::Err("InvalidAccessKeyId", 403);
/// AWS S3 answers an expired session token with 400.
const EXPIRED: E = E::Err("ExpiredToken", 400);
const NOT_EMPTY: E = E::Err("BucketNotEmpty", 409);
const OWNED: E = E::Err("BucketAlreadyOwnedByYou", 409);
const TAKEN: E = E::Err("BucketAlreadyExists", 409);
const NO_POLICY: E = E::Err("NoSuchBucketPolicy", 404);
const NO_TAGS: E = E::Err("NoSuchTagSet", 404);
const NO_CORS: E = E::Err("NoSuchCORSConfiguration", 404);
/// Allowed by a policy, but the operation is the owner's alone.
const NOT_OWNER: E = E::Err("MethodNotAllowed", 405);
/// The owner's CompleteMultipartUpload names a part that does not match.
const BAD_PART: E = E::Err("InvalidPart", 400);
const NO_PAB: E = E::Err("NoSuchPublicAccessBlockConfiguration", 404);

fn outcome<T, Err: ProvideErrorMetadata + std::fmt::Debug>(
    result: Result<T, SdkError<Err, HttpResponse>>,
) -> Outcome {
    match result {
        Ok(_) => Outcome::Allowed,
        Err(err) => {
            let Some(raw) = err.raw_response() else {
                panic!("the request failed without an HTTP response: {err:?}");
            };
            Outcome::Refused {
                code: err.code().unwrap_or("").to_owned(),
                status: raw.status().as_u16(),
            }
        }
    }
}

impl E {
    /// Whether `got` is this expectation. A HEAD response has no body: when
    /// the SDK could not tell its code, only the status is checked.
    fn matches(self, got: &Outcome, head: bool) -> bool {
        match (self, got) {
            (E::Ok, Outcome::Allowed) => true,
            (E::Err(code, status), Outcome::Refused { code: c, status: s }) => {
                *s == status && (c == code || (head && c.is_empty()))
            }
            _ => false,
        }
    }
}

// ---------------------------------------------------------------- fixture

struct Fixture {
    server: Server,
    tenant_a: String,
    tenant_b: String,
    bucket_a: String,
    bucket_b: String,
    keys: Vec<(Who, Key)>,
    /// A multipart upload opened by each owner in its bucket: (A's, B's).
    uploads: (String, String),
}

impl Fixture {
    async fn new(test: &str) -> Self {
        let mut server = Server::start();
        server.stop();
        let bucket_a = bucket_name(&format!("a-{test}"));
        let bucket_b = bucket_name(&format!("b-{test}"));
        let (tenant_a, tenant_b, mut keys) = seed_identities(&server, &bucket_a).await;
        keys.push((
            Who::AAdmin,
            Key {
                id: server.credentials.access_key_id.clone(),
                secret: server.credentials.secret_access_key.clone(),
                token: None,
            },
        ));
        server.restart();
        let mut fixture = Self {
            server,
            tenant_a,
            tenant_b,
            bucket_a,
            bucket_b,
            keys,
            uploads: (String::new(), String::new()),
        };
        let a = fixture.seed_bucket(Who::AAdmin).await;
        let b = fixture.seed_bucket(Who::BAdmin).await;
        fixture.uploads = (a, b);
        fixture
    }

    /// The owner creates its bucket, the seeded objects and an open upload.
    async fn seed_bucket(&self, owner: Who) -> String {
        let s3 = self.client(owner);
        let bucket = self.bucket_of(owner);
        s3.create_bucket().bucket(bucket).send().await.unwrap();
        for key in SEEDED_KEYS {
            s3.put_object()
                .bucket(bucket)
                .key(key)
                .body(ByteStream::from(key.as_bytes().to_vec()))
                .send()
                .await
                .unwrap();
        }
        s3.create_multipart_upload()
            .bucket(bucket)
            .key("mp/open")
            .send()
            .await
            .unwrap()
            .upload_id()
            .unwrap()
            .to_owned()
    }

    fn bucket_of(&self, owner: Who) -> &str {
        match owner {
            Who::BAdmin => &self.bucket_b,
            _ => &self.bucket_a,
        }
    }

    fn client(&self, who: Who) -> Client {
        self.client_in(who, &self.server.credentials.region)
    }

    fn client_in(&self, who: Who, region: &str) -> Client {
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&self.server.endpoint)
            .region(Region::new(region.to_owned()))
            .force_path_style(true)
            // A refusal is an answer, not a transient failure.
            .retry_config(RetryConfig::disabled());
        let config = match self.keys.iter().find(|(w, _)| *w == who) {
            Some((_, key)) => config.credentials_provider(aws_credential_types::Credentials::new(
                &key.id,
                &key.secret,
                key.token.clone(),
                None,
                "isolation-test",
            )),
            None => {
                assert_eq!(who, Who::Anonymous, "no key for {who:?}");
                // Without a credentials provider, NoAuth is the only scheme
                // left: the requests go out unsigned.
                config.allow_no_auth()
            }
        };
        Client::from_conf(config.build())
    }
}

/// Writes tenant B and the test identities into the stopped server's store.
/// Returns A's and B's tenant ids and the keys of every identity but A's admin.
async fn seed_identities(server: &Server, bucket_a: &str) -> (String, String, Vec<(Who, Key)>) {
    let store = Arc::new(
        nuage_meta::embedded::EmbeddedMetaStore::open(&server.data_dir.join("meta.redb")).unwrap(),
    );
    let iam = Iam::new(store.clone(), Arc::new(nuage_base::SystemClock));
    let past = Iam::new(store, Arc::new(PastClock));
    let tenant_a = iam.tenant("default").await.unwrap().id;
    let tenant_b = iam.create_tenant("beta", "FR", "").await.unwrap().id;
    assert_ne!(tenant_a, tenant_b);

    let reader_policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::{bucket_a}/docs/*"}}]}}"#
    );
    let users: [(Who, &str, &str, Option<&str>); 5] = [
        (Who::BAdmin, &tenant_b, "admin", Some(ADMIN_POLICY)),
        (Who::BIntern, &tenant_b, "intern", Some(ADMIN_POLICY)),
        (Who::BNobody, &tenant_b, "nobody", None),
        (Who::AReader, &tenant_a, "reader", Some(&reader_policy)),
        (Who::ADisabled, &tenant_a, "disabled", Some(ADMIN_POLICY)),
    ];
    let mut keys = Vec::new();
    for (who, tenant, name, policy) in users {
        iam.create_user(tenant, name, None, Vec::new())
            .await
            .unwrap();
        if let Some(policy) = policy {
            iam.put_inline_policy(PolicyHolder::User, tenant, name, "Inline", policy)
                .await
                .unwrap();
        }
        let key = iam.create_access_key(tenant, name).await.unwrap();
        keys.push((
            who,
            Key {
                id: key.access_key_id,
                secret: key.secret_access_key,
                token: None,
            },
        ));
    }
    let disabled = &keys.iter().find(|(w, _)| *w == Who::ADisabled).unwrap().1;
    iam.set_access_key_status(&tenant_a, "disabled", &disabled.id, KeyStatus::Inactive)
        .await
        .unwrap();

    // One hour long: one issued two hours ago, one now.
    for (who, issuer) in [(Who::AExpired, &past), (Who::ASession, &iam)] {
        let session = issuer
            .create_session(
                &tenant_a,
                SessionSubject::User {
                    user_name: "admin".into(),
                },
                3600,
                SESSION_DURATION_S_MAX,
                None,
                &format!("arn:aws:iam::{tenant_a}:user/admin"),
            )
            .await
            .unwrap();
        keys.push((
            who,
            Key {
                id: session.access_key_id,
                secret: session.secret_access_key,
                token: Some(session.session_token),
            },
        ));
    }
    (tenant_a, tenant_b, keys)
}

// ---------------------------------------------------------------- operations

/// Which bucket an operation reaches: the row's target, or the other one.
#[derive(Debug, Clone, Copy)]
enum Side {
    Target,
    Other,
}

/// One S3 operation, on the row's target bucket.
#[derive(Debug, Clone, Copy)]
enum Op {
    ListBuckets,
    /// CreateBucket with the target's (taken) name.
    CreateBucket,
    HeadBucket,
    GetBucketLocation,
    ListObjects,
    ListObjectsV2,
    ListObjectVersions,
    ListMultipartUploads,
    GetObject(&'static str),
    /// GetObject with `versionId=null`: the action is `s3:GetObjectVersion`.
    GetObjectVersion(&'static str),
    HeadObject(&'static str),
    PutObject(&'static str),
    /// CopyObject of `docs/x` from one bucket into the other (or the same).
    CopyObject {
        from: Side,
        to: Side,
    },
    CreateMultipartUpload,
    /// On the upload the owner opened.
    UploadPart,
    /// UploadPartCopy of `docs/x` from a bucket into the owner's upload.
    UploadPartCopy {
        from: Side,
    },
    ListParts,
    /// With a part list that does not match: the owner gets `InvalidPart`.
    CompleteMultipartUpload,
    AbortMultipartUpload,
    GetObjectTagging,
    PutObjectTagging,
    DeleteObjectTagging,
    GetBucketTagging,
    PutBucketTagging,
    DeleteBucketTagging,
    GetBucketVersioning,
    PutBucketVersioning,
    GetBucketPolicy,
    PutBucketPolicy,
    GetBucketPolicyStatus,
    DeleteBucketPolicy,
    GetPublicAccessBlock,
    PutPublicAccessBlock,
    DeletePublicAccessBlock,
    GetBucketCors,
    PutBucketCors,
    DeleteBucketCors,
    DeleteObject(&'static str),
    DeleteObjects(&'static str),
    DeleteBucket,
}

impl Op {
    fn is_head(self) -> bool {
        matches!(self, Op::HeadBucket | Op::HeadObject(_))
    }
}

impl Fixture {
    /// Runs `op` as `who` against `target` (owned by `owner`).
    #[allow(clippy::too_many_lines)] // one arm per operation reads best as one match
    async fn run(&self, op: Op, who: Who, owner: Who) -> Outcome {
        let s3 = self.client(who);
        let target = self.bucket_of(owner);
        let other = self.bucket_of(if owner == Who::BAdmin {
            Who::AAdmin
        } else {
            Who::BAdmin
        });
        let side = |s: Side| match s {
            Side::Target => target,
            Side::Other => other,
        };
        let upload = if owner == Who::BAdmin {
            &self.uploads.1
        } else {
            &self.uploads.0
        };
        let tags = || {
            Tagging::builder()
                .tag_set(Tag::builder().key("k").value("v").build().unwrap())
                .build()
                .unwrap()
        };
        match op {
            Op::ListBuckets => outcome(s3.list_buckets().send().await),
            Op::CreateBucket => outcome(s3.create_bucket().bucket(target).send().await),
            Op::HeadBucket => outcome(s3.head_bucket().bucket(target).send().await),
            Op::GetBucketLocation => outcome(s3.get_bucket_location().bucket(target).send().await),
            Op::ListObjects => outcome(s3.list_objects().bucket(target).send().await),
            Op::ListObjectsV2 => outcome(s3.list_objects_v2().bucket(target).send().await),
            Op::ListObjectVersions => {
                outcome(s3.list_object_versions().bucket(target).send().await)
            }
            Op::ListMultipartUploads => {
                outcome(s3.list_multipart_uploads().bucket(target).send().await)
            }
            Op::GetObject(key) => {
                let result = s3.get_object().bucket(target).key(key).send().await;
                if let Ok(output) = result {
                    // Allowed must also mean the right bytes.
                    let body = output.body.collect().await.unwrap().into_bytes();
                    assert_eq!(&body[..], key.as_bytes(), "{who:?} read {target}/{key}");
                    Outcome::Allowed
                } else {
                    outcome(result)
                }
            }
            Op::GetObjectVersion(key) => outcome(
                s3.get_object()
                    .bucket(target)
                    .key(key)
                    .version_id("null")
                    .send()
                    .await,
            ),
            Op::HeadObject(key) => outcome(s3.head_object().bucket(target).key(key).send().await),
            Op::PutObject(key) => outcome(
                s3.put_object()
                    .bucket(target)
                    .key(key)
                    .body(ByteStream::from_static(b"written"))
                    .send()
                    .await,
            ),
            Op::CopyObject { from, to } => {
                let dest = match (from, to) {
                    (Side::Target, Side::Target) => "copied",
                    _ => "stolen",
                };
                outcome(
                    s3.copy_object()
                        .copy_source(format!("{}/docs/x", side(from)))
                        .bucket(side(to))
                        .key(dest)
                        .send()
                        .await,
                )
            }
            Op::CreateMultipartUpload => outcome(
                s3.create_multipart_upload()
                    .bucket(target)
                    .key("mp/new")
                    .send()
                    .await,
            ),
            Op::UploadPart => outcome(
                s3.upload_part()
                    .bucket(target)
                    .key("mp/open")
                    .upload_id(upload)
                    .part_number(1)
                    .body(ByteStream::from_static(b"part"))
                    .send()
                    .await,
            ),
            Op::UploadPartCopy { from } => outcome(
                s3.upload_part_copy()
                    .bucket(target)
                    .key("mp/open")
                    .upload_id(upload)
                    .part_number(2)
                    .copy_source(format!("{}/docs/x", side(from)))
                    .send()
                    .await,
            ),
            Op::CompleteMultipartUpload => outcome(
                s3.complete_multipart_upload()
                    .bucket(target)
                    .key("mp/open")
                    .upload_id(upload)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .parts(
                                CompletedPart::builder()
                                    .part_number(1)
                                    .e_tag("\"00000000000000000000000000000000\"")
                                    .build(),
                            )
                            .build(),
                    )
                    .send()
                    .await,
            ),
            Op::ListParts => outcome(
                s3.list_parts()
                    .bucket(target)
                    .key("mp/open")
                    .upload_id(upload)
                    .send()
                    .await,
            ),
            Op::AbortMultipartUpload => outcome(
                s3.abort_multipart_upload()
                    .bucket(target)
                    .key("mp/open")
                    .upload_id(upload)
                    .send()
                    .await,
            ),
            Op::GetObjectTagging => outcome(
                s3.get_object_tagging()
                    .bucket(target)
                    .key("docs/x")
                    .send()
                    .await,
            ),
            Op::PutObjectTagging => outcome(
                s3.put_object_tagging()
                    .bucket(target)
                    .key("docs/x")
                    .tagging(tags())
                    .send()
                    .await,
            ),
            Op::DeleteObjectTagging => outcome(
                s3.delete_object_tagging()
                    .bucket(target)
                    .key("docs/x")
                    .send()
                    .await,
            ),
            Op::GetBucketTagging => outcome(s3.get_bucket_tagging().bucket(target).send().await),
            Op::PutBucketTagging => outcome(
                s3.put_bucket_tagging()
                    .bucket(target)
                    .tagging(tags())
                    .send()
                    .await,
            ),
            Op::DeleteBucketTagging => {
                outcome(s3.delete_bucket_tagging().bucket(target).send().await)
            }
            Op::GetBucketVersioning => {
                outcome(s3.get_bucket_versioning().bucket(target).send().await)
            }
            Op::PutBucketVersioning => outcome(
                s3.put_bucket_versioning()
                    .bucket(target)
                    .versioning_configuration(
                        VersioningConfiguration::builder()
                            .status(BucketVersioningStatus::Enabled)
                            .build(),
                    )
                    .send()
                    .await,
            ),
            Op::GetBucketPolicy => outcome(s3.get_bucket_policy().bucket(target).send().await),
            Op::PutBucketPolicy => {
                // What an intruder would like to install: the whole bucket
                // for the caller's tenant. When the owner puts it, it names
                // the owner's own tenant and changes nothing for the others.
                let caller_tenant = match who {
                    Who::BAdmin | Who::BIntern | Who::BNobody => &self.tenant_b,
                    _ => &self.tenant_a,
                };
                let policy = format!(
                    r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{caller_tenant}:root"}},"Action":"s3:*","Resource":["arn:aws:s3:::{target}","arn:aws:s3:::{target}/*"]}}]}}"#
                );
                outcome(
                    s3.put_bucket_policy()
                        .bucket(target)
                        .policy(policy)
                        .send()
                        .await,
                )
            }
            Op::GetBucketPolicyStatus => {
                outcome(s3.get_bucket_policy_status().bucket(target).send().await)
            }
            Op::DeleteBucketPolicy => {
                outcome(s3.delete_bucket_policy().bucket(target).send().await)
            }
            Op::GetPublicAccessBlock => {
                outcome(s3.get_public_access_block().bucket(target).send().await)
            }
            Op::PutPublicAccessBlock => outcome(
                s3.put_public_access_block()
                    .bucket(target)
                    .public_access_block_configuration(
                        PublicAccessBlockConfiguration::builder()
                            .block_public_policy(false)
                            .restrict_public_buckets(false)
                            .build(),
                    )
                    .send()
                    .await,
            ),
            Op::DeletePublicAccessBlock => {
                outcome(s3.delete_public_access_block().bucket(target).send().await)
            }
            Op::GetBucketCors => outcome(s3.get_bucket_cors().bucket(target).send().await),
            Op::PutBucketCors => outcome(
                s3.put_bucket_cors()
                    .bucket(target)
                    .cors_configuration(
                        CorsConfiguration::builder()
                            .cors_rules(
                                CorsRule::builder()
                                    .allowed_origins("*")
                                    .allowed_methods("GET")
                                    .build()
                                    .unwrap(),
                            )
                            .build()
                            .unwrap(),
                    )
                    .send()
                    .await,
            ),
            Op::DeleteBucketCors => outcome(s3.delete_bucket_cors().bucket(target).send().await),
            Op::DeleteObject(key) => {
                outcome(s3.delete_object().bucket(target).key(key).send().await)
            }
            Op::DeleteObjects(key) => outcome(
                s3.delete_objects()
                    .bucket(target)
                    .delete(
                        Delete::builder()
                            .objects(ObjectIdentifier::builder().key(key).build().unwrap())
                            .build()
                            .unwrap(),
                    )
                    .send()
                    .await,
            ),
            Op::DeleteBucket => outcome(s3.delete_bucket().bucket(target).send().await),
        }
    }

    /// Runs a table against the bucket of `owner`. In each row the refusals
    /// run before the grants, so a granted mutation (a deletion, a policy)
    /// cannot change what a refused caller faces. Returns one line per
    /// mismatching cell.
    async fn run_table(&self, owner: Who, table: &[(Op, [E; 6])]) -> Vec<String> {
        let mut mismatches = Vec::new();
        for (op, expected) in table {
            let mut cells: Vec<(Who, E)> = COLUMNS.into_iter().zip(*expected).collect();
            cells.sort_by_key(|(_, e)| *e == E::Ok);
            for (who, expect) in cells {
                let got = self.run(*op, who, owner).await;
                if !expect.matches(&got, op.is_head()) {
                    mismatches.push(format!(
                        "{op:?} on {owner:?}'s bucket as {who:?}: expected {expect:?}, got {got:?}"
                    ));
                }
            }
        }
        mismatches
    }

    /// The keys in an owner's bucket, listed by the owner.
    async fn keys_of(&self, owner: Who) -> BTreeSet<String> {
        self.client(owner)
            .list_objects_v2()
            .bucket(self.bucket_of(owner))
            .send()
            .await
            .unwrap()
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }

    async fn buckets_seen_by(&self, who: Who) -> BTreeSet<String> {
        self.client(who)
            .list_buckets()
            .send()
            .await
            .unwrap()
            .buckets()
            .iter()
            .filter_map(|b| b.name().map(str::to_owned))
            .collect()
    }
}

// ---------------------------------------------------------------- the matrix

/// Columns: A's admin, A's reader, B's admin, anonymous, A's deactivated key,
/// A's expired session. Target: bucket A (owned by tenant A).
#[rustfmt::skip] // one row per operation: the table is the specification
const BUCKET_A: &[(Op, [E; 6])] = &[
    (Op::ListBuckets,                 [OK,        DENIED, OK,     DENIED, BAD_KEY, EXPIRED]),
    (Op::CreateBucket,                [OWNED,     DENIED, TAKEN,  DENIED, BAD_KEY, EXPIRED]),
    (Op::HeadBucket,                  [OK,        DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::GetBucketLocation,           [OK,        DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::ListObjects,                 [OK,        DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::ListObjectsV2,               [OK,        DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::ListObjectVersions,          [OK,        DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::ListMultipartUploads,        [OK,        DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::GetObject("docs/x"),         [OK,        OK,     DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::GetObject("secret/y"),       [OK,        DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    // The reader may GetObject, not GetObjectVersion.
    (Op::GetObjectVersion("docs/x"),  [OK,        DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::HeadObject("docs/x"),        [OK,        OK,     DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::HeadObject("secret/y"),      [OK,        DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::PutObject("docs/new"),       [OK,        DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::CopyObject { from: Side::Target, to: Side::Target },
                                      [OK,        DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    // A's object into B's bucket: A may read it but not write there; B may
    // write there but not read the source.
    (Op::CopyObject { from: Side::Target, to: Side::Other },
                                      [DENIED,    DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    // B's object into A's bucket: the mirror image.
    (Op::CopyObject { from: Side::Other, to: Side::Target },
                                      [DENIED,    DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::CreateMultipartUpload,       [OK,        DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::UploadPart,                  [OK,        DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::UploadPartCopy { from: Side::Target },
                                      [OK,        DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    // B's object into A's upload: A may not read it, B may not write here.
    (Op::UploadPartCopy { from: Side::Other },
                                      [DENIED,    DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::ListParts,                   [OK,        DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::CompleteMultipartUpload,     [BAD_PART,  DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::GetObjectTagging,            [OK,        DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::PutObjectTagging,            [OK,        DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::DeleteObjectTagging,         [OK,        DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::GetBucketTagging,            [NO_TAGS,   DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::PutBucketTagging,            [OK,        DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::DeleteBucketTagging,         [OK,        DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::GetBucketVersioning,         [OK,        DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::PutBucketVersioning,         [OK,        DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::GetBucketPolicy,             [NO_POLICY, DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::PutBucketPolicy,             [OK,        DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::GetBucketPolicyStatus,       [OK,        DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::DeleteBucketPolicy,          [OK,        DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::GetPublicAccessBlock,        [NO_PAB,    DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::PutPublicAccessBlock,        [OK,        DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::DeletePublicAccessBlock,     [OK,        DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::GetBucketCors,               [NO_CORS,   DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::PutBucketCors,               [OK,        DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::DeleteBucketCors,            [OK,        DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::DeleteObject("victim/d"),    [OK,        DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::DeleteObjects("victim/m"),   [OK,        DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::AbortMultipartUpload,        [OK,        DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
    (Op::DeleteBucket,                [NOT_EMPTY, DENIED, DENIED, DENIED, BAD_KEY, EXPIRED]),
];

/// The same columns against bucket B (owned by tenant B): now B's admin is
/// the owner and A's identities are the strangers. A's reader's policy names
/// bucket A only. CreateBucket reaches no bucket policy, so A's admin gets as
/// far as the name clash.
#[rustfmt::skip] // one row per operation: the table is the specification
const BUCKET_B: &[(Op, [E; 6])] = &[
    (Op::CreateBucket,                [TAKEN,  DENIED, OWNED,     DENIED, BAD_KEY, EXPIRED]),
    (Op::HeadBucket,                  [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::GetBucketLocation,           [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::ListObjects,                 [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::ListObjectsV2,               [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::ListObjectVersions,          [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::ListMultipartUploads,        [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::GetObject("docs/x"),         [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::GetObject("secret/y"),       [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::GetObjectVersion("docs/x"),  [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::HeadObject("docs/x"),        [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::PutObject("docs/new"),       [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::CopyObject { from: Side::Target, to: Side::Target },
                                      [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::CreateMultipartUpload,       [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::UploadPart,                  [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::UploadPartCopy { from: Side::Target },
                                      [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::ListParts,                   [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::CompleteMultipartUpload,     [DENIED, DENIED, BAD_PART,  DENIED, BAD_KEY, EXPIRED]),
    (Op::GetObjectTagging,            [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::PutObjectTagging,            [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::DeleteObjectTagging,         [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::GetBucketTagging,            [DENIED, DENIED, NO_TAGS,   DENIED, BAD_KEY, EXPIRED]),
    (Op::PutBucketTagging,            [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::DeleteBucketTagging,         [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::GetBucketVersioning,         [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::PutBucketVersioning,         [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::GetBucketPolicy,             [DENIED, DENIED, NO_POLICY, DENIED, BAD_KEY, EXPIRED]),
    (Op::PutBucketPolicy,             [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::GetBucketPolicyStatus,       [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::DeleteBucketPolicy,          [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::GetPublicAccessBlock,        [DENIED, DENIED, NO_PAB,    DENIED, BAD_KEY, EXPIRED]),
    (Op::PutPublicAccessBlock,        [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::DeletePublicAccessBlock,     [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::GetBucketCors,               [DENIED, DENIED, NO_CORS,   DENIED, BAD_KEY, EXPIRED]),
    (Op::PutBucketCors,               [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::DeleteBucketCors,            [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::DeleteObject("victim/d"),    [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::DeleteObjects("victim/m"),   [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::AbortMultipartUpload,        [DENIED, DENIED, OK,        DENIED, BAD_KEY, EXPIRED]),
    (Op::DeleteBucket,                [DENIED, DENIED, NOT_EMPTY, DENIED, BAD_KEY, EXPIRED]),
];

#[tokio::test]
async fn every_operation_is_sealed_within_its_tenant() {
    let fx = Fixture::new("matrix").await;

    // ListBuckets shows the caller's tenant only.
    let seen_a = fx.buckets_seen_by(Who::AAdmin).await;
    let seen_b = fx.buckets_seen_by(Who::BAdmin).await;
    assert!(seen_a.contains(&fx.bucket_a), "{seen_a:?}");
    assert!(!seen_a.contains(&fx.bucket_b), "{seen_a:?}");
    assert_eq!(seen_b, BTreeSet::from([fx.bucket_b.clone()]));

    // The control for the expired session: the same subject through a live
    // session is A's admin, sealed within A like the key it came from.
    assert_eq!(
        fx.run(Op::GetObject("docs/x"), Who::ASession, Who::AAdmin)
            .await,
        Outcome::Allowed
    );
    assert!(
        DENIED.matches(
            &fx.run(Op::GetObject("docs/x"), Who::ASession, Who::BAdmin)
                .await,
            false
        )
    );

    let mut mismatches = fx.run_table(Who::AAdmin, BUCKET_A).await;
    mismatches.extend(fx.run_table(Who::BAdmin, BUCKET_B).await);
    let mut report = String::new();
    for line in &mismatches {
        writeln!(report, "  {line}").unwrap();
    }
    assert!(
        mismatches.is_empty(),
        "{} cells differ:\n{report}",
        mismatches.len()
    );

    // Nothing a refused caller attempted left a trace: each bucket holds
    // exactly the seeded objects plus what its owner wrote, with the seeded
    // bytes intact, and no bucket policy.
    for owner in [Who::AAdmin, Who::BAdmin] {
        let expected: BTreeSet<String> = ["docs/x", "secret/y", "public/z", "docs/new", "copied"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        assert_eq!(fx.keys_of(owner).await, expected, "{owner:?}'s bucket");
        let s3 = fx.client(owner);
        let bucket = fx.bucket_of(owner);
        for key in ["docs/x", "secret/y"] {
            let body = s3
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap()
                .body
                .collect()
                .await
                .unwrap()
                .into_bytes();
            assert_eq!(&body[..], key.as_bytes());
        }
        assert_eq!(
            outcome(s3.get_bucket_policy().bucket(bucket).send().await),
            Outcome::Refused {
                code: "NoSuchBucketPolicy".into(),
                status: 404
            }
        );
    }
}

// ---------------------------------------------------------------- policies

impl Fixture {
    /// Runs each `(who, op, expected)` in order on bucket A; panics listing
    /// every mismatch, under `step`.
    async fn expect(&self, step: &str, cells: &[(Who, Op, E)]) {
        let mut mismatches = String::new();
        for (who, op, expect) in cells {
            let got = self.run(*op, *who, Who::AAdmin).await;
            if !expect.matches(&got, op.is_head()) {
                writeln!(
                    mismatches,
                    "  {op:?} as {who:?}: expected {expect:?}, got {got:?}"
                )
                .unwrap();
            }
        }
        assert!(mismatches.is_empty(), "{step}:\n{mismatches}");
    }

    /// A's admin puts a bucket policy on bucket A.
    async fn put_policy(&self, statements: &[&str]) -> Outcome {
        let policy = format!(
            r#"{{"Version":"2012-10-17","Statement":[{}]}}"#,
            statements.join(",")
        );
        outcome(
            self.client(Who::AAdmin)
                .put_bucket_policy()
                .bucket(&self.bucket_a)
                .policy(policy)
                .send()
                .await,
        )
    }

    /// Bucket A's policy, as its owner reads it.
    async fn policy_text(&self) -> String {
        self.client(Who::AAdmin)
            .get_bucket_policy()
            .bucket(&self.bucket_a)
            .send()
            .await
            .unwrap()
            .policy()
            .unwrap()
            .to_owned()
    }

    async fn public_access_block(&self, block_public_policy: bool, restrict_public_buckets: bool) {
        self.client(Who::AAdmin)
            .put_public_access_block()
            .bucket(&self.bucket_a)
            .public_access_block_configuration(
                PublicAccessBlockConfiguration::builder()
                    .block_public_policy(block_public_policy)
                    .restrict_public_buckets(restrict_public_buckets)
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }

    /// A statement of bucket A's policy: `effect` of `s3:GetObject` on
    /// `prefix*` for `principal` (a JSON value), with an optional condition.
    fn statement(&self, effect: &str, principal: &str, prefix: &str, condition: &str) -> String {
        let condition = if condition.is_empty() {
            String::new()
        } else {
            format!(r#","Condition":{condition}"#)
        };
        format!(
            r#"{{"Effect":"{effect}","Principal":{principal},"Action":"s3:GetObject","Resource":"arn:aws:s3:::{}/{prefix}*"{condition}}}"#,
            self.bucket_a
        )
    }
}

/// An unsigned GET of a key of bucket A over plain HTTP, without the SDK:
/// status and S3 error code (empty on success).
fn anonymous_get(fx: &Fixture, key: &str) -> (u16, String) {
    let (status, _, body) = raw_request(
        &fx.server.endpoint,
        "GET",
        &format!("/{}/{key}", fx.bucket_a),
        &[],
    );
    (status, error_code(&body))
}

fn error_code(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map(|(code, _)| code.to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn bucket_policies_open_exactly_what_they_name() {
    let fx = Fixture::new("policy").await;
    let (a, b) = (&fx.tenant_a, &fx.tenant_b);
    let b_admin = format!(r#"{{"AWS":"arn:aws:iam::{b}:user/admin"}}"#);
    let b_root = format!(r#"{{"AWS":"arn:aws:iam::{b}:root"}}"#);
    let a_reader = format!(r#"{{"AWS":"arn:aws:iam::{a}:user/reader"}}"#);
    let to_b_admin = fx.statement("Allow", &b_admin, "docs/", "");
    let to_everyone = fx.statement("Allow", r#""*""#, "public/", "");
    let to_b_stolen = Op::CopyObject {
        from: Side::Target,
        to: Side::Other,
    };

    // 1. B's admin, by name, may read docs/*, and nothing else; B's other
    //    users and anonymous callers gain nothing.
    assert_eq!(fx.put_policy(&[&to_b_admin]).await, Outcome::Allowed);
    fx.expect(
        "a policy naming B's admin",
        &[
            (Who::BAdmin, Op::GetObject("docs/x"), OK),
            (Who::BAdmin, Op::HeadObject("docs/x"), OK),
            (Who::BAdmin, Op::GetObject("secret/y"), DENIED),
            (Who::BAdmin, Op::GetObject("public/z"), DENIED),
            (Who::BAdmin, Op::PutObject("docs/new"), DENIED),
            (Who::BAdmin, Op::DeleteObject("docs/x"), DENIED),
            (Who::BAdmin, Op::DeleteObjects("docs/x"), DENIED),
            (Who::BAdmin, Op::PutObjectTagging, DENIED),
            (Who::BAdmin, Op::ListObjectsV2, DENIED),
            (Who::BAdmin, Op::ListObjectVersions, DENIED),
            (Who::BAdmin, Op::GetBucketPolicy, DENIED),
            (Who::BAdmin, Op::PutBucketPolicy, DENIED),
            (Who::BAdmin, Op::DeleteBucketPolicy, DENIED),
            // Reading the source is now granted, writing into B is B's own.
            (Who::BAdmin, to_b_stolen, OK),
            (Who::BIntern, Op::GetObject("docs/x"), DENIED),
            (Who::BNobody, Op::GetObject("docs/x"), DENIED),
            (Who::Anonymous, Op::GetObject("docs/x"), DENIED),
            (Who::AReader, Op::GetObject("docs/x"), OK),
            (Who::AReader, Op::GetObject("secret/y"), DENIED),
        ],
    )
    .await;

    // 2. Managing the bucket policy is the owner's alone: granted to B's
    //    admin and to everyone, it still answers 405 (as AWS does), and the
    //    policy stays as A wrote it.
    let manage = format!(
        r#"{{"Effect":"Allow","Principal":{b_admin},"Action":["s3:GetBucketPolicy","s3:PutBucketPolicy","s3:DeleteBucketPolicy"],"Resource":"arn:aws:s3:::{0}"}},{{"Effect":"Allow","Principal":"*","Action":"s3:GetBucketPolicy","Resource":"arn:aws:s3:::{0}"}}"#,
        fx.bucket_a
    );
    assert_eq!(
        fx.put_policy(&[&to_b_admin, &manage]).await,
        Outcome::Allowed
    );
    let before = fx.policy_text().await;
    fx.expect(
        "a policy granting B its management",
        &[
            (Who::BAdmin, Op::GetBucketPolicy, NOT_OWNER),
            (Who::BAdmin, Op::PutBucketPolicy, NOT_OWNER),
            (Who::BAdmin, Op::DeleteBucketPolicy, NOT_OWNER),
            (Who::Anonymous, Op::GetBucketPolicy, NOT_OWNER),
            (Who::BIntern, Op::PutBucketPolicy, DENIED),
            (Who::AAdmin, Op::GetBucketPolicy, OK),
        ],
    )
    .await;
    assert_eq!(fx.policy_text().await, before);

    // 3. Naming B's account delegates to B: its users whose own policies
    //    allow may read, a user without any policy may not.
    let to_b_root = fx.statement("Allow", &b_root, "docs/", "");
    assert_eq!(fx.put_policy(&[&to_b_root]).await, Outcome::Allowed);
    fx.expect(
        "a policy naming B's account",
        &[
            (Who::BAdmin, Op::GetObject("docs/x"), OK),
            (Who::BIntern, Op::GetObject("docs/x"), OK),
            (Who::BIntern, Op::GetObject("secret/y"), DENIED),
            (Who::BNobody, Op::GetObject("docs/x"), DENIED),
            (Who::Anonymous, Op::GetObject("docs/x"), DENIED),
        ],
    )
    .await;

    // 4. A public statement opens public/* to everyone, and nothing else.
    let public = [to_b_admin.as_str(), &to_everyone];
    assert_eq!(fx.put_policy(&public).await, Outcome::Allowed);
    fx.expect(
        "a public policy on public/*",
        &[
            (Who::Anonymous, Op::GetObject("public/z"), OK),
            (Who::Anonymous, Op::HeadObject("public/z"), OK),
            (Who::Anonymous, Op::GetObject("docs/x"), DENIED),
            (Who::Anonymous, Op::GetObject("secret/y"), DENIED),
            (Who::Anonymous, Op::PutObject("public/new"), DENIED),
            (Who::Anonymous, Op::DeleteObject("public/z"), DENIED),
            (Who::Anonymous, Op::DeleteObjects("public/z"), DENIED),
            (Who::Anonymous, Op::ListObjectsV2, DENIED),
            (Who::Anonymous, Op::ListBuckets, DENIED),
            (Who::Anonymous, Op::GetBucketPolicy, DENIED),
            (Who::Anonymous, Op::GetObjectTagging, DENIED),
            (Who::BIntern, Op::GetObject("public/z"), OK),
            // Across tenants the caller's own policies must allow too.
            (Who::BNobody, Op::GetObject("public/z"), DENIED),
            (Who::BAdmin, Op::GetObject("docs/x"), OK),
        ],
    )
    .await;
    // The same without the SDK: the request really is unsigned.
    assert_eq!(anonymous_get(&fx, "public/z"), (200, String::new()));
    assert_eq!(
        anonymous_get(&fx, "secret/y"),
        (403, "AccessDenied".to_owned())
    );

    // 5. BlockPublicPolicy refuses a new public policy (an existing one
    //    stays, as in AWS), but not a policy that names its principals.
    fx.public_access_block(true, false).await;
    assert_eq!(
        fx.put_policy(&public).await,
        Outcome::Refused {
            code: "AccessDenied".into(),
            status: 403
        }
    );
    // A condition that does not pin the caller down keeps a policy public.
    let loosely_conditioned = fx.statement(
        "Allow",
        r#""*""#,
        "public/",
        r#"{"Bool":{"aws:SecureTransport":"false"}}"#,
    );
    assert_eq!(
        fx.put_policy(&[&to_b_admin, &loosely_conditioned]).await,
        Outcome::Refused {
            code: "AccessDenied".into(),
            status: 403
        }
    );
    fx.expect(
        "BlockPublicPolicy keeps the existing policy",
        &[(Who::Anonymous, Op::GetObject("public/z"), OK)],
    )
    .await;

    // 6. RestrictPublicBuckets: a public policy grants nothing outside A,
    //    neither to anonymous callers nor to the tenant it names.
    fx.public_access_block(true, true).await;
    fx.expect(
        "RestrictPublicBuckets",
        &[
            (Who::Anonymous, Op::GetObject("public/z"), DENIED),
            (Who::Anonymous, Op::HeadObject("public/z"), DENIED),
            (Who::BIntern, Op::GetObject("public/z"), DENIED),
            (Who::BAdmin, Op::GetObject("docs/x"), DENIED),
            (Who::AReader, Op::GetObject("docs/x"), OK),
            (Who::AAdmin, Op::GetObject("public/z"), OK),
        ],
    )
    .await;
    assert_eq!(
        anonymous_get(&fx, "public/z"),
        (403, "AccessDenied".to_owned())
    );
    fx.client(Who::AAdmin)
        .delete_public_access_block()
        .bucket(&fx.bucket_a)
        .send()
        .await
        .unwrap();
    fx.expect(
        "without Block Public Access",
        &[(Who::Anonymous, Op::GetObject("public/z"), OK)],
    )
    .await;

    // 7. An explicit Deny in the bucket policy beats the reader's own Allow.
    let deny_reader = fx.statement("Deny", &a_reader, "docs/", "");
    let with_deny = [to_b_admin.as_str(), &to_everyone, &deny_reader];
    assert_eq!(fx.put_policy(&with_deny).await, Outcome::Allowed);
    fx.expect(
        "an explicit Deny for A's reader",
        &[
            (Who::AReader, Op::GetObject("docs/x"), DENIED),
            (Who::AReader, Op::HeadObject("docs/x"), DENIED),
            (Who::AAdmin, Op::GetObject("docs/x"), OK),
            (Who::BAdmin, Op::GetObject("docs/x"), OK),
        ],
    )
    .await;

    // 8. Deleting the policy closes everything it opened.
    assert_eq!(
        outcome(
            fx.client(Who::AAdmin)
                .delete_bucket_policy()
                .bucket(&fx.bucket_a)
                .send()
                .await
        ),
        Outcome::Allowed
    );
    fx.expect(
        "no bucket policy",
        &[
            (Who::BAdmin, Op::GetObject("docs/x"), DENIED),
            (Who::BAdmin, to_b_stolen, DENIED),
            (Who::BIntern, Op::GetObject("docs/x"), DENIED),
            (Who::Anonymous, Op::GetObject("public/z"), DENIED),
            (Who::AReader, Op::GetObject("docs/x"), OK),
        ],
    )
    .await;
}

// ---------------------------------------------------------------- scope

#[tokio::test]
async fn signatures_are_scoped_to_s3_and_a_served_region() {
    let fx = Fixture::new("scope").await;
    let malformed = Outcome::Refused {
        code: "AuthorizationHeaderMalformed".into(),
        status: 400,
    };

    // A valid key, signing for a region this server does not serve.
    let elsewhere = fx.client_in(Who::AAdmin, "eu-west-9");
    let got = elsewhere
        .get_object()
        .bucket(&fx.bucket_a)
        .key("docs/x")
        .send()
        .await;
    assert_eq!(outcome(got), malformed);
    let got = elsewhere.list_buckets().send().await;
    assert_eq!(outcome(got), malformed);

    // The same through a presigned URL: the scope is in the query string.
    let presigned = elsewhere
        .get_object()
        .bucket(&fx.bucket_a)
        .key("docs/x")
        .presigned(
            aws_sdk_s3::presigning::PresigningConfig::expires_in(std::time::Duration::from_secs(
                300,
            ))
            .unwrap(),
        )
        .await
        .unwrap();
    let uri: http::Uri = presigned.uri().parse().unwrap();
    let (status, _, body) = raw_request(
        &fx.server.endpoint,
        "GET",
        uri.path_and_query().unwrap().as_str(),
        &[],
    );
    assert_eq!((status, error_code(&body)), (400, malformed_code()));

    // A valid key and region, signing for STS instead of S3.
    let region = &fx.server.credentials.region;
    let (status, body) = signed_get(&fx, "sts", region, "docs/x");
    assert_eq!((status, error_code(&body)), (400, malformed_code()));
    // Signing for IAM is refused before Nuage sees the request: s3s answers
    // any service but `s3` and `sts` with 501 NotImplemented, where AWS says
    // 400 AuthorizationHeaderMalformed. Refused either way; the code differs.
    let (status, body) = signed_get(&fx, "iam", region, "docs/x");
    assert_eq!(
        (status, error_code(&body)),
        (501, "NotImplemented".to_owned())
    );
    // The same request signed for S3 is served: the refusals were the scope.
    let (status, body) = signed_get(&fx, "s3", region, "docs/x");
    assert_eq!((status, &body[..]), (200, &b"docs/x"[..]));
}

fn malformed_code() -> String {
    "AuthorizationHeaderMalformed".to_owned()
}

/// A GET of a key of bucket A signed by A's admin with SigV4 for `service`
/// and `region`, sent over plain HTTP.
fn signed_get(fx: &Fixture, service: &str, region: &str, key: &str) -> (u16, Vec<u8>) {
    use aws_sigv4::http_request::{
        PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
        UriPathNormalizationMode, sign,
    };
    let creds = &fx.server.credentials;
    let identity = aws_credential_types::Credentials::new(
        &creds.access_key_id,
        &creds.secret_access_key,
        None,
        None,
        "isolation-test",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(std::time::SystemTime::now())
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let path = format!("/{}/{key}", fx.bucket_a);
    let host = fx.server.endpoint.trim_start_matches("http://").to_owned();
    let url = format!("{}{path}", fx.server.endpoint);
    let request = SignableRequest::new(
        "GET",
        &url,
        std::iter::once(("host", host.as_str())),
        SignableBody::Bytes(&[]),
    )
    .unwrap();
    let (instructions, _) = sign(request, &params).unwrap().into_parts();
    let mut headers: Vec<(&str, &str)> = vec![("host", host.as_str())];
    headers.extend(instructions.headers());
    let (status, _, body) = raw_request(&fx.server.endpoint, "GET", &path, &headers);
    (status, body)
}
