//! Residency attestations, on the S3 port under `/_nuage/residency/v1/` (no
//! bucket name starts with `_`; docs/residency.md):
//!
//! | `GET` path | answer |
//! | --- | --- |
//! | `key` | the region's verifier key (`name+id+key`), unauthenticated: it is public |
//! | `attestation?bucket=B[&key=K[&versionId=V]]` | a signed note: where every replica of the object's blobs is now (or of the blobs of every object's latest version in the bucket), with the bucket's effective policy and whether it complies |
//!
//! Attestation requests are SigV4-signed (`Authorization` header, service
//! `residency` or `s3`) by an identity of the bucket's tenant and authorized
//! as [`GET_ATTESTATION_ACTION`] on the bucket's or the object's S3 ARN. A
//! bucket of another tenant is refused (403 `AccessDenied`) as a policy
//! refusal is; both are recorded in the caller's tenant's audit log, and so
//! is every attestation issued. Errors are JSON
//! `{"error":{"code":..,"message":..}}`.
//!
//! Where replicas are comes from the blob store: in cluster mode, the
//! location index (the nodes that hold each blob); on a single node, the one
//! node of the synthesized topology. This module decides nothing about
//! placement; it reads and signs.

use super::tenant_api::{
    self, ApiError, actor, connection_context, expect_read, reply, with_audit,
};
use bytes::Bytes;
use ed25519_dalek::SigningKey;
use nuage_audit::{Effect, RequestAudit};
use nuage_base::Clock;
use nuage_iam::{AccessRequest, Iam, IamError, Identity};
use nuage_meta::{BucketRecord, MetaStore, VersionRecord};
use nuage_placement::{Attestation, ReplicaRef, ResidencyPolicy, Subject, Topology};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

/// Where the API lives.
pub const PREFIX: &str = "/_nuage/residency/v1/";
/// The IAM action a caller needs.
pub const GET_ATTESTATION_ACTION: &str = "nuage:GetResidencyAttestation";
/// The credential scopes accepted: `residency` (what `nuage residency
/// attest` signs with) and `s3`.
pub const SIGNING_SERVICES: &[&str] = &["residency", "s3"];
/// Blobs a bucket attestation lists at most; a larger bucket gets a 400
/// asking for object attestations.
pub const BUCKET_BLOBS_MAX: usize = 256;
/// Versions a bucket attestation reads at most (delete markers and blobs
/// shared between keys count too), so one request's work is bounded.
pub const BUCKET_VERSIONS_SCANNED_MAX: usize = 10_000;
/// Keys read per metadata scan.
const SCAN_PAGE: usize = 1_000;
/// Query string bytes accepted.
const QUERY_BYTES_MAX: usize = 4_096;

/// Whether a request is for this API.
#[must_use]
pub fn is_residency_path(path: &str) -> bool {
    path.starts_with("/_nuage/residency/")
}

/// Where the replicas of a blob are.
pub enum Locations {
    /// Every blob on this machine: the single node of the synthesized
    /// topology.
    Local { node: String },
    /// The cluster store's location index.
    Cluster(nuage_cluster::ClusterBlobStore),
}

/// The attestation API.
pub struct ResidencyApi {
    meta: Arc<dyn MetaStore>,
    iam: Iam,
    clock: Arc<dyn Clock>,
    topology: Arc<Topology>,
    key: SigningKey,
    issuer: String,
    verifier_key: String,
    /// The policy in force for a bucket whose tenant set none.
    default_policy: ResidencyPolicy,
    locations: Locations,
}

pub use tenant_api::audit_failure_response;

/// An internal failure, logged here; the client learns what failed.
fn internal(what: &str, error: &dyn std::fmt::Display) -> ApiError {
    tracing::error!(%error, "residency attestation: {what}");
    ApiError::new(
        http::StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        format!("the attestation could not be made: {what}"),
    )
}

/// What an attestation request names.
struct Target {
    bucket: String,
    key: Option<String>,
    version_id: Option<String>,
}

