//! Whole requests through [`KmsApi::handle`]: signed JSON in, JSON out, over
//! a real identity service and key service on a temporary metadata store.

mod xks;

use super::*;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use nuage_base::SystemClock;
use nuage_iam::PolicyHolder;
use nuage_kms::KeyService;
use nuage_meta::embedded::EmbeddedMetaStore;
use serde_json::{Value, json};

const ADMIN_POLICY: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
const S3_ONLY_POLICY: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;
const REGION: &str = "fr-par";

#[derive(Clone)]
struct Creds {
    key: String,
    secret: String,
}

struct Fixture {
    api: KmsApi,
    iam: Iam,
    tenant: String,
    admin: Creds,
    _dir: tempfile::TempDir,
}

/// A response: status, `__type` of an error, and the JSON body.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: Value,
    /// What the response tells the audit log.
    audit: Option<nuage_audit::RequestAudit>,
}

impl Reply {
    fn ok(self) -> Value {
        assert_eq!(self.status, 200, "{:?}", self.body);
        self.body
    }

    fn error(&self) -> &str {
        self.body["__type"].as_str().unwrap_or("")
    }

    fn refused(self, status: u16, code: &str) -> Self {
        assert_eq!(
            (self.status, self.error()),
            (status, code),
            "{:?}",
            self.body
        );
        self
    }
}

fn b64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

fn amz_date() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

impl Fixture {
    async fn new() -> Self {
        Self::build(None).await
    }

    /// With `external` as the server's external key store client.
    async fn build(external: Option<Arc<dyn nuage_kms::ExternalKeyStore>>) -> Self {
        Self::build_with(external, Arc::new(SystemClock)).await
    }

    /// With `key_clock` as the key service's clock (signatures keep the
    /// system's: a test moves the keys' time only).
    async fn build_with(
        external: Option<Arc<dyn nuage_kms::ExternalKeyStore>>,
        key_clock: Arc<dyn Clock>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedMetaStore::open(&dir.path().join("meta.redb")).unwrap());
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let iam = Iam::new(store.clone(), Arc::clone(&clock));
        let root = nuage_crypto::RootKeyFile::open_or_create(&dir.path().join("root.key")).unwrap();
        let mut keys = CustomerKeys::new(KeyService::new(store, root), key_clock, REGION);
        if let Some(external) = external {
            keys = keys.with_external_key_store(external);
        }
        let tenant = iam.create_tenant("default", "FR", "").await.unwrap().id;
        let mut fixture = Self {
            api: KmsApi::new(keys, iam.clone(), clock),
            iam,
            tenant: tenant.clone(),
            admin: Creds {
                key: String::new(),
                secret: String::new(),
            },
            _dir: dir,
        };
        fixture.admin = fixture.user(&tenant, "admin", ADMIN_POLICY).await;
        fixture
    }

    /// A user of `tenant` with one inline policy, and its key.
    async fn user(&self, tenant: &str, name: &str, policy: &str) -> Creds {
        self.iam
            .create_user(tenant, name, None, vec![])
            .await
            .unwrap();
        self.iam
            .put_inline_policy(PolicyHolder::User, tenant, name, "p", policy)
            .await
            .unwrap();
        let key = self.iam.create_access_key(tenant, name).await.unwrap();
        Creds {
            key: key.access_key_id,
            secret: key.secret_access_key,
        }
    }

    fn request(operation: &str, body: &Value) -> http::Request<Bytes> {
        http::Request::post("/")
            .header("host", "127.0.0.1:9000")
            .header("content-type", CONTENT_TYPE)
            .header("x-amz-target", format!("TrentService.{operation}"))
            .header("x-amz-date", amz_date())
            .body(Bytes::from(body.to_string()))
            .unwrap()
    }

    async fn send(&self, request: http::Request<Bytes>) -> Reply {
        assert!(KmsApi::is_match(
            request.method(),
            request.uri(),
            request.headers()
        ));
        let context = RequestContext {
            request_id: "REQ1".into(),
            ..RequestContext::default()
        };
        let response = self
            .api
            .handle(request.map(http_body_util::Full::new), &context)
            .await;
        assert_eq!(response.headers()["content-type"], CONTENT_TYPE);
        assert_eq!(response.headers()["x-amzn-requestid"], "REQ1");
        let body = if response.body().is_empty() {
            json!({})
        } else {
            serde_json::from_slice(response.body()).unwrap()
        };
        Reply {
            status: response.status().as_u16(),
            body,
            audit: response
                .extensions()
                .get::<nuage_audit::RequestAudit>()
                .cloned(),
        }
    }

    async fn call_as(&self, creds: &Creds, operation: &str, body: Value) -> Reply {
        let mut request = Self::request(operation, &body);
        nuage_sigv4::sign(&mut request, &creds.key, &creds.secret, REGION, "kms").unwrap();
        self.send(request).await
    }

    async fn call(&self, operation: &str, body: Value) -> Reply {
        let admin = self.admin.clone();
        self.call_as(&admin, operation, body).await
    }

    async fn create_key(&self) -> (String, String) {
        let created = self
            .call("CreateKey", json!({"Description": "test key"}))
            .await
            .ok();
        let metadata = &created["KeyMetadata"];
        (
            metadata["KeyId"].as_str().unwrap().to_owned(),
            metadata["Arn"].as_str().unwrap().to_owned(),
        )
    }
}

