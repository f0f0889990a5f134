//! Running an [`Action`] for an authenticated caller: authorization of
//! `iam:ActionName` on the entity's ARN, the identity-service call, and the
//! response's `Result` element.
//!
//! Every call names the caller's tenant; no parameter can change it. Requests
//! are authorized before their inputs are validated or their targets are
//! looked up for real, so an unauthorized caller gets `AccessDenied` whatever
//! it asked for.

use crate::action::{Action, Holder, Scope};
use crate::error::ApiError;
use crate::xml::{Xml, encode_policy, iso8601};
use crate::{Api, RequestContext, caller_user_name};
use nuage_iam::{
    AccessKey, AccessRequest, Decision, Group, Iam, IamError, Identity, ManagedPolicy,
    PolicyHolder, PolicyKind, PrincipalKind, ROLE_SESSION_DURATION_S_DEFAULT, Role,
    SESSION_DURATION_S_MAX, Session, SessionSubject, User, check_policy_document,
};
use std::collections::BTreeMap;

/// AWS caps sessions obtained by a role session ("role chaining") at one hour.
const ROLE_CHAINING_DURATION_S_MAX: u32 = 3600;
/// RoleSessionName: 2 to 64 characters (AWS).
const ROLE_SESSION_NAME_CHARS_MIN: usize = 2;
const ROLE_SESSION_NAME_CHARS_MAX: usize = 64;

type Context = BTreeMap<String, Vec<String>>;
type ApiResult<T> = Result<T, ApiError>;

/// One authenticated request in progress.
pub(crate) struct Call<'a> {
    pub iam: &'a Iam,
    pub identity: &'a Identity,
    pub context: &'a RequestContext,
    /// The authorization decision the audit log records: the first one made,
    /// or the first denial (which ends the request). A mutex, not a cell, so
    /// the request's future stays `Send`.
    pub decided: std::sync::Mutex<Option<Decided>>,
}

/// One authorization decision, for the audit log.
pub(crate) struct Decided {
    pub action: String,
    pub resource: String,
    pub decision: Decision,
}

fn iam_err(e: IamError) -> ApiError {
    ApiError::from_iam(e, Api::Iam)
}

fn sts_err(e: IamError) -> ApiError {
    ApiError::from_iam(e, Api::Sts)
}

/// The ARN an entity would have (`arn:aws:iam::T:user/path/NAME`).
fn entity_arn(tenant: &str, kind: &str, path: Option<&str>, name: &str) -> String {
    format!("arn:aws:iam::{tenant}:{kind}{}{name}", path.unwrap_or("/"))
}

fn holder_kind_noun(kind: PolicyHolder) -> &'static str {
    match kind {
        PolicyHolder::User => "user",
        PolicyHolder::Group => "group",
        PolicyHolder::Role => "role",
    }
}

/// `(path, name)` of a managed policy ARN (`arn:aws:iam::T:policy/path/NAME`).
fn policy_path_and_name(arn: &str) -> (String, String) {
    let rest = arn.split_once(":policy/").map_or(arn, |(_, r)| r);
    match rest.rsplit_once('/') {
        Some((path, name)) => (format!("/{path}/"), name.to_owned()),
        None => ("/".to_owned(), rest.to_owned()),
    }
}

