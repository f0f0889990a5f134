//! The actions: each authorizes `ec2:Action` on its ARN first (so an
//! unauthorized caller learns nothing about what exists), then checks that
//! what it names belongs to the caller's tenant, then acts.

mod schedule;

pub(crate) use schedule::{HostsSeen, PushLocks};

use base64::Engine as _;
use nuage_compute::{
    DirectKernel, HostError, HostErrorKind, INSTANCE_TYPES, ImageSource, InstanceRecord,
    InstanceState, InstanceType, RunRequest, new_instance_id,
};
use nuage_iam::{AccessRequest, Decision, Identity};
use sha2::Digest as _;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{Ec2Error, Ec2Result};
use crate::limits::{
    CLIENT_TOKEN_POLL, CLIENT_TOKEN_WAIT, IMAGE_DISK_BYTES_MAX, IMAGE_KERNEL_BYTES_MAX,
    KERNEL_CMDLINE, NAME_CHARS_MAX, PUBLIC_KEY_BYTES_MAX, RECORDS_PER_TENANT_MAX,
    RUN_INSTANCES_COUNT_MAX, STATE_CHANGES_IN_FLIGHT_MAX,
};
use crate::params::Params;
use crate::store::{IMAGES, INSTANCES, ImageRecord, InstanceOwner, KEY_PAIRS, KeyPair};
use crate::tokens::{TokenClaim, Tokens};
use crate::xml::Xml;
use crate::{Ec2Api, ObjectReadError, RequestContext};

pub(crate) struct Call<'a> {
    pub api: &'a Ec2Api,
    pub identity: &'a Identity,
    pub context: &'a RequestContext,
    pub params: &'a Params,
    /// The decision the audit log records: the first, or the first denial.
    pub decided: std::sync::Mutex<Option<(String, Decision)>>,
    /// What this request learned of the hosts (asked once each).
    pub seen: HostsSeen,
}

fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

fn random_hex17() -> String {
    let bytes: [u8; 9] = rand::random();
    hex::encode(bytes)[..17].to_owned()
}

/// EC2's state codes.
fn state_code(state: InstanceState) -> u32 {
    match state {
        InstanceState::Pending => 0,
        InstanceState::Running => 16,
        InstanceState::ShuttingDown => 32,
        InstanceState::Terminated => 48,
        InstanceState::Stopping => 64,
        InstanceState::Stopped => 80,
    }
}

fn write_state(x: &mut Xml, name: &str, state: InstanceState) {
    x.element(name, |x| {
        x.text("code", &state_code(state).to_string())
            .text("name", state.as_str());
    });
}

/// An image object that could not be read (or may not be), in EC2's terms.
fn read_refusal(name: &str, bucket: &str, key: &str, error: ObjectReadError) -> Ec2Error {
    match error {
        ObjectReadError::NotFound(m) => {
            Ec2Error::invalid_parameter(format!("{name} s3://{bucket}/{key}: {m}"))
        }
        ObjectReadError::AccessDenied(m) => Ec2Error::unauthorized(format!(
            "You are not authorized to read {name} s3://{bucket}/{key}: {m}"
        )),
        e @ ObjectReadError::TooLarge(_) => {
            Ec2Error::invalid_parameter(format!("{name} s3://{bucket}/{key}: {e}"))
        }
        ObjectReadError::Failed(m) => {
            Ec2Error::internal(format!("reading s3://{bucket}/{key}: {m}"))
        }
    }
}

/// `bucket/key` (or `s3://bucket/key`).
fn object_location(name: &str, value: &str) -> Ec2Result<(String, String)> {
    let trimmed = value.strip_prefix("s3://").unwrap_or(value);
    match trimmed.split_once('/') {
        Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => {
            Ok((bucket.to_owned(), key.to_owned()))
        }
        _ => Err(Ec2Error::invalid_parameter(format!(
            "{name} must name an object as bucket/key, not '{value}'"
        ))),
    }
}

fn bounded_name(name: &str, value: &str) -> Ec2Result<()> {
    if value.chars().count() > NAME_CHARS_MAX {
        return Err(Ec2Error::invalid_parameter(format!(
            "{name} may hold at most {NAME_CHARS_MAX} characters"
        )));
    }
    Ok(())
}

/// The OpenSSH SHA-256 fingerprint of a public key line (what EC2 shows
/// for ED25519 keys).
fn fingerprint(public_key: &str) -> Ec2Result<(String, String)> {
    let mut fields = public_key.split_whitespace();
    let (Some(kind), Some(blob)) = (fields.next(), fields.next()) else {
        return Err(Ec2Error::invalid_parameter(
            "PublicKeyMaterial must be an OpenSSH public key (ssh-ed25519 AAAA... or ssh-rsa AAAA...)",
        ));
    };
    let key_type = match kind {
        "ssh-ed25519" => "ed25519",
        "ssh-rsa" => "rsa",
        k if k.starts_with("ecdsa-sha2-") => "ecdsa",
        _ => {
            return Err(Ec2Error::invalid_parameter(format!(
                "unsupported key type '{kind}': use ssh-ed25519, ssh-rsa or ecdsa-sha2-*"
            )));
        }
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .map_err(|_| Ec2Error::invalid_parameter("the public key's body is not base64"))?;
    let digest = sha2::Sha256::digest(&decoded);
    Ok((
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest),
        key_type.to_owned(),
    ))
}

