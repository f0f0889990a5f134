//! Wiring and the HTTP server: opens the stores, builds the storage service and
//! the S3 service, accepts connections (TCP_NODELAY on every socket), and adds
//! a request id to every response.
//!
//! It is also the one place where requests reach the tenants' audit logs
//! ([`record`]): a front end that decided about a request puts a
//! [`RequestAudit`] in its response's extensions; this module completes it
//! (time, source address, request id, status), appends it to the tenant's log
//! and waits until it is durable *before* sending the response. If the append
//! fails, the response is withheld and replaced by an internal error in the
//! front end's own terms (fail closed): nothing is answered that the log does
//! not hold. A response without the extension is not logged here.

pub(crate) mod access_api;
pub(crate) mod audit_api;
pub(crate) mod audit_key;
pub(crate) mod cluster;
pub(crate) mod compute;
pub(crate) mod region_key;
pub(crate) mod repair_lease;
pub(crate) mod residency_api;
pub(crate) mod tenant_api;
pub(crate) mod witnesses;

use crate::config::Config;
use crate::credentials;
use anyhow::Context as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use nuage_admin_api::AdminApi;
use nuage_audit::{AuditLogs, AuditSlot, RequestAudit, RequestFacts};
use nuage_base::{SystemClock, limits};
use nuage_blob::local::LocalBlobStore;
use nuage_iam::Iam;
use nuage_iam_api::{IamQueryApi, RequestContext};
use nuage_kms_api::KmsApi;
use nuage_s3::{
    Authorizer, Cors, IamAuth, NuageS3, RequestId, SecureTransport, SourceAddress, VirtualHosts,
};
use nuage_storage::{Storage, StorageConfig};
use s3s::service::S3ServiceBuilder;
use std::sync::Arc;
use std::time::SystemTime;

