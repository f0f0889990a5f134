//! Moving everything the root of trust wraps from one root to another:
//! a migration between kinds of root (the development key file to an HSM,
//! one HSM key to another) or a rotation of the root key (a fresh key of the
//! same kind). [`rewrap`] does it; [`census`] says where things stand.
//!
//! What the root wraps, each kind in its own documents ([`WrappedKind`]):
//!
//! - tenant keys (`kms.tenant-key`, the document *is* the stored key; AAD =
//!   tenant id);
//! - KMS key materials (`kms.key`, every material version of a key, old ones
//!   included; AAD = key ARN);
//! - external key stores' keys (`kms.custom-key-store`, one per store, which
//!   seal the proxy credential's secret; AAD = the store's binding);
//! - keys stored the same way as tenant keys by code outside this crate (the
//!   binary's audit checkpoint signing key): documents whose value is the
//!   stored key and whose key is the associated data, in namespaces the
//!   caller names ([`WrappedKind::Document`]).
//!
//! Each stored key is unwrapped under the old root, wrapped under the new one
//! with the same associated data, checked to unwrap again under the new
//! root, and written back tagged with the new root's id ([`RootRing`]), in a
//! revision-checked write of the whole document. Hence:
//!
//! - *no half-migrated document*: a document's keys move together in one
//!   atomic commit; a reader sees it all under the old root or all under the
//!   new one;
//! - *resumable and idempotent*: a key already tagged with the new root is
//!   skipped, so a migration stopped anywhere (a crash, an HSM that went
//!   away) is finished by running it again, and running a finished one again
//!   changes nothing;
//! - *nothing damaged by a wrong root*: nothing is written before the old
//!   root has authenticated the key; a key tagged with a third root stops the
//!   migration before any write (see [`census`]).
//!
//! Documents are read page by page ([`ROOT_REWRAP_PAGE_DOCUMENTS_MAX`]), so
//! memory stays bounded whatever the number of tenants and keys.
//!
//! This module knows nothing of files or configuration: the binary opens both
//! roots and stops the server first (`nuage root-of-trust`). It must never
//! write a key before the old root has authenticated it, nor drop a key it
//! could not rewrap.
//!
//! [`RootRing`]: crate::RootRing

use crate::customer::{CUSTOM_KEY_STORES, KEYS, custom_key_store_binding};
use crate::root::{RootId, RootOfTrust, TaggedWrappedKey, tag_wrapped_key};
use crate::{KeyError, TENANT_KEYS};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use nuage_base::limits::{ROOT_REWRAP_ATTEMPTS_MAX, ROOT_REWRAP_PAGE_DOCUMENTS_MAX};
use nuage_crypto::CryptoError;
use nuage_meta::{Document, DocumentStore, DocumentWrite, Expect, MetaError};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// A kind of key the root of trust wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WrappedKind {
    /// A tenant's key (the storage hierarchy, SSE-S3).
    TenantKey,
    /// One material version of a KMS customer key.
    KmsKeyMaterial,
    /// The key sealing an external key store's proxy secret.
    CustomKeyStoreKey,
    /// A key stored as tenant keys are (the document's value is the stored
    /// key, its key the associated data) in this namespace, owned by code
    /// outside this crate.
    Document(&'static str),
}

impl WrappedKind {
    /// The kinds this crate stores itself.
    pub const ALL: [Self; 3] = [
        Self::TenantKey,
        Self::KmsKeyMaterial,
        Self::CustomKeyStoreKey,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TenantKey => "tenant keys",
            Self::KmsKeyMaterial => "KMS key materials",
            Self::CustomKeyStoreKey => "external key store keys",
            Self::Document(namespace) => namespace,
        }
    }

    /// The document namespace holding this kind.
    fn namespace(self) -> &'static str {
        match self {
            Self::TenantKey => TENANT_KEYS,
            Self::KmsKeyMaterial => KEYS,
            Self::CustomKeyStoreKey => CUSTOM_KEY_STORES,
            Self::Document(namespace) => namespace,
        }
    }

    /// [`Self::ALL`] and a [`Self::Document`] per namespace of
    /// `key_documents`.
    fn with_documents(key_documents: &[&'static str]) -> Vec<Self> {
        Self::ALL
            .into_iter()
            .chain(key_documents.iter().map(|ns| Self::Document(ns)))
            .collect()
    }
}