#[test]
fn matches_kms_requests_only() {
    let matches = |method: &str, uri: &str, headers: &[(&str, &str)]| {
        let mut map = http::HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        KmsApi::is_match(&method.parse().unwrap(), &uri.parse().unwrap(), &map)
    };
    let target = ("x-amz-target", "TrentService.ListKeys");
    let kms = (
        "authorization",
        "AWS4-HMAC-SHA256 Credential=AK/20240501/fr-par/kms/aws4_request, SignedHeaders=host, Signature=00",
    );
    let s3 = (
        "authorization",
        "AWS4-HMAC-SHA256 Credential=AK/20240501/fr-par/s3/aws4_request, SignedHeaders=host, Signature=00",
    );
    assert!(matches("POST", "/", &[target, kms]));
    assert!(matches("POST", "/", &[target]), "unsigned: refused inside");
    assert!(!matches("POST", "/", &[target, s3]));
    assert!(!matches("GET", "/", &[target, kms]));
    assert!(!matches("POST", "/bucket", &[target, kms]));
    assert!(!matches(
        "POST",
        "/",
        &[("x-amz-target", "DynamoDB_20120810.ListTables"), kms]
    ));
    assert!(!matches("POST", "/", &[kms]), "no target: not KMS");
}

#[tokio::test]
async fn keys_encrypt_decrypt_and_bind_the_context() {
    let f = Fixture::new().await;
    let (key_id, arn) = f.create_key().await;
    assert_eq!(
        arn,
        format!("arn:aws:kms:{REGION}:{}:key/{key_id}", f.tenant)
    );
    let described = f.call("DescribeKey", json!({"KeyId": arn})).await.ok();
    let metadata = &described["KeyMetadata"];
    assert_eq!(metadata["KeyState"], "Enabled");
    assert_eq!(metadata["Enabled"], true);
    assert_eq!(metadata["KeySpec"], "SYMMETRIC_DEFAULT");
    assert_eq!(metadata["AWSAccountId"], f.tenant.as_str());
    assert!(metadata["CreationDate"].is_number());

    f.call(
        "CreateAlias",
        json!({"AliasName": "alias/app", "TargetKeyId": key_id}),
    )
    .await
    .ok();
    let encrypted = f
        .call(
            "Encrypt",
            json!({"KeyId": "alias/app", "Plaintext": b64(b"hello kms"),
                   "EncryptionContext": {"purpose": "test"}}),
        )
        .await
        .ok();
    assert_eq!(encrypted["KeyId"], arn.as_str());
    let blob = encrypted["CiphertextBlob"].as_str().unwrap().to_owned();
    let decrypted = f
        .call(
            "Decrypt",
            json!({"CiphertextBlob": blob, "EncryptionContext": {"purpose": "test"}}),
        )
        .await
        .ok();
    assert_eq!(decrypted["Plaintext"], b64(b"hello kms"));
    assert_eq!(decrypted["KeyId"], arn.as_str());
    f.call(
        "Decrypt",
        json!({"CiphertextBlob": blob, "EncryptionContext": {"purpose": "other"}}),
    )
    .await
    .refused(400, "InvalidCiphertextException");
    f.call("Decrypt", json!({"CiphertextBlob": b64(b"garbage")}))
        .await
        .refused(400, "InvalidCiphertextException");
    // Naming another key than the one that sealed it.
    let (other_id, _) = f.create_key().await;
    f.call(
        "Decrypt",
        json!({"CiphertextBlob": blob, "KeyId": other_id,
               "EncryptionContext": {"purpose": "test"}}),
    )
    .await
    .refused(400, "IncorrectKeyException");
    // ReEncrypt moves it under another key and context.
    let moved = f
        .call(
            "ReEncrypt",
            json!({"CiphertextBlob": blob, "SourceEncryptionContext": {"purpose": "test"},
                   "DestinationKeyId": other_id}),
        )
        .await
        .ok();
    let decrypted = f
        .call(
            "Decrypt",
            json!({"CiphertextBlob": moved["CiphertextBlob"]}),
        )
        .await
        .ok();
    assert_eq!(decrypted["Plaintext"], b64(b"hello kms"));
    // Dry runs stop after the checks.
    f.call(
        "Encrypt",
        json!({"KeyId": key_id, "Plaintext": b64(b"x"), "DryRun": true}),
    )
    .await
    .refused(412, "DryRunOperationException");
}