pub async fn serve(config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    // The metadata store holds access-key secrets and wrapped keys: the data
    // directory is its owner's alone.
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| {
                format!(
                    "cannot restrict the permissions of {}",
                    config.data_dir.display()
                )
            })?;
    }
    let default_region = config
        .regions
        .first()
        .map_or_else(|| "fr-par".to_owned(), |r| r.name.clone());
    let (creds, created) = credentials::load_or_create(&config.data_dir, &default_region)?;
    // `[metadata]`: the embedded file (rewritten first when a deletion made
    // that owed) or a PostgreSQL database shared with other gateways.
    let crate::metadata::Metadata {
        meta,
        documents: docs,
    } = crate::metadata::open(&config.metadata, &config.data_dir).await?;
    let clock: Arc<dyn nuage_base::Clock> = Arc::new(SystemClock);
    let iam = Iam::new(Arc::clone(&docs), Arc::clone(&clock));
    // Encryption at rest: the root of trust (an HSM over PKCS#11, or the
    // development key file) protects each tenant's key, which wraps every
    // blob's data key.
    let root = crate::root_of_trust::open(&config.root_of_trust, &config.data_dir).await?;
    // The audit checkpoint signing key, sealed by the same root of trust.
    let audit_key = audit_key::load_or_create(docs.as_ref(), Arc::clone(&root)).await?;
    // The residency attestation signing key, sealed by it too.
    let region_key = region_key::load_or_create(docs.as_ref(), Arc::clone(&root)).await?;
    let keys = nuage_kms::KeyService::new(Arc::clone(&docs), root);
    // Customer keys (the KMS API's), which S3 SSE-KMS objects are stored
    // under: one instance, shared by both front ends.
    // Tenants' external key stores (hold your own key) are reached through
    // one XKS client, which trusts the system's roots and the configured CAs.
    let mut xks_config = nuage_xks::XksClientConfig::new(default_region.clone());
    xks_config.clock = Arc::clone(&clock);
    for path in &config.xks_trusted_ca_files {
        let pem = std::fs::read(path).with_context(|| {
            format!(
                "cannot read external_key_stores.trusted_ca_files entry {}",
                path.display()
            )
        })?;
        xks_config.extra_ca_certificates_pem.push(pem);
    }
    let xks = nuage_xks::XksClient::new(xks_config)
        .context("cannot set up the client for external key stores")?;
    // The key lifecycle's clock: the system's, except in a debug build
    // whose test moves it ahead (`debug_clock`).
    let key_clock = crate::debug_clock::key_clock(&clock)?;
    let customer_keys =
        nuage_kms::CustomerKeys::new(keys.clone(), key_clock, default_region.clone())
            .with_external_key_store(Arc::new(xks));
    // Where data may live: residency policies are checked against it when
    // they are set and when a bucket is created (docs/residency.md).
    let topology = Arc::new(crate::topology::load(
        config.topology_file.as_deref(),
        &config.regions,
    )?);
    // `[cluster]`: blobs on the topology's storage nodes, placed under each
    // bucket's residency policy; otherwise on this machine's disk.
    let (blobs, cluster): (Arc<dyn nuage_blob::BlobStore>, _) = match &config.cluster {
        Some(settings) => {
            let cluster = cluster::start(
                settings,
                Arc::clone(&topology),
                &default_region,
                Arc::clone(&docs),
                Arc::clone(&meta),
                iam.clone(),
            )
            .await?;
            (Arc::new(cluster.store.clone()), Some(cluster))
        }
        None => (
            Arc::new(
                LocalBlobStore::open(&config.data_dir.join("blobs"))
                    .context("cannot open the blob store")?,
            ),
            None,
        ),
    };
    let storage = Storage::new(
        Arc::clone(&meta),
        blobs,
        Arc::clone(&clock),
        keys,
        StorageConfig {
            regions: config.regions.clone(),
            default_region_aliases: vec!["us-east-1".into()],
        },
    )
    .with_customer_keys(customer_keys.clone())
    .with_bucket_admission(Arc::new(nuage_admin_api::BucketResidency::new(
        iam.clone(),
        Arc::clone(&topology),
    )));
    // The tenant's policy for buckets without their own: only the cluster
    // store places by policy (a single node's bytes are all on this machine).
    let storage = if cluster.is_some() {
        storage.with_residency(Arc::new(cluster::TenantResidency::new(iam.clone())))
    } else {
        storage
    };

    let country = config.regions.first().map_or("FR", |r| r.country.as_str());
    let default_tenant = crate::bootstrap::ensure_default_tenant(&iam, &creds, country).await?;
    // Each tenant's audit log, named after the first configured domain.
    let audit_public_key = audit_key.verifying_key();
    let log_host = config
        .domains
        .first()
        .cloned()
        .unwrap_or_else(|| config.listen.ip().to_string());
    // A gateway of a cluster keeps its logs on its own disk: they are its
    // own logs, named after it, so that two gateways never sign two
    // different trees under one origin (docs/audit-log.md, "Clusters").
    let origin_prefix = match &cluster {
        Some(cluster) => format!("{log_host}/audit/{}/", cluster.gateway),
        None => format!("{log_host}/audit/"),
    };
    let audit_logs = AuditLogs::new(
        nuage_audit::RegistryConfig {
            dir: config.data_dir.join("audit"),
            origin_prefix,
            checkpoint_interval: config.audit.checkpoint_interval,
            retention_days: config.audit.retention_days,
            open_logs_max: limits::AUDIT_OPEN_LOGS_MAX,
            idle: std::time::Duration::from_secs(limits::AUDIT_LOG_IDLE_S_MAX),
        },
        Arc::new(audit_key),
    )
    .context("cannot set up the audit logs (is the first configured domain a host name?)")?;
    // Repairs log each replica copy and removal in the owning tenant's log.
    if let Some(cluster) = &cluster {
        cluster.log_repairs_to(audit_logs.clone());
    }
    let audit_maintenance = audit_logs.spawn_maintenance();
    let operator = credentials::load_or_create_operator(&config.data_dir)?;
    let adopted = storage.adopt_unowned_buckets(&default_tenant.id).await?;
    if adopted > 0 {
        tracing::info!(adopted, tenant = %default_tenant.id, "buckets from before tenancy now belong to the default tenant");
    }

    // Blobs older than this start and referenced by nothing are leftovers of
    // an interrupted write: collect them in the background.
    // The cutoff is the modification time of a marker written now, read back
    // from the file system: blob files get their times from the same (coarse)
    // file-system clock, so every blob this process writes is at or after it.
    let started = start_marker(&config.data_dir)?;
    let collector = storage.clone();
    tokio::spawn(async move {
        match collector.collect_orphans(started).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                removed = n,
                "removed orphaned blobs left by an interrupted write"
            ),
            Err(e) => tracing::warn!(error = %e, "orphan collection failed"),
        }
    });

    let hosts = VirtualHosts::new(config.domains.clone());
    let cors = Arc::new(Cors::new(storage.clone(), hosts.clone()));
    // The operator's API shares the listener under /_nuage/admin/ (no bucket
    // name starts with `_`).
    let admin = AdminApi::new(
        iam.clone(),
        storage.clone(),
        customer_keys.clone(),
        operator.token.clone(),
    )
    .with_topology(Arc::clone(&topology));
    // On a gateway of a cluster it also lists and drains the storage nodes
    // and runs repair and scrub passes.
    let admin = Arc::new(match &cluster {
        Some(cluster) => admin.with_cluster(cluster.admin()),
        None => admin,
    });
    // The IAM and STS query APIs share the listener too (`aws iam`, `aws sts`).
    let query_api = IamQueryApi::new(iam.clone(), Arc::clone(&clock));
    // And the KMS JSON API (`aws kms`): customer keys under the same root of
    // trust and document store, with ARNs in the first configured region.
    let kms_api = KmsApi::new(customer_keys, iam.clone(), Arc::clone(&clock));
    // `[compute]`: the EC2 query API (`aws ec2`) over a compute host here.
    let ec2_api = match &config.compute {
        Some(settings) => Some(
            compute::start(
                settings,
                &config.data_dir,
                &default_region,
                Arc::clone(&docs),
                iam.clone(),
                Arc::clone(&clock),
                storage.clone(),
                &topology,
                config.cluster.as_ref(),
            )
            .await?,
        ),
        None => None,
    };
    let storage_for_access = storage.clone();
    // What s3s refuses before the authorizer runs is logged here.
    let s3_refusals = nuage_s3::auth::RefusedRequests::new(iam.clone(), hosts.clone());
    let mut builder = S3ServiceBuilder::new(NuageS3::new(storage, iam.clone()));
    builder.set_auth(IamAuth::new(iam.clone()));
    builder.set_access(Authorizer::new(iam.clone(), storage_for_access));
    builder.set_host(hosts);
    let mut s3_config = s3s::config::S3Config::default();
    s3_config.xml_max_body_size = limits::XML_BODY_BYTES_MAX;
    builder.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(
        s3_config,
    ))));
    let s3 = builder.build();

    let tls = match &config.tls {
        Some(source) => Some(tokio_rustls::TlsAcceptor::from(crate::tls::server_config(
            source,
            &config.data_dir,
        )?)),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint = format!("{scheme}://{local}");
    if created {
        println!(
            "nuage: first start; created region {}, the `{}` tenant ({}) and its administrator `{}`.",
            creds.region,
            crate::bootstrap::DEFAULT_TENANT,
            default_tenant.id,
            crate::bootstrap::ADMIN_USER
        );
        println!(
            "nuage: the administrator's key is stored in {} (readable by you only):",
            config.data_dir.join(credentials::FILE_NAME).display()
        );
        println!();
        println!(
            "    aws configure set aws_access_key_id {}",
            creds.access_key_id
        );
        println!(
            "    aws configure set aws_secret_access_key {}",
            creds.secret_access_key
        );
        println!("    aws configure set region {}", creds.region);
        println!("    aws --endpoint-url {endpoint} s3 mb s3://my-first-bucket");
        println!();
        println!(
            "nuage: the operator credential (admin API, `nuage admin ...`) is in {}.",
            config
                .data_dir
                .join(credentials::OPERATOR_FILE_NAME)
                .display()
        );
        println!();
    }
    println!(
        "nuage: audit checkpoints are signed with Ed25519 key {}; the `{}` tenant's verifier key is {}",
        base64_key(&audit_public_key),
        crate::bootstrap::DEFAULT_TENANT,
        audit_logs.verifier_key(&default_tenant.id)
    );
    // Residency attestations, signed by the region's key.
    let residency_api = residency_api::ResidencyApi::new(
        meta,
        iam.clone(),
        Arc::clone(&clock),
        Arc::clone(&topology),
        region_key,
        region_key::issuer(&log_host, &default_region),
        match &cluster {
            Some(cluster) => cluster.store.default_policy().clone(),
            None => residency_api::single_node_default_policy(&topology, &default_region)?,
        },
        match &cluster {
            Some(cluster) => residency_api::Locations::Cluster(cluster.store.clone()),
            None => residency_api::Locations::Local {
                node: crate::topology::LOCAL_SITE.to_owned(),
            },
        },
    )?;
    println!(
        "nuage: residency attestations are signed with verifier key {}",
        residency_api.verifier_key()
    );
    println!("nuage: S3 endpoint listening on {endpoint}");

    let witnesses = witnesses::Witnesses::new(&config.audit.witnesses)
        .context("cannot set up the audit witnesses")?;
    // Checkpoints the logs sign on their own are witnessed in the background.
    let witness_submitter = witnesses.spawn_submitter(&audit_logs);
    let audit_api = audit_api::AuditApi::new(
        audit_logs.clone(),
        iam.clone(),
        Arc::clone(&clock),
        witnesses,
    );
    // Operator access approvals: the operator's half shares the admin API's
    // token, the tenant's half is SigV4-signed.
    let access_api = access_api::AccessApi::new(
        iam.clone(),
        audit_logs.clone(),
        operator.token.clone(),
        Arc::clone(&clock),
    );
    let front_ends = Arc::new(FrontEnds {
        s3,
        s3_refusals,
        cors,
        admin,
        query_api,
        kms_api,
        ec2_api,
        audit_api,
        access_api,
        residency_api,
        audit_logs: audit_logs.clone(),
        clock: Arc::clone(&clock),
    });
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small responses must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let front_ends = Arc::clone(&front_ends);
        let tls = tls.clone();
        let secure = tls.is_some();
        tokio::spawn(async move {
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                handle(Arc::clone(&front_ends), peer, secure, req)
            });
            let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            http.http1()
                .max_buf_size(limits::REQUEST_HEADER_BYTES_MAX.max(8192))
                .timer(hyper_util::rt::TokioTimer::new());
            let result = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls_stream) => {
                        http.serve_connection(TokioIo::new(tls_stream), service)
                            .await
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        return;
                    }
                },
                None => http.serve_connection(TokioIo::new(stream), service).await,
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    tracing::info!("shutting down");
    drop(cluster);
    audit_maintenance.abort();
    if let Some(submitter) = witness_submitter {
        submitter.abort();
    }
    // A last checkpoint of every open log; appends already acknowledged are
    // durable whether or not this finishes.
    audit_logs.close_all().await;
    Ok(())
}

