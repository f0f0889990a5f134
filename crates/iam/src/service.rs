//! [`Iam`]: the identity service over a document store.

use crate::model::*;
use crate::{IamError, IamResult};
use nuage_base::Clock;
use nuage_meta::{DocumentStore, DocumentWrite, Expect, MetaError};
use rand::Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;

const TENANTS: &str = "iam.tenant";
const TENANT_NAMES: &str = "iam.tenant-name";
const USERS: &str = "iam.user";
const GROUPS: &str = "iam.group";
const ROLES: &str = "iam.role";
const POLICIES: &str = "iam.policy";
const KEYS: &str = "iam.key";
const SESSIONS: &str = "iam.session";

/// AWS allows two access keys per user, so that one can be rotated.
pub const ACCESS_KEYS_PER_USER_MAX: usize = 2;
/// Most entities of one kind a list call returns.
pub const LIST_ENTITIES_MAX: usize = 1000;
/// Entities of one kind per tenant.
pub const ENTITIES_PER_TENANT_MAX: usize = 5000;
/// Attached managed policies per user, group or role (AWS: 10 by default).
pub const ATTACHED_POLICIES_MAX: usize = 10;
/// Inline policies per identity.
pub const INLINE_POLICIES_MAX: usize = 100;
/// Session durations (AWS: 15 minutes to 12 hours; roles default to 1 hour).
pub const SESSION_DURATION_S_MIN: u32 = 900;
pub const SESSION_DURATION_S_MAX: u32 = 43_200;
pub const ROLE_SESSION_DURATION_S_DEFAULT: u32 = 3600;
/// How stale an access key's last-used time may be: recording every use
/// would cost a metadata write per request.
pub const KEY_LAST_USED_PRECISION_NS: i64 = 60 * 1_000_000_000;
/// Retries of a read-modify-write that lost a race.
const CONFLICT_RETRIES_MAX: usize = 16;

const KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn random_string(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| char::from(alphabet[rng.gen_range(0..alphabet.len())]))
        .collect()
}

fn random_digits(len: usize) -> String {
    let mut rng = rand::thread_rng();
    let first = char::from(b'1' + rng.gen_range(0..9u8));
    std::iter::once(first)
        .chain((1..len).map(|_| char::from(b'0' + rng.gen_range(0..10u8))))
        .collect()
}

/// IAM names: letters, digits and `+=,.@_-`, 1 to `max` characters.
fn validate_name(kind: &str, name: &str, max: usize) -> IamResult<()> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(IamError::InvalidInput(format!(
            "{kind} name `{name}` must be 1 to {max} characters of letters, digits and +=,.@_-"
        )))
    }
}

fn validate_path(path: &str) -> IamResult<()> {
    let ok = path.starts_with('/')
        && path.ends_with('/')
        && path.len() <= 512
        && path.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(IamError::InvalidInput(format!(
            "path `{path}` must begin and end with /"
        )))
    }
}

fn entity_key(tenant: &str, name: &str) -> String {
    format!("{tenant}/{}", name.to_ascii_lowercase())
}

fn write<T: Serialize>(
    namespace: &str,
    key: &str,
    expect: Expect,
    value: &T,
) -> IamResult<DocumentWrite> {
    Ok(DocumentWrite {
        namespace: namespace.into(),
        key: key.into(),
        expect,
        value: Some(serde_json::to_vec(value)?),
    })
}

fn delete(namespace: &str, key: &str, revision: u64) -> DocumentWrite {
    DocumentWrite {
        namespace: namespace.into(),
        key: key.into(),
        expect: Expect::Revision(revision),
        value: None,
    }
}

/// Which kind of identity an inline or attached policy belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyHolder {
    User,
    Group,
    Role,
}

impl PolicyHolder {
    fn namespace(self) -> &'static str {
        match self {
            Self::User => USERS,
            Self::Group => GROUPS,
            Self::Role => ROLES,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Group => "group",
            Self::Role => "role",
        }
    }
}

/// The identity service.
#[derive(Clone)]
pub struct Iam {
    docs: Arc<dyn DocumentStore>,
    clock: Arc<dyn Clock>,
}

impl Iam {
    #[must_use]
    pub fn new(docs: Arc<dyn DocumentStore>, clock: Arc<dyn Clock>) -> Self {
        Self { docs, clock }
    }

    fn now(&self) -> i64 {
        self.clock.now_unix_ns()
    }

    pub(crate) fn now_unix_s(&self) -> i64 {
        self.clock.now_unix_ns().div_euclid(1_000_000_000)
    }

    pub(crate) fn now_ns(&self) -> i64 {
        self.now()
    }

    // Document access for the other modules of the crate (access approvals).

    pub(crate) async fn load_document<T: DeserializeOwned>(
        &self,
        namespace: &str,
        key: &str,
    ) -> IamResult<Option<(T, u64)>> {
        self.load(namespace, key).await
    }

    pub(crate) async fn scan_documents<T: DeserializeOwned>(
        &self,
        namespace: &str,
        prefix: &str,
    ) -> IamResult<Vec<(T, u64)>> {
        self.scan(namespace, prefix).await
    }

    /// Stores a document under a fresh (random) key; a taken key is a collision.
    pub(crate) async fn create_document<T: Serialize>(
        &self,
        namespace: &str,
        key: &str,
        value: &T,
    ) -> IamResult<()> {
        match self
            .commit(vec![write(namespace, key, Expect::Absent, value)?])
            .await
        {
            Ok(()) => Ok(()),
            Err(Retry::Conflict) => Err(IamError::Internal(format!(
                "{namespace} id collision; try again"
            ))),
            Err(Retry::Fail(e)) => Err(e),
        }
    }

    /// Replaces a document read at `revision`; a concurrent change retries.
    pub(crate) async fn replace_document<T: Serialize>(
        &self,
        namespace: &str,
        key: &str,
        revision: u64,
        value: &T,
    ) -> Result<(), Retry> {
        self.commit(vec![write(
            namespace,
            key,
            Expect::Revision(revision),
            value,
        )?])
        .await
    }

    pub(crate) async fn retrying_update<T, F, Fut>(&self, attempt: F) -> IamResult<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Retry>>,
    {
        self.retrying(attempt).await
    }

    async fn load<T: DeserializeOwned>(
        &self,
        namespace: &str,
        key: &str,
    ) -> IamResult<Option<(T, u64)>> {
        match self.docs.get_document(namespace, key).await? {
            None => Ok(None),
            Some(doc) => Ok(Some((serde_json::from_slice(&doc.value)?, doc.revision))),
        }
    }