#[tokio::test]
async fn data_keys_random_and_rotation() {
    let f = Fixture::new().await;
    let (key_id, _) = f.create_key().await;
    let data_key = f
        .call(
            "GenerateDataKey",
            json!({"KeyId": key_id, "KeySpec": "AES_256"}),
        )
        .await
        .ok();
    let plaintext = BASE64
        .decode(data_key["Plaintext"].as_str().unwrap())
        .unwrap();
    assert_eq!(plaintext.len(), 32);
    let opened = f
        .call(
            "Decrypt",
            json!({"CiphertextBlob": data_key["CiphertextBlob"]}),
        )
        .await
        .ok();
    assert_eq!(opened["Plaintext"], data_key["Plaintext"]);
    let without = f
        .call(
            "GenerateDataKeyWithoutPlaintext",
            json!({"KeyId": key_id, "NumberOfBytes": 64}),
        )
        .await
        .ok();
    assert!(without.get("Plaintext").is_none());
    for body in [
        json!({"KeyId": key_id}),
        json!({"KeyId": key_id, "KeySpec": "AES_256", "NumberOfBytes": 32}),
        json!({"KeyId": key_id, "KeySpec": "RSA_2048"}),
        json!({"KeyId": key_id, "NumberOfBytes": 2000}),
    ] {
        f.call("GenerateDataKey", body)
            .await
            .refused(400, "ValidationException");
    }
    let random = f
        .call("GenerateRandom", json!({"NumberOfBytes": 16}))
        .await
        .ok();
    assert_eq!(
        BASE64
            .decode(random["Plaintext"].as_str().unwrap())
            .unwrap()
            .len(),
        16
    );

    // Rotation: on demand, listed, old ciphertext still opens.
    let status = f
        .call("GetKeyRotationStatus", json!({"KeyId": key_id}))
        .await
        .ok();
    assert_eq!(status["KeyRotationEnabled"], false);
    f.call(
        "EnableKeyRotation",
        json!({"KeyId": key_id, "RotationPeriodInDays": 180}),
    )
    .await
    .ok();
    let status = f
        .call("GetKeyRotationStatus", json!({"KeyId": key_id}))
        .await
        .ok();
    assert_eq!(status["KeyRotationEnabled"], true);
    assert_eq!(status["RotationPeriodInDays"], 180);
    assert!(status["NextRotationDate"].is_number());
    f.call("RotateKeyOnDemand", json!({"KeyId": key_id}))
        .await
        .ok();
    let rotations = f
        .call("ListKeyRotations", json!({"KeyId": key_id}))
        .await
        .ok();
    let list = rotations["Rotations"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["RotationType"], "ON_DEMAND");
    assert_eq!(list[0]["KeyMaterialState"], "CURRENT");
    let all = f
        .call(
            "ListKeyRotations",
            json!({"KeyId": key_id, "IncludeKeyMaterial": "ALL_KEY_MATERIAL", "Limit": 1}),
        )
        .await
        .ok();
    assert_eq!(all["Truncated"], true);
    let rest = f
        .call(
            "ListKeyRotations",
            json!({"KeyId": key_id, "IncludeKeyMaterial": "ALL_KEY_MATERIAL",
                   "Marker": all["NextMarker"]}),
        )
        .await
        .ok();
    assert_eq!(rest["Rotations"].as_array().unwrap().len(), 1);
    let opened = f
        .call(
            "Decrypt",
            json!({"CiphertextBlob": data_key["CiphertextBlob"]}),
        )
        .await
        .ok();
    assert_eq!(opened["Plaintext"], data_key["Plaintext"]);
}