impl Target {
    fn arn(&self) -> String {
        match &self.key {
            Some(key) => format!("arn:aws:s3:::{}/{key}", self.bucket),
            None => format!("arn:aws:s3:::{}", self.bucket),
        }
    }
}

/// The single-node default: the first region's countries, one copy on one
/// site (what a single node does with every byte).
///
/// # Errors
/// A topology without a site in `region`.
pub fn single_node_default_policy(
    topology: &Topology,
    region: &str,
) -> anyhow::Result<ResidencyPolicy> {
    let countries: BTreeSet<_> = topology
        .sites()
        .values()
        .filter(|s| s.region == region)
        .map(|s| s.country)
        .collect();
    ResidencyPolicy::new(
        countries,
        BTreeSet::new(),
        BTreeSet::new(),
        None,
        nuage_placement::Durability::Replicas(1),
        1,
    )
    .map_err(|e| anyhow::anyhow!("no default residency policy for region `{region}`: {e}"))
}

impl ResidencyApi {
    /// The API signing with `key` under `issuer`.
    ///
    /// # Errors
    /// An issuer that cannot name a signed-note key.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        meta: Arc<dyn MetaStore>,
        iam: Iam,
        clock: Arc<dyn Clock>,
        topology: Arc<Topology>,
        key: SigningKey,
        issuer: String,
        default_policy: ResidencyPolicy,
        locations: Locations,
    ) -> anyhow::Result<Self> {
        let verifier_key = nuage_placement::verifier_key(&issuer, &key.verifying_key())
            .map_err(|e| anyhow::anyhow!("residency attestation signer: {e}"))?;
        Ok(Self {
            meta,
            iam,
            clock,
            topology,
            key,
            issuer,
            verifier_key,
            default_policy,
            locations,
        })
    }

    /// The verifier key tenants check attestations with.
    #[must_use]
    pub fn verifier_key(&self) -> &str {
        &self.verifier_key
    }

    /// Answers one request; every problem is a JSON error response.
    pub async fn handle<B>(
        &self,
        request: http::Request<B>,
        source_ip: IpAddr,
        secure: bool,
    ) -> http::Response<Bytes> {
        let (parts, _body) = request.into_parts();
        match self.serve(&parts, source_ip, secure).await {
            Ok((response, audit)) => with_audit(response, audit),
            Err((error, audit)) => with_audit(error.response(), audit),
        }
    }

    async fn serve(
        &self,
        parts: &http::request::Parts,
        source_ip: IpAddr,
        secure: bool,
    ) -> Result<(http::Response<Bytes>, Option<RequestAudit>), (ApiError, Option<RequestAudit>)>
    {
        expect_read(
            parts,
            "residency attestations are read-only: use GET",
            "residency requests carry no body",
        )
        .map_err(|e| (e, None))?;
        let path = parts.uri.path().strip_prefix(PREFIX).unwrap_or_default();
        match path {
            "key" => Ok((
                reply(
                    http::StatusCode::OK,
                    "text/plain; charset=utf-8",
                    Bytes::from(format!("{}\n", self.verifier_key)),
                ),
                None,
            )),
            "attestation" => self.attestation(parts, source_ip, secure).await,
            _ => Err((
                ApiError::new(
                    http::StatusCode::NOT_FOUND,
                    "NotFound",
                    format!(
                        "no such residency resource {:?}: see docs/residency.md",
                        nuage_audit::client_text(path)
                    ),
                ),
                None,
            )),
        }
    }

    async fn attestation(
        &self,
        parts: &http::request::Parts,
        source_ip: IpAddr,
        secure: bool,
    ) -> Result<(http::Response<Bytes>, Option<RequestAudit>), (ApiError, Option<RequestAudit>)>
    {
        let identity = self.authenticate(parts).await?;
        let tenant = identity.tenant_id.clone();
        let target = parse_query(parts.uri.query()).map_err(|e| (e, None))?;
        let arn = target.arn();
        let record = |effect: Effect, policy: Option<String>, statement: Option<String>| {
            RequestAudit::new(&tenant, actor(&identity), GET_ATTESTATION_ACTION)
                .on(arn.clone())
                .decided(effect, policy, statement)
        };
        let denied = |why: String| {
            ApiError::new(
                http::StatusCode::FORBIDDEN,
                "AccessDenied",
                format!(
                    "{} is not authorized to perform {GET_ATTESTATION_ACTION} on {arn}{why}",
                    identity.arn
                ),
            )
        };
        let bucket = self
            .meta
            .get_bucket(&target.bucket)
            .await
            .map_err(|e| (internal("the bucket could not be read", &e), None))?
            .ok_or_else(|| {
                (
                    ApiError::new(
                        http::StatusCode::NOT_FOUND,
                        "NoSuchBucket",
                        "the specified bucket does not exist",
                    ),
                    None,
                )
            })?;
        if bucket.owner != tenant {
            // Another tenant's bucket: refused as S3 refuses a bucket of
            // another account, and recorded as a refusal in the owner's log
            // (the server copies it to the caller's).
            let audit = RequestAudit::new(&bucket.owner, actor(&identity), GET_ATTESTATION_ACTION)
                .on(arn.clone())
                .decided(Effect::Deny, None, None);
            return Err((
                denied(": the bucket belongs to another tenant".to_owned()),
                Some(audit),
            ));
        }
        let request = AccessRequest {
            action: GET_ATTESTATION_ACTION.to_owned(),
            resource: arn.clone(),
            context: connection_context(source_ip, secure),
        };
        let decision = self
            .iam
            .authorize(Some(&identity), &request, Some(&tenant), None, false)
            .await
            .map_err(|e| (from_iam(e), None))?;
        if !decision.allowed {
            return Err((
                denied(String::new()),
                Some(record(Effect::Deny, decision.policy, decision.statement)),
            ));
        }
        let allowed = record(Effect::Allow, decision.policy, decision.statement);
        // From here on the request was allowed: its failures are logged as
        // such too (the status tells them apart).
        match self.attest(&bucket, &target).await {
            Ok(note) => Ok((
                reply(
                    http::StatusCode::OK,
                    "text/plain; charset=utf-8",
                    Bytes::from(note),
                ),
                Some(allowed),
            )),
            Err(e) => Err((e, Some(allowed))),
        }
    }

    /// Builds and signs the statement for an authorized caller.
    async fn attest(&self, bucket: &BucketRecord, target: &Target) -> Result<String, ApiError> {
        let policy = self.effective_policy(bucket).await?;
        let (blobs, version_id) = match &target.key {
            Some(key) => {
                let version = self
                    .object_version(bucket, key, target.version_id.as_deref())
                    .await?;
                (
                    blob_ids(std::slice::from_ref(&version)),
                    Some(version.version_id),
                )
            }
            None => (self.bucket_blobs(bucket).await?, None),
        };
        let mut replicas = Vec::new();
        for blob in blobs {
            replicas.extend(self.replicas_of(&blob).await?);
        }
        let subject = Subject {
            tenant: bucket.owner.clone(),
            bucket: bucket.name.clone(),
            key: target.key.clone(),
            version_id,
        };
        let now_ns = self.clock.now_unix_ns();
        let issued_at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ns))
            .map_err(|e| internal("the clock is out of range", &e))?;
        let attestation = Attestation::new(
            &self.topology,
            &policy,
            &bucket.region,
            &self.issuer,
            issued_at,
            subject,
            replicas,
        )
        .map_err(|e| match e {
            nuage_placement::AttestationError::TooManyReplicas(_) => ApiError::bad_request(
                "TooManyReplicas",
                format!("{e}: ask for an attestation per object (`key=`)"),
            ),
            e => internal("the statement could not be made", &e),
        })?;
        attestation
            .sign(&self.key)
            .map_err(|e| internal("the statement could not be signed", &e))
    }

    /// The bucket's own policy, else its tenant's, else the default.
    async fn effective_policy(&self, bucket: &BucketRecord) -> Result<ResidencyPolicy, ApiError> {
        let text = match &bucket.residency_policy {
            Some(own) => Some(own.clone()),
            None => {
                self.iam
                    .tenant(&bucket.owner)
                    .await
                    .map_err(|e| internal("the tenant's policy could not be read", &e))?
                    .residency_policy
            }
        };
        match text {
            Some(text) => ResidencyPolicy::from_json(&text)
                .map_err(|e| internal("the stored policy does not parse", &e)),
            None => Ok(self.default_policy.clone()),
        }
    }

    async fn object_version(
        &self,
        bucket: &BucketRecord,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<VersionRecord, ApiError> {
        let version = self
            .meta
            .get_version(&bucket.name, key, version_id)
            .await
            .map_err(|e| internal("the object could not be read", &e))?;
        match version {
            Some(v) if !v.delete_marker => Ok(v),
            _ if version_id.is_some() => Err(ApiError::new(
                http::StatusCode::NOT_FOUND,
                "NoSuchVersion",
                "the specified version does not exist (or is a delete marker)",
            )),
            _ => Err(ApiError::new(
                http::StatusCode::NOT_FOUND,
                "NoSuchKey",
                "the specified key does not exist",
            )),
        }
    }

    /// The blobs of every key's latest version, at most [`BUCKET_BLOBS_MAX`].
    async fn bucket_blobs(&self, bucket: &BucketRecord) -> Result<Vec<String>, ApiError> {
        let too_large = || {
            ApiError::bad_request(
                "BucketTooLargeToAttest",
                format!(
                    "bucket `{}` holds more than {BUCKET_BLOBS_MAX} blobs (or more than \
                     {BUCKET_VERSIONS_SCANNED_MAX} keys): ask for an attestation per object \
                     (`key=`)",
                    bucket.name
                ),
            )
        };
        let mut blobs = BTreeSet::new();
        let mut after: Option<Vec<u8>> = None;
        let mut scanned = 0usize;
        loop {
            let page = self
                .meta
                .scan_latest(&bucket.name, "", after.as_deref(), SCAN_PAGE)
                .await
                .map_err(|e| internal("the bucket could not be listed", &e))?;
            let last = page.len() < SCAN_PAGE;
            scanned += page.len();
            if scanned > BUCKET_VERSIONS_SCANNED_MAX {
                return Err(too_large());
            }
            let live: Vec<VersionRecord> =
                page.iter().filter(|v| !v.delete_marker).cloned().collect();
            blobs.extend(blob_ids(&live));
            if blobs.len() > BUCKET_BLOBS_MAX {
                return Err(too_large());
            }
            match page.last() {
                Some(v) if !last => after = Some(v.key.as_bytes().to_vec()),
                _ => break,
            }
        }
        Ok(blobs.into_iter().collect())
    }

    async fn replicas_of(&self, blob: &str) -> Result<Vec<ReplicaRef>, ApiError> {
        // (shard index under erasure coding, node)
        let nodes: Vec<(Option<u32>, String)> = match &self.locations {
            Locations::Local { node } => vec![(None, node.clone())],
            Locations::Cluster(store) => {
                let entry = store
                    .index()
                    .get(blob)
                    .await
                    .map_err(|e| internal("the location index could not be read", &e))?;
                match entry {
                    Some(entry) if !entry.location.deleted => match entry.location.erasure {
                        // One entry per shard held, with its index; a lost
                        // shard (no node) is stated by its absence.
                        Some(layout) => layout
                            .shards
                            .into_iter()
                            .enumerate()
                            .filter_map(|(i, shard)| Some((u32::try_from(i).ok(), shard.node?)))
                            .collect(),
                        None => entry
                            .location
                            .nodes
                            .into_iter()
                            .map(|n| (None, n))
                            .collect(),
                    },
                    // Listed by no node: stated as holding nothing, which
                    // the verdict then counts as too few copies.
                    _ => Vec::new(),
                }
            }
        };
        Ok(nodes
            .into_iter()
            .map(|(chunk, node)| ReplicaRef {
                blob: Some(blob.to_owned()),
                chunk,
                node,
            })
            .collect())
    }

    /// The caller, by SigV4. A refusal of a known key carries its audit record.
    async fn authenticate(
        &self,
        parts: &http::request::Parts,
    ) -> Result<Identity, (ApiError, Option<RequestAudit>)> {
        tenant_api::authenticate(
            &self.iam,
            self.clock.as_ref(),
            parts,
            SIGNING_SERVICES,
            "sign the request with SigV4 (service `residency`): attestations are for the bucket's tenant",
            from_iam,
            |identity| {
                RequestAudit::new(&identity.tenant_id, actor(identity), GET_ATTESTATION_ACTION)
            },
        )
        .await
    }
}