impl Call<'_> {
    fn tenant(&self) -> &str {
        &self.identity.tenant_id
    }

    fn arn(&self, kind: &str, id: &str) -> String {
        format!(
            "arn:aws:ec2:{}:{}:{kind}/{id}",
            self.api.settings.region,
            self.tenant()
        )
    }

    fn record(&self, resource: &str, decision: &Decision) {
        if let Ok(mut decided) = self.decided.lock()
            && decided
                .as_ref()
                .is_none_or(|(_, d)| d.allowed && !decision.allowed)
        {
            *decided = Some((resource.to_owned(), decision.clone()));
        }
    }

    /// Allows or refuses `ec2:ACTION` on `resource` by the caller's policies.
    async fn authorize(&self, action: &str, resource: &str) -> Ec2Result<()> {
        let mut context = std::collections::BTreeMap::new();
        if let Some(ip) = self.context.source_ip {
            context.insert("aws:SourceIp".to_owned(), vec![ip.to_string()]);
        }
        context.insert(
            "aws:SecureTransport".to_owned(),
            vec![self.context.secure_transport.to_string()],
        );
        let request = AccessRequest {
            action: format!("ec2:{action}"),
            resource: resource.to_owned(),
            context,
        };
        let decision = self
            .api
            .iam
            .authorize(
                Some(self.identity),
                &request,
                Some(self.tenant()),
                None,
                false,
            )
            .await
            .map_err(Ec2Error::internal)?;
        self.record(resource, &decision);
        if decision.allowed {
            return Ok(());
        }
        Err(Ec2Error::unauthorized(format!(
            "You are not authorized to perform this operation. User: {} is not authorized to perform: ec2:{action} on resource: {resource}",
            self.identity.arn
        )))
    }

    pub async fn run(&self, action: &str) -> Ec2Result<String> {
        match action {
            "ImportKeyPair" => self.import_key_pair().await,
            "DescribeKeyPairs" => self.describe_key_pairs().await,
            "DeleteKeyPair" => self.delete_key_pair().await,
            "RegisterImage" => self.register_image().await,
            "DescribeImages" => self.describe_images().await,
            "DeregisterImage" => self.deregister_image().await,
            "RunInstances" => self.run_instances().await,
            "DescribeInstances" => self.describe_instances().await,
            "StopInstances" | "StartInstances" | "TerminateInstances" => {
                self.change_state(action).await
            }
            "RebootInstances" => self.reboot_instances().await,
            "GetConsoleOutput" => self.console_output().await,
            "DescribeInstanceTypes" => self.describe_instance_types().await,
            "DescribeAvailabilityZones" => self.describe_availability_zones().await,
            other => Err(Ec2Error::bad_request(
                "InvalidAction",
                format!(
                    "The action {} is not valid for this web service.",
                    nuage_audit::client_text(other)
                ),
            )),
        }
    }

    // ---- key pairs ----

    async fn import_key_pair(&self) -> Ec2Result<String> {
        let name = self.params.required("KeyName")?;
        bounded_name("KeyName", name)?;
        self.authorize("ImportKeyPair", &self.arn("key-pair", name))
            .await?;
        let material = self.params.required("PublicKeyMaterial")?;
        if material.len() > PUBLIC_KEY_BYTES_MAX * 2 {
            return Err(Ec2Error::invalid_parameter("PublicKeyMaterial is too long"));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(material.trim())
            .map_err(|_| Ec2Error::invalid_parameter("PublicKeyMaterial is not base64"))?;
        if decoded.len() > PUBLIC_KEY_BYTES_MAX {
            return Err(Ec2Error::invalid_parameter(format!(
                "PublicKeyMaterial may hold at most {PUBLIC_KEY_BYTES_MAX} bytes"
            )));
        }
        let public_key = String::from_utf8(decoded)
            .map_err(|_| Ec2Error::invalid_parameter("PublicKeyMaterial is not text"))?
            .trim()
            .to_owned();
        if public_key.contains('\n') {
            return Err(Ec2Error::invalid_parameter(
                "PublicKeyMaterial must be one OpenSSH public key line",
            ));
        }
        let (fingerprint, key_type) = fingerprint(&public_key)?;
        if self.api.records.count(KEY_PAIRS, self.tenant()).await? >= RECORDS_PER_TENANT_MAX {
            return Err(Ec2Error::bad_request(
                "KeyPairLimitExceeded",
                format!("a tenant may hold at most {RECORDS_PER_TENANT_MAX} key pairs"),
            ));
        }
        let key = KeyPair {
            name: name.to_owned(),
            id: format!("key-{}", random_hex17()),
            fingerprint,
            public_key,
            key_type,
            created: now(),
        };
        if !self
            .api
            .records
            .create(KEY_PAIRS, self.tenant(), name, &key)
            .await?
        {
            return Err(Ec2Error::bad_request(
                "InvalidKeyPair.Duplicate",
                format!("The keypair '{name}' already exists."),
            ));
        }
        let mut x = Xml::new();
        x.text("keyFingerprint", &key.fingerprint)
            .text("keyName", &key.name)
            .text("keyPairId", &key.id);
        Ok(x.into_string())
    }

    async fn describe_key_pairs(&self) -> Ec2Result<String> {
        self.authorize("DescribeKeyPairs", "*").await?;
        let names = self.params.list("KeyName")?;
        let ids = self.params.list("KeyPairId")?;
        let all: Vec<KeyPair> = self.api.records.list(KEY_PAIRS, self.tenant()).await?;
        for name in &names {
            if !all.iter().any(|k| &k.name == name) {
                return Err(Ec2Error::key_pair_not_found(name));
            }
        }
        for id in &ids {
            if !all.iter().any(|k| &k.id == id) {
                return Err(Ec2Error::key_pair_not_found(id));
            }
        }
        let shown: Vec<&KeyPair> = all
            .iter()
            .filter(|k| names.is_empty() || names.contains(&k.name))
            .filter(|k| ids.is_empty() || ids.contains(&k.id))
            .collect();
        let mut x = Xml::new();
        x.set("keySet", &shown, |x, k| {
            x.text("keyPairId", &k.id)
                .text("keyFingerprint", &k.fingerprint)
                .text("keyName", &k.name)
                .text("keyType", &k.key_type)
                .text("createTime", &k.created)
                .text("publicKey", &k.public_key);
        });
        Ok(x.into_string())
    }

    async fn delete_key_pair(&self) -> Ec2Result<String> {
        let name = match (self.params.get("KeyName"), self.params.get("KeyPairId")) {
            (Some(name), _) if !name.is_empty() => name.to_owned(),
            (_, Some(id)) if !id.is_empty() => {
                let all: Vec<KeyPair> = self.api.records.list(KEY_PAIRS, self.tenant()).await?;
                match all.into_iter().find(|k| k.id == id) {
                    Some(k) => k.name,
                    None => {
                        // EC2 answers success for a key that is not there,
                        // once the caller may delete key pairs at all.
                        self.authorize("DeleteKeyPair", &self.arn("key-pair", id))
                            .await?;
                        return Ok(Xml::new().text("return", "true").take_string());
                    }
                }
            }
            _ => return Err(Ec2Error::missing_parameter("KeyName")),
        };
        self.authorize("DeleteKeyPair", &self.arn("key-pair", &name))
            .await?;
        self.api
            .records
            .delete(KEY_PAIRS, self.tenant(), &name)
            .await?;
        Ok(Xml::new().text("return", "true").take_string())
    }

    // ---- images ----

    async fn register_image(&self) -> Ec2Result<String> {
        let name = self.params.required("Name")?;
        bounded_name("Name", name)?;
        let description = self.params.get("Description");
        if let Some(d) = description {
            bounded_name("Description", d)?;
        }
        self.authorize("RegisterImage", &self.arn("image", "*"))
            .await?;
        let location = self.params.required("ImageLocation")?;
        let disk = object_location("ImageLocation", location)?;
        let kernel = self
            .params
            .get("KernelId")
            .filter(|v| !v.is_empty())
            .map(|v| object_location("KernelId", v))
            .transpose()?;
        let ramdisk = self
            .params
            .get("RamdiskId")
            .filter(|v| !v.is_empty())
            .map(|v| object_location("RamdiskId", v))
            .transpose()?;
        if ramdisk.is_some() && kernel.is_none() {
            return Err(Ec2Error::bad_request(
                "InvalidParameterCombination",
                "RamdiskId needs a KernelId",
            ));
        }
        let existing: Vec<ImageRecord> = self.api.records.list(IMAGES, self.tenant()).await?;
        if existing.iter().any(|i| i.name == name) {
            return Err(Ec2Error::bad_request(
                "InvalidAMIName.Duplicate",
                format!("AMI name {name} is already in use by AMI of this tenant"),
            ));
        }
        if existing.len() >= RECORDS_PER_TENANT_MAX {
            return Err(Ec2Error::bad_request(
                "ResourceLimitExceeded",
                format!("a tenant may register at most {RECORDS_PER_TENANT_MAX} images"),
            ));
        }
        // May the caller read the objects at all? Decided before any
        // bucket's residency policy shapes the answer, so that naming a
        // bucket one may not read tells nothing about it.
        for (name, location) in [
            ("ImageLocation", Some(&disk)),
            ("KernelId", kernel.as_ref()),
            ("RamdiskId", ramdisk.as_ref()),
        ] {
            if let Some(location) = location {
                self.authorize_read(name, location).await?;
            }
        }
        // The image is cached on a host its bytes may go to, and that the
        // tenant may run on: checked before any object is read.
        let locations: Vec<String> = [Some(&disk), kernel.as_ref(), ramdisk.as_ref()]
            .into_iter()
            .flatten()
            .map(|(b, k)| format!("{b}/{k}"))
            .collect();
        let hosts = self.tenant_hosts(None).await?;
        let hosts = self
            .image_hosts(
                hosts,
                &schedule::buckets_of(locations.iter().map(String::as_str)),
            )
            .await?;
        // Staged in a directory of this request's own, removed whatever
        // happens, while holding one of the gateway's staging slots.
        let _slot = self.staging_slot().await?;
        let staging = self
            .api
            .settings
            .staging_dir
            .join(format!("register-{}", random_hex17()));
        std::fs::create_dir_all(&staging).map_err(Ec2Error::internal)?;
        let registered = async {
            let source = self
                .stage(&staging, &disk, kernel.as_ref(), ramdisk.as_ref())
                .await?;
            self.register_on_a_host(&hosts, &source).await
        }
        .await;
        if let Err(e) = std::fs::remove_dir_all(&staging) {
            tracing::warn!(dir = %staging.display(), error = %e, "cannot remove an image staging directory");
        }
        let host_image = registered?;
        let record = ImageRecord {
            id: format!("ami-{}", random_hex17()),
            name: name.to_owned(),
            description: description.map(str::to_owned),
            location: format!("{}/{}", disk.0, disk.1),
            kernel: kernel.map(|(b, k)| format!("{b}/{k}")),
            ramdisk: ramdisk.map(|(b, k)| format!("{b}/{k}")),
            host_image,
            created: now(),
        };
        self.api
            .records
            .create(IMAGES, self.tenant(), &record.id, &record)
            .await?;
        Ok(Xml::new().text("imageId", &record.id).take_string())
    }

    async fn fetch(
        &self,
        name: &str,
        (bucket, key): &(String, String),
        dest: &std::path::Path,
        bytes_max: u64,
    ) -> Ec2Result<()> {
        self.api
            .objects
            .copy_to_file(self.identity, self.context, bucket, key, dest, bytes_max)
            .await
            .map(|_| ())
            .map_err(|e| read_refusal(name, bucket, key, e))
    }

    /// `s3:GetObject` on an image object for the caller, without reading.
    async fn authorize_read(&self, name: &str, (bucket, key): &(String, String)) -> Ec2Result<()> {
        self.api
            .objects
            .authorize_read(self.identity, self.context, bucket, key)
            .await
            .map_err(|e| read_refusal(name, bucket, key, e))
    }

    /// Hands staged files to the image cache of the first reachable of
    /// `hosts` (the most free capacity first), which checks them; returns
    /// the image id (content hash).
    async fn register_on_a_host(
        &self,
        hosts: &[crate::ScheduledHost],
        source: &ImageSource,
    ) -> Ec2Result<String> {
        let mut tried = Vec::new();
        for (host, status) in self.by_free_capacity(hosts).await {
            if let Err(e) = status {
                tracing::warn!(host = %host.id, error = %e, "compute host unreachable; image not cached there");
                continue;
            }
            match host.host.register_image(source, None).await {
                Ok(id) => return Ok(id),
                // A problem of that host only: the next may cache it.
                Err(e)
                    if matches!(
                        e.kind,
                        HostErrorKind::Unreachable
                            | HostErrorKind::NotSent
                            | HostErrorKind::Busy
                            | HostErrorKind::CacheFull
                    ) =>
                {
                    tracing::warn!(host = %host.id, error = %e, "image not cached on this compute host; trying the next");
                    if !matches!(e.kind, HostErrorKind::Unreachable | HostErrorKind::NotSent) {
                        tried.push(format!("{}: {}", host.id, e.message));
                    }
                }
                Err(e) => return Err(Ec2Error::from_host(e)),
            }
        }
        if tried.is_empty() {
            // No host answered: as RunInstances when no host answers.
            return Err(Ec2Error::unavailable(
                "no compute host the residency policies allow is reachable to cache the image",
            ));
        }
        Err(Ec2Error::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            format!(
                "No compute host the residency policies allow could cache the image just now: {}",
                tried.join("; ")
            ),
        ))
    }

    /// Reads the objects as the caller into `staging`.
    async fn stage(
        &self,
        staging: &std::path::Path,
        disk: &(String, String),
        kernel: Option<&(String, String)>,
        ramdisk: Option<&(String, String)>,
    ) -> Ec2Result<ImageSource> {
        let disk_path = staging.join("disk");
        self.fetch("ImageLocation", disk, &disk_path, IMAGE_DISK_BYTES_MAX)
            .await?;
        let direct = match kernel {
            None => None,
            Some(kernel) => {
                let kernel_path = staging.join("kernel");
                self.fetch("KernelId", kernel, &kernel_path, IMAGE_KERNEL_BYTES_MAX)
                    .await?;
                let initrd = match ramdisk {
                    None => None,
                    Some(ramdisk) => {
                        let path = staging.join("ramdisk");
                        self.fetch("RamdiskId", ramdisk, &path, IMAGE_KERNEL_BYTES_MAX)
                            .await?;
                        Some(path)
                    }
                };
                Some(DirectKernel {
                    kernel: kernel_path,
                    initrd,
                    cmdline: KERNEL_CMDLINE.to_owned(),
                })
            }
        };
        Ok(ImageSource {
            disk: disk_path,
            kernel: direct,
        })
    }

    async fn image(&self, id: &str) -> Ec2Result<ImageRecord> {
        self.api
            .records
            .get(IMAGES, self.tenant(), id)
            .await?
            .ok_or_else(|| Ec2Error::image_not_found(id))
    }

    async fn describe_images(&self) -> Ec2Result<String> {
        self.authorize("DescribeImages", "*").await?;
        let ids = self.params.list("ImageId")?;
        let owners = self.params.list("Owner")?;
        let all: Vec<ImageRecord> = if owners.iter().all(|o| o == "self" || o == self.tenant()) {
            self.api.records.list(IMAGES, self.tenant()).await?
        } else {
            // Images of other tenants are never shown (no public images yet).
            Vec::new()
        };
        for id in &ids {
            if !all.iter().any(|i| &i.id == id) {
                return Err(Ec2Error::image_not_found(id));
            }
        }
        let shown: Vec<&ImageRecord> = all
            .iter()
            .filter(|i| ids.is_empty() || ids.contains(&i.id))
            .collect();
        let tenant = self.tenant().to_owned();
        let mut x = Xml::new();
        x.set("imagesSet", &shown, |x, i| {
            x.text("imageId", &i.id)
                .text("imageLocation", &i.location)
                .text("imageState", "available")
                .text("imageOwnerId", &tenant)
                .text("creationDate", &i.created)
                .text("isPublic", "false")
                .text("architecture", "x86_64")
                .text("imageType", "machine")
                .optional("kernelId", i.kernel.as_deref())
                .optional("ramdiskId", i.ramdisk.as_deref())
                .text("name", &i.name)
                .optional("description", i.description.as_deref())
                .text("rootDeviceType", "instance-store")
                .text(
                    "virtualizationType",
                    if i.kernel.is_some() {
                        "paravirtual"
                    } else {
                        "hvm"
                    },
                );
        });
        Ok(x.into_string())
    }

    async fn deregister_image(&self) -> Ec2Result<String> {
        let id = self.params.required("ImageId")?;
        self.authorize("DeregisterImage", &self.arn("image", id))
            .await?;
        self.image(id).await?;
        self.api.records.delete(IMAGES, self.tenant(), id).await?;
        Ok(Xml::new().text("return", "true").take_string())
    }

    // ---- instances ----

    async fn run_instances(&self) -> Ec2Result<String> {
        self.authorize("RunInstances", &self.arn("instance", "*"))
            .await?;
        // As in AWS, RunInstances is authorized on every resource it uses:
        // a policy may allow or deny a given image or key pair.
        let image_id = self.params.required("ImageId")?;
        self.authorize("RunInstances", &self.arn("image", image_id))
            .await?;
        if let Some(name) = self.params.get("KeyName").filter(|v| !v.is_empty()) {
            self.authorize("RunInstances", &self.arn("key-pair", name))
                .await?;
        }
        // A repeat of a request already made (botocore sends a ClientToken
        // with every RunInstances and keeps it across its retries): its
        // reservation, not more instances; while the first request still
        // runs, the repeat waits for it (tokens.rs).
        let tokens = self.tokens();
        let (held, reservation_id) = match self.params.get("ClientToken").filter(|t| !t.is_empty())
        {
            None => (None, format!("r-{}", random_hex17())),
            Some(token) => {
                let parameters = self.params.digest_without(&["ClientToken", "Version"]);
                match tokens.claim(token, &parameters).await? {
                    TokenClaim::Repeat {
                        name,
                        reservation_id,
                    } => {
                        return self.reservation_response(&name, &reservation_id).await;
                    }
                    TokenClaim::New(held) => {
                        let reservation_id = held.reservation_id.clone();
                        (Some(held), reservation_id)
                    }
                }
            }
        };
        let outcome = self.run_instances_once(&reservation_id).await;
        if let Some(held) = held {
            // The token names the reservation unless nothing of it was kept:
            // then a retry may try again.
            let kept = match &outcome {
                Ok(_) => true,
                Err((_, lost)) => *lost,
            };
            let ended = if kept {
                tokens.finish(&held).await
            } else {
                tokens.release(&held).await
            };
            if let Err(e) = ended {
                tracing::warn!(error = %e.message, "cannot end a ClientToken's claim");
            }
        }
        outcome.map_err(|(e, _)| e)
    }

    fn tokens(&self) -> Tokens<'_> {
        Tokens {
            records: &self.api.records,
            tenant: self.tenant(),
            clock: self.api.clock.as_ref(),
            wait: CLIENT_TOKEN_WAIT,
            poll: CLIENT_TOKEN_POLL,
        }
    }

    /// A reservation as RunInstances answers it, for a repeated
    /// `ClientToken`: its instances as they are now. When its hosts know
    /// none of them (every launch was refused or never arrived), the token
    /// is forgotten and the repeat answered `Unavailable`: botocore retries,
    /// and the retry runs the request again.
    async fn reservation_response(&self, token: &str, reservation_id: &str) -> Ec2Result<String> {
        let mut owners: Vec<InstanceOwner> = self
            .api
            .records
            .list::<InstanceOwner>(INSTANCES, self.tenant())
            .await?
            .into_iter()
            .filter(|o| o.reservation_id == reservation_id)
            .collect();
        owners.sort_by_key(|o| o.launch_index);
        let refs: Vec<&InstanceOwner> = owners.iter().collect();
        let seen = self.seen_all(&refs).await;
        let images: Vec<ImageRecord> = self.api.records.list(IMAGES, self.tenant()).await?;
        let mut items = Vec::new();
        let mut gone = Vec::new();
        for (owner, seen) in owners.iter().zip(seen) {
            let record = match seen {
                schedule::Seen::Found(r) | schedule::Seen::LostLaunch(r) => r,
                schedule::Seen::Gone => {
                    gone.push(owner.id.clone());
                    continue;
                }
                schedule::Seen::Unknown(why) => match Self::last_known(owner, &why) {
                    Some(r) => r,
                    None => continue,
                },
            };
            items.push((record, owner.clone()));
        }
        if gone.len() == owners.len() {
            for id in &gone {
                self.api
                    .records
                    .delete(INSTANCES, self.tenant(), id)
                    .await?;
            }
            self.tokens().forget(token, reservation_id).await?;
            return Err(Ec2Error::new(
                http::StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                format!(
                    "No instance of reservation {reservation_id}, which this ClientToken named, \
                 was started: its compute hosts do not know them. The token is released; \
                 try again"
                ),
            ));
        }
        let tenant = self.tenant().to_owned();
        let mut x = Xml::new();
        x.text("reservationId", reservation_id)
            .text("ownerId", &tenant)
            .element("groupSet", |_| {})
            .set("instancesSet", &items, |x, (record, owner)| {
                let image = images.iter().find(|i| i.id == owner.image_id);
                self.write_instance(x, record, owner, image);
            });
        Ok(x.into_string())
    }

    /// RunInstances itself; the error says whether a launch's answer was
    /// lost (its instance kept).
    async fn run_instances_once(&self, reservation_id: &str) -> Result<String, (Ec2Error, bool)> {
        let plain = |e: Ec2Error| (e, false);
        let image_id = self.params.required("ImageId").map_err(plain)?;
        // Where it may run, by the tenant's residency policy, before
        // anything else is looked up: nothing starts outside it.
        let zone = self
            .params
            .get("Placement.AvailabilityZone")
            .filter(|z| !z.is_empty());
        let hosts = self.tenant_hosts(zone).await.map_err(plain)?;
        let instance_type = self.params.get("InstanceType").unwrap_or("n1.micro");
        let min = self.params.count("MinCount", 1).map_err(plain)?;
        let max = self.params.count("MaxCount", min).map_err(plain)?;
        if min == 0 || max < min {
            return Err(plain(Ec2Error::invalid_parameter(
                "MinCount must be at least 1 and at most MaxCount",
            )));
        }
        if max > RUN_INSTANCES_COUNT_MAX {
            return Err(plain(Ec2Error::invalid_parameter(format!(
                "MaxCount may be at most {RUN_INSTANCES_COUNT_MAX} on this server"
            ))));
        }
        let user_data = match self.params.get("UserData").filter(|v| !v.is_empty()) {
            None => None,
            Some(text) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|_| {
                        plain(Ec2Error::invalid_parameter(
                            "Invalid BASE64 encoding of user data",
                        ))
                    })?,
            ),
        };
        let image = self.image(image_id).await.map_err(plain)?;
        let key_name = self.params.get("KeyName").filter(|v| !v.is_empty());
        let ssh_keys = match key_name {
            None => Vec::new(),
            Some(name) => {
                let key: KeyPair = self
                    .api
                    .records
                    .get(KEY_PAIRS, self.tenant(), name)
                    .await
                    .map_err(plain)?
                    .ok_or_else(|| plain(Ec2Error::key_pair_not_found(name)))?;
                vec![(key.name, key.public_key)]
            }
        };
        let Some(itype) = InstanceType::find(instance_type) else {
            return Err(plain(Ec2Error::from_compute(
                nuage_compute::ComputeError::InvalidInstanceType(instance_type.to_owned()),
            )));
        };
        // And where its image's bytes may go, once the caller may still
        // read them (a bucket's policy is told only to whom may read it).
        for (name, location) in [
            ("ImageLocation", Some(image.location.as_str())),
            ("KernelId", image.kernel.as_deref()),
            ("RamdiskId", image.ramdisk.as_deref()),
        ] {
            if let Some(location) = location {
                let (bucket, key) = object_location(name, location).map_err(plain)?;
                match self
                    .api
                    .objects
                    .authorize_read(self.identity, self.context, &bucket, &key)
                    .await
                {
                    // A bucket gone since has no policy to tell: the hosts
                    // that cache the image may still run it.
                    Ok(()) | Err(ObjectReadError::NotFound(_)) => {}
                    Err(e) => return Err(plain(read_refusal(name, &bucket, &key, e))),
                }
            }
        }
        let hosts = self
            .image_hosts(
                hosts,
                &schedule::buckets_of(
                    [
                        Some(image.location.as_str()),
                        image.kernel.as_deref(),
                        image.ramdisk.as_deref(),
                    ]
                    .into_iter()
                    .flatten(),
                ),
            )
            .await
            .map_err(plain)?;
        let owned = self
            .api
            .records
            .count(INSTANCES, self.tenant())
            .await
            .map_err(plain)?;
        if owned + max as usize > RECORDS_PER_TENANT_MAX {
            return Err(plain(Ec2Error::bad_request(
                "InstanceLimitExceeded",
                format!("a tenant may hold at most {RECORDS_PER_TENANT_MAX} instance records"),
            )));
        }
        let mut lost = false;
        let mut launched: Vec<(InstanceRecord, InstanceOwner)> = Vec::new();
        let mut staged = None;
        let placed = self
            .launch(
                &hosts,
                (min, max),
                &itype,
                &image,
                (key_name, &ssh_keys),
                user_data.as_ref(),
                reservation_id,
                &mut launched,
                &mut staged,
                &mut lost,
            )
            .await;
        if let Some(staged) = staged {
            staged.remove();
        }
        placed.map_err(|e| (e, lost))?;
        let tenant = self.tenant().to_owned();
        let mut x = Xml::new();
        x.text("reservationId", reservation_id)
            .text("ownerId", &tenant)
            .element("groupSet", |_| {})
            .set("instancesSet", &launched, |x, (record, owner)| {
                self.write_instance(x, record, owner, Some(&image));
            });
        Ok(x.into_string())
    }

    /// Places up to `max` instances; if fewer than `min` could be, those
    /// started are terminated again and the error returned. `lost` is set
    /// when a launch's answer did not come (its instance is kept).
    #[allow(clippy::too_many_arguments)]
    async fn launch(
        &self,
        hosts: &[crate::ScheduledHost],
        (min, max): (u32, u32),
        itype: &InstanceType,
        image: &ImageRecord,
        (key_name, ssh_keys): (Option<&str>, &Vec<(String, String)>),
        user_data: Option<&Vec<u8>>,
        reservation_id: &str,
        launched: &mut Vec<(InstanceRecord, InstanceOwner)>,
        staged: &mut Option<schedule::StagedImage>,
        lost: &mut bool,
    ) -> Ec2Result<()> {
        for index in 0..max {
            let request = RunRequest {
                instance_type: itype.name.to_owned(),
                image_id: image.host_image.clone(),
                hostname: None,
                ssh_keys: ssh_keys.clone(),
                user_data: user_data.cloned(),
                // Set per host by `place`.
                instance_id: None,
                availability_zone: None,
            };
            // The gateway names the instance, so that its record exists
            // before the host is asked and a retry reaches the same one.
            let owner = InstanceOwner {
                id: new_instance_id(),
                image_id: image.id.clone(),
                key_name: key_name.map(str::to_owned),
                reservation_id: reservation_id.to_owned(),
                launch_index: index,
                host: None,
                last_known: None,
                launch_sent_unix_s: None,
            };
            match self
                .place(hosts, &request, itype, image, staged, &owner, lost)
                .await
            {
                Ok((record, _, owner)) => launched.push((record, owner)),
                Err(e) => {
                    if launched.len() >= min as usize {
                        // Those that run are answered (a lost one is shown
                        // by describe, in the same reservation).
                        break;
                    }
                    for (record, owner) in launched.iter() {
                        if let Some(host) = self.host_of(owner) {
                            match host.host.terminate(&record.id).await {
                                Ok(after) => self.remember(owner, &after).await,
                                Err(e) => {
                                    tracing::warn!(instance = %record.id, error = %e, "cannot terminate an instance of a failed RunInstances");
                                }
                            }
                        }
                    }
                    launched.clear();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn write_instance(
        &self,
        x: &mut Xml,
        record: &InstanceRecord,
        owner: &InstanceOwner,
        image: Option<&ImageRecord>,
    ) {
        x.text("instanceId", &record.id)
            .text("imageId", &owner.image_id);
        write_state(x, "instanceState", record.state);
        x.text("privateDnsName", "")
            .text("dnsName", "")
            .text("reason", record.state_reason.as_deref().unwrap_or(""))
            .optional("keyName", owner.key_name.as_deref())
            .text("amiLaunchIndex", &owner.launch_index.to_string())
            .text("instanceType", &record.instance_type)
            .text("launchTime", &record.launch_time)
            .element("placement", |x| {
                x.text("availabilityZone", &record.availability_zone)
                    .text("tenancy", "default");
            })
            .optional("kernelId", image.and_then(|i| i.kernel.as_deref()))
            .optional("ramdiskId", image.and_then(|i| i.ramdisk.as_deref()))
            .element("monitoring", |x| {
                x.text("state", "disabled");
            })
            .text("architecture", "x86_64")
            .text("rootDeviceType", "instance-store")
            .text("hypervisor", "xen")
            .element("cpuOptions", |x| {
                x.text("coreCount", &record.vcpus.to_string())
                    .text("threadsPerCore", "1");
            });
        if let Some(reason) = &record.state_reason {
            let code = reason.split(':').next().unwrap_or(reason);
            x.element("stateReason", |x| {
                x.text("code", code).text("message", reason);
            });
        }
        // Addresses (docs/compute.md, "Networking"): the guest's own in its
        // user network, and the host address its SSH forward listens on while
        // a VM runs. EC2 has no port field: the tag `nuage:ssh-port` carries
        // it, also only while a VM runs (a stopped instance's port may be
        // taken by another process meanwhile; a start reuses it when it can).
        if let Some(ip) = record.private_ip {
            x.text("privateIpAddress", &ip.to_string());
        }
        if let Some(forward) = record.ssh_forward
            && matches!(
                record.state,
                InstanceState::Pending | InstanceState::Running | InstanceState::Stopping
            )
        {
            x.text("ipAddress", &forward.ip().to_string());
            x.element("tagSet", |x| {
                x.element("item", |x| {
                    x.text("key", "nuage:ssh-port")
                        .text("value", &forward.port().to_string());
                });
            });
        }
    }

    /// The caller's instances `ids` on their hosts (each host asked once,
    /// all at once), or `NotFound` (also for an instance of another tenant);
    /// `Unavailable` when a host cannot be reached; `IncorrectInstanceState`
    /// for a launch not yet confirmed by its host (which does not know it
    /// yet).
    async fn owned(
        &self,
        ids: &[String],
    ) -> Ec2Result<Vec<(InstanceOwner, InstanceRecord, crate::ScheduledHost)>> {
        let mut owners = Vec::with_capacity(ids.len());
        for id in ids {
            let owner: InstanceOwner = self
                .api
                .records
                .get(INSTANCES, self.tenant(), id)
                .await?
                .ok_or_else(|| Ec2Error::instance_not_found(id))?;
            owners.push(owner);
        }
        let refs: Vec<&InstanceOwner> = owners.iter().collect();
        let seen = self.seen_all(&refs).await;
        let mut out = Vec::with_capacity(owners.len());
        for (owner, seen) in owners.into_iter().zip(seen) {
            let record = match seen {
                schedule::Seen::Found(record) => record,
                schedule::Seen::Gone => return Err(Ec2Error::instance_not_found(&owner.id)),
                schedule::Seen::LostLaunch(_) => {
                    return Err(Ec2Error::bad_request(
                        "IncorrectInstanceState",
                        format!(
                            "The instance '{}' is pending: its launch is not yet confirmed by \
                             its compute host. Try again in a few minutes.",
                            owner.id
                        ),
                    ));
                }
                schedule::Seen::Unknown(why) => {
                    return Err(Ec2Error::unavailable(format!(
                        "instance {}: {why}",
                        owner.id
                    )));
                }
            };
            let Some(host) = self.host_of(&owner).cloned() else {
                return Err(Ec2Error::unavailable(format!(
                    "instance {} is on compute host {:?}, which is not configured",
                    owner.id, owner.host
                )));
            };
            out.push((owner, record, host));
        }
        Ok(out)
    }

    /// The record to show for an instance whose host cannot answer: the
    /// last one this gateway saw, with the reason.
    fn last_known(owner: &InstanceOwner, why: &str) -> Option<InstanceRecord> {
        let mut record: InstanceRecord = serde_json::from_value(owner.last_known.clone()?).ok()?;
        record.state_reason = Some(format!(
            "Server.InternalError: {why}; the state shown is the last known"
        ));
        Some(record)
    }

    async fn describe_instances(&self) -> Ec2Result<String> {
        self.authorize("DescribeInstances", "*").await?;
        let ids = self.params.list("InstanceId")?;
        let filters = self.params.filters()?;
        for (name, _) in &filters {
            if !matches!(
                name.as_str(),
                "instance-state-name"
                    | "instance-id"
                    | "instance-type"
                    | "image-id"
                    | "key-name"
                    | "availability-zone"
                    | "reservation-id"
            ) {
                return Err(Ec2Error::invalid_parameter(format!(
                    "The filter '{}' is invalid",
                    nuage_audit::client_text(name)
                )));
            }
        }
        let owners: Vec<InstanceOwner> = self.api.records.list(INSTANCES, self.tenant()).await?;
        for id in &ids {
            if !owners.iter().any(|o| &o.id == id) {
                return Err(Ec2Error::instance_not_found(id));
            }
        }
        let images: Vec<ImageRecord> = self.api.records.list(IMAGES, self.tenant()).await?;
        // Reservations in the order their first instance appears.
        let mut reservations: Vec<(String, Vec<(InstanceRecord, InstanceOwner)>)> = Vec::new();
        let owners: Vec<InstanceOwner> = owners
            .into_iter()
            .filter(|o| ids.is_empty() || ids.contains(&o.id))
            .collect();
        // Each host is asked once for its records, all at once.
        let refs: Vec<&InstanceOwner> = owners.iter().collect();
        let seen = self.seen_all(&refs).await;
        for (owner, seen) in owners.into_iter().zip(seen) {
            let record = match seen {
                schedule::Seen::Found(record) | schedule::Seen::LostLaunch(record) => record,
                schedule::Seen::Gone => {
                    // Its host answered and forgot a long-terminated
                    // instance (or never got a launch long ago): so do we.
                    self.api
                        .records
                        .delete(INSTANCES, self.tenant(), &owner.id)
                        .await?;
                    continue;
                }
                // Shown as last seen, never deleted: its host may come back.
                schedule::Seen::Unknown(why) => match Self::last_known(&owner, &why) {
                    Some(record) => record,
                    None => continue,
                },
            };
            let matches = filters.iter().all(|(name, values)| {
                let value = match name.as_str() {
                    "instance-state-name" => record.state.as_str(),
                    "instance-id" => record.id.as_str(),
                    "instance-type" => record.instance_type.as_str(),
                    "image-id" => owner.image_id.as_str(),
                    "key-name" => owner.key_name.as_deref().unwrap_or(""),
                    "availability-zone" => record.availability_zone.as_str(),
                    "reservation-id" => owner.reservation_id.as_str(),
                    _ => return false,
                };
                values.iter().any(|v| v == value)
            });
            if !matches {
                continue;
            }
            match reservations
                .iter_mut()
                .find(|(r, _)| *r == owner.reservation_id)
            {
                Some((_, items)) => items.push((record, owner)),
                None => reservations.push((owner.reservation_id.clone(), vec![(record, owner)])),
            }
        }
        let tenant = self.tenant().to_owned();
        let mut x = Xml::new();
        x.set("reservationSet", &reservations, |x, (id, items)| {
            x.text("reservationId", id)
                .text("ownerId", &tenant)
                .element("groupSet", |_| {})
                .set("instancesSet", items, |x, (record, owner)| {
                    let image = images.iter().find(|i| i.id == owner.image_id);
                    self.write_instance(x, record, owner, image);
                });
        });
        Ok(x.into_string())
    }

    /// The instance ids a state change names, each authorized and owned,
    /// before any is acted on (EC2 fails the whole call for one bad id).
    async fn named_instances(
        &self,
        action: &str,
    ) -> Ec2Result<Vec<(InstanceOwner, InstanceRecord, crate::ScheduledHost)>> {
        let ids = self.params.list("InstanceId")?;
        if ids.is_empty() {
            return Err(Ec2Error::missing_parameter("InstanceId"));
        }
        for id in &ids {
            self.authorize(action, &self.arn("instance", id)).await?;
        }
        let records = self.owned(&ids).await?;
        // A start or reboot runs the instance on its host again: the
        // tenant's residency policy as it is now must allow that host.
        if matches!(action, "StartInstances" | "RebootInstances") {
            let placed: Vec<(&str, &crate::ScheduledHost)> = records
                .iter()
                .map(|(owner, _, host)| (owner.id.as_str(), host))
                .collect();
            self.check_still_allowed(&placed).await?;
        }
        Ok(records)
    }

    /// Stops, starts or terminates the named instances, all at once (at
    /// most [`STATE_CHANGES_IN_FLIGHT_MAX`] at a time): a stop may wait for
    /// its guest to power off, and one after another several such waits
    /// would outlast the client's read timeout. Each is answered with its
    /// state after the call; when one fails, the others are still acted on
    /// and the first failure (in the order named) is the answer.
    async fn change_state(&self, action: &str) -> Ec2Result<String> {
        use futures::StreamExt as _;
        let before = self.named_instances(action).await?;
        let results: Vec<Result<(String, InstanceState, InstanceState), HostError>> =
            futures::stream::iter(before)
                .map(|(owner, record, host)| async move {
                    let after = match action {
                        "StopInstances" => self.on_host(&host, host.host.stop(&record.id)).await,
                        "StartInstances" => self.on_host(&host, host.host.start(&record.id)).await,
                        _ => self.on_host(&host, host.host.terminate(&record.id)).await,
                    }?;
                    self.remember(&owner, &after).await;
                    Ok((record.id, record.state, after.state))
                })
                .buffered(STATE_CHANGES_IN_FLIGHT_MAX)
                .collect()
                .await;
        let mut changes = Vec::with_capacity(results.len());
        for result in results {
            changes.push(result.map_err(Ec2Error::from_host)?);
        }
        let mut x = Xml::new();
        x.set("instancesSet", &changes, |x, (id, previous, current)| {
            x.text("instanceId", id);
            write_state(x, "currentState", *current);
            write_state(x, "previousState", *previous);
        });
        Ok(x.into_string())
    }

    /// Reboots the named instances, all at once (as [`Self::change_state`]).
    async fn reboot_instances(&self) -> Ec2Result<String> {
        use futures::StreamExt as _;
        let named = self.named_instances("RebootInstances").await?;
        let results: Vec<Result<InstanceRecord, HostError>> = futures::stream::iter(named)
            .map(|(_, record, host)| async move {
                self.on_host(&host, host.host.reboot(&record.id)).await
            })
            .buffered(STATE_CHANGES_IN_FLIGHT_MAX)
            .collect()
            .await;
        for result in results {
            result.map_err(Ec2Error::from_host)?;
        }
        Ok(Xml::new().text("return", "true").take_string())
    }

    async fn console_output(&self) -> Ec2Result<String> {
        let id = self.params.required("InstanceId")?;
        self.authorize("GetConsoleOutput", &self.arn("instance", id))
            .await?;
        let Some((_, _, host)) = self.owned(&[id.to_owned()]).await?.pop() else {
            return Err(Ec2Error::instance_not_found(id));
        };
        let output = host
            .host
            .console_output(id)
            .await
            .map_err(Ec2Error::from_host)?;
        let mut x = Xml::new();
        x.text("instanceId", id).text("timestamp", &now()).text(
            "output",
            &base64::engine::general_purpose::STANDARD.encode(output.as_bytes()),
        );
        Ok(x.into_string())
    }

    async fn describe_instance_types(&self) -> Ec2Result<String> {
        self.authorize("DescribeInstanceTypes", "*").await?;
        let names = self.params.list("InstanceType")?;
        for name in &names {
            if InstanceType::find(name).is_none() {
                return Err(Ec2Error::invalid_parameter(format!(
                    "The following supplied instance types do not exist: [{}]",
                    nuage_audit::client_text(name)
                )));
            }
        }
        let shown: Vec<&InstanceType> = INSTANCE_TYPES
            .iter()
            .filter(|t| names.is_empty() || names.iter().any(|n| n == t.name))
            .collect();
        let mut x = Xml::new();
        x.set("instanceTypeSet", &shown, |x, t| {
            x.text("instanceType", t.name)
                .text("currentGeneration", "true")
                .element("vCpuInfo", |x| {
                    x.text("defaultVCpus", &t.vcpus.to_string());
                })
                .element("memoryInfo", |x| {
                    x.text("sizeInMiB", &t.memory_mib.to_string());
                })
                .text("instanceStorageSupported", "true")
                .element("instanceStorageInfo", |x| {
                    x.text("totalSizeInGB", &t.root_disk_gib.to_string());
                });
        });
        Ok(x.into_string())
    }

    async fn describe_availability_zones(&self) -> Ec2Result<String> {
        self.authorize("DescribeAvailabilityZones", "*").await?;
        let settings = &self.api.settings;
        let mut zones: Vec<&str> = Vec::new();
        for host in self.api.hosts.iter() {
            if !zones.contains(&host.availability_zone.as_str()) {
                zones.push(&host.availability_zone);
            }
        }
        let mut x = Xml::new();
        x.set("availabilityZoneInfo", &zones, |x, zone| {
            x.text("zoneName", zone)
                .text("zoneState", "available")
                .text("regionName", &settings.region)
                .text("zoneId", zone)
                .text("zoneType", "availability-zone")
                .text("optInStatus", "opt-in-not-required");
        });
        Ok(x.into_string())
    }
}