impl fmt::Display for WrappedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a migration did with one kind of key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindCounts {
    /// Keys moved from the old root to the new one by this run.
    pub rewrapped: u64,
    /// Keys already under the new root (an earlier, interrupted run).
    pub already: u64,
}

/// What [`rewrap`] did, per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewrapReport {
    pub counts: BTreeMap<WrappedKind, KindCounts>,
}

impl RewrapReport {
    /// The counts of `kind` (zero when there were none).
    #[must_use]
    pub fn of(&self, kind: WrappedKind) -> KindCounts {
        self.counts.get(&kind).copied().unwrap_or_default()
    }

    /// Keys rewrapped by this run, all kinds together.
    #[must_use]
    pub fn rewrapped(&self) -> u64 {
        self.counts.values().map(|c| c.rewrapped).sum()
    }
}

impl fmt::Display for RewrapReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (kind, counts) in &self.counts {
            writeln!(
                f,
                "{kind}: {} rewrapped, {} already under the new root",
                counts.rewrapped, counts.already
            )?;
        }
        Ok(())
    }
}

/// How many stored keys of each kind each root wrapped; `None` is a key
/// stored before roots were recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    pub counts: BTreeMap<(WrappedKind, Option<RootId>), u64>,
}

impl Census {
    /// Keys of every kind stored under `root`.
    #[must_use]
    pub fn under(&self, root: RootId) -> u64 {
        self.counts
            .iter()
            .filter(|((_, r), _)| *r == Some(root))
            .map(|(_, n)| n)
            .sum()
    }

    /// Keys of every kind not known to be under `root` (another root's, or
    /// untagged).
    #[must_use]
    pub fn not_under(&self, root: RootId) -> u64 {
        self.counts
            .iter()
            .filter(|((_, r), _)| *r != Some(root))
            .map(|(_, n)| n)
            .sum()
    }
}

impl fmt::Display for Census {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.counts.is_empty() {
            return writeln!(f, "no keys wrapped by a root of trust are stored");
        }
        for ((kind, root), count) in &self.counts {
            match root {
                Some(root) => writeln!(f, "{kind}: {count} under root {root}")?,
                None => writeln!(f, "{kind}: {count} under an unrecorded root (older format)")?,
            }
        }
        Ok(())
    }
}

/// Why a migration stopped. Whatever it had written by then is complete and
/// correct (each document entirely under one root): fix the cause and run it
/// again.
#[derive(Debug, thiserror::Error)]
pub enum RewrapError {
    #[error("the old and the new root of trust are the same root ({0}): nothing to migrate")]
    SameRoot(RootId),
    #[error(
        "{keys} {kind} are under root {wrapped_by}, which is neither the old root ({old}) nor the \
         new one ({new}); nothing more was written"
    )]
    ThirdRoot {
        kind: WrappedKind,
        keys: u64,
        wrapped_by: RootId,
        old: RootId,
        new: RootId,
    },
    #[error(
        "{kind} `{document}`: does not unwrap under the old root {old} (is it the root this data \
         directory was under?): {source}"
    )]
    NotUnderOldRoot {
        kind: WrappedKind,
        document: String,
        old: RootId,
        source: Box<KeyError>,
    },
    #[error("{kind} `{document}`: the old root failed: {source}")]
    OldRoot {
        kind: WrappedKind,
        document: String,
        source: Box<KeyError>,
    },
    #[error("{kind} `{document}`: the new root failed: {source}")]
    NewRoot {
        kind: WrappedKind,
        document: String,
        source: Box<KeyError>,
    },
    #[error("{kind} `{document}`: the new root's wrapping did not unwrap to the same key")]
    NewRootMismatch { kind: WrappedKind, document: String },
    #[error("{kind} `{document}` is corrupt: {detail}")]
    Corrupt {
        kind: WrappedKind,
        document: String,
        detail: String,
    },
    #[error("{kind} `{document}` kept changing under {ROOT_REWRAP_ATTEMPTS_MAX} attempts")]
    Contention { kind: WrappedKind, document: String },
    #[error("metadata store: {0}")]
    Store(#[from] MetaError),
}

