//! [`Action`]: every supported IAM and STS operation as a closed enum, parsed
//! from the request parameters before anything is authorized or done.
//!
//! Parsing is pure: it checks that the parameters are there and well-formed,
//! and refuses any it does not know. Names, paths and documents are checked
//! against the identity rules by the identity service, and policies against
//! the policy language by `check_policy_document`, not here.

use crate::Api;
use crate::error::ApiError;
use crate::params::Params;
use nuage_base::limits::{IAM_LIST_ITEMS_DEFAULT, IAM_LIST_ITEMS_MAX};
use nuage_iam::{KeyStatus, PolicyHolder};

/// Where a list resumes and how much it returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Page {
    /// The sort key of the last item of the previous page.
    pub marker: Option<String>,
    pub max_items: usize,
}

impl Page {
    fn take(params: &mut Params) -> Result<Self, ApiError> {
        let max_items = match params.take_u32("MaxItems")? {
            None => IAM_LIST_ITEMS_DEFAULT,
            Some(n) => usize::try_from(n)
                .ok()
                .filter(|n| (1..=IAM_LIST_ITEMS_MAX).contains(n))
                .ok_or_else(|| {
                    ApiError::validation(format!(
                        "MaxItems must be between 1 and {IAM_LIST_ITEMS_MAX}"
                    ))
                })?,
        };
        let marker = params.take("Marker").filter(|m| !m.is_empty());
        Ok(Self { marker, max_items })
    }

    /// The items after the marker, at most `max_items` of them, sorted by
    /// `key`; and the marker of the next page if there is one.
    pub(crate) fn apply<T>(
        &self,
        mut items: Vec<T>,
        key: impl Fn(&T) -> String,
    ) -> (Vec<T>, Option<String>) {
        items.sort_by_key(|item| key(item));
        let start = match &self.marker {
            Some(marker) => items.partition_point(|item| key(item) <= *marker),
            None => 0,
        };
        let mut page: Vec<T> = items.into_iter().skip(start).collect();
        let next = if page.len() > self.max_items {
            page.truncate(self.max_items);
            page.last().map(&key)
        } else {
            None
        };
        (page, next)
    }
}

/// A user, group or role that holds policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    pub kind: PolicyHolder,
    pub name: String,
}

impl Holder {
    fn take(params: &mut Params, kind: PolicyHolder) -> Result<Self, ApiError> {
        let name = params.require(match kind {
            PolicyHolder::User => "UserName",
            PolicyHolder::Group => "GroupName",
            PolicyHolder::Role => "RoleName",
        })?;
        Ok(Self { kind, name })
    }
}

/// Which managed policies ListPolicies returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The tenant's own and AWS's (Nuage has no AWS-managed policies).
    All,
    Aws,
    Local,
}

/// One request, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    CreateUser {
        user: String,
        path: Option<String>,
        tags: Vec<(String, String)>,
    },
    /// `user: None` is the caller.
    GetUser {
        user: Option<String>,
    },
    ListUsers {
        path_prefix: String,
        page: Page,
    },
    DeleteUser {
        user: String,
    },
    CreateAccessKey {
        user: Option<String>,
    },
    ListAccessKeys {
        user: Option<String>,
        page: Page,
    },
    GetAccessKeyLastUsed {
        access_key_id: String,
    },
    UpdateAccessKey {
        user: Option<String>,
        access_key_id: String,
        status: KeyStatus,
    },
    DeleteAccessKey {
        user: Option<String>,
        access_key_id: String,
    },
    CreateGroup {
        group: String,
        path: Option<String>,
    },
    GetGroup {
        group: String,
        page: Page,
    },
    ListGroups {
        path_prefix: String,
        page: Page,
    },
    DeleteGroup {
        group: String,
    },
    AddUserToGroup {
        group: String,
        user: String,
    },
    RemoveUserFromGroup {
        group: String,
        user: String,
    },
    ListGroupsForUser {
        user: String,
        page: Page,
    },
    CreateRole {
        role: String,
        path: Option<String>,
        trust_policy: String,
        description: String,
        max_session_duration_s: Option<u32>,
    },
    GetRole {
        role: String,
    },
    ListRoles {
        path_prefix: String,
        page: Page,
    },
    DeleteRole {
        role: String,
    },
    UpdateAssumeRolePolicy {
        role: String,
        document: String,
    },
    PutInlinePolicy {
        holder: Holder,
        policy_name: String,
        document: String,
    },
    GetInlinePolicy {
        holder: Holder,
        policy_name: String,
    },
    ListInlinePolicies {
        holder: Holder,
        page: Page,
    },
    DeleteInlinePolicy {
        holder: Holder,
        policy_name: String,
    },
    CreatePolicy {
        name: String,
        path: Option<String>,
        document: String,
        description: String,
    },
    GetPolicy {
        arn: String,
    },
    GetPolicyVersion {
        arn: String,
        version_id: String,
    },
    ListPolicies {
        scope: Scope,
        only_attached: bool,
        path_prefix: String,
        page: Page,
    },
    DeletePolicy {
        arn: String,
    },
    AttachPolicy {
        holder: Holder,
        arn: String,
    },
    DetachPolicy {
        holder: Holder,
        arn: String,
    },
    ListAttachedPolicies {
        holder: Holder,
        path_prefix: String,
        page: Page,
    },
    GetCallerIdentity,
    GetSessionToken {
        duration_s: Option<u32>,
    },
    AssumeRole {
        role_arn: String,
        session_name: String,
        duration_s: Option<u32>,
        session_policy: Option<String>,
        external_id: Option<String>,
    },
}