#[tokio::test]
async fn states_aliases_and_listings() {
    let f = Fixture::new().await;
    let (key_id, arn) = f.create_key().await;
    f.call("DisableKey", json!({"KeyId": key_id})).await.ok();
    f.call("Encrypt", json!({"KeyId": key_id, "Plaintext": b64(b"x")}))
        .await
        .refused(400, "DisabledException");
    f.call("EnableKey", json!({"KeyId": key_id})).await.ok();
    let scheduled = f
        .call(
            "ScheduleKeyDeletion",
            json!({"KeyId": arn, "PendingWindowInDays": 7}),
        )
        .await
        .ok();
    assert_eq!(scheduled["KeyState"], "PendingDeletion");
    assert_eq!(scheduled["PendingWindowInDays"], 7);
    f.call(
        "ScheduleKeyDeletion",
        json!({"KeyId": key_id, "PendingWindowInDays": 3}),
    )
    .await
    .refused(400, "ValidationException");
    f.call("Encrypt", json!({"KeyId": key_id, "Plaintext": b64(b"x")}))
        .await
        .refused(400, "KMSInvalidStateException");
    let described = f.call("DescribeKey", json!({"KeyId": key_id})).await.ok();
    assert_eq!(described["KeyMetadata"]["KeyState"], "PendingDeletion");
    assert!(described["KeyMetadata"]["DeletionDate"].is_number());
    f.call("CancelKeyDeletion", json!({"KeyId": key_id}))
        .await
        .ok();
    let described = f.call("DescribeKey", json!({"KeyId": key_id})).await.ok();
    assert_eq!(described["KeyMetadata"]["KeyState"], "Disabled");

    // Aliases: create, list (all and per key), move, delete.
    let (second, _) = f.create_key().await;
    f.call(
        "CreateAlias",
        json!({"AliasName": "alias/one", "TargetKeyId": key_id}),
    )
    .await
    .ok();
    f.call(
        "CreateAlias",
        json!({"AliasName": "alias/one", "TargetKeyId": second}),
    )
    .await
    .refused(400, "AlreadyExistsException");
    f.call(
        "CreateAlias",
        json!({"AliasName": "alias/two", "TargetKeyId": "alias/one"}),
    )
    .await
    .refused(400, "ValidationException");
    f.call(
        "CreateAlias",
        json!({"AliasName": "alias/aws/s3", "TargetKeyId": key_id}),
    )
    .await
    .refused(400, "InvalidAliasNameException");
    f.call(
        "UpdateAlias",
        json!({"AliasName": "alias/one", "TargetKeyId": second}),
    )
    .await
    .ok();
    let aliases = f.call("ListAliases", json!({"KeyId": second})).await.ok();
    let entries = aliases["Aliases"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["AliasName"], "alias/one");
    assert_eq!(entries[0]["TargetKeyId"], second.as_str());
    assert_eq!(
        entries[0]["AliasArn"],
        format!("arn:aws:kms:{REGION}:{}:alias/one", f.tenant)
    );
    f.call("DeleteAlias", json!({"AliasName": "alias/one"}))
        .await
        .ok();
    f.call("DescribeKey", json!({"KeyId": "alias/one"}))
        .await
        .refused(400, "NotFoundException");
    let keys = f.call("ListKeys", json!({"Limit": 1})).await.ok();
    assert_eq!(keys["Keys"].as_array().unwrap().len(), 1);
    assert_eq!(keys["Truncated"], true);
    let rest = f
        .call("ListKeys", json!({"Marker": keys["NextMarker"]}))
        .await
        .ok();
    assert_eq!(rest["Keys"].as_array().unwrap().len(), 1);
    assert_eq!(rest["Truncated"], false);
    f.call("ListKeys", json!({"Limit": 0}))
        .await
        .refused(400, "ValidationException");

    // Key policies: read back, validated, lockout refused unless bypassed.
    let policy = f.call("GetKeyPolicy", json!({"KeyId": key_id})).await.ok();
    assert!(
        policy["Policy"]
            .as_str()
            .unwrap()
            .contains(&format!("arn:aws:iam::{}:root", f.tenant))
    );
    f.call(
        "PutKeyPolicy",
        json!({"KeyId": key_id, "Policy": "{not json"}),
    )
    .await
    .refused(400, "MalformedPolicyDocumentException");
    let lockout = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":"*","Action":"kms:*","Resource":"*"}]}"#;
    f.call("PutKeyPolicy", json!({"KeyId": key_id, "Policy": lockout}))
        .await
        .refused(400, "MalformedPolicyDocumentException");
    f.call(
        "PutKeyPolicy",
        json!({"KeyId": key_id, "Policy": lockout, "BypassPolicyLockoutSafetyCheck": true}),
    )
    .await
    .ok();
    // The key policy's Deny binds even the tenant administrator.
    f.call("DescribeKey", json!({"KeyId": key_id}))
        .await
        .refused(400, "AccessDeniedException");
}

