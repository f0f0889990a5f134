//! Crypto-shredding: what remains of a deleted KMS key (a [`ShreddedKey`]
//! record, for the tenant's `ListShreddedKeys` and for the message a read of
//! data under the key gets), and the shredding of a whole tenant's keys when
//! the operator deletes the tenant ([`CustomerKeys::shred_tenant`]).
//!
//! A key's material versions exist only wrapped, in the key's document:
//! deleting that document is what makes everything sealed under the key
//! undecryptable (for a key in an external key store, Nuage's half of the
//! double encryption goes, which is enough whatever the tenant's proxy still
//! holds). The record is written in the same revision-checked batch that
//! deletes the key, so a key is never gone without its record, nor recorded
//! while it still exists.
//!
//! *Invariant:* a record holds no key material, wrapped or not: ids, dates,
//! counts and the key's description only. Records are bounded per tenant
//! ([`KMS_SHREDDED_KEYS_PER_TENANT_MAX`]): recording one more drops the
//! oldest, in the same batch.
//!
//! Documents: `kms.shredded-key` (`TENANT/KEY_ID`, the record) and
//! `kms.shredded-order` (`TENANT/DELETED_NS/KEY_ID`, empty: the deletion
//! order, so the oldest record is found with one seek).

use super::{
    ALIASES, CustomerKeys, KEYS, KmsError, KmsKey, KmsResult, Page, TENANT_COUNTS, is_key_id,
    key_doc,
};
use super::{KeyOrigin, custom_key_store::XKS_KEYS};
use crate::access::ACCESS_REASONS;
use nuage_base::limits::{KMS_SHRED_DOCUMENTS_PER_COMMIT_MAX, KMS_SHREDDED_KEYS_PER_TENANT_MAX};
use nuage_meta::{DocumentWrite, Expect};
use serde::{Deserialize, Serialize};

/// The record of a deleted key, by `TENANT/KEY_ID`.
pub(super) const SHREDDED: &str = "kms.shredded-key";
/// The deletion order of the records, by `TENANT/DELETED_NS/KEY_ID`.
pub(super) const SHREDDED_ORDER: &str = "kms.shredded-order";

/// What remains of a KMS key deleted at the end of its waiting period: no key
/// material, only what the tenant needs to know what was shredded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShreddedKey {
    pub key_id: String,
    pub arn: String,
    pub tenant: String,
    #[serde(default)]
    pub description: String,
    pub created_unix_ns: i64,
    /// The end of the waiting period ScheduleKeyDeletion set.
    pub scheduled_deletion_unix_ns: i64,
    /// When Nuage deleted the key: the first request or listing that met it
    /// after the scheduled date (deletion is lazy).
    pub deleted_unix_ns: i64,
    /// Material versions destroyed (the first material and every rotation's).
    pub material_versions: u32,
    pub origin: KeyOrigin,
    /// For a key in an external key store: the store and the external key,
    /// which the tenant's key manager may still hold. Nuage's half of the
    /// double encryption is destroyed all the same, so the data is shredded.
    #[serde(default)]
    pub custom_key_store_id: Option<String>,
    #[serde(default)]
    pub xks_key_id: Option<String>,
}

impl ShreddedKey {
    /// The record of `key`, deleted at `now`.
    fn of(key: &KmsKey, now: i64) -> Self {
        Self {
            key_id: key.key_id.clone(),
            arn: key.arn.clone(),
            tenant: key.tenant.clone(),
            description: key.description.clone(),
            created_unix_ns: key.created_unix_ns,
            scheduled_deletion_unix_ns: key.deletion_unix_ns.unwrap_or(now),
            deleted_unix_ns: now,
            material_versions: u32::try_from(key.materials.len()).unwrap_or(u32::MAX),
            origin: key.origin,
            custom_key_store_id: key.custom_key_store_id.clone(),
            xks_key_id: key.xks_key_id.clone(),
        }
    }