fn holder_noun(kind: PolicyHolder) -> &'static str {
    match kind {
        PolicyHolder::User => "User",
        PolicyHolder::Group => "Group",
        PolicyHolder::Role => "Role",
    }
}

impl Action {
    /// Parses the action `name` from `params`, refusing parameters it does not take.
    pub(crate) fn parse(
        name: &str,
        version: Option<&str>,
        mut params: Params,
    ) -> Result<Self, ApiError> {
        let p = &mut params;
        let holder_of = |suffix: &str| match suffix {
            "User" => Some(PolicyHolder::User),
            "Group" => Some(PolicyHolder::Group),
            "Role" => Some(PolicyHolder::Role),
            _ => None,
        };
        let action = match name {
            "CreateUser" => Self::CreateUser {
                user: p.require("UserName")?,
                path: p.take("Path"),
                tags: p.take_tags()?,
            },
            "GetUser" => Self::GetUser {
                user: p.take("UserName"),
            },
            "ListUsers" => Self::ListUsers {
                path_prefix: path_prefix(p),
                page: Page::take(p)?,
            },
            "DeleteUser" => Self::DeleteUser {
                user: p.require("UserName")?,
            },
            "CreateAccessKey" => Self::CreateAccessKey {
                user: p.take("UserName"),
            },
            "ListAccessKeys" => Self::ListAccessKeys {
                user: p.take("UserName"),
                page: Page::take(p)?,
            },
            "GetAccessKeyLastUsed" => Self::GetAccessKeyLastUsed {
                access_key_id: p.require("AccessKeyId")?,
            },
            "UpdateAccessKey" => Self::UpdateAccessKey {
                user: p.take("UserName"),
                access_key_id: p.require("AccessKeyId")?,
                status: match p.require("Status")?.as_str() {
                    "Active" => KeyStatus::Active,
                    "Inactive" => KeyStatus::Inactive,
                    other => {
                        return Err(ApiError::validation(format!(
                            "Status must be Active or Inactive, not `{other}`"
                        )));
                    }
                },
            },
            "DeleteAccessKey" => Self::DeleteAccessKey {
                user: p.take("UserName"),
                access_key_id: p.require("AccessKeyId")?,
            },
            "CreateGroup" => Self::CreateGroup {
                group: p.require("GroupName")?,
                path: p.take("Path"),
            },
            "GetGroup" => Self::GetGroup {
                group: p.require("GroupName")?,
                page: Page::take(p)?,
            },
            "ListGroups" => Self::ListGroups {
                path_prefix: path_prefix(p),
                page: Page::take(p)?,
            },
            "DeleteGroup" => Self::DeleteGroup {
                group: p.require("GroupName")?,
            },
            "AddUserToGroup" => Self::AddUserToGroup {
                group: p.require("GroupName")?,
                user: p.require("UserName")?,
            },
            "RemoveUserFromGroup" => Self::RemoveUserFromGroup {
                group: p.require("GroupName")?,
                user: p.require("UserName")?,
            },
            "ListGroupsForUser" => Self::ListGroupsForUser {
                user: p.require("UserName")?,
                page: Page::take(p)?,
            },
            "CreateRole" => {
                let action = Self::CreateRole {
                    role: p.require("RoleName")?,
                    path: p.take("Path"),
                    trust_policy: p.require("AssumeRolePolicyDocument")?,
                    description: p.take("Description").unwrap_or_default(),
                    max_session_duration_s: p.take_u32("MaxSessionDuration")?,
                };
                // Role tags would become aws:PrincipalTag keys of its
                // sessions; the identity service cannot store them yet, and
                // dropping them silently could change what policies allow.
                if !p.take_tags()?.is_empty() {
                    return Err(ApiError::validation(
                        "tags on roles are not supported by Nuage yet",
                    ));
                }
                action
            }
            "GetRole" => Self::GetRole {
                role: p.require("RoleName")?,
            },
            "ListRoles" => Self::ListRoles {
                path_prefix: path_prefix(p),
                page: Page::take(p)?,
            },
            "DeleteRole" => Self::DeleteRole {
                role: p.require("RoleName")?,
            },
            "UpdateAssumeRolePolicy" => Self::UpdateAssumeRolePolicy {
                role: p.require("RoleName")?,
                document: p.require("PolicyDocument")?,
            },
            "CreatePolicy" => Self::CreatePolicy {
                name: p.require("PolicyName")?,
                path: p.take("Path"),
                document: p.require("PolicyDocument")?,
                description: p.take("Description").unwrap_or_default(),
            },
            "GetPolicy" => Self::GetPolicy {
                arn: p.require("PolicyArn")?,
            },
            "GetPolicyVersion" => Self::GetPolicyVersion {
                arn: p.require("PolicyArn")?,
                version_id: p.require("VersionId")?,
            },
            "ListPolicies" => Self::ListPolicies {
                scope: match p.take("Scope").as_deref() {
                    None | Some("All") => Scope::All,
                    Some("AWS") => Scope::Aws,
                    Some("Local") => Scope::Local,
                    Some(other) => {
                        return Err(ApiError::validation(format!(
                            "Scope must be All, AWS or Local, not `{other}`"
                        )));
                    }
                },
                only_attached: p.take_bool("OnlyAttached")?.unwrap_or(false),
                path_prefix: path_prefix(p),
                page: Page::take(p)?,
            },
            "DeletePolicy" => Self::DeletePolicy {
                arn: p.require("PolicyArn")?,
            },
            "GetCallerIdentity" => Self::GetCallerIdentity,
            "GetSessionToken" => Self::GetSessionToken {
                duration_s: p.take_u32("DurationSeconds")?,
            },
            "AssumeRole" => Self::AssumeRole {
                role_arn: p.require("RoleArn")?,
                session_name: p.require("RoleSessionName")?,
                duration_s: p.take_u32("DurationSeconds")?,
                session_policy: p.take("Policy"),
                external_id: p.take("ExternalId"),
            },
            _ => {
                // The four families that exist for users, groups and roles alike.
                let family = [
                    ("Put", "Policy"),
                    ("Get", "Policy"),
                    ("List", "Policies"),
                    ("Delete", "Policy"),
                    ("Attach", "Policy"),
                    ("Detach", "Policy"),
                    ("ListAttached", "Policies"),
                ]
                .into_iter()
                .find_map(|(verb, noun)| {
                    let kind = holder_of(name.strip_prefix(verb)?.strip_suffix(noun)?)?;
                    Some((verb, kind))
                });
                let Some((verb, kind)) = family else {
                    return Err(ApiError::invalid_action(
                        name,
                        version.unwrap_or(Api::Iam.version()),
                    ));
                };
                let holder = Holder::take(p, kind)?;
                match verb {
                    "Put" => Self::PutInlinePolicy {
                        holder,
                        policy_name: p.require("PolicyName")?,
                        document: p.require("PolicyDocument")?,
                    },
                    "Get" => Self::GetInlinePolicy {
                        holder,
                        policy_name: p.require("PolicyName")?,
                    },
                    "List" => Self::ListInlinePolicies {
                        holder,
                        page: Page::take(p)?,
                    },
                    "Delete" => Self::DeleteInlinePolicy {
                        holder,
                        policy_name: p.require("PolicyName")?,
                    },
                    "Attach" => Self::AttachPolicy {
                        holder,
                        arn: p.require("PolicyArn")?,
                    },
                    "Detach" => Self::DetachPolicy {
                        holder,
                        arn: p.require("PolicyArn")?,
                    },
                    _ => Self::ListAttachedPolicies {
                        holder,
                        path_prefix: path_prefix(p),
                        page: Page::take(p)?,
                    },
                }
            }
        };
        if let Some(version) = version
            && version != action.api().version()
        {
            return Err(ApiError::invalid_action(name, version));
        }
        params.finish(name)?;
        Ok(action)
    }