#[tokio::test]
async fn authorization_and_tenant_isolation() {
    let f = Fixture::new().await;
    let (key_id, arn) = f.create_key().await;
    let blob = f
        .call("Encrypt", json!({"KeyId": key_id, "Plaintext": b64(b"t1")}))
        .await
        .ok()["CiphertextBlob"]
        .clone();

    // Same tenant, no KMS permission: AccessDeniedException (HTTP 400).
    let s3_user = f.user(&f.tenant, "s3-only", S3_ONLY_POLICY).await;
    for (operation, body) in [
        ("DescribeKey", json!({"KeyId": key_id})),
        ("Encrypt", json!({"KeyId": key_id, "Plaintext": b64(b"x")})),
        ("Decrypt", json!({"CiphertextBlob": blob})),
        ("CreateKey", json!({})),
        ("ListKeys", json!({})),
        ("GenerateRandom", json!({"NumberOfBytes": 8})),
    ] {
        f.call_as(&s3_user, operation, body)
            .await
            .refused(400, "AccessDeniedException");
    }
    // A key policy naming the user grants without an identity policy.
    let names_user = format!(
        r#"{{"Version":"2012-10-17","Statement":[
            {{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{t}:root"}},"Action":"kms:*","Resource":"*"}},
            {{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{t}:user/s3-only"}},"Action":"kms:Decrypt","Resource":"*"}}]}}"#,
        t = f.tenant
    );
    f.call(
        "PutKeyPolicy",
        json!({"KeyId": key_id, "Policy": names_user}),
    )
    .await
    .ok();
    f.call_as(&s3_user, "Decrypt", json!({"CiphertextBlob": blob}))
        .await
        .ok();
    f.call_as(
        &s3_user,
        "Encrypt",
        json!({"KeyId": key_id, "Plaintext": b64(b"x")}),
    )
    .await
    .refused(400, "AccessDeniedException");
    // An identity policy limited by encryption context.
    let scoped = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"kms:Encrypt","Resource":"{arn}",
            "Condition":{{"StringEquals":{{"kms:EncryptionContext:team":"blue"}}}}}}]}}"#
    );
    let blue = f.user(&f.tenant, "blue", &scoped).await;
    f.call_as(
        &blue,
        "Encrypt",
        json!({"KeyId": arn, "Plaintext": b64(b"x"), "EncryptionContext": {"team": "blue"}}),
    )
    .await
    .ok();
    f.call_as(
        &blue,
        "Encrypt",
        json!({"KeyId": arn, "Plaintext": b64(b"x"), "EncryptionContext": {"team": "red"}}),
    )
    .await
    .refused(400, "AccessDeniedException");

    // Another tenant's administrator: the key does not exist for it.
    let other = f.iam.create_tenant("other", "FR", "").await.unwrap().id;
    let intruder = f.user(&other, "admin", ADMIN_POLICY).await;
    for (operation, body) in [
        ("DescribeKey", json!({"KeyId": key_id})),
        ("DescribeKey", json!({"KeyId": arn})),
        ("Encrypt", json!({"KeyId": arn, "Plaintext": b64(b"x")})),
        ("Decrypt", json!({"CiphertextBlob": blob})),
        ("ScheduleKeyDeletion", json!({"KeyId": key_id})),
        ("GetKeyPolicy", json!({"KeyId": arn})),
    ] {
        f.call_as(&intruder, operation, body)
            .await
            .refused(400, "NotFoundException");
    }
    let listed = f.call_as(&intruder, "ListKeys", json!({})).await.ok();
    assert!(listed["Keys"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn authentication_and_wire_errors() {
    let f = Fixture::new().await;
    // Unsigned.
    let request = Fixture::request("ListKeys", &json!({}));
    f.send(request)
        .await
        .refused(400, "MissingAuthenticationTokenException");
    // Wrong secret, unknown key.
    let wrong = Creds {
        key: f.admin.key.clone(),
        secret: "not the secret".into(),
    };
    f.call_as(&wrong, "ListKeys", json!({}))
        .await
        .refused(400, "InvalidSignatureException");
    let unknown = Creds {
        key: "AKIAUNKNOWN".into(),
        secret: "x".into(),
    };
    f.call_as(&unknown, "ListKeys", json!({}))
        .await
        .refused(400, "UnrecognizedClientException");
    // Unknown operation, malformed JSON, missing member.
    f.call("Sign", json!({}))
        .await
        .refused(400, "UnknownOperationException");
    f.call("DescribeKey", json!({}))
        .await
        .refused(400, "ValidationException");
    let mut request = Fixture::request("ListKeys", &json!({}));
    *request.body_mut() = Bytes::from_static(b"{nope");
    nuage_sigv4::sign(&mut request, &f.admin.key, &f.admin.secret, REGION, "kms").unwrap();
    f.send(request).await.refused(400, "SerializationException");
    // Bodies are bounded.
    let huge = "a".repeat(KMS_REQUEST_BODY_BYTES_MAX);
    f.call("Encrypt", json!({"KeyId": "alias/x", "Plaintext": huge}))
        .await
        .refused(413, "RequestEntityTooLargeException");
    // Unsupported key types are refused, not silently created.
    f.call(
        "CreateKey",
        json!({"KeySpec": "RSA_2048", "KeyUsage": "SIGN_VERIFY"}),
    )
    .await
    .refused(400, "UnsupportedOperationException");
    // Operations with no output answer an empty 200.
    let (key_id, _) = f.create_key().await;
    let reply = f.call("DisableKey", json!({"KeyId": key_id})).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn sessions_need_their_token_and_keep_their_policy() {
    let f = Fixture::new().await;
    let (key_id, _) = f.create_key().await;
    let describe_only = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:DescribeKey","Resource":"*"}]}"#;
    let session = f
        .iam
        .create_session(
            &f.tenant,
            nuage_iam::SessionSubject::User {
                user_name: "admin".into(),
            },
            3600,
            3600,
            Some(describe_only.into()),
            "test",
        )
        .await
        .unwrap();
    let creds = Creds {
        key: session.access_key_id.clone(),
        secret: session.secret_access_key.clone(),
    };
    let send = |token: Option<&str>, operation: &str, body: Value| {
        let mut request = Fixture::request(operation, &body);
        if let Some(token) = token {
            request
                .headers_mut()
                .insert("x-amz-security-token", token.parse().unwrap());
        }
        nuage_sigv4::sign(&mut request, &creds.key, &creds.secret, REGION, "kms").unwrap();
        f.send(request)
    };
    send(None, "DescribeKey", json!({"KeyId": key_id}))
        .await
        .refused(400, "UnrecognizedClientException");
    send(Some("wrong"), "DescribeKey", json!({"KeyId": key_id}))
        .await
        .refused(400, "UnrecognizedClientException");
    let token = session.session_token.as_str();
    send(Some(token), "DescribeKey", json!({"KeyId": key_id}))
        .await
        .ok();
    // The session policy narrows the administrator's `*`.
    send(
        Some(token),
        "Encrypt",
        json!({"KeyId": key_id, "Plaintext": b64(b"x")}),
    )
    .await
    .refused(400, "AccessDeniedException");
}

#[tokio::test]
async fn key_access_reasons_get_put_authorize_and_validate() {
    let f = Fixture::new().await;
    let arn = format!("arn:aws:kms:{REGION}:{}:key/tenant-data", f.tenant);
    // The defaults, before the tenant sets its own.
    let got = f.call("GetKeyAccessReasons", json!({})).await.ok();
    assert_eq!(got["KeyId"], arn);
    assert_eq!(
        got["AllowedReasons"],
        json!([
            "CUSTOMER_INITIATED_ACCESS",
            "CUSTOMER_INITIATED_SUPPORT",
            "OPERATOR_INITIATED_SYSTEM_OPERATION"
        ])
    );
    // No body at all is a valid GetKeyAccessReasons.
    let mut request = Fixture::request("GetKeyAccessReasons", &json!({}));
    *request.body_mut() = Bytes::new();
    nuage_sigv4::sign(&mut request, &f.admin.key, &f.admin.secret, REGION, "kms").unwrap();
    f.send(request).await.ok();

    let wanted = json!([
        "OPERATOR_INITIATED_SYSTEM_OPERATION",
        "THIRD_PARTY_DATA_REQUEST"
    ]);
    let put = f
        .call("PutKeyAccessReasons", json!({ "AllowedReasons": wanted }))
        .await
        .ok();
    assert_eq!(put, json!({}));
    assert_eq!(
        f.call("GetKeyAccessReasons", json!({})).await.ok()["AllowedReasons"],
        wanted
    );
    assert_eq!(
        f.api
            .keys
            .key_service()
            .allowed_reasons(&f.tenant)
            .await
            .unwrap(),
        vec![
            nuage_kms::AccessReason::OperatorInitiatedSystemOperation,
            nuage_kms::AccessReason::ThirdPartyDataRequest
        ]
    );

    // Validation: unknown names, a missing or mistyped member; nothing changes.
    let unknown = f
        .call(
            "PutKeyAccessReasons",
            json!({ "AllowedReasons": ["CUSTOMER_INITIATED_ACCESS", "BECAUSE"] }),
        )
        .await
        .refused(400, "ValidationException");
    assert!(
        unknown.body["message"]
            .as_str()
            .unwrap()
            .contains("BECAUSE"),
        "{:?}",
        unknown.body
    );
    f.call("PutKeyAccessReasons", json!({}))
        .await
        .refused(400, "ValidationException");
    f.call("PutKeyAccessReasons", json!({ "AllowedReasons": "ALL" }))
        .await
        .refused(400, "SerializationException");
    assert_eq!(
        f.call("GetKeyAccessReasons", json!({})).await.ok()["AllowedReasons"],
        wanted
    );
    // An empty list is accepted (it locks every read).
    f.call("PutKeyAccessReasons", json!({ "AllowedReasons": [] }))
        .await
        .ok();
    assert_eq!(
        f.call("GetKeyAccessReasons", json!({})).await.ok()["AllowedReasons"],
        json!([])
    );

    // Authorization: identity policies on the tenant data key's ARN.
    let s3_only = f.user(&f.tenant, "s3-only", S3_ONLY_POLICY).await;
    for (operation, body) in [
        ("GetKeyAccessReasons", json!({})),
        (
            "PutKeyAccessReasons",
            json!({ "AllowedReasons": ["CUSTOMER_INITIATED_ACCESS"] }),
        ),
    ] {
        let denied = f
            .call_as(&s3_only, operation, body)
            .await
            .refused(400, "AccessDeniedException");
        let message = denied.body["message"].as_str().unwrap();
        assert!(message.contains(&format!("kms:{operation}")), "{message}");
        assert!(message.contains(&arn), "{message}");
    }
    let reader_policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"kms:GetKeyAccessReasons","Resource":"{arn}"}}]}}"#
    );
    let reader = f.user(&f.tenant, "reader", &reader_policy).await;
    f.call_as(&reader, "GetKeyAccessReasons", json!({}))
        .await
        .ok();
    f.call_as(
        &reader,
        "PutKeyAccessReasons",
        json!({ "AllowedReasons": ["CUSTOMER_INITIATED_ACCESS"] }),
    )
    .await
    .refused(400, "AccessDeniedException");
    assert_eq!(
        f.call("GetKeyAccessReasons", json!({})).await.ok()["AllowedReasons"],
        json!([])
    );

    // Each tenant has its own list.
    let other = f.iam.create_tenant("other", "FR", "").await.unwrap().id;
    let other_admin = f.user(&other, "admin", ADMIN_POLICY).await;
    let theirs = f
        .call_as(&other_admin, "GetKeyAccessReasons", json!({}))
        .await
        .ok();
    assert_eq!(
        theirs["KeyId"],
        format!("arn:aws:kms:{REGION}:{other}:key/tenant-data")
    );
    assert_eq!(theirs["AllowedReasons"].as_array().unwrap().len(), 3);
}

