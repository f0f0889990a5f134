//! Running an [`Operation`] for an authenticated caller: finding the key the
//! request names (in the caller's tenant only), authorizing `kms:<Operation>`
//! on it with its key policy as the resource policy, the key-service call,
//! and the JSON response.
//!
//! Order of checks, as in AWS: the key is looked up first (a key the caller's
//! tenant does not have is `NotFoundException` whoever asks, since its key
//! policy is needed to decide), then the caller is authorized, then the key's
//! state is checked, then the operation runs.

use crate::RequestContext;
use crate::error::ApiError;
use crate::operation::{
    AliasOnly, AliasTarget, CreateCustomKeyStore, CreateKey, Decrypt, DescribeCustomKeyStores,
    Encrypt, GenerateDataKey, GenerateRandom, GetKeyPolicy, ListAliases, ListKeyRotations,
    Operation, Paging, PutKeyAccessReasons, PutKeyPolicy, ReEncrypt, UnsupportedStoreMembers,
    UpdateCustomKeyStore,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use nuage_base::limits::{KMS_LIST_ALIASES_DEFAULT, KMS_LIST_ITEMS_DEFAULT, KMS_LIST_ITEMS_MAX};
use nuage_iam::{AccessRequest, Iam, Identity, PolicyKind, check_policy_document};
use nuage_kms::{
    ConnectionState, CustomKeyStore, CustomKeyStoreUpdate, CustomerKeys, EXTERNAL_KEY_STORE,
    EncryptionContext, KeyCaller, KeyOrigin, KeyReference, KeyState, KmsAlias, KmsKey,
    NewCustomKeyStore, NewKey, ShreddedKey, check_alias_name,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;

type ApiResult<T> = Result<T, ApiError>;
type Context = BTreeMap<String, Vec<String>>;

/// The only encryption algorithm of a symmetric key.
const SYMMETRIC_DEFAULT: &str = "SYMMETRIC_DEFAULT";
/// The only key policy name AWS has.
const DEFAULT_POLICY_NAME: &str = "default";
/// The key id in the ARN of a tenant's data key (the storage key hierarchy's
/// tenant key), the resource of `kms:Get|PutKeyAccessReasons`.
pub(crate) const TENANT_DATA_KEY_ID: &str = "tenant-data";

/// One authenticated request in progress.
pub(crate) struct Call<'a> {
    pub keys: &'a CustomerKeys,
    pub iam: &'a Iam,
    pub identity: &'a Identity,
    pub context: &'a RequestContext,
    /// The last authorization made, for the audit log (the first refusal
    /// ends the request, so a refusal is always the last).
    pub decided: std::sync::Mutex<Option<Decided>>,
}

/// One authorization: what was asked, on what, and what the identity service
/// decided (with the deciding policy and statement).
pub(crate) struct Decided {
    pub action: String,
    pub resource: String,
    pub decision: nuage_iam::Decision,
}

fn kms(error: nuage_kms::KmsError) -> ApiError {
    ApiError::from_kms(error)
}

/// Seconds since the epoch, with milliseconds: how the JSON protocol sends
/// timestamps.
fn epoch(unix_ns: i64) -> Value {
    #[allow(clippy::cast_precision_loss)] // Milliseconds since 1970 fit in an f64 exactly.
    let seconds = unix_ns.div_euclid(1_000_000) as f64 / 1000.0;
    json!(seconds)
}

fn b64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// `Limit` within 1..=1000, or the operation's default.
fn page_limit(paging: &Paging, default: usize) -> ApiResult<usize> {
    match paging.limit {
        None => Ok(default),
        Some(n) => usize::try_from(n)
            .ok()
            .filter(|n| (1..=KMS_LIST_ITEMS_MAX).contains(n))
            .ok_or_else(|| {
                ApiError::validation(format!(
                    "1 validation error detected: Value '{n}' at 'limit' failed to satisfy \
                     constraint: Member must have value between 1 and {KMS_LIST_ITEMS_MAX}"
                ))
            }),
    }
}

/// Refuses an `EncryptionAlgorithm` other than `SYMMETRIC_DEFAULT`.
fn check_algorithm(algorithm: Option<&str>) -> ApiResult<()> {
    match algorithm {
        None | Some(SYMMETRIC_DEFAULT) => Ok(()),
        Some(other @ ("RSAES_OAEP_SHA_1" | "RSAES_OAEP_SHA_256" | "SM2PKE")) => Err(ApiError::bad(
            "InvalidKeyUsageException",
            format!("{other} is not a valid encryption algorithm for a symmetric KMS key"),
        )),
        Some(other) => Err(ApiError::validation(format!(
            "1 validation error detected: Value '{other}' at 'encryptionAlgorithm' failed to \
             satisfy constraint: Member must satisfy enum value set: [SYMMETRIC_DEFAULT, \
             RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256, SM2PKE]"
        ))),
    }
}

fn refuse_recipient(recipient: Option<&Value>) -> ApiResult<()> {
    if recipient.is_some() {
        return Err(ApiError::unsupported(
            "Recipient (Nitro Enclaves attestation) is not supported by Nuage's KMS",
        ));
    }
    Ok(())
}

/// `kms:EncryptionContext:KEY` and `kms:EncryptionContextKeys`.
fn context_keys(encryption_context: &EncryptionContext) -> Context {
    let mut keys: Context = encryption_context
        .iter()
        .map(|(k, v)| (format!("kms:EncryptionContext:{k}"), vec![v.clone()]))
        .collect();
    if !encryption_context.is_empty() {
        keys.insert(
            "kms:EncryptionContextKeys".to_owned(),
            encryption_context.keys().cloned().collect(),
        );
    }
    keys
}

fn with_algorithm(mut keys: Context) -> Context {
    keys.insert(
        "kms:EncryptionAlgorithm".to_owned(),
        vec![SYMMETRIC_DEFAULT.to_owned()],
    );
    keys
}

/// An integer member that must fit a `u32`.
fn small(value: Option<i64>, member: &str) -> ApiResult<Option<u32>> {
    value
        .map(|v| {
            u32::try_from(v).map_err(|_| {
                ApiError::validation(format!(
                    "1 validation error detected: Value '{v}' at '{member}' is out of range"
                ))
            })
        })
        .transpose()
}

/// `KeyMetadata`. `unavailable`: the key's custom key store is not
/// connected, so AWS reports the key `Unavailable` (unless pending deletion).
fn key_metadata(key: &KmsKey, unavailable: bool) -> Value {
    let state = if unavailable && key.state != KeyState::PendingDeletion {
        "Unavailable"
    } else {
        key.state.as_str()
    };
    let mut metadata = json!({
        "AWSAccountId": key.tenant,
        "KeyId": key.key_id,
        "Arn": key.arn,
        "CreationDate": epoch(key.created_unix_ns),
        "Enabled": key.state == KeyState::Enabled,
        "Description": key.description,
        "KeyUsage": key.key_usage.as_str(),
        "KeyState": state,
        "Origin": key.origin.as_str(),
        "KeyManager": "CUSTOMER",
        "CustomerMasterKeySpec": key.key_spec.as_str(),
        "KeySpec": key.key_spec.as_str(),
        "EncryptionAlgorithms": [SYMMETRIC_DEFAULT],
        "MultiRegion": false,
    });
    if let Some(deletion) = key.deletion_unix_ns {
        metadata["DeletionDate"] = epoch(deletion);
    }
    if let Some(days) = key.pending_window_days {
        metadata["PendingDeletionWindowInDays"] = json!(days);
    }
    if let Ok(material) = key.current_material() {
        metadata["CurrentKeyMaterialId"] = json!(material.material_id(&key.key_id));
    }
    if let Some(store) = &key.custom_key_store_id {
        metadata["CustomKeyStoreId"] = json!(store);
    }
    if let Some(xks_key_id) = &key.xks_key_id {
        metadata["XksKeyConfiguration"] = json!({ "Id": xks_key_id });
    }
    metadata
}

/// One record of ListShreddedKeys: what was destroyed and when, never any
/// key material (the record holds none).
fn shredded_entry(key: &ShreddedKey) -> Value {
    let mut entry = json!({
        "KeyId": key.key_id,
        "KeyArn": key.arn,
        "Description": key.description,
        "CreationDate": epoch(key.created_unix_ns),
        "ScheduledDeletionDate": epoch(key.scheduled_deletion_unix_ns),
        "DeletionDate": epoch(key.deleted_unix_ns),
        "MaterialVersionsDestroyed": key.material_versions,
        "Origin": key.origin.as_str(),
    });
    if let Some(store) = &key.custom_key_store_id {
        entry["CustomKeyStoreId"] = json!(store);
    }
    if let Some(xks) = &key.xks_key_id {
        entry["XksKeyId"] = json!(xks);
    }
    entry
}

/// A `CustomKeyStoresListEntry`. Never the credential's secret: the
/// record has no accessor for it.
fn store_entry(store: &CustomKeyStore) -> Value {
    let mut entry = json!({
        "CustomKeyStoreId": store.id,
        "CustomKeyStoreName": store.name,
        "CustomKeyStoreType": store.store_type(),
        "ConnectionState": store.connection_state.as_str(),
        "CreationDate": epoch(store.created_unix_ns),
        "XksProxyConfiguration": {
            "AccessKeyId": store.access_key_id,
            "Connectivity": store.connectivity(),
            "UriEndpoint": store.uri_endpoint,
            "UriPath": store.uri_path,
        },
    });
    if let Some(code) = store.connection_error_code {
        entry["ConnectionErrorCode"] = json!(code.as_str());
    }
    entry
}

/// Refuses the members of CloudHSM key stores and VPC connectivity.
fn refuse_unsupported_store_members(members: &UnsupportedStoreMembers) -> ApiResult<()> {
    if members.cloud_hsm_cluster_id.is_some()
        || members.trust_anchor_certificate.is_some()
        || members.key_store_password.is_some()
    {
        return Err(ApiError::unsupported(
            "CloudHSM key stores are not supported: Nuage's custom key stores are external key \
             stores (CustomKeyStoreType EXTERNAL_KEY_STORE)",
        ));
    }
    if members.xks_proxy_vpc_endpoint_service_name.is_some()
        || members.xks_proxy_vpc_endpoint_service_owner.is_some()
    {
        return Err(ApiError::unsupported(
            "VPC endpoint services are not supported: Nuage reaches external key store proxies \
             over their public endpoint (XksProxyConnectivity PUBLIC_ENDPOINT)",
        ));
    }
    Ok(())
}

impl Call<'_> {
    fn tenant(&self) -> &str {
        &self.identity.tenant_id
    }

    /// Condition keys about the request and its caller's tenant. Keys about
    /// the caller itself are answered by the identity service.
    fn base_context(&self) -> Context {
        let mut keys = Context::new();
        if let Some(ip) = self.context.source_ip {
            keys.insert("aws:SourceIp".to_owned(), vec![ip.to_string()]);
        }
        keys.insert(
            "aws:SecureTransport".to_owned(),
            vec![self.context.secure_transport.to_string()],
        );
        keys.insert(
            "kms:CallerAccount".to_owned(),
            vec![self.tenant().to_owned()],
        );
        keys
    }

    /// Decides `kms:<action>` on `resource` with `key_policy` as the resource
    /// policy (`None`: identity policies alone, as for CreateKey).
    async fn decide(
        &self,
        action: &str,
        resource: &str,
        key_policy: Option<&str>,
        extra: Context,
    ) -> ApiResult<bool> {
        let mut context = self.base_context();
        context.extend(extra);
        let request = AccessRequest {
            action: format!("kms:{action}"),
            resource: resource.to_owned(),
            context,
        };
        let decision = self
            .iam
            .authorize(
                Some(self.identity),
                &request,
                Some(self.tenant()),
                key_policy,
                false,
            )
            .await
            .map_err(ApiError::from_iam)?;
        if !decision.allowed {
            tracing::debug!(caller = %self.identity.arn, action, resource, reason = %decision.reason, "KMS access denied");
        }
        let allowed = decision.allowed;
        if let Ok(mut decided) = self.decided.lock() {
            *decided = Some(Decided {
                action: request.action,
                resource: request.resource,
                decision,
            });
        }
        Ok(allowed)
    }

    async fn authorize(
        &self,
        action: &str,
        resource: &str,
        key_policy: Option<&str>,
        extra: Context,
    ) -> ApiResult<()> {
        if self.decide(action, resource, key_policy, extra).await? {
            return Ok(());
        }
        Err(ApiError::access_denied(format!(
            "User: {} is not authorized to perform: kms:{action} on resource: {resource}",
            self.identity.arn
        )))
    }

    /// `kms:<action>` on `key`, its key policy deciding with the caller's
    /// identity policies.
    async fn authorize_key(&self, action: &str, key: &KmsKey, extra: Context) -> ApiResult<()> {
        let mut extra = extra;
        extra.insert(
            "kms:KeySpec".to_owned(),
            vec![key.key_spec.as_str().to_owned()],
        );
        extra.insert(
            "kms:KeyUsage".to_owned(),
            vec![key.key_usage.as_str().to_owned()],
        );
        extra.insert(
            "kms:KeyOrigin".to_owned(),
            vec![key.origin.as_str().to_owned()],
        );
        self.authorize(action, &key.arn, Some(&key.policy), extra)
            .await
    }

    /// Who is calling, for the request metadata of external key stores.
    fn caller(&self) -> KeyCaller {
        KeyCaller::direct(self.identity.arn.clone(), self.context.request_id.clone())
    }

    /// `KeyMetadata`, with `Unavailable` for a key whose custom key store is
    /// not connected.
    async fn describe(&self, key: &KmsKey) -> ApiResult<Value> {
        let unavailable = match &key.custom_key_store_id {
            None => false,
            Some(id) => self
                .keys
                .custom_key_store(self.tenant(), id)
                .await
                .map_or(true, |store| {
                    store.connection_state != ConnectionState::Connected
                }),
        };
        Ok(key_metadata(key, unavailable))
    }

    /// The key a `KeyId` names in the caller's tenant, and `kms:RequestAlias`
    /// when it was named by an alias.
    async fn resolve(&self, key_id: &str) -> ApiResult<(KmsKey, Context)> {
        let mut extra = Context::new();
        if let KeyReference::Alias(name) = self
            .keys
            .parse_reference(self.tenant(), key_id)
            .map_err(kms)?
        {
            extra.insert("kms:RequestAlias".to_owned(), vec![name]);
        }
        let key = self
            .keys
            .resolve(self.tenant(), key_id)
            .await
            .map_err(kms)?;
        Ok((key, extra))
    }

    /// A `TargetKeyId`: a key id or key ARN, not an alias.
    async fn target_key(&self, target: &str) -> ApiResult<KmsKey> {
        match self
            .keys
            .parse_reference(self.tenant(), target)
            .map_err(kms)?
        {
            KeyReference::Id(id) => self.keys.key(self.tenant(), &id).await.map_err(kms),
            KeyReference::Alias(_) => Err(ApiError::validation(
                "TargetKeyId must be a key ID or key ARN, not an alias",
            )),
        }
    }

    /// A key policy must parse, and (unless the caller bypasses the check,
    /// as AWS allows) must still let the caller change it afterwards.
    async fn check_key_policy(&self, policy: &str, key_arn: &str, bypass: bool) -> ApiResult<()> {
        check_policy_document(policy, PolicyKind::Bucket).map_err(ApiError::from_iam)?;
        if !bypass
            && !self
                .decide("PutKeyPolicy", key_arn, Some(policy), Context::new())
                .await?
        {
            return Err(ApiError::bad(
                "MalformedPolicyDocumentException",
                "The new key policy will not allow you to update the key policy in the future.",
            ));
        }
        Ok(())
    }

    /// Runs the operation; `None` for operations that return nothing.
    pub(crate) async fn run(&self, operation: Operation) -> ApiResult<Option<Value>> {
        let name = operation.name();
        match operation {
            Operation::CreateKey(input) => self.create_key(input).await.map(Some),
            Operation::DescribeKey(input) => {
                let (key, extra) = self.resolve(&input.key_id).await?;
                self.authorize_key(name, &key, extra).await?;
                Ok(Some(json!({ "KeyMetadata": self.describe(&key).await? })))
            }
            Operation::ListKeys(paging) => {
                let limit = page_limit(&paging, KMS_LIST_ITEMS_DEFAULT)?;
                self.authorize(name, "*", None, Context::new()).await?;
                let page = self
                    .keys
                    .list_keys(self.tenant(), paging.marker.as_deref(), limit)
                    .await
                    .map_err(kms)?;
                let keys: Vec<Value> = page
                    .items
                    .iter()
                    .map(|k| json!({ "KeyId": k.key_id, "KeyArn": k.arn }))
                    .collect();
                let mut out = json!({ "Keys": keys, "Truncated": page.next_marker.is_some() });
                if let Some(marker) = page.next_marker {
                    out["NextMarker"] = json!(marker);
                }
                Ok(Some(out))
            }
            Operation::EnableKey(input) | Operation::DisableKey(input) => {
                let (key, extra) = self.resolve(&input.key_id).await?;
                self.authorize_key(name, &key, extra).await?;
                if name == "EnableKey" {
                    self.keys.enable_key(self.tenant(), &key.key_id).await
                } else {
                    self.keys.disable_key(self.tenant(), &key.key_id).await
                }
                .map_err(kms)?;
                Ok(None)
            }
            Operation::CreateAlias(input) => self.create_alias(&input).await.map(|()| None),
            Operation::UpdateAlias(input) => self.update_alias(&input).await.map(|()| None),
            Operation::DeleteAlias(input) => self.delete_alias(&input).await.map(|()| None),
            Operation::ListAliases(input) => self.list_aliases(input).await.map(Some),
            Operation::Encrypt(input) => self.encrypt(input).await.map(Some),
            Operation::Decrypt(input) => self.decrypt(input).await.map(Some),
            Operation::GenerateDataKey(input) => {
                self.generate_data_key(input, true).await.map(Some)
            }
            Operation::GenerateDataKeyWithoutPlaintext(input) => {
                self.generate_data_key(input, false).await.map(Some)
            }
            Operation::GenerateRandom(input) => self.generate_random(input).await.map(Some),
            Operation::ReEncrypt(input) => self.re_encrypt(input).await.map(Some),
            Operation::EnableKeyRotation(input) => {
                let period = small(input.rotation_period_in_days, "rotationPeriodInDays")?;
                let (key, mut extra) = self.resolve(&input.key_id).await?;
                if let Some(days) = period {
                    extra.insert(
                        "kms:RotationPeriodInDays".to_owned(),
                        vec![days.to_string()],
                    );
                }
                self.authorize_key(name, &key, extra).await?;
                self.keys
                    .enable_rotation(self.tenant(), &key.key_id, period)
                    .await
                    .map_err(kms)?;
                Ok(None)
            }
            Operation::DisableKeyRotation(input) => {
                let (key, extra) = self.resolve(&input.key_id).await?;
                self.authorize_key(name, &key, extra).await?;
                self.keys
                    .disable_rotation(self.tenant(), &key.key_id)
                    .await
                    .map_err(kms)?;
                Ok(None)
            }
            Operation::GetKeyRotationStatus(input) => {
                let (key, extra) = self.resolve(&input.key_id).await?;
                self.authorize_key(name, &key, extra).await?;
                if key.state == KeyState::PendingDeletion {
                    return Err(kms(nuage_kms::KmsError::InvalidState(format!(
                        "{} is pending deletion.",
                        key.arn
                    ))));
                }
                let mut out = json!({
                    "KeyRotationEnabled": key.rotation_enabled,
                    "KeyId": key.arn,
                });
                if let Some(days) = key.rotation_period_days.filter(|_| key.rotation_enabled) {
                    out["RotationPeriodInDays"] = json!(days);
                }
                if let Some(next) = key.next_rotation_unix_ns.filter(|_| key.rotation_enabled) {
                    out["NextRotationDate"] = epoch(next);
                }
                Ok(Some(out))
            }
            Operation::RotateKeyOnDemand(input) => {
                let (key, extra) = self.resolve(&input.key_id).await?;
                self.authorize_key(name, &key, extra).await?;
                let key = self
                    .keys
                    .rotate_on_demand(self.tenant(), &key.key_id)
                    .await
                    .map_err(kms)?;
                Ok(Some(json!({ "KeyId": key.key_id })))
            }
            Operation::ListKeyRotations(input) => self.list_key_rotations(input).await.map(Some),
            Operation::ScheduleKeyDeletion(input) => {
                let days = small(input.pending_window_in_days, "pendingWindowInDays")?;
                let (key, mut extra) = self.resolve(&input.key_id).await?;
                if let Some(days) = days {
                    extra.insert(
                        "kms:ScheduleKeyDeletionPendingWindowInDays".to_owned(),
                        vec![days.to_string()],
                    );
                }
                self.authorize_key(name, &key, extra).await?;
                let key = self
                    .keys
                    .schedule_deletion(self.tenant(), &key.key_id, days)
                    .await
                    .map_err(kms)?;
                let mut out = json!({
                    "KeyId": key.arn,
                    "KeyState": key.state.as_str(),
                });
                if let Some(deletion) = key.deletion_unix_ns {
                    out["DeletionDate"] = epoch(deletion);
                }
                if let Some(days) = key.pending_window_days {
                    out["PendingWindowInDays"] = json!(days);
                }
                Ok(Some(out))
            }
            Operation::CancelKeyDeletion(input) => {
                let (key, extra) = self.resolve(&input.key_id).await?;
                self.authorize_key(name, &key, extra).await?;
                let key = self
                    .keys
                    .cancel_deletion(self.tenant(), &key.key_id)
                    .await
                    .map_err(kms)?;
                Ok(Some(json!({ "KeyId": key.arn })))
            }
            Operation::GetKeyPolicy(GetKeyPolicy {
                key_id,
                policy_name,
            }) => {
                check_policy_name(policy_name.as_deref())?;
                let (key, extra) = self.resolve(&key_id).await?;
                self.authorize_key(name, &key, extra).await?;
                Ok(Some(
                    json!({ "Policy": key.policy, "PolicyName": DEFAULT_POLICY_NAME }),
                ))
            }
            Operation::PutKeyPolicy(PutKeyPolicy {
                key_id,
                policy_name,
                policy,
                bypass_policy_lockout_safety_check,
            }) => {
                check_policy_name(policy_name.as_deref())?;
                let (key, extra) = self.resolve(&key_id).await?;
                self.authorize_key(name, &key, extra).await?;
                self.check_key_policy(&policy, &key.arn, bypass_policy_lockout_safety_check)
                    .await?;
                self.keys
                    .put_policy(self.tenant(), &key.key_id, &policy)
                    .await
                    .map_err(kms)?;
                Ok(None)
            }
            Operation::GetKeyAccessReasons(_) => self.get_key_access_reasons().await.map(Some),
            Operation::PutKeyAccessReasons(input) => {
                self.put_key_access_reasons(input).await.map(|()| None)
            }
            Operation::ListShreddedKeys(paging) => self.list_shredded_keys(paging).await.map(Some),
            Operation::CreateCustomKeyStore(input) => {
                self.create_custom_key_store(input).await.map(Some)
            }
            Operation::DescribeCustomKeyStores(input) => {
                self.describe_custom_key_stores(input).await.map(Some)
            }
            Operation::UpdateCustomKeyStore(input) => self
                .update_custom_key_store(input)
                .await
                .map(|()| Some(json!({}))),
            Operation::ConnectCustomKeyStore(input) => {
                self.authorize(name, "*", None, Context::new()).await?;
                self.keys
                    .connect_custom_key_store(
                        self.tenant(),
                        &input.custom_key_store_id,
                        &self.caller(),
                    )
                    .await
                    .map_err(kms)?;
                Ok(Some(json!({})))
            }
            Operation::DisconnectCustomKeyStore(input) => {
                self.authorize(name, "*", None, Context::new()).await?;
                self.keys
                    .disconnect_custom_key_store(self.tenant(), &input.custom_key_store_id)
                    .await
                    .map_err(kms)?;
                Ok(Some(json!({})))
            }
            Operation::DeleteCustomKeyStore(input) => {
                self.authorize(name, "*", None, Context::new()).await?;
                self.keys
                    .delete_custom_key_store(self.tenant(), &input.custom_key_store_id)
                    .await
                    .map_err(kms)?;
                Ok(Some(json!({})))
            }
        }
    }

    /// CreateCustomKeyStore, authorized as `kms:CreateCustomKeyStore` on
    /// `*` by the caller's identity policies (as AWS).
    async fn create_custom_key_store(&self, input: CreateCustomKeyStore) -> ApiResult<Value> {
        self.authorize("CreateCustomKeyStore", "*", None, Context::new())
            .await?;
        refuse_unsupported_store_members(&input.unsupported)?;
        let store = self
            .keys
            .create_custom_key_store(
                self.tenant(),
                NewCustomKeyStore {
                    name: input.custom_key_store_name,
                    store_type: input.custom_key_store_type,
                    uri_endpoint: input.xks_proxy_uri_endpoint,
                    uri_path: input.xks_proxy_uri_path,
                    connectivity: input.xks_proxy_connectivity,
                    credential: input.xks_proxy_authentication_credential.map(Into::into),
                },
                &self.caller(),
            )
            .await
            .map_err(kms)?;
        tracing::info!(caller = %self.identity.arn, store = %store.id, "custom key store created");
        Ok(json!({ "CustomKeyStoreId": store.id }))
    }

    async fn describe_custom_key_stores(&self, input: DescribeCustomKeyStores) -> ApiResult<Value> {
        let limit = page_limit(&input.paging, KMS_LIST_ITEMS_DEFAULT)?;
        self.authorize("DescribeCustomKeyStores", "*", None, Context::new())
            .await?;
        let page = self
            .keys
            .describe_custom_key_stores(
                self.tenant(),
                input.custom_key_store_id.as_deref(),
                input.custom_key_store_name.as_deref(),
                input.paging.marker.as_deref(),
                limit,
            )
            .await
            .map_err(kms)?;
        let stores: Vec<Value> = page.items.iter().map(store_entry).collect();
        let mut out = json!({ "CustomKeyStores": stores, "Truncated": page.next_marker.is_some() });
        if let Some(marker) = page.next_marker {
            out["NextMarker"] = json!(marker);
        }
        Ok(out)
    }

    async fn update_custom_key_store(&self, input: UpdateCustomKeyStore) -> ApiResult<()> {
        self.authorize("UpdateCustomKeyStore", "*", None, Context::new())
            .await?;
        refuse_unsupported_store_members(&input.unsupported)?;
        self.keys
            .update_custom_key_store(
                self.tenant(),
                &input.custom_key_store_id,
                CustomKeyStoreUpdate {
                    new_name: input.new_custom_key_store_name,
                    uri_endpoint: input.xks_proxy_uri_endpoint,
                    uri_path: input.xks_proxy_uri_path,
                    connectivity: input.xks_proxy_connectivity,
                    credential: input.xks_proxy_authentication_credential.map(Into::into),
                },
                &self.caller(),
            )
            .await
            .map_err(kms)?;
        Ok(())
    }

    /// Nuage extension: the records of the caller tenant's deleted
    /// (crypto-shredded) keys, in key-id order, paged as ListKeys. Authorized
    /// as `kms:ListShreddedKeys` on `*`, like ListKeys: the keys no longer
    /// exist, so no key policy can decide.
    async fn list_shredded_keys(&self, paging: Paging) -> ApiResult<Value> {
        let limit = page_limit(&paging, KMS_LIST_ITEMS_DEFAULT)?;
        self.authorize("ListShreddedKeys", "*", None, Context::new())
            .await?;
        let page = self
            .keys
            .list_shredded_keys(self.tenant(), paging.marker.as_deref(), limit)
            .await
            .map_err(kms)?;
        let keys: Vec<Value> = page.items.iter().map(shredded_entry).collect();
        let mut out = json!({ "ShreddedKeys": keys, "Truncated": page.next_marker.is_some() });
        if let Some(marker) = page.next_marker {
            out["NextMarker"] = json!(marker);
        }
        Ok(out)
    }

    /// The ARN of the caller tenant's data key.
    fn tenant_data_key_arn(&self) -> String {
        self.keys.key_arn(self.tenant(), TENANT_DATA_KEY_ID)
    }

    /// Nuage extension: the reasons the caller tenant's data key accepts.
    /// Identity policies alone decide (the data key has no key policy).
    async fn get_key_access_reasons(&self) -> ApiResult<Value> {
        let arn = self.tenant_data_key_arn();
        self.authorize("GetKeyAccessReasons", &arn, None, Context::new())
            .await?;
        let reasons = self
            .keys
            .key_service()
            .allowed_reasons(self.tenant())
            .await
            .map_err(|e| kms(e.into()))?;
        let names: Vec<&str> = reasons.iter().map(|r| r.as_str()).collect();
        Ok(json!({ "KeyId": arn, "AllowedReasons": names }))
    }

    /// Nuage extension: replaces the reasons the caller tenant's data key
    /// accepts. An empty list refuses every read of the tenant's objects.
    async fn put_key_access_reasons(&self, input: PutKeyAccessReasons) -> ApiResult<()> {
        let arn = self.tenant_data_key_arn();
        self.authorize("PutKeyAccessReasons", &arn, None, Context::new())
            .await?;
        self.keys
            .key_service()
            .set_allowed_reasons(self.tenant(), &input.allowed_reasons)
            .await
            .map_err(|e| kms(e.into()))?;
        tracing::info!(caller = %self.identity.arn, tenant = self.tenant(), "key access reasons replaced");
        Ok(())
    }

    async fn create_key(&self, input: CreateKey) -> ApiResult<Value> {
        for (member, value, allowed) in [
            ("KeyUsage", input.key_usage.as_deref(), "ENCRYPT_DECRYPT"),
            ("KeySpec", input.key_spec.as_deref(), SYMMETRIC_DEFAULT),
            (
                "CustomerMasterKeySpec",
                input.customer_master_key_spec.as_deref(),
                SYMMETRIC_DEFAULT,
            ),
        ] {
            if let Some(value) = value.filter(|v| *v != allowed) {
                return Err(ApiError::unsupported(format!(
                    "{member} {value} is not supported: Nuage's KMS has only symmetric \
                     encryption keys ({member} {allowed})"
                )));
            }
        }
        let origin = match input.origin.as_deref() {
            None | Some("AWS_KMS") => KeyOrigin::AwsKms,
            Some(EXTERNAL_KEY_STORE) => KeyOrigin::ExternalKeyStore,
            Some(other @ ("AWS_CLOUDHSM" | "EXTERNAL")) => {
                return Err(ApiError::unsupported(format!(
                    "Origin {other} is not supported: Nuage's KMS keys have origin AWS_KMS or \
                     EXTERNAL_KEY_STORE"
                )));
            }
            Some(other) => {
                return Err(ApiError::validation(format!(
                    "1 validation error detected: Value '{other}' at 'origin' failed to satisfy \
                     constraint: Member must satisfy enum value set: [AWS_KMS, EXTERNAL, \
                     AWS_CLOUDHSM, EXTERNAL_KEY_STORE]"
                )));
            }
        };
        let external = match (origin, &input.custom_key_store_id, &input.xks_key_id) {
            (KeyOrigin::AwsKms, None, None) => None,
            (KeyOrigin::ExternalKeyStore, Some(store), Some(xks)) => {
                Some((store.clone(), xks.clone()))
            }
            (KeyOrigin::ExternalKeyStore, _, _) => {
                return Err(ApiError::validation(
                    "Origin EXTERNAL_KEY_STORE requires CustomKeyStoreId and XksKeyId",
                ));
            }
            (KeyOrigin::AwsKms, _, _) => {
                return Err(ApiError::validation(
                    "CustomKeyStoreId and XksKeyId require Origin EXTERNAL_KEY_STORE",
                ));
            }
        };
        if input.multi_region == Some(true) {
            return Err(ApiError::unsupported(
                "multi-Region keys are not supported: a Nuage KMS key lives in one region",
            ));
        }
        let tags: Vec<(String, String)> = input
            .tags
            .into_iter()
            .map(|t| (t.tag_key, t.tag_value))
            .collect();
        let mut extra = Context::new();
        extra.insert("kms:KeySpec".to_owned(), vec![SYMMETRIC_DEFAULT.to_owned()]);
        extra.insert(
            "kms:KeyUsage".to_owned(),
            vec!["ENCRYPT_DECRYPT".to_owned()],
        );
        extra.insert("kms:KeyOrigin".to_owned(), vec![origin.as_str().to_owned()]);
        for (k, v) in &tags {
            extra.insert(format!("aws:RequestTag/{k}"), vec![v.clone()]);
        }
        if !tags.is_empty() {
            extra.insert(
                "aws:TagKeys".to_owned(),
                tags.iter().map(|(k, _)| k.clone()).collect(),
            );
        }
        self.authorize("CreateKey", "*", None, extra).await?;
        if let Some(policy) = &input.policy {
            // The key's ARN is not known yet; key policies name `*` anyway.
            let arn = self.keys.key_arn(self.tenant(), "*");
            self.check_key_policy(policy, &arn, input.bypass_policy_lockout_safety_check)
                .await?;
        }
        let new = NewKey {
            description: input.description.unwrap_or_default(),
            policy: input.policy,
            tags,
        };
        let key = match external {
            None => self.keys.create_key(self.tenant(), new).await,
            Some((store, xks_key_id)) => {
                self.keys
                    .create_external_key(self.tenant(), new, &store, &xks_key_id, &self.caller())
                    .await
            }
        }
        .map_err(kms)?;
        Ok(json!({ "KeyMetadata": key_metadata(&key, false) }))
    }

    /// The alias ARN is authorized by the caller's identity policies (an
    /// alias has no policy of its own), as AWS does.
    async fn authorize_alias(&self, action: &str, name: &str) -> ApiResult<()> {
        check_alias_name(name).map_err(kms)?;
        let arn = self.keys.alias_arn(self.tenant(), name);
        self.authorize(action, &arn, None, Context::new()).await
    }

    async fn create_alias(&self, input: &AliasTarget) -> ApiResult<()> {
        self.authorize_alias("CreateAlias", &input.alias_name)
            .await?;
        let key = self.target_key(&input.target_key_id).await?;
        self.authorize_key("CreateAlias", &key, Context::new())
            .await?;
        self.keys
            .create_alias(self.tenant(), &input.alias_name, &key.key_id)
            .await
            .map_err(kms)?;
        Ok(())
    }

    async fn update_alias(&self, input: &AliasTarget) -> ApiResult<()> {
        self.authorize_alias("UpdateAlias", &input.alias_name)
            .await?;
        let alias = self
            .keys
            .alias(self.tenant(), &input.alias_name)
            .await
            .map_err(kms)?;
        let new = self.target_key(&input.target_key_id).await?;
        if let Ok(old) = self.keys.key(self.tenant(), &alias.target_key_id).await {
            self.authorize_key("UpdateAlias", &old, Context::new())
                .await?;
        }
        self.authorize_key("UpdateAlias", &new, Context::new())
            .await?;
        self.keys
            .update_alias(self.tenant(), &input.alias_name, &new.key_id)
            .await
            .map_err(kms)?;
        Ok(())
    }

    async fn delete_alias(&self, input: &AliasOnly) -> ApiResult<()> {
        self.authorize_alias("DeleteAlias", &input.alias_name)
            .await?;
        let alias = self
            .keys
            .alias(self.tenant(), &input.alias_name)
            .await
            .map_err(kms)?;
        if let Ok(key) = self.keys.key(self.tenant(), &alias.target_key_id).await {
            self.authorize_key("DeleteAlias", &key, Context::new())
                .await?;
        }
        self.keys
            .delete_alias(self.tenant(), &input.alias_name)
            .await
            .map_err(kms)
    }

    fn alias_entry(&self, alias: &KmsAlias) -> Value {
        json!({
            "AliasName": alias.name,
            "AliasArn": self.keys.alias_arn(&alias.tenant, &alias.name),
            "TargetKeyId": alias.target_key_id,
            "CreationDate": epoch(alias.created_unix_ns),
            "LastUpdatedDate": epoch(alias.updated_unix_ns),
        })
    }

    async fn list_aliases(&self, input: ListAliases) -> ApiResult<Value> {
        let limit = page_limit(&input.paging, KMS_LIST_ALIASES_DEFAULT)?;
        self.authorize("ListAliases", "*", None, Context::new())
            .await?;
        let (aliases, next_marker) = match &input.key_id {
            // A key has at most 50 aliases: one page.
            Some(key_id) => {
                let (key, _) = self.resolve(key_id).await?;
                (self.keys.aliases_of(&key).await.map_err(kms)?, None)
            }
            None => {
                let page = self
                    .keys
                    .list_aliases(self.tenant(), input.paging.marker.as_deref(), limit)
                    .await
                    .map_err(kms)?;
                (page.items, page.next_marker)
            }
        };
        let entries: Vec<Value> = aliases.iter().map(|a| self.alias_entry(a)).collect();
        let mut out = json!({ "Aliases": entries, "Truncated": next_marker.is_some() });
        if let Some(marker) = next_marker {
            out["NextMarker"] = json!(marker);
        }
        Ok(out)
    }

    async fn encrypt(&self, input: Encrypt) -> ApiResult<Value> {
        check_algorithm(input.encryption_algorithm.as_deref())?;
        let (key, mut extra) = self.resolve(&input.key_id).await?;
        extra.extend(with_algorithm(context_keys(&input.encryption_context)));
        self.authorize_key("Encrypt", &key, extra).await?;
        key.check_usable().map_err(kms)?;
        if input.dry_run == Some(true) {
            return Err(ApiError::dry_run());
        }
        let blob = self
            .keys
            .encrypt(
                &key,
                &input.plaintext.0,
                &input.encryption_context,
                &self.caller(),
                "Encrypt",
            )
            .await
            .map_err(kms)?;
        Ok(json!({
            "CiphertextBlob": b64(&blob),
            "KeyId": key.arn,
            "EncryptionAlgorithm": SYMMETRIC_DEFAULT,
        }))
    }

    /// The key that sealed `blob`, checked against a `KeyId` the caller
    /// named (`IncorrectKeyException` if it is another key).
    async fn key_of_ciphertext(
        &self,
        blob: &[u8],
        named: Option<&str>,
    ) -> ApiResult<(KmsKey, nuage_kms::CiphertextBlob, Context)> {
        let (key, parsed) = self
            .keys
            .key_of_ciphertext(self.tenant(), blob)
            .await
            .map_err(kms)?;
        let mut extra = Context::new();
        if let Some(named) = named {
            let (named_key, named_extra) = self.resolve(named).await?;
            if named_key.key_id != key.key_id {
                return Err(ApiError::bad(
                    "IncorrectKeyException",
                    "The key ID in the request does not identify a KMS key that can perform this operation.",
                ));
            }
            extra = named_extra;
        }
        Ok((key, parsed, extra))
    }

    async fn decrypt(&self, input: Decrypt) -> ApiResult<Value> {
        check_algorithm(input.encryption_algorithm.as_deref())?;
        refuse_recipient(input.recipient.as_ref())?;
        let (key, parsed, mut extra) = self
            .key_of_ciphertext(&input.ciphertext_blob.0, input.key_id.as_deref())
            .await?;
        extra.extend(with_algorithm(context_keys(&input.encryption_context)));
        self.authorize_key("Decrypt", &key, extra).await?;
        key.check_usable().map_err(kms)?;
        if input.dry_run == Some(true) {
            return Err(ApiError::dry_run());
        }
        let plaintext = self
            .keys
            .decrypt(
                &key,
                &parsed,
                &input.encryption_context,
                &self.caller(),
                "Decrypt",
            )
            .await
            .map_err(kms)?;
        let mut out = json!({
            "KeyId": key.arn,
            "Plaintext": b64(&plaintext),
            "EncryptionAlgorithm": SYMMETRIC_DEFAULT,
        });
        if let Some(material) = key
            .materials
            .iter()
            .find(|m| m.version == parsed.material_version)
        {
            out["KeyMaterialId"] = json!(material.material_id(&key.key_id));
        }
        Ok(out)
    }

    async fn generate_data_key(&self, input: GenerateDataKey, plaintext: bool) -> ApiResult<Value> {
        refuse_recipient(input.recipient.as_ref())?;
        let bytes = match (input.key_spec.as_deref(), input.number_of_bytes) {
            (Some("AES_256"), None) => 32,
            (Some("AES_128"), None) => 16,
            (None, Some(n)) => usize::try_from(n).unwrap_or(0),
            (Some(spec), None) => {
                return Err(ApiError::validation(format!(
                    "1 validation error detected: Value '{spec}' at 'keySpec' failed to satisfy \
                     constraint: Member must satisfy enum value set: [AES_256, AES_128]"
                )));
            }
            _ => {
                return Err(ApiError::validation(
                    "Please specify either number of bytes or key spec.",
                ));
            }
        };
        let action = if plaintext {
            "GenerateDataKey"
        } else {
            "GenerateDataKeyWithoutPlaintext"
        };
        let (key, mut extra) = self.resolve(&input.key_id).await?;
        extra.extend(context_keys(&input.encryption_context));
        self.authorize_key(action, &key, extra).await?;
        key.check_usable().map_err(kms)?;
        if input.dry_run == Some(true) {
            return Err(ApiError::dry_run());
        }
        let (data_key, blob) = self
            .keys
            .generate_data_key(
                &key,
                bytes,
                &input.encryption_context,
                &self.caller(),
                action,
            )
            .await
            .map_err(kms)?;
        let mut out = json!({ "CiphertextBlob": b64(&blob), "KeyId": key.arn });
        if plaintext {
            out["Plaintext"] = json!(b64(&data_key));
        }
        if let Ok(material) = key.current_material() {
            out["KeyMaterialId"] = json!(material.material_id(&key.key_id));
        }
        Ok(out)
    }

    async fn generate_random(&self, input: GenerateRandom) -> ApiResult<Value> {
        refuse_recipient(input.recipient.as_ref())?;
        if input.custom_key_store_id.is_some() {
            // As AWS: only CloudHSM key stores generate random bytes.
            return Err(ApiError::unsupported(
                "GenerateRandom with a CustomKeyStoreId needs a CloudHSM key store; Nuage's \
                 custom key stores are external key stores",
            ));
        }
        self.authorize("GenerateRandom", "*", None, Context::new())
            .await?;
        let Some(n) = input.number_of_bytes else {
            return Err(ApiError::validation(
                "1 validation error detected: Value null at 'numberOfBytes' failed to satisfy \
                 constraint: Member must not be null",
            ));
        };
        let bytes = nuage_kms::random(usize::try_from(n).unwrap_or(0)).map_err(kms)?;
        Ok(json!({ "Plaintext": b64(&bytes) }))
    }

    async fn re_encrypt(&self, input: ReEncrypt) -> ApiResult<Value> {
        check_algorithm(input.source_encryption_algorithm.as_deref())?;
        check_algorithm(input.destination_encryption_algorithm.as_deref())?;
        let (source, parsed, mut source_extra) = self
            .key_of_ciphertext(&input.ciphertext_blob.0, input.source_key_id.as_deref())
            .await?;
        source_extra.extend(with_algorithm(context_keys(
            &input.source_encryption_context,
        )));
        self.authorize_key("ReEncryptFrom", &source, source_extra)
            .await?;
        let (destination, mut destination_extra) = self.resolve(&input.destination_key_id).await?;
        destination_extra.extend(with_algorithm(context_keys(
            &input.destination_encryption_context,
        )));
        self.authorize_key("ReEncryptTo", &destination, destination_extra)
            .await?;
        source.check_usable().map_err(kms)?;
        destination.check_usable().map_err(kms)?;
        if input.dry_run == Some(true) {
            return Err(ApiError::dry_run());
        }
        let plaintext = self
            .keys
            .decrypt(
                &source,
                &parsed,
                &input.source_encryption_context,
                &self.caller(),
                "ReEncrypt",
            )
            .await
            .map_err(kms)?;
        let blob = self
            .keys
            .encrypt(
                &destination,
                &plaintext,
                &input.destination_encryption_context,
                &self.caller(),
                "ReEncrypt",
            )
            .await
            .map_err(kms)?;
        Ok(json!({
            "CiphertextBlob": b64(&blob),
            "SourceKeyId": source.arn,
            "KeyId": destination.arn,
            "SourceEncryptionAlgorithm": SYMMETRIC_DEFAULT,
            "DestinationEncryptionAlgorithm": SYMMETRIC_DEFAULT,
        }))
    }

    async fn list_key_rotations(&self, input: ListKeyRotations) -> ApiResult<Value> {
        let limit = page_limit(&input.paging, KMS_LIST_ITEMS_DEFAULT)?;
        let all = match input.include_key_material.as_deref() {
            None | Some("ROTATIONS_ONLY") => false,
            Some("ALL_KEY_MATERIAL") => true,
            Some(other) => {
                return Err(ApiError::validation(format!(
                    "IncludeKeyMaterial must be ALL_KEY_MATERIAL or ROTATIONS_ONLY, not {other}"
                )));
            }
        };
        let after = match input.paging.marker.as_deref() {
            None => 0,
            Some(marker) => marker.parse::<u32>().map_err(|_| {
                ApiError::bad(
                    "InvalidMarkerException",
                    "Invalid marker: it must come from a previous ListKeyRotations response",
                )
            })?,
        };
        let (key, extra) = self.resolve(&input.key_id).await?;
        self.authorize_key("ListKeyRotations", &key, extra).await?;
        let current = key.current_material().map_err(kms)?.version;
        let listed: Vec<_> = key
            .materials
            .iter()
            .filter(|m| (all || m.rotation.is_some()) && m.version > after)
            .collect();
        let truncated = listed.len() > limit;
        let rotations: Vec<Value> = listed
            .iter()
            .take(limit)
            .map(|m| {
                let mut entry = json!({
                    "KeyId": key.key_id,
                    "KeyMaterialId": m.material_id(&key.key_id),
                    "KeyMaterialState": if m.version == current { "CURRENT" } else { "NON_CURRENT" },
                    "RotationDate": epoch(m.created_unix_ns),
                });
                if let Some(rotation) = m.rotation {
                    entry["RotationType"] = json!(rotation.as_str());
                }
                entry
            })
            .collect();
        let mut out = json!({ "Rotations": rotations, "Truncated": truncated });
        if truncated && let Some(last) = listed.get(limit - 1) {
            out["NextMarker"] = json!(last.version.to_string());
        }
        Ok(out)
    }
}

fn check_policy_name(name: Option<&str>) -> ApiResult<()> {
    match name {
        None | Some(DEFAULT_POLICY_NAME) => Ok(()),
        Some(other) => Err(ApiError::bad(
            "NotFoundException",
            format!("Key policy {other} does not exist: the only key policy name is `default`"),
        )),
    }
}
