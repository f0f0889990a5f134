//! Where an instance runs: among the compute hosts, only those whose site
//! the tenant's residency policy allows (and the requested zone, if any),
//! and only those whose site every policy of the image's buckets allows,
//! since the image's bytes are copied to the host. Among those with room,
//! hosts that already hold the image come first, then the most free
//! capacity; a refusal confined to one host (no room after all, its
//! instance limit, its image cache full, busy, unreachable before the run
//! was sent, or a run that never reached it: `NotSent`) moves on to the
//! next; when none can take it the request fails with
//! `InsufficientInstanceCapacity` (`Unavailable` when no host answered at
//! all), never on a host outside the policies. A host that
//! lacks the image gets it pushed, after the gateway has checked that the
//! objects still hash to the registered image.
//!
//! The instance's record (its host, a `pending` last known state) is
//! written before the run is sent, with an id the gateway chose: a run
//! whose answer is lost leaves an instance its tenant owns and sees, and a
//! retry reaches the same instance, never a second one.
//!
//! Also here: each request asks each host for its instances at most once,
//! all hosts at once, and a host found unreachable is not asked again in
//! the same request ([`HostsSeen`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use nuage_compute::{
    HostError, HostErrorKind, HostStatus, ImageSource, InstanceRecord, InstanceState, InstanceType,
    RunRequest,
};
use nuage_placement::ResidencyPolicy;

use super::{Call, random_hex17};
use crate::ScheduledHost;
use crate::error::{Ec2Error, Ec2Result};
use crate::limits::{LOST_LAUNCH_GRACE_S, STAGING_WAIT, STAGINGS_IN_FLIGHT_MAX};
use crate::store::{INSTANCES, ImageRecord, InstanceOwner};

/// An image's objects read again for a push, in a staging directory of the
/// request's own (removed by [`StagedImage::remove`]), holding one of the
/// gateway's staging slots while it exists.
pub(super) struct StagedImage {
    dir: PathBuf,
    source: ImageSource,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl StagedImage {
    pub(super) fn remove(self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove an image staging directory");
        }
    }
}

/// (image content id, host id).
type PushKey = (String, String);

/// One push of an image to a host at a time, gateway-wide: keyed by
/// [`PushKey`], an entry lives while someone pushes or waits.
#[derive(Clone, Default)]
pub(crate) struct PushLocks(Arc<std::sync::Mutex<HashMap<PushKey, Arc<tokio::sync::Mutex<()>>>>>);

/// Holds a [`PushLocks`] entry; the entry goes when nobody holds or waits.
pub(super) struct PushGuard {
    locks: PushLocks,
    key: PushKey,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl PushLocks {
    pub(super) async fn lock(&self, image: &str, host: &str) -> PushGuard {
        let key = (image.to_owned(), host.to_owned());
        let entry = match self.0.lock() {
            Ok(mut map) => Arc::clone(map.entry(key.clone()).or_default()),
            Err(poisoned) => Arc::clone(poisoned.into_inner().entry(key.clone()).or_default()),
        };
        let guard = entry.lock_owned().await;
        PushGuard {
            locks: self.clone(),
            key,
            guard: Some(guard),
        }
    }

    /// References to a key's entry (the map's, the holder's, each waiter's).
    #[cfg(test)]
    fn references(&self, image: &str, host: &str) -> usize {
        self.0
            .lock()
            .ok()
            .and_then(|m| {
                m.get(&(image.to_owned(), host.to_owned()))
                    .map(Arc::strong_count)
            })
            .unwrap_or(0)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or(0)
    }
}

impl Drop for PushGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        let Ok(mut map) = self.locks.0.lock() else {
            return;
        };
        // Only the map's own reference left: no one pushes or waits.
        if map
            .get(&self.key)
            .is_some_and(|entry| Arc::strong_count(entry) == 1)
        {
            map.remove(&self.key);
        }
    }
}

/// What one request learned of the hosts: each host's instances, asked
/// once (all hosts at once), and which hosts did not answer, so that a hung
/// host costs a request one deadline, not one per instance.
#[derive(Default)]
pub(crate) struct HostsSeen {
    lists: tokio::sync::Mutex<BTreeMap<String, Result<Vec<InstanceRecord>, HostError>>>,
    unreachable: std::sync::Mutex<BTreeSet<String>>,
}