impl Call<'_> {
    fn tenant(&self) -> &str {
        &self.identity.tenant_id
    }

    /// Keeps `decision` for the audit log unless an earlier one stands: the
    /// first decision, or the first denial.
    fn record(&self, action: &str, resource: &str, decision: &Decision) {
        if let Ok(mut decided) = self.decided.lock()
            && decided
                .as_ref()
                .is_none_or(|d| d.decision.allowed && !decision.allowed)
        {
            *decided = Some(Decided {
                action: action.to_owned(),
                resource: resource.to_owned(),
                decision: decision.clone(),
            });
        }
    }

    /// Condition keys about the request itself. Keys about the caller
    /// (`aws:username`, `aws:PrincipalTag/...`) and `aws:CurrentTime` are
    /// answered by the identity service from the identity and its clock, so
    /// request data can never stand in for them.
    fn base_context(&self) -> Context {
        let mut keys = Context::new();
        if let Some(ip) = self.context.source_ip {
            keys.insert("aws:SourceIp".to_owned(), vec![ip.to_string()]);
        }
        keys.insert(
            "aws:SecureTransport".to_owned(),
            vec![self.context.secure_transport.to_string()],
        );
        keys
    }

    /// Allows or refuses `action` on `resource` by the caller's own policies.
    async fn authorize(&self, action: &str, resource: &str, extra: Context) -> ApiResult<()> {
        let mut context = self.base_context();
        context.extend(extra);
        let request = AccessRequest {
            action: action.to_owned(),
            resource: resource.to_owned(),
            context,
        };
        let decision = self
            .iam
            .authorize(
                Some(self.identity),
                &request,
                Some(self.tenant()),
                None,
                false,
            )
            .await
            .map_err(iam_err)?;
        self.record(action, resource, &decision);
        if decision.allowed {
            return Ok(());
        }
        tracing::debug!(caller = %self.identity.arn, action, resource, reason = %decision.reason, "access denied");
        Err(ApiError::access_denied(format!(
            "User: {} is not authorized to perform: {action} on resource: {resource}",
            self.identity.arn
        )))
    }

    /// `iam:ResourceTag/...` keys of an existing entity.
    fn resource_tags(tags: &[(String, String)]) -> Context {
        tags.iter()
            .map(|(k, v)| (format!("iam:ResourceTag/{k}"), vec![v.clone()]))
            .collect()
    }

    /// `aws:RequestTag/...` and `aws:TagKeys` of a request that sets tags.
    fn request_tags(tags: &[(String, String)]) -> Context {
        let mut keys: Context = tags
            .iter()
            .map(|(k, v)| (format!("aws:RequestTag/{k}"), vec![v.clone()]))
            .collect();
        if !tags.is_empty() {
            keys.insert(
                "aws:TagKeys".to_owned(),
                tags.iter().map(|(k, _)| k.clone()).collect(),
            );
        }
        keys
    }

    /// A user's ARN and record, or the ARN it would have when it does not exist.
    async fn user_target(&self, name: &str) -> ApiResult<(String, Option<User>)> {
        match self.iam.user(self.tenant(), name).await {
            Ok(user) => Ok((user.arn(), Some(user))),
            Err(IamError::NoSuchEntity(_)) => {
                Ok((entity_arn(self.tenant(), "user", None, name), None))
            }
            Err(e) => Err(iam_err(e)),
        }
    }

    async fn group_target(&self, name: &str) -> ApiResult<(String, Option<(Group, Vec<User>)>)> {
        match self.iam.group(self.tenant(), name).await {
            Ok(found) => Ok((found.0.arn(), Some(found))),
            Err(IamError::NoSuchEntity(_)) => {
                Ok((entity_arn(self.tenant(), "group", None, name), None))
            }
            Err(e) => Err(iam_err(e)),
        }
    }

    async fn role_target(&self, name: &str) -> ApiResult<(String, Option<Role>)> {
        match self.iam.role(self.tenant(), name).await {
            Ok(role) => Ok((role.arn(), Some(role))),
            Err(IamError::NoSuchEntity(_)) => {
                Ok((entity_arn(self.tenant(), "role", None, name), None))
            }
            Err(e) => Err(iam_err(e)),
        }
    }

    /// The ARN of a policy holder, with its tags as condition keys.
    async fn holder_target(&self, holder: &Holder) -> ApiResult<(String, Context)> {
        Ok(match holder.kind {
            PolicyHolder::User => {
                let (arn, user) = self.user_target(&holder.name).await?;
                (
                    arn,
                    user.map(|u| Self::resource_tags(&u.tags))
                        .unwrap_or_default(),
                )
            }
            PolicyHolder::Group => (self.group_target(&holder.name).await?.0, Context::new()),
            PolicyHolder::Role => {
                let (arn, role) = self.role_target(&holder.name).await?;
                (
                    arn,
                    role.map(|r| Self::resource_tags(&r.tags))
                        .unwrap_or_default(),
                )
            }
        })
    }

    /// Authorizes an action on an existing (or missing) user and returns it.
    async fn on_user(&self, action: &str, name: &str) -> ApiResult<User> {
        let (arn, user) = self.user_target(name).await?;
        let tags = user
            .as_ref()
            .map(|u| Self::resource_tags(&u.tags))
            .unwrap_or_default();
        self.authorize(action, &arn, tags).await?;
        user.ok_or_else(|| {
            ApiError::no_such_entity(format!("The user with name {name} cannot be found."))
        })
    }

    /// Runs the action; `Some(xml)` is the content of its `Result` element.
    pub(crate) async fn run(&self, action: Action) -> ApiResult<Option<String>> {
        // Credentials from GetSessionToken carry no MFA, and AWS lets them
        // call no IAM operation at all.
        if action.api() == Api::Iam
            && self.identity.session_token.is_some()
            && matches!(self.identity.kind, PrincipalKind::User { .. })
        {
            return Err(ApiError::access_denied(
                "credentials from GetSessionToken cannot call the IAM API; use long-term credentials or a role",
            ));
        }
        let iam_action = format!("iam:{}", action.name());
        let mut w = Xml::default();
        let t = self.tenant().to_owned();
        match action {
            Action::CreateUser { user, path, tags } => {
                let arn = entity_arn(&t, "user", path.as_deref(), &user);
                self.authorize(&iam_action, &arn, Self::request_tags(&tags))
                    .await?;
                let created = self
                    .iam
                    .create_user(&t, &user, path.as_deref(), tags)
                    .await
                    .map_err(iam_err)?;
                write_user(&mut w, "User", &created, true);
            }
            Action::GetUser { user } => {
                let name = match user {
                    Some(name) => name,
                    None => caller_user_name(self.identity)?,
                };
                let found = self.on_user(&iam_action, &name).await?;
                write_user(&mut w, "User", &found, true);
            }
            Action::ListUsers { path_prefix, page } => {
                self.authorize(&iam_action, "*", Context::new()).await?;
                let users = self
                    .iam
                    .list_users(&t, &path_prefix)
                    .await
                    .map_err(iam_err)?;
                let (users, next) = page.apply(users, |u| u.name.to_ascii_lowercase());
                w.members("Users", &users, |w, u| write_user(w, "", u, false));
                write_truncation(&mut w, next.as_deref());
            }
            Action::DeleteUser { user } => {
                self.on_user(&iam_action, &user).await?;
                self.iam.delete_user(&t, &user).await.map_err(iam_err)?;
                return Ok(None);
            }
            Action::CreateAccessKey { user } => {
                let name = self.user_or_caller(user)?;
                let found = self.on_user(&iam_action, &name).await?;
                let key = self
                    .iam
                    .create_access_key(&t, &found.name)
                    .await
                    .map_err(iam_err)?;
                w.nest("AccessKey", |w| {
                    w.leaf("UserName", &key.user_name);
                    w.leaf("AccessKeyId", &key.access_key_id);
                    w.leaf("Status", key.status.as_str());
                    w.leaf("SecretAccessKey", &key.secret_access_key);
                    w.leaf("CreateDate", &iso8601(key.created_unix_ns));
                });
            }
            Action::ListAccessKeys { user, page } => {
                let name = self.user_or_caller(user)?;
                let found = self.on_user(&iam_action, &name).await?;
                let keys = self
                    .iam
                    .list_access_keys(&t, &found.name)
                    .await
                    .map_err(iam_err)?;
                let (keys, next) = page.apply(keys, |k: &AccessKey| k.access_key_id.clone());
                w.leaf("UserName", &found.name);
                w.members("AccessKeyMetadata", &keys, |w, k| {
                    w.leaf("UserName", &k.user_name);
                    w.leaf("AccessKeyId", &k.access_key_id);
                    w.leaf("Status", k.status.as_str());
                    w.leaf("CreateDate", &iso8601(k.created_unix_ns));
                });
                write_truncation(&mut w, next.as_deref());
            }
            Action::GetAccessKeyLastUsed { access_key_id } => {
                let key = self
                    .iam
                    .access_key(&t, &access_key_id)
                    .await
                    .map_err(iam_err)?;
                let found = self.on_user(&iam_action, &key.user_name).await?;
                w.leaf("UserName", &found.name);
                w.nest("AccessKeyLastUsed", |w| {
                    if let Some(at) = key.last_used_unix_ns {
                        w.leaf("LastUsedDate", &iso8601(at));
                    }
                    w.leaf(
                        "ServiceName",
                        key.last_used_service.as_deref().unwrap_or("N/A"),
                    );
                    w.leaf("Region", key.last_used_region.as_deref().unwrap_or("N/A"));
                });
            }
            Action::UpdateAccessKey {
                user,
                access_key_id,
                status,
            } => {
                let name = self.user_or_caller(user)?;
                let found = self.on_user(&iam_action, &name).await?;
                self.iam
                    .set_access_key_status(&t, &found.name, &access_key_id, status)
                    .await
                    .map_err(iam_err)?;
                return Ok(None);
            }
            Action::DeleteAccessKey {
                user,
                access_key_id,
            } => {
                let name = self.user_or_caller(user)?;
                let found = self.on_user(&iam_action, &name).await?;
                self.iam
                    .delete_access_key(&t, &found.name, &access_key_id)
                    .await
                    .map_err(iam_err)?;
                return Ok(None);
            }
            Action::CreateGroup { group, path } => {
                self.authorize(
                    &iam_action,
                    &entity_arn(&t, "group", path.as_deref(), &group),
                    Context::new(),
                )
                .await?;
                let created = self
                    .iam
                    .create_group(&t, &group, path.as_deref())
                    .await
                    .map_err(iam_err)?;
                write_group(&mut w, "Group", &created);
            }
            Action::GetGroup { group, page } => {
                let (arn, found) = self.group_target(&group).await?;
                self.authorize(&iam_action, &arn, Context::new()).await?;
                let (found, members) = found.ok_or_else(|| no_such_group(&group))?;
                let (members, next) = page.apply(members, |u| u.name.to_ascii_lowercase());
                write_group(&mut w, "Group", &found);
                w.members("Users", &members, |w, u| write_user(w, "", u, false));
                write_truncation(&mut w, next.as_deref());
            }
            Action::ListGroups { path_prefix, page } => {
                self.authorize(&iam_action, "*", Context::new()).await?;
                let groups = self
                    .iam
                    .list_groups(&t, &path_prefix)
                    .await
                    .map_err(iam_err)?;
                let (groups, next) = page.apply(groups, |g| g.name.to_ascii_lowercase());
                w.members("Groups", &groups, |w, g| write_group(w, "", g));
                write_truncation(&mut w, next.as_deref());
            }
            Action::DeleteGroup { group } => {
                let (arn, found) = self.group_target(&group).await?;
                self.authorize(&iam_action, &arn, Context::new()).await?;
                found.ok_or_else(|| no_such_group(&group))?;
                self.iam.delete_group(&t, &group).await.map_err(iam_err)?;
                return Ok(None);
            }
            Action::AddUserToGroup { group, user }
            | Action::RemoveUserFromGroup { group, user } => {
                let member = iam_action == "iam:AddUserToGroup";
                let (arn, found) = self.group_target(&group).await?;
                self.authorize(&iam_action, &arn, Context::new()).await?;
                found.ok_or_else(|| no_such_group(&group))?;
                self.iam
                    .set_group_membership(&t, &group, &user, member)
                    .await
                    .map_err(iam_err)?;
                return Ok(None);
            }
            Action::ListGroupsForUser { user, page } => {
                let found = self.on_user(&iam_action, &user).await?;
                let groups = self.iam.list_groups(&t, "/").await.map_err(iam_err)?;
                let groups: Vec<Group> = groups
                    .into_iter()
                    .filter(|g| found.groups.iter().any(|m| m.eq_ignore_ascii_case(&g.name)))
                    .collect();
                let (groups, next) = page.apply(groups, |g| g.name.to_ascii_lowercase());
                w.members("Groups", &groups, |w, g| write_group(w, "", g));
                write_truncation(&mut w, next.as_deref());
            }
            Action::CreateRole {
                role,
                path,
                trust_policy,
                description,
                max_session_duration_s,
            } => {
                self.authorize(
                    &iam_action,
                    &entity_arn(&t, "role", path.as_deref(), &role),
                    Context::new(),
                )
                .await?;
                check_policy_document(&trust_policy, PolicyKind::Trust).map_err(iam_err)?;
                let created = self
                    .iam
                    .create_role(
                        &t,
                        &role,
                        path.as_deref(),
                        &trust_policy,
                        max_session_duration_s,
                        &description,
                    )
                    .await
                    .map_err(iam_err)?;
                write_role(&mut w, "Role", &created, true);
            }
            Action::GetRole { role } => {
                let found = self.on_role(&iam_action, &role).await?;
                write_role(&mut w, "Role", &found, true);
            }
            Action::ListRoles { path_prefix, page } => {
                self.authorize(&iam_action, "*", Context::new()).await?;
                let roles = self
                    .iam
                    .list_roles(&t, &path_prefix)
                    .await
                    .map_err(iam_err)?;
                let (roles, next) = page.apply(roles, |r| r.name.to_ascii_lowercase());
                w.members("Roles", &roles, |w, r| write_role(w, "", r, false));
                write_truncation(&mut w, next.as_deref());
            }
            Action::DeleteRole { role } => {
                self.on_role(&iam_action, &role).await?;
                self.iam.delete_role(&t, &role).await.map_err(iam_err)?;
                return Ok(None);
            }
            Action::UpdateAssumeRolePolicy { role, document } => {
                self.on_role(&iam_action, &role).await?;
                check_policy_document(&document, PolicyKind::Trust).map_err(iam_err)?;
                self.iam
                    .update_assume_role_policy(&t, &role, &document)
                    .await
                    .map_err(iam_err)?;
                return Ok(None);
            }
            Action::PutInlinePolicy {
                holder,
                policy_name,
                document,
            } => {
                let (arn, tags) = self.holder_target(&holder).await?;
                self.authorize(&iam_action, &arn, tags).await?;
                check_policy_document(&document, PolicyKind::Identity).map_err(iam_err)?;
                self.iam
                    .put_inline_policy(holder.kind, &t, &holder.name, &policy_name, &document)
                    .await
                    .map_err(iam_err)?;
                return Ok(None);
            }
            Action::GetInlinePolicy {
                holder,
                policy_name,
            } => {
                let (arn, tags) = self.holder_target(&holder).await?;
                self.authorize(&iam_action, &arn, tags).await?;
                let set = self
                    .iam
                    .policy_set(holder.kind, &t, &holder.name)
                    .await
                    .map_err(iam_err)?;
                let document = set.inline.get(&policy_name).ok_or_else(|| {
                    ApiError::no_such_entity(format!(
                        "The {} policy with name {policy_name} cannot be found.",
                        holder_kind_noun(holder.kind)
                    ))
                })?;
                w.leaf(holder_name_element(holder.kind), &holder.name);
                w.leaf("PolicyName", &policy_name);
                w.leaf("PolicyDocument", &encode_policy(document));
            }
            Action::ListInlinePolicies { holder, page } => {
                let (arn, tags) = self.holder_target(&holder).await?;
                self.authorize(&iam_action, &arn, tags).await?;
                let set = self
                    .iam
                    .policy_set(holder.kind, &t, &holder.name)
                    .await
                    .map_err(iam_err)?;
                let names: Vec<String> = set.inline.into_keys().collect();
                let (names, next) = page.apply(names, Clone::clone);
                w.members("PolicyNames", &names, |w, n| w.text(n));
                write_truncation(&mut w, next.as_deref());
            }
            Action::DeleteInlinePolicy {
                holder,
                policy_name,
            } => {
                let (arn, tags) = self.holder_target(&holder).await?;
                self.authorize(&iam_action, &arn, tags).await?;
                self.iam
                    .delete_inline_policy(holder.kind, &t, &holder.name, &policy_name)
                    .await
                    .map_err(iam_err)?;
                return Ok(None);
            }
            Action::CreatePolicy {
                name,
                path,
                document,
                description,
            } => {
                let arn = entity_arn(&t, "policy", path.as_deref(), &name);
                self.authorize(&iam_action, &arn, Context::new()).await?;
                check_policy_document(&document, PolicyKind::Identity).map_err(iam_err)?;
                let created = self
                    .iam
                    .create_policy(&t, &name, path.as_deref(), &document, &description)
                    .await
                    .map_err(iam_err)?;
                write_policy(&mut w, "Policy", &created, 0, true);
            }
            Action::GetPolicy { arn } => {
                self.authorize(&iam_action, &arn, Context::new()).await?;
                let (policy, count) = self
                    .iam
                    .policy_with_attachments(&t, &arn)
                    .await
                    .map_err(iam_err)?;
                write_policy(&mut w, "Policy", &policy, count, true);
            }
            Action::GetPolicyVersion { arn, version_id } => {
                self.authorize(&iam_action, &arn, Context::new()).await?;
                let policy = self.iam.policy_by_arn(&t, &arn).await.map_err(iam_err)?;
                // One version per policy until CreatePolicyVersion exists.
                if version_id != "v1" {
                    return Err(ApiError::no_such_entity(format!(
                        "Policy {arn} version {version_id} does not exist or is not attachable."
                    )));
                }
                w.nest("PolicyVersion", |w| {
                    w.leaf("Document", &encode_policy(&policy.document));
                    w.leaf("VersionId", "v1");
                    w.leaf("IsDefaultVersion", "true");
                    w.leaf("CreateDate", &iso8601(policy.created_unix_ns));
                });
            }
            Action::ListPolicies {
                scope,
                only_attached,
                path_prefix,
                page,
            } => {
                self.authorize(&iam_action, "*", Context::new()).await?;
                // Nuage has no AWS-managed policies.
                let policies = if scope == Scope::Aws {
                    Vec::new()
                } else {
                    self.iam.list_policies(&t).await.map_err(iam_err)?
                };
                let counts = self.attachment_counts().await?;
                let count = |p: &ManagedPolicy| counts.get(&p.arn()).copied().unwrap_or(0);
                let policies: Vec<ManagedPolicy> = policies
                    .into_iter()
                    .filter(|p| {
                        p.path.starts_with(&path_prefix) && (!only_attached || count(p) > 0)
                    })
                    .collect();
                let (policies, next) = page.apply(policies, |p| p.name.to_ascii_lowercase());
                w.members("Policies", &policies, |w, p| {
                    write_policy(w, "", p, count(p), false)
                });
                write_truncation(&mut w, next.as_deref());
            }
            Action::DeletePolicy { arn } => {
                self.authorize(&iam_action, &arn, Context::new()).await?;
                self.iam.delete_policy(&t, &arn).await.map_err(iam_err)?;
                return Ok(None);
            }
            Action::AttachPolicy { holder, arn } | Action::DetachPolicy { holder, arn } => {
                let attach = iam_action.starts_with("iam:Attach");
                let (target, mut keys) = self.holder_target(&holder).await?;
                keys.insert("iam:PolicyARN".to_owned(), vec![arn.clone()]);
                self.authorize(&iam_action, &target, keys).await?;
                self.iam
                    .set_policy_attachment(holder.kind, &t, &holder.name, &arn, attach)
                    .await
                    .map_err(iam_err)?;
                return Ok(None);
            }
            Action::ListAttachedPolicies {
                holder,
                path_prefix,
                page,
            } => {
                let (arn, tags) = self.holder_target(&holder).await?;
                self.authorize(&iam_action, &arn, tags).await?;
                let set = self
                    .iam
                    .policy_set(holder.kind, &t, &holder.name)
                    .await
                    .map_err(iam_err)?;
                let attached: Vec<(String, String)> = set
                    .attached
                    .into_iter()
                    .filter_map(|arn| {
                        let (path, name) = policy_path_and_name(&arn);
                        path.starts_with(&path_prefix).then_some((name, arn))
                    })
                    .collect();
                let (attached, next) = page.apply(attached, |(name, _)| name.to_ascii_lowercase());
                w.members("AttachedPolicies", &attached, |w, (name, arn)| {
                    w.leaf("PolicyName", name);
                    w.leaf("PolicyArn", arn);
                });
                write_truncation(&mut w, next.as_deref());
            }
            Action::GetCallerIdentity => {
                // Needs no permission, as in AWS: it only tells callers who they are.
                w.leaf("Arn", &self.identity.arn);
                w.leaf("UserId", &self.identity.principal_id);
                w.leaf("Account", &t);
            }
            Action::GetSessionToken { duration_s } => {
                self.get_session_token(&mut w, duration_s).await?
            }
            Action::AssumeRole {
                role_arn,
                session_name,
                duration_s,
                session_policy,
                external_id,
            } => {
                self.assume_role(
                    &mut w,
                    &role_arn,
                    &session_name,
                    duration_s,
                    session_policy,
                    external_id,
                )
                .await?;
            }
        }
        Ok(Some(w.into_string()))
    }

    fn user_or_caller(&self, user: Option<String>) -> ApiResult<String> {
        match user {
            Some(name) => Ok(name),
            None => caller_user_name(self.identity),
        }
    }

    async fn on_role(&self, action: &str, name: &str) -> ApiResult<Role> {
        let (arn, role) = self.role_target(name).await?;
        let tags = role
            .as_ref()
            .map(|r| Self::resource_tags(&r.tags))
            .unwrap_or_default();
        self.authorize(action, &arn, tags).await?;
        role.ok_or_else(|| {
            ApiError::no_such_entity(format!("The role with name {name} cannot be found."))
        })
    }

    /// How many users, groups and roles each managed policy of the tenant is
    /// attached to: three scans, whatever the number of policies.
    async fn attachment_counts(&self) -> ApiResult<BTreeMap<String, usize>> {
        let t = self.tenant();
        let mut counts = BTreeMap::new();
        let mut add = |attached: Vec<String>| {
            for arn in attached {
                *counts.entry(arn).or_insert(0) += 1;
            }
        };
        for user in self.iam.list_users(t, "/").await.map_err(iam_err)? {
            add(user.policies.attached);
        }
        for group in self.iam.list_groups(t, "/").await.map_err(iam_err)? {
            add(group.policies.attached);
        }
        for role in self.iam.list_roles(t, "/").await.map_err(iam_err)? {
            add(role.policies.attached);
        }
        Ok(counts)
    }

    async fn get_session_token(&self, w: &mut Xml, duration_s: Option<u32>) -> ApiResult<()> {
        let PrincipalKind::User { user_name } = &self.identity.kind else {
            return Err(ApiError::access_denied(
                "Cannot call GetSessionToken with session credentials",
            ));
        };
        if self.identity.session_token.is_some() {
            return Err(ApiError::access_denied(
                "Cannot call GetSessionToken with session credentials",
            ));
        }
        // AWS's default is the longest session an IAM user may get.
        let duration_s = duration_s.unwrap_or(SESSION_DURATION_S_MAX);
        let session = self
            .iam
            .create_session(
                self.tenant(),
                SessionSubject::User {
                    user_name: user_name.clone(),
                },
                duration_s,
                SESSION_DURATION_S_MAX,
                None,
                &self.identity.arn,
            )
            .await
            .map_err(sts_err)?;
        write_credentials(w, &session);
        Ok(())
    }

    async fn assume_role(
        &self,
        w: &mut Xml,
        role_arn: &str,
        session_name: &str,
        duration_s: Option<u32>,
        session_policy: Option<String>,
        external_id: Option<String>,
    ) -> ApiResult<()> {
        let t = self.tenant();
        let denied = || {
            ApiError::access_denied(format!(
                "User: {} is not authorized to perform: sts:AssumeRole on resource: {role_arn}",
                self.identity.arn
            ))
        };
        let name_ok = (ROLE_SESSION_NAME_CHARS_MIN..=ROLE_SESSION_NAME_CHARS_MAX)
            .contains(&session_name.len())
            && session_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b));
        if !name_ok {
            return Err(ApiError::validation(format!(
                "RoleSessionName must be {ROLE_SESSION_NAME_CHARS_MIN} to {ROLE_SESSION_NAME_CHARS_MAX} letters, digits or _+=,.@-"
            )));
        }
        // Only the caller's own tenant: another tenant's role, a role that does
        // not exist or one at another path are all the same refusal.
        let Some(role_name) = role_arn
            .strip_prefix(&format!("arn:aws:iam::{t}:role/"))
            .and_then(|rest| rest.rsplit('/').next())
            .filter(|n| !n.is_empty())
        else {
            return Err(denied());
        };
        let role = match self.iam.role(t, role_name).await {
            Ok(role) if role.arn() == role_arn => role,
            Ok(_) | Err(IamError::NoSuchEntity(_)) => return Err(denied()),
            Err(e) => return Err(sts_err(e)),
        };
        let mut keys = self.base_context();
        keys.insert(
            "sts:RoleSessionName".to_owned(),
            vec![session_name.to_owned()],
        );
        if let Some(id) = &external_id {
            keys.insert("sts:ExternalId".to_owned(), vec![id.clone()]);
        }
        let request = AccessRequest {
            action: "sts:AssumeRole".to_owned(),
            resource: role.arn(),
            context: keys,
        };
        let decision = self
            .iam
            .authorize_assume_role(self.identity, &role, &request)
            .await
            .map_err(sts_err)?;
        self.record(&request.action, &request.resource, &decision);
        if !decision.allowed {
            tracing::debug!(caller = %self.identity.arn, role = %role_arn, reason = %decision.reason, "AssumeRole denied");
            return Err(denied());
        }
        if let Some(policy) = &session_policy {
            check_policy_document(policy, PolicyKind::Session).map_err(sts_err)?;
        }
        let duration_max = match self.identity.kind {
            PrincipalKind::AssumedRole { .. } => role
                .max_session_duration_s
                .min(ROLE_CHAINING_DURATION_S_MAX),
            PrincipalKind::User { .. } => role.max_session_duration_s,
        };
        let duration_s =
            duration_s.unwrap_or_else(|| ROLE_SESSION_DURATION_S_DEFAULT.min(duration_max));
        let session = self
            .iam
            .create_session(
                t,
                SessionSubject::Role {
                    role_name: role.name.clone(),
                    session_name: session_name.to_owned(),
                },
                duration_s,
                duration_max,
                session_policy,
                &self.identity.arn,
            )
            .await
            .map_err(sts_err)?;
        write_credentials(w, &session);
        w.nest("AssumedRoleUser", |w| {
            w.leaf("AssumedRoleId", &format!("{}:{session_name}", role.id));
            w.leaf(
                "Arn",
                &format!("arn:aws:sts::{t}:assumed-role/{}/{session_name}", role.name),
            );
        });
        Ok(())
    }
}