/// The system clock moved forward by a number of days the test sets.
struct AheadClock(std::sync::atomic::AtomicI64);

impl Clock for AheadClock {
    fn now_unix_ns(&self) -> i64 {
        SystemClock.now_unix_ns()
            + self.0.load(std::sync::atomic::Ordering::SeqCst) * 86_400 * 1_000_000_000
    }
}

#[tokio::test]
async fn list_shredded_keys_reports_deleted_keys_in_pages() {
    let clock = Arc::new(AheadClock(std::sync::atomic::AtomicI64::new(0)));
    let f = Fixture::build_with(None, clock.clone()).await;
    let mut doomed = Vec::new();
    for _ in 0..3 {
        let (key_id, arn) = f.create_key().await;
        f.call(
            "ScheduleKeyDeletion",
            json!({"KeyId": key_id, "PendingWindowInDays": 7}),
        )
        .await
        .ok();
        doomed.push((key_id, arn));
    }
    let (kept, _) = f.create_key().await;
    // Nothing is shredded while the keys wait.
    let none = f.call("ListShreddedKeys", json!({})).await.ok();
    assert_eq!(none, json!({"ShreddedKeys": [], "Truncated": false}));

    clock.0.store(8, std::sync::atomic::Ordering::SeqCst);
    // A lookup of a deleted key says it was shredded.
    let refused = f
        .call("DescribeKey", json!({"KeyId": doomed[1].0}))
        .await
        .refused(400, "NotFoundException");
    let message = refused.body["message"].as_str().unwrap();
    assert!(message.contains("crypto-shredded"), "{message}");
    assert!(message.contains(&doomed[1].1), "{message}");
    // The listing meets the others.
    let keys = f.call("ListKeys", json!({})).await.ok();
    assert_eq!(keys["Keys"].as_array().unwrap().len(), 1);
    assert_eq!(keys["Keys"][0]["KeyId"], kept.as_str());

    let mut expected: Vec<String> = doomed.iter().map(|(id, _)| id.clone()).collect();
    expected.sort();
    let first = f.call("ListShreddedKeys", json!({"Limit": 2})).await.ok();
    assert_eq!(first["Truncated"], true);
    let entries = first["ShreddedKeys"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    let entry = &entries[0];
    assert_eq!(entry["KeyId"], expected[0].as_str());
    assert_eq!(
        entry["KeyArn"],
        format!("arn:aws:kms:{REGION}:{}:key/{}", f.tenant, expected[0])
    );
    assert_eq!(entry["Description"], "test key");
    assert_eq!(entry["MaterialVersionsDestroyed"], 1);
    assert_eq!(entry["Origin"], "AWS_KMS");
    let created = entry["CreationDate"].as_f64().unwrap();
    let scheduled = entry["ScheduledDeletionDate"].as_f64().unwrap();
    let deleted = entry["DeletionDate"].as_f64().unwrap();
    assert!((scheduled - created - 7.0 * 86_400.0).abs() < 60.0);
    assert!(deleted >= scheduled);
    // No key material of any form in the answer.
    for member in entry.as_object().unwrap().keys() {
        assert!(
            !member.contains("Material") || member == "MaterialVersionsDestroyed",
            "{member}"
        );
    }
    let rest = f
        .call(
            "ListShreddedKeys",
            json!({"Marker": first["NextMarker"], "Limit": 2}),
        )
        .await
        .ok();
    assert_eq!(rest["Truncated"], false);
    let mut seen: Vec<String> = entries
        .iter()
        .chain(rest["ShreddedKeys"].as_array().unwrap())
        .map(|e| e["KeyId"].as_str().unwrap().to_owned())
        .collect();
    seen.dedup();
    assert_eq!(seen, expected);
    f.call("ListShreddedKeys", json!({"Marker": "x"}))
        .await
        .refused(400, "InvalidMarkerException");
    f.call("ListShreddedKeys", json!({"Limit": 0}))
        .await
        .refused(400, "ValidationException");

    // Authorized as kms:ListShreddedKeys on `*`, by identity policies.
    let s3_only = f.user(&f.tenant, "s3-only", S3_ONLY_POLICY).await;
    f.call_as(&s3_only, "ListShreddedKeys", json!({}))
        .await
        .refused(400, "AccessDeniedException");
    let lister = f
        .user(
            &f.tenant,
            "lister",
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:ListShreddedKeys","Resource":"*"}]}"#,
        )
        .await;
    let listed = f.call_as(&lister, "ListShreddedKeys", json!({})).await.ok();
    assert_eq!(listed["ShreddedKeys"].as_array().unwrap().len(), 3);
    // Another tenant sees none of them.
    let other = f.iam.create_tenant("other", "FR", "").await.unwrap().id;
    let other_admin = f.user(&other, "admin", ADMIN_POLICY).await;
    let theirs = f
        .call_as(&other_admin, "ListShreddedKeys", json!({}))
        .await
        .ok();
    assert_eq!(theirs["ShreddedKeys"], json!([]));
}

#[tokio::test]
async fn every_request_of_a_tenant_tells_the_audit_log() {
    use nuage_audit::{ActorKind, Effect};
    let f = Fixture::new().await;
    let (_, arn) = f.create_key().await;
    // An allowed encrypt used the key, on the caller's request.
    let reply = f
        .call("Encrypt", json!({"KeyId": arn, "Plaintext": b64(b"x")}))
        .await;
    let blob = reply.body["CiphertextBlob"].clone();
    let audit = reply.audit.unwrap();
    assert_eq!(audit.tenant, f.tenant);
    assert_eq!(audit.actor.kind, ActorKind::TenantUser);
    assert_eq!(
        audit.actor.access_key_id.as_deref(),
        Some(f.admin.key.as_str())
    );
    assert_eq!(audit.action, "kms:Encrypt");
    assert_eq!(audit.resource.as_deref(), Some(arn.as_str()));
    assert_eq!(audit.decision.effect, Effect::Allow);
    assert_eq!(
        audit.decision.policy.as_deref(),
        Some("user/admin/inline/p")
    );
    assert_eq!(audit.key.as_deref(), Some(arn.as_str()));
    assert_eq!(
        audit.justification.as_deref(),
        Some("CUSTOMER_INITIATED_ACCESS")
    );
    // A dry run was allowed but used no key.
    let reply = f
        .call(
            "Encrypt",
            json!({"KeyId": arn, "Plaintext": b64(b"x"), "DryRun": true}),
        )
        .await;
    let audit = reply.audit.unwrap();
    assert_eq!(audit.decision.effect, Effect::Allow);
    assert_eq!(audit.key, None);
    // A denied decrypt: on the key, by default, no key used.
    let reader = f
        .user(
            &f.tenant,
            "reader",
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:DescribeKey","Resource":"*"}]}"#,
        )
        .await;
    let reply = f
        .call_as(&reader, "Decrypt", json!({"CiphertextBlob": blob}))
        .await;
    assert_eq!(reply.status, 400);
    let audit = reply.audit.unwrap();
    assert_eq!(audit.action, "kms:Decrypt");
    assert_eq!(audit.resource.as_deref(), Some(arn.as_str()));
    assert_eq!(audit.decision.effect, Effect::Deny);
    assert_eq!(audit.decision.policy, None);
    assert_eq!(audit.key, None);
    // A wrong signature with an existing key is logged in its tenant; an
    // unknown key names no tenant.
    let wrong = Creds {
        key: f.admin.key.clone(),
        secret: "not the secret".into(),
    };
    let audit = f
        .call_as(&wrong, "ListKeys", json!({}))
        .await
        .audit
        .unwrap();
    assert_eq!(
        (audit.tenant.as_str(), audit.action.as_str()),
        (f.tenant.as_str(), "kms:ListKeys")
    );
    assert_eq!(audit.decision.effect, Effect::Deny);
    let unknown = Creds {
        key: "AKIAUNKNOWN".into(),
        secret: "x".into(),
    };
    assert!(
        f.call_as(&unknown, "ListKeys", json!({}))
            .await
            .audit
            .is_none()
    );
}