    /// IAM or STS.
    pub(crate) fn api(&self) -> Api {
        match self {
            Self::GetCallerIdentity | Self::GetSessionToken { .. } | Self::AssumeRole { .. } => {
                Api::Sts
            }
            _ => Api::Iam,
        }
    }

    /// The operation's wire name (`PutUserPolicy`), which also names its IAM
    /// action (`iam:PutUserPolicy`) and its response elements.
    pub(crate) fn name(&self) -> String {
        let fixed = match self {
            Self::CreateUser { .. } => "CreateUser",
            Self::GetUser { .. } => "GetUser",
            Self::ListUsers { .. } => "ListUsers",
            Self::DeleteUser { .. } => "DeleteUser",
            Self::CreateAccessKey { .. } => "CreateAccessKey",
            Self::ListAccessKeys { .. } => "ListAccessKeys",
            Self::GetAccessKeyLastUsed { .. } => "GetAccessKeyLastUsed",
            Self::UpdateAccessKey { .. } => "UpdateAccessKey",
            Self::DeleteAccessKey { .. } => "DeleteAccessKey",
            Self::CreateGroup { .. } => "CreateGroup",
            Self::GetGroup { .. } => "GetGroup",
            Self::ListGroups { .. } => "ListGroups",
            Self::DeleteGroup { .. } => "DeleteGroup",
            Self::AddUserToGroup { .. } => "AddUserToGroup",
            Self::RemoveUserFromGroup { .. } => "RemoveUserFromGroup",
            Self::ListGroupsForUser { .. } => "ListGroupsForUser",
            Self::CreateRole { .. } => "CreateRole",
            Self::GetRole { .. } => "GetRole",
            Self::ListRoles { .. } => "ListRoles",
            Self::DeleteRole { .. } => "DeleteRole",
            Self::UpdateAssumeRolePolicy { .. } => "UpdateAssumeRolePolicy",
            Self::CreatePolicy { .. } => "CreatePolicy",
            Self::GetPolicy { .. } => "GetPolicy",
            Self::GetPolicyVersion { .. } => "GetPolicyVersion",
            Self::ListPolicies { .. } => "ListPolicies",
            Self::DeletePolicy { .. } => "DeletePolicy",
            Self::GetCallerIdentity => "GetCallerIdentity",
            Self::GetSessionToken { .. } => "GetSessionToken",
            Self::AssumeRole { .. } => "AssumeRole",
            Self::PutInlinePolicy { holder, .. } => {
                return format!("Put{}Policy", holder_noun(holder.kind));
            }
            Self::GetInlinePolicy { holder, .. } => {
                return format!("Get{}Policy", holder_noun(holder.kind));
            }
            Self::ListInlinePolicies { holder, .. } => {
                return format!("List{}Policies", holder_noun(holder.kind));
            }
            Self::DeleteInlinePolicy { holder, .. } => {
                return format!("Delete{}Policy", holder_noun(holder.kind));
            }
            Self::AttachPolicy { holder, .. } => {
                return format!("Attach{}Policy", holder_noun(holder.kind));
            }
            Self::DetachPolicy { holder, .. } => {
                return format!("Detach{}Policy", holder_noun(holder.kind));
            }
            Self::ListAttachedPolicies { holder, .. } => {
                return format!("ListAttached{}Policies", holder_noun(holder.kind));
            }
        };
        fixed.to_owned()
    }
}