fn no_such_group(name: &str) -> ApiError {
    ApiError::no_such_entity(format!("The group with name {name} cannot be found."))
}

fn holder_name_element(kind: PolicyHolder) -> &'static str {
    match kind {
        PolicyHolder::User => "UserName",
        PolicyHolder::Group => "GroupName",
        PolicyHolder::Role => "RoleName",
    }
}

/// `IsTruncated`, and the `Marker` to resume from.
fn write_truncation(w: &mut Xml, next: Option<&str>) {
    w.leaf("IsTruncated", if next.is_some() { "true" } else { "false" });
    w.leaf_opt("Marker", next);
}

fn write_tags(w: &mut Xml, tags: &[(String, String)]) {
    if !tags.is_empty() {
        w.members("Tags", tags, |w, (k, v)| {
            w.leaf("Key", k);
            w.leaf("Value", v);
        });
    }
}

/// An entity element: `<tag>...</tag>`, or just its fields for a list member (`tag` empty).
fn entity(w: &mut Xml, tag: &'static str, fields: impl FnOnce(&mut Xml)) {
    if tag.is_empty() {
        fields(w);
    } else {
        w.nest(tag, fields);
    }
}

fn write_user(w: &mut Xml, tag: &'static str, user: &User, with_tags: bool) {
    entity(w, tag, |w| {
        w.leaf("Path", &user.path);
        w.leaf("UserName", &user.name);
        w.leaf("UserId", &user.id);
        w.leaf("Arn", &user.arn());
        w.leaf("CreateDate", &iso8601(user.created_unix_ns));
        if with_tags {
            write_tags(w, &user.tags);
        }
    });
}

