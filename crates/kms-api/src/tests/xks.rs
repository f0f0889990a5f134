//! Custom key stores and keys in them through the KMS JSON API, against an
//! in-process test double of an external key store proxy (unit level; the
//! end-to-end test drives the real `nuage-xks` client and proxy).

use super::*;
use nuage_kms::{
    ExternalKeyStore, XksCiphertext, XksError, XksHealth, XksKeyMetadata, XksProxyEndpoint,
    XksRequestMetadata,
};
use std::collections::HashMap;
use std::sync::Mutex;
use zeroize::Zeroizing;

const ACCESS_KEY_ID: &str = "ABCDEFGHIJKLMNOPQRST";
const SECRET: &str = "s3cr3tS3CR3Ts3cr3tS3CR3Ts3cr3tS3CR3Ts3cr3tXYZ/+=";

/// A proxy in this process: AES-256-GCM (`nuage_crypto::seal_message`)
/// under keys it holds; the credential compared instead of SigV4; keys that
/// can be disabled; every call's metadata recorded.
#[derive(Default)]
struct TestProxy {
    keys: Mutex<HashMap<String, (nuage_crypto::KeyEncryptionKey, bool)>>,
    unreachable: Mutex<bool>,
    calls: Mutex<Vec<XksRequestMetadata>>,
}

impl std::fmt::Debug for TestProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestProxy")
    }
}

fn refused(name: &str, status: u16) -> XksError {
    XksError::Refused {
        error_name: name.into(),
        status,
        message: format!("test proxy: {name}"),
    }
}

impl TestProxy {
    fn new() -> Arc<Self> {
        let proxy = Arc::new(Self::default());
        proxy.keys.lock().unwrap().insert(
            "ext-1".into(),
            (nuage_crypto::KeyEncryptionKey::generate().unwrap(), true),
        );
        proxy
    }

    fn set_enabled(&self, enabled: bool) {
        self.keys.lock().unwrap().get_mut("ext-1").unwrap().1 = enabled;
    }

    fn admit(
        &self,
        endpoint: &XksProxyEndpoint,
        metadata: &XksRequestMetadata,
    ) -> Result<(), XksError> {
        self.calls.lock().unwrap().push(metadata.clone());
        if *self.unreachable.lock().unwrap() {
            return Err(XksError::Unreachable("connection refused".into()));
        }
        if endpoint.access_key_id != ACCESS_KEY_ID || endpoint.secret_access_key.as_str() != SECRET
        {
            return Err(refused("AuthenticationFailedException", 401));
        }
        Ok(())
    }

    /// Runs `f` with the enabled key `id`.
    fn with_key<T>(
        &self,
        id: &str,
        f: impl FnOnce(&nuage_crypto::KeyEncryptionKey) -> Result<T, XksError>,
    ) -> Result<T, XksError> {
        let keys = self.keys.lock().unwrap();
        let (key, enabled) = keys
            .get(id)
            .ok_or_else(|| refused("KeyNotFoundException", 404))?;
        if !enabled {
            return Err(refused("InvalidStateException", 400));
        }
        f(key)
    }
}

#[async_trait::async_trait]
impl ExternalKeyStore for TestProxy {
    async fn health(
        &self,
        endpoint: &XksProxyEndpoint,
        metadata: &XksRequestMetadata,
    ) -> Result<XksHealth, XksError> {
        self.admit(endpoint, metadata)?;
        Ok(XksHealth {
            xks_proxy_vendor: "test".into(),
            xks_proxy_model: "double".into(),
            ekm_vendor: "test".into(),
            ekm_health: vec!["ACTIVE".into()],
        })
    }

    async fn key_metadata(
        &self,
        endpoint: &XksProxyEndpoint,
        xks_key_id: &str,
        metadata: &XksRequestMetadata,
    ) -> Result<XksKeyMetadata, XksError> {
        self.admit(endpoint, metadata)?;
        let keys = self.keys.lock().unwrap();
        let (_, enabled) = keys
            .get(xks_key_id)
            .ok_or_else(|| refused("KeyNotFoundException", 404))?;
        Ok(XksKeyMetadata {
            key_spec: "AES_256".into(),
            key_usage: vec!["ENCRYPT".into(), "DECRYPT".into()],
            key_status: if *enabled { "ENABLED" } else { "DISABLED" }.into(),
        })
    }

