//! `RemoteBlobStore`: `nuage_blob::BlobStore` over one storage node, so the
//! storage layer runs over a remote node unchanged. Ids are minted here, as
//! `LocalBlobStore` mints them; a blob is durable when `finish` returns
//! because the node acknowledges only after its fsync.

use crate::client::{NodeBlobWriter, NodeClient};
use crate::limits;
use futures::StreamExt as _;
use nuage_blob::{BlobEntry, BlobError, BlobResult, BlobStore, BlobStream, BlobWriter};
use std::time::{Duration, UNIX_EPOCH};

/// The blob store of one storage node.
#[derive(Debug, Clone)]
pub struct RemoteBlobStore {
    client: NodeClient,
}

impl RemoteBlobStore {
    #[must_use]
    pub fn new(client: NodeClient) -> Self {
        Self { client }
    }

    #[must_use]
    pub fn client(&self) -> &NodeClient {
        &self.client
    }
}

#[async_trait::async_trait]
impl BlobStore for RemoteBlobStore {
    async fn create(&self) -> BlobResult<Box<dyn BlobWriter>> {
        let blob_id = nuage_base::ids::random_id();
        let writer = self.client.create(&blob_id, None)?;
        Ok(Box::new(RemoteWriter { writer }))
    }

    fn read(&self, blob_id: &str, offset: u64, len: u64) -> BlobStream {
        Box::pin(
            self.client
                .read(blob_id, offset, len, false)
                .map(|item| item.map_err(BlobError::from)),
        )
    }

    fn read_authenticated(&self, blob_id: &str, offset: u64, len: u64) -> BlobStream {
        Box::pin(
            self.client
                .read(blob_id, offset, len, true)
                .map(|item| item.map_err(BlobError::from)),
        )
    }

    async fn delete(&self, blob_id: &str) -> BlobResult<()> {
        Ok(self.client.delete(blob_id).await?)
    }

    /// Every blob on the node, a page at a time: the trait wants them all
    /// (the orphan collector), so the result grows with the node's content.
    async fn list(&self) -> BlobResult<Vec<BlobEntry>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .client
                .list(after.as_deref(), limits::NODE_LIST_PAGE_MAX)
                .await?;
            out.extend(page.blobs.into_iter().map(|b| BlobEntry {
                blob_id: b.blob_id,
                modified: UNIX_EPOCH + Duration::from_millis(b.modified_ms),
            }));
            match page.next_after {
                Some(next) => after = Some(next),
                None => return Ok(out),
            }
        }
    }
}

struct RemoteWriter {
    writer: NodeBlobWriter,
}

#[async_trait::async_trait]
impl BlobWriter for RemoteWriter {
    fn blob_id(&self) -> &str {
        self.writer.blob_id()
    }

    async fn write(&mut self, data: bytes::Bytes) -> BlobResult<()> {
        Ok(self.writer.write(data).await?)
    }

    async fn finish(self: Box<Self>) -> BlobResult<u64> {
        Ok(self.writer.finish().await?.length)
    }

    async fn abandon(self: Box<Self>) {
        self.writer.abandon().await;
    }
}