fn write_group(w: &mut Xml, tag: &'static str, group: &Group) {
    entity(w, tag, |w| {
        w.leaf("Path", &group.path);
        w.leaf("GroupName", &group.name);
        w.leaf("GroupId", &group.id);
        w.leaf("Arn", &group.arn());
        w.leaf("CreateDate", &iso8601(group.created_unix_ns));
    });
}

fn write_role(w: &mut Xml, tag: &'static str, role: &Role, with_tags: bool) {
    entity(w, tag, |w| {
        w.leaf("Path", &role.path);
        w.leaf("RoleName", &role.name);
        w.leaf("RoleId", &role.id);
        w.leaf("Arn", &role.arn());
        w.leaf("CreateDate", &iso8601(role.created_unix_ns));
        w.leaf(
            "AssumeRolePolicyDocument",
            &encode_policy(&role.assume_role_policy),
        );
        if !role.description.is_empty() {
            w.leaf("Description", &role.description);
        }
        w.leaf(
            "MaxSessionDuration",
            &role.max_session_duration_s.to_string(),
        );
        if with_tags {
            write_tags(w, &role.tags);
        }
    });
}

fn write_policy(
    w: &mut Xml,
    tag: &'static str,
    policy: &ManagedPolicy,
    attachments: usize,
    with_description: bool,
) {
    entity(w, tag, |w| {
        w.leaf("PolicyName", &policy.name);
        w.leaf("DefaultVersionId", "v1");
        w.leaf("PolicyId", &policy.id);
        w.leaf("Path", &policy.path);
        w.leaf("Arn", &policy.arn());
        w.leaf("AttachmentCount", &attachments.to_string());
        w.leaf("PermissionsBoundaryUsageCount", "0");
        w.leaf("IsAttachable", "true");
        if with_description && !policy.description.is_empty() {
            w.leaf("Description", &policy.description);
        }
        w.leaf("CreateDate", &iso8601(policy.created_unix_ns));
        w.leaf("UpdateDate", &iso8601(policy.created_unix_ns));
    });
}