impl HostsSeen {
    fn is_unreachable(&self, host: &str) -> bool {
        self.unreachable.lock().is_ok_and(|s| s.contains(host))
    }

    fn mark(&self, host: &str, error: &HostError) {
        if matches!(
            error.kind,
            HostErrorKind::Unreachable | HostErrorKind::NotSent
        ) && let Ok(mut set) = self.unreachable.lock()
        {
            set.insert(host.to_owned());
        }
    }
}

/// An instance as its host (or, failing that, this gateway) knows it.
pub(super) enum Seen {
    /// The host's record.
    Found(InstanceRecord),
    /// A launch not yet confirmed by its host, which does not know it
    /// (yet): the run is on its way or its answer was lost; the record
    /// written before the run, still within the grace.
    LostLaunch(InstanceRecord),
    /// The host answered and does not know it.
    Gone,
    /// The host cannot be asked (unreachable, or not configured): why.
    Unknown(String),
}

/// The buckets an image's objects are in (`bucket/key` each).
pub(super) fn buckets_of<'a>(locations: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut buckets: Vec<String> = Vec::new();
    for location in locations {
        if let Some((bucket, _)) = location.split_once('/')
            && !buckets.iter().any(|b| b == bucket)
        {
            buckets.push(bucket.to_owned());
        }
    }
    buckets
}

/// Reachable hosts first, the most free vCPUs (then memory) first; the
/// sort is stable, so ties keep the hosts' order (by host id: the
/// topology's `[[compute_host]]`s are kept in a map by id).
fn rank<T>(hosts: &mut [(T, Result<HostStatus, HostError>)]) {
    hosts.sort_by_key(|(_, status)| match status {
        Ok(s) => {
            let (vcpus, memory) = s.free();
            (0, std::cmp::Reverse(vcpus), std::cmp::Reverse(memory))
        }
        Err(_) => (1, std::cmp::Reverse(0), std::cmp::Reverse(0)),
    });
}

/// Among hosts with room: those that hold the image first (no push), then
/// the most free vCPUs and memory; stable, as [`rank`].
fn prefer<T>(hosts: &mut [(T, (u32, u64), bool)]) {
    hosts.sort_by_key(|(_, (vcpus, memory), held)| {
        (
            !*held,
            std::cmp::Reverse(*vcpus),
            std::cmp::Reverse(*memory),
        )
    });
}

/// The host an instance record names: its `host`, or, for records from
/// before several hosts (no `host`), the local host only. `hosts` gives
/// each host's id and whether it is the local one.
fn host_index<'a>(
    hosts: impl IntoIterator<Item = (&'a str, bool)>,
    named: Option<&str>,
) -> Option<usize> {
    hosts.into_iter().position(|(id, local)| match named {
        Some(named) => id == named,
        None => local,
    })
}

/// Host refusals confined to that host: the next allowed host may take it.
fn moves_on(kind: HostErrorKind) -> bool {
    matches!(
        kind,
        HostErrorKind::InsufficientInstanceCapacity
            | HostErrorKind::InstanceLimitExceeded
            | HostErrorKind::CacheFull
            | HostErrorKind::Busy
            | HostErrorKind::Unreachable
            | HostErrorKind::NotSent
    )
}

fn residency_refusal(message: String) -> Ec2Error {
    Ec2Error::bad_request("Unsupported", message)
}

fn unix_s(call: &Call<'_>) -> i64 {
    call.api.clock.now_unix_ns().div_euclid(1_000_000_000)
}

