//! The actions: each authorizes `ec2:Action` on its ARN first (so an
//! unauthorized caller learns nothing about what exists), then checks that
//! what it names belongs to the caller's tenant, then acts.

use base64::Engine as _;
use nuage_compute::{
    DirectKernel, INSTANCE_TYPES, ImageSource, InstanceRecord, InstanceState, InstanceType,
    RunRequest,
};
use nuage_iam::{AccessRequest, Decision, Identity};
use sha2::Digest as _;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{Ec2Error, Ec2Result};
use crate::limits::{
    IMAGE_DISK_BYTES_MAX, IMAGE_KERNEL_BYTES_MAX, KERNEL_CMDLINE, NAME_CHARS_MAX,
    PUBLIC_KEY_BYTES_MAX, RECORDS_PER_TENANT_MAX, RUN_INSTANCES_COUNT_MAX,
};
use crate::params::Params;
use crate::store::{IMAGES, INSTANCES, ImageRecord, InstanceOwner, KEY_PAIRS, KeyPair};
use crate::xml::Xml;
use crate::{Ec2Api, ObjectReadError, RequestContext};

pub(crate) struct Call<'a> {
    pub api: &'a Ec2Api,
    pub identity: &'a Identity,
    pub context: &'a RequestContext,
    pub params: &'a Params,
    /// The decision the audit log records: the first, or the first denial.
    pub decided: std::sync::Mutex<Option<(String, Decision)>>,
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
        // Staged in a directory of this request's own, removed whatever happens.
        let staging = self
            .api
            .settings
            .staging_dir
            .join(format!("register-{}", random_hex17()));
        std::fs::create_dir_all(&staging).map_err(Ec2Error::internal)?;
        let registered = self
            .stage_and_register(&staging, &disk, kernel.as_ref(), ramdisk.as_ref())
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
            .map_err(|e| match e {
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
            })
    }

    /// Reads the objects as the caller and hands them to the host's image
    /// cache; returns the host's image id.
    async fn stage_and_register(
        &self,
        staging: &std::path::Path,
        disk: &(String, String),
        kernel: Option<&(String, String)>,
        ramdisk: Option<&(String, String)>,
    ) -> Ec2Result<String> {
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
        let image = self
            .api
            .host
            .register_image(&ImageSource {
                disk: disk_path,
                kernel: direct,
            })
            .await
            .map_err(Ec2Error::from_compute)?;
        Ok(image.id)
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

    /// An instance runs only on a host whose site the tenant's residency
    /// policy allows; this server has one host, so a tenant whose policy
    /// excludes its site is refused, never placed elsewhere.
    async fn check_residency(&self) -> Ec2Result<()> {
        let tenant = self
            .api
            .iam
            .tenant(self.tenant())
            .await
            .map_err(Ec2Error::internal)?;
        let Some(text) = tenant.residency_policy.as_deref() else {
            return Ok(());
        };
        let policy =
            nuage_placement::ResidencyPolicy::from_json(text).map_err(Ec2Error::internal)?;
        let site = &self.api.settings.host_site;
        policy.site_verdict(site).map_err(|why| {
            Ec2Error::bad_request(
                "Unsupported",
                format!(
                    "The tenant's residency policy ({}) does not allow this region's compute host \
                     (site {}, {}): {why}. No instance was started anywhere.",
                    policy.places_text(),
                    site.id,
                    site.country
                ),
            )
        })
    }

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
        self.check_residency().await?;
        let instance_type = self.params.get("InstanceType").unwrap_or("n1.micro");
        let min = self.params.count("MinCount", 1)?;
        let max = self.params.count("MaxCount", min)?;
        if min == 0 || max < min {
            return Err(Ec2Error::invalid_parameter(
                "MinCount must be at least 1 and at most MaxCount",
            ));
        }
        if max > RUN_INSTANCES_COUNT_MAX {
            return Err(Ec2Error::invalid_parameter(format!(
                "MaxCount may be at most {RUN_INSTANCES_COUNT_MAX} on this server"
            )));
        }
        if let Some(zone) = self.params.get("Placement.AvailabilityZone")
            && !zone.is_empty()
            && zone != self.api.settings.availability_zone
        {
            return Err(Ec2Error::invalid_parameter(format!(
                "Invalid availability zone: [{zone}]; this server offers {}",
                self.api.settings.availability_zone
            )));
        }
        let user_data = match self.params.get("UserData").filter(|v| !v.is_empty()) {
            None => None,
            Some(text) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|_| {
                        Ec2Error::invalid_parameter("Invalid BASE64 encoding of user data")
                    })?,
            ),
        };
        let image = self.image(image_id).await?;
        let key_name = self.params.get("KeyName").filter(|v| !v.is_empty());
        let ssh_keys = match key_name {
            None => Vec::new(),
            Some(name) => {
                let key: KeyPair = self
                    .api
                    .records
                    .get(KEY_PAIRS, self.tenant(), name)
                    .await?
                    .ok_or_else(|| Ec2Error::key_pair_not_found(name))?;
                vec![(key.name, key.public_key)]
            }
        };
        if InstanceType::find(instance_type).is_none() {
            return Err(Ec2Error::from_compute(
                nuage_compute::ComputeError::InvalidInstanceType(instance_type.to_owned()),
            ));
        }
        let owned = self.api.records.count(INSTANCES, self.tenant()).await?;
        if owned + max as usize > RECORDS_PER_TENANT_MAX {
            return Err(Ec2Error::bad_request(
                "InstanceLimitExceeded",
                format!("a tenant may hold at most {RECORDS_PER_TENANT_MAX} instance records"),
            ));
        }
        let reservation_id = format!("r-{}", random_hex17());
        let mut launched: Vec<(InstanceRecord, InstanceOwner)> = Vec::new();
        for index in 0..max {
            let request = RunRequest {
                instance_type: instance_type.to_owned(),
                image_id: image.host_image.clone(),
                hostname: None,
                ssh_keys: ssh_keys.clone(),
                user_data: user_data.clone(),
            };
            let outcome = match self.api.host.run(request).await {
                Ok(record) => {
                    let owner = InstanceOwner {
                        id: record.id.clone(),
                        image_id: image.id.clone(),
                        key_name: key_name.map(str::to_owned),
                        reservation_id: reservation_id.clone(),
                        launch_index: index,
                    };
                    match self
                        .api
                        .records
                        .create(INSTANCES, self.tenant(), &record.id, &owner)
                        .await
                    {
                        Ok(_) => {
                            launched.push((record, owner));
                            Ok(())
                        }
                        Err(e) => {
                            // Nothing runs that no tenant owns.
                            let _ = self.api.host.terminate(&record.id).await;
                            Err(e)
                        }
                    }
                }
                Err(e) => Err(Ec2Error::from_compute(e)),
            };
            if let Err(e) = outcome {
                if launched.len() >= min as usize {
                    break;
                }
                for (record, _) in &launched {
                    let _ = self.api.host.terminate(&record.id).await;
                }
                return Err(e);
            }
        }
        let tenant = self.tenant().to_owned();
        let mut x = Xml::new();
        x.text("reservationId", &reservation_id)
            .text("ownerId", &tenant)
            .element("groupSet", |_| {})
            .set("instancesSet", &launched, |x, (record, owner)| {
                self.write_instance(x, record, owner, Some(&image));
            });
        Ok(x.into_string())
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
    }

    /// The caller's instance `id` on the host, or `NotFound` (also for an
    /// instance of another tenant).
    async fn owned(&self, id: &str) -> Ec2Result<(InstanceOwner, InstanceRecord)> {
        let owner: InstanceOwner = self
            .api
            .records
            .get(INSTANCES, self.tenant(), id)
            .await?
            .ok_or_else(|| Ec2Error::instance_not_found(id))?;
        let record = self
            .api
            .host
            .describe(id)
            .map_err(|_| Ec2Error::instance_not_found(id))?;
        Ok((owner, record))
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
        for owner in owners {
            if !ids.is_empty() && !ids.contains(&owner.id) {
                continue;
            }
            let Ok(record) = self.api.host.describe(&owner.id) else {
                // The host forgot a long-terminated instance: so do we.
                self.api
                    .records
                    .delete(INSTANCES, self.tenant(), &owner.id)
                    .await?;
                continue;
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
    async fn named_instances(&self, action: &str) -> Ec2Result<Vec<InstanceRecord>> {
        let ids = self.params.list("InstanceId")?;
        if ids.is_empty() {
            return Err(Ec2Error::missing_parameter("InstanceId"));
        }
        for id in &ids {
            self.authorize(action, &self.arn("instance", id)).await?;
        }
        let mut records = Vec::with_capacity(ids.len());
        for id in &ids {
            records.push(self.owned(id).await?.1);
        }
        Ok(records)
    }

    async fn change_state(&self, action: &str) -> Ec2Result<String> {
        let before = self.named_instances(action).await?;
        let mut changes = Vec::with_capacity(before.len());
        for record in before {
            let host = &self.api.host;
            let after = match action {
                "StopInstances" => host.stop(&record.id).await,
                "StartInstances" => host.start(&record.id).await,
                _ => host.terminate(&record.id).await,
            }
            .map_err(Ec2Error::from_compute)?;
            changes.push((record.id, record.state, after.state));
        }
        let mut x = Xml::new();
        x.set("instancesSet", &changes, |x, (id, previous, current)| {
            x.text("instanceId", id);
            write_state(x, "currentState", *current);
            write_state(x, "previousState", *previous);
        });
        Ok(x.into_string())
    }

    async fn reboot_instances(&self) -> Ec2Result<String> {
        for record in self.named_instances("RebootInstances").await? {
            self.api
                .host
                .reboot(&record.id)
                .await
                .map_err(Ec2Error::from_compute)?;
        }
        Ok(Xml::new().text("return", "true").take_string())
    }

    async fn console_output(&self) -> Ec2Result<String> {
        let id = self.params.required("InstanceId")?;
        self.authorize("GetConsoleOutput", &self.arn("instance", id))
            .await?;
        self.owned(id).await?;
        let output = self
            .api
            .host
            .console_output(id)
            .map_err(Ec2Error::from_compute)?;
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
        let mut x = Xml::new();
        x.set(
            "availabilityZoneInfo",
            &[settings.availability_zone.as_str()],
            |x, zone| {
                x.text("zoneName", zone)
                    .text("zoneState", "available")
                    .text("regionName", &settings.region)
                    .text("zoneId", zone)
                    .text("zoneType", "availability-zone")
                    .text("optInStatus", "opt-in-not-required");
            },
        );
        Ok(x.into_string())
    }
}
