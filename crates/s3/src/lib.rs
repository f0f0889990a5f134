//! The S3 front end: the `s3s` crate parses requests, checks SigV4 and decodes
//! `aws-chunked` bodies; this crate turns each operation into calls on the
//! storage service and the results back into S3 responses.
//!
//! It is deliberately thin: no rule of S3 semantics lives here that the storage
//! service could own, and it never touches the metadata or blob store. Storage
//! errors become S3 error codes in exactly one place, [`errors::to_s3`].

pub mod access;
mod audit;
pub mod auth;
mod convert;
pub mod cors;
pub mod errors;
mod handlers;
pub mod hosts;
mod sse;

pub use access::{Authorizer, Caller, SecureTransport, SourceAddress};
pub use auth::IamAuth;
pub use cors::Cors;
pub use handlers::access_reason;
pub use hosts::VirtualHosts;

use nuage_storage::Storage;

/// A request id, placed in the request's extensions by the HTTP layer so that
/// error bodies carry the same id as the `x-amz-request-id` header.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The S3 API over a [`Storage`].
#[derive(Clone)]
pub struct NuageS3 {
    storage: Storage,
    /// Read for tenant-wide settings (Block Public Access); identities are
    /// the authorizer's business.
    iam: nuage_iam::Iam,
}

impl NuageS3 {
    #[must_use]
    pub fn new(storage: Storage, iam: nuage_iam::Iam) -> Self {
        Self { storage, iam }
    }
}