/// The raw Ed25519 public key, base64, for the start-up banner.
fn base64_key(key: &ed25519_dalek::VerifyingKey) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(key.as_bytes())
}

/// Writes `DATA_DIR/started` and returns its modification time.
fn start_marker(data_dir: &std::path::Path) -> anyhow::Result<SystemTime> {
    let path = data_dir.join("started");
    std::fs::write(&path, format!("{}\n", std::process::id()))?;
    Ok(std::fs::metadata(&path)?.modified()?)
}

/// The front ends that share the listener.
struct FrontEnds {
    s3: s3s::service::S3Service,
    s3_refusals: nuage_s3::auth::RefusedRequests,
    cors: Arc<Cors>,
    admin: Arc<AdminApi>,
    query_api: IamQueryApi,
    kms_api: KmsApi,
    ec2_api: Option<nuage_ec2_api::Ec2Api>,
    audit_api: audit_api::AuditApi,
    access_api: access_api::AccessApi,
    residency_api: residency_api::ResidencyApi,
    audit_logs: AuditLogs,
    clock: Arc<dyn nuage_base::Clock>,
}

/// Which front end answered a request: the error format of a withheld response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    S3,
    Admin,
    IamQuery,
    Kms,
    Ec2,
    Audit,
    Access,
    Residency,
}