/// Counts the stored keys of each kind under each root, reading tags only
/// (no root is asked); `key_documents` as for [`rewrap`]. After a complete
/// migration every key is under the new root.
///
/// # Errors
/// Metadata store failure, or a document that does not parse.
pub async fn census(
    docs: &dyn DocumentStore,
    key_documents: &[&'static str],
) -> Result<Census, RewrapError> {
    let mut census = Census::default();
    for kind in WrappedKind::with_documents(key_documents) {
        let mut pages = Pages::new(docs, kind.namespace());
        while let Some(page) = pages.next().await? {
            for doc in &page {
                // The region only makes associated data, which is not needed.
                for item in WrappedItems::parse(kind, doc, "")?.items {
                    let stored = decode_item(kind, doc, &item)?;
                    let root = TaggedWrappedKey::parse(&stored)
                        .map_err(|e| corrupt(kind, &doc.key, &e))?
                        .root();
                    *census.counts.entry((kind, root)).or_default() += 1;
                }
            }
        }
    }
    Ok(census)
}

/// Rewraps every key the root of trust wraps from `old` to `new` (see the
/// module documentation). `region` is the region of the KMS keys' ARNs (the
/// first configured region), part of an external key store's binding;
/// `key_documents` names the namespaces of keys stored like tenant keys by
/// code outside this crate ([`WrappedKind::Document`]).
///
/// # Errors
/// See [`RewrapError`]; the migration stops at the first failure, with every
/// document either fully migrated or untouched.
pub async fn rewrap(
    docs: &dyn DocumentStore,
    old: &dyn RootOfTrust,
    new: &dyn RootOfTrust,
    region: &str,
    key_documents: &[&'static str],
) -> Result<RewrapReport, RewrapError> {
    let (old_id, new_id) = (old.id(), new.id());
    if old_id == new_id {
        return Err(RewrapError::SameRoot(old_id));
    }
    // Before any write: a key under a third root means these are not the
    // roots of this data directory (or another migration is unfinished).
    let before = census(docs, key_documents).await?;
    if let Some((&(kind, Some(wrapped_by)), &keys)) = before
        .counts
        .iter()
        .find(|((_, root), _)| root.is_some_and(|r| r != old_id && r != new_id))
    {
        return Err(RewrapError::ThirdRoot {
            kind,
            keys,
            wrapped_by,
            old: old_id,
            new: new_id,
        });
    }
    let mut report = RewrapReport::default();
    for kind in WrappedKind::with_documents(key_documents) {
        let counts = report.counts.entry(kind).or_default();
        let mut pages = Pages::new(docs, kind.namespace());
        while let Some(page) = pages.next().await? {
            for doc in page {
                rewrap_document(docs, old, new, region, kind, doc, counts).await?;
            }
        }
        tracing::info!(
            kind = kind.as_str(),
            rewrapped = counts.rewrapped,
            already = counts.already,
            "root-of-trust migration: kind done"
        );
    }
    Ok(report)
}

/// Rewraps the keys of one document and commits it, re-reading it if it
/// changed meanwhile.
async fn rewrap_document(
    docs: &dyn DocumentStore,
    old: &dyn RootOfTrust,
    new: &dyn RootOfTrust,
    region: &str,
    kind: WrappedKind,
    mut doc: Document,
    counts: &mut KindCounts,
) -> Result<(), RewrapError> {
    for _ in 0..ROOT_REWRAP_ATTEMPTS_MAX {
        let mut items = WrappedItems::parse(kind, &doc, region)?;
        let mut rewrapped = 0;
        let mut already = 0;
        for index in 0..items.items.len() {
            let item = &items.items[index];
            let stored = decode_item(kind, &doc, item)?;
            let tagged =
                TaggedWrappedKey::parse(&stored).map_err(|e| corrupt(kind, &doc.key, &e))?;
            match tagged.root() {
                Some(root) if root == new.id() => {
                    already += 1;
                    continue;
                }
                // Written meanwhile under a third root (checked for before
                // the first write).
                Some(root) if root != old.id() => {
                    return Err(RewrapError::ThirdRoot {
                        kind,
                        keys: 1,
                        wrapped_by: root,
                        old: old.id(),
                        new: new.id(),
                    });
                }
                // Under the old root, or untagged (then it must be the old
                // root's: the unwrap proves it).
                _ => {}
            }
            let aad = item.aad.clone();
            let key = old
                .unwrap_key(tagged.wrapped(), aad.as_bytes())
                .await
                .map_err(|source| match source {
                    // Authentication failed: another root's key.
                    KeyError::Crypto(CryptoError::UnwrapAuthentication) => {
                        RewrapError::NotUnderOldRoot {
                            kind,
                            document: doc.key.clone(),
                            old: old.id(),
                            source: Box::new(source),
                        }
                    }
                    // The root itself failed (an HSM unreachable): rerun.
                    source => RewrapError::OldRoot {
                        kind,
                        document: doc.key.clone(),
                        source: Box::new(source),
                    },
                })?;
            let new_error = |source| RewrapError::NewRoot {
                kind,
                document: doc.key.clone(),
                source: Box::new(source),
            };
            let wrapped = new
                .wrap_key(&key, aad.as_bytes())
                .await
                .map_err(new_error)?;
            // Checked before it replaces the only copy that opens today.
            let again = new
                .unwrap_key(&wrapped, aad.as_bytes())
                .await
                .map_err(new_error)?;
            if again.expose_bytes() != key.expose_bytes() {
                return Err(RewrapError::NewRootMismatch {
                    kind,
                    document: doc.key.clone(),
                });
            }
            items.replace(index, &tag_wrapped_key(new.id(), &wrapped));
            rewrapped += 1;
        }
        if rewrapped == 0 {
            counts.already += already;
            return Ok(());
        }
        let value = items.into_value(kind, &doc.key)?;
        let write = DocumentWrite {
            namespace: kind.namespace().to_owned(),
            key: doc.key.clone(),
            expect: Expect::Revision(doc.revision),
            value: Some(value),
        };
        match docs.commit_documents(vec![write]).await {
            Ok(()) => {
                counts.rewrapped += rewrapped;
                counts.already += already;
                return Ok(());
            }
            // Changed meanwhile (a server running after all, or a second
            // migration): read it again and redo it.
            Err(MetaError::PreconditionFailed) => {
                match docs.get_document(kind.namespace(), &doc.key).await? {
                    Some(fresh) => doc = fresh,
                    // Deleted meanwhile: nothing left to migrate.
                    None => return Ok(()),
                }
            }
            Err(error) => return Err(error.into()),
        }
    }
    Err(RewrapError::Contention {
        kind,
        document: doc.key,
    })
}

/// The documents of one namespace, a bounded page at a time.
struct Pages<'a> {
    docs: &'a dyn DocumentStore,
    namespace: &'static str,
    /// The last key of the previous page.
    after: Option<String>,
    done: bool,
}

impl<'a> Pages<'a> {
    fn new(docs: &'a dyn DocumentStore, namespace: &'static str) -> Self {
        Self {
            docs,
            namespace,
            after: None,
            done: false,
        }
    }

    /// The next page (at most [`ROOT_REWRAP_PAGE_DOCUMENTS_MAX`] documents),
    /// `None` after the last.
    async fn next(&mut self) -> Result<Option<Vec<Document>>, MetaError> {
        if self.done {
            return Ok(None);
        }
        let page = self
            .docs
            .scan_documents(
                self.namespace,
                "",
                self.after.as_deref(),
                ROOT_REWRAP_PAGE_DOCUMENTS_MAX,
            )
            .await?;
        match page.last() {
            Some(last) if page.len() == ROOT_REWRAP_PAGE_DOCUMENTS_MAX => {
                self.after = Some(last.key.clone());
            }
            _ => self.done = true,
        }
        Ok((!page.is_empty()).then_some(page))
    }
}

/// One wrapped key inside a document.
struct WrappedItem {
    /// The stored key: raw bytes for a tenant key, base64 text inside JSON
    /// for the others.
    stored: ItemBytes,
    /// Its associated data.
    aad: String,
    /// Where it is in the JSON document (material or store index).
    index: usize,
}

enum ItemBytes {
    Raw(Vec<u8>),
    Base64(String),
}

/// The wrapped keys of one document, and the document to write them back
/// into. JSON documents are edited as JSON values, so fields this module
/// does not know (added by newer code) are kept as they are.
struct WrappedItems {
    json: Option<Value>,
    items: Vec<WrappedItem>,
}

impl WrappedItems {
    fn parse(kind: WrappedKind, doc: &Document, region: &str) -> Result<Self, RewrapError> {
        let bad = |detail: &str| RewrapError::Corrupt {
            kind,
            document: doc.key.clone(),
            detail: detail.to_owned(),
        };
        match kind {
            WrappedKind::TenantKey | WrappedKind::Document(_) => Ok(Self {
                json: None,
                items: vec![WrappedItem {
                    stored: ItemBytes::Raw(doc.value.clone()),
                    aad: doc.key.clone(),
                    index: 0,
                }],
            }),
            WrappedKind::KmsKeyMaterial => {
                let json: Value =
                    serde_json::from_slice(&doc.value).map_err(|e| bad(&e.to_string()))?;
                let arn = json
                    .get("arn")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("no `arn`"))?
                    .to_owned();
                let materials = json
                    .get("materials")
                    .and_then(Value::as_array)
                    .ok_or_else(|| bad("no `materials` list"))?;
                let mut items = Vec::with_capacity(materials.len());
                for (index, material) in materials.iter().enumerate() {
                    let wrapped = material
                        .get("wrapped")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad("a material without `wrapped`"))?;
                    items.push(WrappedItem {
                        stored: ItemBytes::Base64(wrapped.to_owned()),
                        aad: arn.clone(),
                        index,
                    });
                }
                Ok(Self {
                    json: Some(json),
                    items,
                })
            }
            WrappedKind::CustomKeyStoreKey => {
                let json: Value =
                    serde_json::from_slice(&doc.value).map_err(|e| bad(&e.to_string()))?;
                let stores = json
                    .get("stores")
                    .and_then(Value::as_array)
                    .ok_or_else(|| bad("no `stores` list"))?;
                let mut items = Vec::with_capacity(stores.len());
                for (index, store) in stores.iter().enumerate() {
                    let id = store
                        .get("id")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad("a store without `id`"))?;
                    let wrapped = store
                        .pointer("/secret/wrapped_key")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad("a store without `secret.wrapped_key`"))?;
                    items.push(WrappedItem {
                        stored: ItemBytes::Base64(wrapped.to_owned()),
                        // The document's key is the tenant.
                        aad: custom_key_store_binding(region, &doc.key, id),
                        index,
                    });
                }
                Ok(Self {
                    json: Some(json),
                    items,
                })
            }
        }
    }

    /// Puts `stored` in place of item `index`.
    fn replace(&mut self, index: usize, stored: &[u8]) {
        let Some(item) = self.items.get_mut(index) else {
            return;
        };
        match &mut item.stored {
            ItemBytes::Raw(bytes) => *bytes = stored.to_vec(),
            ItemBytes::Base64(text) => *text = STANDARD.encode(stored),
        }
    }

    /// The document's new value.
    fn into_value(self, kind: WrappedKind, document: &str) -> Result<Vec<u8>, RewrapError> {
        let Some(mut json) = self.json else {
            return match self.items.into_iter().next() {
                Some(WrappedItem {
                    stored: ItemBytes::Raw(bytes),
                    ..
                }) => Ok(bytes),
                _ => Err(RewrapError::Corrupt {
                    kind,
                    document: document.to_owned(),
                    detail: "no key".to_owned(),
                }),
            };
        };
        for item in self.items {
            let ItemBytes::Base64(text) = item.stored else {
                continue;
            };
            let pointer = match kind {
                WrappedKind::KmsKeyMaterial => format!("/materials/{}/wrapped", item.index),
                WrappedKind::CustomKeyStoreKey => {
                    format!("/stores/{}/secret/wrapped_key", item.index)
                }
                WrappedKind::TenantKey | WrappedKind::Document(_) => continue,
            };
            if let Some(slot) = json.pointer_mut(&pointer) {
                *slot = Value::String(text);
            }
        }
        serde_json::to_vec(&json).map_err(|e| RewrapError::Corrupt {
            kind,
            document: document.to_owned(),
            detail: e.to_string(),
        })
    }
}

fn decode_item(
    kind: WrappedKind,
    doc: &Document,
    item: &WrappedItem,
) -> Result<Vec<u8>, RewrapError> {
    match &item.stored {
        ItemBytes::Raw(bytes) => Ok(bytes.clone()),
        ItemBytes::Base64(text) => STANDARD.decode(text).map_err(|e| RewrapError::Corrupt {
            kind,
            document: doc.key.clone(),
            detail: format!("a wrapped key that is not base64: {e}"),
        }),
    }
}

fn corrupt(kind: WrappedKind, document: &str, error: &CryptoError) -> RewrapError {
    RewrapError::Corrupt {
        kind,
        document: document.to_owned(),
        detail: error.to_string(),
    }
}

#[cfg(test)]
mod tests;
