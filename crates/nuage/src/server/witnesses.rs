//! Submitting signed checkpoints to the configured witnesses (`[audit]
//! witnesses`, C2SP tlog-witness) and keeping their cosignatures.
//!
//! Every checkpoint a log signs is submitted: those signed for a tenant's
//! `GET .../checkpoint` at once (the answer waits for them), and those the
//! logs sign on their own (the interval timer, before closing) in the
//! background, one at a time, from the registry's bounded announcement
//! queue ([`Witnesses::spawn_submitter`]); appends never wait for either.
//! Each answer's cosignature is verified with the witness's key, then kept
//! durably beside the log (`AuditLog::keep_cosignatures`), so a later
//! `GET .../checkpoint` of the same checkpoint is served with the kept
//! cosignatures and asks only the witnesses still missing from them.
//!
//! For each witness the server remembers, per log, the size the witness last
//! cosigned (starting from 0, learned from a 409 answer, after which it retries
//! once), and sends a consistency proof from that size. A witness that is down,
//! slow or refusing never blocks the log: the failure is logged, the checkpoint
//! is served with the cosignatures obtained, and the next checkpoint tries again.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use nuage_audit::witness::{
    ADD_CHECKPOINT_PATH, Cosignature, WitnessKey, add_checkpoint_body, attach_cosignatures,
    check_cosignature, merge_cosignatures,
};
use nuage_audit::{AuditLog, AuditLogs, SignedCheckpoint};
use nuage_base::limits::{WITNESS_REQUEST_S_MAX, WITNESS_RESPONSE_BYTES_MAX};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::WitnessConfig;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

struct Witness {
    url: String,
    key: WitnessKey,
    /// Origin → the size this witness last cosigned (as far as we know).
    known_sizes: Mutex<HashMap<String, u64>>,
}

/// The configured witnesses; cheap to clone.
#[derive(Clone)]
pub struct Witnesses {
    witnesses: Arc<Vec<Witness>>,
    http: Client<Connector, Full<Bytes>>,
}

/// What one submission got back.
enum Answer {
    Cosigned(String),
    Conflict(u64),
}