/// One request: a request id on every response, the admin API under
/// `/_nuage/admin/`, the IAM/STS query APIs, the KMS JSON API, CORS preflights
/// answered here (they carry no signature), everything else through s3s.
async fn handle(
    front_ends: Arc<FrontEnds>,
    peer: std::net::SocketAddr,
    secure: bool,
    mut req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<s3s::Body>, s3s::HttpError> {
    let id = nuage_base::ids::random_id()[..16].to_uppercase();
    req.extensions_mut().insert(RequestId(id.clone()));
    // Condition keys aws:SourceIp and aws:SecureTransport come from the connection.
    req.extensions_mut().insert(SourceAddress(peer.ip()));
    req.extensions_mut().insert(SecureTransport(secure));
    // Where a front end that sees only the request leaves its audit record.
    let audit_slot = AuditSlot::default();
    req.extensions_mut().insert(audit_slot.clone());
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()));
    let path = req.uri().path().to_owned();
    let origin = req
        .headers()
        .get(http::header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_owned);
    let method = req.method().clone();
    let FrontEnds {
        s3,
        s3_refusals,
        cors,
        admin,
        query_api,
        kms_api,
        ec2_api,
        audit_api,
        access_api,
        residency_api,
        audit_logs,
        clock,
    } = &*front_ends;
    // Access approvals first: the operator's half is under the admin prefix.
    let protocol = if access_api::is_access_path(&path) {
        Protocol::Access
    } else if nuage_admin_api::is_admin_path(&path) {
        Protocol::Admin
    } else if audit_api::is_audit_path(&path) {
        Protocol::Audit
    } else if residency_api::is_residency_path(&path) {
        Protocol::Residency
    } else if nuage_ec2_api::Ec2Api::is_match(&method, req.uri(), req.headers()) {
        // Before IAM: the same query shape, told apart by the `ec2` scope.
        Protocol::Ec2
    } else if IamQueryApi::is_match(&method, req.uri(), req.headers()) {
        Protocol::IamQuery
    } else if KmsApi::is_match(&method, req.uri(), req.headers()) {
        Protocol::Kms
    } else {
        Protocol::S3
    };
    let mut response = if protocol == Protocol::Access {
        let connection = access_api::Connection {
            source: peer.ip(),
            secure,
            request_id: &id,
        };
        access_api
            .handle(req, &connection)
            .await
            .map(s3s::Body::from)
    } else if protocol == Protocol::Admin {
        admin.handle(req).await.map(s3s::Body::from)
    } else if protocol == Protocol::Audit {
        // Before s3s, which would take `_nuage` for a bucket.
        audit_api
            .handle(req, peer.ip(), secure)
            .await
            .map(s3s::Body::from)
    } else if protocol == Protocol::Residency {
        // Before s3s too, which would take `_nuage` for a bucket.
        residency_api
            .handle(req, peer.ip(), secure)
            .await
            .map(s3s::Body::from)
    } else if protocol == Protocol::IamQuery {
        // Before s3s, which verifies no signature scoped to `iam`.
        let context = RequestContext {
            request_id: id.clone(),
            source_ip: Some(peer.ip()),
            secure_transport: secure,
        };
        query_api.handle(req, &context).await.map(s3s::Body::from)
    } else if protocol == Protocol::Ec2 {
        let context = nuage_ec2_api::RequestContext {
            request_id: id.clone(),
            source_ip: Some(peer.ip()),
            secure_transport: secure,
        };
        match ec2_api {
            Some(ec2_api) => ec2_api
                .handle_detached(req, context)
                .await
                .map(s3s::Body::from),
            // Without `[compute]`, an EC2 client is told so in EC2's terms.
            None => nuage_ec2_api::Ec2Api::disabled_response(&id).map(s3s::Body::from),
        }
    } else if protocol == Protocol::Kms {
        // Before s3s too, which refuses the `kms` credential scope.
        let context = nuage_kms_api::RequestContext {
            request_id: id.clone(),
            source_ip: Some(peer.ip()),
            secure_transport: secure,
        };
        kms_api.handle(req, &context).await.map(s3s::Body::from)
    } else if method == http::Method::OPTIONS {
        let (status, headers, message) =
            cors.preflight(host.as_deref(), &path, req.headers()).await;
        let mut response = http::Response::new(s3s::Body::from(message.to_owned()));
        *response.status_mut() = status;
        response.headers_mut().extend(headers);
        response
    } else {
        let attempt = s3_refusals.attempt(&req);
        let mut response = s3.call(req.map(s3s::Body::from)).await?;
        // Refused by s3s before the authorizer described it (a signature
        // that does not verify, an expired presigned URL): a deny in the
        // tenant the access key names.
        s3_refusals.note(&audit_slot, attempt, &response).await;
        if let Some(origin) = origin
            && let Some(headers) = cors
                .actual_headers(host.as_deref(), &path, &method, &origin)
                .await
        {
            response.headers_mut().extend(headers);
        }
        response
    };
    let audit = response
        .extensions_mut()
        .remove::<RequestAudit>()
        .or_else(|| audit_slot.take());
    if let Some(audit) = audit {
        let facts = RequestFacts {
            time: now(clock.as_ref()),
            source: Some(peer.ip()),
            request_id: id.clone(),
            status: response.status().as_u16(),
        };
        if let Err(withheld) = record(audit_logs, audit, facts, protocol, &id).await {
            response = withheld;
        }
    }
    if response.status().is_client_error() || response.status().is_server_error() {
        add_request_id_to_error(&mut response, &id);
    }
    if let Ok(v) = http::HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-amz-request-id", v);
    }
    Ok(response)
}

