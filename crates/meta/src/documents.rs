//! Documents: small records in named namespaces, read by key or prefix and
//! written in atomic batches guarded by revisions (optimistic concurrency).
//!
//! Services whose records are few and small (identities, keys, policies)
//! keep them here instead of growing [`crate::MetaStore`] with one method per
//! operation: a service reads, decides, and commits its writes with the
//! revisions it read; a concurrent change makes the commit fail with
//! `PreconditionFailed` and the service retries. Every backend must make a
//! commit all-or-nothing and durable before it returns.

use crate::MetaResult;

/// A stored document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub key: String,
    /// Increases with every write of this key; starts at 1.
    pub revision: u64,
    pub value: Vec<u8>,
}

/// What a write expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Write whatever is there.
    Any,
    /// The key must not exist (create).
    Absent,
    /// The key must exist with exactly this revision (update or delete).
    Revision(u64),
}

/// One write of a batch: `value: None` deletes.
#[derive(Debug, Clone)]
pub struct DocumentWrite {
    pub namespace: String,
    pub key: String,
    pub expect: Expect,
    pub value: Option<Vec<u8>>,
}

/// Namespaced documents with atomic, revision-checked batches.
#[async_trait::async_trait]
pub trait DocumentStore: Send + Sync + 'static {
    async fn get_document(&self, namespace: &str, key: &str) -> MetaResult<Option<Document>>;
    /// Documents whose key starts with `prefix`, in key order, strictly after
    /// `after` when given, at most `limit`.
    async fn scan_documents(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> MetaResult<Vec<Document>>;
    /// Applies every write, or none: fails with `PreconditionFailed` when an
    /// expectation does not hold.
    async fn commit_documents(&self, writes: Vec<DocumentWrite>) -> MetaResult<()>;
}