impl Call<'_> {
    async fn tenant_policy(&self) -> Ec2Result<Option<ResidencyPolicy>> {
        let tenant = self
            .api
            .iam
            .tenant(self.tenant())
            .await
            .map_err(Ec2Error::internal)?;
        tenant
            .residency_policy
            .as_deref()
            .map(|text| ResidencyPolicy::from_json(text).map_err(Ec2Error::internal))
            .transpose()
    }

    /// The hosts the tenant's residency policy allows, in `zone` when one
    /// is asked for. None allowed: `Unsupported`, naming the policy and
    /// every host's site and why.
    pub(super) async fn tenant_hosts(&self, zone: Option<&str>) -> Ec2Result<Vec<ScheduledHost>> {
        let hosts = self.api.hosts.as_slice();
        let policy = self.tenant_policy().await?;
        let mut allowed = Vec::new();
        let mut refused = Vec::new();
        for host in hosts {
            match policy.as_ref().map(|p| p.site_verdict(&host.site)) {
                Some(Err(why)) => refused.push(format!(
                    "host {} (site {}, {}): {why}",
                    host.id, host.site.id, host.site.country
                )),
                _ => allowed.push(host.clone()),
            }
        }
        if allowed.is_empty() {
            let text = policy.map(|p| p.places_text()).unwrap_or_default();
            return Err(residency_refusal(format!(
                "The tenant's residency policy ({text}) allows none of this region's compute \
                 hosts: {}. No instance was started anywhere.",
                refused.join("; ")
            )));
        }
        if let Some(zone) = zone {
            if !hosts.iter().any(|h| h.availability_zone == zone) {
                let zones: BTreeSet<&str> =
                    hosts.iter().map(|h| h.availability_zone.as_str()).collect();
                return Err(Ec2Error::invalid_parameter(format!(
                    "Invalid availability zone: [{}]; this server offers {}",
                    nuage_audit::client_text(zone),
                    zones.into_iter().collect::<Vec<_>>().join(", ")
                )));
            }
            allowed.retain(|h| h.availability_zone == zone);
            if allowed.is_empty() {
                return Err(residency_refusal(format!(
                    "The tenant's residency policy does not allow the compute hosts of zone \
                     {zone}: {}. No instance was started anywhere.",
                    refused.join("; ")
                )));
            }
        }
        Ok(allowed)
    }

    /// Refuses (`Unsupported`) when the tenant's residency policy, as it is
    /// now, does not allow the site of a host an instance is on: a start
    /// or reboot runs the instance there again, and a policy narrowed
    /// since its launch must hold. Checked for every instance before any
    /// is acted on.
    pub(super) async fn check_still_allowed(
        &self,
        instances: &[(&str, &ScheduledHost)],
    ) -> Ec2Result<()> {
        let Some(policy) = self.tenant_policy().await? else {
            return Ok(());
        };
        for (id, host) in instances {
            if let Err(why) = policy.site_verdict(&host.site) {
                return Err(residency_refusal(format!(
                    "Instance {id} is on compute host {} (site {}, {}), which the tenant's \
                     residency policy ({}) no longer allows: {why}. It was not started; \
                     terminate it and run a new instance where the policy allows.",
                    host.id,
                    host.site.id,
                    host.site.country,
                    policy.places_text()
                )));
            }
        }
        Ok(())
    }

    /// Of `hosts`, those every residency policy of `buckets` allows: an
    /// image's bytes never go to a host outside their bucket's residency.
    /// The caller's `s3:GetObject` on the objects is decided before this
    /// is asked, so a bucket's policy is never told to whom may not read it.
    pub(super) async fn image_hosts(
        &self,
        mut hosts: Vec<ScheduledHost>,
        buckets: &[String],
    ) -> Ec2Result<Vec<ScheduledHost>> {
        for bucket in buckets {
            let text = self
                .api
                .objects
                .residency_policy(bucket)
                .await
                .map_err(|e| Ec2Error::internal(format!("residency of bucket {bucket}: {e}")))?;
            let Some(text) = text else { continue };
            let policy = ResidencyPolicy::from_json(&text).map_err(Ec2Error::internal)?;
            let before: Vec<String> = hosts
                .iter()
                .map(|h| format!("{} (site {}, {})", h.id, h.site.id, h.site.country))
                .collect();
            hosts.retain(|h| policy.site_verdict(&h.site).is_ok());
            if hosts.is_empty() {
                return Err(residency_refusal(format!(
                    "The image's objects are in bucket {bucket}, whose residency policy ({}) \
                     allows none of the compute hosts the tenant's residency policy allows \
                     ({}): its bytes may not be copied there. No instance was started anywhere.",
                    policy.places_text(),
                    before.join(", ")
                )));
            }
        }
        Ok(hosts)
    }

    /// `hosts` with their status, asked at once: reachable ones first, the
    /// most free vCPUs (then memory) first; ties keep the hosts' (id) order.
    pub(super) async fn by_free_capacity(
        &self,
        hosts: &[ScheduledHost],
    ) -> Vec<(ScheduledHost, Result<HostStatus, HostError>)> {
        let statuses = futures::future::join_all(hosts.iter().map(|h| async {
            let status = h.host.status().await;
            if let Err(e) = &status {
                self.seen.mark(&h.id, e);
            }
            status
        }))
        .await;
        let mut ranked: Vec<(ScheduledHost, Result<HostStatus, HostError>)> =
            hosts.iter().cloned().zip(statuses).collect();
        rank(&mut ranked);
        ranked
    }

    /// Runs one instance, `owner.id`, on the best of `hosts` that takes it
    /// (see the module's comment), its record written first. `lost` is set
    /// when the run was sent and its answer did not come: the record stays.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn place(
        &self,
        hosts: &[ScheduledHost],
        request: &RunRequest,
        instance_type: &InstanceType,
        image: &ImageRecord,
        staged: &mut Option<StagedImage>,
        owner: &InstanceOwner,
        lost: &mut bool,
    ) -> Ec2Result<(InstanceRecord, ScheduledHost, InstanceOwner)> {
        let mut tried = Vec::new();
        let mut answered = false;
        let mut with_room = Vec::new();
        for (host, status) in self.by_free_capacity(hosts).await {
            match status {
                Err(e) => {
                    tracing::warn!(host = %host.id, error = %e, "compute host unreachable; not scheduled");
                    tried.push(format!("{} is unreachable", host.id));
                }
                Ok(status) => {
                    answered = true;
                    let (vcpus, memory_mib) = status.free();
                    if vcpus < instance_type.vcpus || memory_mib < instance_type.memory_mib {
                        tried.push(format!(
                            "{} has {vcpus} vCPUs and {memory_mib} MiB free",
                            host.id
                        ));
                    } else {
                        with_room.push((host, (vcpus, memory_mib)));
                    }
                }
            }
        }
        // Which of them hold the image already, asked at once.
        let held = futures::future::join_all(
            with_room
                .iter()
                .map(|(host, _)| host.host.has_image(&image.host_image)),
        )
        .await;
        let mut candidates = Vec::with_capacity(with_room.len());
        for ((host, free), held) in with_room.into_iter().zip(held) {
            match held {
                Ok(held) => candidates.push((host, free, held)),
                Err(e) if matches!(e.kind, HostErrorKind::Unreachable | HostErrorKind::NotSent) => {
                    self.seen.mark(&host.id, &e);
                    tracing::warn!(host = %host.id, error = %e, "compute host unreachable; not scheduled");
                    tried.push(format!("{} is unreachable", host.id));
                }
                // The push will say what is wrong, if anything.
                Err(_) => candidates.push((host, free, false)),
            }
        }
        prefer(&mut candidates);
        for (host, _, held) in candidates {
            if !held {
                match self.ensure_image(&host, image, staged).await {
                    Ok(()) => {}
                    Err(Push::Next(e)) => {
                        tracing::warn!(host = %host.id, error = %e, "the image could not be put on a compute host; trying the next");
                        tried.push(format!("{}: {}", host.id, e.message));
                        continue;
                    }
                    Err(Push::Failed(e)) => return Err(e),
                }
            }
            // The record first: whatever happens to the answer, the tenant
            // owns what the host may start.
            let mut owner = owner.clone();
            owner.host = Some(host.id.clone());
            owner.last_known =
                serde_json::to_value(pending_record(&owner.id, instance_type, image, &host)).ok();
            owner.launch_sent_unix_s = Some(unix_s(self));
            self.api
                .records
                .put(INSTANCES, self.tenant(), &owner.id, &owner)
                .await?;
            let mut run = request.clone();
            run.instance_id = Some(owner.id.clone());
            run.availability_zone = Some(host.availability_zone.clone());
            match host.host.run(run).await {
                Ok(mut record) => {
                    record.availability_zone.clone_from(&host.availability_zone);
                    owner.last_known = serde_json::to_value(&record).ok();
                    if let Err(e) = self
                        .api
                        .records
                        .put(INSTANCES, self.tenant(), &owner.id, &owner)
                        .await
                    {
                        // The record exists (pending); describe asks the host.
                        tracing::warn!(instance = %owner.id, error = %e.message, "cannot record a launched instance's state");
                    }
                    return Ok((record, host, owner));
                }
                Err(e) if e.kind == HostErrorKind::Unreachable => {
                    // Sent, and no answer: the host may have started it. The
                    // record stays; it is not tried elsewhere.
                    self.seen.mark(&host.id, &e);
                    *lost = true;
                    return Err(Ec2Error::launch_outcome_unknown(&owner.id, e));
                }
                Err(e) => {
                    // A definite refusal, or the run never reached the host
                    // (`NotSent`): nothing runs under this id there.
                    if e.kind == HostErrorKind::NotSent {
                        self.seen.mark(&host.id, &e);
                    }
                    self.api
                        .records
                        .delete(INSTANCES, self.tenant(), &owner.id)
                        .await?;
                    if moves_on(e.kind) {
                        tried.push(format!("{}: {}", host.id, e.message));
                        continue;
                    }
                    return Err(Ec2Error::from_host(e));
                }
            }
        }
        if !answered {
            return Err(Ec2Error::unavailable(format!(
                "none of the compute hosts the residency policies allow answered: {}",
                tried.join("; ")
            )));
        }
        Err(Ec2Error::insufficient_capacity(format!(
            "There is not enough capacity for an instance of type {} on the compute hosts the \
             residency policies allow ({}). No instance was started on any other host.",
            instance_type.name,
            tried.join("; ")
        )))
    }

    /// Pushes the image to `host` unless it has it, from the recorded
    /// objects read again (once per request) and checked against the
    /// registered content id before any byte leaves. One push of an image
    /// to a host at a time: a concurrent one waits, then finds it there.
    async fn ensure_image(
        &self,
        host: &ScheduledHost,
        image: &ImageRecord,
        staged: &mut Option<StagedImage>,
    ) -> Result<(), Push> {
        let _push = self.api.pushes.lock(&image.host_image, &host.id).await;
        if host
            .host
            .has_image(&image.host_image)
            .await
            .map_err(Push::from)?
        {
            return Ok(());
        }
        if staged.is_none() {
            *staged = Some(self.stage_image(image).await.map_err(Push::Failed)?);
        }
        let Some(staged) = staged.as_ref() else {
            return Err(Push::Failed(Ec2Error::internal("no staged image")));
        };
        tracing::info!(host = %host.id, image = %image.id, "pushing an image to a compute host");
        match host
            .host
            .register_image(&staged.source, Some(&image.host_image))
            .await
        {
            Ok(_) => Ok(()),
            // The host hashed other bytes than the registered image.
            Err(e) if e.kind == HostErrorKind::InvalidImage => {
                Err(Push::Failed(changed_image(image, &e.message)))
            }
            Err(e) => Err(Push::from(e)),
        }
    }

    /// A slot among the gateway's [`STAGINGS_IN_FLIGHT_MAX`] stagings,
    /// waited for at most [`STAGING_WAIT`].
    pub(super) async fn staging_slot(&self) -> Ec2Result<tokio::sync::OwnedSemaphorePermit> {
        match tokio::time::timeout(STAGING_WAIT, Arc::clone(&self.api.stagings).acquire_owned())
            .await
        {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(e)) => Err(Ec2Error::internal(e)),
            Err(_) => Err(Ec2Error::new(
                http::StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                format!(
                    "This server is copying as many images as it may at once \
                     ({STAGINGS_IN_FLIGHT_MAX}); try again later"
                ),
            )),
        }
    }

    /// Reads the image's objects again as the caller and checks that they
    /// hash to the registered image.
    async fn stage_image(&self, image: &ImageRecord) -> Ec2Result<StagedImage> {
        let location = |name: &str, value: &str| super::object_location(name, value);
        let disk = location("ImageLocation", &image.location)?;
        let kernel = image
            .kernel
            .as_deref()
            .map(|k| location("KernelId", k))
            .transpose()?;
        let ramdisk = image
            .ramdisk
            .as_deref()
            .map(|r| location("RamdiskId", r))
            .transpose()?;
        let slot = self.staging_slot().await?;
        let dir = self
            .api
            .settings
            .staging_dir
            .join(format!("push-{}", random_hex17()));
        std::fs::create_dir_all(&dir).map_err(Ec2Error::internal)?;
        let staged = async {
            let source = self
                .stage(&dir, &disk, kernel.as_ref(), ramdisk.as_ref())
                .await?;
            let hashed = source.clone();
            let id = tokio::task::spawn_blocking(move || nuage_compute::image_content_id(&hashed))
                .await
                .map_err(Ec2Error::internal)?
                .map_err(Ec2Error::internal)?;
            if id != image.host_image {
                return Err(changed_image(image, "their content hash differs"));
            }
            Ok(source)
        }
        .await;
        match staged {
            Ok(source) => Ok(StagedImage {
                dir,
                source,
                _slot: slot,
            }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// The host an instance's record names (see [`host_index`]).
    pub(super) fn host_of(&self, owner: &InstanceOwner) -> Option<&ScheduledHost> {
        let hosts = self.api.hosts.as_slice();
        host_index(
            hosts.iter().map(|h| (h.id.as_str(), h.local)),
            owner.host.as_deref(),
        )
        .and_then(|i| hosts.get(i))
    }

    /// Asks each host of `owners` that this request has not asked yet for
    /// its instances, all at once.
    async fn list_hosts(&self, owners: &[&InstanceOwner]) {
        let mut lists = self.seen.lists.lock().await;
        let mut wanted: Vec<&ScheduledHost> = Vec::new();
        for owner in owners {
            if let Some(host) = self.host_of(owner)
                && !lists.contains_key(&host.id)
                && !wanted.iter().any(|h| h.id == host.id)
            {
                wanted.push(host);
            }
        }
        let answers = futures::future::join_all(wanted.iter().map(|h| async {
            if self.seen.is_unreachable(&h.id) {
                return Err(HostError::unreachable(
                    "did not answer earlier in this request",
                ));
            }
            h.host.list().await
        }))
        .await;
        for (host, answer) in wanted.into_iter().zip(answers) {
            if let Err(e) = &answer {
                self.seen.mark(&host.id, e);
                tracing::warn!(host = %host.id, error = %e, "compute host unreachable; describing last known states");
            }
            lists.insert(host.id.clone(), answer);
        }
    }

    /// Each of `owners` as its host knows it (hosts asked at once, each
    /// once per request).
    pub(super) async fn seen_all(&self, owners: &[&InstanceOwner]) -> Vec<Seen> {
        self.list_hosts(owners).await;
        let lists = self.seen.lists.lock().await;
        let now = unix_s(self);
        owners
            .iter()
            .map(|owner| {
                let Some(host) = self.host_of(owner) else {
                    return Seen::Unknown(match &owner.host {
                        Some(id) => format!("the compute host {id} is no longer configured"),
                        None => "the instance is on the compute host this server ran itself \
                                 before it scheduled onto the topology's hosts"
                            .to_owned(),
                    });
                };
                match lists.get(&host.id) {
                    Some(Ok(records)) => match records.iter().find(|r| r.id == owner.id) {
                        Some(record) => {
                            let mut record = record.clone();
                            record.availability_zone.clone_from(&host.availability_zone);
                            Seen::Found(record)
                        }
                        None => match lost_launch(owner, now) {
                            Some(record) => Seen::LostLaunch(record),
                            None => Seen::Gone,
                        },
                    },
                    Some(Err(_)) | None => {
                        Seen::Unknown(format!("the compute host {} is unreachable", host.id))
                    }
                }
            })
            .collect()
    }

    /// Calls a host unless it did not answer earlier in this request.
    pub(super) async fn on_host<T, F>(&self, host: &ScheduledHost, call: F) -> Result<T, HostError>
    where
        F: std::future::Future<Output = Result<T, HostError>>,
    {
        if self.seen.is_unreachable(&host.id) {
            return Err(HostError::unreachable(format!(
                "compute host {} did not answer earlier in this request",
                host.id
            )));
        }
        let answer = call.await;
        if let Err(e) = &answer {
            self.seen.mark(&host.id, e);
        }
        answer
    }

    /// Remembers the host's record of an instance in its ownership record,
    /// for describing it while its host is unreachable.
    pub(super) async fn remember(&self, owner: &InstanceOwner, record: &InstanceRecord) {
        let mut owner = owner.clone();
        owner.last_known = serde_json::to_value(record).ok();
        if let Err(e) = self
            .api
            .records
            .put(INSTANCES, self.tenant(), &owner.id, &owner)
            .await
        {
            tracing::warn!(instance = %owner.id, error = %e, "cannot record an instance's last known state");
        }
    }
}

/// The record an instance has before its host answers the run: `pending`.
fn pending_record(
    id: &str,
    instance_type: &InstanceType,
    image: &ImageRecord,
    host: &ScheduledHost,
) -> InstanceRecord {
    let now = super::now();
    InstanceRecord {
        id: id.to_owned(),
        instance_type: instance_type.name.to_owned(),
        vcpus: instance_type.vcpus,
        memory_mib: instance_type.memory_mib,
        image_id: image.host_image.clone(),
        hostname: id.to_owned(),
        availability_zone: host.availability_zone.clone(),
        mac: String::new(),
        state: InstanceState::Pending,
        state_reason: None,
        launch_time: now.clone(),
        state_changed_at: now,
        pid: None,
        launches: 0,
        resets: 0,
        private_ip: None,
        ssh_forward: None,
        last_reboot: None,
    }
}

/// The record to show for an instance its host does not know, when its
/// run was sent less than [`LOST_LAUNCH_GRACE_S`] ago: the run may still be
/// on its way (or its request still running), or its answer was lost.
/// After that, a host that does not know it never started it.
fn lost_launch(owner: &InstanceOwner, now_unix_s: i64) -> Option<InstanceRecord> {
    let sent = owner.launch_sent_unix_s?;
    if now_unix_s.saturating_sub(sent) > LOST_LAUNCH_GRACE_S {
        return None;
    }
    let mut record: InstanceRecord = serde_json::from_value(owner.last_known.clone()?).ok()?;
    if record.state != InstanceState::Pending {
        return None;
    }
    record.state_reason = Some(
        "Server.InternalError: this instance's launch is not yet confirmed by its compute host"
            .to_owned(),
    );
    Some(record)
}

fn changed_image(image: &ImageRecord, detail: &str) -> Ec2Error {
    Ec2Error::bad_request(
        "InvalidAMIID.Unavailable",
        format!(
            "The objects of image {} (s3://{}) changed since it was registered ({detail}): \
             their content no longer matches the registered image, so it is not copied to \
             another host. Register the objects again as a new image.",
            image.id, image.location
        ),
    )
}

/// Why an image could not be put on a host.
enum Push {
    /// A problem of that host (unreachable, busy, cache full): try another.
    Next(HostError),
    /// Anything else ends the request.
    Failed(Ec2Error),
}

impl From<HostError> for Push {
    fn from(e: HostError) -> Self {
        if moves_on(e.kind) {
            Self::Next(e)
        } else {
            Self::Failed(Ec2Error::from_host(e))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn status(vcpus: u32, used_vcpus: u32, memory_mib: u64, used_memory_mib: u64) -> HostStatus {
        HostStatus {
            vcpus,
            memory_mib,
            used_vcpus,
            used_memory_mib,
            availability_zone: String::new(),
            accelerator: "tcg".into(),
        }
    }

    #[test]
    fn the_most_free_reachable_host_comes_first() {
        let down = HostError::unreachable("down");
        let mut hosts = vec![
            ("full", Ok(status(2, 2, 1024, 1024))),
            ("down", Err(down)),
            ("roomy", Ok(status(8, 2, 4096, 0))),
            ("some", Ok(status(4, 2, 4096, 0))),
            ("some-less-memory", Ok(status(4, 2, 2048, 0))),
            ("some-too", Ok(status(4, 2, 4096, 0))),
        ];
        rank(&mut hosts);
        let order: Vec<&str> = hosts.iter().map(|(h, _)| *h).collect();
        assert_eq!(
            order,
            [
                "roomy",
                "some",
                "some-too",
                "some-less-memory",
                "full",
                "down"
            ]
        );
    }

    #[test]
    fn hosts_holding_the_image_come_first_then_the_most_free() {
        let mut hosts = vec![
            ("roomy", (8, 4096), false),
            ("held-small", (1, 256), true),
            ("held-big", (4, 1024), true),
            ("some", (4, 4096), false),
        ];
        prefer(&mut hosts);
        let order: Vec<&str> = hosts.iter().map(|(h, _, _)| *h).collect();
        assert_eq!(order, ["held-big", "held-small", "roomy", "some"]);
    }

    #[test]
    fn records_without_a_host_are_the_local_hosts_only() {
        let topology = [("de-1", false), ("fr-1", false)];
        assert_eq!(host_index(topology, Some("fr-1")), Some(1));
        // Before the fix they went to the first host, whose "no such
        // instance" then deleted them.
        assert_eq!(host_index(topology, None), None);
        assert_eq!(host_index(topology, Some("gone")), None);
        let local = [("local", true)];
        assert_eq!(host_index(local, None), Some(0));
    }

    #[test]
    fn host_problems_move_on_and_tenant_problems_do_not() {
        for kind in [
            HostErrorKind::InsufficientInstanceCapacity,
            HostErrorKind::InstanceLimitExceeded,
            HostErrorKind::CacheFull,
            HostErrorKind::Busy,
            HostErrorKind::Unreachable,
            HostErrorKind::NotSent,
        ] {
            assert!(moves_on(kind), "{kind:?}");
        }
        for kind in [
            HostErrorKind::InvalidImage,
            HostErrorKind::InvalidParameter,
            HostErrorKind::Internal,
            HostErrorKind::ImageNotFound,
        ] {
            assert!(!moves_on(kind), "{kind:?}");
        }
    }

    #[test]
    fn a_lost_launch_shows_pending_only_within_its_grace() {
        let record = InstanceRecord {
            id: "i-0123456789abcdef0".into(),
            instance_type: "n1.nano".into(),
            vcpus: 1,
            memory_mib: 256,
            image_id: "ab".into(),
            hostname: "h".into(),
            availability_zone: "z".into(),
            mac: String::new(),
            state: InstanceState::Pending,
            state_reason: None,
            launch_time: String::new(),
            state_changed_at: String::new(),
            pid: None,
            launches: 0,
            resets: 0,
            private_ip: None,
            ssh_forward: None,
            last_reboot: None,
        };
        let owner = InstanceOwner {
            id: record.id.clone(),
            image_id: "ami-1".into(),
            key_name: None,
            reservation_id: "r-1".into(),
            launch_index: 0,
            host: Some("de-1".into()),
            last_known: serde_json::to_value(&record).ok(),
            launch_sent_unix_s: Some(1_000),
        };
        let shown = lost_launch(&owner, 1_000 + LOST_LAUNCH_GRACE_S).unwrap();
        assert_eq!(shown.state, InstanceState::Pending);
        assert!(
            shown
                .state_reason
                .unwrap()
                .contains("not yet confirmed by its compute host")
        );
        assert!(lost_launch(&owner, 1_001 + LOST_LAUNCH_GRACE_S).is_none());
        // A record the host once answered is not a lost launch.
        let mut running = owner.clone();
        let mut r = record.clone();
        r.state = InstanceState::Running;
        running.last_known = serde_json::to_value(&r).ok();
        assert!(lost_launch(&running, 1_000).is_none());
    }

    #[tokio::test]
    async fn one_push_per_image_and_host_at_a_time() {
        let locks = PushLocks::default();
        let first = locks.lock("img", "de-1").await;
        // Another host, or another image: not held up.
        let other = locks.lock("img", "fr-1").await;
        drop(other);
        let second = locks.clone();
        let waiter = tokio::spawn(async move {
            let _g = second.lock("img", "de-1").await;
        });
        // Single-threaded runtime: the waiter runs until it blocks.
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "the second push waits for the first");
        assert_eq!(locks.references("img", "de-1"), 3, "map, holder, waiter");
        drop(first);
        waiter.await.unwrap();
        assert_eq!(locks.len(), 0, "entries go once no one holds them");
    }

    #[test]
    fn an_image_is_in_each_bucket_once() {
        assert_eq!(
            buckets_of(["b1/disk.raw", "b2/kernel", "b1/initrd", "no-key"]),
            ["b1", "b2"]
        );
    }
}