/// The clock's time as a date (the epoch if the clock is out of range, which
/// a real clock never is).
fn now(clock: &dyn nuage_base::Clock) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(clock.now_unix_ns()))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// Appends a request's audit record to its tenant's log and waits until it is
/// durable. On failure, returns the response to send instead (fail closed):
/// an internal error in the terms of the front end that answered.
async fn record(
    logs: &AuditLogs,
    audit: RequestAudit,
    facts: RequestFacts,
    protocol: Protocol,
    request_id: &str,
) -> Result<(), http::Response<s3s::Body>> {
    let tenant = audit.tenant.clone();
    let withheld = match protocol {
        Protocol::IamQuery => IamQueryApi::audit_failure_response(&audit, request_id),
        Protocol::Ec2 => nuage_ec2_api::Ec2Api::audit_failure_response(request_id),
        _ => audit_failure_response(protocol),
    };
    // A caller of another tenant (a bucket policy granted it, or refused it)
    // is logged in both logs: the owner's sees who touched its data, the
    // caller's what its identities did. Both appends run at once.
    let caller_copy = caller_tenant(&audit)
        .filter(|caller| *caller != tenant)
        .map(|caller| {
            let mut copy = audit.clone();
            copy.tenant = caller;
            copy.into_entry(facts.clone())
        });
    let entry = audit.into_entry(facts);
    let (owner, caller) = tokio::join!(logs.append(&entry), async {
        match &caller_copy {
            Some(copy) => logs.append(copy).await.map(Some),
            None => Ok(None),
        }
    });
    match owner.and(caller) {
        Ok(_) => Ok(()),
        Err(error) => {
            tracing::error!(tenant, action = entry.action, %error, "audit append failed; response withheld");
            Err(withheld.map(s3s::Body::from))
        }
    }
}