/// Each distinct blob of `versions`, in order.
fn blob_ids(versions: &[VersionRecord]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    versions
        .iter()
        .flat_map(|v| v.segments.iter())
        .filter(|s| seen.insert(s.blob_id.clone()))
        .map(|s| s.blob_id.clone())
        .collect()
}

/// `bucket=` (required), `key=`, `versionId=` (only with a key), each at
/// most once, percent-decoded.
fn parse_query(query: Option<&str>) -> Result<Target, ApiError> {
    let query = query.unwrap_or_default();
    if query.len() > QUERY_BYTES_MAX {
        return Err(ApiError::bad_request(
            "InvalidArgument",
            format!("the query string is longer than {QUERY_BYTES_MAX} bytes"),
        ));
    }
    let mut fields: BTreeMap<&str, String> = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !matches!(name, "bucket" | "key" | "versionId") {
            return Err(ApiError::bad_request(
                "InvalidArgument",
                format!(
                    "unknown query parameter {:?} (bucket, key, versionId)",
                    nuage_audit::client_text(name)
                ),
            ));
        }
        let value = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| {
                ApiError::bad_request(
                    "InvalidArgument",
                    format!("the query parameter `{name}` is not UTF-8"),
                )
            })?
            .into_owned();
        if value.is_empty() {
            return Err(ApiError::bad_request(
                "InvalidArgument",
                format!("the query parameter `{name}` is empty"),
            ));
        }
        if fields.insert(name, value).is_some() {
            return Err(ApiError::bad_request(
                "InvalidArgument",
                format!("the query parameter `{name}` is given twice"),
            ));
        }
    }
    let bucket = fields.remove("bucket").ok_or_else(|| {
        ApiError::bad_request(
            "MissingParameter",
            "the query parameter `bucket` is required",
        )
    })?;
    let key = fields.remove("key");
    let version_id = fields.remove("versionId");
    if version_id.is_some() && key.is_none() {
        return Err(ApiError::bad_request(
            "InvalidArgument",
            "`versionId` names a version of an object: give `key` too",
        ));
    }
    Ok(Target {
        bucket,
        key,
        version_id,
    })
}