    /// The deletion date, RFC 3339 (UTC).
    #[must_use]
    pub fn deleted_at(&self) -> String {
        rfc3339(self.deleted_unix_ns)
    }

    /// What a lookup of the key answers: `NotFoundException`, as for any
    /// key that does not exist, saying why. The same words serve the KMS API
    /// and S3 (a read of an object under the key, or a write naming it),
    /// which reaches the key through a lookup before any unwrap.
    pub(super) fn not_found(&self) -> KmsError {
        KmsError::NotFound(format!(
            "Key '{}' was deleted on {} with its {} material version(s): every object and \
             ciphertext encrypted under it is crypto-shredded and can never be decrypted again{}",
            self.arn,
            self.deleted_at(),
            self.material_versions,
            self.external_note()
        ))
    }

    /// For a key in an external key store: why the data is shredded all the
    /// same.
    fn external_note(&self) -> &'static str {
        match self.origin {
            KeyOrigin::AwsKms => "",
            KeyOrigin::ExternalKeyStore => {
                " (Nuage's half of its double encryption is destroyed, whatever the external \
                 key manager still holds)"
            }
        }
    }

    /// What a read of an S3 object under the key answers (S3 keeps the code
    /// `KMS.NotFoundException`).
    pub(super) fn object_shredded(&self) -> KmsError {
        KmsError::NotFound(format!(
            "The object was crypto-shredded: its KMS key {} was deleted on {}, with all its key \
             material, so the object can never be decrypted again{}",
            self.arn,
            self.deleted_at(),
            self.external_note()
        ))
    }
}

/// What shredding a deleted tenant's keys destroyed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantShredding {
    /// Whether the tenant key (which wraps the data keys of its SSE-S3
    /// objects) existed and was destroyed.
    pub tenant_key: bool,
    /// KMS keys destroyed, whatever their state.
    pub kms_keys: usize,
    /// Their material versions.
    pub material_versions: usize,
    /// External key stores whose sealed proxy credential was destroyed.
    pub external_key_stores: usize,
}

/// Nanoseconds since the epoch as RFC 3339; a value out of range (a corrupt
/// record) shows as the raw number rather than failing the request.
fn rfc3339(unix_ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ns))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix_ns.to_string())
}

fn order_doc(tenant: &str, deleted_unix_ns: i64, key_id: &str) -> String {
    // Zero-padded so that key order is deletion order; a negative time (a
    // clock before 1970) sorts first.
    format!("{tenant}/{:020}/{key_id}", deleted_unix_ns.max(0))
}

fn delete(namespace: &str, key: String, expect: Expect) -> DocumentWrite {
    DocumentWrite {
        namespace: namespace.into(),
        key,
        expect,
        value: None,
    }
}

impl CustomerKeys {
    /// The writes that record `key`'s deletion at `now`, to commit in the
    /// batch that deletes it, and the tenant's number of records after it.
    /// When the tenant already has [`KMS_SHREDDED_KEYS_PER_TENANT_MAX`]
    /// records, the oldest are dropped in the same batch (each checked at
    /// the revision read, so a concurrent change makes the batch retry).
    pub(super) async fn shredded_key_writes(
        &self,
        key: &KmsKey,
        now: i64,
        recorded: u32,
    ) -> KmsResult<(Vec<DocumentWrite>, u32)> {
        let record = ShreddedKey::of(key, now);
        let mut writes = vec![
            DocumentWrite {
                namespace: SHREDDED.into(),
                key: key_doc(&key.tenant, &key.key_id),
                // A key id is a fresh UUID: a record already there is
                // another deletion of the same key racing this one.
                expect: Expect::Absent,
                value: Some(serde_json::to_vec(&record)?),
            },
            DocumentWrite {
                namespace: SHREDDED_ORDER.into(),
                key: order_doc(&key.tenant, now, &key.key_id),
                expect: Expect::Absent,
                value: Some(Vec::new()),
            },
        ];
        let mut count = recorded.saturating_add(1);
        if count > KMS_SHREDDED_KEYS_PER_TENANT_MAX {
            let excess = usize::try_from(count - KMS_SHREDDED_KEYS_PER_TENANT_MAX)
                .unwrap_or(usize::MAX)
                .min(KMS_SHRED_DOCUMENTS_PER_COMMIT_MAX);
            let oldest = self
                .keys
                .docs
                .scan_documents(SHREDDED_ORDER, &format!("{}/", key.tenant), None, excess)
                .await?;
            for doc in oldest {
                let Some((_, key_id)) = doc.key.rsplit_once('/') else {
                    continue;
                };
                writes.push(delete(SHREDDED, key_doc(&key.tenant, key_id), Expect::Any));
                writes.push(delete(
                    SHREDDED_ORDER,
                    doc.key.clone(),
                    Expect::Revision(doc.revision),
                ));
                count = count.saturating_sub(1);
            }
        }
        Ok((writes, count))
    }