impl Witnesses {
    /// Witnesses from the (checked) configuration.
    ///
    /// # Errors
    /// A malformed witness key, or no TLS roots.
    pub fn new(configs: &[WitnessConfig]) -> anyhow::Result<Self> {
        let witnesses = configs
            .iter()
            .map(|config| {
                Ok(Witness {
                    url: config.url.trim_end_matches('/').to_string(),
                    key: WitnessKey::parse(&config.vkey)?,
                    known_sizes: Mutex::new(HashMap::new()),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut connector = HttpConnector::new();
        connector.enforce_http(false);
        connector.set_connect_timeout(Some(Duration::from_secs(WITNESS_REQUEST_S_MAX)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        Ok(Self {
            witnesses: Arc::new(witnesses),
            http: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Whether any witness is configured.
    pub fn is_empty(&self) -> bool {
        self.witnesses.is_empty()
    }

    /// `signed` with its cosignatures: those kept for it, plus those of the
    /// witnesses still missing from them, asked at once now (their verified
    /// answers are kept too). No witness is asked when every configured one
    /// has cosigned it already.
    pub async fn cosign(&self, log: &AuditLog, signed: &SignedCheckpoint) -> Vec<u8> {
        let kept = log.cosigned(signed).await.unwrap_or_else(|error| {
            tracing::warn!(origin = log.origin(), %error, "cannot read the kept cosignatures");
            None
        });
        let have = kept.unwrap_or_else(|| signed.note.clone());
        let missing = self.witnesses.iter().filter(|witness| {
            !matches!(
                check_cosignature(&have, &witness.key),
                Ok(Cosignature::Valid { .. })
            )
        });
        let submissions = missing.map(|witness| self.submit(witness, log, signed));
        let lines: Vec<String> = futures::future::join_all(submissions)
            .await
            .into_iter()
            .flatten()
            .collect();
        if lines.is_empty() {
            return have;
        }
        match log.keep_cosignatures(signed, &lines).await {
            Ok(note) => note,
            Err(error) => {
                // Served all the same; the next request asks again.
                tracing::error!(origin = log.origin(), %error, "cannot keep the cosignatures");
                merge_cosignatures(&have, &lines)
            }
        }
    }

    /// Submits, in the background, every checkpoint the logs announce (the
    /// ones they sign on their own), one at a time, so each is witnessed and
    /// its cosignatures kept without a tenant asking. None without
    /// witnesses, or when the announcements were already taken. The task
    /// runs until aborted.
    pub fn spawn_submitter(&self, logs: &AuditLogs) -> Option<tokio::task::JoinHandle<()>> {
        if self.is_empty() {
            return None;
        }
        let mut announcements = logs.take_checkpoint_announcements()?;
        let witnesses = self.clone();
        let logs = logs.clone();
        Some(tokio::spawn(async move {
            while let Some(signed) = announcements.recv().await {
                let Some(tenant) = logs.tenant_of(&signed.origin) else {
                    continue;
                };
                let log = match logs.log(&tenant).await {
                    Ok(log) => log,
                    Err(error) => {
                        tracing::warn!(tenant, %error, "checkpoint not submitted to the witnesses; the next one will be");
                        continue;
                    }
                };
                // A newer checkpoint was signed meanwhile: its own notice
                // follows, and it extends this one.
                match log.latest_checkpoint().await {
                    Ok(Some(latest)) if latest != signed.note => continue,
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(tenant, %error, "checkpoint not submitted to the witnesses; the next one will be");
                        continue;
                    }
                }
                witnesses.cosign(&log, &signed).await;
            }
        }))
    }

    /// One witness: submit, learn its size from a 409 and retry once.
    async fn submit(
        &self,
        witness: &Witness,
        log: &AuditLog,
        signed: &SignedCheckpoint,
    ) -> Option<String> {
        let origin = log.origin();
        let mut old = witness
            .known_sizes
            .lock()
            .ok()
            .and_then(|sizes| sizes.get(origin).copied())
            .unwrap_or(0);
        for attempt in 0..2 {
            let result = tokio::time::timeout(
                Duration::from_secs(WITNESS_REQUEST_S_MAX),
                self.post(witness, log, signed, old),
            )
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {WITNESS_REQUEST_S_MAX}s")));
            match result {
                Ok(Answer::Cosigned(line)) => {
                    let cosigned = attach_cosignatures(&signed.note, std::slice::from_ref(&line));
                    return match check_cosignature(&cosigned, &witness.key) {
                        Ok(Cosignature::Valid { .. }) => {
                            if let Ok(mut sizes) = witness.known_sizes.lock() {
                                sizes.insert(origin.to_string(), signed.size);
                            }
                            Some(line)
                        }
                        other => {
                            tracing::warn!(
                                witness = witness.url,
                                origin,
                                ?other,
                                "witness answered without a valid cosignature"
                            );
                            None
                        }
                    };
                }
                Ok(Answer::Conflict(known)) if attempt == 0 && known <= signed.size => {
                    old = known;
                }
                Ok(Answer::Conflict(known)) => {
                    tracing::error!(
                        witness = witness.url,
                        origin,
                        known,
                        size = signed.size,
                        "the witness refuses this log's checkpoint: it has cosigned size {known}"
                    );
                    return None;
                }
                Err(error) => {
                    tracing::warn!(witness = witness.url, origin, %error, "witness did not cosign the checkpoint; next checkpoint retries");
                    return None;
                }
            }
        }
        None
    }

    async fn post(
        &self,
        witness: &Witness,
        log: &AuditLog,
        signed: &SignedCheckpoint,
        old: u64,
    ) -> Result<Answer, String> {
        let proof = if old == 0 || old >= signed.size {
            Vec::new()
        } else {
            log.consistency_proof(old, signed.size)
                .await
                .map_err(|e| format!("consistency proof from {old}: {e}"))?
                .hashes
        };
        let body = add_checkpoint_body(old, &proof, &signed.note);
        let request = http::Request::post(format!("{}/{ADD_CHECKPOINT_PATH}", witness.url))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| format!("cannot reach the witness: {e}"))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), WITNESS_RESPONSE_BYTES_MAX)
            .collect()
            .await
            .map_err(|e| format!("cannot read the answer: {e}"))?
            .to_bytes();
        let text = String::from_utf8_lossy(&body);
        match status.as_u16() {
            200 => Ok(Answer::Cosigned(text.into_owned())),
            409 => text
                .trim()
                .parse()
                .map(Answer::Conflict)
                .map_err(|_| "409 without a size".to_string()),
            code => Err(format!("HTTP {code}: {}", text.trim())),
        }
    }
}
