//! The EC2 front end's own records, one document each, keyed by
//! `TENANT/NAME` so that every read is scoped to the caller's tenant: key
//! pairs, registered images (which host image they name), and which tenant
//! owns which instance. The compute host keeps the instances themselves.

use std::sync::Arc;

use nuage_meta::{DocumentStore, DocumentWrite, Expect};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::error::{Ec2Error, Ec2Result};
use crate::limits::{DOCUMENT_SCAN_PAGE, RECORDS_PER_TENANT_MAX};

pub const KEY_PAIRS: &str = "ec2-key-pairs";
pub const IMAGES: &str = "ec2-images";
pub const INSTANCES: &str = "ec2-instances";
pub const CLIENT_TOKENS: &str = "ec2-client-tokens";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyPair {
    pub name: String,
    pub id: String,
    pub fingerprint: String,
    /// The OpenSSH public key line.
    pub public_key: String,
    pub key_type: String,
    pub created: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    /// `ami-...`.
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    /// `bucket/key` of the disk.
    pub location: String,
    pub kernel: Option<String>,
    pub ramdisk: Option<String>,
    /// The compute host's image (content hash).
    pub host_image: String,
    pub created: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceOwner {
    pub id: String,
    /// The tenant's `ami-...` it was launched from.
    pub image_id: String,
    pub key_name: Option<String>,
    pub reservation_id: String,
    pub launch_index: u32,
    /// The compute host it runs on (`ScheduledHost::id`); None in records
    /// from before several hosts, which are the local host's (and only
    /// its: a gateway scheduling onto the topology's hosts shows them by
    /// their last known state and never deletes them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The host's record as this gateway last saw it (a `pending` one
    /// written before the run is sent, then at launch and after each state
    /// change it made), shown while the host is unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_known: Option<serde_json::Value>,
    /// When the run was sent to the host (Unix seconds): while a host that
    /// does not know the instance may still be receiving it
    /// (`LOST_LAUNCH_GRACE_S`), it is shown `pending`, not dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_sent_unix_s: Option<i64>,
}

/// A RunInstances `ClientToken` and the reservation it started, so that a
/// repeat (a client's retry after a lost answer) returns that reservation
/// instead of starting more instances. Keyed by the token's SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientToken {
    /// The record's name: the token's SHA-256 (hex).
    pub name: String,
    pub reservation_id: String,
    /// A digest of the request's other parameters: a repeat with other
    /// parameters is `IdempotentParameterMismatch`, as in EC2.
    pub parameters: String,
    pub created_unix_s: i64,
    /// `in_progress` from the claim until its request ends with something
    /// kept (`done`); a repeat waits while it is in progress. Records from
    /// before states are `done`.
    #[serde(default)]
    pub state: TokenState,
    /// Random, per claim: the request that claimed the token changes or
    /// deletes it only while it is still its own claim (revisions start
    /// again at 1 when a deleted token is created again).
    #[serde(default)]
    pub claim: String,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TokenState {
    InProgress,
    #[default]
    Done,
}

#[derive(Clone)]
pub struct Records {
    docs: Arc<dyn DocumentStore>,
}

fn key(tenant: &str, name: &str) -> String {
    format!("{tenant}/{name}")
}

impl Records {
    pub fn new(docs: Arc<dyn DocumentStore>) -> Self {
        Self { docs }
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        namespace: &str,
        tenant: &str,
        name: &str,
    ) -> Ec2Result<Option<T>> {
        match self
            .docs
            .get_document(namespace, &key(tenant, name))
            .await
            .map_err(Ec2Error::from_meta)?
        {
            None => Ok(None),
            Some(doc) => serde_json::from_slice(&doc.value)
                .map(Some)
                .map_err(|e| Ec2Error::internal(format!("corrupt {namespace} record: {e}"))),
        }
    }

    /// Every record of the tenant in `namespace`, at most
    /// [`RECORDS_PER_TENANT_MAX`].
    pub async fn list<T: DeserializeOwned>(
        &self,
        namespace: &str,
        tenant: &str,
    ) -> Ec2Result<Vec<T>> {
        let prefix = format!("{tenant}/");
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        while out.len() < RECORDS_PER_TENANT_MAX {
            let page = self
                .docs
                .scan_documents(namespace, &prefix, after.as_deref(), DOCUMENT_SCAN_PAGE)
                .await
                .map_err(Ec2Error::from_meta)?;
            let done = page.len() < DOCUMENT_SCAN_PAGE;
            after = page.last().map(|d| d.key.clone());
            for doc in page {
                out.push(
                    serde_json::from_slice(&doc.value).map_err(|e| {
                        Ec2Error::internal(format!("corrupt {namespace} record: {e}"))
                    })?,
                );
            }
            if done {
                break;
            }
        }
        Ok(out)
    }

    pub async fn count(&self, namespace: &str, tenant: &str) -> Ec2Result<usize> {
        Ok(self
            .list::<serde_json::Value>(namespace, tenant)
            .await?
            .len())
    }

    /// Creates a record; `Ok(false)` when one of that name exists.
    pub async fn create<T: Serialize>(
        &self,
        namespace: &str,
        tenant: &str,
        name: &str,
        value: &T,
    ) -> Ec2Result<bool> {
        let value = serde_json::to_vec(value).map_err(Ec2Error::internal)?;
        match self
            .docs
            .commit_documents(vec![DocumentWrite {
                namespace: namespace.to_owned(),
                key: key(tenant, name),
                expect: Expect::Absent,
                value: Some(value),
            }])
            .await
        {
            Ok(()) => Ok(true),
            Err(nuage_meta::MetaError::PreconditionFailed) => Ok(false),
            Err(e) => Err(Ec2Error::from_meta(e)),
        }
    }

    /// Writes a record whatever is there.
    pub async fn put<T: Serialize>(
        &self,
        namespace: &str,
        tenant: &str,
        name: &str,
        value: &T,
    ) -> Ec2Result<()> {
        let value = serde_json::to_vec(value).map_err(Ec2Error::internal)?;
        self.docs
            .commit_documents(vec![DocumentWrite {
                namespace: namespace.to_owned(),
                key: key(tenant, name),
                expect: Expect::Any,
                value: Some(value),
            }])
            .await
            .map_err(Ec2Error::from_meta)
    }

    /// A record and its revision.
    pub async fn get_revision<T: DeserializeOwned>(
        &self,
        namespace: &str,
        tenant: &str,
        name: &str,
    ) -> Ec2Result<Option<(T, u64)>> {
        match self
            .docs
            .get_document(namespace, &key(tenant, name))
            .await
            .map_err(Ec2Error::from_meta)?
        {
            None => Ok(None),
            Some(doc) => serde_json::from_slice(&doc.value)
                .map(|v| Some((v, doc.revision)))
                .map_err(|e| Ec2Error::internal(format!("corrupt {namespace} record: {e}"))),
        }
    }

    /// Replaces (`Some`) or deletes (`None`) a record if it is still at
    /// `revision`; `Ok(false)` when it changed (or went) meanwhile.
    pub async fn write_if<T: Serialize>(
        &self,
        namespace: &str,
        tenant: &str,
        name: &str,
        revision: u64,
        value: Option<&T>,
    ) -> Ec2Result<bool> {
        let value = value
            .map(serde_json::to_vec)
            .transpose()
            .map_err(Ec2Error::internal)?;
        match self
            .docs
            .commit_documents(vec![DocumentWrite {
                namespace: namespace.to_owned(),
                key: key(tenant, name),
                expect: Expect::Revision(revision),
                value,
            }])
            .await
        {
            Ok(()) => Ok(true),
            Err(nuage_meta::MetaError::PreconditionFailed) => Ok(false),
            Err(e) => Err(Ec2Error::from_meta(e)),
        }
    }

    pub async fn delete(&self, namespace: &str, tenant: &str, name: &str) -> Ec2Result<()> {
        self.docs
            .commit_documents(vec![DocumentWrite {
                namespace: namespace.to_owned(),
                key: key(tenant, name),
                expect: Expect::Any,
                value: None,
            }])
            .await
            .map_err(Ec2Error::from_meta)
    }
}