/// `PathPrefix`, `/` (everything) when absent.
fn path_prefix(params: &mut Params) -> String {
    params
        .take("PathPrefix")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Action, ApiError> {
        let mut params = Params::parse(None, body.as_bytes()).unwrap();
        let name = params.take("Action").unwrap();
        let version = params.take("Version");
        Action::parse(&name, version.as_deref(), params)
    }

    #[test]
    fn parses_the_families() {
        assert_eq!(
            parse("Action=PutRolePolicy&Version=2010-05-08&RoleName=r&PolicyName=p&PolicyDocument=%7B%7D").unwrap(),
            Action::PutInlinePolicy {
                holder: Holder { kind: PolicyHolder::Role, name: "r".into() },
                policy_name: "p".into(),
                document: "{}".into(),
            }
        );
        let attached = parse("Action=ListAttachedGroupPolicies&GroupName=g&MaxItems=5").unwrap();
        assert_eq!(attached.name(), "ListAttachedGroupPolicies");
        assert_eq!(attached.api(), Api::Iam);
        let sts = parse("Action=AssumeRole&Version=2011-06-15&RoleArn=arn&RoleSessionName=s&DurationSeconds=900").unwrap();
        assert_eq!(sts.api(), Api::Sts);
        assert_eq!(sts.name(), "AssumeRole");
        let every = [
            "CreateUser&UserName=u",
            "GetUser",
            "ListUsers",
            "DeleteUser&UserName=u",
            "CreateAccessKey",
            "ListAccessKeys",
            "GetAccessKeyLastUsed&AccessKeyId=k",
            "UpdateAccessKey&AccessKeyId=k&Status=Inactive",
            "DeleteAccessKey&AccessKeyId=k",
            "CreateGroup&GroupName=g",
            "GetGroup&GroupName=g",
            "ListGroups",
            "DeleteGroup&GroupName=g",
            "AddUserToGroup&GroupName=g&UserName=u",
            "RemoveUserFromGroup&GroupName=g&UserName=u",
            "ListGroupsForUser&UserName=u",
            "CreateRole&RoleName=r&AssumeRolePolicyDocument=x",
            "GetRole&RoleName=r",
            "ListRoles",
            "DeleteRole&RoleName=r",
            "UpdateAssumeRolePolicy&RoleName=r&PolicyDocument=x",
            "GetUserPolicy&UserName=u&PolicyName=p",
            "ListGroupPolicies&GroupName=g",
            "DeleteRolePolicy&RoleName=r&PolicyName=p",
            "CreatePolicy&PolicyName=p&PolicyDocument=x",
            "GetPolicy&PolicyArn=a",
            "GetPolicyVersion&PolicyArn=a&VersionId=v1",
            "ListPolicies&Scope=Local",
            "DeletePolicy&PolicyArn=a",
            "AttachUserPolicy&UserName=u&PolicyArn=a",
            "DetachRolePolicy&RoleName=r&PolicyArn=a",
            "GetCallerIdentity",
            "GetSessionToken",
        ];
        for body in every {
            let action = parse(&format!("Action={body}")).unwrap();
            assert_eq!(action.name(), body.split('&').next().unwrap(), "{body}");
        }
    }

    #[test]
    fn refusals() {
        let unknown = parse("Action=CreateLoginProfile&Version=2010-05-08&UserName=u").unwrap_err();
        assert_eq!(unknown.code, "InvalidAction");
        assert_eq!(
            parse("Action=CreateUser&Version=2011-06-15&UserName=u")
                .unwrap_err()
                .code,
            "InvalidAction"
        );
        assert_eq!(
            parse("Action=CreateUser").unwrap_err().code,
            "ValidationError"
        );
        let boundary = parse("Action=CreateUser&UserName=u&PermissionsBoundary=arn").unwrap_err();
        assert!(
            boundary.message.contains("PermissionsBoundary"),
            "{boundary:?}"
        );
        assert!(
            parse("Action=AssumeRole&RoleArn=a&RoleSessionName=s&SerialNumber=m&TokenCode=1")
                .is_err()
        );
        assert!(
            parse("Action=AssumeRole&RoleArn=a&RoleSessionName=s&PolicyArns.member.1.arn=x")
                .is_err()
        );
        assert!(
            parse("Action=CreateRole&RoleName=r&AssumeRolePolicyDocument=x&Tags.member.1.Key=k")
                .is_err()
        );
        assert!(parse("Action=UpdateAccessKey&AccessKeyId=k&Status=Maybe").is_err());
        assert!(parse("Action=ListUsers&MaxItems=0").is_err());
        assert!(parse("Action=ListUsers&MaxItems=1001").is_err());
    }

    #[test]
    fn pages_resume_after_their_marker() {
        let page = Page {
            marker: None,
            max_items: 2,
        };
        let (first, next) = page.apply(vec!["c", "a", "b"], |s| (*s).to_owned());
        assert_eq!((first, next.as_deref()), (vec!["a", "b"], Some("b")));
        let page = Page {
            marker: next,
            max_items: 2,
        };
        let (second, next) = page.apply(vec!["c", "a", "b"], |s| (*s).to_owned());
        assert_eq!((second, next), (vec!["c"], None));
    }
}