    /// The record of the tenant's deleted key `key_id`, if it is still kept.
    ///
    /// # Errors
    /// Storage failure, or a corrupt record.
    pub async fn shredded_key(&self, tenant: &str, key_id: &str) -> KmsResult<Option<ShreddedKey>> {
        match self
            .keys
            .docs
            .get_document(SHREDDED, &key_doc(tenant, key_id))
            .await?
        {
            Some(doc) => Ok(Some(serde_json::from_slice(&doc.value)?)),
            None => Ok(None),
        }
    }

    /// ListShreddedKeys (Nuage extension): the records of the tenant's
    /// deleted keys, in key-id order, after `marker` (a key id), at most
    /// `limit` (the caller bounds it).
    ///
    /// # Errors
    /// `InvalidMarker` for a marker that is not a key id; storage failure.
    pub async fn list_shredded_keys(
        &self,
        tenant: &str,
        marker: Option<&str>,
        limit: usize,
    ) -> KmsResult<Page<ShreddedKey>> {
        if marker.is_some_and(|m| !is_key_id(m)) {
            return Err(KmsError::InvalidMarker(
                "Invalid marker: it must come from a previous ListShreddedKeys response".into(),
            ));
        }
        let after = marker.map(|m| key_doc(tenant, m));
        let docs = self
            .keys
            .docs
            .scan_documents(SHREDDED, &format!("{tenant}/"), after.as_deref(), limit + 1)
            .await?;
        let truncated = docs.len() > limit;
        let items = docs
            .into_iter()
            .take(limit)
            .map(|doc| serde_json::from_slice::<ShreddedKey>(&doc.value))
            .collect::<Result<Vec<_>, _>>()?;
        let next_marker = if truncated {
            items.last().map(|k| k.key_id.clone())
        } else {
            None
        };
        Ok(Page { items, next_marker })
    }