    async fn encrypt(
        &self,
        endpoint: &XksProxyEndpoint,
        xks_key_id: &str,
        metadata: &XksRequestMetadata,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<XksCiphertext, XksError> {
        self.admit(endpoint, metadata)?;
        self.with_key(xks_key_id, |key| {
            let sealed = nuage_crypto::seal_message(key, aad, plaintext).unwrap();
            let (ciphertext, tag) = sealed.ciphertext.split_at(sealed.ciphertext.len() - 16);
            Ok(XksCiphertext {
                ciphertext: ciphertext.to_vec(),
                initialization_vector: sealed.nonce.to_vec(),
                authentication_tag: tag.to_vec(),
                ciphertext_metadata: None,
            })
        })
    }

    async fn decrypt(
        &self,
        endpoint: &XksProxyEndpoint,
        xks_key_id: &str,
        metadata: &XksRequestMetadata,
        ciphertext: &XksCiphertext,
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, XksError> {
        self.admit(endpoint, metadata)?;
        self.with_key(xks_key_id, |key| {
            let nonce: [u8; 12] = ciphertext
                .initialization_vector
                .as_slice()
                .try_into()
                .map_err(|_| refused("InvalidCiphertextException", 400))?;
            let mut bytes = ciphertext.ciphertext.clone();
            bytes.extend_from_slice(&ciphertext.authentication_tag);
            nuage_crypto::open_message(
                key,
                &nuage_crypto::SealedMessage {
                    nonce,
                    ciphertext: bytes,
                },
                aad,
            )
            .map_err(|_| refused("InvalidCiphertextException", 400))
        })
    }
}

fn create_store_body(name: &str) -> Value {
    json!({
        "CustomKeyStoreName": name,
        "CustomKeyStoreType": "EXTERNAL_KEY_STORE",
        "XksProxyUriEndpoint": "https://xks.example.com",
        "XksProxyUriPath": "/kms/xks/v1",
        "XksProxyConnectivity": "PUBLIC_ENDPOINT",
        "XksProxyAuthenticationCredential": {
            "AccessKeyId": ACCESS_KEY_ID, "RawSecretAccessKey": SECRET
        },
    })
}

/// The secret appears nowhere in a response.
fn assert_no_secret(reply: &Reply) {
    let text = reply.body.to_string();
    assert!(!text.contains(&SECRET[..24]), "{text}");
}

#[tokio::test]
async fn external_key_stores_end_to_end_over_the_json_api() {
    let proxy = TestProxy::new();
    let f = Fixture::build(Some(proxy.clone())).await;

    let created = f
        .call("CreateCustomKeyStore", create_store_body("hyok"))
        .await;
    assert_no_secret(&created);
    let store_id = created.ok()["CustomKeyStoreId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(store_id.starts_with("cks-"));
    f.call("CreateCustomKeyStore", create_store_body("hyok"))
        .await
        .refused(400, "CustomKeyStoreNameInUseException");

    let described = f.call("DescribeCustomKeyStores", json!({})).await;
    assert_no_secret(&described);
    let described = described.ok();
    assert_eq!(described["Truncated"], false);
    let entry = &described["CustomKeyStores"][0];
    assert_eq!(entry["CustomKeyStoreId"], store_id.as_str());
    assert_eq!(entry["CustomKeyStoreName"], "hyok");
    assert_eq!(entry["CustomKeyStoreType"], "EXTERNAL_KEY_STORE");
    assert_eq!(entry["ConnectionState"], "DISCONNECTED");
    assert!(entry.get("ConnectionErrorCode").is_none());
    assert!(entry["CreationDate"].is_number());
    assert_eq!(
        entry["XksProxyConfiguration"],
        json!({"AccessKeyId": ACCESS_KEY_ID, "Connectivity": "PUBLIC_ENDPOINT",
               "UriEndpoint": "https://xks.example.com", "UriPath": "/kms/xks/v1"})
    );
    let by_name = f
        .call(
            "DescribeCustomKeyStores",
            json!({"CustomKeyStoreName": "hyok", "Limit": 1}),
        )
        .await
        .ok();
    assert_eq!(
        by_name["CustomKeyStores"][0]["CustomKeyStoreId"],
        store_id.as_str()
    );
    f.call(
        "DescribeCustomKeyStores",
        json!({"CustomKeyStoreId": "cks-1234567890abcdef0"}),
    )
    .await
    .refused(400, "CustomKeyStoreNotFoundException");

    // Keys need a connected store.
    let create_key = json!({"Origin": "EXTERNAL_KEY_STORE", "CustomKeyStoreId": store_id,
                            "XksKeyId": "ext-1"});
    f.call("CreateKey", create_key.clone())
        .await
        .refused(400, "CustomKeyStoreInvalidStateException");
    f.call(
        "ConnectCustomKeyStore",
        json!({"CustomKeyStoreId": store_id}),
    )
    .await
    .ok();
    f.call(
        "CreateKey",
        json!({"Origin": "EXTERNAL_KEY_STORE", "CustomKeyStoreId": store_id,
               "XksKeyId": "nope"}),
    )
    .await
    .refused(400, "XksKeyNotFoundException");
    let metadata = f.call("CreateKey", create_key.clone()).await.ok()["KeyMetadata"].clone();
    assert_eq!(metadata["Origin"], "EXTERNAL_KEY_STORE");
    assert_eq!(metadata["CustomKeyStoreId"], store_id.as_str());
    assert_eq!(metadata["XksKeyConfiguration"], json!({"Id": "ext-1"}));
    assert_eq!(metadata["KeyState"], "Enabled");
    let arn = metadata["Arn"].as_str().unwrap().to_owned();
    f.call("CreateKey", create_key)
        .await
        .refused(400, "XksKeyAlreadyInUseException");

    // Cryptography through both layers, the proxy told who asked.
    let encrypted = f
        .call(
            "Encrypt",
            json!({"KeyId": arn, "Plaintext": b64(b"hold your own key"),
                   "EncryptionContext": {"app": "billing"}}),
        )
        .await
        .ok();
    let blob = encrypted["CiphertextBlob"].as_str().unwrap().to_owned();
    let last = proxy.calls.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.kms_operation, "Encrypt");
    assert_eq!(last.kms_key_arn.as_deref(), Some(arn.as_str()));
    assert_eq!(last.kms_request_id, "REQ1");
    assert_eq!(
        last.aws_principal_arn,
        format!("arn:aws:iam::{}:user/admin", f.tenant)
    );
    assert_eq!(last.access_reason, "CUSTOMER_INITIATED_ACCESS");
    assert_eq!(last.kms_via_service, None);
    let decrypted = f
        .call(
            "Decrypt",
            json!({"CiphertextBlob": blob, "EncryptionContext": {"app": "billing"}}),
        )
        .await
        .ok();
    assert_eq!(decrypted["Plaintext"], b64(b"hold your own key"));
    f.call(
        "Decrypt",
        json!({"CiphertextBlob": blob, "EncryptionContext": {"app": "other"}}),
    )
    .await
    .refused(400, "InvalidCiphertextException");
    let data_key = f
        .call(
            "GenerateDataKey",
            json!({"KeyId": arn, "KeySpec": "AES_256"}),
        )
        .await
        .ok();
    let opened = f
        .call(
            "Decrypt",
            json!({"CiphertextBlob": data_key["CiphertextBlob"]}),
        )
        .await
        .ok();
    assert_eq!(opened["Plaintext"], data_key["Plaintext"]);
    let (plain_id, _) = f.create_key().await;
    let moved = f
        .call(
            "ReEncrypt",
            json!({"CiphertextBlob": blob, "SourceEncryptionContext": {"app": "billing"},
                   "DestinationKeyId": plain_id}),
        )
        .await
        .ok();
    assert_eq!(moved["SourceKeyId"], arn.as_str());
    assert_eq!(
        proxy.calls.lock().unwrap().last().unwrap().kms_operation,
        "ReEncrypt"
    );
    f.call("RotateKeyOnDemand", json!({"KeyId": arn}))
        .await
        .refused(400, "UnsupportedOperationException");

    // The external key disabled by its holder: KMSInvalidStateException.
    proxy.set_enabled(false);
    let refused = f
        .call(
            "Decrypt",
            json!({"CiphertextBlob": blob, "EncryptionContext": {"app": "billing"}}),
        )
        .await
        .refused(400, "KMSInvalidStateException");
    assert!(
        refused.body["message"]
            .as_str()
            .unwrap()
            .contains("disabled")
    );
    proxy.set_enabled(true);
    *proxy.unreachable.lock().unwrap() = true;
    f.call("Encrypt", json!({"KeyId": arn, "Plaintext": b64(b"x")}))
        .await
        .refused(400, "XksProxyUriUnreachableException");
    *proxy.unreachable.lock().unwrap() = false;

    // Disconnected: the key is Unavailable and refuses use; the store can
    // be updated, not deleted while it has keys.
    f.call(
        "DisconnectCustomKeyStore",
        json!({"CustomKeyStoreId": store_id}),
    )
    .await
    .ok();
    let described = f.call("DescribeKey", json!({"KeyId": arn})).await.ok();
    assert_eq!(described["KeyMetadata"]["KeyState"], "Unavailable");
    f.call("Encrypt", json!({"KeyId": arn, "Plaintext": b64(b"x")}))
        .await
        .refused(400, "CustomKeyStoreInvalidStateException");
    f.call(
        "UpdateCustomKeyStore",
        json!({"CustomKeyStoreId": store_id, "NewCustomKeyStoreName": "renamed",
               "XksProxyUriEndpoint": "https://xks2.example.com:8443"}),
    )
    .await
    .ok();
    let wrong = f
        .call(
            "UpdateCustomKeyStore",
            json!({"CustomKeyStoreId": store_id, "XksProxyAuthenticationCredential": {
                "AccessKeyId": ACCESS_KEY_ID, "RawSecretAccessKey": SECRET.replace('s', "t")}}),
        )
        .await;
    assert_no_secret(&wrong);
    wrong.refused(400, "XksProxyIncorrectAuthenticationCredentialException");
    f.call(
        "DeleteCustomKeyStore",
        json!({"CustomKeyStoreId": store_id}),
    )
    .await
    .refused(400, "CustomKeyStoreHasCMKsException");
    let renamed = f
        .call(
            "DescribeCustomKeyStores",
            json!({"CustomKeyStoreId": store_id}),
        )
        .await
        .ok();
    assert_eq!(
        renamed["CustomKeyStores"][0]["CustomKeyStoreName"],
        "renamed"
    );
    assert_eq!(
        renamed["CustomKeyStores"][0]["XksProxyConfiguration"]["UriEndpoint"],
        "https://xks2.example.com:8443"
    );
    // An empty store is deleted.
    let second = f
        .call("CreateCustomKeyStore", create_store_body("second"))
        .await
        .ok()["CustomKeyStoreId"]
        .as_str()
        .unwrap()
        .to_owned();
    f.call("DeleteCustomKeyStore", json!({"CustomKeyStoreId": second}))
        .await
        .ok();
}

#[tokio::test]
async fn store_operations_are_authorized_and_refused_as_aws() {
    let proxy = TestProxy::new();
    let f = Fixture::build(Some(proxy)).await;
    let s3_user = f.user(&f.tenant, "s3user", S3_ONLY_POLICY).await;
    for (operation, body) in [
        ("CreateCustomKeyStore", create_store_body("x")),
        ("DescribeCustomKeyStores", json!({})),
        (
            "ConnectCustomKeyStore",
            json!({"CustomKeyStoreId": "cks-1234567890abcdef0"}),
        ),
        (
            "DisconnectCustomKeyStore",
            json!({"CustomKeyStoreId": "cks-1234567890abcdef0"}),
        ),
        (
            "DeleteCustomKeyStore",
            json!({"CustomKeyStoreId": "cks-1234567890abcdef0"}),
        ),
        (
            "UpdateCustomKeyStore",
            json!({"CustomKeyStoreId": "cks-1234567890abcdef0"}),
        ),
    ] {
        let refused = f
            .call_as(&s3_user, operation, body)
            .await
            .refused(400, "AccessDeniedException");
        assert!(
            refused.body["message"]
                .as_str()
                .unwrap()
                .contains(&format!("kms:{operation} on resource: *")),
            "{:?}",
            refused.body
        );
    }
    let mut cloudhsm = create_store_body("x");
    cloudhsm["CustomKeyStoreType"] = json!("AWS_CLOUDHSM");
    f.call("CreateCustomKeyStore", cloudhsm)
        .await
        .refused(400, "UnsupportedOperationException");
    let mut vpc = create_store_body("x");
    vpc["XksProxyConnectivity"] = json!("VPC_ENDPOINT_SERVICE");
    f.call("CreateCustomKeyStore", vpc)
        .await
        .refused(400, "UnsupportedOperationException");
    let mut bad_path = create_store_body("x");
    bad_path["XksProxyUriPath"] = json!("/kms/xks/v2");
    f.call("CreateCustomKeyStore", bad_path)
        .await
        .refused(400, "ValidationException");
    let mut short_secret = create_store_body("x");
    short_secret["XksProxyAuthenticationCredential"]["RawSecretAccessKey"] = json!("short");
    let refused = f
        .call("CreateCustomKeyStore", short_secret)
        .await
        .refused(400, "ValidationException");
    assert!(!refused.body.to_string().contains("short\""));
    f.call("CreateCustomKeyStore", json!({}))
        .await
        .refused(400, "ValidationException");
    f.call(
        "CreateKey",
        json!({"Origin": "EXTERNAL_KEY_STORE", "XksKeyId": "ext-1"}),
    )
    .await
    .refused(400, "ValidationException");
    f.call("CreateKey", json!({"Origin": "AWS_CLOUDHSM"}))
        .await
        .refused(400, "UnsupportedOperationException");

    // Without an XKS client, the server says so.
    let plain = Fixture::new().await;
    let refused = plain
        .call("CreateCustomKeyStore", create_store_body("x"))
        .await
        .refused(400, "UnsupportedOperationException");
    assert!(
        refused.body["message"]
            .as_str()
            .unwrap()
            .contains("no external key store")
    );
}