fn write_credentials(w: &mut Xml, session: &Session) {
    w.nest("Credentials", |w| {
        w.leaf("AccessKeyId", &session.access_key_id);
        w.leaf("SecretAccessKey", &session.secret_access_key);
        w.leaf("SessionToken", &session.session_token);
        w.leaf("Expiration", &iso8601(session.expires_unix_ns));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_and_policy_paths() {
        assert_eq!(
            entity_arn("123456789012", "user", None, "alice"),
            "arn:aws:iam::123456789012:user/alice"
        );
        assert_eq!(
            entity_arn("1", "role", Some("/ops/"), "r"),
            "arn:aws:iam::1:role/ops/r"
        );
        assert_eq!(
            policy_path_and_name("arn:aws:iam::1:policy/Read"),
            ("/".into(), "Read".into())
        );
        assert_eq!(
            policy_path_and_name("arn:aws:iam::1:policy/a/b/Read"),
            ("/a/b/".into(), "Read".into())
        );
    }

    #[test]
    fn entities_render_as_aws_does() {
        let user = User {
            tenant_id: "123456789012".into(),
            name: "alice".into(),
            path: "/".into(),
            id: "AIDAEXAMPLE".into(),
            created_unix_ns: 0,
            tags: vec![("team".into(), "a&b".into())],
            policies: nuage_iam::PolicySet::default(),
            groups: Vec::new(),
        };
        let mut w = Xml::default();
        write_user(&mut w, "User", &user, true);
        assert_eq!(
            w.into_string(),
            "<User><Path>/</Path><UserName>alice</UserName><UserId>AIDAEXAMPLE</UserId>\
             <Arn>arn:aws:iam::123456789012:user/alice</Arn><CreateDate>1970-01-01T00:00:00Z</CreateDate>\
             <Tags><member><Key>team</Key><Value>a&amp;b</Value></member></Tags></User>"
        );
        let mut w = Xml::default();
        w.members("PolicyNames", &["a<b".to_owned()], |w, n| w.text(n));
        write_truncation(&mut w, Some("m"));
        assert_eq!(
            w.into_string(),
            "<PolicyNames><member>a&lt;b</member></PolicyNames><IsTruncated>true</IsTruncated><Marker>m</Marker>"
        );
    }
}