    /// Crypto-shreds everything the key service holds for `tenant`, which the
    /// operator is deleting: every KMS key (all states, all material
    /// versions) with its aliases and external key links, the external key
    /// stores (their sealed proxy credentials), the records of keys deleted
    /// earlier, the key counts, the key access justifications, and last the
    /// tenant key that wraps the data keys of its SSE-S3 objects. Afterwards
    /// no blob of the tenant decrypts with what the data directory holds,
    /// wherever copies of the blobs are.
    ///
    /// Each commit deletes at most [`KMS_SHRED_DOCUMENTS_PER_COMMIT_MAX`]
    /// documents; every step only deletes, so a failure halfway leaves part
    /// shredded and a new call finishes the job (its report counts what that
    /// call destroyed). The caller suspends the tenant first, so nothing is
    /// created behind the sweep.
    ///
    /// # Errors
    /// Storage failure; `Internal` for an empty tenant id.
    pub async fn shred_tenant(&self, tenant: &str) -> KmsResult<TenantShredding> {
        // An empty id would make the prefixes below `/`: refuse rather than
        // rely on no other tenant's documents matching.
        if tenant.is_empty() || tenant.contains('/') {
            return Err(KmsError::Internal(format!(
                "refusing to shred the keys of a tenant with id `{tenant}`"
            )));
        }
        let mut report = TenantShredding::default();
        let prefix = format!("{tenant}/");
        // Keys first: their documents hold the wrapped materials.
        self.sweep(KEYS, &prefix, |doc| {
            let key: KmsKey = serde_json::from_slice(&doc.value)?;
            report.kms_keys += 1;
            report.material_versions += key.materials.len();
            Ok(())
        })
        .await?;
        for namespace in [ALIASES, XKS_KEYS, SHREDDED, SHREDDED_ORDER] {
            self.sweep(namespace, &prefix, |_| Ok(())).await?;
        }
        report.external_key_stores = self.shred_custom_key_stores(tenant).await?;
        // One document each, keyed by the tenant id. The tenant key goes
        // last: until then a rerun still finds the tenant's state to finish.
        self.commit_required(vec![
            delete(TENANT_COUNTS, tenant.into(), Expect::Any),
            delete(ACCESS_REASONS, tenant.into(), Expect::Any),
        ])
        .await?;
        report.tenant_key = self.keys.shred_tenant_key(tenant).await?;
        self.forget_tenant_materials(tenant);
        tracing::info!(
            tenant,
            tenant_key = report.tenant_key,
            kms_keys = report.kms_keys,
            material_versions = report.material_versions,
            external_key_stores = report.external_key_stores,
            "crypto-shredded a deleted tenant's keys"
        );
        Ok(report)
    }

    /// Deletes every document of `namespace` under `prefix`, a page at a
    /// time, showing each to `seen` first.
    async fn sweep(
        &self,
        namespace: &str,
        prefix: &str,
        mut seen: impl FnMut(&nuage_meta::Document) -> KmsResult<()>,
    ) -> KmsResult<()> {
        let mut after: Option<String> = None;
        loop {
            let docs = self
                .keys
                .docs
                .scan_documents(
                    namespace,
                    prefix,
                    after.as_deref(),
                    KMS_SHRED_DOCUMENTS_PER_COMMIT_MAX,
                )
                .await?;
            let Some(last) = docs.last() else {
                return Ok(());
            };
            after = Some(last.key.clone());
            let mut writes = Vec::with_capacity(docs.len());
            for doc in &docs {
                seen(doc)?;
                writes.push(delete(namespace, doc.key.clone(), Expect::Any));
            }
            self.commit_required(writes).await?;
        }
    }

    /// Commits deletions that expect nothing, so that only a storage failure
    /// can refuse them.
    async fn commit_required(&self, writes: Vec<DocumentWrite>) -> KmsResult<()> {
        if self.commit(writes).await? {
            Ok(())
        } else {
            Err(KmsError::Internal(
                "an unconditional deletion was refused by the document store".into(),
            ))
        }
    }

    /// Drops every unwrapped secret of the tenant's keys and stores from
    /// the cache (their ARNs and store bindings all start so).
    fn forget_tenant_materials(&self, tenant: &str) {
        let prefix = format!("arn:aws:kms:{}:{tenant}:", self.region);
        if let Ok(mut cache) = self.materials.write() {
            cache.retain(|(arn, _), _| !arn.starts_with(&prefix));
        }
    }
}

impl crate::KeyService {
    /// Destroys `tenant`'s key (the one that wraps the data keys of its
    /// SSE-S3 objects): its wrapped form in the document store and its
    /// unwrapped copy in the cache. Returns whether it existed.
    pub(crate) async fn shred_tenant_key(&self, tenant: &str) -> KmsResult<bool> {
        let existed = self
            .docs
            .get_document(crate::TENANT_KEYS, tenant)
            .await?
            .is_some();
        self.docs
            .commit_documents(vec![delete(crate::TENANT_KEYS, tenant.into(), Expect::Any)])
            .await?;
        if let Ok(mut cache) = self.tenants.write() {
            cache.remove(tenant);
        }
        Ok(existed)
    }
}