    async fn scan<T: DeserializeOwned>(
        &self,
        namespace: &str,
        prefix: &str,
    ) -> IamResult<Vec<(T, u64)>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .docs
                .scan_documents(namespace, prefix, after.as_deref(), LIST_ENTITIES_MAX)
                .await?;
            let full = page.len() == LIST_ENTITIES_MAX;
            after = page.last().map(|d| d.key.clone());
            for doc in page {
                out.push((serde_json::from_slice(&doc.value)?, doc.revision));
            }
            if !full || out.len() > 10 * ENTITIES_PER_TENANT_MAX {
                return Ok(out);
            }
        }
    }

    /// Commits; a lost race becomes `Conflict` for the retry loop.
    async fn commit(&self, writes: Vec<DocumentWrite>) -> Result<(), Retry> {
        match self.docs.commit_documents(writes).await {
            Ok(()) => Ok(()),
            Err(MetaError::PreconditionFailed) => Err(Retry::Conflict),
            Err(e) => Err(Retry::Fail(e.into())),
        }
    }

    /// Stores a new entity under a key that must be free; a taken key is
    /// `EntityAlreadyExists` with `exists`'s message.
    async fn create<T: Serialize>(
        &self,
        namespace: &str,
        key: String,
        value: T,
        exists: impl FnOnce() -> String,
    ) -> IamResult<T> {
        match self
            .commit(vec![write(namespace, &key, Expect::Absent, &value)?])
            .await
        {
            Ok(()) => Ok(value),
            Err(Retry::Conflict) => Err(IamError::EntityAlreadyExists(exists())),
            Err(Retry::Fail(e)) => Err(e),
        }
    }

    /// Runs a read-modify-write until it commits without a concurrent change.
    async fn retrying<T, F, Fut>(&self, mut attempt: F) -> IamResult<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Retry>>,
    {
        for _ in 0..CONFLICT_RETRIES_MAX {
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(Retry::Conflict) => {}
                Err(Retry::Fail(e)) => return Err(e),
            }
        }
        Err(IamError::Internal(
            "too many concurrent changes to the same identity; try again".into(),
        ))
    }

    // ---------------- tenants ----------------

    /// Creates a tenant with a fresh twelve-digit id.
    ///
    /// # Errors
    /// `EntityAlreadyExists` when the name is taken, `InvalidInput`.
    pub async fn create_tenant(
        &self,
        name: &str,
        legal_country: &str,
        billing_contact: &str,
    ) -> IamResult<Tenant> {
        validate_name("tenant", name, 64)?;
        if legal_country.len() != 2 || !legal_country.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(IamError::InvalidInput(format!(
                "legal country `{legal_country}` must be an ISO 3166-1 alpha-2 code"
            )));
        }
        let tenant = Tenant {
            id: random_digits(12),
            name: name.to_owned(),
            legal_country: legal_country.to_owned(),
            billing_contact: billing_contact.to_owned(),
            status: TenantStatus::Active,
            created_unix_ns: self.now(),
            public_access_block: TenantPublicAccessBlock::default(),
            residency_policy: None,
        };
        let writes = vec![
            write(TENANTS, &tenant.id, Expect::Absent, &tenant)?,
            DocumentWrite {
                namespace: TENANT_NAMES.into(),
                key: name.to_ascii_lowercase(),
                expect: Expect::Absent,
                value: Some(tenant.id.as_bytes().to_vec()),
            },
        ];
        match self.commit(writes).await {
            Ok(()) => Ok(tenant),
            Err(Retry::Conflict) => Err(IamError::EntityAlreadyExists(format!(
                "a tenant named `{name}` already exists"
            ))),
            Err(Retry::Fail(e)) => Err(e),
        }
    }

    /// A tenant by id or by name.
    ///
    /// # Errors
    /// `NoSuchEntity`.
    pub async fn tenant(&self, id_or_name: &str) -> IamResult<Tenant> {
        Ok(self.tenant_with_revision(id_or_name).await?.0)
    }

    async fn tenant_with_revision(&self, id_or_name: &str) -> IamResult<(Tenant, u64)> {
        if let Some(found) = self.load::<Tenant>(TENANTS, id_or_name).await? {
            return Ok(found);
        }
        if let Some(doc) = self
            .docs
            .get_document(TENANT_NAMES, &id_or_name.to_ascii_lowercase())
            .await?
        {
            let id = String::from_utf8_lossy(&doc.value).into_owned();
            if let Some(found) = self.load::<Tenant>(TENANTS, &id).await? {
                return Ok(found);
            }
        }
        Err(IamError::NoSuchEntity(format!(
            "tenant `{id_or_name}` does not exist"
        )))
    }

    /// # Errors
    /// Backend failure.
    pub async fn list_tenants(&self) -> IamResult<Vec<Tenant>> {
        Ok(self
            .scan::<Tenant>(TENANTS, "")
            .await?
            .into_iter()
            .map(|(t, _)| t)
            .collect())
    }

    /// Suspends or resumes a tenant: takes effect on the next request.
    ///
    /// # Errors
    /// `NoSuchEntity`.
    pub async fn set_tenant_status(
        &self,
        id_or_name: &str,
        status: TenantStatus,
    ) -> IamResult<Tenant> {
        self.retrying(|| async {
            let (mut tenant, revision) = self
                .tenant_with_revision(id_or_name)
                .await
                .map_err(Retry::Fail)?;
            tenant.status = status;
            self.commit(vec![
                write(TENANTS, &tenant.id, Expect::Revision(revision), &tenant)
                    .map_err(Retry::Fail)?,
            ])
            .await?;
            Ok(tenant)
        })
        .await
    }

    /// Sets the tenant-wide Block Public Access settings.
    ///
    /// # Errors
    /// `NoSuchEntity`.
    pub async fn set_tenant_public_access_block(
        &self,
        id_or_name: &str,
        block: TenantPublicAccessBlock,
    ) -> IamResult<Tenant> {
        self.retrying(|| async {
            let (mut tenant, revision) = self
                .tenant_with_revision(id_or_name)
                .await
                .map_err(Retry::Fail)?;
            tenant.public_access_block = block;
            self.commit(vec![
                write(TENANTS, &tenant.id, Expect::Revision(revision), &tenant)
                    .map_err(Retry::Fail)?,
            ])
            .await?;
            Ok(tenant)
        })
        .await
    }

    /// Sets (Some) or removes (None) the tenant's residency policy, stored
    /// as given: the caller (the admin API) checks it first.
    ///
    /// # Errors
    /// `NoSuchEntity`.
    pub async fn set_tenant_residency_policy(
        &self,
        id_or_name: &str,
        policy: Option<String>,
    ) -> IamResult<Tenant> {
        self.retrying(|| async {
            let (mut tenant, revision) = self
                .tenant_with_revision(id_or_name)
                .await
                .map_err(Retry::Fail)?;
            tenant.residency_policy.clone_from(&policy);
            self.commit(vec![
                write(TENANTS, &tenant.id, Expect::Revision(revision), &tenant)
                    .map_err(Retry::Fail)?,
            ])
            .await?;
            Ok(tenant)
        })
        .await
    }

    /// Deletes a tenant and every identity, key and session it holds. The
    /// caller must first make sure it owns no data (or purge it).
    ///
    /// # Errors
    /// `NoSuchEntity`.
    pub async fn delete_tenant(&self, id_or_name: &str) -> IamResult<Tenant> {
        let (tenant, revision) = self.tenant_with_revision(id_or_name).await?;
        let prefix = format!("{}/", tenant.id);
        let mut writes = Vec::new();
        for namespace in [USERS, GROUPS, ROLES, POLICIES] {
            for doc in self
                .docs
                .scan_documents(namespace, &prefix, None, usize::MAX)
                .await?
            {
                writes.push(delete(namespace, &doc.key, doc.revision));
            }
        }
        for (key, rev) in self.scan::<AccessKey>(KEYS, "").await? {
            if key.tenant_id == tenant.id {
                writes.push(delete(KEYS, &key.access_key_id, rev));
            }
        }
        for (request, rev) in self
            .scan::<crate::access::OperatorAccessRequest>(
                crate::access::ACCESS_REQUESTS,
                &format!("{}-", tenant.id),
            )
            .await?
        {
            writes.push(delete(crate::access::ACCESS_REQUESTS, &request.id, rev));
        }
        for (session, rev) in self.scan::<Session>(SESSIONS, "").await? {
            if session.tenant_id == tenant.id {
                writes.push(delete(SESSIONS, &session.access_key_id, rev));
            }
        }
        if let Some(doc) = self
            .docs
            .get_document(TENANT_NAMES, &tenant.name.to_ascii_lowercase())
            .await?
        {
            writes.push(delete(TENANT_NAMES, &doc.key, doc.revision));
        }
        writes.push(delete(TENANTS, &tenant.id, revision));
        self.commit(writes).await.map_err(|e| match e {
            Retry::Conflict => IamError::Internal(
                "the tenant changed while it was being deleted; try again".into(),
            ),
            Retry::Fail(e) => e,
        })?;
        Ok(tenant)
    }

    // ---------------- users ----------------

    /// # Errors
    /// `EntityAlreadyExists`, `InvalidInput`, `NoSuchEntity` for the tenant.
    pub async fn create_user(
        &self,
        tenant_id: &str,
        name: &str,
        path: Option<&str>,
        tags: Vec<(String, String)>,
    ) -> IamResult<User> {
        validate_name("user", name, 64)?;
        let path = path.unwrap_or("/");
        validate_path(path)?;
        self.tenant(tenant_id).await?;
        let user = User {
            tenant_id: tenant_id.to_owned(),
            name: name.to_owned(),
            path: path.to_owned(),
            id: format!("AIDA{}", random_string(KEY_ALPHABET, 17)),
            created_unix_ns: self.now(),
            tags,
            policies: PolicySet::default(),
            groups: Vec::new(),
        };
        self.create(USERS, entity_key(tenant_id, name), user, || {
            format!("user with name {name} already exists")
        })
        .await
    }

    async fn user_with_revision(&self, tenant_id: &str, name: &str) -> IamResult<(User, u64)> {
        self.load(USERS, &entity_key(tenant_id, name))
            .await?
            .ok_or_else(|| {
                IamError::NoSuchEntity(format!("the user with name {name} cannot be found"))
            })
    }

    /// # Errors
    /// `NoSuchEntity`.
    pub async fn user(&self, tenant_id: &str, name: &str) -> IamResult<User> {
        Ok(self.user_with_revision(tenant_id, name).await?.0)
    }

    /// Users of a tenant whose path starts with `path_prefix`.
    ///
    /// # Errors
    /// Backend failure.
    pub async fn list_users(&self, tenant_id: &str, path_prefix: &str) -> IamResult<Vec<User>> {
        let users = self.scan::<User>(USERS, &format!("{tenant_id}/")).await?;
        Ok(users
            .into_iter()
            .map(|(u, _)| u)
            .filter(|u| u.path.starts_with(path_prefix))
            .collect())
    }

    /// Deletes a user that has no access keys, policies or group memberships
    /// left (AWS's `DeleteConflict` otherwise).
    ///
    /// # Errors
    /// `NoSuchEntity`, `DeleteConflict`.
    pub async fn delete_user(&self, tenant_id: &str, name: &str) -> IamResult<()> {
        let (user, revision) = self.user_with_revision(tenant_id, name).await?;
        if !self.list_access_keys(tenant_id, name).await?.is_empty() {
            return Err(IamError::DeleteConflict(
                "cannot delete entity, must delete access keys first".into(),
            ));
        }
        if !user.policies.inline.is_empty() || !user.policies.attached.is_empty() {
            return Err(IamError::DeleteConflict(
                "cannot delete entity, must delete or detach policies first".into(),
            ));
        }
        if !user.groups.is_empty() {
            return Err(IamError::DeleteConflict(
                "cannot delete entity, must remove users from group first".into(),
            ));
        }
        self.commit(vec![delete(USERS, &entity_key(tenant_id, name), revision)])
            .await
            .map_err(|e| match e {
                Retry::Conflict => IamError::Internal(
                    "the user changed while it was being deleted; try again".into(),
                ),
                Retry::Fail(e) => e,
            })
    }

    // ---------------- access keys ----------------

    /// Creates an access key for a user (at most two per user).
    ///
    /// # Errors
    /// `NoSuchEntity`, `LimitExceeded`.
    pub async fn create_access_key(
        &self,
        tenant_id: &str,
        user_name: &str,
    ) -> IamResult<AccessKey> {
        let id = format!("NUAK{}", random_string(KEY_ALPHABET, 16));
        let secret = random_string(SECRET_ALPHABET, 40);
        self.import_access_key(tenant_id, user_name, &id, &secret)
            .await
    }

    /// Stores a given key pair for a user (first start imports the key it printed).
    ///
    /// # Errors
    /// `NoSuchEntity`, `LimitExceeded`, `EntityAlreadyExists`.
    pub async fn import_access_key(
        &self,
        tenant_id: &str,
        user_name: &str,
        access_key_id: &str,
        secret: &str,
    ) -> IamResult<AccessKey> {
        let user = self.user(tenant_id, user_name).await?;
        if self.list_access_keys(tenant_id, user_name).await?.len() >= ACCESS_KEYS_PER_USER_MAX {
            return Err(IamError::LimitExceeded(format!(
                "cannot exceed quota for AccessKeysPerUser: {ACCESS_KEYS_PER_USER_MAX}"
            )));
        }
        let key = AccessKey {
            access_key_id: access_key_id.to_owned(),
            secret_access_key: secret.to_owned(),
            tenant_id: tenant_id.to_owned(),
            user_name: user.name,
            status: KeyStatus::Active,
            created_unix_ns: self.now(),
            last_used_unix_ns: None,
            last_used_service: None,
            last_used_region: None,
        };
        self.create(KEYS, key.access_key_id.clone(), key, || {
            format!("access key {access_key_id} already exists")
        })
        .await
    }

    /// # Errors
    /// Backend failure.
    pub async fn list_access_keys(
        &self,
        tenant_id: &str,
        user_name: &str,
    ) -> IamResult<Vec<AccessKey>> {
        // Keys are few per tenant; a per-user index can come with scale.
        Ok(self
            .scan::<AccessKey>(KEYS, "")
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k.tenant_id == tenant_id && k.user_name.eq_ignore_ascii_case(user_name))
            .collect())
    }

    async fn owned_key(
        &self,
        tenant_id: &str,
        user_name: &str,
        access_key_id: &str,
    ) -> IamResult<(AccessKey, u64)> {
        match self.load::<AccessKey>(KEYS, access_key_id).await? {
            Some((key, rev))
                if key.tenant_id == tenant_id && key.user_name.eq_ignore_ascii_case(user_name) =>
            {
                Ok((key, rev))
            }
            _ => Err(IamError::NoSuchEntity(format!(
                "the access key with id {access_key_id} cannot be found"
            ))),
        }
    }

    /// A key of the tenant, by id.
    ///
    /// # Errors
    /// `NoSuchEntity` (also for another tenant's key).
    pub async fn access_key(&self, tenant_id: &str, access_key_id: &str) -> IamResult<AccessKey> {
        match self.load::<AccessKey>(KEYS, access_key_id).await? {
            Some((key, _)) if key.tenant_id == tenant_id => Ok(key),
            _ => Err(IamError::NoSuchEntity(format!(
                "the access key with id {access_key_id} cannot be found"
            ))),
        }
    }

    /// Records that a long-lived key signed a request for `service` in
    /// `region` (at most once per [`KEY_LAST_USED_PRECISION_NS`]); temporary
    /// credentials are not recorded.
    ///
    /// # Errors
    /// Backend failure.
    pub async fn record_key_use(
        &self,
        identity: &Identity,
        service: &str,
        region: &str,
    ) -> IamResult<()> {
        if identity.session_token.is_some() {
            return Ok(());
        }
        let now = self.now();
        let fresh = identity.key_last_used.as_ref().is_some_and(|used| {
            now - used.at_unix_ns < KEY_LAST_USED_PRECISION_NS
                && used.service == service
                && used.region == region
        });
        if fresh {
            return Ok(());
        }
        let access_key_id = identity.access_key_id.as_str();
        let Some((mut key, revision)) = self.load::<AccessKey>(KEYS, access_key_id).await? else {
            return Ok(());
        };
        key.last_used_unix_ns = Some(now);
        key.last_used_service = Some(service.to_owned());
        key.last_used_region = Some(region.to_owned());
        match self
            .commit(vec![write(
                KEYS,
                access_key_id,
                Expect::Revision(revision),
                &key,
            )?])
            .await
        {
            // A concurrent request recorded it (or changed the key): either way, done.
            Ok(()) | Err(Retry::Conflict) => Ok(()),
            Err(Retry::Fail(e)) => Err(e),
        }
    }

    /// Activates or deactivates a key; takes effect on the next request.
    ///
    /// # Errors
    /// `NoSuchEntity`.
    pub async fn set_access_key_status(
        &self,
        tenant_id: &str,
        user_name: &str,
        access_key_id: &str,
        status: KeyStatus,
    ) -> IamResult<()> {
        self.retrying(|| async {
            let (mut key, rev) = self
                .owned_key(tenant_id, user_name, access_key_id)
                .await
                .map_err(Retry::Fail)?;
            key.status = status;
            self.commit(vec![
                write(KEYS, access_key_id, Expect::Revision(rev), &key).map_err(Retry::Fail)?,
            ])
            .await
        })
        .await
    }

    /// # Errors
    /// `NoSuchEntity`.
    pub async fn delete_access_key(
        &self,
        tenant_id: &str,
        user_name: &str,
        access_key_id: &str,
    ) -> IamResult<()> {
        self.retrying(|| async {
            let (_, rev) = self
                .owned_key(tenant_id, user_name, access_key_id)
                .await
                .map_err(Retry::Fail)?;
            self.commit(vec![delete(KEYS, access_key_id, rev)]).await
        })
        .await
    }

    // ---------------- groups ----------------

    /// # Errors
    /// `EntityAlreadyExists`, `InvalidInput`.
    pub async fn create_group(
        &self,
        tenant_id: &str,
        name: &str,
        path: Option<&str>,
    ) -> IamResult<Group> {
        validate_name("group", name, 128)?;
        let path = path.unwrap_or("/");
        validate_path(path)?;
        self.tenant(tenant_id).await?;
        let group = Group {
            tenant_id: tenant_id.to_owned(),
            name: name.to_owned(),
            path: path.to_owned(),
            id: format!("AGPA{}", random_string(KEY_ALPHABET, 17)),
            created_unix_ns: self.now(),
            policies: PolicySet::default(),
        };
        self.create(GROUPS, entity_key(tenant_id, name), group, || {
            format!("group with name {name} already exists")
        })
        .await
    }

    /// A group and its members.
    ///
    /// # Errors
    /// `NoSuchEntity`.
    pub async fn group(&self, tenant_id: &str, name: &str) -> IamResult<(Group, Vec<User>)> {
        let (group, _) = self
            .load::<Group>(GROUPS, &entity_key(tenant_id, name))
            .await?
            .ok_or_else(|| {
                IamError::NoSuchEntity(format!("the group with name {name} cannot be found"))
            })?;
        let members = self
            .list_users(tenant_id, "/")
            .await?
            .into_iter()
            .filter(|u| u.groups.iter().any(|g| g.eq_ignore_ascii_case(&group.name)))
            .collect();
        Ok((group, members))
    }

    /// # Errors
    /// Backend failure.
    pub async fn list_groups(&self, tenant_id: &str, path_prefix: &str) -> IamResult<Vec<Group>> {
        let groups = self.scan::<Group>(GROUPS, &format!("{tenant_id}/")).await?;
        Ok(groups
            .into_iter()
            .map(|(g, _)| g)
            .filter(|g| g.path.starts_with(path_prefix))
            .collect())
    }

    /// # Errors
    /// `NoSuchEntity`, `DeleteConflict` while it has members or policies.
    pub async fn delete_group(&self, tenant_id: &str, name: &str) -> IamResult<()> {
        let (group, members) = self.group(tenant_id, name).await?;
        if !members.is_empty() {
            return Err(IamError::DeleteConflict(
                "cannot delete entity, must remove users from group first".into(),
            ));
        }
        if !group.policies.inline.is_empty() || !group.policies.attached.is_empty() {
            return Err(IamError::DeleteConflict(
                "cannot delete entity, must delete or detach policies first".into(),
            ));
        }
        self.retrying(|| async {
            let (_, rev) = self
                .load::<Group>(GROUPS, &entity_key(tenant_id, name))
                .await
                .map_err(Retry::Fail)?
                .ok_or_else(|| {
                    Retry::Fail(IamError::NoSuchEntity(format!(
                        "the group with name {name} cannot be found"
                    )))
                })?;
            self.commit(vec![delete(GROUPS, &entity_key(tenant_id, name), rev)])
                .await
        })
        .await
    }

    /// Adds (`member = true`) or removes a user from a group.
    ///
    /// # Errors
    /// `NoSuchEntity`.
    pub async fn set_group_membership(
        &self,
        tenant_id: &str,
        group: &str,
        user_name: &str,
        member: bool,
    ) -> IamResult<()> {
        let (group, _) = self.group(tenant_id, group).await?;
        self.retrying(|| async {
            let (mut user, rev) = self
                .user_with_revision(tenant_id, user_name)
                .await
                .map_err(Retry::Fail)?;
            user.groups.retain(|g| !g.eq_ignore_ascii_case(&group.name));
            if member {
                user.groups.push(group.name.clone());
            }
            self.commit(vec![
                write(
                    USERS,
                    &entity_key(tenant_id, user_name),
                    Expect::Revision(rev),
                    &user,
                )
                .map_err(Retry::Fail)?,
            ])
            .await
        })
        .await
    }

    // ---------------- roles ----------------

    /// Creates a role with its trust policy (validated by the caller, who
    /// knows the policy language).
    ///
    /// # Errors
    /// `EntityAlreadyExists`, `InvalidInput`.
    pub async fn create_role(
        &self,
        tenant_id: &str,
        name: &str,
        path: Option<&str>,
        assume_role_policy: &str,
        max_session_duration_s: Option<u32>,
        description: &str,
    ) -> IamResult<Role> {
        validate_name("role", name, 64)?;
        let path = path.unwrap_or("/");
        validate_path(path)?;
        let max = max_session_duration_s.unwrap_or(ROLE_SESSION_DURATION_S_DEFAULT);
        if !(3600..=SESSION_DURATION_S_MAX).contains(&max) {
            return Err(IamError::InvalidInput(
                "MaxSessionDuration must be between 3600 and 43200 seconds".into(),
            ));
        }
        self.tenant(tenant_id).await?;
        let role = Role {
            tenant_id: tenant_id.to_owned(),
            name: name.to_owned(),
            path: path.to_owned(),
            id: format!("AROA{}", random_string(KEY_ALPHABET, 17)),
            created_unix_ns: self.now(),
            assume_role_policy: assume_role_policy.to_owned(),
            max_session_duration_s: max,
            description: description.to_owned(),
            tags: Vec::new(),
            policies: PolicySet::default(),
        };
        self.create(ROLES, entity_key(tenant_id, name), role, || {
            format!("role with name {name} already exists")
        })
        .await
    }

    /// # Errors
    /// `NoSuchEntity`.
    pub async fn role(&self, tenant_id: &str, name: &str) -> IamResult<Role> {
        self.load::<Role>(ROLES, &entity_key(tenant_id, name))
            .await?
            .map(|(r, _)| r)
            .ok_or_else(|| {
                IamError::NoSuchEntity(format!("the role with name {name} cannot be found"))
            })
    }

    /// # Errors
    /// Backend failure.
    pub async fn list_roles(&self, tenant_id: &str, path_prefix: &str) -> IamResult<Vec<Role>> {
        let roles = self.scan::<Role>(ROLES, &format!("{tenant_id}/")).await?;
        Ok(roles
            .into_iter()
            .map(|(r, _)| r)
            .filter(|r| r.path.starts_with(path_prefix))
            .collect())
    }

    /// # Errors
    /// `NoSuchEntity`, `DeleteConflict` while it has policies.
    pub async fn delete_role(&self, tenant_id: &str, name: &str) -> IamResult<()> {
        self.retrying(|| async {
            let (role, rev) = self
                .load::<Role>(ROLES, &entity_key(tenant_id, name))
                .await
                .map_err(Retry::Fail)?
                .ok_or_else(|| {
                    Retry::Fail(IamError::NoSuchEntity(format!(
                        "the role with name {name} cannot be found"
                    )))
                })?;
            if !role.policies.inline.is_empty() || !role.policies.attached.is_empty() {
                return Err(Retry::Fail(IamError::DeleteConflict(
                    "cannot delete entity, must delete or detach policies first".into(),
                )));
            }
            self.commit(vec![delete(ROLES, &entity_key(tenant_id, name), rev)])
                .await
        })
        .await
    }

    /// Replaces a role's trust policy.
    ///
    /// # Errors
    /// `NoSuchEntity`.
    pub async fn update_assume_role_policy(
        &self,
        tenant_id: &str,
        name: &str,
        document: &str,
    ) -> IamResult<()> {
        self.retrying(|| async {
            let (mut role, rev) = self
                .load::<Role>(ROLES, &entity_key(tenant_id, name))
                .await
                .map_err(Retry::Fail)?
                .ok_or_else(|| {
                    Retry::Fail(IamError::NoSuchEntity(format!(
                        "the role with name {name} cannot be found"
                    )))
                })?;
            role.assume_role_policy = document.to_owned();
            self.commit(vec![
                write(
                    ROLES,
                    &entity_key(tenant_id, name),
                    Expect::Revision(rev),
                    &role,
                )
                .map_err(Retry::Fail)?,
            ])
            .await
        })
        .await
    }

    // ---------------- policies ----------------

    /// Changes the policy set of a user, group or role in one revision-checked step.
    async fn update_policies(
        &self,
        holder: PolicyHolder,
        tenant_id: &str,
        name: &str,
        change: impl Fn(&mut PolicySet) -> IamResult<()>,
    ) -> IamResult<()> {
        let namespace = holder.namespace();
        let key = entity_key(tenant_id, name);
        self.retrying(|| async {
            let doc = self
                .docs
                .get_document(namespace, &key)
                .await
                .map_err(|e| Retry::Fail(e.into()))?
                .ok_or_else(|| {
                    Retry::Fail(IamError::NoSuchEntity(format!(
                        "the {} with name {name} cannot be found",
                        holder.noun()
                    )))
                })?;
            let mut value: serde_json::Value =
                serde_json::from_slice(&doc.value).map_err(|e| Retry::Fail(e.into()))?;
            let mut set: PolicySet = value
                .get("policies")
                .cloned()
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| Retry::Fail(e.into()))?
                .unwrap_or_default();
            change(&mut set).map_err(Retry::Fail)?;
            if let Some(object) = value.as_object_mut() {
                object.insert(
                    "policies".into(),
                    serde_json::to_value(&set).map_err(|e| Retry::Fail(e.into()))?,
                );
            }
            self.commit(vec![
                write(namespace, &key, Expect::Revision(doc.revision), &value)
                    .map_err(Retry::Fail)?,
            ])
            .await
        })
        .await
    }

    /// Puts an inline policy (already validated by the caller).
    ///
    /// # Errors
    /// `NoSuchEntity`, `LimitExceeded`, `InvalidInput`.
    pub async fn put_inline_policy(
        &self,
        holder: PolicyHolder,
        tenant_id: &str,
        name: &str,
        policy_name: &str,
        document: &str,
    ) -> IamResult<()> {
        validate_name("policy", policy_name, 128)?;
        self.update_policies(holder, tenant_id, name, |set| {
            if !set.inline.contains_key(policy_name) && set.inline.len() >= INLINE_POLICIES_MAX {
                return Err(IamError::LimitExceeded(format!(
                    "cannot exceed {INLINE_POLICIES_MAX} inline policies"
                )));
            }
            set.inline
                .insert(policy_name.to_owned(), document.to_owned());
            Ok(())
        })
        .await
    }

    /// # Errors
    /// `NoSuchEntity`.
    pub async fn delete_inline_policy(
        &self,
        holder: PolicyHolder,
        tenant_id: &str,
        name: &str,
        policy_name: &str,
    ) -> IamResult<()> {
        self.update_policies(holder, tenant_id, name, |set| {
            set.inline.remove(policy_name).map(drop).ok_or_else(|| {
                IamError::NoSuchEntity(format!(
                    "the policy with name {policy_name} cannot be found"
                ))
            })
        })
        .await
    }

    /// The inline policies of a user, group or role.
    ///
    /// # Errors
    /// `NoSuchEntity`.
    pub async fn policy_set(
        &self,
        holder: PolicyHolder,
        tenant_id: &str,
        name: &str,
    ) -> IamResult<PolicySet> {
        let doc = self
            .docs
            .get_document(holder.namespace(), &entity_key(tenant_id, name))
            .await?
            .ok_or_else(|| {
                IamError::NoSuchEntity(format!(
                    "the {} with name {name} cannot be found",
                    holder.noun()
                ))
            })?;
        let value: serde_json::Value = serde_json::from_slice(&doc.value)?;
        Ok(value
            .get("policies")
            .cloned()
            .map(serde_json::from_value)
            .transpose()?
            .unwrap_or_default())
    }

    /// Creates a managed policy (document validated by the caller).
    ///
    /// # Errors
    /// `EntityAlreadyExists`, `InvalidInput`.
    pub async fn create_policy(
        &self,
        tenant_id: &str,
        name: &str,
        path: Option<&str>,
        document: &str,
        description: &str,
    ) -> IamResult<ManagedPolicy> {
        validate_name("policy", name, 128)?;
        let path = path.unwrap_or("/");
        validate_path(path)?;
        self.tenant(tenant_id).await?;
        let policy = ManagedPolicy {
            tenant_id: tenant_id.to_owned(),
            name: name.to_owned(),
            path: path.to_owned(),
            id: format!("ANPA{}", random_string(KEY_ALPHABET, 17)),
            document: document.to_owned(),
            description: description.to_owned(),
            created_unix_ns: self.now(),
        };
        self.create(POLICIES, entity_key(tenant_id, name), policy, || {
            format!("a policy called {name} already exists")
        })
        .await
    }

    /// A managed policy of the tenant by ARN (`arn:aws:iam::TENANT:policy/PATH/NAME`).
    ///
    /// # Errors
    /// `NoSuchEntity`, `InvalidInput` for a malformed ARN or another tenant's policy.
    pub async fn policy_by_arn(&self, tenant_id: &str, arn: &str) -> IamResult<ManagedPolicy> {
        let rest = arn
            .strip_prefix("arn:aws:iam::")
            .and_then(|r| r.split_once(":policy/"))
            .ok_or_else(|| IamError::InvalidInput(format!("`{arn}` is not a policy ARN")))?;
        let (account, path_name) = rest;
        let name = path_name.rsplit('/').next().unwrap_or(path_name);
        if account != tenant_id {
            return Err(IamError::NoSuchEntity(format!(
                "policy {arn} does not exist or is not attachable"
            )));
        }
        self.load::<ManagedPolicy>(POLICIES, &entity_key(tenant_id, name))
            .await?
            .map(|(p, _)| p)
            .filter(|p| p.arn() == arn)
            .ok_or_else(|| {
                IamError::NoSuchEntity(format!("policy {arn} does not exist or is not attachable"))
            })
    }

    /// # Errors
    /// Backend failure.
    pub async fn list_policies(&self, tenant_id: &str) -> IamResult<Vec<ManagedPolicy>> {
        Ok(self
            .scan::<ManagedPolicy>(POLICIES, &format!("{tenant_id}/"))
            .await?
            .into_iter()
            .map(|(p, _)| p)
            .collect())
    }

    /// How many users, groups and roles have the policy attached.
    async fn attachment_count(&self, tenant_id: &str, arn: &str) -> IamResult<usize> {
        let prefix = format!("{tenant_id}/");
        let mut count = 0;
        for namespace in [USERS, GROUPS, ROLES] {
            for doc in self
                .docs
                .scan_documents(namespace, &prefix, None, usize::MAX)
                .await?
            {
                let value: serde_json::Value = serde_json::from_slice(&doc.value)?;
                let set: PolicySet = value
                    .get("policies")
                    .cloned()
                    .map(serde_json::from_value)
                    .transpose()?
                    .unwrap_or_default();
                count += usize::from(set.attached.iter().any(|a| a == arn));
            }
        }
        Ok(count)
    }

    /// A managed policy and how many identities it is attached to.
    ///
    /// # Errors
    /// `NoSuchEntity`.
    pub async fn policy_with_attachments(
        &self,
        tenant_id: &str,
        arn: &str,
    ) -> IamResult<(ManagedPolicy, usize)> {
        let policy = self.policy_by_arn(tenant_id, arn).await?;
        let count = self.attachment_count(tenant_id, arn).await?;
        Ok((policy, count))
    }

    /// # Errors
    /// `NoSuchEntity`, `DeleteConflict` while attached.
    pub async fn delete_policy(&self, tenant_id: &str, arn: &str) -> IamResult<()> {
        let policy = self.policy_by_arn(tenant_id, arn).await?;
        if self.attachment_count(tenant_id, arn).await? > 0 {
            return Err(IamError::DeleteConflict(
                "cannot delete a policy attached to entities".into(),
            ));
        }
        self.retrying(|| async {
            let key = entity_key(tenant_id, &policy.name);
            let (_, rev) = self
                .load::<ManagedPolicy>(POLICIES, &key)
                .await
                .map_err(Retry::Fail)?
                .ok_or_else(|| {
                    Retry::Fail(IamError::NoSuchEntity(format!(
                        "policy {arn} does not exist"
                    )))
                })?;
            self.commit(vec![delete(POLICIES, &key, rev)]).await
        })
        .await
    }

    /// Attaches (`attach = true`) or detaches a managed policy.
    ///
    /// # Errors
    /// `NoSuchEntity`, `LimitExceeded`.
    pub async fn set_policy_attachment(
        &self,
        holder: PolicyHolder,
        tenant_id: &str,
        name: &str,
        arn: &str,
        attach: bool,
    ) -> IamResult<()> {
        if attach {
            self.policy_by_arn(tenant_id, arn).await?;
        }
        self.update_policies(holder, tenant_id, name, |set| {
            let present = set.attached.iter().any(|a| a == arn);
            match (attach, present) {
                (true, true) => Ok(()),
                (true, false) if set.attached.len() >= ATTACHED_POLICIES_MAX => {
                    Err(IamError::LimitExceeded(format!(
                        "cannot exceed quota for PoliciesPerUser: {ATTACHED_POLICIES_MAX}"
                    )))
                }
                (true, false) => {
                    set.attached.push(arn.to_owned());
                    Ok(())
                }
                (false, true) => {
                    set.attached.retain(|a| a != arn);
                    Ok(())
                }
                (false, false) => Err(IamError::NoSuchEntity(format!(
                    "policy {arn} was not found"
                ))),
            }
        })
        .await
    }

    // ---------------- sessions ----------------

    /// Issues temporary credentials for a subject of the tenant.
    ///
    /// # Errors
    /// `InvalidInput` for a duration out of range.
    pub async fn create_session(
        &self,
        tenant_id: &str,
        subject: SessionSubject,
        duration_s: u32,
        duration_s_max: u32,
        session_policy: Option<String>,
        source_arn: &str,
    ) -> IamResult<Session> {
        if !(SESSION_DURATION_S_MIN..=duration_s_max).contains(&duration_s) {
            return Err(IamError::InvalidInput(format!(
                "the requested DurationSeconds exceeds the allowed range ({SESSION_DURATION_S_MIN} to {duration_s_max} seconds)"
            )));
        }
        self.store_session(
            tenant_id,
            subject,
            self.now() + i64::from(duration_s) * 1_000_000_000,
            session_policy,
            source_arn,
        )
        .await
    }

    /// Stores fresh temporary credentials that end at `expires_unix_ns`.
    pub(crate) async fn store_session(
        &self,
        tenant_id: &str,
        subject: SessionSubject,
        expires_unix_ns: i64,
        session_policy: Option<String>,
        source_arn: &str,
    ) -> IamResult<Session> {
        let session = Session {
            access_key_id: format!("NUAS{}", random_string(KEY_ALPHABET, 16)),
            secret_access_key: random_string(SECRET_ALPHABET, 40),
            session_token: random_string(SECRET_ALPHABET, 96),
            tenant_id: tenant_id.to_owned(),
            subject,
            expires_unix_ns,
            session_policy,
            source_arn: source_arn.to_owned(),
        };
        match self
            .commit(vec![write(
                SESSIONS,
                &session.access_key_id,
                Expect::Absent,
                &session,
            )?])
            .await
        {
            Ok(()) => Ok(session),
            Err(Retry::Conflict) => {
                Err(IamError::Internal("session id collision; try again".into()))
            }
            Err(Retry::Fail(e)) => Err(e),
        }
    }

    // ---------------- authentication ----------------

    /// Whose an *expired* session key was: its tenant, the principal's ARN
    /// and kind, read from the session alone (its user or role may be gone
    /// since). For logging a refused request made with it in that tenant's
    /// audit log; it proves nothing and authorizes nothing. An operator
    /// session whose approval was revoked (or whose window closed) before the
    /// session's own end counts as expired: [`Self::resolve`] refuses it with
    /// `ExpiredToken` too. `None` for every other key ([`Self::resolve`]
    /// answers those).
    ///
    /// # Errors
    /// Backend failure.
    pub async fn expired_session_claim(
        &self,
        access_key_id: &str,
    ) -> IamResult<Option<(String, String, PrincipalKind)>> {
        let Some((session, _)) = self.load::<Session>(SESSIONS, access_key_id).await? else {
            return Ok(None);
        };
        if session.expires_unix_ns > self.now() {
            let SessionSubject::Operator { approval_id } = &session.subject else {
                return Ok(None);
            };
            let approval_id = approval_id.clone();
            match self.operator_identity(session.clone(), &approval_id).await {
                Err(IamError::ExpiredToken) => {}
                Ok(_) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        let tenant = session.tenant_id;
        let (arn, kind) = match session.subject {
            SessionSubject::User { user_name } => (
                format!("arn:aws:iam::{tenant}:user/{user_name}"),
                PrincipalKind::User { user_name },
            ),
            SessionSubject::Role {
                role_name,
                session_name,
            } => (
                format!("arn:aws:sts::{tenant}:assumed-role/{role_name}/{session_name}"),
                PrincipalKind::AssumedRole {
                    role_name,
                    session_name,
                },
            ),
            SessionSubject::Operator { approval_id } => (
                format!(
                    "arn:aws:sts::{tenant}:assumed-role/{}/{approval_id}",
                    crate::access::OPERATOR_ACCESS_ROLE_NAME
                ),
                PrincipalKind::AssumedRole {
                    role_name: crate::access::OPERATOR_ACCESS_ROLE_NAME.to_owned(),
                    session_name: approval_id,
                },
            ),
        };
        Ok(Some((tenant, arn, kind)))
    }

    /// Resolves an access key id to the identity it proves, whatever kind of
    /// key it is. Returns `None` for a key that does not exist or is inactive
    /// (S3 answers both with `InvalidAccessKeyId`); `ExpiredToken` for an
    /// expired session; `TenantSuspended` when its tenant is suspended.
    ///
    /// # Errors
    /// `ExpiredToken`, `TenantSuspended`, backend failure.
    pub async fn resolve(&self, access_key_id: &str) -> IamResult<Option<Identity>> {
        if let Some((key, _)) = self.load::<AccessKey>(KEYS, access_key_id).await? {
            if key.status != KeyStatus::Active {
                return Ok(None);
            }
            let tenant = self.tenant(&key.tenant_id).await?;
            if tenant.status != TenantStatus::Active {
                return Err(IamError::TenantSuspended);
            }
            let Ok(user) = self.user(&key.tenant_id, &key.user_name).await else {
                return Ok(None);
            };
            return Ok(Some(Identity {
                arn: user.arn(),
                principal_id: user.id.clone(),
                tags: user.tags.clone(),
                tenant_id: key.tenant_id,
                kind: PrincipalKind::User {
                    user_name: user.name,
                },
                key_last_used: key.last_used_unix_ns.map(|at_unix_ns| KeyUse {
                    at_unix_ns,
                    service: key.last_used_service.clone().unwrap_or_default(),
                    region: key.last_used_region.clone().unwrap_or_default(),
                }),
                access_key_id: key.access_key_id,
                secret_access_key: key.secret_access_key,
                session_token: None,
                expires_unix_ns: None,
                session_policy: None,
                approval: None,
            }));
        }
        let Some((session, _)) = self.load::<Session>(SESSIONS, access_key_id).await? else {
            return Ok(None);
        };
        if session.expires_unix_ns <= self.now() {
            return Err(IamError::ExpiredToken);
        }
        let tenant = self.tenant(&session.tenant_id).await?;
        if tenant.status != TenantStatus::Active {
            return Err(IamError::TenantSuspended);
        }
        if let SessionSubject::Operator { approval_id } = &session.subject {
            let approval_id = approval_id.clone();
            return self.operator_identity(session, &approval_id).await;
        }
        let (kind, arn, principal_id, tags) = match &session.subject {
            SessionSubject::User { user_name } => {
                let Ok(user) = self.user(&session.tenant_id, user_name).await else {
                    return Ok(None);
                };
                (
                    PrincipalKind::User {
                        user_name: user.name.clone(),
                    },
                    user.arn(),
                    user.id.clone(),
                    user.tags.clone(),
                )
            }
            SessionSubject::Role {
                role_name,
                session_name,
            } => {
                let Ok(role) = self.role(&session.tenant_id, role_name).await else {
                    return Ok(None);
                };
                (
                    PrincipalKind::AssumedRole {
                        role_name: role.name.clone(),
                        session_name: session_name.clone(),
                    },
                    format!(
                        "arn:aws:sts::{}:assumed-role/{}/{session_name}",
                        session.tenant_id, role.name
                    ),
                    format!("{}:{session_name}", role.id),
                    role.tags.clone(),
                )
            }
            // Answered above: an operator session has no user or role.
            SessionSubject::Operator { .. } => return Ok(None),
        };
        Ok(Some(Identity {
            tenant_id: session.tenant_id,
            kind,
            arn,
            principal_id,
            tags,
            access_key_id: session.access_key_id,
            secret_access_key: session.secret_access_key,
            session_token: Some(session.session_token),
            expires_unix_ns: Some(session.expires_unix_ns),
            session_policy: session.session_policy,
            key_last_used: None,
            approval: None,
        }))
    }

    /// Every policy document that applies to an identity: its own inline and
    /// attached policies, and for users those of its groups. Each comes with a
    /// name for the audit trail (`user/alice/inline/ReadOnly`, a policy ARN, ...).
    ///
    /// # Errors
    /// Backend failure.
    pub async fn identity_policies(&self, identity: &Identity) -> IamResult<Vec<(String, String)>> {
        let mut out = Vec::new();
        // An approved operator session has the approval's policy and nothing
        // else: no role or user of the tenant lends it theirs.
        if let Some(approval) = &identity.approval {
            if let Some(policy) = &identity.session_policy {
                out.push((format!("access-approval/{}", approval.id), policy.clone()));
            }
            return Ok(out);
        }
        let add_set = |out: &mut Vec<(String, String)>, label: String, set: &PolicySet| {
            for (name, doc) in &set.inline {
                out.push((format!("{label}/inline/{name}"), doc.clone()));
            }
            set.attached.clone()
        };
        let mut attached = Vec::new();
        match &identity.kind {
            PrincipalKind::User { user_name } => {
                let Ok(user) = self.user(&identity.tenant_id, user_name).await else {
                    return Ok(out);
                };
                attached.extend(add_set(
                    &mut out,
                    format!("user/{}", user.name),
                    &user.policies,
                ));
                for group in &user.groups {
                    if let Ok(set) = self
                        .policy_set(PolicyHolder::Group, &identity.tenant_id, group)
                        .await
                    {
                        attached.extend(add_set(&mut out, format!("group/{group}"), &set));
                    }
                }
            }
            PrincipalKind::AssumedRole { role_name, .. } => {
                let Ok(role) = self.role(&identity.tenant_id, role_name).await else {
                    return Ok(out);
                };
                attached.extend(add_set(
                    &mut out,
                    format!("role/{}", role.name),
                    &role.policies,
                ));
            }
        }
        attached.sort();
        attached.dedup();
        for arn in attached {
            if let Ok(policy) = self.policy_by_arn(&identity.tenant_id, &arn).await {
                out.push((arn, policy.document));
            }
        }
        Ok(out)
    }
}

/// A read-modify-write step's failure: retry on a lost race, else give up.
pub(crate) enum Retry {
    Conflict,
    Fail(IamError),
}

impl From<IamError> for Retry {
    fn from(e: IamError) -> Self {
        Self::Fail(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nuage_base::SystemClock;
    use nuage_meta::embedded::EmbeddedMetaStore;

    fn iam() -> (Iam, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedMetaStore::open(&dir.path().join("meta.redb")).unwrap();
        (Iam::new(Arc::new(store), Arc::new(SystemClock)), dir)
    }

    #[tokio::test]
    async fn tenants_users_keys_and_resolution() {
        let (iam, _dir) = iam();
        let t = iam
            .create_tenant("culture", "FR", "dsi@culture.gouv.fr")
            .await
            .unwrap();
        assert_eq!(t.id.len(), 12);
        assert!(matches!(
            iam.create_tenant("Culture", "FR", "").await,
            Err(IamError::EntityAlreadyExists(_))
        ));
        assert!(matches!(
            iam.create_tenant("bad name", "FR", "").await,
            Err(IamError::InvalidInput(_))
        ));
        assert_eq!(iam.tenant("culture").await.unwrap().id, t.id);
        let alice = iam.create_user(&t.id, "alice", None, vec![]).await.unwrap();
        assert_eq!(alice.arn(), format!("arn:aws:iam::{}:user/alice", t.id));
        assert!(matches!(
            iam.create_user(&t.id, "ALICE", None, vec![]).await,
            Err(IamError::EntityAlreadyExists(_))
        ));
        let k1 = iam.create_access_key(&t.id, "alice").await.unwrap();
        iam.create_access_key(&t.id, "alice").await.unwrap();
        assert!(matches!(
            iam.create_access_key(&t.id, "alice").await,
            Err(IamError::LimitExceeded(_))
        ));
        let who = iam.resolve(&k1.access_key_id).await.unwrap().unwrap();
        assert_eq!(who.arn, alice.arn());
        assert_eq!(who.secret_access_key, k1.secret_access_key);
        iam.set_access_key_status(&t.id, "alice", &k1.access_key_id, KeyStatus::Inactive)
            .await
            .unwrap();
        assert!(
            iam.resolve(&k1.access_key_id).await.unwrap().is_none(),
            "an inactive key proves nothing"
        );
        assert!(matches!(
            iam.delete_user(&t.id, "alice").await,
            Err(IamError::DeleteConflict(_))
        ));
        iam.set_tenant_status(&t.id, TenantStatus::Suspended)
            .await
            .unwrap();
        let keys = iam.list_access_keys(&t.id, "alice").await.unwrap();
        let active = keys.iter().find(|k| k.status == KeyStatus::Active).unwrap();
        assert!(matches!(
            iam.resolve(&active.access_key_id).await,
            Err(IamError::TenantSuspended)
        ));
        // Another tenant cannot reach alice's keys.
        let other = iam.create_tenant("other", "DE", "").await.unwrap();
        iam.create_user(&other.id, "alice", None, vec![])
            .await
            .unwrap();
        assert!(
            iam.delete_access_key(&other.id, "alice", &k1.access_key_id)
                .await
                .is_err()
        );
        for k in keys {
            iam.delete_access_key(&t.id, "alice", &k.access_key_id)
                .await
                .unwrap();
        }
        iam.delete_user(&t.id, "alice").await.unwrap();
        iam.delete_tenant(&t.id).await.unwrap();
        assert!(iam.tenant("culture").await.is_err());
        assert!(iam.tenant(&other.id).await.is_ok());
    }

    #[tokio::test]
    async fn policies_groups_roles_and_sessions() {
        let (iam, _dir) = iam();
        let t = iam.create_tenant("t1", "FR", "").await.unwrap();
        iam.create_user(&t.id, "bob", None, vec![]).await.unwrap();
        iam.create_group(&t.id, "devs", None).await.unwrap();
        iam.set_group_membership(&t.id, "devs", "bob", true)
            .await
            .unwrap();
        iam.put_inline_policy(PolicyHolder::Group, &t.id, "devs", "g", "{\"g\":1}")
            .await
            .unwrap();
        iam.put_inline_policy(PolicyHolder::User, &t.id, "bob", "u", "{\"u\":1}")
            .await
            .unwrap();
        let managed = iam
            .create_policy(&t.id, "Shared", None, "{\"m\":1}", "")
            .await
            .unwrap();
        iam.set_policy_attachment(PolicyHolder::User, &t.id, "bob", &managed.arn(), true)
            .await
            .unwrap();
        assert!(matches!(
            iam.delete_policy(&t.id, &managed.arn()).await,
            Err(IamError::DeleteConflict(_))
        ));
        let key = iam.create_access_key(&t.id, "bob").await.unwrap();
        let bob = iam.resolve(&key.access_key_id).await.unwrap().unwrap();
        let docs: Vec<String> = iam
            .identity_policies(&bob)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, d)| d)
            .collect();
        assert_eq!(docs.len(), 3, "{docs:?}");
        let role = iam
            .create_role(&t.id, "reader", None, "{}", None, "")
            .await
            .unwrap();
        let session = iam
            .create_session(
                &t.id,
                SessionSubject::Role {
                    role_name: "reader".into(),
                    session_name: "s1".into(),
                },
                900,
                3600,
                None,
                &bob.arn,
            )
            .await
            .unwrap();
        let assumed = iam.resolve(&session.access_key_id).await.unwrap().unwrap();
        assert_eq!(
            assumed.arn,
            format!("arn:aws:sts::{}:assumed-role/reader/s1", t.id)
        );
        assert_eq!(
            assumed.session_token.as_deref(),
            Some(session.session_token.as_str())
        );
        assert!(assumed.principal_id.starts_with(&role.id));
        assert!(
            iam.create_session(
                &t.id,
                SessionSubject::User {
                    user_name: "bob".into()
                },
                60,
                3600,
                None,
                ""
            )
            .await
            .is_err()
        );
    }
}