/// The tenant of a signed caller, from its ARN (`arn:aws:iam::T:user/...`,
/// `arn:aws:sts::T:assumed-role/...`): the account field, twelve digits.
fn caller_tenant(audit: &RequestAudit) -> Option<String> {
    use nuage_audit::ActorKind;
    if !matches!(
        audit.actor.kind,
        ActorKind::TenantUser | ActorKind::RoleSession
    ) {
        return None;
    }
    let account = audit.actor.id.as_deref()?.split(':').nth(4)?;
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())).then(|| account.to_owned())
}

/// The internal error a front end other than IAM answers when its response
/// cannot be logged: each protocol's own code for "our fault".
fn audit_failure_response(protocol: Protocol) -> http::Response<bytes::Bytes> {
    const MESSAGE: &str = "The request could not be recorded in the tenant's audit log, so its \
        response is withheld. Its effect may have taken place: check before retrying.";
    let (content_type, body) = match protocol {
        Protocol::S3 | Protocol::IamQuery => (
            "application/xml",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code><Message>{MESSAGE}</Message></Error>"
            ),
        ),
        Protocol::Kms => (
            "application/x-amz-json-1.1",
            serde_json::json!({"__type": "KMSInternalException", "message": MESSAGE}).to_string(),
        ),
        Protocol::Admin => (
            "application/json",
            serde_json::json!({"error": {"code": "InternalError", "message": MESSAGE}}).to_string(),
        ),
        // `record` answers with the request id; this is its fallback.
        Protocol::Ec2 => return nuage_ec2_api::Ec2Api::audit_failure_response(""),
        Protocol::Audit => return audit_api::audit_failure_response(),
        Protocol::Access => return access_api::audit_failure_response(),
        Protocol::Residency => return residency_api::audit_failure_response(),
    };
    let mut response = http::Response::new(bytes::Bytes::from(body));
    *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

/// S3 error bodies name the request id, so a user's bug report can quote it;
/// the same id is in the `x-amz-request-id` header.
fn add_request_id_to_error(response: &mut http::Response<s3s::Body>, id: &str) {
    let Some(body) = response.body().bytes() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return;
    };
    // EC2 errors carry theirs as `<RequestID>`.
    if text.contains("<RequestId>") || text.contains("<RequestID>") {
        return;
    }
    if let Some(at) = text.rfind("</Error>") {
        let with_id = format!("{}<RequestId>{id}</RequestId>{}", &text[..at], &text[at..]);
        response.headers_mut().remove(http::header::CONTENT_LENGTH);
        *response.body_mut() = s3s::Body::from(with_id);
    }
}

/// Resolves on Ctrl-C or SIGTERM: every long-running `nuage` process
/// (server, storage node, compute host, witness, XKS proxy) stops on it.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