fn from_iam(error: IamError) -> ApiError {
    tenant_api::from_iam(error, |error| {
        internal("the request could not be authorized", &error)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_names_a_bucket_and_maybe_an_object() {
        let t = parse_query(Some("bucket=b&key=a%2Fb%20c&versionId=v1")).ok();
        let t = t.as_ref();
        assert_eq!(t.map(|t| t.bucket.as_str()), Some("b"));
        assert_eq!(t.and_then(|t| t.key.as_deref()), Some("a/b c"));
        assert_eq!(t.map(Target::arn).as_deref(), Some("arn:aws:s3:::b/a/b c"));
        assert!(parse_query(Some("key=k")).is_err());
        assert!(parse_query(Some("bucket=b&versionId=v")).is_err());
        assert!(parse_query(Some("bucket=b&bucket=c")).is_err());
        assert!(parse_query(Some("bucket=b&prefix=x")).is_err());
        assert!(parse_query(Some("bucket=")).is_err());
    }

    #[test]
    fn only_the_residency_prefix_is_routed_here() {
        assert!(is_residency_path("/_nuage/residency/v1/key"));
        assert!(!is_residency_path("/_nuage/audit/v1/checkpoint"));
        assert!(!is_residency_path("/bucket/_nuage/residency/v1/key"));
    }
}
